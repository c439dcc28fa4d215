/*-------------------------------------------------------------------------
 *
 * fdw.c
 *	  The foreign-data wrapper of logical tables: handler, validator, and the
 *	  planning of scans and of the aggregates the shards compute.
 *
 * Every statement on a logical table that the fast path (planner/
 * fast_path.c) does not send whole to one shard is planned here.  A scan
 * goes to the shards that can hold matching tenants (all at once, see
 * fdw_scan.c), with the clauses that mean the same there shipped in the
 * remote SELECT and the others checked on the coordinator; each shard is
 * read only within its current range, so rows a topology change left
 * behind are never read twice.  Besides the plain scan, the planner gets:
 *
 *	 - a scan sorted by the shards and merged, when the query wants an order
 *	   the shards can produce (ORDER BY, merge joins, sorted grouping), with
 *	   a LIMIT sent to each shard when nothing between the scan and the
 *	   query's LIMIT can remove rows (each shard then returns at most
 *	   offset + count rows);
 *	 - for an aggregate over one logical table: when it groups by the tenant
 *	   column, a scan of the grouped rows, computed whole on the shards
 *	   (a tenant's rows never span shards); otherwise, when every aggregate
 *	   has a partial state the shards can compute (partial_agg.c), the
 *	   planner's own Finalize Aggregate over a scan of each shard's partial
 *	   states (partially grouped), so that the combine and final functions
 *	   of PostgreSQL make the answer.  HAVING is applied on the combined
 *	   values.
 *
 * Inserts, updates and deletes are fdw_modify.c's; the SQL text is
 * deparse.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "catalog/pg_foreign_table.h"
#include "access/reloptions.h"
#include "foreign/fdwapi.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/planner.h"
#include "optimizer/prep.h"
#include "optimizer/restrictinfo.h"
#include "optimizer/tlist.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"

#include "tenant_router/deparse.h"
#include "tenant_router/fdw.h"
#include "tenant_router/partial_agg.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_pruning.h"
#include "tenant_router/shippable.h"

PG_FUNCTION_INFO_V1(tenant_router_fdw_handler);
PG_FUNCTION_INFO_V1(tenant_router_fdw_validator);

/* what a relation planned here is */
typedef enum TrRelKind
{
	TR_SCAN,					/* a logical table */
	TR_GROUPED,					/* its aggregate, whole on each shard */
	TR_PARTIAL					/* its aggregate's partial states */
} TrRelKind;

/* planner state of a logical table scan, or of an aggregate over one */
typedef struct TrRelInfo
{
	TrRelKind	kind;
	LogicalTable *table;
	Oid			relid;			/* the foreign table */
	Index		varno;			/* its range table index */
	RelOptInfo *scanrel;		/* the scan's RelOptInfo */
	List	   *remote_conds;	/* RestrictInfos shipped to the shards */
	List	   *local_conds;	/* RestrictInfos checked on the coordinator */
	List	   *having;			/* TR_GROUPED: HAVING conditions, shipped */
} TrRelInfo;

/* row count assumed for a logical table, which has no local statistics */
#define DEFAULT_TABLE_ROWS 100000.0
/* cost of a round trip to a shard, in sequential page units */
#define ROUND_TRIP_COST 100.0
/* what sorting on the shards adds to a scan's cost */
#define REMOTE_SORT_MULTIPLIER 1.05
/* shards assumed to return rows for a group, for costs */
#define SHARDS_PER_GROUP 2.0

/*
 * GetLogicalTableOrError returns the logical table of rel, or raises an
 * error for a foreign table of server tenant_router that is not registered.
 */
LogicalTable *
GetLogicalTableOrError(Relation rel)
{
	LogicalTable *table = LookupLogicalTable(RelationGetRelid(rel));

	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_TABLE_NOT_FOUND),
				 errmsg("foreign table \"%s\" is not a logical table",
						RelationGetRelationName(rel)),
				 errhint("Register it with logical_table_add().")));
	return table;
}

/* shippable tells whether expr can be sent as is (no parameter) for relation varno */
static bool
shippable(Node *expr, Index varno, bool aggregates)
{
	ShipContext ctx;

	ShipContextInit(&ctx, varno, aggregates);
	(void) ShipExpr(expr, &ctx);
	return ctx.ok && ctx.param_exprs == NIL && !contain_subplans(expr);
}

