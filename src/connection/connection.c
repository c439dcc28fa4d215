/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  Shard connection cache and remote transactions, postgres_fdw-style.
 *
 * One connection per DSN per backend, kept across transactions (shards that
 * share a DSN share the connection).  A remote transaction is opened lazily,
 * at the local transaction's isolation level, by the first statement that
 * needs one, and committed or rolled back with the local transaction;
 * subtransactions are mirrored by savepoints.  BEGIN, SAVEPOINT and RELEASE
 * are never a round trip of their own: they are queued and sent in one
 * pipeline with the next statement (or the COMMIT).  A top-level statement
 * outside a transaction block runs without any remote transaction: exactly
 * one round trip.
 *
 * Remote errors are re-raised with the remote SQLSTATE and the name of the
 * shard; a lost connection is ERRCODE_CONNECTION_FAILURE naming the shard.
 * Nothing here ever prints a DSN.
 *
 * Invariants: at most one query is in flight per connection; a stream that
 * is still reading when another command needs its connection is drained
 * into memory first.  At the end of every local transaction, every
 * connection is idle and outside any remote transaction, or closed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>

#include "access/xact.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "libpq/libpq-be-fe-helpers.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "tenant_router/connection.h"
#include "tenant_router/guc.h"
#include "tenant_router/route_cache.h"

/* remote prepared statements kept per connection */
#define MAX_PREPARED_PER_CONN 1000
/* how long cleanup after an error waits for a shard */
#define CLEANUP_TIMEOUT_MS 30000

typedef struct PreparedStmt
{
	uint64		key;			/* hash of the SQL text and types: hash key */
	char	   *sql;
	int			nparams;
	Oid		   *types;			/* the parameters' types, as prepared */
	bool		ready;			/* the shard confirmed the PREPARE */
	char		name[24];
} PreparedStmt;

/* why a remote transaction cannot go on */
typedef enum ShardBroken
{
	SHARD_OK = 0,
	SHARD_LOST,					/* the connection was lost */
	SHARD_FAILED				/* it failed at a savepoint level rolled back since */
} ShardBroken;

struct ShardConn
{
	uint64		key;			/* hash of the DSN: hash key */
	PGconn	   *conn;			/* NULL when not connected */
	char	   *dsn;
	char		label[SHARD_ID_MAXLEN]; /* the shard named in messages */
	int			xact_depth;		/* 0: no remote transaction; n: savepoint level */
	ShardBroken broken;			/* remote transaction unusable: fail until its end */
	bool		in_pipeline;	/* the command in flight was pipelined */
	List	   *pending;		/* commands to send before the next statement */
	ShardStream *active;		/* stream reading from conn, if any */
	HTAB	   *prepared;
	uint32		next_stmt;
	WaitEventSet *wait_set;		/* latch, postmaster death, conn's socket */
};

struct ShardStream
{
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

static HTAB *ConnHash = NULL;
static bool xact_callbacks_registered = false;
static int	open_remote_xacts = 0;	/* connections with xact_depth > 0 */
static ShardConn *xact_writer = NULL;	/* the shard written in this transaction */
static bool xact_wrote_all = false;	/* this transaction wrote every shard */

static void xact_callback(XactEvent event, void *arg);
static void subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg);
static ShardConn *get_conn(const char *shard_id, const char *dsn, bool side);
static void sc_release_active(ShardConn *sc);
static void sc_abort_active(ShardConn *sc);
static void sc_finish_command(ShardConn *sc, const char *sql);
static PGresult *exec_statement(ShardConn *sc, const char *sql, const char *shown,
								int nparams, const Oid *types, const char *const *values);

