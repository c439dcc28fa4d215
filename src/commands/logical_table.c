/*-------------------------------------------------------------------------
 *
 * logical_table.c
 *	  logical_table_add(): makes a table logical, its rows living on the
 *	  shards.
 *
 * An ordinary (empty) table is replaced by a foreign table of server
 * tenant_router with the same name, columns, defaults, owner, privileges and
 * comment; sequences it owned stay, owned by the new table, so ids keep
 * coming from the coordinator.  Before that, the table is created on every
 * shard from the statements captured here (columns, keys, indexes; defaults
 * stay on the coordinator), or an existing copy is checked, and each copy
 * gets its range constraint.  A foreign table of server tenant_router is
 * registered as it is.
 *
 * What cannot be carried over faithfully is refused with an error that
 * says what to do: rows (they would have to move in one transaction to
 * several shards), dependent views, rules, triggers, foreign keys, row level
 * security, identity columns, inheritance.  The one foreign key that holds
 * on each shard, to a reference table, cannot stay on the coordinator (it
 * would reference a foreign table): reference_table_add() kept it aside in
 * tenant_router.reference_foreign_key, and it is shipped to the shards here
 * with the table's other definitions.
 *
 * reference_table_add() (reference_table.c) converts its table with the
 * same functions (logical_table_internal.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "foreign/fdwapi.h"
#include "foreign/foreign.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "ddl_internal.h"
#include "logical_table_internal.h"
#include "tenant_router/adopt.h"
#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_ddl.h"
#include "tenant_router/shard_ddl_safety.h"

PG_FUNCTION_INFO_V1(tenant_router_logical_table_add);

/* spi_strings runs a query and returns its first column as strings */
static List *
spi_strings(const char *sql, Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	List	   *result = NIL;
	uint64		i;

	if (SPI_execute_with_args(sql, 1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: query failed: %s", sql);
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (value != NULL)
			result = lappend(result, value);
	}
	return result;
}

static void
spi_command(const char *sql)
{
	if (SPI_execute(sql, false, 0) < 0)
		elog(ERROR, "tenant_router: command failed: %s", sql);
}

/* LogicalTableSpiStrings and LogicalTableSpiCommand: the two above, for reference_table.c */
List *
LogicalTableSpiStrings(const char *sql, Oid relid)
{
	return spi_strings(sql, relid);
}

void
LogicalTableSpiCommand(const char *sql)
{
	spi_command(sql);
}

static void
refuse(Relation rel, bool reference, const char *what, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot make table \"%s\" %s: %s", RelationGetRelationName(rel),
					reference ? "a reference table" : "logical", what),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * LogicalTableCheckConvertible refuses an ordinary table whose conversion
 * into a foreign table would lose something.  For a reference table
 * (reference), rows are copied to the shards, and foreign keys that
 * reference it are reference_table_add()'s to keep.
 */
void
LogicalTableCheckConvertible(Relation rel, const char *qualname, bool reference)
{
	Oid			relid = RelationGetRelid(rel);
	List	   *found;
	int			i;

	found = reference ? NIL :
		spi_strings(psprintf("SELECT 1 FROM ONLY %s LIMIT 1", qualname), relid);
	if (found != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot make table \"%s\" logical: it has rows",
						RelationGetRelationName(rel)),
				 errdetail("logical_table_add() moves no rows: rows of one table may belong to several shards."),
				 errhint("Copy the rows aside, empty the table, call logical_table_add(), then insert the rows through the logical table.")));

	found = spi_strings("SELECT inhrelid::regclass::text FROM pg_catalog.pg_inherits "
						"WHERE inhrelid = $1 OR inhparent = $1", relid);
	if (found != NIL)
		refuse(rel, reference, "it takes part in table inheritance", NULL);

	found = spi_strings("SELECT ev_class::regclass::text FROM pg_catalog.pg_rewrite r "
						"JOIN pg_catalog.pg_depend d ON d.objid = r.oid "
						"AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass "
						"WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass "
						"AND d.refobjid = $1 ORDER BY 1", relid);
	if (found != NIL)
		refuse(rel, reference,
			   psprintf("view or rule \"%s\" depends on it", (char *) linitial(found)),
			   reference ?
			   "Drop the dependent views, call reference_table_add(), then create them again." :
			   "Drop the dependent views, call logical_table_add(), then create them again.");

	/* foreign keys of the table itself */
	found = spi_strings("SELECT c.conname || ' ' || c.confrelid::pg_catalog.regclass::text "
						"FROM pg_catalog.pg_constraint c "
						"WHERE c.contype = 'f' AND c.conrelid = $1 ORDER BY c.conname", relid);
	if (found != NIL)
	{
		char	   *name = pstrdup(linitial(found));
		char	   *target = strchr(name, ' ');

		*target++ = '\0';
		refuse(rel, reference,
			   psprintf("foreign key \"%s\" references table %s", name, target),
			   reference ?
			   "A reference table cannot reference another table; drop the foreign key first." :
			   psprintf("A foreign key holds on each shard only if it references a reference table: call reference_table_add('%s') first, which keeps the foreign key for the shards, or drop the foreign key.",
						target));
	}
	/* foreign keys that reference it: only ordinary tables can hold them */
	found = spi_strings("SELECT c.conname FROM pg_catalog.pg_constraint c "
						"WHERE c.contype = 'f' AND c.confrelid = $1 "
						"AND c.conrelid <> $1 ORDER BY c.conname", relid);
	if (found != NIL && !reference)
		refuse(rel, reference, psprintf("foreign key \"%s\" references it", (char *) linitial(found)),
			   "Foreign keys cannot span shards; drop the foreign key first, or make this table a reference table with reference_table_add().");

	found = spi_strings("SELECT tgname FROM pg_catalog.pg_trigger "
						"WHERE tgrelid = $1 AND NOT tgisinternal", relid);
	if (found != NIL)
		refuse(rel, reference, psprintf("it has trigger \"%s\"", (char *) linitial(found)),
			   "Drop the trigger first; create it on the shards' tables if rows need it there.");

	if (rel->rd_rel->relrowsecurity)
		refuse(rel, reference, "row level security is enabled on it", NULL);

	for (i = 0; i < RelationGetDescr(rel)->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), i);

		if (!att->attisdropped && att->attidentity != '\0')
			refuse(rel, reference,
				   psprintf("column \"%s\" is an identity column", NameStr(att->attname)),
				   "Use a default from a sequence (serial or bigserial) instead.");
	}
}

