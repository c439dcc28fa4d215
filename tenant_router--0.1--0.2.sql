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
