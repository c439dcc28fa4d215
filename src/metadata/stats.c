/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Shard health and statement statistics, per shard and per tenant, in
 *	  shared memory: what tenant_router.shard_health, shard_stats and
 *	  tenant_stats show, and tenant_router.stats_reset() clears.
 *
 * Per shard: the last time it answered (a statement, a connection, the
 * worker's probe) and the last time it could not be reached, with libpq's
 * message; it is reachable when its last answer is later than its last
 * failure.  Per shard and per tenant: statements, rows, errors and time.
 * A statement's part on a shard is counted when it ends (StatsStatementEnd);
 * a part whose memory goes away with a transaction's abort before it ended
 * is an error -- on that shard only, when another shard of the statement
 * raised the error (StatsNoteShardError).  Nothing is ever written to a
 * catalog.
 *
 * Memory is fixed at server start: tenant_router.stats_max_shards and
 * tenant_router.stats_max_tenants entries.  When a table is full, a new
 * entry first evicts the 5% of entries (at least one) whose last use is the
 * oldest.  Entries are per database (the key holds its OID).
 *
 * Invariants: one LWLock guards both tables' shape (shared to find an
 * entry, exclusive to add or remove one); an entry's fields are changed
 * under its spinlock.  Nothing here raises an error in the counting paths,
 * which also run during a transaction's abort.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "tenant_router/guc.h"
#include "tenant_router/stats.h"

#define STATS_TRANCHE "tenant_router stats"
#define STATS_ERROR_LEN 256
/* percentage of a full table's entries evicted at once */
#define STATS_EVICT_PERCENT 5

typedef struct StatsShardKey
{
	Oid			dbid;
	char		shard_id[SHARD_ID_MAXLEN];
} StatsShardKey;

/* what every entry has, right after its key */
typedef struct StatsCommon
{
	slock_t		mutex;
	TimestampTz last_used;		/* for eviction */
	TimestampTz since;			/* counting since */
	int64		statements;
	int64		rows;
	int64		errors;
	int64		time_us;
} StatsCommon;

typedef struct StatsShardEntry
{
	StatsShardKey key;
	StatsCommon c;
	TimestampTz last_success;
	TimestampTz last_error_at;
	char		last_error[STATS_ERROR_LEN];
} StatsShardEntry;

typedef struct StatsTenantKey
{
	Oid			dbid;
	int64		tenant;
} StatsTenantKey;

typedef struct StatsTenantEntry
{
	StatsTenantKey key;
	StatsCommon c;				/* last_used: its last statement */
	char		shard_id[SHARD_ID_MAXLEN];	/* of its last statement */
} StatsTenantEntry;

typedef struct StatsShared
{
	LWLock	   *lock;
	TimestampTz *scratch;		/* last_used values while evicting */
} StatsShared;

static StatsShared *shared = NULL;
static HTAB *shard_hash = NULL;
static HTAB *tenant_hash = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* the shard whose error is being raised (StatsNoteShardError) */
static uint64 shard_errors = 0;
static char error_shard[SHARD_ID_MAXLEN];

PG_FUNCTION_INFO_V1(tenant_router_shard_stats);
PG_FUNCTION_INFO_V1(tenant_router_tenant_stats);
PG_FUNCTION_INFO_V1(tenant_router_stats_reset);

static int
scratch_size(void)
{
	return Max(TenantRouterStatsMaxShards, TenantRouterStatsMaxTenants);
}

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(StatsShared)));
	RequestAddinShmemSpace(MAXALIGN(sizeof(TimestampTz) * scratch_size()));
	RequestAddinShmemSpace(hash_estimate_size(TenantRouterStatsMaxShards,
											  sizeof(StatsShardEntry)));
	RequestAddinShmemSpace(hash_estimate_size(TenantRouterStatsMaxTenants,
											  sizeof(StatsTenantEntry)));
	RequestNamedLWLockTranche(STATS_TRANCHE, 1);
}