/*
 * column_definitions returns the column list of a CREATE TABLE for rel:
 * with coordinator, defaults and generation expressions included (for the
 * foreign table); without, plain columns (for the shards).
 */
static char *
column_definitions(Relation rel, bool coordinator)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	StringInfoData buf;
	int			i;
	bool		first = true;

	initStringInfo(&buf);
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		appendStringInfo(&buf, "%s%s %s", first ? "" : ", ",
						 quote_identifier(NameStr(att->attname)),
						 format_type_with_typemod(att->atttypid, att->atttypmod));
		first = false;
		if (OidIsValid(att->attcollation) &&
			att->attcollation != get_typcollation(att->atttypid))
			appendStringInfo(&buf, " COLLATE %s", generate_collation_name(att->attcollation));
		if (att->attnotnull)
			appendStringInfoString(&buf, " NOT NULL");
		if (coordinator && att->atthasdef)
		{
			Oid			types[2] = {OIDOID, INT2OID};
			Datum		values[2] = {ObjectIdGetDatum(RelationGetRelid(rel)),
			Int16GetDatum(att->attnum)};
			char	   *expr;

			if (SPI_execute_with_args("SELECT pg_catalog.pg_get_expr(adbin, adrelid) "
									  "FROM pg_catalog.pg_attrdef WHERE adrelid = $1 AND adnum = $2",
									  2, types, values, NULL, true, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "tenant_router: default of column \"%s\" not found",
					 NameStr(att->attname));
			expr = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			if (att->attgenerated == ATTRIBUTE_GENERATED_STORED)
				appendStringInfo(&buf, " GENERATED ALWAYS AS (%s) STORED", expr);
			else
				appendStringInfo(&buf, " DEFAULT %s", expr);
		}
	}
	return buf.data;
}

