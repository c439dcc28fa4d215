/*-------------------------------------------------------------------------
 *
 * ddl_propagation.c
 *	  DDL on a logical table reaches every shard in the same transaction as
 *	  the coordinator, or is refused with nothing changed.
 *
 * A ProcessUtility hook sees every utility statement; those about a
 * logical table are handled here, the others passed on untouched:
 *
 *	ALTER TABLE (ddl_alter_table.c), CREATE INDEX (ddl_index.c): the
 *	  coordinator's foreign table changes as PostgreSQL does it, and the
 *	  shards get the same change as SQL text made from PostgreSQL's own
 *	  catalog and deparser.
 *	DROP INDEX, ALTER INDEX ... RENAME, COMMENT ON INDEX: indexes live on
 *	  the shards only; a name that is not a local relation is looked up on
 *	  the first shard (ddl_index.c).
 *	ALTER TABLE ... RENAME [COLUMN | CONSTRAINT], COMMENT ON TABLE, COLUMN,
 *	  CONSTRAINT: here.
 *	DROP TABLE of a logical table drops it on every shard too; DROP FOREIGN
 *	  TABLE drops only this coordinator's foreign table (as do DROP SCHEMA
 *	  ... CASCADE, DROP OWNED and DROP EXTENSION), so that a coordinator can
 *	  forget a table other coordinators still use.
 *	ALTER FOREIGN TABLE and COMMENT ON FOREIGN TABLE change this
 *	  coordinator's foreign table only, PostgreSQL's meaning for a foreign
 *	  table: how a second coordinator follows a change made through another.
 *	ALTER TABLE ... SET SCHEMA and every ALTER TABLE form not propagated are
 *	  refused, naming the form.
 *
 * The shards' statements run in their remote transactions as writes, so a
 * change to several shards commits with two-phase commit, atomically with
 * the coordinator (connection/remote_xact.c); a shard that is unreachable or
 * fails fails the statement, naming the shard, and nothing changes
 * anywhere.  As soon as a statement is found to be about a logical table,
 * the topology is locked against changes until the end of the transaction
 * (the row of tenant_router.topology, FOR SHARE, taken before the table's
 * own lock as topology changes take it: a shard added meanwhile would miss
 * the change); before sending, every shard is locked, one after the other
 * in shard_id order, with an advisory lock: two coordinators changing the
 * same table queue on the first shard instead of deadlocking across shards.
 * The statements are appended to the table's shard_ddl in the catalog, so
 * that a shard added later replays them (commands/shard_ddl.c).
 *
 * Invariant: a statement about a logical table either changes the
 * coordinator and every shard, or fails; definitions it ships are checked
 * by shard_ddl_safety.c unless the current user is a superuser.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/comment.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "ddl_internal.h"
#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/ddl_propagation.h"
#include "tenant_router/guc.h"
#include "tenant_router/reference_table.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_ddl_safety.h"

/* advisory lock key under which a shard's logical tables change */
#define LOGICAL_DDL_LOCK "7481029374"
/* the range constraint every shard table carries (commands/shard_ddl.c) */
#define RANGE_CONSTRAINT "tenant_router_range"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/*
 * DdlLookupTable fills table for relid and returns true if relid is a
 * logical table.  It then locks the topology against changes until the end
 * of the transaction, before the statement locks the table: topology
 * changes lock the topology first too, so the two cannot deadlock.
 */
bool
DdlLookupTable(Oid relid, DdlTable *table)
{
	LogicalTableRow *row;
	DdlCatalogAccess access;

	if (!OidIsValid(relid) || LookupLogicalTable(relid) == NULL)
		return false;
	row = CatalogGetLogicalTable(relid);
	if (row == NULL)
		return false;
	DdlCatalogBegin(&access);
	DdlCatalogExec("SELECT 1 FROM tenant_router.topology FOR SHARE", 0, NULL, NULL,
				   SPI_OK_SELECT);
	DdlCatalogEnd(&access);
	table->relid = relid;
	table->relname = get_rel_name(relid);
	table->nspid = get_rel_namespace(relid);
	table->qualname = quote_qualified_identifier(get_namespace_name(table->nspid),
												 table->relname);
	table->tenant_column = row->tenant_column;
	return true;
}

