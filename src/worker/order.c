/*-------------------------------------------------------------------------
 *
 * order.c
 *	  How the topology worker follows the one order of topology changes
 *	  kept on Redis (metadata/topology_log.c): it joins the log, puts the
 *	  events that were only PUBLISHed in it, applies its entries in order,
 *	  and keeps the snapshot next to it.
 *
 * Joining.  The catalog records the epoch of the log it follows and the
 * last entry it holds (tenant_router.worker_state).  On every connection
 * the worker reads the snapshot: none at all (an empty Redis: a new
 * deployment, or one restarted without persistence) and it seeds Redis
 * with its own topology, under a new epoch; a snapshot of another epoch
 * (this coordinator is new, or Redis lost its state and another
 * coordinator seeded it first) and it adopts it; the same epoch, but the
 * entries after its position trimmed away (it was away long enough) and it
 * adopts it too; the same epoch, but the stream ends before its position
 * (Redis lost its last entries: an AOF written every second, a failover)
 * and it starts a new log from its own topology (repair_lost_end), which
 * the others adopt.  Then it applies the entries after its position.
 * Every few seconds, and whenever a backend waits for it, it looks again.
 *
 * The channel.  A message is either the copy of a stream entry (a
 * coordinator's ordered change, a control plane's XADD and PUBLISH) or an
 * event only PUBLISHed, which the worker orders (RAW_SCRIPT: once, however
 * many coordinators receive it).  To tell them apart, the worker reads the
 * stream before it looks at the messages that arrived and remembers, by
 * the hash of their text, the entries whose copy may still come (those
 * added after it subscribed), oldest first; a message matching one is its
 * copy.  Either way the worker knows the entry of each message, which
 * names the next message's place for RAW_SCRIPT.  Entries the worker put
 * in the order itself are not remembered: their message has been seen.
 * Nothing is applied from the channel: everything is applied from the
 * stream, in its order (events.c), so every coordinator applies the same
 * entries in the same order.
 *
 * Applying.  The worker reads the entries after the catalog's position, at
 * most a pass's worth between two looks at the channel, so that a long log
 * does not keep messages waiting.  The stream is only trimmed from its
 * start, by the snapshot's writer, up to the snapshot before the last: each
 * read asks for the entry at the position too, and if it is gone while the
 * snapshot is further, entries after it may be gone too, so the worker
 * adopts the snapshot instead.
 *
 * The snapshot.  Once a second at most, a worker whose catalog is further
 * in the order than the snapshot writes its topology there (the script
 * only moves it forward, whoever writes it: at one position every
 * coordinator has the same topology).  A worker at the snapshot's position
 * whose topology differs from it says so in the server log.  A worker
 * whose catalog diverged -- an entry came out here otherwise than where it
 * was first applied (events.c: applied at the same moment, and decided
 * otherwise) -- writes none, and adopts the first snapshot written
 * elsewhere that holds that entry; if none comes in DIVERGED_WAIT_MS, no
 * other coordinator follows the log, and it keeps its own topology.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "tenant_router/events.h"
#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"
#include "tenant_router/order.h"
#include "tenant_router/redis.h"
#include "tenant_router/snapshot.h"
#include "tenant_router/topology_log.h"

/* a stream entry id as text, with room to spare */
#define ID_LEN 48
/* entries remembered whose channel copy may come */
#define REMEMBERED_MAX 65536
/* entries read at a time to remember them */
#define READ_BATCH 1000
/* entries read at a time to apply them */
#define APPLY_BATCH 100
/*
 * how long a worker whose catalog diverged waits for a snapshot written
 * elsewhere that holds the entry, before it keeps its own topology
 */
#define DIVERGED_WAIT_MS 60000
/* how often a worker further in the order than the snapshot writes it */
#define SNAPSHOT_EVERY_MS 1000

/* an entry remembered: its text's hash and id, until its copy comes */
typedef struct Remembered
{
	uint64		hash;
	uint64		ms;				/* its id */
	uint64		seq;
	bool		live;			/* its copy has not come */
} Remembered;

/* the remembered entries of one hash, oldest first (slots of the ring) */
typedef struct HashSlots
{
	uint64		hash;
	List	   *slots;
} HashSlots;

