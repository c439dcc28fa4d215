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

/* ---- Topology operations (ops helper): shards, online operations ---- */

/*
 * shard_add() is no longer strict: a NULL argument is an error instead of a
 * call that silently does nothing.
 */
CREATE OR REPLACE FUNCTION shard_add(shard_id text, range_start bigint, range_end bigint, dsn text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_add'
    LANGUAGE C CALLED ON NULL INPUT VOLATILE
    SET search_path = pg_catalog, pg_temp;

/*
 * db_identity: the system identifier and name of the database a shard's DSN
 * reaches, so that two shards in one database, or a shard in the
 * coordinator's own database, are refused (shard_add, shard_split).
 * state: what an online operation is doing to the shard.
 */
ALTER TABLE tenant_router.shard ADD COLUMN db_identity text;
ALTER TABLE tenant_router.shard DROP CONSTRAINT shard_state_check,
    ADD CONSTRAINT shard_state_check CHECK (state IN ('active', 'splitting', 'moving', 'merging'));

/*
 * operation: online topology operations (shard_split, ...), running or
 * recent, recorded by their worker before each phase; what recovery needs
 * to undo one that did not finish (DSNs: superusers only).
 */
CREATE SEQUENCE tenant_router.operation_id_seq;
CREATE TABLE tenant_router.operation (
    op_id            bigint PRIMARY KEY,
    operation        text NOT NULL,
    shard_id         text NOT NULL,
    target_shard_id  text NOT NULL,
    tenant_id        bigint,
    phase            text NOT NULL,
    rows_copied      bigint NOT NULL DEFAULT 0,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'completed', 'rolled back')),
    error            text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    source_dsn       text NOT NULL,
    target_dsn       text NOT NULL,
    target_is_new    boolean NOT NULL,
    identity_restore text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX operation_unfinished ON tenant_router.operation (shard_id, target_shard_id)
    WHERE finished_at IS NULL;
REVOKE ALL ON tenant_router.operation, tenant_router.operation_id_seq FROM PUBLIC;

CREATE VIEW tenant_router.operations AS
    SELECT o.operation, o.shard_id, o.phase, o.rows_copied, o.started_at, o.finished_at,
           o.op_id, o.target_shard_id, o.tenant_id, o.status, o.error
      FROM tenant_router.operation o;
GRANT SELECT ON tenant_router.operations TO PUBLIC;

CREATE FUNCTION tenant_router.operation_recover()
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenant_router_operation_recover'
    LANGUAGE C STRICT VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION tenant_router.operation_recover() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_router.operation_recover() TO tenant_router_admin;

/*
 * Modulo sub-routing and pin-only shards (seed 003): shards with the same
 * range share it by the tenant's remainder by their modulus; a shard
 * without a range owns only the tenants pinned to it.  Ranges still never
 * overlap otherwise: the exclusion constraint keeps guarding the shards of
 * modulus 1, shard_range_start_key (also the routing index) two shards of
 * one range with one remainder, and the functions the rest (remainders
 * disjoint, moduli dividing one another), under the topology lock.
 */
ALTER TABLE tenant_router.shard
    ALTER COLUMN range_start DROP NOT NULL,
    ALTER COLUMN range_end DROP NOT NULL,
    ADD COLUMN modulus integer NOT NULL DEFAULT 1,
    ADD COLUMN remainder integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT shard_modulus_check
        CHECK (modulus BETWEEN 1 AND 1024 AND remainder >= 0 AND remainder < modulus),
    ADD CONSTRAINT shard_pin_only_check
        CHECK ((range_start IS NULL) = (range_end IS NULL) AND (range_start IS NOT NULL OR modulus = 1)),
    DROP CONSTRAINT shard_range_excl,
    DROP CONSTRAINT shard_range_start_key;
ALTER TABLE tenant_router.shard
    ADD CONSTRAINT shard_range_excl
        EXCLUDE USING gist (numrange(range_start, range_end, '[]') WITH &&)
        WHERE (modulus = 1 AND range_start IS NOT NULL),
    ADD CONSTRAINT shard_range_start_key UNIQUE (range_start, modulus, remainder);

-- the shards of one database, read by every shard added (a flood of
-- ADD_SHARD events too: an index scan skips the dead rows it leaves)
CREATE INDEX shard_db_identity_idx ON tenant_router.shard (db_identity, shard_id);

