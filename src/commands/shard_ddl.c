/*-------------------------------------------------------------------------
 *
 * shard_ddl.c
 *	  Makes a shard's copy of a logical table match the coordinator.
 *
 * A table missing on the shard is created from the statements captured by
 * logical_table_add() (columns, keys, indexes).  A table that exists is
 * checked column by column against the coordinator's, and every difference
 * is listed in one error.  Either way the shard's copy carries the CHECK
 * constraint tenant_router_range for exactly the shard's range, so that a
 * misrouted write fails instead of landing; its comment records the range,
 * so an unchanged range costs no table scan.
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
#include "tenant_router/reference_table.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/shard_ddl.h"

#define RANGE_CONSTRAINT "tenant_router_range"
/* advisory lock key under which coordinators change a shard's tables */
#define SHARD_DDL_LOCK "7481029373"

static char *
remote_scalar(ShardConn *sc, const char *sql, const char *param)
{
	const char *values[1] = {param};
	PGresult   *res = ShardConnExec(sc, sql, param ? 1 : 0, NULL, values);
	char	   *value = NULL;

	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

static void
remote_command(ShardConn *sc, const char *sql)
{
	PQclear(ShardConnExec(sc, sql, 0, NULL, NULL));
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
 * ShardSyncTable creates or checks the table on the shard of sc and sets
 * its range constraint to range_start..range_end, in the shard's remote
 * transaction (or, with autocommit, committing each statement at once).
 */
void
ShardSyncTable(ShardConn *sc, LogicalTableRow *table, int64 range_start,
			   int64 range_end, bool autocommit)
{
	char	   *relname = get_rel_name(table->relid);
	char	   *nspname = get_namespace_name(get_rel_namespace(table->relid));
	char	   *qualname = quote_qualified_identifier(nspname, relname);
	char	   *remote_oid;
	char	   *comment;
	char	   *marker;
	char	   *tenant_column = (char *) quote_identifier(table->tenant_column);
	StringInfoData sql;
	ListCell   *lc;

	if (relname == NULL)
		return;					/* dropped meanwhile */

	ShardConnBegin(sc, autocommit ? SHARD_AUTOCOMMIT : SHARD_READ);
	if (!autocommit)
		remote_command(sc, "SELECT pg_catalog.pg_advisory_xact_lock(" SHARD_DDL_LOCK ")");
	remote_oid = remote_scalar(sc, "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", qualname);
	if (remote_oid == NULL)
	{
		foreach(lc, table->shard_ddl)
			remote_command(sc, lfirst(lc));
		remote_oid = remote_scalar(sc, "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", qualname);
		if (remote_oid == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("could not create table %s on shard \"%s\"",
							qualname, ShardConnLabel(sc))));
	}
	else
		check_columns(sc, table->relid, qualname, remote_oid);

	marker = psprintf("tenant_router range " INT64_FORMAT ".." INT64_FORMAT,
					  range_start, range_end);
	{
		const char *values[1] = {remote_oid};
		PGresult   *res = ShardConnExec(sc,
										"SELECT pg_catalog.obj_description(c.oid, 'pg_constraint') "
										"FROM pg_catalog.pg_constraint c "
										"WHERE c.conrelid = $1::pg_catalog.oid "
										"AND c.conname = '" RANGE_CONSTRAINT "'",
										1, NULL, values);

		comment = (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) ?
			pstrdup(PQgetvalue(res, 0, 0)) : NULL;
		PQclear(res);
	}
	if (comment != NULL && strcmp(comment, marker) == 0)
		return;
	if (comment == NULL)
		AdoptShardTable(sc, table, qualname, range_start, range_end);

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "ALTER TABLE %s DROP CONSTRAINT IF EXISTS " RANGE_CONSTRAINT ", "
					 "ADD CONSTRAINT " RANGE_CONSTRAINT " CHECK (%s >= " INT64_FORMAT
					 " AND %s <= " INT64_FORMAT ")",
					 qualname, tenant_column, range_start, tenant_column, range_end);
	remote_command(sc, sql.data);
	resetStringInfo(&sql);
	appendStringInfo(&sql, "COMMENT ON CONSTRAINT " RANGE_CONSTRAINT " ON %s IS %s",
					 qualname, quote_literal_cstr(marker));
	remote_command(sc, sql.data);

	/*
	 * The constraint was validated: no row is outside the range, so the
	 * guard a split put on moved rows (split.c) has nothing left to guard,
	 * and would refuse rows the range now covers again.
	 */
	resetStringInfo(&sql);
	appendStringInfo(&sql, "DROP TRIGGER IF EXISTS tenant_router_moved ON %s", qualname);
	remote_command(sc, sql.data);
}

/*
 * ShardSyncAllTables makes every logical table match on one shard.  It
 * connects even when there are none, so that an unreachable shard is an
 * error before it is put into routing.
 */
void
ShardSyncAllTables(const char *shard_id, const char *dsn, int64 range_start,
				   int64 range_end)
{
	ShardConn  *sc = ShardConnGet(shard_id, dsn);
	ListCell   *lc;

	/* reference tables first: foreign keys of logical tables may need them */
	ReferenceTablesSyncShard(sc, shard_id, dsn);
	foreach(lc, CatalogLogicalTables())
		ShardSyncTable(sc, lfirst(lc), range_start, range_end, false);
}
