/*-------------------------------------------------------------------------
 *
 * operation.c
 *	  The machinery of every online topology operation: the rows of some
 *	  tenants move from a source shard to a target while writes go on, in
 *	  named phases that share one state (Operation), and a failure undoes
 *	  exactly what those phases made.
 *
 * The moving tenants are copied by PostgreSQL's logical replication: a
 * publication on the source filtered to them (PG15 row filters; replica
 * identity FULL so that UPDATE and DELETE pass the filter), a replication
 * slot made on its own, and a subscription on the target that copies the
 * rows and then streams every change.  Writes go on meanwhile.
 *
 * The switch never locks a table.  With the publication, the source gets a
 * fence (shard_ddl.c): triggers on the rows of the moving tenants only, that
 * wait on a shared advisory lock and read the fence's state.  The switch, a
 * transaction of its own on the source, takes that lock exclusively (waiting
 * for the writes of moving tenants in flight, holding back those that come),
 * marks the fence switched, and commits once a marker row committed after
 * the lock has reached the target: the target has every change of the
 * moving tenants, and from that commit on the source refuses them (40001,
 * which the coordinator routes again once the catalog has flipped).  Writes
 * to the other tenants never wait for it.  If the lock cannot be had within
 * SWITCH_LOCK_MS (a writer idle in its transaction), the switch rolls back,
 * catches up and tries again, for at most tenant_router.shard_lock_timeout
 * in all.  Then, each table in a short transaction of its own, the source's
 * range constraint is narrowed to what it keeps (NOT VALID: the moved rows
 * are still there), its moved rows are guarded, and the fence's row
 * triggers go: from then on a write for a moved tenant can only fail there
 * (23514, or 40001 for an UPDATE or DELETE), never land, and a coordinator
 * that applies the catalog change finds the source's constraint as the new
 * topology has it.  Then the catalog flips; the clean-up stops the
 * replication and drops the rest of the fence.
 *
 * The moved rows are not deleted by the operation: if the flip failed
 * after the source committed, they would be gone from where routing still
 * points.  The kind's flip queues the source in
 * tenant_router.pending_cleanup instead, and shard_cleanup() (run by the
 * worker, or by hand) deletes them and validates the constraint.  Until then
 * they are invisible: every scan reads a shard only within what it owns.
 *
 * A new database as target also gets a copy of every reference table, made
 * with its logical tables (their foreign keys may need it) and made equal
 * again in the flip's transaction, with the reference writes of this
 * coordinator locked out (reference_table.c).
 *
 * Phases, in order: prepare (connections, wal_level, an empty target),
 * create target tables, publish (fence, replica identities, publication),
 * subscribe, copy, catch up, switch (and narrowing), flip catalog, clean up.  Each runs in
 * a transaction of its own in the operation's worker (operation_worker.c),
 * which records the phase reached before it starts; a step that works on
 * the tables one at a time commits after each, so that it never holds the
 * locks of two tables at once (a client's transaction writing both could
 * deadlock with it).  Undo, after a failure before the flip or from that
 * record after a crash: roll back the switch if open, drop the
 * subscription, the slot, the publication, the markers and the fence,
 * restore replica identities, give the source its constraint back, and
 * empty the target of what was copied.
 * Past the flip, the recovery finishes the clean-up instead
 * (OperationFinish).  Every step of the undo and of the clean-up is safe to
 * repeat and to run on what does not exist.
 *
 * Requirements: wal_level = logical on the source; the target's DSN user may
 * create subscriptions (superuser in PostgreSQL 15); the target reaches the
 * source with the source's DSN.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/guc.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/outbox.h"
#include "tenant_router/reference_catalog.h"
#include "tenant_router/reference_table.h"
#include "tenant_router/shard_ddl.h"

/* how often an operation looks at the replication's progress */
#define POLL_MS 50
/* and during the switch, while writes of the moving tenants wait */
#define SWITCH_POLL_MS 2
/* how long the switch waits for its marker on the target, holding the writes back */
#define SWITCH_MARKER_MS 200
/* longest wait of one attempt of the switch for the writes in flight */
#define SWITCH_LOCK_MS 100
/* the advisory lock of an operation's fence on the source: this plus its id */
#define FENCE_LOCK_BASE INT64CONST(0x7466000000000000)
/* how long a publication publishes nothing but the marker before it is dropped */
#define PUBLICATION_DROP_MS 100
/* how long the copy waits before its progress is recorded */
#define PROGRESS_MS 1000
/* how long dropping a replication slot waits for its sender to let go */
#define SLOT_RELEASE_MS 10000

/*
 * Settings of the target's session while it runs the CREATE SUBSCRIPTION
 * that holds the source's DSN: no log line may show the statement.
 */