/* index_is_unique tells whether an index is a unique one */
static bool
index_is_unique(Oid indexoid)
{
	HeapTuple	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	bool		unique;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for index %u", indexoid);
	unique = ((Form_pg_index) GETSTRUCT(tuple))->indisunique;
	ReleaseSysCache(tuple);
	return unique;
}

/*
 * lacks_tenant returns how to name a primary key, unique or exclusion
 * constraint that does not include the tenant column ('primary key "x"'),
 * or NULL.
 */
static char *
lacks_tenant(DdlTable *table, Oid conoid)
{
	HeapTuple	tuple = SearchSysCache1(CONSTROID, ObjectIdGetDatum(conoid));
	Form_pg_constraint con;
	const char *kind = NULL;
	char	   *name = NULL;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for constraint %u", conoid);
	con = (Form_pg_constraint) GETSTRUCT(tuple);
	if (con->contype == CONSTRAINT_PRIMARY)
		kind = "primary key";
	else if (con->contype == CONSTRAINT_UNIQUE)
		kind = "unique constraint";
	else if (con->contype == CONSTRAINT_EXCLUSION)
		kind = "exclusion constraint";
	if (kind != NULL && OidIsValid(con->conindid) && !DdlIndexHasTenant(table, con->conindid))
		name = psprintf("%s \"%s\"", kind, NameStr(con->conname));
	ReleaseSysCache(tuple);
	return name;
}

/*
 * LogicalTableShardDdl returns the statements that create rel on a shard:
 * schema, table, constraints (keys, checks, exclusions) and the other
 * indexes.  Unless trusted, each definition must be safe to ship
 * (shard_ddl_safety.c).  A key that lacks tenant_column is told to hold on
 * each shard separately; tenant_column NULL (a reference table, whose
 * copies are whole): nothing to tell.
 */
List *
LogicalTableShardDdl(Relation rel, const char *nspname, const char *qualname, bool trusted,
					 const char *tenant_column)
{
	DdlTable	table = {RelationGetRelid(rel), RelationGetRelationName(rel),
	RelationGetNamespace(rel), (char *) qualname, (char *) tenant_column};
	List	   *per_shard = NIL;
	char	   *name;
	Oid			relid = RelationGetRelid(rel);
	List	   *ddl = NIL;
	ListCell   *lc;

	ddl = lappend(ddl, psprintf("CREATE SCHEMA IF NOT EXISTS %s", quote_identifier(nspname)));
	ddl = lappend(ddl, psprintf("CREATE TABLE %s (%s)", qualname,
								column_definitions(rel, false)));
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		return ddl;

	foreach(lc, spi_strings("SELECT oid FROM pg_catalog.pg_constraint "
							"WHERE conrelid = $1 AND contype IN ('p', 'u', 'c', 'x') "
							"ORDER BY contype = 'c', oid", relid))
	{
		Oid			conoid = atooid(lfirst(lc));

		if (!trusted)
			ShardCheckConstraint(conoid, NULL, InvalidOid);
		if (tenant_column != NULL && (name = lacks_tenant(&table, conoid)) != NULL)
			per_shard = lappend(per_shard, name);
		ddl = lappend(ddl, pg_get_constraintdef_command(conoid));
	}
	foreach(lc, spi_strings("SELECT i.indexrelid FROM pg_catalog.pg_index i "
							"WHERE i.indrelid = $1 AND NOT EXISTS ("
							"SELECT 1 FROM pg_catalog.pg_constraint c "
							"WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) "
							"ORDER BY i.indexrelid", relid))
	{
		Oid			indexoid = atooid(lfirst(lc));

		if (!trusted)
			ShardCheckIndex(indexoid, psprintf("index \"%s\"", get_rel_name(indexoid)),
							relid, NULL);
		if (tenant_column != NULL && index_is_unique(indexoid) &&
			!DdlIndexHasTenant(&table, indexoid))
			per_shard = lappend(per_shard,
								psprintf("unique index \"%s\"", get_rel_name(indexoid)));
		ddl = lappend(ddl, pg_get_indexdef_string(indexoid));
	}
	if (tenant_column != NULL)
		DdlWarnUniqueness(&table, per_shard);
	return ddl;
}