/* DdlLookupRangeVar is DdlLookupTable for a name */
bool
DdlLookupRangeVar(RangeVar *rv, bool missing_ok, DdlTable *table)
{
	Oid			relid = RangeVarGetRelid(rv, NoLock, true);

	(void) missing_ok;			/* PostgreSQL reports a missing relation */
	return DdlLookupTable(relid, table);
}

/*
 * DdlRunLocal runs stmt, a statement made from the one being processed, on
 * the coordinator through the rest of the hook chain.
 */
void
DdlRunLocal(DdlCall *call, Node *stmt)
{
	PlannedStmt *pstmt = makeNode(PlannedStmt);

	pstmt->commandType = CMD_UTILITY;
	pstmt->canSetTag = call->pstmt->canSetTag;
	pstmt->utilityStmt = stmt;
	pstmt->stmt_location = call->pstmt->stmt_location;
	pstmt->stmt_len = call->pstmt->stmt_len;
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, call->queryString, false, call->context,
							call->params, call->queryEnv, call->dest, call->qc);
	else
		standard_ProcessUtility(pstmt, call->queryString, false, call->context,
								call->params, call->queryEnv, call->dest, call->qc);
}

/*
 * The catalog is read and written as its owner, with search_path =
 * pg_catalog (no operator of the user's can stand in for a built-in one),
 * whoever runs the DDL: the owner of a logical table may change it without
 * privileges on the catalog.  SPI is connected in between.
 */
void
DdlCatalogBegin(DdlCatalogAccess *access)
{
	HeapTuple	tuple;
	Oid			owner;
	Oid			relid = CatalogLogicalTableRelid(false);

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	GetUserIdAndSecContext(&access->save_userid, &access->save_sec_context);
	SetUserIdAndSecContext(owner, access->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	access->nestlevel = EnterRemoteSqlSettings();
	SPI_connect();
}

void
DdlCatalogEnd(DdlCatalogAccess *access)
{
	SPI_finish();
	LeaveRemoteSqlSettings(access->nestlevel);
	SetUserIdAndSecContext(access->save_userid, access->save_sec_context);
}

void
DdlCatalogExec(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "tenant_router: unexpected result %d from \"%s\"", rc, sql);
}

/*
 * DdlShards returns the shards (in shard_id order), one per DSN; with lock,
 * it first locks the topology against changes until the end of the
 * transaction and refuses shards in an online operation.
 */
List *
DdlShards(bool lock)
{
	DdlCatalogAccess access;
	MemoryContext caller = CurrentMemoryContext;
	List	   *shards = NIL;
	uint64		i;

	DdlCatalogBegin(&access);
	if (lock)
		DdlCatalogExec("SELECT 1 FROM tenant_router.topology FOR SHARE", 0, NULL, NULL,
					   SPI_OK_SELECT);
	DdlCatalogExec("SELECT shard_id, dsn, state FROM tenant_router.shard ORDER BY shard_id",
				   0, NULL, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(caller);
		DdlShard   *shard = palloc(sizeof(DdlShard));
		ListCell   *lc;
		bool		seen = false;

		shard->shard_id = SPI_getvalue(tuple, tupdesc, 1);
		shard->dsn = SPI_getvalue(tuple, tupdesc, 2);
		shard->state = SPI_getvalue(tuple, tupdesc, 3);
		MemoryContextSwitchTo(old);

		if (lock && strcmp(shard->state, "active") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot change logical tables while shard \"%s\" is %s",
							shard->shard_id, shard->state),
					 errdetail("An online operation copies the shard's tables; a change to them now would break it."),
					 errhint("Retry when the operation has finished (see tenant_router.operations).")));
		/* shards that share a database count once */
		foreach(lc, shards)
			if (strcmp(((DdlShard *) lfirst(lc))->dsn, shard->dsn) == 0)
				seen = true;
		if (!seen)
		{
			old = MemoryContextSwitchTo(caller);
			shards = lappend(shards, shard);
			MemoryContextSwitchTo(old);
		}
	}
	DdlCatalogEnd(&access);
	return shards;
}

/* append_log appends commands to the table's shard_ddl */
static void
append_log(DdlTable *table, List *commands)
{
	DdlCatalogAccess access;
	Datum	   *elems = palloc(sizeof(Datum) * list_length(commands));
	Oid			types[2] = {OIDOID, TEXTARRAYOID};
	Datum		values[2];
	ListCell   *lc;
	int			n = 0;

	foreach(lc, commands)
		elems[n++] = CStringGetTextDatum(lfirst(lc));
	values[0] = ObjectIdGetDatum(table->relid);
	values[1] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
	DdlCatalogBegin(&access);
	DdlCatalogExec("UPDATE tenant_router.logical_table "
				 "SET shard_ddl = shard_ddl OPERATOR(pg_catalog.||) $2 WHERE table_id = $1",
				 2, types, values, SPI_OK_UPDATE);
	DdlCatalogEnd(&access);
}

