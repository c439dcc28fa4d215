-- privileges: who may change the topology, and who may see a DSN's password
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
SET client_min_messages = warning;
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1' || ' password=s3cret');
SELECT shard_add('shard2', 10001, 20000, 'postgresql://postgres:p%40ss@' ||
       substring(:'shard2' from 'host=(\S+)') || ':' || substring(:'shard2' from 'port=(\d+)') || '/postgres');
CREATE ROLE tr_app LOGIN;
CREATE ROLE tr_ops LOGIN IN ROLE tenant_router_admin;

-- a superuser sees the DSNs as given
SELECT shard_id, dsn ~ 's3cret|p%40ss' AS shows_password FROM tenant_router.shards ORDER BY 1;

-- anyone else reads the view with the passwords hidden, and not the table
SET ROLE tr_app;
SELECT shard_id, regexp_replace(dsn, 'port=\d+', 'port=N') AS dsn FROM tenant_router.shards ORDER BY 1;
SELECT dsn FROM tenant_router.shard;
\echo :LAST_ERROR_SQLSTATE
SELECT shard_for(5), shard_for(15000);
-- and may not change the topology
SELECT shard_add('shard3', 20001, 30000, 'host=127.0.0.1 port=1');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_update_range('shard1', 1, 5000);
SELECT shard_remove('shard1');
RESET ROLE;
CREATE TABLE mine (tenant_id int);
SET ROLE tr_app;
SELECT logical_table_add('mine');
RESET ROLE;

-- members of tenant_router_admin may change it, still without seeing passwords
SET ROLE tr_ops;
SELECT shard_update_range('shard2', 10001, 30000);
SELECT shard_id, range_end, dsn ~ 's3cret|p%40ss' AS shows_password FROM tenant_router.shards ORDER BY 1;
SELECT dsn FROM tenant_router.shard;
-- but a DSN is a credential: adding a shard, or handing its DSN to a new
-- shard by a split, takes a superuser (a DSN of a superuser of a shard would
-- otherwise run anything there as that superuser)
SELECT shard_add('shard9', 90000, 90001, 'host=127.0.0.1 port=1 password=hunter2');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_split('shard1', 5000, 'shard9', 'host=127.0.0.1 port=1');
-- even when EXECUTE is granted by hand
RESET ROLE;
GRANT EXECUTE ON FUNCTION shard_add(text, bigint, bigint, text, integer, integer) TO tr_ops;
SET ROLE tr_ops;
SELECT shard_add('shard9', 90000, 90001, 'host=127.0.0.1 port=1');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION shard_add(text, bigint, bigint, text, integer, integer) FROM tr_ops;
SET ROLE tr_ops;
SELECT shard_id, range_start, range_end FROM tenant_router.shards ORDER BY 1;
-- logical_table_add needs the table's owner too
SELECT logical_table_add('mine');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
ALTER TABLE mine OWNER TO tr_ops;
SET ROLE tr_ops;
SELECT logical_table_add('mine');
SELECT relkind, pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'mine';
RESET ROLE;

-- a member of tenant_router_admin may not have the shards run code it could
-- not run there (shards run definitions as the user of their DSN): what
-- logical_table_add ships uses only built-in immutable functions and
-- operators, built-in types and collations
GRANT CREATE ON SCHEMA public TO tr_ops;
SET ROLE tr_ops;
CREATE TABLE evil_read (tenant_id bigint, v text, CHECK (v IS NULL OR pg_read_file('/etc/passwd')::int > 0));
SELECT logical_table_add('evil_read');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE evil_xml (tenant_id bigint,
    v text CHECK (v IS NULL OR table_to_xml('pg_authid'::regclass, true, true, '')::text <> ''),
    w text CHECK (w IS NULL OR query_to_xml('SELECT 1', true, true, '')::text <> ''));
