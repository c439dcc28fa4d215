/*-------------------------------------------------------------------------
 *
 * ddl_index.c
 *	  Indexes of logical tables, and the constraints that need one (primary
 *	  key, unique, exclusion): they live on the shards only.
 *
 * A foreign table has no indexes, so the coordinator has nothing to change;
 * yet PostgreSQL must check the definition and write the shards' text.  It
 * does both on a scratch table: an empty temporary table made LIKE the
 * logical table (same columns, types and collations), on which the index or
 * constraint is created as the user asked; its catalog entry is then checked
 * (shard_ddl_safety.c, for users who are not superusers) and deparsed
 * (pg_get_indexdef_string, pg_get_constraintdef), the scratch table's name
 * replaced by the logical table's, and the scratch table dropped.  Names are
 * chosen here when the statement gives none, as PostgreSQL chooses them,
 * avoiding the relations of the coordinator and of the first shard.
 *
 * DROP INDEX, ALTER INDEX ... RENAME (and COMMENT ON INDEX, in
 * ddl_propagation.c) name an index that is not a local relation: it is
 * looked up on the first shard, and the statement sent to every shard if it
 * belongs to a logical table.  CONCURRENTLY is refused: it cannot run inside
 * the transaction that changes every shard atomically.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_constraint.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_target.h"
#include "storage/lmgr.h"
#include "tcop/dest.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/ruleutils.h"

#include "ddl_internal.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/shard_ddl_safety.h"

#define SCRATCH "tenant_router_scratch"

/* exists_on_shards tells whether the first shard has a relation of that name */
static bool
exists_on_shards(DdlTable *table, const char *name)
{
	char	   *qualname = quote_qualified_identifier(get_namespace_name(table->nspid), name);

	return DdlFirstShardScalar("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
							   qualname) != NULL;
}

/*
 * choose_name chooses the name of an index or constraint of table as
 * PostgreSQL would (table_columns_label, then label1, label2, ...).
 */
static char *
choose_name(DdlTable *table, List *colnames, const char *label)
{
	StringInfoData cols;
	ListCell   *lc;
	int			pass;

	initStringInfo(&cols);
	foreach(lc, colnames)
	{
		if (cols.len > 0)
			appendStringInfoChar(&cols, '_');
		appendStringInfoString(&cols, (char *) lfirst(lc));
		if (cols.len >= NAMEDATALEN)
			break;
	}
	for (pass = 0;; pass++)
	{
		char		modlabel[NAMEDATALEN];
		char	   *name;

		if (pass == 0)
			strlcpy(modlabel, label, sizeof(modlabel));
		else
			snprintf(modlabel, sizeof(modlabel), "%s%d", label, pass);
		name = makeObjectName(table->relname, cols.len > 0 ? cols.data : NULL, modlabel);
		if (!OidIsValid(get_relname_relid(name, table->nspid)) &&
			!exists_on_shards(table, name))
			return name;
	}
}

/* element_names returns the column names an index is named after */
static List *
element_names(List *elements)
{
	List	   *names = NIL;
	ListCell   *lc;

	foreach(lc, elements)
	{
		Node	   *node = lfirst(lc);
		IndexElem  *elem;

		if (IsA(node, List))	/* an exclusion: (element, operator) */
			node = linitial((List *) node);
		if (IsA(node, String))
		{
			names = lappend(names, strVal(node));
			continue;
		}
		elem = castNode(IndexElem, node);
		if (elem->indexcolname)
			names = lappend(names, elem->indexcolname);
		else if (elem->name)
			names = lappend(names, elem->name);
		else
			names = lappend(names, FigureIndexColname(elem->expr));
	}
	return names;
}

/* run_internal runs a statement of ours through ProcessUtility */
static void
run_internal(DdlCall *call, Node *stmt)
{
	PlannedStmt *pstmt = makeNode(PlannedStmt);

	pstmt->commandType = CMD_UTILITY;
	pstmt->utilityStmt = stmt;
	pstmt->stmt_location = -1;
	ProcessUtility(pstmt, call->queryString, false, PROCESS_UTILITY_SUBCOMMAND,
				   NULL, NULL, None_Receiver, NULL);
}