/*
 * DdlSendToShards runs commands, in order, on every shard, as writes of the
 * current transaction, and appends them to the table's shard_ddl (not for a
 * table dropped: table->relid invalid).
 */
void
DdlSendToShards(DdlTable *table, List *commands)
{
	List	   *shards;
	ShardConn **scs;
	const char **sqls;
	PGresult  **results;
	ListCell   *lc;
	int			n = 0;
	int			i;

	if (commands == NIL)
		return;
	shards = DdlShards(true);
	if (list_length(shards) > 1 &&
		TenantRouterMultiShardWrites == MULTI_SHARD_WRITES_REFUSE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a change to logical table \"%s\" must write to %d shards",
						table->relname, list_length(shards)),
				 errdetail("tenant_router.multi_shard_writes is \"refuse\", which forbids writing to more than one shard in a transaction."),
				 errhint("SET tenant_router.multi_shard_writes = '2pc' in this session to change every shard atomically.")));

	scs = palloc(sizeof(ShardConn *) * (list_length(shards) + 1));
	sqls = palloc(sizeof(char *) * (list_length(shards) + 1));
	results = palloc(sizeof(PGresult *) * (list_length(shards) + 1));
	foreach(lc, shards)
	{
		DdlShard   *shard = lfirst(lc);
		ShardConn  *sc = ShardConnGet(shard->shard_id, shard->dsn);

		ShardConnBegin(sc, SHARD_WRITE);
		PQclear(ShardConnExec(sc, "SELECT pg_catalog.pg_advisory_xact_lock(" LOGICAL_DDL_LOCK ")",
							  0, NULL, NULL));
		scs[n++] = sc;
	}
	foreach(lc, commands)
	{
		for (i = 0; i < n; i++)
			sqls[i] = lfirst(lc);
		if (n > 0)
			ShardConnExecAll(n, scs, sqls, results);
		for (i = 0; i < n; i++)
			PQclear(results[i]);
	}
	if (OidIsValid(table->relid))
		append_log(table, commands);
}

/*
 * DdlFirstShardRow runs a query on the first shard (in shard_id order) and
 * returns the first row's values (NULL for a null), or NULL when there is
 * no shard or no row.
 */
static char **
first_shard_row(const char *sql, int nparams, const char *const *params)
{
	DdlCatalogAccess access;
	MemoryContext caller = CurrentMemoryContext;
	char	   *shard_id = NULL;
	char	   *dsn = NULL;
	ShardConn  *sc;
	PGresult   *res;
	char	  **row = NULL;
	int			i;

	DdlCatalogBegin(&access);
	DdlCatalogExec("SELECT shard_id, dsn FROM tenant_router.shard ORDER BY shard_id LIMIT 1",
				 0, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(caller);

		shard_id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		dsn = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		MemoryContextSwitchTo(old);
	}
	DdlCatalogEnd(&access);
	if (shard_id == NULL)
		return NULL;

	sc = ShardConnGet(shard_id, dsn);
	ShardConnBegin(sc, SHARD_READ);
	res = ShardConnExec(sc, sql, nparams, NULL, params);
	if (PQntuples(res) > 0)
	{
		row = palloc0(sizeof(char *) * (PQnfields(res) + 1));
		for (i = 0; i < PQnfields(res); i++)
			row[i] = PQgetisnull(res, 0, i) ? NULL : pstrdup(PQgetvalue(res, 0, i));
	}
	PQclear(res);
	return row;
}

/* DdlFirstShardScalar is first_shard_row for one value */
char *
DdlFirstShardScalar(const char *sql, const char *param)
{
	const char *params[1] = {param};
	char	  **row = first_shard_row(sql, param ? 1 : 0, params);

	return row ? row[0] : NULL;
}

