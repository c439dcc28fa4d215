/* tenant_router--0.1--0.2.sql: from 0.1 to 0.2 (also run by CREATE EXTENSION after 0.1) */

\echo Use "ALTER EXTENSION tenant_router UPDATE TO '0.2'" to load this file. \quit

/* ---- Multi-shard writes: two-phase commit ---- */

/*
 * commit_record: one row per shard prepared by a local transaction that
 * wrote to several shards, inserted in that transaction: a row means the
 * transaction committed, so its prepared transaction on that shard must be
 * committed.  Rows go once the shard has committed it
 * (recover_prepared_transactions, run by the worker).
 */
CREATE TABLE tenant_router.commit_record (
    gid         text PRIMARY KEY,
    shard_id    text NOT NULL,
    recorded_at timestamptz NOT NULL
);
REVOKE ALL ON tenant_router.commit_record FROM PUBLIC;

CREATE FUNCTION tenant_router.recover_prepared_transactions()
    RETURNS integer
    AS 'MODULE_PATHNAME', 'tenant_router_recover_prepared_transactions'
    LANGUAGE C STRICT VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION tenant_router.recover_prepared_transactions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_router.recover_prepared_transactions() TO tenant_router_admin;

/* ---- Multi-shard statements: count(DISTINCT tenant column) in parts ---- */

/*
 * count_distinct_tenant(tenant): count(DISTINCT tenant), which the router
 * substitutes for count(DISTINCT <tenant column>) in statements over several
 * shards so that each shard counts its own tenants (no tenant is on two).
 */
CREATE FUNCTION tenant_router.tenant_count_accum(internal, bigint)
    RETURNS internal AS 'MODULE_PATHNAME', 'tenant_router_tenant_count_accum'
    LANGUAGE C PARALLEL SAFE;
CREATE FUNCTION tenant_router.tenant_count_combine(internal, internal)
    RETURNS internal AS 'MODULE_PATHNAME', 'tenant_router_tenant_count_combine'
    LANGUAGE C PARALLEL SAFE;
CREATE FUNCTION tenant_router.tenant_count_serialize(internal)
    RETURNS bytea AS 'MODULE_PATHNAME', 'tenant_router_tenant_count_serialize'
    LANGUAGE C STRICT PARALLEL SAFE;
CREATE FUNCTION tenant_router.tenant_count_deserialize(bytea, internal)
    RETURNS internal AS 'MODULE_PATHNAME', 'tenant_router_tenant_count_deserialize'
    LANGUAGE C STRICT PARALLEL SAFE;
CREATE FUNCTION tenant_router.tenant_count_final(internal)
    RETURNS bigint AS 'MODULE_PATHNAME', 'tenant_router_tenant_count_final'
    LANGUAGE C PARALLEL SAFE;
CREATE AGGREGATE tenant_router.count_distinct_tenant(bigint) (
    SFUNC = tenant_router.tenant_count_accum,
    STYPE = internal,
    COMBINEFUNC = tenant_router.tenant_count_combine,
    SERIALFUNC = tenant_router.tenant_count_serialize,
    DESERIALFUNC = tenant_router.tenant_count_deserialize,
    FINALFUNC = tenant_router.tenant_count_final,
    PARALLEL = SAFE
);

/* ---- Logical tables: adopting shards that hold data, ids unique across coordinators ---- */

/*
 * sequence_block: this coordinator's block (0..63), when several
 * coordinators draw ids for the same logical tables; no row: the sequences
 * keep their own bounds (one coordinator).  Dumped with the database: a
 * coordinator made from another's dump must be given a block of its own.
 */
CREATE TABLE tenant_router.sequence_block (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    block       integer NOT NULL CHECK (block >= 0 AND block < 64)
);
REVOKE ALL ON tenant_router.sequence_block FROM PUBLIC;
GRANT SELECT ON tenant_router.sequence_block TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenant_router.sequence_block', '');

CREATE FUNCTION sequence_block_set(block integer)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_sequence_block_set'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION sequence_block_set(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sequence_block_set(integer) TO tenant_router_admin;

/* ---- Topology worker and event input ---- */

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

