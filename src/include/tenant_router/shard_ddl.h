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

extern void ShardRemoteCommand(ShardConn *sc, const char *sql);
extern void ShardRemoteDdl(ShardConn *sc, const char *sql);
extern char *ShardRemoteValue(ShardConn *sc, const char *sql, const char *param);
extern char *ShardTableName(Oid relid);

extern void ShardSyncTable(ShardConn *sc, LogicalTableRow *table,
						   const ShardRow *shard, bool autocommit);
extern void ShardSyncAllTables(const ShardRow *shard);
extern void ShardSetOwnership(ShardConn *sc, LogicalTableRow *table,
							  const ShardRow *owner, bool validate);
extern void ShardGuardMovedRows(ShardConn *sc, LogicalTableRow *table,
								const ShardRow *owner);
extern int64 ShardDeleteNotOwned(ShardConn *sc, LogicalTableRow *table,
								 const ShardRow *owner);
extern void ShardValidateOwnership(ShardConn *sc, LogicalTableRow *table);

#endif
