/*-------------------------------------------------------------------------
 *
 * ordered_change.c
 *	  Puts a topology change made in SQL in its place in the one order of
 *	  topology changes kept on Redis (metadata/topology_log.c) before it is
 *	  in force, so that every coordinator applies the same changes in the
 *	  same order.
 *
 * A change (shard_add(), the flip of a split, ...) runs as it always has
 * -- it validates against the catalog, writes it, does its work on the
 * shards and queues its events in the outbox -- but in a subtransaction,
 * under the topology lock, and only once this coordinator's catalog holds
 * every change ordered so far (the topology worker applies them; the
 * caller waits for it).  Its events are then appended to the log by a
 * script that does so only if the log still ends where this catalog does:
 * the change was validated against exactly the topology every other
 * coordinator will have when it applies the entry.  If so, the outbox rows
 * are dropped (they are published), the catalog's position moves to the
 * new entries and the subtransaction is kept: the change commits with the
 * caller's transaction.  If another change came first, the subtransaction
 * is rolled back (the shards' savepoints with it), the caller waits for
 * the worker to apply what came first, and tries again -- against a
 * topology that now holds the winner, so a change that lost a race gets
 * the error its own validation gives, here, and exists nowhere else.  An
 * error that is the session's rather than the change's (a cancel, a
 * statement or lock timeout, a shutdown) ends the call at once, never a
 * retry.
 *
 * The caller's transaction may still fail after its change was appended
 * (its COMMIT, or a later statement of a multi-call statement): the entry
 * is in the order all the same, so the worker, finding it after the
 * catalog's position, applies it like any other.  Its outcome ("applied")
 * is recorded on Redis only once the transaction has committed
 * (record_applied): until then the other coordinators wait for it rather
 * than make the catalog change of a change whose shard work may yet roll
 * back; after an abort, this coordinator's worker decides it.  A change in the order is
 * in force, whatever becomes of the transaction that asked for it; that is
 * why a change cannot run inside a transaction block.
 *
 * This is the path when Redis is configured (tenant_router.redis_host),
 * this is the database the worker maintains (tenant_router.database) and
 * the coordinator is not declared the only one
 * (tenant_router.single_coordinator).  Otherwise a change runs as before:
 * in force at once, in the caller's transaction, its events published
 * later by the worker from the outbox.  With Redis unreachable, an ordered
 * change is refused.
 *
 * Why the backend talks to Redis itself rather than hand the change to
 * the worker: the change must run in the caller's transaction (its shard
 * work and its errors are the caller's), under the topology lock, which
 * the worker needs to apply what it reads; a worker asked to order a
 * change while it waits for that lock would never answer.  The backend
 * holds the lock from its look at the catalog's position to its commit:
 * the change's own work and one round trip to Redis.
 *
 * TopologyShardWorkDone, set by the worker while it applies an entry that
 * was applied first elsewhere (worker/events.c), tells the Topology*
 * functions to change the catalog only: the shards were changed where the
 * entry was first applied.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "tenant_router/guc.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/outbox.h"
#include "tenant_router/topology.h"
#include "tenant_router/topology_log.h"

bool		TopologyShardWorkDone = false;

/*
 * The entries this transaction appended, whose outcome ("applied") is
 * recorded once it has committed (in TopMemoryContext), each with the
 * subtransaction that holds its change; the callbacks that keep them are
 * registered once.
 */
typedef struct Appended
{
	char	   *id;
	SubTransactionId subid;
} Appended;

static List *appended = NIL;
static bool callback_registered = false;

/* how long a change waits for the worker to apply what was ordered before it */
#define ORDER_TIMEOUT_MS 30000

/* where this coordinator's catalog is in the order */
typedef struct LogPosition
{
	char	   *epoch;			/* NULL: the worker has not joined a log yet */
	char	   *position;
} LogPosition;

/* what one attempt at ordering a change came to */
typedef struct Attempt
{
	bool		done;			/* ordered and applied here */
	bool		unreachable;	/* Redis failed: why */
	char	   *why;
	ErrorData  *error;			/* the change's own error */
	LogPosition at;				/* where the catalog was */
	char	   *epoch;			/* where the log is */
	char	   *head;
	List	   *events;			/* the events of the change, as sent */
	int64		expires;		/* the append's expiry, in Redis time (ms) */
} Attempt;

/*
 * TopologyChangesOrdered tells whether a topology change made here takes
 * its place in the order on Redis before it is in force.
 */
