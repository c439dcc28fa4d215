/*-------------------------------------------------------------------------
 *
 * shard_ddl.c
 *	  Every DDL a shard receives: its copy of a logical table made to match
 *	  the coordinator, the CHECK constraint saying which tenants it owns,
 *	  the guard of rows it has given away, their deletion; and the helpers
 *	  that run statements on a shard for the commands.
 *
 * A table missing on the shard is created from the statements captured by
 * logical_table_add() (columns, keys, indexes).  A table that exists is
 * checked column by column against the coordinator's, and every difference
 * is listed in one error.  Either way the shard's copy carries the CHECK
 * constraint tenant_router_range for exactly the tenants the shard owns
 * (ShardOwnsSql), so that a misrouted write fails instead of landing; its
 * comment records the condition, so an unchanged one costs no table scan.
 *
 * The statements run in the shard's remote transaction, committed or rolled
 * back with the local one, under an advisory lock on the shard: coordinators
 * applying the same topology event at once take turns, and the second finds
 * the first's tables.  An unreachable shard is an error: nothing is changed
 * anywhere.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_attribute.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "tenant_router/adopt.h"
#include "tenant_router/guc.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/reference_table.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/shard_ddl.h"

#define RANGE_CONSTRAINT "tenant_router_range"
#define MOVED_TRIGGER "tenant_router_moved"
/* the constraint name a fence's error carries (the guard's is MOVED_TRIGGER) */
#define FENCE_CONSTRAINT "tenant_router_fence"
/* longest wait of one attempt of ShardRemoteDdl for its locks, and the pause after it */
#define DDL_ATTEMPT_MS 50
#define DDL_PAUSE_MS 20
/* advisory lock key under which coordinators change a shard's tables */
#define SHARD_DDL_LOCK "7481029373"

/*
 * The connection whose table this transaction holds locked already
 * (ShardDdlBatchBegin): its commands and DDL wait for nothing, so they are
 * queued and go to the shard in one pipeline, with the next statement (the
 * remote COMMIT at the latest), instead of one round trip each while the
 * lock holds back every query on the table.
 */
static ShardConn *batch_conn = NULL;

/* ShardRemoteCommand runs a statement on the shard, discarding its result. */
void
ShardRemoteCommand(ShardConn *sc, const char *sql)
{
	if (sc == batch_conn)
		ShardConnQueue(sc, sql);
	else
		PQclear(ShardConnExec(sc, sql, 0, NULL, NULL));
}

/*
 * ShardDdlBatchBegin locks the shard's table (qualname) in ACCESS EXCLUSIVE
 * mode for sc's remote transaction, waiting as ShardRemoteDdl does, then
 * queues sc's commands and DDL until ShardDdlBatchEnd: a change of several
 * statements to a table holds its lock for one round trip instead of one
 * each.  Errors of the queued statements come with the next statement.
 */
void
ShardDdlBatchBegin(ShardConn *sc, const char *qualname)
{
	Assert(batch_conn == NULL && ShardConnInTransaction(sc));
	ShardRemoteDdl(sc, psprintf("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", qualname));
	batch_conn = sc;
}

void
ShardDdlBatchEnd(void)
{
	batch_conn = NULL;
}

/* ddl_context names the lock wait that tenant_router.shard_lock_timeout bounds */
static void
ddl_context(void *arg)
{
	errcontext("waiting at most tenant_router.shard_lock_timeout (%d ms) for the locks of shard \"%s\"",
			   TenantRouterShardLockTimeout, ShardConnLabel((ShardConn *) arg));
}

/*
 * ddl_attempts runs sql, which takes locks on a shard's table, waiting for
 * them at most budget_ms in all (0: no limit) in attempts of at most
 * DDL_ATTEMPT_MS, DDL_PAUSE_MS apart, each in a remote savepoint when in a
 * remote transaction and when it may fail: a lock request that waits holds
 * back every later query on the table, so the other tenants' queries wait
 * at most one attempt, then go on while it pauses.  Once the budget is
 * spent, it returns false with may_fail (nothing done), else raises the
 * 55P03; any other error is raised.
 */
