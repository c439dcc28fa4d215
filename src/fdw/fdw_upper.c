/*-------------------------------------------------------------------------
 *
 * fdw_upper.c
 *	  Aggregates and DISTINCT over a logical table computed on the shards:
 *	  the paths the FDW offers the planner's upper relations.
 *
 * Grouped by the tenant column, an aggregate is computed whole on each
 * shard (a tenant's rows never span shards), HAVING included.  Otherwise,
 * when every aggregate has a partial state the shards can compute
 * (partial_agg.c), the planner's own Finalize Aggregate runs over a scan of
 * each shard's partial states, so that PostgreSQL's combine and final
 * functions make the answer; HAVING is applied on the combined values.
 * SELECT DISTINCT is each shard's distinct rows, the duplicates across
 * shards removed by a hash aggregate.  PostgreSQL 15 offers partial
 * grouping to an FDW only for partitionwise aggregation, so the
 * partially grouped path is built here, as the planner builds it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "foreign/fdwapi.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/planner.h"
#include "optimizer/prep.h"
#include "optimizer/restrictinfo.h"
#include "optimizer/tlist.h"
#include "utils/selfuncs.h"

#include "fdw_internal.h"
#include "tenant_router/fdw.h"
#include "tenant_router/partial_agg.h"

/* shards assumed to return rows for a group, for costs */
#define SHARDS_PER_GROUP 2.0

/*
 * grouping_exprs returns the grouping expressions of the grouped target,
 * or NIL with *ok false if one cannot be shipped.
 */
static List *
grouping_exprs(PlannerInfo *root, PathTarget *target, Index varno, bool *ok)
{
	List	   *exprs = NIL;
	ListCell   *lc;
	int			i = 0;

	*ok = true;
	foreach(lc, target->exprs)
	{
		Index		ref = target->sortgrouprefs ? target->sortgrouprefs[i] : 0;

		i++;
		if (ref == 0 || get_sortgroupref_clause_noerr(ref, root->parse->groupClause) == NULL)
			continue;
		if (!TrShippable(lfirst(lc), varno, false))
			*ok = false;
		exprs = lappend(exprs, lfirst(lc));
	}
	return exprs;
}

/* is_tenant_column tells whether expr is the scanned table's tenant column */
static bool
is_tenant_column(Node *expr, TrRelInfo *scan)
{
	while (IsA(expr, RelabelType) ||
		   (IsA(expr, FuncExpr) && ((FuncExpr *) expr)->funcformat == COERCE_IMPLICIT_CAST &&
			list_length(((FuncExpr *) expr)->args) == 1))
		expr = IsA(expr, RelabelType) ? (Node *) ((RelabelType *) expr)->arg :
			(Node *) linitial(((FuncExpr *) expr)->args);
	return IsA(expr, Var) && ((Var *) expr)->varno == scan->varno &&
		((Var *) expr)->varlevelsup == 0 &&
		((Var *) expr)->varattno == scan->table->tenant_attno;
}

/*
 * groups_by_tenant tells whether one of the grouping expressions is the
 * tenant column: then no group spans shards.
 */
static bool
groups_by_tenant(List *group_exprs, TrRelInfo *scan)
{
	ListCell   *lc;

	foreach(lc, group_exprs)
		if (is_tenant_column(lfirst(lc), scan))
			return true;
	return false;
}

/*
 * partial_target returns the target of the partially grouped scan: the
 * grouping expressions and every aggregate of the target and HAVING, marked
 * partial; NULL if an aggregate has no partial state the shards can compute,
 * or a column is used outside the grouping expressions and aggregates.
 */
