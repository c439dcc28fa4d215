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
 * Phases, in order: prepare (the kind's checks, connections, empty target),
 * create target tables, publish, subscribe, copy, catch up, switch, flip
 * catalog, clean up.  Undo, after a failure in any of them: roll back the
 * switch if open, drop the subscription, the slot, the publication and the
 * markers, restore replica identities, give the source its constraint back
 * if the switch had committed, and empty the target of what was copied.
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
#include "utils/memutils.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/operation.h"
#include "tenant_router/shard_ddl.h"

/* how often an operation looks at the replication's progress */
#define POLL_MS 50
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

static void op_prepare(Operation *op);
static void op_create_target_tables(Operation *op);
static void op_publish(Operation *op);
static void op_subscribe(Operation *op);
static void op_copy(Operation *op);
static void op_catch_up(Operation *op);
static void op_switch(Operation *op);
static void op_flip(Operation *op);
static void op_clean_up(Operation *op);
static void op_undo(Operation *op);

/* the phases after the kind's own checks, in order */
static const struct
{
	const char *name;
	void		(*run) (Operation *op);
}			phases[] =
{
	{"prepare", op_prepare},
	{"create target tables", op_create_target_tables},
	{"publish", op_publish},
	{"subscribe", op_subscribe},
	{"copy", op_copy},
	{"catch up", op_catch_up},
	{"switch", op_switch},
	{"flip catalog", op_flip},
	{"clean up", op_clean_up},
};

/* OperationCreate returns a new, empty operation state. */
Operation *
OperationCreate(const char *operation)
{
	Operation  *op = palloc0(sizeof(Operation));

	op->operation = operation;
	op->phase = "prepare";
	return op;
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

/* best_effort runs a statement of the undo, logging its error instead of raising it */
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
 * wait_for_subscription waits until condition (a boolean query on the
 * target) is true, failing if the subscription reports errors.
 */
static void
wait_for_subscription(Operation *op, const char *condition)
{
	char	   *errors = psprintf("SELECT sync_error_count + apply_error_count "
								  "FROM pg_catalog.pg_stat_subscription_stats "
								  "WHERE subname = %s", quote_literal_cstr(op->name));

	for (;;)
	{
		char	   *failed;

		if (remote_true(op->target_conn, condition))
			return;
		failed = ShardRemoteValue(op->target_conn, errors, NULL);
		if (failed != NULL && strcmp(failed, "0") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replication to shard \"%s\" failed", op->target->shard_id),
					 errhint("The log of the target shard says why (subscription %s).", op->name)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
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
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		waited += POLL_MS;
	}
	op->slot_created = false;
}

/* drop_subscription drops the subscription, leaving the slot to drop_slot */
static void
drop_subscription(Operation *op, bool undo)
{
	const char *steps[] = {
		psprintf("ALTER SUBSCRIPTION %s DISABLE", op->name),
		psprintf("ALTER SUBSCRIPTION %s SET (slot_name = NONE)", op->name),
		psprintf("DROP SUBSCRIPTION %s", op->name),
		psprintf("DROP TABLE IF EXISTS %s", op->marker),
	};

	for (int i = 0; i < lengthof(steps); i++)
	{
		if (undo)
		{
			/* only what exists: the undo may come before the subscription */
			if (i < 3 && !remote_true(op->target_conn,
									  psprintf("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription "
											   "WHERE subname = %s)", quote_literal_cstr(op->name))))
				continue;
			best_effort(op->target_conn, steps[i]);
		}
		else
			ShardRemoteCommand(op->target_conn, steps[i]);
	}
	op->subscribed = false;
}

/*
 * op_prepare connects to both shards and checks what the replication needs:
 * wal_level = logical on the source, and a target without rows of the
 * moving tenants.
 */
static void
op_prepare(Operation *op)
{
	char	   *wal_level;
	ListCell   *lc;

	op->tables = CatalogLogicalTables();
	op->marker = psprintf("public.%s_marker", op->name);
	op->target_conn = ShardConnGet(op->target->shard_id, op->target->dsn);
	op->source_conn = ShardConnGet(op->source->shard_id, op->source->dsn);
	op->switch_conn = ShardConnGetSide(op->source->shard_id, op->source->dsn);

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
}

/*
 * op_create_target_tables creates the logical tables on the target (or
 * checks them), with the constraint of what the target will own, which
 * admits the moving rows.
 */
static void
op_create_target_tables(Operation *op)
{
	ListCell   *lc;

	op->target_changed = true;
	foreach(lc, op->tables)
		ShardSyncTable(op->target_conn, lfirst(lc), op->target, true);
}

/*
 * op_publish publishes the moving rows on the source: the marker table, and
 * replica identity FULL wherever it is not, so that the row filter sees the
 * tenant of every UPDATE and DELETE.
 */
static void
op_publish(Operation *op)
{
	StringInfoData sql;
	ListCell   *lc;

	op->published = true;
	ShardRemoteCommand(op->source_conn, psprintf("CREATE TABLE %s (token bigint)", op->marker));

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE PUBLICATION %s FOR TABLE %s", op->name, op->marker);
	foreach(lc, op->tables)
	{
		LogicalTableRow *table = lfirst(lc);
		char	   *qualname = ShardTableName(table->relid);
		char	   *identity;
		char	   *restore;

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
			restore = psprintf("ALTER TABLE %s REPLICA IDENTITY %s", qualname, identity);
			op->identity_restore = lappend(op->identity_restore, restore);
			ShardRemoteCommand(op->source_conn,
							   psprintf("ALTER TABLE %s REPLICA IDENTITY FULL", qualname));
		}
		appendStringInfo(&sql, ", %s WHERE %s", qualname,
						 OperationMovingSql(op, quote_identifier(table->tenant_column)));
	}
	ShardRemoteCommand(op->source_conn, sql.data);
}

/*
 * op_subscribe makes the replication slot on the source on its own (made by
 * CREATE SUBSCRIPTION, a slot on the same server as the subscription would
 * wait for the subscription's own transaction), then the subscription,
 * which starts copying.
 */
static void
op_subscribe(Operation *op)
{
	op->slot_created = true;
	ShardRemoteCommand(op->source_conn,
					   psprintf("SELECT pg_catalog.pg_create_logical_replication_slot(%s, 'pgoutput')",
								quote_literal_cstr(op->name)));

	op->subscribed = true;
	ShardRemoteCommand(op->target_conn, psprintf("CREATE TABLE %s (token bigint)", op->marker));
	/* the source's DSN: never in an error, nor in the target's log */
	for (int i = 0; i < lengthof(quiet_logging); i++)
		ShardRemoteCommand(op->target_conn, psprintf("SET %s = %s", quiet_logging[i][0],
													 quiet_logging[i][1]));
	op->target_filled = true;
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
}

/* op_copy waits for the copy of the rows there already, and counts them */
static void
op_copy(Operation *op)
{
	ListCell   *lc;

	wait_for_subscription(op, psprintf("SELECT count(*) = 0 FROM pg_catalog.pg_subscription_rel r "
									   "JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid "
									   "WHERE s.subname = %s AND r.srsubstate <> 'r'",
									   quote_literal_cstr(op->name)));
	op->rows_copied = 0;
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
		op->rows_copied += count ? strtoi64(count, NULL, 10) : 0;
	}
}