/* append_array_element appends value, quoted, to an array literal */
static void
append_array_element(StringInfo buf, const char *value)
{
	const char *p;

	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	appendStringInfoChar(buf, '"');
	for (p = value; *p; p++)
	{
		if (*p == '"' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '"');
}

/*
 * DdlFindIndex looks up an index that is not a local relation on the first
 * shard, by the name a statement gives (resolved through this session's
 * search_path if unqualified), and returns true if it belongs to a logical
 * table, with that table and the index's quoted qualified name.
 */
bool
DdlFindIndex(List *names, DdlTable *table, char **qualname)
{
	RangeVar   *rv = makeRangeVarFromNameList(names);
	StringInfoData schemas;
	const char *params[2];
	char	  **row;
	Oid			nspid;
	Oid			relid;
	ListCell   *lc;

	if (OidIsValid(RangeVarGetRelid(rv, NoLock, true)))
		return false;			/* a local relation: not ours */
	if (!OidIsValid(CatalogLogicalTableRelid(true)))
		return false;

	/* the schemas to look in, in order, as a text[] literal */
	initStringInfo(&schemas);
	appendStringInfoChar(&schemas, '{');
	if (rv->schemaname != NULL)
		append_array_element(&schemas, rv->schemaname);
	else
		foreach(lc, fetch_search_path(false))
		{
			char	   *nspname = get_namespace_name(lfirst_oid(lc));

			if (nspname != NULL)
				append_array_element(&schemas, nspname);
		}
	appendStringInfoChar(&schemas, '}');
	params[0] = schemas.data;
	params[1] = rv->relname;
	row = first_shard_row("SELECT n.nspname, t.relname FROM pg_catalog.pg_index i "
						  "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
						  "JOIN pg_catalog.pg_class t ON t.oid = i.indrelid "
						  "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
						  "WHERE n.nspname OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]) "
						  "AND c.relname OPERATOR(pg_catalog.=) $2 "
						  "ORDER BY pg_catalog.array_position($1::pg_catalog.text[], n.nspname::pg_catalog.text) "
						  "LIMIT 1", 2, params);
	if (row == NULL)
		return false;
	nspid = get_namespace_oid(row[0], true);
	relid = OidIsValid(nspid) ? get_relname_relid(row[1], nspid) : InvalidOid;
	if (!DdlLookupTable(relid, table))
		return false;
	*qualname = quote_qualified_identifier(row[0], rv->relname);
	return true;
}

/* DdlRequireOwner refuses a user who does not own the table */
void
DdlRequireOwner(DdlTable *table)
{
	if (!pg_class_ownercheck(table->relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, table->relname);
}

/* DdlUserTrusted tells whether the current user may ship any definition */
bool
DdlUserTrusted(void)
{
	return ShardDdlTrusted(GetUserId());
}

/* DdlRefuse refuses a statement that is not propagated */
void
DdlRefuse(const char *statement, DdlTable *table, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not supported on logical table \"%s\"", statement, table->relname),
			 errdetail("%s", detail ? detail :
					   "tenant_router does not apply it to the shards, and it would change the coordinator alone."),
			 hint ? errhint("%s", hint) : 0));
}

/* DdlCheckConstraintName refuses the name of the shards' range constraint */
void
DdlCheckConstraintName(const char *name, DdlTable *table)
{
	if (name != NULL && strcmp(name, RANGE_CONSTRAINT) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("constraint name \"%s\" is reserved on logical table \"%s\"",
						name, table->relname),
				 errdetail("Each shard's copy carries constraint \"%s\" for the shard's range; tenant_router maintains it.",
						   RANGE_CONSTRAINT)));
}

/* DdlLocalConstraint returns the OID of the coordinator's constraint, or 0 */
Oid
DdlLocalConstraint(DdlTable *table, const char *name)
{
	return get_relation_constraint_oid(table->relid, name, true);
}

/*
 * DdlIndexHasTenant tells whether the key columns of an index include the
 * tenant column of table.
 */
bool
DdlIndexHasTenant(DdlTable *table, Oid indexoid)
{
	HeapTuple	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	Form_pg_index index;
	bool		has_tenant = false;
	int			i;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for index %u", indexoid);
	index = (Form_pg_index) GETSTRUCT(tuple);
	for (i = 0; i < index->indnkeyatts; i++)
	{
		AttrNumber	attno = index->indkey.values[i];

		if (attno > 0 &&
			strcmp(get_attname(index->indrelid, attno, false), table->tenant_column) == 0)
			has_tenant = true;
	}
	ReleaseSysCache(tuple);
	return has_tenant;
}

/*
 * DdlWarnUniqueness warns, in one WARNING, that the unique, primary key or
 * exclusion constraints or unique indexes named (like 'primary key "x"'),
 * which lack the tenant column, hold on each shard separately.
 */
