/*-------------------------------------------------------------------------
 *
 * deadlock.c
 *	  The distributed deadlock detector: a background worker that finds
 *	  the cycles of lock waits spanning shards, which no server's own
 *	  deadlock detector sees whole, and breaks each by failing one
 *	  transaction of this coordinator with deadlock_detected (40P01).
 *
 * Every tenant_router.deadlock_check_interval, if a backend of this
 * coordinator is waiting for something outside it (wait event Extension:
 * tenant_router's waits for a shard), the detector reads the lock waits of
 * every shard database (one query each, all at once, bounded by a timeout;
 * a shard that cannot be reached is left out and tried again 10 s later)
 * and those of the coordinator, and builds the graph of waits.  Its nodes
 * are coordinator transactions, known on the shards by the names of their
 * sessions (remote_deadlock.c), whichever coordinator runs them, and the
 * shard sessions of no coordinator transaction (a psql session, an
 * autocommit statement); its edges are "waits for", each with its place: a
 * shard database, or this coordinator.
 *
 * A cycle whose edges all have one place is that server's own deadlock, and
 * its own detector breaks it; the others are found here, in two rounds,
 * each looking at the transactions that wait for a shard, youngest first
 * (latest start, then node, pid, local xid), and taking as a
 * victim each that is on a cycle of at least two places in the graph
 * without the victims taken before:
 *   1. with the shards' edges only: every coordinator reading the same
 *      shards sees the same edges and takes the same victims, and each
 *      fails only its own, so a cycle between the transactions of several
 *      coordinators loses exactly one;
 *   2. then, for this coordinator's transactions only, with its own lock
 *      waits too: those cycles only it can see.
 * A victim is failed once two looks in a row have taken it (waits move on:
 * what is still a cycle a whole interval later is one), and only if its
 * backend still runs that transaction and waits for a shard.  A cycle through
 * the lock waits of two coordinators is seen by neither and not broken.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tenant_router/connection.h"
#include "tenant_router/deadlock.h"
#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"
#include "tenant_router/remote_deadlock.h"
#include "tenant_router/worker.h"

#define DETECTOR_NAME "tenant_router deadlock detector"
/* the detector's own wait for a shard to connect, at most */
#define DETECTOR_CONNECT_TIMEOUT_S 2
/* a shard that could not be reached is tried again after */
#define RETRY_UNREACHABLE_MS 10000
/* the shards' answers are waited for at most the interval, within these bounds */
#define QUERY_TIMEOUT_MIN_MS 1000
#define QUERY_TIMEOUT_MAX_MS 5000
/* the detector sleeps this long while it is turned off */
#define OFF_WAIT_MS 60000

#define PLACE_COORDINATOR (-1)

/* a shard database: the shards that share a DSN */
typedef struct ShardGroup
{
	char	   *dsn;
	char	   *label;			/* its first shard, named in messages */
	ShardConn  *sc;				/* NULL: not reached this time */
} ShardGroup;

/* a node of the graph: a coordinator transaction, or another shard session */
typedef struct WaitNodeKey
{
	bool		is_xact;
	RemoteXactId xact;			/* is_xact */
	int			group;			/* !is_xact: the session's shard database */
	int			pid;			/* !is_xact: its pid there (0: a prepared transaction) */
} WaitNodeKey;

typedef struct WaitEdge
{
	int			to;
	int			place;			/* a shard group, or PLACE_COORDINATOR */
} WaitEdge;

typedef struct WaitNode
{
	WaitNodeKey key;
	int			self;			/* its number */
	List	   *out;			/* WaitEdges: what it waits for */
	bool		on_shard;		/* it waits for a shard */
	bool		removed;		/* taken as a victim */
} WaitNode;

typedef struct NodeEntry
{
	WaitNodeKey key;
	int			node;
} NodeEntry;

typedef struct WaitGraph
{
	List	   *groups;			/* ShardGroups, numbered from 0 */
	List	   *nodes;			/* WaitNodes */
	HTAB	   *index;			/* WaitNodeKey -> node number */
	int			nedges;
} WaitGraph;

/* a victim taken this time, and the cycle that made it one */
typedef struct Victim
{
	RemoteXactId id;
	char	   *detail;
} Victim;

/* a shard that could not be reached, and when to try it again */
typedef struct Unreachable
{
	char	   *dsn;
	TimestampTz retry_at;
} Unreachable;