/*
 * op_catch_up waits until the target has the changes made on the source
 * until now (a marker row sent after them has arrived), so that the switch,
 * which blocks writes, waits little.
 */
static void
op_catch_up(Operation *op)
{
	send_marker(op, 1);
}

/*
 * op_switch makes the source give the rows away: under a lock against
 * writes, the marker proves the target has every change, the source's
 * constraint narrows to what it keeps and its moved rows are guarded;
 * replication goes; and all of it commits at once.
 */
static void
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
		ShardRemoteCommand(op->switch_conn, sql.data);
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
		ShardRemoteCommand(op->switch_conn, lfirst(lc));
	ShardRemoteCommand(op->switch_conn, psprintf("DROP PUBLICATION %s", op->name));
	ShardRemoteCommand(op->switch_conn, psprintf("DROP TABLE %s", op->marker));
	drop_subscription(op, false);

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
	op->identity_restore = NIL;
}

/* op_flip changes the catalog: the kind's flip */
static void
op_flip(Operation *op)
{
	SPI_connect();
	op->flip(op);
	SPI_finish();
}

/*
 * op_clean_up drops the replication slot, which the subscription no longer
 * uses.  The operation is done: what fails here is left with a warning.
 */
static void
op_clean_up(Operation *op)
{
	MemoryContext old = CurrentMemoryContext;

	PG_TRY();
	{
		drop_slot(op);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("%s", edata->message),
				 edata->hint ? errhint("%s", edata->hint) : 0));
	}
	PG_END_TRY();
}

