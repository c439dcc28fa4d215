/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The topology worker: a background worker that keeps the catalog of
 *	  tenant_router.database in step with the control plane on Redis.
 *
 * It follows the one order of topology changes kept on Redis (order.c):
 * it joins the log after every (re)connection (seeding an empty Redis,
 * adopting the snapshot of a log it does not follow), puts the events that
 * were only PUBLISHed on tenant_router.topology_channel in the order, and
 * applies the log's entries in order (events.c), when a message comes, when
 * a backend that orders a change waits for it, and every 5 s (an entry a
 * control plane appended without publishing it); it keeps the snapshot; it
 * publishes the events of this coordinator's SQL changes left in the
 * outbox; it finishes shard splits (shard_cleanup(), unless
 * tenant_router.auto_cleanup is off); and it resolves prepared
 * transactions left in doubt on the shards.  Its loop is pg_cron's:
 * interrupts, invalidations, a reload on SIGHUP (reconnecting if the Redis
 * settings changed), then named steps -- ensure_redis, drain_channel,
 * catch_up, publish_outbox, cleanups_if_due, recover_if_due -- then a wait
 * on its latch and the Redis socket together (exiting if the postmaster
 * died; not waiting while messages or entries are left for the next pass),
 * and the loop's memory reset every pass.
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
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/guc.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/order.h"
#include "tenant_router/outbox.h"
#include "tenant_router/publish.h"
#include "tenant_router/redis.h"
#include "tenant_router/topology.h"
#include "tenant_router/topology_log.h"
#include "tenant_router/worker.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define IDLE_WAIT_MS 10000
#define CLEANUP_EVERY_MS 10000
/* how often prepared transactions left in doubt are looked for */
#define RECOVER_EVERY_MS 10000
/* how often the worker reads the log with no message to prompt it */
#define CATCH_UP_EVERY_MS 5000
/* channel messages handled, and log entries applied, in one pass at most */
#define MESSAGE_BATCH 1000
#define APPLY_PER_PASS 1000

/*
 * WorkerRegister registers one of the extension's static background workers
 * (connected to a database, restarted 5 s after it exits).
 */
void
WorkerRegister(const char *function_name, const char *name)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "tenant_router");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "%s", function_name);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "%s", name);
	RegisterBackgroundWorker(&bgw);
}

/* WorkerInit registers the worker; called from _PG_init. */
void
WorkerInit(void)
{
	WorkerRegister("TenantRouterWorkerMain", "tenant_router topology worker");
}

static void
worker_exit(int code, Datum arg)
{
	OutboxSetConsumer(NULL);
	RedisDisconnect();
}

/*
 * WorkerStartTransaction starts a transaction of the worker, with the
 * current time as its statement's start: now() in it is the time it
 * started, not the time the worker did.
 */
void
WorkerStartTransaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
}

/*
 * A transaction ends in TopMemoryContext: each function below that runs one
 * returns to its caller's context, so that what the loop allocates next is
 * reset with the loop's context instead of piling up.
 */

/*
 * extension_ready tells whether the extension exists in the worker's
 * database at this library's catalog version; *old_version receives the
 * version of a catalog that exists but awaits ALTER EXTENSION UPDATE (the
 * worker would fail on every pass there: it waits instead, and the events
 * wait in the stream).
 */
static bool
extension_ready(char **old_version)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		ready;
	char	   *version = NULL;

	*old_version = NULL;
	WorkerStartTransaction();
	ready = OidIsValid(get_namespace_oid("tenant_router", true)) &&
		OidIsValid(get_relname_relid("worker_state", get_namespace_oid("tenant_router", true)));
	if (ready)
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension "
						"WHERE extname = 'tenant_router'", true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
			version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		ready = version != NULL && strcmp(version, TENANT_ROUTER_CATALOG_VERSION) == 0;
		if (version != NULL && !ready)
			*old_version = MemoryContextStrdup(cxt, version);
		SPI_finish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return ready;
}

