/*-------------------------------------------------------------------------
 *
 * fdw_modify.c
 *	  INSERT, UPDATE, DELETE, COPY FROM and TRUNCATE on logical tables
 *	  through the foreign-data wrapper.
 *
 * Every inserted row goes to the shard owning its tenant; a row whose tenant
 * no shard owns is an error naming the tenant (SQLSTATE 23514, like a row
 * that fits no partition), and the statement is rolled back everywhere.
 * Rows to update or delete are identified by the shard they were read from
 * (the shard of their tenant) and their ctid there.  Defaults and volatile
 * functions have been evaluated on the coordinator before a row gets here.
 *
 * An INSERT that its shard refuses because an online operation moved the
 * row's tenant runs again on the tenant's new shard when it may
 * (executor/switch_retry.c); a row UPDATE or DELETE, identified by its ctid
 * on the old shard, cannot: it fails with the shard's 40001.
 *
 * A row inserted into a reference table, or copied into it, goes to every
 * copy (fdw_reference.c), the first copy's RETURNING row being the
 * statement's.  Its UPDATE and DELETE are direct modifications only
 * (fdw_direct.c): a row read from one copy has a ctid on that copy alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "optimizer/appendinfo.h"
#include "optimizer/inherit.h"
#include "optimizer/pathnode.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/deparse.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/fdw.h"
#include "tenant_router/remote_io.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/stats.h"
#include "tenant_router/switch_retry.h"

#define TENANT_JUNK_NAME "tenant_router_tenant"
/* rows per multi-row INSERT sent to a shard */
#define INSERT_BATCH_ROWS 100

typedef struct TrModifyState
{
	Relation	rel;
	LogicalTable *table;
	CmdType		operation;
	char	   *sql;
	List	   *target_attrs;
	List	   *retrieved_attrs;	/* RETURNING columns, or NIL */
	bool		do_nothing;		/* INSERT ... ON CONFLICT DO NOTHING */
	AttrNumber	ctid_attno;		/* junk columns of the subplan */
	AttrNumber	tenant_attno;
	RemoteParams params;
	Datum	   *values;
	bool	   *nulls;
	AttInMetadata *attinmeta;
	MemoryContext row_cxt;
	TrCopy	   *copy;			/* COPY FROM: rows streamed to the shards */
	List	   *copies;			/* a reference table: the connections of its
								 * copies, once the first row is written */
	StatsStatement stats;		/* the statement on the shard, for the statistics */
} TrModifyState;

void
TrAddForeignUpdateTargets(PlannerInfo *root, Index rtindex,
						  RangeTblEntry *target_rte, Relation target_relation)
{
	LogicalTable *table = GetLogicalTableOrError(target_relation);
	Var		   *var;

	/* the row's ctid on its shard ... */
	var = makeVar(rtindex, SelfItemPointerAttributeNumber, TIDOID, -1, InvalidOid, 0);
	add_row_identity_var(root, var, rtindex, "ctid");
	if (table->is_reference)
		return;					/* direct modification only, or refused */
	/* ... and its tenant, which names the shard */
	var = makeVar(rtindex, table->tenant_attno, table->tenant_type, -1, InvalidOid, 0);
	add_row_identity_var(root, var, rtindex, TENANT_JUNK_NAME);
}

/* TrAllColumns returns the attribute numbers of the columns of rel */
List *
TrAllColumns(Relation rel)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	List	   *attrs = NIL;
	int			i;

	for (i = 0; i < tupdesc->natts; i++)
		if (!TupleDescAttr(tupdesc, i)->attisdropped)
			attrs = lappend_int(attrs, i + 1);
	return attrs;
}

