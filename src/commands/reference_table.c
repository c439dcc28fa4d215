/*-------------------------------------------------------------------------
 *
 * reference_table.c
 *	  reference_table_add(): makes a table a reference table, copied whole
 *	  to every shard; ReferenceTablesSyncShard(): the copies a shard added
 *	  later receives.
 *
 * A reference table is a small table that statements join with the rows of
 * logical tables (currencies, countries, plans): a copy on every shard lets
 * a statement pinned to one tenant run whole on that tenant's shard.  An
 * ordinary table is created on every shard database from the statements
 * captured here (columns, keys, indexes; defaults stay on the coordinator),
 * its rows copied there, all in the shards' remote transactions as writes
 * (two-phase commit with several shards: every shard gets the table and its
 * rows, or none does); then it is replaced by a foreign table of server
 * tenant_router with the same name, columns, defaults, owner, privileges
 * and comment (logical_table.c's conversion), registered in
 * tenant_router.reference_table.  A foreign table of server tenant_router
 * (a second coordinator's) is registered as it is: shards that lack the
 * table get a copy of the first one that has it, and the copies must hold
 * the same rows.
 *
 * Foreign keys that reference the table from ordinary tables cannot stay
 * on the coordinator (a foreign key cannot reference a foreign table): they
 * are dropped there and kept in tenant_router.reference_foreign_key, and
 * logical_table_add() of the referencing table ships them to the shards,
 * where they hold on each shard against its copy.
 *
 * A shard added later gets every reference table before its logical tables
 * (whose foreign keys may need them), with the rows of the first other
 * shard database; a shard whose copy exists is checked instead (columns,
 * then rows: an empty copy is filled, one that holds other rows is an
 * error), which is also what a range change of the shard does.
 *
 * The new database of an online operation (commands/operation.c) gets its
 * copies before it is in the catalog (ReferenceTablesSyncShard), and at the
 * operation's catalog flip the rows written since (ReferenceTablesRefresh).
 *
 * Invariant: every shard database in the catalog holds a copy of every
 * reference table, with the same rows; the code shipped to the shards
 * passes shard_ddl_safety.c unless the caller and the table's owner are
 * superusers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"

#include "ddl_internal.h"
#include "logical_table_internal.h"
#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/fdw.h"
#include "tenant_router/guc.h"
#include "tenant_router/reference_catalog.h"
#include "tenant_router/reference_table.h"
#include "tenant_router/remote_io.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_ddl_safety.h"

PG_FUNCTION_INFO_V1(tenant_router_reference_table_add);

/* advisory lock key under which coordinators change a shard's tables (shard_ddl.c's) */
#define SHARD_DDL_LOCK "7481029373"

/* remote_value returns the first column of the first row, or NULL */
static char *
remote_value(ShardConn *sc, const char *sql, const char *param)
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

/* columns_text describes rel's columns as the shards' query below does */
static char *
columns_text(Relation rel)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	StringInfoData buf;
	int			nestlevel = EnterRemoteSqlSettings();
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		appendStringInfo(&buf, "%s%s %s", buf.len > 0 ? ", " : "",
						 quote_identifier(NameStr(att->attname)),
						 format_type_with_typemod(att->atttypid, att->atttypmod));
	}
	LeaveRemoteSqlSettings(nestlevel);
	return buf.data;
}

/*
 * check_columns raises an error when the shard's copy of rel (remote_oid
 * there) has other columns than the coordinator's table.
 */
static void
check_columns(ShardConn *sc, Relation rel, const char *qualname, const char *remote_oid)
{
	char	   *local = columns_text(rel);
	char	   *remote = remote_value(sc,
									  "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname) "
									  "OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) "
									  "pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' "
									  "ORDER BY a.attnum) FROM pg_catalog.pg_attribute a "
									  "WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 "
									  "AND NOT a.attisdropped", remote_oid);

	if (remote == NULL || strcmp(remote, local) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table %s on shard \"%s\" does not match the coordinator",
						qualname, ShardConnLabel(sc)),
				 errdetail("Its columns are (%s) on the shard and (%s) on the coordinator.",
						   remote ? remote : "", local),
				 errhint("Make the shard's table match, or drop it there so that it is created.")));
}

/*
 * copy_digest returns the row count and a digest of the rows of a shard's
 * copy, as "count digest": equal copies give equal texts.
 */
static char *
copy_digest(ShardConn *sc, const char *qualname)
{
	return remote_value(sc,
						psprintf("SELECT pg_catalog.count(*) OPERATOR(pg_catalog.||) ' ' "
								 "OPERATOR(pg_catalog.||) pg_catalog.md5(COALESCE("
								 "pg_catalog.string_agg(t::pg_catalog.text, E'\\n' "
								 "ORDER BY t::pg_catalog.text COLLATE pg_catalog.\"C\"), '')) "
								 "FROM %s t", qualname), NULL);
}

