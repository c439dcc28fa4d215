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
