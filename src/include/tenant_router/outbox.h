/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  Transactional outbox of topology events to publish on Redis.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_OUTBOX_H
#define TENANT_ROUTER_OUTBOX_H

struct Latch;

extern void OutboxInit(void);
extern void OutboxSetConsumer(struct Latch *latch);
extern void OutboxWake(void);
extern void OutboxAddShard(const char *shard_id, int64 range_start,
						   int64 range_end, const char *dsn, int64 version);
extern void OutboxRemoveShard(const char *shard_id, int64 version);
extern void OutboxUpdateRange(const char *shard_id, int64 range_start,
							  int64 range_end, int64 version);
extern char *OriginName(void);
extern uint64 OriginId(void);
extern void OutboxQueue(const char *op, const char *payload, int64 version);

#endif