/* open_copy prepares a COPY of every column of rel into the shards' copies */
static TrCopy *
open_copy(Relation rel, const char *qualname, List **attrs)
{
	LogicalTable table;

	memset(&table, 0, sizeof(table));
	table.relid = RelationGetRelid(rel);
	table.is_logical = true;
	table.is_reference = true;
	table.remote_name = (char *) qualname;
	*attrs = TrAllColumns(rel);
	return TrCopyBegin(rel, &table, *attrs);
}

/*
 * copy_rows copies every row of a reference table (rel, its foreign
 * table) from the copy on source to the one on target, through this
 * coordinator, and returns the number of rows.
 */
static uint64
copy_rows(ShardConn *source, ShardConn *target, Relation rel, const char *qualname)
{
	List	   *attrs;
	TrCopy	   *copy = open_copy(rel, qualname, &attrs);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	AttInMetadata *attinmeta = TupleDescGetAttInMetadata(tupdesc);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(tupdesc, &TTSOpsVirtual);
	StringInfoData sql;
	ShardStream *stream;
	PGresult   *row;
	ListCell   *lc;
	uint64		rows = 0;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	foreach(lc, attrs)
		appendStringInfo(&sql, "%s%s", lc == list_head(attrs) ? "" : ", ",
						 quote_identifier(NameStr(TupleDescAttr(tupdesc, lfirst_int(lc) - 1)->attname)));
	appendStringInfo(&sql, " FROM %s", qualname);

	ShardConnBegin(source, SHARD_READ);
	stream = ShardStreamOpen(source, sql.data, 0, NULL, NULL, false);
	while ((row = ShardStreamNext(stream)) != NULL)
	{
		int			i;

		ExecClearTuple(slot);
		for (i = 0; i < tupdesc->natts; i++)
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
		}
		RemoteRowDecode(row, 0, attrs, attinmeta, slot->tts_values, slot->tts_isnull, NULL);
		ExecStoreVirtualTuple(slot);
		TrCopyRow(copy, target, slot);
		rows++;
	}
	ShardStreamClose(stream);
	(void) TrCopyEnd(copy);
	ExecDropSingleTupleTableSlot(slot);
	return rows;
}

/*
 * sync_copy makes the copy of one reference table on the shard of sc
 * match: created from ddl where missing, checked where it exists; its rows
 * are those of the copy on source (NULL: no other shard database, the copy
 * keeps what it holds).
 */
static void
sync_copy(ShardConn *sc, Relation rel, List *ddl, ShardConn *source)
{
	char	   *qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													  RelationGetRelationName(rel));
	char	   *remote_oid;
	ListCell   *lc;

	remote_oid = remote_value(sc, "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", qualname);
	if (remote_oid == NULL)
	{
		foreach(lc, ddl)
			remote_command(sc, lfirst(lc));
		if (source != NULL)
			(void) copy_rows(source, sc, rel, qualname);
		return;
	}
	check_columns(sc, rel, qualname, remote_oid);
	if (source != NULL)
	{
		char	   *theirs;
		char	   *ours;

		ShardConnBegin(source, SHARD_READ);
		theirs = copy_digest(source, qualname);
		ours = copy_digest(sc, qualname);
		if (strcmp(theirs, ours) == 0)
			return;
		if (strncmp(ours, "0 ", 2) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("reference table %s on shard \"%s\" holds other rows than on shard \"%s\"",
							qualname, ShardConnLabel(sc), ShardConnLabel(source)),
					 errdetail("Every shard holds the same copy of a reference table."),
					 errhint("Empty the table on shard \"%s\", or drop it there, so that the rows are copied to it.",
							 ShardConnLabel(sc))));
		(void) copy_rows(source, sc, rel, qualname);
	}
}

/*
 * ReferenceTablesSyncShard gives the shard shard_id (connection sc, DSN
 * dsn), in the catalog already, a copy of every reference table, in its
 * remote transaction: called for a shard added, or whose range changed,
 * before its logical tables are made to match (commands/shard_ddl.c).
 */