bool
TopologyChangesOrdered(void)
{
	char	   *dbname;

	if (TenantRouterRedisHost == NULL || TenantRouterRedisHost[0] == '\0' ||
		TenantRouterSingleCoordinator)
		return false;
	dbname = get_database_name(MyDatabaseId);
	return dbname != NULL && TenantRouterDatabase != NULL &&
		strcmp(dbname, TenantRouterDatabase) == 0;
}

static void settle_unanswered(const char *function, Attempt *a);

static void
redis_unreachable(const char *function, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("cannot change the topology: Redis at %s:%d is unreachable",
					TenantRouterRedisHost, TenantRouterRedisPort),
			 errdetail("%s() puts its change in the order of topology changes kept on Redis before it is in force, so that every coordinator applies the same changes (%s).",
					   function, why),
			 errhint("Retry once Redis is back.  A coordinator that is the only one may set tenant_router.single_coordinator = on: its changes then take effect at once and are published when Redis is back.")));
}

/* read_position returns where the catalog is, seen by a fresh snapshot; SPI connected */
static LogPosition
read_position(void)
{
	LogPosition at = {NULL, NULL};

	if (SPI_execute("SELECT epoch, stream_id FROM tenant_router.worker_state", false, 1) !=
		SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tenant_router: could not read tenant_router.worker_state");
	at.epoch = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	at.position = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	return at;
}

/* caught_up tells whether the catalog holds the log up to epoch and head */
static bool
caught_up(LogPosition at, const char *epoch, const char *head)
{
	return at.epoch != NULL && epoch[0] != '\0' && strcmp(at.epoch, epoch) == 0 &&
		StreamIdCompare(at.position, head) >= 0;
}

/*
 * wait_for_log waits until the worker has applied the log up to its last
 * entry (head, of epoch), asking the log again while it has no epoch yet
 * (an empty Redis, which the worker seeds).  A catalog further than head
 * is caught up if the log has moved there meanwhile; if the log, of the
 * same epoch, still ends before it, Redis lost its last entries: the
 * worker starts a new log from this catalog (worker/order.c), which this
 * waits for too, asking the log again each time.
 */
static void
wait_for_log(const char *function, char *epoch, char *head, TimestampTz deadline)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		end_lost = false;

	for (;;)
	{
		LogPosition at;
		char	   *why = NULL;
		long		left;

		SPI_connect();
		at = read_position();
		MemoryContextSwitchTo(cxt);
		at.epoch = at.epoch ? pstrdup(at.epoch) : NULL;
		at.position = pstrdup(at.position);
		SPI_finish();
		if ((epoch[0] == '\0' || end_lost) && !TopologyLogHead(&epoch, &head, &why))
		{
			ConditionVariableCancelSleep();
			redis_unreachable(function, why);
		}
		if (caught_up(at, epoch, head) && StreamIdCompare(at.position, head) > 0 && !end_lost)
		{
			/* the catalog is further than the log was: is the log there now? */
			if (!TopologyLogHead(&epoch, &head, &why))
			{
				ConditionVariableCancelSleep();
				redis_unreachable(function, why);
			}
			end_lost = caught_up(at, epoch, head) && StreamIdCompare(at.position, head) > 0;
		}
		else if (end_lost)
			end_lost = caught_up(at, epoch, head) && StreamIdCompare(at.position, head) > 0;
		if (caught_up(at, epoch, head) && !end_lost)
			break;
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0 && end_lost)
		{
			ConditionVariableCancelSleep();
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the topology log on Redis ends before this coordinator's catalog"),
					 errdetail("%s() can only order its change after the last entry this coordinator applied (%s), but the log on Redis ends at %s: Redis lost its last entries (a restart from an AOF written every second, or a failover to a replica that lagged), and after %d s the topology worker has not started a new log from this coordinator's topology.",
							   function, at.position, head, ORDER_TIMEOUT_MS / 1000),
					 errhint("Check that the topology worker runs and what the server log says about it; it starts a new log (WARNING \"Redis lost its last entries\") that the other coordinators adopt.")));
		}
		if (left <= 0)
		{
			ConditionVariableCancelSleep();
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the topology worker has not applied the topology changes ordered before this one"),
					 errdetail("%s() waits until this coordinator has applied every change ordered before its own; after %d s the worker is at %s, the order at %s.",
							   function, ORDER_TIMEOUT_MS / 1000, at.position, head),
					 errhint("Check that the topology worker runs (pg_stat_activity, backend_type \"tenant_router topology worker\") and what the server log says about it.")));
		}
		TopologyLogRequestCatchUp();
		TopologyLogWaitForAdvance(Min(left, 1000));
		CHECK_FOR_INTERRUPTS();
	}
	ConditionVariableCancelSleep();
}

