/*-------------------------------------------------------------------------
 *
 * remote_deadlock.c
 *	  The remote layer's part in finding deadlocks that span shards (the
 *	  detector itself is worker/deadlock.c): the name a shard session shows
 *	  to the other sessions of its shard, the bounded query of a shard's
 *	  lock waits, and the failure of a victim with deadlock_detected.
 *
 * Names.  A shard session's application_name is "tenant_router <system
 * identifier> <pid>": the coordinator and the backend it serves, followed by
 * the DSN's own application_name if it has one.  Inside a remote
 * transaction a SET LOCAL, sent in the pipeline of its BEGIN, adds the
 * coordinator transaction to the pid, "<pid>:<local xid>:<start>" (both in
 * hexadecimal, the start in milliseconds since 2000): so whichever
 * coordinator looks at a shard tells two transactions of one backend apart
 * (waits seen a moment apart on two shards are never stitched into a cycle
 * that did not exist) and orders transactions by age the same way.
 * PostgreSQL keeps the first 63 bytes of an application_name: the
 * identity fits in 61, the DSN's name gets what is left.
 *
 * Victims.  The detector marks a backend of this coordinator in shared
 * memory with the local transaction id to fail, then sets its latch; the
 * backend's waits for a shard look at the mark when they wake
 * (RemoteDeadlockCheck) and raise deadlock_detected (40P01) in that
 * transaction only: a mark of a transaction that has ended is never
 * raised, and a mark is consumed when raised.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"
#include "tenant_router/remote_deadlock.h"

#define SESSION_NAME_PREFIX "tenant_router "
/* the cycle a victim is told about */
#define DETAIL_MAXLEN 1024

/* a backend's mark: the transaction to fail, and why */
typedef struct VictimSlot
{
	slock_t		mutex;			/* guards detail */
	pg_atomic_uint32 lxid;		/* InvalidLocalTransactionId: none */
	char		detail[DETAIL_MAXLEN];
} VictimSlot;

/* one slot per backend id (1..MaxBackends) */
static VictimSlot *victim_slots = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
victim_slots_size(void)
{
	return mul_size(MaxBackends, sizeof(VictimSlot));
}

static void
deadlock_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(victim_slots_size()));
}

