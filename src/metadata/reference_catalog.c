/*-------------------------------------------------------------------------
 *
 * reference_catalog.c
 *	  Reads tenant_router.reference_table through its index, and names the
 *	  shards that hold the copies of the reference tables.
 *
 * A reference table has one copy per shard database: shards that share a
 * DSN share the copy.  Reads go to one shard, the first of the catalog in
 * range order (ReferenceReadShard); writes go to every copy, that is to one
 * shard per distinct DSN (ReferenceShards), in range order.
 *
 * As in catalog.c, reads use the catalog snapshot and no permission checks;
 * the relation's OIDs are remembered and forgotten when route_cache.c sees
 * a relcache invalidation for them.  Before the 0.2 update of the extension
 * the table does not exist, and there are no reference tables.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "tenant_router/reference_catalog.h"

/* attribute numbers of tenant_router.reference_table */
#define Anum_reference_table_table_id	1
#define Anum_reference_table_shard_ddl	2

static Oid	reference_table_relid = InvalidOid;
static Oid	reference_table_pkey_relid = InvalidOid;

/* lookup_oids finds the catalog table; false where it does not exist */
static bool
lookup_oids(void)
{
	Oid			nspid;

	if (OidIsValid(reference_table_relid))
		return true;
	nspid = get_namespace_oid(TENANT_ROUTER_SCHEMA, true);
	if (!OidIsValid(nspid))
		return false;
	reference_table_relid = get_relname_relid("reference_table", nspid);
	reference_table_pkey_relid = get_relname_relid("reference_table_pkey", nspid);
	if (!OidIsValid(reference_table_pkey_relid))
		reference_table_relid = InvalidOid;
	return OidIsValid(reference_table_relid);
}

/*
 * ReferenceCatalogIsRelation tells whether relid is the remembered catalog
 * table; it does no lookups, so invalidation callbacks may call it.
 */
bool
ReferenceCatalogIsRelation(Oid relid)
{
	return OidIsValid(relid) && relid == reference_table_relid;
}

/* ReferenceCatalogForgetOids drops the remembered OIDs. */
void
ReferenceCatalogForgetOids(void)
{
	reference_table_relid = InvalidOid;
	reference_table_pkey_relid = InvalidOid;
}

static ReferenceTableRow *
row_from_tuple(HeapTuple tuple, TupleDesc tupdesc)
{
	ReferenceTableRow *row = palloc0(sizeof(ReferenceTableRow));
	bool		isnull;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			i;

	row->relid = DatumGetObjectId(heap_getattr(tuple, Anum_reference_table_table_id,
											   tupdesc, &isnull));
	deconstruct_array(DatumGetArrayTypeP(heap_getattr(tuple, Anum_reference_table_shard_ddl,
													  tupdesc, &isnull)),
					  TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	for (i = 0; i < nelems; i++)
		if (!nulls[i])
			row->shard_ddl = lappend(row->shard_ddl, TextDatumGetCString(elems[i]));
	return row;
}

/*
 * CatalogGetReferenceTable returns the catalog row of relid, or NULL if
 * relid is not a reference table.
 */
ReferenceTableRow *
CatalogGetReferenceTable(Oid relid)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	ReferenceTableRow *row = NULL;

	if (!lookup_oids())
		return NULL;
	rel = table_open(reference_table_relid, AccessShareLock);
	ScanKeyInit(&key, Anum_reference_table_table_id, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, reference_table_pkey_relid, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		row = row_from_tuple(tuple, RelationGetDescr(rel));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return row;
}

/*
 * CatalogReferenceTables returns every reference table whose relation still
 * exists, in OID order (the order they were made reference tables in, short
 * of OID wraparound).
 */
List *
CatalogReferenceTables(void)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	List	   *rows = NIL;

	if (!lookup_oids())
		return NIL;
	rel = table_open(reference_table_relid, AccessShareLock);
	scan = systable_beginscan(rel, reference_table_pkey_relid, true, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		ReferenceTableRow *row = row_from_tuple(tuple, RelationGetDescr(rel));

		if (get_rel_relkind(row->relid) != '\0')
			rows = lappend(rows, row);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return rows;
}

/*
 * ReferenceReadShard returns the shard reads of a reference table go to:
 * the first of the catalog in range order; NULL when there is no shard.
 */
ShardRow *
ReferenceReadShard(void)
{
	List	   *rows = CatalogShardChunk(PG_INT64_MIN, 1);

	return rows != NIL ? linitial(rows) : NULL;
}

/*
 * ReferenceShards returns the shards a write to a reference table goes to:
 * one per distinct DSN (shards sharing a database share its copy), pin-only
 * shards included, in shard_id order.
 */
List *
ReferenceShards(void)
{
	List	   *shards = NIL;
	ListCell   *lc;

	foreach(lc, CatalogAllShards())
	{
		ShardRow   *shard = lfirst(lc);
		ListCell   *sc;
		bool		seen = false;

		foreach(sc, shards)
			if (strcmp(((ShardRow *) lfirst(sc))->dsn, shard->dsn) == 0)
				seen = true;
		if (!seen)
			shards = lappend(shards, shard);
	}
	return shards;
}
