-- setup: the first test of sql/schedule.  The shards hold nothing that an
-- interrupted run left behind (prepared transactions, tables, databases
-- tr_*), nor does the coordinator (roles tr_*); every other test creates
-- and drops what it uses.
\getenv shard1 TR_SHARD1_DSN
\getenv shard2 TR_SHARD2_DSN
\set coord 'dbname=' :DBNAME ' host=' :HOST ' port=' :PORT
\set rollback_prepared 'SELECT format(''ROLLBACK PREPARED %L'', gid) FROM pg_prepared_xacts WHERE database = current_database()'
\set drop_tables 'SELECT format(''DROP TABLE IF EXISTS %I.%I CASCADE'', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN (''pg_catalog'', ''information_schema'')'
\set drop_databases 'SELECT format(''DROP DATABASE %I'', datname) FROM pg_database WHERE datname LIKE ''tr\\_%'''
-- the cleanup says nothing: it has something to do only after an interrupted run
\set ECHO none
\c :shard1
:rollback_prepared \gexec
:drop_tables \gexec
:drop_databases \gexec
\c :shard2
:rollback_prepared \gexec
:drop_tables \gexec
:drop_databases \gexec
\c :coord
SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname LIKE 'tr\_%' \gexec
\set ECHO all

-- what the tests start from
\c :shard1
SELECT count(*) AS tables FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema');
SELECT count(*) AS prepared FROM pg_prepared_xacts;
\c :shard2
SELECT count(*) AS tables FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema');
SELECT count(*) AS prepared FROM pg_prepared_xacts;
\c :coord
SELECT count(*) AS roles FROM pg_roles WHERE rolname LIKE 'tr\_%';
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'tenant_router';
