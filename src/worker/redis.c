/*-------------------------------------------------------------------------
 *
 * redis.c
 *	  The topology worker's two Redis connections (hiredis 0.14).
 *
 * One connection is subscribed to the topology channel; the worker waits on
 * its socket with its latch and reads what arrived without blocking.  The
 * other runs commands (XRANGE on the stream, EVAL to publish, XINFO), each
 * bounded by a timeout.  Either failing drops both; the worker reconnects.
 * Messages never include the Redis password.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <hiredis/hiredis.h>

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "tenant_router/guc.h"
#include "tenant_router/redis.h"

/* connect and command timeout */
#define REDIS_TIMEOUT_SECS 2

/*
 * The publish script: the event is appended to the stream, then published
 * on the channel, atomically.  External control planes use the same.
 */
#define PUBLISH_SCRIPT \
	"redis.call('XADD', KEYS[1], 'MAXLEN', '~', '100000', '*', 'event', ARGV[1]) " \
	"return redis.call('PUBLISH', KEYS[2], ARGV[1])"

static redisContext *sub_ctx = NULL;
static redisContext *cmd_ctx = NULL;

static void
set_error(char **errmsg, const char *what, const char *detail)
{
	if (errmsg)
		*errmsg = psprintf("%s: %s", what, detail ? detail : "no reply");
}

static redisContext *
open_context(char **errmsg)
{
	struct timeval tv = {REDIS_TIMEOUT_SECS, 0};
	redisContext *ctx = redisConnectWithTimeout(TenantRouterRedisHost,
												TenantRouterRedisPort, tv);
	redisReply *reply;

	if (ctx == NULL || ctx->err)
	{
		set_error(errmsg, "could not connect", ctx ? ctx->errstr : "out of memory");
		if (ctx)
			redisFree(ctx);
		return NULL;
	}
	redisSetTimeout(ctx, tv);
	redisEnableKeepAlive(ctx);
	if (TenantRouterRedisPassword && TenantRouterRedisPassword[0] != '\0')
	{
		reply = redisCommand(ctx, "AUTH %s", TenantRouterRedisPassword);
		if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
		{
			set_error(errmsg, "AUTH failed", reply ? reply->str : ctx->errstr);
			if (reply)
				freeReplyObject(reply);
			redisFree(ctx);
			return NULL;
		}
		freeReplyObject(reply);
	}
	return ctx;
}

/* redis_event returns an event read from Redis, its bytes kept as they are */
static RedisEvent *
redis_event(const char *id, int id_len, redisReply *value)
{
	RedisEvent *e = palloc0(sizeof(RedisEvent));

	if (id != NULL)
		e->id = pnstrdup(id, id_len);
	if (value != NULL)
	{
		e->len = (int) value->len;
		e->event = palloc(value->len + 1);
		memcpy(e->event, value->str, value->len);
		e->event[value->len] = '\0';
	}
	e->received_at = GetCurrentTimestamp();
	return e;
}

/* command runs a command on the command connection; NULL on failure */
static redisReply *
command(char **errmsg, const char *what, const char *format,...)
{
	va_list		ap;
	redisReply *reply;

	if (cmd_ctx == NULL)
	{
		set_error(errmsg, what, "not connected");
		return NULL;
	}
	va_start(ap, format);
	reply = redisvCommand(cmd_ctx, format, ap);
	va_end(ap);
	if (reply == NULL)
	{
		set_error(errmsg, what, cmd_ctx->errstr);
		return NULL;
	}
	if (reply->type == REDIS_REPLY_ERROR)
	{
		set_error(errmsg, what, reply->str);
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
	cmd_ctx = open_context(errmsg);
	if (cmd_ctx == NULL)
		return false;
	sub_ctx = open_context(errmsg);
	if (sub_ctx == NULL)
	{
		RedisDisconnect();
		return false;
	}
	if (TenantRouterRedisDb != 0)
	{
		reply = command(errmsg, "SELECT failed", "SELECT %d", TenantRouterRedisDb);
		if (reply == NULL)
		{
			RedisDisconnect();
			return false;
		}
		freeReplyObject(reply);
	}
	reply = redisCommand(sub_ctx, "SUBSCRIBE %s", TenantRouterTopologyChannel);
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
	{
		set_error(errmsg, "SUBSCRIBE failed", reply ? reply->str : sub_ctx->errstr);
		if (reply)
			freeReplyObject(reply);
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
	if (cmd_ctx)
		redisFree(cmd_ctx);
	sub_ctx = cmd_ctx = NULL;
}

bool
RedisConnected(void)
{
	return sub_ctx != NULL && cmd_ctx != NULL;
}

/* RedisSocket returns the subscribed connection's socket, to wait on */
pgsocket
RedisSocket(void)
{
	return sub_ctx ? sub_ctx->fd : PGINVALID_SOCKET;
}

/*
 * RedisReadMessages appends to *messages (RedisEvent) the channel messages
 * that have arrived; with read_socket it first reads the socket (which must
 * be readable).  False: the connection broke.
 */
bool
RedisReadMessages(bool read_socket, List **messages, char **errmsg)
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
	for (;;)
	{
		redisReply *reply;

		if (redisGetReplyFromReader(sub_ctx, &r) != REDIS_OK)
		{
			set_error(errmsg, "protocol error", sub_ctx->errstr);
			return false;
		}
		if (r == NULL)
			return true;
		reply = r;
		if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
			reply->element[0]->type == REDIS_REPLY_STRING &&
			strcmp(reply->element[0]->str, "message") == 0 &&
			reply->element[2]->type == REDIS_REPLY_STRING)
			*messages = lappend(*messages, redis_event(NULL, 0, reply->element[2]));
		freeReplyObject(reply);
	}
}