/* spi_run runs one statement of ours through SPI */
static void
spi_run(const char *sql)
{
	SPI_connect();
	if (SPI_execute(sql, false, 0) < 0)
		elog(ERROR, "tenant_router: command failed: %s", sql);
	SPI_finish();
}

/* scratch_create makes the scratch table LIKE table and returns its OID */
static Oid
scratch_create(DdlTable *table)
{
	if (OidIsValid(RangeVarGetRelid(makeRangeVar("pg_temp", SCRATCH, -1), NoLock, true)))
		spi_run("DROP TABLE pg_temp." SCRATCH);
	spi_run(psprintf("CREATE TEMPORARY TABLE " SCRATCH " (LIKE %s)", table->qualname));
	return RangeVarGetRelid(makeRangeVar("pg_temp", SCRATCH, -1), NoLock, false);
}

static void
scratch_drop(void)
{
	spi_run("DROP TABLE pg_temp." SCRATCH);
}

/*
 * DdlCreateIndex runs CREATE INDEX on a logical table: on every shard.
 */
void
DdlCreateIndex(DdlCall *call, IndexStmt *stmt, DdlTable *table)
{
	IndexStmt  *copy;
	Oid			scratch;
	Oid			indexoid;
	char	   *name;
	char	   *definition;
	char	   *rest;
	char	   *text;
	int			nestlevel;

	if (stmt->concurrent)
		DdlRefuse("CREATE INDEX CONCURRENTLY", table,
				  "It cannot run inside a transaction, so it could not create the index on every shard atomically.",
				  "Run CREATE INDEX without CONCURRENTLY (each shard's table takes no writes while its index builds), or build the index CONCURRENTLY on each shard by hand.");
	if (stmt->tableSpace != NULL)
		DdlRefuse("CREATE INDEX ... TABLESPACE", table,
				  "tenant_router does not manage the shards' tablespaces.", NULL);
	DdlRequireOwner(table);
	LockRelationOid(table->relid, ShareUpdateExclusiveLock);

	name = stmt->idxname ? stmt->idxname :
		choose_name(table, element_names(stmt->indexParams), "idx");

	scratch = scratch_create(table);
	copy = copyObject(stmt);
	copy->relation = makeRangeVar("pg_temp", SCRATCH, -1);
	copy->idxname = SCRATCH "_index";
	copy->if_not_exists = false;
	run_internal(call, (Node *) copy);
	indexoid = get_relname_relid(SCRATCH "_index", get_rel_namespace(scratch));

	nestlevel = EnterRemoteSqlSettings();
	definition = pg_get_indexdef_string(indexoid);
	LeaveRemoteSqlSettings(nestlevel);
	/* "CREATE [UNIQUE] INDEX <scratch index> ON <scratch table> USING ..." */
	rest = strstr(definition, " ON ");
	rest = rest ? strstr(rest, " USING ") : NULL;
	if (strncmp(definition, "CREATE ", 7) != 0 || rest == NULL)
		elog(ERROR, "tenant_router: unexpected index definition: %s", definition);
	text = psprintf("CREATE %sINDEX %s%s ON %s%s", stmt->unique ? "UNIQUE " : "",
					stmt->if_not_exists ? "IF NOT EXISTS " : "",
					quote_identifier(name), table->qualname, rest);

	if (!DdlUserTrusted())
		ShardCheckIndex(indexoid, psprintf("index \"%s\"", name), table->relid, text);
	if (stmt->unique && !DdlIndexHasTenant(table, indexoid))
		DdlWarnUniqueness(table, list_make1(psprintf("unique index \"%s\"", name)));
	scratch_drop();
	DdlSendToShards(table, list_make1(text));
}

/*
 * DdlIndexConstraint returns the shards' text of ALTER TABLE ... ADD a
 * primary key, unique or exclusion constraint.
 */
