/*-------------------------------------------------------------------------
 *
 * router_scan.c
 *	  Executes fast-path plans: computes the tenant and the parameters,
 *	  chooses the shard, sends the statement and streams its rows back.
 *
 * A top-level statement outside a transaction block runs on the shard
 * without a remote transaction: one round trip.  Otherwise the statement
 * joins the shard's remote transaction (whose BEGIN travels with it).
 * Statements repeated with parameters are prepared on the shard.
 *
 * A write that the shard refuses because an online operation moved its
 * tenant, before any row came back, runs again on the tenant's new shard
 * when it may (switch_retry.c says when).
 *
 * A statement for a tenant that no shard owns is an error naming the tenant
 * (RouteTenantOrError): SQLSTATE 23514 for an INSERT, 55000 for a statement
 * that reads the tenant's rows.  A NULL tenant matches no row: such a
 * statement runs on the first shard of the catalog, which computes its
 * result (count(*) is 0).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "nodes/extensible.h"
#include "nodes/nodeFuncs.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/remote_io.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/router_scan.h"
#include "tenant_router/stats.h"
#include "tenant_router/switch_retry.h"

typedef struct RouterScanState
{
	CustomScanState css;
	char	   *sql;
	int			flags;
	int			tenant_param;
	char	   *table_name;
	ExprState  *tenant_state;
	Oid			tenant_type;
	List	   *param_states;
	RemoteParams params;
	AttInMetadata *attinmeta;
	List	   *retrieved_attrs;
	MemoryContext exec_cxt;		/* the query's: lives as long as the stream */

	bool		started;
	ShardStream *stream;
	ShardConn  *sc;				/* the stream's */
	char	   *shard_id;		/* for EXPLAIN */
	int64		tenant;
	bool		tenant_known;
	TimestampTz retry_deadline; /* of a write refused because its tenant moved */
	StatsStatement stats;		/* the statement on its shard, for the statistics */
} RouterScanState;

static void begin_router_scan(CustomScanState *node, EState *estate, int eflags);
static TupleTableSlot *exec_router_scan(CustomScanState *node);
static void end_router_scan(CustomScanState *node);
static void rescan_router_scan(CustomScanState *node);
static void explain_router_scan(CustomScanState *node, List *ancestors, ExplainState *es);

static Node *create_router_scan_state(CustomScan *cscan);

CustomScanMethods RouterScanMethods = {
	"TenantRouter",
	create_router_scan_state
};

static CustomExecMethods RouterExecMethods = {
	.CustomName = "TenantRouter",
	.BeginCustomScan = begin_router_scan,
	.ExecCustomScan = exec_router_scan,
	.EndCustomScan = end_router_scan,
	.ReScanCustomScan = rescan_router_scan,
	.ExplainCustomScan = explain_router_scan,
};

static Node *
create_router_scan_state(CustomScan *cscan)
{
	RouterScanState *state = palloc0(sizeof(RouterScanState));

	NodeSetTag(state, T_CustomScanState);
	state->css.methods = &RouterExecMethods;
	return (Node *) state;
}

/* RegisterRouterScan makes the plan node known (for plan copies); from _PG_init. */
void
RegisterRouterScan(void)
{
	RegisterCustomScanMethods(&RouterScanMethods);
}