static const char *const quiet_logging[][2] = {
	{"log_statement", "none"},
	{"log_min_error_statement", "panic"},
	{"log_min_duration_statement", "-1"},
	{"log_min_duration_sample", "-1"},
	{"log_transaction_sample_rate", "0"},
};

static bool op_prepare(Operation *op);
static bool op_create_target_references(Operation *op);
static bool op_create_target_tables(Operation *op);
static bool op_read_identities(Operation *op);
static bool op_fence(Operation *op);
static bool op_fence_tables(Operation *op);
static bool op_publish(Operation *op);
static bool op_subscribe(Operation *op);
static bool op_copy(Operation *op);
static bool op_catch_up(Operation *op);
static bool op_switch(Operation *op);
static bool op_narrow_tables(Operation *op);
static bool op_flip(Operation *op);
static bool op_stop_replication(Operation *op);
static bool op_clean_up_tables(Operation *op);
static bool op_clean_up(Operation *op);

/*
 * The phases in order.  What a step may make on the shards is covered by
 * the undo from the moment the phase is recorded: "publish" reads the
 * replica identities first, so that the record holds how to restore them
 * before any is changed.
 */
const OperationStep OperationSteps[] = {
	{"prepare", NULL, op_prepare},
	{"create target tables", NULL, op_create_target_references},
	{"create target tables", "tables", op_create_target_tables},
	{"publish", NULL, op_read_identities},
	{"publish", "fence", op_fence},
	{"publish", "fence tables", op_fence_tables},
	{"publish", "publication", op_publish},
	{"subscribe", NULL, op_subscribe},
	{"copy", NULL, op_copy},
	{"catch up", NULL, op_catch_up},
	{"switch", NULL, op_switch},
	{"switch", "narrow", op_narrow_tables},
	{"flip catalog", NULL, op_flip},
	{"clean up", NULL, op_stop_replication},
	{"clean up", "tables", op_clean_up_tables},
	{"clean up", "end", op_clean_up},
};
const int	OperationStepCount = lengthof(OperationSteps);

/*
 * OperationKeepShard returns a copy of row that lives as long as op, with
 * its pins (loaded from the catalog if they are not).
 */
ShardRow *
OperationKeepShard(Operation *op, const ShardRow *row)
{
	MemoryContext old = MemoryContextSwitchTo(op->cxt);
	ShardRow   *copy = palloc(sizeof(ShardRow));
	ListCell   *lc;

	*copy = *row;
	copy->shard_id = pstrdup(row->shard_id);
	copy->dsn = pstrdup(row->dsn);
	copy->state = row->state ? pstrdup(row->state) : NULL;
	copy->db_identity = row->db_identity ? pstrdup(row->db_identity) : NULL;
	if (!row->pins_known)
		CatalogLoadPins(copy, NULL);
	else
	{
		copy->pinned = NIL;
		copy->pinned_away = NIL;
		foreach(lc, row->pinned)
			copy->pinned = lappend(copy->pinned, memcpy(palloc(sizeof(int64)), lfirst(lc),
														sizeof(int64)));
		foreach(lc, row->pinned_away)
			copy->pinned_away = lappend(copy->pinned_away, memcpy(palloc(sizeof(int64)), lfirst(lc),
																  sizeof(int64)));
	}
	MemoryContextSwitchTo(old);
	return copy;
}

/*
 * OperationQueueCompleted queues event (SHARD_SPLIT_COMPLETED, ...), the
 * notification that the operation is done; in the catalog change's
 * transaction.
 */
void
OperationQueueCompleted(Operation *op, const char *event, int64 version)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"operation_id\": " INT64_FORMAT ", \"shard_id\": ", op->op_id);
	escape_json(&buf, op->source->shard_id);
	appendStringInfoString(&buf, ", \"target_shard_id\": ");
	escape_json(&buf, op->target->shard_id);
	appendStringInfo(&buf, ", \"rows_copied\": " INT64_FORMAT "}", op->rows_copied);
	OutboxQueue(event, buf.data, version);
}

/*
 * OperationMovingSql returns the condition on tenant_column selecting the
 * tenants that move.
 */
char *
OperationMovingSql(Operation *op, const char *tenant_column)
{
	return ShardOwnsSql(op->moving, tenant_column);
}

/* remote_true tells whether a boolean query on the shard returns true */
static bool
remote_true(ShardConn *sc, const char *sql)
{
	char	   *value = ShardRemoteValue(sc, sql, NULL);

	return value != NULL && strcmp(value, "t") == 0;
}

