/*-------------------------------------------------------------------------
 *
 * route_cache.c
 *	  Per-backend routing cache: which shard owns a tenant, and which
 *	  relations are logical tables.
 *
 * Ranges are loaded lazily, in chunks of consecutive ranges read through the
 * catalog's range_start index, so that a new session pays for the ranges it
 * routes to, not for the size of the catalog; a backend that keeps missing
 * loads the whole catalog in one ordered scan instead.  A loaded range costs
 * its array entries and its shard_id; DSN strings are stored once however
 * many shards share them (many shards per server is the common layout).
 *
 * A lookup first looks the tenant up among the pinned tenants (a hash
 * table of every pin, loaded with the cache: O(1)); then it picks a bucket
 * of an index that spreads the loaded range starts over as many equal-width
 * buckets as there are ranges, and bisects within the bucket: O(log n) at
 * worst, a couple of memory accesses when ranges are of similar width,
 * whatever their number.  Shards sharing one range by modulo are one entry
 * whose table, indexed by the tenant's remainder by the largest modulus,
 * gives the shard (the moduli of a range divide one another); a remainder
 * without a shard is an error naming the tenant.
 *
 * Invariants: the arrays hold non-overlapping ranges sorted by range_start;
 * the pins are loaded whole, with the cache;
 * any relcache invalidation of the catalog tables (sent at commit by the
 * catalog triggers, and locally at the next command of the transaction that
 * made the change) marks the cache stale, and the next lookup starts from an
 * empty cache.  A ShardRoute stays valid until the next RouteTenant call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "commands/trigger.h"
#include "foreign/fdwapi.h"
#include "foreign/foreign.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "tenant_router/catalog.h"
#include "tenant_router/reference_catalog.h"
#include "tenant_router/route_cache.h"

/* ranges loaded per catalog probe */
#define RANGE_CHUNK 64
/* probes after which a backend loads every range at once */
#define FULL_LOAD_AFTER_MISSES 16

static MemoryContext RouteCacheContext = NULL;
static bool route_cache_stale = true;
static HTAB *dsn_hash = NULL;		/* interned DSN strings */
/* what a lookup reads, kept apart from the routes for locality */
typedef struct RangeKey
{
	int64		start;
	int64		end;
} RangeKey;

/* the shards sharing a range: by_remainder[t mod modulus] */
typedef struct RouteGroup
{
	int32		modulus;		/* the largest of the shards' moduli */
	ShardRoute **by_remainder;	/* NULL where no shard has the remainder */
} RouteGroup;

/* a pinned tenant */
typedef struct PinEntry
{
	int64		tenant;			/* hash key */
	ShardRoute *route;
} PinEntry;

static RangeKey *range_keys = NULL;
static ShardRoute *range_routes = NULL;
static RouteGroup **range_groups = NULL;	/* NULL entry: one shard */
static HTAB *pin_hash = NULL;	/* NULL: no pins */
static bool pins_loaded = false;
static int	range_count = 0;
static bool range_complete = false;	/* every range of the catalog is loaded */
static int	range_misses = 0;		/* catalog probes since the last reset */

/* bucket index over the range starts: bucket b holds starts in
 * [bucket_base + b * bucket_width, bucket_base + (b + 1) * bucket_width) */
static uint32 *bucket_first = NULL; /* [b]: first range in bucket >= b */
static int	bucket_count = 0;
static int64 bucket_base = 0;
static uint64 bucket_width = 1;

/* an interned DSN */
typedef struct DsnEntry
{
	uint64		key;			/* hash of the string */
	char	   *dsn;
} DsnEntry;

static HTAB *table_hash = NULL;

PG_FUNCTION_INFO_V1(tenant_router_catalog_changed);

static void
route_cache_reset(void)
{
	if (RouteCacheContext == NULL)
		RouteCacheContext = AllocSetContextCreate(CacheMemoryContext,
												  "tenant_router route cache",
												  ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(RouteCacheContext);
	dsn_hash = NULL;
	range_keys = NULL;
	range_routes = NULL;
	range_groups = NULL;
	pin_hash = NULL;
	pins_loaded = false;
	range_count = 0;
	range_complete = false;
	range_misses = 0;
	bucket_first = NULL;
	bucket_count = 0;
	route_cache_stale = false;
}

static void
relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || CatalogIsCatalogRelation(relid) ||
		ReferenceCatalogIsRelation(relid))
	{
		route_cache_stale = true;
		if (table_hash != NULL)
		{
			hash_destroy(table_hash);
			table_hash = NULL;
		}
		/* the relations may be new ones (ALTER EXTENSION UPDATE) */
		CatalogForgetOids();
		if (relid == InvalidOid)
			ReferenceCatalogForgetOids();
	}
	else if (table_hash != NULL)
		hash_search(table_hash, &relid, HASH_REMOVE, NULL);
}

