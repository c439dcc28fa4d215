/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Queues the topology events of SQL changes for the worker to publish.
 *
 * An admin function that changes the topology inserts its event, in the
 * seed's format plus "origin" and "version", into tenant_router.outbox in
 * its own transaction: an event exists exactly when its change committed.
 * At commit the worker is woken, publishes the queued events in order and
 * deletes them (OutboxPublish); while Redis is unreachable they wait in the
 * table.  A crash between publishing and deleting publishes an event twice;
 * receivers ignore the second copy by its origin and version.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"
#include "tenant_router/redis.h"
#include "tenant_router/worker.h"

static bool wake_registered = false;

static void
wake_at_commit(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT)
		WorkerWake();
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
 * OutboxPublish publishes the queued events, oldest first, on Redis (stream
 * and channel), deleting each once Redis has accepted it; it stops at the
 * first failure.  It returns the number published, or -1 after a failure,
 * with *errmsg in the caller's memory context.  Its own transaction; called
 * by the worker.
 */
int
OutboxPublish(char **errmsg)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *stream_key = RedisStreamKey();
	int			published = 0;
	bool		failed = false;
	uint64		n;
	char	  **ids;
	char	  **events;
	uint64		i;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (SPI_execute("SELECT id, event::text FROM tenant_router.outbox ORDER BY id LIMIT 100",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not read the outbox");
	n = SPI_processed;
	ids = palloc(sizeof(char *) * (n + 1));
	events = palloc(sizeof(char *) * (n + 1));
	for (i = 0; i < n; i++)
	{
		ids[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		events[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	for (i = 0; i < n; i++)
	{
		char	   *why = NULL;

		if (!RedisPublish(stream_key, TenantRouterTopologyChannel, events[i], &why))
		{
			/* the message outlives SPI's memory, freed by SPI_finish */
			if (errmsg)
				*errmsg = MemoryContextStrdup(cxt, why);
			failed = true;
			break;
		}
		if (SPI_execute(psprintf("DELETE FROM tenant_router.outbox WHERE id = %s", ids[i]),
						false, 0) != SPI_OK_DELETE)
			elog(ERROR, "tenant_router: could not delete from the outbox");
		published++;
	}
	if (published > 0 &&
		SPI_execute(psprintf("UPDATE tenant_router.worker_state SET published = published + %d",
							 published), false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "tenant_router: could not count published events");
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return failed ? -1 : published;
}