List *
TrPlanForeignModify(PlannerInfo *root, ModifyTable *plan, Index resultRelation,
					int subplan_index)
{
	CmdType		operation = plan->operation;
	RangeTblEntry *rte = planner_rt_fetch(resultRelation, root);
	Relation	rel = table_open(rte->relid, NoLock);
	LogicalTable *table = GetLogicalTableOrError(rel);
	List	   *target_attrs = NIL;
	List	   *returning = NIL;
	char	   *sql = NULL;

	if (plan->returningLists != NIL)
		returning = TrAllColumns(rel);

	if (table->is_reference && operation != CMD_INSERT)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s of reference table \"%s\" must be computed on the shards",
						operation == CMD_UPDATE ? "UPDATE" : "DELETE",
						RelationGetRelationName(rel)),
				 errdetail("Each shard applies the statement to its copy; a row read from one copy cannot be told apart on the others."),
				 errhint("Use conditions and new values made of the table's columns, constants, parameters and built-in immutable functions, without reading other tables or using volatile functions.")));

	switch (operation)
	{
		case CMD_INSERT:
			if (plan->onConflictAction == ONCONFLICT_UPDATE)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("INSERT ... ON CONFLICT DO UPDATE on logical table \"%s\" needs the tenant",
								RelationGetRelationName(rel)),
						 errhint("Insert one row with a constant or parameter tenant, so that the statement goes to one shard whole.")));
			target_attrs = TrAllColumns(rel);
			sql = DeparseInsert(rel, table, target_attrs, 1,
								plan->onConflictAction == ONCONFLICT_NOTHING, returning);
			break;
		case CMD_UPDATE:
			{
				RelOptInfo *baserel = find_base_rel(root, resultRelation);
				Bitmapset  *updated = get_rel_all_updated_cols(root, baserel);
				int			col = -1;

				while ((col = bms_next_member(updated, col)) >= 0)
				{
					AttrNumber	attno = col + FirstLowInvalidHeapAttributeNumber;

					if (attno > 0)
						target_attrs = lappend_int(target_attrs, attno);
				}
				sql = DeparseUpdate(rel, table, target_attrs, returning);
				break;
			}
		case CMD_DELETE:
			sql = DeparseDelete(rel, table, returning);
			break;
		default:
			elog(ERROR, "tenant_router: unexpected operation %d", (int) operation);
	}
	table_close(rel, NoLock);
	return list_make4(makeString(sql), target_attrs, returning,
					  makeBoolean(plan->onConflictAction == ONCONFLICT_NOTHING));
}

static TrModifyState *
create_modify_state(Relation rel, CmdType operation, char *sql, List *target_attrs,
					List *retrieved_attrs)
{
	TrModifyState *state = palloc0(sizeof(TrModifyState));
	TupleDesc	tupdesc = RelationGetDescr(rel);
	int			nparams = list_length(target_attrs) + (operation == CMD_INSERT ? 0 : 2);
	Oid		   *typids = palloc(sizeof(Oid) * (nparams + 1));
	ListCell   *lc;
	int			i = 0;

	state->rel = rel;
	state->table = GetLogicalTableOrError(rel);
	state->operation = operation;
	state->sql = sql;
	state->target_attrs = target_attrs;
	state->retrieved_attrs = retrieved_attrs;
	foreach(lc, target_attrs)
		typids[i++] = TupleDescAttr(tupdesc, lfirst_int(lc) - 1)->atttypid;
	if (operation != CMD_INSERT)
	{
		/* the row is its ctid, and its tenant as a check of the shard */
		typids[i++] = TIDOID;
		typids[i++] = state->table->tenant_type;
	}
	RemoteParamsInit(&state->params, nparams, typids);
	state->values = palloc0(sizeof(Datum) * (nparams + tupdesc->natts + 1));
	state->nulls = palloc0(sizeof(bool) * (nparams + tupdesc->natts + 1));
	state->attinmeta = TupleDescGetAttInMetadata(tupdesc);
	state->row_cxt = AllocSetContextCreate(CurrentMemoryContext,
										   "tenant_router modify row",
										   ALLOCSET_SMALL_SIZES);
	return state;
}

