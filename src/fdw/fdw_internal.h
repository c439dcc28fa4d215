/*-------------------------------------------------------------------------
 *
 * fdw_internal.h
 *	  What the planning files of src/fdw/ share: the planner state of a
 *	  relation the FDW plans.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_FDW_INTERNAL_H
#define TENANT_ROUTER_FDW_INTERNAL_H

#include "nodes/pathnodes.h"

#include "tenant_router/route_cache.h"

/* cost of a round trip to a shard, in sequential page units */
#define ROUND_TRIP_COST 100.0

/* what a relation planned here is */
typedef enum TrRelKind
{
	TR_SCAN,					/* a logical table */
	TR_GROUPED,					/* its aggregate, whole on each shard */
	TR_PARTIAL					/* its aggregate's partial states */
} TrRelKind;

/* planner state of a logical table scan, or of an aggregate over one */
typedef struct TrRelInfo
{
	TrRelKind	kind;
	LogicalTable *table;
	Oid			relid;			/* the foreign table */
	Index		varno;			/* its range table index */
	RelOptInfo *scanrel;		/* the scan's RelOptInfo */
	List	   *remote_conds;	/* RestrictInfos shipped to the shards */
	List	   *local_conds;	/* RestrictInfos checked on the coordinator */
	List	   *having;			/* TR_GROUPED: HAVING conditions, shipped */
} TrRelInfo;

extern bool TrShippable(Node *expr, Index varno, bool aggregates);
extern void TrGetForeignUpperPaths(PlannerInfo *root, UpperRelationKind stage,
								   RelOptInfo *input_rel, RelOptInfo *output_rel,
								   void *extra);

#endif
