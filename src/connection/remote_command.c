/*-------------------------------------------------------------------------
 *
 * remote_command.c
 *	  What travels on a shard connection: statements, the commands queued
 *	  to go with them in one pipeline, remote prepared statements, results
 *	  read as they arrive, remote errors re-raised.  Streams of rows are
 *	  remote_stream.c's, COPY remote_copy.c's, cancelling and cleaning up
 *	  after an error remote_cancel.c's.
 *
 * BEGIN, SAVEPOINT and RELEASE are never a round trip of their own: they
 * are queued (ShardConnQueue) and sent in one pipeline with the next
 * statement.  Statements repeated with parameters are prepared on the shard
 * once per connection.  Remote errors are re-raised with the remote
 * SQLSTATE, message, detail and hint, and a context naming the shard and
 * the remote SQL (never the SQL of a command that holds a secret).
 *
 * A write that a shard refuses because a topology operation moved its
 * tenant (RemoteTenantMoved) can be held instead of raised, for the caller
 * to send it to the tenant's new shard; ShardConnReportMoved raises it as
 * 40001 where that cannot be done.
 *
 * Every wait on a shard is on the backend's latch and the socket together:
 * it honours query cancel, backend termination and statement_timeout.
 *
 * Invariants: at most one command is in flight per connection; a command in
 * flight that another owns (a claim: a stream, an asynchronous fetch) is
 * finished by its owner's release callback before anything else is sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"
#include "tenant_router/stats.h"

/* remote prepared statements kept per connection */
#define MAX_PREPARED_PER_CONN 1000

typedef struct PreparedStmt
{
	uint64		key;			/* hash of the SQL text and types: hash key */
	char	   *sql;
	int			nparams;
	Oid		   *types;			/* the parameters' types, as prepared */
	bool		ready;			/* the shard confirmed the PREPARE */
	char		name[24];
} PreparedStmt;

/* RemoteForgetPrepared forgets the statements prepared on a closed connection. */
void
RemoteForgetPrepared(ShardConn *sc)
{
	HASH_SEQ_STATUS status;
	PreparedStmt *ps;

	if (sc->prepared == NULL)
		return;
	hash_seq_init(&status, sc->prepared);
	while ((ps = hash_seq_search(&status)) != NULL)
	{
		pfree(ps->sql);
		if (ps->types)
			pfree(ps->types);
	}
	hash_destroy(sc->prepared);
	sc->prepared = NULL;
}

/*
 * forget_statement removes a prepared statement from the connection's
 * table; its name is never used again (names only grow), so whether the
 * shard still has it does not matter.
 */
static void
forget_statement(ShardConn *sc, PreparedStmt *ps)
{
	uint64		key = ps->key;

	if (sc->cmd.executing == ps)
		sc->cmd.executing = NULL;
	if (sc->cmd.preparing == ps)
		sc->cmd.preparing = NULL;
	pfree(ps->sql);
	if (ps->types)
		pfree(ps->types);
	(void) hash_search(sc->prepared, &key, HASH_REMOVE, NULL);
}

/*
 * RemoteForgetUnconfirmed forgets the statement the command in flight was
 * preparing, when the command is given up before the shard confirmed the
 * PREPARE: it may exist on the shard or not, so it is prepared again under
 * a new name.
 */
void
RemoteForgetUnconfirmed(ShardConn *sc)
{
	PreparedStmt *ps = sc->cmd.preparing;

	if (ps != NULL && !ps->ready && sc->prepared != NULL)
		forget_statement(sc, ps);
}

/*
 * The deadline of the waits of a commit (RemoteSetDeadline): 0 for none.
 */
static struct
{
	TimestampTz at;
	int			errcode;		/* of the error past it */
} deadline;

/*
 * RemoteSetDeadline bounds every wait for a shard's answer until
 * RemoteClearDeadline: past at, the connection is closed and an error with
 * errcode raised (the commit's waits, which statement_timeout does not
 * cover).  at 0 clears it.
 */
void
RemoteSetDeadline(TimestampTz at, int errcode)
{
	deadline.at = at;
	deadline.errcode = errcode;
}

void
RemoteClearDeadline(void)
{
	deadline.at = 0;
}

