-- reference: reference_table_add(); a copy on every shard, reads from one
-- shard, writes to all of them in one transaction, joins on the tenant's
-- shard, foreign keys from logical tables held on each shard, new shards
\set SHOW_CONTEXT never
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
-- each shard's copy, in one line
\set copy 'SELECT string_agg(code || ''='' || name || '':'' || rate, '' '' ORDER BY code) AS copy FROM public.ref_currencies'
\c :coord
\set SHOW_CONTEXT never
CREATE EXTENSION tenant_router;
SELECT shard_add('shard1', 1, 10000, :'shard1');
SELECT shard_add('shard2', 10001, 20000, :'shard2');

CREATE TABLE ref_currencies (
    code  text PRIMARY KEY,
    name  text NOT NULL CHECK (length(name) < 40),
    rate  numeric NOT NULL DEFAULT 1
);
COMMENT ON TABLE ref_currencies IS 'currencies';
INSERT INTO ref_currencies VALUES ('EUR', 'euro', 1), ('USD', 'dollar', 0.9);
CREATE TABLE ref_orders (
    id         bigserial,
    tenant_id  bigint NOT NULL,
    currency   text NOT NULL REFERENCES ref_currencies (code),
    amount     numeric,
    PRIMARY KEY (tenant_id, id)
);

-- a logical table's foreign key holds on the shards only to a reference table
SELECT logical_table_add('ref_orders');
-- a reference table references no other table
CREATE TABLE ref_bad (id int PRIMARY KEY, code text REFERENCES ref_currencies (code));
SELECT reference_table_add('ref_bad');
DROP TABLE ref_bad;
-- what is not a table
CREATE VIEW ref_view AS SELECT 1 AS one;
SELECT reference_table_add('ref_view');
DROP VIEW ref_view;
-- only superusers and tenant_router_admin may call it
CREATE ROLE tr_ref_user;
SET ROLE tr_ref_user;
SELECT reference_table_add('ref_currencies');
RESET ROLE;
DROP ROLE tr_ref_user;
-- a member of tenant_router_admin who is not a superuser ships only
-- built-in immutable code to the shards
CREATE ROLE tr_ref_admin IN ROLE tenant_router_admin;
GRANT CREATE ON SCHEMA public TO tr_ref_admin;
SET ROLE tr_ref_admin;
CREATE FUNCTION tr_ref_len(text) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT length($1)';
CREATE TABLE ref_mine (code text PRIMARY KEY CHECK (tr_ref_len(code) = 3));
SELECT reference_table_add('ref_mine');
DROP TABLE ref_mine;
DROP FUNCTION tr_ref_len(text);
RESET ROLE;
REVOKE CREATE ON SCHEMA public FROM tr_ref_admin;
DROP ROLE tr_ref_admin;

-- the table goes to every shard with its rows; the foreign key that
-- references it is kept for logical_table_add()
SELECT reference_table_add('ref_currencies');
SELECT reference_table_add('ref_currencies');
SELECT logical_table_add('ref_orders');
SELECT table_id FROM tenant_router.reference_tables;
SELECT table_id, tenant_column FROM tenant_router.logical_tables;
SELECT count(*) AS kept_foreign_keys FROM tenant_router.reference_foreign_key;
\d ref_currencies
\c :shard1
:copy;
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid IN ('public.ref_currencies'::regclass, 'public.ref_orders'::regclass)
   AND conname <> 'tenant_router_range' ORDER BY conname;
\c :shard2
:copy;
SELECT conname FROM pg_constraint WHERE conrelid = 'public.ref_orders'::regclass AND contype = 'f';

-- reads go to one shard
\c :coord
\set SHOW_CONTEXT never
SELECT * FROM ref_currencies ORDER BY code;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM ref_currencies WHERE rate < 1;
SELECT code, count(*) FROM ref_currencies GROUP BY code ORDER BY code;

-- writes go to every shard
INSERT INTO ref_currencies VALUES ('GBP', 'pound', 1.1) RETURNING *;
INSERT INTO ref_currencies (code, name) VALUES ('CHF', 'franc'), ('JPY', 'yen');
UPDATE ref_currencies SET rate = 0.006 WHERE code = 'JPY' RETURNING code, rate;
DELETE FROM ref_currencies WHERE code = 'CHF';
COPY ref_currencies FROM stdin;
SEK	krona	0.09
NOK	krone	0.085
\.
EXPLAIN (VERBOSE, COSTS OFF) UPDATE ref_currencies SET rate = rate * 2 WHERE code = 'GBP';
-- rows read from one copy cannot be changed on the others: refused
UPDATE ref_currencies SET rate = random() WHERE code = 'GBP';
DELETE FROM ref_currencies WHERE code IN (SELECT currency FROM ref_orders);
-- never through the fast path, even with a tenant's logical table in it
SET client_min_messages = debug1;
UPDATE ref_currencies SET rate = 2 FROM ref_orders o WHERE o.tenant_id = 5 AND o.currency = code;
RESET client_min_messages;
\c :shard1
:copy;
\c :shard2
:copy;