static MemoryContext order_cxt = NULL;
static Remembered *ring = NULL;
static int	ring_head = 0;
static int	ring_len = 0;
static HTAB *by_hash = NULL;
static char read_cursor[ID_LEN];	/* the last entry read to be remembered */
static char prev_entry[ID_LEN];	/* the entry of the last channel message; "" unknown */
static List *ordered_here = NIL;	/* entries ordered by this worker, not read since */
static TimestampTz last_snapshot_write = 0;
static char healed[ID_LEN + 40];	/* the snapshot last found to differ */

static uint64
text_hash(const char *text, int len)
{
	return hash_bytes_extended((const unsigned char *) text, len, 0);
}

/*
 * OrderReset forgets what the worker knew of the channel: after a new
 * subscription, only entries added from then on may get a copy.
 */
static void
order_reset(void)
{
	HASHCTL		ctl;
	uint64		since = RedisSubscribedAt();

	if (order_cxt == NULL)
	{
		order_cxt = AllocSetContextCreate(TopMemoryContext, "tenant_router order",
										  ALLOCSET_DEFAULT_SIZES);
		ring = MemoryContextAlloc(TopMemoryContext, sizeof(Remembered) * REMEMBERED_MAX);
	}
	MemoryContextReset(order_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(HashSlots);
	ctl.hcxt = order_cxt;
	by_hash = hash_create("tenant_router remembered entries", 1024, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ring_head = ring_len = 0;
	ordered_here = NIL;
	prev_entry[0] = '\0';
	if (since > 0)
		snprintf(read_cursor, ID_LEN, UINT64_FORMAT "-" UINT64_FORMAT, since - 1, PG_UINT64_MAX);
	else
		strlcpy(read_cursor, "0-0", ID_LEN);
}

/* forget_slot drops the oldest remembered entry of its hash */
static void
forget_slot(uint64 hash)
{
	HashSlots  *hs = hash_search(by_hash, &hash, HASH_FIND, NULL);

	if (hs == NULL)
		return;
	hs->slots = list_delete_first(hs->slots);
	if (hs->slots == NIL)
		hash_search(by_hash, &hash, HASH_REMOVE, NULL);
}

/* remember an entry whose copy may come; the oldest goes when there are too many */
static void
remember(uint64 hash, const char *id)
{
	int			slot;
	bool		found;
	HashSlots  *hs;
	MemoryContext old;

	if (ring_len == REMEMBERED_MAX)
	{
		Remembered *oldest = &ring[ring_head];

		if (oldest->live)
			forget_slot(oldest->hash);
		ring_head = (ring_head + 1) % REMEMBERED_MAX;
		ring_len--;
	}
	slot = (ring_head + ring_len) % REMEMBERED_MAX;
	ring[slot].hash = hash;
	if (!StreamIdParse(id, &ring[slot].ms, &ring[slot].seq))
		ring[slot].ms = ring[slot].seq = 0;
	ring[slot].live = true;
	ring_len++;

	old = MemoryContextSwitchTo(order_cxt);
	hs = hash_search(by_hash, &hash, HASH_ENTER, &found);
	if (!found)
		hs->slots = NIL;
	hs->slots = lappend_int(hs->slots, slot);
	MemoryContextSwitchTo(old);
}

/* match tells whether a message is the copy of an entry, and then which (id) */
static bool
match(uint64 hash, char *id)
{
	HashSlots  *hs = hash_search(by_hash, &hash, HASH_FIND, NULL);
	int			slot;

	if (hs == NULL)
		return false;
	slot = linitial_int(hs->slots);
	ring[slot].live = false;
	forget_slot(hash);
	snprintf(id, ID_LEN, UINT64_FORMAT "-" UINT64_FORMAT, ring[slot].ms, ring[slot].seq);
	return true;
}

/* ordered_here_take tells whether the worker ordered entry id itself, forgetting it */
static bool
ordered_here_take(const char *id)
{
	ListCell   *lc;

	foreach(lc, ordered_here)
	{
		char	   *here = lfirst(lc);

		if (strcmp(here, id) == 0)
		{
			ordered_here = foreach_delete_current(ordered_here, lc);
			pfree(here);
			return true;
		}
	}
	return false;
}

/*
 * remember_new_entries reads the stream after the last entry read and
 * remembers each entry but those the worker ordered itself.
 */
static bool
remember_new_entries(char **why)
{
	for (;;)
	{
		List	   *entries = NIL;
		ListCell   *lc;
		int			n;

		if (!TopologyLogRead(read_cursor, false, READ_BATCH, &entries, why))
			return false;
		foreach(lc, entries)
		{
			RedisEvent *e = lfirst(lc);

			if (!ordered_here_take(e->id) && e->event != NULL)
				remember(text_hash(e->event, e->len), e->id);
			strlcpy(read_cursor, e->id, ID_LEN);
		}
		n = list_length(entries);
		TopologyLogFreeEvents(entries);
		if (n < READ_BATCH)
			break;
	}

	/* entries ordered here that the reading has passed are not coming */
	{
		ListCell   *lc;

		foreach(lc, ordered_here)
		{
			char	   *here = lfirst(lc);

			if (StreamIdCompare(here, read_cursor) <= 0)
			{
				ordered_here = foreach_delete_current(ordered_here, lc);
				pfree(here);
			}
		}
	}
	return true;
}

/*
 * OrderMessages puts the channel messages that are not the copy of an
 * entry in the order; applying is OrderCatchUp's.
 */
bool
OrderMessages(List *messages, char **why)
{
	ListCell   *lc;

	if (messages == NIL)
		return true;
	if (!remember_new_entries(why))
		return false;
	foreach(lc, messages)
	{
		RedisEvent *m = lfirst(lc);
		char	   *id;
		MemoryContext old;

		if (match(text_hash(m->event, m->len), prev_entry))
			continue;			/* the copy of an entry */
		if (!TopologyLogOrderRaw(m->event, m->len, prev_entry, &id, why))
			return false;
		strlcpy(prev_entry, id, ID_LEN);
		old = MemoryContextSwitchTo(order_cxt);
		ordered_here = lappend(ordered_here, pstrdup(id));
		MemoryContextSwitchTo(old);
	}
	return true;
}

/*
 * adopt makes the catalog the snapshot on Redis (read whole, at once);
 * why_adopt says why in the server log.
 */
static bool
adopt(const char *why_adopt, char **why)
{
	TopologySnapshot snapshot;
	AdoptCounts counts;

	if (!TopologyLogGetSnapshot(&snapshot, true, why))
		return false;
	if (!snapshot.exists)
		return true;			/* gone meanwhile: the next look seeds it */
	counts = SnapshotAdopt(snapshot.epoch, snapshot.position, snapshot.topology);
	ereport(LOG,
			(errmsg("tenant_router: %s: adopted the topology snapshot of \"%s\" at %s (epoch %s), "
					INT64_FORMAT " catalog rows removed, " INT64_FORMAT " added",
					why_adopt, snapshot.node, snapshot.position, snapshot.epoch,
					counts.removed, counts.added)));
	TopologyLogAdvanced();
	return true;
}

/*
 * position_lost tells whether entries after position may have been trimmed
 * away: the stream is trimmed from its start, up to an older snapshot than
 * the last (snapshot_position), so they may only if position is behind it
 * and its own entry is gone.
 */
static bool
position_lost(const char *position, const char *snapshot_position, bool *lost, char **why)
{
	bool		has = true;

	*lost = false;
	if (strcmp(position, "0-0") == 0 || StreamIdCompare(position, snapshot_position) >= 0)
		return true;
	if (!TopologyLogHasEntry(position, &has, why))
		return false;
	*lost = !has;
	return true;
}

/*
 * repair_lost_end looks whether the log on Redis, of the catalog's epoch,
 * ends before the catalog's position: entries this coordinator applied are
 * gone from it (a Redis restarted from an AOF written every second, or
 * failed over to a replica that lagged), and no change could ever be
 * ordered against this catalog again (the change script appends only at
 * the catalog's position).  Then it starts a new log with this catalog's
 * topology (RESEED_SCRIPT), which every other coordinator adopts, as after
 * an empty Redis; or it adopts the snapshot first if that is further.
 */
static bool
repair_lost_end(char **why)
{
	LocalTopology *local = SnapshotLocal(false);
	LocalTopology *mine;
	char	   *epoch;
	char	   *last;
	char	   *new_epoch;
	char	   *outcome;
	char	   *seeded_at;

	if (local->epoch == NULL || strcmp(local->position, "0-0") == 0)
		return true;
	if (!TopologyLogHead(&epoch, &last, why))
		return false;
	if (strcmp(epoch, local->epoch) != 0 || StreamIdCompare(last, local->position) >= 0)
		return true;
	mine = SnapshotLocal(true);
	if (mine->epoch == NULL || strcmp(mine->epoch, local->epoch) != 0)
		return true;
	new_epoch = TopologyLogNewEpoch();
	if (!TopologyLogReseed(mine->epoch, mine->position, new_epoch, mine->topology, mine->digest,
						   &outcome, &seeded_at, why))
		return false;
	if (strcmp(outcome, "snapshot") == 0)
		return adopt("the topology log on Redis ends before this coordinator's position, and its snapshot is further",
					 why);
	if (strcmp(outcome, "seeded") != 0 || seeded_at == NULL)
		return true;
	SnapshotJoin(new_epoch, seeded_at);
	ereport(WARNING,
			(errmsg("tenant_router: the topology log on Redis ends at %s, before this coordinator's position %s: Redis lost its last entries",
					last, mine->position),
			 errdetail("Started a new topology log (epoch %s) from this coordinator's topology; the other coordinators adopt it.",
					   new_epoch),
			 errhint("Redis lost writes it had acknowledged (a restart from an AOF written every second, or a failover to a replica that lagged); compare tenant_router.shards on the coordinators.")));
	TopologyLogAdvanced();
	return true;
}

/*
 * join_log makes the catalog follow the log on Redis: seeds an empty Redis,
 * adopts the snapshot of another epoch, or of this one when the entries
 * after the catalog's position are gone.
 */
static bool
join_log(char **why)
{
	TopologySnapshot snapshot;
	LocalTopology *local = SnapshotLocal(false);
	bool		lost;

	if (!TopologyLogGetSnapshot(&snapshot, false, why))
		return false;
	if (!snapshot.exists)
	{
		LocalTopology *mine = SnapshotLocal(true);
		char	   *epoch = TopologyLogNewEpoch();
		char	   *seeded_at;

		if (!TopologyLogSeed(epoch, mine->position, mine->topology, mine->digest, &seeded_at,
							 why))
			return false;
		if (seeded_at != NULL)
		{
			SnapshotJoin(epoch, seeded_at);
			ereport(LOG,
					(errmsg("tenant_router: Redis had no topology snapshot: seeded it with this coordinator's topology at %s (epoch %s)",
							seeded_at, epoch)));
			TopologyLogAdvanced();
			return true;
		}
		/* another coordinator seeded it first */
		if (!TopologyLogGetSnapshot(&snapshot, false, why))
			return false;
	}
	if (local->epoch == NULL || strcmp(local->epoch, snapshot.epoch) != 0)
		return adopt(local->epoch == NULL ? "joining the topology log" :
					 "the topology log on Redis is a new one", why);
	if (!position_lost(local->position, snapshot.position, &lost, why))
		return false;
	if (lost)
		return adopt("entries after this coordinator's position were trimmed", why);
	return repair_lost_end(why);
}

/*
 * OrderJoin makes a worker that has just connected follow the log: it
 * forgets what it knew of the channel, then joins (join_log).
 */
bool
OrderJoin(char **why)
{
	order_reset();
	return join_log(why);
}

/*
 * OrderCatchUp applies the entries after the catalog's position, at most
 * about max_entries of them (*more: there may be others).
 */
bool
OrderCatchUp(int max_entries, bool *more, char **why)
{
	MemoryContext cxt = CurrentMemoryContext;
	LocalTopology *local = SnapshotLocal(false);
	char	   *position = local->position;
	int			applied = 0;

	*more = false;
	if (local->epoch == NULL)
		return true;			/* not in a log yet: joining comes first */
	if (!TopologyEventsRecordDecided(why))
		return false;
	for (;;)
	{
		List	   *entries = NIL;
		RedisEvent *first;
		int			n;

		/* the entry at the position too: there, nothing after it is gone */
		if (!TopologyLogRead(position, true, APPLY_BATCH + 1, &entries, why))
			return false;
		first = entries != NIL ? linitial(entries) : NULL;
		if (first != NULL && strcmp(first->id, position) == 0)
			entries = list_delete_first(entries);
		else if (strcmp(position, "0-0") != 0)
		{
			TopologySnapshot snapshot;
			bool		lost;

			if (!TopologyLogGetSnapshot(&snapshot, false, why))
				return false;
			if (!position_lost(position, snapshot.exists ? snapshot.position : "0-0", &lost, why))
				return false;
			if (lost)
			{
				TopologyLogFreeEvents(entries);
				return adopt("entries after this coordinator's position were trimmed", why);
			}
			if (entries == NIL)
			{
				/* the entry at the position is gone, and nothing after it */
				if (applied > 0)
					TopologyLogAdvanced();
				return repair_lost_end(why);
			}
		}
		if (entries == NIL)
			break;
		if (!ApplyTopologyEvents(entries, why))
		{
			TopologyLogFreeEvents(entries);
			return false;
		}
		n = list_length(entries);
		position = MemoryContextStrdup(cxt, ((RedisEvent *) llast(entries))->id);
		TopologyLogFreeEvents(entries);
		applied += n;
		if (n < APPLY_BATCH)
			break;
		if (applied >= max_entries)
		{
			*more = true;
			break;
		}
	}
	if (applied > 0)
		TopologyLogAdvanced();
	return true;
}

/*
 * OrderKeepSnapshot writes the snapshot when the catalog is further in the
 * order and the last write is a second old; with check, it also looks
 * whether the log is still the one the catalog follows (joining it again
 * if not), and whether the catalog matches the snapshot at the same
 * position (saying so if not).  A catalog that diverged (an entry came out
 * here otherwise than where it was first applied) writes no snapshot and
 * adopts the first one written elsewhere that holds that entry.
 */
bool
OrderKeepSnapshot(TimestampTz now, bool check, char **why)
{
	TopologySnapshot snapshot;
	LocalTopology *local;
	TimestampTz diverged_since;
	char	   *diverged = TopologyEventsDiverged(&diverged_since);
	bool		write_due = now >= TimestampTzPlusMilliseconds(last_snapshot_write,
															   SNAPSHOT_EVERY_MS);
	int			cmp;

	if (!check && !write_due && diverged == NULL)
		return true;
	if (!TopologyLogGetSnapshot(&snapshot, false, why))
		return false;
	local = SnapshotLocal(false);
	if (!snapshot.exists || local->epoch == NULL || strcmp(snapshot.epoch, local->epoch) != 0)
		return check ? join_log(why) : true;
	if (diverged != NULL &&
		(StreamIdCompare(snapshot.position, diverged) < 0 ||
		 strcmp(snapshot.node, OriginName()) == 0))
	{
		if (!TimestampDifferenceExceeds(diverged_since, now, DIVERGED_WAIT_MS))
			return true;

		/*
		 * Nobody else wrote a snapshot that holds the entry: no other
		 * coordinator follows the log now.  This catalog is the one in
		 * force; it writes snapshots again, and the log gets trimmed.
		 */
		ereport(WARNING,
				(errmsg("tenant_router: no other coordinator wrote a topology snapshot holding entry %s in %d s: keeping this coordinator's topology",
						diverged, DIVERGED_WAIT_MS / 1000),
				 errhint("Compare tenant_router.shards with what the entry asked for.")));
		TopologyEventsConverged();
		diverged = NULL;
	}
	if (diverged != NULL)
	{
		TopologyEventsConverged();
		return adopt("correcting the catalog", why);
	}
	cmp = StreamIdCompare(local->position, snapshot.position);
	if (cmp > 0 && write_due)
	{
		LocalTopology *mine = SnapshotLocal(true);
		const char *outcome;

		last_snapshot_write = now;
		if (mine->epoch != NULL && strcmp(mine->epoch, snapshot.epoch) == 0 &&
			!TopologyLogPutSnapshot(mine->epoch, mine->position, mine->topology, mine->digest,
									&outcome, why))
			return false;
	}
	else if (cmp == 0 && check && !TenantRouterSingleCoordinator)
	{
		LocalTopology *mine = SnapshotLocal(true);
		char		key[ID_LEN + 40];

		snprintf(key, sizeof(key), "%s %s", snapshot.position, snapshot.digest);
		if (StreamIdCompare(mine->position, snapshot.position) == 0 &&
			strcmp(mine->digest, snapshot.digest) != 0 && strcmp(key, healed) != 0)
		{
			strlcpy(healed, key, sizeof(healed));
			ereport(WARNING,
					(errmsg("tenant_router: this coordinator's topology differs from the snapshot of \"%s\" at the same position %s",
							snapshot.node, snapshot.position),
					 errhint("Compare tenant_router.shards on the coordinators; a coordinator adopts the snapshot when an entry of the log came out differently there than where it was first applied.")));
		}
	}
	return true;
}
