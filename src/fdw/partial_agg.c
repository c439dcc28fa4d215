/*-------------------------------------------------------------------------
 *
 * partial_agg.c
 *	  Aggregates computed in two phases over the shards: what each shard
 *	  computes so that the coordinator's Finalize Aggregate, with
 *	  PostgreSQL's own combine and final functions, gives the answer one
 *	  server would.
 *
 * A shard is plain PostgreSQL: it can only be sent SQL, not asked for an
 * aggregate's internal transition state.  So an aggregate is pushed down
 * only where its partial state (what the Finalize Aggregate combines) can
 * be had from SQL:
 *
 *	 PARTIAL_SAME		no final function and a transition type equal to
 *						the result type (count, sum of int2/int4/float/
 *						money/interval, min, max, bool_and/or, bit_and/or):
 *						the shard's aggregate is the state.
 *	 PARTIAL_INT_AVG	avg(int2/int4): the state int8[] {count, sum}.
 *	 PARTIAL_FLOAT		the float8[] {N, Sx, Sxx} of avg, variance and
 *						stddev of float4/float8 (Sxx from var_pop * N).
 *	 PARTIAL_SUM_STATE	sum and avg of int8 and numeric, whose state is
 *						internal: the coordinator builds it with the
 *						aggregate's own transition function fed the shard's
 *						sum, serializes it with its own serial function,
 *						and sets the count (the first field of that
 *						serialization) to the shard's count.
 *	 PARTIAL_TENANT_COUNT	tenant_router.count_distinct_tenant (what
 *						count(DISTINCT tenant column) becomes): the shard's
 *						count(DISTINCT), a count no other shard shares.
 *
 * Any other aggregate (string_agg, array_agg, ordered or DISTINCT ones) is
 * not pushed down this way, and the statement runs with the rows pulled.
 *
 * Invariant: a state built here is what the aggregate's transition would
 * have produced on the shard's rows, up to float rounding (PARTIAL_FLOAT);
 * numeric and integer results are exact.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_aggregate.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/execnodes.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "tenant_router/partial_agg.h"
#include "tenant_router/tenant_count.h"

/* what pg_aggregate says of an aggregate */
typedef struct AggInfoRow
{
	Oid			transfn;
	Oid			finalfn;
	Oid			combinefn;
	Oid			serialfn;
	Oid			transtype;
} AggInfoRow;

static bool
agg_info(Oid aggfnoid, AggInfoRow *info)
{
	HeapTuple	tuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggfnoid));
	Form_pg_aggregate agg;

	if (!HeapTupleIsValid(tuple))
		return false;
	agg = (Form_pg_aggregate) GETSTRUCT(tuple);
	info->transfn = agg->aggtransfn;
	info->finalfn = agg->aggfinalfn;
	info->combinefn = agg->aggcombinefn;
	info->serialfn = agg->aggserialfn;
	info->transtype = agg->aggtranstype;
	ReleaseSysCache(tuple);
	return true;
}

static Datum sum_state(Oid aggfnoid, const char *sum_text, int64 count, bool *isnull);
static AggState *fake_agg(MemoryContext aggcxt);
static Datum call_in_agg(AggState *agg, Oid fn, int nargs, Datum *args, bool *nulls,
						 bool *isnull);

/*
 * sum_state_works checks, once per aggregate and backend, that a state
 * built by sum_state finalizes to what the aggregate would return (sum 6
 * over 4 rows: a sum of 6, an average of 1.5): the serialization is
 * PostgreSQL's, and this is where a change of it would show.
 */
