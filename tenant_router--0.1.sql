/* tenant_router--0.1.sql */

\echo Use "CREATE EXTENSION tenant_router" to load this file. \quit

/*
 * The role that may change the topology without being superuser.  Roles are
 * cluster-wide, so it is created once and kept when the extension is dropped.
 */
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                   WHERE rolname = 'tenant_router_admin') THEN
        CREATE ROLE tenant_router_admin NOLOGIN;
    END IF;
END
$$;

CREATE SCHEMA tenant_router;
GRANT USAGE ON SCHEMA tenant_router TO PUBLIC;

/*
 * topology: one row; version increases with every topology change.  Every
 * change takes this row's lock first, so changes are serialized.
 */
CREATE TABLE tenant_router.topology (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     bigint NOT NULL DEFAULT 0,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenant_router.topology DEFAULT VALUES;

/*
 * shard: one row per shard, owning tenants range_start..range_end (both
 * inclusive).  The exclusion constraint makes overlapping ranges impossible
 * whatever path writes here; shard_range_start_key is the routing index.
 * dsn may hold a password: the table is readable by superusers only, everyone
 * else reads the view tenant_router.shards.
 */
CREATE TABLE tenant_router.shard (
    shard_id    text NOT NULL,
    range_start bigint NOT NULL,
    range_end   bigint NOT NULL,
    dsn         text NOT NULL,
    state       text NOT NULL DEFAULT 'active',
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT shard_pkey PRIMARY KEY (shard_id),
    CONSTRAINT shard_id_check CHECK (shard_id ~ '^[[:graph:]]{1,63}$'),
    CONSTRAINT shard_range_check CHECK (range_start <= range_end),
    CONSTRAINT shard_state_check CHECK (state IN ('active', 'splitting')),
    CONSTRAINT shard_range_start_key UNIQUE (range_start),
    CONSTRAINT shard_range_excl
        EXCLUDE USING gist (numrange(range_start, range_end, '[]') WITH &&)
);

/*
 * logical_table: tables whose rows live on the shards.  table_id is a
 * foreign table of server tenant_router; shard_ddl holds the statements that
 * create the table on a shard (columns, keys, indexes), captured when the
 * table was made logical.
 */
CREATE TABLE tenant_router.logical_table (
    table_id      regclass PRIMARY KEY,
    tenant_column name NOT NULL,
    shard_ddl     text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

/*
 * pending_cleanup: shards that keep rows outside their range after a split,
 * until shard_cleanup() deletes them.
 */
CREATE TABLE tenant_router.pending_cleanup (
    shard_id    text PRIMARY KEY,
    since       timestamptz NOT NULL DEFAULT now()
);

/*
 * pg_dump dumps the topology with the database: the shards, the logical
 * tables (whose foreign tables it dumps as user objects) and the pending
 * cleanups.  The topology version is not dumped: it restarts above the
 * highest shard version (TopologyBumpVersion).
 */
SELECT pg_catalog.pg_extension_config_dump('tenant_router.shard', '');
SELECT pg_catalog.pg_extension_config_dump('tenant_router.logical_table', '');
SELECT pg_catalog.pg_extension_config_dump('tenant_router.pending_cleanup', '');

REVOKE ALL ON ALL TABLES IN SCHEMA tenant_router FROM PUBLIC;

/* Every committed catalog change invalidates the routing cache of every backend. */
CREATE FUNCTION tenant_router.catalog_changed()
    RETURNS trigger
    AS 'MODULE_PATHNAME', 'tenant_router_catalog_changed'
    LANGUAGE C;

CREATE TRIGGER shard_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenant_router.shard
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_router.catalog_changed();
CREATE TRIGGER logical_table_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenant_router.logical_table
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_router.catalog_changed();

/*
 * A dropped logical table leaves the catalog with it (the shards keep their
 * copies and rows).  Runs as the extension owner, so that a table owner who
 * is not superuser can still drop the table.
 */
CREATE FUNCTION tenant_router.forget_dropped_tables()
    RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF to_regclass('tenant_router.logical_table') IS NOT NULL THEN
        DELETE FROM tenant_router.logical_table t
         USING pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
           AND d.objid = t.table_id::oid;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION tenant_router.forget_dropped_tables() FROM PUBLIC;

CREATE EVENT TRIGGER tenant_router_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION tenant_router.forget_dropped_tables();

/* Helpers used by the views. */
CREATE FUNCTION tenant_router.dsn_redact(dsn text)
    RETURNS text
    AS 'MODULE_PATHNAME', 'tenant_router_dsn_redact'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION tenant_router.is_superuser()
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenant_router_is_superuser'
    LANGUAGE C STABLE PARALLEL SAFE;

CREATE VIEW tenant_router.shards AS
    SELECT s.shard_id,
           s.range_start,
           s.range_end,
           s.state,
           CASE WHEN tenant_router.is_superuser() THEN s.dsn
                ELSE tenant_router.dsn_redact(s.dsn) END AS dsn,
           s.version,
           s.created_at,
           s.updated_at
      FROM tenant_router.shard s;

CREATE VIEW tenant_router.logical_tables AS
    SELECT t.table_id, t.tenant_column, t.created_at
      FROM tenant_router.logical_table t;

GRANT SELECT ON tenant_router.shards, tenant_router.logical_tables TO PUBLIC;

/*
 * The foreign-data wrapper that logical tables belong to: any statement the
 * router's fast path does not take runs through it, against the shards.
 */
CREATE FUNCTION tenant_router.fdw_handler()
    RETURNS fdw_handler
    AS 'MODULE_PATHNAME', 'tenant_router_fdw_handler'
    LANGUAGE C STRICT;

CREATE FUNCTION tenant_router.fdw_validator(text[], oid)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_fdw_validator'
    LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER tenant_router
    HANDLER tenant_router.fdw_handler
    VALIDATOR tenant_router.fdw_validator;

CREATE SERVER tenant_router FOREIGN DATA WRAPPER tenant_router;

/*
 * Admin functions.  They run as their owner so that they can write the
 * catalog; EXECUTE is granted to superusers and tenant_router_admin only.
 * shard_add and shard_split take a DSN, a credential: they run as the caller,
 * who must be a superuser.
 */
CREATE FUNCTION shard_add(shard_id text, range_start bigint, range_end bigint, dsn text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_add'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION shard_remove(shard_id text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_remove'
    LANGUAGE C STRICT VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION shard_update_range(shard_id text, range_start bigint, range_end bigint)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_update_range'
    LANGUAGE C STRICT VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION shard_for(tenant_id bigint)
    RETURNS text
    AS 'MODULE_PATHNAME', 'tenant_router_shard_for'
    LANGUAGE C STRICT STABLE PARALLEL SAFE;

CREATE FUNCTION logical_table_add(tbl regclass, tenant_column name DEFAULT 'tenant_id')
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_logical_table_add'
    LANGUAGE C STRICT VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION shard_split(shard_id text, split_at bigint, new_shard_id text, new_dsn text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'tenant_router_shard_split'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION tenant_router.shard_cleanup(shard_id text)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenant_router_shard_cleanup'
    LANGUAGE C STRICT VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

REVOKE EXECUTE ON FUNCTION shard_add(text, bigint, bigint, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION shard_remove(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION shard_update_range(text, bigint, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION logical_table_add(regclass, name) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION shard_split(text, bigint, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tenant_router.shard_cleanup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION shard_remove(text) TO tenant_router_admin;
GRANT EXECUTE ON FUNCTION shard_update_range(text, bigint, bigint) TO tenant_router_admin;
GRANT EXECUTE ON FUNCTION logical_table_add(regclass, name) TO tenant_router_admin;
GRANT EXECUTE ON FUNCTION tenant_router.shard_cleanup(text) TO tenant_router_admin;

/*
 * outbox: topology events of committed SQL changes, waiting for the worker
 * to publish them on Redis (oldest first).
 */
CREATE TABLE tenant_router.outbox (
    id          bigserial PRIMARY KEY,
    event       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenant_router.outbox FROM PUBLIC;

/*
 * The topology worker: what it received, where it is in the Redis stream,
 * and the versions it applied per origin.
 */

-- every event received (bounded by tenant_router.event_log_size), DSNs redacted
CREATE TABLE tenant_router.event_log (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL CHECK (source IN ('channel', 'stream')),
    op          text,
    shard_id    text,
    origin      text,
    version     bigint,
    status      text NOT NULL CHECK (status IN ('applied', 'rejected', 'ignored')),
    reason      text,
    event       text
);

-- one row: counters since CREATE EXTENSION, and the last stream entry applied
CREATE TABLE tenant_router.worker_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    stream_key    text,
    stream_id     text NOT NULL DEFAULT '0-0',
    applied       bigint NOT NULL DEFAULT 0,
    rejected      bigint NOT NULL DEFAULT 0,
    ignored       bigint NOT NULL DEFAULT 0,
    published     bigint NOT NULL DEFAULT 0,
    last_event_at timestamptz
);
INSERT INTO tenant_router.worker_state DEFAULT VALUES;

-- the last version applied from each origin: older or equal ones are stale
CREATE TABLE tenant_router.origin_progress (
    origin  text PRIMARY KEY,
    version bigint NOT NULL
);

REVOKE ALL ON tenant_router.event_log, tenant_router.worker_state,
    tenant_router.origin_progress FROM PUBLIC;

CREATE VIEW tenant_router.events AS
    SELECT id, received_at, source, op, shard_id, origin, version, status, reason, event
      FROM tenant_router.event_log;

CREATE VIEW tenant_router.event_stats AS
    SELECT w.applied, w.rejected, w.ignored, w.published,
           (SELECT count(*) FROM tenant_router.outbox) AS outbox_pending,
           w.last_event_at, w.stream_key, w.stream_id
      FROM tenant_router.worker_state w;

GRANT SELECT ON tenant_router.events, tenant_router.event_stats TO PUBLIC;