/* best_effort runs a statement, logging its error instead of raising it */
static void
best_effort(ShardConn *sc, const char *sql)
{
	MemoryContext old = CurrentMemoryContext;

	PG_TRY();
	{
		ShardRemoteCommand(sc, sql);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("could not undo a step of an online operation on shard \"%s\": %s",
						ShardConnLabel(sc), edata->message),
				 errdetail_internal("The statement was: %s", sql)));
	}
	PG_END_TRY();
}

/* fence_key returns the advisory lock of the operation's fence on the source */
static int64
fence_key(Operation *op)
{
	return FENCE_LOCK_BASE + op->op_id;
}

/*
 * poll_wait waits ms milliseconds, answering interrupts and, unless
 * undoing, the end of the session that asked for the operation.
 */
static void
poll_wait(Operation *op, int ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (!op->undoing)
		OperationCheckCaller(op);
}

/* count_copied counts the rows of the moving tenants the target has now */
static void
count_copied(Operation *op)
{
	ListCell   *lc;
	int64		rows = 0;

	foreach(lc, op->tables)
	{
		LogicalTableRow *table = lfirst(lc);
		char	   *qualname = ShardTableName(table->relid);
		char	   *count;

		if (qualname == NULL)
			continue;
		count = ShardRemoteValue(op->target_conn,
								 psprintf("SELECT pg_catalog.count(*) FROM %s WHERE %s", qualname,
										  OperationMovingSql(op, quote_identifier(table->tenant_column))),
								 NULL);
		rows += count ? strtoi64(count, NULL, 10) : 0;
	}
	op->rows_copied = rows;
}

/*
 * subscription_failed raises an error if the subscription reports errors.
 */
static void
check_subscription(Operation *op)
{
	char	   *failed = ShardRemoteValue(op->target_conn,
										  psprintf("SELECT sync_error_count + apply_error_count "
												   "FROM pg_catalog.pg_stat_subscription_stats "
												   "WHERE subname = %s", quote_literal_cstr(op->name)),
										  NULL);

	if (failed != NULL && strcmp(failed, "0") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication to shard \"%s\" failed", op->target->shard_id),
				 errhint("The log of the target shard says why (subscription %s).", op->name)));
}

/*
 * wait_for_subscription waits until condition (a boolean query on the
 * target) is true, looking every poll_ms, failing if the subscription
 * reports errors; false once deadline (0: none) has passed.
 */
static bool
wait_for_subscription(Operation *op, const char *condition, int poll_ms, TimestampTz deadline)
{
	for (;;)
	{
		if (remote_true(op->target_conn, condition))
			return true;
		check_subscription(op);
		if (deadline != 0 && GetCurrentTimestamp() >= deadline)
			return false;
		poll_wait(op, poll_ms);
	}
}

/*
 * send_marker commits a marker row on the source and waits for it on the
 * target, looking every poll_ms: every change committed on the source
 * before it is there too.  Each marker has a token of its own.
 * send_marker_until gives up at deadline, returning false.
 */
static bool
send_marker_until(Operation *op, int poll_ms, TimestampTz deadline)
{
	int			token = ++op->markers_sent;

	ShardRemoteCommand(op->source_conn, psprintf("INSERT INTO %s VALUES (%d)", op->marker, token));
	return wait_for_subscription(op, psprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE token = %d)",
											  op->marker, token), poll_ms, deadline);
}

static void
send_marker(Operation *op, int poll_ms)
{
	(void) send_marker_until(op, poll_ms, 0);
}

/*
 * drop_slot drops the operation's replication slot on the source, waiting
 * for the WAL sender of a dropped subscription to let it go.
 */
static void
drop_slot(Operation *op)
{
	char	   *sql = psprintf("SELECT pg_catalog.pg_drop_replication_slot(slot_name) "
							   "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s AND NOT active",
							   quote_literal_cstr(op->name));
	char	   *exists = psprintf("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots "
								  "WHERE slot_name = %s)", quote_literal_cstr(op->name));
	int			waited = 0;

	for (;;)
	{
		ShardRemoteCommand(op->source_conn, sql);
		if (!remote_true(op->source_conn, exists))
			break;
		if (waited >= SLOT_RELEASE_MS)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("replication slot %s on shard \"%s\" is still in use", op->name,
							op->source->shard_id),
					 errhint("Drop it on the shard with pg_drop_replication_slot() once it is inactive.")));
		poll_wait(op, POLL_MS);
		waited += POLL_MS;
	}
	op->slot_created = false;
}

/*
 * drop_subscription drops the subscription (leaving the slot to drop_slot)
 * and the target's marker table, if they exist.
 */
