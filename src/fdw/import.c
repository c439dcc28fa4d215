/*-------------------------------------------------------------------------
 *
 * import.c
 *	  IMPORT FOREIGN SCHEMA for server tenant_router: a coordinator takes the
 *	  logical tables from a shard.
 *
 * A shard's logical tables are its tables that carry the range constraint
 * tenant_router_range; the constraint's column is the tenant column.  For
 * each, in the schema named (or those LIMIT TO / EXCEPT keep), the shard is
 * asked for its columns and for the statements that would create it on
 * another shard (columns, keys, checks, exclusions, indexes, comment), all
 * deparsed by the shard itself under search_path = pg_catalog; the
 * coordinator then creates a foreign table with the same columns.
 * ImportedLogicalTables hands what was read to the caller (commands/), which
 * registers each table as logical once PostgreSQL has created it.
 *
 * A logical table has the same schema-qualified name on every shard: the
 * local schema must be the remote one.  OPTIONS (shard 'id') names the shard
 * to read; by default the first by shard_id.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/defrem.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/import.h"

/* the range constraint every shard table carries (commands/shard_ddl.c) */
#define RANGE_CONSTRAINT "tenant_router_range"

/* what the last import read, for ImportedLogicalTables */
static List *imported = NIL;

/* import_shard returns the shard to read: the one named, or the first */
static ShardRow *
import_shard(ImportForeignSchemaStmt *stmt)
{
	ListCell   *lc;
	char	   *shard_id = NULL;
	ShardRow   *first = NULL;

	foreach(lc, stmt->options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, "shard") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 errhint("IMPORT FOREIGN SCHEMA ... FROM SERVER tenant_router takes one option, shard: the shard to read the tables from.")));
		shard_id = defGetString(def);
	}
	if (shard_id != NULL)
	{
		ShardRow   *shard = CatalogGetShard(shard_id);

		if (shard == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("shard \"%s\" does not exist", shard_id)));
		return shard;
	}
	foreach(lc, CatalogAllShards())
	{
		ShardRow   *shard = lfirst(lc);

		if (first == NULL || strcmp(shard->shard_id, first->shard_id) < 0)
			first = shard;
	}
	if (first == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("there is no shard to import logical tables from"),
				 errhint("Add the shards with shard_add() first.")));
	return first;
}

/* wanted tells whether LIMIT TO / EXCEPT keep relname */
static bool
wanted(ImportForeignSchemaStmt *stmt, const char *relname)
{
	ListCell   *lc;

	if (stmt->list_type == FDW_IMPORT_SCHEMA_ALL)
		return true;
	foreach(lc, stmt->table_list)
		if (strcmp(((RangeVar *) lfirst(lc))->relname, relname) == 0)
			return stmt->list_type == FDW_IMPORT_SCHEMA_LIMIT_TO;
	return stmt->list_type == FDW_IMPORT_SCHEMA_EXCEPT;
}

/* remote_strings runs a query with one parameter and returns column 1 */
static List *
remote_strings(ShardConn *sc, const char *sql, const char *param)
{
	const char *values[1] = {param};
	PGresult   *res = ShardConnExec(sc, sql, 1, NULL, values);
	List	   *result = NIL;
	int			i;

	for (i = 0; i < PQntuples(res); i++)
		if (!PQgetisnull(res, i, 0))
			result = lappend(result, pstrdup(PQgetvalue(res, i, 0)));
	PQclear(res);
	return result;
}

/*
 * import_table reads one table from the shard: it returns the CREATE
 * FOREIGN TABLE statement and fills the table's shard statements.
 */
