/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Shard health and statement statistics, per shard and per tenant, in
 *	  shared memory: what tenant_router.shard_health, shard_stats and
 *	  tenant_stats show, and tenant_router.stats_reset() clears.
 *
 * Per shard: the last time it answered (a statement, a connection, the
 * health worker's probe) and the last time it could not be reached, with libpq's
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
 * entry first evicts about 5% of the entries (at least one), those whose
 * last use is the oldest.  Entries are per database (the key holds its OID).
 *
 * Each table is a shared hash split into STATS_PARTITIONS partitions by the
 * key's hash value, as PostgreSQL's lock manager splits its own, each
 * guarded by an LWLock of its own: counting a statement on an entry that
 * exists takes its partition's lock shared; adding an entry takes only its
 * partition's lock exclusively; eviction, stats_reset() and the views take
 * all of a table's partition locks (in their order; nothing holds one
 * partition lock while it waits for another, nor locks of both tables), so
 * that a full table is evicted once for the next 5% of new entries, not on
 * every statement of a new tenant.
 *
 * Invariants: an entry is added or removed only with its partition's lock
 * held exclusively; the free slots, under the table's spinlock; an entry's
 * fields, and the last use in its slot, are changed under the entry's
 * spinlock.  Nothing here raises an error in the counting paths, which
 * also run during a transaction's abort.
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
/* entries whose last use sets the eviction threshold */
#define STATS_EVICT_SAMPLE 512
/* partitions of each table, a power of 2 (dynahash's HASH_PARTITION) */
#define STATS_PARTITIONS 16

typedef struct StatsShardKey
{
	Oid			dbid;
	char		shard_id[SHARD_ID_MAXLEN];
} StatsShardKey;

/* what every entry has, right after its key */
typedef struct StatsCommon
{
	slock_t		mutex;
	int			slot;			/* its slot in its table */
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

/* small, so that more of the tenants stay in the CPU's caches */
typedef struct StatsTenantEntry
{
	StatsTenantKey key;
	StatsCommon c;
} StatsTenantEntry;

/*
 * A table of entries: a shared hash by key, and max slots, one per entry,
 * that hold each entry's last use in one array, so that eviction reads
 * those and not the entries.
 */
typedef struct StatsTable
{
	const char *name;
	const char *slots_name;
	Size		keysize;
	Size		entry_size;
	Size		common_at;		/* offset of the entries' StatsCommon */
	int			first_lock;		/* its first partition lock in stats_locks */
	int			max;
	HTAB	   *hash;
	/* in shared memory, after the hash */
	slock_t    *slots_mutex;	/* guards nfree and free_slots */
	int		   *nfree;
	int		   *free_slots;		/* the free slots, a stack */
	TimestampTz *used;			/* each slot's last use */
	void	  **entries;		/* each slot's entry, NULL if free */
} StatsTable;

static StatsTable shard_table = {
	"tenant_router shard stats", "tenant_router shard stats slots",
	sizeof(StatsShardKey), sizeof(StatsShardEntry), offsetof(StatsShardEntry, c),
	0
};
static StatsTable tenant_table = {
	"tenant_router tenant stats", "tenant_router tenant stats slots",
	sizeof(StatsTenantKey), sizeof(StatsTenantEntry), offsetof(StatsTenantEntry, c),
	STATS_PARTITIONS
};

/* the partition locks: the shard table's, then the tenant table's */
static LWLockPadded *stats_locks = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* the shard whose error is being raised (StatsNoteShardError) */
static uint64 shard_errors = 0;
static char error_shard[SHARD_ID_MAXLEN];

PG_FUNCTION_INFO_V1(tenant_router_shard_stats);
PG_FUNCTION_INFO_V1(tenant_router_tenant_stats);
PG_FUNCTION_INFO_V1(tenant_router_stats_reset);

#define COMMON(t, entry) ((StatsCommon *) ((char *) (entry) + (t)->common_at))

static Size
slots_size(int max)
{
	return MAXALIGN(sizeof(slock_t)) + MAXALIGN(sizeof(int)) + MAXALIGN(sizeof(int) * max) +
		MAXALIGN(sizeof(TimestampTz) * max) + MAXALIGN(sizeof(void *) * max);
}

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(hash_estimate_size(TenantRouterStatsMaxShards, sizeof(StatsShardEntry)));
	RequestAddinShmemSpace(slots_size(TenantRouterStatsMaxShards));
	RequestAddinShmemSpace(hash_estimate_size(TenantRouterStatsMaxTenants, sizeof(StatsTenantEntry)));
	RequestAddinShmemSpace(slots_size(TenantRouterStatsMaxTenants));
	RequestNamedLWLockTranche(STATS_TRANCHE, 2 * STATS_PARTITIONS);
}