static void
server_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	/* a dropped or recreated server: forget its OID and every table */
	CatalogForgetOids();
	ReferenceCatalogForgetOids();
	route_cache_stale = true;
	if (table_hash != NULL)
	{
		hash_destroy(table_hash);
		table_hash = NULL;
	}
}

/* RouteCacheInit registers the invalidation callbacks; called from _PG_init. */
void
RouteCacheInit(void)
{
	CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(FOREIGNSERVEROID, server_callback, (Datum) 0);
}

/* intern_dsn returns the cache's copy of dsn, shared by equal DSNs */
static char *
intern_dsn(const char *dsn)
{
	uint64		key = hash_bytes_extended((const unsigned char *) dsn, strlen(dsn), 0);
	DsnEntry   *entry;
	bool		found;

	if (dsn_hash == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(DsnEntry);
		ctl.hcxt = RouteCacheContext;
		dsn_hash = hash_create("tenant_router DSNs", 16, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(dsn_hash, &key, HASH_ENTER, &found);
	if (!found)
		entry->dsn = MemoryContextStrdup(RouteCacheContext, dsn);
	else if (strcmp(entry->dsn, dsn) != 0)
		return MemoryContextStrdup(RouteCacheContext, dsn);	/* collision */
	return entry->dsn;
}

/* build_buckets rebuilds the bucket index after the arrays changed */
static void
build_buckets(void)
{
	int			i;
	int			b = 0;

	if (bucket_first != NULL)
		pfree(bucket_first);
	bucket_count = Max(range_count, 1);
	bucket_first = MemoryContextAlloc(RouteCacheContext, sizeof(uint32) * (bucket_count + 1));
	bucket_base = range_count > 0 ? range_keys[0].start : 0;
	bucket_width = range_count > 0 ?
		((uint64) range_keys[range_count - 1].start - (uint64) bucket_base) / bucket_count + 1 : 1;
	for (i = 0; i < range_count; i++)
	{
		uint64		bi = ((uint64) range_keys[i].start - (uint64) bucket_base) / bucket_width;

		while (b <= (int) bi)
			bucket_first[b++] = i;
	}
	while (b <= bucket_count)
		bucket_first[b++] = range_count;
}

/* find_start returns the index of the last range starting at or before tenant, or -1 */
static inline int
find_start(int64 tenant)
{
	uint64		bi;
	int			lo;
	int			hi;
	int			found;

	if (range_count == 0 || tenant < range_keys[0].start)
		return -1;
	if (tenant >= range_keys[range_count - 1].start)
		return range_count - 1;
	bi = ((uint64) tenant - (uint64) bucket_base) / bucket_width;
	if (bi >= (uint64) bucket_count)
		bi = bucket_count - 1;
	/* the answer is the last start <= tenant in the bucket, or the one before it */
	lo = bucket_first[bi];
	hi = bucket_first[bi + 1] - 1;
	found = lo - 1;
	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (range_keys[mid].start <= tenant)
		{
			found = mid;
			lo = mid + 1;
		}
		else
			hi = mid - 1;
	}
	return found;
}

/* ranged_only returns the rows of shards that have a range */
static List *
ranged_only(List *rows)
{
	List	   *ranged = NIL;
	ListCell   *lc;

	foreach(lc, rows)
		if (((ShardRow *) lfirst(lc))->has_range)
			ranged = lappend(ranged, lfirst(lc));
	return ranged;
}

/* route_from_row fills a route from a catalog row */
static void
route_from_row(ShardRoute *route, const ShardRow *row)
{
	route->range_start = row->range_start;
	route->range_end = row->range_end;
	route->shard_id = MemoryContextStrdup(RouteCacheContext, row->shard_id);
	route->dsn = intern_dsn(row->dsn);
	route->has_range = row->has_range;
	route->modulus = row->modulus;
	route->remainder = row->remainder;
}

/*
 * make_group returns the table of the shards sharing one range (rows from
 * first, n of them): each shard fills the remainders by the largest
 * modulus that are its remainder by its own.
 */
static RouteGroup *
make_group(ListCell *first, List *rows, int n)
{
	RouteGroup *group = MemoryContextAllocZero(RouteCacheContext, sizeof(RouteGroup));
	ListCell   *lc = first;
	int32		modulus = 1;

	for (int i = 0; i < n; i++, lc = lnext(rows, lc))
		modulus = Max(modulus, ((ShardRow *) lfirst(lc))->modulus);
	group->modulus = modulus;
	group->by_remainder = MemoryContextAllocZero(RouteCacheContext, sizeof(ShardRoute *) * modulus);
	lc = first;
	for (int i = 0; i < n; i++, lc = lnext(rows, lc))
	{
		ShardRow   *row = lfirst(lc);
		ShardRoute *route = MemoryContextAlloc(RouteCacheContext, sizeof(ShardRoute));

		route_from_row(route, row);
		for (int r = row->remainder; r < modulus; r += row->modulus)
			group->by_remainder[r] = route;
	}
	return group;
}

/*
 * merge_chunk merges rows (sorted by range_start, the shards of a range
 * together) into the arrays
 */
static void
merge_chunk(List *rows)
{
	int			cap = range_count + list_length(rows);
	RangeKey   *keys = MemoryContextAlloc(RouteCacheContext, sizeof(RangeKey) * cap);
	ShardRoute *routes = MemoryContextAllocZero(RouteCacheContext, sizeof(ShardRoute) * cap);
	RouteGroup **groups = MemoryContextAllocZero(RouteCacheContext, sizeof(RouteGroup *) * cap);
	int			i = 0;
	int			n = 0;
	ListCell   *lc = list_head(rows);

	while (i < range_count || lc != NULL)
	{
		ShardRow   *row = lc ? (ShardRow *) lfirst(lc) : NULL;
		ListCell   *first = lc;
		int			members = 0;

		if (row == NULL || (i < range_count && range_keys[i].start <= row->range_start))
		{
			/* loaded already: skip the rows of the same range */
			while (lc != NULL && row != NULL && range_keys[i].start == row->range_start)
			{
				lc = lnext(rows, lc);
				row = lc ? (ShardRow *) lfirst(lc) : NULL;
			}
			keys[n] = range_keys[i];
			groups[n] = range_groups[i];
			routes[n++] = range_routes[i++];
			continue;
		}
		while (lc != NULL && ((ShardRow *) lfirst(lc))->range_start == row->range_start)
		{
			members++;
			lc = lnext(rows, lc);
		}
		keys[n].start = row->range_start;
		keys[n].end = row->range_end;
		route_from_row(&routes[n], row);
		if (members > 1 || row->modulus > 1)
			groups[n] = make_group(first, rows, members);
		n++;
	}

	if (range_keys)
	{
		pfree(range_keys);
		pfree(range_routes);
		pfree(range_groups);
	}
	range_keys = keys;
	range_routes = routes;
	range_groups = groups;
	range_count = n;
	build_buckets();
}

/* load_pins loads every pin, and the shards they name */
static void
load_pins(void)
{
	List	   *pins = CatalogPins();
	HTAB	   *routes;
	HASHCTL		ctl;
	ListCell   *lc;

	pins_loaded = true;
	if (pins == NIL)
		return;
	ctl.keysize = SHARD_ID_MAXLEN;
	ctl.entrysize = SHARD_ID_MAXLEN + sizeof(ShardRoute *);
	ctl.hcxt = CurrentMemoryContext;
	routes = hash_create("tenant_router pinned shards", 16, &ctl,
						 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(PinEntry);
	ctl.hcxt = RouteCacheContext;
	pin_hash = hash_create("tenant_router pins", list_length(pins), &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	foreach(lc, pins)
	{
		PinRow	   *pin = lfirst(lc);
		char		key[SHARD_ID_MAXLEN];
		ShardRoute **route;
		PinEntry   *entry;
		bool		found;

		strlcpy(key, pin->shard_id, sizeof(key));
		route = (ShardRoute **) ((char *) hash_search(routes, key, HASH_ENTER, &found) +
								 SHARD_ID_MAXLEN);
		if (!found)
		{
			ShardRow   *row = CatalogGetShard(pin->shard_id);

			*route = NULL;
			if (row != NULL)
			{
				*route = MemoryContextAlloc(RouteCacheContext, sizeof(ShardRoute));
				route_from_row(*route, row);
			}
		}
		if (*route == NULL)
			continue;			/* a pin to a shard that is gone: no owner */
		entry = hash_search(pin_hash, &pin->tenant, HASH_ENTER, &found);
		entry->route = *route;
	}
	hash_destroy(routes);
}

/*
 * why_none: when RouteTenant last returned NULL for a tenant of a range
 * shared by modulo, why (for RouteTenantOrError's message), else NULL
 */
static char *why_none = NULL;

/* route_in returns the shard of range entry i that owns tenant, or NULL */
static ShardRoute *
route_in(int i, int64 tenant)
{
	RouteGroup *group = range_groups[i];
	ShardRoute *route;

	if (group == NULL)
		return &range_routes[i];
	route = group->by_remainder[TenantRemainder(tenant, group->modulus)];
	if (route == NULL)
		why_none = MemoryContextStrdup(RouteCacheContext,
									   psprintf("The shards of range " INT64_FORMAT ".." INT64_FORMAT
												" share it by the tenant's remainder by %d, and no shard has remainder %d.",
												range_keys[i].start, range_keys[i].end, group->modulus,
												TenantRemainder(tenant, group->modulus)));
	return route;
}

/*
 * RouteTenant returns the shard that owns tenant, or NULL if no shard does
 * (a tenant of a range shared by modulo whose remainder has no shard
 * included).  The result is valid until the next call.
 */
ShardRoute *
RouteTenant(int64 tenant)
{
	int			i;
	List	   *rows;
	bool		full_load;

	why_none = NULL;
	if (route_cache_stale)
		route_cache_reset();
	if (!pins_loaded)
	{
		load_pins();
		if (route_cache_stale)
			return RouteTenant(tenant); /* invalidated while reading */
	}
	if (pin_hash != NULL)
	{
		PinEntry   *pin = hash_search(pin_hash, &tenant, HASH_FIND, NULL);

		if (pin != NULL)
			return pin->route;
	}

	i = find_start(tenant);
	if (i >= 0 && tenant <= range_keys[i].end)
		return route_in(i, tenant);
	if (range_complete)
		return NULL;			/* no shard owns it */

	/* not loaded yet, or not owned: ask the catalog */
	full_load = (++range_misses > FULL_LOAD_AFTER_MISSES);
	rows = full_load ? CatalogShardRanges(PG_INT64_MIN, PG_INT64_MAX) :
		CatalogShardChunk(tenant, RANGE_CHUNK);
	if (route_cache_stale)
		return RouteTenant(tenant); /* invalidated while reading */
	if (full_load)
		range_complete = true;
	rows = ranged_only(rows);
	if (rows == NIL)
		return NULL;
	merge_chunk(rows);
	list_free_deep(rows);

	i = find_start(tenant);
	if (i >= 0 && tenant <= range_keys[i].end)
		return route_in(i, tenant);
	return NULL;
}

/*
 * LookupRouterTable returns what the router needs to know about relid, or
 * NULL if relid is neither a logical table nor a reference table (a
 * foreign table of server tenant_router with a row in
 * tenant_router.logical_table or tenant_router.reference_table).
 */
LogicalTable *
LookupRouterTable(Oid relid)
{
	LogicalTable *table;
	bool		found;
	Oid			serverid;
	LogicalTableRow *row;
	bool		is_reference = false;
	LogicalTable entry;

	if (table_hash == NULL)
	{
		HASHCTL		ctl;

		if (RouteCacheContext == NULL)
			route_cache_reset();
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(LogicalTable);
		ctl.hcxt = CacheMemoryContext;
		table_hash = hash_create("tenant_router logical tables", 32, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	table = hash_search(table_hash, &relid, HASH_FIND, &found);
	if (found)
		return table->is_logical ? table : NULL;

	serverid = CatalogServerOid();
	row = NULL;
	if (OidIsValid(serverid) && get_rel_relkind(relid) == RELKIND_FOREIGN_TABLE &&
		GetForeignServerIdByRelId(relid) == serverid)
	{
		row = CatalogGetLogicalTable(relid);
		is_reference = (row == NULL && CatalogGetReferenceTable(relid) != NULL);
	}

	/* the lookups above may have processed invalidations */
	if (table_hash == NULL)
		return LookupRouterTable(relid);

	memset(&entry, 0, sizeof(entry));
	entry.relid = relid;
	if (row != NULL || is_reference)
	{
		Relation	rel = table_open(relid, AccessShareLock);

		if (row != NULL)
		{
			AttrNumber	attno = get_attnum(relid, row->tenant_column);

			if (attno == InvalidAttrNumber)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("tenant column \"%s\" of logical table \"%s\" does not exist",
								row->tenant_column, RelationGetRelationName(rel))));
			entry.tenant_attno = attno;
			entry.tenant_type = get_atttype(relid, attno);
			entry.tenant_column = MemoryContextStrdup(CacheMemoryContext,
													  quote_identifier(row->tenant_column));
		}
		entry.is_logical = true;
		entry.is_reference = is_reference;
		entry.remote_name =
			MemoryContextStrdup(CacheMemoryContext,
								quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
														   RelationGetRelationName(rel)));
		entry.has_triggers = (rel->trigdesc != NULL);
		entry.has_generated = (RelationGetDescr(rel)->constr != NULL &&
							   RelationGetDescr(rel)->constr->has_generated_stored);
		table_close(rel, AccessShareLock);
	}

	/* the lookups above may have processed invalidations */
	if (table_hash == NULL)
		return LookupRouterTable(relid);
	table = hash_search(table_hash, &relid, HASH_ENTER, &found);
	*table = entry;
	return table->is_logical ? table : NULL;
}

/*
 * LookupLogicalTable is LookupRouterTable for logical tables only: NULL for
 * a reference table too.
 */
LogicalTable *
LookupLogicalTable(Oid relid)
{
	LogicalTable *table = LookupRouterTable(relid);

	return table != NULL && !table->is_reference ? table : NULL;
}

/*
 * tenant_router_catalog_changed is the statement trigger on the catalog
 * tables: it invalidates the routing cache of every backend once the change
 * commits, and of this backend at its next command.
 */
Datum
tenant_router_catalog_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tenant_router.catalog_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	PG_RETURN_POINTER(NULL);
}

/* TenantDatumToInt64 widens a tenant value of type int2, int4 or int8. */
int64
TenantDatumToInt64(Datum value, Oid typid)
{
	switch (typid)
	{
		case INT2OID:
			return DatumGetInt16(value);
		case INT4OID:
			return DatumGetInt32(value);
		case INT8OID:
			return DatumGetInt64(value);
		default:
			elog(ERROR, "tenant_router: tenant value of unexpected type %u", typid);
	}
	return 0;					/* not reached */
}

/*
 * RouteTenantOrError returns the shard that owns tenant, or raises the error
 * of a statement on logical table table_name (NULL: none to name) for a
 * tenant that no shard owns.  Its SQLSTATE is 23514 (check_violation) for a
 * row to insert, which fits no shard's range as a row can fit no partition,
 * and 55000 (object_not_in_prerequisite_state) for a statement that reads the
 * tenant's rows (SELECT, UPDATE, DELETE): the topology does not cover the
 * tenant yet, which retrying will not change until a shard is added.
 */
ShardRoute *
RouteTenantOrError(int64 tenant, const char *table_name, bool inserting)
{
	ShardRoute *route = RouteTenant(tenant);

	if (route == NULL)
		ereport(ERROR,
				(errcode(inserting ? ERRCODE_CHECK_VIOLATION :
						 ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no shard owns tenant " INT64_FORMAT, tenant),
				 why_none != NULL ? errdetail_internal("%s", why_none) :
				 table_name == NULL ? 0 :
				 inserting ?
				 errdetail("The row was to be inserted into logical table \"%s\".", table_name) :
				 errdetail("The statement is for this tenant's rows of logical table \"%s\".",
						   table_name),
				 why_none != NULL ?
				 errhint("Add a shard for that remainder with shard_add(..., modulus, remainder).") :
				 errhint("Add a shard whose range includes the tenant with shard_add(), or widen a shard's range with shard_update_range().")));
	return route;
}
