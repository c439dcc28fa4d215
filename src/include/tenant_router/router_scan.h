/*-------------------------------------------------------------------------
 *
 * router_scan.h
 *	  The custom scan that runs a statement whole on one tenant's shard:
 *	  the plan the fast path (planner/fast_path.c) builds.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_ROUTER_SCAN_H
#define TENANT_ROUTER_ROUTER_SCAN_H

#include "nodes/extensible.h"

/* CustomScan.custom_private */
enum RouterScanPrivate
{
	RouterScanSql,				/* statement for the shard (String) */
	RouterScanFlags,			/* ROUTER_* (Integer) */
	RouterScanTenantParam,		/* parameter holding the tenant, or -1:
								 * custom_exprs[0] computes it (Integer) */
	RouterScanTableName			/* for messages: the table written, or the
								 * first one read (String) */
};

#define ROUTER_WRITE		0x01	/* the statement writes or locks rows */
#define ROUTER_INSERT		0x02	/* it inserts rows: their tenant must have a shard */
#define ROUTER_COUNT_ROWS	0x04	/* es_processed counts the shard's rows */
#define ROUTER_PREPARE		0x08	/* worth preparing on the shard */
#define ROUTER_TENANT_PARAMS 0x10	/* the tenant is computed from the
									 * statement's parameters */
#define ROUTER_SETS_TENANT	0x20	/* its ON CONFLICT DO UPDATE assigns the
									 * tenant column: a refusal by the range
									 * constraint may be the row's own */

extern CustomScanMethods RouterScanMethods;
extern void RegisterRouterScan(void);

#endif
