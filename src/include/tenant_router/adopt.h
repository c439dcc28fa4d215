/*-------------------------------------------------------------------------
 *
 * adopt.h
 *	  Shards that already hold rows; the coordinator's sequences above the
 *	  ids the shards hold, within this coordinator's block.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_ADOPT_H
#define TENANT_ROUTER_ADOPT_H

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"

extern void AdoptShardTable(ShardConn *sc, LogicalTableRow *table, const char *qualname,
							const ShardRow *shard);
extern void AdoptSequences(Oid relid, const char *qualname, List *conns);

#endif
