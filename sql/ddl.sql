-- ddl: DDL on a logical table reaches every shard in the same transaction,
-- or is refused with nothing changed anywhere
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
-- leftovers of an interrupted run; on each shard, a view of the tables'
-- shape (columns, constraints but the range one, indexes, comments)
\set shape_view 'CREATE OR REPLACE VIEW public.ddl_shape AS SELECT c.relname AS tbl, ''column'' AS kind, a.attname::text AS name, format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN '' NOT NULL'' ELSE '''' END AS def FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid WHERE c.relname LIKE ''ddl\\_%'' AND c.relkind = ''r'' AND a.attnum > 0 AND NOT a.attisdropped UNION ALL SELECT c.relname, ''constraint'', n.conname::text, pg_get_constraintdef(n.oid) FROM pg_class c JOIN pg_constraint n ON n.conrelid = c.oid WHERE c.relname LIKE ''ddl\\_%'' AND n.conname <> ''tenant_router_range'' UNION ALL SELECT c.relname, ''index'', i.relname::text, pg_get_indexdef(i.oid) FROM pg_class c JOIN pg_index x ON x.indrelid = c.oid JOIN pg_class i ON i.oid = x.indexrelid WHERE c.relname LIKE ''ddl\\_%'' UNION ALL SELECT c.relname, ''comment'', coalesce(a.attname::text, i.relname::text, n.conname::text, ''''), d.description FROM pg_description d JOIN pg_class c ON c.relname LIKE ''ddl\\_%'' AND c.relkind = ''r'' LEFT JOIN pg_attribute a ON d.classoid = ''pg_class''::regclass AND a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0 LEFT JOIN pg_index x ON d.classoid = ''pg_class''::regclass AND x.indrelid = c.oid AND x.indexrelid = d.objoid LEFT JOIN pg_class i ON i.oid = x.indexrelid LEFT JOIN pg_constraint n ON d.classoid = ''pg_constraint''::regclass AND n.oid = d.objoid AND n.conrelid = c.oid WHERE (d.classoid = ''pg_class''::regclass AND (d.objoid = c.oid OR x.indexrelid IS NOT NULL)) OR (n.oid IS NOT NULL AND n.conname <> ''tenant_router_range'')'
SET client_min_messages = warning;
\c :shard1
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.ddl_accounts, public.ddl_members, public.ddl_kept CASCADE;
DROP SCHEMA IF EXISTS "we""ird" CASCADE;
:shape_view;
\c :shard2
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.ddl_accounts, public.ddl_members, public.ddl_kept CASCADE;
DROP SCHEMA IF EXISTS "we""ird" CASCADE;
DROP DATABASE IF EXISTS ddl_shard3;
:shape_view;
\c :coord
\set SHOW_CONTEXT never
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
CREATE TABLE ddl_accounts (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, name text);
SELECT logical_table_add('ddl_accounts');
INSERT INTO ddl_accounts (tenant_id, name) VALUES (5, 'five'), (15000, 'fifteen thousand');

-- each form reaches every shard
ALTER TABLE ddl_accounts ADD COLUMN note text;
-- a default fills the rows the shards hold, computed once on the coordinator
ALTER TABLE ddl_accounts ADD COLUMN score int NOT NULL DEFAULT 7 CHECK (score >= 0);
ALTER TABLE ddl_accounts RENAME COLUMN note TO remark;
-- a statement this session prepared on the shard before the type changed
-- (the stable value makes it a parameter, so the shard prepares it): its
-- first execution after fails there, the next prepares it again
SELECT score FROM ddl_accounts WHERE tenant_id = 5 AND current_user IS NOT NULL;
ALTER TABLE ddl_accounts ALTER COLUMN score TYPE bigint;
SELECT score FROM ddl_accounts WHERE tenant_id = 5 AND current_user IS NOT NULL;
SELECT score FROM ddl_accounts WHERE tenant_id = 5 AND current_user IS NOT NULL;
ALTER TABLE ddl_accounts ALTER COLUMN name TYPE varchar(40) USING upper(name);
-- defaults are the coordinator's: not sent to the shards
ALTER TABLE ddl_accounts ALTER COLUMN remark SET DEFAULT 'none';
UPDATE ddl_accounts SET remark = 'r';
ALTER TABLE ddl_accounts ALTER COLUMN remark SET NOT NULL;
ALTER TABLE ddl_accounts ADD CONSTRAINT ddl_name_len CHECK (length(name) < 30) NOT VALID;
ALTER TABLE ddl_accounts VALIDATE CONSTRAINT ddl_name_len;
ALTER TABLE ddl_accounts ADD CONSTRAINT ddl_accounts_tenant_name UNIQUE (tenant_id, name);
CREATE INDEX ON ddl_accounts (lower(name));
CREATE UNIQUE INDEX ddl_accounts_remark ON ddl_accounts (tenant_id, remark) WHERE remark <> 'r';
COMMENT ON TABLE ddl_accounts IS 'accounts of tenants';
COMMENT ON COLUMN ddl_accounts.name IS 'display name';
COMMENT ON INDEX ddl_accounts_remark IS 'one remark per tenant';
COMMENT ON CONSTRAINT ddl_accounts_tenant_name ON ddl_accounts IS 'unique per tenant';
ALTER INDEX ddl_accounts_remark RENAME TO ddl_accounts_remark_key;
ALTER TABLE ddl_accounts RENAME CONSTRAINT ddl_name_len TO ddl_name_length;
\d ddl_accounts
-- the next statements work, on both paths
INSERT INTO ddl_accounts (tenant_id, name) VALUES (6, 'six');
INSERT INTO ddl_accounts (tenant_id, name) VALUES (5, 'five again'), (15001, 'other');
SELECT tenant_id, name, remark, score FROM ddl_accounts WHERE tenant_id = 5 ORDER BY name;
SELECT tenant_id, name, remark, score FROM ddl_accounts ORDER BY tenant_id, name;
-- the shards' tables are alike
\c :shard1
SELECT * FROM ddl_shape ORDER BY 1, 2, 3;
\c :shard2
SELECT * FROM ddl_shape ORDER BY 1, 2, 3;