/* spi_exec runs a statement of the bookkeeping and checks its outcome */
static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) != expected)
		elog(ERROR, "tenant_router: could not run \"%s\"", sql);
}

/*
 * keep_appended records, in the change's transaction, that its entries are
 * in the order and applied here: its outbox rows go (they are published),
 * the catalog's position moves to its last entry, and its origin's
 * progress to its version, as every other coordinator records it.
 */
static void
keep_appended(int64 mark, const char *head, int64 version)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3] = {Int64GetDatum(mark), CStringGetTextDatum(head),
	CStringGetTextDatum(TopologyLogStreamKey())};
	Oid			ptypes[2] = {TEXTOID, INT8OID};
	Datum		pvalues[2] = {CStringGetTextDatum(OriginName()), Int64GetDatum(version)};

	spi_exec("DELETE FROM tenant_router.outbox WHERE id > $1", 1, types, values, SPI_OK_DELETE);
	spi_exec("UPDATE tenant_router.worker_state SET stream_id = $2, stream_key = $3",
			 3, types, values, SPI_OK_UPDATE);
	if (version > 0)
		spi_exec("INSERT INTO tenant_router.origin_progress (origin, version) VALUES ($1, $2) "
				 "ON CONFLICT (origin) DO UPDATE SET version = "
				 "GREATEST(tenant_router.origin_progress.version, excluded.version)",
				 2, ptypes, pvalues, SPI_OK_INSERT);
}

/*
 * record_applied records, once the transaction that appended entries has
 * committed, that they were applied (shard work included): the other
 * coordinators, which wait for that outcome rather than decide the entries
 * themselves, then make their catalog change only.  Before the commit the
 * work could still roll back; after an abort nothing is recorded, and this
 * coordinator's worker decides the entries like any other.  A failure to
 * record (Redis gone) is not an error any more: the others then decide the
 * entries themselves, after their wait.
 */
static void
record_applied(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (appended == NIL)
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		List	   *ids = NIL;
		List	   *outcomes = NIL;
		char	  **recorded;
		char	   *why = NULL;

		foreach(lc, appended)
		{
			ids = lappend(ids, ((Appended *) lfirst(lc))->id);
			outcomes = lappend(outcomes, "applied");
		}
		if (!TopologyLogPutOutcomes(ids, outcomes, &recorded, &why))
			ereport(LOG,
					(errmsg("tenant_router: could not record the outcome of the topology change just committed: %s",
							why)));
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		foreach(lc, appended)
			pfree(((Appended *) lfirst(lc))->id);
		list_free_deep(appended);
		appended = NIL;
	}
}

/*
 * forget_rolled_back keeps the appended entries with their subtransaction:
 * one that commits hands them to its parent, one that rolls back (a
 * PL/pgSQL exception block around the call) takes its changes with it, so
 * they were not applied here (this coordinator's worker decides them).
 */
static void
forget_rolled_back(SubXactEvent event, SubTransactionId mySubid,
				   SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	foreach(lc, appended)
	{
		Appended   *a = lfirst(lc);

		if (a->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			a->subid = parentSubid;
		else
		{
			appended = foreach_delete_current(appended, lc);
			pfree(a->id);
			pfree(a);
		}
	}
}

/* remember_appended notes entries appended, for record_applied */
static void
remember_appended(List *ids)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	ListCell   *lc;

	if (!callback_registered)
	{
		RegisterXactCallback(record_applied, NULL);
		RegisterSubXactCallback(forget_rolled_back, NULL);
		callback_registered = true;
	}
	foreach(lc, ids)
	{
		Appended   *a = palloc(sizeof(Appended));

		a->id = pstrdup(lfirst(lc));
		a->subid = GetCurrentSubTransactionId();
		appended = lappend(appended, a);
	}
	MemoryContextSwitchTo(old);
}

/*
 * attempt makes the change in a subtransaction on top of the catalog's
 * position and appends its events to the log if the log still ends there;
 * it keeps the subtransaction only then.  The change's own error is
 * returned in a->error, the subtransaction rolled back.
 */