static void
drop_subscription(Operation *op)
{
	if (remote_true(op->target_conn,
					psprintf("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription "
							 "WHERE subname = %s)", quote_literal_cstr(op->name))))
	{
		ShardRemoteCommand(op->target_conn, psprintf("ALTER SUBSCRIPTION %s DISABLE", op->name));
		ShardRemoteCommand(op->target_conn,
						   psprintf("ALTER SUBSCRIPTION %s SET (slot_name = NONE)", op->name));
		ShardRemoteCommand(op->target_conn, psprintf("DROP SUBSCRIPTION %s", op->name));
	}
	ShardRemoteCommand(op->target_conn, psprintf("DROP TABLE IF EXISTS %s", op->marker));
	op->subscribed = false;
}

/*
 * OperationConnect opens the operation's connections: the source's (for
 * statements that commit on their own, and a second one for the switch's
 * transaction) and the target's.
 */
void
OperationConnect(Operation *op)
{
	op->marker = MemoryContextStrdup(op->cxt, psprintf("public.%s_marker", op->name));
	op->target_conn = ShardConnGet(op->target->shard_id, op->target->dsn);
	op->source_conn = ShardConnGet(op->source->shard_id, op->source->dsn);
	op->switch_conn = ShardConnGetSide(op->source->shard_id, op->source->dsn);
}

/*
 * op_prepare connects to both shards and checks what the replication needs:
 * wal_level = logical on the source, and a target without rows of the
 * moving tenants.
 */
static bool
op_prepare(Operation *op)
{
	char	   *wal_level;
	ListCell   *lc;

	OperationConnect(op);
	wal_level = ShardRemoteValue(op->source_conn, "SHOW wal_level", NULL);
	if (wal_level == NULL || strcmp(wal_level, "logical") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("shard \"%s\" cannot be the source of a %s: its wal_level is %s",
						op->source->shard_id, op->operation, wal_level ? wal_level : "unknown"),
				 errhint("Set wal_level = logical on the shard and restart it; online operations copy rows by logical replication.")));

	foreach(lc, op->tables)
	{
		LogicalTableRow *table = lfirst(lc);
		char	   *qualname = ShardTableName(table->relid);
		char	   *rows;

		if (qualname == NULL ||
			!remote_true(op->target_conn,
						 psprintf("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
								  quote_literal_cstr(qualname))))
			continue;
		rows = op->target_before == NULL ? "" :
			psprintf(" WHERE %s", OperationMovingSql(op, quote_identifier(table->tenant_column)));
		if (remote_true(op->target_conn,
						psprintf("SELECT EXISTS (SELECT 1 FROM %s%s)", qualname, rows)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s on shard \"%s\" already has rows%s", qualname,
							op->target->shard_id,
							op->target_before ? " of the moving tenants" : ""),
					 errhint("%s", op->target_before ?
							 "The moving rows are copied into the shard; delete those it has first." :
							 "A new shard's tables receive the moving rows and must be empty; empty them on the shard first.")));
	}
	return true;
}

/*
 * one_table runs fn for the next table of the operation, in the step's
 * transaction, and tells whether every table is done: a step that calls it
 * is called again, in a transaction of its own, for the next one.
 */
static bool
one_table(Operation *op, void (*fn) (Operation *op, LogicalTableRow *table))
{
	if (op->next_table < list_length(op->tables))
	{
		fn(op, list_nth(op->tables, op->next_table));
		op->next_table++;
	}
	if (op->next_table < list_length(op->tables))
		return false;
	op->next_table = 0;
	return true;
}

/*
 * op_create_target_references gives a new database as target a copy of
 * every reference table, with their rows, before its logical tables (whose
 * foreign keys may need them); a target in the catalog has them already.
 */
static bool
op_create_target_references(Operation *op)
{
	op->target_changed = true;
	if (op->target_before == NULL)
		ReferenceTablesSyncShard(op->target_conn, op->target->shard_id, op->target->dsn);
	return true;
}

/*
 * op_create_target_tables creates the logical tables on the target (or
 * checks them), with the constraint of what the target will own, which
 * admits the moving rows.
 */
static bool
op_create_target_tables(Operation *op)
{
	ListCell   *lc;

	op->target_changed = true;
	foreach(lc, op->tables)
		ShardSyncTable(op->target_conn, lfirst(lc), op->target, true);
	return true;
}

/*
 * op_read_identities notes how to restore the replica identity of each
 * table that is not FULL on the source: the record keeps it before
 * op_publish changes any.
 */