void
ReferenceTablesSyncShard(ShardConn *sc, const char *shard_id, const char *dsn)
{
	List	   *tables = CatalogReferenceTables();
	ShardConn  *source = NULL;
	ListCell   *lc;

	if (tables == NIL)
		return;
	foreach(lc, CatalogAllShards())
	{
		ShardRow   *shard = lfirst(lc);

		if (strcmp(shard->dsn, dsn) != 0)
		{
			if (source == NULL)
				source = ShardConnGet(shard->shard_id, shard->dsn);
		}
		else if (strcmp(shard->shard_id, shard_id) != 0)
			return;				/* its database has the copies of that shard */
	}

	/* as for logical tables; copying rows makes the shard a writer */
	ShardConnBegin(sc, SHARD_READ);
	remote_command(sc, "SELECT pg_catalog.pg_advisory_xact_lock(" SHARD_DDL_LOCK ")");
	foreach(lc, tables)
	{
		ReferenceTableRow *row = lfirst(lc);
		Relation	rel = relation_open(row->relid, AccessShareLock);

		sync_copy(sc, rel, row->shard_ddl, source);
		relation_close(rel, AccessShareLock);
	}
}

/*
 * ReferenceTablesRefresh makes the copies on the database of target (an
 * online operation's new database, not in the catalog yet) equal to those
 * on source, a shard database of the catalog, until the end of the
 * transaction: each reference table is locked against writes on this
 * coordinator (SHARE: reads go on), and a copy that differs from source's
 * is emptied and filled again, the target's triggers and foreign keys off
 * (session_replication_role replica: the rows are source's, which satisfy
 * them there).
 */
void
ReferenceTablesRefresh(ShardConn *target, ShardConn *source)
{
	ListCell   *lc;

	/*
	 * The moving tenants' writes wait for the flip: the locks are waited for
	 * as long as the shards' DDL is (a session idle in a transaction that
	 * wrote a reference row would hold the flip back without end).
	 */
	if (TenantRouterShardLockTimeout > 0)
		(void) set_config_option("lock_timeout", psprintf("%d", TenantRouterShardLockTimeout),
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	foreach(lc, CatalogReferenceTables())
	{
		ReferenceTableRow *row = lfirst(lc);
		Relation	rel = relation_open(row->relid, ShareLock);
		char	   *qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
														  RelationGetRelationName(rel));
		char	   *theirs;

		ShardConnBegin(source, SHARD_READ);
		ShardConnBegin(target, SHARD_READ);
		theirs = copy_digest(source, qualname);
		if (strcmp(theirs, copy_digest(target, qualname)) != 0)
		{
			ShardConnBegin(target, SHARD_WRITE);
			remote_command(target, "SELECT pg_catalog.set_config('session_replication_role', 'replica', true)");
			remote_command(target, psprintf("DELETE FROM %s", qualname));
			(void) copy_rows(source, target, rel, qualname);
		}
		relation_close(rel, NoLock);
	}
}

/*
 * keep_foreign_keys moves the foreign keys that reference relid (named
 * relname, not open: dropping them changes its triggers) from other tables
 * into tenant_router.reference_foreign_key, as the statements that create
 * them on a shard, and drops them on the coordinator.
 */
static void
keep_foreign_keys(Oid relid, const char *relname, bool trusted)
{
	List	   *found;
	ListCell   *lc;

	/* as "constraint table owner" OIDs */
	found = LogicalTableSpiStrings("SELECT c.oid::pg_catalog.text OPERATOR(pg_catalog.||) ' ' "
								   "OPERATOR(pg_catalog.||) c.conrelid::pg_catalog.oid::pg_catalog.text "
								   "OPERATOR(pg_catalog.||) ' ' "
								   "OPERATOR(pg_catalog.||) r.relowner::pg_catalog.text "
								   "FROM pg_catalog.pg_constraint c "
								   "JOIN pg_catalog.pg_class r ON r.oid = c.conrelid "
								   "WHERE c.contype = 'f' AND c.confrelid = $1 "
								   "AND c.conrelid <> $1 ORDER BY c.oid", relid);
	foreach(lc, found)
	{
		Oid			conoid;
		Oid			conrelid;
		Oid			owner;
		char	   *conname;
		DdlCatalogAccess access;
		Oid			types[3] = {OIDOID, NAMEOID, TEXTOID};
		Datum		values[3];
		char	   *referencing;

		if (sscanf(lfirst(lc), "%u %u %u", &conoid, &conrelid, &owner) != 3)
			elog(ERROR, "tenant_router: unexpected foreign key row \"%s\"", (char *) lfirst(lc));
		conname = get_constraint_name(conoid);
		referencing = quote_qualified_identifier(get_namespace_name(get_rel_namespace(conrelid)),
												 get_rel_name(conrelid));
		if (!trusted || !ShardDdlTrusted(owner))
			ShardCheckConstraint(conoid, NULL, InvalidOid);
		values[0] = ObjectIdGetDatum(conrelid);
		values[1] = DirectFunctionCall1(namein, CStringGetDatum(conname));
		values[2] = CStringGetTextDatum(pg_get_constraintdef_command(conoid));
		DdlCatalogBegin(&access);
		DdlCatalogExec("INSERT INTO tenant_router.reference_foreign_key "
					   "(table_id, constraint_name, definition) VALUES ($1, $2, $3)",
					   3, types, values, SPI_OK_INSERT);
		DdlCatalogEnd(&access);
		LogicalTableSpiCommand(psprintf("ALTER TABLE %s DROP CONSTRAINT %s", referencing,
										quote_identifier(conname)));
		ereport(NOTICE,
				(errmsg("foreign key \"%s\" of table %s is kept for the shards",
						conname, referencing),
				 errdetail("A foreign key cannot reference a foreign table on the coordinator."),
				 errhint("logical_table_add('%s') creates it on every shard, where it holds against the shard's copy of \"%s\".",
						 referencing, relname)));
	}
}