/*
 * RedisStreamRead appends to *entries (RedisEvent) up to count
 * entries of the stream key after entry id after ("0-0": from the start).
 */
bool
RedisStreamRead(const char *key, const char *after, int count, List **entries,
				char **errmsg)
{
	redisReply *reply;
	size_t		i;

	if (strcmp(after, "0-0") == 0)
		reply = command(errmsg, "XRANGE failed", "XRANGE %s - + COUNT %d", key, count);
	else
		reply = command(errmsg, "XRANGE failed", "XRANGE %s (%s + COUNT %d", key, after, count);
	if (reply == NULL)
		return false;
	for (i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++)
	{
		redisReply *entry = reply->element[i];
		redisReply *event = NULL;
		size_t		f;

		if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2)
			continue;
		for (f = 0; f + 1 < entry->element[1]->elements; f += 2)
		{
			redisReply *name = entry->element[1]->element[f];
			redisReply *value = entry->element[1]->element[f + 1];

			if (name->type == REDIS_REPLY_STRING && strcmp(name->str, "event") == 0 &&
				value->type == REDIS_REPLY_STRING)
				event = value;
		}
		*entries = lappend(*entries, redis_event(entry->element[0]->str,
												 entry->element[0]->len, event));
	}
	freeReplyObject(reply);
	return true;
}

/* RedisFreeEvents frees a list of RedisEvent */
void
RedisFreeEvents(List *events)
{
	ListCell   *lc;

	foreach(lc, events)
	{
		RedisEvent *e = lfirst(lc);

		if (e->id)
			pfree(e->id);
		if (e->event)
			pfree(e->event);
		pfree(e);
	}
	list_free(events);
}

/*
 * RedisStreamTrimmedAfter tells whether the stream has lost entries newer
 * than id (MAXLEN trimming, XDEL): events the worker can no longer read.
 */
bool
RedisStreamTrimmedAfter(const char *key, const char *id, bool *trimmed, char **errmsg)
{
	redisReply *reply;
	size_t		i;
	unsigned long long id_ms,
				id_seq,
				del_ms,
				del_seq;

	*trimmed = false;
	reply = command(NULL, "XINFO failed", "XINFO STREAM %s", key);
	if (reply == NULL)
		return true;			/* no stream yet */
	for (i = 0; reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements; i += 2)
	{
		redisReply *name = reply->element[i];
		redisReply *value = reply->element[i + 1];

		if (name->type == REDIS_REPLY_STRING &&
			strcmp(name->str, "max-deleted-entry-id") == 0 &&
			value->type == REDIS_REPLY_STRING &&
			sscanf(value->str, "%llu-%llu", &del_ms, &del_seq) == 2 &&
			sscanf(id, "%llu-%llu", &id_ms, &id_seq) == 2)
			*trimmed = (del_ms > id_ms || (del_ms == id_ms && del_seq > id_seq));
	}
	freeReplyObject(reply);
	return true;
}

/*
 * RedisPublish appends event to the stream and publishes it on the channel,
 * in one atomic script.
 */
bool
RedisPublish(const char *stream_key, const char *channel, const char *event, char **errmsg)
{
	redisReply *reply = command(errmsg, "publish failed", "EVAL %s 2 %s %s %s",
								PUBLISH_SCRIPT, stream_key, channel, event);

	if (reply == NULL)
		return false;
	freeReplyObject(reply);
	return true;
}

/* RedisStreamKey returns the stream kept next to the topology channel */
char *
RedisStreamKey(void)
{
	return psprintf("%s:log", TenantRouterTopologyChannel);
}
