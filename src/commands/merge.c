/*-------------------------------------------------------------------------
 *
 * merge.c
 *	  shard_merge(): a shard's rows move into the shard of the adjacent
 *	  range while writes go on; that shard then owns both ranges, and the
 *	  first one is gone.  An online operation (operation.c): this file says
 *	  what moves and how the catalog changes, and applies MERGE_SHARD, the
 *	  event of a merge made elsewhere.
 *
 * Both shards own a whole range (modulus 1).  The receiving shard's
 * constraint covers both ranges (and the pins of both) from the start, so
 * that the copied rows land.  The flip removes the merged shard, widens the
 * other's range and moves the merged shard's pins to it.  The merged
 * shard's database keeps a copy of its rows that refuses every write; drop
 * it once no coordinator routes by the old topology any more.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "tenant_router/catalog.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/outbox.h"
#include "tenant_router/shard_ddl.h"
#include "tenant_router/topology.h"

PG_FUNCTION_INFO_V1(tenant_router_shard_merge);

/*
 * merged_shards locks shard_id and into_shard_id, checks that they can be
 * merged and returns them in *from and *into, and the shard into will be.
 */
static ShardRow *
merged_shards(const char *shard_id, const char *into_shard_id, ShardRow **from, ShardRow **into)
{
	ShardRow   *merged;

	if (strcmp(shard_id, into_shard_id) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("shard \"%s\" cannot be merged into itself", shard_id)));
	*from = TopologyLockShard(shard_id);
	if (*from == NULL)
		TopologyUnknownShard(shard_id);
	*into = TopologyLockShard(into_shard_id);
	if (*into == NULL)
		TopologyUnknownShard(into_shard_id);
	if (!(*from)->has_range || !(*into)->has_range ||
		(*from)->modulus > 1 || (*into)->modulus > 1 ||
		((*from)->range_end + 1 != (*into)->range_start &&
		 (*into)->range_end + 1 != (*from)->range_start))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("shards \"%s\" and \"%s\" do not own adjacent ranges", shard_id, into_shard_id),
				 errdetail("A merge joins two ranges that touch, each owned whole by one shard (modulus 1)."),
				 errhint("tenant_router.shards lists the ranges.")));
	merged = palloc(sizeof(ShardRow));
	*merged = **into;
	merged->range_start = Min((*from)->range_start, (*into)->range_start);
	merged->range_end = Max((*from)->range_end, (*into)->range_end);
	merged->state = "active";
	/* what it owns once it has the other's pins too */
	CatalogLoadPins(merged, shard_id);
	return merged;
}

/*
 * merge_catalog makes the catalog say that into (the row it will have)
 * took from in: from is gone, its pins are into's.  SPI is connected.
 */
static void
merge_catalog(const char *from_shard_id, ShardRow *into, TopologySource source)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(from_shard_id)};

	into->version = TopologyBumpVersion();
	TopologyRepointPins(from_shard_id, into->shard_id);
	TopologySpiExec("DELETE FROM tenant_router.shard WHERE shard_id = $1",
					1, types, values, NULL, SPI_OK_DELETE);
	TopologySpiExec("DELETE FROM tenant_router.pending_cleanup WHERE shard_id = $1",
					1, types, values, NULL, SPI_OK_DELETE);
	TopologyUpdateShard(into);
	if (source == TOPOLOGY_FROM_SQL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"shard_id\": ");
		escape_json(&buf, from_shard_id);
		appendStringInfoString(&buf, ", \"into_shard_id\": ");
		escape_json(&buf, into->shard_id);
		appendStringInfoChar(&buf, '}');
		OutboxQueue("MERGE_SHARD", buf.data, into->version);
	}
}

static void
merge_flip(Operation *op)
{
	merge_catalog(op->source->shard_id, op->target, TOPOLOGY_FROM_SQL);
	OperationQueueCompleted(op, "SHARD_MERGE_COMPLETED", op->target->version);
}

/*
 * MergePrepare checks a merge of args->shard_id into args->target_id and
 * says what moves: all the first one owns.  SPI is connected.
 */
void
MergePrepare(Operation *op, const OperationArgs *args)
{
	ShardRow   *from;
	ShardRow   *into;
	ShardRow   *merged = merged_shards(args->shard_id, args->target_id, &from, &into);

	op->source = OperationKeepShard(op, from);
	op->source_after = NULL;	/* it owns nothing any more */
	op->target_before = OperationKeepShard(op, into);
	op->target = OperationKeepShard(op, merged);
	op->moving = op->source;
	op->flip = merge_flip;
}

/*
 * TopologyMergeShard merges shard_id into into_shard_id in the catalog,
 * where the rows are already: the code of a MERGE_SHARD event.
 */
int64
TopologyMergeShard(const char *shard_id, const char *into_shard_id, TopologySource source)
{
	ShardRow   *from;
	ShardRow   *into;
	ShardRow   *merged;

	SPI_connect();
	merged = merged_shards(shard_id, into_shard_id, &from, &into);
	if (source == TOPOLOGY_FROM_SQL)
	{
		OperationCheckIdle(shard_id);
		OperationCheckIdle(into_shard_id);
	}
	merge_catalog(shard_id, merged, source);
	ShardSyncAllTables(merged);
	SPI_finish();
	return merged->version;
}

Datum
tenant_router_shard_merge(PG_FUNCTION_ARGS)
{
	OperationArgs args;

	TopologyRequireSuperuser("shard_merge",
							 "The receiving shard gets the other shard's connection string, for its subscription.");
	memset(&args, 0, sizeof(args));
	args.kind = OPERATION_MERGE;
	TopologyCopyShardId(args.shard_id, text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	TopologyCopyShardId(args.target_id, text_to_cstring(PG_GETARG_TEXT_PP(1)), true);
	OperationLaunch(&args, "shard_merge");
	PG_RETURN_VOID();
}
