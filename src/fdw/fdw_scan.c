/*-------------------------------------------------------------------------
 *
 * fdw_scan.c
 *	  Executes FDW scans of logical tables: one shard after the other,
 *	  through a cursor in the shard's remote transaction.
 *
 * The shards to visit are chosen at the first fetch of each (re)scan from
 * the values of the tenant conditions, so generic plans prune by the values
 * of each execution.  Cursors fetch in batches, so a scan stopped early (a
 * LIMIT above it) costs little; their CLOSE travels with the next command.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/sysattr.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "lib/stringinfo.h"
#include "nodes/nodeFuncs.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/fdw.h"
#include "tenant_router/remote_io.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_pruning.h"

#define FETCH_SIZE 1000

typedef struct TrScanState
{
	char	   *sql;
	int			owns_at;		/* the range condition in sql, replaced by */
	int			owns_len;		/* what each shard owns */
	char	   *tenant_column;	/* quoted */
	List	   *retrieved_attrs;
	int			nparams;		/* shipped parameters; then 2 for the range */
	List	   *param_states;
	int			ntenant;
	int		   *tenant_strategies;
	Oid		   *tenant_types;
	List	   *tenant_states;
	AttInMetadata *attinmeta;
	RemoteParams params;
	Oid		   *param_typids;

	/* per (re)scan */
	bool		started;
	List	   *shards;			/* ShardRow, still to visit */
	List	   *visited;		/* shard ids, for EXPLAIN ANALYZE */
	ShardConn  *sc;
	char		cursor[32];
	bool		cursor_open;
	bool		cursor_done;
	PGresult   *batch;
	int			batch_row;
	MemoryContext batch_cxt;	/* rows of the current batch */
	MemoryContext scan_cxt;		/* per (re)scan state */
	Datum	   *values;
	bool	   *nulls;
} TrScanState;

static unsigned int cursor_number = 0;

static void start_scan(ForeignScanState *node, TrScanState *state);

static bool
contain_param_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param))
		return true;
	return expression_tree_walker(node, contain_param_walker, context);
}

void
TrBeginForeignScan(ForeignScanState *node, int eflags)
{
	ForeignScan *fsplan = (ForeignScan *) node->ss.ps.plan;
	TrScanState *state = palloc0(sizeof(TrScanState));
	List	   *exprs = fsplan->fdw_exprs;
	List	   *strategies;
	TupleDesc	tupdesc = RelationGetDescr(node->ss.ss_currentRelation);
	ListCell   *lc;
	int			i;

	node->fdw_state = state;
	state->sql = strVal(list_nth(fsplan->fdw_private, FdwScanSql));
	state->owns_at = intVal(list_nth(fsplan->fdw_private, FdwScanOwnsAt));
	state->owns_len = intVal(list_nth(fsplan->fdw_private, FdwScanOwnsLen));
	state->tenant_column = pstrdup(GetLogicalTableOrError(node->ss.ss_currentRelation)->tenant_column);
	state->retrieved_attrs = list_nth(fsplan->fdw_private, FdwScanRetrievedAttrs);
	state->nparams = intVal(list_nth(fsplan->fdw_private, FdwScanNumParams));
	strategies = list_nth(fsplan->fdw_private, FdwScanTenantStrategies);

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

	state->param_typids = palloc(sizeof(Oid) * (state->nparams + 2));
	i = 0;
	foreach(lc, list_copy_head(exprs, state->nparams))
		state->param_typids[i++] = exprType(lfirst(lc));
	state->param_typids[i++] = INT8OID;
	state->param_typids[i++] = INT8OID;
	RemoteParamsInit(&state->params, state->nparams + 2, state->param_typids);

	state->attinmeta = TupleDescGetAttInMetadata(tupdesc);
	state->values = palloc0(sizeof(Datum) * tupdesc->natts);
	state->nulls = palloc0(sizeof(bool) * tupdesc->natts);
	state->batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
											 "tenant_router scan batch",
											 ALLOCSET_DEFAULT_SIZES);
	state->scan_cxt = AllocSetContextCreate(CurrentMemoryContext,
											"tenant_router scan",
											ALLOCSET_SMALL_SIZES);

	/* EXPLAIN names the shards when the tenant conditions are constants */
	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) && state->ntenant > 0 &&
		!contain_param_walker((Node *) list_copy_tail(exprs, state->nparams), NULL))
		start_scan(node, state);
}

/* choose_shards evaluates the tenant conditions and prunes */
static List *
choose_shards(ForeignScanState *node, TrScanState *state)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	Datum	   *values = palloc(sizeof(Datum) * (state->ntenant + 1));
	bool	   *nulls = palloc(sizeof(bool) * (state->ntenant + 1));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, state->tenant_states)
	{
		values[i] = ExecEvalExpr(lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	return PruneShards(state->ntenant, state->tenant_strategies, values, nulls,
					   state->tenant_types);
}

static void
close_cursor(TrScanState *state)
{
	if (state->cursor_open)
	{
		char		sql[64];

		snprintf(sql, sizeof(sql), "CLOSE %s", state->cursor);
		ShardConnQueue(state->sc, sql);
		state->cursor_open = false;
	}
	PQclear(state->batch);
	state->batch = NULL;
}

static void
start_scan(ForeignScanState *node, TrScanState *state)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	MemoryContext old;

	MemoryContextReset(state->scan_cxt);
	old = MemoryContextSwitchTo(state->scan_cxt);
	state->shards = choose_shards(node, state);
	state->visited = NIL;
	MemoryContextSwitchTo(old);
	state->started = true;
	(void) econtext;
}

