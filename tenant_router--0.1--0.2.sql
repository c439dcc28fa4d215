/* tenant_router--0.1--0.2.sql: from 0.1 to 0.2 (also run by CREATE EXTENSION after 0.1) */

\echo Use "ALTER EXTENSION tenant_router UPDATE TO '0.2'" to load this file. \quit

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