static void
trGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	TrRelInfo  *info = palloc0(sizeof(TrRelInfo));
	Relation	rel = table_open(foreigntableid, NoLock);
	ListCell   *lc;

	info->kind = TR_SCAN;
	info->table = GetLogicalTableOrError(rel);
	info->relid = foreigntableid;
	info->varno = baserel->relid;
	info->scanrel = baserel;
	table_close(rel, NoLock);

	foreach(lc, baserel->baserestrictinfo)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		ShipContext ctx;

		ShipContextInit(&ctx, baserel->relid, false);
		(void) ShipExpr((Node *) rinfo->clause, &ctx);
		if (ctx.ok)
			info->remote_conds = lappend(info->remote_conds, rinfo);
		else
			info->local_conds = lappend(info->local_conds, rinfo);
	}
	baserel->fdw_private = info;
	baserel->tuples = DEFAULT_TABLE_ROWS;
	baserel->rows = clamp_row_est(DEFAULT_TABLE_ROWS *
								  clauselist_selectivity(root, baserel->baserestrictinfo,
														 0, JOIN_INNER, NULL));
}

/*
 * sort_keys returns the keys the shards sort by for pathkeys, or NIL if
 * some key is not a column of the relation with a btree ordering.
 */
static List *
sort_keys(RelOptInfo *baserel, List *pathkeys)
{
	List	   *keys = NIL;
	ListCell   *lc;

	foreach(lc, pathkeys)
	{
		PathKey    *pathkey = lfirst(lc);
		EquivalenceClass *ec = pathkey->pk_eclass;
		DeparseSortKey *key = NULL;
		ListCell   *mc;

		if (ec->ec_has_volatile || (pathkey->pk_strategy != BTLessStrategyNumber &&
									pathkey->pk_strategy != BTGreaterStrategyNumber))
			return NIL;
		foreach(mc, ec->ec_members)
		{
			EquivalenceMember *em = lfirst(mc);
			Var		   *var = (Var *) em->em_expr;
			Oid			sortop;

			while (IsA(var, RelabelType))
				var = (Var *) ((RelabelType *) var)->arg;
			if (!IsA(var, Var) || var->varno != baserel->relid ||
				var->varlevelsup != 0 || var->varattno <= 0)
				continue;
			sortop = get_opfamily_member(pathkey->pk_opfamily, var->vartype, var->vartype,
										 pathkey->pk_strategy);
			if (!OidIsValid(sortop))
				continue;
			key = palloc(sizeof(DeparseSortKey));
			key->expr = (Expr *) var;
			key->sortop = sortop;
			key->collation = ec->ec_collation;
			key->nulls_first = pathkey->pk_nulls_first;
			break;
		}
		if (key == NULL)
			return NIL;
		keys = lappend(keys, key);
	}
	return keys;
}

static void
trGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	Cost		startup = ROUND_TRIP_COST;
	Cost		total = startup + baserel->rows * (cpu_tuple_cost * 2);

	add_path(baserel, (Path *) create_foreignscan_path(root, baserel, NULL,
													   baserel->rows, startup, total,
													   NIL, NULL, NULL, NIL));

	/* sorted by the shards, merged here: the order the query wants */
	if (root->query_pathkeys != NIL && sort_keys(baserel, root->query_pathkeys) != NIL)
		add_path(baserel, (Path *) create_foreignscan_path(root, baserel, NULL,
														   baserel->rows, startup,
														   total * REMOTE_SORT_MULTIPLIER,
														   root->query_pathkeys,
														   NULL, NULL, NIL));
}

/* lock_clause returns FOR UPDATE/SHARE for a scan that must lock rows */
static const char *
lock_clause(PlannerInfo *root, RelOptInfo *baserel)
{
	PlanRowMark *rc;

	if (baserel->relid == root->parse->resultRelation &&
		(root->parse->commandType == CMD_UPDATE || root->parse->commandType == CMD_DELETE))
		return " FOR UPDATE";
	rc = get_plan_rowmark(root->rowMarks, baserel->relid);
	if (rc == NULL)
		return "";
	switch (rc->strength)
	{
		case LCS_FORKEYSHARE:
		case LCS_FORSHARE:
			return " FOR SHARE";
		case LCS_FORNOKEYUPDATE:
		case LCS_FORUPDATE:
			return " FOR UPDATE";
		default:
			return "";
	}
}

/*
 * scan_limit returns the number of rows each shard needs to return at most
 * for the query's LIMIT (offset + count), or 0: only when the scan is all
 * the query reads, every condition is checked on the shards, nothing
 * between the scan and the LIMIT can remove or multiply rows, and the scan
 * is in the query's order (if it has one).
 */
