/*-------------------------------------------------------------------------
 *
 * shippable.h
 *	  What may be sent to a shard, and the values the coordinator computes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_SHIPPABLE_H
#define TENANT_ROUTER_SHIPPABLE_H

#include "nodes/primnodes.h"

typedef struct ShipContext
{
	/* input */
	Index		scan_varno;		/* FDW: the only relation Vars may belong to;
								 * 0: any (the fast path ships whole queries) */
	bool		whole_query;	/* aggregates, window functions, sublinks ok */

	/* output */
	List	   *param_exprs;	/* expressions the coordinator evaluates: $1.. */
	List	   *extern_ids;		/* for each of them, the paramid of an
								 * external parameter it stands for, or 0 */
	bool		ok;				/* false: something cannot be shipped */
	const char *reason;			/* why not, for the fast path's DEBUG1
								 * message */
} ShipContext;

extern void ShipContextInit(ShipContext *ctx, Index scan_varno, bool whole_query);
extern Node *ShipExpr(Node *node, ShipContext *ctx);
extern Node *ShipParam(Node *expr, ShipContext *ctx);
extern bool IsStandaloneValue(Node *expr, bool allow_volatile);
extern bool ContainsParam(Node *expr);

#endif
