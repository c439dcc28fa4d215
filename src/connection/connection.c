/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  The cache of shard connections: one per DSN per backend, kept across
 *	  transactions (shards that share a DSN share the connection); connect,
 *	  notice a connection lost while idle, disconnect.
 *
 * Connecting waits on the backend's latch and the socket together, so it
 * honours query cancel, backend termination and statement_timeout, and gives
 * up after tenant_router.connect_timeout.  A lost connection is
 * ERRCODE_CONNECTION_FAILURE naming the shard.  Nothing here ever prints a
 * DSN: libpq's messages about a connection never quote it.
 *
 * Invariants: a ShardConn lives in TopMemoryContext for the life of the
 * backend, connected or not; its PGconn is counted as an external file
 * descriptor while open.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>

#include "common/hashfn.h"
#include "libpq/libpq-be-fe-helpers.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/stats.h"

static HTAB *ConnHash = NULL;

/* ShardConnDisconnect closes the connection and forgets what lived on it. */
void
ShardConnDisconnect(ShardConn *sc)
{
	if (sc->claim != NULL)
	{
		ShardConnClaim *claim = sc->claim;

		sc->claim = NULL;
		claim->abandon(claim);
	}
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
	RemoteForgetPrepared(sc);
	RemoteForgetCommands(sc);
	sc->copying = false;
}

/* ShardConnLibpqMessage returns the first line of libpq's last error message */
char *
ShardConnLibpqMessage(PGconn *conn)
{
	char	   *msg = pstrdup(PQerrorMessage(conn));
	char	   *nl = strchr(msg, '\n');

	if (nl != NULL)
		*nl = '\0';
	return msg[0] ? msg : pstrdup("no message from libpq");
}

/*
 * ShardConnLost raises the error for a connection that broke: the remote
 * transaction, if any, is gone, so the rest of the local transaction fails
 * too.
 */
void
ShardConnLost(ShardConn *sc)
{
	char	   *msg = sc->conn ? ShardConnLibpqMessage(sc->conn) : pstrdup("not connected");

	if (sc->xact_depth > 0 || sc->xact_state != REMOTE_XACT_NONE)
		sc->broken = SHARD_LOST;
	if (sc->conn != NULL)
		StatsShardFailed(sc->label, msg);
	ShardConnDisconnect(sc);
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("lost connection to shard \"%s\"", sc->label),
			 errdetail_internal("%s", msg)));
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

static void
connect_failed(ShardConn *sc, PGconn *conn, const char *why)
{
	char	   *msg = why ? pstrdup(why) :
		conn ? ShardConnLibpqMessage(conn) : pstrdup("out of memory");

	if (conn)
		libpqsrv_disconnect(conn);
	StatsShardFailed(sc->label, msg);
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not connect to shard \"%s\"", sc->label),
			 errdetail_internal("%s", msg)));
}

/*
 * poll_connection drives a connection attempt to its end, waiting on the
 * socket and the latch; false if it failed or timed out (*why says which).
 */
static bool
poll_connection(PGconn *conn, const char **why)
{
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   TenantRouterConnectTimeout * 1000);

	for (;;)
	{
		long		timeout;
		int			rc;

		if (status == PGRES_POLLING_OK)
			return true;
		if (status == PGRES_POLLING_FAILED)
			return false;
		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (timeout <= 0)
		{
			*why = psprintf("timeout expired after %d s (tenant_router.connect_timeout)",
							TenantRouterConnectTimeout);
			return false;
		}
		rc = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | WL_TIMEOUT |
							   (status == PGRES_POLLING_READING ? WL_SOCKET_READABLE :
								WL_SOCKET_WRITEABLE),
							   PQsocket(conn), timeout, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (rc & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
			status = PQconnectPoll(conn);
	}
}

/*
 * connect_params opens a connection with a bounded, interruptible wait; the
 * PGconn is counted as an external file descriptor, as libpqsrv_connect
 * does, so that libpqsrv_disconnect balances it.
 */
