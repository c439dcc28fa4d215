/*-------------------------------------------------------------------------
 *
 * tenant_count.c
 *	  The aggregate tenant_router.count_distinct_tenant(bigint): the number
 *	  of distinct tenants, computable in parts because a tenant's rows never
 *	  span shards.
 *
 * count(DISTINCT tenant column) is replaced by it (planner/
 * aggregate_rewrite.c) when a statement is not sent whole to one shard.
 * Its state is a count of tenants already known distinct from every other
 * part, plus a set of the tenants seen here.  Computed on the coordinator
 * over rows, the set does the work: the answer is exactly count(DISTINCT).
 * Pushed to the shards (fdw/partial_agg.c), each shard returns its
 * count(DISTINCT) as a state with that count and an empty set; combining
 * adds the counts and unites the sets, which is exact since no tenant is on
 * two shards.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "tenant_router/tenant_count.h"

PG_FUNCTION_INFO_V1(tenant_router_tenant_count_accum);
PG_FUNCTION_INFO_V1(tenant_router_tenant_count_combine);
PG_FUNCTION_INFO_V1(tenant_router_tenant_count_serialize);
PG_FUNCTION_INFO_V1(tenant_router_tenant_count_deserialize);
PG_FUNCTION_INFO_V1(tenant_router_tenant_count_final);

typedef struct TenantCountState
{
	int64		known;			/* tenants counted by parts disjoint from the rest */
	HTAB	   *seen;			/* int64 keys: tenants seen here; NULL: none yet */
	MemoryContext cxt;			/* where seen goes */
} TenantCountState;

/*
 * new_state makes an empty state; its set is made with the first tenant,
 * so that the states of the shards' parts (a count, no set), one per group,
 * cost no hash table each.
 */
static TenantCountState *
new_state(MemoryContext cxt)
{
	TenantCountState *state = MemoryContextAllocZero(cxt, sizeof(TenantCountState));

	state->cxt = cxt;
	return state;
}

/* see adds a tenant to the state's set */
static void
see(TenantCountState *state, int64 tenant)
{
	if (state->seen == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(int64);
		ctl.hcxt = state->cxt;
		state->seen = hash_create("tenant_router tenants", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	(void) hash_search(state->seen, &tenant, HASH_ENTER, NULL);
}

static int64
seen_count(TenantCountState *state)
{
	return state->seen ? hash_get_num_entries(state->seen) : 0;
}

static MemoryContext
agg_context(FunctionCallInfo fcinfo)
{
	MemoryContext cxt;

	if (!AggCheckCallContext(fcinfo, &cxt))
		elog(ERROR, "tenant_router: aggregate function called in non-aggregate context");
	return cxt;
}

Datum
tenant_router_tenant_count_accum(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = agg_context(fcinfo);
	TenantCountState *state = PG_ARGISNULL(0) ? new_state(cxt) :
		(TenantCountState *) PG_GETARG_POINTER(0);

	if (!PG_ARGISNULL(1))
	{
		see(state, PG_GETARG_INT64(1));
	}
	PG_RETURN_POINTER(state);
}

Datum
tenant_router_tenant_count_combine(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = agg_context(fcinfo);
	TenantCountState *state = PG_ARGISNULL(0) ? NULL : (TenantCountState *) PG_GETARG_POINTER(0);
	TenantCountState *other = PG_ARGISNULL(1) ? NULL : (TenantCountState *) PG_GETARG_POINTER(1);
	HASH_SEQ_STATUS status;
	int64	   *tenant;

	if (other == NULL)
	{
		if (state == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(state);
	}
	if (state == NULL)
		state = new_state(cxt);
	state->known += other->known;
	if (other->seen != NULL)
	{
		hash_seq_init(&status, other->seen);
		while ((tenant = hash_seq_search(&status)) != NULL)
			see(state, *tenant);
	}
	PG_RETURN_POINTER(state);
}

Datum
tenant_router_tenant_count_serialize(PG_FUNCTION_ARGS)
{
	TenantCountState *state = (TenantCountState *) PG_GETARG_POINTER(0);
	StringInfoData buf;
	HASH_SEQ_STATUS status;
	int64	   *tenant;

	(void) agg_context(fcinfo);
	pq_begintypsend(&buf);
	pq_sendint64(&buf, state->known);
	pq_sendint64(&buf, seen_count(state));
	if (state->seen != NULL)
	{
		hash_seq_init(&status, state->seen);
		while ((tenant = hash_seq_search(&status)) != NULL)
			pq_sendint64(&buf, *tenant);
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

Datum
tenant_router_tenant_count_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = agg_context(fcinfo);
	bytea	   *bytes = PG_GETARG_BYTEA_PP(0);
	TenantCountState *state = new_state(cxt);
	StringInfoData buf;
	int64		n;

	buf.data = VARDATA_ANY(bytes);
	buf.len = VARSIZE_ANY_EXHDR(bytes);
	buf.maxlen = buf.len;
	buf.cursor = 0;
	state->known = pq_getmsgint64(&buf);
	n = pq_getmsgint64(&buf);
	while (n-- > 0)
		see(state, pq_getmsgint64(&buf));
	pq_getmsgend(&buf);
	PG_RETURN_POINTER(state);
}

Datum
tenant_router_tenant_count_final(PG_FUNCTION_ARGS)
{
	TenantCountState *state = PG_ARGISNULL(0) ? NULL : (TenantCountState *) PG_GETARG_POINTER(0);

	if (state == NULL)
		PG_RETURN_INT64(0);
	PG_RETURN_INT64(state->known + seen_count(state));
}

/*
 * TenantCountSerialized returns the serialized state of a part whose
 * distinct tenants are count, all distinct from every other part's.
 */
Datum
TenantCountSerialized(int64 count)
{
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint64(&buf, count);
	pq_sendint64(&buf, 0);
	return PointerGetDatum(pq_endtypsend(&buf));
}

/*
 * TenantCountAggOid returns the OID of tenant_router.count_distinct_tenant
 * (bigint), or InvalidOid where the extension does not have it (not yet
 * updated to 0.2).
 */
Oid
TenantCountAggOid(void)
{
	Oid			nspid = get_namespace_oid("tenant_router", true);
	Oid			argtypes[1] = {INT8OID};

	if (!OidIsValid(nspid))
		return InvalidOid;
	return LookupFuncName(list_make2(makeString("tenant_router"),
									 makeString("count_distinct_tenant")),
						  1, argtypes, true);
}
