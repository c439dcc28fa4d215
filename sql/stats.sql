-- stats: shard health and statement statistics per shard and per tenant
-- (tenant_router.shard_health, shard_stats, tenant_stats, stats_reset())
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
SET client_min_messages = warning;
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1' || ' password=s3cret');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
CREATE TABLE st (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, v int NOT NULL,
                 UNIQUE (tenant_id, v));
SELECT logical_table_add('st');
SELECT tenant_router.stats_reset();
SELECT * FROM tenant_router.tenant_stats;
SELECT shard_id, statements, rows, errors, total_time FROM tenant_router.shard_stats ORDER BY 1;

-- the fast path: one statement each, counted on the tenant and its shard
INSERT INTO st (tenant_id, v) VALUES (5, 1);
INSERT INTO st (tenant_id, v) VALUES (5, 2);
INSERT INTO st (tenant_id, v) VALUES (5, 3);
INSERT INTO st (tenant_id, v) VALUES (15000, 1);
PREPARE q(bigint) AS SELECT v FROM st WHERE tenant_id = $1 ORDER BY v;
EXECUTE q(5);
EXECUTE q(15000);
UPDATE st SET v = v + 10 WHERE tenant_id = 5;
-- a statement that fails on its shard is an error of the tenant and the shard
INSERT INTO st (tenant_id, v) VALUES (5, 11);
SELECT tenant_id, shard_id, statements, rows, errors, total_time > 0 AS timed,
       last_statement_at >= stats_since AS last_statement_at
  FROM tenant_router.tenant_stats ORDER BY 1;
SELECT shard_id, statements, rows, errors FROM tenant_router.shard_stats ORDER BY 1;

-- statements over several shards count once on each shard they went to,
-- with the rows each returned or changed
SELECT tenant_router.stats_reset();
SELECT count(*) FROM st;
SELECT tenant_id, v FROM st ORDER BY tenant_id, v;
UPDATE st SET v = v * 100;
INSERT INTO st (tenant_id, v) SELECT t, 100 FROM generate_series(1, 20000, 2500) t;
SELECT shard_id, statements, rows, errors FROM tenant_router.shard_stats ORDER BY 1;
SELECT count(*) AS tenants FROM tenant_router.tenant_stats;
-- rows changed one by one through the FDW count on their tenants too
SELECT tenant_router.stats_reset();
UPDATE st SET v = v + (random() * 0)::int WHERE tenant_id IN (5, 15000);
SELECT tenant_id, shard_id, statements, rows, errors FROM tenant_router.tenant_stats ORDER BY 1;
SELECT shard_id, statements, rows, errors FROM tenant_router.shard_stats ORDER BY 1;
-- an error raised by one shard is that shard's only
SELECT tenant_router.stats_reset();
SELECT count(*) FROM st WHERE 1 / (tenant_id - 15000) > 0;
SELECT shard_id, statements, errors FROM tenant_router.shard_stats ORDER BY 1;

-- health: a shard the coordinator reached is reachable; one it cannot
-- reach is not, with libpq's reason and when, and the statement counts as
-- an error of its tenant
INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version)
    VALUES ('gone', 30001, 40000, 'host=127.0.0.1 port=1 dbname=postgres', 0);
SELECT v FROM st WHERE tenant_id = 30001;
SELECT shard_id, state, reachable, last_success IS NOT NULL AS answered,
       CASE WHEN NOT reachable THEN last_error END AS why,
       CASE WHEN NOT reachable THEN last_error_at > now() - interval '1 minute' END AS lately
  FROM tenant_router.shard_health ORDER BY 1;
SELECT tenant_id, shard_id, statements, errors FROM tenant_router.tenant_stats WHERE tenant_id = 30001;
DELETE FROM tenant_router.shard WHERE shard_id = 'gone';

-- tenant_router.track_stats = off counts nothing (health is still kept)
SELECT tenant_router.stats_reset();
SET tenant_router.track_stats = off;
EXECUTE q(5);
SELECT count(*) FROM st;
RESET tenant_router.track_stats;
SELECT count(*) AS tenants FROM tenant_router.tenant_stats;
SELECT shard_id, statements FROM tenant_router.shard_stats ORDER BY 1;

-- everyone reads the views, which show no DSN; resetting takes a superuser
-- or tenant_router_admin
SELECT count(*) AS dsn_columns FROM information_schema.columns
 WHERE table_schema = 'tenant_router' AND column_name LIKE '%dsn%'
   AND table_name IN ('shard_health', 'shard_stats', 'tenant_stats');
CREATE ROLE tr_app LOGIN;
CREATE ROLE tr_ops LOGIN IN ROLE tenant_router_admin;
EXECUTE q(5);
SET ROLE tr_app;
SELECT shard_id, state, reachable FROM tenant_router.shard_health ORDER BY 1;
SELECT tenant_id, statements FROM tenant_router.tenant_stats ORDER BY 1;
SELECT shard_id FROM tenant_router.shard_stats ORDER BY 1;
SET tenant_router.track_stats = off;
SELECT tenant_router.stats_reset();
\echo :LAST_ERROR_SQLSTATE
SET ROLE tr_ops;
SELECT tenant_router.stats_reset();
SELECT count(*) AS tenants FROM tenant_router.tenant_stats;
RESET ROLE;

DEALLOCATE q;
DROP EXTENSION tenant_router CASCADE;
DROP ROLE tr_app, tr_ops;
\c :shard1
DROP TABLE public.st;
\c :shard2
DROP TABLE public.st;
