/*-------------------------------------------------------------------------
 *
 * shard_probe.c
 *	  The probe of the shards (run by the health worker every
 *	  tenant_router.probe_interval): "SELECT 1" goes to every shard at once,
 *	  over a connection kept for the probe, and each shard is recorded
 *	  (stats.c) as reachable if it answered within
 *	  tenant_router.probe_timeout, and otherwise as unreachable with the
 *	  reason: a stopped shard fails at once (its connection is refused), a
 *	  hung one (SIGSTOP) by the timeout.  So tenant_router.shard_health shows
 *	  a shard that went away within seconds, even when no statement goes
 *	  there.  A change of a shard's state is logged.
 *
 * Shards with the same DSN share the probe's connection and its outcome.
 * A connection that failed or did not answer in time is closed; the next
 * probe connects anew, within the same bound.  An idle connection that the
 * shard closed since the last probe (a restart) is replaced, not reported.
 *
 * Invariants: a probe waits at most tenant_router.probe_timeout in all,
 * whatever the number of shards; the connections live in TopMemoryContext,
 * each counted as an external file descriptor while open; nothing here
 * raises an error about a shard: every failure is an outcome.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "libpq/libpq-be-fe-helpers.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "connection_internal.h"
#include "tenant_router/catalog.h"
#include "tenant_router/guc.h"
#include "tenant_router/shard_probe.h"
#include "tenant_router/stats.h"

/* the probe's connection to one DSN, and its outcome in the current probe */
typedef struct ProbeConn
{
	uint64		key;			/* hash of the DSN: hash key */
	char	   *dsn;
	PGconn	   *conn;			/* NULL when not connected */
	bool		connecting;		/* a connection attempt is under way */
	bool		wants_write;	/* ... and waits to write */
	bool		querying;		/* SELECT 1 sent, its answer not read yet */
	bool		probed;			/* in the current probe */
	bool		ok;				/* it answered */
	char	   *error;			/* why it did not */
	List	   *shards;			/* the shards probed through it */
	int			was_ok;			/* the previous outcome: -1 none, 0, 1 */
} ProbeConn;

static HTAB *probe_conns = NULL;

static void
probe_disconnect(ProbeConn *pc)
{
	if (pc->conn != NULL)
	{
		libpqsrv_disconnect(pc->conn);
		pc->conn = NULL;
	}
	pc->connecting = false;
	pc->querying = false;
}

/* fail ends the probe of pc with why, and closes its connection */
static void
fail(ProbeConn *pc, const char *why)
{
	if (pc->error == NULL)
		pc->error = pstrdup(why);
	pc->ok = false;
	probe_disconnect(pc);
}

static void
fail_libpq(ProbeConn *pc)
{
	fail(pc, pc->conn ? ShardConnLibpqMessage(pc->conn) : "out of memory");
}

/*
 * probe_list returns the connections to probe for the shards (ShardRow),
 * each with its shards; connections of DSNs no shard has any more are
 * closed.
 */
