/*-------------------------------------------------------------------------
 *
 * fdw_scan.c
 *	  Executes FDW scans of logical tables: every shard that can hold
 *	  matching tenants at once, rows streamed as they arrive.
 *
 * The shards to visit are chosen at the first fetch of each (re)scan from
 * the values of the tenant conditions, so generic plans prune by the values
 * of each execution.  Each shard gets, in one pipeline and all shards at
 * once, its remote transaction's BEGIN (if not open yet), a cursor for the
 * remote query and the first FETCH; from then on, whenever a shard's batch
 * arrives, its next FETCH is sent before the batch is returned, so every
 * shard works while the coordinator consumes: one batch in hand and one in
 * flight per shard bound the coordinator's memory whatever the row count.
 * Batches are taken from whichever shard has one ready, waiting on one wait
 * set over every shard's socket; with merge keys (an ORDER BY the shards
 * sort), the shards' sorted streams are merged instead, through a binary
 * heap of each shard's next row.
 *
 * A scan over several shards reads each "within what it owns"
 * (DeparseForShard): a condition on every row, which can cost as much as
 * the rest of a count(*).  A shard's table that holds nothing else needs
 * none: its range constraint tenant_router_range is validated, and its
 * comment (ShardSetOwnership) says that it is exactly what the shard owns
 * in this coordinator's topology.  That is learnt from the shard, by a
 * query on the constraint sent in the pipeline after the DECLARE and read
 * before the first batch is used, and remembered (owned_tables).  A
 * constraint once validated holds as long as it exists: its condition
 * cannot change and every row written since was checked.  So when the
 * constraint remembered as validated is still there after the cursor's
 * snapshot was taken, the cursor sees no row outside it and is declared
 * without the condition; when it is not, the batch is thrown away and the
 * cursor declared again with it.
 *
 * A connection shared with another scan (a nested loop, shards on one
 * database) is released by its scan's claim: an in-flight FETCH is read
 * into memory first (one batch).  A rollback that cancels the remote query
 * makes the next read an error, not a silent end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/xact.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "lib/binaryheap.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/sortsupport.h"
#include "utils/timestamp.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/deparse.h"
#include "tenant_router/fdw.h"
#include "tenant_router/guc.h"
#include "tenant_router/partial_agg.h"
#include "tenant_router/remote_io.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_pruning.h"
#include "tenant_router/shippable.h"
#include "tenant_router/stats.h"

#define FETCH_SIZE 1000
/* how long what a shard said of its table's range constraint is trusted to say "not whole" */
#define OWNED_RECHECK_MS 1000
#define OWNED_KEY_LEN 256

/* what a shard's table's range constraint was, when last seen (key: shard id | table) */
typedef struct OwnedTable
{
	char		key[OWNED_KEY_LEN];
	Oid			conoid;			/* the constraint, or InvalidOid */
	bool		validated;
	char	   *comment;		/* in TopMemoryContext, or NULL */
	TimestampTz checked_at;
} OwnedTable;

static HTAB *owned_tables = NULL;

struct TrScanState;

/* one shard of a scan */
typedef struct ScanShard
{
	ShardConnClaim claim;		/* first: the claim on sc while fetching */
	struct TrScanState *scan;
	ShardRow   *shard;
	ShardConn  *sc;
	char		cursor[32];
	char		fetch_sql[64];
	bool		open;			/* the cursor is open on the shard */
	bool		fetching;		/* a FETCH is in flight (claimed) */
	bool		exhausted;		/* the last FETCH returned its last row */
	bool		cancelled;		/* a rollback cancelled the remote query */
	PGresult   *ahead;			/* a batch read before its turn */
	PGresult   *batch;			/* the batch being returned */
	int			next;			/* its next row */
	TupleTableSlot *head;		/* merge: this shard's next row */
	StatsStatement stats;		/* the scan on this shard, for the statistics */
	OwnedTable *owned;			/* asked of its range constraint, or NULL */
	bool		whole;			/* declared without the condition on tenants */
	Oid			whole_conoid;	/* ... because of this constraint */
	char	   *declare;		/* the DECLARE with the condition */
} ScanShard;

