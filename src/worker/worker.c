/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The topology worker: a background worker that keeps the catalog of
 *	  tenant_router.database in step with the control plane on Redis.
 *
 * It subscribes to tenant_router.topology_channel and applies the events
 * published there (events.c); it reads the stream "<channel>:log" from the
 * last entry it applied, after every (re)connection, before each channel
 * message and every 5 s, so that events published while it was away, and
 * entries a publisher appended to the stream but never published, are not
 * lost; it publishes the events of this coordinator's SQL changes from the
 * outbox; and it finishes shard splits (shard_cleanup(), unless
 * tenant_router.auto_cleanup is off).  Its loop waits on its latch and the
 * Redis socket together, as pg_cron's does: interrupts, then a reload on
 * SIGHUP (reconnecting if the Redis settings changed), then the work, then
 * the wait, the loop's memory reset every pass.
 *
 * Redis being down stops nothing but the worker's own work: routing goes on
 * from the catalog.  The worker retries with backoff (100 ms doubling to
 * 10 s), logging once when an outage starts and once when it ends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tenant_router/connection.h"
#include "tenant_router/events.h"
#include "tenant_router/guc.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/outbox.h"
#include "tenant_router/publish.h"
#include "tenant_router/redis.h"
#include "tenant_router/topology.h"
#include "tenant_router/worker.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define IDLE_WAIT_MS 10000
#define CLEANUP_EVERY_MS 10000
/* how often prepared transactions left in doubt are looked for */
#define RECOVER_EVERY_MS 10000
#define STREAM_BATCH 100
/* how often the worker reads the stream with no channel message to prompt it */
#define CATCH_UP_EVERY_MS 5000
/* stream entries remembered, so that their channel copies are not applied twice */
#define STREAM_QUEUE_SIZE 65536

/*
 * The hashes of the events applied from the stream whose channel copies
 * have not come yet, oldest first: a ring of STREAM_QUEUE_SIZE, the oldest
 * dropped when it is full.  The channel delivers in stream order, so a
 * channel message is the copy of the first entry that matches it, and the
 * entries before that one will get no copy (appended but never published,
 * or published while the subscription was down).
 */
static uint64 stream_queue[STREAM_QUEUE_SIZE];
static int	stream_queue_head = 0;
static int	stream_queue_len = 0;

/* WorkerInit registers the worker; called from _PG_init. */
void
WorkerInit(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "tenant_router");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "TenantRouterWorkerMain");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "tenant_router topology worker");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "tenant_router topology worker");
	RegisterBackgroundWorker(&bgw);
}

static void
worker_exit(int code, Datum arg)
{
	OutboxSetConsumer(NULL);
	RedisDisconnect();
}

static uint64
event_hash(const char *event)
{
	return hash_bytes_extended((const unsigned char *) event, strlen(event), 0);
}

/* remember_stream_event queues an event applied from the stream */
static void
remember_stream_event(const char *event)
{
	if (stream_queue_len == STREAM_QUEUE_SIZE)
	{
		stream_queue_head = (stream_queue_head + 1) % STREAM_QUEUE_SIZE;
		stream_queue_len--;
	}
	stream_queue[(stream_queue_head + stream_queue_len) % STREAM_QUEUE_SIZE] = event_hash(event);
	stream_queue_len++;
}

/*
 * forget_stream_event tells whether a channel message is the copy of an
 * event applied from the stream; if so it drops that entry and the older
 * ones, whose copies will not come.
 */
static bool
forget_stream_event(const char *event)
{
	uint64		h = event_hash(event);
	int			i;

	for (i = 0; i < stream_queue_len; i++)
	{
		if (stream_queue[(stream_queue_head + i) % STREAM_QUEUE_SIZE] == h)
		{
			stream_queue_head = (stream_queue_head + i + 1) % STREAM_QUEUE_SIZE;
			stream_queue_len -= i + 1;
			return true;
		}
	}
	return false;
}

/*
 * A transaction ends in TopMemoryContext: each function below that runs one
 * returns to its caller's context, so that what the loop allocates next is
 * reset with the loop's context instead of piling up.
 */

/* extension_ready tells whether the extension exists in the worker's database */
static bool
extension_ready(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		ready;

	StartTransactionCommand();
	ready = OidIsValid(get_namespace_oid("tenant_router", true)) &&
		OidIsValid(get_relname_relid("worker_state", get_namespace_oid("tenant_router", true)));
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return ready;
}

/* stream_position returns the last stream entry applied from key */
static char *
stream_position(const char *key, MemoryContext cxt)
{
	char	   *id = "0-0";

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (SPI_execute("SELECT stream_key, stream_id FROM tenant_router.worker_state", true, 1) ==
		SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *stored_key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		/* another channel's stream: start from its beginning */
		if (stored_key != NULL && strcmp(stored_key, key) == 0)
			id = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 2));
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return id;
}

