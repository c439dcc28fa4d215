/*-------------------------------------------------------------------------
 *
 * split.c
 *	  shard_split(): the upper part of a shard's range moves, with its rows,
 *	  to a new shard while writes go on; shard_split_modulo(): half of a
 *	  shard's tenants by remainder move to a new shard sharing its range.
 *	  Online operations (operation.c): this file says what moves and how
 *	  the catalog changes.
 *
 * A split at split_at: the new shard owns split_at+1..range_end and
 * receives those tenants' rows; the old shard keeps range_start..split_at.
 * A split by modulo (seed 003's "mod 2, then mod 4"): a shard with remainder
 * r of modulus m keeps remainder r of 2m, and the new shard, on the same
 * range, owns remainder r+m of 2m: half of the rows move, none of the other
 * shards of the range changes.  Tenants pinned elsewhere stay where they
 * are; tenants pinned to the old shard stay with it.  The flip updates the
 * old shard and inserts the new one, each with a version of its own (other
 * coordinators apply the two events in order and would skip the second as
 * stale if both carried the same version), and queues the old shard for its
 * cleanup.
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
PG_FUNCTION_INFO_V1(tenant_router_shard_split_modulo);

/* split_flip: the old shard shrinks, the new one appears */
static void
split_flip(Operation *op)
{
	op->source_after->version = TopologyBumpVersion();
	TopologyUpdateShard(op->source_after);
	op->target->version = TopologyBumpVersion();
	TopologyInsertShard(op->target);
	TopologyQueueCleanup(op->source->shard_id);
	TopologyQueueUpdateRange(op->source_after);
	TopologyQueueAddShard(op->target);
	OperationQueueCompleted(op, "SHARD_SPLIT_COMPLETED", op->target->version);
}

/*
 * new_shard checks the new shard's id and DSN and returns its row: owning
 * range_start..range_end and remainder of modulus, at dsn.
 */
static ShardRow *
new_shard(const OperationArgs *args, int64 range_start, int64 range_end, int32 modulus,
		  int32 remainder)
{
	ShardRow   *target = palloc0(sizeof(ShardRow));

	ValidateShardId(args->target_id);
	DsnValidate(args->dsn);
	if (TopologyLockShard(args->target_id) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("shard \"%s\" already exists", args->target_id)));
	target->shard_id = (char *) args->target_id;
	target->has_range = true;
	target->range_start = range_start;
	target->range_end = range_end;
	target->modulus = modulus;
	target->remainder = remainder;
	target->dsn = args->dsn;
	target->state = "active";
	target->db_identity = TopologyCheckDsn(args->target_id, args->dsn);
	return target;
}

/* ranged_source returns the locked catalog row of the shard to split */
static ShardRow *
ranged_source(const char *shard_id)
{
	ShardRow   *old = TopologyLockShard(shard_id);

	if (old == NULL)
		TopologyUnknownShard(shard_id);
	if (!old->has_range)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("shard \"%s\" has no range to split", shard_id),
				 errdetail("It owns only the tenants pinned to it."),
				 errhint("Pin some of them elsewhere with tenant_pin().")));
	return old;
}

/*
 * SplitPrepare checks a split of args->shard_id at args->split_at to a new
 * shard args->target_id at args->dsn and says what moves: the tenants
 * split_at+1..range_end.  SPI is connected.
 */
void
SplitPrepare(Operation *op, const OperationArgs *args)
{
	ShardRow   *old = ranged_source(args->shard_id);

	if (old->modulus > 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("shard \"%s\" shares its range by modulo and cannot be split by range",
						args->shard_id),
				 errdetail("It owns remainder %d of %d of range " INT64_FORMAT ".." INT64_FORMAT ".",
						   old->remainder, old->modulus, old->range_start, old->range_end),
				 errhint("Split it by its remainder with shard_split_modulo().")));
	if (args->split_at < old->range_start || args->split_at >= old->range_end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("split_at " INT64_FORMAT " is not inside shard \"%s\"",
						args->split_at, args->shard_id),
				 errdetail("Shard \"%s\" owns " INT64_FORMAT ".." INT64_FORMAT
						   "; split_at must be at least range_start and less than range_end.",
						   args->shard_id, old->range_start, old->range_end)));

	op->source = OperationKeepShard(op, old);
	op->source_after = OperationKeepShard(op, old);
	op->source_after->range_end = args->split_at;
	op->source_after->state = "active";
	CatalogLoadPins(op->source_after, NULL);
	op->source_after = OperationKeepShard(op, op->source_after);
	op->target = OperationKeepShard(op, new_shard(args, args->split_at + 1, old->range_end, 1, 0));
	op->moving = op->target;
	op->flip = split_flip;
}

/*
 * SplitModuloPrepare checks a split by modulo of args->shard_id to a new
 * shard args->target_id at args->dsn: remainder r of m becomes r and r+m of
 * 2m, the tenants of r+m move.  SPI is connected.
 */
void
SplitModuloPrepare(Operation *op, const OperationArgs *args)
{
	ShardRow   *old = ranged_source(args->shard_id);

	if (old->modulus * 2 > SHARD_MODULUS_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("shard \"%s\" cannot be split by modulo again", args->shard_id),
				 errdetail("Its modulus is %d; the largest is %d.", old->modulus, SHARD_MODULUS_MAX)));

	op->source = OperationKeepShard(op, old);
	op->source_after = OperationKeepShard(op, old);
	op->source_after->modulus = old->modulus * 2;
	op->source_after->state = "active";
	CatalogLoadPins(op->source_after, NULL);
	op->source_after = OperationKeepShard(op, op->source_after);
	op->target = OperationKeepShard(op, new_shard(args, old->range_start, old->range_end,
												  old->modulus * 2, old->remainder + old->modulus));
	/* the other shards of the range, with the halves */
	TopologyCheckPlacement(op->source_after, old->shard_id, NULL);
	TopologyCheckPlacement(op->target, old->shard_id, NULL);
	op->moving = op->target;
	op->flip = split_flip;
}

/* split_args fills the arguments common to both splits */
static void
split_args(OperationArgs *args, OperationKind kind, text *shard_id, text *new_shard_id,
		   text *new_dsn)
{
	memset(args, 0, sizeof(OperationArgs));
	args->kind = kind;
	TopologyCopyShardId(args->shard_id, text_to_cstring(shard_id), true);
	TopologyCopyShardId(args->target_id, text_to_cstring(new_shard_id), false);
	args->dsn = text_to_cstring(new_dsn);
}

Datum
tenant_router_shard_split(PG_FUNCTION_ARGS)
{
	OperationArgs args;

	TopologyRequireSuperuser("shard_split",
							 "The new shard receives the old shard's connection string, for its subscription.");
	split_args(&args, OPERATION_SPLIT, PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(2),
			   PG_GETARG_TEXT_PP(3));
	args.split_at = PG_GETARG_INT64(1);
	OperationLaunch(&args, "shard_split");
	PG_RETURN_VOID();
}

Datum
tenant_router_shard_split_modulo(PG_FUNCTION_ARGS)
{
	OperationArgs args;

	TopologyRequireSuperuser("shard_split_modulo",
							 "The new shard receives the old shard's connection string, for its subscription.");
	split_args(&args, OPERATION_SPLIT_MODULO, PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1),
			   PG_GETARG_TEXT_PP(2));
	OperationLaunch(&args, "shard_split_modulo");
	PG_RETURN_VOID();
}
