-- multi_shard: statements over several shards answer exactly as one server
-- would.  The same generated rows live in logical tables over 4 shards and
-- in plain tables on the coordinator; every query runs on both and the
-- answers are compared (row order too where the query orders).
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
-- shards 3 and 4 are databases next to shards 1 and 2
\c :shard1
CREATE DATABASE tr_ms3;
\c :shard2
CREATE DATABASE tr_ms4;
\c :coord
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SELECT regexp_replace(:'shard1', 'dbname=\S+', 'dbname=tr_ms3') AS shard3,
       regexp_replace(:'shard2', 'dbname=\S+', 'dbname=tr_ms4') AS shard4 \gset
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 2500, :'shard1');
SELECT shard_add('shard2', 2501, 5000, :'shard2');
SELECT shard_add('shard3', 5001, 7500, :'shard3');
SELECT shard_add('shard4', 7501, 10000, :'shard4');

CREATE TABLE ms_orders (id bigint NOT NULL, tenant_id bigint NOT NULL, account_id int,
                        amount numeric(12,2), qty int, price float8, status text,
                        note text, created date, ts timestamptz, big bigint);
CREATE TABLE ms_accounts (tenant_id bigint NOT NULL, account_id int NOT NULL,
                          name text NOT NULL, tier int);
CREATE TABLE ms_orders_local (LIKE ms_orders);
CREATE TABLE ms_accounts_local (LIKE ms_accounts);
CREATE TABLE ms_tiers (tier int PRIMARY KEY, label text);
INSERT INTO ms_tiers VALUES (0, 'bronze'), (1, 'silver'), (2, 'gold');
SELECT logical_table_add('ms_orders');
SELECT logical_table_add('ms_accounts');

-- 20 000 orders of 10 000 tenants, with NULLs, numerics of two scales and
-- bigint sums beyond bigint; accounts of every third tenant
CREATE VIEW ms_gen_orders AS
SELECT g::bigint AS id, 1 + (g * 7919) % 10000 AS tenant_id, g % 13 AS account_id,
       CASE WHEN g % 17 = 0 THEN NULL ELSE ((g * 37) % 100000) / 100.0 END AS amount,
       g % 9 AS qty, (g % 1000) / 7.0 AS price,
       (ARRAY['open', 'paid', 'void', 'refund'])[1 + g % 4] AS status,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'x' || (g % 7) END AS note,
       date '2024-01-01' + g % 400 AS created,
       timestamptz '2024-01-01 00:00+00' + g * interval '37 minutes' AS ts,
       CASE WHEN g % 2 = 0 THEN 4000000000000000000 ELSE -3000000000000000000 + g END AS big
  FROM generate_series(1, 20000) g;
INSERT INTO ms_orders SELECT * FROM ms_gen_orders;
INSERT INTO ms_orders_local SELECT * FROM ms_gen_orders;
INSERT INTO ms_accounts SELECT t, a, 'acct ' || t || '/' || a, (t + a) % 3
  FROM generate_series(3, 10000, 3) t, generate_series(0, 12, 4) a;
INSERT INTO ms_accounts_local SELECT * FROM ms_accounts;
SELECT (SELECT count(*) FROM ms_orders) AS orders, (SELECT count(*) FROM ms_accounts) AS accounts;