typedef struct TrScanState
{
	char	   *sql;
	List	   *retrieved_attrs;
	int			nparams;		/* shipped parameters; then 2 for the range */
	List	   *param_states;
	int			ntenant;
	int		   *tenant_strategies;
	Oid		   *tenant_types;
	List	   *tenant_states;
	AttInMetadata *attinmeta;
	TupleDesc	tupdesc;
	Oid			table_oid;		/* for the tuples' tableoid, or InvalidOid */
	char	   *table_name;
	char	   *remote_table;	/* the shards' table */
	bool		reference;		/* a reference table: one shard's copy */
	RemoteParams params;
	Oid		   *param_typids;

	/* partial aggregate states among the columns (upper scans only) */
	int		   *kinds;			/* PartialKind of each column, or NULL */
	Aggref	  **aggrefs;		/* the Aggref of each partial column */

	/* merge keys: column positions (1-based in the tuple) and sort support */
	int			nkeys;
	SortSupport sortkeys;
	binaryheap *heap;

	/* per (re)scan */
	bool		started;
	List	   *chosen;			/* ShardRow, for EXPLAIN */
	int			nshards;
	ScanShard  *shards;
	int			current;		/* the shard whose batch is being returned */
	WaitEventSet *wait_set;
	MemoryContext batch_cxt;	/* the row being returned */
	MemoryContext scan_cxt;		/* per (re)scan state */
	MemoryContextCallback scan_gone;	/* when scan_cxt goes without close_all */
	Datum	   *values;
	bool	   *nulls;
} TrScanState;

static unsigned int cursor_number = 0;

static void start_scan(ForeignScanState *node, TrScanState *state, bool explain_only);
static void send_fetch(ScanShard *ss);

/* heap_compare orders the shards of a merge by their next rows (binaryheap: max first) */
static int
heap_compare(Datum a, Datum b, void *arg)
{
	TrScanState *state = (TrScanState *) arg;
	TupleTableSlot *s1 = state->shards[DatumGetInt32(a)].head;
	TupleTableSlot *s2 = state->shards[DatumGetInt32(b)].head;
	int			k;

	for (k = 0; k < state->nkeys; k++)
	{
		SortSupport ssup = &state->sortkeys[k];
		AttrNumber	attno = ssup->ssup_attno;
		bool		null1,
					null2;
		Datum		d1 = slot_getattr(s1, attno, &null1);
		Datum		d2 = slot_getattr(s2, attno, &null2);
		int			cmp = ApplySortComparator(d1, null1, d2, null2, ssup);

		if (cmp != 0)
			return -cmp;
	}
	return 0;
}

