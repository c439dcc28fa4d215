/*-------------------------------------------------------------------------
 *
 * fdw.h
 *	  The foreign-data wrapper of logical tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_FDW_H
#define TENANT_ROUTER_FDW_H

#include "foreign/fdwapi.h"

#include "tenant_router/route_cache.h"

/* ForeignScan.fdw_private */
enum FdwScanPrivate
{
	FdwScanSql,					/* remote SELECT (String) */
	FdwScanRetrievedAttrs,		/* attnums of its columns (IntList) */
	FdwScanNumParams,			/* shipped parameters (Integer) */
	FdwScanTenantStrategies,	/* tenant conditions (IntList) */
	FdwScanMergeKeys,			/* (column, sort op, collation, nulls first)
								 * of each key the shards sort by, or NIL */
	FdwScanTableName,			/* the logical table, for messages (String) */
	FdwScanColumnKinds,			/* PartialKind of each output column, or NIL
								 * for columns returned as they are (IntList) */
	FdwScanReference,			/* a reference table: read from one shard
								 * (Boolean) */
	FdwScanRemoteTable			/* the shards' table, schema-qualified and
								 * quoted (String) */
};

/* ModifyTable.fdw_privlist entries */
enum FdwModifyPrivate
{
	FdwModifySql,				/* remote statement (String) */
	FdwModifyTargetAttrs,		/* attnums of its parameters (IntList) */
	FdwModifyRetrievedAttrs,	/* attnums of RETURNING columns (IntList) */
	FdwModifyDoNothing			/* ON CONFLICT DO NOTHING (Boolean) */
};

/* fdw_scan.c */
extern void TrBeginForeignScan(ForeignScanState *node, int eflags);
extern TupleTableSlot *TrIterateForeignScan(ForeignScanState *node);
extern void TrReScanForeignScan(ForeignScanState *node);
extern void TrEndForeignScan(ForeignScanState *node);
extern void TrExplainForeignScan(ForeignScanState *node, struct ExplainState *es);
extern void TrExplainShards(List *shards, struct ExplainState *es);

/* fdw_modify.c */
extern void TrAddForeignUpdateTargets(PlannerInfo *root, Index rtindex,
									  RangeTblEntry *target_rte,
									  Relation target_relation);
extern List *TrPlanForeignModify(PlannerInfo *root, ModifyTable *plan,
								 Index resultRelation, int subplan_index);
extern void TrBeginForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
								 List *fdw_private, int subplan_index, int eflags);
extern TupleTableSlot *TrExecForeignInsert(EState *estate, ResultRelInfo *rinfo,
										   TupleTableSlot *slot, TupleTableSlot *planSlot);
extern TupleTableSlot *TrExecForeignUpdate(EState *estate, ResultRelInfo *rinfo,
										   TupleTableSlot *slot, TupleTableSlot *planSlot);
extern TupleTableSlot *TrExecForeignDelete(EState *estate, ResultRelInfo *rinfo,
										   TupleTableSlot *slot, TupleTableSlot *planSlot);
extern TupleTableSlot **TrExecForeignBatchInsert(EState *estate, ResultRelInfo *rinfo,
												 TupleTableSlot **slots,
												 TupleTableSlot **planSlots,
												 int *numSlots);
extern int	TrGetForeignModifyBatchSize(ResultRelInfo *rinfo);
extern void TrEndForeignModify(EState *estate, ResultRelInfo *rinfo);
extern void TrBeginForeignInsert(ModifyTableState *mtstate, ResultRelInfo *rinfo);
extern void TrEndForeignInsert(EState *estate, ResultRelInfo *rinfo);
extern int	TrIsForeignRelUpdatable(Relation rel);
extern void TrExplainForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
								   List *fdw_private, int subplan_index,
								   struct ExplainState *es);
extern void TrExecForeignTruncate(List *rels, DropBehavior behavior, bool restart_seqs);

/* fdw_direct.c */
extern bool TrPlanDirectModify(PlannerInfo *root, ModifyTable *plan, Index resultRelation,
							   int subplan_index);
extern void TrBeginDirectModify(ForeignScanState *node, int eflags);
extern TupleTableSlot *TrIterateDirectModify(ForeignScanState *node);
extern void TrEndDirectModify(ForeignScanState *node);
extern void TrExplainDirectModify(ForeignScanState *node, struct ExplainState *es);

/* fdw.c */
extern LogicalTable *GetLogicalTableOrError(Relation rel);
extern bool TrScanIsRemote(RelOptInfo *baserel);
extern List *TrScanRemoteConds(RelOptInfo *baserel);

/* fdw_modify.c */
extern List *TrAllColumns(Relation rel);

/* fdw_copy.c */
typedef struct TrCopy TrCopy;
struct ShardConn;
extern TrCopy *TrCopyBegin(Relation rel, LogicalTable *table, List *attrs);
extern void TrCopyRow(TrCopy *copy, struct ShardConn *sc, TupleTableSlot *slot);
extern uint64 TrCopyEnd(TrCopy *copy);

/* fdw_reference.c */
extern List *TrReferenceReadShards(void);
extern List *TrReferenceWriteShards(const char *table_name, bool allow_none);
extern List *TrReferenceWriteConns(const char *table_name, bool allow_none);
extern uint64 TrReferenceExec(const char *table_name, List *conns, const char *sql,
							  int nparams, const Oid *types, const char *const *values);
extern void TrReferenceCheckCount(const char *table_name, const char *shard_label,
								  uint64 expected, uint64 affected);

#endif
