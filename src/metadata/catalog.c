/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Reads the tenant_router catalog tables through their indexes.
 *
 * Reads use the catalog snapshot (latest committed rows plus this
 * transaction's own changes) and no permission checks: the shard table is
 * superuser-only because of the DSNs, yet every backend must route.  Writes
 * happen in commands/topology.c through SPI, so that the catalog triggers
 * fire and invalidate every backend's routing cache.
 *
 * The OIDs of the catalog relations are looked up once and forgotten when
 * route_cache.c sees a relcache invalidation for them (e.g. DROP EXTENSION).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "foreign/foreign.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "lib/stringinfo.h"

#include "tenant_router/catalog.h"

/* attribute numbers of tenant_router.shard */
#define Anum_shard_shard_id		1
#define Anum_shard_range_start	2
#define Anum_shard_range_end	3
#define Anum_shard_dsn			4
#define Anum_shard_state		5
#define Anum_shard_version		6
#define Anum_shard_db_identity	9
#define Anum_shard_modulus		10
#define Anum_shard_remainder	11
#define Natts_shard_min			11

/* attribute numbers of tenant_router.pin */
#define Anum_pin_tenant_id		1
#define Anum_pin_shard_id		2

/* attribute numbers of tenant_router.logical_table */
#define Anum_logical_table_table_id			1
#define Anum_logical_table_tenant_column	2
#define Anum_logical_table_shard_ddl		3

static Oid	shard_relid = InvalidOid;
static Oid	shard_pkey_relid = InvalidOid;
static Oid	shard_range_start_relid = InvalidOid;
static Oid	logical_table_relid = InvalidOid;
static Oid	logical_table_pkey_relid = InvalidOid;
static Oid	pin_relid = InvalidOid;
static Oid	pin_pkey_relid = InvalidOid;
static Oid	pin_shard_relid = InvalidOid;
static Oid	shard_identity_relid = InvalidOid;
static Oid	server_oid = InvalidOid;
static bool oids_stale = false; /* look them up again at the next use */

static Oid
lookup_relid(const char *relname, bool missing_ok)
{
	Oid			nspid = get_namespace_oid(TENANT_ROUTER_SCHEMA, true);
	Oid			relid = InvalidOid;

	if (OidIsValid(nspid))
		relid = get_relname_relid(relname, nspid);
	if (!OidIsValid(relid) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"tenant_router\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION tenant_router.")));
	return relid;
}

static void lookup_pin_oids(void);

static void
lookup_oids(bool missing_ok)
{
	if (OidIsValid(shard_relid) && !oids_stale)
	{
		lookup_pin_oids();
		return;
	}
	oids_stale = false;
	pin_relid = InvalidOid;
	shard_relid = lookup_relid("shard", missing_ok);
	if (!OidIsValid(shard_relid))
		return;
	shard_pkey_relid = lookup_relid("shard_pkey", false);
	shard_range_start_relid = lookup_relid("shard_range_start_key", false);
	logical_table_relid = lookup_relid("logical_table", false);
	logical_table_pkey_relid = lookup_relid("logical_table_pkey", false);
	lookup_pin_oids();
}

/*
 * lookup_pin_oids looks the pin table up: a catalog still at 0.1 (ALTER
 * EXTENSION UPDATE not run yet) has none, and is looked at again each time,
 * so that the update is seen at once.
 */
static void
lookup_pin_oids(void)
{
	if (OidIsValid(pin_relid))
		return;
	pin_relid = lookup_relid("pin", true);
	if (OidIsValid(pin_relid))
	{
		pin_pkey_relid = lookup_relid("pin_pkey", false);
		pin_shard_relid = lookup_relid("pin_shard_id_idx", false);
		shard_identity_relid = lookup_relid("shard_db_identity_idx", false);
	}
}

/*
 * CatalogHasOperations tells whether the catalog has what this version's
 * topology operations need (pins, modulo, operations): false while a
 * catalog of version 0.1 awaits ALTER EXTENSION tenant_router UPDATE.
 */
bool
CatalogHasOperations(void)
{
	lookup_oids(false);
	return OidIsValid(pin_relid);
}