void
TrBeginForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
					 List *fdw_private, int subplan_index, int eflags)
{
	TrModifyState *state;

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	state = create_modify_state(rinfo->ri_RelationDesc, mtstate->operation,
								strVal(list_nth(fdw_private, FdwModifySql)),
								list_nth(fdw_private, FdwModifyTargetAttrs),
								list_nth(fdw_private, FdwModifyRetrievedAttrs));
	state->do_nothing = boolVal(list_nth(fdw_private, FdwModifyDoNothing));
	if (mtstate->operation != CMD_INSERT)
	{
		Plan	   *subplan = outerPlanState(mtstate)->plan;

		state->ctid_attno = ExecFindJunkAttributeInTlist(subplan->targetlist, "ctid");
		state->tenant_attno = ExecFindJunkAttributeInTlist(subplan->targetlist, TENANT_JUNK_NAME);
		if (state->ctid_attno == InvalidAttrNumber || state->tenant_attno == InvalidAttrNumber)
			elog(ERROR, "tenant_router: row identity columns not found");
	}
	rinfo->ri_FdwState = state;
}

/* shard_of returns the connection of the shard owning tenant, ready to write */
static ShardConn *
shard_of(TrModifyState *state, int64 tenant)
{
	ShardRoute *route = RouteTenantOrError(tenant, RelationGetRelationName(state->rel),
										   state->operation == CMD_INSERT);
	ShardConn  *sc;

	StatsStatementBegin(&state->stats, route->shard_id, &tenant, GetMemoryChunkContext(state));
	sc = ShardConnGet(route->shard_id, route->dsn);
	ShardConnBegin(sc, SHARD_WRITE);
	return sc;
}

static int64
tenant_of_slot(TrModifyState *state, TupleTableSlot *slot)
{
	bool		isnull;
	Datum		value = slot_getattr(slot, state->table->tenant_attno, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("tenant column %s of logical table \"%s\" is null",
						state->table->tenant_column, RelationGetRelationName(state->rel)),
				 errdetail("Every row of a logical table belongs to a tenant.")));
	return TenantDatumToInt64(value, state->table->tenant_type);
}

/*
 * execute runs the statement for one row and fills slot from RETURNING;
 * it returns NULL when the shard changed no row.  An INSERT of tenant's row
 * (tenant not NULL) refused because the tenant moved runs on its new shard.
 */
static TupleTableSlot *
execute(TrModifyState *state, ShardConn *sc, TupleTableSlot *slot, const int64 *tenant)
{
	PGresult   *res;
	uint64		affected;
	TimestampTz deadline = 0;
	MemoryContext old = MemoryContextSwitchTo(state->row_cxt);

	RemoteParamsFill(&state->params, state->values, state->nulls);
	if (tenant == NULL)
		res = ShardConnExec(sc, state->sql, state->params.n, state->params.types,
							state->params.values);
	else
		while (PQresultStatus(res = ShardConnExecHoldMoved(sc, state->sql, state->params.n,
															state->params.types,
															state->params.values, true)) ==
			   PGRES_FATAL_ERROR)
		{
			ShardRoute *route = SwitchRetryRoute(sc, res, *tenant,
												 RelationGetRelationName(state->rel), true,
												 &deadline);

			/* the old shard's part ended, refused; the new shard's begins */
			StatsStatementEnd(&state->stats, 0);
			StatsStatementBegin(&state->stats, route->shard_id, tenant,
								GetMemoryChunkContext(state));
			sc = ShardConnGet(route->shard_id, route->dsn);
			ShardConnBegin(sc, SHARD_WRITE);
		}
	affected = strtou64(PQcmdTuples(res), NULL, 10);
	StatsStatementEnd(&state->stats, affected);
	if (affected > 0 && state->retrieved_attrs != NIL && PQntuples(res) > 0)
	{
		TupleDesc	tupdesc = slot->tts_tupleDescriptor;
		int			i;

		ExecClearTuple(slot);
		for (i = 0; i < tupdesc->natts; i++)
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
		}
		MemoryContextSwitchTo(old);
		PG_TRY();
		{
			RemoteRowDecode(res, 0, state->retrieved_attrs, state->attinmeta,
							slot->tts_values, slot->tts_isnull, NULL);
		}
		PG_FINALLY();
		{
			PQclear(res);
		}
		PG_END_TRY();
		ExecStoreVirtualTuple(slot);
	}
	else
	{
		PQclear(res);
		MemoryContextSwitchTo(old);
	}
	MemoryContextReset(state->row_cxt);
	return affected > 0 ? slot : NULL;
}

