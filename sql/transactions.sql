-- transactions: remote transactions follow the local one
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
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

-- with tenant_router.multi_shard_writes = refuse, a transaction may read
-- several shards, but write only one
SET tenant_router.multi_shard_writes = refuse;
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
-- the default, 2pc: writes to several shards commit together ...
RESET tenant_router.multi_shard_writes;
SHOW tenant_router.multi_shard_writes;
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 1;
INSERT INTO accounts (tenant_id, name) VALUES (15005, 'x15005');
COMMIT;
INSERT INTO accounts (tenant_id, name) VALUES (5, 'x5'), (15006, 'x15006');
SELECT tenant_id, name FROM accounts WHERE tenant_id IN (5, 15005, 15006) ORDER BY 1;
-- ... or roll back together, here when the second shard fails
BEGIN;
INSERT INTO accounts (tenant_id, name) VALUES (9, 'x9');
INSERT INTO accounts (tenant_id, name) VALUES (15005, 'x15005');
\echo :LAST_ERROR_SQLSTATE
COMMIT;
SELECT count(*) FROM accounts WHERE tenant_id = 9;
-- nothing is left prepared on the shards, and every decision was resolved
SELECT tenant_router.recover_prepared_transactions();
SELECT count(*) AS commit_records FROM tenant_router.commit_record;
DELETE FROM accounts WHERE tenant_id IN (5, 15005, 15006);
-- several writes to one shard are fine
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 1;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 2;
INSERT INTO accounts (tenant_id, name) VALUES (6, 'x6'), (7, 'x7');
COMMIT;
SELECT name, balance FROM accounts WHERE tenant_id BETWEEN 1 AND 7 ORDER BY name;

-- TRUNCATE writes every shard, atomically, with the other writes of its
-- transaction: rolled back, it leaves every row in place
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 1;
TRUNCATE accounts;
INSERT INTO accounts (tenant_id, name) VALUES (1, 'after truncate');
SELECT count(*) FROM accounts;
ROLLBACK;
SELECT count(*) > 0 AS rows_kept FROM accounts;
-- refused when multi-shard writes are
SET tenant_router.multi_shard_writes = refuse;
TRUNCATE accounts;
\echo :LAST_ERROR_SQLSTATE
RESET tenant_router.multi_shard_writes;
SELECT count(*) > 0 AS rows_kept FROM accounts;

-- a cursor opened before a savepoint fails after it: the shard's transaction
-- is lost with the error, and COMMIT says so rather than commit nothing
INSERT INTO accounts (tenant_id, name, balance) VALUES (8, 'y8', 5), (8, 'z8', 0);
BEGIN;
UPDATE accounts SET balance = balance + 1000 WHERE tenant_id = 8 AND name = 'y8';
DECLARE c CURSOR FOR SELECT name, 100 / balance
    FROM (SELECT * FROM accounts WHERE tenant_id = 8 ORDER BY name OFFSET 0) s;
FETCH 1 FROM c;
SAVEPOINT a;
FETCH 1 FROM c;
ROLLBACK TO a;
COMMIT;
\echo :LAST_ERROR_SQLSTATE
SELECT name, balance FROM accounts WHERE tenant_id = 8 ORDER BY name;
-- the same through a PL/pgSQL exception block
BEGIN;
UPDATE accounts SET balance = balance + 1000 WHERE tenant_id = 8 AND name = 'y8';
DO $$
DECLARE
    c CURSOR FOR SELECT 100 / balance AS q
        FROM (SELECT * FROM accounts WHERE tenant_id = 8 ORDER BY name OFFSET 0) s;
    r record;
BEGIN
    OPEN c;
    FETCH c INTO r;
    BEGIN
        FETCH c INTO r;
    EXCEPTION WHEN division_by_zero THEN
        RAISE NOTICE 'caught %', SQLSTATE;
    END;
END
$$;
SELECT count(*) FROM accounts WHERE tenant_id = 8;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT name, balance FROM accounts WHERE tenant_id = 8 ORDER BY name;
-- a savepoint taken before the shard's transaction failed covers the failure
BEGIN;
SAVEPOINT outer_sp;
DECLARE c CURSOR FOR SELECT name, 100 / balance
    FROM (SELECT * FROM accounts WHERE tenant_id = 8 ORDER BY name OFFSET 0) s;
FETCH 1 FROM c;
SAVEPOINT inner_sp;
FETCH 1 FROM c;
ROLLBACK TO inner_sp;
ROLLBACK TO outer_sp;
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 8 AND name = 'y8';
COMMIT;
SELECT name, balance FROM accounts WHERE tenant_id = 8 ORDER BY name;
-- a cursor whose query started inside a savepoint rolled back since is
-- cancelled with it; it never reads another statement's rows
BEGIN;
DECLARE c CURSOR FOR SELECT name FROM accounts WHERE tenant_id = 2 ORDER BY name;
SAVEPOINT b;
FETCH 1 FROM c;
ROLLBACK TO b;
SELECT name FROM accounts WHERE tenant_id = 3 ORDER BY name;
FETCH 1 FROM c;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- a subquery of RETURNING reads its own tenant's shard
INSERT INTO accounts (tenant_id, name) VALUES (9, 'r9')
    RETURNING name, (SELECT name FROM accounts WHERE tenant_id = 15000 AND name = 'b1') AS other;
PREPARE ins_ret(bigint, text) AS INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)
    RETURNING name, (SELECT count(*) FROM accounts WHERE tenant_id = 15000) AS other;
EXECUTE ins_ret(9, 'r9b');
DEALLOCATE ins_ret;

-- the same statement text with other parameter types is another statement
PREPARE small(int) AS SELECT name FROM accounts WHERE tenant_id = 1 AND balance < $1;
PREPARE big(bigint) AS SELECT name FROM accounts WHERE tenant_id = 1 AND balance < $1;
EXECUTE small(1000);
EXECUTE big(5000000000);
DEALLOCATE small;
DEALLOCATE big;

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