/* CatalogShardRelid returns the OID of tenant_router.shard. */
Oid
CatalogShardRelid(bool missing_ok)
{
	lookup_oids(missing_ok);
	return shard_relid;
}

/* CatalogLogicalTableRelid returns the OID of tenant_router.logical_table. */
Oid
CatalogLogicalTableRelid(bool missing_ok)
{
	lookup_oids(missing_ok);
	return logical_table_relid;
}

/*
 * CatalogServerOid returns the OID of foreign server tenant_router, or
 * InvalidOid where the extension is not installed.
 */
Oid
CatalogServerOid(void)
{
	if (!OidIsValid(server_oid))
	{
		ForeignServer *server = GetForeignServerByName(TENANT_ROUTER_SERVER, true);

		if (server != NULL)
			server_oid = server->serverid;
	}
	return server_oid;
}

/*
 * CatalogIsCatalogRelation tells whether relid is one of the remembered
 * catalog relations; it does no lookups, so invalidation callbacks may call it.
 */
bool
CatalogIsCatalogRelation(Oid relid)
{
	return OidIsValid(relid) &&
		(relid == shard_relid || relid == logical_table_relid || relid == pin_relid);
}

/*
 * CatalogForgetOids makes the next use look the OIDs up again (ALTER
 * EXTENSION UPDATE may have made new relations).  They stay as they are
 * until then: an invalidation processed in the middle of a catalog read
 * does not change the relations that read uses.
 */
void
CatalogForgetOids(void)
{
	oids_stale = true;
	server_oid = InvalidOid;
}

static ShardRow *
shard_row_from_tuple(HeapTuple tuple, TupleDesc tupdesc)
{
	Datum		values[Natts_shard_min];
	bool		isnull[Natts_shard_min];
	ShardRow   *row = palloc0(sizeof(ShardRow));
	int			i;

	/* columns a catalog still at 0.1 does not have: their defaults */
	for (i = 0; i < Natts_shard_min; i++)
		values[i] = i < tupdesc->natts ? heap_getattr(tuple, i + 1, tupdesc, &isnull[i]) :
			(isnull[i] = true, (Datum) 0);
	if (isnull[Anum_shard_modulus - 1])
	{
		values[Anum_shard_modulus - 1] = Int32GetDatum(1);
		values[Anum_shard_remainder - 1] = Int32GetDatum(0);
	}

	row->shard_id = TextDatumGetCString(values[Anum_shard_shard_id - 1]);
	row->has_range = !isnull[Anum_shard_range_start - 1];
	row->range_start = row->has_range ? DatumGetInt64(values[Anum_shard_range_start - 1]) : 0;
	row->range_end = row->has_range ? DatumGetInt64(values[Anum_shard_range_end - 1]) : 0;
	row->modulus = DatumGetInt32(values[Anum_shard_modulus - 1]);
	row->remainder = DatumGetInt32(values[Anum_shard_remainder - 1]);
	row->dsn = TextDatumGetCString(values[Anum_shard_dsn - 1]);
	row->state = TextDatumGetCString(values[Anum_shard_state - 1]);
	row->version = DatumGetInt64(values[Anum_shard_version - 1]);
	row->db_identity = isnull[Anum_shard_db_identity - 1] ? NULL :
		TextDatumGetCString(values[Anum_shard_db_identity - 1]);
	return row;
}

/* CatalogGetShard returns the row of shard_id, or NULL if there is none. */
ShardRow *
CatalogGetShard(const char *shard_id)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	ShardRow   *row = NULL;

	lookup_oids(false);
	rel = table_open(shard_relid, AccessShareLock);
	ScanKeyInit(&key, Anum_shard_shard_id, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(shard_id));
	scan = systable_beginscan(rel, shard_pkey_relid, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		row = shard_row_from_tuple(tuple, RelationGetDescr(rel));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return row;
}

/*
 * scan_ranges returns, in range_start order, up to max rows (max <= 0: all;
 * the shards sharing a range by modulo all, even past max) of the shards
 * whose range may contain tenants >= lo, stopping at the first one that
 * starts after hi.  It starts at the shard owning or preceding lo, so that
 * its cost is O(log n + rows returned).  Pin-only shards have no range.
 */