/* table_attach creates or attaches a table of max entries */
static void
table_attach(StatsTable *t, int max)
{
	HASHCTL		info;
	char	   *p;
	bool		found;
	int			i;

	t->max = max;
	info.keysize = t->keysize;
	info.entrysize = t->entry_size;
	info.num_partitions = STATS_PARTITIONS;
	t->hash = ShmemInitHash(t->name, max, max, &info,
							HASH_ELEM | HASH_BLOBS | HASH_PARTITION);
	p = ShmemInitStruct(t->slots_name, slots_size(max), &found);
	t->slots_mutex = (slock_t *) p;
	p += MAXALIGN(sizeof(slock_t));
	t->nfree = (int *) p;
	p += MAXALIGN(sizeof(int));
	t->free_slots = (int *) p;
	p += MAXALIGN(sizeof(int) * max);
	t->used = (TimestampTz *) p;
	p += MAXALIGN(sizeof(TimestampTz) * max);
	t->entries = (void **) p;
	if (!found)
	{
		SpinLockInit(t->slots_mutex);
		*t->nfree = max;
		for (i = 0; i < max; i++)
		{
			t->free_slots[i] = max - 1 - i;
			t->used[i] = 0;
			t->entries[i] = NULL;
		}
	}
}

static void
stats_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_locks = GetNamedLWLockTranche(STATS_TRANCHE);
	table_attach(&shard_table, TenantRouterStatsMaxShards);
	table_attach(&tenant_table, TenantRouterStatsMaxTenants);
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

static LWLock *
partition_lock(StatsTable *t, uint32 hashcode)
{
	return &stats_locks[t->first_lock + hashcode % STATS_PARTITIONS].lock;
}

/* lock_all takes all of t's partition locks, in their order */
static void
lock_all(StatsTable *t, LWLockMode mode)
{
	for (int i = 0; i < STATS_PARTITIONS; i++)
		LWLockAcquire(&stats_locks[t->first_lock + i].lock, mode);
}

static void
unlock_all(StatsTable *t)
{
	for (int i = STATS_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&stats_locks[t->first_lock + i].lock);
}

/*
 * table_remove removes an entry and frees its slot; its partition's lock is
 * held exclusively
 */
static void
table_remove(StatsTable *t, void *entry)
{
	int			slot = COMMON(t, entry)->slot;

	t->entries[slot] = NULL;
	t->used[slot] = 0;
	(void) hash_search(t->hash, entry, HASH_REMOVE, NULL);
	SpinLockAcquire(t->slots_mutex);
	t->free_slots[(*t->nfree)++] = slot;
	SpinLockRelease(t->slots_mutex);
}

/*
 * table_evict removes about STATS_EVICT_PERCENT% of the entries (at least
 * one), those whose last use is the oldest: the threshold is that
 * percentile of the last uses of up to STATS_EVICT_SAMPLE slots spread over
 * the table (all of them in a smaller table), so that one pass over the
 * array of last uses and a small sort do, whatever the size of the table.
 * It takes all of the table's partition locks, and does nothing if another
 * backend freed a slot meanwhile.  No partition lock is held by the caller.
 */
static void
table_evict(StatsTable *t)
{
	TimestampTz sample[STATS_EVICT_SAMPLE];
	int			step = Max(t->max / STATS_EVICT_SAMPLE, 1);
	int			goal;
	int			removed = 0;
	int			n = 0;
	int			slot;
	TimestampTz threshold;

	lock_all(t, LW_EXCLUSIVE);
	/* no slot is taken or freed while all partitions are locked */
	if (*t->nfree > 0)
	{
		unlock_all(t);
		return;
	}
	goal = Max(t->max * STATS_EVICT_PERCENT / 100, 1);
	for (slot = 0; slot < t->max && n < STATS_EVICT_SAMPLE; slot += step)
		if (t->entries[slot] != NULL)
			sample[n++] = t->used[slot];
	if (n > 0)
	{
		qsort(sample, n, sizeof(TimestampTz), compare_timestamps);
		threshold = sample[Max(n * STATS_EVICT_PERCENT / 100, 1) - 1];
		for (slot = 0; slot < t->max && removed < goal; slot++)
		{
			if (t->entries[slot] != NULL && t->used[slot] <= threshold)
			{
				table_remove(t, t->entries[slot]);
				removed++;
			}
		}
	}
	unlock_all(t);
}

