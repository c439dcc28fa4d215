/*-------------------------------------------------------------------------
 *
 * ordered_change.h
 *	  A topology change made in SQL takes its place in the order of changes
 *	  kept on Redis, then is in force.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_ORDERED_CHANGE_H
#define TENANT_ROUTER_ORDERED_CHANGE_H

/* a topology change: validates, writes the catalog, queues its events */
typedef void (*TopologyChangeFn) (void *arg);

/*
 * set while a coordinator applies an entry of the order that was applied,
 * shard work included, where it was first applied: the catalog only
 */
extern bool TopologyShardWorkDone;

extern bool TopologyChangesOrdered(void);
extern void OrderedChange(const char *function, TopologyChangeFn change, void *arg,
						  bool retry);

/* the admin functions' changes, ordered (the Topology* function of each) */
extern void OrderedAddShard(const char *shard_id, bool has_range, int64 range_start,
							int64 range_end, const char *dsn, int32 modulus, int32 remainder);
extern void OrderedRemoveShard(const char *shard_id);
extern void OrderedUpdateRange(const char *shard_id, int64 range_start, int64 range_end,
							   int32 modulus, int32 remainder);
extern void OrderedPinTenant(int64 tenant, const char *shard_id);
extern void OrderedUnpinTenant(int64 tenant);

/* an online operation's catalog change */
struct Operation;
extern void OrderedFlip(struct Operation *op);

#endif