static void
attempt(TopologyChangeFn change, void *arg, Attempt *a)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	memset(a, 0, sizeof(*a));
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		List	   *events = NIL;
		int64		mark;
		int64		version = 0;
		bool		isnull;
		TopologyLogAppendResult result;

		SPI_connect();
		/* the topology lock: the worker applies nothing meanwhile */
		if (SPI_execute("SELECT version FROM tenant_router.topology FOR UPDATE", false, 0) !=
			SPI_OK_SELECT)
			elog(ERROR, "tenant_router: could not lock the topology");
		a->at = read_position();
		if (SPI_execute("SELECT COALESCE(pg_catalog.max(id), 0) FROM tenant_router.outbox",
						false, 1) != SPI_OK_SELECT)
			elog(ERROR, "tenant_router: could not read the outbox");
		mark = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		MemoryContextSwitchTo(cxt);
		a->at.epoch = a->at.epoch ? pstrdup(a->at.epoch) : NULL;
		a->at.position = pstrdup(a->at.position);

		change(arg);

		/* the events the change queued, in order */
		{
			Oid			types[1] = {INT8OID};
			Datum		values[1] = {Int64GetDatum(mark)};

			spi_exec("SELECT event::text, (event->>'version')::bigint FROM tenant_router.outbox "
					 "WHERE id > $1 ORDER BY id", 1, types, values, SPI_OK_SELECT);
			MemoryContextSwitchTo(cxt);
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				Datum		v;

				events = lappend(events, SPI_getvalue(SPI_tuptable->vals[i],
													  SPI_tuptable->tupdesc, 1));
				v = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
				if (!isnull)
					version = Max(version, DatumGetInt64(v));
			}
		}

		if (events == NIL)
			a->done = true;		/* nothing to order */
		else if (a->at.epoch == NULL)
		{
			/* the worker has not joined the log yet: wait for it */
			a->epoch = "";
			a->head = "0-0";
		}
		else if (!TopologyLogAppend(a->at.epoch, a->at.position, OriginName(), events, &result,
									&a->why))
		{
			a->unreachable = true;
			a->events = events;
			a->expires = result.expires;
		}
		else if (result.outcome == TOPOLOGY_LOG_APPENDED)
		{
			keep_appended(mark, result.head, version);
			remember_appended(result.ids);
			a->done = true;
		}
		else
		{
			a->epoch = result.epoch;
			a->head = result.head;
		}
		MemoryContextSwitchTo(cxt);

		SPI_finish();
		if (a->done)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		a->error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/*
 * interruption tells whether an error that interrupted a change is not the
 * change's own but the session's: a cancel or statement_timeout, a
 * lock_timeout, the server shutting down, resources exhausted.  It ends
 * the call, never a retry.
 */
static bool
interruption(ErrorData *error)
{
	int			category = ERRCODE_TO_CATEGORY(error->sqlerrcode);

	return error->elevel > ERROR ||
		category == ERRCODE_OPERATOR_INTERVENTION ||
		category == ERRCODE_INSUFFICIENT_RESOURCES ||
		category == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||
		error->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/*
 * OrderedChange makes change(arg), the change of SQL function function, in
 * its place in the order (see the head of this file); without ordering
 * (no Redis, another database, tenant_router.single_coordinator) it just
 * runs it.  retry: after losing a race, try again once the winner is
 * applied; without, the loser's error is raised (a change that cannot run
 * twice).
 */
void
OrderedChange(const char *function, TopologyChangeFn change, void *arg, bool retry)
{
	TimestampTz deadline;
	char	   *epoch;
	char	   *head;
	char	   *why = NULL;

	if (!TopologyChangesOrdered())
	{
		change(arg);
		return;
	}
	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s() cannot run inside a transaction block", function),
				 errdetail("With Redis, a topology change is in force everywhere once it has its place in the order, whatever the transaction that asked for it does afterwards."),
				 errhint("Call %s() on its own, outside BEGIN ... COMMIT.", function)));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s() must run at isolation level READ COMMITTED", function),
				 errdetail("It waits for the changes ordered before its own, which a transaction snapshot would not show."),
				 errhint("SET default_transaction_isolation = 'read committed' for the call.")));

	/*
	 * A connection of a previous call may have died with its Redis: a new
	 * one, so that an error here is about Redis now.
	 */
	TopologyLogDisconnect();
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ORDER_TIMEOUT_MS);
	if (!TopologyLogHead(&epoch, &head, &why))
		redis_unreachable(function, why);
	wait_for_log(function, epoch, head, deadline);

	for (;;)
	{
		Attempt		a;

		attempt(change, arg, &a);
		if (a.done)
			return;
		if (a.unreachable)
		{
			settle_unanswered(function, &a);
			return;
		}
		if (a.error != NULL && interruption(a.error))
			ReThrowError(a.error);
		if (a.error != NULL)
		{
			/* an error against the latest topology is the change's own */
			if (a.at.position == NULL || !retry ||
				!TopologyLogHead(&a.epoch, &a.head, &why) || caught_up(a.at, a.epoch, a.head))
				ReThrowError(a.error);
		}
		else if (!retry)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("the topology changed while %s() ran", function),
					 errdetail("Another topology change was ordered first, so this one was not applied."),
					 errhint("Call %s() again.", function)));
		wait_for_log(function, a.epoch, a.head, deadline);
	}
}