-- ms_check(q, ordered): runs q with {o} and {a} as the logical tables, then as
-- the plain ones, and says 'ok' if both give the same rows (in the same
-- order if ordered)
CREATE FUNCTION ms_run(q text, orders text, accounts text, ordered boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE result text;
BEGIN
    EXECUTE format('SELECT array_agg(x::text %s)::text FROM (%s) x',
                   CASE WHEN ordered THEN '' ELSE 'ORDER BY x::text' END,
                   replace(replace(q, '{o}', orders), '{a}', accounts))
       INTO result;
    RETURN result;
END $$;
CREATE FUNCTION ms_check(q text, ordered boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE a text; b text;
BEGIN
    a := ms_run(q, 'ms_orders', 'ms_accounts', ordered);
    b := ms_run(q, 'ms_orders_local', 'ms_accounts_local', ordered);
    IF a IS NOT DISTINCT FROM b THEN RETURN 'ok'; END IF;
    RETURN 'DIFFERENT: ' || left(coalesce(a, 'NULL'), 300) || ' <> ' || left(coalesce(b, 'NULL'), 300);
END $$;

CREATE TABLE ms_queries (n int PRIMARY KEY, q text NOT NULL, ordered boolean NOT NULL DEFAULT false);
INSERT INTO ms_queries VALUES
 (1, 'SELECT count(*) FROM {o}', false),
 (2, 'SELECT count(note), count(amount), count(DISTINCT status) FROM {o}', false),
 (3, 'SELECT sum(amount), avg(amount), min(amount), max(amount) FROM {o}', false),
 (4, 'SELECT sum(qty), avg(qty), sum(id), avg(id) FROM {o}', false),
 (5, 'SELECT round(avg(price)::numeric, 6), round(stddev(price)::numeric, 6), round(variance(price)::numeric, 4), round(sum(price)::numeric, 4) FROM {o}', false),
 (6, 'SELECT status, count(*), sum(amount), avg(amount) FROM {o} GROUP BY status', false),
 (7, 'SELECT status, created, count(*), max(amount) FROM {o} GROUP BY status, created HAVING count(*) > 12', false),
 (8, 'SELECT date_trunc(''month'', created) m, sum(amount) FROM {o} GROUP BY 1 HAVING sum(amount) > 100 ORDER BY 1', true),
 (9, 'SELECT tenant_id, count(*), sum(amount), string_agg(status, '','' ORDER BY id) FROM {o} GROUP BY tenant_id HAVING count(*) > 3', false),
 (10, 'SELECT count(DISTINCT tenant_id) FROM {o}', false),
 (11, 'SELECT count(DISTINCT tenant_id) FROM {o} WHERE amount > 500', false),
 (12, 'SELECT * FROM {o} ORDER BY amount DESC NULLS LAST, id LIMIT 10', true),
 (13, 'SELECT id, amount FROM {o} ORDER BY amount, id LIMIT 10 OFFSET 25', true),
 (14, 'SELECT id FROM {o} ORDER BY note NULLS FIRST, id LIMIT 7', true),
 (15, 'SELECT id FROM {o} ORDER BY note DESC NULLS LAST, id DESC LIMIT 7 OFFSET 3', true),
 (16, 'SELECT DISTINCT status FROM {o}', false),
 (17, 'SELECT DISTINCT status, qty FROM {o} WHERE qty < 3', false),
 (18, 'SELECT DISTINCT ON (tenant_id) tenant_id, id, amount FROM {o} WHERE tenant_id BETWEEN 2490 AND 2510 ORDER BY tenant_id, amount DESC NULLS LAST, id', true),
 (19, 'SELECT id, tenant_id, sum(amount) OVER (PARTITION BY tenant_id ORDER BY id) FROM {o} WHERE tenant_id BETWEEN 4990 AND 5010', false),
 (20, 'SELECT status, rank() OVER (ORDER BY sum(amount) DESC) FROM {o} GROUP BY status', false),
 (21, 'SELECT count(*), sum(amount) FROM {o} WHERE tenant_id BETWEEN 2400 AND 5100', false),
 (22, 'SELECT tenant_id, count(*) FROM {o} WHERE tenant_id IN (1, 2500, 2501, 5000, 5001, 7500, 7501, 10000) GROUP BY 1', false),
 (23, 'SELECT sum(amount) FROM {o} WHERE tenant_id > 7400 AND amount IS NOT NULL', false),
 (24, 'SELECT count(*), sum(amount), avg(qty) FROM {o} WHERE tenant_id < 0', false),
 (25, 'SELECT max(amount), min(note), sum(big), avg(big) FROM {o} WHERE tenant_id > 10000', false),
 (26, 'SELECT a.name, count(o.*), sum(o.amount) FROM {o} o JOIN {a} a ON a.tenant_id = o.tenant_id AND a.account_id = o.account_id GROUP BY a.name', false),
 (27, 'SELECT a.tier, count(*) FROM {a} a LEFT JOIN {o} o ON o.tenant_id = a.tenant_id AND o.account_id = a.account_id WHERE o.id IS NULL GROUP BY a.tier', false),
 (28, 'SELECT t.label, sum(o.amount), count(*) FROM {o} o JOIN {a} a USING (tenant_id, account_id) JOIN ms_tiers t ON t.tier = a.tier GROUP BY t.label', false),
 (29, 'SELECT count(*) FROM {o} WHERE account_id IN (SELECT account_id FROM {a} WHERE tier = 2 AND tenant_id < 300)', false),
 (30, 'SELECT id FROM {o} o WHERE amount > (SELECT avg(amount) FROM {o} i WHERE i.tenant_id = o.tenant_id) AND tenant_id BETWEEN 100 AND 160', false),
 (31, 'SELECT tenant_id, (SELECT count(*) FROM {a} a WHERE a.tenant_id = o.tenant_id) FROM {o} o WHERE o.id % 997 = 0', false),
 (32, 'WITH t AS (SELECT tenant_id, sum(amount) s FROM {o} GROUP BY tenant_id) SELECT count(*), round(avg(s), 4), max(s) FROM t', false),
 (33, 'SELECT status, count(*) FILTER (WHERE amount > 500), sum(qty) FILTER (WHERE note IS NULL), avg(amount) FILTER (WHERE qty = 3) FROM {o} GROUP BY status', false),
 (34, 'SELECT bool_and(qty > 0), bool_or(amount > 999), bit_or(qty), bit_and(qty + 16), every(id > 0) FROM {o}', false),
 (35, 'SELECT count(*), sum(amount) FROM {o} WHERE status = ''paid'' AND created >= ''2024-06-01''', false),
 (36, 'SELECT note, count(*) FROM {o} GROUP BY note ORDER BY count(*) DESC, note NULLS FIRST LIMIT 5', true),
 (37, 'SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM {o}', false),
 (38, 'SELECT array_agg(DISTINCT status ORDER BY status) FROM {o}', false),
 (39, 'SELECT tenant_id % 4, count(*), sum(amount), avg(big) FROM {o} GROUP BY 1', false),
 (40, 'SELECT sum(amount) / count(*), avg(amount) - 1, count(*) * 2 FROM {o}', false),
 (41, 'SELECT min(ts), max(ts), min(created), max(status) FROM {o}', false),
 (42, 'SELECT count(*) FROM {o} o1 JOIN {o} o2 ON o1.tenant_id = o2.tenant_id AND o1.id = o2.id + 10000', false),
 (43, 'SELECT status, sum(big), avg(big), min(big), max(big) FROM {o} GROUP BY status', false),
 (44, 'SELECT tenant_id / 1000, avg(amount) FROM {o} GROUP BY 1 HAVING avg(amount) > 499', false),
 (45, 'SELECT status, avg(qty::int2), sum(qty::int2), avg(price::float4)::numeric(10,3) FROM {o} GROUP BY status', false),
 (46, 'SELECT * FROM {o} WHERE tenant_id BETWEEN 2500 AND 2501 ORDER BY id', true),
 (47, 'SELECT count(*) FROM (SELECT DISTINCT tenant_id, account_id FROM {o}) d', false),
 (48, 'SELECT status, count(*) FROM {o} GROUP BY ROLLUP (status)', false),
 (49, 'SELECT DISTINCT lower(status), qty % 3 FROM {o} WHERE amount > 100', false),
 (50, 'SELECT DISTINCT note FROM {o} ORDER BY 1 NULLS FIRST LIMIT 3', true),
 (51, 'SELECT id, qty FROM {o} ORDER BY qty FETCH FIRST 3 ROWS WITH TIES', false),
 (52, 'SELECT id, qty FROM {o} ORDER BY qty, id OFFSET 5 ROWS FETCH FIRST 2 ROWS WITH TIES', true);

SELECT n, ms_check(q, ordered) FROM ms_queries ORDER BY n;

-- aggregates are computed on the shards
EXPLAIN (COSTS OFF) SELECT status, count(*), sum(amount), avg(amount) FROM ms_orders GROUP BY status;
EXPLAIN (VERBOSE, COSTS OFF) SELECT tenant_id, count(*) FROM ms_orders GROUP BY tenant_id HAVING count(*) > 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM ms_orders ORDER BY amount, id LIMIT 10 OFFSET 25;
-- DISTINCT: each shard returns its distinct rows
EXPLAIN (COSTS OFF) SELECT DISTINCT status, qty FROM ms_orders;
-- count(DISTINCT tenant) is counted by each shard (a tenant is on one shard)
EXPLAIN (VERBOSE, COSTS OFF) SELECT count(DISTINCT tenant_id) FROM ms_orders WHERE amount > 500;
-- the same through a generic plan of a prepared statement
PREPARE ms_agg(bigint, bigint) AS SELECT count(*), sum(amount) FROM ms_orders WHERE tenant_id BETWEEN $1 AND $2;
SET plan_cache_mode = force_generic_plan;
EXECUTE ms_agg(2400, 5100);
EXECUTE ms_agg(1, 10000);
RESET plan_cache_mode;
SELECT count(*), sum(amount) FROM ms_orders_local WHERE tenant_id BETWEEN 2400 AND 5100;
-- a LIMIT the planner can only estimate is not pushed down: a generic plan
-- keeps it while its value changes
SET ms.lim = 3;
PREPARE ms_lim AS SELECT count(*) FROM (SELECT id FROM ms_orders ORDER BY id LIMIT current_setting('ms.lim')::int) s;
SET plan_cache_mode = force_generic_plan;
EXECUTE ms_lim;
SET ms.lim = 30;
EXECUTE ms_lim;
RESET plan_cache_mode;

-- a rollback while cursors over several shards wait with FETCHes in flight
BEGIN;
DECLARE ms_c1 CURSOR FOR SELECT id FROM ms_orders ORDER BY id;
FETCH 2 FROM ms_c1;
SAVEPOINT s;
DECLARE ms_c2 CURSOR FOR SELECT id FROM ms_orders;
MOVE 5 IN ms_c2;
SELECT 1 / 0;
ROLLBACK TO s;
FETCH 2 FROM ms_c1;
DECLARE ms_c3 CURSOR FOR SELECT id FROM ms_orders;
MOVE 5 IN ms_c3;
SELECT 1 / 0;
ROLLBACK;
SELECT count(*) FROM ms_orders;

-- writes over several shards leave the same rows (two-phase commit)
UPDATE ms_orders SET qty = qty + 1, note = 'updated' WHERE amount < 10;
UPDATE ms_orders_local SET qty = qty + 1, note = 'updated' WHERE amount < 10;
DELETE FROM ms_orders WHERE note = 'x3' AND id % 3 = 0;
DELETE FROM ms_orders_local WHERE note = 'x3' AND id % 3 = 0;
INSERT INTO ms_orders SELECT id + 100000, tenant_id, account_id, amount, qty, price, status, 'copy', created, ts, big
  FROM ms_orders WHERE id % 50 = 0;
INSERT INTO ms_orders_local SELECT id + 100000, tenant_id, account_id, amount, qty, price, status, 'copy', created, ts, big
  FROM ms_orders_local WHERE id % 50 = 0;
WITH u AS (UPDATE ms_orders SET amount = amount + 1 WHERE qty = 8 RETURNING tenant_id, amount)
SELECT count(*), sum(amount) FROM u;
WITH u AS (UPDATE ms_orders_local SET amount = amount + 1 WHERE qty = 8 RETURNING tenant_id, amount)
SELECT count(*), sum(amount) FROM u;
-- values the coordinator computes (current_user, a parameter) go along
PREPARE ms_upd(int) AS UPDATE ms_orders SET note = current_user, qty = qty * $1
  WHERE tenant_id BETWEEN 2400 AND 5100 AND qty = 2 RETURNING tenant_id, qty;
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE ms_upd(3);
WITH u AS (UPDATE ms_orders_local SET note = current_user, qty = qty * 3
             WHERE tenant_id BETWEEN 2400 AND 5100 AND qty = 2 RETURNING tenant_id, qty)
SELECT count(*), sum(qty) FROM u;
CREATE TEMP TABLE ms_returned AS SELECT 0 AS n;
DO $$ DECLARE cnt int; BEGIN EXECUTE 'EXECUTE ms_upd(3)'; GET DIAGNOSTICS cnt = ROW_COUNT; UPDATE ms_returned SET n = cnt; END $$;
SELECT n FROM ms_returned;
COPY ms_orders (id, tenant_id, status) FROM stdin;
200001	17	copied
200002	2600	copied
200003	9999	copied
\.
COPY ms_orders_local (id, tenant_id, status) FROM stdin;
200001	17	copied
200002	2600	copied
200003	9999	copied
\.
SELECT ms_check('SELECT * FROM {o}') AS same_rows;
SELECT count(*) AS rows FROM ms_orders;

-- Reads of whole shards.  A shard whose table holds only what it owns is
-- read without the condition on tenants once it has said so (its range
-- constraint validated, its comment saying exactly what it owns).  A
-- constraint replaced since (an online operation narrows it NOT VALID and
-- leaves the moved rows until its cleanup) sends the read back to the
-- condition within the same statement.
CREATE EXTENSION dblink;
SELECT c AS comment FROM dblink(:'shard1', $$SELECT pg_catalog.obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conname = 'tenant_router_range' AND conrelid = 'public.ms_orders'::regclass$$) AS t(c text) \gset
SELECT :'comment' AS comment;
SELECT count(*) AS rows FROM ms_orders;
SELECT count(*) AS rows FROM ms_orders;
-- a row of a tenant of shard4 on shard1, under a constraint NOT VALID with the same comment
SELECT dblink_exec(:'shard1', $$ALTER TABLE public.ms_orders DROP CONSTRAINT tenant_router_range$$);
SELECT dblink_exec(:'shard1', $$INSERT INTO public.ms_orders (id, tenant_id, status) VALUES (300001, 9000, 'stray')$$);
SELECT dblink_exec(:'shard1', $$ALTER TABLE public.ms_orders ADD CONSTRAINT tenant_router_range CHECK (tenant_id >= 1 AND tenant_id <= 2500) NOT VALID$$);
SELECT dblink_exec(:'shard1', format('COMMENT ON CONSTRAINT tenant_router_range ON public.ms_orders IS %L', :'comment'));
SELECT count(*) AS rows, count(*) FILTER (WHERE status = 'stray') AS stray FROM ms_orders;
SELECT count(*) FILTER (WHERE status = 'stray') AS stray FROM ms_orders;
SELECT ms_check('SELECT * FROM {o}') AS same_rows;
-- the same constraint marked validated by hand (a lie the read trusts):
-- noticed within a second, then the read is whole and sees the row
SELECT dblink_exec(:'shard1', $$UPDATE pg_catalog.pg_constraint SET convalidated = true WHERE conname = 'tenant_router_range' AND conrelid = 'public.ms_orders'::regclass$$);
SELECT pg_sleep(1.1);
SELECT count(*) FILTER (WHERE status = 'stray') AS stray_filtered FROM ms_orders;
SELECT count(*) FILTER (WHERE status = 'stray') AS stray_whole FROM ms_orders;
SELECT dblink_exec(:'shard1', $$DELETE FROM public.ms_orders WHERE status = 'stray'$$);
SELECT count(*) AS rows FROM ms_orders;
DROP EXTENSION dblink;

DROP EXTENSION tenant_router CASCADE;
DROP TABLE ms_orders_local, ms_accounts_local, ms_tiers, ms_queries;
DROP VIEW ms_gen_orders;
DROP FUNCTION ms_check(text, boolean), ms_run(text, text, text, boolean);
\c :shard1
DROP TABLE public.ms_orders, public.ms_accounts;
DROP DATABASE tr_ms3;
\c :shard2
DROP TABLE public.ms_orders, public.ms_accounts;
DROP DATABASE tr_ms4;
