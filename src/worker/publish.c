/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  Publishes the outbox (metadata/outbox.c) on Redis: the topology
 *	  events of this coordinator's committed SQL changes, oldest first.
 *
 * They are changes already in force here: made while the coordinator was
 * declared the only one (tenant_router.single_coordinator), or without
 * Redis, or before the coordinator ordered its changes.  Each is appended
 * to the log (kind "outbox": this coordinator skips its own) and published
 * in one script.  An ordered change never stays in the outbox: it leaves it
 * in the transaction that put it in the order (commands/ordered_change.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "tenant_router/guc.h"
#include "tenant_router/publish.h"
#include "tenant_router/topology_log.h"
#include "tenant_router/worker.h"

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
	int			published = 0;
	bool		failed = false;
	uint64		n;
	char	  **ids;
	char	  **events;
	uint64		i;

	WorkerStartTransaction();
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

		if (!TopologyLogPublish(events[i], NULL, &why))
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