static bool
op_read_identities(Operation *op)
{
	ListCell   *lc;

	op->identity_restore = NIL;
	op->identity_full = NIL;
	foreach(lc, op->tables)
	{
		LogicalTableRow *table = lfirst(lc);
		char	   *qualname = ShardTableName(table->relid);
		char	   *identity;

		if (qualname == NULL)
			continue;
		identity = ShardRemoteValue(op->source_conn,
									"SELECT CASE c.relreplident WHEN 'd' THEN 'DEFAULT' "
									"WHEN 'n' THEN 'NOTHING' WHEN 'f' THEN NULL "
									"ELSE 'USING INDEX ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(i.relname) END "
									"FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_index x "
									"ON x.indrelid = c.oid AND x.indisreplident "
									"LEFT JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid "
									"WHERE c.oid = pg_catalog.to_regclass($1)", qualname);
		if (identity != NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(op->cxt);

			op->identity_restore = lappend(op->identity_restore,
										   psprintf("ALTER TABLE %s REPLICA IDENTITY %s",
													qualname, identity));
			op->identity_full = lappend(op->identity_full,
										psprintf("ALTER TABLE %s REPLICA IDENTITY FULL", qualname));
			MemoryContextSwitchTo(old);
		}
	}
	return true;
}

/* op_fence makes the source's marker table and the operation's fence */
static bool
op_fence(Operation *op)
{
	op->published = true;
	op->fenced = true;
	ShardRemoteCommand(op->source_conn, psprintf("CREATE TABLE %s (token bigint)", op->marker));
	ShardFenceCreate(op->source_conn, op->name, fence_key(op));
	return true;
}

/*
 * fence_one_table makes the table's replica identity FULL if it is not (so
 * that the row filter sees the tenant of every UPDATE and DELETE) and puts
 * the fence's triggers on it, in one transaction on the source.
 */
static void
fence_one_table(Operation *op, LogicalTableRow *table)
{
	char	   *qualname = ShardTableName(table->relid);
	char	   *full;
	ListCell   *lc;

	if (qualname == NULL)
		return;
	full = psprintf("ALTER TABLE %s REPLICA IDENTITY FULL", qualname);
	ShardConnBegin(op->source_conn, SHARD_WRITE);
	foreach(lc, op->identity_full)
		if (strcmp(lfirst(lc), full) == 0)
			ShardRemoteDdl(op->source_conn, full);
	ShardFenceTable(op->source_conn, op->name, table, op->moving);
}

static bool
op_fence_tables(Operation *op)
{
	return one_table(op, fence_one_table);
}

/*
 * op_publish publishes the moving rows on the source, with the marker
 * table.
 */
static bool
op_publish(Operation *op)
{
	StringInfoData sql;
	ListCell   *lc;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE PUBLICATION %s FOR TABLE %s", op->name, op->marker);
	foreach(lc, op->tables)
	{
		LogicalTableRow *table = lfirst(lc);
		char	   *qualname = ShardTableName(table->relid);

		if (qualname != NULL)
			appendStringInfo(&sql, ", %s WHERE %s", qualname,
							 OperationMovingSql(op, quote_identifier(table->tenant_column)));
	}
	ShardRemoteCommand(op->source_conn, sql.data);
	return true;
}

/*
 * op_subscribe makes the replication slot on the source on its own (made by
 * CREATE SUBSCRIPTION, a slot on the same server as the subscription would
 * wait for the subscription's own transaction), then the subscription,
 * which starts copying.
 */
static bool
op_subscribe(Operation *op)
{
	op->slot_created = true;
	op->subscribed = true;
	op->target_filled = true;
	ShardRemoteCommand(op->source_conn,
					   psprintf("SELECT pg_catalog.pg_create_logical_replication_slot(%s, 'pgoutput')",
								quote_literal_cstr(op->name)));
	ShardRemoteCommand(op->target_conn, psprintf("CREATE TABLE %s (token bigint)", op->marker));

	/* the source's DSN: never in an error, nor in the target's log */
	for (int i = 0; i < lengthof(quiet_logging); i++)
		ShardRemoteCommand(op->target_conn, psprintf("SET %s = %s", quiet_logging[i][0],
													 quiet_logging[i][1]));
	PG_TRY();
	{
		PQclear(ShardConnExecSecret(op->target_conn,
									psprintf("CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s "
											 "WITH (create_slot = false, slot_name = %s)",
											 op->name, quote_literal_cstr(op->source->dsn),
											 op->name, quote_literal_cstr(op->name))));
	}
	PG_FINALLY();
	{
		for (int i = 0; i < lengthof(quiet_logging); i++)
			best_effort(op->target_conn, psprintf("RESET %s", quiet_logging[i][0]));
	}
	PG_END_TRY();
	return true;
}

/*
 * op_copy waits for the copy of the rows there already, counting the rows
 * of each table whose copy is done; it returns after a while without
 * waiting for the end, so that the progress is recorded.
 */
