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
/* the catalog version this library is built for (default_version of the control file) */
#define TENANT_ROUTER_CATALOG_VERSION "0.2"

/* the largest modulus of shards sharing a range */
#define SHARD_MODULUS_MAX 1024

/*
 * One row of tenant_router.shard.  A shard owns the tenants of its range
 * whose remainder by modulus is remainder, except those pinned to other
 * shards, plus the tenants pinned to it; a shard without a range (pin-only)
 * owns only those.  The pins are loaded on demand (pins_known).
 */
typedef struct ShardRow
{
	char	   *shard_id;
	int64		range_start;
	int64		range_end;
	char	   *dsn;
	char	   *state;
	int64		version;
	char	   *db_identity;	/* system identifier/database name, or NULL */
	bool		has_range;		/* false: a pin-only shard */
	int32		modulus;		/* 1: the whole range */
	int32		remainder;

	bool		pins_known;		/* the two lists below are loaded */
	List	   *pinned;			/* tenants pinned to it (int64 *), sorted */
	List	   *pinned_away;	/* of its range, pinned elsewhere, sorted */
} ShardRow;

/* one row of tenant_router.pin */
typedef struct PinRow
{
	int64		tenant;
	char	   *shard_id;
} PinRow;

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
extern bool CatalogHasOperations(void);

extern ShardRow *CatalogGetShard(const char *shard_id);
extern List *CatalogShardsOverlapping(int64 lo, int64 hi);
extern List *CatalogShardChunk(int64 tenant, int max);
extern List *CatalogAllShards(void);
extern List *CatalogShardRanges(int64 lo, int64 hi);
extern List *CatalogPinsOf(const char *shard_id);
extern List *CatalogShardsWithIdentity(const char *db_identity);
extern List *CatalogPins(void);
extern void CatalogLoadPins(ShardRow *shard, const char *also_shard_id);
extern int32 TenantRemainder(int64 tenant, int32 modulus);
extern bool ShardRangeOwns(const ShardRow *shard, int64 tenant);
extern List *TenantListWith(List *tenants, int64 tenant);
extern List *TenantListWithout(List *tenants, int64 tenant);
extern LogicalTableRow *CatalogGetLogicalTable(Oid relid);
extern List *CatalogLogicalTables(void);

extern char *ShardOwnsSql(const ShardRow *shard, const char *tenant_column);

#endif