void
TrBeginForeignScan(ForeignScanState *node, int eflags)
{
	ForeignScan *fsplan = (ForeignScan *) node->ss.ps.plan;
	TrScanState *state = palloc0(sizeof(TrScanState));
	List	   *exprs = fsplan->fdw_exprs;
	List	   *strategies;
	List	   *merge_keys;
	TupleDesc	tupdesc = node->ss.ss_ScanTupleSlot->tts_tupleDescriptor;
	ListCell   *lc;
	int			i;

	node->fdw_state = state;
	state->sql = strVal(list_nth(fsplan->fdw_private, FdwScanSql));
	state->retrieved_attrs = list_nth(fsplan->fdw_private, FdwScanRetrievedAttrs);
	state->nparams = intVal(list_nth(fsplan->fdw_private, FdwScanNumParams));
	strategies = list_nth(fsplan->fdw_private, FdwScanTenantStrategies);
	merge_keys = list_nth(fsplan->fdw_private, FdwScanMergeKeys);
	state->table_name = strVal(list_nth(fsplan->fdw_private, FdwScanTableName));
	state->reference = boolVal(list_nth(fsplan->fdw_private, FdwScanReference));
	state->remote_table = strVal(list_nth(fsplan->fdw_private, FdwScanRemoteTable));
	if (list_nth(fsplan->fdw_private, FdwScanColumnKinds) != NIL)
	{
		List	   *kinds = list_nth(fsplan->fdw_private, FdwScanColumnKinds);

		state->kinds = palloc(sizeof(int) * list_length(kinds));
		state->aggrefs = palloc0(sizeof(Aggref *) * list_length(kinds));
		i = 0;
		foreach(lc, kinds)
		{
			state->kinds[i] = lfirst_int(lc);
			if (state->kinds[i] != PARTIAL_NONE)
				state->aggrefs[i] = (Aggref *) ((TargetEntry *) list_nth(fsplan->fdw_scan_tlist, i))->expr;
			i++;
		}
	}

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

	state->tupdesc = tupdesc;
	state->table_oid = node->ss.ss_currentRelation ?
		RelationGetRelid(node->ss.ss_currentRelation) : InvalidOid;
	state->attinmeta = TupleDescGetAttInMetadata(tupdesc);
	state->values = palloc0(sizeof(Datum) * tupdesc->natts);
	state->nulls = palloc0(sizeof(bool) * tupdesc->natts);
	state->batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
											 "tenant_router scan row",
											 ALLOCSET_DEFAULT_SIZES);
	state->scan_cxt = AllocSetContextCreate(CurrentMemoryContext,
											"tenant_router scan",
											ALLOCSET_DEFAULT_SIZES);

	/* merge keys: (column, sort operator, collation, nulls first) */
	state->nkeys = list_length(merge_keys) / 4;
	if (state->nkeys > 0)
	{
		state->sortkeys = palloc0(sizeof(SortSupportData) * state->nkeys);
		for (i = 0; i < state->nkeys; i++)
		{
			SortSupport ssup = &state->sortkeys[i];

			ssup->ssup_cxt = CurrentMemoryContext;
			ssup->ssup_attno = list_nth_int(merge_keys, i * 4);
			ssup->ssup_collation = (Oid) list_nth_int(merge_keys, i * 4 + 2);
			ssup->ssup_nulls_first = list_nth_int(merge_keys, i * 4 + 3) != 0;
			PrepareSortSupportFromOrderingOp((Oid) list_nth_int(merge_keys, i * 4 + 1), ssup);
		}
	}

	/* EXPLAIN names the shards when the tenant conditions are constants */
	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) &&
		!ContainsParam((Node *) list_copy_tail(exprs, state->nparams)))
		start_scan(node, state, true);
}

/*
 * choose_shards evaluates the tenant conditions and prunes; a reference
 * table is read from one shard
 */