static void
begin_router_scan(CustomScanState *node, EState *estate, int eflags)
{
	RouterScanState *state = (RouterScanState *) node;
	CustomScan *cscan = (CustomScan *) node->ss.ps.plan;
	List	   *param_exprs = list_delete_first(list_copy(cscan->custom_exprs));
	TupleDesc	tupdesc = node->ss.ss_ScanTupleSlot->tts_tupleDescriptor;
	Oid		   *typids = palloc(sizeof(Oid) * (list_length(param_exprs) + 1));
	ListCell   *lc;
	int			i = 0;

	state->sql = strVal(list_nth(cscan->custom_private, RouterScanSql));
	state->flags = intVal(list_nth(cscan->custom_private, RouterScanFlags));
	state->tenant_param = intVal(list_nth(cscan->custom_private, RouterScanTenantParam));
	state->table_name = strVal(list_nth(cscan->custom_private, RouterScanTableName));
	state->tenant_state = ExecInitExpr(linitial(cscan->custom_exprs), &node->ss.ps);
	state->tenant_type = getBaseType(exprType(linitial(cscan->custom_exprs)));
	state->param_states = ExecInitExprList(param_exprs, &node->ss.ps);
	foreach(lc, param_exprs)
		typids[i++] = exprType(lfirst(lc));
	if (state->tenant_param > 0)
		state->tenant_type = getBaseType(typids[state->tenant_param - 1]);
	RemoteParamsInit(&state->params, i, typids);

	state->attinmeta = TupleDescGetAttInMetadata(tupdesc);
	for (i = 1; i <= tupdesc->natts; i++)
		state->retrieved_attrs = lappend_int(state->retrieved_attrs, i);
	state->exec_cxt = estate->es_query_cxt;

	/* EXPLAIN shows the shard when the tenant is known without running anything */
	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) && !(state->flags & ROUTER_INSERT) &&
		(estate->es_param_list_info != NULL || !(state->flags & ROUTER_TENANT_PARAMS)))
	{
		bool		isnull;
		Datum		value = ExecEvalExpr(state->tenant_state, node->ss.ps.ps_ExprContext,
										 &isnull);

		if (!isnull)
		{
			ShardRoute *route;

			state->tenant = TenantDatumToInt64(value, state->tenant_type);
			state->tenant_known = true;
			route = RouteTenant(state->tenant);
			state->shard_id = route ? pstrdup(route->shard_id) : NULL;
		}
	}
}

/*
 * send_statement sends the statement to sc, in the state's memory: without a remote
 * transaction if it may, else in sc's.  A write of the tenant's rows holds
 * the shard's refusal because the tenant moved.
 */
static void
send_statement(RouterScanState *state, ShardConn *sc, bool tenant_null)
{
	if (ShardConnCanAutocommit())
	{
		/* the shard commits on its own: commit here right after, too */
		if (state->flags & ROUTER_WRITE)
			MyXactFlags |= XACT_FLAGS_NEEDIMMEDIATECOMMIT;
		ShardConnBegin(sc, SHARD_AUTOCOMMIT);
	}
	else
		ShardConnBegin(sc, (state->flags & ROUTER_WRITE) && !tenant_null ?
					   SHARD_WRITE : SHARD_READ);

	state->sc = sc;
	state->stream = ShardStreamOpen(sc, state->sql, state->params.n, state->params.types,
									state->params.values,
									(state->flags & ROUTER_PREPARE) != 0);
	/*
	 * An INSERT refused by the range constraint is one whose tenant moved,
	 * unless its ON CONFLICT DO UPDATE gives the row another tenant: that
	 * refusal may be the row's own, which no retry mends.
	 */
	if ((state->flags & ROUTER_WRITE) && !tenant_null)
		ShardStreamHoldMoved(state->stream, (state->flags & ROUTER_INSERT) != 0 &&
							 (state->flags & ROUTER_SETS_TENANT) == 0);
}

/*
 * next_row returns the stream's next row, or NULL at its end; a write
 * refused because its tenant moved is sent to the tenant's new shard
 * (switch_retry.c), or fails with 40001.
 */
static PGresult *
next_row(RouterScanState *state)
{
	PGresult   *row = ShardStreamNext(state->stream);
	PGresult   *refused;

	while (row == NULL && (refused = ShardStreamTakeMoved(state->stream)) != NULL)
	{
		ShardRoute *route;
		MemoryContext old;

		ShardStreamClose(state->stream);
		state->stream = NULL;
		route = SwitchRetryRoute(state->sc, refused, state->tenant, state->table_name,
								 (state->flags & ROUTER_INSERT) != 0, &state->retry_deadline);
		old = MemoryContextSwitchTo(state->exec_cxt);
		state->shard_id = pstrdup(route->shard_id);
		/* the old shard's part ended, refused; the new shard's begins */
		StatsStatementEnd(&state->stats, 0);
		StatsStatementBegin(&state->stats, state->shard_id, &state->tenant, state->exec_cxt);
		send_statement(state, ShardConnGet(route->shard_id, route->dsn), false);
		MemoryContextSwitchTo(old);
		row = ShardStreamNext(state->stream);
	}
	return row;
}

