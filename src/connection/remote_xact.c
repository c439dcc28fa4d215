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
 * A shard's remote transaction can be rolled back alone while the local
 * one goes on (ShardConnRollbackRemote), when the one statement it ran was
 * refused because its tenant moved: the statement then runs on the
 * tenant's new shard instead (executor/switch_retry.c).
 *
 * Commit.  Shards only read commit first (all at once), then the written
 * ones.  One written shard commits in one phase, after the readers, so that
 * a failure anywhere before it still rolls everything back.  Several
 * written shards commit in two phases (two_phase.c); with
 * tenant_router.multi_shard_writes = 'refuse' a write to a second shard is
 * an error instead.
 *
 * Invariants: at the end of every local transaction, every connection is
 * idle and outside any remote transaction, or closed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/memutils.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"
#include "tenant_router/remote_deadlock.h"

/* how long cleanup after an error waits for a shard */
#define CLEANUP_TIMEOUT_MS 30000

static int	open_remote_xacts = 0;	/* connections with a remote transaction */
static List *xact_writers = NIL;	/* shards written in this transaction */

/*
 * While the shards commit, a deadlock victim's mark is not acted on: a
 * one-phase COMMIT cut short may have committed, and the client, told
 * 40P01, would apply it again (RemoteDeadlockCheck).
 */
bool		RemoteXactCommitting = false;

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
	char	   *name_sql;

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
		/* the session names this transaction, for the deadlock detector */
		if ((name_sql = RemoteXactNameSql(sc->app_suffix)) != NULL)
		{
			ShardConnQueue(sc, name_sql);
			pfree(name_sql);
		}
		sc->xact_depth = 1;
		sc->xact_statements = 0;
		sc->xact_state = REMOTE_XACT_OPEN;
		open_remote_xacts++;
	}
	while (sc->xact_depth < curlevel)
	{
		snprintf(sql, sizeof(sql), "SAVEPOINT s%d", ++sc->xact_depth);
		ShardConnQueue(sc, sql);
	}
}

/* ShardConnInTransaction tells whether sc has a remote transaction open (or queued) */
bool
ShardConnInTransaction(ShardConn *sc)
{
	return sc->xact_depth > 0;
}

/*
 * ShardConnFirstStatement tells whether the statement last sent on sc was
 * the first of its remote transaction (or ran outside any): nothing else
 * of the local transaction happened on that shard.
 */
bool
ShardConnFirstStatement(ShardConn *sc)
{
	return sc->broken == SHARD_OK && (sc->xact_depth == 0 || sc->xact_statements <= 1);
}

/*
 * ShardConnRollbackRemote rolls back sc's remote transaction, if any,
 * while the local transaction goes on: the shard is neither read nor
 * written in it any more (a later statement opens a new remote transaction,
 * with its savepoints).  The connection must be idle.
 */
void
ShardConnRollbackRemote(ShardConn *sc)
{
	ListCell   *lc;

	if (sc->xact_depth == 0)
		return;
	Assert(sc->xact_state == REMOTE_XACT_OPEN && sc->claim == NULL);
	/* what was queued belongs to the transaction rolled back */
	foreach(lc, sc->pending)
		RemoteFreeQueued(lfirst(lc));
	list_free(sc->pending);
	sc->pending = NIL;
	PQclear(ShardConnExec(sc, "ROLLBACK TRANSACTION", 0, NULL, NULL));
	sc->xact_depth = 0;
	sc->xact_state = REMOTE_XACT_NONE;
	sc->xact_statements = 0;
	open_remote_xacts--;
	if (sc->wrote)
	{
		xact_writers = list_delete_ptr(xact_writers, sc);
		sc->wrote = false;
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

/* RemoteConnArray returns the connections of a list as an array */
ShardConn **
RemoteConnArray(List *list)
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
	TwoPhaseReset();
	RemoteClearDeadline();
	RemoteXactCommitting = false;
}

static void
pre_commit(void)
{
	List	   *readers = NIL;
	List	   *writers = NIL;
	ListCell   *lc;
	TimestampTz commit_deadline = 0;

	ShardConnForEach(collect_open, &readers);
	foreach(lc, xact_writers)
	{
		ShardConn  *sc = lfirst(lc);

		RemoteXactCheck(sc);
		if (sc->conn != NULL && sc->xact_depth > 0)
			writers = lappend(writers, sc);
	}

	/*
	 * statement_timeout does not cover the commit: tenant_router.commit_timeout
	 * bounds the waits for the shards' answers.
	 */
	if (TenantRouterCommitTimeout > 0)
		commit_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  TenantRouterCommitTimeout);

	/* the shards only read first: if one fails, nothing is committed yet */
	if (readers != NIL)
	{
		RemoteSetDeadline(commit_deadline, ERRCODE_CONNECTION_FAILURE);
		commit_all(list_length(readers), RemoteConnArray(readers));
	}
	if (list_length(writers) == 1)
	{
		/* one phase: a COMMIT without answer may have committed or not */
		RemoteSetDeadline(commit_deadline, ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN);
		commit_all(1, RemoteConnArray(writers));
	}
	else if (writers != NIL)
	{
		RemoteSetDeadline(commit_deadline, ERRCODE_CONNECTION_FAILURE);
		TwoPhasePrepare(writers);
	}
	RemoteClearDeadline();
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
	/* a PREPARE whose answer was never read may have succeeded */
	if (keep && sc->xact_state == REMOTE_XACT_PREPARING &&
		PQtransactionStatus(sc->conn) == PQTRANS_IDLE)
		keep = RemoteCleanupExec(sc, psprintf("ROLLBACK PREPARED '%s'", sc->gid),
								 CLEANUP_TIMEOUT_MS);
	if (!keep)
		ShardConnDisconnect(sc);
	else
		RemoteForgetCommands(sc);
	sc->xact_depth = 0;
	sc->xact_state = REMOTE_XACT_NONE;
	sc->gid[0] = '\0';
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
			RemoteXactCommitting = true;
			pre_commit();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			TwoPhaseFinish(true);
			ShardConnForEach(clear_wrote, NULL);
			reset_xact_state();
			break;
		case XACT_EVENT_PRE_PREPARE:
			ShardConnForEach(pre_prepare, NULL);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			ShardConnForEach(abort_remote, NULL);
			TwoPhaseFinish(false);
			ShardConnForEach(clear_wrote, NULL);
			reset_xact_state();
			break;
		default:
			break;
	}
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
 * hooks (saving and chaining the previous hooks), and reserves the shared
 * memory of two-phase commit and of deadlock victims; called from _PG_init.
 */
void
RemoteXactInit(void)
{
	TwoPhaseInit();
	RemoteDeadlockInit();
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);

	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = tr_ExecutorRun;
	prev_ExecutorFinish = ExecutorFinish_hook;
	ExecutorFinish_hook = tr_ExecutorFinish;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = tr_ProcessUtility;
}
