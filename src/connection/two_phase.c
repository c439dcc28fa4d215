/*-------------------------------------------------------------------------
 *
 * two_phase.c
 *	  Two-phase commit of a local transaction that wrote to several shards,
 *	  and the recovery of the prepared transactions left in doubt.
 *
 * PREPARE TRANSACTION on each written shard, all at once, under a gid
 * naming this coordinator, its database, the incarnation of its shared
 * memory and the local transaction ("tr_<system id>_<database oid>_
 * <node>_<incarnation>_<full xid>_<n>": the node is a hash of
 * tenant_router.node_name, which tells apart coordinators cloned from one
 * another (same system identifier, same catalog: neither may resolve the
 * other's gids); an xid assigned but never logged can be assigned again
 * after a crash, even one the postmaster survives, while the incarnation, a
 * random number drawn each time shared memory is set up, does not repeat);
 * then a row per gid in
 * tenant_router.commit_record, inserted in the local transaction, so that
 * the local commit is the decision; then, once the local transaction has
 * committed, COMMIT PREPARED on each shard, all at once.  A failure before
 * the local commit rolls the prepared transactions back; a shard that
 * cannot be reached after it keeps its prepared transaction until
 * RemoteXactRecover (run by the worker, and by
 * tenant_router.recover_prepared_transactions()) commits it, as the record
 * says, or rolls back one whose local transaction has no record and is over.
 *
 * Invariant: a gid with a commit record was prepared by a local
 * transaction that committed.
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
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"

/*
 * How long the second phase waits for the shards: tenant_router.commit_timeout,
 * or this when it is 0 (the second phase never raises an error, so it never
 * waits without end: a shard that does not answer resolves later).
 */
#define SECOND_PHASE_TIMEOUT_MS 30000

static List *xact_prepared = NIL;	/* connections holding a prepared transaction */

/*
 * The incarnation of this server's shared memory: drawn when the postmaster
 * sets shared memory up, at start and again after a crash of a backend.
 */
typedef struct TwoPhaseShared
{
	uint64		incarnation;
} TwoPhaseShared;

static TwoPhaseShared *two_phase_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
two_phase_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(TwoPhaseShared)));
}

static void
two_phase_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	two_phase_shared = ShmemInitStruct("tenant_router two-phase commit",
									   sizeof(TwoPhaseShared), &found);
	if (!found)
	{
		uint64		incarnation = 0;

		/* zero is never drawn: it would look like an unset value */
		while (incarnation == 0)
			if (!pg_strong_random(&incarnation, sizeof(incarnation)))
				incarnation = ((uint64) GetCurrentTimestamp()) ^ ((uint64) MyProcPid << 32);
		two_phase_shared->incarnation = incarnation;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* TwoPhaseInit reserves the shared memory of the gids; called from _PG_init */
void
TwoPhaseInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = two_phase_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = two_phase_shmem_startup;
}

PG_FUNCTION_INFO_V1(tenant_router_recover_prepared_transactions);

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

/*
 * gid_prefix returns the prefix of the gids of this coordinator and
 * database.  Recovery resolves only gids under it: a clone of this server
 * has the same system identifier and database oid, and only its node name
 * (OriginName) tells it apart.
 */
static char *
gid_prefix(void)
{
	return psprintf("tr_" UINT64_FORMAT "_%u_%016" INT64_MODIFIER "x_", GetSystemIdentifier(),
					MyDatabaseId, OriginId());
}

/*
 * gid_in_progress tells whether the local transaction of a gid (the part
 * after gid_prefix) may still be running: one of this incarnation of the
 * server that is in progress.
 */
static bool
gid_in_progress(const char *rest)
{
	char	   *end;
	uint64		incarnation;
	uint64		fxid;

	errno = 0;
	incarnation = strtou64(rest, &end, 10);
	if (errno != 0 || *end != '_')
		return true;			/* not ours after all: leave it */
	fxid = strtou64(end + 1, &end, 10);
	if (errno != 0 || *end != '_')
		return true;
	if (incarnation != two_phase_shared->incarnation)
		return false;			/* a transaction of an earlier incarnation */
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

	/*
	 * The local commit is the decision: it must be on disk before any shard
	 * commits its part, whatever synchronous_commit says.
	 */
	ForceSyncCommit();
}

/*
 * TwoPhasePrepare prepares the remote transactions of the written shards, all at
 * once, and records the decision to commit them.  On failure, the shards
 * already prepared are in xact_prepared: the abort rolls them back.
 */
void
TwoPhasePrepare(List *writers)
{
	int			n = list_length(writers);
	ShardConn **scs = RemoteConnArray(writers);
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
		snprintf(scs[i]->gid, GID_MAXLEN, "%s" UINT64_FORMAT "_" UINT64_FORMAT "_%d", prefix,
				 two_phase_shared->incarnation, U64FromFullTransactionId(fxid), i + 1);
		sqls[i] = psprintf("PREPARE TRANSACTION '%s'", scs[i]->gid);
		scs[i]->xact_state = REMOTE_XACT_PREPARING;
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
 * TwoPhaseFinish sends COMMIT PREPARED or ROLLBACK PREPARED to every shard
 * holding a prepared transaction of this one, all at once, after the local
 * transaction ended; it never raises an error (a shard that fails keeps its
 * prepared transaction for RemoteXactRecover, which a WARNING announces).
 */
void
TwoPhaseFinish(bool commit)
{
	int			n = list_length(xact_prepared);
	ShardConn **scs;
	const char **sqls;
	bool	   *ok;
	int			i;

	if (n == 0)
		return;
	scs = RemoteConnArray(xact_prepared);
	sqls = palloc(sizeof(char *) * n);
	ok = palloc(sizeof(bool) * n);
	for (i = 0; i < n; i++)
		sqls[i] = psprintf("%s PREPARED '%s'", commit ? "COMMIT" : "ROLLBACK", scs[i]->gid);
	RemoteExecAllBounded(n, scs, sqls,
						 TenantRouterCommitTimeout > 0 ? TenantRouterCommitTimeout : SECOND_PHASE_TIMEOUT_MS,
						 ok);
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

/* TwoPhaseReset forgets the prepared connections at the end of a transaction */
void
TwoPhaseReset(void)
{
	list_free(xact_prepared);
	xact_prepared = NIL;
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