static List *
choose_shards(ForeignScanState *node, TrScanState *state)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	Datum	   *values = palloc(sizeof(Datum) * (state->ntenant + 1));
	bool	   *nulls = palloc(sizeof(bool) * (state->ntenant + 1));
	ListCell   *lc;
	int			i = 0;

	if (state->reference)
		return TrReferenceReadShards();

	foreach(lc, state->tenant_states)
	{
		values[i] = ExecEvalExpr(lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	return PruneShards(state->ntenant, state->tenant_strategies, values, nulls,
					   state->tenant_types);
}

/*
 * owned_entry returns what this backend remembers of the range constraint
 * of the shard's table, entered empty when nothing; NULL for a name too
 * long.
 */
static OwnedTable *
owned_entry(const char *shard_id, const char *table)
{
	char		key[OWNED_KEY_LEN];
	OwnedTable *entry;
	bool		found;

	if (strlen(shard_id) + strlen(table) + 2 > OWNED_KEY_LEN)
		return NULL;
	if (owned_tables == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = OWNED_KEY_LEN;
		ctl.entrysize = sizeof(OwnedTable);
		owned_tables = hash_create("tenant_router owned tables", 64, &ctl,
								   HASH_ELEM | HASH_STRINGS);
	}
	memset(key, 0, sizeof(key));
	snprintf(key, sizeof(key), "%s|%s", shard_id, table);
	entry = hash_search(owned_tables, key, HASH_ENTER, &found);
	if (!found)
	{
		entry->conoid = InvalidOid;
		entry->validated = false;
		entry->comment = NULL;
		entry->checked_at = 0;
	}
	return entry;
}

/*
 * choose_whole returns the SQL of the shard's cursor: whole (without the
 * condition on its tenants, DeparseForShard) when its table was seen whole
 * (the header above) with the range constraint comment, else filtered; ss->owned is set when the shard is to be asked about its table
 * in the cursor's pipeline (always for a whole read, else at most once per
 * OWNED_RECHECK_MS, so that a constraint validated since is noticed).
 */
static char *
choose_whole(ScanShard *ss, TrScanState *state, char *filtered, char *whole,
			 const char *comment)
{
	OwnedTable *entry;

	if (whole == NULL || (entry = owned_entry(ss->shard->shard_id, state->remote_table)) == NULL)
		return filtered;
	if (entry->validated && entry->comment != NULL && strcmp(entry->comment, comment) == 0)
	{
		ss->owned = entry;
		ss->whole = true;
		ss->whole_conoid = entry->conoid;
		return whole;
	}
	if (entry->checked_at == 0 ||
		TimestampDifferenceExceeds(entry->checked_at, GetCurrentStatementStartTimestamp(),
								   OWNED_RECHECK_MS))
		ss->owned = entry;
	return filtered;
}

/*
 * check_owned records what the shard said of its table's range constraint
 * (the kept result of the cursor's pipeline) and returns the first batch
 * res, or, if the cursor was declared whole on a constraint that is no
 * longer there, the first batch of the cursor declared again with the
 * condition on tenants.
 */
static PGresult *
check_owned(ScanShard *ss, PGresult *res)
{
	TrScanState *state = ss->scan;
	OwnedTable *entry = ss->owned;
	PGresult   *kept = ShardConnTakeKept(ss->sc);
	char		sql[64];

	ss->owned = NULL;
	entry->conoid = InvalidOid;
	entry->validated = false;
	if (entry->comment != NULL)
		pfree(entry->comment);
	entry->comment = NULL;
	entry->checked_at = GetCurrentStatementStartTimestamp();
	if (kept != NULL && PQntuples(kept) == 1)
	{
		entry->conoid = atooid(PQgetvalue(kept, 0, 0));
		entry->validated = strcmp(PQgetvalue(kept, 0, 1), "t") == 0;
		if (!PQgetisnull(kept, 0, 2))
			entry->comment = MemoryContextStrdup(TopMemoryContext, PQgetvalue(kept, 0, 2));
	}
	PQclear(kept);
	if (!ss->whole || (entry->validated && entry->conoid == ss->whole_conoid))
		return res;

	/* the constraint is not the one seen validated: read with the condition */
	ss->whole = false;
	PQclear(res);
	snprintf(sql, sizeof(sql), "CLOSE %s", ss->cursor);
	ShardConnQueue(ss->sc, sql);
	ShardConnQueueParams(ss->sc, ss->declare, state->params.n, state->params.types,
						 state->params.values);
	send_fetch(ss);
	res = ShardConnResult(ss->sc, true);
	ShardConnClaimDone(ss->sc, &ss->claim);
	ss->fetching = false;
	return res;
}

/*
 * take_result reads the result of a shard's FETCH in flight, releasing its
 * claim; the batch goes to ahead.
 */
static void
take_result(ScanShard *ss)
{
	PGresult   *res;

	Assert(ss->fetching);
	/* the claim stays until the result is read: an error leaves it to the abort */
	res = ShardConnResult(ss->sc, true);
	ShardConnClaimDone(ss->sc, &ss->claim);
	ss->fetching = false;
	if (ss->owned != NULL)
		res = check_owned(ss, res);
	StatsStatementAddRows(&ss->stats, PQntuples(res));
	if (PQntuples(res) < FETCH_SIZE)
	{
		ss->exhausted = true;
		StatsStatementEnd(&ss->stats, 0);
	}
	Assert(ss->ahead == NULL);
	ss->ahead = res;
}

/* shard_release: another command needs the connection: read the FETCH now */
static void
shard_release(ShardConnClaim *claim)
{
	take_result((ScanShard *) claim);
}

/* shard_abandon: the remote query was cancelled (rollback) or its connection lost */
static void
shard_abandon(ShardConnClaim *claim)
{
	ScanShard  *ss = (ScanShard *) claim;

	ss->fetching = false;
	ss->open = false;
	ss->cancelled = true;
}

/* send_fetch asks the shard for its next batch, without waiting */
static void
send_fetch(ScanShard *ss)
{
	ShardConnSend(ss->sc, ss->fetch_sql, 0, NULL, NULL);
	ShardConnClaimSet(ss->sc, &ss->claim);
	ss->fetching = true;
}

/* close_shard closes the shard's cursor (the CLOSE travels with the next command) */
static void
close_shard(ScanShard *ss)
{
	if (ss->fetching)
		take_result(ss);
	StatsStatementEnd(&ss->stats, 0);
	if (ss->open)
	{
		char		sql[64];

		snprintf(sql, sizeof(sql), "CLOSE %s", ss->cursor);
		ShardConnQueue(ss->sc, sql);
		ss->open = false;
	}
	PQclear(ss->ahead);
	ss->ahead = NULL;
	PQclear(ss->batch);
	ss->batch = NULL;
}

static void
close_all(TrScanState *state)
{
	int			i;

	for (i = 0; i < state->nshards; i++)
		close_shard(&state->shards[i]);
	if (state->wait_set != NULL)
	{
		FreeWaitEventSet(state->wait_set);
		state->wait_set = NULL;
	}
	state->nshards = 0;
}

/*
 * open_shards declares the cursor on every chosen shard and sends the first
 * FETCH, all shards at once, one round trip.
 */
static void
open_shards(ForeignScanState *node, TrScanState *state, List *shards)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	Datum	   *values = palloc(sizeof(Datum) * (state->nparams + 2));
	bool	   *nulls = palloc(sizeof(bool) * (state->nparams + 2));
	ListCell   *lc;
	int			i = 0;
	int			s = 0;

	foreach(lc, state->param_states)
	{
		values[i] = ExecEvalExpr(lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	state->shards = palloc0(sizeof(ScanShard) * (list_length(shards) + 1));
	state->nshards = list_length(shards);
	foreach(lc, shards)
	{
		ScanShard  *ss = &state->shards[s++];
		char	   *declare;
		char	   *filtered;
		char	   *sql;

		ss->claim.release = shard_release;
		ss->claim.abandon = shard_abandon;
		ss->scan = state;
		ss->shard = lfirst(lc);
		values[state->nparams] = Int64GetDatum(ss->shard->range_start);
		nulls[state->nparams] = false;
		values[state->nparams + 1] = Int64GetDatum(ss->shard->range_end);
		nulls[state->nparams + 1] = false;
		RemoteParamsFill(&state->params, values, nulls);

		StatsStatementBegin(&ss->stats, ss->shard->shard_id, NULL, state->scan_cxt);
		ss->sc = ShardConnGet(ss->shard->shard_id, ss->shard->dsn);
		ShardConnBegin(ss->sc, SHARD_READ);
		snprintf(ss->cursor, sizeof(ss->cursor), "tenant_router_c%u", ++cursor_number);
		snprintf(ss->fetch_sql, sizeof(ss->fetch_sql), "FETCH %d FROM %s", FETCH_SIZE,
				 ss->cursor);
		if (state->nshards > 1 && !state->reference)
		{
			char	   *whole;
			char	   *comment;

			filtered = DeparseForShard(state->sql, state->nparams, ss->shard, &whole, &comment);
			sql = choose_whole(ss, state, filtered, whole, comment);
		}
		else
			sql = filtered = DeparseForShard(state->sql, state->nparams, ss->shard, NULL, NULL);
		declare = psprintf("DECLARE %s NO SCROLL CURSOR FOR %s", ss->cursor, sql);
		if (ss->whole)
			ss->declare = psprintf("DECLARE %s NO SCROLL CURSOR FOR %s", ss->cursor, filtered);
		ShardConnQueueParams(ss->sc, declare, state->params.n, state->params.types,
							 state->params.values);
		if (ss->owned != NULL)
			ShardConnQueueKept(ss->sc,
							   psprintf("SELECT c.oid, c.convalidated, "
										"pg_catalog.obj_description(c.oid, 'pg_constraint') "
										"FROM pg_catalog.pg_constraint c "
										"WHERE c.conrelid = pg_catalog.to_regclass(%s) "
										"AND c.conname = 'tenant_router_range'",
										quote_literal_cstr(state->remote_table)));
		ss->open = true;
		send_fetch(ss);
		if (state->nkeys > 0)
			ss->head = MakeSingleTupleTableSlot(state->tupdesc, &TTSOpsHeapTuple);
	}
	state->current = -1;
}

/*
 * scan_memory_gone: the scan's memory is freed without close_all (a
 * rollback frees a suspended cursor's executor state before the
 * transaction callbacks clean the connections): give up the claims, whose
 * FETCHes the cleanup cancels, and free what palloc does not own.
 */
static void
scan_memory_gone(void *arg)
{
	TrScanState *state = (TrScanState *) arg;
	int			i;

	for (i = 0; i < state->nshards; i++)
	{
		ScanShard  *ss = &state->shards[i];

		if (ss->fetching)
			ShardConnClaimDone(ss->sc, &ss->claim);
		ss->fetching = false;
		PQclear(ss->ahead);
		ss->ahead = NULL;
		PQclear(ss->batch);
		ss->batch = NULL;
	}
	state->nshards = 0;
	if (state->wait_set != NULL)
		FreeWaitEventSet(state->wait_set);
	state->wait_set = NULL;
}

static void
start_scan(ForeignScanState *node, TrScanState *state, bool explain_only)
{
	MemoryContext old;
	List	   *shards;

	close_all(state);
	MemoryContextReset(state->scan_cxt);
	state->scan_gone.func = scan_memory_gone;
	state->scan_gone.arg = state;
	MemoryContextRegisterResetCallback(state->scan_cxt, &state->scan_gone);
	old = MemoryContextSwitchTo(state->scan_cxt);
	shards = choose_shards(node, state);
	state->chosen = shards;
	state->started = true;
	if (list_length(shards) > 1 && !explain_only &&
		TenantRouterMultiShardReads == MULTI_SHARD_READS_REFUSE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("statement would read %d shards of logical table \"%s\"",
						list_length(shards), state->table_name),
				 errdetail("tenant_router.multi_shard_reads is \"refuse\"."),
				 errhint("Add a condition on the tenant column that selects one shard, or set tenant_router.multi_shard_reads to \"allow\".")));
	if (!explain_only)
		open_shards(node, state, shards);
	MemoryContextSwitchTo(old);
}

static void
check_cancelled(TrScanState *state, ScanShard *ss)
{
	if (ss->cancelled)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_CURSOR_STATE),
				 errmsg("the remote query on shard \"%s\" was cancelled by a rollback",
						ss->shard->shard_id),
				 errdetail("The query started inside a savepoint that was rolled back since."),
				 errhint("Open the cursor again.")));
}