static char *
import_table(ShardConn *sc, ImportedTable *table, const char *oid)
{
	char	   *qualname = quote_qualified_identifier(table->nspname, table->relname);
	StringInfoData columns;
	ListCell   *lc;
	char	   *comment;
	List	   *comments;

	/* the columns, as the shard prints them (type names qualified) */
	initStringInfo(&columns);
	foreach(lc, remote_strings(sc,
							   "SELECT pg_catalog.quote_ident(a.attname) OPERATOR(pg_catalog.||) ' ' "
							   "OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod) "
							   "OPERATOR(pg_catalog.||) CASE WHEN a.attcollation OPERATOR(pg_catalog.<>) t.typcollation "
							   "AND a.attcollation OPERATOR(pg_catalog.<>) 0 THEN ' COLLATE ' "
							   "OPERATOR(pg_catalog.||) pg_catalog.quote_ident(cn.nspname) OPERATOR(pg_catalog.||) '.' "
							   "OPERATOR(pg_catalog.||) pg_catalog.quote_ident(co.collname) ELSE '' END "
							   "OPERATOR(pg_catalog.||) CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END "
							   "FROM pg_catalog.pg_attribute a "
							   "JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid "
							   "LEFT JOIN pg_catalog.pg_collation co ON co.oid OPERATOR(pg_catalog.=) a.attcollation "
							   "LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid OPERATOR(pg_catalog.=) co.collnamespace "
							   "WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid "
							   "AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped ORDER BY a.attnum",
							   oid))
		appendStringInfo(&columns, "%s%s", columns.len > 0 ? ", " : "", (char *) lfirst(lc));

	/* what creates it on another shard: as logical_table_add captures it */
	table->shard_ddl = list_make2(psprintf("CREATE SCHEMA IF NOT EXISTS %s",
										   quote_identifier(table->nspname)),
								  psprintf("CREATE TABLE %s (%s)", qualname, columns.data));
	foreach(lc, remote_strings(sc,
							   "SELECT pg_catalog.quote_ident(c.conname) OPERATOR(pg_catalog.||) ' ' "
							   "OPERATOR(pg_catalog.||) pg_catalog.pg_get_constraintdef(c.oid) "
							   "FROM pg_catalog.pg_constraint c "
							   "WHERE c.conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid "
							   "AND c.contype IN ('p', 'u', 'c', 'x') "
							   "AND c.conname OPERATOR(pg_catalog.<>) '" RANGE_CONSTRAINT "' "
							   "ORDER BY c.contype OPERATOR(pg_catalog.=) 'c', c.oid",
							   oid))
		table->shard_ddl = lappend(table->shard_ddl,
								   psprintf("ALTER TABLE %s ADD CONSTRAINT %s", qualname,
											(char *) lfirst(lc)));
	table->shard_ddl = list_concat(table->shard_ddl,
								   remote_strings(sc,
												  "SELECT pg_catalog.pg_get_indexdef(i.indexrelid) "
												  "FROM pg_catalog.pg_index i "
												  "WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid "
												  "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c "
												  "WHERE c.conindid OPERATOR(pg_catalog.=) i.indexrelid "
												  "AND c.conrelid OPERATOR(pg_catalog.=) i.indrelid) "
												  "ORDER BY i.indexrelid",
												  oid));
	comments = remote_strings(sc, "SELECT pg_catalog.obj_description($1::pg_catalog.oid, 'pg_class')",
							  oid);
	comment = comments != NIL ? linitial(comments) : NULL;
	if (comment != NULL)
		table->shard_ddl = lappend(table->shard_ddl,
								   psprintf("COMMENT ON TABLE %s IS %s", qualname,
											quote_literal_cstr(comment)));

	return psprintf("CREATE FOREIGN TABLE %s (%s) SERVER " TENANT_ROUTER_SERVER,
					qualname, columns.data);
}

/*
 * TrImportForeignSchema returns the CREATE FOREIGN TABLE statements for the
 * logical tables of a shard's schema; ImportedLogicalTables then returns
 * what is needed to register them.
 */
List *
TrImportForeignSchema(ImportForeignSchemaStmt *stmt, Oid serverOid)
{
	ShardRow   *shard = import_shard(stmt);
	ShardConn  *sc;
	PGresult   *res;
	const char *values[1] = {stmt->remote_schema};
	List	   *commands = NIL;
	List	   *tables = NIL;
	MemoryContext old;
	ListCell   *lc;
	int			i;

	imported = NIL;
	if (strcmp(stmt->remote_schema, stmt->local_schema) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_SCHEMA_NOT_FOUND),
				 errmsg("logical tables of schema \"%s\" cannot be imported into schema \"%s\"",
						stmt->remote_schema, stmt->local_schema),
				 errdetail("A logical table has the same schema-qualified name on the coordinator and on every shard."),
				 errhint("IMPORT FOREIGN SCHEMA %s FROM SERVER tenant_router INTO %s.",
						 quote_identifier(stmt->remote_schema),
						 quote_identifier(stmt->remote_schema))));

	sc = ShardConnGet(shard->shard_id, shard->dsn);
	ShardConnBegin(sc, SHARD_READ);
	res = ShardConnExec(sc,
						"SELECT c.oid, c.relname, a.attname "
						"FROM pg_catalog.pg_class c "
						"JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
						"JOIN pg_catalog.pg_constraint r ON r.conrelid OPERATOR(pg_catalog.=) c.oid "
						"AND r.conname OPERATOR(pg_catalog.=) '" RANGE_CONSTRAINT "' "
						"JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid "
						"AND a.attnum OPERATOR(pg_catalog.=) r.conkey[1] "
						"WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relkind = 'r' "
						"ORDER BY c.relname",
						1, NULL, values);
	for (i = 0; i < PQntuples(res); i++)
	{
		ImportedTable *table;

		if (!wanted(stmt, PQgetvalue(res, i, 1)))
			continue;
		table = palloc0(sizeof(ImportedTable));
		table->nspname = pstrdup(stmt->remote_schema);
		table->relname = pstrdup(PQgetvalue(res, i, 1));
		table->tenant_column = pstrdup(PQgetvalue(res, i, 2));
		commands = lappend(commands, import_table(sc, table, PQgetvalue(res, i, 0)));
		tables = lappend(tables, table);
	}
	PQclear(res);

	/* kept until the statement registers them, in this transaction */
	old = MemoryContextSwitchTo(TopTransactionContext);
	foreach(lc, tables)
	{
		ImportedTable *src = lfirst(lc);
		ImportedTable *dst = palloc(sizeof(ImportedTable));
		ListCell   *lc2;

		dst->nspname = pstrdup(src->nspname);
		dst->relname = pstrdup(src->relname);
		dst->tenant_column = pstrdup(src->tenant_column);
		dst->shard_ddl = NIL;
		foreach(lc2, src->shard_ddl)
			dst->shard_ddl = lappend(dst->shard_ddl, pstrdup(lfirst(lc2)));
		imported = lappend(imported, dst);
	}
	MemoryContextSwitchTo(old);
	return commands;
}

/*
 * ImportedLogicalTables returns the tables the last IMPORT FOREIGN SCHEMA of
 * this transaction read (ImportedTable *), and forgets them.
 */
List *
ImportedLogicalTables(void)
{
	List	   *tables = imported;

	imported = NIL;
	return tables;
}
