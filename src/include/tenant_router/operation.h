/*-------------------------------------------------------------------------
 *
 * operation.h
 *	  Online topology operations (split, ...): rows of some tenants move
 *	  from a source shard to a target while writes go on, in named phases
 *	  sharing one state, recorded in tenant_router.operation.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_OPERATION_H
#define TENANT_ROUTER_OPERATION_H

#include "nodes/pg_list.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/route_cache.h"

/* the kinds of online operation */
typedef enum OperationKind
{
	OPERATION_SPLIT,
	OPERATION_SPLIT_MODULO,
	OPERATION_MOVE,
	OPERATION_MERGE,
	OPERATION_PIN,
	OPERATION_UNPIN
} OperationKind;

/* what the caller of an online operation asked for */
typedef struct OperationArgs
{
	OperationKind kind;
	char		shard_id[SHARD_ID_MAXLEN];	/* the source */
	char		target_id[SHARD_ID_MAXLEN]; /* the new or receiving shard */
	int64		split_at;
	int64		tenant;
	char	   *dsn;			/* the target's, for a new database */
} OperationArgs;

typedef struct Operation Operation;

/*
 * The state of one online operation.  The first block says what moves; the
 * kind's prepare fills it in.  The second block is what exists on the
 * shards at this moment: the undo state, kept true by every phase, so that
 * the undo removes exactly what was made.  Everything lives in cxt.
 */
struct Operation
{
	/* what moves, from where to where */
	OperationKind kind;
	const char *operation;		/* "split", ...: in messages and the record */
	int64		op_id;
	char		name[64];		/* publication, replication slot, subscription */
	char	   *marker;			/* the marker table, on both shards */
	ShardRow   *source;			/* the shard rows leave, as in the catalog */
	ShardRow   *source_after;	/* what it owns afterwards; NULL: nothing */
	ShardRow   *target;			/* the shard rows go to, owning what it will */
	ShardRow   *target_before;	/* its catalog row now; NULL: a new database */
	ShardRow   *moving;			/* the tenants that move: those it owns */
	bool		has_tenant;		/* a pin: the one tenant that moves */
	int64		tenant;
	const char *state;			/* the shards' state meanwhile, or NULL */
	void		(*flip) (Operation *op);	/* the catalog change; SPI connected */

	List	   *tables;			/* LogicalTableRow */
	ShardConn  *source_conn;	/* statements that commit on their own */
	ShardConn  *switch_conn;	/* the switch's transaction */
	ShardConn  *target_conn;

	/* what exists on the shards now */
	bool		target_changed; /* target tables created, or their constraint set */
	bool		target_filled;	/* the target may hold copied rows */
	bool		published;		/* publication and the source's marker table */
	bool		fenced;			/* the fence on the source (shard_ddl.c) */
	List	   *identity_restore;	/* statements restoring REPLICA IDENTITY */
	List	   *identity_full;	/* and making it FULL meanwhile */
	bool		slot_created;
	bool		subscribed;		/* subscription and the target's marker table */
	bool		switching;		/* the switch transaction is open */
	bool		narrowed;		/* the source's constraint may be narrowed */
	bool		flipped;		/* the catalog change committed */
	bool		undoing;
	bool		undo_failed;	/* a part of the undo failed: not finished */

	const char *phase;
	const char *error;			/* why it rolled back */
	int64		rows_copied;
	int			copied_tables;	/* tables whose copy is counted */
	int			next_table;		/* of a step done one table at a time */
	int			markers_sent;	/* the token of the last marker */
	int			switch_waited;	/* ms the switch's attempts waited for writers */
	MemoryContext cxt;
};

/*
 * A phase, or a step of one (named after the first: "phase/step" for
 * tenant_router.operation_pause_before): true when done, false to be
 * called again.
 */
typedef struct OperationStep
{
	const char *phase;
	const char *step;			/* NULL: the phase's first step */
	bool		(*run) (Operation *op);
} OperationStep;

/* operation.c */
extern const OperationStep OperationSteps[];
extern const int OperationStepCount;
extern void OperationConnect(Operation *op);
extern void OperationUndo(Operation *op);
extern void OperationFinish(Operation *op);
extern ShardRow *OperationKeepShard(Operation *op, const ShardRow *row);
extern char *OperationMovingSql(Operation *op, const char *tenant_column);
extern void OperationQueueCompleted(Operation *op, const char *event, int64 version);

/* the kinds: prepare validates and fills op in (SPI connected, shards locked) */
extern void SplitPrepare(Operation *op, const OperationArgs *args);
extern void SplitModuloPrepare(Operation *op, const OperationArgs *args);
extern void MovePrepare(Operation *op, const OperationArgs *args);
extern void MergePrepare(Operation *op, const OperationArgs *args);
extern void PinPrepare(Operation *op, const OperationArgs *args);
extern void UnpinPrepare(Operation *op, const OperationArgs *args);

#endif
