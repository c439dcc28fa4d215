/*-------------------------------------------------------------------------
 *
 * operation_worker.c
 *	  Runs an online operation in a background worker of its own, each
 *	  phase in a transaction of its own, recorded as it goes in
 *	  tenant_router.operation; and recovers an operation that did not
 *	  finish.
 *
 * An online operation commits several times: its record and the shards'
 * state when it starts, its phase and progress before every phase, the
 * catalog change, its end.  A function cannot commit, so the SQL function
 * (shard_split(), ...) starts a dynamic background worker in the same
 * database, hands it the arguments in a dynamic shared memory segment, and
 * waits; the worker answers with the error, if any, in the same segment.
 * Cancelling the caller (pg_cancel_backend, statement_timeout) cancels the
 * worker, which rolls the operation back before the caller's error is
 * raised; a caller that ends makes the worker roll back too.  The caller
 * must not be inside a transaction block, nor have changed anything in its
 * transaction: the worker would wait for its locks.
 *
 * The record (tenant_router.operation) is written before each phase starts:
 * what a phase may have made on the shards follows from the phase reached,
 * so that after a crash the undo of operation.c removes it.  The worker
 * holds a session advisory lock on the operation's id while it runs; an
 * operation whose record is not finished and whose lock is free has lost
 * its worker (a crash, a terminated worker), and OperationRecover rolls it
 * back (or, past the catalog change, finishes its clean-up).  Recovery runs
 * from tenant_router.operation_recover(), from the topology worker's
 * periodic pass, and before any change to a shard that such an operation
 * left busy, so that a retry works.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "tenant_router/catalog.h"
#include "tenant_router/guc.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/shard_ddl.h"
#include "tenant_router/topology.h"

PG_FUNCTION_INFO_V1(tenant_router_operation_recover);

/* the advisory lock an operation's worker holds: this plus the operation id */
#define OPERATION_LOCK_BASE INT64CONST(0x7472000000000000)
/* finished operations kept in tenant_router.operation */
#define OPERATIONS_KEPT 1000
#define MESSAGE_LEN 2048

/* what the caller and the worker share */
typedef struct OperationShared
{
	OperationArgs args;			/* args.dsn is dsn below */
	Oid			dbid;
	pid_t		caller_pid;
	char		pause_before[64];
	int			shard_lock_timeout; /* the caller's tenant_router.shard_lock_timeout */
	/* the answer */
	bool		answered;
	int			sqlerrcode;		/* 0: done */
	char		message[MESSAGE_LEN];
	char		detail[MESSAGE_LEN];
	char		hint[MESSAGE_LEN];
	char		dsn[FLEXIBLE_ARRAY_MEMBER];
} OperationShared;

/* what each kind is called and how it is prepared */
static const struct
{
	const char *operation;
	const char *state;			/* the shards' state meanwhile */
	void		(*prepare) (Operation *op, const OperationArgs *args);
}			kinds[] =
{
	[OPERATION_SPLIT] = {"split", "splitting", SplitPrepare},
	[OPERATION_SPLIT_MODULO] = {"split by modulo", "splitting", SplitModuloPrepare},
	[OPERATION_MOVE] = {"move", "moving", MovePrepare},
	[OPERATION_MERGE] = {"merge", "merging", MergePrepare},
	[OPERATION_PIN] = {"pin", NULL, PinPrepare},
	[OPERATION_UNPIN] = {"unpin", NULL, UnpinPrepare},
};

/* in the worker: the backend that asked for the operation */
static pid_t caller_pid = 0;

static bool recover_one(int64 op_id);

/* ------------------------------------------------------------------------
 * The caller's side
 * ------------------------------------------------------------------------
 */

/*
 * wait_for_worker waits for the worker to stop; if the wait is interrupted
 * (cancel, statement_timeout), the worker is cancelled and waited for, so
 * that the operation has rolled back when the caller's error is raised.
 */