/*
 * op_undo removes what the phases made, in the reverse order, each step on
 * its own: one that fails is logged and the others still run.
 */
static void
op_undo(Operation *op)
{
	ListCell   *lc;

	if (op->switching)
	{
		/* first: the switch's locks would block the rest */
		best_effort(op->switch_conn, "ROLLBACK");
		op->switching = false;
	}
	if (op->subscribed)
		drop_subscription(op, true);
	if (op->slot_created)
	{
		MemoryContext old = CurrentMemoryContext;

		PG_TRY();
		{
			drop_slot(op);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(old);
			FlushErrorState();
			ereport(WARNING,
					(errmsg("replication slot %s was left on shard \"%s\"", op->name,
							op->source->shard_id),
					 errhint("Drop it on the shard with pg_drop_replication_slot().")));
		}
		PG_END_TRY();
	}
	if (op->published)
	{
		best_effort(op->source_conn, psprintf("DROP PUBLICATION IF EXISTS %s", op->name));
		best_effort(op->source_conn, psprintf("DROP TABLE IF EXISTS %s", op->marker));
		foreach(lc, op->identity_restore)
			best_effort(op->source_conn, lfirst(lc));
		op->published = false;
	}
	if (op->switched)
	{
		/* the flip failed: the source owns its rows again */
		foreach(lc, op->tables)
		{
			LogicalTableRow *table = lfirst(lc);
			MemoryContext old = CurrentMemoryContext;

			PG_TRY();
			{
				ShardSetOwnership(op->source_conn, table, op->source, true);
			}
			PG_CATCH();
			{
				MemoryContextSwitchTo(old);
				FlushErrorState();
				ereport(WARNING,
						(errmsg("could not give shard \"%s\" its range constraint back",
								op->source->shard_id),
						 errhint("Call shard_update_range() with its range unchanged.")));
			}
			PG_END_TRY();
		}
	}
	if (op->target_filled)
	{
		foreach(lc, op->tables)
		{
			LogicalTableRow *table = lfirst(lc);
			char	   *qualname = ShardTableName(table->relid);

			if (qualname == NULL)
				continue;
			if (op->target_before == NULL)
				best_effort(op->target_conn, psprintf("TRUNCATE %s", qualname));
			else
				best_effort(op->target_conn,
							psprintf("DELETE FROM %s WHERE %s", qualname,
									 OperationMovingSql(op, quote_identifier(table->tenant_column))));
		}
	}
	if (op->target_changed && op->target_before != NULL)
		foreach(lc, op->tables)
		{
			MemoryContext old = CurrentMemoryContext;

			PG_TRY();
			{
				ShardSetOwnership(op->target_conn, lfirst(lc), op->target_before, true);
			}
			PG_CATCH();
			{
				MemoryContextSwitchTo(old);
				FlushErrorState();
				ereport(WARNING,
						(errmsg("could not give shard \"%s\" its range constraint back",
								op->target->shard_id),
						 errhint("Call shard_update_range() with its range unchanged.")));
			}
			PG_END_TRY();
		}
}

static void
phase_context(void *arg)
{
	Operation  *op = (Operation *) arg;

	errcontext("%s of shard \"%s\", phase \"%s\"", op->operation, op->source->shard_id, op->phase);
}

/*
 * OperationRun runs the phases in order; after an error in any of them it
 * undoes what they made and raises the error again.
 */
void
OperationRun(Operation *op)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorContextCallback callback;

	callback.callback = phase_context;
	callback.arg = op;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	PG_TRY();
	{
		for (int i = 0; i < lengthof(phases); i++)
		{
			op->phase = phases[i].name;
			phases[i].run(op);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		error_context_stack = callback.previous;
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		op_undo(op);
		ReThrowError(edata);
	}
	PG_END_TRY();
	error_context_stack = callback.previous;
}
