/*-------------------------------------------------------------------------
 *
 * fdw.c
 *	  The foreign-data wrapper of logical tables: handler, validator and
 *	  scan planning.
 *
 * Every statement on a logical table that the fast path (planner/
 * fast_path.c) does not send whole to one shard is planned here: scans go to
 * the shards that can hold matching tenants, with the clauses that mean the
 * same there shipped in the remote SELECT and the others checked on the
 * coordinator; inserts are routed row by row (fdw_modify.c).  Each shard is
 * read only for the tenants it owns now (ShardOwnsSql), so rows that a
 * topology change left behind on a shard are never read twice.
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
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/planmain.h"
#include "optimizer/prep.h"
#include "optimizer/restrictinfo.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteManip.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"

#include "tenant_router/remote_session.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/fdw.h"
#include "tenant_router/shard_pruning.h"
#include "tenant_router/shippable.h"

PG_FUNCTION_INFO_V1(tenant_router_fdw_handler);
PG_FUNCTION_INFO_V1(tenant_router_fdw_validator);

/* planner state of one logical table scan */
typedef struct TrRelInfo
{
	LogicalTable *table;
	List	   *remote_conds;	/* RestrictInfos shipped to the shards */
	List	   *local_conds;	/* RestrictInfos checked on the coordinator */
} TrRelInfo;

/* row count assumed for a logical table, which has no local statistics */
#define DEFAULT_TABLE_ROWS 100000.0
/* cost of a round trip to a shard, in sequential page units */
#define ROUND_TRIP_COST 100.0

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

static void
trGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	TrRelInfo  *info = palloc0(sizeof(TrRelInfo));
	Relation	rel = table_open(foreigntableid, NoLock);
	ListCell   *lc;

	info->table = GetLogicalTableOrError(rel);
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

static void
trGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	Cost		startup = ROUND_TRIP_COST;
	Cost		total = startup + baserel->rows * (cpu_tuple_cost * 2);

	add_path(baserel, (Path *) create_foreignscan_path(root, baserel, NULL,
													   baserel->rows, startup, total,
													   NIL, NULL, NULL, NIL));
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

static ForeignScan *
trGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
				 ForeignPath *best_path, List *tlist, List *scan_clauses,
				 Plan *outer_plan)
{
	TrRelInfo  *info = baserel->fdw_private;
	LogicalTable *table = info->table;
	List	   *local_exprs = NIL;
	List	   *retrieved_attrs = NIL;
	List	   *tenant_strategies = NIL;
	List	   *tenant_exprs = NIL;
	List	   *dpcontext;
	Bitmapset  *attrs_used = NULL;
	ShipContext ctx;
	StringInfoData sql;
	ListCell   *lc;
	const char *lock = lock_clause(root, baserel);
	bool		whole_row;
	int			nparams;
	int			nestlevel;
	int			owns_at;
	int			owns_len;
	AttrNumber	attno;
	Relation	rel = table_open(foreigntableid, NoLock);
	TupleDesc	tupdesc = RelationGetDescr(rel);

	ShipContextInit(&ctx, baserel->relid, false);

	/* columns the scan must return: those used above it or checked here */
	pull_varattnos((Node *) baserel->reltarget->exprs, baserel->relid, &attrs_used);
	foreach(lc, scan_clauses)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		int			strategy;
		Expr	   *value;

		if (ExtractTenantCond(rinfo->clause, baserel->relid, table->tenant_attno,
							  &strategy, &value))
		{
			tenant_strategies = lappend_int(tenant_strategies, strategy);
			tenant_exprs = lappend(tenant_exprs, value);
		}
		if (!list_member_ptr(info->remote_conds, rinfo))
		{
			local_exprs = lappend(local_exprs, rinfo->clause);
			pull_varattnos((Node *) rinfo->clause, baserel->relid, &attrs_used);
		}
	}
	whole_row = bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, attrs_used);

	nestlevel = EnterRemoteSqlSettings();
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (attno = 1; attno <= tupdesc->natts; attno++)
	{
		if (TupleDescAttr(tupdesc, attno - 1)->attisdropped)
			continue;
		if (!whole_row && attno != table->tenant_attno &&
			!bms_is_member(attno - FirstLowInvalidHeapAttributeNumber, attrs_used))
			continue;
		if (retrieved_attrs != NIL)
			appendStringInfoString(&sql, ", ");
		appendStringInfoString(&sql, quote_identifier(NameStr(TupleDescAttr(tupdesc, attno - 1)->attname)));
		retrieved_attrs = lappend_int(retrieved_attrs, attno);
	}
	if (lock[0] != '\0' ||
		bms_is_member(SelfItemPointerAttributeNumber - FirstLowInvalidHeapAttributeNumber,
					  attrs_used))
	{
		appendStringInfoString(&sql, ", ctid");
		retrieved_attrs = lappend_int(retrieved_attrs, SelfItemPointerAttributeNumber);
	}
	appendStringInfo(&sql, " FROM %s", table->remote_name);

	/* shipped clauses, with Vars renumbered for a one-relation context */
	dpcontext = deparse_context_for(get_rel_name(foreigntableid), foreigntableid);
	foreach(lc, info->remote_conds)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		Node	   *shipped = ShipExpr((Node *) rinfo->clause, &ctx);

		if (!ctx.ok)
			elog(ERROR, "tenant_router: clause became unshippable");
		ChangeVarNodes(shipped, baserel->relid, 1, 0);
		appendStringInfo(&sql, "%s(%s)", lc == list_head(info->remote_conds) ? " WHERE " : " AND ",
						 deparse_expression(shipped, dpcontext, false, false));
	}
	nparams = list_length(ctx.param_exprs);

	/*
	 * What the shard owns: shown as its range, $nparams+1..$nparams+2; the
	 * scan puts each shard's own condition (ShardOwnsSql) in its place.
	 */
	appendStringInfoString(&sql, info->remote_conds ? " AND " : " WHERE ");
	owns_at = sql.len;
	appendStringInfo(&sql, "%s >= $%d AND %s <= $%d",
					 table->tenant_column, nparams + 1,
					 table->tenant_column, nparams + 2);
	owns_len = sql.len - owns_at;
	appendStringInfoString(&sql, lock);
	LeaveRemoteSqlSettings(nestlevel);
	table_close(rel, NoLock);

	return make_foreignscan(tlist, local_exprs, baserel->relid,
							list_concat(ctx.param_exprs, tenant_exprs),
							lappend(lappend(list_make4(makeString(sql.data), retrieved_attrs,
													   makeInteger(nparams), tenant_strategies),
											makeInteger(owns_at)),
									makeInteger(owns_len)),
							NIL, NIL, outer_plan);
}

Datum
tenant_router_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->GetForeignRelSize = trGetForeignRelSize;
	routine->GetForeignPaths = trGetForeignPaths;
	routine->GetForeignPlan = trGetForeignPlan;
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
