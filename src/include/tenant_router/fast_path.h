/*-------------------------------------------------------------------------
 *
 * fast_path.h
 *	  The planner hook that sends statements pinned to one tenant whole to
 *	  that tenant's shard, and the custom scan that executes them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_FAST_PATH_H
#define TENANT_ROUTER_FAST_PATH_H

#include "nodes/extensible.h"

/* CustomScan.custom_private */
enum RouterScanPrivate
{
	RouterScanSql,				/* statement for the shard (String) */
	RouterScanFlags,			/* ROUTER_* (Integer) */
	RouterScanTenantParam,		/* parameter holding the tenant, or -1:
								 * custom_exprs[0] computes it (Integer) */
	RouterScanTenantColumn		/* logical table and column, for messages */
};

#define ROUTER_WRITE		0x01	/* the statement writes or locks rows */
#define ROUTER_INSERT		0x02	/* it inserts one row: the tenant must have a shard */
#define ROUTER_COUNT_ROWS	0x04	/* es_processed counts the shard's rows */
#define ROUTER_PREPARE		0x08	/* worth preparing on the shard */

extern void InstallPlannerHook(void);
extern Node *CreateRouterScanState(CustomScan *cscan);
extern CustomScanMethods RouterScanMethods;

#endif