/*
 * LogicalTableConvertToForeign replaces the ordinary table rel (closing
 * it) by a foreign table of server tenant_router and returns the new
 * table's OID.
 */
Oid
LogicalTableConvertToForeign(Relation rel, const char *qualname)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			nspid = RelationGetNamespace(rel);
	char	   *relname = pstrdup(RelationGetRelationName(rel));
	char	   *owner = GetUserNameFromId(rel->rd_rel->relowner, false);
	char	   *columns = column_definitions(rel, true);
	List	   *sequences;
	List	   *grants;
	List	   *comment;
	ListCell   *lc;

	/* sequences owned by a column, as "sequence column" pairs */
	sequences = spi_strings("SELECT d.objid::pg_catalog.regclass::text || ' ' || "
							"pg_catalog.quote_ident(a.attname) "
							"FROM pg_catalog.pg_depend d "
							"JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
							"JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid "
							"AND a.attnum = d.refobjsubid "
							"WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
							"AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass "
							"AND d.refobjid = $1 AND d.deptype = 'a'", relid);
	/* privileges of others than the owner, table and column level, as GRANTs */
	grants = spi_strings(psprintf("SELECT 'GRANT ' || a.privilege_type || ' ON TABLE ' || %s || ' TO ' || "
						 "CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
						 "ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END || "
						 "CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END "
						 "FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a "
						 "WHERE c.oid = $1 AND a.grantee <> c.relowner "
						 "UNION ALL "
						 "SELECT 'GRANT ' || a.privilege_type || ' (' || pg_catalog.quote_ident(t.attname) || "
						 "') ON TABLE ' || %s || ' TO ' || "
						 "CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
						 "ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END || "
						 "CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END "
						 "FROM pg_catalog.pg_attribute t, pg_catalog.aclexplode(t.attacl) a "
						 "WHERE t.attrelid = $1 AND t.attnum > 0 AND NOT t.attisdropped",
								  quote_literal_cstr(qualname), quote_literal_cstr(qualname)),
						 relid);
	comment = spi_strings("SELECT pg_catalog.obj_description($1, 'pg_class')", relid);

	foreach(lc, sequences)
	{
		char	   *seq = pstrdup(lfirst(lc));

		*strchr(seq, ' ') = '\0';
		spi_command(psprintf("ALTER SEQUENCE %s OWNED BY NONE", seq));
	}

	relation_close(rel, NoLock);
	spi_command(psprintf("DROP TABLE %s", qualname));
	spi_command(psprintf("CREATE FOREIGN TABLE %s (%s) SERVER " TENANT_ROUTER_SERVER,
						 qualname, columns));
	spi_command(psprintf("ALTER FOREIGN TABLE %s OWNER TO %s", qualname,
						 quote_identifier(owner)));
	foreach(lc, sequences)
	{
		char	   *seq = pstrdup(lfirst(lc));
		char	   *col = strchr(seq, ' ');

		*col++ = '\0';
		spi_command(psprintf("ALTER SEQUENCE %s OWNED BY %s.%s", seq, qualname, col));
	}
	foreach(lc, grants)
		spi_command(lfirst(lc));
	if (comment != NIL)
		spi_command(psprintf("COMMENT ON FOREIGN TABLE %s IS %s", qualname,
							 quote_literal_cstr(linitial(comment))));

	return get_relname_relid(relname, nspid);
}

