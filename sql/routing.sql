-- routing: statements pinned to one tenant run whole on its shard (the fast path)
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    username VARCHAR(100) NOT NULL,
    email VARCHAR(255) UNIQUE NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);
SELECT logical_table_add('users');
CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL,
                     user_id int NOT NULL, amount numeric(10,2) NOT NULL);
SELECT logical_table_add('orders');

-- INSERT: one row, ids from the coordinator's sequence, defaults computed here
INSERT INTO users (tenant_id, username, email) VALUES (123, 'alice_shard1', 'alice@example.com');
INSERT INTO users (tenant_id, username, email) VALUES (15000, 'bob_shard2', 'bob@example.com')
    RETURNING id, tenant_id, username, created_at <= now() AS created_here;
INSERT INTO users (tenant_id, username, email) VALUES (124, 'carol', 'carol@example.com'), (125, 'dave', 'dave@example.com');
EXPLAIN (COSTS OFF, VERBOSE) INSERT INTO users (tenant_id, username, email) VALUES (126, 'eve', 'eve@example.com');
INSERT INTO orders (tenant_id, user_id, amount) VALUES (123, 1, 10), (123, 1, 20.5), (124, 3, 7);
INSERT INTO orders (tenant_id, user_id, amount) VALUES (15000, 2, 99.99);
-- the rows are on the shards that own their tenants
\c :shard1
SELECT id, tenant_id, username FROM users ORDER BY id;
SELECT id, tenant_id, user_id, amount FROM orders ORDER BY id;
\c :shard2
SELECT id, tenant_id, username FROM users ORDER BY id;
SELECT id, tenant_id, user_id, amount FROM orders ORDER BY id;
\c :coord
\set SHOW_CONTEXT never

-- SELECT: the plan names the tenant and the shard, the remote SQL is PostgreSQL's own deparse
EXPLAIN (COSTS OFF, VERBOSE) SELECT * FROM users WHERE tenant_id = 123;
SELECT id, tenant_id, username FROM users WHERE tenant_id = 123;
SELECT tenant_id, count(*), sum(amount), max(amount) FROM orders WHERE tenant_id = 123 GROUP BY tenant_id;
SELECT amount FROM orders WHERE tenant_id = 123 ORDER BY amount DESC LIMIT 1;
-- joins on the tenant column, subqueries, CTEs and views over one tenant
EXPLAIN (COSTS OFF, VERBOSE)
SELECT u.username, sum(o.amount) FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id
 WHERE u.tenant_id = 123 GROUP BY u.username;
SELECT u.username, sum(o.amount) FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id
 WHERE u.tenant_id = 123 GROUP BY u.username;
SELECT username FROM users u WHERE tenant_id = 124
   AND EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = u.tenant_id AND o.user_id = u.id);
WITH big AS (SELECT * FROM orders WHERE tenant_id = 123 AND amount > 15)
SELECT count(*) FROM big;
CREATE VIEW user_orders AS
    SELECT u.tenant_id, u.username, o.amount FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id;
EXPLAIN (COSTS OFF) SELECT * FROM user_orders WHERE tenant_id = 15000;
SELECT * FROM user_orders WHERE tenant_id = 15000;
-- stable expressions and the coordinator's values are computed here, sent as parameters
EXPLAIN (COSTS OFF, VERBOSE) SELECT username FROM users WHERE tenant_id = 123 AND created_at <= now() AND username <> current_user;

-- IN and NOT IN (subquery): the sublink's column stays in the statement sent
SELECT username FROM users WHERE tenant_id = 124 AND id IN (SELECT user_id FROM orders WHERE tenant_id = 124);
SELECT username FROM users WHERE tenant_id = 125 AND id NOT IN (SELECT user_id FROM orders WHERE tenant_id = 125);
SELECT username FROM users WHERE tenant_id = 124 AND 3 = ANY (SELECT user_id FROM orders WHERE tenant_id = 124);
EXPLAIN (COSTS OFF, VERBOSE)
SELECT username FROM users WHERE tenant_id = 123 AND id NOT IN (SELECT user_id FROM orders WHERE tenant_id = 123);

