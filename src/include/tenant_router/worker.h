/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The topology worker: applies Redis topology events, publishes the
 *	  outbox.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_WORKER_H
#define TENANT_ROUTER_WORKER_H

extern void WorkerInit(void);
extern void WorkerRegister(const char *function_name, const char *name);
extern void WorkerStartTransaction(void);
extern void TenantRouterWorkerMain(Datum main_arg) pg_attribute_noreturn();

#endif
