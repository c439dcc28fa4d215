/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Queues the topology events of SQL changes for the worker to publish.
 *
 * An admin function that changes the topology inserts its event, in the
 * seed's format plus "origin" and "version", into tenant_router.outbox in
 * its own transaction: an event exists exactly when its change committed.
 * At commit the worker is woken, publishes the queued events in order and
 * deletes them; while Redis is unreachable they wait in the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"
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