SELECT logical_table_add('evil_xml');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE evil_lo (tenant_id bigint, v bytea CHECK (v IS NULL OR lo_export(lo_from_bytea(0, v), '/tmp/x') = 1));
SELECT logical_table_add('evil_lo');
CREATE FUNCTION tr_len(text) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT length($1)';
CREATE TABLE evil_idx (tenant_id bigint, v text);
CREATE INDEX evil_idx_len ON evil_idx (tr_len(v));
SELECT logical_table_add('evil_idx');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE evil_pred (tenant_id bigint, v text);
CREATE INDEX evil_pred_v ON evil_pred (v) WHERE tr_len(v) > 0;
SELECT logical_table_add('evil_pred');
CREATE TYPE tr_mood AS ENUM ('ok', 'bad');
CREATE TABLE evil_type (tenant_id bigint, m tr_mood CHECK (m <> 'bad'));
SELECT logical_table_add('evil_type');
CREATE COLLATION tr_coll (provider = libc, locale = 'C');
CREATE TABLE evil_coll (tenant_id bigint, v text CHECK (v > 'a' COLLATE tr_coll));
SELECT logical_table_add('evil_coll');
-- nothing changed: the tables are still ordinary ones, and on no shard
SELECT relname, relkind FROM pg_class WHERE relname LIKE 'evil%' AND relkind IN ('r', 'f') ORDER BY 1;
SELECT count(*) AS registered FROM tenant_router.logical_tables WHERE table_id::text LIKE 'evil%';
-- built-in immutable definitions are accepted
CREATE TABLE fine (tenant_id bigint NOT NULL, v text CHECK (length(v) < 100 AND lower(v) <> 'x'),
    w int[] CHECK (w <> '{}' AND cardinality(w) < 10), EXCLUDE USING btree (tenant_id WITH =, v WITH =));
CREATE INDEX fine_lower ON fine (lower(v)) WHERE v <> '';
CREATE INDEX fine_fts ON fine USING gin (to_tsvector('english', v));
SELECT logical_table_add('fine');
INSERT INTO fine VALUES (5, 'a', '{1}');
SELECT tenant_id, v, w FROM fine WHERE tenant_id = 5;
-- the same rule for the DDL it propagates to the shards
ALTER TABLE fine ADD CONSTRAINT fine_evil CHECK (v IS NULL OR pg_read_file('/etc/passwd') <> '');
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE fine ADD COLUMN n int CHECK (n IS NULL OR length(query_to_xml('SELECT 1', true, true, '')::text) > 0);
CREATE INDEX fine_len ON fine (tr_len(v));
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE fine ADD CONSTRAINT fine_excl EXCLUDE USING btree (tr_len(v) WITH =);
ALTER TABLE fine ALTER COLUMN v TYPE int USING length(pg_read_file('/etc/passwd'));
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE fine ALTER COLUMN v TYPE tr_mood USING 'ok';
-- built-in immutable ones are accepted
ALTER TABLE fine ADD CONSTRAINT fine_short CHECK (length(v) < 50);
CREATE INDEX fine_upper ON fine (upper(v));
ALTER TABLE fine ALTER COLUMN v TYPE varchar(60) USING substr(v, 1, 60);
RESET ROLE;
\c :shard1
SELECT conname FROM pg_constraint WHERE conrelid = 'public.fine'::regclass ORDER BY 1;
SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'public.fine'::regclass ORDER BY 1;
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.fine'::regclass AND attname = 'v';
\c :coord
\set SHOW_CONTEXT never
-- a superuser's own table is shipped as it is: here the shard lacks tr_len()
CREATE TABLE su_idx (tenant_id bigint, v text);
CREATE INDEX su_idx_len ON su_idx (tr_len(v));
SELECT logical_table_add('su_idx');
\echo :LAST_ERROR_SQLSTATE
-- but a superuser calling it for a table of tr_ops ships tr_ops's code: no
ALTER TABLE su_idx OWNER TO tr_ops;
SELECT logical_table_add('su_idx');
\echo :LAST_ERROR_SQLSTATE
\c :shard1
SELECT to_regclass('public.evil_read') AS evil_read, to_regclass('public.evil_idx') AS evil_idx,
       to_regclass('public.su_idx') AS su_idx, to_regclass('public.fine') AS fine;
\c :coord
\set SHOW_CONTEXT never
DROP TABLE evil_read, evil_xml, evil_lo, evil_idx, evil_pred, evil_type, evil_coll, su_idx;
DROP FOREIGN TABLE fine;
DROP FUNCTION tr_len(text);
DROP TYPE tr_mood;
DROP COLLATION tr_coll;
REVOKE CREATE ON SCHEMA public FROM tr_ops;

-- the logical table's own privileges apply, on both paths
GRANT SELECT ON mine TO tr_app;
SET ROLE tr_app;
SELECT count(*) FROM mine WHERE tenant_id = 1;
SELECT count(*) FROM mine;
INSERT INTO mine VALUES (1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

DROP EXTENSION tenant_router CASCADE;
DROP ROLE tr_app, tr_ops;
\c :shard1
DROP TABLE public.mine, public.fine;
\c :shard2
DROP TABLE public.mine, public.fine;