/*
 * next_batch makes the shard's next batch current (it may be empty),
 * waiting for it if needed, and sends the FETCH after it; false when the
 * shard has no more.
 */
static bool
next_batch(ScanShard *ss)
{
	check_cancelled(ss->scan, ss);
	PQclear(ss->batch);
	ss->batch = NULL;
	if (ss->fetching)
		take_result(ss);
	if (ss->ahead == NULL)
		return false;
	ss->batch = ss->ahead;
	ss->ahead = NULL;
	ss->next = 0;
	if (!ss->exhausted)
		send_fetch(ss);
	else if (ss->open)
	{
		char		sql[64];

		snprintf(sql, sizeof(sql), "CLOSE %s", ss->cursor);
		ShardConnQueue(ss->sc, sql);
		ss->open = false;
	}
	return true;
}

/*
 * ready_shard returns a shard whose next batch can be had without waiting,
 * or -1; all_done is set when no shard has anything left.
 */
static int
ready_shard(TrScanState *state, bool *all_done)
{
	int			i;

	*all_done = true;
	for (i = 0; i < state->nshards; i++)
	{
		ScanShard  *ss = &state->shards[i];

		check_cancelled(state, ss);
		if (ss->ahead != NULL)
			return i;
		if (ss->fetching)
		{
			*all_done = false;
			if (ShardConnResultReady(ss->sc))
				return i;
		}
	}
	return -1;
}

