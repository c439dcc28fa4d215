/*-------------------------------------------------------------------------
 *
 * reference_table.h
 *	  Reference tables: a copy on every shard (commands/reference_table.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_REFERENCE_TABLE_H
#define TENANT_ROUTER_REFERENCE_TABLE_H

#include "nodes/nodes.h"

#include "tenant_router/connection.h"

extern void ReferenceTablesSyncShard(ShardConn *sc, const char *shard_id, const char *dsn);
extern void ReferenceTablesRefresh(ShardConn *target, ShardConn *source);
extern void ReferenceTableCheckDdl(Node *parsetree);

#endif