static bool
op_copy(Operation *op)
{
	char	   *states = psprintf("SELECT pg_catalog.array_agg(c.relname ORDER BY c.relname) "
								  "FILTER (WHERE r.srsubstate <> 'r') IS NULL, "
								  "pg_catalog.count(*) FILTER (WHERE r.srsubstate = 'r') "
								  "FROM pg_catalog.pg_subscription_rel r "
								  "JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid "
								  "JOIN pg_catalog.pg_class c ON c.oid = r.srrelid "
								  "WHERE s.subname = %s", quote_literal_cstr(op->name));
	int			waited = 0;

	for (;;)
	{
		PGresult   *res = ShardConnExec(op->target_conn, states, 0, NULL, NULL);
		bool		done = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		int			ready = atoi(PQgetvalue(res, 0, 1));

		PQclear(res);
		if (ready > op->copied_tables || done)
		{
			count_copied(op);
			op->copied_tables = ready;
		}
		if (done)
			return true;
		check_subscription(op);
		if (waited >= PROGRESS_MS)
			return false;
		poll_wait(op, POLL_MS);
		waited += POLL_MS;
	}
}

/*
 * op_catch_up waits until the target has the changes made on the source
 * until now (a marker row sent after them has arrived), so that the switch,
 * which holds back writes of the moving tenants, waits little; and counts
 * the rows copied.
 */
static bool
op_catch_up(Operation *op)
{
	send_marker(op, POLL_MS);
	count_copied(op);
	return true;
}

/*
 * op_switch makes the source give the moving tenants away: in a
 * transaction of its own it closes the fence (waiting for their writes in
 * flight, holding back the others), waits for a marker committed after that
 * on the target, and commits.  An attempt that cannot lock the fence within
 * SWITCH_LOCK_MS rolls back and returns false, to catch up and try again,
 * until tenant_router.shard_lock_timeout is spent.
 */
static bool
op_switch(Operation *op)
{
	PGresult   *res;
	bool		committed;
	int			timeout = SWITCH_LOCK_MS;

	if (TenantRouterShardLockTimeout > 0)
		timeout = Min(timeout, Max(TenantRouterShardLockTimeout - op->switch_waited, 1));
	op->switching = true;
	ShardRemoteCommand(op->switch_conn, "START TRANSACTION");
	if (!ShardFenceClose(op->switch_conn, op->name, fence_key(op), timeout))
	{
		ShardRemoteCommand(op->switch_conn, "ROLLBACK");
		op->switching = false;
		op->switch_waited += timeout;
		if (TenantRouterShardLockTimeout > 0 && op->switch_waited >= TenantRouterShardLockTimeout)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("the switch of the %s of shard \"%s\" could not hold back the writes of the moving tenants",
							op->operation, op->source->shard_id),
					 errdetail("A transaction on the shard that wrote rows of a moving tenant did not end within tenant_router.shard_lock_timeout (%d ms).",
							   TenantRouterShardLockTimeout),
					 errhint("End the sessions idle in a transaction on the shard (pg_stat_activity there), then retry.")));
		send_marker(op, SWITCH_POLL_MS);
		return false;
	}

	/*
	 * The moving tenants' writers wait while the fence is held: the marker
	 * gets SWITCH_MARKER_MS, then the attempt rolls back, catches up and
	 * tries again (a target whose apply worker is held up by a lock).
	 */
	if (!send_marker_until(op, SWITCH_POLL_MS,
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SWITCH_MARKER_MS)))
	{
		ShardRemoteCommand(op->switch_conn, "ROLLBACK");
		op->switching = false;
		op->switch_waited += timeout + SWITCH_MARKER_MS;
		if (TenantRouterShardLockTimeout > 0 && op->switch_waited >= TenantRouterShardLockTimeout)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("the switch of the %s of shard \"%s\" could not hold back the writes of the moving tenants",
							op->operation, op->source->shard_id),
					 errdetail("The target did not catch up with the source within %d ms while the writes were held back, again and again for tenant_router.shard_lock_timeout (%d ms).",
							   SWITCH_MARKER_MS, TenantRouterShardLockTimeout),
					 errhint("Check what holds up the subscription on the target (pg_stat_subscription, pg_locks there), then retry.")));
		send_marker(op, SWITCH_POLL_MS);
		return false;
	}
	res = ShardConnExec(op->switch_conn, "COMMIT", 0, NULL, NULL);
	committed = strcmp(PQcmdStatus(res), "COMMIT") == 0;
	PQclear(res);
	op->switching = false;
	if (!committed)
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_ROLLBACK),
				 errmsg("the switch on shard \"%s\" was rolled back", op->source->shard_id)));
	return true;
}

/*
 * narrow_table makes the source's table refuse the moved tenants by itself,
 * in one transaction that locks it once and sends the rest in one pipeline
 * with its commit: the range constraint says what the source keeps (NOT
 * VALID: the moved rows are still there), its moved rows are guarded, and
 * the fence's row triggers go (its TRUNCATE trigger stays until the
 * replication is gone).
 */