static void
wait_for_worker(BackgroundWorkerHandle *handle, pid_t pid)
{
	pid_t		ignored;

	PG_TRY();
	{
		while (GetBackgroundWorkerPid(handle, &ignored) != BGWH_STOPPED)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		kill(pid, SIGINT);
		while (GetBackgroundWorkerPid(handle, &ignored) != BGWH_STOPPED)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 100, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		RESUME_INTERRUPTS();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * OperationLaunch runs the operation args asks for in a background worker,
 * waits for it and raises its error, if any; function names the SQL
 * function in messages.
 */
void
OperationLaunch(const OperationArgs *args, const char *function)
{
	dsm_segment *seg;
	OperationShared *shared;
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus status;
	pid_t		pid;
	const char *dsn = args->dsn ? args->dsn : "";

	if (!CatalogHasOperations())
		TopologyRequireUpdate();
	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s() cannot run inside a transaction block", function),
				 errdetail("An online operation commits its phases and its change of the topology itself."),
				 errhint("Call %s() on its own, outside BEGIN ... COMMIT.", function)));
	if (GetTopTransactionIdIfAny() != InvalidTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s() must be the first change of its transaction", function),
				 errdetail("The operation would wait for the rows this transaction has locked."),
				 errhint("Call %s() in a statement of its own.", function)));

	seg = dsm_create(offsetof(OperationShared, dsn) + strlen(dsn) + 1, 0);
	shared = dsm_segment_address(seg);
	memset(shared, 0, offsetof(OperationShared, dsn));
	shared->args = *args;
	shared->args.dsn = NULL;
	strcpy(shared->dsn, dsn);
	shared->dbid = MyDatabaseId;
	shared->caller_pid = MyProcPid;
	if (TenantRouterOperationPauseBefore != NULL)
		strlcpy(shared->pause_before, TenantRouterOperationPauseBefore,
				sizeof(shared->pause_before));
	shared->shard_lock_timeout = TenantRouterShardLockTimeout;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "tenant_router");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "TenantRouterOperationMain");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "tenant_router %s of shard %s",
			 kinds[args->kind].operation, args->shard_id);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "tenant_router operation");
	bgw.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker for %s()", function),
				 errhint("Every online operation runs in a background worker of its own: raise max_worker_processes.")));
	/*
	 * A worker that answers at once (a refusal) may be gone before its start
	 * is seen: stopped is as good as started and ended, its answer says how.
	 */
	status = WaitForBackgroundWorkerStartup(handle, &pid);
	if (status == BGWH_STARTED)
		wait_for_worker(handle, pid);
	else if (status != BGWH_STOPPED)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("the background worker for %s() did not start", function)));
	pg_memory_barrier();

	if (!shared->answered)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the background worker of %s() ended without an answer", function),
				 errhint("tenant_router.operations shows how far it got; tenant_router.operation_recover() rolls back an operation that did not finish.")));
	if (shared->sqlerrcode != 0)
		ereport(ERROR,
				(errcode(shared->sqlerrcode),
				 errmsg_internal("%s", shared->message),
				 shared->detail[0] ? errdetail_internal("%s", shared->detail) : 0,
				 shared->hint[0] ? errhint("%s", shared->hint) : 0));
	dsm_detach(seg);
}

/* ------------------------------------------------------------------------
 * The record
 * ------------------------------------------------------------------------
 */

static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expected)
{
	if (SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0) != expected)
		elog(ERROR, "tenant_router: could not run \"%s\"", sql);
}

static Datum
text_array(List *strings)
{
	Datum	   *elems = palloc(sizeof(Datum) * (list_length(strings) + 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, strings)
		elems[n++] = CStringGetTextDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* set_states sets the state of the operation's shards that are in the catalog */
static void
set_states(Operation *op, const char *state)
{
	if (op->state == NULL)
		return;
	TopologySetShardState(op->source->shard_id, state);
	if (op->target_before != NULL)
		TopologySetShardState(op->target->shard_id, state);
}

/* record_progress records the phase about to start, and what it needs undone */
static void
record_progress(Operation *op)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT8OID, TEXTARRAYOID};
	Datum		values[4];

	values[0] = Int64GetDatum(op->op_id);
	values[1] = CStringGetTextDatum(op->phase);
	values[2] = Int64GetDatum(op->rows_copied);
	values[3] = text_array(op->identity_restore);
	spi_exec("UPDATE tenant_router.operation SET phase = $2, rows_copied = $3, "
			 "identity_restore = $4 WHERE op_id = $1", 4, types, values, NULL, SPI_OK_UPDATE);
}

/*
 * OperationRecordFlip records, in the transaction of the catalog change,
 * that the operation is done but for its clean-up.
 */
void
OperationRecordFlip(Operation *op)
{
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(op->op_id), Int64GetDatum(op->rows_copied)};

	spi_exec("UPDATE tenant_router.operation SET status = 'completed', phase = 'clean up', "
			 "rows_copied = $2 WHERE op_id = $1", 2, types, values, NULL, SPI_OK_UPDATE);
	set_states(op, "active");
}

