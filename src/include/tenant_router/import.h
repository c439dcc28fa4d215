/*-------------------------------------------------------------------------
 *
 * import.h
 *	  IMPORT FOREIGN SCHEMA for server tenant_router.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_IMPORT_H
#define TENANT_ROUTER_IMPORT_H

#include "nodes/parsenodes.h"

/* a logical table read from a shard by IMPORT FOREIGN SCHEMA */
typedef struct ImportedTable
{
	char	   *nspname;
	char	   *relname;
	char	   *tenant_column;
	List	   *shard_ddl;		/* what creates it on another shard */
} ImportedTable;

extern List *TrImportForeignSchema(ImportForeignSchemaStmt *stmt, Oid serverOid);
extern List *ImportedLogicalTables(void);

#endif
