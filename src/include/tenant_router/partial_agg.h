/*-------------------------------------------------------------------------
 *
 * partial_agg.h
 *	  Aggregates computed in two phases: partial states from the shards,
 *	  combined on the coordinator.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_PARTIAL_AGG_H
#define TENANT_ROUTER_PARTIAL_AGG_H

#include "lib/stringinfo.h"
#include "nodes/primnodes.h"

typedef enum PartialKind
{
	PARTIAL_NONE = 0,
	PARTIAL_SAME,				/* the shard's aggregate is the state */
	PARTIAL_INT_AVG,			/* int8[] {count, sum} */
	PARTIAL_FLOAT,				/* float8[] {N, Sx, Sxx} */
	PARTIAL_SUM_STATE,			/* internal state from the shard's sum and count */
	PARTIAL_TENANT_COUNT		/* count_distinct_tenant: the shard's count */
} PartialKind;

extern PartialKind PartialAggKindOf(Aggref *aggref);
extern int	PartialAggColumns(PartialKind kind);
extern void PartialAggDeparse(StringInfo buf, Aggref *aggref, PartialKind kind,
							  List *dpcontext);
extern Datum PartialAggState(Aggref *aggref, PartialKind kind, char **texts,
							 Oid state_type, bool *isnull);

#endif
