/*-------------------------------------------------------------------------
 *
 * redis.h
 *	  The topology worker's Redis connections.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_REDIS_H
#define TENANT_ROUTER_REDIS_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/*
 * An event read from Redis: a channel message, or an entry of the topology
 * stream.  The bytes are as Redis gave them (they may hold a NUL byte, or
 * be invalid in the database encoding), NUL-terminated.
 */
typedef struct RedisEvent
{
	char	   *id;				/* the stream entry's id; NULL for a message */
	char	   *event;			/* NULL if a stream entry has no "event" field */
	int			len;			/* bytes of event */
	TimestampTz received_at;	/* when the worker read it */
} RedisEvent;

extern bool RedisConnect(char **errmsg);
extern void RedisDisconnect(void);
extern bool RedisConnected(void);
extern pgsocket RedisSocket(void);
extern bool RedisReadMessages(bool read_socket, List **messages, char **errmsg);
extern bool RedisStreamRead(const char *key, const char *after, int count,
							List **entries, char **errmsg);
extern void RedisFreeEvents(List *events);
extern bool RedisStreamTrimmedAfter(const char *key, const char *id, bool *trimmed,
									char **errmsg);
extern bool RedisPublish(const char *stream_key, const char *channel,
						 const char *event, char **errmsg);
extern char *RedisStreamKey(void);

#endif
