/*-------------------------------------------------------------------------
 *
 * remote_xact.c
 *	  The remote transactions tied to the local one, postgres_fdw-style.
 *
 * A remote transaction is opened lazily, at the local transaction's
 * isolation level, by the first statement that needs one, and committed or
 * rolled back with the local transaction; subtransactions are mirrored by
 * savepoints.  Its BEGIN and SAVEPOINTs are queued and travel with the next
 * statement.  A top-level statement outside a transaction block, at read
 * committed, runs without any remote transaction: exactly one round trip.
 * Telling such a statement from one nested in a function is why the
 * executor and utility nest levels are counted here.
 *
 * Commit.  Shards only read commit first (all at once), then the written
 * ones.  One written shard commits in one phase, after the readers, so that
 * a failure anywhere before it still rolls everything back.  Several
 * written shards commit in two phases (tenant_router.multi_shard_writes =
 * '2pc', the default): PREPARE TRANSACTION on each, all at once, under a gid
 * naming this coordinator, its database, the server's start and the local
 * transaction ("tr_<system id>_<database oid>_<start>_<full xid>_<n>": an
 * xid assigned but never logged can be assigned again after a crash, the
 * start time cannot repeat); then a row per gid in
 * tenant_router.commit_record, inserted in the local transaction, so that
 * the local commit is the decision; then, once the local transaction has
 * committed, COMMIT PREPARED on each shard.  A failure before the local
 * commit rolls the prepared transactions back; a shard that cannot be
 * reached after it keeps its prepared transaction until RemoteXactRecover
 * (run by the worker, and by tenant_router.recover_prepared_transactions())
 * commits it, as the record says, or rolls back one whose local transaction
 * has no record and is over.  With multi_shard_writes = 'refuse' a write to
 * a second shard is an error instead.
 *
 * Invariants: at the end of every local transaction, every connection is
 * idle and outside any remote transaction, or closed; a gid with a commit
 * record was prepared by a local transaction that committed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/procarray.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"

/* how long cleanup after an error, or the second phase, waits for a shard */
#define CLEANUP_TIMEOUT_MS 30000

static int	open_remote_xacts = 0;	/* connections with a remote transaction */
static List *xact_writers = NIL;	/* shards written in this transaction */
static List *xact_prepared = NIL;	/* connections holding a prepared transaction */

PG_FUNCTION_INFO_V1(tenant_router_recover_prepared_transactions);

/* executor and utility nesting: 0 outside any, 1 at top level */
static int	ExecutorNestLevel = 0;

static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ExecutorFinish_hook_type prev_ExecutorFinish = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/*
 * RemoteXactCheck raises the error for a shard whose remote transaction
 * cannot go on: the local transaction can only roll back.
 */
void
RemoteXactCheck(ShardConn *sc)
{
	if (sc->broken == SHARD_OK)
		return;
	if (sc->broken == SHARD_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_IN_FAILED_SQL_TRANSACTION),
				 errmsg("the remote transaction on shard \"%s\" failed earlier in this transaction",
						sc->label),
				 errdetail("A statement failed on the shard inside a savepoint, but the shard's transaction had started outside it, so rolling back to the savepoint cannot recover it."),
				 errhint("Roll back the transaction and retry.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("connection to shard \"%s\" was lost earlier in this transaction",
					sc->label),
			 errhint("Roll back the transaction and retry.")));
}

/*
 * ShardConnCanAutocommit tells whether a statement may run on its shard
 * without a remote transaction: it is the only statement of its local
 * transaction (top level, no transaction block), no remote transaction
 * is open, and the isolation level is read committed (the shard's default
 * for a statement of its own; any other level needs a remote transaction).
 */
bool
ShardConnCanAutocommit(void)
{
	return !IsTransactionBlock() && ExecutorNestLevel <= 1 &&
		GetCurrentTransactionNestLevel() == 1 && open_remote_xacts == 0 &&
		XactIsoLevel <= XACT_READ_COMMITTED;
}

/*
 * note_writer records that sc is written in this transaction; a second
 * written shard needs two-phase commit, or is refused.
 */