/*
 * NOTIFY tenant_router_topology: every change of a shard's row, whether made
 * by an admin function or by a Redis event the worker applies, notifies the
 * change as JSON -- {"op": "ADD_SHARD" | "UPDATE_SHARD_RANGE" |
 * "UPDATE_SHARD" | "REMOVE_SHARD", "payload": the row without its dsn,
 * "previous": the row before an update, "version": the topology version}.
 * A notification is delivered when the transaction commits, never for one
 * that rolls back.  The function runs as its owner, so that it can read the
 * topology version whoever changes the catalog.
 */
CREATE FUNCTION tenant_router.notify_topology()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    change jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        change := jsonb_build_object('op', 'ADD_SHARD', 'payload', to_jsonb(NEW) - 'dsn');
    ELSIF TG_OP = 'DELETE' THEN
        change := jsonb_build_object('op', 'REMOVE_SHARD', 'payload', to_jsonb(OLD) - 'dsn');
    ELSE
        change := jsonb_build_object(
            'op', CASE WHEN (NEW.range_start, NEW.range_end) IS DISTINCT FROM
                            (OLD.range_start, OLD.range_end)
                       THEN 'UPDATE_SHARD_RANGE' ELSE 'UPDATE_SHARD' END,
            'payload', to_jsonb(NEW) - 'dsn',
            'previous', to_jsonb(OLD) - 'dsn');
    END IF;
    PERFORM pg_notify('tenant_router_topology',
                      (change || jsonb_build_object('version',
                          (SELECT t.version FROM tenant_router.topology t)))::text);
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION tenant_router.notify_topology() FROM PUBLIC;

CREATE TRIGGER shard_notify
    AFTER INSERT OR UPDATE OR DELETE ON tenant_router.shard
    FOR EACH ROW EXECUTE FUNCTION tenant_router.notify_topology();

/* ---- Reference tables: a copy on every shard, written on all of them at once ---- */

/*
 * reference_table: tables copied whole to every shard (one copy per shard
 * database).  table_id is a foreign table of server tenant_router; reads go
 * to one shard, every write to all of them in one transaction (two-phase
 * commit), and a statement pinned to one tenant joins it on that tenant's
 * shard.  shard_ddl holds the statements that create the table on a shard,
 * captured by reference_table_add().
 */
CREATE TABLE tenant_router.reference_table (
    table_id    regclass PRIMARY KEY,
    shard_ddl   text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

/*
 * reference_foreign_key: foreign keys from an ordinary table to a table made
 * a reference table.  The coordinator cannot keep them (a foreign key cannot
 * reference a foreign table): reference_table_add() moves them here, and
 * logical_table_add() of the referencing table ships them to the shards.
 */
CREATE TABLE tenant_router.reference_foreign_key (
    table_id        oid NOT NULL,
    constraint_name name NOT NULL,
    definition      text NOT NULL,
    PRIMARY KEY (table_id, constraint_name)
);
REVOKE ALL ON tenant_router.reference_table, tenant_router.reference_foreign_key FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenant_router.reference_table', '');
SELECT pg_catalog.pg_extension_config_dump('tenant_router.reference_foreign_key', '');

CREATE TRIGGER reference_table_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenant_router.reference_table
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_router.catalog_changed();

CREATE VIEW tenant_router.reference_tables AS
    SELECT t.table_id, t.created_at
      FROM tenant_router.reference_table t;
GRANT SELECT ON tenant_router.reference_tables TO PUBLIC;

/*
 * A dropped reference table (DROP FOREIGN TABLE: the shards keep their
 * copies), or a dropped table whose foreign keys waited for
 * logical_table_add(), leaves the catalog with it.
 */
CREATE FUNCTION tenant_router.forget_dropped_reference_tables()
    RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF to_regclass('tenant_router.reference_table') IS NOT NULL THEN
        DELETE FROM tenant_router.reference_table t
         USING pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
           AND d.objid = t.table_id::oid;
        DELETE FROM tenant_router.reference_foreign_key k
         USING pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
           AND d.objid = k.table_id;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION tenant_router.forget_dropped_reference_tables() FROM PUBLIC;

CREATE EVENT TRIGGER tenant_router_forget_dropped_reference_tables ON sql_drop
    EXECUTE FUNCTION tenant_router.forget_dropped_reference_tables();

CREATE FUNCTION reference_table_add(tbl regclass)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_reference_table_add'
    LANGUAGE C STRICT VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION reference_table_add(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reference_table_add(regclass) TO tenant_router_admin;