/* register_table enters relid in tenant_router.reference_table */
static void
register_table(Oid relid, List *ddl)
{
	DdlCatalogAccess access;
	Datum	   *ddl_datums = palloc(sizeof(Datum) * (list_length(ddl) + 1));
	Oid			types[2] = {OIDOID, TEXTARRAYOID};
	Datum		values[2];
	ListCell   *lc;
	int			i = 0;

	foreach(lc, ddl)
		ddl_datums[i++] = CStringGetTextDatum(lfirst(lc));
	values[0] = ObjectIdGetDatum(relid);
	values[1] = PointerGetDatum(construct_array(ddl_datums, i, TEXTOID, -1, false,
												TYPALIGN_INT));
	DdlCatalogBegin(&access);
	DdlCatalogExec("INSERT INTO tenant_router.reference_table (table_id, shard_ddl) "
				   "VALUES ($1, $2)", 2, types, values, SPI_OK_INSERT);
	DdlCatalogEnd(&access);
}

/*
 * create_everywhere creates rel on every shard database from ddl (checked
 * where it exists, which must then be empty) and copies its rows there.
 */
static void
create_everywhere(Relation rel, const char *qualname, List *ddl, List *conns)
{
	List	   *attrs;
	TrCopy	   *copy;
	TableScanDesc scan;
	TupleTableSlot *slot;
	ListCell   *lc;

	foreach(lc, conns)
	{
		ShardConn  *sc = lfirst(lc);
		char	   *remote_oid;
		ListCell   *dc;

		remote_command(sc, "SELECT pg_catalog.pg_advisory_xact_lock(" SHARD_DDL_LOCK ")");
		remote_oid = remote_value(sc, "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
								  qualname);
		if (remote_oid == NULL)
		{
			foreach(dc, ddl)
				remote_command(sc, lfirst(dc));
			continue;
		}
		check_columns(sc, rel, qualname, remote_oid);
		if (strncmp(copy_digest(sc, qualname), "0 ", 2) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s on shard \"%s\" already has rows", qualname, ShardConnLabel(sc)),
					 errdetail("reference_table_add() copies the coordinator's rows to every shard."),
					 errhint("Empty the table on the shard, or drop it there, then call reference_table_add() again.")));
	}

	/* the rows, streamed to a COPY on every shard at once */
	copy = open_copy(rel, qualname, &attrs);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		foreach(lc, conns)
			TrCopyRow(copy, lfirst(lc), slot);
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	(void) TrCopyEnd(copy);
}

/*
 * register_foreign checks the copies of a foreign table of server
 * tenant_router on every shard database and gives one to those that lack
 * it, from the first that has it.
 */
static void
register_foreign(Relation rel, const char *qualname, List *ddl, List *conns)
{
	ShardConn  *source = NULL;
	ListCell   *lc;

	foreach(lc, conns)
	{
		ShardConn  *sc = lfirst(lc);

		remote_command(sc, "SELECT pg_catalog.pg_advisory_xact_lock(" SHARD_DDL_LOCK ")");
		if (source == NULL &&
			remote_value(sc, "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", qualname) != NULL)
			source = sc;
	}
	foreach(lc, conns)
		if (lfirst(lc) != source)
			sync_copy(lfirst(lc), rel, ddl, source);
}

/*
 * ReferenceTableAdd makes relid a reference table: the code of
 * reference_table_add().
 */