static void
deadlock_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	victim_slots = ShmemInitStruct("tenant_router deadlock victims",
								   victim_slots_size(), &found);
	if (!found)
	{
		int			i;

		for (i = 0; i < MaxBackends; i++)
		{
			SpinLockInit(&victim_slots[i].mutex);
			pg_atomic_init_u32(&victim_slots[i].lxid, InvalidLocalTransactionId);
			victim_slots[i].detail[0] = '\0';
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* RemoteDeadlockInit reserves the victims' shared memory; called from _PG_init */
void
RemoteDeadlockInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = deadlock_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = deadlock_shmem_startup;
}

/*
 * RemoteSessionSuffix returns the application_name the DSN asks for, or ""
 * (a string libpq cannot parse has none: connecting reports it).
 */
char *
RemoteSessionSuffix(const char *dsn)
{
	PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
	PQconninfoOption *opt;
	char	   *suffix = NULL;

	for (opt = opts; opt != NULL && opt->keyword != NULL; opt++)
		if (strcmp(opt->keyword, "application_name") == 0 && opt->val != NULL)
			suffix = pstrdup(opt->val);
	if (opts != NULL)
		PQconninfoFree(opts);
	return suffix != NULL ? suffix : pstrdup("");
}

/* RemoteSessionName returns the application_name of a new shard session */
char *
RemoteSessionName(const char *suffix)
{
	return psprintf(SESSION_NAME_PREFIX UINT64_FORMAT " %d%s%s", OriginId(),
					MyProcPid, suffix[0] ? " " : "", suffix);
}

/*
 * RemoteXactNameSql returns the command that names the coordinator
 * transaction in a remote transaction just begun, or NULL when deadlock
 * detection is off (tenant_router.deadlock_check_interval = 0).
 */
char *
RemoteXactNameSql(const char *suffix)
{
	char	   *name;

	if (TenantRouterDeadlockCheckInterval <= 0)
		return NULL;
	if (suffix == NULL)
		suffix = "";
	name = psprintf(SESSION_NAME_PREFIX UINT64_FORMAT " %d:%x:%" INT64_MODIFIER "x%s%s",
					OriginId(), MyProcPid, MyProc->lxid,
					GetCurrentTransactionStartTimestamp() / 1000,
					suffix[0] ? " " : "", suffix);
	return psprintf("SET LOCAL application_name = %s", quote_literal_cstr(name));
}

/*
 * RemoteParseSessionName tells what an application_name seen on a shard
 * says: not a tenant_router session, one outside any transaction, or one
 * serving the coordinator transaction it stores in *id.
 */
RemoteSessionKind
RemoteParseSessionName(const char *name, RemoteXactId *id)
{
	const char *p;
	char	   *end;
	long		pid;

	if (name == NULL || strncmp(name, SESSION_NAME_PREFIX, strlen(SESSION_NAME_PREFIX)) != 0)
		return REMOTE_SESSION_OTHER;
	p = name + strlen(SESSION_NAME_PREFIX);
	errno = 0;
	id->node = strtou64(p, &end, 10);
	if (end == p || *end != ' ' || errno != 0)
		return REMOTE_SESSION_OTHER;
	p = end + 1;
	pid = strtol(p, &end, 10);
	if (end == p || pid <= 0 || pid > INT_MAX || errno != 0)
		return REMOTE_SESSION_OTHER;
	id->pid = (int) pid;
	id->lxid = InvalidLocalTransactionId;
	id->start_ms = 0;
	if (*end == '\0' || *end == ' ')
		return REMOTE_SESSION_IDLE;
	if (*end != ':')
		return REMOTE_SESSION_OTHER;
	p = end + 1;
	id->lxid = (LocalTransactionId) strtoul(p, &end, 16);
	if (end == p || *end != ':' || errno != 0)
		return REMOTE_SESSION_OTHER;
	p = end + 1;
	id->start_ms = strtoi64(p, &end, 16);
	if (end == p || (*end != '\0' && *end != ' ') || errno != 0)
		return REMOTE_SESSION_OTHER;
	return REMOTE_SESSION_XACT;
}

/*
 * RemoteLocalXactId returns the id of the transaction a backend of this
 * coordinator runs, started at xact_start; its lxid is invalid if the
 * backend is gone.
 */
RemoteXactId
RemoteLocalXactId(int pid, TimestampTz xact_start)
{
	RemoteXactId id;
	PGPROC	   *proc = BackendPidGetProc(pid);

	id.node = OriginId();
	id.pid = pid;
	id.lxid = proc != NULL ? proc->lxid : InvalidLocalTransactionId;
	id.start_ms = xact_start / 1000;
	return id;
}

bool
RemoteXactIdEqual(const RemoteXactId *a, const RemoteXactId *b)
{
	return a->node == b->node && a->pid == b->pid && a->lxid == b->lxid &&
		a->start_ms == b->start_ms;
}

/*
 * The lock waits of a shard database: each session of that database
 * waiting for a lock, with each session blocking it, and the names of
 * both.  Sessions of the DSN's role (every coordinator's, normally) show
 * their application_name and their waits; others only as blockers, unless
 * the role may read all statistics.
 */
static const char *const lock_waits_sql =
"SELECT w.pid, w.application_name, bp.pid, b.application_name "
"FROM pg_catalog.pg_stat_activity w "
"CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(w.pid)) AS bp(pid) "
"LEFT JOIN pg_catalog.pg_stat_activity b ON b.pid OPERATOR(pg_catalog.=) bp.pid "
"WHERE w.wait_event_type OPERATOR(pg_catalog.=) 'Lock' "
"AND w.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()";

/*
 * read_ready reads what has arrived on a connection with a query in flight
 * and keeps its result; it returns false while the query is not over.
 * *failed tells whether it failed (the connection then needs closing).
 */
static bool
read_ready(ShardConn *sc, PGresult **result, bool *failed)
{
	if (!PQconsumeInput(sc->conn))
	{
		*failed = true;
		return true;
	}
	while (!PQisBusy(sc->conn))
	{
		PGresult   *res = PQgetResult(sc->conn);

		if (res == NULL)
			return true;
		if (PQresultStatus(res) == PGRES_TUPLES_OK && *result == NULL)
			*result = res;
		else
		{
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				*failed = true;
			PQclear(res);
		}
	}
	return false;
}

/*
 * RemoteLockWaits asks n shard connections, all at once, for the lock
 * waits of their databases, and waits at most timeout_ms in all, without
 * raising errors.  results[i] receives the rows (columns REMOTE_WAIT_*) or
 * NULL for a shard that failed or did not answer in time: its connection
 * is closed, the next call connects anew.  The connections must be idle.
 */
void
RemoteLockWaits(int n, ShardConn **scs, int timeout_ms, PGresult **results)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	bool	   *pending = palloc0(sizeof(bool) * (n + 1));
	int			npending = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		ShardConn  *sc = scs[i];

		results[i] = NULL;
		if (sc->conn == NULL || sc->cmd.active || sc->claim != NULL || sc->copying ||
			sc->xact_depth > 0 || PQisBusy(sc->conn))
			continue;
		if (!PQsendQuery(sc->conn, lock_waits_sql))
		{
			ShardConnDisconnect(sc);
			continue;
		}
		pending[i] = true;
		npending++;
	}

	while (npending > 0)
	{
		long		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		WaitEventSet *set;
		WaitEvent	event;
		int			nevents;

		if (timeout <= 0)
			break;
		set = CreateWaitEventSet(CurrentMemoryContext, npending + 2);
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		for (i = 0; i < n; i++)
			if (pending[i])
				AddWaitEventToSet(set, WL_SOCKET_READABLE, PQsocket(scs[i]->conn), NULL, NULL);
		nevents = WaitEventSetWait(set, timeout, &event, 1, PG_WAIT_EXTENSION);
		/* freed before an interrupt can raise an error: it holds a descriptor */
		FreeWaitEventSet(set);
		if (nevents > 0 && (event.events & WL_LATCH_SET))
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		for (i = 0; i < n; i++)
		{
			bool		failed = false;

			if (!pending[i] || !read_ready(scs[i], &results[i], &failed))
				continue;
			pending[i] = false;
			npending--;
			if (failed)
			{
				PQclear(results[i]);
				results[i] = NULL;
				ShardConnDisconnect(scs[i]);
			}
		}
	}

	/* a shard that did not answer in time: its query is abandoned with its connection */
	for (i = 0; i < n; i++)
		if (pending[i])
			ShardConnDisconnect(scs[i]);
	pfree(pending);
}

