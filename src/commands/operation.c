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
 * rows and then streams every change.  Writes go on meanwhile.  For the
 * switch, the source's tables are locked against writes (EXCLUSIVE: reads
 * go on) in a transaction of their own; a marker row committed after the
 * lock proves, once it arrives on the target, that every earlier change has
 * too.  Still under the lock the source's range constraint is narrowed to
 * what it keeps (NOT VALID: the moved rows are still there) and its moved
 * rows are guarded, so from the moment that transaction commits a write for
 * a moving tenant can only fail there, never land.  Then the catalog flips.
 *
 * The moved rows are not deleted from the source by the operation: if the
 * flip failed after the source committed, they would be gone from where
 * routing still points.  The kind's flip queues the source in
 * tenant_router.pending_cleanup instead, and shard_cleanup() (run by the
 * worker, or by hand) deletes them and validates the constraint.  Until
 * then they are invisible: every scan reads a shard only within what it owns.
 *
 * Phases, in order: prepare (connections, wal_level, an empty target),
 * create target tables, publish, subscribe, copy, catch up, switch, flip
 * catalog, clean up.  Each runs in a transaction of its own in the
 * operation's worker (operation_worker.c), which records the phase reached
 * before it starts.  Undo, after a failure in any of them or from that
 * record after a crash: roll back the switch if open, drop the
 * subscription, the slot, the publication and the markers, restore replica
 * identities, give the source its constraint back if the switch may have
 * committed, and empty the target of what was copied.  Every step of the
 * undo is safe to repeat and to run on what does not exist.
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

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/outbox.h"
#include "tenant_router/shard_ddl.h"

/* how often an operation looks at the replication's progress */
#define POLL_MS 50
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
static bool op_create_target_tables(Operation *op);
static bool op_read_identities(Operation *op);
static bool op_publish(Operation *op);
static bool op_subscribe(Operation *op);
static bool op_copy(Operation *op);
static bool op_catch_up(Operation *op);
static bool op_switch(Operation *op);
static bool op_flip(Operation *op);
static bool op_clean_up(Operation *op);

/*
 * The phases in order.  What a step may make on the shards is covered by
 * the undo from the moment the phase is recorded: "publish" reads the
 * replica identities first, so that the record holds how to restore them
 * before any is changed.
 */
const OperationStep OperationSteps[] = {
	{"prepare", op_prepare},
	{"create target tables", op_create_target_tables},
	{"publish", op_read_identities},
	{"publish", op_publish},
	{"subscribe", op_subscribe},
	{"copy", op_copy},
	{"catch up", op_catch_up},
	{"switch", op_switch},
	{"flip catalog", op_flip},
	{"clean up", op_clean_up},
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

/*
 * poll_wait waits a little, answering interrupts and, unless undoing, the
 * end of the session that asked for the operation.
 */
static void
poll_wait(Operation *op)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 POLL_MS, PG_WAIT_EXTENSION);
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
 * target) is true, failing if the subscription reports errors.
 */
static void
wait_for_subscription(Operation *op, const char *condition)
{
	for (;;)
	{
		if (remote_true(op->target_conn, condition))
			return;
		check_subscription(op);
		poll_wait(op);
	}
}

/*
 * send_marker commits a marker row on the source and waits for it on the
 * target: every change committed on the source before it is there too.
 */
static void
send_marker(Operation *op, int token)
{
	ShardRemoteCommand(op->source_conn, psprintf("INSERT INTO %s VALUES (%d)", op->marker, token));
	wait_for_subscription(op, psprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE token = %d)",
									   op->marker, token));
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
		poll_wait(op);
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

/*
 * op_publish publishes the moving rows on the source: the marker table,
 * replica identity FULL wherever it is not (so that the row filter sees the
 * tenant of every UPDATE and DELETE), and the publication.
 */
static bool
op_publish(Operation *op)
{
	StringInfoData sql;
	ListCell   *lc;

	op->published = true;
	ShardRemoteCommand(op->source_conn, psprintf("CREATE TABLE %s (token bigint)", op->marker));
	foreach(lc, op->identity_full)
		ShardRemoteDdl(op->source_conn, lfirst(lc));

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
		poll_wait(op);
		waited += POLL_MS;
	}
}

/*
 * op_catch_up waits until the target has the changes made on the source
 * until now (a marker row sent after them has arrived), so that the switch,
 * which blocks writes, waits little.
 */
static bool
op_catch_up(Operation *op)
{
	send_marker(op, 1);
	return true;
}

/*
 * op_switch makes the source give the rows away: under a lock against
 * writes, the marker proves the target has every change, the source's
 * constraint narrows to what it keeps and its moved rows are guarded;
 * replication goes; and all of it commits at once.
 */
