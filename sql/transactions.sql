-- transactions: remote transactions follow the local one
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
SET client_min_messages = warning;
\c :shard1
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.accounts;
\c :shard2
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.accounts;
\c :coord
\set SHOW_CONTEXT never
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
CREATE TABLE accounts (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, name text UNIQUE, balance int NOT NULL DEFAULT 0);
SELECT logical_table_add('accounts');

-- ROLLBACK leaves nothing on the shard
BEGIN;
INSERT INTO accounts (tenant_id, name) VALUES (1, 'a1');
SELECT name FROM accounts WHERE tenant_id = 1;
ROLLBACK;
SELECT count(*) FROM accounts WHERE tenant_id = 1;
\c :shard1
SELECT count(*) FROM accounts;
\c :coord
\set SHOW_CONTEXT never

-- COMMIT commits on the shard; one transaction sees its own writes
BEGIN;
INSERT INTO accounts (tenant_id, name, balance) VALUES (1, 'a1', 100);
UPDATE accounts SET balance = balance - 30 WHERE tenant_id = 1 AND name = 'a1';
SELECT name, balance FROM accounts WHERE tenant_id = 1;
COMMIT;
\c :shard1
SELECT name, balance FROM accounts;
\c :coord
\set SHOW_CONTEXT never

-- savepoints are mirrored on the shard
BEGIN;
INSERT INTO accounts (tenant_id, name) VALUES (2, 'kept1');
SAVEPOINT s1;
INSERT INTO accounts (tenant_id, name) VALUES (2, 'undone');
SAVEPOINT s2;
UPDATE accounts SET balance = 5 WHERE tenant_id = 2;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO accounts (tenant_id, name) VALUES (2, 'kept2');
RELEASE SAVEPOINT s1;
COMMIT;
SELECT name, balance FROM accounts WHERE tenant_id = 2 ORDER BY name;
-- an error inside a savepoint is rolled back to it, and the transaction goes on
BEGIN;
INSERT INTO accounts (tenant_id, name) VALUES (3, 'before');
SAVEPOINT s;
INSERT INTO accounts (tenant_id, name) VALUES (3, 'before');
ROLLBACK TO SAVEPOINT s;
INSERT INTO accounts (tenant_id, name) VALUES (3, 'after');
COMMIT;
SELECT name FROM accounts WHERE tenant_id = 3 ORDER BY name;
-- and the same with a PL/pgSQL exception block
DO $$
BEGIN
    INSERT INTO accounts (tenant_id, name) VALUES (4, 'plpgsql');
    BEGIN
        INSERT INTO accounts (tenant_id, name) VALUES (4, 'plpgsql');
    EXCEPTION WHEN unique_violation THEN
        RAISE NOTICE 'caught %', SQLSTATE;
    END;
    INSERT INTO accounts (tenant_id, name) VALUES (4, 'plpgsql2');
END
$$;
SELECT name FROM accounts WHERE tenant_id = 4 ORDER BY name;

-- a remote error keeps its SQLSTATE and names the shard
INSERT INTO accounts (tenant_id, name) VALUES (15000, 'b1');
INSERT INTO accounts (tenant_id, name) VALUES (15000, 'b1');
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT errors
INSERT INTO accounts (tenant_id, name) VALUES (15000, 'b1');
\set SHOW_CONTEXT never
-- and the transaction it happened in is rolled back everywhere
BEGIN;
INSERT INTO accounts (tenant_id, name) VALUES (15000, 'b2');
INSERT INTO accounts (tenant_id, name) VALUES (15000, 'b1');
COMMIT;
SELECT name FROM accounts WHERE tenant_id = 15000 ORDER BY name;

-- a transaction may read several shards, but write only one
BEGIN;
SELECT count(*) FROM accounts WHERE tenant_id = 1;
SELECT count(*) FROM accounts WHERE tenant_id = 15000;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 1;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 15000;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
INSERT INTO accounts (tenant_id, name) VALUES (5, 'x5'), (15005, 'x15005');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM accounts WHERE tenant_id IN (5, 15005);
-- several writes to one shard are fine
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 1;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 2;
INSERT INTO accounts (tenant_id, name) VALUES (6, 'x6'), (7, 'x7');
COMMIT;
SELECT name, balance FROM accounts WHERE tenant_id BETWEEN 1 AND 7 ORDER BY name;

-- read-only transactions refuse writes
BEGIN READ ONLY;
INSERT INTO accounts (tenant_id, name) VALUES (1, 'ro');
ROLLBACK;
-- PREPARE TRANSACTION is refused once a shard is involved
BEGIN;
SELECT count(*) FROM accounts WHERE tenant_id = 1;
PREPARE TRANSACTION 'tr_test';
\echo :LAST_ERROR_SQLSTATE

DROP EXTENSION tenant_router CASCADE;
\c :shard1
DROP TABLE public.accounts;
\c :shard2
DROP TABLE public.accounts;
