/*-------------------------------------------------------------------------
 *
 * split.c
 *	  shard_split(): moves the upper part of a shard's range, with its rows,
 *	  to a new shard while writes go on; shard_cleanup(): removes the rows a
 *	  shard keeps outside its range afterwards.
 *
 * The moving tenants are copied by PostgreSQL's logical replication: a
 * publication on the old shard filtered to the moving range (PG15 row
 * filters; replica identity FULL so that UPDATE and DELETE pass the filter),
 * a subscription on the new shard that copies the rows and then streams
 * every change.  Writes go on meanwhile.  For the switch, the old shard's
 * tables are locked against writes (EXCLUSIVE: reads go on) in its remote
 * transaction; a marker row committed after the lock proves, once it arrives
 * on the new shard, that every earlier change has too.  Still under the lock
 * the old shard's range constraint is narrowed to the range it keeps (NOT
 * VALID: the moved rows are still there), so from the moment that
 * transaction commits a write for a moving tenant can only fail there, never
 * land.  Replication is dropped, and the catalog is flipped in the caller's
 * transaction, so routing changes atomically at its commit and the events
 * UPDATE_SHARD_RANGE and ADD_SHARD are published.
 *
 * The moved rows are not deleted from the old shard in that transaction:
 * if it failed to commit after the shard committed, they would be gone from
 * where routing still points.  The shard is queued in
 * tenant_router.pending_cleanup instead, and shard_cleanup() (run by the
 * worker, or by hand) deletes them and validates the constraint.  Until
 * then they are invisible: every scan reads a shard only within its range.
 *
 * Requirements: wal_level = logical on the old shard; the new shard's DSN
 * user may create subscriptions (superuser in PostgreSQL 15); the new shard
 * reaches the old one with the old shard's DSN.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/dsn.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/outbox.h"
#include "tenant_router/shard_ddl.h"
#include "tenant_router/topology.h"

PG_FUNCTION_INFO_V1(tenant_router_shard_split);
PG_FUNCTION_INFO_V1(tenant_router_shard_cleanup);

/* how often the split looks at the new shard's progress */
#define SPLIT_POLL_MS 50

/*
 * Settings of the new shard's session while it runs the CREATE SUBSCRIPTION
 * that holds the old shard's DSN: no log line may show the statement.
 */
static const char *const quiet_logging[][2] = {
	{"log_statement", "none"},
	{"log_min_error_statement", "panic"},
	{"log_min_duration_statement", "-1"},
	{"log_min_duration_sample", "-1"},
	{"log_transaction_sample_rate", "0"},
};

static void
remote(ShardConn *sc, const char *sql)
{
	PQclear(ShardConnExec(sc, sql, 0, NULL, NULL));
}