/* collect_values copies the target columns of slot into state->values */
static void
collect_values(TrModifyState *state, TupleTableSlot *slot)
{
	ListCell   *lc;
	int			i = 0;

	slot_getallattrs(slot);
	foreach(lc, state->target_attrs)
	{
		int			attno = lfirst_int(lc);

		state->values[i] = slot->tts_values[attno - 1];
		state->nulls[i] = slot->tts_isnull[attno - 1];
		i++;
	}
}

/*
 * copies_of returns the connections of a reference table's copies, ready
 * to write (the first call of the statement checks that it may)
 */
static List *
copies_of(TrModifyState *state)
{
	if (state->copies == NIL)
	{
		MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(state));

		state->copies = TrReferenceWriteConns(RelationGetRelationName(state->rel), false);
		MemoryContextSwitchTo(old);
	}
	return state->copies;
}

/*
 * insert_reference inserts a row into every copy of a reference table; the
 * first copy's RETURNING row is the statement's
 */
static TupleTableSlot *
insert_reference(TrModifyState *state, TupleTableSlot *slot)
{
	TupleTableSlot *result = NULL;
	ListCell   *lc;

	if (state->copy != NULL)
	{
		foreach(lc, copies_of(state))
			TrCopyRow(state->copy, lfirst(lc), slot);
		return slot;
	}
	collect_values(state, slot);
	foreach(lc, copies_of(state))
	{
		TupleTableSlot *done = execute(state, lfirst(lc), slot, NULL);

		if (lc == list_head(state->copies))
			result = done;
		else if ((done != NULL) != (result != NULL))
			TrReferenceCheckCount(RelationGetRelationName(state->rel),
								  ShardConnLabel(lfirst(lc)), result ? 1 : 0, done ? 1 : 0);
	}
	return result;
}

TupleTableSlot *
TrExecForeignInsert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
					TupleTableSlot *planSlot)
{
	TrModifyState *state = rinfo->ri_FdwState;
	ShardConn  *sc;
	int64		tenant;

	if (state->table->is_reference)
		return insert_reference(state, slot);
	tenant = tenant_of_slot(state, slot);
	if (state->copy != NULL)
	{
		ShardRoute *route = RouteTenantOrError(tenant, RelationGetRelationName(state->rel), true);

		TrCopyRow(state->copy, ShardConnGet(route->shard_id, route->dsn), slot);
		return slot;
	}
	sc = shard_of(state, tenant);

	collect_values(state, slot);
	return execute(state, sc, slot, &tenant);
}

static TupleTableSlot *
update_or_delete(TrModifyState *state, TupleTableSlot *slot, TupleTableSlot *planSlot)
{
	bool		isnull;
	Datum		ctid = ExecGetJunkAttribute(planSlot, state->ctid_attno, &isnull);
	Datum		tenant;
	ShardConn  *sc;
	int			n;

	if (isnull)
		elog(ERROR, "tenant_router: ctid is null");
	tenant = ExecGetJunkAttribute(planSlot, state->tenant_attno, &isnull);
	if (isnull)
		elog(ERROR, "tenant_router: tenant of the row is null");
	sc = shard_of(state, TenantDatumToInt64(tenant, state->table->tenant_type));

	if (state->operation == CMD_UPDATE)
		collect_values(state, slot);
	n = list_length(state->target_attrs);
	state->values[n] = ctid;
	state->nulls[n] = false;
	state->values[n + 1] = tenant;
	state->nulls[n + 1] = false;
	return execute(state, sc, slot, NULL);
}

TupleTableSlot *
TrExecForeignUpdate(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
					TupleTableSlot *planSlot)
{
	return update_or_delete(rinfo->ri_FdwState, slot, planSlot);
}

TupleTableSlot *
TrExecForeignDelete(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
					TupleTableSlot *planSlot)
{
	return update_or_delete(rinfo->ri_FdwState, slot, planSlot);
}

