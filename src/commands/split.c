/*-------------------------------------------------------------------------
 *
 * split.c
 *	  shard_split(): the upper part of a shard's range moves, with its rows,
 *	  to a new shard while writes go on.  An online operation (operation.c):
 *	  this file says what moves and how the catalog changes.
 *
 * The new shard owns split_at+1..range_end, and receives those tenants'
 * rows; the old shard keeps range_start..split_at.  The flip updates the
 * old shard's range and inserts the new shard, each with a version of its
 * own (other coordinators apply the two events in order and would skip the
 * second as stale if both carried the same version), and queues the old
 * shard for its cleanup.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "tenant_router/catalog.h"
#include "tenant_router/dsn.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/outbox.h"
#include "tenant_router/topology.h"

PG_FUNCTION_INFO_V1(tenant_router_shard_split);

/* split_flip: the old shard shrinks, the new one appears */
static void
split_flip(Operation *op)
{
	op->source_after->version = TopologyBumpVersion();
	TopologyUpdateShard(op->source_after);
	op->target->version = TopologyBumpVersion();
	TopologyInsertShard(op->target);
	TopologyQueueCleanup(op->source->shard_id);
	OutboxUpdateRange(op->source_after->shard_id, op->source_after->range_start,
					  op->source_after->range_end, op->source_after->version);
	OutboxAddShard(op->target->shard_id, op->target->range_start, op->target->range_end,
				   op->target->dsn, op->target->version);
}

/*
 * SplitPrepare checks a split of args->shard_id at args->split_at to a new
 * shard args->target_id at args->dsn and says what moves: the tenants
 * split_at+1..range_end.  SPI is connected.
 */
void
SplitPrepare(Operation *op, const OperationArgs *args)
{
	ShardRow   *old;
	ShardRow	target;

	ValidateShardId(args->target_id);
	DsnValidate(args->dsn);
	old = TopologyLockShard(args->shard_id);
	if (old == NULL)
		TopologyUnknownShard(args->shard_id);
	if (args->split_at < old->range_start || args->split_at >= old->range_end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("split_at " INT64_FORMAT " is not inside shard \"%s\"",
						args->split_at, args->shard_id),
				 errdetail("Shard \"%s\" owns " INT64_FORMAT ".." INT64_FORMAT
						   "; split_at must be at least range_start and less than range_end.",
						   args->shard_id, old->range_start, old->range_end)));
	if (TopologyLockShard(args->target_id) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("shard \"%s\" already exists", args->target_id)));

	memset(&target, 0, sizeof(target));
	target.shard_id = (char *) args->target_id;
	target.range_start = args->split_at + 1;
	target.range_end = old->range_end;
	target.dsn = args->dsn;
	target.state = "active";
	target.db_identity = TopologyCheckDsn(args->target_id, args->dsn, NULL);

	op->source = OperationKeepShard(op, old);
	op->source_after = OperationKeepShard(op, old);
	op->source_after->range_end = args->split_at;
	op->source_after->state = "active";
	op->target = OperationKeepShard(op, &target);
	op->moving = op->target;
	op->flip = split_flip;
}

Datum
tenant_router_shard_split(PG_FUNCTION_ARGS)
{
	OperationArgs args;

	TopologyRequireSuperuser("shard_split",
							 "The new shard receives the old shard's connection string, for its subscription.");
	memset(&args, 0, sizeof(args));
	args.kind = OPERATION_SPLIT;
	TopologyCopyShardId(args.shard_id, text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	args.split_at = PG_GETARG_INT64(1);
	TopologyCopyShardId(args.target_id, text_to_cstring(PG_GETARG_TEXT_PP(2)), false);
	args.dsn = text_to_cstring(PG_GETARG_TEXT_PP(3));
	OperationLaunch(&args, "shard_split");
	PG_RETURN_VOID();
}
