/*-------------------------------------------------------------------------
 *
 * fdw_direct.c
 *	  UPDATE and DELETE of a logical table sent whole to each shard that can
 *	  hold matching tenants, all shards at once (postgres_fdw's direct
 *	  modification), instead of reading the rows and changing them one by
 *	  one.
 *
 * Taken when every condition of the statement and every new value can be
 * computed on the shards (what only the coordinator can compute is sent as
 * a parameter), the statement reads no other table, and the table has no
 * row triggers or check options on the coordinator.  Each shard runs
 * "UPDATE ... WHERE <conditions> AND <the shard's range> [RETURNING ...]"
 * in its remote transaction, as a write: a statement that changes rows on
 * several shards commits with two-phase commit.  The shard first by id runs
 * first, then the others all at once, so that concurrent statements over
 * the same shards queue instead of deadlocking across them.  RETURNING rows
 * come back shard after shard; the row count is the sum.
 *
 * A statement that its one shard refuses because an online operation moved
 * the tenant it names (tenant_column = value), before it did anything else
 * on that shard in its transaction, is sent again where routing then sends
 * it (executor/switch_retry.c); sent to several shards, it fails with 40001.
 *
 * A reference table's statement goes to every copy (fdw_reference.c), with
 * no range condition; each copy must change as many rows as the first, whose
 * count and RETURNING rows are the statement's.  This is the only way an
 * UPDATE or DELETE reaches a reference table: row by row, a row read from
 * one copy could not be told apart on the others.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/appendinfo.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/deparse.h"
#include "tenant_router/fdw.h"
#include "tenant_router/remote_io.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_pruning.h"
#include "tenant_router/shippable.h"
#include "tenant_router/stats.h"
#include "tenant_router/switch_retry.h"

/* ForeignScan.fdw_private of a direct modification */
enum FdwDirectPrivate
{
	FdwDirectSql,				/* the statement (String) */
	FdwDirectReturning,			/* attnums of the RETURNING columns (IntList) */
	FdwDirectNumParams,			/* shipped parameters (Integer) */
	FdwDirectTenantStrategies,	/* tenant conditions (IntList) */
	FdwDirectSetProcessed,		/* count the rows in es_processed (Boolean) */
	FdwDirectReference			/* a reference table: every copy (Boolean) */
};

struct DirectState;

/* one shard of a direct modification */
typedef struct DirectShard
{
	ShardConnClaim claim;		/* first: the claim on sc while in flight */
	struct DirectState *state;
	ShardRow   *shard;
	ShardConn  *sc;
	char	   *sql;
	bool		in_flight;
	PGresult   *result;			/* or the refusal: its tenant moved */
	StatsStatement stats;		/* the statement on this shard, for the statistics */
} DirectShard;

typedef struct DirectState
{
	char	   *sql;
	List	   *returning;
	int			nparams;
	bool		set_processed;
	bool		reference;
	List	   *param_states;
	int			ntenant;
	int		   *tenant_strategies;
	Oid		   *tenant_types;
	List	   *tenant_states;
	RemoteParams params;
	Relation	rel;
	AttInMetadata *attinmeta;
	MemoryContext cxt;			/* the query's: the shards' results live there */
	MemoryContext row_cxt;
	MemoryContextCallback gone; /* cxt freed without TrEndDirectModify */

	bool		done_sending;
	int			nshards;
	DirectShard *shards;
	List	   *chosen;			/* ShardRow, for EXPLAIN ANALYZE */
	int			current;		/* the shard whose RETURNING rows are returned */
	int			next_row;
	uint64		processed;
	TimestampTz retry_deadline; /* of a statement refused because its tenant moved */
} DirectState;

/*
 * TrPlanDirectModify turns the scan under an UPDATE or DELETE into the
 * statement itself, sent to every shard, when that is exactly equivalent.
 */
