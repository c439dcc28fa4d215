/*-------------------------------------------------------------------------
 *
 * switch_retry.h
 *	  A write refused by its shard because its tenant moved: wait for the
 *	  new route and run there, or 40001 (executor/switch_retry.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_SWITCH_RETRY_H
#define TENANT_ROUTER_SWITCH_RETRY_H

#include "datatype/timestamp.h"

#include "tenant_router/connection.h"
#include "tenant_router/route_cache.h"

extern void SwitchRetryWait(ShardConn *sc, PGresult *error, int ntenants,
							const int64 *tenants, TimestampTz *deadline);
extern ShardRoute *SwitchRetryRoute(ShardConn *sc, PGresult *error, int64 tenant,
									const char *table_name, bool inserting,
									TimestampTz *deadline);

#endif
