/*-------------------------------------------------------------------------
 *
 * redis.h
 *	  The topology worker's Redis connections.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_REDIS_H
#define TENANT_ROUTER_REDIS_H

#include "nodes/pg_list.h"

/* an entry of the topology stream */
typedef struct RedisStreamEntry
{
	char	   *id;
	char	   *event;			/* NULL if the entry has no "event" field */
} RedisStreamEntry;

extern bool RedisConnect(char **errmsg);
extern void RedisDisconnect(void);
extern bool RedisConnected(void);
extern pgsocket RedisSocket(void);
extern bool RedisReadMessages(bool read_socket, List **payloads, char **errmsg);
extern bool RedisStreamRead(const char *key, const char *after, int count,
							List **entries, char **errmsg);
extern bool RedisStreamTrimmedAfter(const char *key, const char *id, bool *trimmed,
									char **errmsg);
extern bool RedisPublish(const char *stream_key, const char *channel,
						 const char *event, char **errmsg);
extern char *RedisStreamKey(void);

#endif