-- a shard added later gets the table as it is now
CREATE DATABASE ddl_shard3;
\c :coord
\set SHOW_CONTEXT never
SELECT regexp_replace(:'shard2', 'dbname=\S+', 'dbname=ddl_shard3') AS shard3 \gset
SELECT shard_add('shard3', 20001, 30000, :'shard3');
\c :shard3
:shape_view;
SELECT * FROM ddl_shape ORDER BY 1, 2, 3;

-- dropping and renaming
\c :coord
\set SHOW_CONTEXT never
ALTER TABLE ddl_accounts DROP CONSTRAINT ddl_accounts_tenant_name;
DROP INDEX ddl_accounts_remark_key;
DROP INDEX IF EXISTS ddl_no_such_index;
ALTER TABLE ddl_accounts DROP COLUMN remark;
ALTER TABLE ddl_accounts RENAME TO ddl_members;
ALTER TABLE ddl_members RENAME COLUMN tenant_id TO org_id;
SELECT table_id, tenant_column FROM tenant_router.logical_tables;
INSERT INTO ddl_members (org_id, name) VALUES (25000, 'on shard3');
SELECT org_id, name FROM ddl_members WHERE org_id = 5 ORDER BY name;
SELECT org_id, name FROM ddl_members ORDER BY org_id, name;
\c :shard1
SELECT * FROM ddl_shape ORDER BY 1, 2, 3;
\c :shard3
SELECT * FROM ddl_shape ORDER BY 1, 2, 3;

-- a statement that fails on one shard changes no shard and not the coordinator
\c :shard2
ALTER TABLE public.ddl_members ADD COLUMN extra int;
\c :coord
\set SHOW_CONTEXT never
ALTER TABLE ddl_members ADD COLUMN extra int, ADD COLUMN extra2 int;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS coordinator_columns FROM pg_attribute
 WHERE attrelid = 'ddl_members'::regclass AND attname LIKE 'extra%';
\c :shard1
SELECT count(*) AS shard1_columns FROM ddl_shape WHERE name LIKE 'extra%';
\c :shard2
SELECT name FROM ddl_shape WHERE name LIKE 'extra%';
ALTER TABLE public.ddl_members DROP COLUMN extra;
-- the shards roll back with the coordinator
\c :coord
\set SHOW_CONTEXT never
BEGIN;
ALTER TABLE ddl_members ADD COLUMN tmp int;
SELECT tmp FROM ddl_members WHERE org_id = 5 LIMIT 1;
ROLLBACK;
BEGIN;
ALTER TABLE ddl_members ADD COLUMN tmp int;
SELECT 1 / 0;
COMMIT;
\c :shard1
SELECT count(*) AS shard1_tmp FROM ddl_shape WHERE name = 'tmp';
\c :shard2
SELECT count(*) AS shard2_tmp FROM ddl_shape WHERE name = 'tmp';

-- an unreachable shard refuses the statement, naming the shard
\c :coord
\set SHOW_CONTEXT never
INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version)
VALUES ('unreachable', 90001, 99999, 'host=127.0.0.1 port=1 connect_timeout=2', 0);
ALTER TABLE ddl_members ADD COLUMN never int;
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX ddl_never ON ddl_members (name);
DELETE FROM tenant_router.shard WHERE shard_id = 'unreachable';
SELECT count(*) AS never FROM pg_attribute WHERE attrelid = 'ddl_members'::regclass AND attname = 'never';
\c :shard1
SELECT count(*) AS shard1_never FROM ddl_shape WHERE name IN ('never', 'ddl_never');