static void
deadline_passed(ShardConn *sc)
{
	int			code = deadline.errcode;

	deadline.at = 0;
	if (sc->xact_depth > 0 || sc->xact_state != REMOTE_XACT_NONE)
		sc->broken = SHARD_LOST;
	ShardConnDisconnect(sc);
	if (code == ERRCODE_TRANSACTION_RESOLUTION_UNKNOWN)
		ereport(ERROR,
				(errcode(code),
				 errmsg("shard \"%s\" did not answer COMMIT within tenant_router.commit_timeout (%d ms)",
						sc->label, TenantRouterCommitTimeout),
				 errdetail("Whether the shard committed the transaction's writes is unknown; its connection was closed."),
				 errhint("Check the shard, then whether the writes are there; raise tenant_router.commit_timeout if its commits are slow.")));
	ereport(ERROR,
			(errcode(code),
			 errmsg("shard \"%s\" did not answer the commit within tenant_router.commit_timeout (%d ms)",
					sc->label, TenantRouterCommitTimeout),
			 errdetail("The transaction is rolled back; a part prepared on a shard that cannot be reached is rolled back by tenant_router.recover_prepared_transactions() or the topology worker."),
			 errhint("Check the shard; raise tenant_router.commit_timeout if its commits are slow.")));
}

/*
 * RemoteGetResult waits for the next result while processing interrupts; a
 * broken connection raises the connection error.
 */
PGresult *
RemoteGetResult(ShardConn *sc)
{
	PGresult   *res;

	while (PQisBusy(sc->conn))
	{
		WaitEvent	event;
		long		timeout = -1;

		if (deadline.at != 0)
		{
			TimestampTz now = GetCurrentTimestamp();

			if (now >= deadline.at)
				deadline_passed(sc);
			timeout = Max(TimestampDifferenceMilliseconds(now, deadline.at), 1);
		}
		if (WaitEventSetWait(sc->wait_set, timeout, &event, 1, PG_WAIT_EXTENSION) == 0)
			continue;			/* the deadline */
		if (event.events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			RemoteDeadlockCheck();
		}
		if ((event.events & WL_SOCKET_READABLE) && PQconsumeInput(sc->conn) == 0)
			break;				/* broken: PQgetResult reports it */
	}
	res = PQgetResult(sc->conn);

	if (PQstatus(sc->conn) != CONNECTION_OK)
	{
		PQclear(res);
		ShardConnLost(sc);
	}
	return res;
}

/*
 * RemoteReport raises a remote error with its SQLSTATE, message, detail and
 * hint, naming the shard and the remote SQL (unless sql is NULL: a command
 * holding a secret).  It frees res.
 */
void
RemoteReport(ShardConn *sc, PGresult *res, const char *sql)
{
	char	   *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	char	   *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char	   *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	char	   *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	char	   *context = PQresultErrorField(res, PG_DIAG_CONTEXT);
	int			code = ERRCODE_CONNECTION_FAILURE;

	if (sqlstate && strlen(sqlstate) == 5)
		code = MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2],
							 sqlstate[3], sqlstate[4]);
	primary = primary ? pstrdup(primary) : ShardConnLibpqMessage(sc->conn);
	detail = detail ? pstrdup(detail) : NULL;
	hint = hint ? pstrdup(hint) : NULL;
	context = context ? pstrdup(context) : NULL;
	PQclear(res);
	StatsNoteShardError(sc->label);

	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", primary),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0,
			 context ? errcontext("%s", context) : 0,
			 errcontext("remote %s on shard \"%s\"%s%s", sql ? "SQL" : "command",
						sc->label, sql ? ": " : "", sql ? sql : "")));
}

/*
 * RemoteTenantMoved tells whether res is a shard's refusal of a write
 * because the rows of its tenant are moving or have moved to another shard
 * (commands/shard_ddl.c): 40001 from an operation's fence or from the guard
 * of moved rows, or, for an INSERT (inserting), 23514 from the range
 * constraint (an UPDATE can break that constraint by itself, changing a
 * row's tenant).  The constraint name tells them from other errors.
 */
bool
RemoteTenantMoved(const PGresult *res, bool inserting)
{
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

	if (sqlstate == NULL || constraint == NULL)
		return false;
	if (strcmp(sqlstate, "40001") == 0)
		return strcmp(constraint, "tenant_router_fence") == 0 ||
			strcmp(constraint, "tenant_router_moved") == 0;
	return inserting && strcmp(sqlstate, "23514") == 0 &&
		strcmp(constraint, "tenant_router_range") == 0;
}

