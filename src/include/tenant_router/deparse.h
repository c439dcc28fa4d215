/*-------------------------------------------------------------------------
 *
 * deparse.h
 *	  The SQL text the foreign-data wrapper sends to shards.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_DEPARSE_H
#define TENANT_ROUTER_DEPARSE_H

#include "nodes/bitmapset.h"
#include "nodes/pg_list.h"
#include "nodes/nodes.h"
#include "nodes/primnodes.h"
#include "utils/relcache.h"

#include "tenant_router/catalog.h"
#include "tenant_router/route_cache.h"

/* a key the shards sort a scan by */
typedef struct DeparseSortKey
{
	Expr	   *expr;			/* a column of the scanned relation */
	Oid			sortop;
	Oid			collation;
	bool		nulls_first;
} DeparseSortKey;

extern char *DeparseScan(Relation rel, LogicalTable *table, Index varno, Bitmapset *attrs,
						 bool want_ctid, List *conds, int nparams, List *sort_keys,
						 int64 limit, const char *lock, List **retrieved_attrs);
extern char *DeparseGrouped(Relation rel, LogicalTable *table, Index varno, List *outputs,
							List *kinds, List *conds, int nparams, List *group_positions,
							List *having);
extern char *DeparseInsert(Relation rel, LogicalTable *table, List *attrs, int nrows,
						   bool do_nothing, List *returning);
extern char *DeparseUpdate(Relation rel, LogicalTable *table, List *attrs, List *returning);
extern char *DeparseDelete(Relation rel, LogicalTable *table, List *returning);
extern char *DeparseDirectModify(Relation rel, LogicalTable *table, Index varno,
								 CmdType operation, List *attrs, List *exprs, List *conds,
								 int nparams, List *returning);
extern char *DeparseTruncate(List *tables, bool cascade);
extern char *DeparseForShard(const char *sql, int nparams, const ShardRow *shard,
							  char **whole, char **owns_comment);

#endif