static void
note_writer(ShardConn *sc)
{
	MemoryContext old;

	if (sc->wrote)
		return;
	if (xact_writers != NIL &&
		TenantRouterMultiShardWrites == MULTI_SHARD_WRITES_REFUSE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("transaction would write to more than one shard"),
				 errdetail("Shard \"%s\" was written earlier in this transaction; this statement writes to shard \"%s\".",
						   ((ShardConn *) linitial(xact_writers))->label, sc->label),
				 errhint("tenant_router.multi_shard_writes is \"refuse\": write to one shard per transaction, or set it to \"2pc\" to commit writes to several shards atomically.")));
	old = MemoryContextSwitchTo(TopMemoryContext);
	xact_writers = lappend(xact_writers, sc);
	MemoryContextSwitchTo(old);
	sc->wrote = true;
}

/*
 * ShardConnBegin prepares sc for a statement: in SHARD_READ or SHARD_WRITE
 * mode it opens the remote transaction (and savepoints up to the current
 * subtransaction level) unless already open; the commands go with the
 * statement.  A write to a second shard in one transaction is refused.
 */
void
ShardConnBegin(ShardConn *sc, ShardXactMode mode)
{
	int			curlevel = GetCurrentTransactionNestLevel();
	char		sql[64];

	if (mode == SHARD_AUTOCOMMIT)
	{
		Assert(sc->xact_depth == 0);
		return;
	}
	if (mode == SHARD_WRITE)
		note_writer(sc);
	if (sc->xact_depth == 0)
	{
		const char *level;

		switch (XactIsoLevel)
		{
			case XACT_SERIALIZABLE:
				level = "SERIALIZABLE";
				break;
			case XACT_REPEATABLE_READ:
				level = "REPEATABLE READ";
				break;
			default:
				level = "READ COMMITTED";
				break;
		}
		snprintf(sql, sizeof(sql), "START TRANSACTION ISOLATION LEVEL %s%s",
				 level, XactReadOnly ? " READ ONLY" : "");
		ShardConnQueue(sc, sql);
		sc->xact_depth = 1;
		sc->xact_state = REMOTE_XACT_OPEN;
		open_remote_xacts++;
	}
	while (sc->xact_depth < curlevel)
	{
		snprintf(sql, sizeof(sql), "SAVEPOINT s%d", ++sc->xact_depth);
		ShardConnQueue(sc, sql);
	}
}

/*
 * commit_all commits the remote transactions of n connections at once.  A
 * shard answers COMMIT of a failed transaction with ROLLBACK, and no error:
 * that is an error here, or the local transaction would commit what the
 * shard dropped.
 */
static void
commit_all(int n, ShardConn **scs)
{
	const char **sqls = palloc(sizeof(char *) * (n + 1));
	PGresult  **results = palloc(sizeof(PGresult *) * (n + 1));
	int			i;
	int			rolled_back = -1;

	for (i = 0; i < n; i++)
	{
		ShardConnRelease(scs[i]);
		sqls[i] = "COMMIT TRANSACTION";
	}
	ShardConnExecAll(n, scs, sqls, results);
	for (i = 0; i < n; i++)
	{
		if (strcmp(PQcmdStatus(results[i]), "COMMIT") != 0 && rolled_back < 0)
			rolled_back = i;
		PQclear(results[i]);
		scs[i]->xact_depth = 0;
		scs[i]->xact_state = REMOTE_XACT_NONE;
	}
	if (rolled_back >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_ROLLBACK),
				 errmsg("the remote transaction on shard \"%s\" was rolled back instead of committed",
						scs[rolled_back]->label),
				 errdetail("A statement had failed in it earlier.")));
}

/* open_readers lists the connections with a remote transaction not written */
static void
collect_open(ShardConn *sc, void *arg)
{
	List	  **open = (List **) arg;

	RemoteXactCheck(sc);
	if (sc->conn == NULL)
		return;
	if (sc->xact_depth > 0 && !sc->wrote)
		*open = lappend(*open, sc);
	else if (sc->xact_depth == 0)
		ShardConnRelease(sc);
}

