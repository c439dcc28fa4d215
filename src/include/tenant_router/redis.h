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

#include "tenant_router/topology_log.h"

extern bool RedisConnect(char **errmsg);
extern void RedisDisconnect(void);
extern bool RedisConnected(void);
extern pgsocket RedisSocket(void);
extern uint64 RedisSubscribedAt(void);
extern bool RedisReadMessages(bool read_socket, int max, List **messages, char **errmsg);
extern bool RedisMessagesBuffered(void);

#endif