/*
 * try_in_transaction runs fn(arg) in a transaction of its own and tells
 * whether it committed; an error is rolled back and logged as the failure
 * of what, to be retried on a later pass.
 */
static bool
try_in_transaction(void (*fn) (void *arg), void *arg, const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		ok = true;

	WorkerStartTransaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		fn(arg);
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
				(errmsg("tenant_router: %s failed, will retry: %s", what, edata->message)));
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return ok;
}

static void
recover_in_doubt(void *arg)
{
	(void) RemoteXactRecover();
}

/*
 * recover_prepared resolves the prepared transactions left in doubt on the
 * shards (remote_xact.c), in a transaction of its own.
 */
static void
recover_prepared(void)
{
	(void) try_in_transaction(recover_in_doubt, NULL, "recovery of prepared transactions");
}

/* a shard to clean up after its split, and the rows deleted there */
typedef struct Cleanup
{
	const char *shard_id;
	int64		deleted;
} Cleanup;

static void
cleanup_shard(void *arg)
{
	Cleanup    *cleanup = arg;

	cleanup->deleted = TopologyCleanupShard(cleanup->shard_id);
}

/* run_cleanups finishes the shard splits waiting for their cleanup */
static void
run_cleanups(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *shards = NIL;
	ListCell   *lc;
	uint64		i;

	WorkerStartTransaction();
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
		Cleanup		cleanup = {lfirst(lc), 0};

		if (try_in_transaction(cleanup_shard, &cleanup,
							   psprintf("cleanup of shard \"%s\"", cleanup.shard_id)))
			ereport(LOG,
					(errmsg("tenant_router: cleaned up shard \"%s\" after its split: " INT64_FORMAT " rows deleted",
							cleanup.shard_id, cleanup.deleted)));
	}
}