static List *
probe_list(List *shards)
{
	HASH_SEQ_STATUS status;
	ProbeConn  *pc;
	List	   *probes = NIL;
	ListCell   *lc;

	if (probe_conns == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(ProbeConn);
		ctl.hcxt = TopMemoryContext;
		probe_conns = hash_create("tenant_router probe connections", 8, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	hash_seq_init(&status, probe_conns);
	while ((pc = hash_seq_search(&status)) != NULL)
		pc->probed = false;

	foreach(lc, shards)
	{
		ShardRow   *shard = lfirst(lc);
		uint64		key = hash_bytes_extended((const unsigned char *) shard->dsn,
											  strlen(shard->dsn), 0);
		bool		found;

		pc = hash_search(probe_conns, &key, HASH_ENTER, &found);
		if (!found)
		{
			memset(((char *) pc) + sizeof(uint64), 0, sizeof(ProbeConn) - sizeof(uint64));
			pc->dsn = MemoryContextStrdup(TopMemoryContext, shard->dsn);
			pc->was_ok = -1;
		}
		else if (strcmp(pc->dsn, shard->dsn) != 0)
			elog(ERROR, "tenant_router: probe connection key collision");
		if (!pc->probed)
		{
			pc->probed = true;
			pc->ok = false;
			pc->error = NULL;
			pc->shards = NIL;
			probes = lappend(probes, pc);
		}
		pc->shards = lappend(pc->shards, shard->shard_id);
	}

	hash_seq_init(&status, probe_conns);
	while ((pc = hash_seq_search(&status)) != NULL)
	{
		if (!pc->probed)
		{
			probe_disconnect(pc);
			pfree(pc->dsn);
			(void) hash_search(probe_conns, &pc->key, HASH_REMOVE, NULL);
		}
	}
	return probes;
}

static void
send_probe(ProbeConn *pc)
{
	if (!PQsendQuery(pc->conn, "SELECT 1"))
		fail_libpq(pc);
	else
		pc->querying = true;
}

/* probe_start starts connecting, or sends the probe on the open connection */
static void
probe_start(ProbeConn *pc)
{
	const char *keywords[] = {"fallback_application_name", "dbname", NULL};
	const char *values[] = {"tenant_router probe", pc->dsn, NULL};

	/* a shard says something unasked only when it goes away */
	if (pc->conn != NULL &&
		(ShardConnSocketHasInput(pc->conn) || PQstatus(pc->conn) != CONNECTION_OK))
		probe_disconnect(pc);
	if (pc->conn != NULL)
	{
		send_probe(pc);
		return;
	}
	if (!AcquireExternalFD())
	{
		fail(pc, "there are too many open files on the coordinator");
		return;
	}
	pc->conn = PQconnectStartParams(keywords, values, true);
	if (pc->conn == NULL)
	{
		ReleaseExternalFD();
		fail(pc, "out of memory");
		return;
	}
	if (PQstatus(pc->conn) == CONNECTION_BAD)
	{
		fail_libpq(pc);
		return;
	}
	pc->connecting = true;
	pc->wants_write = true;
}

/* probe_advance goes on with pc after its socket became ready */
static void
probe_advance(ProbeConn *pc)
{
	if (pc->connecting)
	{
		switch (PQconnectPoll(pc->conn))
		{
			case PGRES_POLLING_OK:
				pc->connecting = false;
				send_probe(pc);
				break;
			case PGRES_POLLING_FAILED:
				fail_libpq(pc);
				break;
			case PGRES_POLLING_READING:
				pc->wants_write = false;
				break;
			default:
				pc->wants_write = true;
				break;
		}
		return;
	}
	if (!PQconsumeInput(pc->conn))
	{
		fail_libpq(pc);
		return;
	}
	while (!PQisBusy(pc->conn))
	{
		PGresult   *res = PQgetResult(pc->conn);

		if (res == NULL)
		{
			pc->querying = false;
			pc->ok = pc->error == NULL;
			return;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK && pc->error == NULL)
			pc->error = ShardConnLibpqMessage(pc->conn);
		PQclear(res);
	}
}

/* probe_wait waits until every probe has its outcome, or the deadline */
static void
probe_wait(List *probes, TimestampTz deadline)
{
	for (;;)
	{
		WaitEventSet *set;
		WaitEvent  *events;
		ListCell   *lc;
		long		timeout;
		int			pending = 0;
		int			n;
		int			i;

		foreach(lc, probes)
		{
			ProbeConn  *pc = lfirst(lc);

			if (pc->connecting || pc->querying)
				pending++;
		}
		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (pending == 0 || timeout <= 0)
			return;

		set = CreateWaitEventSet(CurrentMemoryContext, pending + 2);
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		foreach(lc, probes)
		{
			ProbeConn  *pc = lfirst(lc);

			if (pc->connecting || pc->querying)
				AddWaitEventToSet(set, pc->connecting && pc->wants_write ?
								  WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE,
								  PQsocket(pc->conn), NULL, pc);
		}
		events = palloc(sizeof(WaitEvent) * (pending + 2));
		n = WaitEventSetWait(set, timeout, events, pending + 2, PG_WAIT_EXTENSION);
		FreeWaitEventSet(set);
		for (i = 0; i < n; i++)
		{
			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
			else if (events[i].user_data != NULL)
				probe_advance((ProbeConn *) events[i].user_data);
		}
		pfree(events);
	}
}

/* log_change logs a change of the probe's outcome for its shards */
static void
log_change(ProbeConn *pc)
{
	const char *first = linitial(pc->shards);
	int			others = list_length(pc->shards) - 1;

	if (pc->was_ok == (pc->ok ? 1 : 0) || (pc->was_ok == -1 && pc->ok))
		return;
	if (pc->ok)
		ereport(LOG,
				(errmsg("tenant_router: shard \"%s\"%s is reachable again", first,
						others > 0 ? psprintf(" (and %d more with its DSN)", others) : "")));
	else
		ereport(LOG,
				(errmsg("tenant_router: shard \"%s\"%s is unreachable: %s", first,
						others > 0 ? psprintf(" (and %d more with its DSN)", others) : "",
						pc->error)));
}

/*
 * ShardProbeAll probes the shards (a list of ShardRow) and records the
 * outcomes in tenant_router.shard_health; it needs no transaction.
 */
void
ShardProbeAll(List *shards)
{
	TimestampTz deadline;
	List	   *probes;
	ListCell   *lc;

	probes = probe_list(shards);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TenantRouterProbeTimeout);
	foreach(lc, probes)
		probe_start(lfirst(lc));
	probe_wait(probes, deadline);

	foreach(lc, probes)
	{
		ProbeConn  *pc = lfirst(lc);
		ListCell   *sc;

		if (pc->connecting || pc->querying)
			fail(pc, psprintf("%s within %d ms (tenant_router.probe_timeout)",
							  pc->connecting ? "could not connect" : "no answer",
							  TenantRouterProbeTimeout));
		foreach(sc, pc->shards)
		{
			if (pc->ok)
				StatsShardAnswered(lfirst(sc));
			else
				StatsShardFailed(lfirst(sc), pc->error);
		}
		log_change(pc);
		pc->was_ok = pc->ok ? 1 : 0;
	}
}