/* wait_any waits until a shard with a FETCH in flight has something to read */
static void
wait_any(TrScanState *state)
{
	WaitEvent	event;
	int			i;

	if (state->wait_set != NULL)
		FreeWaitEventSet(state->wait_set);
	state->wait_set = CreateWaitEventSet(state->scan_cxt, state->nshards + 2);
	AddWaitEventToSet(state->wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(state->wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < state->nshards; i++)
		if (state->shards[i].fetching)
			AddWaitEventToSet(state->wait_set, WL_SOCKET_READABLE,
							  ShardConnSocket(state->shards[i].sc), NULL, NULL);
	(void) WaitEventSetWait(state->wait_set, -1, &event, 1, PG_WAIT_EXTENSION);
	/* freed before an interrupt can raise an error: it holds a descriptor */
	FreeWaitEventSet(state->wait_set);
	state->wait_set = NULL;
	if (event.events & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * decode_partial_row converts row r of an aggregate's scan: plain columns
 * through their input functions, partial states from their columns.
 */
static void
decode_partial_row(TrScanState *state, PGresult *res, int r)
{
	int			natts = state->tupdesc->natts;
	int			col = 0;
	int			i;

	for (i = 0; i < natts; i++)
	{
		int			ncols = state->kinds[i] == PARTIAL_NONE ? 1 :
			PartialAggColumns((PartialKind) state->kinds[i]);
		char	   *texts[2];
		int			c;

		if (col + ncols > PQnfields(res))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_COLUMN_NUMBER),
					 errmsg("shard returned %d columns where more were expected",
							PQnfields(res))));
		for (c = 0; c < ncols; c++)
			texts[c] = PQgetisnull(res, r, col + c) ? NULL : PQgetvalue(res, r, col + c);
		if (state->kinds[i] == PARTIAL_NONE)
		{
			state->nulls[i] = (texts[0] == NULL);
			state->values[i] = InputFunctionCall(&state->attinmeta->attinfuncs[i], texts[0],
												 state->attinmeta->attioparams[i],
												 state->attinmeta->atttypmods[i]);
		}
		else
			state->values[i] = PartialAggState(state->aggrefs[i], (PartialKind) state->kinds[i],
											   texts, TupleDescAttr(state->tupdesc, i)->atttypid,
											   &state->nulls[i]);
		col += ncols;
	}
}