/*
 * take_reference_foreign_keys returns the foreign keys of relid to
 * reference tables that reference_table_add() kept aside, and forgets them:
 * from now on they are among the table's shard statements.
 */
static List *
take_reference_foreign_keys(Oid relid)
{
	DdlCatalogAccess access;
	MemoryContext caller = CurrentMemoryContext;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	List	   *ddl = NIL;
	uint64		i;

	DdlCatalogBegin(&access);
	if (OidIsValid(get_relname_relid("reference_foreign_key",
									 get_namespace_oid(TENANT_ROUTER_SCHEMA, false))))
	{
		DdlCatalogExec("DELETE FROM tenant_router.reference_foreign_key WHERE table_id = $1 "
					   "RETURNING definition, constraint_name",
					   1, types, values, SPI_OK_DELETE_RETURNING);
		for (i = 0; i < SPI_processed; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			ddl = lappend(ddl, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
			MemoryContextSwitchTo(old);
		}
	}
	DdlCatalogEnd(&access);
	return ddl;
}

/*
 * sync_shards creates or checks the table on every shard, with its range
 * constraint, in the shards' remote transactions.
 */
static void
sync_shards(Oid relid, const char *tenant_column, List *ddl)
{
	LogicalTableRow row;
	ListCell   *lc;

	row.relid = relid;
	row.tenant_column = (char *) tenant_column;
	row.shard_ddl = ddl;
	foreach(lc, CatalogAllShards())
	{
		ShardRow   *shard = lfirst(lc);

		ShardSyncTable(ShardConnGet(shard->shard_id, shard->dsn), &row, shard, false);
	}
}

/* register_table enters relid in tenant_router.logical_table */
static void
register_table(Oid relid, const char *tenant_column, List *ddl)
{
	DdlCatalogAccess access;
	Datum	   *ddl_datums = palloc(sizeof(Datum) * (list_length(ddl) + 1));
	Oid			types[3] = {OIDOID, NAMEOID, TEXTARRAYOID};
	Datum		values[3];
	ListCell   *lc;
	int			i = 0;

	foreach(lc, ddl)
		ddl_datums[i++] = CStringGetTextDatum(lfirst(lc));
	values[0] = ObjectIdGetDatum(relid);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(tenant_column));
	values[2] = PointerGetDatum(construct_array(ddl_datums, i, TEXTOID, -1, false,
												TYPALIGN_INT));
	DdlCatalogBegin(&access);
	DdlCatalogExec("INSERT INTO tenant_router.logical_table "
				   "(table_id, tenant_column, shard_ddl) VALUES ($1, $2, $3)",
				   3, types, values, SPI_OK_INSERT);
	DdlCatalogEnd(&access);
}

/*
 * LogicalTableImported registers a foreign table that IMPORT FOREIGN SCHEMA
 * just created from a shard's logical table (fdw/import.c): its copies on
 * every shard are created or checked, as logical_table_add() does for a
 * foreign table, with the statements read from the shard.
 */
void
LogicalTableImported(ImportedTable *table)
{
	Oid			nspid = get_namespace_oid(table->nspname, false);
	Oid			relid = get_relname_relid(table->relname, nspid);
	AttrNumber	attno = get_attnum(relid, table->tenant_column);
	Oid			atttype;

	if (!OidIsValid(relid))
		elog(ERROR, "tenant_router: imported table %s.%s was not created",
			 table->nspname, table->relname);
	atttype = attno != InvalidAttrNumber ? get_atttype(relid, attno) : InvalidOid;
	if (atttype != INT2OID && atttype != INT4OID && atttype != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("tenant column \"%s\" of table %s on the shard is not of type smallint, integer or bigint",
						table->tenant_column,
						quote_qualified_identifier(table->nspname, table->relname))));
	sync_shards(relid, table->tenant_column, table->shard_ddl);
	register_table(relid, table->tenant_column, table->shard_ddl);
	CacheInvalidateRelcacheByRelid(relid);
}

