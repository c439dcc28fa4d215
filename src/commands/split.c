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

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "tenant_router/catalog.h"
#include "tenant_router/dsn.h"
#include "tenant_router/operation.h"
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
 * TopologySplitShard moves tenants split_at+1..range_end of shard_id, with
 * their rows, to a new shard: the code of shard_split().
 */
void
TopologySplitShard(const char *shard_id, int64 split_at, const char *new_shard_id,
				   const char *new_dsn)
{
	Operation  *op = OperationCreate("split");
	ShardRow   *old;

	ValidateShardId(new_shard_id);
	DsnValidate(new_dsn);

	SPI_connect();
	op->op_id = TopologyBumpVersion();
	old = TopologyLockShard(shard_id);
	if (old == NULL)
		TopologyUnknownShard(shard_id);
	if (split_at < old->range_start || split_at >= old->range_end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("split_at " INT64_FORMAT " is not inside shard \"%s\"", split_at, shard_id),
				 errdetail("Shard \"%s\" owns " INT64_FORMAT ".." INT64_FORMAT
						   "; split_at must be at least range_start and less than range_end.",
						   shard_id, old->range_start, old->range_end)));
	if (TopologyLockShard(new_shard_id) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("shard \"%s\" already exists", new_shard_id)));
	if (strcmp(old->dsn, new_dsn) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the new shard must be another database than shard \"%s\"", shard_id)));

	snprintf(op->name, sizeof(op->name), "tenant_router_split_" INT64_FORMAT, op->op_id);
	op->source = old;
	op->source_after = palloc(sizeof(ShardRow));
	*op->source_after = *old;
	op->source_after->range_end = split_at;
	op->target = palloc0(sizeof(ShardRow));
	op->target->shard_id = pstrdup(new_shard_id);
	op->target->range_start = split_at + 1;
	op->target->range_end = old->range_end;
	op->target->dsn = pstrdup(new_dsn);
	op->target->state = "active";
	op->moving = op->target;
	op->flip = split_flip;
	OperationRun(op);
	SPI_finish();
}

Datum
tenant_router_shard_split(PG_FUNCTION_ARGS)
{
	TopologyRequireSuperuser("shard_split",
							 "The new shard receives the old shard's connection string, for its subscription.");
	TopologySplitShard(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1),
					   text_to_cstring(PG_GETARG_TEXT_PP(2)),
					   text_to_cstring(PG_GETARG_TEXT_PP(3)));
	PG_RETURN_VOID();
}