static bool
ddl_attempts(ShardConn *sc, const char *sql, int budget_ms, bool may_fail)
{
	bool		in_xact = ShardConnInTransaction(sc);
	int			waited = 0;

	for (;;)
	{
		int			attempt = DDL_ATTEMPT_MS;
		bool		last;
		bool		savepoint;
		PGresult   *res;
		const char *state;

		if (budget_ms > 0)
			attempt = Min(attempt, Max(budget_ms - waited, 1));
		last = budget_ms > 0 && waited + attempt >= budget_ms;
		savepoint = in_xact && (!last || may_fail);
		if (savepoint)
			ShardConnQueue(sc, "SAVEPOINT tenant_router_ddl");
		ShardConnQueue(sc, psprintf("SELECT pg_catalog.set_config('lock_timeout', '%d', true)",
									attempt));
		ShardConnSend(sc, sql, 0, NULL, NULL);
		res = ShardConnResult(sc, false);
		if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			PQclear(res);
			if (savepoint)
				ShardRemoteCommand(sc, "RELEASE SAVEPOINT tenant_router_ddl");
			return true;
		}
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state == NULL || strcmp(state, "55P03") != 0 || (last && !may_fail))
			ShardConnRaise(sc, res, sql);
		PQclear(res);
		if (savepoint)
			ShardRemoteCommand(sc, "ROLLBACK TO SAVEPOINT tenant_router_ddl");
		if (last)
			return false;
		waited += attempt;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 DDL_PAUSE_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		waited += DDL_PAUSE_MS;
	}
}

/*
 * ShardRemoteDdl runs a statement that takes locks on a shard's table (DDL,
 * LOCK, the cleanup's DELETE), waiting for them at most
 * tenant_router.shard_lock_timeout in all, in short attempts (ddl_attempts):
 * a session idle in a transaction on the shard makes it fail with 55P03
 * instead of hanging, and the other queries on the table never queue behind
 * it for long.  The setting travels in the same pipeline, for the
 * statement's transaction only.
 */
void
ShardRemoteDdl(ShardConn *sc, const char *sql)
{
	ErrorContextCallback callback;

	if (sc == batch_conn)
	{
		ShardConnQueue(sc, sql);	/* the table is locked already */
		return;
	}
	callback.callback = ddl_context;
	callback.arg = sc;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	(void) ddl_attempts(sc, sql, TenantRouterShardLockTimeout, false);
	error_context_stack = callback.previous;
}

/*
 * ShardRemoteValue runs a query with at most one text parameter and returns
 * the first column of its first row, or NULL.
 */
char *
ShardRemoteValue(ShardConn *sc, const char *sql, const char *param)
{
	const char *values[1] = {param};
	PGresult   *res = ShardConnExec(sc, sql, param ? 1 : 0, NULL, values);
	char	   *value = NULL;

	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

/* ShardTableName returns the schema-qualified, quoted name of a table. */
char *
ShardTableName(Oid relid)
{
	char	   *relname = get_rel_name(relid);

	if (relname == NULL)
		return NULL;
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), relname);
}

/*
 * owner_sql returns the condition on column for the tenants owner owns:
 * none when owner is NULL (a shard that gives away all its tenants).
 */
static char *
owner_sql(const ShardRow *owner, const char *column)
{
	return owner ? ShardOwnsSql(owner, column) : pstrdup("(false)");
}

/*
 * check_columns raises an error listing how the shard's columns of the
 * table differ from the coordinator's (names and types).
 */