static List *
scan_ranges(int64 lo, int64 hi, int max)
{
	Relation	rel;
	Relation	idx;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	int64		first_start = lo;
	List	   *rows = NIL;

	lookup_oids(false);
	rel = table_open(shard_relid, AccessShareLock);
	idx = index_open(shard_range_start_relid, AccessShareLock);

	/* the shard starting at or before lo, if any, may own lo */
	ScanKeyInit(&key, Anum_shard_range_start, BTLessEqualStrategyNumber, F_INT8LE,
				Int64GetDatum(lo));
	scan = systable_beginscan_ordered(rel, idx, NULL, 1, &key);
	tuple = systable_getnext_ordered(scan, BackwardScanDirection);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;

		first_start = DatumGetInt64(heap_getattr(tuple, Anum_shard_range_start,
												 RelationGetDescr(rel), &isnull));
	}
	systable_endscan_ordered(scan);

	ScanKeyInit(&key, Anum_shard_range_start, BTGreaterEqualStrategyNumber, F_INT8GE,
				Int64GetDatum(first_start));
	scan = systable_beginscan_ordered(rel, idx, NULL, 1, &key);
	while (HeapTupleIsValid(tuple = systable_getnext_ordered(scan, ForwardScanDirection)))
	{
		ShardRow   *row = shard_row_from_tuple(tuple, RelationGetDescr(rel));

		if (row->range_start > hi)
			break;
		/* the shards sharing a range by modulo come together */
		if (max > 0 && list_length(rows) >= max &&
			((ShardRow *) llast(rows))->range_start != row->range_start)
			break;
		rows = lappend(rows, row);
	}
	systable_endscan_ordered(scan);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return rows;
}

/*
 * CatalogShardsOverlapping returns the shards owning any tenant in lo..hi:
 * those whose range overlaps it, in range order, then those that tenants of
 * lo..hi are pinned to, if not listed already.
 */