/*
 * LogicalTableAdd makes relid a logical table routed by tenant_column: the
 * code of logical_table_add().
 */
static void
LogicalTableAdd(Oid relid, const char *tenant_column)
{
	Relation	rel = relation_open(relid, AccessExclusiveLock);
	char	   *nspname = get_namespace_name(RelationGetNamespace(rel));
	char	   *qualname;
	AttrNumber	attno;
	Oid			atttype;
	List	   *ddl;
	Oid			newrelid;
	int			nestlevel;

	if (!pg_class_ownercheck(relid, GetOuterUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(rel->rd_rel->relkind),
					   RelationGetRelationName(rel));

	if (CatalogGetLogicalTable(relid) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already a logical table",
						RelationGetRelationName(rel))));

	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		!(rel->rd_rel->relkind == RELKIND_FOREIGN_TABLE &&
		  GetForeignServerIdByRelId(relid) == CatalogServerOid()))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot make \"%s\" a logical table", RelationGetRelationName(rel)),
				 errdetail("Only an ordinary table, or a foreign table of server tenant_router, can be made logical.")));

	attno = get_attnum(relid, tenant_column);
	if (attno == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						tenant_column, RelationGetRelationName(rel)),
				 errhint("Name the tenant column as the second argument of logical_table_add().")));
	atttype = get_atttype(relid, attno);
	if (atttype != INT2OID && atttype != INT4OID && atttype != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("tenant column \"%s\" must be of type smallint, integer or bigint",
						tenant_column),
				 errdetail("Column \"%s\" of relation \"%s\" is of type %s.",
						   tenant_column, RelationGetRelationName(rel),
						   format_type_be(atttype))));

	SPI_connect();
	nestlevel = EnterRemoteSqlSettings();
	qualname = quote_qualified_identifier(nspname, RelationGetRelationName(rel));
	if (rel->rd_rel->relkind == RELKIND_RELATION)
		LogicalTableCheckConvertible(rel, qualname, false);
	/*
	 * The definitions were chosen by the table's owner: a superuser calling
	 * this for a table someone else owns ships that someone's code.
	 */
	ddl = LogicalTableShardDdl(rel, nspname, qualname,
							   ShardDdlTrusted(GetOuterUserId()) &&
							   ShardDdlTrusted(rel->rd_rel->relowner),
							   tenant_column);
	/* its foreign keys to reference tables, kept aside by reference_table_add() */
	ddl = list_concat(ddl, take_reference_foreign_keys(relid));

	/* the shards first: an unreachable or different shard changes nothing */
	sync_shards(relid, tenant_column, ddl);

	if (rel->rd_rel->relkind == RELKIND_RELATION)
		newrelid = LogicalTableConvertToForeign(rel, qualname);
	else
	{
		newrelid = relid;
		relation_close(rel, NoLock);
	}
	LeaveRemoteSqlSettings(nestlevel);

	register_table(newrelid, tenant_column, ddl);	/* before SPI frees ddl */
	SPI_finish();

	/* ids drawn from now on: in this coordinator's block, above the shards' */
	AdoptSequences(newrelid, quote_qualified_identifier(nspname, get_rel_name(newrelid)), NIL);

	/* plans that used the table must be made again */
	CacheInvalidateRelcacheByRelid(newrelid);
}

Datum
tenant_router_logical_table_add(PG_FUNCTION_ARGS)
{
	LogicalTableAdd(PG_GETARG_OID(0), NameStr(*PG_GETARG_NAME(1)));
	PG_RETURN_VOID();
}