static void
sc_disconnect(ShardConn *sc)
{
	if (sc->wait_set != NULL)
	{
		FreeWaitEventSet(sc->wait_set);
		sc->wait_set = NULL;
	}
	if (sc->conn != NULL)
	{
		libpqsrv_disconnect(sc->conn);
		sc->conn = NULL;
	}
	if (sc->prepared != NULL)
	{
		HASH_SEQ_STATUS status;
		PreparedStmt *ps;

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
	sc->in_pipeline = false;
	sc_abort_active(sc);
	list_free_deep(sc->pending);
	sc->pending = NIL;
}

/* libpq_message returns the first line of libpq's last error message */
static char *
libpq_message(PGconn *conn)
{
	char	   *msg = pstrdup(PQerrorMessage(conn));
	char	   *nl = strchr(msg, '\n');

	if (nl != NULL)
		*nl = '\0';
	return msg[0] ? msg : pstrdup("no message from libpq");
}

/*
 * notice_receiver logs what a shard says besides results (NOTICE, WARNING)
 * at DEBUG1, naming the shard, instead of libpq's default of stderr.
 */
static void
notice_receiver(void *arg, const PGresult *res)
{
	ShardConn  *sc = (ShardConn *) arg;
	char	   *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	if (msg != NULL)
		elog(DEBUG1, "tenant_router: shard \"%s\" says: %s", sc->label, msg);
}

/*
 * sc_report_broken raises the error for a shard whose remote transaction
 * cannot go on: the local transaction can only roll back.
 */
static void
sc_report_broken(ShardConn *sc)
{
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
 * sc_connection_lost raises the error for a connection that broke: the
 * remote transaction, if any, is gone, so the rest of the local transaction
 * fails too.
 */
static void
sc_connection_lost(ShardConn *sc)
{
	char	   *msg = sc->conn ? libpq_message(sc->conn) : pstrdup("not connected");

	if (sc->xact_depth > 0)
		sc->broken = SHARD_LOST;
	sc_disconnect(sc);
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("lost connection to shard \"%s\"", sc->label),
			 errdetail_internal("%s", msg)));
}

