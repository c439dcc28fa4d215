/*-------------------------------------------------------------------------
 *
 * operation_worker.h
 *	  Running an online operation: in a background worker of its own, each
 *	  phase in a transaction of its own, recorded in
 *	  tenant_router.operation; and recovering one that did not finish.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_OPERATION_WORKER_H
#define TENANT_ROUTER_OPERATION_WORKER_H

#include "tenant_router/operation.h"

extern void OperationLaunch(const OperationArgs *args, const char *function);
extern PGDLLEXPORT void TenantRouterOperationMain(Datum main_arg);
extern void OperationCheckCaller(Operation *op);
extern void OperationRecordFlip(Operation *op);
extern void OperationCheckIdle(const char *shard_id);
extern int64 OperationRecover(void);

#endif