/* remote_value returns the first column of the first row, or NULL */
static char *
remote_value(ShardConn *sc, const char *sql)
{
	PGresult   *res = ShardConnExec(sc, sql, 0, NULL, NULL);
	char	   *value = NULL;

	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

static char *
qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * wait_for_subscription waits until condition (a boolean query on the new
 * shard) is true, failing if the subscription reports errors.
 */
static void
wait_for_subscription(ShardConn *new_sc, const char *name, const char *condition)
{
	char	   *errors = psprintf("SELECT sync_error_count + apply_error_count "
								  "FROM pg_catalog.pg_stat_subscription_stats "
								  "WHERE subname = %s", quote_literal_cstr(name));

	for (;;)
	{
		char	   *done = remote_value(new_sc, condition);
		char	   *failed;

		if (done != NULL && strcmp(done, "t") == 0)
			return;
		failed = remote_value(new_sc, errors);
		if (failed != NULL && strcmp(failed, "0") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replication to shard \"%s\" failed", ShardConnLabel(new_sc)),
					 errhint("The new shard's log says why (subscription %s).", name)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SPLIT_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* best_effort runs a cleanup statement after an error, ignoring its own */
static void
best_effort(ShardConn *sc, const char *sql)
{
	MemoryContext old = CurrentMemoryContext;

	PG_TRY();
	{
		remote(sc, sql);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		FlushErrorState();
	}
	PG_END_TRY();
}

/*
 * TopologySplitShard moves tenants split_at+1..range_end of shard_id, with
 * their rows, to a new shard: the code of shard_split().
 */
int64
TopologySplitShard(const char *shard_id, int64 split_at, const char *new_shard_id,
				   const char *new_dsn, TopologySource source)
{
	ShardRow   *old;
	List	   *tables;
	int64		version;
	int64		add_version;
	int64		lo;
	int64		hi;
	char		name[64];
	char	   *marker;
	ShardConn  *new_sc;
	ShardConn  *old_sc;
	ShardConn  *old_side;
	ListCell   *lc;
	char	   *wal_level;
	volatile bool subscribed = false;
	volatile bool published = false;
	volatile bool copying = false;
	volatile bool locked = false;
	volatile bool quiet = false;
	MemoryContext oldcxt = CurrentMemoryContext;
	StringInfoData sql;
	Oid			types[5] = {TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		values[5];

	ValidateShardId(new_shard_id);
	DsnValidate(new_dsn);

	SPI_connect();
	version = TopologyBumpVersion();
	old = TopologyLockShard(shard_id);
	if (old == NULL)
		TopologyUnknownShard(shard_id);
	if (split_at < old->range_start || split_at >= old->range_end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("split_at " INT64_FORMAT " is not inside shard \"%s\"", split_at, shard_id),
				 errdetail("Shard \"%s\" owns " INT64_FORMAT ".." INT64_FORMAT
						   "; split_at must be at least range_start and less than range_end.",
						   shard_id, old->range_start, old->range_end)));
	if (TopologyLockShard(new_shard_id) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("shard \"%s\" already exists", new_shard_id)));
	if (strcmp(old->dsn, new_dsn) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the new shard must be another database than shard \"%s\"", shard_id)));

	lo = split_at + 1;
	hi = old->range_end;
	tables = CatalogLogicalTables();
	snprintf(name, sizeof(name), "tenant_router_split_" INT64_FORMAT, version);
	marker = psprintf("public.%s_marker", name);

	new_sc = ShardConnGet(new_shard_id, new_dsn);
	old_side = ShardConnGetSide(shard_id, old->dsn);
	old_sc = ShardConnGet(shard_id, old->dsn);

	wal_level = remote_value(old_side, "SHOW wal_level");
	if (wal_level == NULL || strcmp(wal_level, "logical") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("shard \"%s\" cannot be split: its wal_level is %s", shard_id,
						wal_level ? wal_level : "unknown"),
				 errhint("Set wal_level = logical on the shard and restart it; the split copies rows by logical replication.")));

	initStringInfo(&sql);
	PG_TRY();
	{
		/* the new shard's tables, for the moving range, committed at once */
		foreach(lc, tables)
		{
			LogicalTableRow *table = lfirst(lc);
			char	   *qualname = qualified_name(table->relid);
			char	   *has_rows;

			has_rows = remote_value(new_sc,
									psprintf("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
											 quote_literal_cstr(qualname)));
			if (strcmp(has_rows, "t") == 0)
				has_rows = remote_value(new_sc, psprintf("SELECT EXISTS (SELECT 1 FROM %s)",
														 qualname));
			if (strcmp(has_rows, "t") == 0)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("table %s on shard \"%s\" already has rows", qualname, new_shard_id),
						 errhint("A split copies the moving rows into empty tables; empty them on the new shard first.")));
			ShardSyncTable(new_sc, table, lo, hi, true);
		}

		/* replicate the moving tenants: publication, then subscription */
		resetStringInfo(&sql);
		appendStringInfo(&sql, "CREATE PUBLICATION %s FOR TABLE %s", name, marker);
		foreach(lc, tables)
		{
			LogicalTableRow *table = lfirst(lc);
			char	   *qualname = qualified_name(table->relid);
			const char *column = quote_identifier(table->tenant_column);

			remote(old_side, psprintf("ALTER TABLE %s REPLICA IDENTITY FULL", qualname));
			appendStringInfo(&sql, ", %s WHERE (%s >= " INT64_FORMAT " AND %s <= " INT64_FORMAT ")",
							 qualname, column, lo, column, hi);
		}
		remote(old_side, psprintf("CREATE TABLE %s (token bigint)", marker));
		remote(new_sc, psprintf("CREATE TABLE %s (token bigint)", marker));
		published = true;
		remote(old_side, sql.data);
		subscribed = true;
		/* the old shard's DSN: never in an error, nor in the new shard's log */
		quiet = true;
		for (int i = 0; i < lengthof(quiet_logging); i++)
			remote(new_sc, psprintf("SET %s = %s", quiet_logging[i][0], quiet_logging[i][1]));
		PQclear(ShardConnExecSecret(new_sc,
									psprintf("CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s",
											 name, quote_literal_cstr(old->dsn), name)));
		quiet = false;
		for (int i = 0; i < lengthof(quiet_logging); i++)
			remote(new_sc, psprintf("RESET %s", quiet_logging[i][0]));
		copying = true;

		/* the copy of the rows there already */
		wait_for_subscription(new_sc, name,
							  psprintf("SELECT count(*) = 0 FROM pg_catalog.pg_subscription_rel r "
									   "JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid "
									   "WHERE s.subname = %s AND r.srsubstate <> 'r'",
									   quote_literal_cstr(name)));

		/*
		 * The switch.  Writes to the old shard's tables wait from here to the
		 * end of this transaction; then the marker proves the new shard has
		 * every change made before.
		 */
		ShardConnBegin(old_sc, SHARD_READ);
		resetStringInfo(&sql);
		appendStringInfoString(&sql, "LOCK TABLE ");
		foreach(lc, tables)
			appendStringInfo(&sql, "%s%s", lc == list_head(tables) ? "" : ", ",
							 qualified_name(((LogicalTableRow *) lfirst(lc))->relid));
		appendStringInfoString(&sql, " IN EXCLUSIVE MODE");
		locked = true;
		if (tables != NIL)
			remote(old_sc, sql.data);
		remote(old_side, psprintf("INSERT INTO %s VALUES (" INT64_FORMAT ")", marker, version));
		wait_for_subscription(new_sc, name, psprintf("SELECT EXISTS (SELECT 1 FROM %s)", marker));

		/*
		 * The old shard keeps its lower range: from its commit on, an INSERT
		 * above it fails (the CHECK), and so does an UPDATE or DELETE of a
		 * moved row (the trigger), until shard_cleanup() deletes them.  A
		 * coordinator that still routes by the old topology gets an error to
		 * retry, never a write that would be lost.
		 */
		remote(old_sc, "CREATE OR REPLACE FUNCTION public.tenant_router_moved_row() "
			   "RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN "
			   "RAISE EXCEPTION USING ERRCODE = '40001', "
			   "MESSAGE = pg_catalog.format('tenant %s has moved to another shard', "
			   "pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.->>) TG_ARGV[0]), "
			   "DETAIL = 'The statement was routed by a topology older than a shard split.', "
			   "HINT = 'Retry the transaction.'; END$f$");
		foreach(lc, tables)
		{
			LogicalTableRow *table = lfirst(lc);
			char	   *qualname = qualified_name(table->relid);
			const char *column = quote_identifier(table->tenant_column);

			remote(old_sc, psprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT, "
									"DROP CONSTRAINT IF EXISTS tenant_router_range, "
									"ADD CONSTRAINT tenant_router_range CHECK (%s >= " INT64_FORMAT
									" AND %s <= " INT64_FORMAT ") NOT VALID",
									qualname, column, old->range_start, column, split_at));
			remote(old_sc, psprintf("COMMENT ON CONSTRAINT tenant_router_range ON %s IS "
									"'tenant_router range " INT64_FORMAT ".." INT64_FORMAT "'",
									qualname, old->range_start, split_at));
			remote(old_sc, psprintf("DROP TRIGGER IF EXISTS tenant_router_moved ON %s", qualname));
			remote(old_sc, psprintf("CREATE TRIGGER tenant_router_moved BEFORE UPDATE OR DELETE ON %s "
									"FOR EACH ROW WHEN (OLD.%s < " INT64_FORMAT " OR OLD.%s > " INT64_FORMAT ") "
									"EXECUTE FUNCTION public.tenant_router_moved_row(%s)",
									qualname, column, old->range_start, column, split_at,
									quote_literal_cstr(table->tenant_column)));
		}

		/*
		 * Replication has done its work.  The publication and the marker go
		 * in the old shard's transaction, which holds the tables' locks.
		 */
		remote(new_sc, psprintf("DROP SUBSCRIPTION %s", name));
		subscribed = false;
		remote(new_sc, psprintf("DROP TABLE %s", marker));
		remote(old_sc, psprintf("DROP PUBLICATION %s", name));
		remote(old_sc, psprintf("DROP TABLE %s", marker));
		published = false;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		ListCell   *tc;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();

		/*
		 * Undo what committed on the shards; the old shard's transaction
		 * rolls back with this one.  While it holds the tables' locks, the
		 * old shard's side connection cannot drop what touches the tables.
		 */
		if (quiet)
			for (int i = 0; i < lengthof(quiet_logging); i++)
				best_effort(new_sc, psprintf("RESET %s", quiet_logging[i][0]));
		if (subscribed)
			best_effort(new_sc, psprintf("DROP SUBSCRIPTION IF EXISTS %s", name));
		best_effort(new_sc, psprintf("DROP TABLE IF EXISTS %s", marker));
		if (published && !locked)
		{
			best_effort(old_side, psprintf("DROP PUBLICATION IF EXISTS %s", name));
			best_effort(old_side, psprintf("DROP TABLE IF EXISTS %s", marker));
		}
		else if (published)
			ereport(WARNING,
					(errmsg("publication %s and table %s were left on shard \"%s\"",
							name, marker, shard_id),
					 errhint("Drop them on the shard once this transaction has ended.")));
		if (copying)
			foreach(tc, tables)
				best_effort(new_sc, psprintf("TRUNCATE %s",
											 qualified_name(((LogicalTableRow *) lfirst(tc))->relid)));
		ReThrowError(edata);
	}
	PG_END_TRY();

	/* the flip, committed with the caller's transaction */
	values[0] = CStringGetTextDatum(shard_id);
	values[1] = Int64GetDatum(old->range_start);
	values[2] = Int64GetDatum(split_at);
	values[3] = Int64GetDatum(version);
	TopologySpiExec("UPDATE tenant_router.shard SET range_start = $2, range_end = $3, "
					"version = $4, updated_at = now() WHERE shard_id = $1",
					4, types, values, SPI_OK_UPDATE);
	/*
	 * The new shard is a change of its own, with the next version: other
	 * coordinators apply the two events in order and would skip the second
	 * one as stale if both carried the same version.
	 */
	add_version = TopologyBumpVersion();
	values[0] = CStringGetTextDatum(new_shard_id);
	values[1] = Int64GetDatum(lo);
	values[2] = Int64GetDatum(hi);
	values[3] = CStringGetTextDatum(new_dsn);
	types[3] = TEXTOID;
	values[4] = Int64GetDatum(add_version);
	TopologySpiExec("INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, version) "
					"VALUES ($1, $2, $3, $4, $5)", 5, types, values, SPI_OK_INSERT);
	values[0] = CStringGetTextDatum(shard_id);
	TopologySpiExec("INSERT INTO tenant_router.pending_cleanup (shard_id) VALUES ($1) "
					"ON CONFLICT DO NOTHING", 1, types, values, SPI_OK_INSERT);
	if (source == TOPOLOGY_FROM_SQL)
	{
		OutboxUpdateRange(shard_id, old->range_start, split_at, version);
		OutboxAddShard(new_shard_id, lo, hi, new_dsn, add_version);
	}
	SPI_finish();
	return add_version;
}