static bool
sum_state_works(Oid aggfnoid)
{
	static Oid	checked[16];
	static bool result[16];
	static int	nchecked = 0;
	HeapTuple	tuple;
	Oid			deserialfn;
	Oid			finalfn;
	Datum		args[2] = {(Datum) 0, (Datum) 0};
	bool		nulls[2] = {false, true};
	bool		isnull;
	Datum		value;
	char	   *name;
	char	   *text;
	int			i;
	bool		ok;

	for (i = 0; i < nchecked; i++)
		if (checked[i] == aggfnoid)
			return result[i];
	tuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggfnoid));
	if (!HeapTupleIsValid(tuple))
		return false;
	deserialfn = ((Form_pg_aggregate) GETSTRUCT(tuple))->aggdeserialfn;
	finalfn = ((Form_pg_aggregate) GETSTRUCT(tuple))->aggfinalfn;
	ReleaseSysCache(tuple);
	name = get_func_name(aggfnoid);

	args[0] = sum_state(aggfnoid, "6", 4, &isnull);
	ok = !isnull && OidIsValid(deserialfn) && OidIsValid(finalfn);
	if (ok)
	{
		AggState   *agg = fake_agg(CurrentMemoryContext);

		args[0] = call_in_agg(agg, deserialfn, 2, args, nulls, &isnull);
		nulls[0] = isnull;
		value = call_in_agg(agg, finalfn, 1, args, nulls, &isnull);
		text = isnull ? "" : DatumGetCString(DirectFunctionCall1(numeric_out, value));
		ok = strcmp(text, strcmp(name, "avg") == 0 ? "1.5000000000000000" : "6") == 0;
		if (!ok)
			elog(DEBUG1, "tenant_router: aggregate %s(%u) is not computed in parts: its state check gave %s",
				 name, aggfnoid, text);
	}
	if (nchecked < lengthof(checked))
	{
		checked[nchecked] = aggfnoid;
		result[nchecked++] = ok;
	}
	return ok;
}

/*
 * PartialAggKindOf returns how the shards compute aggref's partial state,
 * or PARTIAL_NONE.
 */
PartialKind
PartialAggKindOf(Aggref *aggref)
{
	AggInfoRow	info;

	if (aggref->aggorder != NIL || aggref->aggdistinct != NIL ||
		aggref->aggkind != AGGKIND_NORMAL || aggref->agglevelsup != 0 ||
		list_length(aggref->args) > 1 || aggref->aggvariadic)
		return PARTIAL_NONE;
	if (aggref->aggfnoid >= FirstGenbkiObjectId)
		return aggref->aggfnoid == TenantCountAggOid() ? PARTIAL_TENANT_COUNT : PARTIAL_NONE;
	if (!agg_info(aggref->aggfnoid, &info) || !OidIsValid(info.combinefn))
		return PARTIAL_NONE;
	switch (info.transfn)
	{
		case F_INT2_AVG_ACCUM:
		case F_INT4_AVG_ACCUM:
			return PARTIAL_INT_AVG;
		case F_FLOAT4_ACCUM:
		case F_FLOAT8_ACCUM:
			return PARTIAL_FLOAT;
		case F_NUMERIC_AVG_ACCUM:
		case F_INT8_AVG_ACCUM:
			return OidIsValid(info.serialfn) && sum_state_works(aggref->aggfnoid) ?
				PARTIAL_SUM_STATE : PARTIAL_NONE;
		default:
			break;
	}
	if (!OidIsValid(info.finalfn) && info.transtype == aggref->aggtype &&
		info.transtype != INTERNALOID)
		return PARTIAL_SAME;
	return PARTIAL_NONE;
}

/* PartialAggColumns returns how many columns a shard returns for the state */
int
PartialAggColumns(PartialKind kind)
{
	return kind == PARTIAL_SUM_STATE ? 2 : 1;
}

/*
 * PartialAggDeparse appends to buf the expressions a shard computes for
 * aggref's partial state (PartialAggColumns of them, comma separated).
 * aggref is the query's own aggregate, not marked partial; Vars refer to
 * the relation of dpcontext.
 */
