/*-------------------------------------------------------------------------
 *
 * remote_cancel.c
 *	  Stopping what a shard connection is doing after an error: a cancel
 *	  request with a deadline, bounded waits that give up when the session
 *	  is cancelled or terminated again, and the second phase of a commit
 *	  sent to several shards without raising errors.
 *
 * Every wait here is bounded: it runs while interrupts are held (during
 * the abort of a transaction), when nothing else could end it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "connection_internal.h"

/* how often a bounded wait looks at a cancel request in flight */
#define CANCEL_POLL_MS 10
/* a shard whose postmaster has not handled a cancel request by then is given up */
#define CANCEL_TIMEOUT_MS 5000

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
 * RemoteSendCancel asks the shard to cancel the command in flight and waits
 * until the request was handled or the deadline; false if it was not
 * handled in time (the connection should then be given up).
 */
bool
RemoteSendCancel(ShardConn *sc, TimestampTz deadline)
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

			/*
			 * Past the deadline, what has already arrived is still read (it
			 * never blocks): an answer that came while another connection
			 * of the same wait was waited for is not given up.
			 */
			if (abandon_wait(deadline))
			{
				if (!PQconsumeInput(sc->conn) || PQisBusy(sc->conn))
					return false;
				break;
			}
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
		if (PQresultStatus(res) == PGRES_COPY_IN)
		{
			/* a COPY FROM that was never fed: end it as failed */
			PQclear(res);
			if (PQputCopyEnd(sc->conn, "cancelled by the coordinator") != 1 ||
				PQflush(sc->conn) != 0)
				return false;
			*failed = true;
			continue;
		}
		if (PQresultStatus(res) == PGRES_COPY_OUT)
		{
			/* a COPY TO whose rows nobody wants: read them to its end */
			char	   *buf;
			int			len;

			PQclear(res);
			while ((len = PQgetCopyData(sc->conn, &buf, 1)) != -1)
			{
				if (len == -2 || abandon_wait(deadline))
					return false;
				if (len > 0)
					PQfreemem(buf);
				else if (WaitLatchOrSocket(MyLatch,
										   WL_LATCH_SET | WL_SOCKET_READABLE |
										   WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
										   PQsocket(sc->conn), CANCEL_POLL_MS,
										   PG_WAIT_EXTENSION) & WL_LATCH_SET)
					ResetLatch(MyLatch);
				else if (!PQconsumeInput(sc->conn))
					return false;
			}
			continue;
		}
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
	if (sc->cmd.active)
		RemoteForgetUnconfirmed(sc);
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

		/* a shard whose postmaster does not answer a cancel soon is hung */
		TimestampTz cancel_deadline =
			Min(deadline, TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  CANCEL_TIMEOUT_MS));

		if (!RemoteSendCancel(sc, cancel_deadline) || !wait_idle(sc, deadline, &failed))
			return false;
	}
	if (PQisnonblocking(sc->conn) && PQsetnonblocking(sc->conn, 0) != 0)
		return false;
	RemoteEndCommand(sc);
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