static List *unreachable = NIL; /* Unreachables, in TopMemoryContext */
static List *last_victims = NIL;	/* RemoteXactIds of this coordinator taken
									 * last time, in TopMemoryContext */

/* DeadlockDetectorInit registers the detector; called from _PG_init. */
void
DeadlockDetectorInit(void)
{
	WorkerRegister("TenantRouterDeadlockMain", DETECTOR_NAME);
}

/*
 * The graph.
 */

static int
node_of(WaitGraph *graph, const WaitNodeKey *key)
{
	NodeEntry  *entry;
	bool		found;

	entry = hash_search(graph->index, key, HASH_ENTER, &found);
	if (!found)
	{
		WaitNode   *node = palloc0(sizeof(WaitNode));

		node->key = *key;
		node->self = list_length(graph->nodes);
		graph->nodes = lappend(graph->nodes, node);
		entry->node = node->self;
	}
	return entry->node;
}

static WaitNode *
node_at(WaitGraph *graph, int n)
{
	return list_nth(graph->nodes, n);
}

static void
add_edge(WaitGraph *graph, const WaitNodeKey *waiter, const WaitNodeKey *blocker, int place)
{
	int			from = node_of(graph, waiter);
	int			to = node_of(graph, blocker);
	WaitNode   *node = node_at(graph, from);
	ListCell   *lc;
	WaitEdge   *edge;

	if (from == to)
		return;
	foreach(lc, node->out)
	{
		edge = lfirst(lc);
		if (edge->to == to && edge->place == place)
			return;
	}
	edge = palloc(sizeof(WaitEdge));
	edge->to = to;
	edge->place = place;
	node->out = lappend(node->out, edge);
	if (place != PLACE_COORDINATOR && node->key.is_xact)
		node->on_shard = true;
	graph->nedges++;
}

/* shard_session_key returns the node of a session seen on shard group */
static WaitNodeKey
shard_session_key(int group, const char *pid, const char *name)
{
	WaitNodeKey key;

	memset(&key, 0, sizeof(key));
	if (name != NULL && RemoteParseSessionName(name, &key.xact) == REMOTE_SESSION_XACT)
		key.is_xact = true;
	else
	{
		memset(&key, 0, sizeof(key));
		key.group = group;
		key.pid = pg_strtoint32(pid);
	}
	return key;
}

/* add_shard_waits adds the waits a shard database reported (RemoteLockWaits) */
static void
add_shard_waits(WaitGraph *graph, int group, PGresult *res)
{
	int			r;

	for (r = 0; r < PQntuples(res); r++)
	{
		WaitNodeKey waiter;
		WaitNodeKey blocker;

		if (PQgetisnull(res, r, REMOTE_WAIT_WAITER_PID) ||
			PQgetisnull(res, r, REMOTE_WAIT_BLOCKER_PID))
			continue;
		waiter = shard_session_key(group, PQgetvalue(res, r, REMOTE_WAIT_WAITER_PID),
								   PQgetisnull(res, r, REMOTE_WAIT_WAITER_NAME) ? NULL :
								   PQgetvalue(res, r, REMOTE_WAIT_WAITER_NAME));
		blocker = shard_session_key(group, PQgetvalue(res, r, REMOTE_WAIT_BLOCKER_PID),
									PQgetisnull(res, r, REMOTE_WAIT_BLOCKER_NAME) ? NULL :
									PQgetvalue(res, r, REMOTE_WAIT_BLOCKER_NAME));
		add_edge(graph, &waiter, &blocker, group);
	}
}

/* local_key returns the node of a backend of this coordinator */
static WaitNodeKey
local_key(int pid, TimestampTz xact_start)
{
	WaitNodeKey key;

	memset(&key, 0, sizeof(key));
	key.is_xact = true;
	key.xact = RemoteLocalXactId(pid, xact_start);
	return key;
}

/*
 * add_local_waits adds this coordinator's own lock waits, read with SPI
 * (each waiting backend, the start of its transaction, each backend
 * blocking it and the start of that one's).
 */