static bool
outbox_pending(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		pending;

	WorkerStartTransaction();
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

/*
 * The loop's state: what the steps below share from one pass to the next.
 * Times are those of the pass (now); why is the last Redis failure, in the
 * loop's memory.
 */
static struct
{
	TimestampTz now;
	char	   *redis_settings;	/* host, port, db, password, channel */
	bool		readable;		/* the Redis socket was readable */
	bool		catch_up_now;	/* messages came, or entries are left to apply */
	bool		waiting_logged; /* said that the extension is missing */
	bool		outage_logged;	/* said that Redis is unreachable */
	TimestampTz outage_since;
	int			attempts;		/* to connect, since the outage began */
	int			backoff_ms;
	TimestampTz next_attempt;
	TimestampTz next_catch_up;
	TimestampTz next_cleanup;
	TimestampTz next_recover;
	char	   *why;
} loop;

/* redis_settings returns what a change of needs a reconnection */
static char *
redis_settings(void)
{
	return psprintf("%s:%d/%d %s %s", TenantRouterRedisHost, TenantRouterRedisPort,
					TenantRouterRedisDb, TenantRouterRedisPassword,
					TenantRouterTopologyChannel);
}

/* reload_settings rereads the configuration; new Redis settings reconnect */
static void
reload_settings(void)
{
	char	   *settings;

	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	settings = redis_settings();
	if (strcmp(settings, loop.redis_settings) != 0)
	{
		RedisDisconnect();
		pfree(loop.redis_settings);
		loop.redis_settings = MemoryContextStrdup(TopMemoryContext, settings);
		loop.readable = false;
		loop.next_attempt = 0;
		loop.backoff_ms = BACKOFF_MIN_MS;
	}
	pfree(settings);
}

/* extension_found tells whether there is work: the extension exists */
static bool
extension_found(void)
{
	char	   *old_version;
	bool		ready = extension_ready(&old_version);

	if (!ready && !loop.waiting_logged && old_version != NULL)
		ereport(LOG,
				(errmsg("tenant_router: waiting for ALTER EXTENSION tenant_router UPDATE in database \"%s\"",
						TenantRouterDatabase),
				 errdetail("The catalog is at version %s; this library needs version %s.",
						   old_version, TENANT_ROUTER_CATALOG_VERSION)));
	else if (!ready && !loop.waiting_logged)
		ereport(LOG,
				(errmsg("tenant_router: waiting for CREATE EXTENSION tenant_router in database \"%s\"",
						TenantRouterDatabase)));
	else if (ready && loop.waiting_logged)
		ereport(LOG, (errmsg("tenant_router: extension found in database \"%s\"",
							 TenantRouterDatabase)));
	loop.waiting_logged = !ready;
	return ready;
}

/*
 * ensure_redis tells whether the worker is connected to Redis, connecting
 * (and catching up with the stream) when the backoff allows.
 */
static bool
ensure_redis(void)
{
	if (TenantRouterRedisHost[0] == '\0')
		return false;
	if (RedisConnected() || loop.now < loop.next_attempt)
		return RedisConnected();

	loop.attempts++;
	if (RedisConnect(&loop.why) && OrderJoin(&loop.why))
	{
		if (loop.outage_logged)
			ereport(LOG,
					(errmsg("tenant_router: connected to Redis at %s:%d again after %d attempts in %ld s",
							TenantRouterRedisHost, TenantRouterRedisPort, loop.attempts,
							(long) ((loop.now - loop.outage_since) / USECS_PER_SEC))));
		else
			ereport(LOG,
					(errmsg("tenant_router: subscribed to channel \"%s\" on Redis at %s:%d",
							TenantRouterTopologyChannel, TenantRouterRedisHost,
							TenantRouterRedisPort)));
		loop.outage_logged = false;
		loop.attempts = 0;
		loop.backoff_ms = BACKOFF_MIN_MS;
		loop.readable = false;
		loop.catch_up_now = true;
		loop.next_catch_up = TimestampTzPlusMilliseconds(loop.now, CATCH_UP_EVERY_MS);
		return true;
	}

	RedisDisconnect();
	if (!loop.outage_logged)
	{
		ereport(LOG,
				(errmsg("tenant_router: Redis at %s:%d is unreachable (%s); retrying with backoff",
						TenantRouterRedisHost, TenantRouterRedisPort, loop.why)));
		loop.outage_since = loop.now;
		loop.outage_logged = true;
	}
	loop.next_attempt = TimestampTzPlusMilliseconds(loop.now, loop.backoff_ms);
	loop.backoff_ms = Min(loop.backoff_ms * 2, BACKOFF_MAX_MS);
	return false;
}

/* redis_lost drops the connection that failed; ensure_redis reconnects */
static void
redis_lost(void)
{
	RedisDisconnect();
	ereport(LOG,
			(errmsg("tenant_router: lost Redis at %s:%d (%s); retrying with backoff",
					TenantRouterRedisHost, TenantRouterRedisPort, loop.why)));
	loop.outage_logged = true;
	loop.outage_since = loop.now;
	loop.attempts = 0;
	loop.next_attempt = TimestampTzPlusMilliseconds(loop.now, BACKOFF_MIN_MS);
	loop.backoff_ms = BACKOFF_MIN_MS * 2;
}

/*
 * drain_channel puts the channel messages that have arrived (a pass's worth)
 * in the order, unless they are copies of entries
 */
static bool
drain_channel(void)
{
	List	   *messages = NIL;

	if (!RedisReadMessages(loop.readable, MESSAGE_BATCH, &messages, &loop.why))
		return false;
	if (messages != NIL)
		loop.catch_up_now = true;
	return OrderMessages(messages, &loop.why);
}

/*
 * catch_up applies the log's entries after the catalog's position (a pass's
 * worth) when messages came, when a backend asks, and every
 * CATCH_UP_EVERY_MS; then and after applying, it keeps the snapshot.
 */
static bool
catch_up(void)
{
	bool		requested = TopologyLogTakeCatchUpRequest();
	bool		due = loop.now >= loop.next_catch_up;
	bool		more = false;

	if (!loop.catch_up_now && !requested && !due)
		return true;
	if (due)
		loop.next_catch_up = TimestampTzPlusMilliseconds(loop.now, CATCH_UP_EVERY_MS);
	if ((requested || due) && !OrderKeepSnapshot(loop.now, true, &loop.why))
		return false;
	if (!OrderCatchUp(APPLY_PER_PASS, &more, &loop.why))
		return false;
	loop.catch_up_now = more;
	return OrderKeepSnapshot(GetCurrentTimestamp(), false, &loop.why);
}

/* publish_outbox publishes this coordinator's committed SQL changes */
static bool
publish_outbox(void)
{
	return !outbox_pending() || OutboxPublish(&loop.why) >= 0;
}

/* cleanups_if_due finishes splits every CLEANUP_EVERY_MS */
static void
cleanups_if_due(void)
{
	if (!TenantRouterAutoCleanup || loop.now < loop.next_cleanup)
		return;
	run_cleanups();
	loop.next_cleanup = TimestampTzPlusMilliseconds(loop.now, CLEANUP_EVERY_MS);
}

/* recover_if_due resolves prepared transactions in doubt every RECOVER_EVERY_MS */
static void
recover_if_due(void)
{
	if (loop.now < loop.next_recover)
		return;
	recover_prepared();
	loop.next_recover = TimestampTzPlusMilliseconds(loop.now, RECOVER_EVERY_MS);
}

/*
 * wait_for_work sleeps until the latch is set (a setting reloaded, the
 * outbox filled), the Redis socket is readable, or the next step is due.
 */
static void
wait_for_work(bool ready)
{
	int			events = WL_LATCH_SET | WL_TIMEOUT | WL_POSTMASTER_DEATH;
	long		timeout = IDLE_WAIT_MS;
	long		stats_ms;
	int			rc;

	/* the tables the worker writes get vacuumed only if it reports them */
	stats_ms = pgstat_report_stat(false);
	if (stats_ms > 0)
		timeout = Min(timeout, stats_ms);

	if (!ready)
		timeout = Min(timeout, 1000);
	else if (RedisConnected())
	{
		events |= WL_SOCKET_READABLE;
		timeout = Min(timeout, TimestampDifferenceMilliseconds(loop.now, loop.next_catch_up));
		/* what is left for the next pass does not wait */
		if (loop.catch_up_now || RedisMessagesBuffered())
			timeout = 0;
	}
	else if (TenantRouterRedisHost[0] != '\0')
		timeout = Min(timeout, TimestampDifferenceMilliseconds(loop.now, loop.next_attempt));

	rc = WaitLatchOrSocket(MyLatch, events, RedisSocket(), Max(timeout, 0), PG_WAIT_EXTENSION);
	if (rc & WL_POSTMASTER_DEATH)
		proc_exit(1);
	ResetLatch(MyLatch);
	loop.readable = (rc & WL_SOCKET_READABLE) != 0;
}

/*
 * TenantRouterWorkerMain is the worker: pg_cron's loop of interrupts,
 * invalidations, reload, named steps, wait, and a reset of the loop's
 * memory.
 */
void
TenantRouterWorkerMain(Datum main_arg)
{
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(TenantRouterDatabase, NULL, 0);
	pgstat_report_appname("tenant_router topology worker");

	OutboxSetConsumer(MyLatch);
	before_shmem_exit(worker_exit, (Datum) 0);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "tenant_router worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	loop.redis_settings = MemoryContextStrdup(TopMemoryContext, redis_settings());
	loop.backoff_ms = BACKOFF_MIN_MS;

	for (;;)
	{
		bool		ready;

		CHECK_FOR_INTERRUPTS();
		AcceptInvalidationMessages();
		if (ConfigReloadPending)
			reload_settings();
		MemoryContextSwitchTo(loop_cxt);
		loop.now = GetCurrentTimestamp();

		ready = extension_found();
		if (ready)
		{
			if (ensure_redis() &&
				!(drain_channel() && catch_up() && publish_outbox()))
				redis_lost();
			cleanups_if_due();
			recover_if_due();
		}

		wait_for_work(ready);
		MemoryContextReset(loop_cxt);
	}
}