static int64
scan_limit(PlannerInfo *root, RelOptInfo *baserel, TrRelInfo *info, List *pathkeys)
{
	Query	   *parse = root->parse;

	if (root->limit_tuples <= 0 || root->limit_tuples >= (double) PG_INT64_MAX ||
		parse->commandType != CMD_SELECT || parse->groupClause != NIL ||
		parse->groupingSets != NIL || parse->hasAggs || parse->hasWindowFuncs ||
		parse->distinctClause != NIL || parse->setOperations != NULL ||
		parse->hasTargetSRFs || parse->rowMarks != NIL || root->hasHavingQual ||
		info->local_conds != NIL ||
		bms_membership(root->all_baserels) != BMS_SINGLETON ||
		!bms_is_member(baserel->relid, root->all_baserels))
		return 0;
	if (root->sort_pathkeys != NIL && !pathkeys_contained_in(root->sort_pathkeys, pathkeys))
		return 0;
	return (int64) root->limit_tuples;
}

/* tenant_conds finds the conditions on the tenant column, for pruning */
static void
tenant_conds(TrRelInfo *info, List *clauses, List **strategies, List **exprs)
{
	ListCell   *lc;

	foreach(lc, clauses)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		int			strategy;
		Expr	   *value;

		if (ExtractTenantCond(rinfo->clause, info->varno, info->table->tenant_attno,
							  &strategy, &value))
		{
			*strategies = lappend_int(*strategies, strategy);
			*exprs = lappend(*exprs, value);
		}
	}
}

/*
 * ship_conds makes the shipped conditions of the scan remote expressions
 * (what the coordinator computes becomes $n, collected in ctx).
 */
static List *
ship_conds(TrRelInfo *info, ShipContext *ctx)
{
	List	   *conds = NIL;
	ListCell   *lc;

	ShipContextInit(ctx, info->varno, false);
	foreach(lc, info->remote_conds)
	{
		Node	   *shipped = ShipExpr((Node *) lfirst_node(RestrictInfo, lc)->clause, ctx);

		if (!ctx->ok)
			elog(ERROR, "tenant_router: clause became unshippable");
		conds = lappend(conds, shipped);
	}
	return conds;
}

/* fdw_scan_private builds ForeignScan.fdw_private (enum FdwScanPrivate) */
static List *
fdw_scan_private(char *sql, List *retrieved_attrs, int nparams, List *strategies,
				 List *merge_keys, char *table_name, List *column_kinds)
{
	List	   *private = list_make5(makeString(sql), retrieved_attrs, makeInteger(nparams),
									 strategies, merge_keys);

	private = lappend(private, makeString(table_name));
	return lappend(private, column_kinds);
}

static ForeignScan *
plan_scan(PlannerInfo *root, RelOptInfo *baserel, TrRelInfo *info, ForeignPath *best_path,
		  List *tlist, List *scan_clauses, Plan *outer_plan)
{
	LogicalTable *table = info->table;
	List	   *local_exprs = NIL;
	List	   *retrieved_attrs = NIL;
	List	   *strategies = NIL;
	List	   *tenant_exprs = NIL;
	List	   *keys = NIL;
	List	   *merge_keys = NIL;
	List	   *conds;
	Bitmapset  *attrs_used = NULL;
	ShipContext ctx;
	ListCell   *lc;
	const char *lock = lock_clause(root, baserel);
	char	   *sql;
	int			nparams;
	Relation	rel = table_open(info->relid, NoLock);

	/* columns the scan must return: those used above it or checked here */
	pull_varattnos((Node *) baserel->reltarget->exprs, baserel->relid, &attrs_used);
	tenant_conds(info, scan_clauses, &strategies, &tenant_exprs);
	foreach(lc, scan_clauses)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);

		if (!list_member_ptr(info->remote_conds, rinfo))
		{
			local_exprs = lappend(local_exprs, rinfo->clause);
			pull_varattnos((Node *) rinfo->clause, baserel->relid, &attrs_used);
		}
	}

	/* sorted by the shards: sort keys are columns the scan returns */
	if (best_path->path.pathkeys != NIL)
	{
		keys = sort_keys(baserel, best_path->path.pathkeys);
		foreach(lc, keys)
		{
			DeparseSortKey *key = lfirst(lc);
			AttrNumber	attno = ((Var *) key->expr)->varattno;

			attrs_used = bms_add_member(attrs_used, attno - FirstLowInvalidHeapAttributeNumber);
			merge_keys = lappend_int(merge_keys, attno);
			merge_keys = lappend_int(merge_keys, (int) key->sortop);
			merge_keys = lappend_int(merge_keys, (int) key->collation);
			merge_keys = lappend_int(merge_keys, key->nulls_first ? 1 : 0);
		}
	}

	conds = ship_conds(info, &ctx);
	nparams = list_length(ctx.param_exprs);
	sql = DeparseScan(rel, table, baserel->relid, attrs_used,
					  lock[0] != '\0' ||
					  bms_is_member(SelfItemPointerAttributeNumber - FirstLowInvalidHeapAttributeNumber,
									attrs_used),
					  conds, nparams, keys,
					  scan_limit(root, baserel, info, best_path->path.pathkeys),
					  lock, &retrieved_attrs);
	table_close(rel, NoLock);

	return make_foreignscan(tlist, local_exprs, baserel->relid,
							list_concat(ctx.param_exprs, tenant_exprs),
							fdw_scan_private(sql, retrieved_attrs, nparams,
											 strategies, merge_keys, get_rel_name(info->relid), NIL),
							NIL, NIL, outer_plan);
}

