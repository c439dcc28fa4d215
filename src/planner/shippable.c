/*-------------------------------------------------------------------------
 *
 * shippable.c
 *	  Decides what may be sent to a shard, and rewrites expressions so that
 *	  what only the coordinator can compute is sent as a parameter.
 *
 * An expression is shipped as text when everything in it means the same on
 * the shard: built-in (initdb) functions and operators that are immutable,
 * columns, constants.  A subexpression without columns that is stable
 * (now(), current_user), refers to parameters, or calls a function the
 * shard does not have, is computed on the coordinator at execution and sent
 * as a parameter $n; so are the query's own parameters, renumbered.  Volatile
 * functions are never shipped (the FDW then evaluates them locally, and the
 * fast path leaves the statement to the FDW).
 *
 * It also holds the two tests of an expression that the planner, the fast
 * path and the FDW share: IsStandaloneValue (can the coordinator compute it
 * on its own when the statement runs) and ContainsParam (does it need the
 * statement's parameters).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"

#include "tenant_router/remote_io.h"
#include "tenant_router/shippable.h"

void
ShipContextInit(ShipContext *ctx, Index scan_varno, bool whole_query)
{
	memset(ctx, 0, sizeof(ShipContext));
	ctx->scan_varno = scan_varno;
	ctx->whole_query = whole_query;
	ctx->ok = true;
}

/* is_builtin tells whether oid belongs to an object made by initdb */
static bool
is_builtin(Oid oid)
{
	return oid < FirstGenbkiObjectId;
}

/*
 * not_builtin_immutable tells whether funcid is not a built-in immutable
 * function; if so it stores it in *context (an Oid), when given.
 */
static bool
not_builtin_immutable(Oid funcid, void *context)
{
	if (is_builtin(funcid) && func_volatile(funcid) == PROVOLATILE_IMMUTABLE)
		return false;
	if (context != NULL)
		*(Oid *) context = funcid;
	return true;
}

/*
 * row_walker finds what ties an expression to a row or to the query around
 * it: a column, an aggregate or window function, a subquery, the row of a
 * sublink (PARAM_SUBLINK) or of a multiple-column assignment, the value a
 * CASE or an assignment works on, DEFAULT, CURRENT OF.
 */
static bool
row_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var) || IsA(node, PlaceHolderVar) || IsA(node, Aggref) ||
		IsA(node, WindowFunc) || IsA(node, GroupingFunc) || IsA(node, SubLink) ||
		IsA(node, SubPlan) || IsA(node, AlternativeSubPlan) || IsA(node, Query) ||
		IsA(node, CaseTestExpr) || IsA(node, SetToDefault) || IsA(node, CurrentOfExpr))
		return true;
	if (IsA(node, Param) && (((Param *) node)->paramkind == PARAM_SUBLINK ||
							 ((Param *) node)->paramkind == PARAM_MULTIEXPR))
		return true;
	return expression_tree_walker(node, row_walker, context);
}

/*
 * IsStandaloneValue tells whether expr is a value the coordinator can
 * compute on its own when the statement runs: one value (not a set), from
 * constants, parameters (the statement's, or another plan node's), and
 * functions, tied to no row (see row_walker); volatile functions (nextval()
 * included) only if allow_volatile.  Such an expression can pin a tenant,
 * prune shards, or be sent to a shard as a parameter.
 */
bool
IsStandaloneValue(Node *expr, bool allow_volatile)
{
	return !row_walker(expr, NULL) && !expression_returns_set(expr) &&
		(allow_volatile || !contain_volatile_functions(expr));
}

static bool
param_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param))
		return true;
	return expression_tree_walker(node, param_walker, context);
}

/*
 * ContainsParam tells whether expr refers to a parameter of any kind (the
 * statement's $n, or a value another plan node sets), so that it cannot be
 * computed before the statement runs with its parameters: EXPLAIN without
 * them then cannot name a shard.
 */
bool
ContainsParam(Node *expr)
{
	return param_walker(expr, NULL);
}

static bool
all_builtin_immutable_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param) || IsA(node, SQLValueFunction))
		return true;
	if (check_functions_in_node(node, not_builtin_immutable, NULL))
		return true;
	return expression_tree_walker(node, all_builtin_immutable_walker, context);
}

/*
 * ShipParam makes expr a parameter: the coordinator evaluates it, the shard
 * sees $n.  External parameters are deduplicated, so that $1 used twice
 * stays one parameter.
 */
Node *
ShipParam(Node *expr, ShipContext *ctx)
{
	Param	   *param;
	int			extern_id = 0;
	ListCell   *lc;
	int			i = 0;
	Oid			typid = exprType(expr);

	if (IsA(expr, Param) && ((Param *) expr)->paramkind == PARAM_EXTERN)
	{
		extern_id = ((Param *) expr)->paramid;
		foreach(lc, ctx->extern_ids)
		{
			i++;
			if (lfirst_int(lc) == extern_id)
				goto make;
		}
	}
	ctx->param_exprs = lappend(ctx->param_exprs, copyObject(expr));
	ctx->extern_ids = lappend_int(ctx->extern_ids, extern_id);
	i = list_length(ctx->param_exprs);

make:
	param = makeNode(Param);
	param->paramkind = PARAM_EXTERN;
	param->paramid = i;
	param->paramtype = typid;
	param->paramtypmod = exprTypmod(expr);
	param->paramcollid = exprCollation(expr);
	param->location = -1;
	if (RemoteParamType(typid) == InvalidOid)
		return (Node *) makeRelabelType((Expr *) param, typid, param->paramtypmod,
										param->paramcollid, COERCE_EXPLICIT_CAST);
	return (Node *) param;
}