static PathTarget *
partial_target(PlannerInfo *root, PathTarget *grouped, List *group_exprs, Node *having,
			   TrRelInfo *scan)
{
	Index		varno = scan->varno;
	PathTarget *target = create_empty_pathtarget();
	List	   *found;
	ListCell   *lc;
	int			i = 0;

	foreach(lc, grouped->exprs)
	{
		Index		ref = grouped->sortgrouprefs ? grouped->sortgrouprefs[i] : 0;

		i++;
		if (list_member_ptr(group_exprs, lfirst(lc)))
			add_column_to_pathtarget(target, lfirst(lc), ref);
	}
	found = pull_var_clause(having, PVC_INCLUDE_AGGREGATES | PVC_RECURSE_WINDOWFUNCS |
							PVC_INCLUDE_PLACEHOLDERS);
	foreach(lc, grouped->exprs)
		if (!list_member_ptr(group_exprs, lfirst(lc)))
			found = list_concat(found,
								pull_var_clause(lfirst(lc), PVC_INCLUDE_AGGREGATES |
												PVC_RECURSE_WINDOWFUNCS |
												PVC_INCLUDE_PLACEHOLDERS));
	foreach(lc, found)
	{
		Node	   *node = lfirst(lc);
		Aggref	   *partial;

		if (!IsA(node, Aggref))
		{
			if (!list_member(group_exprs, node))
				return NULL;	/* e.g. a column functionally dependent on a key */
			continue;
		}
		switch (PartialAggKindOf((Aggref *) node))
		{
			case PARTIAL_NONE:
				return NULL;
			case PARTIAL_TENANT_COUNT:
				/* counts of distinct values add up for the tenant column only */
				if (!is_tenant_column((Node *) ((TargetEntry *) linitial(((Aggref *) node)->args))->expr,
									  scan))
					return NULL;
				break;
			default:
				if (!TrShippable(node, varno, true))
					return NULL;
				break;
		}
		partial = copyObject((Aggref *) node);
		mark_partial_aggref(partial, AGGSPLIT_INITIAL_SERIAL);
		add_new_column_to_pathtarget(target, (Expr *) partial);
	}
	return set_pathtarget_cost_width(root, target);
}

/* add_grouping_paths offers the aggregate computed on the shards */
static void
add_grouping_paths(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *grouped_rel,
				   GroupPathExtraData *extra)
{
	Query	   *parse = root->parse;
	TrRelInfo  *scan = input_rel->fdw_private;
	TrRelInfo  *info;
	List	   *group_exprs;
	bool		ok;
	double		groups;
	ListCell   *lc;

	if (input_rel->reloptkind != RELOPT_BASEREL || scan == NULL || scan->kind != TR_SCAN ||
		scan->local_conds != NIL || parse->groupingSets != NIL ||
		grouped_rel->fdw_private != NULL)
		return;
	group_exprs = grouping_exprs(root, grouped_rel->reltarget, scan->varno, &ok);
	if (!ok)
		return;
	groups = parse->groupClause == NIL ? 1 :
		estimate_num_groups(root, group_exprs, input_rel->rows, NULL, NULL);

	info = palloc0(sizeof(TrRelInfo));
	info->scanrel = input_rel;
	grouped_rel->fdw_private = info;

	/* grouped by tenant (or one shard's copy of a reference table): the
	 * shards compute every group whole */
	if (scan->table->is_reference || groups_by_tenant(group_exprs, scan))
	{
		bool		whole = true;

		foreach(lc, grouped_rel->reltarget->exprs)
			whole = whole && TrShippable(lfirst(lc), scan->varno, true);
		/* havingQual is already an implicit-AND list */
		foreach(lc, (List *) extra->havingQual)
		{
			whole = whole && TrShippable(lfirst(lc), scan->varno, true);
			info->having = lappend(info->having,
								   make_simple_restrictinfo(root, lfirst(lc)));
		}
		if (whole)
		{
			info->kind = TR_GROUPED;
			add_path(grouped_rel, (Path *)
					 create_foreign_upper_path(root, grouped_rel, grouped_rel->reltarget,
											   groups, ROUND_TRIP_COST,
											   ROUND_TRIP_COST + groups * cpu_tuple_cost,
											   NIL, NULL, NIL));
			return;
		}
		info->having = NIL;
	}

	/* otherwise partial states from the shards, finalized here */
	if ((extra->flags & GROUPING_CAN_PARTIAL_AGG) != 0 && !root->hasNonPartialAggs &&
		!root->hasNonSerialAggs)
	{
		PathTarget *target = partial_target(root, grouped_rel->reltarget, group_exprs,
											extra->havingQual, scan);
		RelOptInfo *partial_rel;
		Path	   *partial;
		AggClauseCosts costs;
		double		partial_rows = groups * SHARDS_PER_GROUP;

		if (target == NULL)
			return;
		partial_rel = fetch_upper_rel(root, UPPERREL_PARTIAL_GROUP_AGG, input_rel->relids);
		partial_rel->reltarget = target;
		partial_rel->serverid = input_rel->serverid;
		partial_rel->userid = input_rel->userid;
		partial_rel->useridiscurrent = input_rel->useridiscurrent;
		partial_rel->fdwroutine = input_rel->fdwroutine;
		info->kind = TR_PARTIAL;
		partial_rel->fdw_private = info;

		partial = (Path *) create_foreign_upper_path(root, partial_rel, target, partial_rows,
													 ROUND_TRIP_COST,
													 ROUND_TRIP_COST + partial_rows * cpu_tuple_cost,
													 NIL, NULL, NIL);
		MemSet(&costs, 0, sizeof(AggClauseCosts));
		get_agg_clause_costs(root, AGGSPLIT_FINAL_DESERIAL, &costs);
		if (parse->groupClause == NIL)
			add_path(grouped_rel, (Path *)
					 create_agg_path(root, grouped_rel, partial, grouped_rel->reltarget,
									 AGG_PLAIN, AGGSPLIT_FINAL_DESERIAL, NIL,
									 (List *) extra->havingQual, &costs, 1));
		else if (grouping_is_hashable(parse->groupClause))
			add_path(grouped_rel, (Path *)
					 create_agg_path(root, grouped_rel, partial, grouped_rel->reltarget,
									 AGG_HASHED, AGGSPLIT_FINAL_DESERIAL,
									 parse->groupClause, (List *) extra->havingQual,
									 &costs, groups));
		else if (grouping_is_sortable(parse->groupClause))
			add_path(grouped_rel, (Path *)
					 create_agg_path(root, grouped_rel,
									 (Path *) create_sort_path(root, partial_rel, partial,
															   root->group_pathkeys, -1.0),
									 grouped_rel->reltarget,
									 AGG_SORTED, AGGSPLIT_FINAL_DESERIAL,
									 parse->groupClause, (List *) extra->havingQual,
									 &costs, groups));
	}
}