bool
TrPlanDirectModify(PlannerInfo *root, ModifyTable *plan, Index resultRelation,
				   int subplan_index)
{
	CmdType		operation = plan->operation;
	Plan	   *subplan = outerPlan(plan);
	ForeignScan *fscan;
	RelOptInfo *baserel;
	RangeTblEntry *rte;
	Relation	rel;
	LogicalTable *table;
	List	   *target_attrs = NIL;
	List	   *set_exprs = NIL;
	List	   *conds = NIL;
	List	   *returning = NIL;
	List	   *strategies = NIL;
	List	   *tenant_exprs = NIL;
	ShipContext ctx;
	ListCell   *lc;
	char	   *sql;
	int			nparams;

	if (operation != CMD_UPDATE && operation != CMD_DELETE)
		return false;
	if (subplan == NULL || !IsA(subplan, ForeignScan))
		return false;
	fscan = (ForeignScan *) subplan;
	if (fscan->scan.scanrelid != resultRelation || fscan->scan.plan.qual != NIL ||
		plan->withCheckOptionLists != NIL)
		return false;
	baserel = find_base_rel(root, resultRelation);
	if (!TrScanIsRemote(baserel))
		return false;

	rte = planner_rt_fetch(resultRelation, root);
	rel = table_open(rte->relid, NoLock);
	table = GetLogicalTableOrError(rel);
	if (rel->trigdesc != NULL &&
		(rel->trigdesc->trig_update_before_row || rel->trigdesc->trig_update_after_row ||
		 rel->trigdesc->trig_delete_before_row || rel->trigdesc->trig_delete_after_row))
	{
		table_close(rel, NoLock);
		return false;
	}

	/* the conditions, then the new values, shipped with their parameters */
	ShipContextInit(&ctx, resultRelation, false);
	foreach(lc, TrScanRemoteConds(baserel))
	{
		conds = lappend(conds, ShipExpr((Node *) lfirst(lc), &ctx));
		if (!ctx.ok)
			break;
	}
	if (ctx.ok && operation == CMD_UPDATE)
	{
		List	   *tlist;
		ListCell   *ac;

		get_translated_update_targetlist(root, resultRelation, &tlist, &target_attrs);
		forboth(lc, tlist, ac, target_attrs)
		{
			TargetEntry *tle = lfirst_node(TargetEntry, lc);

			if (lfirst_int(ac) <= InvalidAttrNumber)
				ctx.ok = false;
			set_exprs = lappend(set_exprs, ShipExpr((Node *) tle->expr, &ctx));
			if (!ctx.ok)
				break;
		}
	}
	if (!ctx.ok)
	{
		table_close(rel, NoLock);
		return false;
	}

	/* RETURNING: the target's columns come back, the rest is computed here */
	if (plan->returningLists != NIL)
	{
		Bitmapset  *attrs = NULL;
		int			col = -1;

		pull_varattnos((Node *) list_nth(plan->returningLists, subplan_index),
					   resultRelation, &attrs);
		if (bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, attrs))
			returning = TrAllColumns(rel);
		else
			while ((col = bms_next_member(attrs, col)) >= 0)
			{
				AttrNumber	attno = col + FirstLowInvalidHeapAttributeNumber;

				if (attno < 0)
				{
					table_close(rel, NoLock);
					return false;	/* a system column */
				}
				if (attno > 0)
					returning = lappend_int(returning, attno);
			}
	}

	foreach(lc, baserel->baserestrictinfo)
	{
		int			strategy;
		Expr	   *value;

		if (ExtractTenantCond(lfirst_node(RestrictInfo, lc)->clause, resultRelation,
							  table->tenant_attno, &strategy, &value))
		{
			strategies = lappend_int(strategies, strategy);
			tenant_exprs = lappend(tenant_exprs, value);
		}
	}

	nparams = list_length(ctx.param_exprs);
	sql = DeparseDirectModify(rel, table, resultRelation, operation, target_attrs,
							  set_exprs, conds, nparams, returning);
	table_close(rel, NoLock);

	fscan->operation = operation;
	fscan->resultRelation = resultRelation;
	fscan->fdw_exprs = list_concat(ctx.param_exprs, tenant_exprs);
	fscan->fdw_private = list_make5(makeString(sql), returning, makeInteger(nparams),
									strategies, makeBoolean(plan->canSetTag));
	fscan->fdw_private = lappend(fscan->fdw_private, makeBoolean(table->is_reference));
	return true;
}

/*
 * direct_release reads a shard's result; an error is raised, but for a
 * refusal because a tenant moved, which send_all sees in ds->result.
 */