/*
 * settle_unanswered finds out what became of a change whose append Redis
 * did not answer (it went away, or answered after the timeout): the script
 * may have run all the same, before its expiry (topology_log.c).  Once
 * Redis's clock has passed it, on a new connection, the entries after the
 * position the append was made at are read: if they are the change's own
 * (this coordinator's, the same events), the change is in the order, and
 * this coordinator's worker applies it like any other (its transaction here
 * rolled back): the call waits for that and returns as if the append had
 * been answered, or raises the reason the worker rejected it.  Otherwise
 * the change is not in the order and nothing changed: Redis unreachable.
 * When Redis cannot be asked, the error says the change may be in force.
 */
static void
settle_unanswered(const char *function, Attempt *a)
{
	List	   *entries = NIL;
	List	   *ids = NIL;
	char	   *why = NULL;
	char	  **outcomes = NULL;
	char	   *epoch = NULL;
	char	   *head = NULL;
	ListCell   *lc;
	ListCell   *ec;
	bool		ours;

	if (a->expires == 0)
		redis_unreachable(function, a->why);	/* the append was not sent */

	/* once its expiry has passed, the append is made or never will be */
	TopologyLogDisconnect();
	for (;;)
	{
		int64		now;

		if (!TopologyLogServerTime(&now, &why) || now > a->expires)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 a->expires - now + 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (why != NULL ||
		!TopologyLogRead(a->at.position, false, list_length(a->events), &entries, &why))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("cannot tell whether the topology change of %s() was made: Redis at %s:%d stopped answering",
						function, TenantRouterRedisHost, TenantRouterRedisPort),
				 errdetail("The change was sent to Redis to take its place in the order of topology changes, and Redis did not answer (%s); it may have been ordered, and is then in force on every coordinator once their workers have applied it.",
						   a->why),
				 errhint("Once Redis is back, check tenant_router.shards before calling %s() again.",
						 function)));
	ours = list_length(entries) == list_length(a->events);
	forboth(lc, entries, ec, a->events)
	{
		RedisEvent *e = lfirst(lc);

		if (e->node == NULL || strcmp(e->node, OriginName()) != 0 || e->event == NULL ||
			strcmp(e->event, lfirst(ec)) != 0)
			ours = false;
		ids = lappend(ids, pstrdup(e->id));
	}
	TopologyLogFreeEvents(entries);
	if (!ours)
		redis_unreachable(function, a->why);

	/* in the order: wait for the worker to apply it here */
	epoch = pstrdup(a->at.epoch);
	head = llast(ids);
	wait_for_log(function, epoch, head,
				 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ORDER_TIMEOUT_MS));
	if (TopologyLogGetOutcomes(ids, &outcomes, &why))
		for (int i = 0; i < list_length(ids); i++)
			if (outcomes[i] != NULL && strcmp(outcomes[i], "applied") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("the topology change of %s() was ordered but not applied", function),
						 errdetail("Redis did not answer its append in time (%s), but had made it; the topology worker then decided it: %s.",
								   a->why, outcomes[i])));
	ereport(NOTICE,
			(errmsg("Redis answered the append of the topology change of %s() late; the change is in the order and was applied here by the topology worker",
					function)));
}

/* the admin functions' changes */

typedef struct ShardChange
{
	const char *shard_id;
	bool		has_range;
	int64		range_start;
	int64		range_end;
	const char *dsn;
	int32		modulus;
	int32		remainder;
	int64		tenant;
} ShardChange;

static void
add_shard(void *arg)
{
	ShardChange *c = arg;

	TopologyAddShard(c->shard_id, c->has_range, c->range_start, c->range_end, c->dsn,
					 c->modulus, c->remainder, TOPOLOGY_FROM_SQL);
}

