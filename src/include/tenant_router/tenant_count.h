/*-------------------------------------------------------------------------
 *
 * tenant_count.h
 *	  tenant_router.count_distinct_tenant(bigint): count(DISTINCT tenant)
 *	  computable in parts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_TENANT_COUNT_H
#define TENANT_ROUTER_TENANT_COUNT_H

#include "fmgr.h"

extern Datum TenantCountSerialized(int64 count);
extern Oid	TenantCountAggOid(void);

#endif