static ShardConn **
conn_array(List *list)
{
	ShardConn **scs = palloc(sizeof(ShardConn *) * (list_length(list) + 1));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, list)
		scs[i++] = lfirst(lc);
	return scs;
}

static void
reset_xact_state(void)
{
	open_remote_xacts = 0;
	list_free(xact_writers);
	xact_writers = NIL;
	list_free(xact_prepared);
	xact_prepared = NIL;
}

/* commit_record_relid returns the OID of tenant_router.commit_record */
static Oid
commit_record_relid(void)
{
	Oid			nspid = get_namespace_oid("tenant_router", true);
	Oid			relid = OidIsValid(nspid) ? get_relname_relid("commit_record", nspid) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot commit a transaction that wrote to several shards: table tenant_router.commit_record does not exist"),
				 errdetail("The extension was dropped in this transaction, or has not been updated to this version."),
				 errhint("Commit the writes before DROP EXTENSION tenant_router, or run ALTER EXTENSION tenant_router UPDATE.")));
	return relid;
}

/* gid_prefix returns the prefix of the gids of this coordinator and database */
static char *
gid_prefix(void)
{
	return psprintf("tr_" UINT64_FORMAT "_%u_", GetSystemIdentifier(), MyDatabaseId);
}

/*
 * gid_in_progress tells whether the local transaction of a gid (the part
 * after gid_prefix) may still be running: one of this server's start that
 * is in progress.
 */
static bool
gid_in_progress(const char *rest)
{
	char	   *end;
	int64		start;
	uint64		fxid;

	errno = 0;
	start = strtoi64(rest, &end, 10);
	if (errno != 0 || *end != '_')
		return true;			/* not ours after all: leave it */
	fxid = strtou64(end + 1, &end, 10);
	if (errno != 0 || *end != '_')
		return true;
	if (start != (int64) PgStartTime)
		return false;			/* a transaction of an earlier server start */
	return TransactionIdIsInProgress(XidFromFullTransactionId(FullTransactionIdFromU64(fxid)));
}

/*
 * record_decision inserts the commit records of the prepared connections,
 * in the local transaction: they commit or vanish with it.
 */
static void
record_decision(List *prepared)
{
	Relation	rel = table_open(commit_record_relid(), RowExclusiveLock);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	foreach(lc, prepared)
	{
		ShardConn  *sc = lfirst(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		HeapTuple	tuple;

		values[0] = CStringGetTextDatum(sc->gid);
		values[1] = CStringGetTextDatum(sc->label);
		values[2] = TimestampTzGetDatum(now);
		tuple = heap_form_tuple(tupdesc, values, nulls);
		CatalogTupleInsert(rel, tuple);
		heap_freetuple(tuple);
	}
	table_close(rel, NoLock);
}

/*
 * prepare_all prepares the remote transactions of the written shards, all at
 * once, and records the decision to commit them.  On failure, the shards
 * already prepared are in xact_prepared: the abort rolls them back.
 */
static void
prepare_all(List *writers)
{
	int			n = list_length(writers);
	ShardConn **scs = conn_array(writers);
	const char **sqls = palloc(sizeof(char *) * (n + 1));
	PGresult  **results = palloc(sizeof(PGresult *) * (n + 1));
	char	   *prefix = gid_prefix();
	FullTransactionId fxid;
	int			failed = -1;
	int			i;
	MemoryContext old;

	/* where the decision goes must exist before anything is prepared */
	(void) commit_record_relid();
	fxid = GetTopFullTransactionId();

	for (i = 0; i < n; i++)
	{
		ShardConnRelease(scs[i]);
		snprintf(scs[i]->gid, GID_MAXLEN, "%s" INT64_FORMAT "_" UINT64_FORMAT "_%d", prefix,
				 (int64) PgStartTime, U64FromFullTransactionId(fxid), i + 1);
		sqls[i] = psprintf("PREPARE TRANSACTION '%s'", scs[i]->gid);
		ShardConnSend(scs[i], sqls[i], 0, NULL, NULL);
	}
	for (i = 0; i < n; i++)
	{
		results[i] = ShardConnResult(scs[i], false);
		scs[i]->xact_depth = 0;
		if (PQresultStatus(results[i]) == PGRES_COMMAND_OK)
		{
			scs[i]->xact_state = REMOTE_XACT_PREPARED;
			old = MemoryContextSwitchTo(TopMemoryContext);
			xact_prepared = lappend(xact_prepared, scs[i]);
			MemoryContextSwitchTo(old);
		}
		else
		{
			scs[i]->xact_state = REMOTE_XACT_NONE;
			if (failed < 0)
				failed = i;
		}
	}
	if (failed >= 0)
	{
		PGresult   *error = results[failed];
		char	   *sqlstate = PQresultErrorField(error, PG_DIAG_SQLSTATE);

		for (i = 0; i < n; i++)
			if (i != failed)
				PQclear(results[i]);
		if (sqlstate && strcmp(sqlstate, "55000") == 0 &&
			strstr(PQresultErrorMessage(error), "max_prepared_transactions") != NULL)
		{
			PQclear(error);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("shard \"%s\" cannot take part in a transaction that writes to several shards",
							scs[failed]->label),
					 errdetail("Prepared transactions are disabled on the shard (max_prepared_transactions = 0)."),
					 errhint("Set max_prepared_transactions above 0 on the shard and restart it, or set tenant_router.multi_shard_writes to \"refuse\".")));
		}
		RemoteReport(scs[failed], error, sqls[failed]);
	}
	for (i = 0; i < n; i++)
		PQclear(results[i]);
	record_decision(xact_prepared);
}