static void
direct_release(ShardConnClaim *claim)
{
	DirectShard *ds = (DirectShard *) claim;
	PGresult   *res = ShardConnResult(ds->sc, false);

	ShardConnClaimDone(ds->sc, claim);
	ds->in_flight = false;
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK &&
		(ds->state->reference || !ShardResultMoved(res, false)))
		ShardConnRaise(ds->sc, res, ds->sql);
	ds->result = res;
}

static void
direct_abandon(ShardConnClaim *claim)
{
	((DirectShard *) claim)->in_flight = false;
}

/* compare_shard_ids orders shards by id, the order every backend sends in */
static int
compare_shard_ids(const ListCell *a, const ListCell *b)
{
	return strcmp(((ShardRow *) lfirst(a))->shard_id, ((ShardRow *) lfirst(b))->shard_id);
}

/*
 * direct_memory_gone: the query's memory is freed without
 * TrEndDirectModify (an error): give up the claims, whose statements the
 * transaction's cleanup cancels, and free the results.
 */
static void
direct_memory_gone(void *arg)
{
	DirectState *state = (DirectState *) arg;
	int			i;

	for (i = 0; i < state->nshards; i++)
	{
		DirectShard *ds = &state->shards[i];

		if (ds->in_flight)
			ShardConnClaimDone(ds->sc, &ds->claim);
		ds->in_flight = false;
		PQclear(ds->result);
		ds->result = NULL;
	}
	state->nshards = 0;
}

void
TrBeginDirectModify(ForeignScanState *node, int eflags)
{
	ForeignScan *fsplan = (ForeignScan *) node->ss.ps.plan;
	DirectState *state = palloc0(sizeof(DirectState));
	List	   *exprs = fsplan->fdw_exprs;
	List	   *strategies = list_nth(fsplan->fdw_private, FdwDirectTenantStrategies);
	Oid		   *typids;
	ListCell   *lc;
	int			i;

	node->fdw_state = state;
	state->cxt = CurrentMemoryContext;
	state->gone.func = direct_memory_gone;
	state->gone.arg = state;
	MemoryContextRegisterResetCallback(state->cxt, &state->gone);
	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	state->sql = strVal(list_nth(fsplan->fdw_private, FdwDirectSql));
	state->returning = list_nth(fsplan->fdw_private, FdwDirectReturning);
	state->nparams = intVal(list_nth(fsplan->fdw_private, FdwDirectNumParams));
	state->set_processed = boolVal(list_nth(fsplan->fdw_private, FdwDirectSetProcessed));
	state->reference = boolVal(list_nth(fsplan->fdw_private, FdwDirectReference));
	state->rel = node->ss.ss_currentRelation ? node->ss.ss_currentRelation :
		node->resultRelInfo->ri_RelationDesc;
	state->attinmeta = TupleDescGetAttInMetadata(RelationGetDescr(state->rel));
	state->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "tenant_router returned row",
										   ALLOCSET_SMALL_SIZES);

	state->param_states = ExecInitExprList(list_copy_head(exprs, state->nparams),
										   (PlanState *) node);
	state->ntenant = list_length(strategies);
	state->tenant_strategies = palloc(sizeof(int) * (state->ntenant + 1));
	state->tenant_types = palloc(sizeof(Oid) * (state->ntenant + 1));
	i = 0;
	foreach(lc, strategies)
	{
		Expr	   *expr = list_nth(exprs, state->nparams + i);

		state->tenant_strategies[i] = lfirst_int(lc);
		state->tenant_types[i] = exprType((Node *) expr);
		state->tenant_states = lappend(state->tenant_states,
									   ExecInitExpr(expr, (PlanState *) node));
		i++;
	}
	typids = palloc(sizeof(Oid) * (state->nparams + 2));
	i = 0;
	foreach(lc, list_copy_head(exprs, state->nparams))
		typids[i++] = exprType(lfirst(lc));
	typids[i++] = INT8OID;
	typids[i++] = INT8OID;
	RemoteParamsInit(&state->params, state->nparams + 2, typids);
}

/*
 * refused tells whether a shard refused the statement because the tenant
 * moved, after waiting for the tenant's new route (switch_retry.c): the
 * statement is to be sent again.  It may when it went to one shard, for one
 * tenant (an equality among the tenant conditions, whose values are
 * tenant_values), and was the first of its remote transaction there;
 * otherwise the refusal is raised as 40001.
 */