/* pin: tenants owned by a shard whatever the ranges say (tenant_pin) */
CREATE TABLE tenant_router.pin (
    tenant_id  bigint PRIMARY KEY,
    shard_id   text NOT NULL,
    pinned_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pin_shard_id_idx ON tenant_router.pin (shard_id, tenant_id);
REVOKE ALL ON tenant_router.pin FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tenant_router.pin', '');
CREATE TRIGGER pin_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenant_router.pin
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_router.catalog_changed();

CREATE VIEW tenant_router.pins AS
    SELECT p.tenant_id, p.shard_id, p.pinned_at FROM tenant_router.pin p;
GRANT SELECT ON tenant_router.pins TO PUBLIC;

CREATE OR REPLACE VIEW tenant_router.shards AS
    SELECT s.shard_id,
           s.range_start,
           s.range_end,
           s.state,
           CASE WHEN tenant_router.is_superuser() THEN s.dsn
                ELSE tenant_router.dsn_redact(s.dsn) END AS dsn,
           s.version,
           s.created_at,
           s.updated_at,
           s.modulus,
           s.remainder
      FROM tenant_router.shard s;

/* shard_add with a modulus and a remainder; NULL range: a pin-only shard */
DROP FUNCTION shard_add(text, bigint, bigint, text);
CREATE FUNCTION shard_add(shard_id text, range_start bigint, range_end bigint, dsn text,
                          modulus integer DEFAULT 1, remainder integer DEFAULT 0)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_add'
    LANGUAGE C CALLED ON NULL INPUT VOLATILE
    SET search_path = pg_catalog, pg_temp;

/* the online operations besides shard_split: they take or hand over DSNs */
CREATE FUNCTION shard_split_modulo(shard_id text, new_shard_id text, new_dsn text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_split_modulo'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION shard_move(shard_id text, new_dsn text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_move'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION shard_merge(shard_id text, into_shard_id text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_merge'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION tenant_pin(tenant_id bigint, shard_id text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_tenant_pin'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION tenant_unpin(tenant_id bigint)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_tenant_unpin'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;

REVOKE EXECUTE ON FUNCTION shard_add(text, bigint, bigint, text, integer, integer),
    shard_split_modulo(text, text, text), shard_move(text, text), shard_merge(text, text),
    tenant_pin(bigint, text), tenant_unpin(bigint) FROM PUBLIC;

/*
 * NOTIFY tenant_router_topology for pins too: {"op": "PIN_TENANT" |
 * "UNPIN_TENANT", "payload": {"tenant_id", "shard_id"}, "version"}, at
 * commit, as for the shards' rows.
 */
CREATE FUNCTION tenant_router.notify_pin()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM pg_notify('tenant_router_topology',
        jsonb_build_object(
            'op', CASE WHEN TG_OP = 'DELETE' THEN 'UNPIN_TENANT' ELSE 'PIN_TENANT' END,
            'payload', CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END,
            'version', (SELECT t.version FROM tenant_router.topology t))::text);
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION tenant_router.notify_pin() FROM PUBLIC;

CREATE TRIGGER pin_notify
    AFTER INSERT OR UPDATE OR DELETE ON tenant_router.pin
    FOR EACH ROW EXECUTE FUNCTION tenant_router.notify_pin();

/* ---- One order of topology changes (order helper): the log on Redis ---- */

/*
 * epoch: the log on Redis the catalog follows (drawn by the coordinator that
 * seeded it); stream_id is the last entry of that log the catalog holds.
 * NULL until the worker first joins a log.
 */
ALTER TABLE tenant_router.worker_state ADD COLUMN epoch text;

CREATE OR REPLACE VIEW tenant_router.event_stats AS
    SELECT w.applied, w.rejected, w.ignored, w.published,
           (SELECT count(*) FROM tenant_router.outbox) AS outbox_pending,
           w.last_event_at, w.stream_key, w.stream_id, w.epoch
      FROM tenant_router.worker_state w;

/* ---- Shard health and statistics ---- */

/*
 * Kept in shared memory by every backend and the health worker's probe
 * (src/metadata/stats.c), never written to a table; per database.  The
 * functions show no DSN, so they and the views are for everyone;
 * stats_reset() for superusers and tenant_router_admin.
 */
CREATE FUNCTION tenant_router.shard_stats_data(
    OUT shard_id text, OUT reachable boolean, OUT last_success timestamptz,
    OUT last_error text, OUT last_error_at timestamptz,
    OUT statements bigint, OUT rows bigint, OUT errors bigint,
    OUT total_time double precision, OUT stats_since timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'tenant_router_shard_stats'
    LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION tenant_router.tenant_stats_data(
    OUT tenant_id bigint,
    OUT statements bigint, OUT rows bigint, OUT errors bigint,
    OUT total_time double precision, OUT last_statement_at timestamptz,
    OUT stats_since timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'tenant_router_tenant_stats'
    LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION tenant_router.stats_reset()
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_stats_reset'
    LANGUAGE C STRICT VOLATILE;
REVOKE EXECUTE ON FUNCTION tenant_router.stats_reset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant_router.stats_reset() TO tenant_router_admin;

-- shard_health: every shard of the catalog; reachable is NULL until the
-- coordinator has tried it (the worker's probe does within seconds)
CREATE VIEW tenant_router.shard_health AS
    SELECT s.shard_id, s.state, h.reachable, h.last_success, h.last_error, h.last_error_at
      FROM tenant_router.shard s
      LEFT JOIN tenant_router.shard_stats_data() h USING (shard_id);

-- shard_stats: every shard of the catalog, zero until counted
CREATE VIEW tenant_router.shard_stats AS
    SELECT s.shard_id, coalesce(h.statements, 0) AS statements, coalesce(h.rows, 0) AS rows,
           coalesce(h.errors, 0) AS errors, coalesce(h.total_time, 0) AS total_time,
           h.stats_since
      FROM tenant_router.shard s
      LEFT JOIN tenant_router.shard_stats_data() h USING (shard_id);

-- tenant_stats: shard_id is the shard that owns the tenant now
CREATE VIEW tenant_router.tenant_stats AS
    SELECT tenant_id, shard_for(tenant_id) AS shard_id, statements, rows, errors, total_time,
           last_statement_at, stats_since
      FROM tenant_router.tenant_stats_data();

GRANT SELECT ON tenant_router.shard_health, tenant_router.shard_stats,
    tenant_router.tenant_stats TO PUBLIC;
