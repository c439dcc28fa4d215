-- logical_table_add: making tables logical, creating and checking them on the shards
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');

-- seed 000's table
CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    username VARCHAR(100) NOT NULL,
    email VARCHAR(255) UNIQUE NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_users_tenant_id ON users (tenant_id);
COMMENT ON TABLE users IS 'seed 000 users';
CREATE ROLE tr_reader;
GRANT SELECT ON users TO tr_reader;
GRANT UPDATE (username) ON users TO tr_reader;
SELECT logical_table_add('users');

-- the coordinator's table is now a foreign table of server tenant_router,
-- with the same columns, defaults, comment, privileges and sequence
\d users
SELECT obj_description('users'::regclass, 'pg_class') AS comment;
SELECT grantee, privilege_type FROM information_schema.role_table_grants
 WHERE table_name = 'users' AND grantee = 'tr_reader';
SELECT grantee, column_name, privilege_type FROM information_schema.column_privileges
 WHERE table_name = 'users' AND grantee = 'tr_reader' ORDER BY 2, 3;
SELECT pg_get_serial_sequence('users', 'id');
SELECT table_id, tenant_column FROM tenant_router.logical_tables;

-- each shard has the table, its keys and indexes, and its range constraint
\c :shard1
\d users
\c :shard2
\d users
\c :coord
\set SHOW_CONTEXT never

-- errors: nothing changes
SELECT logical_table_add('users');
\echo :LAST_ERROR_SQLSTATE
SELECT logical_table_add('no_such_table');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE t_nocol (id int);
SELECT logical_table_add('t_nocol');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE t_org (org_id int NOT NULL, v text);
SELECT logical_table_add('t_org', 'org_id');
SELECT table_id, tenant_column FROM tenant_router.logical_tables ORDER BY 1;
CREATE TABLE t_text (tenant_id text);
SELECT logical_table_add('t_text');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE t_rows (tenant_id bigint);
INSERT INTO t_rows VALUES (1);
SELECT logical_table_add('t_rows');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE t_view (tenant_id bigint);
CREATE VIEW v_view AS SELECT * FROM t_view;
SELECT logical_table_add('t_view');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE t_parent (id int PRIMARY KEY);
CREATE TABLE t_fk (tenant_id bigint, parent int REFERENCES t_parent);
SELECT logical_table_add('t_fk');
CREATE TABLE t_trig (tenant_id bigint);
CREATE FUNCTION t_trig_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER t_trig_t BEFORE INSERT ON t_trig FOR EACH ROW EXECUTE FUNCTION t_trig_f();
SELECT logical_table_add('t_trig');
CREATE TABLE t_ident (id int GENERATED ALWAYS AS IDENTITY, tenant_id bigint);
SELECT logical_table_add('t_ident');
CREATE TABLE t_part (tenant_id bigint) PARTITION BY RANGE (tenant_id);
SELECT logical_table_add('t_part');
\echo :LAST_ERROR_SQLSTATE
CREATE SEQUENCE t_seq;
SELECT logical_table_add('t_seq');
SELECT count(*) AS logical_tables FROM tenant_router.logical_tables;
SELECT relkind FROM pg_class WHERE relname IN ('t_rows', 't_view', 't_fk', 't_trig', 't_ident') ORDER BY relname;