/* is_value_expression tells whether node is an expression with a value */
static bool
is_value_expression(Node *node)
{
	switch (nodeTag(node))
	{
		case T_FuncExpr:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_ScalarArrayOpExpr:
		case T_BoolExpr:
		case T_FieldSelect:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_ConvertRowtypeExpr:
		case T_CollateExpr:
		case T_CaseExpr:
		case T_ArrayExpr:
		case T_RowExpr:
		case T_RowCompareExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_SQLValueFunction:
		case T_XmlExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_CoerceToDomain:
		case T_SubscriptingRef:
			return true;
		default:
			return false;
	}
}

static bool
node_type_shippable(Node *node, ShipContext *ctx)
{
	switch (nodeTag(node))
	{
		case T_Var:
		case T_Const:
		case T_FuncExpr:
		case T_NamedArgExpr:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_ScalarArrayOpExpr:
		case T_BoolExpr:
		case T_FieldSelect:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_CollateExpr:
		case T_CaseExpr:
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_ArrayExpr:
		case T_RowExpr:
		case T_RowCompareExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_SubscriptingRef:
		case T_List:
			return true;
		case T_Aggref:
		case T_WindowFunc:
		case T_GroupingFunc:
		case T_SubLink:
		case T_TargetEntry:
		case T_SortGroupClause:
		case T_JoinExpr:
		case T_FromExpr:
		case T_RangeTblRef:
		case T_OnConflictExpr:
		case T_InferenceElem:
		case T_SetOperationStmt:
		case T_RangeTblFunction:
		case T_TableSampleClause:
		case T_WindowClause:
		case T_CommonTableExpr:
			return ctx->whole_query;
		default:
			return false;
	}
}

static Node *ship_mutator(Node *node, ShipContext *ctx);

static Node *
not_shippable(Node *node, ShipContext *ctx, const char *reason)
{
	ctx->ok = false;
	if (ctx->reason == NULL)
		ctx->reason = reason;
	return node;
}

static Node *
ship_mutator(Node *node, ShipContext *ctx)
{
	Oid			funcid = InvalidOid;

	if (node == NULL || !ctx->ok)
		return node;

	if (IsA(node, Query))
	{
		if (!ctx->whole_query)
			return not_shippable(node, ctx, "a subquery");
		return (Node *) query_tree_mutator((Query *) node, ship_mutator, ctx, 0);
	}
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (ctx->scan_varno != 0 &&
			(var->varno != ctx->scan_varno || var->varlevelsup != 0 || var->varattno <= 0))
			return not_shippable(node, ctx, "a column of another relation or a system column");
		return copyObject(node);
	}
	if (IsA(node, Const))
		return copyObject(node);
	if (IsA(node, Param))
	{
		Param	   *param = (Param *) node;

		if (param->paramkind == PARAM_MULTIEXPR)
			return not_shippable(node, ctx, "a multiple-column assignment");
		/*
		 * In a parse tree, a PARAM_SUBLINK stands in the test expression of
		 * an IN, NOT IN, = ANY or ALL sublink for a column of the sublink's
		 * own subquery, row by row: it is part of the sublink shipped with
		 * it (the deparser prints the sublink as "x IN (subquery)"), not a
		 * value the coordinator could compute.
		 */
		if (param->paramkind == PARAM_SUBLINK)
		{
			if (!ctx->whole_query)
				return not_shippable(node, ctx, "a sublink");
			return copyObject(node);
		}
		return ShipParam(node, ctx);
	}

	/* an expression on its own: ship it, or compute it here */
	if (is_value_expression(node) && IsStandaloneValue(node, true))
	{
		if (contain_volatile_functions(node))
			return not_shippable(node, ctx, "a volatile function");
		if (all_builtin_immutable_walker(node, NULL))
			return ShipParam(node, ctx);
		return copyObject(node);
	}

	if (!node_type_shippable(node, ctx))
		return not_shippable(node, ctx, "an expression of a kind that is not sent to shards");
	if (check_functions_in_node(node, not_builtin_immutable, &funcid))
		return not_shippable(node, ctx,
							 psprintf("function %s would run on the shard, and it is not a built-in immutable function",
									  format_procedure(funcid)));
	return expression_tree_mutator(node, ship_mutator, ctx);
}

/*
 * ShipExpr returns a copy of node in which everything the coordinator must
 * compute is a parameter (collected in ctx->param_exprs), or leaves
 * ctx->ok false if node cannot be shipped at all.
 */
Node *
ShipExpr(Node *node, ShipContext *ctx)
{
	return ship_mutator(node, ctx);
}
