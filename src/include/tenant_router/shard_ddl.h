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
extern void ShardDdlBatchBegin(ShardConn *sc, const char *qualname);
extern void ShardDdlBatchEnd(void);
extern char *ShardTableName(Oid relid);

extern void ShardSyncTable(ShardConn *sc, LogicalTableRow *table,
						   const ShardRow *shard, bool autocommit);
extern void ShardSyncAllTables(const ShardRow *shard);
extern void ShardSetOwnership(ShardConn *sc, LogicalTableRow *table,
							  const ShardRow *owner, bool validate);
extern void ShardGuardMovedRows(ShardConn *sc, LogicalTableRow *table,
								const ShardRow *owner);
extern void ShardFenceCreate(ShardConn *sc, const char *name, int64 lock_key);
extern void ShardFenceTable(ShardConn *sc, const char *name, LogicalTableRow *table,
							const ShardRow *moving);
extern bool ShardFenceClose(ShardConn *sc, const char *name, int64 lock_key, int timeout_ms);
extern void ShardFenceUntable(ShardConn *sc, const char *name, LogicalTableRow *table,
							  bool rows, bool truncate);
extern void ShardRestoreOwnership(ShardConn *sc, LogicalTableRow *table,
								  const ShardRow *owner);
extern void ShardFenceOpen(ShardConn *sc, const char *name);
extern void ShardFenceDrop(ShardConn *sc, const char *name);
extern int64 ShardDeleteNotOwned(ShardConn *sc, LogicalTableRow *table,
								 const ShardRow *owner);
/* longest wait of a cleanup for the lock that drops the guard of moved rows */
#define GUARD_DROP_LOCK_MS 50
extern bool ShardDropGuard(ShardConn *sc, LogicalTableRow *table);
extern void ShardValidateOwnership(ShardConn *sc, LogicalTableRow *table);

#endif