static bool
refused(DirectState *state, const Datum *tenant_values, const bool *tenant_nulls)
{
	DirectShard *ds = NULL;
	bool		has_tenant = false;
	int64		tenant = 0;
	int			nshards = state->nshards;
	int			i;

	for (i = 0; i < state->nshards; i++)
		if (PQresultStatus(state->shards[i].result) == PGRES_FATAL_ERROR)
			ds = &state->shards[i];
	if (ds == NULL)
		return false;
	for (i = 0; i < state->ntenant; i++)
		if (state->tenant_strategies[i] == BTEqualStrategyNumber && !tenant_nulls[i])
		{
			has_tenant = true;
			tenant = TenantDatumToInt64(tenant_values[i], state->tenant_types[i]);
		}
	for (i = 0; i < state->nshards; i++)
	{
		/* each shard's part ends here; a statement sent again begins anew */
		StatsStatementEnd(&state->shards[i].stats, 0);
		if (&state->shards[i] != ds)
		{
			PQclear(state->shards[i].result);
			state->shards[i].result = NULL;
		}
	}
	state->nshards = 0;
	if (!has_tenant || nshards > 1)
	{
		PGresult   *res = ds->result;

		ds->result = NULL;
		ShardConnReportMoved(ds->sc, res,
							 "The statement was sent to several shards at once, or not for one tenant; it is not sent again.");
	}
	SwitchRetryWait(ds->sc, ds->result, 1, &tenant, &state->retry_deadline);
	ds->result = NULL;
	return true;
}