static void
sc_connect(ShardConn *sc)
{
	const char *keywords[4];
	const char *values[4];
	PGconn	   *conn;
	PGresult   *res;

	/* later keywords win over the DSN, earlier ones are defaults */
	keywords[0] = "fallback_application_name";
	values[0] = "tenant_router";
	keywords[1] = "connect_timeout";
	values[1] = "10";
	keywords[2] = "dbname";
	values[2] = sc->dsn;
	keywords[3] = NULL;
	values[3] = NULL;

	conn = libpqsrv_connect_params(keywords, values, true, PG_WAIT_EXTENSION);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = conn ? libpq_message(conn) : pstrdup("out of memory");

		if (conn)
			libpqsrv_disconnect(conn);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to shard \"%s\"", sc->label),
				 errdetail_internal("%s", msg)));
	}

	/*
	 * Everything the router sends is schema-qualified and uses ISO formats,
	 * so the session runs with a fixed environment whatever the shard's
	 * defaults are.
	 */
	res = libpqsrv_exec(conn,
						"SET search_path = pg_catalog; SET datestyle = ISO; "
						"SET intervalstyle = postgres; SET extra_float_digits = 3; "
						"SET timezone = 'UTC'",
						PG_WAIT_EXTENSION);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		char	   *msg = libpq_message(conn);

		PQclear(res);
		libpqsrv_disconnect(conn);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not set up the session on shard \"%s\"", sc->label),
				 errdetail_internal("%s", msg)));
	}
	PQclear(res);
	PQsetNoticeReceiver(conn, notice_receiver, sc);
	sc->conn = conn;
	sc->next_stmt = 0;

	/* one wait set for the life of the connection: no epoll set per wait */
	sc->wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(sc->wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(sc->wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(sc->wait_set, WL_SOCKET_READABLE, PQsocket(conn), NULL, NULL);
}

/*
 * socket_has_input tells whether an idle connection's socket has anything to
 * read (a shard says something only when it goes away) or is broken.
 */
static bool
socket_has_input(PGconn *conn)
{
	struct pollfd pfd;

	pfd.fd = PQsocket(conn);
	pfd.events = POLLIN;
	pfd.revents = 0;
	return pfd.fd < 0 || poll(&pfd, 1, 0) != 0;
}

/*
 * ShardConnGet returns the connection for the shard, connecting if needed.
 * A connection found dead before it is used in a transaction is reconnected
 * silently; one that dies inside a remote transaction fails that transaction.
 */
ShardConn *
ShardConnGet(const char *shard_id, const char *dsn)
{
	return get_conn(shard_id, dsn, false);
}

/*
 * ShardConnGetSide returns a second connection to the shard, used only for
 * statements that commit on their own (SHARD_AUTOCOMMIT) while the first one
 * holds the shard's remote transaction (shard_split needs both).
 */
ShardConn *
ShardConnGetSide(const char *shard_id, const char *dsn)
{
	return get_conn(shard_id, dsn, true);
}

static ShardConn *
get_conn(const char *shard_id, const char *dsn, bool side)
{
	uint64		key = hash_bytes_extended((const unsigned char *) dsn, strlen(dsn), side ? 1 : 0);
	ShardConn  *sc;
	bool		found;

	if (ConnHash == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(ShardConn);
		ctl.hcxt = TopMemoryContext;
		ConnHash = hash_create("tenant_router connections", 8, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (!xact_callbacks_registered)
	{
		RegisterXactCallback(xact_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		xact_callbacks_registered = true;
	}

	sc = hash_search(ConnHash, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) sc) + sizeof(uint64), 0, sizeof(ShardConn) - sizeof(uint64));
		sc->dsn = MemoryContextStrdup(TopMemoryContext, dsn);
	}
	else if (strcmp(sc->dsn, dsn) != 0)
		elog(ERROR, "tenant_router: connection cache key collision");
	strlcpy(sc->label, shard_id, sizeof(sc->label));

	if (sc->broken)
		sc_report_broken(sc);

	/*
	 * A connection idle since before a shard restart is dead: notice it now.
	 * The shard's goodbye message and the end of the stream may arrive in
	 * separate reads, hence two.
	 */
	if (sc->conn != NULL && sc->xact_depth == 0 && sc->active == NULL &&
		socket_has_input(sc->conn) &&
		(PQconsumeInput(sc->conn) == 0 || PQconsumeInput(sc->conn) == 0 ||
		 PQstatus(sc->conn) != CONNECTION_OK))
		sc_disconnect(sc);

	if (sc->conn == NULL)
	{
		if (sc->xact_depth > 0)
			sc_connection_lost(sc);
		sc_connect(sc);
	}
	return sc;
}

/* ShardConnLabel returns the shard the connection was last requested for. */
const char *
ShardConnLabel(ShardConn *sc)
{
	return sc->label;
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

/* ShardConnQueue queues a command to be sent before the next statement. */
void
ShardConnQueue(ShardConn *sc, const char *sql)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	sc->pending = lappend(sc->pending, pstrdup(sql));
	MemoryContextSwitchTo(old);
}

static void
check_single_writer(ShardConn *writer, ShardXactMode mode)
{
	if (mode == SHARD_WRITE_ALL)
	{
		if (xact_writer != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("TRUNCATE of a logical table cannot follow a write in the same transaction"),
					 errdetail("Shard \"%s\" was written earlier in this transaction; TRUNCATE writes every shard.",
							   xact_writer->label),
					 errhint("Commit before the TRUNCATE.")));
		xact_wrote_all = true;
		return;
	}
	if (xact_wrote_all)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("transaction would write to more than one shard"),
				 errdetail("A TRUNCATE of a logical table wrote every shard earlier in this transaction; this statement writes to shard \"%s\".",
						   writer->label),
				 errhint("Commit after the TRUNCATE, before writing rows.")));
	if (xact_writer != NULL && xact_writer != writer)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("transaction would write to more than one shard"),
				 errdetail("Shard \"%s\" was written earlier in this transaction; this statement writes to shard \"%s\".",
						   xact_writer->label, writer->label),
				 errhint("Write to one shard per transaction: commit before writing rows of tenants on another shard.")));
	xact_writer = writer;
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
	if (mode == SHARD_WRITE || mode == SHARD_WRITE_ALL)
		check_single_writer(sc, mode);
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
		open_remote_xacts++;
	}
	while (sc->xact_depth < curlevel)
	{
		snprintf(sql, sizeof(sql), "SAVEPOINT s%d", ++sc->xact_depth);
		ShardConnQueue(sc, sql);
	}
}

/*
 * sc_get_result waits for the next result while processing interrupts; a
 * broken connection raises the connection error.
 */
static PGresult *
sc_get_result(ShardConn *sc)
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
		sc_connection_lost(sc);
	}
	return res;
}

/*
 * sc_report raises a remote error with its SQLSTATE, message, detail and
 * hint, naming the shard and the remote SQL (unless sql is NULL: a command
 * holding a secret).  It frees res.
 */
