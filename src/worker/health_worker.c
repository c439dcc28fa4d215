/*-------------------------------------------------------------------------
 *
 * health_worker.c
 *	  The health worker: a background worker that probes every shard of
 *	  tenant_router.database every tenant_router.probe_interval
 *	  (shard_probe.c), so that tenant_router.shard_health shows a shard that
 *	  stopped or hung within seconds, even when no statement goes there.
 *
 * It is a process of its own, not a step of the topology worker: a probe
 * waits up to tenant_router.probe_timeout for a hung shard, which must not
 * delay topology events, and the topology worker's own waits on shards (the
 * recovery of prepared transactions) must not stop the probes.  Its loop is
 * pg_cron's: interrupts, a reload on SIGHUP, the probe (the shards read from
 * the catalog in a transaction, then probed outside it), a wait on its latch
 * until the next probe, and the loop's memory reset every pass.  An error is
 * logged and the next pass goes on.
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
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tenant_router/catalog.h"
#include "tenant_router/guc.h"
#include "tenant_router/health_worker.h"
#include "tenant_router/shard_probe.h"
#include "tenant_router/worker.h"

/* how long the worker sleeps while the probe is off (a reload wakes it) */
#define PROBE_OFF_WAIT_MS 60000

/* HealthWorkerInit registers the health worker; called from _PG_init. */
void
HealthWorkerInit(void)
{
	WorkerRegister("TenantRouterHealthWorkerMain", "tenant_router health worker");
}

/*
 * catalog_shards returns every shard of the catalog (shard_id and dsn), in
 * the caller's memory context; NIL where the extension is not installed.
 */
static List *
catalog_shards(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *shards = NIL;
	Oid			nsp;
	uint64		i;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	nsp = get_namespace_oid(TENANT_ROUTER_SCHEMA, true);
	if (OidIsValid(nsp) && OidIsValid(get_relname_relid("shard", nsp)))
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		if (SPI_execute("SELECT shard_id, dsn FROM tenant_router.shard ORDER BY shard_id",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "tenant_router: could not read tenant_router.shard");
		for (i = 0; i < SPI_processed; i++)
		{
			MemoryContext spi = MemoryContextSwitchTo(cxt);
			ShardRow   *shard = palloc0(sizeof(ShardRow));

			shard->shard_id = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			shard->dsn = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
			shards = lappend(shards, shard);
			MemoryContextSwitchTo(spi);
		}
		SPI_finish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return shards;
}

/* probe_shards reads the shards and probes them; an error is logged */
static void
probe_shards(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		ShardProbeAll(catalog_shards());
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}

/*
 * TenantRouterHealthWorkerMain is the health worker: pg_cron's loop of
 * interrupts, reload, probe, wait, and a reset of the loop's memory.
 */
void
TenantRouterHealthWorkerMain(Datum main_arg)
{
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(TenantRouterDatabase, NULL, 0);
	pgstat_report_appname("tenant_router health worker");

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "tenant_router health loop",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		TimestampTz started = GetCurrentTimestamp();
		long		timeout = PROBE_OFF_WAIT_MS;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(loop_cxt);
		if (TenantRouterProbeInterval > 0)
		{
			probe_shards();
			timeout = TenantRouterProbeInterval -
				TimestampDifferenceMilliseconds(started, GetCurrentTimestamp());
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		MemoryContextReset(loop_cxt);
	}
}