/* start evaluates the tenant and the parameters and sends the statement */
static void
start(RouterScanState *state)
{
	ExprContext *econtext = state->css.ss.ps.ps_ExprContext;
	Datum	   *values = palloc(sizeof(Datum) * (state->params.n + 1));
	bool	   *nulls = palloc(sizeof(bool) * (state->params.n + 1));
	Datum		tenant_value;
	bool		tenant_null;
	ShardRoute *route;
	const char *dsn;
	ShardConn  *sc;
	ListCell   *lc;
	int			i = 0;
	MemoryContext old = MemoryContextSwitchTo(state->exec_cxt);

	foreach(lc, state->param_states)
	{
		values[i] = ExecEvalExpr(lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	if (state->tenant_param > 0)
	{
		tenant_value = values[state->tenant_param - 1];
		tenant_null = nulls[state->tenant_param - 1];
	}
	else if (state->flags & ROUTER_INSERT)
	{
		tenant_value = (Datum) 0;
		tenant_null = true;
	}
	else
		tenant_value = ExecEvalExpr(state->tenant_state, econtext, &tenant_null);

	if (tenant_null && (state->flags & ROUTER_INSERT))
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("tenant column of logical table \"%s\" is null", state->table_name),
				 errdetail("Every row of a logical table belongs to a tenant.")));
	RemoteParamsFill(&state->params, values, nulls);
	if (tenant_null)
	{
		/*
		 * tenant_column = NULL matches no row on any shard, but the statement
		 * still has a result (count(*) is 0): the first shard of the catalog
		 * computes it, read alone (the catalog may hold thousands).  It
		 * changes no row there, so it counts as a read.
		 */
		List	   *shards = CatalogShardChunk(PG_INT64_MIN, 1);
		ShardRow   *any;

		if (shards == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("there is no shard to run the statement on"),
					 errdetail("The statement's tenant is NULL: it matches no row of logical table \"%s\", but a shard computes its result.",
							   state->table_name),
					 errhint("Add shards with shard_add().")));
		any = linitial(shards);
		state->shard_id = pstrdup(any->shard_id);
		dsn = any->dsn;
	}
	else
	{
		state->tenant = TenantDatumToInt64(tenant_value, state->tenant_type);
		state->tenant_known = true;
		route = RouteTenantOrError(state->tenant, state->table_name,
								   (state->flags & ROUTER_INSERT) != 0);
		state->shard_id = pstrdup(route->shard_id);
		dsn = route->dsn;
	}
	StatsStatementBegin(&state->stats, state->shard_id, tenant_null ? NULL : &state->tenant,
						state->exec_cxt);
	sc = ShardConnGet(state->shard_id, dsn);

	state->retry_deadline = 0;
	send_statement(state, sc, tenant_null);
	state->started = true;
	MemoryContextSwitchTo(old);
}

static TupleTableSlot *
exec_router_scan(CustomScanState *node)
{
	RouterScanState *state = (RouterScanState *) node;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	PGresult   *row;

	if (!state->started)
		start(state);
	if (state->stream == NULL)
		return ExecClearTuple(slot);

	row = next_row(state);
	if (row == NULL)
	{
		if (state->flags & ROUTER_COUNT_ROWS)
			node->ss.ps.state->es_processed += ShardStreamRowsAffected(state->stream);
		StatsStatementEnd(&state->stats, ShardStreamRowsAffected(state->stream));
		ShardStreamClose(state->stream);
		state->stream = NULL;
		return ExecClearTuple(slot);
	}
	StatsStatementAddRows(&state->stats, 1);
	ExecClearTuple(slot);
	RemoteRowDecode(row, 0, state->retrieved_attrs, state->attinmeta,
					slot->tts_values, slot->tts_isnull, NULL);
	return ExecStoreVirtualTuple(slot);
}

static void
end_router_scan(CustomScanState *node)
{
	RouterScanState *state = (RouterScanState *) node;

	StatsStatementEnd(&state->stats, 0);
	if (state->stream != NULL)
	{
		ShardStreamClose(state->stream);
		state->stream = NULL;
	}
}

static void
rescan_router_scan(CustomScanState *node)
{
	RouterScanState *state = (RouterScanState *) node;

	end_router_scan(node);
	state->started = false;
}

static void
explain_router_scan(CustomScanState *node, List *ancestors, ExplainState *es)
{
	RouterScanState *state = (RouterScanState *) node;

	if (state->tenant_known)
	{
		ExplainPropertyInteger("Tenant", NULL, state->tenant, es);
		ExplainPropertyText("Shard", state->shard_id ? state->shard_id : "none", es);
	}
	else
		ExplainPropertyText("Shard", "chosen at execution by tenant", es);
	if (es->verbose)
		ExplainPropertyText("Remote SQL", state->sql, es);
}