-- in one transaction: both copies, or neither
\c :coord
\set SHOW_CONTEXT never
BEGIN;
INSERT INTO ref_currencies VALUES ('AUD', 'aussie', 0.6);
SELECT name FROM ref_currencies WHERE code = 'AUD';
ROLLBACK;
SELECT count(*) FROM ref_currencies WHERE code = 'AUD';
SET tenant_router.multi_shard_writes = refuse;
INSERT INTO ref_currencies VALUES ('AUD', 'aussie', 0.6);
DELETE FROM ref_currencies WHERE code = 'NOK';
TRUNCATE ref_currencies;
RESET tenant_router.multi_shard_writes;

-- joined on the tenant's shard: one shard, one remote statement
INSERT INTO ref_orders (tenant_id, currency, amount) VALUES (5, 'EUR', 10), (15000, 'GBP', 20);
EXPLAIN (VERBOSE, COSTS OFF)
SELECT o.amount * c.rate AS value, c.name FROM ref_orders o JOIN ref_currencies c ON c.code = o.currency
 WHERE o.tenant_id = 15000;
SELECT o.amount * c.rate AS value, c.name FROM ref_orders o JOIN ref_currencies c ON c.code = o.currency
 WHERE o.tenant_id = 15000;
PREPARE by_tenant(bigint) AS
SELECT c.name FROM ref_orders o JOIN ref_currencies c ON c.code = o.currency WHERE o.tenant_id = $1;
EXECUTE by_tenant(5);
EXECUTE by_tenant(15000);
DEALLOCATE by_tenant;
-- a subquery on the reference table, on the tenant's shard too
EXPLAIN (COSTS OFF)
UPDATE ref_orders SET amount = amount / (SELECT rate FROM ref_currencies WHERE code = 'GBP')
 WHERE tenant_id = 15000;
-- over several shards, through the FDW: the reference table read once
SELECT o.tenant_id, c.name FROM ref_orders o JOIN ref_currencies c ON c.code = o.currency
 ORDER BY o.tenant_id;
INSERT INTO ref_currencies SELECT 'X' || tenant_id, 'x', 1 FROM ref_orders WHERE tenant_id = 5;
SELECT code FROM ref_currencies WHERE code LIKE 'X%';
DELETE FROM ref_currencies WHERE code = 'X5';

-- the foreign key holds on each shard
INSERT INTO ref_orders (tenant_id, currency, amount) VALUES (15000, 'XXX', 1);
DELETE FROM ref_currencies WHERE code = 'GBP';
SELECT count(*) FROM ref_currencies WHERE code = 'GBP';

-- DDL that would change the coordinator alone is refused
ALTER TABLE ref_currencies ADD COLUMN symbol text;
ALTER TABLE ref_currencies RENAME COLUMN name TO label;

-- a shard added later gets the copy, then the logical tables
\c :shard2
CREATE DATABASE tr_ref_shard3;
\c :coord
\set SHOW_CONTEXT never
SELECT regexp_replace(:'shard2', 'dbname=\S+', 'dbname=tr_ref_shard3') AS shard3 \gset
SELECT shard_add('shard3', 20001, 30000, :'shard3');
INSERT INTO ref_currencies VALUES ('DKK', 'krone', 0.13);
INSERT INTO ref_orders (tenant_id, currency, amount) VALUES (25000, 'DKK', 3);
INSERT INTO ref_orders (tenant_id, currency, amount) VALUES (25000, 'XXX', 3);
SELECT c.name FROM ref_orders o JOIN ref_currencies c ON c.code = o.currency WHERE o.tenant_id = 25000;
\c :shard3
:copy;
\c :shard1
:copy;
-- a copy changed on its shard directly: range changes say so, and a
-- write whose row counts differ between the copies fails
UPDATE public.ref_currencies SET rate = 5 WHERE code = 'JPY';
\c :coord
\set SHOW_CONTEXT never
SELECT shard_update_range('shard3', 20001, 31000);
SELECT shard_update_range('shard1', 1, 9000);
DELETE FROM ref_currencies WHERE rate = 5;
\c :shard1
UPDATE public.ref_currencies SET rate = 0.006 WHERE code = 'JPY';
\c :coord
\set SHOW_CONTEXT never
SELECT shard_update_range('shard1', 1, 9000);

-- DROP FOREIGN TABLE forgets it on this coordinator; the shards keep it
DROP TABLE ref_orders;
DROP FOREIGN TABLE ref_currencies;
SELECT count(*) AS reference_tables FROM tenant_router.reference_tables;
\c :shard1
DROP TABLE public.ref_currencies;
\c :shard2
DROP TABLE public.ref_currencies;
DROP DATABASE tr_ref_shard3;
\c :coord
DROP EXTENSION tenant_router CASCADE;