/* record_end records the end of the operation, with its error if it rolled back */
static void
record_end(Operation *op, const char *error)
{
	Oid			types[3] = {INT8OID, TEXTOID, INT4OID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	values[0] = Int64GetDatum(op->op_id);
	values[1] = error ? CStringGetTextDatum(error) : (nulls[1] = 'n', (Datum) 0);
	values[2] = Int32GetDatum(OPERATIONS_KEPT);
	if (error != NULL)
	{
		spi_exec("UPDATE tenant_router.operation SET status = 'rolled back', error = $2, "
				 "finished_at = now() WHERE op_id = $1", 2, types, values, nulls, SPI_OK_UPDATE);
		set_states(op, "active");
	}
	else
		spi_exec("UPDATE tenant_router.operation SET phase = 'done', finished_at = now() "
				 "WHERE op_id = $1", 1, types, values, NULL, SPI_OK_UPDATE);
	spi_exec("DELETE FROM tenant_router.operation WHERE finished_at IS NOT NULL AND op_id <= "
			 "(SELECT pg_catalog.max(op_id) FROM tenant_router.operation) - $1",
			 1, types + 2, values + 2, NULL, SPI_OK_DELETE);
}

/* ------------------------------------------------------------------------
 * The worker's side
 * ------------------------------------------------------------------------
 */

/*
 * OperationCheckCaller raises an error if the session that asked for the
 * operation has ended: nobody waits for it any more, so it rolls back.
 */
void
OperationCheckCaller(Operation *op)
{
	if (caller_pid != 0 && BackendPidGetProc(caller_pid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("the session that asked for the %s of shard \"%s\" has ended",
						op->operation, op->source->shard_id)));
}

/*
 * in_transaction runs fn in a transaction of its own and returns what it
 * returns; an error aborts the transaction and goes on.
 */
static bool
in_transaction(bool (*fn) (Operation *op), Operation *op)
{
	bool		result;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	result = fn(op);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return result;
}

static bool
progress_step(Operation *op)
{
	SPI_connect();
	record_progress(op);
	SPI_finish();
	return true;
}

static bool
end_step(Operation *op)
{
	SPI_connect();
	record_end(op, NULL);
	SPI_finish();
	return true;
}

/*
 * pause_here waits until interrupted, before step (a phase, or
 * "phase/step"): tenant_router.operation_pause_before, for tests
 */
static void
pause_here(Operation *op, const char *step)
{
	ereport(LOG,
			(errmsg("tenant_router: %s of shard \"%s\" pauses before \"%s\"",
					op->operation, op->source->shard_id, step)));
	for (;;)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		OperationCheckCaller(op);
	}
}

static const OperationArgs *begin_args;

/*
 * begin_step validates the operation under the shards' row locks (the
 * kind's prepare), records it, sets the shards' state, and takes the
 * advisory lock that says its worker is alive.
 */