-- UPDATE and DELETE, with RETURNING; the row count is the shard's
UPDATE users SET username = 'alice' WHERE tenant_id = 123 RETURNING id, username;
UPDATE orders SET amount = amount + 1 WHERE tenant_id = 123;
DELETE FROM orders WHERE tenant_id = 124 RETURNING user_id, amount;
SELECT count(*) FROM orders WHERE tenant_id = 124;
-- through a simple view: the view's condition goes with the statement, on the same table
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 15;
EXPLAIN (COSTS OFF, VERBOSE) UPDATE big_orders SET amount = amount * 2 WHERE tenant_id = 123;
UPDATE big_orders SET amount = amount * 2 WHERE tenant_id = 123 RETURNING user_id, amount;
SELECT amount FROM orders WHERE tenant_id = 123 ORDER BY amount;
DELETE FROM big_orders WHERE tenant_id = 15000 RETURNING amount;
SELECT count(*) FROM orders WHERE tenant_id = 15000;
-- ON CONFLICT goes to the shard whole
INSERT INTO users (id, tenant_id, username, email) VALUES (1, 123, 'alice', 'alice@example.com')
    ON CONFLICT (id) DO UPDATE SET username = excluded.username || ' again' RETURNING id, username;
INSERT INTO users (id, tenant_id, username, email) VALUES (1, 123, 'x', 'x@example.com') ON CONFLICT DO NOTHING;
-- so do several rows of one tenant, with ON CONFLICT on the shard's unique index
CREATE TABLE stock (tenant_id bigint, sku int, qty int NOT NULL, PRIMARY KEY (tenant_id, sku));
SELECT logical_table_add('stock');
EXPLAIN (COSTS OFF, VERBOSE)
INSERT INTO stock VALUES (123, 1, 5), (123, 2, 7) ON CONFLICT (tenant_id, sku) DO NOTHING;
INSERT INTO stock VALUES (123, 1, 5), (123, 2, 7) ON CONFLICT (tenant_id, sku) DO NOTHING;
INSERT INTO stock VALUES (123, 2, 1), (123, 3, 1) ON CONFLICT (tenant_id, sku) DO NOTHING;
INSERT INTO stock VALUES (123, 3, 10), (123, 4, 1)
    ON CONFLICT (tenant_id, sku) DO UPDATE SET qty = stock.qty + excluded.qty RETURNING sku, qty;
PREPARE restock(bigint, int) AS INSERT INTO stock VALUES ($1, 1, $2), ($1, 5, $2)
    ON CONFLICT (tenant_id, sku) DO UPDATE SET qty = stock.qty + excluded.qty;
EXECUTE restock(123, 100);
\c :shard1
SELECT tenant_id, sku, qty FROM stock ORDER BY sku;
\c :coord
\set SHOW_CONTEXT never

-- a write to a tenant's rows can only land on its shard: moving a row to another
-- shard's range fails on the shard's range constraint
\set VERBOSITY terse
UPDATE users SET tenant_id = 15001 WHERE tenant_id = 123;
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE

-- a NULL tenant matches no row, and a shard says what that means (count(*) is 0)
SELECT count(*) FROM users WHERE tenant_id = NULL;
UPDATE users SET username = 'nobody' WHERE tenant_id = NULL RETURNING id;
-- a tenant no shard owns: reading or changing its rows is an error (55000), and
-- so is inserting one (23514)
SELECT count(*) FROM users WHERE tenant_id = 99999;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM users WHERE tenant_id = 99999;
UPDATE users SET username = 'nobody' WHERE tenant_id = 99999;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO users (tenant_id, username, email) VALUES (99999, 'nobody', 'nobody@example.com');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO users (tenant_id, username, email) VALUES (NULL, 'nobody', 'nobody@example.com');
\echo :LAST_ERROR_SQLSTATE