/*
 * table_enter finds or adds the entry of key (whose hash value is hashcode);
 * NULL if it cannot be added, with *full set if that is because every slot
 * is taken.  The key's partition lock is held exclusively.
 */
static void *
table_enter(StatsTable *t, const void *key, uint32 hashcode, TimestampTz now,
			bool *full)
{
	void	   *entry;
	StatsCommon *c;
	bool		found;
	int			slot = -1;

	*full = false;
	/* one walk of the bucket finds it or adds it; most keys are new here */
	entry = hash_search_with_hash_value(t->hash, key, hashcode, HASH_ENTER_NULL, &found);
	if (entry == NULL || found)
		return entry;
	SpinLockAcquire(t->slots_mutex);
	if (*t->nfree > 0)
		slot = t->free_slots[--(*t->nfree)];
	SpinLockRelease(t->slots_mutex);
	if (slot < 0)
	{
		(void) hash_search_with_hash_value(t->hash, key, hashcode, HASH_REMOVE, NULL);
		*full = true;
		return NULL;
	}
	c = COMMON(t, entry);
	memset(c, 0, t->entry_size - t->common_at);
	SpinLockInit(&c->mutex);
	c->slot = slot;
	c->since = now;
	t->entries[slot] = entry;
	t->used[slot] = now;
	return entry;
}

/*
 * find_entry returns the entry of key in t, adding it if needed (evicting
 * first if the table is full), with its partition's lock held (shared if it
 * existed) in *lock, which the caller releases; NULL, and no lock held, if
 * it could not be added.
 */
static void *
find_entry(StatsTable *t, const void *key, TimestampTz now, LWLock **lock)
{
	uint32		hashcode = get_hash_value(t->hash, key);
	LWLock	   *partition = partition_lock(t, hashcode);
	void	   *entry;
	bool		full;

	LWLockAcquire(partition, LW_SHARED);
	entry = hash_search_with_hash_value(t->hash, key, hashcode, HASH_FIND, NULL);
	if (entry != NULL)
	{
		*lock = partition;
		return entry;
	}
	LWLockRelease(partition);

	/* a second try after an eviction; others may have taken the room */
	for (int attempt = 0; attempt < 2; attempt++)
	{
		LWLockAcquire(partition, LW_EXCLUSIVE);
		entry = table_enter(t, key, hashcode, now, &full);
		if (entry != NULL)
		{
			*lock = partition;
			return entry;
		}
		LWLockRelease(partition);
		if (!full)
			break;
		table_evict(t);
	}
	return NULL;
}

/*
 * add_counters counts a statement on an entry of t, whose spinlock the
 * caller holds
 */
static void
add_counters(StatsTable *t, StatsCommon *c, uint64 rows, int64 time_us, bool failed,
			 TimestampTz now)
{
	c->statements++;
	c->rows += rows;
	c->time_us += time_us;
	if (failed)
		c->errors++;
	t->used[c->slot] = now;
}