-- a table that already exists on a shard is checked, column by column
\c :shard2
CREATE TABLE public.orders (id bigint, tenant_id integer, amount text, extra int);
\c :coord
\set SHOW_CONTEXT never
CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id int NOT NULL, amount numeric(12,2), note text);
SELECT logical_table_add('orders');
\echo :LAST_ERROR_SQLSTATE
-- nothing changed: orders is still an ordinary table, and not on shard1
SELECT relkind FROM pg_class WHERE relname = 'orders';
\c :shard1
SELECT to_regclass('public.orders') AS orders_on_shard1;
-- a matching table is adopted as it is, rows included; its rows must fit the range
\c :shard2
DROP TABLE public.orders;
CREATE TABLE public.orders (id bigint PRIMARY KEY, tenant_id integer NOT NULL, amount numeric(12,2), note text);
INSERT INTO public.orders VALUES (1, 15000, 9.99, 'kept');
\c :coord
\set SHOW_CONTEXT never
SELECT logical_table_add('orders');
SELECT id, tenant_id, amount, note FROM orders WHERE tenant_id = 15000;
\c :shard2
\d orders
INSERT INTO public.orders VALUES (2, 5, 1, 'misrouted');
\echo :LAST_ERROR_SQLSTATE

-- shard_update_range keeps the range constraint true, and refuses a range
-- that would leave rows outside it
\c :coord
\set SHOW_CONTEXT never
SELECT shard_update_range('shard2', 10001, 12000);
\echo :LAST_ERROR_SQLSTATE
SELECT range_start, range_end FROM tenant_router.shards WHERE shard_id = 'shard2';
SELECT shard_update_range('shard2', 10001, 30000);
\c :shard2
SELECT conrelid::regclass, conname, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid IN ('public.users'::regclass, 'public.orders'::regclass) AND contype = 'c' ORDER BY 1, 2;
-- and a shard added later gets every logical table
\c :coord
\set SHOW_CONTEXT never
SELECT shard_update_range('shard2', 10001, 20000);
\c :shard2
CREATE DATABASE tr_shard3;
\c :coord
\set SHOW_CONTEXT never
SELECT regexp_replace(:'shard2', 'dbname=\S+', 'dbname=tr_shard3') AS shard3 \gset
SELECT shard_add('shard3', 20001, 30000, :'shard3');
\c :shard3
\dt public.*
SELECT conrelid::regclass, pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range' ORDER BY 1;

-- DROP FOREIGN TABLE forgets a logical table on this coordinator; its copies
-- on the shards stay (DROP TABLE drops them too: sql/ddl.sql)
\c :coord
\set SHOW_CONTEXT never
CREATE ROLE tr_dropper;
CREATE TABLE t_drop (tenant_id int NOT NULL);
ALTER TABLE t_drop OWNER TO tr_dropper;
SELECT logical_table_add('t_drop');
SELECT table_id FROM tenant_router.logical_tables ORDER BY 1;
SET ROLE tr_dropper;
DROP FOREIGN TABLE t_drop;
RESET ROLE;
SELECT table_id FROM tenant_router.logical_tables ORDER BY 1;
DROP ROLE tr_dropper;

-- privileges are copied whatever the names of the columns and roles
CREATE TABLE t_pct (tenant_id bigint NOT NULL, "a%s%s%s%s" int);
CREATE ROLE "tr_%s%n";
GRANT SELECT ("a%s%s%s%s") ON t_pct TO PUBLIC;
GRANT UPDATE ("a%s%s%s%s") ON t_pct TO "tr_%s%n";
SELECT logical_table_add('t_pct');
SELECT grantee, column_name, privilege_type FROM information_schema.column_privileges
 WHERE table_name = 't_pct' AND grantee <> current_user ORDER BY 1, 3;
DROP FOREIGN TABLE t_pct;
DROP ROLE "tr_%s%n";

-- cleanup, on the shards too
\c :coord
DROP EXTENSION tenant_router CASCADE;
DROP TABLE t_nocol, t_text, t_rows, t_view CASCADE;
DROP TABLE t_fk, t_parent, t_trig, t_ident, t_part;
DROP FUNCTION t_trig_f();
DROP SEQUENCE t_seq;
DROP ROLE tr_reader;
\c :shard1
DROP TABLE public.users, public.orders, public.t_org, public.t_drop, public.t_pct;
\c :shard2
DROP TABLE public.users, public.orders, public.t_org, public.t_drop, public.t_pct;
DROP DATABASE tr_shard3;
