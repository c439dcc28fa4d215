/*-------------------------------------------------------------------------
 *
 * shard_ddl.h
 *	  Making a shard's tables match the coordinator's logical tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_SHARD_DDL_H
#define TENANT_ROUTER_SHARD_DDL_H

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"

extern void ShardSyncTable(ShardConn *sc, LogicalTableRow *table,
						   int64 range_start, int64 range_end, bool autocommit);
extern void ShardSyncAllTables(const char *shard_id, const char *dsn,
							   int64 range_start, int64 range_end);

#endif