static void
sc_report(ShardConn *sc, PGresult *res, const char *sql)
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
	primary = primary ? pstrdup(primary) : libpq_message(sc->conn);
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

/*
 * sc_prepared_lookup returns the remote prepared statement for sql with
 * parameters of these types (the same text with other types is another
 * statement), entering it if there is room; NULL means run it unprepared.
 */
static PreparedStmt *
sc_prepared_lookup(ShardConn *sc, const char *sql, int nparams, const Oid *types,
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
 * sc_send sends the queued commands, a PREPARE if wanted, and the statement,
 * in one pipeline when there is more than the statement, and reads the
 * results of everything but the statement.
 */
static void
sc_send(ShardConn *sc, const char *sql, const char *shown, int nparams, const Oid *types,
		const char *const *values, bool prepare, bool single_row)
{
	PGconn	   *conn = sc->conn;
	PreparedStmt *ps = NULL;
	bool		need_prepare = false;
	int			nprefix;
	ListCell   *lc;
	bool		ok = true;
	PGresult   *first_error = NULL;
	int			i;

	sc_release_active(sc);
	Assert(!PQisBusy(conn));

	if (prepare && TenantRouterRemotePrepare)
		ps = sc_prepared_lookup(sc, sql, nparams, types, &need_prepare);

	nprefix = list_length(sc->pending) + (need_prepare ? 1 : 0);
	sc->in_pipeline = (nprefix > 0);
	if (sc->in_pipeline)
	{
		if (!PQenterPipelineMode(conn))
			sc_connection_lost(sc);
		foreach(lc, sc->pending)
			ok = ok && PQsendQueryParams(conn, lfirst(lc), 0, NULL, NULL, NULL, NULL, 0);
		if (need_prepare)
			ok = ok && PQsendPrepare(conn, ps->name, sql, nparams, types);
	}
	list_free_deep(sc->pending);
	sc->pending = NIL;

	if (ps != NULL)
		ok = ok && PQsendQueryPrepared(conn, ps->name, nparams, values, NULL, NULL, 0);
	else
		ok = ok && PQsendQueryParams(conn, sql, nparams, types, values, NULL, NULL, 0);
	if (sc->in_pipeline)
		ok = ok && PQpipelineSync(conn);
	if (!ok)
		sc_connection_lost(sc);

	for (i = 0; i < nprefix; i++)
	{
		PGresult   *res = sc_get_result(sc);
		ExecStatusType status = PQresultStatus(res);

		if (status == PGRES_FATAL_ERROR && first_error == NULL)
			first_error = res;
		else
		{
			if (status == PGRES_COMMAND_OK && need_prepare && i == nprefix - 1)
				ps->ready = true;
			PQclear(res);
		}
		/* each command's results end with NULL */
		while ((res = sc_get_result(sc)) != NULL)
			PQclear(res);
	}
	if (first_error != NULL)
	{
		/* the statement was skipped: read its outcome and the sync */
		sc_finish_command(sc, sql);
		sc_report(sc, first_error, shown);
	}
	if (single_row)
		PQsetSingleRowMode(conn);
}

/*
 * sc_finish_command reads whatever is left of the command in flight,
 * including the pipeline's sync, and leaves the connection idle.
 */
static void
sc_finish_command(ShardConn *sc, const char *sql)
{
	PGresult   *res;

	for (;;)
	{
		res = sc_get_result(sc);
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
				sc_connection_lost(sc);
			sc->in_pipeline = false;
			break;
		}
		PQclear(res);
	}
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

static PGresult *
exec_statement(ShardConn *sc, const char *sql, const char *shown, int nparams,
			   const Oid *types, const char *const *values)
{
	PGresult   *res;
	PGresult   *next;

	sc_send(sc, sql, shown, nparams, types, values, false, false);
	res = sc_get_result(sc);
	if (res == NULL)
		sc_connection_lost(sc);
	/* a multi-statement string yields several results: keep the last */
	while (!sc->in_pipeline && (next = sc_get_result(sc)) != NULL)
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
		sc_finish_command(sc, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK &&
		PQresultStatus(res) != PGRES_TUPLES_OK)
		sc_report(sc, res, shown);
	return res;
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
	if (stream->sc != NULL && stream->sc->active == stream)
		stream->sc->active = NULL;	/* the transaction end cleans the conn */
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

	stream->sql = pstrdup(sql);
	stream->mcxt = CurrentMemoryContext;
	stream->cleanup.func = stream_cleanup;
	stream->cleanup.arg = stream;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &stream->cleanup);

	sc_send(sc, sql, sql, nparams, types, values, prepare, true);
	stream->sc = sc;
	strlcpy(stream->label, sc->label, sizeof(stream->label));
	sc->active = stream;
	return stream;
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

	if (sc == NULL || sc->active != stream)
		elog(ERROR, "tenant_router: stream read without its connection");
	res = sc_get_result(sc);

	if (res == NULL)
		sc_connection_lost(sc);
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
				stream->done = true;
				sc->active = NULL;
				sc_finish_command(sc, stream->sql);
				return NULL;
			}
		default:
			stream->done = true;
			sc->active = NULL;
			sc_finish_command(sc, stream->sql);
			sc_report(sc, res, stream->sql);
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
 * sc_abort_active detaches the stream reading the connection, if any, when
 * its query is cancelled or its connection closed: it can never read the
 * rest of its rows, and another statement may use the connection next.
 */
