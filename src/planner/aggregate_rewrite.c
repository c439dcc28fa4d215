/*-------------------------------------------------------------------------
 *
 * aggregate_rewrite.c
 *	  Rewrites count(DISTINCT <tenant column of a logical table>) into
 *	  tenant_router.count_distinct_tenant(<that column>), which gives the
 *	  same answer and, unlike a DISTINCT aggregate, can be computed in parts
 *	  on the shards (executor/tenant_count.c, fdw/partial_agg.c).
 *
 * Done only for a statement the fast path does not send whole to a shard
 * (the shard does not have the aggregate), at every query level, for an
 * argument that is the tenant column of a logical table of that level.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_aggregate.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parsetree.h"
#include "utils/fmgroids.h"

#include "tenant_router/aggregate_rewrite.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/tenant_count.h"

typedef struct RewriteContext
{
	Oid			aggoid;			/* tenant_router.count_distinct_tenant */
	List	   *queries;		/* the query levels, innermost first */
} RewriteContext;

/* tenant_arg tells whether expr is the tenant column of a logical table */
static bool
tenant_arg(Node *expr, Aggref *aggref, RewriteContext *ctx)
{
	Var		   *var;
	Query	   *query;
	RangeTblEntry *rte;
	LogicalTable *table;

	while (IsA(expr, RelabelType))
		expr = (Node *) ((RelabelType *) expr)->arg;
	if (!IsA(expr, Var))
		return false;
	var = (Var *) expr;
	if (var->varlevelsup != aggref->agglevelsup ||
		var->varlevelsup >= list_length(ctx->queries))
		return false;
	query = list_nth(ctx->queries, var->varlevelsup);
	if (var->varno < 1 || var->varno > list_length(query->rtable))
		return false;
	rte = rt_fetch(var->varno, query->rtable);
	if (rte->rtekind != RTE_RELATION)
		return false;
	table = LookupLogicalTable(rte->relid);
	return table != NULL && table->tenant_attno == var->varattno;
}

static Node *
rewrite_mutator(Node *node, RewriteContext *ctx)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Query))
	{
		Query	   *query;

		ctx->queries = lcons(node, ctx->queries);
		query = query_tree_mutator((Query *) node, rewrite_mutator, ctx, 0);
		ctx->queries = list_delete_first(ctx->queries);
		return (Node *) query;
	}
	if (IsA(node, Aggref))
	{
		Aggref	   *aggref = (Aggref *) node;
		TargetEntry *arg;

		if (aggref->aggfnoid == F_COUNT_ANY && aggref->aggdistinct != NIL &&
			list_length(aggref->args) == 1 && aggref->aggkind == AGGKIND_NORMAL &&
			tenant_arg((Node *) ((TargetEntry *) linitial(aggref->args))->expr, aggref, ctx))
		{
			Aggref	   *rewritten = copyObject(aggref);
			Expr	   *value = ((TargetEntry *) linitial(aggref->args))->expr;

			if (exprType((Node *) value) != INT8OID)
				value = (Expr *) makeFuncExpr(exprType((Node *) value) == INT4OID ?
											  F_INT8_INT4 : F_INT8_INT2,
											  INT8OID, list_make1(value), InvalidOid,
											  InvalidOid, COERCE_IMPLICIT_CAST);
			arg = makeTargetEntry(value, 1, NULL, false);
			rewritten->aggfnoid = ctx->aggoid;
			rewritten->aggargtypes = list_make1_oid(INT8OID);
			rewritten->args = list_make1(arg);
			rewritten->aggdistinct = NIL;
			rewritten->aggorder = NIL;
			rewritten->aggfilter = (Expr *) rewrite_mutator((Node *) aggref->aggfilter, ctx);
			return (Node *) rewritten;
		}
	}
	return expression_tree_mutator(node, rewrite_mutator, ctx);
}

/*
 * RewriteTenantCounts returns parse with every count(DISTINCT tenant
 * column) rewritten, or parse itself when there is none (or the extension
 * is not updated to have the aggregate).
 */
Query *
RewriteTenantCounts(Query *parse)
{
	RewriteContext ctx;

	if (!parse->hasAggs && parse->hasSubLinks == false && parse->cteList == NIL &&
		parse->rtable == NIL)
		return parse;
	ctx.aggoid = TenantCountAggOid();
	ctx.queries = NIL;
	if (!OidIsValid(ctx.aggoid))
		return parse;
	return (Query *) rewrite_mutator((Node *) parse, &ctx);
}