/* ShardResultMoved is RemoteTenantMoved for the rest of the extension. */
bool
ShardResultMoved(const PGresult *res, bool inserting)
{
	return RemoteTenantMoved(res, inserting);
}

/* ShardConnRaise raises the remote error res (freed) of statement sql on sc. */
void
ShardConnRaise(ShardConn *sc, PGresult *res, const char *sql)
{
	RemoteReport(sc, res, sql);
}

/*
 * ShardConnReportMoved raises res (freed), a write that the shard of sc
 * refused because its tenant moved (RemoteTenantMoved), when it cannot be
 * sent to the tenant's new shard instead (why says why): as 40001, which
 * clients retry, whatever the shard's SQLSTATE, with the shard's message.
 */
void
ShardConnReportMoved(ShardConn *sc, PGresult *res, const char *why)
{
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char	   *message;
	char	   *said = pstrdup(primary ? primary : "");

	if (sqlstate != NULL && strcmp(sqlstate, "40001") == 0 && primary != NULL)
		message = pstrdup(primary);
	else
		message = psprintf("shard \"%s\" no longer owns the tenant of the row", sc->label);
	PQclear(res);
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg_internal("%s", message),
			 errdetail_internal("%s Shard \"%s\" said: %s.", why, sc->label, said),
			 errhint("Retry the transaction.")));
}

/* queue_command copies a command into the connection's queue */
static void
queue_command(ShardConn *sc, const char *sql, int nparams, const Oid *types,
			  const char *const *values, bool keep)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	QueuedCommand *qc = palloc0(sizeof(QueuedCommand));
	int			i;

	qc->sql = pstrdup(sql);
	qc->nparams = nparams;
	qc->keep = keep;
	if (nparams > 0)
	{
		qc->types = palloc(sizeof(Oid) * nparams);
		qc->values = palloc(sizeof(char *) * nparams);
		for (i = 0; i < nparams; i++)
		{
			qc->types[i] = types ? types[i] : InvalidOid;
			qc->values[i] = values[i] ? pstrdup(values[i]) : NULL;
		}
	}
	sc->pending = lappend(sc->pending, qc);
	MemoryContextSwitchTo(old);
}

void
RemoteFreeQueued(QueuedCommand *qc)
{
	int			i;

	for (i = 0; i < qc->nparams; i++)
		if (qc->values[i])
			pfree(qc->values[i]);
	if (qc->nparams > 0)
	{
		pfree(qc->types);
		pfree(qc->values);
	}
	pfree(qc->sql);
	pfree(qc);
}

/* ShardConnQueue queues a command to be sent before the next statement. */
void
ShardConnQueue(ShardConn *sc, const char *sql)
{
	queue_command(sc, sql, 0, NULL, NULL, false);
}

/*
 * ShardConnQueueKept queues a query like ShardConnQueue, whose result
 * (rows, or NULL after an error, which the statement's reader raises) is
 * kept once read, for ShardConnTakeKept: what a statement needs to know
 * from the same pipeline without one more round trip.  One per statement.
 */
void
ShardConnQueueKept(ShardConn *sc, const char *sql)
{
	queue_command(sc, sql, 0, NULL, NULL, true);
}

/*
 * ShardConnTakeKept returns the kept result of the statement last read
 * (the caller frees it), or NULL.
 */
PGresult *
ShardConnTakeKept(ShardConn *sc)
{
	PGresult   *res = sc->kept;

	sc->kept = NULL;
	return res;
}

/*
 * ShardConnQueueParams queues a command with parameters (text values,
 * copied) to be sent before the next statement, in the same pipeline.
 */
void
ShardConnQueueParams(ShardConn *sc, const char *sql, int nparams, const Oid *types,
					 const char *const *values)
{
	queue_command(sc, sql, nparams, types, values, false);
}

/* RemoteEndCommand forgets the statement in flight; the connection is idle. */
void
RemoteEndCommand(ShardConn *sc)
{
	InFlight   *cmd = &sc->cmd;

	if (cmd->error)
		PQclear(cmd->error);
	if (cmd->shown)
		pfree(cmd->shown);
	list_free_deep(cmd->prefix_sql);
	memset(cmd, 0, sizeof(InFlight));
}

/*
 * RemoteForgetCommands forgets the queued commands and the statement in
 * flight of a connection closed or about to be cleaned up.
 */
