/*-------------------------------------------------------------------------
 *
 * topology.h
 *	  Changing the topology: the code behind shard_add(), shard_remove(),
 *	  shard_update_range() and the matching Redis events.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_TOPOLOGY_H
#define TENANT_ROUTER_TOPOLOGY_H

/* where a topology change comes from */
typedef enum TopologySource
{
	TOPOLOGY_FROM_SQL,			/* an admin function: published to Redis */
	TOPOLOGY_FROM_EVENT			/* a Redis event: not published again */
} TopologySource;

extern void TopologyRequireSuperuser(const char *function, const char *why);
extern int64 TopologyAddShard(const char *shard_id, bool has_range,
							  int64 range_start, int64 range_end, const char *dsn,
							  int32 modulus, int32 remainder, TopologySource source);
extern int64 TopologyRemoveShard(const char *shard_id, TopologySource source);
extern int64 TopologyUpdateRange(const char *shard_id, int64 range_start,
								 int64 range_end, int32 modulus, int32 remainder,
								 TopologySource source);
extern int64 TopologyPinTenant(int64 tenant, const char *shard_id, TopologySource source);
extern int64 TopologyUnpinTenant(int64 tenant, TopologySource source);
extern int64 TopologyMoveShard(const char *shard_id, const char *dsn, TopologySource source);
extern int64 TopologyMergeShard(const char *shard_id, const char *into_shard_id,
								TopologySource source);
extern int64 TopologyCleanupShard(const char *shard_id);
extern void TopologyCleanupIfPending(const char *shard_id);

/* building blocks of the changes above; SPI must be connected */
extern void ValidateShardId(const char *shard_id);
extern int64 TopologyBumpVersion(void);
extern struct ShardRow *TopologyLockShard(const char *shard_id);
extern void TopologyInsertShard(const struct ShardRow *shard);
extern void TopologyUpdateShard(const struct ShardRow *shard);
extern void TopologyQueueCleanup(const char *shard_id);
extern void TopologyCheckPlacement(const struct ShardRow *shard, const char *except,
								   const char *also_except);
extern void TopologyStorePin(int64 tenant, const char *shard_id);
extern void TopologyDeletePin(int64 tenant);
extern void TopologyRepointPins(const char *from_shard_id, const char *to_shard_id);
extern void TopologyUnknownShard(const char *shard_id) pg_attribute_noreturn();
extern void TopologySpiExec(const char *sql, int nargs, Oid *types, Datum *values,
							const char *nulls, int expected);
extern void TopologySetShardState(const char *shard_id, const char *state);
extern char *TopologyCheckDsn(const char *shard_id, const char *dsn);
extern char *TopologyShardPayload(const struct ShardRow *shard, bool with_dsn);
extern void TopologyQueueAddShard(const struct ShardRow *shard);
extern void TopologyQueueUpdateRange(const struct ShardRow *shard);
extern void TopologyCopyShardId(char *dst, const char *shard_id, bool existing);
extern void TopologyRequireUpdate(void) pg_attribute_noreturn();

#endif
