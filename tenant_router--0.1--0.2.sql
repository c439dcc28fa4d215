/* tenant_router--0.1--0.2.sql: from 0.1 to 0.2 (also run by CREATE EXTENSION after 0.1) */

\echo Use "ALTER EXTENSION tenant_router UPDATE TO '0.2'" to load this file. \quit

/*
 * Topology worker and event input.
 */

-- Every topology change reads max(version) of tenant_router.shard
-- (TopologyBumpVersion): an index keeps that short while a flood of events
-- leaves dead rows behind for autovacuum.
CREATE INDEX shard_version_idx ON tenant_router.shard (version);
