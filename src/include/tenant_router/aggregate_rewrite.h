/*-------------------------------------------------------------------------
 *
 * aggregate_rewrite.h
 *	  count(DISTINCT tenant column) rewritten to an aggregate the shards can
 *	  compute in parts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_AGGREGATE_REWRITE_H
#define TENANT_ROUTER_AGGREGATE_REWRITE_H

#include "nodes/parsenodes.h"

extern Query *RewriteTenantCounts(Query *parse);

#endif