List *
CatalogShardsOverlapping(int64 lo, int64 hi)
{
	List	   *rows = NIL;
	ListCell   *lc;
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData keys[2];
	HeapTuple	tuple;

	/* the first rows may end before lo */
	foreach(lc, scan_ranges(lo, hi, 0))
		if (((ShardRow *) lfirst(lc))->range_end >= lo)
			rows = lappend(rows, lfirst(lc));

	lookup_oids(false);
	if (!OidIsValid(pin_relid))
		return rows;
	rel = table_open(pin_relid, AccessShareLock);
	ScanKeyInit(&keys[0], Anum_pin_tenant_id, BTGreaterEqualStrategyNumber, F_INT8GE,
				Int64GetDatum(lo));
	ScanKeyInit(&keys[1], Anum_pin_tenant_id, BTLessEqualStrategyNumber, F_INT8LE,
				Int64GetDatum(hi));
	scan = systable_beginscan(rel, pin_pkey_relid, true, NULL, 2, keys);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;
		char	   *shard_id = TextDatumGetCString(heap_getattr(tuple, Anum_pin_shard_id,
															  RelationGetDescr(rel), &isnull));
		bool		listed = false;

		foreach(lc, rows)
			if (strcmp(((ShardRow *) lfirst(lc))->shard_id, shard_id) == 0)
				listed = true;
		if (!listed)
		{
			ShardRow   *row = CatalogGetShard(shard_id);

			if (row != NULL)
				rows = lappend(rows, row);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return rows;
}

/*
 * CatalogShardChunk returns up to max consecutive shards in range order,
 * starting with the one owning or preceding tenant: the unit in which the
 * routing cache loads the catalog.
 */
List *
CatalogShardChunk(int64 tenant, int max)
{
	return scan_ranges(tenant, PG_INT64_MAX, max);
}

static LogicalTableRow *
logical_table_from_tuple(HeapTuple tuple, TupleDesc tupdesc)
{
	LogicalTableRow *row = palloc0(sizeof(LogicalTableRow));
	bool		isnull;
	Datum		d;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			i;

	row->relid = DatumGetObjectId(heap_getattr(tuple, Anum_logical_table_table_id,
											   tupdesc, &isnull));
	d = heap_getattr(tuple, Anum_logical_table_tenant_column, tupdesc, &isnull);
	row->tenant_column = pstrdup(NameStr(*DatumGetName(d)));
	d = heap_getattr(tuple, Anum_logical_table_shard_ddl, tupdesc, &isnull);
	arr = DatumGetArrayTypeP(d);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	for (i = 0; i < nelems; i++)
		if (!nulls[i])
			row->shard_ddl = lappend(row->shard_ddl, TextDatumGetCString(elems[i]));
	return row;
}

/*
 * CatalogGetLogicalTable returns the catalog row of relid, or NULL if relid
 * is not a logical table.
 */
LogicalTableRow *
CatalogGetLogicalTable(Oid relid)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	LogicalTableRow *row = NULL;

	lookup_oids(false);
	rel = table_open(logical_table_relid, AccessShareLock);
	ScanKeyInit(&key, Anum_logical_table_table_id, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, logical_table_pkey_relid, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		row = logical_table_from_tuple(tuple, RelationGetDescr(rel));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return row;
}

/*
 * CatalogLogicalTables returns every logical table whose relation still
 * exists, in OID order.
 */
List *
CatalogLogicalTables(void)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	List	   *rows = NIL;

	lookup_oids(false);
	rel = table_open(logical_table_relid, AccessShareLock);
	scan = systable_beginscan(rel, logical_table_pkey_relid, true, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		LogicalTableRow *row = logical_table_from_tuple(tuple, RelationGetDescr(rel));

		if (get_rel_relkind(row->relid) != '\0')
			rows = lappend(rows, row);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return rows;
}

/*
 * CatalogShardsWithIdentity returns the shards whose database has identity
 * db_identity, and those whose identity is not known (added before it was
 * kept), through the index on it: a plain index scan marks the dead rows a
 * flood of events leaves behind, so that the next one skips them.  A
 * catalog still at 0.1 has no identities: every shard is returned.
 */
List *
CatalogShardsWithIdentity(const char *db_identity)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	List	   *rows = NIL;

	lookup_oids(false);
	if (!OidIsValid(pin_relid))
		return CatalogAllShards();
	rel = table_open(shard_relid, AccessShareLock);
	for (int pass = 0; pass < 2; pass++)
	{
		if (pass == 0)
			ScanKeyInit(&key, Anum_shard_db_identity, BTEqualStrategyNumber, F_TEXTEQ,
						CStringGetTextDatum(db_identity));
		else
		{
			ScanKeyEntryInitialize(&key, SK_ISNULL | SK_SEARCHNULL, Anum_shard_db_identity,
								   InvalidStrategy, InvalidOid, InvalidOid, InvalidOid, (Datum) 0);
		}
		scan = systable_beginscan(rel, shard_identity_relid, true, NULL, 1, &key);
		while (HeapTupleIsValid(tuple = systable_getnext(scan)))
			rows = lappend(rows, shard_row_from_tuple(tuple, RelationGetDescr(rel)));
		systable_endscan(scan);
	}
	table_close(rel, AccessShareLock);
	return rows;
}

/*
 * CatalogShardRanges returns the shards whose range overlaps lo..hi, in
 * range order (pins aside): what a new range would overlap.
 */
List *
CatalogShardRanges(int64 lo, int64 hi)
{
	List	   *rows = NIL;
	ListCell   *lc;

	foreach(lc, scan_ranges(lo, hi, 0))
		if (((ShardRow *) lfirst(lc))->range_end >= lo)
			rows = lappend(rows, lfirst(lc));
	return rows;
}

/* CatalogPinsOf returns the tenants pinned to shard_id (int64 *), in order */
List *
CatalogPinsOf(const char *shard_id)
{
	ShardRow	row;

	memset(&row, 0, sizeof(row));
	row.shard_id = (char *) shard_id;
	CatalogLoadPins(&row, NULL);
	return row.pinned;
}