/* count adds a statement's part on a shard to the shard's and the tenant's counters */
static void
count(StatsStatement *st, uint64 rows, bool failed)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		time_us = Max(now - st->start, 0);
	StatsShardKey skey;
	StatsShardEntry *shard;
	LWLock	   *lock;

	shard_key(&skey, st->shard_id);
	shard = find_entry(&shard_table, &skey, now, &lock);
	if (shard != NULL)
	{
		SpinLockAcquire(&shard->c.mutex);
		add_counters(&shard_table, &shard->c, rows, time_us, failed, now);
		if (!failed && now > shard->last_success)
			shard->last_success = now;
		SpinLockRelease(&shard->c.mutex);
		LWLockRelease(lock);
	}
	if (st->has_tenant)
	{
		StatsTenantKey tkey;
		StatsTenantEntry *tenant;

		tenant_key(&tkey, st->tenant);
		tenant = find_entry(&tenant_table, &tkey, now, &lock);
		if (tenant != NULL)
		{
			SpinLockAcquire(&tenant->c.mutex);
			add_counters(&tenant_table, &tenant->c, rows, time_us, failed, now);
			SpinLockRelease(&tenant->c.mutex);
			LWLockRelease(lock);
		}
	}
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
	if (!TenantRouterTrackStats || stats_locks == NULL)
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
	StatsShardKey key;
	StatsShardEntry *shard;
	LWLock	   *lock;

	if (stats_locks == NULL)
		return;
	shard_key(&key, shard_id);
	shard = find_entry(&shard_table, &key, now, &lock);
	if (shard != NULL)
	{
		SpinLockAcquire(&shard->c.mutex);
		if (now > shard->last_success)
			shard->last_success = now;
		shard_table.used[shard->c.slot] = now;
		SpinLockRelease(&shard->c.mutex);
		LWLockRelease(lock);
	}
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
	StatsShardKey key;
	StatsShardEntry *shard;
	LWLock	   *lock;

	StatsNoteShardError(shard_id);
	if (stats_locks == NULL)
		return;
	shard_key(&key, shard_id);
	shard = find_entry(&shard_table, &key, now, &lock);
	if (shard != NULL)
	{
		SpinLockAcquire(&shard->c.mutex);
		shard->last_error_at = now;
		strlcpy(shard->last_error, message, STATS_ERROR_LEN);
		shard_table.used[shard->c.slot] = now;
		SpinLockRelease(&shard->c.mutex);
		LWLockRelease(lock);
	}
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
	StatsShardEntry *copies;
	int			n = 0;

	InitMaterializedSRF(fcinfo, 0);

	/*
	 * The entries are copied out under the partition locks and the rows
	 * built after them: a new shard's entry needs its partition's lock
	 * exclusively, and must not wait for a tuplestore that may spill to
	 * disk.
	 */
	lock_all(&shard_table, LW_SHARED);
	copies = palloc(sizeof(StatsShardEntry) * Max(shard_table.max - *shard_table.nfree, 1));
	hash_seq_init(&status, shard_table.hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&entry->c.mutex);
		copies[n++] = *entry;
		SpinLockRelease(&entry->c.mutex);
	}
	unlock_all(&shard_table);

	for (int i = 0; i < n; i++)
	{
		StatsShardEntry *copy = &copies[i];
		Datum		values[10];
		bool		nulls[10];

		values[0] = CStringGetTextDatum(copy->key.shard_id);
		nulls[0] = false;
		/* reachable: its last answer is later than its last failure */
		nulls[1] = copy->last_success == 0 && copy->last_error_at == 0;
		values[1] = BoolGetDatum(copy->last_success > copy->last_error_at);
		values[2] = timestamp_or_null(copy->last_success, &nulls[2]);
		values[3] = CStringGetTextDatum(copy->last_error);
		nulls[3] = copy->last_error_at == 0;
		values[4] = timestamp_or_null(copy->last_error_at, &nulls[4]);
		put_counters(&copy->c, &values[5], &nulls[5]);
		values[9] = timestamp_or_null(copy->c.since, &nulls[9]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * tenant_router.tenant_stats_data(): every tenant of this database with an
 * entry: tenant_id, statements, rows, errors, total_time (ms),
 * last_statement_at, stats_since.
 */
Datum
tenant_router_tenant_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	StatsTenantEntry *entry;
	StatsTenantEntry *copies;
	TimestampTz *lasts;
	long		size;
	int			n = 0;

	InitMaterializedSRF(fcinfo, 0);

	/* copied out under the partition locks, as in tenant_router_shard_stats */
	lock_all(&tenant_table, LW_SHARED);
	size = Max(tenant_table.max - *tenant_table.nfree, 1);
	copies = palloc(sizeof(StatsTenantEntry) * size);
	lasts = palloc(sizeof(TimestampTz) * size);
	hash_seq_init(&status, tenant_table.hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&entry->c.mutex);
		copies[n] = *entry;
		lasts[n] = tenant_table.used[entry->c.slot];
		SpinLockRelease(&entry->c.mutex);
		n++;
	}
	unlock_all(&tenant_table);

	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7];

		values[0] = Int64GetDatum(copies[i].key.tenant);
		nulls[0] = false;
		put_counters(&copies[i].c, &values[1], &nulls[1]);
		values[5] = timestamp_or_null(lasts[i], &nulls[5]);
		values[6] = timestamp_or_null(copies[i].c.since, &nulls[6]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
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

	lock_all(&tenant_table, LW_EXCLUSIVE);
	hash_seq_init(&status, tenant_table.hash);
	while ((tenant = hash_seq_search(&status)) != NULL)
		if (tenant->key.dbid == MyDatabaseId)
			table_remove(&tenant_table, tenant);
	unlock_all(&tenant_table);

	lock_all(&shard_table, LW_SHARED);
	hash_seq_init(&status, shard_table.hash);
	while ((shard = hash_seq_search(&status)) != NULL)
	{
		if (shard->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&shard->c.mutex);
		shard->c.statements = shard->c.rows = shard->c.errors = shard->c.time_us = 0;
		shard->c.since = now;
		SpinLockRelease(&shard->c.mutex);
	}
	unlock_all(&shard_table);
	PG_RETURN_VOID();
}