static void
sc_abort_active(ShardConn *sc)
{
	ShardStream *stream = sc->active;

	if (stream == NULL)
		return;
	stream->aborted = true;
	stream->done = true;
	stream->sc = NULL;
	sc->active = NULL;
}

/*
 * sc_release_active frees the connection from the stream reading it, by
 * reading the stream's remaining rows into memory.
 */
static void
sc_release_active(ShardConn *sc)
{
	ShardStream *stream = sc->active;
	MemoryContext old;

	if (stream == NULL)
		return;
	old = MemoryContextSwitchTo(stream->mcxt);
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

	if (!stream->done && sc != NULL && sc->active == stream)
	{
		if (sc->xact_depth == 0)
		{
			PGcancel   *cancel = PQgetCancel(sc->conn);
			char		errbuf[256];

			if (cancel)
			{
				PQcancel(cancel, errbuf, sizeof(errbuf));
				PQfreeCancel(cancel);
			}
			/* the cancel error, if it arrives, is expected: drop it */
			while (!stream->done)
			{
				PGresult   *res = sc_get_result(sc);

				if (res == NULL)
					sc_connection_lost(sc);
				if (PQresultStatus(res) != PGRES_SINGLE_TUPLE)
				{
					stream->done = true;
					sc->active = NULL;
					sc_finish_command(sc, stream->sql);
				}
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

/*
 * cleanup_wait waits up to CLEANUP_TIMEOUT_MS for the command in flight to
 * finish, discarding its results.  It returns false if the connection must
 * be given up.
 */
static bool
cleanup_wait(ShardConn *sc)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   CLEANUP_TIMEOUT_MS);

	for (;;)
	{
		PGresult   *res;

		while (PQisBusy(sc->conn))
		{
			long		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
																  deadline);
			int			rc;

			if (timeout <= 0)
				return false;
			rc = WaitLatchOrSocket(MyLatch,
								   WL_LATCH_SET | WL_SOCKET_READABLE |
								   WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								   PQsocket(sc->conn), timeout, PG_WAIT_EXTENSION);
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
		PQclear(res);
	}
}

/*
 * cleanup_exec sends a command after an error and waits for it, without
 * raising errors; false means the connection must be given up.
 */
static bool
cleanup_exec(ShardConn *sc, const char *sql)
{
	if (!PQsendQuery(sc->conn, sql))
		return false;
	return cleanup_wait(sc) && PQtransactionStatus(sc->conn) != PQTRANS_INERROR;
}

/*
 * cleanup_in_flight stops whatever the connection is doing after an error:
 * a query still running is cancelled and its results discarded.
 */
static bool
cleanup_in_flight(ShardConn *sc)
{
	sc_abort_active(sc);
	if (PQtransactionStatus(sc->conn) == PQTRANS_ACTIVE || sc->in_pipeline)
	{
		PGcancel   *cancel = PQgetCancel(sc->conn);
		char		errbuf[256];

		if (cancel)
		{
			PQcancel(cancel, errbuf, sizeof(errbuf));
			PQfreeCancel(cancel);
		}
		if (!cleanup_wait(sc))
			return false;
	}
	return PQstatus(sc->conn) == CONNECTION_OK;
}

/*
 * commit_remote commits the shard's remote transaction.  A shard answers
 * COMMIT of a failed transaction with ROLLBACK, and no error: that is an
 * error here, or the local transaction would commit what the shard dropped.
 */
static void
commit_remote(ShardConn *sc)
{
	PGresult   *res;
	bool		committed;

	sc_release_active(sc);
	res = ShardConnExec(sc, "COMMIT TRANSACTION", 0, NULL, NULL);
	committed = strcmp(PQcmdStatus(res), "COMMIT") == 0;
	PQclear(res);
	sc->xact_depth = 0;
	if (!committed)
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_ROLLBACK),
				 errmsg("the remote transaction on shard \"%s\" was rolled back instead of committed",
						sc->label),
				 errdetail("A statement had failed in it earlier.")));
}