static bool
op_switch(Operation *op)
{
	StringInfoData sql;
	ListCell   *lc;
	PGresult   *res;
	bool		committed;

	op->switching = true;
	ShardRemoteCommand(op->switch_conn, "START TRANSACTION");
	initStringInfo(&sql);
	foreach(lc, op->tables)
	{
		char	   *qualname = ShardTableName(((LogicalTableRow *) lfirst(lc))->relid);

		if (qualname != NULL)
			appendStringInfo(&sql, "%s%s", sql.len ? ", " : "LOCK TABLE ", qualname);
	}
	if (sql.len > 0)
	{
		appendStringInfoString(&sql, " IN EXCLUSIVE MODE");
		ShardRemoteDdl(op->switch_conn, sql.data);
	}
	send_marker(op, 2);

	/*
	 * The source keeps what source_after owns: from its commit on, an INSERT
	 * of a moved tenant fails there (the CHECK), and so does an UPDATE or
	 * DELETE of a moved row (the guard), until the cleanup deletes them.
	 */
	foreach(lc, op->tables)
	{
		LogicalTableRow *table = lfirst(lc);

		ShardSetOwnership(op->switch_conn, table, op->source_after, false);
		ShardGuardMovedRows(op->switch_conn, table, op->source_after);
	}
	foreach(lc, op->identity_restore)
		ShardRemoteDdl(op->switch_conn, lfirst(lc));
	ShardRemoteCommand(op->switch_conn, psprintf("DROP PUBLICATION %s", op->name));
	ShardRemoteCommand(op->switch_conn, psprintf("DROP TABLE %s", op->marker));
	drop_subscription(op);

	res = ShardConnExec(op->switch_conn, "COMMIT", 0, NULL, NULL);
	committed = strcmp(PQcmdStatus(res), "COMMIT") == 0;
	PQclear(res);
	op->switching = false;
	if (!committed)
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_ROLLBACK),
				 errmsg("the switch on shard \"%s\" was rolled back", op->source->shard_id)));
	op->switched = true;
	op->published = false;
	/* what the target received: the copy and every change streamed since */
	count_copied(op);
	return true;
}

/*
 * op_flip changes the catalog (the kind's flip) and records it, at once, in
 * its place in the order of topology changes (commands/ordered_change.c)
 */
static bool
op_flip(Operation *op)
{
	SPI_connect();
	OrderedFlip(op);
	SPI_finish();
	return true;
}

/*
 * op_clean_up drops the replication slot, which the subscription no longer
 * uses.
 */
static bool
op_clean_up(Operation *op)
{
	drop_slot(op);
	return true;
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
				 errhint("tenant_router.operation_recover() tries again.")));
	}
	PG_END_TRY();
}

static void
undo_switch(Operation *op)
{
	ShardRemoteCommand(op->switch_conn, "ROLLBACK");
	op->switching = false;
}

static void
undo_publication(Operation *op)
{
	ListCell   *lc;

	ShardRemoteCommand(op->source_conn, psprintf("DROP PUBLICATION IF EXISTS %s", op->name));
	ShardRemoteCommand(op->source_conn, psprintf("DROP TABLE IF EXISTS %s", op->marker));
	foreach(lc, op->identity_restore)
		ShardRemoteDdl(op->source_conn, lfirst(lc));
	op->published = false;
}

/* undo_source gives the source its constraint back: the flip did not happen */
static void
undo_source(Operation *op)
{
	ListCell   *lc;

	foreach(lc, op->tables)
		ShardSetOwnership(op->source_conn, lfirst(lc), op->source, true);
	op->switched = false;
}

/* undo_target takes away from the target what was copied, and its constraint */
static void
undo_target(Operation *op)
{
	ListCell   *lc;

	foreach(lc, op->tables)
	{
		LogicalTableRow *table = lfirst(lc);
		char	   *qualname = ShardTableName(table->relid);

		if (qualname == NULL)
			continue;
		if (op->target_filled && op->target_before == NULL)
			ShardRemoteCommand(op->target_conn, psprintf("TRUNCATE %s", qualname));
		else if (op->target_filled)
			ShardDeleteNotOwned(op->target_conn, table, op->target_before);
		if (op->target_before != NULL)
			ShardSetOwnership(op->target_conn, table, op->target_before, true);
	}
	op->target_filled = false;
	op->target_changed = false;
}

/*
 * OperationUndo removes what the phases made, in the reverse order, each
 * part on its own: one that fails is logged and the others still run.
 */
void
OperationUndo(Operation *op)
{
	op->undoing = true;
	/* first: the switch's locks would block the rest */
	if (op->switching)
		undo_try(op, undo_switch, "roll back the switch");
	if (op->subscribed)
		undo_try(op, drop_subscription, "drop the subscription");
	if (op->slot_created)
		undo_try(op, drop_slot, "drop the replication slot");
	if (op->published)
		undo_try(op, undo_publication, "drop the publication");
	if (op->switched)
		undo_try(op, undo_source, "give the source its range constraint back");
	if (op->target_filled || (op->target_changed && op->target_before != NULL))
		undo_try(op, undo_target, "empty the target");
	op->undoing = false;
}
