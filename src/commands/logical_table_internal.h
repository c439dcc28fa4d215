/*-------------------------------------------------------------------------
 *
 * logical_table_internal.h
 *	  What logical_table.c shares with reference_table.c: turning an
 *	  ordinary table into a foreign table of server tenant_router, and the
 *	  statements that create it on a shard.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_LOGICAL_TABLE_INTERNAL_H
#define TENANT_ROUTER_LOGICAL_TABLE_INTERNAL_H

#include "nodes/pg_list.h"
#include "utils/relcache.h"

/* logical_table.c: SPI must be connected */
extern List *LogicalTableSpiStrings(const char *sql, Oid relid);
extern void LogicalTableSpiCommand(const char *sql);
extern void LogicalTableCheckConvertible(Relation rel, const char *qualname, bool reference);
extern List *LogicalTableShardDdl(Relation rel, const char *nspname, const char *qualname,
								  bool trusted, const char *tenant_column);
extern Oid	LogicalTableConvertToForeign(Relation rel, const char *qualname);

#endif