/*
 * catch_up applies the stream's entries after the last one applied; false
 * if Redis failed.  After a (re)connection it first says whether entries
 * the worker never read were trimmed away.
 */
static bool
catch_up(bool after_connect, char **why)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *key = RedisStreamKey();
	char	   *last = stream_position(key, cxt);

	/*
	 * A new subscription gets no copy of an event published before it, and
	 * every event published since is still in the stream, after last.
	 */
	if (after_connect)
		stream_queue_len = 0;
	if (after_connect && strcmp(last, "0-0") != 0)
	{
		bool		trimmed;

		if (!RedisStreamTrimmedAfter(key, last, &trimmed, why))
			return false;
		if (trimmed)
			ereport(WARNING,
					(errmsg("tenant_router: stream \"%s\" lost entries after %s, the last one applied",
							key, last),
					 errdetail("Topology events published while the worker was away may have been missed."),
					 errhint("Compare tenant_router.shards with the control plane's topology.")));
	}
	for (;;)
	{
		List	   *entries = NIL;
		ListCell   *lc;

		if (!RedisStreamRead(key, last, STREAM_BATCH, &entries, why))
			return false;
		foreach(lc, entries)
		{
			RedisStreamEntry *e = lfirst(lc);

			MemoryContextSwitchTo(cxt);
			ApplyTopologyEvent(e->event, EVENT_FROM_STREAM, e->id);
			if (e->event != NULL)
				remember_stream_event(e->event);
			last = e->id;
		}
		MemoryContextSwitchTo(cxt);
		if (list_length(entries) < STREAM_BATCH)
			return true;
	}
}

/*
 * handle_message applies a channel message, unless the stream, read first,
 * already had it.
 */
static bool
handle_message(const char *payload, char **why)
{
	if (!catch_up(false, why))
		return false;
	if (forget_stream_event(payload))
		return true;
	ApplyTopologyEvent(payload, EVENT_FROM_CHANNEL, NULL);
	return true;
}

/*
 * recover_prepared resolves the prepared transactions left in doubt on the
 * shards (remote_xact.c), in a transaction of its own.
 */
static void
recover_prepared(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		(void) RemoteXactRecover();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("tenant_router: recovery of prepared transactions failed, will retry: %s",
						edata->message)));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}

