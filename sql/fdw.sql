-- fdw: statements the fast path does not take run through the foreign-data wrapper
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
CREATE TABLE items (id serial PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL,
                    qty int NOT NULL DEFAULT 1, tags text[], added date DEFAULT '2024-01-31');
CREATE INDEX ON items (tenant_id);
SELECT logical_table_add('items');

-- multi-row INSERT, INSERT ... SELECT and COPY route every row by its tenant,
-- one shard per transaction
INSERT INTO items (tenant_id, name, tags) VALUES (1, 'apple', '{red,fruit}'), (2, 'pear', NULL), (2, 'plum', '{}');
INSERT INTO items (tenant_id, name) SELECT 15000, 'bulk ' || g FROM generate_series(1, 5) g;
COPY items (tenant_id, name, qty) FROM stdin;
3	copied "one"	7
4	copied, two	8
\.
COPY items (tenant_id, name) FROM stdin;
5	fine
99999	nobody's
\.
SELECT count(*) FROM items WHERE tenant_id = 5;
-- COPY streams every shard's rows to a COPY there; a shard's error (here a
-- duplicate key on shard2) fails the whole COPY, on every shard
COPY items (id, tenant_id, name, qty) FROM stdin;
1006	6	copy to shard1	1
1007	15001	copy to shard2	1
1007	15002	copy to shard2	1
\.
SELECT count(*) FROM items WHERE name LIKE 'copy to %';
COPY items (id, tenant_id, name, qty) FROM stdin (FORMAT csv);
1006,6,"copy to shard1, with a comma and a tab:	 and \ backslash",1
1007,15001,"copy to shard2
on two lines",2
\.
SELECT tenant_id, name FROM items WHERE name LIKE 'copy to %' ORDER BY 1;
DELETE FROM items WHERE name LIKE 'copy to %';
\c :shard1
SELECT id, tenant_id, name, qty, tags, added FROM items ORDER BY id;
\c :shard2
SELECT count(*), min(name), max(name) FROM items;
\c :coord
\set SHOW_CONTEXT never

-- rows for one shard travel as multi-row INSERTs (batches of 100)
INSERT INTO items (tenant_id, name, qty) SELECT 16000, 'batch ' || g, g FROM generate_series(1, 250) g;
SELECT count(*), sum(qty) FROM items WHERE tenant_id = 16000;
SET tenant_router.enable_fast_path = off;
INSERT INTO items (id, tenant_id, name) VALUES (1, 1, 'dup'), (900001, 1, 'new') ON CONFLICT DO NOTHING;
RESET tenant_router.enable_fast_path;
SELECT id, name FROM items WHERE id IN (1, 900001) ORDER BY id;
DELETE FROM items WHERE tenant_id = 16000;
DELETE FROM items WHERE id = 900001;

-- scans visit the shards that can hold the tenants asked for
EXPLAIN (COSTS OFF, VERBOSE) SELECT name FROM items WHERE qty > 5;
SELECT tenant_id, name FROM items ORDER BY id;
EXPLAIN (COSTS OFF, ANALYZE, TIMING OFF, SUMMARY OFF) SELECT * FROM items WHERE tenant_id IN (1, 2);
EXPLAIN (COSTS OFF, ANALYZE, TIMING OFF, SUMMARY OFF) SELECT * FROM items WHERE tenant_id IN (1, 15000);
EXPLAIN (COSTS OFF, ANALYZE, TIMING OFF, SUMMARY OFF) SELECT * FROM items WHERE tenant_id BETWEEN 14000 AND 16000;
EXPLAIN (COSTS OFF, ANALYZE, TIMING OFF, SUMMARY OFF) SELECT * FROM items WHERE tenant_id > 10000 AND tenant_id < 10002;
EXPLAIN (COSTS OFF, ANALYZE, TIMING OFF, SUMMARY OFF) SELECT * FROM items WHERE tenant_id = 1 AND tenant_id = 2;
EXPLAIN (COSTS OFF, ANALYZE, TIMING OFF, SUMMARY OFF) SELECT * FROM items WHERE tenant_id = ANY ('{2,3,99999}');
SELECT tenant_id, count(*) FROM items WHERE tenant_id BETWEEN 2 AND 15000 GROUP BY 1 ORDER BY 1;
SELECT count(*) FROM items WHERE tenant_id > 20000;
-- clauses that mean the same on the shard are shipped; the others are checked here
EXPLAIN (COSTS OFF, VERBOSE) SELECT name FROM items WHERE name LIKE 'bulk%' AND qty = 1 AND random() >= 0;
SELECT count(*) FROM items WHERE name LIKE 'bulk%' AND qty = 1 AND random() >= 0;
-- a local table joins with a logical one on the coordinator
CREATE TABLE wanted (tenant_id int);
INSERT INTO wanted VALUES (2), (15000);
SELECT w.tenant_id, count(i.*) FROM wanted w LEFT JOIN items i ON i.tenant_id = w.tenant_id GROUP BY 1 ORDER BY 1;
-- parameters of a nested loop prune each rescan
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SELECT w.tenant_id, (SELECT count(*) FROM items i WHERE i.tenant_id = w.tenant_id) FROM wanted w ORDER BY 1;
RESET enable_hashjoin;
RESET enable_mergejoin;
-- a LIMIT above a scan stops early
SELECT count(*) FROM (SELECT * FROM items LIMIT 3) s;

