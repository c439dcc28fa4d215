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
/* advisory lock key under which coordinators change a shard's tables */
#define SHARD_DDL_LOCK "7481029373"

/* ShardRemoteCommand runs a statement on the shard, discarding its result. */
void
ShardRemoteCommand(ShardConn *sc, const char *sql)
{
	PQclear(ShardConnExec(sc, sql, 0, NULL, NULL));
}

/* ddl_context names the lock wait that tenant_router.shard_lock_timeout bounds */
static void
ddl_context(void *arg)
{
	errcontext("waiting at most tenant_router.shard_lock_timeout (%d ms) for the locks of shard \"%s\"",
			   TenantRouterShardLockTimeout, ShardConnLabel((ShardConn *) arg));
}

/*
 * ShardRemoteDdl runs a statement that takes locks on a shard's table (DDL,
 * LOCK, the cleanup's DELETE), waiting for them at most
 * tenant_router.shard_lock_timeout: a session idle in a transaction on the
 * shard makes it fail with 55P03 instead of hanging, and instead of queueing
 * every other query on that table behind it.  The setting travels in the
 * same pipeline, for the statement's transaction only.
 */
void
ShardRemoteDdl(ShardConn *sc, const char *sql)
{
	ErrorContextCallback callback;

	callback.callback = ddl_context;
	callback.arg = sc;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	ShardConnQueue(sc, psprintf("SELECT pg_catalog.set_config('lock_timeout', '%d', true)",
								TenantRouterShardLockTimeout));
	ShardRemoteCommand(sc, sql);
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
	ShardRemoteCommand(sc, "CREATE OR REPLACE FUNCTION public.tenant_router_moved_row() "
					   "RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN "
					   "RAISE EXCEPTION USING ERRCODE = '40001', "
					   "MESSAGE = pg_catalog.format('tenant %s has moved to another shard', "
					   "pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.->>) TG_ARGV[0]), "
					   "DETAIL = 'The statement was routed by a topology older than a topology operation.', "
					   "HINT = 'Retry the transaction.'; END$f$");
	ShardRemoteDdl(sc, psprintf("DROP TRIGGER IF EXISTS " MOVED_TRIGGER " ON %s", qualname));
	ShardRemoteDdl(sc, psprintf("CREATE TRIGGER " MOVED_TRIGGER " BEFORE UPDATE OR DELETE ON %s "
								"FOR EACH ROW WHEN (NOT %s) "
								"EXECUTE FUNCTION public.tenant_router_moved_row(%s)",
								qualname, owner_sql(owner, old_column),
								quote_literal_cstr(table->tenant_column)));
}

/*
 * ShardDeleteNotOwned deletes the table's rows that owner does not own, and
 * returns how many; their guard goes first.  Run it in a remote transaction
 * with ShardValidateOwnership.
 */
int64
ShardDeleteNotOwned(ShardConn *sc, LogicalTableRow *table, const ShardRow *owner)
{
	char	   *qualname = ShardTableName(table->relid);
	PGresult   *res;
	int64		deleted;

	if (qualname == NULL)
		return 0;
	ShardRemoteDdl(sc, psprintf("DROP TRIGGER IF EXISTS " MOVED_TRIGGER " ON %s", qualname));
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
