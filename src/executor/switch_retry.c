/*-------------------------------------------------------------------------
 *
 * switch_retry.c
 *	  What a write does when its shard refuses it because a topology
 *	  operation moved its tenant: wait until routing sends the tenant to its
 *	  new shard and run there, or fail with 40001.
 *
 * During the switch of an online operation (commands/operation.c), a write
 * of a moving tenant waits on the old shard (its fence); once the switch has
 * committed there, the old shard refuses it (40001 from the fence, later
 * from the guard of moved rows, or 23514 from the narrowed range constraint
 * of an INSERT), and routing gives the tenant its new shard as soon as the
 * catalog change arrives (this coordinator's own flip, or a topology event).
 * The refused statement may run again on the new shard only if it was the
 * first statement of its remote transaction on the old one: then rolling
 * that remote transaction back undoes nothing else of the local
 * transaction, and the statement, with the same parameters (defaults and
 * volatile functions were evaluated on the coordinator), lands once.
 * Otherwise the transaction has seen the old shard, and only the client
 * can retry it: 40001.
 *
 * The wait polls routing (AcceptInvalidationMessages, RouteTenant) every
 * POLL_MS, for at most tenant_router.switch_wait_timeout from the first
 * refusal of the statement; every RECHECK_MS the statement is tried again
 * where routing still sends it, so that an operation rolled back after its
 * switch (its fence dropped) lets the write through where it was.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/inval.h"
#include "utils/timestamp.h"

#include "tenant_router/guc.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/switch_retry.h"

/* how often routing is looked at while a write waits */
#define POLL_MS 2
/* how long before the write is tried again where it was */
#define RECHECK_MS 100

/* routed_elsewhere tells whether routing sends one of tenants off sc */
static bool
routed_elsewhere(ShardConn *sc, int ntenants, const int64 *tenants)
{
	for (int i = 0; i < ntenants; i++)
	{
		ShardRoute *route = RouteTenant(tenants[i]);

		if (route != NULL && ShardConnGet(route->shard_id, route->dsn) != sc)
			return true;
	}
	return false;
}

/*
 * SwitchRetryWait is called when the shard of sc refused a write of the
 * rows of tenants (error, the refusal: ShardResultMoved; freed) because
 * they moved.  If the write was the first statement of its remote
 * transaction, that transaction is rolled back and it waits until routing
 * sends one of the tenants elsewhere (or RECHECK_MS has passed): the caller
 * routes the write again and sends it.  Otherwise, or once
 * tenant_router.switch_wait_timeout has passed since *deadline was set (0:
 * set it now), it raises 40001.
 */
void
SwitchRetryWait(ShardConn *sc, PGresult *error, int ntenants, const int64 *tenants,
				TimestampTz *deadline)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz recheck = TimestampTzPlusMilliseconds(now, RECHECK_MS);

	if (!ShardConnFirstStatement(sc))
		ShardConnReportMoved(sc, error,
							 psprintf("A topology operation moved the tenant's rows to another shard while this transaction was using shard \"%s\", so the statement cannot be run on the new shard in its place.",
									  ShardConnLabel(sc)));
	if (*deadline == 0)
		*deadline = TimestampTzPlusMilliseconds(now, TenantRouterSwitchWaitTimeout);
	ShardConnRollbackRemote(sc);
	for (;;)
	{
		AcceptInvalidationMessages();
		if (routed_elsewhere(sc, ntenants, tenants))
			break;
		now = GetCurrentTimestamp();
		if (now >= *deadline)
			ShardConnReportMoved(sc, error,
								 psprintf("A topology operation is moving the tenant's rows away from shard \"%s\", and the catalog change that routes them to their new shard did not reach this coordinator within tenant_router.switch_wait_timeout (%d ms).",
										  ShardConnLabel(sc), TenantRouterSwitchWaitTimeout));
		if (now >= recheck)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	PQclear(error);
}

/*
 * SwitchRetryRoute is SwitchRetryWait for a write of one tenant's rows; it
 * returns the tenant's route now (valid until the next RouteTenant call).
 */
ShardRoute *
SwitchRetryRoute(ShardConn *sc, PGresult *error, int64 tenant, const char *table_name,
				 bool inserting, TimestampTz *deadline)
{
	SwitchRetryWait(sc, error, 1, &tenant, deadline);
	return RouteTenantOrError(tenant, table_name, inserting);
}
