/*-------------------------------------------------------------------------
 *
 * reference_catalog.h
 *	  Reading tenant_router.reference_table, and which shards hold the
 *	  copies of the reference tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_REFERENCE_CATALOG_H
#define TENANT_ROUTER_REFERENCE_CATALOG_H

#include "nodes/pg_list.h"

#include "tenant_router/catalog.h"

/* one row of tenant_router.reference_table */
typedef struct ReferenceTableRow
{
	Oid			relid;
	List	   *shard_ddl;		/* of char *, in order */
} ReferenceTableRow;

extern bool ReferenceCatalogIsRelation(Oid relid);
extern void ReferenceCatalogForgetOids(void);
extern ReferenceTableRow *CatalogGetReferenceTable(Oid relid);
extern List *CatalogReferenceTables(void);
extern ShardRow *ReferenceReadShard(void);
extern List *ReferenceShards(void);

#endif