-- prepared statements: generic plans route by each execution's tenant
SET plan_cache_mode = force_generic_plan;
PREPARE get_user(bigint) AS SELECT username FROM users WHERE tenant_id = $1 ORDER BY id LIMIT 1;
EXPLAIN (COSTS OFF) EXECUTE get_user(123);
PREPARE count_users(bigint) AS SELECT count(*) FROM users WHERE tenant_id = $1;
EXECUTE count_users(123);
EXECUTE count_users(NULL);
EXECUTE get_user(123);
EXECUTE get_user(15000);
EXECUTE get_user(99999);
\echo :LAST_ERROR_SQLSTATE
PREPARE add_user(bigint, text) AS
    INSERT INTO users (tenant_id, username, email) VALUES ($1, $2, $2 || '@example.com') RETURNING tenant_id, username;
EXECUTE add_user(9500, 'frank');
\c :shard1
SELECT tenant_id, username FROM users WHERE tenant_id = 9500;
\c :coord
\set SHOW_CONTEXT never
SET plan_cache_mode = force_generic_plan;
PREPARE add_user(bigint, text) AS
    INSERT INTO users (tenant_id, username, email) VALUES ($1, $2, $2 || '@example.com') RETURNING tenant_id, username;
PREPARE get_user(bigint) AS SELECT username FROM users WHERE tenant_id = $1 ORDER BY id LIMIT 1;
EXECUTE get_user(9500);
-- a topology change between two executions of one prepared statement is
-- followed by the next execution: tenants 9001..10000 move to shard2
DELETE FROM users WHERE tenant_id = 9500;
SELECT shard_update_range('shard1', 1, 9000);
SELECT shard_update_range('shard2', 9001, 20000);
EXECUTE add_user(9500, 'frank');
EXECUTE get_user(9500);
\c :shard2
SELECT tenant_id, username FROM users WHERE tenant_id = 9500;
\c :shard1
SELECT count(*) FROM users WHERE tenant_id = 9500;
\c :coord
\set SHOW_CONTEXT never

-- a statement the fast path cannot take still runs correctly, through the FDW
EXPLAIN (COSTS OFF) SELECT count(*) FROM users WHERE tenant_id IN (123, 15000);
SELECT count(*) FROM users WHERE tenant_id IN (123, 15000);
SET tenant_router.enable_fast_path = off;
EXPLAIN (COSTS OFF) SELECT username FROM users WHERE tenant_id = 123;
SELECT username FROM users WHERE tenant_id = 123;
RESET tenant_router.enable_fast_path;
-- and the fast path says why at DEBUG1 (planning only: no shard is asked)
SET client_min_messages = debug1;
EXPLAIN (COSTS OFF) SELECT count(*) FROM users WHERE tenant_id IN (123, 15000);
EXPLAIN (COSTS OFF) SELECT username FROM users u JOIN orders o ON o.user_id = u.id
 WHERE u.tenant_id = 123 AND o.tenant_id = 124;
EXPLAIN (COSTS OFF) SELECT username FROM users WHERE tenant_id = 123 AND random() < 0.5;
EXPLAIN (COSTS OFF) SELECT username FROM users WHERE tenant_id = 123 AND to_char(created_at, 'YYYY') = '2024';
EXPLAIN (COSTS OFF) INSERT INTO users (tenant_id, username, email) VALUES (123, 'x', 'x@x'), (124, 'y', 'y@y');
EXPLAIN (COSTS OFF) INSERT INTO orders (tenant_id, user_id, amount) SELECT tenant_id, 1, 1 FROM users WHERE tenant_id = 123;
EXPLAIN (COSTS OFF) DELETE FROM users WHERE tenant_id = 123 AND id IN (SELECT user_id FROM orders);
SET tenant_router.enable_fast_path = off;
EXPLAIN (COSTS OFF) SELECT username FROM users WHERE tenant_id = 123;
RESET tenant_router.enable_fast_path;
RESET client_min_messages;

DROP VIEW user_orders, big_orders;
DROP EXTENSION tenant_router CASCADE;
\c :shard1
DROP TABLE public.users, public.orders, public.stock;
\c :shard2
DROP TABLE public.users, public.orders, public.stock;