static void
narrow_table(Operation *op, LogicalTableRow *table)
{
	char	   *qualname = ShardTableName(table->relid);

	if (qualname == NULL)
		return;
	op->narrowed = true;
	ShardConnBegin(op->source_conn, SHARD_WRITE);
	/* the table locked once, its changes in one pipeline with the commit */
	ShardDdlBatchBegin(op->source_conn, qualname);
	PG_TRY();
	{
		ShardFenceUntable(op->source_conn, op->name, table, true, false);
		ShardSetOwnership(op->source_conn, table, op->source_after, false);
		ShardGuardMovedRows(op->source_conn, table, op->source_after);
	}
	PG_FINALLY();
	{
		ShardDdlBatchEnd();
	}
	PG_END_TRY();
}

static bool
op_narrow_tables(Operation *op)
{
	return one_table(op, narrow_table);
}

/*
 * op_flip changes the catalog (the kind's flip) and records it, at once, in
 * its place in the order of topology changes (commands/ordered_change.c); a
 * new database as target gets the reference tables' rows written since its
 * copy was made, in the same transaction (with the reference writes of this
 * coordinator held back until it commits).
 */
static bool
op_flip(Operation *op)
{
	if (op->target_before == NULL)
		ReferenceTablesRefresh(op->target_conn, op->source_conn);
	SPI_connect();
	OrderedFlip(op);
	SPI_finish();
	return true;
}

/*
 * drop_publication drops the operation's publication on the source, if
 * there, while the source's tables are being written.  A write that builds
 * its table's list of publications reads which publications have the table,
 * then looks each up: a publication dropped in between fails the write
 * ("cache lookup failed for publication", seen under load).  So the
 * publication is first made to publish nothing but the marker table (a lock
 * that lets writes go on), and dropped a moment later, once the writes that
 * read the old list have looked it up.
 */
static void
drop_publication(Operation *op)
{
	if (!remote_true(op->source_conn,
					 psprintf("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s)",
							  quote_literal_cstr(op->name))))
		return;
	ShardRemoteCommand(op->source_conn,
					   psprintf("ALTER PUBLICATION %s SET TABLE %s", op->name, op->marker));
	poll_wait(op, PUBLICATION_DROP_MS);
	ShardRemoteCommand(op->source_conn, psprintf("DROP PUBLICATION IF EXISTS %s", op->name));
}

/*
 * op_stop_replication drops the subscription (and the target's marker
 * table), then the publication and the source's marker table: after the
 * switch they carry nothing any more.
 */
static bool
op_stop_replication(Operation *op)
{
	drop_subscription(op);
	drop_publication(op);
	ShardRemoteCommand(op->source_conn, psprintf("DROP TABLE IF EXISTS %s", op->marker));
	return true;
}

/*
 * clean_up_table drops the fence's TRUNCATE trigger from the source's table
 * and restores its replica identity (the publication is gone), each in a
 * transaction of its own.
 */
static void
clean_up_table(Operation *op, LogicalTableRow *table)
{
	char	   *qualname = ShardTableName(table->relid);
	char	   *restore;
	ListCell   *lc;

	if (qualname == NULL)
		return;
	restore = psprintf("ALTER TABLE %s REPLICA IDENTITY ", qualname);
	ShardFenceUntable(op->source_conn, op->name, table, false, true);
	foreach(lc, op->identity_restore)
		if (strncmp(lfirst(lc), restore, strlen(restore)) == 0)
			ShardRemoteDdl(op->source_conn, lfirst(lc));
}

static bool
op_clean_up_tables(Operation *op)
{
	return one_table(op, clean_up_table);
}

/*
 * op_clean_up drops the rest of the fence, and the replication slot, which
 * nothing uses any more.
 */
static bool
op_clean_up(Operation *op)
{
	ShardFenceDrop(op->source_conn, op->name);
	drop_slot(op);
	op->published = false;
	op->fenced = false;
	return true;
}

/*
 * OperationFinish finishes the clean-up of an operation whose catalog
 * change committed (its recovery), in the caller's transaction: the steps
 * of the phase "clean up".
 */
void
OperationFinish(Operation *op)
{
	ListCell   *lc;

	op->undoing = true;
	op_stop_replication(op);
	foreach(lc, op->tables)
		clean_up_table(op, lfirst(lc));
	op_clean_up(op);
	op->undoing = false;
}

