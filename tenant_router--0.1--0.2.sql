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
