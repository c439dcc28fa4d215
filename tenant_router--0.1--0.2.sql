/* tenant_router--0.1--0.2.sql: from 0.1 to 0.2 (also run by CREATE EXTENSION after 0.1) */

\echo Use "ALTER EXTENSION tenant_router UPDATE TO '0.2'" to load this file. \quit

/*
 * Topology worker and event input.
 */

-- Every topology change reads max(version) of tenant_router.shard
-- (TopologyBumpVersion): an index keeps that short while a flood of events
-- leaves dead rows behind for autovacuum.
CREATE INDEX shard_version_idx ON tenant_router.shard (version);

-- The events view: superusers see an event as received, its DSN's password
-- masked (event); everyone else sees only what names the change, every
-- other string masked (event_public, written by the worker; NULL for the
-- events logged before this version).
ALTER TABLE tenant_router.event_log ADD COLUMN event_public text;
CREATE OR REPLACE VIEW tenant_router.events AS
    SELECT id, received_at, source, op, shard_id, origin, version, status, reason,
           CASE WHEN tenant_router.is_superuser() THEN event ELSE event_public END AS event
      FROM tenant_router.event_log;