void
PartialAggDeparse(StringInfo buf, Aggref *aggref, PartialKind kind, List *dpcontext)
{
	char	   *arg = NULL;
	char	   *filter = NULL;
	char	   *whole;

	if (aggref->args != NIL)
		arg = deparse_expression((Node *) ((TargetEntry *) linitial(aggref->args))->expr,
								 dpcontext, false, false);
	if (aggref->aggfilter != NULL)
		filter = psprintf(" FILTER (WHERE %s)",
						  deparse_expression((Node *) aggref->aggfilter, dpcontext, false, false));
	switch (kind)
	{
		case PARTIAL_SAME:
			whole = deparse_expression((Node *) aggref, dpcontext, false, false);
			appendStringInfoString(buf, whole);
			break;
		case PARTIAL_INT_AVG:
			appendStringInfo(buf, "ARRAY[pg_catalog.count(%s)%s, "
							 "COALESCE(pg_catalog.sum(%s)%s, 0)]::pg_catalog.int8[]",
							 arg, filter ? filter : "", arg, filter ? filter : "");
			break;
		case PARTIAL_FLOAT:
			appendStringInfo(buf, "ARRAY[pg_catalog.count(%s)%s, "
							 "COALESCE(pg_catalog.sum((%s)::pg_catalog.float8)%s, 0), "
							 "COALESCE(pg_catalog.var_pop((%s)::pg_catalog.float8)%s, 0) "
							 "* pg_catalog.count(%s)%s]::pg_catalog.float8[]",
							 arg, filter ? filter : "",
							 arg, filter ? filter : "",
							 arg, filter ? filter : "",
							 arg, filter ? filter : "");
			break;
		case PARTIAL_SUM_STATE:
			appendStringInfo(buf, "pg_catalog.sum(%s)%s, pg_catalog.count(%s)%s",
							 arg, filter ? filter : "", arg, filter ? filter : "");
			break;
		case PARTIAL_TENANT_COUNT:
			appendStringInfo(buf, "pg_catalog.count(DISTINCT %s)%s", arg, filter ? filter : "");
			break;
		default:
			elog(ERROR, "tenant_router: aggregate cannot be computed in parts");
	}
}

/*
 * fake_agg makes the AggState the aggregate support functions insist on
 * being called from, with its aggregate context aggcxt.
 */
static AggState *
fake_agg(MemoryContext aggcxt)
{
	AggState   *agg = makeNode(AggState);
	ExprContext *econtext = palloc0(sizeof(ExprContext));

	econtext->type = T_ExprContext;
	econtext->ecxt_per_tuple_memory = aggcxt;
	agg->curaggcontext = econtext;
	return agg;
}

/*
 * call_in_agg calls an aggregate support function as the executor's
 * Aggregate node would, from agg.
 */
static Datum
call_in_agg(AggState *agg, Oid fn, int nargs, Datum *args, bool *nulls, bool *isnull)
{
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 2);
	Datum		result;
	int			i;

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, (Node *) agg, NULL);
	for (i = 0; i < nargs; i++)
	{
		fcinfo->args[i].value = args[i];
		fcinfo->args[i].isnull = nulls[i];
	}
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/* call2 calls a transition or combine function on (state, value) */
static Datum
call2(AggState *agg, Oid fn, Datum state, bool state_null, Datum value, bool value_null,
	  bool *isnull)
{
	Datum		args[2] = {state, value};
	bool		nulls[2] = {state_null, value_null};

	return call_in_agg(agg, fn, 2, args, nulls, isnull);
}

static Numeric
numeric_from_text(const char *text)
{
	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(text),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/*
 * int8_sum_state builds the transition state of a sum of int8 equal to
 * total, which may exceed an int8: total = q * piece + r with piece the
 * largest int8 of total's sign; the state of r, plus q times the state of
 * piece by doubling with the combine function (a few dozen calls at most).
 */
static Datum
int8_sum_state(AggState *agg, AggInfoRow *info, Numeric total, bool *isnull)
{
	bool		negative = DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(total),
															NumericGetDatum(int64_to_numeric(0))));
	int64		piece = negative ? PG_INT64_MIN : PG_INT64_MAX;
	Numeric		piece_num = int64_to_numeric(piece);
	Numeric		q_num = DatumGetNumeric(DirectFunctionCall2(numeric_div_trunc,
															NumericGetDatum(total),
															NumericGetDatum(piece_num)));
	int64		q = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(q_num)));
	Numeric		r = DatumGetNumeric(DirectFunctionCall2(numeric_sub, NumericGetDatum(total),
														DirectFunctionCall2(numeric_mul,
																			NumericGetDatum(q_num),
																			NumericGetDatum(piece_num))));
	Datum		acc;
	bool		acc_null;
	Datum		power;
	bool		power_null;

	acc = call2(agg, info->transfn, (Datum) 0, true,
				DirectFunctionCall1(numeric_int8, NumericGetDatum(r)), false, &acc_null);
	if (q == 0)
	{
		*isnull = acc_null;
		return acc;
	}
	power = call2(agg, info->transfn, (Datum) 0, true, Int64GetDatum(piece), false,
				  &power_null);
	for (;;)
	{
		if (q & 1)
			acc = call2(agg, info->combinefn, acc, acc_null, power, power_null, &acc_null);
		q >>= 1;
		if (q == 0)
			break;
		/* power doubles: combined with a copy of itself, never with itself */
		{
			bool		copy_null;
			Datum		copy = call2(agg, info->combinefn, (Datum) 0, true, power, power_null,
									 &copy_null);

			power = call2(agg, info->combinefn, power, power_null, copy, copy_null,
						  &power_null);
		}
	}
	*isnull = acc_null;
	return acc;
}