void
TrEndForeignModify(EState *estate, ResultRelInfo *rinfo)
{
}

/* TrBeginForeignInsert prepares COPY FROM (and routing into a partition). */
void
TrBeginForeignInsert(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
	Relation	rel = rinfo->ri_RelationDesc;
	LogicalTable *table = GetLogicalTableOrError(rel);
	List	   *attrs = TrAllColumns(rel);
	List	   *returning = rinfo->ri_returningList ? attrs : NIL;

	TrModifyState *state;

	state = create_modify_state(rel, CMD_INSERT,
								DeparseInsert(rel, table, attrs, 1, false, returning),
								attrs, returning);
	/* COPY FROM (no plan): rows streamed to a COPY on each shard */
	if (mtstate->ps.plan == NULL && returning == NIL)
		state->copy = TrCopyBegin(rel, table, attrs);
	rinfo->ri_FdwState = state;
}

void
TrEndForeignInsert(EState *estate, ResultRelInfo *rinfo)
{
	TrModifyState *state = rinfo->ri_FdwState;

	if (state != NULL && state->copy != NULL)
		(void) TrCopyEnd(state->copy);
}

/*
 * TrGetForeignModifyBatchSize lets the executor hand over rows to insert in
 * batches, which go to their shards as multi-row INSERTs: not when the rows
 * must come back (RETURNING, a view's WITH CHECK OPTION), nor with row
 * triggers (a BEFORE trigger may read the table, and must see the rows
 * inserted before its own).
 */
int
TrGetForeignModifyBatchSize(ResultRelInfo *rinfo)
{
	TrModifyState *state = rinfo->ri_FdwState;
	int			ncols;

	if (state == NULL || state->retrieved_attrs != NIL ||
		rinfo->ri_projectReturning != NULL || rinfo->ri_WithCheckOptions != NIL ||
		(rinfo->ri_TrigDesc && (rinfo->ri_TrigDesc->trig_insert_before_row ||
								rinfo->ri_TrigDesc->trig_insert_after_row)))
		return 1;
	ncols = Max(list_length(state->target_attrs), 1);
	return Min(INSERT_BATCH_ROWS, PQ_QUERY_PARAM_MAX_LIMIT / ncols);
}

/*
 * batch_statement builds the multi-row INSERT of rows rows[0..n-1] of slots,
 * with its parameters
 */
static char *
batch_statement(TrModifyState *state, TupleTableSlot **slots, int *rows, int n,
				int *nparams, Oid **types, const char ***values)
{
	int			p = 0;
	int			nestlevel = 0;
	int			r;

	*nparams = n * list_length(state->target_attrs);
	*types = palloc(sizeof(Oid) * (*nparams + 1));
	*values = palloc(sizeof(char *) * (*nparams + 1));
	if (state->params.needs != 0)
		nestlevel = EnterRemoteValueSettings(state->params.needs);
	for (r = 0; r < n; r++)
	{
		TupleTableSlot *slot = slots[rows[r]];
		ListCell   *lc;
		int			c = 0;

		slot_getallattrs(slot);
		foreach(lc, state->target_attrs)
		{
			int			attno = lfirst_int(lc);

			(*types)[p] = state->params.types[c];
			(*values)[p++] = slot->tts_isnull[attno - 1] ? NULL :
				OutputFunctionCall(&state->params.out_funcs[c], slot->tts_values[attno - 1]);
			c++;
		}
	}
	LeaveRemoteValueSettings(nestlevel);
	return DeparseInsert(state->rel, state->table, state->target_attrs, n, state->do_nothing, NIL);
}

/*
 * insert_rows inserts rows rows[0..n-1] of slots, grouped by the shard that
 * owns their tenants (tenants[]), one multi-row INSERT per shard, all shards
 * at once, and returns how many were inserted.  The rows of a shard that
 * refused its INSERT because a tenant moved are put in *refused (*nrefused
 * of them) after the wait for the new route (executor/switch_retry.c), to
 * be inserted again.
 */