static void
remove_shard(void *arg)
{
	ShardChange *c = arg;

	TopologyRemoveShard(c->shard_id, TOPOLOGY_FROM_SQL);
}

static void
update_range(void *arg)
{
	ShardChange *c = arg;

	TopologyUpdateRange(c->shard_id, c->range_start, c->range_end, c->modulus, c->remainder,
						TOPOLOGY_FROM_SQL);
}

static void
pin_tenant(void *arg)
{
	ShardChange *c = arg;

	TopologyPinTenant(c->tenant, c->shard_id, TOPOLOGY_FROM_SQL);
}

static void
unpin_tenant(void *arg)
{
	ShardChange *c = arg;

	TopologyUnpinTenant(c->tenant, TOPOLOGY_FROM_SQL);
}

void
OrderedAddShard(const char *shard_id, bool has_range, int64 range_start, int64 range_end,
				const char *dsn, int32 modulus, int32 remainder)
{
	ShardChange c = {.shard_id = shard_id, .has_range = has_range, .range_start = range_start,
	.range_end = range_end, .dsn = dsn, .modulus = modulus, .remainder = remainder};

	OrderedChange("shard_add", add_shard, &c, true);
}

void
OrderedRemoveShard(const char *shard_id)
{
	ShardChange c = {.shard_id = shard_id};

	OrderedChange("shard_remove", remove_shard, &c, true);
}

void
OrderedUpdateRange(const char *shard_id, int64 range_start, int64 range_end, int32 modulus,
				   int32 remainder)
{
	ShardChange c = {.shard_id = shard_id, .range_start = range_start, .range_end = range_end,
	.modulus = modulus, .remainder = remainder};

	OrderedChange("shard_update_range", update_range, &c, true);
}

/* OrderedPinTenant and OrderedUnpinTenant: a pin that moves no row */
void
OrderedPinTenant(int64 tenant, const char *shard_id)
{
	ShardChange c = {.shard_id = shard_id, .tenant = tenant};

	OrderedChange("tenant_pin", pin_tenant, &c, true);
}

void
OrderedUnpinTenant(int64 tenant)
{
	ShardChange c = {.tenant = tenant};

	OrderedChange("tenant_unpin", unpin_tenant, &c, true);
}

/* the SQL function of each online operation, for messages */
static const char *const operation_functions[] = {
	[OPERATION_SPLIT] = "shard_split",
	[OPERATION_SPLIT_MODULO] = "shard_split_modulo",
	[OPERATION_MOVE] = "shard_move",
	[OPERATION_MERGE] = "shard_merge",
	[OPERATION_PIN] = "tenant_pin",
	[OPERATION_UNPIN] = "tenant_unpin",
};

/* same_shard tells whether a shard's catalog row is still what an operation saw */
static bool
same_shard(const ShardRow *then, const ShardRow *now)
{
	return now != NULL && then->has_range == now->has_range &&
		then->range_start == now->range_start && then->range_end == now->range_end &&
		then->modulus == now->modulus && then->remainder == now->remainder &&
		strcmp(then->dsn, now->dsn) == 0;
}

/*
 * flip makes an online operation's catalog change, once the shards it
 * reads are still as the operation saw them when it began: a change
 * ordered meanwhile (on another coordinator, say) may have changed them,
 * and the flip would write over it.
 */
static void
flip(void *arg)
{
	Operation  *op = arg;
	const ShardRow *seen[2] = {op->source, op->target_before};

	for (int i = 0; i < 2; i++)
		if (seen[i] != NULL && !same_shard(seen[i], TopologyLockShard(seen[i]->shard_id)))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("shard \"%s\" changed while %s() ran", seen[i]->shard_id,
							operation_functions[op->kind]),
					 errdetail("A topology change ordered meanwhile changed it; the operation is rolled back."),
					 errhint("Call %s() again.", operation_functions[op->kind])));
	op->flip(op);
	OperationRecordFlip(op);
}

/*
 * OrderedFlip makes an online operation's catalog change (op->flip and its
 * record) in its place in the order.  Its rows were copied already and the
 * source gave them away: after losing a race the flip is not tried again,
 * the operation rolls back (its undo gives the source its constraint
 * back).  SPI is connected.
 */
void
OrderedFlip(Operation *op)
{
	OrderedChange(operation_functions[op->kind], flip, op, false);
}