/*
 * finish_prepared sends COMMIT PREPARED or ROLLBACK PREPARED to every shard
 * holding a prepared transaction of this one, all at once, after the local
 * transaction ended; it never raises an error (a shard that fails keeps its
 * prepared transaction for RemoteXactRecover, which a WARNING announces).
 */
static void
finish_prepared(bool commit)
{
	int			n = list_length(xact_prepared);
	ShardConn **scs;
	const char **sqls;
	bool	   *ok;
	int			i;

	if (n == 0)
		return;
	scs = conn_array(xact_prepared);
	sqls = palloc(sizeof(char *) * n);
	ok = palloc(sizeof(bool) * n);
	for (i = 0; i < n; i++)
		sqls[i] = psprintf("%s PREPARED '%s'", commit ? "COMMIT" : "ROLLBACK", scs[i]->gid);
	RemoteExecAllBounded(n, scs, sqls, CLEANUP_TIMEOUT_MS, ok);
	for (i = 0; i < n; i++)
	{
		ShardConn  *sc = scs[i];

		if (!ok[i])
		{
			ereport(WARNING,
					(errmsg("could not %s prepared transaction \"%s\" on shard \"%s\"",
							commit ? "commit" : "roll back", sc->gid, sc->label),
					 errdetail("The local transaction %s; the shard keeps its part prepared until it is resolved.",
							   commit ? "committed" : "rolled back"),
					 errhint("The topology worker resolves it once the shard is reachable; tenant_router.recover_prepared_transactions() does it at once.")));
			if (sc->conn != NULL)
				ShardConnDisconnect(sc);
		}
		sc->xact_state = REMOTE_XACT_NONE;
		sc->gid[0] = '\0';
	}
}

static void
pre_commit(void)
{
	List	   *readers = NIL;
	List	   *writers = NIL;
	ListCell   *lc;

	ShardConnForEach(collect_open, &readers);
	foreach(lc, xact_writers)
	{
		ShardConn  *sc = lfirst(lc);

		RemoteXactCheck(sc);
		if (sc->conn != NULL && sc->xact_depth > 0)
			writers = lappend(writers, sc);
	}

	/* the shards only read first: if one fails, nothing is committed yet */
	if (readers != NIL)
		commit_all(list_length(readers), conn_array(readers));
	if (list_length(writers) == 1)
		commit_all(1, conn_array(writers));
	else if (writers != NIL)
		prepare_all(writers);
}

