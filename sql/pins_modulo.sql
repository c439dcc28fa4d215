-- pins_modulo: shards sharing a range by modulo, pin-only shards, pinned
-- tenants: routing (fast path and FDW), the shards' range constraints,
-- the views, and the errors
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
-- a database per shard: two more on each shard server
\c :shard1
CREATE DATABASE tr_pins_vip;
\c :shard2
CREATE DATABASE tr_pins_m1;
CREATE DATABASE tr_pins_q;
CREATE DATABASE tr_pins_m3;
\c :coord
\set SHOW_CONTEXT never
SELECT regexp_replace(:'shard1', 'dbname=\S+', 'dbname=tr_pins_vip') AS vip,
       regexp_replace(:'shard2', 'dbname=\S+', 'dbname=tr_pins_m1') AS m1,
       regexp_replace(:'shard2', 'dbname=\S+', 'dbname=tr_pins_q') AS q,
       regexp_replace(:'shard2', 'dbname=\S+', 'dbname=tr_pins_m3') AS m3 \gset
CREATE EXTENSION tenant_router;

-- r1 owns 1..10000; m0 and m1 share 10001..20000 by tenant mod 2; vip owns
-- only the tenants pinned to it
SELECT shard_add('r1', 1, 10000, :'shard1');
SELECT shard_add('m0', 10001, 20000, :'shard2', 2, 0);
SELECT shard_add('m1', 10001, 20000, :'m1', 2, 1);
SELECT shard_add('vip', NULL, NULL, :'vip');
SELECT shard_id, range_start, range_end, modulus, remainder, state FROM tenant_router.shards ORDER BY shard_id;
SELECT t, shard_for(t) FROM unnest(ARRAY[1, 10000, 10001, 10002, 10003, -10003, 20000, 20001]::bigint[]) t;