-- UPDATE and DELETE without one tenant: row by row, on the shard of each row
UPDATE items SET qty = qty + 10 WHERE name LIKE 'bulk%' AND random() >= 0;
SELECT name, qty FROM items WHERE tenant_id = 15000 ORDER BY name;
DELETE FROM items WHERE name = 'bulk 5' AND random() >= 0 RETURNING tenant_id, name;
-- an UPDATE over both shards commits on both (two-phase commit)
UPDATE items SET qty = 0 WHERE qty > 5;
SELECT tenant_id >= 10001 AS on_shard2, count(*) FROM items WHERE qty = 0 GROUP BY 1 ORDER BY 1;
-- refused, changing nothing, with multi_shard_writes = refuse
SET tenant_router.multi_shard_writes = refuse;
-- (which shard is written first depends on which answers first)
\set VERBOSITY terse
UPDATE items SET qty = 1 WHERE qty = 0;
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
RESET tenant_router.multi_shard_writes;
SELECT count(*) FROM items WHERE qty = 0;
-- multi_shard_reads = refuse: a statement reading several shards is an error
SET tenant_router.multi_shard_reads = refuse;
SELECT count(*) FROM items;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM items WHERE tenant_id = 15000 AND random() >= 0;
SELECT count(*) FROM items WHERE tenant_id BETWEEN 1 AND 10000 AND random() >= 0;
RESET tenant_router.multi_shard_reads;

-- with the fast path off, pinned statements give the same answers through the FDW
SET tenant_router.enable_fast_path = off;
INSERT INTO items (tenant_id, name) VALUES (6, 'via fdw') RETURNING id, tenant_id, name, qty, added;
SELECT tenant_id, name, qty FROM items WHERE tenant_id = 6;
UPDATE items SET qty = 2 WHERE tenant_id = 6 RETURNING name, qty;
DELETE FROM items WHERE tenant_id = 6;
INSERT INTO items (tenant_id, name) VALUES (99999, 'nobody');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO items (tenant_id, name) VALUES (NULL, 'nobody');
\echo :LAST_ERROR_SQLSTATE
RESET tenant_router.enable_fast_path;

-- TRUNCATE empties the table on every shard
TRUNCATE items;
SELECT count(*) FROM items;
\c :shard2
SELECT count(*) FROM items;
\c :coord
\set SHOW_CONTEXT never

-- a tenant column whose name needs quotes: rows updated and deleted one by one
-- (a volatile condition stays on the coordinator) and whole on each shard
CREATE TABLE "Mixed" ("TenantId" bigint NOT NULL, "Val" int);
SELECT logical_table_add('"Mixed"', 'TenantId');
INSERT INTO "Mixed" VALUES (1, 1), (2, 2), (15000, 3), (15001, 4);
UPDATE "Mixed" SET "Val" = "Val" * 10 WHERE "Val" < 3 AND random() >= 0;
UPDATE "Mixed" SET "Val" = "Val" * 100 WHERE "Val" > 2;
DELETE FROM "Mixed" WHERE "Val" = 20 AND random() >= 0;
DELETE FROM "Mixed" WHERE "Val" = 300 RETURNING "TenantId";
SELECT "TenantId", "Val" FROM "Mixed" ORDER BY 1;
-- (DROP TABLE drops the shards' copies too)
DROP TABLE "Mixed";

-- a foreign table of server tenant_router that is not registered is an error
CREATE FOREIGN TABLE stray (tenant_id int) SERVER tenant_router;
SELECT * FROM stray;
\echo :LAST_ERROR_SQLSTATE
CREATE FOREIGN TABLE stray_opt (tenant_id int) SERVER tenant_router OPTIONS (table_name 'x');
DROP FOREIGN TABLE stray;

DROP TABLE wanted;
DROP EXTENSION tenant_router CASCADE;
\c :shard1
DROP TABLE public.items;
\c :shard2
DROP TABLE public.items;