/* run_cleanups finishes the shard splits waiting for their cleanup */
static void
run_cleanups(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *shards = NIL;
	ListCell   *lc;
	uint64		i;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	/* online operations whose worker is gone (a crash): roll them back */
	OperationRecover();
	if (SPI_execute("SELECT shard_id FROM tenant_router.pending_cleanup ORDER BY since", true, 0) ==
		SPI_OK_SELECT)
	{
		/* the list outlives SPI's memory */
		MemoryContext spi_cxt = MemoryContextSwitchTo(cxt);

		for (i = 0; i < SPI_processed; i++)
			shards = lappend(shards, pstrdup(SPI_getvalue(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1)));
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	foreach(lc, shards)
	{
		const char *shard_id = lfirst(lc);

		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		PG_TRY();
		{
			int64		deleted = TopologyCleanupShard(shard_id);

			PopActiveSnapshot();
			CommitTransactionCommand();
			ereport(LOG,
					(errmsg("tenant_router: cleaned up shard \"%s\" after its split: " INT64_FORMAT " rows deleted",
							shard_id, deleted)));
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			ereport(LOG,
					(errmsg("tenant_router: cleanup of shard \"%s\" failed, will retry: %s",
							shard_id, edata->message)));
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
	}
}

static bool
outbox_pending(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		pending;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	pending = SPI_execute("SELECT 1 FROM tenant_router.outbox LIMIT 1", true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return pending;
}

void
TenantRouterWorkerMain(Datum main_arg)
{
	MemoryContext loop_cxt;
	char	   *redis_settings = NULL;
	bool		readable = false;
	bool		outage_logged = false;
	bool		waiting_logged = false;
	int			backoff_ms = BACKOFF_MIN_MS;
	int			attempts = 0;
	TimestampTz next_attempt = 0;
	TimestampTz next_cleanup = 0;
	TimestampTz next_recover = 0;
	TimestampTz next_catch_up = 0;
	TimestampTz outage_since = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(TenantRouterDatabase, NULL, 0);
	pgstat_report_appname("tenant_router topology worker");

	OutboxSetConsumer(MyLatch);
	before_shmem_exit(worker_exit, (Datum) 0);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "tenant_router worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	redis_settings = MemoryContextStrdup(TopMemoryContext, "");

	for (;;)
	{
		long		timeout = IDLE_WAIT_MS;
		int			events = WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH;
		char	   *why = NULL;
		char	   *settings;
		TimestampTz now;
		int			rc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(loop_cxt);
		now = GetCurrentTimestamp();

		/* new Redis settings: reconnect with them */
		settings = psprintf("%s:%d/%d %s %s", TenantRouterRedisHost, TenantRouterRedisPort,
							TenantRouterRedisDb, TenantRouterRedisPassword,
							TenantRouterTopologyChannel);
		if (strcmp(settings, redis_settings) != 0)
		{
			RedisDisconnect();
			pfree(redis_settings);
			redis_settings = MemoryContextStrdup(TopMemoryContext, settings);
			readable = false;
			next_attempt = 0;
			backoff_ms = BACKOFF_MIN_MS;
		}

		if (!extension_ready())
		{
			if (!waiting_logged)
				ereport(LOG,
						(errmsg("tenant_router: waiting for CREATE EXTENSION tenant_router in database \"%s\"",
								TenantRouterDatabase)));
			waiting_logged = true;
			timeout = 1000;
			goto wait;
		}
		if (waiting_logged)
			ereport(LOG, (errmsg("tenant_router: extension found in database \"%s\"",
								 TenantRouterDatabase)));
		waiting_logged = false;

		if (TenantRouterRedisHost[0] != '\0')
		{
			if (!RedisConnected() && now >= next_attempt)
			{
				attempts++;
				if (RedisConnect(&why) && catch_up(true, &why))
				{
					if (outage_logged)
						ereport(LOG,
								(errmsg("tenant_router: connected to Redis at %s:%d again after %d attempts in %ld s",
										TenantRouterRedisHost, TenantRouterRedisPort, attempts,
										(long) ((now - outage_since) / USECS_PER_SEC))));
					else
						ereport(LOG,
								(errmsg("tenant_router: subscribed to channel \"%s\" on Redis at %s:%d",
										TenantRouterTopologyChannel, TenantRouterRedisHost,
										TenantRouterRedisPort)));
					outage_logged = false;
					attempts = 0;
					backoff_ms = BACKOFF_MIN_MS;
					readable = false;
					next_catch_up = TimestampTzPlusMilliseconds(now, CATCH_UP_EVERY_MS);
				}
				else
				{
					RedisDisconnect();
					if (!outage_logged)
						ereport(LOG,
								(errmsg("tenant_router: Redis at %s:%d is unreachable (%s); retrying with backoff",
										TenantRouterRedisHost, TenantRouterRedisPort, why)));
					if (!outage_logged)
						outage_since = now;
					outage_logged = true;
					next_attempt = TimestampTzPlusMilliseconds(now, backoff_ms);
					backoff_ms = Min(backoff_ms * 2, BACKOFF_MAX_MS);
				}
			}

			if (RedisConnected())
			{
				List	   *payloads = NIL;
				ListCell   *lc;
				bool		ok = RedisReadMessages(readable, &payloads, &why);

				foreach(lc, payloads)
					ok = ok && handle_message(lfirst(lc), &why);
				/* entries appended to the stream but never published */
				if (ok && now >= next_catch_up)
				{
					ok = catch_up(false, &why);
					next_catch_up = TimestampTzPlusMilliseconds(now, CATCH_UP_EVERY_MS);
				}
				if (ok && outbox_pending())
					ok = OutboxPublish(&why) >= 0;
				if (!ok)
				{
					RedisDisconnect();
					ereport(LOG,
							(errmsg("tenant_router: lost Redis at %s:%d (%s); retrying with backoff",
									TenantRouterRedisHost, TenantRouterRedisPort, why)));
					outage_logged = true;
					outage_since = now;
					attempts = 0;
					next_attempt = TimestampTzPlusMilliseconds(now, BACKOFF_MIN_MS);
					backoff_ms = BACKOFF_MIN_MS * 2;
				}
			}
			if (!RedisConnected())
				timeout = Max(1, TimestampDifferenceMilliseconds(now, next_attempt));
			else
				timeout = Max(1, Min(timeout, TimestampDifferenceMilliseconds(now, next_catch_up)));
		}

		if (TenantRouterAutoCleanup && now >= next_cleanup)
		{
			run_cleanups();
			next_cleanup = TimestampTzPlusMilliseconds(now, CLEANUP_EVERY_MS);
		}

		if (now >= next_recover)
		{
			recover_prepared();
			next_recover = TimestampTzPlusMilliseconds(now, RECOVER_EVERY_MS);
		}

wait:
		if (RedisConnected())
			events |= WL_SOCKET_READABLE;
		rc = WaitLatchOrSocket(MyLatch, events, RedisSocket(), timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		readable = (rc & WL_SOCKET_READABLE) != 0;
		MemoryContextReset(loop_cxt);
	}
}
