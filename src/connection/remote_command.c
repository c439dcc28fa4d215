/*-------------------------------------------------------------------------
 *
 * remote_command.c
 *	  What travels on a shard connection: statements, the commands queued
 *	  to go with them in one pipeline, remote prepared statements, streams
 *	  of rows, remote errors re-raised, and cancelling what is in flight.
 *
 * BEGIN, SAVEPOINT and RELEASE are never a round trip of their own: they
 * are queued (ShardConnQueue) and sent in one pipeline with the next
 * statement.  Statements repeated with parameters are prepared on the shard
 * once per connection.  Remote errors are re-raised with the remote
 * SQLSTATE, message, detail and hint, and a context naming the shard and
 * the remote SQL (never the SQL of a command that holds a secret).
 *
 * Every wait on a shard is on the backend's latch and the socket together:
 * it honours query cancel, backend termination and statement_timeout.  A
 * wait during error cleanup, when interrupts are held, is bounded instead,
 * and ends at once if a cancel or termination is requested meanwhile.
 *
 * Invariants: at most one command is in flight per connection; a command in
 * flight that another owns (a claim: a stream, an asynchronous fetch) is
 * finished by its owner's release callback before anything else is sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <signal.h>

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"

/* remote prepared statements kept per connection */
#define MAX_PREPARED_PER_CONN 1000
/* how often a bounded wait looks at a cancel request in flight */
#define CANCEL_POLL_MS 10

typedef struct PreparedStmt
{
	uint64		key;			/* hash of the SQL text and types: hash key */
	char	   *sql;
	int			nparams;
	Oid		   *types;			/* the parameters' types, as prepared */
	bool		ready;			/* the shard confirmed the PREPARE */
	char		name[24];
} PreparedStmt;

struct ShardStream
{
	ShardConnClaim claim;		/* first: the stream is its connection's claim */
	ShardConn  *sc;
	char	   *sql;
	MemoryContext mcxt;
	List	   *buffered;		/* results drained while conn was needed */
	PGresult   *current;		/* row returned by the last ShardStreamNext */
	bool		done;
	bool		aborted;		/* cancelled by a rollback: reading is an error */
	char		label[SHARD_ID_MAXLEN]; /* the shard, for that error */
	uint64		affected;
	MemoryContextCallback cleanup;
};

static void stream_release(ShardConnClaim *claim);
static void stream_abandon(ShardConnClaim *claim);

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

		(void) WaitEventSetWait(sc->wait_set, -1, &event, 1, PG_WAIT_EXTENSION);
		if (event.events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
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

	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", primary),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0,
			 context ? errcontext("%s", context) : 0,
			 errcontext("remote %s on shard \"%s\"%s%s", sql ? "SQL" : "command",
						sc->label, sql ? ": " : "", sql ? sql : "")));
}

/* queue_command copies a command into the connection's queue */
static void
queue_command(ShardConn *sc, const char *sql, int nparams, const Oid *types,
			  const char *const *values)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	QueuedCommand *qc = palloc0(sizeof(QueuedCommand));
	int			i;

	qc->sql = pstrdup(sql);
	qc->nparams = nparams;
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

static void
free_queued(QueuedCommand *qc)
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
	queue_command(sc, sql, 0, NULL, NULL);
}

/*
 * ShardConnQueueParams queues a command with parameters (text values,
 * copied) to be sent before the next statement, in the same pipeline.
 */
void
ShardConnQueueParams(ShardConn *sc, const char *sql, int nparams, const Oid *types,
					 const char *const *values)
{
	queue_command(sc, sql, nparams, types, values);
}

/* end_command forgets the statement in flight; the connection is idle. */
static void
end_command(ShardConn *sc)
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
		free_queued(lfirst(lc));
	list_free(sc->pending);
	sc->pending = NIL;
	end_command(sc);
	sc->in_pipeline = false;
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
 * read_prefix reads the results of the commands sent before the statement;
 * without wait, only what has arrived.  It returns true once all of them
 * are read: then the statement's own results come next.
 */