void
DdlWarnUniqueness(DdlTable *table, List *names)
{
	StringInfoData list;
	ListCell   *lc;
	int			n = list_length(names);

	if (n == 0)
		return;
	initStringInfo(&list);
	foreach(lc, names)
		appendStringInfo(&list, "%s%s", list.len > 0 ? ", " : "", (char *) lfirst(lc));
	ereport(WARNING,
			(errmsg("%s of logical table \"%s\" %s on each shard separately",
					list.data, table->relname, n == 1 ? "holds" : "hold"),
			 n == 1 ?
			 errdetail("It does not include the tenant column \"%s\": two shards may hold rows with equal keys.",
					   table->tenant_column) :
			 errdetail("They do not include the tenant column \"%s\": two shards may hold rows with equal keys.",
					   table->tenant_column),
			 errhint("Include \"%s\" in a constraint to make it hold across shards. Ids drawn from the coordinator's sequences are unique anyway (see sequence_block_set()).",
					 table->tenant_column)));
}

/*
 * rename_table handles ALTER TABLE ... RENAME [TO | COLUMN | CONSTRAINT]
 * of a logical table; false if the statement is not about one.
 */
static bool
rename_table(DdlCall *call, RenameStmt *stmt)
{
	DdlTable	table;
	List	   *commands = NIL;
	bool		coordinator_only;

	switch (stmt->renameType)
	{
		case OBJECT_TABLE:
		case OBJECT_FOREIGN_TABLE:
			coordinator_only = (stmt->renameType == OBJECT_FOREIGN_TABLE);
			break;
		case OBJECT_COLUMN:
			if (stmt->relationType != OBJECT_TABLE &&
				stmt->relationType != OBJECT_FOREIGN_TABLE)
				return false;
			coordinator_only = (stmt->relationType == OBJECT_FOREIGN_TABLE);
			break;
		case OBJECT_TABCONSTRAINT:
			/* ALTER TABLE only: the grammar has no foreign table form */
			coordinator_only = false;
			break;
		case OBJECT_INDEX:
			return DdlRenameIndex(call, stmt);
		default:
			return false;
	}
	if (!DdlLookupRangeVar(stmt->relation, stmt->missing_ok, &table))
		return false;

	switch (stmt->renameType)
	{
		case OBJECT_COLUMN:
			if (!coordinator_only)
				commands = list_make1(psprintf("ALTER TABLE %s RENAME COLUMN %s TO %s",
											   table.qualname,
											   quote_identifier(stmt->subname),
											   quote_identifier(stmt->newname)));
			DdlRunLocal(call, (Node *) stmt);
			if (strcmp(stmt->subname, table.tenant_column) == 0)
			{
				/* the catalog names the tenant column */
				DdlCatalogAccess access;
				Oid			types[2] = {OIDOID, NAMEOID};
				Datum		values[2];

				values[0] = ObjectIdGetDatum(table.relid);
				values[1] = DirectFunctionCall1(namein, CStringGetDatum(stmt->newname));
				DdlCatalogBegin(&access);
				DdlCatalogExec("UPDATE tenant_router.logical_table SET tenant_column = $2 "
							 "WHERE table_id = $1", 2, types, values, SPI_OK_UPDATE);
				DdlCatalogEnd(&access);
			}
			break;
		case OBJECT_TABCONSTRAINT:
			DdlCheckConstraintName(stmt->subname, &table);
			DdlCheckConstraintName(stmt->newname, &table);
			if (coordinator_only || OidIsValid(DdlLocalConstraint(&table, stmt->subname)))
				DdlRunLocal(call, (Node *) stmt);
			else
				DdlRequireOwner(&table);
			if (!coordinator_only)
				commands = list_make1(psprintf("ALTER TABLE %s RENAME CONSTRAINT %s TO %s",
											   table.qualname,
											   quote_identifier(stmt->subname),
											   quote_identifier(stmt->newname)));
			break;
		default:
			if (!coordinator_only)
				commands = list_make1(psprintf("ALTER TABLE %s RENAME TO %s",
											   table.qualname,
											   quote_identifier(stmt->newname)));
			DdlRunLocal(call, (Node *) stmt);
			break;
	}
	DdlSendToShards(&table, commands);
	return true;
}