/*
 * add_distinct_paths offers SELECT DISTINCT computed on the shards (each
 * returns its distinct rows), the coordinator removing the rows several
 * shards returned.
 */
static void
add_distinct_paths(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *distinct_rel)
{
	Query	   *parse = root->parse;
	TrRelInfo  *scan = input_rel->fdw_private;
	TrRelInfo  *info;
	PathTarget *target = root->upper_targets[UPPERREL_DISTINCT];
	RelOptInfo *partial_rel;
	Path	   *partial;
	AggClauseCosts costs;
	double		groups;
	List	   *exprs = NIL;
	ListCell   *lc;
	int			i = 0;

	if (input_rel->reloptkind != RELOPT_BASEREL || scan == NULL || scan->kind != TR_SCAN ||
		scan->local_conds != NIL || parse->hasDistinctOn || parse->hasAggs ||
		parse->groupClause != NIL || parse->hasWindowFuncs || parse->hasTargetSRFs ||
		distinct_rel->fdw_private != NULL || !grouping_is_hashable(parse->distinctClause))
		return;
	foreach(lc, target->exprs)
	{
		Index		ref = target->sortgrouprefs ? target->sortgrouprefs[i] : 0;

		i++;
		if (ref == 0 || get_sortgroupref_clause_noerr(ref, parse->distinctClause) == NULL ||
			!TrShippable(lfirst(lc), scan->varno, false))
			return;
		exprs = lappend(exprs, lfirst(lc));
	}
	groups = estimate_num_groups(root, exprs, input_rel->rows, NULL, NULL);

	/* the shards' distinct rows: a grouping without aggregates */
	info = palloc0(sizeof(TrRelInfo));
	info->scanrel = input_rel;
	info->kind = TR_PARTIAL;
	distinct_rel->fdw_private = info;
	partial_rel = fetch_upper_rel(root, UPPERREL_PARTIAL_DISTINCT, input_rel->relids);
	partial_rel->reltarget = target;
	partial_rel->serverid = input_rel->serverid;
	partial_rel->userid = input_rel->userid;
	partial_rel->useridiscurrent = input_rel->useridiscurrent;
	partial_rel->fdwroutine = input_rel->fdwroutine;
	partial_rel->fdw_private = info;
	partial = (Path *) create_foreign_upper_path(root, partial_rel, target,
												 groups * SHARDS_PER_GROUP, ROUND_TRIP_COST,
												 ROUND_TRIP_COST + groups * SHARDS_PER_GROUP * cpu_tuple_cost,
												 NIL, NULL, NIL);
	MemSet(&costs, 0, sizeof(AggClauseCosts));
	add_path(distinct_rel, (Path *)
			 create_agg_path(root, distinct_rel, partial, target, AGG_HASHED,
							 AGGSPLIT_SIMPLE, parse->distinctClause, NIL, &costs, groups));
}

void
TrGetForeignUpperPaths(PlannerInfo *root, UpperRelationKind stage,
					   RelOptInfo *input_rel, RelOptInfo *output_rel, void *extra)
{
	if (stage == UPPERREL_GROUP_AGG)
		add_grouping_paths(root, input_rel, output_rel, (GroupPathExtraData *) extra);
	else if (stage == UPPERREL_DISTINCT)
		add_distinct_paths(root, input_rel, output_rel);
}