static uint64
insert_rows(TrModifyState *state, TupleTableSlot **slots, const int64 *tenants,
			const int *rows, int n, int *refused, int *nrefused, TimestampTz *deadline)
{
	ShardRoute **route_of_row = palloc(sizeof(ShardRoute *) * n);
	bool	   *done = palloc0(sizeof(bool) * n);
	ShardConn **scs = palloc(sizeof(ShardConn *) * n);
	const char **sqls = palloc(sizeof(char *) * n);
	int		   *nparams = palloc(sizeof(int) * n);
	Oid		  **types = palloc(sizeof(Oid *) * n);
	const char ***values = palloc(sizeof(char **) * n);
	PGresult  **results = palloc(sizeof(PGresult *) * n);
	int		  **group_rows = palloc(sizeof(int *) * n);
	int		   *group_size = palloc(sizeof(int) * n);
	StatsStatement *stats = palloc0(sizeof(StatsStatement) * n);
	int			nshards = 0;
	bool		waited = false;
	uint64		inserted = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		ShardRoute *route = RouteTenantOrError(tenants[rows[i]],
											   RelationGetRelationName(state->rel), true);

		/* a copy: a route is valid until the next RouteTenant call */
		route_of_row[i] = palloc(sizeof(ShardRoute));
		*route_of_row[i] = *route;
		route_of_row[i]->shard_id = pstrdup(route->shard_id);
		route_of_row[i]->dsn = pstrdup(route->dsn);
	}
	for (i = 0; i < n; i++)
	{
		int			j;

		if (done[i])
			continue;
		group_rows[nshards] = palloc(sizeof(int) * n);
		group_size[nshards] = 0;
		for (j = i; j < n; j++)
		{
			if (!done[j] && strcmp(route_of_row[j]->shard_id, route_of_row[i]->shard_id) == 0)
			{
				group_rows[nshards][group_size[nshards]++] = rows[j];
				done[j] = true;
			}
		}
		StatsStatementBegin(&stats[nshards], route_of_row[i]->shard_id, NULL, state->row_cxt);
		scs[nshards] = ShardConnGet(route_of_row[i]->shard_id, route_of_row[i]->dsn);
		ShardConnBegin(scs[nshards], SHARD_WRITE);
		sqls[nshards] = batch_statement(state, slots, group_rows[nshards], group_size[nshards],
										&nparams[nshards], &types[nshards], &values[nshards]);
		nshards++;
	}
	ShardConnExecParamsHoldMoved(nshards, scs, sqls, nparams, (const Oid *const *) types,
								 (const char *const *const *) values, results);
	for (i = 0; i < nshards; i++)
	{
		if (PQresultStatus(results[i]) != PGRES_FATAL_ERROR)
		{
			inserted += strtou64(PQcmdTuples(results[i]), NULL, 10);
			StatsStatementEnd(&stats[i], strtou64(PQcmdTuples(results[i]), NULL, 10));
			PQclear(results[i]);
			results[i] = NULL;
		}
		else
			StatsStatementEnd(&stats[i], 0);	/* refused: sent again below */
	}
	*nrefused = 0;
	for (i = 0; i < nshards; i++)
	{
		int64	   *group_tenants;
		int			j;

		if (results[i] == NULL)
			continue;
		if (waited)
		{
			/* routing has changed or been looked at again: send them again too */
			if (!ShardConnFirstStatement(scs[i]))
				ShardConnReportMoved(scs[i], results[i],
									 "The shard had been used earlier in this transaction.");
			PQclear(results[i]);
			ShardConnRollbackRemote(scs[i]);
		}
		else
		{
			group_tenants = palloc(sizeof(int64) * group_size[i]);
			for (j = 0; j < group_size[i]; j++)
				group_tenants[j] = tenants[group_rows[i][j]];
			SwitchRetryWait(scs[i], results[i], group_size[i], group_tenants, deadline);
			waited = true;
		}
		for (j = 0; j < group_size[i]; j++)
			refused[(*nrefused)++] = group_rows[i][j];
	}
	return inserted;
}

/*
 * TrExecForeignBatchInsert inserts a batch of rows: grouped by the shard that
 * owns their tenants, one multi-row INSERT per shard, all shards at once.
 */