/*
 * decode_row stores row r of res as the tuple of slot, formed in cxt (the
 * slot frees it with the next row when owned).
 */
static void
decode_row(TrScanState *state, PGresult *res, int r, TupleTableSlot *slot,
		   MemoryContext cxt, bool owned)
{
	MemoryContext old;
	HeapTuple	tuple;
	ItemPointerData ctid;
	int			i;

	MemoryContextReset(state->batch_cxt);
	old = MemoryContextSwitchTo(state->batch_cxt);
	for (i = 0; i < state->tupdesc->natts; i++)
	{
		state->values[i] = (Datum) 0;
		state->nulls[i] = true;
	}
	ItemPointerSetInvalid(&ctid);
	if (state->kinds != NULL)
		decode_partial_row(state, res, r);
	else
		RemoteRowDecode(res, r, state->retrieved_attrs, state->attinmeta,
						state->values, state->nulls, &ctid);
	MemoryContextSwitchTo(cxt);
	tuple = heap_form_tuple(state->tupdesc, state->values, state->nulls);
	tuple->t_self = ctid;
	tuple->t_tableOid = state->table_oid;
	MemoryContextSwitchTo(old);
	ExecStoreHeapTuple(tuple, slot, owned);
}

/* next_unordered returns the next row of any shard, as batches arrive */
static TupleTableSlot *
next_unordered(ForeignScanState *node, TrScanState *state)
{
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;

	for (;;)
	{
		ScanShard  *ss = state->current >= 0 ? &state->shards[state->current] : NULL;
		bool		all_done;
		int			i;

		if (ss != NULL && ss->batch != NULL && ss->next < PQntuples(ss->batch))
		{
			decode_row(state, ss->batch, ss->next++, slot, state->batch_cxt, false);
			return slot;
		}
		if (ss != NULL)
		{
			PQclear(ss->batch);
			ss->batch = NULL;
		}
		i = ready_shard(state, &all_done);
		if (i >= 0)
		{
			state->current = i;
			(void) next_batch(&state->shards[i]);
			continue;
		}
		if (all_done)
			return ExecClearTuple(slot);
		wait_any(state);
	}
}

