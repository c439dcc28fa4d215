/*-------------------------------------------------------------------------
 *
 * redis.c
 *	  The topology worker's Redis connections (hiredis 0.14).
 *
 * One connection is subscribed to the topology channel; the worker waits on
 * its socket with its latch and reads what arrived without blocking.  The
 * other runs commands: the log's (metadata/topology_log.c, the same code
 * a backend runs to order its change), each bounded by a timeout.  Either
 * failing drops both; the worker reconnects.  Messages never include the
 * Redis password.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <hiredis/hiredis.h>

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "tenant_router/guc.h"
#include "tenant_router/redis.h"
#include "tenant_router/topology_log.h"

static redisContext *sub_ctx = NULL;
static uint64 subscribed_ms = 0;

static void
set_error(char **errmsg, const char *what, const char *detail)
{
	if (errmsg)
		*errmsg = psprintf("%s: %s", what, detail ? detail : "no reply");
}

/* command runs a command on the subscription connection before it subscribes */
static redisReply *
command(char **errmsg, const char *what, const char *format,...)
{
	va_list		ap;
	redisReply *reply;

	va_start(ap, format);
	reply = redisvCommand(sub_ctx, format, ap);
	va_end(ap);
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
	{
		set_error(errmsg, what, reply ? reply->str : sub_ctx->errstr);
		if (reply)
			freeReplyObject(reply);
		return NULL;
	}
	return reply;
}

/*
 * RedisConnect opens both connections (AUTH, SELECT, SUBSCRIBE); on failure
 * it returns false with a message and leaves nothing open.
 */
bool
RedisConnect(char **errmsg)
{
	redisReply *reply;

	RedisDisconnect();
	if (!TopologyLogConnect(errmsg))
		return false;
	sub_ctx = TopologyLogOpen(errmsg);
	if (sub_ctx == NULL)
	{
		RedisDisconnect();
		return false;
	}

	/* Redis's clock before the subscription: what was added earlier gets no copy */
	reply = command(errmsg, "TIME failed", "TIME");
	if (reply == NULL)
	{
		RedisDisconnect();
		return false;
	}
	subscribed_ms = 0;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2)
		subscribed_ms = strtou64(reply->element[0]->str, NULL, 10) * 1000 +
			strtou64(reply->element[1]->str, NULL, 10) / 1000;
	freeReplyObject(reply);

	reply = command(errmsg, "SUBSCRIBE failed", "SUBSCRIBE %s", TenantRouterTopologyChannel);
	if (reply == NULL)
	{
		RedisDisconnect();
		return false;
	}
	freeReplyObject(reply);
	return true;
}

void
RedisDisconnect(void)
{
	if (sub_ctx)
		redisFree(sub_ctx);
	sub_ctx = NULL;
	TopologyLogDisconnect();
}

bool
RedisConnected(void)
{
	return sub_ctx != NULL && TopologyLogConnected();
}

/* RedisSocket returns the subscribed connection's socket, to wait on */
pgsocket
RedisSocket(void)
{
	return sub_ctx ? sub_ctx->fd : PGINVALID_SOCKET;
}

/*
 * RedisSubscribedAt returns Redis's time, in ms, just before the channel
 * was subscribed: a stream entry added before it has no copy to come.
 */
uint64
RedisSubscribedAt(void)
{
	return subscribed_ms;
}

/* message_event returns a channel message, its bytes kept as they are */
static RedisEvent *
message_event(redisReply *value)
{
	RedisEvent *e = palloc0(sizeof(RedisEvent));

	e->len = (int) value->len;
	e->event = palloc(value->len + 1);
	memcpy(e->event, value->str, value->len);
	e->event[value->len] = '\0';
	e->received_at = GetCurrentTimestamp();
	return e;
}

/*
 * RedisReadMessages appends to *messages (RedisEvent) the channel messages
 * that have arrived, at most max; with read_socket it first reads the
 * socket (which must be readable).  False: the connection broke.
 */
bool
RedisReadMessages(bool read_socket, int max, List **messages, char **errmsg)
{
	void	   *r;

	if (sub_ctx == NULL)
	{
		set_error(errmsg, "subscription", "not connected");
		return false;
	}
	if (read_socket && redisBufferRead(sub_ctx) != REDIS_OK)
	{
		set_error(errmsg, "connection lost", sub_ctx->errstr);
		return false;
	}
	while (list_length(*messages) < max)
	{
		redisReply *reply;

		if (redisGetReplyFromReader(sub_ctx, &r) != REDIS_OK)
		{
			set_error(errmsg, "protocol error", sub_ctx->errstr);
			return false;
		}
		if (r == NULL)
			break;
		reply = r;
		if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
			reply->element[0]->type == REDIS_REPLY_STRING &&
			strcmp(reply->element[0]->str, "message") == 0 &&
			reply->element[2]->type == REDIS_REPLY_STRING)
			*messages = lappend(*messages, message_event(reply->element[2]));
		freeReplyObject(reply);
	}
	return true;
}

/* RedisMessagesBuffered tells whether read messages wait in the reader */
bool
RedisMessagesBuffered(void)
{
	return sub_ctx != NULL && sub_ctx->reader->len > sub_ctx->reader->pos;
}