void
RemoteForgetCommands(ShardConn *sc)
{
	ListCell   *lc;

	foreach(lc, sc->pending)
		RemoteFreeQueued(lfirst(lc));
	list_free(sc->pending);
	sc->pending = NIL;
	RemoteEndCommand(sc);
	sc->in_pipeline = false;
	PQclear(sc->kept);
	sc->kept = NULL;
}

/*
 * ShardConnClaimSet records that claim owns the command now in flight on
 * sc; ShardConnClaimDone that it no longer does (its command is finished).
 */
void
ShardConnClaimSet(ShardConn *sc, ShardConnClaim *claim)
{
	Assert(sc->claim == NULL);
	sc->claim = claim;
}

void
ShardConnClaimDone(ShardConn *sc, ShardConnClaim *claim)
{
	if (sc->claim == claim)
		sc->claim = NULL;
}

/*
 * ShardConnRelease makes the connection idle for a new command: the command
 * in flight that another owns is finished by its owner.
 */
void
ShardConnRelease(ShardConn *sc)
{
	if (sc->claim != NULL)
	{
		ShardConnClaim *claim = sc->claim;

		claim->release(claim);
		Assert(sc->claim == NULL);
		sc->claim = NULL;
	}
}

/*
 * prepared_lookup returns the remote prepared statement for sql with
 * parameters of these types (the same text with other types is another
 * statement), entering it if there is room; NULL means run it unprepared.
 */
