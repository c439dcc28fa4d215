-- privileges: who may change the topology, and who may see a DSN's password
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
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
DROP TABLE public.mine;
\c :shard2
DROP TABLE public.mine;