/*
 * advance_head reads a shard's next row into its head slot; false when the
 * shard has no more.
 */
static bool
advance_head(TrScanState *state, ScanShard *ss)
{
	while (ss->batch == NULL || ss->next >= PQntuples(ss->batch))
	{
		if (!next_batch(ss))
			return false;
	}
	decode_row(state, ss->batch, ss->next++, ss->head, state->scan_cxt, true);
	return true;
}

/* next_merged returns the next row of the merge of the shards' sorted streams */
static TupleTableSlot *
next_merged(ForeignScanState *node, TrScanState *state)
{
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	int			i;

	if (state->heap == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(state->scan_cxt);

		state->heap = binaryheap_allocate(state->nshards + 1, heap_compare, state);
		MemoryContextSwitchTo(old);
		for (i = 0; i < state->nshards; i++)
			if (advance_head(state, &state->shards[i]))
				binaryheap_add_unordered(state->heap, Int32GetDatum(i));
		binaryheap_build(state->heap);
	}
	else if (state->current >= 0)
	{
		/* the row returned last came from current: replace it */
		if (advance_head(state, &state->shards[state->current]))
			binaryheap_replace_first(state->heap, Int32GetDatum(state->current));
		else
			(void) binaryheap_remove_first(state->heap);
	}
	if (binaryheap_empty(state->heap))
	{
		state->current = -1;
		return ExecClearTuple(slot);
	}
	state->current = DatumGetInt32(binaryheap_first(state->heap));
	ExecCopySlot(slot, state->shards[state->current].head);
	return slot;
}

TupleTableSlot *
TrIterateForeignScan(ForeignScanState *node)
{
	TrScanState *state = node->fdw_state;

	if (!state->started)
		start_scan(node, state, false);
	if (state->nkeys > 0)
		return next_merged(node, state);
	return next_unordered(node, state);
}

void
TrReScanForeignScan(ForeignScanState *node)
{
	TrScanState *state = node->fdw_state;

	close_all(state);
	state->started = false;
	state->heap = NULL;
	state->chosen = NIL;
}

void
TrEndForeignScan(ForeignScanState *node)
{
	TrScanState *state = node->fdw_state;

	if (state == NULL)
		return;
	close_all(state);
}

/* shards named in EXPLAIN at most */
#define EXPLAIN_SHARDS 20

/*
 * TrExplainShards shows the shards a statement goes to: their names, and
 * with VERBOSE the range each reads (the remote SQL's last two parameters).
 */
void
TrExplainShards(List *shards, ExplainState *es)
{
	StringInfoData buf;
	ListCell   *lc;
	int			n = 0;

	initStringInfo(&buf);
	foreach(lc, shards)
	{
		ShardRow   *shard = lfirst(lc);

		if (++n > EXPLAIN_SHARDS)
		{
			appendStringInfo(&buf, ", and %d more", list_length(shards) - EXPLAIN_SHARDS);
			break;
		}
		appendStringInfo(&buf, "%s%s", n > 1 ? ", " : "", shard->shard_id);
		if (es->verbose)
			appendStringInfo(&buf, " (" INT64_FORMAT ".." INT64_FORMAT ")",
							 shard->range_start, shard->range_end);
	}
	ExplainPropertyText("Shards", n > 0 ? buf.data : "none", es);
}

void
TrExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
	ForeignScan *fsplan = (ForeignScan *) node->ss.ps.plan;
	TrScanState *state = node->fdw_state;

	if (state != NULL && state->started && state->reference)
		ExplainPropertyText("Shards",
							state->chosen == NIL ? "none" :
							psprintf("%s (its copy of the reference table)",
									 ((ShardRow *) linitial(state->chosen))->shard_id), es);
	else if (state != NULL && state->started)
		TrExplainShards(state->chosen, es);
	else
		ExplainPropertyText("Shards", "chosen at execution by tenant", es);
	if (es->verbose)
		ExplainPropertyText("Remote SQL", strVal(list_nth(fsplan->fdw_private, FdwScanSql)), es);
}