/* open_next_cursor declares the cursor on the next shard; false if none left */
static bool
open_next_cursor(ForeignScanState *node, TrScanState *state)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	ShardRow   *shard;
	Datum	   *values;
	bool	   *nulls;
	ListCell   *lc;
	int			i = 0;
	char	   *declare;
	MemoryContext old;

	if (state->shards == NIL)
		return false;

	old = MemoryContextSwitchTo(state->scan_cxt);
	shard = linitial(state->shards);
	state->shards = list_delete_first(state->shards);
	state->visited = lappend(state->visited, shard->shard_id);

	values = palloc(sizeof(Datum) * (state->nparams + 2));
	nulls = palloc(sizeof(bool) * (state->nparams + 2));
	foreach(lc, state->param_states)
	{
		values[i] = ExecEvalExpr(lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	values[i] = Int64GetDatum(shard->range_start);
	nulls[i++] = false;
	values[i] = Int64GetDatum(shard->range_end);
	nulls[i++] = false;
	RemoteParamsFill(&state->params, values, nulls);

	state->sc = ShardConnGet(shard->shard_id, shard->dsn);
	ShardConnBegin(state->sc, SHARD_READ);
	snprintf(state->cursor, sizeof(state->cursor), "tenant_router_c%u", ++cursor_number);
	/* the shard's own condition in place of the range one (unbound $n) */
	declare = psprintf("DECLARE %s NO SCROLL CURSOR FOR %.*s%s%s", state->cursor,
					   state->owns_at, state->sql,
					   ShardOwnsSql(shard, state->tenant_column),
					   state->sql + state->owns_at + state->owns_len);
	PQclear(ShardConnExec(state->sc, declare, state->params.n, state->params.types,
						  state->params.values));
	state->cursor_open = true;
	state->cursor_done = false;
	MemoryContextSwitchTo(old);
	return true;
}

static void
fetch_batch(TrScanState *state)
{
	char		sql[64];

	PQclear(state->batch);
	state->batch = NULL;
	snprintf(sql, sizeof(sql), "FETCH %d FROM %s", FETCH_SIZE, state->cursor);
	state->batch = ShardConnExec(state->sc, sql, 0, NULL, NULL);
	state->batch_row = 0;
	if (PQntuples(state->batch) < FETCH_SIZE)
		state->cursor_done = true;
}

TupleTableSlot *
TrIterateForeignScan(ForeignScanState *node)
{
	TrScanState *state = node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	TupleDesc	tupdesc = slot->tts_tupleDescriptor;

	if (!state->started)
		start_scan(node, state);

	for (;;)
	{
		if (state->batch != NULL && state->batch_row < PQntuples(state->batch))
		{
			MemoryContext old;
			HeapTuple	tuple;
			ItemPointerData ctid;
			int			i;

			MemoryContextReset(state->batch_cxt);
			old = MemoryContextSwitchTo(state->batch_cxt);
			for (i = 0; i < tupdesc->natts; i++)
			{
				state->values[i] = (Datum) 0;
				state->nulls[i] = true;
			}
			ItemPointerSetInvalid(&ctid);
			RemoteRowDecode(state->batch, state->batch_row++, state->retrieved_attrs,
							state->attinmeta, state->values, state->nulls, &ctid);
			tuple = heap_form_tuple(tupdesc, state->values, state->nulls);
			tuple->t_self = ctid;
			tuple->t_tableOid = RelationGetRelid(node->ss.ss_currentRelation);
			MemoryContextSwitchTo(old);
			ExecStoreHeapTuple(tuple, slot, false);
			return slot;
		}
		if (state->cursor_open && !state->cursor_done)
		{
			fetch_batch(state);
			continue;
		}
		close_cursor(state);
		if (!open_next_cursor(node, state))
			return ExecClearTuple(slot);
	}
}

void
TrReScanForeignScan(ForeignScanState *node)
{
	TrScanState *state = node->fdw_state;

	close_cursor(state);
	state->started = false;
	state->shards = NIL;
}

void
TrEndForeignScan(ForeignScanState *node)
{
	TrScanState *state = node->fdw_state;

	if (state == NULL)
		return;
	close_cursor(state);
}

void
TrExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
	ForeignScan *fsplan = (ForeignScan *) node->ss.ps.plan;
	TrScanState *state = node->fdw_state;

	if (state != NULL && state->started)
	{
		StringInfoData buf;
		ListCell   *lc;

		/* after a run, the shards visited; before, the shards chosen */
		initStringInfo(&buf);
		foreach(lc, es->analyze ? state->visited : state->shards)
		{
			char	   *name = es->analyze ? (char *) lfirst(lc) :
				((ShardRow *) lfirst(lc))->shard_id;

			appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", name);
		}
		ExplainPropertyText("Shards", buf.len ? buf.data : "none", es);
	}
	else
		ExplainPropertyText("Shards",
							list_length(list_nth(fsplan->fdw_private, FdwScanTenantStrategies)) > 0 ?
							"chosen at execution by tenant" : "all", es);
	if (es->verbose)
		ExplainPropertyText("Remote SQL", strVal(list_nth(fsplan->fdw_private, FdwScanSql)), es);
}
