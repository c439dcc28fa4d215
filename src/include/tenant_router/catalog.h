/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  Reading the tenant_router catalog (schema tenant_router).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_CATALOG_H
#define TENANT_ROUTER_CATALOG_H

#include "nodes/pg_list.h"

#define TENANT_ROUTER_SCHEMA "tenant_router"
#define TENANT_ROUTER_SERVER "tenant_router"

/* one row of tenant_router.shard */
typedef struct ShardRow
{
	char	   *shard_id;
	int64		range_start;
	int64		range_end;
	char	   *dsn;
	char	   *state;
	int64		version;
	char	   *db_identity;	/* system identifier/database name, or NULL */
} ShardRow;

/* one row of tenant_router.logical_table */
typedef struct LogicalTableRow
{
	Oid			relid;
	char	   *tenant_column;
	List	   *shard_ddl;		/* of char *, in order */
} LogicalTableRow;

extern Oid	CatalogShardRelid(bool missing_ok);
extern Oid	CatalogLogicalTableRelid(bool missing_ok);
extern Oid	CatalogServerOid(void);
extern bool CatalogIsCatalogRelation(Oid relid);
extern void CatalogForgetOids(void);

extern ShardRow *CatalogGetShard(const char *shard_id);
extern List *CatalogShardsOverlapping(int64 lo, int64 hi);
extern List *CatalogShardChunk(int64 tenant, int max);
extern LogicalTableRow *CatalogGetLogicalTable(Oid relid);
extern List *CatalogLogicalTables(void);

extern char *ShardOwnsSql(const ShardRow *shard, const char *tenant_column);

#endif
