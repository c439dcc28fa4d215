-- adopt: shards that already hold rows (seed 000's order), the coordinator's
-- sequences above the ids they hold, and sequence blocks
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
\set users_table 'CREATE TABLE public.users (id SERIAL PRIMARY KEY, tenant_id BIGINT NOT NULL, username VARCHAR(100) NOT NULL, email VARCHAR(255) UNIQUE NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP)'
SET client_min_messages = warning;
-- seed 000: the shards come first, each with its users table and a row
\c :shard1
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.users;
:users_table;
INSERT INTO users (tenant_id, username, email) VALUES (1001, 'alice', 'alice@example.com');
\c :shard2
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.users;
DROP DATABASE IF EXISTS adopt_shard3;
:users_table;
INSERT INTO users (tenant_id, username, email) VALUES (15001, 'bob', 'bob@example.com');
-- then the coordinator: the table, logical_table_add, shard_add
\c :coord
\set SHOW_CONTEXT never
CREATE EXTENSION tenant_router;
:users_table;
-- its key and the email's unique constraint hold per shard: a WARNING says so
SELECT logical_table_add('users');
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
-- the first inserts through the coordinator do not collide with the shards' ids
INSERT INTO users (tenant_id, username, email) VALUES (1001, 'carol', 'carol@example.com') RETURNING id;
INSERT INTO users (tenant_id, username, email) VALUES (15001, 'dave', 'dave@example.com') RETURNING id;
SELECT id, tenant_id, username FROM users ORDER BY id;

-- a shard whose rows are not all its own tenants' is refused, naming how
-- many and the shard; nothing changes
\c :shard2
CREATE DATABASE adopt_shard3;
\c :coord
\set SHOW_CONTEXT never
SELECT regexp_replace(:'shard2', 'dbname=\S+', 'dbname=adopt_shard3') AS shard3 \gset
\c :shard3
:users_table;
INSERT INTO users (id, tenant_id, username, email) VALUES (500, 25001, 'erin', 'erin@example.com'),
    (501, 5, 'misrouted', 'm1@example.com'), (502, 6, 'misrouted', 'm2@example.com');
\c :coord
\set SHOW_CONTEXT never
SELECT shard_add('shard3', 20001, 30000, :'shard3');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS shard3_added FROM tenant_router.shards WHERE shard_id = 'shard3';
\c :shard3
DELETE FROM users WHERE username = 'misrouted';
SELECT conname FROM pg_constraint WHERE conname = 'tenant_router_range';
\c :coord
\set SHOW_CONTEXT never
SELECT shard_add('shard3', 20001, 30000, :'shard3');
-- ids continue above the largest one shard3 brought
INSERT INTO users (tenant_id, username, email) VALUES (25001, 'frank', 'frank@example.com') RETURNING id;

-- several coordinators: each draws from its own block of the sequence's type
SELECT sequence_block_set(2);
SELECT block FROM tenant_router.sequence_block;
SELECT seqmin, seqmax FROM pg_sequence WHERE seqrelid = 'users_id_seq'::regclass;
INSERT INTO users (tenant_id, username, email) VALUES (1002, 'gina', 'gina@example.com') RETURNING id;
-- a shard that brings ids inside the block: the sequence moves above them
\c :shard1
INSERT INTO users (id, tenant_id, username, email) VALUES (67108900, 1003, 'hank', 'hank@example.com');
\c :coord
\set SHOW_CONTEXT never
SELECT sequence_block_set(2);
INSERT INTO users (tenant_id, username, email) VALUES (1002, 'ivy', 'ivy@example.com') RETURNING id;
SELECT sequence_block_set(64);
\echo :LAST_ERROR_SQLSTATE
-- no block: the sequence's own bounds again, above every id the shards hold
SELECT sequence_block_set(NULL);
SELECT seqmin, seqmax FROM pg_sequence WHERE seqrelid = 'users_id_seq'::regclass;
INSERT INTO users (tenant_id, username, email) VALUES (1002, 'jack', 'jack@example.com') RETURNING id;
-- a default set later is fitted the same way
CREATE SEQUENCE other_ids;
ALTER TABLE users ALTER COLUMN id SET DEFAULT nextval('other_ids');
SELECT last_value, is_called FROM other_ids;
-- a table made logical when the shards already hold it, with rows
\c :shard1
CREATE TABLE public.notes (id bigserial PRIMARY KEY, tenant_id int NOT NULL, body text);
INSERT INTO notes VALUES (70, 5, 'kept');
\c :shard2
CREATE TABLE public.notes (id bigserial PRIMARY KEY, tenant_id int NOT NULL, body text);
INSERT INTO notes VALUES (90, 15000, 'kept');
\c :shard3
CREATE TABLE public.notes (id bigserial PRIMARY KEY, tenant_id int NOT NULL, body text);
\c :coord
\set SHOW_CONTEXT never
CREATE TABLE notes (id bigserial PRIMARY KEY, tenant_id int NOT NULL, body text);
SELECT logical_table_add('notes');
INSERT INTO notes (tenant_id, body) VALUES (5, 'new') RETURNING id;
-- its rows must be the shard's own, too
CREATE TABLE stray (tenant_id int NOT NULL);
\c :shard1
CREATE TABLE public.stray (tenant_id int NOT NULL);
INSERT INTO stray VALUES (1), (20000), (30000);
\c :coord
\set SHOW_CONTEXT never
SELECT logical_table_add('stray');
SELECT relkind FROM pg_class WHERE relname = 'stray';

-- cleanup, on the shards too
DROP TABLE stray;
DROP EXTENSION tenant_router CASCADE;
DROP SEQUENCE other_ids;
\c :shard1
DROP TABLE public.users, public.notes, public.stray;
\c :shard2
DROP TABLE public.users, public.notes;
DROP DATABASE adopt_shard3;