static void
check_columns(ShardConn *sc, Oid relid, const char *qualname, const char *remote_oid)
{
	const char *values[1] = {remote_oid};
	PGresult   *res;
	Relation	rel;
	TupleDesc	tupdesc;
	StringInfoData diff;
	int			ndiff = 0;
	int			i;
	int			r;
	bool	   *matched;
	int			nestlevel;

	res = ShardConnExec(sc,
						"SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) "
						"FROM pg_catalog.pg_attribute a "
						"WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 "
						"AND NOT a.attisdropped ORDER BY a.attnum",
						1, NULL, values);
	matched = palloc0(sizeof(bool) * (PQntuples(res) + 1));
	initStringInfo(&diff);

	rel = table_open(relid, AccessShareLock);
	tupdesc = RelationGetDescr(rel);
	nestlevel = EnterRemoteSqlSettings();
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		char	   *type;
		bool		found = false;

		if (att->attisdropped)
			continue;
		type = format_type_with_typemod(att->atttypid, att->atttypmod);
		for (r = 0; r < PQntuples(res); r++)
		{
			if (strcmp(PQgetvalue(res, r, 0), NameStr(att->attname)) != 0)
				continue;
			found = true;
			matched[r] = true;
			if (strcmp(PQgetvalue(res, r, 1), type) != 0)
			{
				appendStringInfo(&diff, "%sColumn \"%s\" is %s on the shard but %s on the coordinator.",
								 ndiff++ ? " " : "", NameStr(att->attname),
								 PQgetvalue(res, r, 1), type);
			}
		}
		if (!found)
			appendStringInfo(&diff, "%sColumn \"%s\" is missing on the shard.",
							 ndiff++ ? " " : "", NameStr(att->attname));
	}
	LeaveRemoteSqlSettings(nestlevel);
	table_close(rel, AccessShareLock);

	for (r = 0; r < PQntuples(res); r++)
		if (!matched[r])
			appendStringInfo(&diff, "%sColumn \"%s\" exists only on the shard.",
							 ndiff++ ? " " : "", PQgetvalue(res, r, 0));
	PQclear(res);

	if (ndiff > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table %s on shard \"%s\" does not match the coordinator",
						qualname, ShardConnLabel(sc)),
				 errdetail_internal("%s", diff.data),
				 errhint("Make the shard's table match, or drop it there so that it is created.")));
}

/*
 * ShardSetOwnership makes the table's CHECK constraint tenant_router_range
 * say exactly what owner owns (nothing if owner is NULL), with a comment
 * recording the condition, so that an unchanged one costs no table scan.
 * Validated, it also drops the guard of moved rows: no row is outside, so
 * the guard has nothing left to guard and would refuse rows owned again.
 * NOT VALID, it leaves the rows already there (a shard that has just given
 * some away, until its cleanup).
 */
void
ShardSetOwnership(ShardConn *sc, LogicalTableRow *table, const ShardRow *owner,
				  bool validate)
{
	char	   *qualname = ShardTableName(table->relid);
	char	   *cond = owner_sql(owner, quote_identifier(table->tenant_column));

	if (qualname == NULL)
		return;					/* dropped meanwhile */
	ShardRemoteDdl(sc, psprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS " RANGE_CONSTRAINT ", "
								"ADD CONSTRAINT " RANGE_CONSTRAINT " CHECK %s%s",
								qualname, cond, validate ? "" : " NOT VALID"));
	ShardRemoteCommand(sc, psprintf("COMMENT ON CONSTRAINT " RANGE_CONSTRAINT " ON %s IS %s",
									qualname,
									quote_literal_cstr(psprintf("tenant_router owns %s", cond))));
	if (validate)
		ShardRemoteDdl(sc, psprintf("DROP TRIGGER IF EXISTS " MOVED_TRIGGER " ON %s", qualname));
}

/*
 * The guard's function: a moved row's UPDATE or DELETE fails, except in the
 * shard's cleanup, whose transaction says so (CLEANUP_SETTING).
 */
#define CLEANUP_SETTING "tenant_router_shard.cleanup"
#define GUARD_FUNCTION_SQL \
	"CREATE OR REPLACE FUNCTION public.tenant_router_moved_row() " \
	"RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN " \
	"IF pg_catalog.current_setting('" CLEANUP_SETTING "', true) = 'on' THEN RETURN OLD; END IF; " \
	"RAISE EXCEPTION USING ERRCODE = '40001', CONSTRAINT = '" MOVED_TRIGGER "', " \
	"MESSAGE = pg_catalog.format('tenant %s has moved to another shard', " \
	"pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.->>) TG_ARGV[0]), " \
	"DETAIL = 'The statement was routed by a topology older than a topology operation.', " \
	"HINT = 'Retry the transaction.'; END$f$"

