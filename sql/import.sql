-- import: a new coordinator takes the logical tables from a shard with
-- IMPORT FOREIGN SCHEMA (here a second database of the same server)
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
\set coord2 'dbname=import_coord2 host=' :HOST ' port=' :PORT
SET client_min_messages = warning;
\c :shard1
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS crm, shop CASCADE;
\c :shard2
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS crm, shop CASCADE;
\c :coord
SET client_min_messages = warning;
DROP DATABASE IF EXISTS import_coord2;
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
CREATE SCHEMA crm;
CREATE TABLE crm.people (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL,
    name text COLLATE "C", email text CHECK (email LIKE '%@%'), UNIQUE (tenant_id, email));
CREATE INDEX people_name ON crm.people (lower(name));
SELECT logical_table_add('crm.people');
CREATE SCHEMA shop;
CREATE TABLE shop.orders (id bigserial PRIMARY KEY, org int NOT NULL, total numeric(10,2));
SELECT logical_table_add('shop.orders', 'org');
CREATE TABLE shop.skipped (tenant_id int NOT NULL);
SELECT logical_table_add('shop.skipped');
INSERT INTO crm.people (tenant_id, name, email) VALUES (5, 'ann', 'ann@example.com'), (15000, 'bo', 'bo@example.com');
INSERT INTO shop.orders (org, total) VALUES (5, 10), (15000, 20);
CREATE DATABASE import_coord2;

-- the second coordinator: the same shards, then the tables from a shard
\c :coord2
\set SHOW_CONTEXT never
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
CREATE SCHEMA crm;
IMPORT FOREIGN SCHEMA crm FROM SERVER tenant_router INTO crm;
SET search_path = crm, public;
\d people
SELECT table_id, tenant_column FROM tenant_router.logical_tables ORDER BY 1;
SELECT tenant_id, name, email FROM people ORDER BY tenant_id;
SELECT name FROM people WHERE tenant_id = 5;
-- what a shard added later gets: the table as the shard has it
SELECT unnest(shard_ddl) FROM tenant_router.logical_table WHERE table_id = 'crm.people'::regclass;
-- LIMIT TO and EXCEPT choose tables; OPTIONS (shard) the shard to read
CREATE SCHEMA shop;
IMPORT FOREIGN SCHEMA shop LIMIT TO (orders) FROM SERVER tenant_router INTO shop OPTIONS (shard 'shard2');
SELECT table_id, tenant_column FROM tenant_router.logical_tables ORDER BY 1;
SELECT org, total FROM shop.orders ORDER BY org;
-- ids: defaults are the coordinator's; a sequence set here starts above the shards' ids
CREATE SEQUENCE crm.people_id_seq;
ALTER FOREIGN TABLE people ALTER COLUMN id SET DEFAULT nextval('crm.people_id_seq');
INSERT INTO people (tenant_id, name, email) VALUES (5, 'cy', 'cy@example.com') RETURNING id;
-- refused: another local schema, an unknown option or shard, a user who is
-- not a superuser; nothing is created
IMPORT FOREIGN SCHEMA shop EXCEPT (orders) FROM SERVER tenant_router INTO public;
\echo :LAST_ERROR_SQLSTATE
IMPORT FOREIGN SCHEMA shop EXCEPT (orders) FROM SERVER tenant_router INTO shop OPTIONS (colour 'red');
IMPORT FOREIGN SCHEMA shop EXCEPT (orders) FROM SERVER tenant_router INTO shop OPTIONS (shard 'nope');
CREATE ROLE import_ops IN ROLE tenant_router_admin;
GRANT USAGE ON FOREIGN SERVER tenant_router TO import_ops;
GRANT CREATE ON SCHEMA shop TO import_ops;
SET ROLE import_ops;
IMPORT FOREIGN SCHEMA shop EXCEPT (orders) FROM SERVER tenant_router INTO shop;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS skipped FROM pg_class WHERE relname = 'skipped';
-- an existing table is an error, and nothing is imported
IMPORT FOREIGN SCHEMA crm FROM SERVER tenant_router INTO crm;
SELECT count(*) AS logical_tables FROM tenant_router.logical_tables;

-- cleanup
DROP EXTENSION tenant_router CASCADE;
DROP SCHEMA crm CASCADE;
DROP SCHEMA shop;
\c :coord
DROP DATABASE import_coord2;
DROP ROLE import_ops;
DROP TABLE crm.people, shop.orders, shop.skipped;
DROP SCHEMA crm, shop;
DROP EXTENSION tenant_router CASCADE;