static void
pre_prepare(ShardConn *sc, void *arg)
{
	if (sc->xact_depth > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that has used shards")));
}

/* abort_remote rolls back the shard's remote transaction, or drops the connection */
static void
abort_remote(ShardConn *sc, void *arg)
{
	bool		keep = (sc->conn != NULL && sc->broken != SHARD_LOST);

	if (sc->xact_state == REMOTE_XACT_PREPARED)
		return;					/* finish_prepared's */
	if (keep)
		keep = RemoteCleanup(sc, CLEANUP_TIMEOUT_MS);
	if (keep && PQtransactionStatus(sc->conn) != PQTRANS_IDLE)
		keep = RemoteCleanupExec(sc, "ROLLBACK TRANSACTION", CLEANUP_TIMEOUT_MS);
	if (!keep)
		ShardConnDisconnect(sc);
	else
		RemoteForgetCommands(sc);
	sc->xact_depth = 0;
	sc->xact_state = REMOTE_XACT_NONE;
	sc->broken = SHARD_OK;
	sc->wrote = false;
}

static void
clear_wrote(ShardConn *sc, void *arg)
{
	sc->wrote = false;
}

static void
xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			pre_commit();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			finish_prepared(true);
			ShardConnForEach(clear_wrote, NULL);
			reset_xact_state();
			break;
		case XACT_EVENT_PRE_PREPARE:
			ShardConnForEach(pre_prepare, NULL);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			ShardConnForEach(abort_remote, NULL);
			finish_prepared(false);
			ShardConnForEach(clear_wrote, NULL);
			reset_xact_state();
			break;
		default:
			break;
	}
}

/*
 * Recovery of prepared transactions left in doubt.
 */