char *
DdlIndexConstraint(DdlTable *table, Constraint *constraint)
{
	AlterTableStmt *stmt = makeNode(AlterTableStmt);
	AlterTableCmd *cmd = makeNode(AlterTableCmd);
	Constraint *copy = copyObject(constraint);
	DdlCall		call = {NULL, "", PROCESS_UTILITY_SUBCOMMAND, NULL, NULL, None_Receiver, NULL};
	const char *kind;
	const char *label;
	List	   *colnames;
	char	   *name;
	char	   *definition;
	Oid			scratch;
	Oid			conoid;
	int			nestlevel;

	switch (constraint->contype)
	{
		case CONSTR_PRIMARY:
			kind = "primary key";
			label = "pkey";
			colnames = NIL;
			break;
		case CONSTR_UNIQUE:
			kind = "unique constraint";
			label = "key";
			colnames = element_names(constraint->keys);
			break;
		default:
			kind = "exclusion constraint";
			label = "excl";
			colnames = element_names(constraint->exclusions);
			break;
	}
	name = constraint->conname ? constraint->conname : choose_name(table, colnames, label);

	scratch = scratch_create(table);
	copy->conname = SCRATCH "_constraint";
	cmd->subtype = AT_AddConstraint;
	cmd->def = (Node *) copy;
	stmt->relation = makeRangeVar("pg_temp", SCRATCH, -1);
	stmt->cmds = list_make1(cmd);
	stmt->objtype = OBJECT_TABLE;
	run_internal(&call, (Node *) stmt);
	conoid = get_relation_constraint_oid(scratch, SCRATCH "_constraint", false);

	nestlevel = EnterRemoteSqlSettings();
	definition = TextDatumGetCString(DirectFunctionCall1(pg_get_constraintdef,
														 ObjectIdGetDatum(conoid)));
	LeaveRemoteSqlSettings(nestlevel);

	if (!DdlUserTrusted())
		ShardCheckConstraint(conoid, name, table->relid);
	if (!DdlIndexHasTenant(table, get_constraint_index(conoid)))
		DdlWarnUniqueness(table, list_make1(psprintf("%s \"%s\"", kind, name)));
	scratch_drop();
	return psprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", table->qualname,
					quote_identifier(name), definition);
}

/*
 * DdlDropIndexes runs DROP INDEX naming indexes of logical tables: local
 * indexes are dropped here, the others on every shard; false if none of the
 * names is an index of a logical table.
 */
bool
DdlDropIndexes(DdlCall *call, DropStmt *stmt)
{
	List	   *local = NIL;
	List	   *tables = NIL;
	List	   *indexes = NIL;
	ListCell   *lc;
	ListCell   *lc2;

	foreach(lc, stmt->objects)
	{
		DdlTable   *table = palloc(sizeof(DdlTable));
		char	   *index;

		if (DdlFindIndex(lfirst(lc), table, &index))
		{
			tables = lappend(tables, table);
			indexes = lappend(indexes, index);
		}
		else
			local = lappend(local, lfirst(lc));
	}
	if (tables == NIL)
		return false;
	if (stmt->concurrent)
		DdlRefuse("DROP INDEX CONCURRENTLY", linitial(tables),
				  "It cannot run inside a transaction, so it could not drop the index on every shard atomically.",
				  "Run DROP INDEX without CONCURRENTLY.");
	if (local != NIL)
	{
		DropStmt   *copy = copyObject(stmt);

		copy->objects = local;
		DdlRunLocal(call, (Node *) copy);
	}
	forboth(lc, tables, lc2, indexes)
	{
		DdlTable   *table = lfirst(lc);

		DdlRequireOwner(table);
		LockRelationOid(table->relid, ShareUpdateExclusiveLock);
		DdlSendToShards(table, list_make1(psprintf("DROP INDEX %s%s%s",
												   stmt->missing_ok ? "IF EXISTS " : "",
												   (char *) lfirst(lc2),
												   stmt->behavior == DROP_CASCADE ?
												   " CASCADE" : "")));
	}
	return true;
}

/*
 * DdlRenameIndex runs ALTER INDEX ... RENAME for an index of a logical
 * table, on every shard; false if the index is not one.
 */
bool
DdlRenameIndex(DdlCall *call, RenameStmt *stmt)
{
	DdlTable	table;
	List	   *names = list_make1(makeString(stmt->relation->relname));
	char	   *index;

	if (stmt->relation->schemaname != NULL)
		names = lcons(makeString(stmt->relation->schemaname), names);
	if (!DdlFindIndex(names, &table, &index))
		return false;
	DdlRequireOwner(&table);
	LockRelationOid(table.relid, ShareUpdateExclusiveLock);
	DdlSendToShards(&table, list_make1(psprintf("ALTER INDEX %s RENAME TO %s", index,
												quote_identifier(stmt->newname))));
	return true;
}