/*
 * ShardGuardMovedRows makes an UPDATE or DELETE of a row that owner does not
 * own fail with 40001 (tenant ... has moved) instead of changing a row that
 * the shard keeps only until its cleanup: a coordinator routing by an older
 * topology gets an error to retry, never a write that the cleanup would lose.
 */
void
ShardGuardMovedRows(ShardConn *sc, LogicalTableRow *table, const ShardRow *owner)
{
	char	   *qualname = ShardTableName(table->relid);
	char	   *old_column = psprintf("OLD.%s", quote_identifier(table->tenant_column));

	if (qualname == NULL)
		return;
	ShardRemoteCommand(sc, GUARD_FUNCTION_SQL);
	ShardRemoteDdl(sc, psprintf("DROP TRIGGER IF EXISTS " MOVED_TRIGGER " ON %s", qualname));
	ShardRemoteDdl(sc, psprintf("CREATE TRIGGER " MOVED_TRIGGER " BEFORE UPDATE OR DELETE ON %s "
								"FOR EACH ROW WHEN (NOT %s AND pg_catalog.current_setting('"
								CLEANUP_SETTING "', true) IS DISTINCT FROM 'on') "
								"EXECUTE FUNCTION public.tenant_router_moved_row(%s)",
								qualname, owner_sql(owner, old_column),
								quote_literal_cstr(table->tenant_column)));
}

/*
 * The fence of an online operation (name: its objects' prefix) on the
 * shard its rows leave.  A table public.<name>_fence holds one row, "open"
 * until the switch makes it "switched"; BEFORE row triggers on each moved
 * table, for the rows of the moving tenants only (WHEN), run a function that
 * takes a shared advisory lock (lock_key) and reads the row.  The switch
 * takes that lock exclusively: it waits for the writers of moving tenants
 * already in flight (they hold the shared lock to their commit), and the
 * writers that come meanwhile queue behind it; once it has committed, they
 * read "switched" and fail with 40001, constraint tenant_router_fence, which
 * the coordinator recognises and routes again.  Under REPEATABLE READ the
 * row is read FOR SHARE, so that a switch committed after the snapshot is
 * seen too (as a serialization failure, reported the same way).  Rows of
 * other tenants never reach the function.  A BEFORE TRUNCATE trigger
 * refuses every TRUNCATE while the fence is there: a new database as target
 * is not truncated with the shards of the catalog.
 */

/* fence_table returns the fence's table */
static char *
fence_table(const char *name)
{
	return psprintf("public.%s_fence", name);
}

/*
 * ShardFenceCreate creates the fence of operation name on the shard: its
 * table, open, and the function of its triggers (ShardFenceTable).
 */
void
ShardFenceCreate(ShardConn *sc, const char *name, int64 lock_key)
{
	char	   *table = fence_table(name);

	ShardRemoteCommand(sc, psprintf("CREATE TABLE %s (state text NOT NULL)", table));
	ShardRemoteCommand(sc, psprintf("INSERT INTO %s VALUES ('open')", table));
	ShardRemoteCommand(sc, psprintf(
									"CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $f$"
									"DECLARE fence_state text; "
									"BEGIN "
									"IF TG_LEVEL OPERATOR(pg_catalog.=) 'STATEMENT' THEN "
									"RAISE EXCEPTION USING ERRCODE = '40001', CONSTRAINT = '" FENCE_CONSTRAINT "', "
									"MESSAGE = pg_catalog.format('table %%s cannot be truncated while a topology operation moves some of its tenants to another shard', TG_TABLE_NAME), "
									"HINT = 'Retry the transaction once the operation is done (tenant_router.operations on the coordinator).'; "
									"END IF; "
									"PERFORM pg_catalog.pg_advisory_xact_lock_shared(" INT64_FORMAT "); "
									"IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.=) 'read committed' THEN "
									"SELECT f.state INTO fence_state FROM %s f; "
									"ELSE "
									"BEGIN SELECT f.state INTO fence_state FROM %s f FOR SHARE; "
									"EXCEPTION WHEN serialization_failure THEN fence_state := 'switched'; END; "
									"END IF; "
									"IF fence_state OPERATOR(pg_catalog.=) 'open' THEN "
									"IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN RETURN OLD; END IF; "
									"RETURN NEW; "
									"END IF; "
									"RAISE EXCEPTION USING ERRCODE = '40001', CONSTRAINT = '" FENCE_CONSTRAINT "', "
									"MESSAGE = pg_catalog.format('tenant %%s has moved to another shard', "
									"pg_catalog.to_jsonb(COALESCE(NEW, OLD)) OPERATOR(pg_catalog.->>) TG_ARGV[0]), "
									"DETAIL = 'A topology operation moved the tenant''s rows while the statement was on its way to this shard.', "
									"HINT = 'Retry the transaction.'; "
									"END$f$",
									table, lock_key, table, table));
}