/* latest_snapshot_records returns the gids of the records of these shards */
static List *
records_of(Datum shard_ids)
{
	Oid			types[1] = {TEXTARRAYOID};
	Datum		values[1] = {shard_ids};
	List	   *gids = NIL;
	uint64		i;

	/* the latest committed records, whatever the isolation level */
	PushActiveSnapshot(GetLatestSnapshot());
	if (SPI_execute_with_args("SELECT gid FROM tenant_router.commit_record "
							  "WHERE shard_id = ANY ($1)", 1, types, values, NULL,
							  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not read tenant_router.commit_record");
	PopActiveSnapshot();
	for (i = 0; i < SPI_processed; i++)
		gids = lappend(gids, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	return gids;
}

static bool
has_record(const char *gid)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(gid)};
	bool		found;

	PushActiveSnapshot(GetLatestSnapshot());
	if (SPI_execute_with_args("SELECT 1 FROM tenant_router.commit_record WHERE gid = $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not read tenant_router.commit_record");
	found = SPI_processed > 0;
	PopActiveSnapshot();
	return found;
}

static bool
string_member(List *list, const char *s)
{
	ListCell   *lc;

	foreach(lc, list)
		if (strcmp(lfirst(lc), s) == 0)
			return true;
	return false;
}

/*
 * recover_on resolves the prepared transactions of this coordinator's
 * database on one shard database (the shards ids share its DSN) and
 * returns how many it resolved.  The records are read before the prepared
 * transactions are listed: a record seen then belongs to a committed local
 * transaction, so if its gid is no longer prepared it was committed, and
 * the record can go.  A gid without a record is rolled back only once its
 * local transaction is over; the record is looked up after that check, so
 * a local transaction that committed meanwhile is seen.
 */
static int
recover_on(const char *dsn, const char *label, Datum shard_ids)
{
	List	   *before = records_of(shard_ids);
	List	   *prepared = NIL;
	List	   *done = NIL;
	char	   *prefix = gid_prefix();
	const char *values[1] = {prefix};
	Oid			types[1] = {TEXTOID};
	ShardConn  *sc = ShardConnGet(label, dsn);
	PGresult   *res;
	ListCell   *lc;
	int			resolved = 0;
	int			i;

	if (sc->xact_state != REMOTE_XACT_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot resolve prepared transactions on shard \"%s\" inside a transaction that uses it",
						label),
				 errhint("Call tenant_router.recover_prepared_transactions() in a transaction of its own.")));
	ShardConnBegin(sc, SHARD_AUTOCOMMIT);
	res = ShardConnExec(sc, "SELECT gid FROM pg_catalog.pg_prepared_xacts "
						"WHERE database = pg_catalog.current_database() "
						"AND pg_catalog.starts_with(gid, $1)", 1, types, values);
	for (i = 0; i < PQntuples(res); i++)
		prepared = lappend(prepared, pstrdup(PQgetvalue(res, i, 0)));
	PQclear(res);

	foreach(lc, prepared)
	{
		const char *gid = lfirst(lc);
		bool		commit;

		if (gid_in_progress(gid + strlen(prefix)))
			continue;			/* its local transaction decides */
		commit = has_record(gid);
		PQclear(ShardConnExec(sc, psprintf("%s PREPARED %s", commit ? "COMMIT" : "ROLLBACK",
										   quote_literal_cstr(gid)), 0, NULL, NULL));
		ereport(LOG,
				(errmsg("tenant_router: %s prepared transaction \"%s\" on shard \"%s\"",
						commit ? "committed" : "rolled back", gid, label)));
		resolved++;
		if (commit)
			done = lappend(done, (char *) gid);
	}

	/* records whose transaction is no longer prepared: committed */
	foreach(lc, before)
		if (!string_member(prepared, lfirst(lc)))
			done = lappend(done, lfirst(lc));
	foreach(lc, done)
	{
		Datum		gid = CStringGetTextDatum(lfirst(lc));
		Oid			t[1] = {TEXTOID};

		if (SPI_execute_with_args("DELETE FROM tenant_router.commit_record WHERE gid = $1",
								  1, t, &gid, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "tenant_router: could not delete from tenant_router.commit_record");
	}
	return resolved;
}

/*
 * RemoteXactRecover resolves the prepared transactions this coordinator's
 * database left in doubt on every shard (a crash between PREPARE and
 * COMMIT PREPARED, a shard down at that moment), as the commit records say,
 * and forgets the records whose transactions are resolved; it returns how
 * many prepared transactions it resolved.  A shard that cannot be reached is
 * skipped with a WARNING.  Runs in the caller's transaction; SPI must not be
 * connected.
 */
int
RemoteXactRecover(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *groups = NIL;
	ListCell   *lc;
	int			resolved = 0;
	uint64		i;

	SPI_connect();
	if (SPI_execute("SELECT dsn, pg_catalog.array_agg(shard_id ORDER BY shard_id) "
					"FROM tenant_router.shard GROUP BY dsn", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not read tenant_router.shard");
	for (i = 0; i < SPI_processed; i++)
	{
		MemoryContext spi = MemoryContextSwitchTo(cxt);
		bool		isnull;
		Datum		ids = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
		ArrayType  *arr = DatumGetArrayTypePCopy(ids);
		Datum	   *elems;
		int			nelems;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &nelems);
		groups = lappend(groups, list_make3(pstrdup(SPI_getvalue(SPI_tuptable->vals[i],
																  SPI_tuptable->tupdesc, 1)),
											TextDatumGetCString(elems[0]),
											arr));
		MemoryContextSwitchTo(spi);
	}

	foreach(lc, groups)
	{
		char	   *dsn = linitial(lfirst(lc));
		char	   *label = lsecond(lfirst(lc));
		ArrayType  *ids = lthird(lfirst(lc));
		MemoryContext oldcxt = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;

		/* a shard that fails is skipped: the others are still resolved */
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			resolved += recover_on(dsn, label, PointerGetDatum(ids));
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			ereport(WARNING,
					(errmsg("could not resolve prepared transactions on shard \"%s\": %s",
							label, edata->message)));
		}
		PG_END_TRY();
	}

	/* records of shards no longer in the catalog cannot be resolved */
	if (SPI_execute("DELETE FROM tenant_router.commit_record c WHERE NOT EXISTS "
					"(SELECT 1 FROM tenant_router.shard s WHERE s.shard_id = c.shard_id)",
					false, 0) != SPI_OK_DELETE)
		elog(ERROR, "tenant_router: could not delete from tenant_router.commit_record");
	if (SPI_processed > 0)
		ereport(WARNING,
				(errmsg("forgot " UINT64_FORMAT " commit records of shards no longer in the catalog",
						SPI_processed),
				 errdetail("Their prepared transactions, if any, must be resolved on those shards by hand.")));
	SPI_finish();
	return resolved;
}

/* tenant_router.recover_prepared_transactions() */
Datum
tenant_router_recover_prepared_transactions(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RemoteXactRecover());
}

