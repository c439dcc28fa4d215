/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Shard health and statement statistics per shard and per tenant, in
 *	  shared memory (stats.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_STATS_H
#define TENANT_ROUTER_STATS_H

#include "datatype/timestamp.h"
#include "utils/palloc.h"

#include "tenant_router/route_cache.h"

/*
 * A statement's part on one shard, from the moment it is routed there until
 * it ends.  The caller embeds it in its executor state and calls
 * StatsStatementBegin before anything is sent (connecting included) and
 * StatsStatementEnd when the shard's part is complete; a part whose memory
 * context goes away before it ended (the statement failed, was cancelled or
 * timed out) is counted as an error.
 */
typedef struct StatsStatement
{
	MemoryContextCallback on_reset;
	bool		registered;		/* on_reset is registered */
	bool		active;			/* begun, not ended yet */
	bool		has_tenant;
	int64		tenant;
	uint64		rows;			/* rows read so far (StatsStatementAddRows) */
	TimestampTz start;
	uint64		error_mark;		/* shard errors noted before it began */
	char		shard_id[SHARD_ID_MAXLEN];
} StatsStatement;

#define StatsStatementAddRows(st, n) ((st)->rows += (n))

extern void StatsInit(void);
extern void StatsStatementBegin(StatsStatement *st, const char *shard_id,
								const int64 *tenant, MemoryContext cxt);
extern void StatsStatementEnd(StatsStatement *st, uint64 rows);
extern void StatsShardAnswered(const char *shard_id);
extern void StatsShardFailed(const char *shard_id, const char *message);
extern void StatsNoteShardError(const char *shard_id);

#endif