TupleTableSlot **
TrExecForeignBatchInsert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot **slots,
						 TupleTableSlot **planSlots, int *numSlots)
{
	TrModifyState *state = rinfo->ri_FdwState;
	int			n = *numSlots;
	int64	   *tenants;
	int		   *rows;
	int		   *refused;
	int			nrows = n;
	uint64		inserted = 0;
	TimestampTz deadline = 0;
	int			i;
	MemoryContext old;

	/* all of a batch's work in row_cxt, reset after it */
	old = MemoryContextSwitchTo(state->row_cxt);
	if (state->table->is_reference)
	{
		/* every row to every copy: one multi-row INSERT */
		int			nparam;
		Oid		   *typs;
		const char **vals;
		char	   *sql;

		List	   *copies = copies_of(state);

		rows = palloc(sizeof(int) * n);
		for (i = 0; i < n; i++)
			rows[i] = i;
		sql = batch_statement(state, slots, rows, n, &nparam, &typs, &vals);
		*numSlots = (int) TrReferenceExec(RelationGetRelationName(state->rel), copies,
										  sql, nparam, typs, vals);
		MemoryContextSwitchTo(old);
		MemoryContextReset(state->row_cxt);
		return slots;
	}

	tenants = palloc(sizeof(int64) * n);
	rows = palloc(sizeof(int) * n);
	refused = palloc(sizeof(int) * n);
	for (i = 0; i < n; i++)
	{
		tenants[i] = tenant_of_slot(state, slots[i]);
		rows[i] = i;
	}
	while (nrows > 0)
	{
		int		   *next = refused;

		inserted += insert_rows(state, slots, tenants, rows, nrows, refused, &nrows, &deadline);
		refused = rows;
		rows = next;
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(state->row_cxt);
	*numSlots = (int) inserted;
	return slots;
}

int
TrIsForeignRelUpdatable(Relation rel)
{
	return (1 << CMD_INSERT) | (1 << CMD_UPDATE) | (1 << CMD_DELETE);
}

void
TrExplainForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
					   List *fdw_private, int subplan_index, ExplainState *es)
{
	if (es->verbose)
		ExplainPropertyText("Remote SQL", strVal(list_nth(fdw_private, FdwModifySql)), es);
}

/*
 * TrExecForeignTruncate truncates the tables on every shard, all at once, in
 * the shards' remote transactions: with several shards the transaction
 * commits with two-phase commit, so every shard is truncated or none.
 */
void
TrExecForeignTruncate(List *rels, DropBehavior behavior, bool restart_seqs)
{
	char	   *sql;
	List	   *tables = NIL;
	ListCell   *lc;
	List	   *conns = NIL;
	ShardConn **scs;
	const char **sqls;
	PGresult  **results;
	int			n = 0;
	int			i;

	foreach(lc, rels)
	{
		LogicalTable *table = GetLogicalTableOrError(lfirst(lc));

		/* every copy of a reference table is emptied, if it may be */
		if (table->is_reference)
			(void) TrReferenceWriteShards(RelationGetRelationName((Relation) lfirst(lc)), true);
		tables = lappend(tables, table);
	}
	sql = DeparseTruncate(tables, behavior == DROP_CASCADE);

	/* shards that share a database share its connection: once each */
	foreach(lc, CatalogAllShards())
	{
		ShardRow   *shard = lfirst(lc);

		conns = list_append_unique_ptr(conns, ShardConnGet(shard->shard_id, shard->dsn));
	}
	scs = palloc(sizeof(ShardConn *) * (list_length(conns) + 1));
	sqls = palloc(sizeof(char *) * (list_length(conns) + 1));
	results = palloc(sizeof(PGresult *) * (list_length(conns) + 1));
	foreach(lc, conns)
	{
		ShardConnBegin(lfirst(lc), SHARD_WRITE);
		scs[n] = lfirst(lc);
		sqls[n++] = sql;
	}
	ShardConnExecAll(n, scs, sqls, results);
	for (i = 0; i < n; i++)
		PQclear(results[i]);
}