static PreparedStmt *
prepared_lookup(ShardConn *sc, const char *sql, int nparams, const Oid *types,
				bool *need_prepare)
{
	uint64		key;
	PreparedStmt *ps;
	bool		found;

	if (types == NULL)
		nparams = 0;			/* untyped: the text alone is the key */
	*need_prepare = false;
	key = hash_bytes_extended((const unsigned char *) sql, strlen(sql),
							  nparams > 0 ? hash_bytes((const unsigned char *) types,
													   nparams * sizeof(Oid)) : 0);
	if (sc->prepared == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(PreparedStmt);
		ctl.hcxt = TopMemoryContext;
		sc->prepared = hash_create("tenant_router prepared statements", 32, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	ps = hash_search(sc->prepared, &key, HASH_FIND, &found);
	if (found)
	{
		if (strcmp(ps->sql, sql) != 0 || ps->nparams != nparams ||
			(nparams > 0 && memcmp(ps->types, types, nparams * sizeof(Oid)) != 0))
			return NULL;		/* hash collision: run unprepared */
		*need_prepare = !ps->ready;
		return ps;
	}
	if (hash_get_num_entries(sc->prepared) >= MAX_PREPARED_PER_CONN)
		return NULL;
	ps = hash_search(sc->prepared, &key, HASH_ENTER, &found);
	ps->sql = MemoryContextStrdup(TopMemoryContext, sql);
	ps->nparams = nparams;
	ps->types = NULL;
	if (nparams > 0)
	{
		ps->types = MemoryContextAlloc(TopMemoryContext, nparams * sizeof(Oid));
		memcpy(ps->types, types, nparams * sizeof(Oid));
	}
	ps->ready = false;
	snprintf(ps->name, sizeof(ps->name), "tenant_router_%u", ++sc->next_stmt);
	*need_prepare = true;
	return ps;
}

/*
 * input_ready reads what has arrived on the connection and tells whether
 * the next result can be had without waiting.
 */
static bool
input_ready(ShardConn *sc)
{
	if (!PQconsumeInput(sc->conn))
		ShardConnLost(sc);
	return !PQisBusy(sc->conn);
}

/*
 * RemoteReadPrefix reads the results of the commands sent before the statement;
 * without wait, only what has arrived.  It returns true once all of them
 * are read: then the statement's own results come next.
 */
bool
RemoteReadPrefix(ShardConn *sc, bool wait)
{
	InFlight   *cmd = &sc->cmd;

	while (cmd->ndone < cmd->nprefix)
	{
		PGresult   *res;

		if (!wait && !input_ready(sc))
			return false;
		res = RemoteGetResult(sc);
		if (res == NULL)
		{
			/* a command's results end with NULL */
			if (++cmd->ndone == cmd->nprefix && cmd->single_row && cmd->error == NULL)
				PQsetSingleRowMode(sc->conn);
			continue;
		}
		if (PQresultStatus(res) == PGRES_FATAL_ERROR && cmd->error == NULL)
		{
			char	   *sql = list_nth(cmd->prefix_sql, cmd->ndone);

			cmd->error = res;
			cmd->error_sql = sql;
			continue;
		}
		if (PQresultStatus(res) == PGRES_COMMAND_OK && cmd->preparing != NULL &&
			cmd->ndone == cmd->nprefix - 1)
			cmd->preparing->ready = true;
		if (cmd->ndone == cmd->keep && sc->kept == NULL &&
			PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			sc->kept = res;
			continue;
		}
		PQclear(res);
	}
	return true;
}

/*
 * RemoteFinishCommand reads whatever is left of the statement in flight,
 * including the pipeline's sync, and leaves the connection idle.
 */
void
RemoteFinishCommand(ShardConn *sc)
{
	PGresult   *res;

	(void) RemoteReadPrefix(sc, true);
	for (;;)
	{
		res = RemoteGetResult(sc);
		if (res == NULL)
		{
			if (!sc->in_pipeline)
				break;
			continue;			/* end of one pipelined command */
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC)
		{
			PQclear(res);
			if (!PQexitPipelineMode(sc->conn))
				ShardConnLost(sc);
			sc->in_pipeline = false;
			break;
		}
		PQclear(res);
	}
}

/*
 * RemoteReportPrefixError raises the error of a command sent before the
 * statement (which the shard then skipped), once the connection is idle.
 */
void
RemoteReportPrefixError(ShardConn *sc)
{
	PGresult   *error = sc->cmd.error;
	char	   *sql = sc->cmd.error_sql ? pstrdup(sc->cmd.error_sql) : NULL;

	sc->cmd.error = NULL;
	RemoteFinishCommand(sc);
	RemoteEndCommand(sc);
	RemoteReport(sc, error, sql);
}

/*
 * RemoteSendStatement sends the queued commands, a PREPARE if wanted, and the
 * statement, in one pipeline when there is more than the statement, without
 * waiting for any of them; RemoteReadPrefix and the readers below take the
 * results.
 */
void
RemoteSendStatement(ShardConn *sc, const char *sql, const char *shown, int nparams,
			   const Oid *types, const char *const *values, bool prepare,
			   bool single_row)
{
	PGconn	   *conn;
	InFlight   *cmd = &sc->cmd;
	PreparedStmt *ps = NULL;
	bool		need_prepare = false;
	ListCell   *lc;
	bool		ok = true;
	MemoryContext old;

	ShardConnRelease(sc);
	conn = sc->conn;
	Assert(!cmd->active && !PQisBusy(conn));
	sc->xact_statements++;

	if (prepare && TenantRouterRemotePrepare)
		ps = prepared_lookup(sc, sql, nparams, types, &need_prepare);

	old = MemoryContextSwitchTo(TopMemoryContext);
	cmd->active = true;
	cmd->keep = -1;
	PQclear(sc->kept);
	sc->kept = NULL;
	cmd->nprefix = list_length(sc->pending) + (need_prepare ? 1 : 0);
	cmd->single_row = single_row;
	cmd->preparing = need_prepare ? ps : NULL;
	cmd->executing = ps;
	cmd->shown = shown ? pstrdup(shown) : NULL;
	sc->in_pipeline = (cmd->nprefix > 0);
	if (sc->in_pipeline)
	{
		if (!PQenterPipelineMode(conn))
			ShardConnLost(sc);
		foreach(lc, sc->pending)
		{
			QueuedCommand *qc = lfirst(lc);

			ok = ok && PQsendQueryParams(conn, qc->sql, qc->nparams, qc->types,
										 (const char *const *) qc->values,
										 NULL, NULL, 0);
			if (qc->keep)
				cmd->keep = list_length(cmd->prefix_sql);
			cmd->prefix_sql = lappend(cmd->prefix_sql, pstrdup(qc->sql));
		}
		if (need_prepare)
		{
			ok = ok && PQsendPrepare(conn, ps->name, sql, nparams, types);
			cmd->prefix_sql = lappend(cmd->prefix_sql, shown ? pstrdup(shown) : NULL);
		}
	}
	MemoryContextSwitchTo(old);
	foreach(lc, sc->pending)
		RemoteFreeQueued(lfirst(lc));
	list_free(sc->pending);
	sc->pending = NIL;

	if (ps != NULL)
		ok = ok && PQsendQueryPrepared(conn, ps->name, nparams, values, NULL, NULL, 0);
	else
		ok = ok && PQsendQueryParams(conn, sql, nparams, types, values, NULL, NULL, 0);
	if (sc->in_pipeline)
		ok = ok && PQpipelineSync(conn);
	if (!ok)
		ShardConnLost(sc);
	if (single_row && cmd->nprefix == 0)
		PQsetSingleRowMode(conn);
}

/*
 * collect waits for the statement in flight and returns its result, the
 * connection left idle.  A multi-statement string yields several results:
 * the last is kept, or the first error.  With raise, an error is raised;
 * without, an error result is returned as is (the caller frees it).
 */
static PGresult *
collect(ShardConn *sc, bool raise)
{
	PGresult   *res;
	PGresult   *next;
	char	   *shown;

	(void) RemoteReadPrefix(sc, true);
	if (sc->cmd.error != NULL)
	{
		if (raise)
			RemoteReportPrefixError(sc);
		res = sc->cmd.error;
		sc->cmd.error = NULL;
		RemoteFinishCommand(sc);
		RemoteEndCommand(sc);
		return res;
	}
	res = RemoteGetResult(sc);
	if (res == NULL)
		ShardConnLost(sc);
	while (!sc->in_pipeline && (next = RemoteGetResult(sc)) != NULL)
	{
		if (PQresultStatus(res) == PGRES_FATAL_ERROR)
			PQclear(next);
		else
		{
			PQclear(res);
			res = next;
		}
	}
	if (sc->in_pipeline)
		RemoteFinishCommand(sc);
	shown = sc->cmd.shown ? pstrdup(sc->cmd.shown) : NULL;
	RemoteEndCommand(sc);
	if (raise && PQresultStatus(res) != PGRES_COMMAND_OK &&
		PQresultStatus(res) != PGRES_TUPLES_OK)
		RemoteReport(sc, res, shown);
	return res;
}

static PGresult *
exec_statement(ShardConn *sc, const char *sql, const char *shown, int nparams,
			   const Oid *types, const char *const *values)
{
	RemoteSendStatement(sc, sql, shown, nparams, types, values, false, false);
	return collect(sc, true);
}

/*
 * RemoteForgetStale forgets the prepared statement whose execution gave
 * res, if the shard says its plan is stale for good (a column's type
 * changed under it: "cached plan must not change result type"), so that
 * the next execution prepares it again, under a new name, instead of
 * failing the same way until the connection closes.  No DEALLOCATE: in the
 * failed remote transaction it would fail too; the old statement stays
 * unused until the connection closes.
 */
void
RemoteForgetStale(ShardConn *sc, PGresult *res)
{
	PreparedStmt *ps = sc->cmd.executing;
	char	   *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	char	   *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	if (ps == NULL || sc->prepared == NULL || sqlstate == NULL || message == NULL ||
		strcmp(sqlstate, "0A000") != 0 ||
		strcmp(message, "cached plan must not change result type") != 0)
		return;
	forget_statement(sc, ps);
}

/*
 * ShardConnExec runs one statement on the shard and returns its result
 * (PGRES_COMMAND_OK or PGRES_TUPLES_OK), which the caller must PQclear.
 * A remote error is raised.
 */
PGresult *
ShardConnExec(ShardConn *sc, const char *sql, int nparams, const Oid *types,
			  const char *const *values)
{
	return exec_statement(sc, sql, sql, nparams, types, values);
}

/*
 * ShardConnExecHoldMoved is ShardConnExec for a write of one tenant's rows
 * (an INSERT if inserting): a refusal because the tenant moved
 * (RemoteTenantMoved) is returned as an error result (the caller frees it),
 * any other error is raised.
 */
PGresult *
ShardConnExecHoldMoved(ShardConn *sc, const char *sql, int nparams, const Oid *types,
					   const char *const *values, bool inserting)
{
	PGresult   *res;

	RemoteSendStatement(sc, sql, sql, nparams, types, values, false, false);
	res = collect(sc, false);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK &&
		!RemoteTenantMoved(res, inserting))
		RemoteReport(sc, res, sql);
	return res;
}

/*
 * ShardConnExecSecret is ShardConnExec for a command that holds a secret
 * (a connection string): an error never shows the command.
 */
PGresult *
ShardConnExecSecret(ShardConn *sc, const char *sql)
{
	return exec_statement(sc, sql, NULL, 0, NULL, NULL);
}

/*
 * ShardConnSend sends a statement (after the queued commands) without
 * waiting for it: several shards can work at once.  ShardConnResultReady
 * tells, without waiting, whether its result has arrived; ShardConnResult
 * waits for it.  Until then the connection is busy: whoever sends needs a
 * claim on it if others may need the connection meanwhile.
 */
void
ShardConnSend(ShardConn *sc, const char *sql, int nparams, const Oid *types,
			  const char *const *values)
{
	RemoteSendStatement(sc, sql, sql, nparams, types, values, false, false);
}

/* ShardConnResultReady tells whether ShardConnResult would not wait. */
bool
ShardConnResultReady(ShardConn *sc)
{
	/* a caller waiting on several shards (a scan) is woken by a deadlock's victim mark */
	RemoteDeadlockCheck();
	if (!RemoteReadPrefix(sc, false))
		return false;
	if (sc->cmd.error != NULL)
		return true;
	return input_ready(sc);
}

/*
 * ShardConnResult waits for the result of the statement sent by
 * ShardConnSend and returns it (the caller frees it); a remote error is
 * raised with raise, else returned as an error result.
 */
PGresult *
ShardConnResult(ShardConn *sc, bool raise)
{
	return collect(sc, raise);
}

/* ShardConnSocket returns the connection's socket, to wait on. */
pgsocket
ShardConnSocket(ShardConn *sc)
{
	return PQsocket(sc->conn);
}

/*
 * exec_params (ShardConnExecParams) runs one statement on each of n connections at once
 * (with parameters: nparams[i], types[i], values[i]; NULL arrays for none):
 * all are sent, then all results read, so the shards work at the same time.
 * A connection listed twice runs its statements one after the other.
 * results[i] receives each result.  If any failed, every connection is
 * first left idle, then the first error raised (results freed).
 */
static void
exec_params(int n, ShardConn **scs, const char *const *sqls, const int *nparams,
			const Oid *const *types, const char *const *const *values,
			PGresult **results, bool hold_moved)
{
	bool	   *pending = palloc0(sizeof(bool) * (n + 1));
	int			i;
	int			j;
	int			failed = -1;

	for (i = 0; i < n; i++)
	{
		results[i] = NULL;
		/* a connection already busy with an earlier statement of this batch */
		for (j = 0; j < i; j++)
			if (pending[j] && scs[j] == scs[i])
			{
				results[j] = collect(scs[j], false);
				pending[j] = false;
			}
		ShardConnSend(scs[i], sqls[i], nparams ? nparams[i] : 0,
					  types ? types[i] : NULL, values ? values[i] : NULL);
		pending[i] = true;
	}
	for (i = 0; i < n; i++)
		if (pending[i])
			results[i] = collect(scs[i], false);
	pfree(pending);
	for (i = 0; i < n && failed < 0; i++)
		if (PQresultStatus(results[i]) != PGRES_COMMAND_OK &&
			PQresultStatus(results[i]) != PGRES_TUPLES_OK &&
			!(hold_moved && RemoteTenantMoved(results[i], true)))
			failed = i;
	if (failed >= 0)
	{
		PGresult   *error = results[failed];

		for (i = 0; i < n; i++)
			if (i != failed)
				PQclear(results[i]);
		RemoteReport(scs[failed], error, sqls[failed]);
	}
}

void
ShardConnExecParams(int n, ShardConn **scs, const char *const *sqls, const int *nparams,
					const Oid *const *types, const char *const *const *values,
					PGresult **results)
{
	exec_params(n, scs, sqls, nparams, types, values, results, false);
}

/*
 * ShardConnExecParamsHoldMoved is ShardConnExecParams for INSERTs, each of
 * rows routed to its shard: a refusal because a tenant moved
 * (RemoteTenantMoved) is left in results as an error result, for the caller
 * to free; any other error is raised.
 */
void
ShardConnExecParamsHoldMoved(int n, ShardConn **scs, const char *const *sqls,
							 const int *nparams, const Oid *const *types,
							 const char *const *const *values, PGresult **results)
{
	exec_params(n, scs, sqls, nparams, types, values, results, true);
}

/* ShardConnExecAll is ShardConnExecParams for statements without parameters. */
void
ShardConnExecAll(int n, ShardConn **scs, const char *const *sqls, PGresult **results)
{
	ShardConnExecParams(n, scs, sqls, NULL, NULL, NULL, results);
}
