/*-------------------------------------------------------------------------
 *
 * route_cache.h
 *	  Per-backend cache: tenant -> shard, relation -> logical table.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_ROUTE_CACHE_H
#define TENANT_ROUTER_ROUTE_CACHE_H

#include "access/attnum.h"
#include "postgres_ext.h"

#define SHARD_ID_MAXLEN 64

/* what the router knows about a shard */
typedef struct ShardRoute
{
	int64		range_start;
	int64		range_end;
	char	   *shard_id;
	char	   *dsn;			/* shared by every shard with this DSN */
	bool		has_range;		/* false: a pin-only shard */
	int32		modulus;		/* it owns the tenants of its range whose */
	int32		remainder;		/* remainder by modulus is remainder */
} ShardRoute;

/* what the router knows about a logical table, or a reference table */
typedef struct LogicalTable
{
	Oid			relid;			/* hash key */
	bool		is_logical;		/* false: cached "not a table of the router" */
	bool		is_reference;	/* a reference table: a copy on every shard,
								 * no tenant column (tenant_* unset) */
	AttrNumber	tenant_attno;
	Oid			tenant_type;	/* int2, int4 or int8 */
	char	   *tenant_column;	/* quoted for SQL */
	char	   *remote_name;	/* schema-qualified and quoted for SQL */
	bool		has_triggers;
	bool		has_generated;
} LogicalTable;

extern void RouteCacheInit(void);
extern ShardRoute *RouteTenant(int64 tenant);
extern ShardRoute *RouteTenantOrError(int64 tenant, const char *table_name,
									  bool inserting);
extern LogicalTable *LookupLogicalTable(Oid relid);
extern LogicalTable *LookupRouterTable(Oid relid);
extern int64 TenantDatumToInt64(Datum value, Oid typid);

#endif