static void
ReferenceTableAdd(Oid relid)
{
	Relation	rel = relation_open(relid, AccessExclusiveLock);
	char	   *nspname = get_namespace_name(RelationGetNamespace(rel));
	char	   *relname = pstrdup(RelationGetRelationName(rel));
	char	   *qualname;
	bool		ordinary = (rel->rd_rel->relkind == RELKIND_RELATION);
	bool		trusted;
	List	   *ddl;
	List	   *conns;
	Oid			newrelid;
	int			nestlevel;

	if (!pg_class_ownercheck(relid, GetOuterUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(rel->rd_rel->relkind), relname);
	if (LookupRouterTable(relid) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already a %s table", relname,
						LookupRouterTable(relid)->is_reference ? "reference" : "logical")));
	if (!ordinary &&
		!(rel->rd_rel->relkind == RELKIND_FOREIGN_TABLE &&
		  GetForeignServerIdByRelId(relid) == CatalogServerOid()))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot make \"%s\" a reference table", relname),
				 errdetail("Only an ordinary table, or a foreign table of server tenant_router, can be made a reference table.")));

	SPI_connect();
	nestlevel = EnterRemoteSqlSettings();
	qualname = quote_qualified_identifier(nspname, relname);
	if (ordinary)
		LogicalTableCheckConvertible(rel, qualname, true);

	/*
	 * The definitions were chosen by the table's owner: a superuser calling
	 * this for a table someone else owns ships that someone's code.
	 */
	trusted = ShardDdlTrusted(GetOuterUserId()) && ShardDdlTrusted(rel->rd_rel->relowner);
	ddl = LogicalTableShardDdl(rel, nspname, qualname, trusted, NULL);

	/* the shards first: an unreachable or different shard changes nothing */
	conns = TrReferenceWriteConns(relname, true);
	if (conns == NIL && ordinary &&
		LogicalTableSpiStrings(psprintf("SELECT 1 FROM ONLY %s LIMIT 1", qualname), relid) != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot make table \"%s\" a reference table: it has rows, and there is no shard to keep them",
						relname),
				 errhint("Add a shard with shard_add() first.")));
	if (ordinary)
	{
		create_everywhere(rel, qualname, ddl, conns);
		relation_close(rel, NoLock);
		keep_foreign_keys(relid, relname, trusted);
		rel = relation_open(relid, AccessExclusiveLock);
		newrelid = LogicalTableConvertToForeign(rel, qualname);
	}
	else
	{
		register_foreign(rel, qualname, ddl, conns);
		newrelid = relid;
		relation_close(rel, NoLock);
	}
	LeaveRemoteSqlSettings(nestlevel);

	register_table(newrelid, ddl);	/* before SPI frees ddl */
	SPI_finish();

	/* plans that used the table must be made again */
	CacheInvalidateRelcacheByRelid(newrelid);
}

/*
 * refuse_ddl refuses a statement that would change a reference table on the
 * coordinator alone, if relation names one.
 */
static void
refuse_ddl(const char *statement, RangeVar *relation)
{
	Oid			relid = relation ? RangeVarGetRelid(relation, NoLock, true) : InvalidOid;
	LogicalTable *table = OidIsValid(relid) ? LookupRouterTable(relid) : NULL;

	if (table == NULL || !table->is_reference)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not supported on reference table \"%s\"", statement,
					get_rel_name(relid)),
			 errdetail("tenant_router does not apply it to the shards' copies, and it would change the coordinator alone."),
			 errhint("Change the table on every shard, then this coordinator's foreign table with ALTER FOREIGN TABLE, which changes the coordinator only.")));
}

/*
 * ReferenceTableCheckDdl refuses ALTER TABLE and ALTER TABLE ... RENAME of
 * a reference table, which PostgreSQL would apply to its foreign table on
 * the coordinator alone; ALTER FOREIGN TABLE keeps that meaning
 * (commands/ddl_propagation.c calls this for every utility statement).
 */
void
ReferenceTableCheckDdl(Node *parsetree)
{
	if (IsA(parsetree, AlterTableStmt) &&
		((AlterTableStmt *) parsetree)->objtype == OBJECT_TABLE)
		refuse_ddl("ALTER TABLE", ((AlterTableStmt *) parsetree)->relation);
	else if (IsA(parsetree, RenameStmt))
	{
		RenameStmt *stmt = (RenameStmt *) parsetree;

		if (stmt->renameType == OBJECT_TABLE || stmt->renameType == OBJECT_TABCONSTRAINT ||
			(stmt->renameType == OBJECT_COLUMN && stmt->relationType == OBJECT_TABLE))
			refuse_ddl("ALTER TABLE ... RENAME", stmt->relation);
	}
}

Datum
tenant_router_reference_table_add(PG_FUNCTION_ARGS)
{
	ReferenceTableAdd(PG_GETARG_OID(0));
	PG_RETURN_VOID();
}
