-- catalog: shard_add, shard_update_range, shard_remove, shard_for and their errors
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
-- a second database on shard2's server, for a shard of its own
\c :shard2
CREATE DATABASE tr_catalog_extra;
\c :coord
\set SHOW_CONTEXT never
SELECT regexp_replace(:'shard2', 'dbname=\S+', 'dbname=tr_catalog_extra') AS extra \gset
CREATE EXTENSION tenant_router;

-- the catalog and what everyone may read
\d tenant_router.shards
SELECT count(*) AS shards FROM tenant_router.shards;
SELECT version FROM tenant_router.topology;

-- seed 000's topology
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');
SELECT shard_id, range_start, range_end, state, version FROM tenant_router.shards ORDER BY range_start;
SELECT version FROM tenant_router.topology;
SELECT t, shard_for(t) FROM unnest(ARRAY[-1, 0, 1, 123, 10000, 10001, 15000, 20000, 20001]::bigint[]) t;
SELECT shard_for(NULL);

-- every refused call changes nothing: remember the topology
CREATE TEMP TABLE before AS SELECT shard_id, range_start, range_end, dsn, version FROM tenant_router.shards;
CREATE FUNCTION topology_unchanged() RETURNS boolean LANGUAGE sql AS $$
    SELECT NOT EXISTS (SELECT shard_id, range_start, range_end, dsn, version FROM tenant_router.shards
                       EXCEPT SELECT * FROM before)
       AND NOT EXISTS (SELECT * FROM before
                       EXCEPT SELECT shard_id, range_start, range_end, dsn, version FROM tenant_router.shards)
       AND (SELECT version FROM tenant_router.topology) = 2
$$;

-- overlapping ranges name the shard they overlap
SELECT shard_add('shard3', 5000, 25000, :'shard2');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_add('shard3', 20000, 30000, :'shard2');
SELECT shard_add('shard3', 1, 1, :'shard2');
-- start > end
SELECT shard_add('shard3', 30000, 20001, :'shard2');
\echo :LAST_ERROR_SQLSTATE
-- duplicate shard id
SELECT shard_add('shard1', 30000, 40000, :'shard1');
\echo :LAST_ERROR_SQLSTATE
-- malformed DSN, parsed by libpq
SELECT shard_add('shard3', 20001, 30000, 'host=127.0.0.1 port');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_add('shard3', 20001, 30000, 'postgres://u:secret@127.0.0.1:notaport/db');
SELECT shard_add('shard3', 20001, 30000, 'host=127.0.0.1 bogus_option=1');
-- libpq quotes what it could not parse; that is never echoed
SELECT shard_add('shard3', 20001, 30000, 'passwordhunter2');
SELECT shard_add('shard3', 20001, 30000, 'postgres://u:hunter2@[::1]"/db');
SELECT shard_add('shard3', 20001, 30000, 'host=x pass"word');
SELECT shard_add('shard3', 20001, 30000, '');
-- unreachable shard: connection error naming the shard, never its password
SELECT shard_add('shard3', 20001, 30000, 'host=127.0.0.1 port=1 user=u password=secret connect_timeout=2');
\echo :LAST_ERROR_SQLSTATE
-- invalid shard ids
SELECT shard_add('', 20001, 30000, :'shard2');
SELECT shard_add('shard 3', 20001, 30000, :'shard2');
SELECT shard_add(repeat('x', 64), 20001, 30000, :'shard2');
-- NULL arguments: shard_add() says so instead of doing nothing (it is not
-- strict: NULL range_start and range_end make a pin-only shard)
SELECT shard_add(NULL, 20001, 30000, :'extra');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_add('shard3', 20001, 30000, NULL);
SELECT shard_add('shard3', 20001, NULL, :'extra');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_add('shard3', 20001, 30000, :'extra', NULL, 0);
-- moduli and remainders
SELECT shard_add('shard3', 20001, 30000, :'extra', 0, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT shard_add('shard3', 20001, 30000, :'extra', 4, 4);
SELECT shard_add('shard3', 20001, 30000, :'extra', 2048, 0);
SELECT shard_add('shard3', NULL, NULL, :'extra', 2, 1);
SELECT topology_unchanged();

-- shard_update_range
SELECT shard_update_range('shard2', 10001, 30000);
SELECT shard_id, range_start, range_end, version FROM tenant_router.shards ORDER BY range_start;
SELECT shard_for(25000);
SELECT shard_update_range('shard2', 5000, 30000);
\echo :LAST_ERROR_SQLSTATE
SELECT shard_update_range('nosuch', 1, 2);
\echo :LAST_ERROR_SQLSTATE
SELECT shard_update_range('shard2', 30000, 10001);
SELECT shard_update_range('shard2', 10001, 20000);
SELECT shard_for(25000);

-- a DSN reaching another shard's database, however spelled, or the
-- coordinator's own database, is refused; another database of the same
-- server is fine
SELECT shard_add('dup', 50001, 60000, :'shard2');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_add('dup', 50001, 60000, :'shard2' || ' application_name=other');
SELECT shard_add('self', 50001, 60000, :'coord');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tenant_router.shards WHERE shard_id IN ('dup', 'self');

-- shard_remove: out of routing; the shard is not contacted
SELECT shard_add('dead', 50001, 60000, :'extra');
SELECT shard_for(55000);
SELECT shard_remove('dead');
SELECT shard_for(55000);
SELECT shard_remove('dead');
\echo :LAST_ERROR_SQLSTATE
SELECT shard_id FROM tenant_router.shards ORDER BY range_start;

-- a rolled back change is not seen, in this session or any other
BEGIN;
SELECT shard_add('shard3', 20001, 30000, :'extra');
SELECT shard_for(25000);
ROLLBACK;
SELECT shard_for(25000);

-- the catalog itself refuses overlaps, whatever path writes to it
INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version)
    VALUES ('sneaky', 9000, 11000, 'host=x', 0);
\echo :LAST_ERROR_SQLSTATE

-- every change is in the outbox, to be published on Redis
SELECT event->>'op' AS op, event->'payload'->>'shard_id' AS shard, (event->>'version')::int AS version
  FROM tenant_router.outbox ORDER BY id;

DROP FUNCTION topology_unchanged();
DROP EXTENSION tenant_router;
\c :shard2
DROP DATABASE tr_catalog_extra WITH (FORCE);
