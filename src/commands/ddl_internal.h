/*-------------------------------------------------------------------------
 *
 * ddl_internal.h
 *	  Shared by the files that propagate DDL on logical tables to the shards
 *	  (ddl_propagation.c, ddl_alter_table.c, ddl_index.c) and adopt.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_DDL_INTERNAL_H
#define TENANT_ROUTER_DDL_INTERNAL_H

#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "tcop/utility.h"
#include "tenant_router/import.h"

/* the arguments of the utility statement being processed */
typedef struct DdlCall
{
	PlannedStmt *pstmt;
	const char *queryString;
	ProcessUtilityContext context;
	ParamListInfo params;
	QueryEnvironment *queryEnv;
	DestReceiver *dest;
	QueryCompletion *qc;
} DdlCall;

/* a logical table a statement is about */
typedef struct DdlTable
{
	Oid			relid;
	char	   *relname;
	Oid			nspid;
	char	   *qualname;		/* schema-qualified and quoted: the shards' name */
	char	   *tenant_column;	/* unquoted */
} DdlTable;

/* a shard statements go to */
typedef struct DdlShard
{
	char	   *shard_id;
	char	   *dsn;
	char	   *state;
} DdlShard;

/* the catalog accessed as its owner (ddl_propagation.c) */
typedef struct DdlCatalogAccess
{
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;
} DdlCatalogAccess;

/* ddl_propagation.c */
extern void DdlCatalogBegin(DdlCatalogAccess *access);
extern void DdlCatalogEnd(DdlCatalogAccess *access);
extern void DdlCatalogExec(const char *sql, int nargs, Oid *types, Datum *values,
						   int expected);
extern List *DdlShards(bool lock);
extern bool DdlLookupTable(Oid relid, DdlTable *table);
extern bool DdlLookupRangeVar(RangeVar *rv, bool missing_ok, DdlTable *table);
extern void DdlRunLocal(DdlCall *call, Node *stmt);
extern void DdlSendToShards(DdlTable *table, List *commands);
extern char *DdlFirstShardScalar(const char *sql, const char *param);
extern void DdlRequireOwner(DdlTable *table);
extern bool DdlUserTrusted(void);
extern void DdlRefuse(const char *statement, DdlTable *table, const char *detail,
					  const char *hint) pg_attribute_noreturn();
extern void DdlCheckConstraintName(const char *name, DdlTable *table);
extern Oid	DdlLocalConstraint(DdlTable *table, const char *name);
extern bool DdlIndexHasTenant(DdlTable *table, Oid indexoid);
extern void DdlWarnUniqueness(DdlTable *table, List *names);

/* ddl_alter_table.c */
extern void DdlAlterTable(DdlCall *call, AlterTableStmt *stmt, DdlTable *table);

/* logical_table.c */
extern void LogicalTableImported(ImportedTable *table);

/* ddl_index.c */
extern void DdlCreateIndex(DdlCall *call, IndexStmt *stmt, DdlTable *table);
extern char *DdlIndexConstraint(DdlTable *table, Constraint *constraint);
extern bool DdlDropIndexes(DdlCall *call, DropStmt *stmt);
extern bool DdlRenameIndex(DdlCall *call, RenameStmt *stmt);
extern bool DdlFindIndex(List *names, DdlTable *table, char **qualname);

#endif
