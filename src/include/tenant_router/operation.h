/*-------------------------------------------------------------------------
 *
 * operation.h
 *	  Online topology operations (split, ...): rows of some tenants move
 *	  from a source shard to a target while writes go on, in named phases
 *	  sharing one state.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_OPERATION_H
#define TENANT_ROUTER_OPERATION_H

#include "nodes/pg_list.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"

typedef struct Operation Operation;

/*
 * The state of one online operation.  The first block says what moves; the
 * operation's kind fills it in (and flip) before OperationRun.  The second
 * block is what exists on the shards at this moment: the undo state, kept
 * true by every phase, so that OperationUndo removes exactly what was made.
 */
struct Operation
{
	/* what moves, from where to where */
	const char *operation;		/* "split", ...: for messages */
	int64		op_id;
	char		name[64];		/* publication, replication slot, subscription */
	char	   *marker;			/* the marker table, on both shards */
	ShardRow   *source;			/* the shard rows leave, as in the catalog */
	ShardRow   *source_after;	/* what it owns afterwards; NULL: nothing */
	ShardRow   *target;			/* the shard rows go to, owning what it will */
	ShardRow   *target_before;	/* its catalog row now; NULL: a new database */
	ShardRow   *moving;			/* the tenants that move: those it owns */
	void		(*flip) (Operation *op);	/* the catalog change; SPI connected */

	List	   *tables;			/* LogicalTableRow */
	ShardConn  *source_conn;	/* statements that commit on their own */
	ShardConn  *switch_conn;	/* the switch's transaction */
	ShardConn  *target_conn;

	/* what exists on the shards now */
	bool		target_changed; /* target tables created, or their constraint set */
	bool		target_filled;	/* the target may hold copied rows */
	bool		published;		/* publication and the source's marker table */
	List	   *identity_restore;	/* statements restoring REPLICA IDENTITY */
	bool		slot_created;
	bool		subscribed;		/* subscription and the target's marker table */
	bool		switching;		/* the switch transaction is open */
	bool		switched;		/* it committed: the source gave the rows away */

	const char *phase;
	int64		rows_copied;
};

extern Operation *OperationCreate(const char *operation);
extern void OperationRun(Operation *op);
extern char *OperationMovingSql(Operation *op, const char *tenant_column);

#endif