/*
 * ShardFenceTable puts the fence's triggers on table, for the rows of the
 * tenants moving owns (and one against TRUNCATE).
 */
void
ShardFenceTable(ShardConn *sc, const char *name, LogicalTableRow *table,
				const ShardRow *moving)
{
	char	   *qualname = ShardTableName(table->relid);
	const char *column = quote_identifier(table->tenant_column);
	char	   *arg = quote_literal_cstr(table->tenant_column);
	char	   *new_moves;
	char	   *old_moves;

	if (qualname == NULL)
		return;
	new_moves = ShardOwnsSql(moving, psprintf("NEW.%s", column));
	old_moves = ShardOwnsSql(moving, psprintf("OLD.%s", column));
	ShardRemoteDdl(sc, psprintf("CREATE TRIGGER %s_fence_insert BEFORE INSERT ON %s FOR EACH ROW "
								"WHEN %s EXECUTE FUNCTION %s(%s)",
								name, qualname, new_moves, fence_table(name), arg));
	ShardRemoteDdl(sc, psprintf("CREATE TRIGGER %s_fence_update BEFORE UPDATE ON %s FOR EACH ROW "
								"WHEN (%s OR %s) EXECUTE FUNCTION %s(%s)",
								name, qualname, old_moves, new_moves, fence_table(name), arg));
	ShardRemoteDdl(sc, psprintf("CREATE TRIGGER %s_fence_delete BEFORE DELETE ON %s FOR EACH ROW "
								"WHEN %s EXECUTE FUNCTION %s(%s)",
								name, qualname, old_moves, fence_table(name), arg));
	ShardRemoteDdl(sc, psprintf("CREATE TRIGGER %s_fence_truncate BEFORE TRUNCATE ON %s "
								"FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)",
								name, qualname, fence_table(name), arg));
}

/*
 * ShardFenceClose closes the fence, in the switch's transaction on the
 * shard: it waits for the writes of moving tenants in flight, holds back the
 * others until that transaction ends, and from its commit on makes them
 * fail.  It returns false, the transaction failed, if the writes in flight
 * did not end within timeout_ms.
 */
bool
ShardFenceClose(ShardConn *sc, const char *name, int64 lock_key, int timeout_ms)
{
	char	   *lock = psprintf("SELECT pg_catalog.pg_advisory_xact_lock(" INT64_FORMAT ")", lock_key);
	PGresult   *res;

	ShardConnQueue(sc, psprintf("SELECT pg_catalog.set_config('lock_timeout', '%d', true)",
								timeout_ms));
	ShardConnSend(sc, lock, 0, NULL, NULL);
	res = ShardConnResult(sc, false);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (sqlstate != NULL && strcmp(sqlstate, "55P03") == 0)
		{
			PQclear(res);
			return false;
		}
		ShardConnRaise(sc, res, lock);
	}
	PQclear(res);
	ShardRemoteCommand(sc, psprintf("UPDATE %s SET state = 'switched'", fence_table(name)));
	return true;
}

/*
 * ShardFenceUntable drops the fence's triggers from table, if there: those
 * on its rows (rows), the one against TRUNCATE (truncate).
 */
