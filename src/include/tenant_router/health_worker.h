/*-------------------------------------------------------------------------
 *
 * health_worker.h
 *	  The health worker, which probes every shard (health_worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_HEALTH_WORKER_H
#define TENANT_ROUTER_HEALTH_WORKER_H

extern void HealthWorkerInit(void);
extern void TenantRouterHealthWorkerMain(Datum main_arg) pg_attribute_noreturn();

#endif