/* CatalogAllShards returns every shard, pin-only ones included. */
List *
CatalogAllShards(void)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	List	   *rows = NIL;

	lookup_oids(false);
	rel = table_open(shard_relid, AccessShareLock);
	scan = systable_beginscan(rel, shard_pkey_relid, true, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
		rows = lappend(rows, shard_row_from_tuple(tuple, RelationGetDescr(rel)));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return rows;
}

/* CatalogPins returns every pin, in tenant order. */
List *
CatalogPins(void)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	List	   *pins = NIL;

	lookup_oids(false);
	if (!OidIsValid(pin_relid))
		return NIL;
	rel = table_open(pin_relid, AccessShareLock);
	scan = systable_beginscan(rel, pin_pkey_relid, true, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		PinRow	   *pin = palloc(sizeof(PinRow));
		bool		isnull;

		pin->tenant = DatumGetInt64(heap_getattr(tuple, Anum_pin_tenant_id,
												 RelationGetDescr(rel), &isnull));
		pin->shard_id = TextDatumGetCString(heap_getattr(tuple, Anum_pin_shard_id,
														 RelationGetDescr(rel), &isnull));
		pins = lappend(pins, pin);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return pins;
}

/* TenantRemainder returns tenant mod modulus, in 0..modulus-1 for negative tenants too. */
int32
TenantRemainder(int64 tenant, int32 modulus)
{
	int64		r = tenant % modulus;

	return (int32) (r < 0 ? r + modulus : r);
}

/* ShardRangeOwns tells whether tenant is in the shard's range and remainder (pins aside). */
bool
ShardRangeOwns(const ShardRow *shard, int64 tenant)
{
	return shard->has_range && tenant >= shard->range_start && tenant <= shard->range_end &&
		TenantRemainder(tenant, shard->modulus) == shard->remainder;
}

static int
compare_tenants(const ListCell *a, const ListCell *b)
{
	int64		x = *(int64 *) lfirst(a);
	int64		y = *(int64 *) lfirst(b);

	return (x > y) - (x < y);
}

static List *
add_tenant(List *tenants, int64 tenant)
{
	int64	   *t = palloc(sizeof(int64));

	*t = tenant;
	return lappend(tenants, t);
}

/* TenantListWithout returns a list of tenants (int64 *) without tenant */
List *
TenantListWithout(List *tenants, int64 tenant)
{
	List	   *rest = NIL;
	ListCell   *lc;

	foreach(lc, tenants)
		if (*(int64 *) lfirst(lc) != tenant)
			rest = lappend(rest, lfirst(lc));
	return rest;
}

/* TenantListWith returns a sorted list of tenants with tenant, once, in order */
List *
TenantListWith(List *tenants, int64 tenant)
{
	tenants = add_tenant(TenantListWithout(tenants, tenant), tenant);
	list_sort(tenants, compare_tenants);
	return tenants;
}

/*
 * CatalogLoadPins loads the pins that change what shard owns: the tenants
 * pinned to it, and those of its range and remainder pinned elsewhere; with
 * also_shard_id, the pins of that shard count as pinned to this one (the
 * shard that a merge takes in).
 */