-- what is not propagated is refused, naming it; nothing changes
\c :coord
\set SHOW_CONTEXT never
ALTER TABLE ddl_members SET TABLESPACE pg_default;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE ddl_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE ddl_members ALTER COLUMN name SET STORAGE plain;
ALTER TABLE ddl_members ADD COLUMN ident int GENERATED ALWAYS AS IDENTITY;
ALTER TABLE ddl_members ADD COLUMN created timestamptz DEFAULT clock_timestamp();
ALTER TABLE ddl_members ADD COLUMN parent int REFERENCES ddl_members (id);
ALTER TABLE ddl_members SET SCHEMA pg_catalog;
ALTER TABLE ddl_members DROP COLUMN org_id;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE ddl_members DROP CONSTRAINT tenant_router_range;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE ddl_members ALTER COLUMN org_id TYPE text;
CREATE INDEX CONCURRENTLY ON ddl_members (name);
CREATE INDEX ddl_members_name ON ddl_members (name);
ALTER INDEX ddl_members_name SET (fillfactor = 50);
DROP INDEX CONCURRENTLY ddl_members_name;
DROP INDEX ddl_members_name;
-- with multi-shard writes refused, DDL is refused too: it writes to every shard
SET tenant_router.multi_shard_writes = refuse;
ALTER TABLE ddl_members ADD COLUMN z int;
\echo :LAST_ERROR_SQLSTATE
RESET tenant_router.multi_shard_writes;

-- ALTER FOREIGN TABLE changes this coordinator only (how another
-- coordinator follows a change already made on the shards)
\c :shard1
ALTER TABLE public.ddl_members ADD COLUMN later int;
\c :shard2
ALTER TABLE public.ddl_members ADD COLUMN later int;
\c :shard3
ALTER TABLE public.ddl_members ADD COLUMN later int;
\c :coord
\set SHOW_CONTEXT never
ALTER FOREIGN TABLE ddl_members ADD COLUMN later int;
SELECT org_id, later FROM ddl_members WHERE org_id = 6;
ALTER FOREIGN TABLE ddl_members DROP COLUMN org_id;

-- DROP FOREIGN TABLE forgets the table here only: the shards keep it, as
-- other coordinators may use it
CREATE TABLE ddl_kept (tenant_id int NOT NULL);
SELECT logical_table_add('ddl_kept');
DROP FOREIGN TABLE ddl_kept;
SELECT count(*) AS kept FROM tenant_router.logical_tables WHERE table_id::text = 'ddl_kept';
\c :shard1
SELECT to_regclass('public.ddl_kept') AS kept_on_shard1;
DROP TABLE public.ddl_kept;
\c :shard2
DROP TABLE public.ddl_kept;
\c :shard3
DROP TABLE public.ddl_kept;

-- names that need quoting, an index found through the search_path
\c :coord
\set SHOW_CONTEXT never
CREATE SCHEMA "we""ird";
CREATE TABLE "we""ird"."ta ble" (tenant_id int NOT NULL, "v""al" text);
SELECT logical_table_add('"we""ird"."ta ble"');
SET search_path = "we""ird", public;
CREATE INDEX "in dex" ON "ta ble" ("v""al");
COMMENT ON INDEX "in dex" IS 'quoted';
ALTER TABLE "ta ble" RENAME COLUMN "v""al" TO "va""l";
\c :shard2
SELECT indexrelid::regclass, obj_description(indexrelid, 'pg_class'), pg_get_indexdef(indexrelid)
  FROM pg_index WHERE indrelid = '"we""ird"."ta ble"'::regclass;
\c :coord
\set SHOW_CONTEXT never
SET search_path = "we""ird", public;
DROP INDEX "in dex";
RESET search_path;
DROP TABLE "we""ird"."ta ble";
DROP SCHEMA "we""ird";
\c :shard1
DROP SCHEMA "we""ird";
\c :shard2
SELECT count(*) AS weird_tables FROM pg_class WHERE relnamespace = '"we""ird"'::regnamespace;
DROP SCHEMA "we""ird";
\c :shard3
DROP SCHEMA "we""ird";
\c :coord
\set SHOW_CONTEXT never

-- DROP TABLE drops it on every shard, in the same transaction
\c :coord
\set SHOW_CONTEXT never
BEGIN;
DROP TABLE ddl_members;
ROLLBACK;
SELECT count(*) FROM ddl_members;
\c :shard1
SELECT to_regclass('public.ddl_members') AS still_on_shard1;
\c :coord
\set SHOW_CONTEXT never
DROP TABLE ddl_members;
SELECT count(*) AS logical_tables FROM tenant_router.logical_tables;
\c :shard1
SELECT to_regclass('public.ddl_members') AS on_shard1;
DROP VIEW public.ddl_shape;
\c :shard3
SELECT to_regclass('public.ddl_members') AS on_shard3;
\c :shard2
SELECT to_regclass('public.ddl_members') AS on_shard2;
DROP VIEW public.ddl_shape;
DROP DATABASE ddl_shard3;
\c :coord
DROP EXTENSION tenant_router CASCADE;