static bool
read_prefix(ShardConn *sc, bool wait)
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
		PQclear(res);
	}
	return true;
}

/*
 * finish_command reads whatever is left of the statement in flight,
 * including the pipeline's sync, and leaves the connection idle.
 */
static void
finish_command(ShardConn *sc)
{
	PGresult   *res;

	(void) read_prefix(sc, true);
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
 * report_prefix_error raises the error of a command sent before the
 * statement (which the shard then skipped), once the connection is idle.
 */
static void
report_prefix_error(ShardConn *sc)
{
	PGresult   *error = sc->cmd.error;
	char	   *sql = sc->cmd.error_sql ? pstrdup(sc->cmd.error_sql) : NULL;

	sc->cmd.error = NULL;
	finish_command(sc);
	end_command(sc);
	RemoteReport(sc, error, sql);
}

/*
 * send_statement sends the queued commands, a PREPARE if wanted, and the
 * statement, in one pipeline when there is more than the statement, without
 * waiting for any of them; read_prefix and the readers below take the
 * results.
 */
static void
send_statement(ShardConn *sc, const char *sql, const char *shown, int nparams,
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

	if (prepare && TenantRouterRemotePrepare)
		ps = prepared_lookup(sc, sql, nparams, types, &need_prepare);

	old = MemoryContextSwitchTo(TopMemoryContext);
	cmd->active = true;
	cmd->nprefix = list_length(sc->pending) + (need_prepare ? 1 : 0);
	cmd->single_row = single_row;
	cmd->preparing = need_prepare ? ps : NULL;
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
		free_queued(lfirst(lc));
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

	(void) read_prefix(sc, true);
	if (sc->cmd.error != NULL)
	{
		if (raise)
			report_prefix_error(sc);
		res = sc->cmd.error;
		sc->cmd.error = NULL;
		finish_command(sc);
		end_command(sc);
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
		finish_command(sc);
	shown = sc->cmd.shown ? pstrdup(sc->cmd.shown) : NULL;
	end_command(sc);
	if (raise && PQresultStatus(res) != PGRES_COMMAND_OK &&
		PQresultStatus(res) != PGRES_TUPLES_OK)
		RemoteReport(sc, res, shown);
	return res;
}

static PGresult *
exec_statement(ShardConn *sc, const char *sql, const char *shown, int nparams,
			   const Oid *types, const char *const *values)
{
	send_statement(sc, sql, shown, nparams, types, values, false, false);
	return collect(sc, true);
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
	send_statement(sc, sql, sql, nparams, types, values, false, false);
}

/* ShardConnResultReady tells whether ShardConnResult would not wait. */
bool
ShardConnResultReady(ShardConn *sc)
{
	if (!read_prefix(sc, false))
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
 * ShardConnExecAll runs one statement on each of n connections at once:
 * all are sent, then all results read (the time of the slowest, not the
 * sum).  results[i] receives each result.  If any failed, every connection
 * is first left idle, then the first error raised (results freed).
 */
void
ShardConnExecAll(int n, ShardConn **scs, const char *const *sqls, PGresult **results)
{
	int			i;
	int			failed = -1;

	for (i = 0; i < n; i++)
	{
		results[i] = NULL;
		ShardConnSend(scs[i], sqls[i], 0, NULL, NULL);
	}
	for (i = 0; i < n; i++)
	{
		results[i] = collect(scs[i], false);
		if (failed < 0 && PQresultStatus(results[i]) != PGRES_COMMAND_OK &&
			PQresultStatus(results[i]) != PGRES_TUPLES_OK)
			failed = i;
	}
	if (failed >= 0)
	{
		PGresult   *error = results[failed];

		for (i = 0; i < n; i++)
			if (i != failed)
				PQclear(results[i]);
		RemoteReport(scs[failed], error, sqls[failed]);
	}
}

/*
 * wait_writeable waits until the connection's socket takes more data,
 * honouring interrupts.
 */
static void
wait_writeable(ShardConn *sc)
{
	int			rc = WaitLatchOrSocket(MyLatch,
									   WL_LATCH_SET | WL_SOCKET_WRITEABLE | WL_EXIT_ON_PM_DEATH,
									   PQsocket(sc->conn), -1, PG_WAIT_EXTENSION);

	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * ShardCopyStart starts COPY ... FROM STDIN on the shard, the queued
 * commands (BEGIN, SAVEPOINT) sent before it in the same simple-protocol
 * message (a pipeline cannot carry COPY), and waits until the shard takes
 * data.  Until ShardCopyEnd the connection is in COPY; it sends without
 * blocking, so that a full socket waits on the latch, interruptibly.
 */
void
ShardCopyStart(ShardConn *sc, const char *sql)
{
	StringInfoData text;
	ListCell   *lc;
	PGresult   *res;

	ShardConnRelease(sc);
	Assert(!sc->cmd.active);
	initStringInfo(&text);
	foreach(lc, sc->pending)
	{
		QueuedCommand *qc = lfirst(lc);

		if (qc->nparams > 0)
			elog(ERROR, "tenant_router: a queued command with parameters cannot precede COPY");
		appendStringInfo(&text, "%s; ", qc->sql);
	}
	appendStringInfoString(&text, sql);
	foreach(lc, sc->pending)
		free_queued(lfirst(lc));
	list_free(sc->pending);
	sc->pending = NIL;

	if (!PQsendQuery(sc->conn, text.data))
		ShardConnLost(sc);
	for (;;)
	{
		res = RemoteGetResult(sc);
		if (res == NULL)
			ShardConnLost(sc);
		if (PQresultStatus(res) == PGRES_COPY_IN)
			break;
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			/* the statement failed: read to its end, then report */
			PGresult   *next;

			while ((next = RemoteGetResult(sc)) != NULL)
				PQclear(next);
			RemoteReport(sc, res, sql);
		}
		PQclear(res);
	}
	PQclear(res);
	if (PQsetnonblocking(sc->conn, 1) != 0)
		ShardConnLost(sc);
	sc->copying = true;
}

/* ShardCopyPut sends COPY data, waiting (interruptibly) while the socket is full. */
void
ShardCopyPut(ShardConn *sc, const char *data, int len)
{
	for (;;)
	{
		int			rc = PQputCopyData(sc->conn, data, len);

		if (rc == 1)
			return;
		if (rc < 0)
			ShardConnLost(sc);
		wait_writeable(sc);
	}
}

/*
 * ShardCopyEnd ends the COPY and returns the rows the shard copied; the
 * shard's error, if the COPY failed, is raised.
 */
uint64
ShardCopyEnd(ShardConn *sc, const char *sql)
{
	PGresult   *res;
	PGresult   *next;
	int			rc;
	uint64		rows;

	sc->copying = false;
	while ((rc = PQputCopyEnd(sc->conn, NULL)) == 0)
		wait_writeable(sc);
	if (rc < 0)
		ShardConnLost(sc);
	while ((rc = PQflush(sc->conn)) == 1)
		wait_writeable(sc);
	if (rc < 0 || PQsetnonblocking(sc->conn, 0) != 0)
		ShardConnLost(sc);
	res = RemoteGetResult(sc);
	if (res == NULL)
		ShardConnLost(sc);
	while ((next = RemoteGetResult(sc)) != NULL)
		PQclear(next);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		RemoteReport(sc, res, sql);
	rows = strtou64(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return rows;
}

/*
 * The cancel request.  libpq's PQcancel (PostgreSQL 15 has no other) blocks
 * until the shard's postmaster has handled the request, without a timeout:
 * a stopped shard would hold the backend forever.  It runs in a thread of
 * its own, with every signal blocked, touching nothing but its PGcancel; the
 * backend waits for it with a deadline and goes on without it when the
 * deadline passes.  Whichever of the two finishes last frees the request.
 */
typedef struct CancelRequest
{
	PGcancel   *cancel;
	pg_atomic_uint32 refs;		/* the thread and the waiter */
	pg_atomic_uint32 done;
} CancelRequest;

static void
cancel_request_unref(CancelRequest *req)
{
	if (pg_atomic_sub_fetch_u32(&req->refs, 1) == 0)
	{
		PQfreeCancel(req->cancel);
		free(req);
	}
}

static void *
cancel_thread(void *arg)
{
	CancelRequest *req = (CancelRequest *) arg;
	char		errbuf[256];

	(void) PQcancel(req->cancel, errbuf, sizeof(errbuf));
	pg_atomic_write_u32(&req->done, 1);
	cancel_request_unref(req);
	return NULL;
}

/* abandon_wait tells whether a bounded wait should give up at once */
static bool
abandon_wait(TimestampTz deadline)
{
	return QueryCancelPending || ProcDiePending ||
		GetCurrentTimestamp() >= deadline;
}

/*
 * send_cancel asks the shard to cancel the command in flight and waits
 * until the request was handled or the deadline; false if it was not
 * handled in time (the connection should then be given up).
 */
static bool
send_cancel(ShardConn *sc, TimestampTz deadline)
{
	CancelRequest *req;
	pthread_t	thread;
	pthread_attr_t attr;
	sigset_t	all;
	sigset_t	saved;
	bool		started;
	bool		done;

	req = malloc(sizeof(CancelRequest));
	if (req == NULL)
		return false;
	req->cancel = PQgetCancel(sc->conn);
	if (req->cancel == NULL)
	{
		free(req);
		return false;
	}
	pg_atomic_init_u32(&req->refs, 2);
	pg_atomic_init_u32(&req->done, 0);

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	started = pthread_create(&thread, &attr, cancel_thread, req) == 0;
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (!started)
	{
		PQfreeCancel(req->cancel);
		free(req);
		return false;
	}

	while (!(done = pg_atomic_read_u32(&req->done) != 0) && !abandon_wait(deadline))
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 CANCEL_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	cancel_request_unref(req);
	return done;
}

/*
 * wait_idle waits until the command in flight has finished, discarding its
 * results, without raising errors; false if the connection must be given up
 * (broken, or the deadline passed).  *failed tells whether a result was an
 * error.
 */
static bool
wait_idle(ShardConn *sc, TimestampTz deadline, bool *failed)
{
	*failed = false;
	for (;;)
	{
		PGresult   *res;

		while (PQisBusy(sc->conn))
		{
			long		timeout;
			int			rc;

			if (abandon_wait(deadline))
				return false;
			timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
			rc = WaitLatchOrSocket(MyLatch,
								   WL_LATCH_SET | WL_SOCKET_READABLE |
								   WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								   PQsocket(sc->conn), Max(timeout, 1), PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
				ResetLatch(MyLatch);
			if ((rc & WL_SOCKET_READABLE) && !PQconsumeInput(sc->conn))
				return false;
		}
		res = PQgetResult(sc->conn);
		if (res == NULL)
		{
			if (sc->in_pipeline)
				continue;
			return PQstatus(sc->conn) == CONNECTION_OK;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC)
		{
			PQclear(res);
			sc->in_pipeline = false;
			return PQexitPipelineMode(sc->conn) == 1;
		}
		if (PQresultStatus(res) == PGRES_FATAL_ERROR)
			*failed = true;
		PQclear(res);
	}
}

/*
 * RemoteCleanup stops whatever the connection is doing after an error: a
 * command in flight is cancelled and its results discarded, waiting at most
 * timeout_ms in all.  It never raises an error; false means the connection
 * must be given up.
 */
bool
RemoteCleanup(ShardConn *sc, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	if (sc->claim != NULL)
	{
		ShardConnClaim *claim = sc->claim;

		sc->claim = NULL;
		claim->abandon(claim);
	}
	if (sc->copying)
	{
		bool		failed;
		int			rc;

		/* a COPY in progress: end it as failed, the shard rolls it back */
		sc->copying = false;
		while ((rc = PQputCopyEnd(sc->conn, "cancelled by the coordinator")) == 0 ||
			   (rc > 0 && PQflush(sc->conn) == 1))
		{
			if (abandon_wait(deadline))
				return false;
			(void) WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_WRITEABLE |
									 WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									 PQsocket(sc->conn), CANCEL_POLL_MS, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		if (rc < 0 || PQsetnonblocking(sc->conn, 0) != 0 ||
			!wait_idle(sc, deadline, &failed))
			return false;
	}
	else if (PQtransactionStatus(sc->conn) == PQTRANS_ACTIVE || sc->in_pipeline)
	{
		bool		failed;

		if (!send_cancel(sc, deadline) || !wait_idle(sc, deadline, &failed))
			return false;
	}
	end_command(sc);
	return PQstatus(sc->conn) == CONNECTION_OK;
}

/*
 * RemoteCleanupExec sends a command after an error and waits for it at most
 * timeout_ms, without raising errors; false means the connection must be
 * given up.
 */
bool
RemoteCleanupExec(ShardConn *sc, const char *sql, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	bool		failed;

	if (!PQsendQuery(sc->conn, sql))
		return false;
	return wait_idle(sc, deadline, &failed) && PQtransactionStatus(sc->conn) != PQTRANS_INERROR;
}

/*
 * RemoteExecAllBounded runs one command on each of n connections at once,
 * outside a transaction's normal flow (the second phase of a commit):
 * waiting at most timeout_ms in all and never raising an error.  ok[i]
 * tells whether the command succeeded; a connection that failed to answer
 * in time is left busy (the caller gives it up).
 */
void
RemoteExecAllBounded(int n, ShardConn **scs, const char *const *sqls, int timeout_ms,
					 bool *ok)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	int			i;

	for (i = 0; i < n; i++)
		ok[i] = scs[i]->conn != NULL && !scs[i]->cmd.active &&
			PQsendQuery(scs[i]->conn, sqls[i]);
	for (i = 0; i < n; i++)
	{
		bool		failed;

		if (ok[i])
			ok[i] = wait_idle(scs[i], deadline, &failed) && !failed;
	}
}

static void
stream_cleanup(void *arg)
{
	ShardStream *stream = (ShardStream *) arg;
	ListCell   *lc;

	foreach(lc, stream->buffered)
		PQclear(lfirst(lc));
	stream->buffered = NIL;
	PQclear(stream->current);
	stream->current = NULL;
	if (stream->sc != NULL)
		ShardConnClaimDone(stream->sc, &stream->claim);	/* the transaction end
														 * cleans the conn */
}

/*
 * ShardStreamOpen sends a statement whose rows are read one at a time with
 * ShardStreamNext.  With prepare, the statement is prepared on the shard
 * the first time and executed by name after that.  The stream belongs to
 * the current memory context.
 */
ShardStream *
ShardStreamOpen(ShardConn *sc, const char *sql, int nparams, const Oid *types,
				const char *const *values, bool prepare)
{
	ShardStream *stream = palloc0(sizeof(ShardStream));

	stream->claim.release = stream_release;
	stream->claim.abandon = stream_abandon;
	stream->sql = pstrdup(sql);
	stream->mcxt = CurrentMemoryContext;
	stream->cleanup.func = stream_cleanup;
	stream->cleanup.arg = stream;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &stream->cleanup);

	send_statement(sc, sql, sql, nparams, types, values, prepare, true);
	stream->sc = sc;
	strlcpy(stream->label, sc->label, sizeof(stream->label));
	ShardConnClaimSet(sc, &stream->claim);
	return stream;
}

/* stream_finished marks the stream's statement finished and frees its connection */
static void
stream_finished(ShardStream *stream)
{
	stream->done = true;
	ShardConnClaimDone(stream->sc, &stream->claim);
	finish_command(stream->sc);
	end_command(stream->sc);
}

/*
 * stream_read reads the next result of the stream from its connection;
 * it returns a row, or NULL once the statement is complete.
 */
static PGresult *
stream_read(ShardStream *stream)
{
	ShardConn  *sc = stream->sc;
	PGresult   *res;

	if (sc == NULL || sc->claim != &stream->claim)
		elog(ERROR, "tenant_router: stream read without its connection");
	(void) read_prefix(sc, true);
	if (sc->cmd.error != NULL)
	{
		stream->done = true;
		ShardConnClaimDone(sc, &stream->claim);
		report_prefix_error(sc);
	}
	res = RemoteGetResult(sc);

	if (res == NULL)
		ShardConnLost(sc);
	switch (PQresultStatus(res))
	{
		case PGRES_SINGLE_TUPLE:
			return res;
		case PGRES_TUPLES_OK:
		case PGRES_COMMAND_OK:
			{
				char	   *tuples = PQcmdTuples(res);

				stream->affected = tuples[0] ? strtou64(tuples, NULL, 10) : 0;
				PQclear(res);
				stream_finished(stream);
				return NULL;
			}
		default:
			stream_finished(stream);
			RemoteReport(sc, res, stream->sql);
	}
	return NULL;				/* not reached */
}

/*
 * ShardStreamNext returns the next row (a one-row PGresult, valid until the
 * next call), or NULL when there are no more.
 */
PGresult *
ShardStreamNext(ShardStream *stream)
{
	PQclear(stream->current);
	stream->current = NULL;

	if (stream->buffered != NIL)
	{
		stream->current = linitial(stream->buffered);
		stream->buffered = list_delete_first(stream->buffered);
		return stream->current;
	}
	if (stream->aborted)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_CURSOR_STATE),
				 errmsg("the remote query on shard \"%s\" was cancelled by a rollback",
						stream->label),
				 errdetail("The query started inside a savepoint that was rolled back since."),
				 errhint("Open the cursor again.")));
	if (stream->done)
		return NULL;
	stream->current = stream_read(stream);
	return stream->current;
}

/* ShardStreamRowsAffected returns the row count of the finished statement. */
uint64
ShardStreamRowsAffected(ShardStream *stream)
{
	return stream->affected;
}

/*
 * stream_abandon: the stream's query was cancelled or its connection
 * closed; it can never read the rest of its rows.
 */
static void
stream_abandon(ShardConnClaim *claim)
{
	ShardStream *stream = (ShardStream *) claim;

	stream->aborted = true;
	stream->done = true;
	stream->sc = NULL;
}

/*
 * stream_release frees the connection from the stream, by reading the
 * stream's remaining rows into memory.
 */
static void
stream_release(ShardConnClaim *claim)
{
	ShardStream *stream = (ShardStream *) claim;
	MemoryContext old = MemoryContextSwitchTo(stream->mcxt);

	while (!stream->done)
	{
		PGresult   *res = stream_read(stream);

		if (res != NULL)
			stream->buffered = lappend(stream->buffered, res);
	}
	MemoryContextSwitchTo(old);
}

/*
 * ShardStreamClose ends a stream.  Rows not read are discarded; outside a
 * remote transaction the statement is cancelled rather than read to its end.
 */
void
ShardStreamClose(ShardStream *stream)
{
	ShardConn  *sc = stream->sc;

	if (!stream->done && sc != NULL && sc->claim == &stream->claim)
	{
		if (sc->xact_depth == 0)
		{
			TimestampTz deadline =
				TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											TenantRouterConnectTimeout * 1000);

			/* a shard that does not handle the cancel in time is given up */
			if (!send_cancel(sc, deadline))
			{
				CHECK_FOR_INTERRUPTS();
				ShardConnLost(sc);
			}
			/* the cancel error, if it arrives, is expected: drop it */
			while (!stream->done)
			{
				PGresult   *res = RemoteGetResult(sc);

				if (res == NULL)
					ShardConnLost(sc);
				if (PQresultStatus(res) != PGRES_SINGLE_TUPLE)
					stream_finished(stream);
				PQclear(res);
			}
		}
		else
		{
			while (!stream->done)
				PQclear(stream_read(stream));
		}
	}
	stream_cleanup(stream);
	stream->done = true;
}
