/*-------------------------------------------------------------------------
 *
 * shard_pruning.c
 *	  Finds the conditions on a logical table's tenant column (=, <, <=, >,
 *	  >=, BETWEEN, IN, = ANY) and, at execution, the shards they leave.
 *
 * Conditions are recognized at plan time; their values (constants,
 * parameters, stable expressions) are computed at execution, so a generic
 * plan prunes by the values of each execution.  The operators recognized are
 * those of the btree integer operator family, across int2, int4 and int8.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/nbtree.h"
#include "access/stratnum.h"
#include "catalog/pg_opfamily.h"
#include "catalog/pg_type.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

#include "tenant_router/catalog.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_pruning.h"
#include "tenant_router/shippable.h"

static bool
is_tenant_var(Node *node, Index varno, AttrNumber attno)
{
	while (IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	return IsA(node, Var) && ((Var *) node)->varno == varno &&
		((Var *) node)->varattno == attno && ((Var *) node)->varlevelsup == 0;
}

/*
 * ExtractTenantCond tells whether clause compares column attno of relation
 * varno with a value computable at execution; if so it returns the btree
 * strategy (as seen from the column) and the value expression.
 */
bool
ExtractTenantCond(Expr *clause, Index varno, AttrNumber attno, int *strategy,
				  Expr **value)
{
	if (IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2)
	{
		OpExpr	   *op = (OpExpr *) clause;
		Node	   *left = linitial(op->args);
		Node	   *right = lsecond(op->args);
		int			s = get_op_opfamily_strategy(op->opno, INTEGER_BTREE_FAM_OID);

		if (s == 0)
			return false;
		if (is_tenant_var(right, varno, attno) && IsStandaloneValue(left, false))
		{
			Node	   *tmp = left;

			left = right;
			right = tmp;
			s = BTCommuteStrategyNumber(s);
		}
		if (!is_tenant_var(left, varno, attno) || !IsStandaloneValue(right, false))
			return false;
		*strategy = s;
		*value = (Expr *) right;
		return true;
	}
	if (IsA(clause, ScalarArrayOpExpr))
	{
		ScalarArrayOpExpr *op = (ScalarArrayOpExpr *) clause;

		if (!op->useOr ||
			get_op_opfamily_strategy(op->opno, INTEGER_BTREE_FAM_OID) != BTEqualStrategyNumber ||
			!is_tenant_var(linitial(op->args), varno, attno) ||
			!IsStandaloneValue(lsecond(op->args), false))
			return false;
		*strategy = TENANT_COND_ANY;
		*value = (Expr *) lsecond(op->args);
		return true;
	}
	return false;
}

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* intersect keeps in points (sorted, n) those also in other (sorted, m) */
static int
intersect(int64 *points, int n, const int64 *other, int m)
{
	int			i = 0,
				j = 0,
				k = 0;

	while (i < n && j < m)
	{
		if (points[i] < other[j])
			i++;
		else if (points[i] > other[j])
			j++;
		else
		{
			points[k++] = points[i];
			i++;
			j++;
		}
	}
	return k;
}

/*
 * PruneShards returns the shards (ShardRow) that can hold rows satisfying
 * every condition, given the conditions' values: for ranges, the shards of
 * the ranges in order, then those of pinned tenants; for points, the shards
 * of the points, each once.
 */
List *
PruneShards(int ncond, const int *strategies, const Datum *values,
			const bool *nulls, const Oid *types)
{
	int64		lo = PG_INT64_MIN;
	int64		hi = PG_INT64_MAX;
	int64	   *points = NULL;
	int			npoints = -1;	/* -1: no equality condition */
	int			c;
	List	   *shards = NIL;

	for (c = 0; c < ncond; c++)
	{
		int64		v;
		int64	   *these;
		int			nthese = 0;

		if (nulls[c])
			return NIL;			/* compared with NULL: no row qualifies */
		if (strategies[c] == TENANT_COND_ANY)
		{
			ArrayType  *arr = DatumGetArrayTypeP(values[c]);
			Oid			elemtype = ARR_ELEMTYPE(arr);
			int16		typlen;
			bool		typbyval;
			char		typalign;
			Datum	   *elems;
			bool	   *elemnulls;
			int			nelems;
			int			i;

			get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
			deconstruct_array(arr, elemtype, typlen, typbyval, typalign,
							  &elems, &elemnulls, &nelems);
			these = palloc(sizeof(int64) * (nelems + 1));
			for (i = 0; i < nelems; i++)
				if (!elemnulls[i])
					these[nthese++] = TenantDatumToInt64(elems[i], elemtype);
		}
		else
		{
			v = TenantDatumToInt64(values[c], types[c]);
			switch (strategies[c])
			{
				case BTLessStrategyNumber:
					if (v == PG_INT64_MIN)
						return NIL;
					hi = Min(hi, v - 1);
					continue;
				case BTLessEqualStrategyNumber:
					hi = Min(hi, v);
					continue;
				case BTGreaterEqualStrategyNumber:
					lo = Max(lo, v);
					continue;
				case BTGreaterStrategyNumber:
					if (v == PG_INT64_MAX)
						return NIL;
					lo = Max(lo, v + 1);
					continue;
				default:
					these = palloc(sizeof(int64));
					these[nthese++] = v;
					break;
			}
		}
		qsort(these, nthese, sizeof(int64), compare_int64);
		if (npoints < 0)
		{
			points = these;
			npoints = nthese;
		}
		else
			npoints = intersect(points, npoints, these, nthese);
	}
	if (lo > hi)
		return NIL;
	if (npoints < 0)
		return CatalogShardsOverlapping(lo, hi);

	for (c = 0; c < npoints; c++)
	{
		ShardRoute *route;
		ShardRow   *row;
		ListCell   *lc;
		bool		listed = false;

		if (points[c] < lo || points[c] > hi ||
			(c > 0 && points[c] == points[c - 1]))
			continue;
		route = RouteTenant(points[c]);
		if (route == NULL)
			continue;
		/* pins and remainders: a shard's tenants need not be consecutive */
		foreach(lc, shards)
			if (strcmp(((ShardRow *) lfirst(lc))->shard_id, route->shard_id) == 0)
				listed = true;
		if (listed)
			continue;
		row = palloc0(sizeof(ShardRow));
		row->shard_id = pstrdup(route->shard_id);
		row->range_start = route->range_start;
		row->range_end = route->range_end;
		row->dsn = pstrdup(route->dsn);
		row->has_range = route->has_range;
		row->modulus = route->modulus;
		row->remainder = route->remainder;
		shards = lappend(shards, row);
	}
	return shards;
}