static void
stats_shmem_startup(void)
{
	HASHCTL		info;
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tenant_router stats", sizeof(StatsShared), &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche(STATS_TRANCHE))->lock;
		shared->scratch = ShmemAlloc(sizeof(TimestampTz) * scratch_size());
	}
	info.keysize = sizeof(StatsShardKey);
	info.entrysize = sizeof(StatsShardEntry);
	shard_hash = ShmemInitHash("tenant_router shard stats",
							   TenantRouterStatsMaxShards, TenantRouterStatsMaxShards,
							   &info, HASH_ELEM | HASH_BLOBS);
	info.keysize = sizeof(StatsTenantKey);
	info.entrysize = sizeof(StatsTenantEntry);
	tenant_hash = ShmemInitHash("tenant_router tenant stats",
								TenantRouterStatsMaxTenants, TenantRouterStatsMaxTenants,
								&info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/* StatsInit reserves the shared memory; called from _PG_init. */
void
StatsInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

static void
shard_key(StatsShardKey *key, const char *shard_id)
{
	memset(key, 0, sizeof(StatsShardKey));
	key->dbid = MyDatabaseId;
	strlcpy(key->shard_id, shard_id, SHARD_ID_MAXLEN);
}

static void
tenant_key(StatsTenantKey *key, int64 tenant)
{
	memset(key, 0, sizeof(StatsTenantKey));
	key->dbid = MyDatabaseId;
	key->tenant = tenant;
}

static int
compare_timestamps(const void *a, const void *b)
{
	TimestampTz ta = *(const TimestampTz *) a;
	TimestampTz tb = *(const TimestampTz *) b;

	return ta < tb ? -1 : ta > tb ? 1 : 0;
}

#define COMMON(entry, at) ((StatsCommon *) ((char *) (entry) + (at)))

/*
 * evict removes the STATS_EVICT_PERCENT% of entries (at least one) whose
 * last use is the oldest; common_at is the offset of the entries'
 * StatsCommon.  The caller holds the lock exclusively.
 */
static void
evict(HTAB *hash, Size common_at)
{
	HASH_SEQ_STATUS status;
	void	   *entry;
	long		n = 0;
	long		goal;
	long		removed = 0;
	TimestampTz threshold;

	hash_seq_init(&status, hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (n < scratch_size())
			shared->scratch[n++] = COMMON(entry, common_at)->last_used;
	}
	if (n == 0)
		return;
	qsort(shared->scratch, n, sizeof(TimestampTz), compare_timestamps);
	goal = Max(n * STATS_EVICT_PERCENT / 100, 1);
	threshold = shared->scratch[goal - 1];

	hash_seq_init(&status, hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (COMMON(entry, common_at)->last_used <= threshold)
		{
			(void) hash_search(hash, entry, HASH_REMOVE, NULL);
			if (++removed >= goal)
			{
				hash_seq_term(&status);
				break;
			}
		}
	}
}

/*
 * enter finds or adds the entry of key, evicting first if the table is full;
 * NULL if it cannot be added.  The caller holds the lock exclusively.
 */
static void *
enter(HTAB *hash, const void *key, int max, Size common_at, Size entry_size,
	  TimestampTz now)
{
	void	   *entry;
	bool		found;

	entry = hash_search(hash, key, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;
	if (hash_get_num_entries(hash) >= max)
		evict(hash, common_at);
	entry = hash_search(hash, key, HASH_ENTER_NULL, &found);
	if (entry != NULL && !found)
	{
		StatsCommon *c = COMMON(entry, common_at);

		memset((char *) entry + common_at, 0, entry_size - common_at);
		SpinLockInit(&c->mutex);
		c->last_used = now;
		c->since = now;
	}
	return entry;
}

static StatsShardEntry *
enter_shard(const StatsShardKey *key, TimestampTz now)
{
	return enter(shard_hash, key, TenantRouterStatsMaxShards,
				 offsetof(StatsShardEntry, c), sizeof(StatsShardEntry), now);
}

static StatsTenantEntry *
enter_tenant(const StatsTenantKey *key, TimestampTz now)
{
	return enter(tenant_hash, key, TenantRouterStatsMaxTenants,
				 offsetof(StatsTenantEntry, c), sizeof(StatsTenantEntry), now);
}

/*
 * find_entries returns the shard's entry and, with tenant, the tenant's,
 * adding them if needed, with the lock held (shared if both existed); the
 * caller releases it.  Either may be NULL if it could not be added.
 */
static void
find_entries(const char *shard_id, const int64 *tenant, TimestampTz now,
			 StatsShardEntry **shard, StatsTenantEntry **tenant_entry)
{
	StatsShardKey skey;
	StatsTenantKey tkey;

	shard_key(&skey, shard_id);
	if (tenant != NULL)
		tenant_key(&tkey, *tenant);
	*tenant_entry = NULL;

	LWLockAcquire(shared->lock, LW_SHARED);
	*shard = hash_search(shard_hash, &skey, HASH_FIND, NULL);
	if (tenant != NULL)
		*tenant_entry = hash_search(tenant_hash, &tkey, HASH_FIND, NULL);
	if (*shard != NULL && (tenant == NULL || *tenant_entry != NULL))
		return;

	LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	*shard = enter_shard(&skey, now);
	if (tenant != NULL)
		*tenant_entry = enter_tenant(&tkey, now);
}

/* add_counters counts a statement on c, whose spinlock the caller holds */
static void
add_counters(StatsCommon *c, uint64 rows, int64 time_us, bool failed, TimestampTz now)
{
	c->statements++;
	c->rows += rows;
	c->time_us += time_us;
	if (failed)
		c->errors++;
	c->last_used = now;
}

/* count adds a statement's part on a shard to the shard's and the tenant's counters */
static void
count(StatsStatement *st, uint64 rows, bool failed)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		time_us = Max(now - st->start, 0);
	StatsShardEntry *shard;
	StatsTenantEntry *tenant;

	find_entries(st->shard_id, st->has_tenant ? &st->tenant : NULL, now, &shard, &tenant);
	if (shard != NULL)
	{
		SpinLockAcquire(&shard->c.mutex);
		add_counters(&shard->c, rows, time_us, failed, now);
		if (!failed && now > shard->last_success)
			shard->last_success = now;
		SpinLockRelease(&shard->c.mutex);
	}
	if (tenant != NULL)
	{
		SpinLockAcquire(&tenant->c.mutex);
		add_counters(&tenant->c, rows, time_us, failed, now);
		if (strcmp(tenant->shard_id, st->shard_id) != 0)
			strlcpy(tenant->shard_id, st->shard_id, SHARD_ID_MAXLEN);
		SpinLockRelease(&tenant->c.mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * statement_reset: the memory of a statement's part goes away.  If the part
 * never ended, the statement failed (or was cancelled): an error here,
 * unless another shard raised it.
 */
static void
statement_reset(void *arg)
{
	StatsStatement *st = (StatsStatement *) arg;
	bool		aborting = !IsTransactionState();
	bool		raised_here = shard_errors == st->error_mark ||
		strcmp(error_shard, st->shard_id) == 0;

	if (!st->active)
		return;
	st->active = false;
	count(st, st->rows, aborting && raised_here);
}

/*
 * StatsStatementBegin starts counting a statement's part on a shard (and a
 * tenant, if tenant is not NULL); st lives in cxt.  Nothing is counted when
 * tenant_router.track_stats is off.
 */
void
StatsStatementBegin(StatsStatement *st, const char *shard_id, const int64 *tenant,
					MemoryContext cxt)
{
	Assert(!st->active);
	st->active = false;
	if (!TenantRouterTrackStats || shared == NULL)
		return;
	strlcpy(st->shard_id, shard_id, SHARD_ID_MAXLEN);
	st->has_tenant = tenant != NULL;
	st->tenant = tenant ? *tenant : 0;
	st->rows = 0;
	st->error_mark = shard_errors;
	st->start = GetCurrentTimestamp();
	if (!st->registered)
	{
		st->on_reset.func = statement_reset;
		st->on_reset.arg = st;
		MemoryContextRegisterResetCallback(cxt, &st->on_reset);
		st->registered = true;
	}
	st->active = true;
}

/*
 * StatsStatementEnd counts a statement's part that completed: its rows are
 * the larger of rows (the shard's count of rows read or changed) and those
 * added along the way (StatsStatementAddRows).  Does nothing if the part is
 * not being counted, or was counted already.
 */
void
StatsStatementEnd(StatsStatement *st, uint64 rows)
{
	if (!st->active)
		return;
	st->active = false;
	count(st, Max(rows, st->rows), false);
}

/*
 * StatsShardAnswered records that the shard answered now (a connection, the
 * worker's probe): it is reachable.
 */
void
StatsShardAnswered(const char *shard_id)
{
	TimestampTz now = GetCurrentTimestamp();
	StatsShardEntry *shard;
	StatsTenantEntry *unused;

	if (shared == NULL)
		return;
	find_entries(shard_id, NULL, now, &shard, &unused);
	if (shard != NULL)
	{
		SpinLockAcquire(&shard->c.mutex);
		if (now > shard->last_success)
			shard->last_success = now;
		shard->c.last_used = now;
		SpinLockRelease(&shard->c.mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * StatsShardFailed records that the shard could not be reached now, with
 * libpq's message (which never holds a password): it is unreachable until
 * it answers again.  The error being raised is the shard's.
 */
void
StatsShardFailed(const char *shard_id, const char *message)
{
	TimestampTz now = GetCurrentTimestamp();
	StatsShardEntry *shard;
	StatsTenantEntry *unused;

	StatsNoteShardError(shard_id);
	if (shared == NULL)
		return;
	find_entries(shard_id, NULL, now, &shard, &unused);
	if (shard != NULL)
	{
		SpinLockAcquire(&shard->c.mutex);
		shard->last_error_at = now;
		strlcpy(shard->last_error, message, STATS_ERROR_LEN);
		shard->c.last_used = now;
		SpinLockRelease(&shard->c.mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * StatsNoteShardError notes, in this backend, that the error about to be
 * raised comes from the shard: a statement's parts on other shards that it
 * interrupts are not errors of theirs.
 */
void
StatsNoteShardError(const char *shard_id)
{
	shard_errors++;
	strlcpy(error_shard, shard_id, SHARD_ID_MAXLEN);
}

static Datum
timestamp_or_null(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

static void
put_counters(const StatsCommon *c, Datum *values, bool *nulls)
{
	values[0] = Int64GetDatum(c->statements);
	values[1] = Int64GetDatum(c->rows);
	values[2] = Int64GetDatum(c->errors);
	values[3] = Float8GetDatum((double) c->time_us / 1000.0);
	nulls[0] = nulls[1] = nulls[2] = nulls[3] = false;
}

/*
 * tenant_router.shard_stats_data(): every shard of this database with an
 * entry: shard_id, reachable, last_success, last_error, last_error_at,
 * statements, rows, errors, total_time (ms), stats_since.
 */
Datum
tenant_router_shard_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	StatsShardEntry *entry;

	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(shared->lock, LW_SHARED);
	hash_seq_init(&status, shard_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		StatsShardEntry copy;
		Datum		values[10];
		bool		nulls[10];

		if (entry->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&entry->c.mutex);
		copy = *entry;
		SpinLockRelease(&entry->c.mutex);

		values[0] = CStringGetTextDatum(copy.key.shard_id);
		nulls[0] = false;
		/* reachable: its last answer is later than its last failure */
		nulls[1] = copy.last_success == 0 && copy.last_error_at == 0;
		values[1] = BoolGetDatum(copy.last_success > copy.last_error_at);
		values[2] = timestamp_or_null(copy.last_success, &nulls[2]);
		values[3] = CStringGetTextDatum(copy.last_error);
		nulls[3] = copy.last_error_at == 0;
		values[4] = timestamp_or_null(copy.last_error_at, &nulls[4]);
		put_counters(&copy.c, &values[5], &nulls[5]);
		values[9] = timestamp_or_null(copy.c.since, &nulls[9]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(shared->lock);
	return (Datum) 0;
}

/*
 * tenant_router.tenant_stats_data(): every tenant of this database with an
 * entry: tenant_id, shard_id (of its last statement), statements, rows,
 * errors, total_time (ms), last_statement_at, stats_since.
 */
Datum
tenant_router_tenant_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	StatsTenantEntry *entry;

	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(shared->lock, LW_SHARED);
	hash_seq_init(&status, tenant_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		StatsTenantEntry copy;
		Datum		values[8];
		bool		nulls[8];

		if (entry->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&entry->c.mutex);
		copy = *entry;
		SpinLockRelease(&entry->c.mutex);

		values[0] = Int64GetDatum(copy.key.tenant);
		nulls[0] = false;
		values[1] = CStringGetTextDatum(copy.shard_id);
		nulls[1] = false;
		put_counters(&copy.c, &values[2], &nulls[2]);
		values[6] = timestamp_or_null(copy.c.last_used, &nulls[6]);
		values[7] = timestamp_or_null(copy.c.since, &nulls[7]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(shared->lock);
	return (Datum) 0;
}

/*
 * tenant_router.stats_reset(): forgets every tenant of this database and
 * zeroes its shards' counters; the shards' health (last answer, last
 * failure) is kept, since it describes their state, not a count.
 */
Datum
tenant_router_stats_reset(PG_FUNCTION_ARGS)
{
	TimestampTz now = GetCurrentTimestamp();
	HASH_SEQ_STATUS status;
	StatsShardEntry *shard;
	StatsTenantEntry *tenant;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&status, tenant_hash);
	while ((tenant = hash_seq_search(&status)) != NULL)
		if (tenant->key.dbid == MyDatabaseId)
			(void) hash_search(tenant_hash, &tenant->key, HASH_REMOVE, NULL);
	hash_seq_init(&status, shard_hash);
	while ((shard = hash_seq_search(&status)) != NULL)
	{
		if (shard->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&shard->c.mutex);
		shard->c.statements = shard->c.rows = shard->c.errors = shard->c.time_us = 0;
		shard->c.since = now;
		SpinLockRelease(&shard->c.mutex);
	}
	LWLockRelease(shared->lock);
	PG_RETURN_VOID();
}
