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
