/*-------------------------------------------------------------------------
 *
 * deadlock.h
 *	  The distributed deadlock detector: a background worker that breaks
 *	  cycles of lock waits spanning the coordinator and the shards.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_DEADLOCK_H
#define TENANT_ROUTER_DEADLOCK_H

extern void DeadlockDetectorInit(void);
extern void TenantRouterDeadlockMain(Datum main_arg) pg_attribute_noreturn();

#endif
