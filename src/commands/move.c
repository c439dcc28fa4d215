/*-------------------------------------------------------------------------
 *
 * move.c
 *	  shard_move(): a shard's rows move to another database while writes go
 *	  on; its id, range, remainder and pins stay.  An online operation
 *	  (operation.c): this file says what moves and how the catalog changes,
 *	  and applies UPDATE_SHARD_DSN, the event of a move made elsewhere.
 *
 * Every tenant the shard owns moves.  The old database keeps a copy of the
 * rows, which refuses every write (its range constraint becomes "false",
 * its rows are guarded) and which nothing reads: drop it once no
 * coordinator routes by the old DSN any more.  The flip changes the shard's
 * DSN in the catalog and publishes UPDATE_SHARD_DSN and SHARD_MOVE_COMPLETED.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "tenant_router/catalog.h"
#include "tenant_router/dsn.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/outbox.h"
#include "tenant_router/shard_ddl.h"
#include "tenant_router/topology.h"

PG_FUNCTION_INFO_V1(tenant_router_shard_move);

/* queue_move queues the UPDATE_SHARD_DSN event of shard */
static void
queue_move(const ShardRow *shard)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"shard_id\": ");
	escape_json(&buf, shard->shard_id);
	appendStringInfoString(&buf, ", \"dsn\": ");
	escape_json(&buf, shard->dsn);
	appendStringInfoChar(&buf, '}');
	OutboxQueue("UPDATE_SHARD_DSN", buf.data, shard->version);
}

/* move_flip: the shard is at its new DSN */
static void
move_flip(Operation *op)
{
	op->target->version = TopologyBumpVersion();
	TopologyUpdateShard(op->target);
	queue_move(op->target);
	OperationQueueCompleted(op, "SHARD_MOVE_COMPLETED", op->target->version);
}

/*
 * MovePrepare checks a move of args->shard_id to args->dsn and says what
 * moves: all it owns.  SPI is connected.
 */
void
MovePrepare(Operation *op, const OperationArgs *args)
{
	ShardRow   *shard = TopologyLockShard(args->shard_id);
	ShardRow   *moved;

	if (shard == NULL)
		TopologyUnknownShard(args->shard_id);
	DsnValidate(args->dsn);
	op->source = OperationKeepShard(op, shard);
	op->source_after = NULL;	/* its old database owns nothing */
	moved = OperationKeepShard(op, shard);
	moved->dsn = MemoryContextStrdup(op->cxt, args->dsn);
	moved->db_identity = MemoryContextStrdup(op->cxt, TopologyCheckDsn(args->shard_id, args->dsn));
	moved->state = "active";
	op->target = moved;
	op->moving = op->source;
	op->flip = move_flip;
}

/*
 * TopologyMoveShard puts shard_id at dsn in the catalog, where its rows are
 * already: the code of an UPDATE_SHARD_DSN event.  The shard's tables at
 * dsn are checked (or created) as for shard_add().
 */
int64
TopologyMoveShard(const char *shard_id, const char *dsn, TopologySource source)
{
	ShardRow   *shard;

	DsnValidate(dsn);
	SPI_connect();
	shard = TopologyLockShard(shard_id);
	if (shard == NULL)
		TopologyUnknownShard(shard_id);
	if (source == TOPOLOGY_FROM_SQL)
		OperationCheckIdle(shard_id);
	shard->version = TopologyBumpVersion();
	if (strcmp(shard->dsn, dsn) != 0)
		shard->db_identity = TopologyCheckDsn(shard_id, dsn);
	shard->dsn = pstrdup(dsn);
	TopologyUpdateShard(shard);
	ShardSyncAllTables(shard);
	if (source == TOPOLOGY_FROM_SQL)
		queue_move(shard);
	SPI_finish();
	return shard->version;
}

Datum
tenant_router_shard_move(PG_FUNCTION_ARGS)
{
	OperationArgs args;

	TopologyRequireSuperuser("shard_move",
							 "The new database receives the shard's connection string, for its subscription.");
	memset(&args, 0, sizeof(args));
	args.kind = OPERATION_MOVE;
	TopologyCopyShardId(args.shard_id, text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	strlcpy(args.target_id, args.shard_id, sizeof(args.target_id));
	args.dsn = text_to_cstring(PG_GETARG_TEXT_PP(1));
	OperationLaunch(&args, "shard_move");
	PG_RETURN_VOID();
}