/*
 * plan_grouped plans the scan of an aggregate computed on the shards: whole
 * (TR_GROUPED) or as partial states (TR_PARTIAL).
 */
static ForeignScan *
plan_grouped(PlannerInfo *root, RelOptInfo *upperrel, TrRelInfo *info,
			 ForeignPath *best_path, List *tlist, Plan *outer_plan)
{
	TrRelInfo  *scan = (TrRelInfo *) info->scanrel->fdw_private;
	PathTarget *target = best_path->path.pathtarget;
	List	   *outputs = target->exprs;
	List	   *kinds = NIL;
	List	   *positions = NIL;
	List	   *retrieved = NIL;
	List	   *strategies = NIL;
	List	   *tenant_exprs = NIL;
	List	   *conds;
	List	   *having = NIL;
	ShipContext ctx;
	ListCell   *lc;
	int			i = 0;
	int			nparams;
	char	   *sql;
	Relation	rel = table_open(scan->relid, NoLock);

	foreach(lc, outputs)
	{
		Node	   *expr = lfirst(lc);
		Index		ref = target->sortgrouprefs ? target->sortgrouprefs[i] : 0;

		i++;
		if (ref != 0 && get_sortgroupref_clause_noerr(ref, root->parse->groupClause) != NULL)
			positions = lappend_int(positions, i);
		if (info->kind == TR_PARTIAL && IsA(expr, Aggref))
		{
			Aggref	   *simple = copyObject((Aggref *) expr);

			simple->aggsplit = AGGSPLIT_SIMPLE;
			kinds = lappend_int(kinds, PartialAggKindOf(simple));
		}
		else
			kinds = lappend_int(kinds, PARTIAL_NONE);
		retrieved = lappend_int(retrieved, i);
	}
	foreach(lc, info->having)
		having = lappend(having, lfirst_node(RestrictInfo, lc)->clause);

	tenant_conds(scan, info->scanrel->baserestrictinfo, &strategies, &tenant_exprs);
	conds = ship_conds(scan, &ctx);
	if (info->kind == TR_PARTIAL)
	{
		/* partial states deparse as the query's own aggregates */
		List	   *simple_outputs = NIL;

		foreach(lc, outputs)
		{
			Node	   *expr = copyObject(lfirst(lc));

			if (IsA(expr, Aggref))
				((Aggref *) expr)->aggsplit = AGGSPLIT_SIMPLE;
			simple_outputs = lappend(simple_outputs, expr);
		}
		outputs = simple_outputs;
	}
	nparams = list_length(ctx.param_exprs);
	sql = DeparseGrouped(rel, scan->table, scan->varno, outputs, kinds, conds,
						 nparams, positions, having);
	table_close(rel, NoLock);

	return make_foreignscan(tlist, NIL, 0,
							list_concat(ctx.param_exprs, tenant_exprs),
							fdw_scan_private(sql, retrieved, nparams,
											 strategies, NIL, get_rel_name(scan->relid),
											 info->kind == TR_PARTIAL ? kinds : NIL),
							add_to_flat_tlist(NIL, target->exprs), NIL, outer_plan);
}