/* undo_try runs one part of the undo; its error is logged and the undo goes on */
static void
undo_try(Operation *op, void (*part) (Operation *op), const char *what)
{
	MemoryContext old = CurrentMemoryContext;

	PG_TRY();
	{
		part(op);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("could not %s for operation %s: %s", what, op->name, edata->message),
				 errhint("The operation stays unfinished; tenant_router.operation_recover(), which the worker runs every 10 s, tries again.")));
		op->undo_failed = true;
	}
	PG_END_TRY();
}

static void
undo_switch(Operation *op)
{
	ShardRemoteCommand(op->switch_conn, "ROLLBACK");
	op->switching = false;
}

/*
 * undo_publication drops the publication and the source's marker table,
 * then restores the replica identities (a row filter on a column outside
 * the identity would make UPDATEs fail while the publication exists).
 */
static void
undo_publication(Operation *op)
{
	ListCell   *lc;

	drop_publication(op);
	ShardRemoteCommand(op->source_conn, psprintf("DROP TABLE IF EXISTS %s", op->marker));
	foreach(lc, op->identity_restore)
		ShardRemoteDdl(op->source_conn, lfirst(lc));
	op->published = false;
}

/* open_fence lets the moving tenants' writes go on on the source at once */
static void
open_fence(Operation *op)
{
	ShardFenceOpen(op->source_conn, op->name);
}

/* undo_fence drops the fence: the moving tenants' writes go on on the source */
static void
undo_fence(Operation *op)
{
	ListCell   *lc;

	foreach(lc, op->tables)
		ShardFenceUntable(op->source_conn, op->name, lfirst(lc), true, true);
	ShardFenceDrop(op->source_conn, op->name);
	op->fenced = false;
}

/*
 * undo_narrowing gives the source back the range constraint of what it
 * owned, and drops the guard of its moved rows
 */
static void
undo_narrowing(Operation *op)
{
	ListCell   *lc;

	foreach(lc, op->tables)
		ShardRestoreOwnership(op->source_conn, lfirst(lc), op->source);
	op->narrowed = false;
}

/*
 * empty_new_target empties a new database as target: its logical tables
 * and its copies of the reference tables, in one statement (foreign keys
 * between them).
 */
static void
empty_new_target(Operation *op)
{
	StringInfoData sql;
	List	   *tables = NIL;
	ListCell   *lc;

	foreach(lc, op->tables)
		tables = lappend(tables, ShardTableName(((LogicalTableRow *) lfirst(lc))->relid));
	foreach(lc, CatalogReferenceTables())
		tables = lappend(tables, ShardTableName(((ReferenceTableRow *) lfirst(lc))->relid));
	initStringInfo(&sql);
	foreach(lc, tables)
	{
		char	   *qualname = lfirst(lc);

		if (qualname != NULL &&
			remote_true(op->target_conn,
						psprintf("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
								 quote_literal_cstr(qualname))))
			appendStringInfo(&sql, "%s%s", sql.len ? ", " : "TRUNCATE ", qualname);
	}
	if (sql.len > 0)
		ShardRemoteCommand(op->target_conn, sql.data);
}

/*
 * undo_target takes away from the target what was copied, and its
 * constraint; a new database is emptied.
 */
static void
undo_target(Operation *op)
{
	ListCell   *lc;

	if (op->target_before == NULL)
		empty_new_target(op);
	else
		foreach(lc, op->tables)
		{
			LogicalTableRow *table = lfirst(lc);

			if (ShardTableName(table->relid) == NULL)
				continue;
			if (op->target_filled)
				ShardDeleteNotOwned(op->target_conn, table, op->target_before);
			ShardSetOwnership(op->target_conn, table, op->target_before, true);
		}
	op->target_filled = false;
	op->target_changed = false;
}

/*
 * OperationUndo removes what the phases made, in the reverse order, each
 * part on its own: one that fails is logged (op->undo_failed: the
 * operation stays unfinished for the recovery) and the others still run.
 */
void
OperationUndo(Operation *op)
{
	op->undoing = true;
	op->undo_failed = false;
	/* first: the switch's locks would block the rest */
	if (op->switching)
		undo_try(op, undo_switch, "roll back the switch");
	/* then the moving tenants' writes go on, whatever else fails */
	if (op->fenced)
		undo_try(op, open_fence, "open the fence");
	if (op->subscribed)
		undo_try(op, drop_subscription, "drop the subscription");
	if (op->slot_created)
		undo_try(op, drop_slot, "drop the replication slot");
	if (op->published)
		undo_try(op, undo_publication, "drop the publication");
	if (op->narrowed)
		undo_try(op, undo_narrowing, "give the source its range constraint back");
	if (op->fenced)
		undo_try(op, undo_fence, "drop the fence");
	if (op->target_filled || op->target_changed)
		undo_try(op, undo_target, "empty the target");
	op->undoing = false;
}