void
ShardFenceUntable(ShardConn *sc, const char *name, LogicalTableRow *table, bool rows,
				  bool truncate)
{
	static const char *const kinds[] = {"insert", "update", "delete", "truncate"};
	char	   *qualname = ShardTableName(table->relid);

	if (qualname == NULL)
		return;
	for (int i = rows ? 0 : 3; i < (truncate ? 4 : 3); i++)
		ShardRemoteDdl(sc, psprintf("DROP TRIGGER IF EXISTS %s_fence_%s ON %s",
									name, kinds[i], qualname));
}

/*
 * ShardFenceOpen opens the fence again, if there: a row lock only, so it
 * works while the triggers cannot be dropped (a session holds the table),
 * and the moving tenants' writes go on on the shard at once.
 */
void
ShardFenceOpen(ShardConn *sc, const char *name)
{
	char	   *table = fence_table(name);

	ShardRemoteCommand(sc, psprintf("DO $fence$BEGIN IF pg_catalog.to_regclass(%s) IS NOT NULL THEN "
									"UPDATE %s SET state = 'open'; END IF; END$fence$",
									quote_literal_cstr(table), table));
}

/*
 * ShardFenceDrop drops what is left of the fence: its function (with any
 * trigger ShardFenceUntable did not reach) and its table.
 */
void
ShardFenceDrop(ShardConn *sc, const char *name)
{
	char	   *table = fence_table(name);

	ShardRemoteDdl(sc, psprintf("DROP FUNCTION IF EXISTS %s() CASCADE", table));
	ShardRemoteCommand(sc, psprintf("DROP TABLE IF EXISTS %s", table));
}

/*
 * ShardRestoreOwnership gives the table back the range constraint of what
 * owner owns, which its rows satisfy, and drops the guard of moved rows: the
 * undo of an operation's narrowing.  The constraint is validated after it
 * is added, under a lock that lets writes go on.
 */
void
ShardRestoreOwnership(ShardConn *sc, LogicalTableRow *table, const ShardRow *owner)
{
	char	   *qualname = ShardTableName(table->relid);

	if (qualname == NULL)
		return;
	ShardSetOwnership(sc, table, owner, false);
	ShardRemoteDdl(sc, psprintf("DROP TRIGGER IF EXISTS " MOVED_TRIGGER " ON %s", qualname));
	ShardValidateOwnership(sc, table);
}

/*
 * ShardDeleteNotOwned deletes the table's rows that owner does not own, and
 * returns how many, past their guard (its function lets the transaction's
 * cleanup through, a setting that stays on for the rest of the remote
 * transaction, which only cleans up; a guard made by an older version gets
 * that function first) and without a lock that holds back the other
 * tenants' writes.  Run it in a remote transaction with
 * ShardValidateOwnership, then ShardDropGuard.
 */