static void
add_local_waits(WaitGraph *graph)
{
	uint64		r;

	if (SPI_execute("SELECT w.pid, w.xact_start, bp.pid, b.xact_start "
					"FROM pg_catalog.pg_stat_activity w "
					"CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(w.pid)) AS bp(pid) "
					"LEFT JOIN pg_catalog.pg_stat_activity b ON b.pid OPERATOR(pg_catalog.=) bp.pid "
					"WHERE w.wait_event_type OPERATOR(pg_catalog.=) 'Lock'", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not read the coordinator's lock waits");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		nulls[4];
		Datum		values[4];
		int			i;
		WaitNodeKey waiter;
		WaitNodeKey blocker;

		for (i = 0; i < 4; i++)
			values[i] = SPI_getbinval(tuple, desc, i + 1, &nulls[i]);
		/* a blocker outside any transaction is a prepared transaction (pid 0) */
		if (nulls[0] || nulls[1] || nulls[2] || nulls[3])
			continue;
		waiter = local_key(DatumGetInt32(values[0]), DatumGetTimestampTz(values[1]));
		blocker = local_key(DatumGetInt32(values[2]), DatumGetTimestampTz(values[3]));
		if (waiter.xact.lxid == InvalidLocalTransactionId ||
			blocker.xact.lxid == InvalidLocalTransactionId)
			continue;
		add_edge(graph, &waiter, &blocker, PLACE_COORDINATOR);
	}
}

/*
 * Cycles.
 */

/*
 * younger_first orders transactions by age, youngest first: latest start,
 * then the largest node, pid and local xid (any order that
 * every coordinator computes alike).
 */
static int
younger_first(const ListCell *a, const ListCell *b)
{
	const RemoteXactId *x = &((WaitNode *) lfirst(a))->key.xact;
	const RemoteXactId *y = &((WaitNode *) lfirst(b))->key.xact;

	if (x->start_ms != y->start_ms)
		return x->start_ms > y->start_ms ? -1 : 1;
	if (x->node != y->node)
		return x->node > y->node ? -1 : 1;
	if (x->pid != y->pid)
		return x->pid > y->pid ? -1 : 1;
	if (x->lxid != y->lxid)
		return x->lxid > y->lxid ? -1 : 1;
	return 0;
}

static bool
is_mine(const WaitNode *node)
{
	return node->key.is_xact && node->key.xact.node == OriginId();
}

/* describe_node names a node in a victim's message */
static char *
describe_node(WaitGraph *graph, const WaitNode *node)
{
	if (node->key.is_xact && is_mine(node))
		return psprintf("process %d", node->key.xact.pid);
	if (node->key.is_xact)
		return psprintf("process %d of coordinator " UINT64_FORMAT,
						node->key.xact.pid, node->key.xact.node);
	if (node->key.pid == 0)
		return psprintf("a prepared transaction on shard \"%s\"",
						((ShardGroup *) list_nth(graph->groups, node->key.group))->label);
	return psprintf("session %d of shard \"%s\"", node->key.pid,
					((ShardGroup *) list_nth(graph->groups, node->key.group))->label);
}

static char *
describe_place(WaitGraph *graph, int place)
{
	if (place == PLACE_COORDINATOR)
		return pstrdup("on the coordinator");
	return psprintf("on shard \"%s\"", ((ShardGroup *) list_nth(graph->groups, place))->label);
}

/*
 * find_cycle looks for a cycle of waits through node v, over edges of at
 * least two places (with coordinator, the coordinator's edges may be among
 * them), avoiding the nodes removed; if it finds one it returns the message
 * that describes it, else NULL.  A breadth-first search for each place of
 * v's first edge, over states (node, whether an edge of another place was
 * taken), finds one if there is one.
 */
static char *
find_cycle(WaitGraph *graph, int v, bool coordinator)
{
	int			nnodes = list_length(graph->nodes);
	int		   *parent = palloc(sizeof(int) * 2 * nnodes);
	int		   *via = palloc(sizeof(int) * 2 * nnodes);
	int		   *queue = palloc(sizeof(int) * 2 * nnodes);
	ListCell   *first;
	char	   *result = NULL;

	foreach(first, node_at(graph, v)->out)
	{
		int			place0 = ((WaitEdge *) lfirst(first))->place;
		int			head = 0;
		int			tail = 0;
		int			goal = -1;
		int			s;

		if (place0 == PLACE_COORDINATOR && !coordinator)
			continue;
		for (s = 0; s < 2 * nnodes; s++)
			parent[s] = -2;		/* not reached */
		parent[2 * v] = -1;
		queue[tail++] = 2 * v;
		while (head < tail && goal < 0)
		{
			int			state = queue[head++];
			int			n = state / 2;
			bool		mixed = (state % 2) == 1;
			ListCell   *lc;

			foreach(lc, node_at(graph, n)->out)
			{
				WaitEdge   *edge = lfirst(lc);
				int			next;

				if (edge->place == PLACE_COORDINATOR && !coordinator)
					continue;
				if (n == v && edge->place != place0)
					continue;	/* the first edge has place0 */
				if (node_at(graph, edge->to)->removed)
					continue;
				next = 2 * edge->to + ((mixed || edge->place != place0) ? 1 : 0);
				if (parent[next] != -2)
					continue;
				parent[next] = state;
				via[next] = edge->place;
				if (next == 2 * v + 1)
				{
					goal = next;
					break;
				}
				if (edge->to != v)
					queue[tail++] = next;
			}
		}
		if (goal >= 0)
		{
			List	   *steps = NIL;
			StringInfoData buf;
			ListCell   *lc;

			/* back from v to v: each state with the edge that reached it */
			for (s = goal; parent[s] != -1; s = parent[s])
				steps = lcons_int(s, steps);
			initStringInfo(&buf);
			foreach(lc, steps)
			{
				int			to_state = lfirst_int(lc);
				int			from_state = parent[to_state];
				char	   *from = describe_node(graph, node_at(graph, from_state / 2));

				from[0] = pg_toupper((unsigned char) from[0]);
				appendStringInfo(&buf, "%s%s waits %s for %s.", buf.len > 0 ? "\n" : "",
								 from, describe_place(graph, via[to_state]),
								 describe_node(graph, node_at(graph, to_state / 2)));
			}
			result = buf.data;
			break;
		}
	}
	pfree(parent);
	pfree(via);
	pfree(queue);
	return result;
}

/*
 * take_victims runs one round: the transactions that wait for a shard (with
 * coordinator, this coordinator's only), youngest first, each taken if it is
 * on a cycle (find_cycle) in the graph without the victims taken before it.
 */
static List *
take_victims(WaitGraph *graph, List *victims, bool coordinator)
{
	List	   *candidates = NIL;
	ListCell   *lc;

	foreach(lc, graph->nodes)
	{
		WaitNode   *node = lfirst(lc);

		if (node->key.is_xact && node->on_shard && !node->removed &&
			(!coordinator || is_mine(node)))
			candidates = lappend(candidates, node);
	}
	list_sort(candidates, younger_first);
	foreach(lc, candidates)
	{
		WaitNode   *node = lfirst(lc);
		char	   *detail = find_cycle(graph, node->self, coordinator);
		Victim	   *victim;

		if (detail == NULL)
			continue;
		node->removed = true;
		victim = palloc(sizeof(Victim));
		victim->id = node->key.xact;
		victim->detail = detail;
		victims = lappend(victims, victim);
	}
	list_free(candidates);
	return victims;
}

/*
 * The looks.
 */

static Unreachable *
unreachable_entry(const char *dsn)
{
	ListCell   *lc;

	foreach(lc, unreachable)
		if (strcmp(((Unreachable *) lfirst(lc))->dsn, dsn) == 0)
			return lfirst(lc);
	return NULL;
}

/*
 * forget_unreachable forgets the shards that are no longer in the catalog
 * (or, with group, that one shard database, reached again).
 */
static void
forget_unreachable(List *groups, ShardGroup *reached)
{
	ListCell   *lc;

	foreach(lc, unreachable)
	{
		Unreachable *u = lfirst(lc);
		bool		keep = false;
		ListCell   *g;

		foreach(g, groups)
			if (strcmp(((ShardGroup *) lfirst(g))->dsn, u->dsn) == 0)
				keep = true;
		if (reached != NULL && strcmp(reached->dsn, u->dsn) == 0)
		{
			ereport(LOG,
					(errmsg("tenant_router deadlock detector: shard \"%s\" can be reached again",
							reached->label)));
			keep = false;
		}
		if (!keep)
		{
			pfree(u->dsn);
			pfree(u);
			unreachable = foreach_delete_current(unreachable, lc);
		}
	}
}

/*
 * connect_group returns the detector's connection to a shard database, or
 * NULL if it cannot be reached (connecting waits at most
 * DETECTOR_CONNECT_TIMEOUT_S; the next try is RETRY_UNREACHABLE_MS later).
 * It runs in a subtransaction, so that a failure is only that shard's.
 */
static ShardConn *
connect_group(List *groups, ShardGroup *group, TimestampTz now)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Unreachable *u = unreachable_entry(group->dsn);
	ShardConn  *volatile sc = NULL;

	if (u != NULL && now < u->retry_at)
		return NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		sc = ShardConnGet(group->label, group->dsn);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		sc = NULL;
		if (u == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			u = palloc(sizeof(Unreachable));
			u->dsn = pstrdup(group->dsn);
			unreachable = lappend(unreachable, u);
			MemoryContextSwitchTo(old);
			ereport(LOG,
					(errmsg("tenant_router deadlock detector: cannot reach shard \"%s\"; its lock waits are left out until it can be reached",
							group->label),
					 errdetail_internal("%s%s%s", edata->message,
										edata->detail ? ": " : "",
										edata->detail ? edata->detail : "")));
		}
		u->retry_at = TimestampTzPlusMilliseconds(now, RETRY_UNREACHABLE_MS);
	}
	PG_END_TRY();
	if (sc != NULL && u != NULL)
		forget_unreachable(groups, group);
	return sc;
}