-- the same range: distinct remainders only, moduli dividing one another
SELECT shard_add('m2', 10001, 20000, :'q', 2, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT shard_add('m2', 10001, 20000, :'q', 4, 3);
SELECT shard_add('m2', 10001, 20000, :'q', 3, 2);
SELECT shard_add('m2', 10001, 19999, :'q', 2, 0);
SELECT shard_add('m2', 15001, 25000, :'q');
-- a remainder no shard has: q takes remainder 0 of 4 in 20001..30000, 1..3
-- are missing: no shard owns 20005, and its statements say why
SELECT shard_add('q0', 20001, 30000, :'q', 4, 0);
SELECT shard_for(20004);
SELECT shard_for(20005);

CREATE TABLE pin_accounts (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, note text);
SELECT logical_table_add('pin_accounts');
-- one row per tenant, through the fast path
INSERT INTO pin_accounts (tenant_id, note) VALUES (5, 'r1');
INSERT INTO pin_accounts (tenant_id, note) VALUES (7, 'r1');
INSERT INTO pin_accounts (tenant_id, note) VALUES (10002, 'm0');
INSERT INTO pin_accounts (tenant_id, note) VALUES (10003, 'm1');
INSERT INTO pin_accounts (tenant_id, note) VALUES (20004, 'q0');
-- and through the FDW: several rows at once, routed row by row
INSERT INTO pin_accounts (tenant_id, note) VALUES (10004, 'm0'), (10005, 'm1'), (6, 'r1');
INSERT INTO pin_accounts (tenant_id, note) VALUES (20005, 'nobody');
\echo :LAST_ERROR_SQLSTATE
SELECT tenant_id, note FROM pin_accounts ORDER BY tenant_id;
SELECT count(*) FROM pin_accounts WHERE tenant_id BETWEEN 10001 AND 20000;
SELECT tenant_id, note FROM pin_accounts WHERE tenant_id = 10003;
SELECT * FROM pin_accounts WHERE tenant_id = 20005;
\echo :LAST_ERROR_SQLSTATE
-- each shard holds its own, and its constraint says which
\c :m1
SELECT tenant_id FROM pin_accounts ORDER BY 1;
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range';
INSERT INTO pin_accounts VALUES (1000, 10004, 'misrouted');
\echo :LAST_ERROR_SQLSTATE
\c :vip
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range';

-- pins: the tenant moves online (it has no rows yet); routing looks at pins first
\c :coord
\set SHOW_CONTEXT never
SELECT tenant_pin(8, 'vip');
SELECT tenant_id, shard_id FROM tenant_router.pins;
SELECT shard_for(8), shard_for(7);
INSERT INTO pin_accounts (tenant_id, note) VALUES (8, 'vip');
SELECT tenant_id, note FROM pin_accounts WHERE tenant_id = 8;
EXPLAIN (COSTS OFF) SELECT * FROM pin_accounts WHERE tenant_id = 8;
SELECT tenant_id, note FROM pin_accounts WHERE tenant_id IN (7, 8) ORDER BY 1;
SELECT tenant_id, note FROM pin_accounts WHERE tenant_id BETWEEN 1 AND 10 ORDER BY 1;
\c :shard1
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'public.pin_accounts'::regclass AND conname = 'tenant_router_range';
\c :vip
SELECT tenant_id, note FROM pin_accounts;
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_router_range';

-- a tenant with rows moves online, with them; and back
\c :coord
\set SHOW_CONTEXT never
SELECT tenant_pin(5, 'vip');
SELECT shard_for(5), count(*) FROM pin_accounts WHERE tenant_id = 5 GROUP BY 1;
SELECT operation, shard_id, target_shard_id, tenant_id, status, rows_copied FROM tenant_router.operations ORDER BY op_id;
SELECT tenant_id, note FROM pin_accounts WHERE tenant_id BETWEEN 1 AND 10 ORDER BY 1;
SELECT tenant_router.shard_cleanup('r1');
\c :shard1
SELECT tenant_id FROM pin_accounts ORDER BY 1;
\c :coord
\set SHOW_CONTEXT never
SELECT tenant_unpin(5);
SELECT shard_for(5), note FROM pin_accounts WHERE tenant_id = 5;
SELECT tenant_id, shard_id FROM tenant_router.pins;
-- the errors
SELECT tenant_pin(8, 'vip');
\echo :LAST_ERROR_SQLSTATE
SELECT tenant_pin(8, 'nosuch');
SELECT tenant_unpin(9);
\echo :LAST_ERROR_SQLSTATE
SELECT tenant_pin(30001, 'vip');
SELECT tenant_unpin(30001);
\echo :LAST_ERROR_SQLSTATE
SELECT shard_remove('vip');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_split('m0', 15000, 'm9', :'q');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_split('vip', 15000, 'm9', :'q');
BEGIN;
SELECT tenant_pin(6, 'vip');
ROLLBACK;

-- a modulo shard splits by doubling its modulus: remainder 1 of 2 becomes
-- 1 and 3 of 4, and only the tenants of 3 move
SELECT shard_split_modulo('m1', 'm3', :'m3');
SELECT shard_id, range_start, range_end, modulus, remainder FROM tenant_router.shards
 WHERE range_start = 10001 ORDER BY modulus, remainder;
SELECT t, shard_for(t) FROM generate_series(10002, 10009) t;
SELECT tenant_id, note FROM pin_accounts WHERE tenant_id BETWEEN 10001 AND 20000 ORDER BY 1;
SELECT operation, shard_id, target_shard_id, rows_copied, status FROM tenant_router.operations
 ORDER BY op_id DESC LIMIT 1;
\c :m3
SELECT tenant_id FROM pin_accounts;
\c :coord
\set SHOW_CONTEXT never
SELECT shard_split_modulo('m1', 'm3', :'m3');
SELECT shard_split_modulo('q0', 'q4', :'m3');

-- every change went to the outbox, for the other coordinators
SELECT event->>'op' AS op, (event->'payload') - 'dsn'::text AS payload FROM tenant_router.outbox
 WHERE event->>'op' NOT IN ('ADD_SHARD') ORDER BY id;

DROP FOREIGN TABLE pin_accounts;
DROP EXTENSION tenant_router;
\c :shard1
DROP TABLE pin_accounts;
DROP DATABASE tr_pins_vip WITH (FORCE);
\c :shard2
DROP TABLE pin_accounts;
DROP DATABASE tr_pins_m1 WITH (FORCE);
DROP DATABASE tr_pins_q WITH (FORCE);
DROP DATABASE tr_pins_m3 WITH (FORCE);