static bool
begin_step(Operation *op)
{
	const OperationArgs *args = begin_args;
	Oid			types[9] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID,
	TEXTOID, BOOLOID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', 'n', ' ', ' ', ' ', ' '};
	bool		isnull;
	MemoryContext old;

	SPI_connect();
	kinds[args->kind].prepare(op, args);
	OperationCheckIdle(op->source->shard_id);
	if (op->target_before != NULL)
		OperationCheckIdle(op->target->shard_id);

	/*
	 * Rows a shard gave away before would fail the validation of the
	 * constraints the operation sets: the pending cleanups go first.
	 */
	TopologyCleanupIfPending(op->source->shard_id);
	if (op->target_before != NULL)
		TopologyCleanupIfPending(op->target->shard_id);

	if (SPI_execute("SELECT pg_catalog.nextval('tenant_router.operation_id_seq')", false, 1) !=
		SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not number an operation");
	op->op_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	snprintf(op->name, sizeof(op->name), "tenant_router_op_" INT64_FORMAT, op->op_id);
	values[0] = Int64GetDatum(OPERATION_LOCK_BASE + op->op_id);
	spi_exec("SELECT pg_catalog.pg_advisory_lock($1)", 1, types, values, NULL, SPI_OK_SELECT);

	old = MemoryContextSwitchTo(op->cxt);
	op->tables = CatalogLogicalTables();
	MemoryContextSwitchTo(old);

	values[0] = Int64GetDatum(op->op_id);
	values[1] = CStringGetTextDatum(op->operation);
	values[2] = CStringGetTextDatum(op->source->shard_id);
	values[3] = CStringGetTextDatum(op->target->shard_id);
	values[4] = Int64GetDatum(op->tenant);
	if (op->has_tenant)
		nulls[4] = ' ';
	values[5] = CStringGetTextDatum(op->phase);
	values[6] = CStringGetTextDatum(op->source->dsn);
	values[7] = CStringGetTextDatum(op->target->dsn);
	values[8] = BoolGetDatum(op->target_before == NULL);
	spi_exec("INSERT INTO tenant_router.operation (op_id, operation, shard_id, target_shard_id, "
			 "tenant_id, phase, source_dsn, target_dsn, target_is_new) "
			 "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", 9, types, values, nulls, SPI_OK_INSERT);
	set_states(op, op->state);
	SPI_finish();
	return true;
}

static bool
rollback_step(Operation *op)
{
	OperationUndo(op);
	SPI_connect();
	/* an undo left incomplete stays unfinished: the recovery finishes it */
	if (!op->undo_failed)
		record_end(op, op->error);
	SPI_finish();
	return true;
}

/*
 * execute runs the operation: begin, then each phase, recorded before it
 * starts; after an error before the catalog change, the undo, recorded
 * too, and the error again.  After the catalog change, an error of the
 * clean-up is only logged: the operation is done, the recovery finishes it.
 */
static void
execute(const OperationArgs *args, const char *pause_before)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "tenant_router operation",
											  ALLOCSET_DEFAULT_SIZES);
	Operation  *op = MemoryContextAllocZero(cxt, sizeof(Operation));
	volatile bool begun = false;

	op->cxt = cxt;
	op->kind = args->kind;
	op->operation = kinds[args->kind].operation;
	op->state = kinds[args->kind].state;
	op->phase = "prepare";
	PG_TRY();
	{
		begin_args = args;
		in_transaction(begin_step, op);
		begun = true;
		pgstat_report_activity(STATE_RUNNING, psprintf("%s of shard %s", op->operation,
													   op->source->shard_id));
		for (int i = 0; i < OperationStepCount; i++)
		{
			bool		paused = false;
			const char *step = OperationSteps[i].step == NULL ? OperationSteps[i].phase :
				psprintf("%s/%s", OperationSteps[i].phase, OperationSteps[i].step);

			op->phase = OperationSteps[i].phase;
			do
			{
				in_transaction(progress_step, op);
				if (!paused && strcmp(pause_before, step) == 0)
					pause_here(op, step);
				paused = true;
				OperationCheckCaller(op);
			} while (!in_transaction(OperationSteps[i].run, op));
			if (strcmp(op->phase, "flip catalog") == 0)
				op->flipped = true;
		}
		in_transaction(end_step, op);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		if (!begun)
			ReThrowError(edata);
		if (op->flipped)
		{
			ereport(WARNING,
					(errmsg("the %s of shard \"%s\" is done, but not its clean-up: %s",
							op->operation, op->source->shard_id, edata->message),
					 errhint("tenant_router.operation_recover() finishes it.")));
			return;
		}
		op->error = edata->message;
		PG_TRY();
		{
			in_transaction(rollback_step, op);
		}
		PG_CATCH();
		{
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
		}
		PG_END_TRY();
		ReThrowError(edata);
	}
	PG_END_TRY();
}

/*
 * TenantRouterOperationMain is the operation's background worker: it
 * connects to the caller's database, runs the operation and answers.
 */
void
TenantRouterOperationMain(Datum main_arg)
{
	dsm_segment *seg;
	OperationShared *shared;
	OperationArgs args;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "tenant_router operation");
	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tenant_router operation: its caller is gone")));
	dsm_pin_mapping(seg);
	shared = dsm_segment_address(seg);
	caller_pid = shared->caller_pid;
	args = shared->args;
	args.dsn = MemoryContextStrdup(TopMemoryContext, shared->dsn);

	BackgroundWorkerInitializeConnectionByOid(shared->dbid, BOOTSTRAP_SUPERUSERID, 0);
	pgstat_report_appname("tenant_router operation");
	/* the caller's setting bounds the waits of its operation (the switch's too) */
	SetConfigOption("tenant_router.shard_lock_timeout",
					psprintf("%d", shared->shard_lock_timeout), PGC_USERSET, PGC_S_SESSION);

	PG_TRY();
	{
		execute(&args, shared->pause_before);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		shared->sqlerrcode = edata->sqlerrcode;
		strlcpy(shared->message, edata->message ? edata->message : "", MESSAGE_LEN);
		strlcpy(shared->detail, edata->detail ? edata->detail : "", MESSAGE_LEN);
		strlcpy(shared->hint, edata->hint ? edata->hint : "", MESSAGE_LEN);
	}
	PG_END_TRY();
	shared->answered = true;
	proc_exit(0);
}