static ForeignScan *
trGetForeignPlan(PlannerInfo *root, RelOptInfo *foreignrel, Oid foreigntableid,
				 ForeignPath *best_path, List *tlist, List *scan_clauses,
				 Plan *outer_plan)
{
	TrRelInfo  *info = foreignrel->fdw_private;

	if (info->kind == TR_SCAN)
		return plan_scan(root, foreignrel, info, best_path, tlist, scan_clauses, outer_plan);
	return plan_grouped(root, foreignrel, info, best_path, tlist, outer_plan);
}

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
		if (!shippable(lfirst(lc), varno, false))
			*ok = false;
		exprs = lappend(exprs, lfirst(lc));
	}
	return exprs;
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
	{
		Var		   *var = lfirst(lc);

		while (IsA(var, RelabelType))
			var = (Var *) ((RelabelType *) var)->arg;
		if (IsA(var, Var) && var->varno == scan->varno && var->varlevelsup == 0 &&
			var->varattno == scan->table->tenant_attno)
			return true;
	}
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
			   Index varno)
{
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
		if (PartialAggKindOf((Aggref *) node) == PARTIAL_NONE ||
			!shippable(node, varno, true))
			return NULL;
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

	/* grouped by tenant: the shards compute every group whole */
	if (groups_by_tenant(group_exprs, scan))
	{
		bool		whole = true;

		foreach(lc, grouped_rel->reltarget->exprs)
			whole = whole && shippable(lfirst(lc), scan->varno, true);
		foreach(lc, extra->havingQual ? make_ands_implicit((Expr *) extra->havingQual) : NIL)
		{
			whole = whole && shippable(lfirst(lc), scan->varno, true);
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
											extra->havingQual, scan->varno);
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
 * TrScanIsRemote tells whether a relation planned here is a logical table
 * scan whose every condition is checked on the shards.
 */
bool
TrScanIsRemote(RelOptInfo *baserel)
{
	TrRelInfo  *info = baserel->fdw_private;

	return info != NULL && info->kind == TR_SCAN && info->local_conds == NIL;
}

/* TrScanRemoteConds returns the conditions of such a scan, as expressions */
List *
TrScanRemoteConds(RelOptInfo *baserel)
{
	TrRelInfo  *info = baserel->fdw_private;
	List	   *conds = NIL;
	ListCell   *lc;

	foreach(lc, info->remote_conds)
		conds = lappend(conds, lfirst_node(RestrictInfo, lc)->clause);
	return conds;
}

static void
trGetForeignUpperPaths(PlannerInfo *root, UpperRelationKind stage,
					   RelOptInfo *input_rel, RelOptInfo *output_rel, void *extra)
{
	if (stage == UPPERREL_GROUP_AGG)
		add_grouping_paths(root, input_rel, output_rel, (GroupPathExtraData *) extra);
}

Datum
tenant_router_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->GetForeignRelSize = trGetForeignRelSize;
	routine->GetForeignPaths = trGetForeignPaths;
	routine->GetForeignPlan = trGetForeignPlan;
	routine->GetForeignUpperPaths = trGetForeignUpperPaths;
	routine->BeginForeignScan = TrBeginForeignScan;
	routine->IterateForeignScan = TrIterateForeignScan;
	routine->ReScanForeignScan = TrReScanForeignScan;
	routine->EndForeignScan = TrEndForeignScan;
	routine->ExplainForeignScan = TrExplainForeignScan;

	routine->AddForeignUpdateTargets = TrAddForeignUpdateTargets;
	routine->PlanForeignModify = TrPlanForeignModify;
	routine->BeginForeignModify = TrBeginForeignModify;
	routine->ExecForeignInsert = TrExecForeignInsert;
	routine->ExecForeignBatchInsert = TrExecForeignBatchInsert;
	routine->GetForeignModifyBatchSize = TrGetForeignModifyBatchSize;
	routine->ExecForeignUpdate = TrExecForeignUpdate;
	routine->ExecForeignDelete = TrExecForeignDelete;
	routine->EndForeignModify = TrEndForeignModify;
	routine->BeginForeignInsert = TrBeginForeignInsert;
	routine->EndForeignInsert = TrEndForeignInsert;
	routine->IsForeignRelUpdatable = TrIsForeignRelUpdatable;
	routine->ExplainForeignModify = TrExplainForeignModify;
	routine->ExecForeignTruncate = TrExecForeignTruncate;

	routine->PlanDirectModify = TrPlanDirectModify;
	routine->BeginDirectModify = TrBeginDirectModify;
	routine->IterateDirectModify = TrIterateDirectModify;
	routine->EndDirectModify = TrEndDirectModify;
	routine->ExplainDirectModify = TrExplainDirectModify;

	PG_RETURN_POINTER(routine);
}

/*
 * tenant_router_fdw_validator accepts no options: a logical table's place on
 * the shards comes from the catalog, not from options.
 */
Datum
tenant_router_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));

	if (options != NIL)
	{
		DefElem    *def = linitial(options);

		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", def->defname),
				 errdetail("The tenant_router foreign-data wrapper takes no options; logical tables are described by tenant_router.logical_table.")));
	}
	PG_RETURN_VOID();
}