/*
 * drop_tables handles DROP TABLE naming logical tables: the coordinator drops
 * their foreign tables, the shards their tables, in the same transaction.
 */
static bool
drop_tables(DdlCall *call, DropStmt *stmt)
{
	List	   *local = NIL;
	List	   *logical = NIL;
	List	   *tables = NIL;
	ListCell   *lc;

	foreach(lc, stmt->objects)
	{
		List	   *names = lfirst(lc);
		DdlTable   *table = palloc(sizeof(DdlTable));

		if (DdlLookupRangeVar(makeRangeVarFromNameList(names), true, table))
		{
			logical = lappend(logical, names);
			tables = lappend(tables, table);
		}
		else
			local = lappend(local, names);
	}
	if (logical == NIL)
		return false;
	if (stmt->concurrent)
		DdlRefuse("DROP TABLE CONCURRENTLY", linitial(tables), NULL, NULL);

	if (local != NIL)
	{
		DropStmt   *copy = copyObject(stmt);

		copy->objects = local;
		DdlRunLocal(call, (Node *) copy);
	}
	{
		DropStmt   *copy = copyObject(stmt);

		copy->objects = logical;
		copy->removeType = OBJECT_FOREIGN_TABLE;
		DdlRunLocal(call, (Node *) copy);
	}
	foreach(lc, tables)
	{
		DdlTable   *table = lfirst(lc);

		table->relid = InvalidOid;	/* gone: no log */
		DdlSendToShards(table, list_make1(psprintf("DROP TABLE IF EXISTS %s%s",
												   table->qualname,
												   stmt->behavior == DROP_CASCADE ?
												   " CASCADE" : "")));
	}
	return true;
}

/* comment_literal returns the text of a comment for SQL */
static char *
comment_literal(const char *comment)
{
	return comment ? quote_literal_cstr(comment) : pstrdup("NULL");
}

/*
 * member_of_table looks up the table of a column or constraint named by
 * names (the table's names, then the member's); true if it is a logical
 * table, with *member the member's name.
 */
static bool
member_of_table(List *names, DdlTable *table, char **member)
{
	if (list_length(names) < 2)
		return false;
	*member = strVal(llast(names));
	return DdlLookupRangeVar(makeRangeVarFromNameList(list_truncate(list_copy(names),
																	list_length(names) - 1)),
							 false, table);
}

/*
 * comment handles COMMENT ON TABLE, COLUMN, CONSTRAINT and INDEX of a
 * logical table; false if the statement is not about one.
 */
static bool
comment(DdlCall *call, CommentStmt *stmt)
{
	DdlTable	table;
	List	   *names;
	char	   *command;
	char	   *last;

	switch (stmt->objtype)
	{
		case OBJECT_TABLE:
			names = castNode(List, stmt->object);
			if (!DdlLookupRangeVar(makeRangeVarFromNameList(names), false, &table))
				return false;
			{
				CommentStmt *copy = copyObject(stmt);

				copy->objtype = OBJECT_FOREIGN_TABLE;
				DdlRunLocal(call, (Node *) copy);
			}
			command = psprintf("COMMENT ON TABLE %s IS %s", table.qualname,
							   comment_literal(stmt->comment));
			break;
		case OBJECT_COLUMN:
			if (!member_of_table(castNode(List, stmt->object), &table, &last))
				return false;
			DdlRunLocal(call, (Node *) stmt);
			command = psprintf("COMMENT ON COLUMN %s.%s IS %s", table.qualname,
							   quote_identifier(last), comment_literal(stmt->comment));
			break;
		case OBJECT_TABCONSTRAINT:
			if (!member_of_table(castNode(List, stmt->object), &table, &last))
				return false;
			DdlCheckConstraintName(last, &table);
			if (OidIsValid(DdlLocalConstraint(&table, last)))
				DdlRunLocal(call, (Node *) stmt);
			else
				DdlRequireOwner(&table);
			command = psprintf("COMMENT ON CONSTRAINT %s ON %s IS %s", quote_identifier(last),
							   table.qualname, comment_literal(stmt->comment));
			break;
		case OBJECT_INDEX:
			{
				char	   *index;

				if (!DdlFindIndex(castNode(List, stmt->object), &table, &index))
					return false;
				DdlRequireOwner(&table);
				command = psprintf("COMMENT ON INDEX %s IS %s", index,
								   comment_literal(stmt->comment));
				break;
			}
		default:
			return false;
	}
	DdlSendToShards(&table, list_make1(command));
	return true;
}

