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
 *	 - aggregates and DISTINCT computed on the shards (fdw_upper.c plans
 *	   them; the scan of their rows is planned here).
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

#include "fdw_internal.h"
#include "tenant_router/deparse.h"
#include "tenant_router/fdw.h"
#include "tenant_router/import.h"
#include "tenant_router/partial_agg.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_pruning.h"
#include "tenant_router/shippable.h"

PG_FUNCTION_INFO_V1(tenant_router_fdw_handler);
PG_FUNCTION_INFO_V1(tenant_router_fdw_validator);

/* row count assumed for a logical table, which has no local statistics */
#define DEFAULT_TABLE_ROWS 100000.0
/* what sorting on the shards adds to a scan's cost */
#define REMOTE_SORT_MULTIPLIER 1.05

/*
 * GetLogicalTableOrError returns the logical table (or reference table) of
 * rel, or raises an error for a foreign table of server tenant_router that
 * is not registered.
 */
LogicalTable *
GetLogicalTableOrError(Relation rel)
{
	LogicalTable *table = LookupRouterTable(RelationGetRelid(rel));

	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_TABLE_NOT_FOUND),
				 errmsg("foreign table \"%s\" is not a logical table",
						RelationGetRelationName(rel)),
				 errhint("Register it with logical_table_add().")));
	return table;
}

/*
 * TrShippable tells whether expr can be sent as is (no parameter) for
 * relation varno, aggregates included when aggregates.
 */
bool
TrShippable(Node *expr, Index varno, bool aggregates)
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
 * between the scan and the LIMIT can remove or multiply rows, the scan
 * is in the query's order (if it has one), and the LIMIT and OFFSET are
 * constants (the planner estimates a stable function's value, which a
 * reused plan must not keep) without WITH TIES (ties go past the count).
 */
static int64
scan_limit(PlannerInfo *root, RelOptInfo *baserel, TrRelInfo *info, List *pathkeys)
{
	Query	   *parse = root->parse;

	if (root->limit_tuples <= 0 || root->limit_tuples >= (double) PG_INT64_MAX ||
		parse->commandType != CMD_SELECT || parse->groupClause != NIL ||
		parse->groupingSets != NIL || parse->hasAggs || parse->hasWindowFuncs ||
		parse->distinctClause != NIL || parse->setOperations != NULL ||
		parse->limitOption == LIMIT_OPTION_WITH_TIES ||
		(parse->limitCount != NULL && !IsA(parse->limitCount, Const)) ||
		(parse->limitOffset != NULL && !IsA(parse->limitOffset, Const)) ||
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
				 List *merge_keys, char *table_name, List *column_kinds, bool reference,
				 char *remote_table)
{
	List	   *private = list_make5(makeString(sql), retrieved_attrs, makeInteger(nparams),
									 strategies, merge_keys);

	private = lappend(private, makeString(table_name));
	private = lappend(private, column_kinds);
	private = lappend(private, makeBoolean(reference));
	return lappend(private, makeString(pstrdup(remote_table)));
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
											 strategies, merge_keys, get_rel_name(info->relid), NIL,
											 table->is_reference, table->remote_name),
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
		if (ref != 0 &&
			(get_sortgroupref_clause_noerr(ref, root->parse->groupClause) != NULL ||
			 (root->parse->groupClause == NIL &&
			  get_sortgroupref_clause_noerr(ref, root->parse->distinctClause) != NULL)))
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
											 info->kind == TR_PARTIAL ? kinds : NIL,
											 scan->table->is_reference, scan->table->remote_name),
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

Datum
tenant_router_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->GetForeignRelSize = trGetForeignRelSize;
	routine->GetForeignPaths = trGetForeignPaths;
	routine->GetForeignPlan = trGetForeignPlan;
	routine->GetForeignUpperPaths = TrGetForeignUpperPaths;
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
	routine->ImportForeignSchema = TrImportForeignSchema;

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