/*
 * RemoteDeadlockFail marks the backend pid of this coordinator to fail its
 * transaction lxid with deadlock_detected, detail telling why, and wakes
 * it.  It does nothing, and returns false, unless that backend still runs
 * that transaction and waits for a shard.
 */
bool
RemoteDeadlockFail(int pid, LocalTransactionId lxid, const char *detail)
{
	PGPROC	   *proc = BackendPidGetProc(pid);
	VictimSlot *slot;

	if (proc == NULL || proc->backendId == InvalidBackendId ||
		proc->backendId > MaxBackends || proc->lxid != lxid ||
		proc->wait_event_info != PG_WAIT_EXTENSION)
		return false;
	slot = &victim_slots[proc->backendId - 1];
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->detail, detail, DETAIL_MAXLEN);
	pg_atomic_write_u32(&slot->lxid, lxid);
	SpinLockRelease(&slot->mutex);
	SetLatch(&proc->procLatch);
	return true;
}

/*
 * RemoteDeadlockCheck raises deadlock_detected if the deadlock detector
 * chose this backend's transaction as the victim of a cycle of waits;
 * called by the waits for a shard when they wake.
 */
void
RemoteDeadlockCheck(void)
{
	VictimSlot *slot;
	char		detail[DETAIL_MAXLEN];

	if (RemoteXactCommitting)
		return;					/* acted on never during COMMIT: see remote_xact.c */
	if (victim_slots == NULL || MyBackendId == InvalidBackendId || MyBackendId > MaxBackends ||
		MyProc == NULL || MyProc->lxid == InvalidLocalTransactionId)
		return;
	slot = &victim_slots[MyBackendId - 1];
	if (pg_atomic_read_u32(&slot->lxid) != MyProc->lxid || !IsTransactionState())
		return;
	SpinLockAcquire(&slot->mutex);
	strlcpy(detail, slot->detail, DETAIL_MAXLEN);
	pg_atomic_write_u32(&slot->lxid, InvalidLocalTransactionId);
	SpinLockRelease(&slot->mutex);
	ereport(ERROR,
			(errcode(ERRCODE_T_R_DEADLOCK_DETECTED),
			 errmsg("deadlock detected"),
			 errdetail_internal("%s", detail),
			 errhint("Retry the transaction. The cycle of waits spans several shards, none of which sees all of it: "
					 "the tenant_router deadlock detector (tenant_router.deadlock_check_interval) "
					 "chose this transaction to break it.")));
}