/* ------------------------------------------------------------------------
 * Recovery
 * ------------------------------------------------------------------------
 */

/* phase_index returns the first step of phase, or -1 */
static int
phase_index(const char *phase)
{
	for (int i = 0; i < OperationStepCount; i++)
		if (strcmp(OperationSteps[i].phase, phase) == 0)
			return i;
	return -1;
}

static char *
spi_text(int col, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, isnull);

	return *isnull ? NULL : TextDatumGetCString(d);
}

/*
 * operation_from_record rebuilds, from its record (SPI's current result,
 * one row), the state of an operation whose worker is gone: what may exist
 * on the shards follows from the phase it had reached.
 */
static Operation *
operation_from_record(MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Operation  *op = palloc0(sizeof(Operation));
	TupleDesc	tupdesc = SPI_tuptable->tupdesc;
	bool		isnull;
	ShardRow   *row;
	ShardRow   *catalog_source;
	char	   *source_id;
	char	   *target_id;
	int			reached;
	Datum		identities;
	Datum		tenant;

	op->cxt = cxt;
	op->op_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], tupdesc,
											SPI_fnumber(tupdesc, "op_id"), &isnull));
	snprintf(op->name, sizeof(op->name), "tenant_router_op_" INT64_FORMAT, op->op_id);
	op->operation = spi_text(SPI_fnumber(tupdesc, "operation"), &isnull);
	for (int k = 0; k < lengthof(kinds); k++)
		if (strcmp(kinds[k].operation, op->operation) == 0)
			op->state = kinds[k].state;
	op->phase = spi_text(SPI_fnumber(tupdesc, "phase"), &isnull);
	tenant = SPI_getbinval(SPI_tuptable->vals[0], tupdesc, SPI_fnumber(tupdesc, "tenant_id"), &isnull);
	op->has_tenant = !isnull;
	op->tenant = isnull ? 0 : DatumGetInt64(tenant);

	/*
	 * The source: its database is the one in the record (a move changes the
	 * shard's DSN at the flip); what it keeps after the flip is what the
	 * catalog says it owns then, nothing for a move's old database or a
	 * merged shard, which is gone.
	 */
	row = palloc0(sizeof(ShardRow));
	source_id = spi_text(SPI_fnumber(tupdesc, "shard_id"), &isnull);
	catalog_source = CatalogGetShard(source_id);
	if (catalog_source != NULL)
		*row = *catalog_source;
	row->shard_id = source_id;
	row->dsn = spi_text(SPI_fnumber(tupdesc, "source_dsn"), &isnull);
	op->source = row;
	op->source_after = strcmp(op->operation, "move") == 0 ? NULL : catalog_source;
	target_id = spi_text(SPI_fnumber(tupdesc, "target_shard_id"), &isnull);
	op->target = palloc0(sizeof(ShardRow));
	op->target->shard_id = target_id;
	op->target->dsn = spi_text(SPI_fnumber(tupdesc, "target_dsn"), &isnull);
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], tupdesc,
									SPI_fnumber(tupdesc, "target_is_new"), &isnull)))
		op->target_before = CatalogGetShard(target_id);
	identities = SPI_getbinval(SPI_tuptable->vals[0], tupdesc,
							   SPI_fnumber(tupdesc, "identity_restore"), &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(identities), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			op->identity_restore = lappend(op->identity_restore, TextDatumGetCString(elems[i]));
	}
	op->tables = CatalogLogicalTables();

	reached = phase_index(op->phase);
	op->target_changed = reached >= phase_index("create target tables");
	op->published = op->fenced = reached >= phase_index("publish");
	op->slot_created = op->subscribed = op->target_filled = reached >= phase_index("subscribe");
	op->narrowed = reached >= phase_index("switch") && catalog_source != NULL;
	MemoryContextSwitchTo(old);
	return op;
}

/*
 * recover_one finishes operation op_id if its worker is gone: rolls it back,
 * or past the catalog change finishes its clean-up.  It returns false if
 * the operation is still running (or finished meanwhile).  An error is
 * logged, not raised: the recovery is tried again later.
 */