static PGconn *
connect_params(ShardConn *sc, const char *const *keywords, const char *const *values)
{
	PGconn	   *volatile conn = NULL;
	const char *why = NULL;
	bool		ok = false;

	if (!AcquireExternalFD())
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not connect to shard \"%s\"", sc->label),
				 errdetail("There are too many open files on the coordinator.")));
	conn = PQconnectStartParams(keywords, values, true);
	if (conn == NULL)
	{
		ReleaseExternalFD();
		connect_failed(sc, NULL, NULL);
	}
	PG_TRY();
	{
		ok = PQstatus(conn) != CONNECTION_BAD && poll_connection(conn, &why);
	}
	PG_CATCH();
	{
		libpqsrv_disconnect(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (!ok || PQstatus(conn) != CONNECTION_OK)
		connect_failed(sc, conn, why);
	return conn;
}

static void
sc_connect(ShardConn *sc)
{
	const char *keywords[3];
	const char *values[3];
	PGconn	   *volatile conn;
	PGresult   *volatile res = NULL;

	/* later keywords win over the DSN, earlier ones are defaults */
	keywords[0] = "fallback_application_name";
	values[0] = "tenant_router";
	keywords[1] = "dbname";
	values[1] = sc->dsn;
	keywords[2] = NULL;
	values[2] = NULL;

	conn = connect_params(sc, keywords, values);

	/* the session's fixed environment (remote_session.c); an interrupt closes */
	PG_TRY();
	{
		res = libpqsrv_exec(conn, RemoteSessionSetupSql(), PG_WAIT_EXTENSION);
	}
	PG_CATCH();
	{
		libpqsrv_disconnect(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		char	   *msg = ShardConnLibpqMessage(conn);

		PQclear(res);
		libpqsrv_disconnect(conn);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not set up the session on shard \"%s\"", sc->label),
				 errdetail_internal("%s", msg)));
	}
	PQclear(res);
	StatsShardAnswered(sc->label);
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
 * ShardConnSocketHasInput tells whether an idle connection's socket has
 * anything to read (a shard says something only when it goes away) or is
 * broken.
 */
bool
ShardConnSocketHasInput(PGconn *conn)
{
	struct pollfd pfd;

	pfd.fd = PQsocket(conn);
	pfd.events = POLLIN;
	pfd.revents = 0;
	return pfd.fd < 0 || poll(&pfd, 1, 0) != 0;
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

	sc = hash_search(ConnHash, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) sc) + sizeof(uint64), 0, sizeof(ShardConn) - sizeof(uint64));
		sc->dsn = MemoryContextStrdup(TopMemoryContext, dsn);
	}
	else if (strcmp(sc->dsn, dsn) != 0)
		elog(ERROR, "tenant_router: connection cache key collision");
	strlcpy(sc->label, shard_id, sizeof(sc->label));

	/*
	 * A connection idle since before a shard restart is dead: notice it now.
	 * The shard's goodbye message and the end of the stream may arrive in
	 * separate reads, hence two.
	 */
	if (sc->conn != NULL && sc->xact_state == REMOTE_XACT_NONE && sc->claim == NULL &&
		ShardConnSocketHasInput(sc->conn) &&
		(PQconsumeInput(sc->conn) == 0 || PQconsumeInput(sc->conn) == 0 ||
		 PQstatus(sc->conn) != CONNECTION_OK))
		ShardConnDisconnect(sc);
	return sc;
}

/*
 * ShardConnGet returns the connection for the shard, connecting if needed.
 * A connection found dead before it is used in a transaction is reconnected
 * silently; one that dies inside a remote transaction fails that transaction.
 */
ShardConn *
ShardConnGet(const char *shard_id, const char *dsn)
{
	ShardConn  *sc = get_conn(shard_id, dsn, false);

	RemoteXactCheck(sc);
	if (sc->conn == NULL)
	{
		if (sc->xact_state != REMOTE_XACT_NONE)
			ShardConnLost(sc);
		sc_connect(sc);
	}
	return sc;
}

/*
 * ShardConnGetSide returns a second connection to the shard, used only for
 * statements that commit on their own (SHARD_AUTOCOMMIT) while the first one
 * holds the shard's remote transaction (shard_split needs both).
 */
ShardConn *
ShardConnGetSide(const char *shard_id, const char *dsn)
{
	ShardConn  *sc = get_conn(shard_id, dsn, true);

	RemoteXactCheck(sc);
	if (sc->conn == NULL)
		sc_connect(sc);
	return sc;
}

/*
 * ShardConnBackendPid returns the process id of the connection's session on
 * the shard (0 when not connected): a new value means a new session.
 */
int
ShardConnBackendPid(ShardConn *sc)
{
	return sc->conn != NULL ? PQbackendPID(sc->conn) : 0;
}

/* ShardConnLabel returns the shard the connection was last requested for. */
const char *
ShardConnLabel(ShardConn *sc)
{
	return sc->label;
}

/*
 * ShardConnForEach calls fn for every connection of the cache; fn may raise
 * an error (the connections are listed before the first call).
 */
void
ShardConnForEach(void (*fn) (ShardConn *sc, void *arg), void *arg)
{
	HASH_SEQ_STATUS status;
	ShardConn  *sc;
	List	   *all = NIL;
	ListCell   *lc;

	if (ConnHash == NULL)
		return;
	hash_seq_init(&status, ConnHash);
	while ((sc = hash_seq_search(&status)) != NULL)
		all = lappend(all, sc);
	foreach(lc, all)
		fn(lfirst(lc), arg);
	list_free(all);
}
