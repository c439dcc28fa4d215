/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Queues the topology events of SQL changes for the worker to publish,
 *	  and wakes the worker when they commit.
 *
 * An admin function that changes the topology inserts its event, in the
 * seed's format plus "origin" and "version", into tenant_router.outbox in
 * its own transaction: an event exists exactly when its change committed.
 * At commit the worker is woken, publishes the queued events in order and
 * deletes them (OutboxPublish); while Redis is unreachable they wait in the
 * table.  A crash between publishing and deleting publishes an event twice;
 * receivers ignore the second copy by its origin and version.  Publishing
 * is the worker's (worker/publish.c); the worker's latch is found through
 * the small shared memory area kept here, so that queueing a change needs
 * nothing of the worker's code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"

/* where a backend finds the worker that publishes the outbox */
typedef struct OutboxShared
{
	pid_t		consumer_pid;
	Latch	   *consumer_latch; /* NULL when the worker is not running */
} OutboxShared;

static OutboxShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_registered = false;

static void
outbox_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(OutboxShared)));
}

static void
outbox_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tenant_router outbox", sizeof(OutboxShared), &found);
	if (!found)
		memset(shared, 0, sizeof(OutboxShared));
	LWLockRelease(AddinShmemInitLock);
}

/* OutboxInit reserves the shared memory area; called from _PG_init. */
void
OutboxInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = outbox_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = outbox_shmem_startup;
}

/*
 * OutboxSetConsumer records the process that publishes the outbox (the
 * worker), or that there is none (latch NULL).
 */
void
OutboxSetConsumer(Latch *latch)
{
	shared->consumer_pid = latch ? MyProcPid : 0;
	shared->consumer_latch = latch;
}

/* OutboxWake wakes the worker, e.g. when the outbox has new events. */
void
OutboxWake(void)
{
	Latch	   *latch = shared ? shared->consumer_latch : NULL;

	if (latch != NULL)
		SetLatch(latch);
}

static void
wake_at_commit(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT)
		OutboxWake();
}

/*
 * OriginName returns the name this coordinator puts in the events it
 * publishes: tenant_router.node_name, or else the system identifier.
 */
char *
OriginName(void)
{
	if (TenantRouterNodeName != NULL && TenantRouterNodeName[0] != '\0')
		return pstrdup(TenantRouterNodeName);
	return psprintf(UINT64_FORMAT, GetSystemIdentifier());
}

/*
 * OriginId returns a number for OriginName: what tells this coordinator
 * apart from another of the same topology in the names it leaves on the
 * shards (two-phase gids, shard sessions), a clone with its own node_name
 * included.
 */
uint64
OriginId(void)
{
	/* asked at every remote BEGIN: hashed again only when node_name changes */
	static char cached_for[NAMEDATALEN * 2];
	static bool cached = false;
	static uint64 id;
	const char *setting = TenantRouterNodeName != NULL ? TenantRouterNodeName : "";

	if (!cached || strncmp(cached_for, setting, sizeof(cached_for)) != 0)
	{
		char	   *name = OriginName();

		id = hash_bytes_extended((const unsigned char *) name, strlen(name), 0);
		pfree(name);
		strlcpy(cached_for, setting, sizeof(cached_for));
		cached = true;
	}
	return id;
}

/* queue inserts one event; payload_sql builds the payload from $3.. */
static void
queue(const char *op, const char *payload_sql, int nargs, Oid *types,
	  Datum *values, int64 version)
{
	char	   *sql;
	Oid			alltypes[8];
	Datum		allvalues[8];
	int			i;
	int			rc;

	alltypes[0] = TEXTOID;
	allvalues[0] = CStringGetTextDatum(op);
	alltypes[1] = INT8OID;
	allvalues[1] = Int64GetDatum(version);
	alltypes[2] = TEXTOID;
	allvalues[2] = CStringGetTextDatum(OriginName());
	for (i = 0; i < nargs; i++)
	{
		alltypes[i + 3] = types[i];
		allvalues[i + 3] = values[i];
	}
	sql = psprintf("INSERT INTO tenant_router.outbox (event) VALUES "
				   "(pg_catalog.jsonb_build_object('op', $1::text, 'payload', %s, "
				   "'origin', $3::text, 'version', $2::bigint))", payload_sql);
	rc = SPI_execute_with_args(sql, nargs + 3, alltypes, allvalues, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "tenant_router: could not queue topology event (%d)", rc);

	if (!wake_registered)
	{
		RegisterXactCallback(wake_at_commit, NULL);
		wake_registered = true;
	}
}

void
OutboxAddShard(const char *shard_id, int64 range_start, int64 range_end,
			   const char *dsn, int64 version)
{
	Oid			types[4] = {TEXTOID, INT8OID, INT8OID, TEXTOID};
	Datum		values[4] = {CStringGetTextDatum(shard_id), Int64GetDatum(range_start),
	Int64GetDatum(range_end), CStringGetTextDatum(dsn)};

	queue("ADD_SHARD",
		  "pg_catalog.jsonb_build_object('shard_id', $4::text, 'range_start', $5::bigint, "
		  "'range_end', $6::bigint, 'dsn', $7::text)",
		  4, types, values, version);
}

void
OutboxRemoveShard(const char *shard_id, int64 version)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};

	queue("REMOVE_SHARD", "pg_catalog.jsonb_build_object('shard_id', $4::text)",
		  1, types, values, version);
}

void
OutboxUpdateRange(const char *shard_id, int64 range_start, int64 range_end,
				  int64 version)
{
	Oid			types[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		values[3] = {CStringGetTextDatum(shard_id), Int64GetDatum(range_start),
	Int64GetDatum(range_end)};

	queue("UPDATE_SHARD_RANGE",
		  "pg_catalog.jsonb_build_object('shard_id', $4::text, 'range_start', $5::bigint, "
		  "'range_end', $6::bigint)",
		  3, types, values, version);
}

/*
 * OutboxQueue queues event op with payload, a JSON object's text: the
 * events of pins, moves, merges, modulo changes and pin-only shards, and
 * SHARD_SPLIT_COMPLETED, SHARD_MOVE_COMPLETED and SHARD_MERGE_COMPLETED
 * (seed 001's notifications of a completed online operation).
 */
void
OutboxQueue(const char *op, const char *payload, int64 version)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(payload)};

	queue(op, "$4::pg_catalog.jsonb", 1, types, values, version);
}
