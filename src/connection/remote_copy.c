/*-------------------------------------------------------------------------
 *
 * remote_copy.c
 *	  COPY ... FROM STDIN on a shard connection: started after the queued
 *	  commands, fed without blocking (a full socket waits on the latch,
 *	  interruptibly), ended with the shard's row count or error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"

#include "connection_internal.h"

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
		RemoteDeadlockCheck();
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
	sc->xact_statements++;
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
		RemoteFreeQueued(lfirst(lc));
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

/*
 * flush_copy sends what libpq holds for the shard, waiting (interruptibly)
 * while the socket is full and reading what the shard sends meanwhile (so
 * that neither side waits on the other): a slow shard slows the COPY
 * instead of piling its data up in this backend's memory.
 */
static void
flush_copy(ShardConn *sc)
{
	int			rc;

	while ((rc = PQflush(sc->conn)) == 1)
	{
		int			events = WaitLatchOrSocket(MyLatch,
											   WL_LATCH_SET | WL_SOCKET_WRITEABLE |
											   WL_SOCKET_READABLE | WL_EXIT_ON_PM_DEATH,
											   PQsocket(sc->conn), -1, PG_WAIT_EXTENSION);

		if (events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			RemoteDeadlockCheck();
		}
		if ((events & WL_SOCKET_READABLE) && !PQconsumeInput(sc->conn))
			ShardConnLost(sc);
	}
	if (rc < 0)
		ShardConnLost(sc);
}

/* ShardCopyPut sends COPY data, waiting (interruptibly) while the socket is full. */
void
ShardCopyPut(ShardConn *sc, const char *data, int len)
{
	for (;;)
	{
		int			rc = PQputCopyData(sc->conn, data, len);

		if (rc == 1)
			break;
		if (rc < 0)
			ShardConnLost(sc);
		wait_writeable(sc);
	}
	flush_copy(sc);
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

	while ((rc = PQputCopyEnd(sc->conn, NULL)) == 0)
		wait_writeable(sc);
	if (rc < 0)
		ShardConnLost(sc);
	flush_copy(sc);
	if (PQsetnonblocking(sc->conn, 0) != 0)
		ShardConnLost(sc);
	sc->copying = false;
	res = RemoteGetResult(sc);
	if (res == NULL)
		ShardConnLost(sc);
	while ((next = RemoteGetResult(sc)) != NULL)
		PQclear(next);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && RemoteTenantMoved(res, true))
		ShardConnReportMoved(sc, res,
							 "A topology operation moved the tenant of one of the rows; a COPY is not sent again to the new shard, its rows were streamed.");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		RemoteReport(sc, res, sql);
	rows = strtou64(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return rows;
}
