-- route_cache: shard_for() agrees with the catalog, whatever the ranges look like
CREATE EXTENSION tenant_router;

-- 3 000 ranges of irregular widths with gaps, at both ends of bigint, loaded
-- straight into the catalog (the shards are never contacted by shard_for)
INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version)
SELECT 's' || g, start, start + width - 1, 'host=127.0.0.1 port=1', 0
  FROM (SELECT g, (g::bigint * g::bigint * 1000) AS start, 1 + (g * 7919) % 2000 AS width
          FROM generate_series(1, 3000) g) r;
INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version) VALUES
    ('low', -9223372036854775808, -9223372036854775000, 'host=127.0.0.1 port=1', 0),
    ('high', 9223372036854775000, 9223372036854775807, 'host=127.0.0.1 port=1', 0);

CREATE TABLE probes AS
SELECT t FROM (
    SELECT range_start AS t FROM tenant_router.shard
    UNION ALL SELECT range_end FROM tenant_router.shard
    UNION ALL SELECT range_start - 1 FROM tenant_router.shard WHERE range_start > -9223372036854775808
    UNION ALL SELECT range_end + 1 FROM tenant_router.shard WHERE range_end < 9223372036854775807
    UNION ALL SELECT (random() * 9100000000)::bigint FROM generate_series(1, 20000)
) p;

-- a new session starts with an empty cache, loads chunks, then everything
\c
SELECT count(*) AS probes,
       count(*) FILTER (WHERE shard_for(t) IS DISTINCT FROM
           (SELECT shard_id FROM tenant_router.shard WHERE t BETWEEN range_start AND range_end)) AS wrong
  FROM probes;
-- again, with every range loaded
SELECT count(*) FILTER (WHERE shard_for(t) IS DISTINCT FROM
           (SELECT shard_id FROM tenant_router.shard WHERE t BETWEEN range_start AND range_end)) AS wrong
  FROM probes;
SELECT shard_for(-9223372036854775808), shard_for(9223372036854775807), shard_for(0);

-- a change is seen by the next lookup, in this session and in a new one
SELECT shard_for(1000 + 1 + 7919 % 2000) AS "s1 before";
UPDATE tenant_router.shard SET range_end = range_end + 1 WHERE shard_id = 's1';
SELECT shard_for(1000 + 1 + 7919 % 2000) AS "s1 grew";
\c
SELECT shard_for(1000 + 1 + 7919 % 2000) AS "s1 grew";
DELETE FROM tenant_router.shard WHERE shard_id = 'high';
SELECT shard_for(9223372036854775807);

DROP TABLE probes;
DROP EXTENSION tenant_router;