static bool
recover_one(int64 op_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext opcxt;
	volatile bool recovered = false;
	bool		isnull;

	values[0] = Int64GetDatum(OPERATION_LOCK_BASE + op_id);
	spi_exec("SELECT pg_catalog.pg_try_advisory_xact_lock($1)", 1, types, values, NULL, SPI_OK_SELECT);
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return false;			/* its worker runs */

	opcxt = AllocSetContextCreate(cxt, "tenant_router recovery", ALLOCSET_DEFAULT_SIZES);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Operation  *op;
		char	   *status;

		values[0] = Int64GetDatum(op_id);
		spi_exec("SELECT * FROM tenant_router.operation WHERE op_id = $1 AND finished_at IS NULL",
				 1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 1)
		{
			status = spi_text(SPI_fnumber(SPI_tuptable->tupdesc, "status"), &isnull);
			op = operation_from_record(opcxt);
			OperationConnect(op);
			if (strcmp(status, "completed") == 0)
			{
				/* past the catalog change: only the clean-up is left */
				OperationFinish(op);
				record_end(op, NULL);
			}
			else
			{
				OperationUndo(op);
				if (!op->undo_failed)
					record_end(op, "interrupted: rolled back by the recovery of operations");
			}
			ereport(LOG,
					(errmsg("tenant_router: recovered operation " INT64_FORMAT " (%s of shard \"%s\", %s)",
							op_id, op->operation, op->source->shard_id,
							strcmp(status, "completed") == 0 ? "cleaned up" :
							op->undo_failed ? "rollback incomplete, tried again later" : "rolled back")));
			recovered = !op->undo_failed;
		}
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(WARNING,
				(errmsg("could not recover operation " INT64_FORMAT ": %s", op_id, edata->message),
				 errhint("tenant_router.operation_recover() tries again.")));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	MemoryContextDelete(opcxt);
	return recovered;
}

/*
 * OperationCheckIdle raises an error if an operation involving shard_id is
 * running; one whose worker is gone is recovered first.  SPI must be
 * connected.
 */
void
OperationCheckIdle(const char *shard_id)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};
	MemoryContext cxt = CurrentMemoryContext;
	List	   *ops = NIL;
	ListCell   *lc;

	if (!CatalogHasOperations())
		return;					/* a catalog at 0.1: no operation ever ran */
	spi_exec("SELECT op_id, operation, pg_catalog.date_trunc('second', started_at)::text "
			 "FROM tenant_router.operation "
			 "WHERE finished_at IS NULL AND (shard_id = $1 OR target_shard_id = $1) ORDER BY op_id",
			 1, types, values, NULL, SPI_OK_SELECT);
	MemoryContextSwitchTo(cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
		ops = lappend(ops, psprintf("%s (%s since %s)",
									SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
									SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
									SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3)));
	foreach(lc, ops)
	{
		char	   *op = lfirst(lc);
		int64		op_id = strtoi64(op, NULL, 10);

		if (!recover_one(op_id))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("shard \"%s\" is busy with operation %s", shard_id, op),
					 errdetail("An online operation is running on the shard: one operation at a time."),
					 errhint("tenant_router.operations shows its progress; wait for it, or cancel the session that started it.")));
	}
	MemoryContextSwitchTo(cxt);
}

/*
 * OperationRecover finishes every operation whose worker is gone and
 * returns how many; SPI must be connected.
 */
int64
OperationRecover(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *ids = NIL;
	ListCell   *lc;
	int64		recovered = 0;

	if (!CatalogHasOperations())
		return 0;
	spi_exec("SELECT op_id FROM tenant_router.operation WHERE finished_at IS NULL ORDER BY op_id",
			 0, NULL, NULL, NULL, SPI_OK_SELECT);
	MemoryContextSwitchTo(cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
		ids = lappend(ids, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	foreach(lc, ids)
		if (recover_one(strtoi64(lfirst(lc), NULL, 10)))
			recovered++;
	MemoryContextSwitchTo(cxt);
	return recovered;
}

/* tenant_router.operation_recover(): OperationRecover for SQL */
Datum
tenant_router_operation_recover(PG_FUNCTION_ARGS)
{
	int64		recovered;

	SPI_connect();
	recovered = OperationRecover();
	SPI_finish();
	PG_RETURN_INT64(recovered);
}