/* send_all sends the statement to every shard that can hold matching tenants */
static void
send_all(ForeignScanState *node, DirectState *state)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	Datum	   *values = palloc(sizeof(Datum) * (state->nparams + 2));
	bool	   *nulls = palloc(sizeof(bool) * (state->nparams + 2));
	Datum	   *tenant_values = palloc(sizeof(Datum) * (state->ntenant + 1));
	bool	   *tenant_nulls = palloc(sizeof(bool) * (state->ntenant + 1));
	List	   *shards;
	ListCell   *lc;
	int			i = 0;

	foreach(lc, state->tenant_states)
	{
		tenant_values[i] = ExecEvalExpr(lfirst(lc), econtext, &tenant_nulls[i]);
		i++;
	}
	if (state->reference)
		shards = TrReferenceWriteShards(RelationGetRelationName(state->rel), false);
	else
		shards = PruneShards(state->ntenant, state->tenant_strategies, tenant_values,
							 tenant_nulls, state->tenant_types);
	state->chosen = shards;
	/* sent in one order everywhere (see below); a reference table's has its own */
	if (!state->reference)
	{
		shards = list_copy(shards);
		list_sort(shards, compare_shard_ids);
	}

	i = 0;
	foreach(lc, state->param_states)
	{
		values[i] = ExecEvalExpr(lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	state->shards = palloc0(sizeof(DirectShard) * (list_length(shards) + 1));
	state->nshards = list_length(shards);
	i = 0;
	foreach(lc, shards)
	{
		DirectShard *ds = &state->shards[i++];

		/*
		 * The first shard's rows first, then the others' all at once: two
		 * statements over the same shards then queue on the first one
		 * instead of each taking the rows of a different shard first and
		 * waiting for the other's for ever (no shard sees that deadlock).
		 * The same for a reference table's first copy (fdw_reference.c).
		 */
		if (ds == &state->shards[1] && state->shards[0].in_flight)
			direct_release(&state->shards[0].claim);
		ds->claim.release = direct_release;
		ds->claim.abandon = direct_abandon;
		ds->state = state;
		ds->shard = lfirst(lc);
		values[state->nparams] = Int64GetDatum(ds->shard->range_start);
		nulls[state->nparams] = false;
		values[state->nparams + 1] = Int64GetDatum(ds->shard->range_end);
		nulls[state->nparams + 1] = false;
		RemoteParamsFill(&state->params, values, nulls);
		StatsStatementBegin(&ds->stats, ds->shard->shard_id, NULL, state->cxt);
		ds->sc = ShardConnGet(ds->shard->shard_id, ds->shard->dsn);
		ds->sql = DeparseForShard(state->sql, state->nparams, ds->shard, NULL, NULL);
		ShardConnBegin(ds->sc, SHARD_WRITE);
		ShardConnSend(ds->sc, ds->sql, state->params.n, state->params.types,
					  state->params.values);
		ShardConnClaimSet(ds->sc, &ds->claim);
		ds->in_flight = true;
	}
	for (i = 0; i < state->nshards; i++)
		if (state->shards[i].in_flight)
			direct_release(&state->shards[i].claim);
	if (refused(state, tenant_values, tenant_nulls))
	{
		send_all(node, state);	/* routed again */
		return;
	}
	for (i = 0; i < state->nshards; i++)
	{
		DirectShard *ds = &state->shards[i];
		uint64		affected;

		affected = strtou64(PQcmdTuples(ds->result), NULL, 10);
		StatsStatementEnd(&ds->stats, affected);
		if (state->reference && i > 0)
		{
			/* a reference table's count and rows: the first copy's */
			PQclear(ds->result);
			ds->result = NULL;
			TrReferenceCheckCount(RelationGetRelationName(state->rel), ds->shard->shard_id,
								  state->processed, affected);
		}
		else
			state->processed += affected;
	}
	if (state->reference && state->nshards > 1)
		state->nshards = 1;
	state->done_sending = true;
}

TupleTableSlot *
TrIterateDirectModify(ForeignScanState *node)
{
	DirectState *state = node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	ResultRelInfo *rinfo = node->resultRelInfo;

	if (!state->done_sending)
	{
		/* Iterate runs in a per-tuple context; the state must outlive it */
		MemoryContext old = MemoryContextSwitchTo(state->cxt);

		send_all(node, state);
		MemoryContextSwitchTo(old);
		if (state->set_processed)
			node->ss.ps.state->es_processed += state->processed;
	}
	if (state->returning == NIL)
		return ExecClearTuple(slot);

	while (state->current < state->nshards)
	{
		PGresult   *res = state->shards[state->current].result;

		if (state->next_row < PQntuples(res))
		{
			TupleDesc	tupdesc = RelationGetDescr(state->rel);
			HeapTuple	tuple;
			Datum	   *values = palloc0(sizeof(Datum) * tupdesc->natts);
			bool	   *nulls = palloc(sizeof(bool) * tupdesc->natts);
			MemoryContext old;
			int			i;

			MemoryContextReset(state->row_cxt);
			old = MemoryContextSwitchTo(state->row_cxt);
			for (i = 0; i < tupdesc->natts; i++)
				nulls[i] = true;
			RemoteRowDecode(res, state->next_row++, state->returning, state->attinmeta,
							values, nulls, NULL);
			tuple = heap_form_tuple(tupdesc, values, nulls);
			tuple->t_tableOid = RelationGetRelid(state->rel);
			MemoryContextSwitchTo(old);
			ExecStoreHeapTuple(tuple, slot, false);
			/* the RETURNING list is evaluated over this row */
			rinfo->ri_projectReturning->pi_exprContext->ecxt_scantuple = slot;
			return slot;
		}
		state->current++;
		state->next_row = 0;
	}
	return ExecClearTuple(slot);
}

void
TrEndDirectModify(ForeignScanState *node)
{
	DirectState *state = node->fdw_state;
	int			i;

	if (state == NULL)
		return;
	for (i = 0; i < state->nshards; i++)
	{
		DirectShard *ds = &state->shards[i];

		if (ds->in_flight)
			direct_release(&ds->claim);
		PQclear(ds->result);
		ds->result = NULL;
	}
	state->nshards = 0;
}

void
TrExplainDirectModify(ForeignScanState *node, ExplainState *es)
{
	ForeignScan *fsplan = (ForeignScan *) node->ss.ps.plan;
	DirectState *state = node->fdw_state;

	if (state != NULL && state->done_sending)
		TrExplainShards(state->chosen, es);
	else
		ExplainPropertyText("Shards",
							list_length(list_nth(fsplan->fdw_private, FdwDirectTenantStrategies)) > 0 ?
							"chosen at execution by tenant" : "all", es);
	if (es->verbose)
		ExplainPropertyText("Remote SQL", strVal(list_nth(fsplan->fdw_private, FdwDirectSql)), es);
}