/*
 * TopologyCleanupShard deletes the rows shard_id keeps outside its range
 * (after a split) and validates its range constraints; it returns the rows
 * deleted.  The code of shard_cleanup(); the worker runs it too.
 */
int64
TopologyCleanupShard(const char *shard_id)
{
	ShardRow   *shard;
	ShardConn  *sc;
	ListCell   *lc;
	int64		deleted = 0;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};

	SPI_connect();
	TopologySpiExec("SELECT 1 FROM tenant_router.shard WHERE shard_id = $1 FOR SHARE",
					1, types, values, SPI_OK_SELECT);
	shard = SPI_processed > 0 ? CatalogGetShard(shard_id) : NULL;
	if (shard == NULL)
		TopologyUnknownShard(shard_id);

	sc = ShardConnGet(shard_id, shard->dsn);
	ShardConnBegin(sc, SHARD_WRITE);
	foreach(lc, CatalogLogicalTables())
	{
		LogicalTableRow *table = lfirst(lc);
		char	   *qualname = qualified_name(table->relid);
		const char *column = quote_identifier(table->tenant_column);
		PGresult   *res;

		remote(sc, psprintf("DROP TRIGGER IF EXISTS tenant_router_moved ON %s", qualname));
		res = ShardConnExec(sc, psprintf("DELETE FROM %s WHERE %s < " INT64_FORMAT
										 " OR %s > " INT64_FORMAT,
										 qualname, column, shard->range_start,
										 column, shard->range_end), 0, NULL, NULL);
		deleted += strtoi64(PQcmdTuples(res), NULL, 10);
		PQclear(res);
		remote(sc, psprintf("ALTER TABLE %s VALIDATE CONSTRAINT tenant_router_range", qualname));
	}
	TopologySpiExec("DELETE FROM tenant_router.pending_cleanup WHERE shard_id = $1",
					1, types, values, SPI_OK_DELETE);
	SPI_finish();
	return deleted;
}

Datum
tenant_router_shard_split(PG_FUNCTION_ARGS)
{
	TopologyRequireSuperuser("shard_split",
							 "The new shard receives the old shard's connection string, for its subscription.");
	OrderedSplitShard(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1),
					  text_to_cstring(PG_GETARG_TEXT_PP(2)),
					  text_to_cstring(PG_GETARG_TEXT_PP(3)));
	PG_RETURN_VOID();
}

Datum
tenant_router_shard_cleanup(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(TopologyCleanupShard(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}