/*
 * sum_state builds the serialized state of a sum/avg over int8 or numeric
 * from a shard's sum and count: the transition function fed the sum (for
 * int8, see int8_sum_state), serialized, with its count replaced.  The
 * work is done in a context of its own, freed before returning.
 */
static Datum
sum_state(Oid aggfnoid, const char *sum_text, int64 count, bool *isnull)
{
	AggInfoRow	info;
	Datum		state;
	bool		state_null;
	bytea	   *bytes;
	uint64		n = (uint64) count;
	int			i;
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext work;
	AggState   *agg;

	if (count == 0 || sum_text == NULL)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (!agg_info(aggfnoid, &info))
		elog(ERROR, "tenant_router: aggregate %u not found", aggfnoid);

	work = AllocSetContextCreate(caller, "tenant_router partial state", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(work);
	agg = fake_agg(work);
	if (info.transfn == F_NUMERIC_AVG_ACCUM)
		state = call2(agg, info.transfn, (Datum) 0, true,
					  NumericGetDatum(numeric_from_text(sum_text)), false, &state_null);
	else
		state = int8_sum_state(agg, &info, numeric_from_text(sum_text), &state_null);
	if (!state_null)
	{
		Datum		args[2] = {state, (Datum) 0};
		bool		nulls[2] = {false, true};

		state = call_in_agg(agg, info.serialfn, 1, args, nulls, &state_null);
	}
	MemoryContextSwitchTo(caller);
	if (state_null)
	{
		MemoryContextDelete(work);
		*isnull = true;
		return (Datum) 0;
	}

	/* the serialization starts with the count, an int8 in network order */
	bytes = DatumGetByteaPCopy(state);
	MemoryContextDelete(work);
	if (VARSIZE_ANY_EXHDR(bytes) < 8)
		elog(ERROR, "tenant_router: unexpected serialized state of aggregate %u",
			 aggfnoid);
	for (i = 0; i < 8; i++)
		((unsigned char *) VARDATA_ANY(bytes))[i] = (unsigned char) (n >> (56 - 8 * i));
	*isnull = false;
	return PointerGetDatum(bytes);
}

/*
 * PartialAggState returns the partial state of aggref (as the Finalize
 * Aggregate expects it: serialized if the aggregate serializes) from the
 * texts of the columns a shard returned for it.
 */
Datum
PartialAggState(Aggref *aggref, PartialKind kind, char **texts, Oid state_type,
				bool *isnull)
{
	Oid			infunc;
	Oid			ioparam;

	switch (kind)
	{
		case PARTIAL_SAME:
		case PARTIAL_INT_AVG:
		case PARTIAL_FLOAT:
			if (texts[0] == NULL)
			{
				*isnull = true;
				return (Datum) 0;
			}
			*isnull = false;
			getTypeInputInfo(state_type, &infunc, &ioparam);
			return OidInputFunctionCall(infunc, texts[0], ioparam, -1);
		case PARTIAL_SUM_STATE:
			return sum_state(aggref->aggfnoid, texts[0],
							 texts[1] ? pg_strtoint64(texts[1]) : 0, isnull);
		case PARTIAL_TENANT_COUNT:
			*isnull = false;
			return TenantCountSerialized(texts[0] ? pg_strtoint64(texts[0]) : 0);
		default:
			elog(ERROR, "tenant_router: aggregate cannot be computed in parts");
	}
	return (Datum) 0;			/* not reached */
}