void
CatalogLoadPins(ShardRow *shard, const char *also_shard_id)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData keys[2];
	HeapTuple	tuple;

	shard->pinned = NIL;
	shard->pinned_away = NIL;
	shard->pins_known = true;
	lookup_oids(false);
	if (!OidIsValid(pin_relid))
		return;
	rel = table_open(pin_relid, AccessShareLock);

	/* pinned to it (or to also_shard_id): index (shard_id, tenant_id) */
	for (int pass = 0; pass < (also_shard_id ? 2 : 1); pass++)
	{
		ScanKeyInit(&keys[0], Anum_pin_shard_id, BTEqualStrategyNumber, F_TEXTEQ,
					CStringGetTextDatum(pass == 0 ? shard->shard_id : also_shard_id));
		scan = systable_beginscan(rel, pin_shard_relid, true, NULL, 1, keys);
		while (HeapTupleIsValid(tuple = systable_getnext(scan)))
		{
			bool		isnull;

			shard->pinned = add_tenant(shard->pinned,
									   DatumGetInt64(heap_getattr(tuple, Anum_pin_tenant_id,
																  RelationGetDescr(rel), &isnull)));
		}
		systable_endscan(scan);
	}
	/* in tenant order, so that the condition's text is always the same */
	list_sort(shard->pinned, compare_tenants);

	/* of its range, pinned elsewhere: index on tenant_id */
	if (shard->has_range)
	{
		ScanKeyInit(&keys[0], Anum_pin_tenant_id, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(shard->range_start));
		ScanKeyInit(&keys[1], Anum_pin_tenant_id, BTLessEqualStrategyNumber, F_INT8LE,
					Int64GetDatum(shard->range_end));
		scan = systable_beginscan(rel, pin_pkey_relid, true, NULL, 2, keys);
		while (HeapTupleIsValid(tuple = systable_getnext(scan)))
		{
			bool		isnull;
			int64		tenant = DatumGetInt64(heap_getattr(tuple, Anum_pin_tenant_id,
															RelationGetDescr(rel), &isnull));
			char	   *shard_id = TextDatumGetCString(heap_getattr(tuple, Anum_pin_shard_id,
																  RelationGetDescr(rel), &isnull));

			if (strcmp(shard_id, shard->shard_id) != 0 &&
				(also_shard_id == NULL || strcmp(shard_id, also_shard_id) != 0) &&
				ShardRangeOwns(shard, tenant))
				shard->pinned_away = add_tenant(shard->pinned_away, tenant);
		}
		systable_endscan(scan);
	}
	table_close(rel, AccessShareLock);
}

/* append_tenants appends the tenants as an SQL list */
static void
append_tenants(StringInfo buf, List *tenants)
{
	ListCell   *lc;

	foreach(lc, tenants)
		appendStringInfo(buf, "%s" INT64_FORMAT, lc == list_head(tenants) ? "" : ", ",
						 *(int64 *) lfirst(lc));
}

/*
 * ShardOwnsSql returns the SQL condition on tenant_column (an expression,
 * quoted already) that is true exactly for the tenants the shard owns now:
 * its range, its remainder by its modulus, the tenants of both pinned
 * elsewhere left out, those pinned to it added.  It is the one description
 * of a shard's tenants, used for its tables' CHECK constraint, the rows its
 * cleanup deletes, the row filter of an online operation and the FDW's
 * scans of the shard.  Pins not loaded yet are read from the catalog.  The
 * text is deterministic (tenants in order), so that two coordinators
 * describing the same shard write the same constraint.
 */
char *
ShardOwnsSql(const ShardRow *shard, const char *tenant_column)
{
	StringInfoData buf;

	if (!shard->pins_known)
	{
		ShardRow   *loaded = palloc(sizeof(ShardRow));

		*loaded = *shard;
		CatalogLoadPins(loaded, NULL);
		shard = loaded;
	}
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	if (shard->has_range)
	{
		bool		wrap = shard->pinned != NIL;

		appendStringInfo(&buf, "%s%s >= " INT64_FORMAT " AND %s <= " INT64_FORMAT,
						 wrap ? "(" : "", tenant_column, shard->range_start,
						 tenant_column, shard->range_end);
		if (shard->modulus > 1)
			appendStringInfo(&buf, " AND (%s %% %d + %d) %% %d = %d", tenant_column,
							 shard->modulus, shard->modulus, shard->modulus, shard->remainder);
		if (shard->pinned_away != NIL)
		{
			appendStringInfo(&buf, " AND %s NOT IN (", tenant_column);
			append_tenants(&buf, shard->pinned_away);
			appendStringInfoChar(&buf, ')');
		}
		if (wrap)
			appendStringInfoString(&buf, ") OR ");
	}
	if (shard->pinned != NIL)
	{
		appendStringInfo(&buf, "%s IN (", tenant_column);
		append_tenants(&buf, shard->pinned);
		appendStringInfoChar(&buf, ')');
	}
	else if (!shard->has_range)
		appendStringInfoString(&buf, "false");
	appendStringInfoChar(&buf, ')');
	return buf.data;
}