/* set_schema refuses ALTER TABLE ... SET SCHEMA of a logical table */
static void
set_schema(AlterObjectSchemaStmt *stmt)
{
	DdlTable	table;

	if ((stmt->objectType == OBJECT_TABLE || stmt->objectType == OBJECT_FOREIGN_TABLE) &&
		DdlLookupRangeVar(stmt->relation, stmt->missing_ok, &table))
		DdlRefuse("ALTER TABLE ... SET SCHEMA", &table,
				  "A logical table has the same schema-qualified name on every shard.",
				  "Create the table in the new schema and copy the rows, or keep the schema.");
}

/*
 * import_schema runs IMPORT FOREIGN SCHEMA from server tenant_router and
 * registers the tables it created as logical (fdw/import.c reads them).
 */
static bool
import_schema(DdlCall *call, ImportForeignSchemaStmt *stmt)
{
	ListCell   *lc;

	if (strcmp(stmt->server_name, TENANT_ROUTER_SERVER) != 0)
		return false;
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only superusers may import logical tables"),
				 errdetail("The tables' definitions are read from a shard and sent to the other shards, which run them as the user of their connection string.")));
	(void) ImportedLogicalTables();
	DdlRunLocal(call, (Node *) stmt);
	foreach(lc, ImportedLogicalTables())
		LogicalTableImported(lfirst(lc));
	return true;
}

/*
 * handle dispatches a statement about a logical table; false if the
 * statement is not about one (it then runs as it is).
 */
static bool
handle(DdlCall *call, Node *parsetree)
{
	DdlTable	table;

	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
			{
				AlterTableStmt *stmt = (AlterTableStmt *) parsetree;

				if (stmt->objtype == OBJECT_INDEX)
				{
					char	   *index;
					List	   *names = list_make1(makeString(stmt->relation->relname));

					if (stmt->relation->schemaname != NULL)
						names = lcons(makeString(stmt->relation->schemaname), names);
					if (DdlFindIndex(names, &table, &index))
						DdlRefuse("ALTER INDEX", &table,
								  "The index exists on the shards only; tenant_router propagates ALTER INDEX ... RENAME, COMMENT ON INDEX and DROP INDEX, not other changes.",
								  "Drop the index and create it again.");
					return false;
				}
				if (stmt->objtype != OBJECT_TABLE && stmt->objtype != OBJECT_FOREIGN_TABLE)
					return false;
				if (!DdlLookupRangeVar(stmt->relation, stmt->missing_ok, &table))
					return false;
				DdlAlterTable(call, stmt, &table);
				return true;
			}
		case T_RenameStmt:
			return rename_table(call, (RenameStmt *) parsetree);
		case T_IndexStmt:
			{
				IndexStmt  *stmt = (IndexStmt *) parsetree;

				if (!DdlLookupRangeVar(stmt->relation, false, &table))
					return false;
				DdlCreateIndex(call, stmt, &table);
				return true;
			}
		case T_DropStmt:
			{
				DropStmt   *stmt = (DropStmt *) parsetree;

				if (stmt->removeType == OBJECT_TABLE)
					return drop_tables(call, stmt);
				if (stmt->removeType == OBJECT_INDEX)
					return DdlDropIndexes(call, stmt);
				return false;
			}
		case T_CommentStmt:
			return comment(call, (CommentStmt *) parsetree);
		case T_AlterObjectSchemaStmt:
			set_schema((AlterObjectSchemaStmt *) parsetree);
			return false;
		case T_ImportForeignSchemaStmt:
			return import_schema(call, (ImportForeignSchemaStmt *) parsetree);
		default:
			return false;
	}
}

static void
tr_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
		case T_RenameStmt:
		case T_IndexStmt:
		case T_DropStmt:
		case T_CommentStmt:
		case T_AlterObjectSchemaStmt:
		case T_ImportForeignSchemaStmt:
			if (OidIsValid(CatalogServerOid()))
			{
				DdlCall		call = {pstmt, queryString, context, params, queryEnv, dest, qc};

				ReferenceTableCheckDdl(parsetree);
				if (handle(&call, copyObject(parsetree)))
					return;
			}
			break;
		default:
			break;
	}
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

/*
 * DdlPropagationInit installs the ProcessUtility hook, saving and chaining
 * the previous one; called from _PG_init.
 */
void
DdlPropagationInit(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = tr_ProcessUtility;
}
