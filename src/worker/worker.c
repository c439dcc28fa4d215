/* placeholder while the worker is written: see issue 4 */
#include "postgres.h"

#include "storage/ipc.h"

#include "tenant_router/worker.h"

void
WorkerInit(void)
{
}

void
WorkerWake(void)
{
}

void
TenantRouterWorkerMain(Datum main_arg)
{
	proc_exit(0);
}