int64
ShardDeleteNotOwned(ShardConn *sc, LogicalTableRow *table, const ShardRow *owner)
{
	char	   *qualname = ShardTableName(table->relid);
	PGresult   *res;
	int64		deleted;

	if (qualname == NULL)
		return 0;
	if (ShardRemoteValue(sc, "SELECT 1 FROM pg_catalog.pg_trigger "
						 "WHERE tgrelid = pg_catalog.to_regclass($1) AND tgname = '" MOVED_TRIGGER "'",
						 qualname) != NULL)
		ShardRemoteCommand(sc, GUARD_FUNCTION_SQL);
	ShardConnQueue(sc, "SELECT pg_catalog.set_config('" CLEANUP_SETTING "', 'on', true)");
	ShardConnQueue(sc, psprintf("SELECT pg_catalog.set_config('lock_timeout', '%d', true)",
								TenantRouterShardLockTimeout));
	res = ShardConnExec(sc, psprintf("DELETE FROM %s WHERE NOT %s", qualname,
									 owner_sql(owner, quote_identifier(table->tenant_column))),
						0, NULL, NULL);
	deleted = strtoi64(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return deleted;
}

/*
 * ShardDropGuard drops the guard of moved rows once none is left, if its
 * lock can be had within GUARD_DROP_LOCK_MS, and tells whether it did.  That
 * lock holds back every write to the table, and so do the writes queued
 * behind it while it waits: so it comes last, just before the remote
 * transaction commits, and waits little (a session holding the table, e.g.
 * idle in a transaction, makes the cleanup try again later; the guard has
 * nothing left to guard meanwhile).
 */
bool
ShardDropGuard(ShardConn *sc, LogicalTableRow *table)
{
	char	   *qualname = ShardTableName(table->relid);

	return qualname == NULL ||
		ddl_attempts(sc, psprintf("DROP TRIGGER IF EXISTS " MOVED_TRIGGER " ON %s", qualname),
					 GUARD_DROP_LOCK_MS, true);
}

/*
 * ShardValidateOwnership validates the table's range constraint, once the
 * rows outside it are gone (ShardDeleteNotOwned).
 */
void
ShardValidateOwnership(ShardConn *sc, LogicalTableRow *table)
{
	char	   *qualname = ShardTableName(table->relid);

	if (qualname == NULL)
		return;
	ShardRemoteDdl(sc, psprintf("ALTER TABLE %s VALIDATE CONSTRAINT " RANGE_CONSTRAINT, qualname));
}

/*
 * ShardSyncTable creates or checks the table on the shard of sc and sets
 * its range constraint to what shard owns, in the shard's remote
 * transaction (or, with autocommit, committing each statement at once).
 * A constraint whose comment already records that condition is left as it
 * is, validated or not.
 */
void
ShardSyncTable(ShardConn *sc, LogicalTableRow *table, const ShardRow *shard,
			   bool autocommit)
{
	char	   *qualname = ShardTableName(table->relid);
	char	   *remote_oid;
	char	   *comment;
	char	   *marker;
	ListCell   *lc;

	if (qualname == NULL)
		return;					/* dropped meanwhile */

	ShardConnBegin(sc, autocommit ? SHARD_AUTOCOMMIT : SHARD_READ);
	if (!autocommit)
		ShardRemoteCommand(sc, "SELECT pg_catalog.pg_advisory_xact_lock(" SHARD_DDL_LOCK ")");
	remote_oid = ShardRemoteValue(sc, "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", qualname);
	if (remote_oid == NULL)
	{
		foreach(lc, table->shard_ddl)
			ShardRemoteDdl(sc, lfirst(lc));
		remote_oid = ShardRemoteValue(sc, "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", qualname);
		if (remote_oid == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("could not create table %s on shard \"%s\"",
							qualname, ShardConnLabel(sc))));
	}
	else
		check_columns(sc, table->relid, qualname, remote_oid);

	marker = psprintf("tenant_router owns %s",
					  ShardOwnsSql(shard, quote_identifier(table->tenant_column)));
	comment = ShardRemoteValue(sc,
							   "SELECT pg_catalog.obj_description(c.oid, 'pg_constraint') "
							   "FROM pg_catalog.pg_constraint c "
							   "WHERE c.conrelid = $1::pg_catalog.oid "
							   "AND c.conname = '" RANGE_CONSTRAINT "'", remote_oid);
	if (comment != NULL && strcmp(comment, marker) == 0)
		return;
	if (comment == NULL)
		AdoptShardTable(sc, table, qualname, shard);
	ShardSetOwnership(sc, table, shard, true);
}

/*
 * ShardSyncAllTables makes every logical table match on one shard.  It
 * connects even when there are none, so that an unreachable shard is an
 * error before it is put into routing.
 */
void
ShardSyncAllTables(const ShardRow *shard)
{
	ShardConn  *sc;
	ListCell   *lc;

	/* a change of the order applied elsewhere first: its shard work is done */
	if (TopologyShardWorkDone)
		return;
	sc = ShardConnGet(shard->shard_id, shard->dsn);
	/* reference tables first: foreign keys of logical tables may need them */
	ReferenceTablesSyncShard(sc, shard->shard_id, shard->dsn);
	foreach(lc, CatalogLogicalTables())
		ShardSyncTable(sc, lfirst(lc), shard, false);
}