/* extension_ready tells whether the worker's database has the catalog */
static bool
extension_ready(void)
{
	Oid			nsp = get_namespace_oid("tenant_router", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("shard", nsp));
}

/*
 * someone_waits tells whether a backend of this coordinator waits for
 * something outside it (wait event Extension, tenant_router's waits for a
 * shard; the waits of the detector, the topology worker, the health worker
 * and online operations' workers aside: none runs a coordinator
 * transaction that a shard session could wait for in a cycle):
 * without one, no transaction of this coordinator can be a victim.
 */
static bool
someone_waits(void)
{
	bool		isnull;

	if (SPI_execute("SELECT pg_catalog.count(*) > 0 FROM pg_catalog.pg_stat_activity "
					"WHERE wait_event_type OPERATOR(pg_catalog.=) 'Extension' "
					"AND wait_event OPERATOR(pg_catalog.=) 'Extension' "
					"AND backend_type OPERATOR(pg_catalog.<>) ALL "
					"('{tenant_router topology worker,tenant_router health worker,"
					"tenant_router operation," DETECTOR_NAME "}'::pg_catalog.text[])",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tenant_router: could not read pg_stat_activity");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* read_groups returns the shard databases of the catalog, in cxt */
static List *
read_groups(MemoryContext cxt)
{
	List	   *groups = NIL;
	uint64		i;

	if (SPI_execute("SELECT dsn, pg_catalog.min(shard_id) FROM tenant_router.shard "
					"GROUP BY dsn ORDER BY 2", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not read tenant_router.shard");
	for (i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		ShardGroup *group = palloc0(sizeof(ShardGroup));

		group->dsn = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		group->label = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		groups = lappend(groups, group);
		MemoryContextSwitchTo(old);
	}
	return groups;
}

static bool
seen_last_time(const RemoteXactId *id)
{
	ListCell   *lc;

	foreach(lc, last_victims)
		if (RemoteXactIdEqual(lfirst(lc), id))
			return true;
	return false;
}

/*
 * fail_victims fails the victims of this coordinator that the last look
 * took too, and remembers those it took for the next look.
 */
static void
fail_victims(List *victims)
{
	List	   *mine = NIL;
	ListCell   *lc;

	foreach(lc, victims)
	{
		Victim	   *victim = lfirst(lc);
		RemoteXactId *id;
		MemoryContext old;

		if (victim->id.node != OriginId())
			continue;
		if (!seen_last_time(&victim->id))
			ereport(DEBUG1,
					(errmsg("tenant_router deadlock detector: process %d is on a cycle of waits; it fails if the next look sees it again",
							victim->id.pid),
					 errdetail_internal("%s", victim->detail)));
		else if (RemoteDeadlockFail(victim->id.pid, victim->id.lxid, victim->detail))
			ereport(LOG,
					(errmsg("tenant_router deadlock detector: deadlock across shards, failing the transaction of process %d",
							victim->id.pid),
					 errdetail_internal("%s", victim->detail)));
		old = MemoryContextSwitchTo(TopMemoryContext);
		id = palloc(sizeof(RemoteXactId));
		*id = victim->id;
		mine = lappend(mine, id);
		MemoryContextSwitchTo(old);
	}
	list_free_deep(last_victims);
	last_victims = mine;
}

/*
 * look reads the waits of the coordinator and of every shard database it
 * can reach, and fails the victims it finds (see the file's header), in cxt.
 */
static void
look(MemoryContext cxt)
{
	WaitGraph	graph;
	HASHCTL		ctl;
	bool		waiting;
	TimestampTz now = GetCurrentTimestamp();
	int			timeout_ms;
	int			n = 0;
	ShardConn **scs;
	int		   *group_of;
	PGresult  **results;
	List	   *victims;
	ListCell   *lc;
	int			i;

	memset(&graph, 0, sizeof(graph));
	ctl.keysize = sizeof(WaitNodeKey);
	ctl.entrysize = sizeof(NodeEntry);
	ctl.hcxt = cxt;
	graph.index = hash_create("tenant_router wait graph", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	waiting = extension_ready() && someone_waits();
	if (waiting)
	{
		MemoryContext spi = CurrentMemoryContext;

		graph.groups = read_groups(cxt);
		MemoryContextSwitchTo(cxt);
		add_local_waits(&graph);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	PopActiveSnapshot();
	MemoryContextSwitchTo(cxt);
	if (!waiting)
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
		list_free_deep(last_victims);
		last_victims = NIL;
		return;
	}

	/* every reachable shard database at once */
	forget_unreachable(graph.groups, NULL);
	scs = palloc(sizeof(ShardConn *) * (list_length(graph.groups) + 1));
	group_of = palloc(sizeof(int) * (list_length(graph.groups) + 1));
	foreach(lc, graph.groups)
	{
		ShardGroup *group = lfirst(lc);

		group->sc = connect_group(graph.groups, group, now);
		if (group->sc != NULL)
		{
			group_of[n] = foreach_current_index(lc);
			scs[n++] = group->sc;
		}
	}
	results = palloc(sizeof(PGresult *) * (n + 1));
	timeout_ms = Min(Max(TenantRouterDeadlockCheckInterval, QUERY_TIMEOUT_MIN_MS),
					 QUERY_TIMEOUT_MAX_MS);
	RemoteLockWaits(n, scs, timeout_ms, results);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	for (i = 0; i < n; i++)
	{
		if (results[i] == NULL)
			continue;
		add_shard_waits(&graph, group_of[i], results[i]);
		PQclear(results[i]);
	}
	elog(DEBUG2, "tenant_router deadlock detector: %d of %d shard databases read, %d waits in %ld ms",
		 n, list_length(graph.groups), graph.nedges,
		 (long) TimestampDifferenceMilliseconds(now, GetCurrentTimestamp()));

	victims = take_victims(&graph, NIL, false);
	victims = take_victims(&graph, victims, true);
	fail_victims(victims);
}

/*
 * look_safely looks once; an error is logged and the next look comes at
 * its time.
 */
static void
look_safely(MemoryContext cxt)
{
	PG_TRY();
	{
		look(cxt);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		ereport(LOG,
				(errmsg("tenant_router deadlock detector: a look failed, the next one is at its time: %s",
						edata->message)));
	}
	PG_END_TRY();
}

/*
 * TenantRouterDeadlockMain is the detector: a look every
 * tenant_router.deadlock_check_interval (none while it is 0), interrupts
 * and reloads in between, the memory of each look reset after it.
 */
void
TenantRouterDeadlockMain(Datum main_arg)
{
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(TenantRouterDatabase, NULL, 0);
	pgstat_report_appname(DETECTOR_NAME);

	/* an unreachable shard must not hold the looks up for long */
	if (TenantRouterConnectTimeout > DETECTOR_CONNECT_TIMEOUT_S)
		SetConfigOption("tenant_router.connect_timeout", CppAsString2(DETECTOR_CONNECT_TIMEOUT_S),
						PGC_SUSET, PGC_S_OVERRIDE);

	cxt = AllocSetContextCreate(TopMemoryContext, "tenant_router deadlock detector",
								ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		TimestampTz start;
		long		wait_ms = OFF_WAIT_MS;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(cxt);
		start = GetCurrentTimestamp();
		if (TenantRouterDeadlockCheckInterval > 0)
		{
			look_safely(cxt);
			wait_ms = TenantRouterDeadlockCheckInterval -
				TimestampDifferenceMilliseconds(start, GetCurrentTimestamp());
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		MemoryContextReset(cxt);
	}
}