static void
xact_callback(XactEvent event, void *arg)
{
	HASH_SEQ_STATUS status;
	ShardConn  *sc;

	if (ConnHash == NULL)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:

			/*
			 * Shards only read first, the shard written last: if a reader's
			 * COMMIT fails, the local transaction and the write still roll
			 * back together.
			 */
			hash_seq_init(&status, ConnHash);
			while ((sc = hash_seq_search(&status)) != NULL)
			{
				if (sc->broken)
				{
					hash_seq_term(&status);
					sc_report_broken(sc);
				}
				if (sc->conn == NULL || sc == xact_writer)
					continue;
				if (sc->xact_depth > 0)
					commit_remote(sc);
				else
					sc_release_active(sc);
			}
			if (xact_writer != NULL &&
				xact_writer->conn != NULL && xact_writer->xact_depth > 0)
				commit_remote(xact_writer);
			open_remote_xacts = 0;
			xact_writer = NULL;
			xact_wrote_all = false;
			break;
		case XACT_EVENT_PRE_PREPARE:
			hash_seq_init(&status, ConnHash);
			while ((sc = hash_seq_search(&status)) != NULL)
			{
				if (sc->xact_depth > 0)
				{
					hash_seq_term(&status);
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("cannot PREPARE a transaction that has used shards")));
				}
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			hash_seq_init(&status, ConnHash);
			while ((sc = hash_seq_search(&status)) != NULL)
			{
				bool		keep = (sc->conn != NULL && sc->broken != SHARD_LOST);

				list_free_deep(sc->pending);
				sc->pending = NIL;
				if (keep)
					keep = cleanup_in_flight(sc);
				if (keep && PQtransactionStatus(sc->conn) != PQTRANS_IDLE)
					keep = cleanup_exec(sc, "ROLLBACK TRANSACTION");
				if (!keep)
					sc_disconnect(sc);
				sc->xact_depth = 0;
				sc->broken = false;
			}
			open_remote_xacts = 0;
			xact_writer = NULL;
			xact_wrote_all = false;
			break;
		default:
			break;
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	HASH_SEQ_STATUS status;
	ShardConn  *sc;
	int			curlevel;
	char		sql[100];

	if (ConnHash == NULL ||
		(event != SUBXACT_EVENT_PRE_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB))
		return;

	curlevel = GetCurrentTransactionNestLevel();
	hash_seq_init(&status, ConnHash);
	while ((sc = hash_seq_search(&status)) != NULL)
	{
		if (sc->conn == NULL || sc->xact_depth == 0)
			continue;

		/*
		 * A remote transaction opened outside this subtransaction can still
		 * have failed in it: a cursor opened before the savepoint and read
		 * after it.  No savepoint of ours covers that failure, so the
		 * remote transaction is lost; COMMIT would only roll it back.
		 */
		if (sc->xact_depth < curlevel)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB && !sc->broken && sc->active == NULL &&
				!sc->in_pipeline && PQtransactionStatus(sc->conn) == PQTRANS_INERROR)
				sc->broken = SHARD_FAILED;
			continue;
		}
		if (event == SUBXACT_EVENT_PRE_COMMIT_SUB)
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
			if (!cleanup_in_flight(sc))
			{
				sc_disconnect(sc);
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
}