typedef struct SubXactEnd
{
	SubXactEvent event;
	int			level;
} SubXactEnd;

/* subxact_end mirrors the end of a subtransaction on one shard */
static void
subxact_end(ShardConn *sc, void *arg)
{
	SubXactEnd *end = (SubXactEnd *) arg;
	int			curlevel = end->level;
	char		sql[100];

	if (sc->conn == NULL || sc->xact_depth == 0)
		return;

	/*
	 * A remote transaction opened outside this subtransaction can still
	 * have failed in it: a cursor opened before the savepoint and read
	 * after it.  No savepoint of ours covers that failure, so the remote
	 * transaction is lost; COMMIT would only roll it back.
	 */
	if (sc->xact_depth < curlevel)
	{
		if (end->event == SUBXACT_EVENT_ABORT_SUB && !sc->broken && sc->claim == NULL &&
			!sc->in_pipeline && PQtransactionStatus(sc->conn) == PQTRANS_INERROR)
			sc->broken = SHARD_FAILED;
		return;
	}
	if (end->event == SUBXACT_EVENT_PRE_COMMIT_SUB)
	{
		snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT s%d", curlevel);
		ShardConnQueue(sc, sql);
	}
	else if (sc->broken != SHARD_LOST)
	{
		/*
		 * A failure marked SHARD_FAILED happened at this connection's
		 * depth, at or below this level: the rollback to this level's
		 * savepoint undoes it.
		 */
		if (!RemoteCleanup(sc, CLEANUP_TIMEOUT_MS))
		{
			ShardConnDisconnect(sc);
			sc->broken = SHARD_LOST;
		}
		else
		{
			sc->broken = SHARD_OK;
			snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT s%d", curlevel);
			ShardConnQueue(sc, sql);
			snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT s%d", curlevel);
			ShardConnQueue(sc, sql);
		}
	}
	sc->xact_depth = curlevel - 1;
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	SubXactEnd	end;

	if (event != SUBXACT_EVENT_PRE_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	end.event = event;
	end.level = GetCurrentTransactionNestLevel();
	ShardConnForEach(subxact_end, &end);
}

/*
 * The three hooks below only count how deeply executor and utility calls are
 * nested, so that a top-level statement (which may run on a shard without a
 * remote transaction) can be told from one nested in a function.
 */
static void
tr_ExecutorRun(QueryDesc *queryDesc, ScanDirection direction, uint64 count,
			   bool execute_once)
{
	ExecutorNestLevel++;
	PG_TRY();
	{
		if (prev_ExecutorRun)
			prev_ExecutorRun(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		ExecutorNestLevel--;
	}
	PG_END_TRY();
}

static void
tr_ExecutorFinish(QueryDesc *queryDesc)
{
	ExecutorNestLevel++;
	PG_TRY();
	{
		if (prev_ExecutorFinish)
			prev_ExecutorFinish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		ExecutorNestLevel--;
	}
	PG_END_TRY();
}

static void
tr_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
				  bool readOnlyTree, ProcessUtilityContext context,
				  ParamListInfo params, QueryEnvironment *queryEnv,
				  DestReceiver *dest, QueryCompletion *qc)
{
	/*
	 * EXECUTE of a prepared statement runs that statement as the top-level
	 * one, so it does not count as a level of its own.
	 */
	int			levels = IsA(pstmt->utilityStmt, ExecuteStmt) ? 0 : 1;

	ExecutorNestLevel += levels;
	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		ExecutorNestLevel -= levels;
	}
	PG_END_TRY();
}

/*
 * RemoteXactInit installs the transaction callbacks and the nest-level
 * hooks (saving and chaining the previous hooks); called from _PG_init.
 */
void
RemoteXactInit(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);

	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = tr_ExecutorRun;
	prev_ExecutorFinish = ExecutorFinish_hook;
	ExecutorFinish_hook = tr_ExecutorFinish;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = tr_ProcessUtility;
}
