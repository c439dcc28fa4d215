/*-------------------------------------------------------------------------
 *
 * shard_pruning.h
 *	  Which shards a scan with tenant conditions must visit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_SHARD_PRUNING_H
#define TENANT_ROUTER_SHARD_PRUNING_H

#include "nodes/primnodes.h"

/* strategies: btree strategy numbers, and this for "= ANY (array)" */
#define TENANT_COND_ANY 100

extern bool ExtractTenantCond(Expr *clause, Index varno, AttrNumber attno,
							  int *strategy, Expr **value);
extern List *PruneShards(int ncond, const int *strategies, const Datum *values,
						 const bool *nulls, const Oid *types);

#endif
