/*-------------------------------------------------------------------------
 *
 * topology_log.c
 *	  The ordered history of topology changes, kept on Redis: the stream
 *	  "<channel>:log" (the order), the snapshot "<channel>:snapshot" next to
 *	  it (the topology at one position of the order), the Lua scripts that
 *	  order a change, and the command connection (hiredis 0.14) of the
 *	  process that runs them: a backend whose admin function changes the
 *	  topology, or the topology worker.
 *
 * Every change takes its place in the order before it is in force.  A
 * coordinator's SQL change is appended by the change script only if the
 * log still ends where this coordinator's catalog does (its epoch and the
 * last entry it applied): the change was validated, and applied in the
 * caller's transaction, against exactly the topology every other
 * coordinator will have when it applies the entry.  An event that an
 * external control plane only PUBLISHed is appended by the raw script,
 * once, whichever coordinators receive it (see RAW_SCRIPT); one that a
 * control plane XADDs to the stream is in the order already.
 *
 * The outcomes ("<channel>:outcome") record how each entry came out where
 * it was first applied (a coordinator records "applied" for the changes it
 * appended once its caller's transaction committed), so that every
 * coordinator after it applies it the same way (worker/events.c).
 *
 * The snapshot holds the epoch of the log (a random id drawn by the
 * coordinator that seeded an empty Redis), the position of the last entry
 * whose effect it holds, the topology as JSON, its digest and who wrote
 * it.  It only moves forward (SNAPSHOT_SCRIPT), and writing it trims the
 * entries older than the previous snapshot: a coordinator that lags behind
 * that far starts from the snapshot instead.
 *
 * The backends and the worker share a condition variable, broadcast by the
 * worker whenever its catalog moved forward in the order, and a flag with
 * which a backend asks the worker to read the log now.
 *
 * Messages never include the Redis password.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <hiredis/hiredis.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"
#include "tenant_router/topology_log.h"

/* connect and command timeout */
#define REDIS_TIMEOUT_SECS 2
/* how long after it is sent a change's append may still be made (< the timeout) */
#define APPEND_EXPIRY_MS 1500
/* how long the raw script remembers an event it ordered, by position and text */
#define RAW_KEEP_SECS "3600"
/* and by text alone, for a coordinator that just subscribed */
#define RAW_RECENT_SECS "10"

/* Lua helpers: the last id the stream generated, and the order of two ids */
#define LUA_HELPERS \
	"local function last_id(key) " \
	"  if redis.call('EXISTS', key) == 0 then return '0-0' end " \
	"  local info = redis.call('XINFO', 'STREAM', key) " \
	"  for i = 1, #info, 2 do " \
	"    if info[i] == 'last-generated-id' then return info[i + 1] end " \
	"  end " \
	"  return '0-0' " \
	"end " \
	"local function cmp(a, b) " \
	"  local am, as = string.match(a, '^(%d+)-(%d+)$') " \
	"  local bm, bs = string.match(b, '^(%d+)-(%d+)$') " \
	"  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs) " \
	"  if am ~= bm then if am < bm then return -1 else return 1 end end " \
	"  if as ~= bs then if as < bs then return -1 else return 1 end end " \
	"  return 0 " \
	"end "

/*
 * The change script: KEYS stream, channel, snapshot, outcomes; ARGV epoch,
 * position (the last entry the caller's catalog holds), node, expiry (Redis
 * time in ms), events...  Appends the events (kind "change") and publishes
 * each, if the log is still at that epoch and position and the expiry has
 * not passed: a script that Redis runs after its caller gave up waiting
 * (APPEND_EXPIRY_MS, less than the command timeout) changes nothing, so
 * that the caller can find out for sure what became of it (its entries are
 * in the log, or never will be).  Their outcome ("applied") is recorded
 * once the caller's transaction has committed (TopologyLogPutOutcomes from
 * its commit callback, commands/ordered_change.c), not here: until then
 * the others wait for it rather than follow a change whose shard work may
 * yet roll back.
 */
#define CHANGE_SCRIPT LUA_HELPERS \
	"local epoch = redis.call('HGET', KEYS[3], 'epoch') " \
	"local last = last_id(KEYS[1]) " \
	"if not epoch or epoch ~= ARGV[1] then return {'epoch', epoch or '', last} end " \
	"if last ~= ARGV[2] then return {'moved', epoch, last} end " \
	"local t = redis.call('TIME') " \
	"if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[4]) then " \
	"  return {'expired', epoch, last} end " \
	"local r = {'ok', epoch, last} " \
	"for i = 5, #ARGV do " \
	"  local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[i], 'kind', 'change', 'node', ARGV[3]) " \
	"  redis.call('PUBLISH', KEYS[2], ARGV[i]) " \
	"  r[#r + 1] = id " \
	"end " \
	"return r"

/* The head script: KEYS stream, snapshot.  The epoch and the last entry. */
#define HEAD_SCRIPT LUA_HELPERS \
	"return {redis.call('HGET', KEYS[2], 'epoch') or '', last_id(KEYS[1])}"

/*
 * The raw script: KEYS stream; ARGV event, prev, node, key prefix.  Orders
 * an event received by PUBLISH only, once however many coordinators
 * receive it.  Every channel message is in the order (a copy of an entry,
 * or a raw event ordered), and every subscriber receives the messages in
 * the same order, so "the entry of the message before it" (prev) and the
 * text name one message alike on every coordinator that was subscribed
 * throughout: the first to ask orders it, the others get its entry.  A
 * coordinator that has just subscribed does not know prev (""): it matches
 * the text alone against the raw events ordered in the last seconds, and
 * what it orders is found by the text alone by the others.
 */
#define RAW_SCRIPT \
	"local sha = redis.sha1hex(ARGV[1]) " \
	"local pre = ARGV[4] " \
	"local function order() " \
	"  local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1], 'kind', 'raw', 'node', ARGV[3]) " \
	"  redis.call('SET', pre .. 'recent:' .. sha, id, 'EX', " RAW_RECENT_SECS ") " \
	"  return id " \
	"end " \
	"if ARGV[2] ~= '' then " \
	"  local k = pre .. ARGV[2] .. ':' .. sha " \
	"  local id = redis.call('GET', k) " \
	"  if id then return id end " \
	"  id = redis.call('GET', pre .. 'fresh:' .. sha) " \
	"  if id then redis.call('DEL', pre .. 'fresh:' .. sha) else id = order() end " \
	"  redis.call('SET', k, id, 'EX', " RAW_KEEP_SECS ") " \
	"  return id " \
	"end " \
	"local id = redis.call('GET', pre .. 'recent:' .. sha) or redis.call('GET', pre .. 'fresh:' .. sha) " \
	"if id then return id end " \
	"id = order() " \
	"redis.call('SET', pre .. 'fresh:' .. sha, id, 'EX', " RAW_RECENT_SECS ") " \
	"return id"

/*
 * The publish script: KEYS stream, channel; ARGV event, node.  An event of
 * this coordinator's outbox (kind "outbox"): a change already in force
 * here, made while this coordinator was declared the only one
 * (tenant_router.single_coordinator).
 */
#define PUBLISH_SCRIPT \
	"local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1], 'kind', 'outbox', 'node', ARGV[2]) " \
	"redis.call('PUBLISH', KEYS[2], ARGV[1]) " \
	"return id"

/*
 * The seed script: KEYS stream, snapshot; ARGV epoch, position, topology,
 * node, digest.  Seeds a Redis that has no snapshot with this
 * coordinator's topology, at its position or the stream's last entry,
 * whichever comes first (a stream restored from an older copy ends
 * before it); returns that position, or "" if a snapshot exists.
 */
#define SEED_SCRIPT LUA_HELPERS \
	"if redis.call('EXISTS', KEYS[2]) == 1 then return '' end " \
	"local pos = ARGV[2] " \
	"local last = last_id(KEYS[1]) " \
	"if cmp(last, pos) < 0 then pos = last end " \
	"local t = redis.call('TIME') " \
	"redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'position', pos, 'topology', ARGV[3], " \
	"           'node', ARGV[4], 'digest', ARGV[5], 'written_at', t[1]) " \
	"return pos"

/*
 * The reseed script: KEYS stream, snapshot, outcomes; ARGV epoch (the one
 * the caller's catalog follows), position (its catalog's), new epoch,
 * topology, node, digest.  For a log whose end was lost (a Redis restarted
 * from an AOF written every second, a failover to a replica that lagged):
 * the caller's catalog holds entries that the stream no longer has, so
 * that nothing appended after them could ever be ordered against it.  If
 * the log is still of that epoch and still ends before that position, the
 * snapshot becomes the caller's topology under the new epoch, at the
 * stream's last entry (every coordinator adopts it: a new log), and the
 * outcomes of the lost entries go (their ids may come again); returns
 * {'seeded', position}.  A snapshot further than the caller's catalog
 * comes first ({'snapshot'}: adopt it, then look again); {'no'} if the
 * log is another one or does not end before the position any more.
 */
#define RESEED_SCRIPT LUA_HELPERS \
	"local cur = redis.call('HMGET', KEYS[2], 'epoch', 'position') " \
	"if cur[1] ~= ARGV[1] then return {'no'} end " \
	"local last = last_id(KEYS[1]) " \
	"if cmp(last, ARGV[2]) >= 0 then return {'no'} end " \
	"if cur[2] and cmp(cur[2], ARGV[2]) > 0 then return {'snapshot'} end " \
	"local t = redis.call('TIME') " \
	"redis.call('HSET', KEYS[2], 'epoch', ARGV[3], 'position', last, 'topology', ARGV[4], " \
	"           'node', ARGV[5], 'digest', ARGV[6], 'written_at', t[1]) " \
	"local ids = redis.call('HKEYS', KEYS[3]) " \
	"for i = 1, #ids do if cmp(ids[i], last) > 0 then redis.call('HDEL', KEYS[3], ids[i]) end end " \
	"return {'seeded', last}"

/*
 * The snapshot script: KEYS stream, snapshot, outcomes; ARGV epoch,
 * position, topology, node, digest, retention (seconds).  Moves the
 * snapshot forward, never back, and trims, with their outcomes, the
 * entries older than both the snapshot it replaces and the retention: a
 * coordinator away for less than that reads what it missed, one away
 * longer starts from the snapshot.
 */
#define SNAPSHOT_SCRIPT LUA_HELPERS \
	"local cur = redis.call('HMGET', KEYS[2], 'epoch', 'position') " \
	"if cur[1] ~= ARGV[1] then return 'epoch' end " \
	"if cmp(cur[2], ARGV[2]) >= 0 then return 'older' end " \
	"local t = redis.call('TIME') " \
	"redis.call('HSET', KEYS[2], 'position', ARGV[2], 'topology', ARGV[3], 'node', ARGV[4], " \
	"           'digest', ARGV[5], 'written_at', t[1]) " \
	"local keep = (tonumber(t[1]) - tonumber(ARGV[6])) * 1000 .. '-0' " \
	"local upto = cur[2] " \
	"if cmp(keep, upto) < 0 then upto = keep end " \
	"if upto ~= '0-0' then " \
	"  local gone = redis.call('XRANGE', KEYS[1], '-', '(' .. upto) " \
	"  for i = 1, #gone do redis.call('HDEL', KEYS[3], gone[i][1]) end " \
	"  redis.call('XTRIM', KEYS[1], 'MINID', upto) " \
	"end " \
	"return 'ok'"

/*
 * The outcome script: KEYS outcomes; ARGV id, outcome, id, outcome...
 * Records each outcome unless one is recorded already, and returns the
 * recorded ones: the first coordinator to apply an entry decides it.
 */
#define OUTCOME_SCRIPT \
	"local r = {} " \
	"for i = 1, #ARGV, 2 do " \
	"  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) " \
	"  r[#r + 1] = redis.call('HGET', KEYS[1], ARGV[i]) " \
	"end " \
	"return r"

typedef enum LogScriptId
{
	SCRIPT_CHANGE,
	SCRIPT_HEAD,
	SCRIPT_RAW,
	SCRIPT_PUBLISH,
	SCRIPT_SEED,
	SCRIPT_SNAPSHOT,
	SCRIPT_RESEED,
	SCRIPT_OUTCOME
} LogScriptId;

/* each script's text, and its SHA1 once loaded on the current connection */
static struct
{
	const char *text;
	char		sha[41];
}			scripts[] =
{
	[SCRIPT_CHANGE] = {CHANGE_SCRIPT},
	[SCRIPT_HEAD] = {HEAD_SCRIPT},
	[SCRIPT_RAW] = {RAW_SCRIPT},
	[SCRIPT_PUBLISH] = {PUBLISH_SCRIPT},
	[SCRIPT_SEED] = {SEED_SCRIPT},
	[SCRIPT_SNAPSHOT] = {SNAPSHOT_SCRIPT},
	[SCRIPT_RESEED] = {RESEED_SCRIPT},
	[SCRIPT_OUTCOME] = {OUTCOME_SCRIPT},
};

static redisContext *log_ctx = NULL;

/* what the backends and the worker share */
typedef struct TopologyLogShared
{
	ConditionVariable advanced; /* the worker's catalog moved in the order */
	pg_atomic_uint32 catch_up;	/* a backend asks the worker to read the log */
} TopologyLogShared;

static TopologyLogShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* ------------------------------------------------------------------------
 * Stream ids and keys
 * ------------------------------------------------------------------------
 */

/* StreamIdParse reads a stream entry id ("ms-seq"); false if it is not one */
bool
StreamIdParse(const char *text, uint64 *ms, uint64 *seq)
{
	char	   *end;

	*ms = strtou64(text, &end, 10);
	if (end == text || *end != '-')
		return false;
	text = end + 1;
	*seq = strtou64(text, &end, 10);
	return end != text && *end == '\0';
}

/*
 * StreamIdCompare orders two stream entry ids ("ms-seq") as Redis does; an
 * id that cannot be parsed comes first.
 */
int
StreamIdCompare(const char *a, const char *b)
{
	uint64		ams,
				aseq,
				bms,
				bseq;
	bool		aok = StreamIdParse(a, &ams, &aseq);
	bool		bok = StreamIdParse(b, &bms, &bseq);

	if (!aok || !bok)
		return (int) aok - (int) bok;
	if (ams != bms)
		return ams < bms ? -1 : 1;
	if (aseq != bseq)
		return aseq < bseq ? -1 : 1;
	return 0;
}

/* TopologyLogStreamKey returns the stream kept next to the topology channel */
char *
TopologyLogStreamKey(void)
{
	return psprintf("%s:log", TenantRouterTopologyChannel);
}

static char *
snapshot_key(void)
{
	return psprintf("%s:snapshot", TenantRouterTopologyChannel);
}

static char *
outcome_key(void)
{
	return psprintf("%s:outcome", TenantRouterTopologyChannel);
}

/* TopologyLogNewEpoch draws the epoch of a log about to be seeded */
char *
TopologyLogNewEpoch(void)
{
	uint8		bytes[16];
	char	   *epoch = palloc(TOPOLOGY_EPOCH_LEN);

	if (!pg_strong_random(bytes, sizeof(bytes)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random topology epoch")));
	for (int i = 0; i < 16; i++)
		snprintf(epoch + 2 * i, 3, "%02x", bytes[i]);
	return epoch;
}

/* ------------------------------------------------------------------------
 * The command connection
 * ------------------------------------------------------------------------
 */

static void
set_error(char **errmsg, const char *what, const char *detail)
{
	if (errmsg)
		*errmsg = psprintf("%s: %s", what, detail ? detail : "no reply");
}

/* setup runs a command of a connection's setup; false, with a message, if it failed */
static bool
setup(redisContext *ctx, const char *what, char **errmsg, const char *format,...)
{
	va_list		ap;
	redisReply *reply;
	bool		ok;

	va_start(ap, format);
	reply = redisvCommand(ctx, format, ap);
	va_end(ap);
	ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;
	if (!ok)
		set_error(errmsg, what, reply ? reply->str : ctx->errstr);
	if (reply)
		freeReplyObject(reply);
	return ok;
}

/*
 * TopologyLogOpen opens a connection to Redis (tenant_router.redis_*:
 * AUTH, SELECT), every command bounded by a timeout; NULL on failure, with
 * a message.  The topology worker's subscription is one too.
 */
redisContext *
TopologyLogOpen(char **errmsg)
{
	struct timeval tv = {REDIS_TIMEOUT_SECS, 0};
	redisContext *ctx;

	if (TenantRouterRedisHost == NULL || TenantRouterRedisHost[0] == '\0')
	{
		set_error(errmsg, "could not connect", "tenant_router.redis_host is empty");
		return NULL;
	}
	ctx = redisConnectWithTimeout(TenantRouterRedisHost, TenantRouterRedisPort, tv);
	if (ctx == NULL || ctx->err)
	{
		set_error(errmsg, "could not connect", ctx ? ctx->errstr : "out of memory");
		if (ctx)
			redisFree(ctx);
		return NULL;
	}
	redisSetTimeout(ctx, tv);
	redisEnableKeepAlive(ctx);
	if ((TenantRouterRedisPassword && TenantRouterRedisPassword[0] != '\0' &&
		 !setup(ctx, "AUTH failed", errmsg, "AUTH %s", TenantRouterRedisPassword)) ||
		(TenantRouterRedisDb != 0 &&
		 !setup(ctx, "SELECT failed", errmsg, "SELECT %d", TenantRouterRedisDb)))
	{
		redisFree(ctx);
		return NULL;
	}
	return ctx;
}

/*
 * TopologyLogConnect opens this process's command connection unless it is
 * open; on failure it returns false with a message.
 */
bool
TopologyLogConnect(char **errmsg)
{
	if (log_ctx != NULL)
		return true;
	log_ctx = TopologyLogOpen(errmsg);
	for (int i = 0; i < lengthof(scripts); i++)
		scripts[i].sha[0] = '\0';
	return log_ctx != NULL;
}

void
TopologyLogDisconnect(void)
{
	if (log_ctx)
		redisFree(log_ctx);
	log_ctx = NULL;
}

bool
TopologyLogConnected(void)
{
	return log_ctx != NULL;
}

/*
 * command_argv runs a command on the connection, connecting first if need
 * be; NULL on failure, after which the connection is closed (a timeout or
 * a broken connection leaves it unusable) unless Redis answered with an
 * error.
 */
static redisReply *
command_argv(char **errmsg, const char *what, int argc, const char **argv,
			 const size_t *argvlen)
{
	redisReply *reply;

	if (!TopologyLogConnect(errmsg))
		return NULL;
	reply = redisCommandArgv(log_ctx, argc, argv, argvlen);
	if (reply == NULL)
	{
		set_error(errmsg, what, log_ctx->errstr);
		TopologyLogDisconnect();
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
 * run_script runs a script with nkeys keys then the arguments, all in
 * args (lens: their lengths, or NULL for C strings): EVALSHA, loading the
 * script first when this connection has not (or Redis forgot it).
 */
static redisReply *
run_script(LogScriptId id, const char *what, int nkeys, int nargs, const char **args,
		   const size_t *lens, char **errmsg)
{
	const char **argv = palloc(sizeof(char *) * (nargs + 3));
	size_t	   *argvlen = palloc(sizeof(size_t) * (nargs + 3));
	char		numkeys[16];
	redisReply *reply = NULL;

	snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
	for (int attempt = 0; attempt < 2; attempt++)
	{
		if (!TopologyLogConnect(errmsg))
			return NULL;
		if (scripts[id].sha[0] == '\0')
		{
			const char *load[3] = {"SCRIPT", "LOAD", scripts[id].text};

			reply = command_argv(errmsg, what, 3, load, NULL);
			if (reply == NULL)
				return NULL;
			if (reply->type == REDIS_REPLY_STRING)
				strlcpy(scripts[id].sha, reply->str, sizeof(scripts[id].sha));
			freeReplyObject(reply);
		}
		argv[0] = "EVALSHA";
		argvlen[0] = 7;
		argv[1] = scripts[id].sha;
		argvlen[1] = strlen(scripts[id].sha);
		argv[2] = numkeys;
		argvlen[2] = strlen(numkeys);
		for (int i = 0; i < nargs; i++)
		{
			argv[i + 3] = args[i];
			argvlen[i + 3] = lens ? lens[i] : strlen(args[i]);
		}
		if (!TopologyLogConnect(errmsg))
			return NULL;
		reply = redisCommandArgv(log_ctx, nargs + 3, argv, argvlen);
		if (reply == NULL)
		{
			set_error(errmsg, what, log_ctx->errstr);
			TopologyLogDisconnect();
			return NULL;
		}
		if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0)
		{
			/* Redis restarted, or its script cache was flushed */
			freeReplyObject(reply);
			reply = NULL;
			scripts[id].sha[0] = '\0';
			continue;
		}
		break;
	}
	if (reply == NULL)
	{
		/* forgotten again between loading and running it: no third try */
		set_error(errmsg, what, "Redis forgot the script between SCRIPT LOAD and EVALSHA twice (NOSCRIPT)");
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

static char *
reply_string(redisReply *r)
{
	if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
		return pstrdup("");
	return pnstrdup(r->str, r->len);
}

/* ------------------------------------------------------------------------
 * Ordering
 * ------------------------------------------------------------------------
 */

/* TopologyLogHead returns the log's epoch ("" if none) and its last entry */
bool
TopologyLogHead(char **epoch, char **head, char **errmsg)
{
	char	   *stream = TopologyLogStreamKey();
	char	   *snapshot = snapshot_key();
	const char *args[2] = {stream, snapshot};
	redisReply *reply = run_script(SCRIPT_HEAD, "reading the topology log failed", 2, 2, args,
								   NULL, errmsg);

	if (reply == NULL)
		return false;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
	{
		freeReplyObject(reply);
		set_error(errmsg, "reading the topology log failed", "unexpected reply");
		return false;
	}
	*epoch = reply_string(reply->element[0]);
	*head = reply_string(reply->element[1]);
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogServerTime reads Redis's clock, in ms since the epoch.  False
 * if Redis failed.
 */
bool
TopologyLogServerTime(int64 *ms, char **errmsg)
{
	const char *argv[1] = {"TIME"};
	redisReply *reply;

	if (!TopologyLogConnect(errmsg))
		return false;
	reply = command_argv(errmsg, "reading Redis's clock failed", 1, argv, NULL);
	if (reply == NULL)
		return false;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
		reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_STRING)
	{
		freeReplyObject(reply);
		set_error(errmsg, "reading Redis's clock failed", "unexpected reply");
		return false;
	}
	*ms = strtoi64(reply->element[0]->str, NULL, 10) * 1000 +
		strtoi64(reply->element[1]->str, NULL, 10) / 1000;
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogAppend appends events (of char *), this coordinator's change,
 * to the log if it is still at epoch and position; result says what
 * happened.  False if Redis failed.
 */
bool
TopologyLogAppend(const char *epoch, const char *position, const char *origin,
				  List *events, TopologyLogAppendResult *result, char **errmsg)
{
	int			nargs = 8 + list_length(events);
	const char **args = palloc(sizeof(char *) * nargs);
	redisReply *reply;
	ListCell   *lc;
	int			i = 0;
	int64		now;

	memset(result, 0, sizeof(*result));
	if (!TopologyLogServerTime(&now, errmsg))
		return false;
	result->expires = now + APPEND_EXPIRY_MS;

	args[i++] = TopologyLogStreamKey();
	args[i++] = TenantRouterTopologyChannel;
	args[i++] = snapshot_key();
	args[i++] = outcome_key();
	args[i++] = epoch;
	args[i++] = position;
	args[i++] = origin;
	args[i++] = psprintf(INT64_FORMAT, result->expires);
	foreach(lc, events)
		args[i++] = lfirst(lc);
	reply = run_script(SCRIPT_CHANGE, "ordering the change failed", 4, nargs, args, NULL, errmsg);
	if (reply == NULL)
		return false;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
	{
		freeReplyObject(reply);
		set_error(errmsg, "ordering the change failed", "unexpected reply");
		return false;
	}
	if (strcmp(reply->element[0]->str, "expired") == 0)
	{
		freeReplyObject(reply);
		set_error(errmsg, "ordering the change failed",
				  psprintf("Redis ran it more than %d ms after it was sent", APPEND_EXPIRY_MS));
		return false;
	}
	result->epoch = reply_string(reply->element[1]);
	result->head = reply_string(reply->element[2]);
	if (strcmp(reply->element[0]->str, "ok") == 0)
	{
		result->outcome = TOPOLOGY_LOG_APPENDED;
		for (size_t e = 3; e < reply->elements; e++)
			result->ids = lappend(result->ids, reply_string(reply->element[e]));
		if (result->ids != NIL)
			result->head = llast(result->ids);
	}
	else if (strcmp(reply->element[0]->str, "moved") == 0)
		result->outcome = TOPOLOGY_LOG_MOVED;
	else
		result->outcome = TOPOLOGY_LOG_OTHER_EPOCH;
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogOrderRaw puts an event received by PUBLISH only into the
 * order, once (RAW_SCRIPT); prev is the entry of the channel message
 * before it, "" if unknown.  *id is its entry.
 */
bool
TopologyLogOrderRaw(const char *event, int len, const char *prev, char **id, char **errmsg)
{
	const char *args[5];
	size_t		lens[5];
	redisReply *reply;

	args[0] = TopologyLogStreamKey();
	args[1] = event;
	args[2] = prev;
	args[3] = OriginName();
	args[4] = psprintf("%s:raw:", TenantRouterTopologyChannel);
	for (int i = 0; i < 5; i++)
		lens[i] = strlen(args[i]);
	lens[1] = len;
	reply = run_script(SCRIPT_RAW, "ordering an event failed", 1, 5, args, lens, errmsg);
	if (reply == NULL)
		return false;
	*id = reply_string(reply);
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogPublish appends an event of this coordinator's outbox to the
 * stream and publishes it, in one script.
 */
bool
TopologyLogPublish(const char *event, char **id, char **errmsg)
{
	const char *args[4] = {TopologyLogStreamKey(), TenantRouterTopologyChannel, event,
	OriginName()};
	redisReply *reply = run_script(SCRIPT_PUBLISH, "publish failed", 2, 4, args, NULL, errmsg);

	if (reply == NULL)
		return false;
	if (id)
		*id = reply_string(reply);
	freeReplyObject(reply);
	return true;
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------
 */

static char *
copy_bytes(redisReply *value, int *len)
{
	char	   *bytes = palloc(value->len + 1);

	memcpy(bytes, value->str, value->len);
	bytes[value->len] = '\0';
	if (len)
		*len = (int) value->len;
	return bytes;
}

/*
 * TopologyLogRead appends to *entries (RedisEvent) up to count entries of
 * the stream after entry id after ("0-0": from the start), after included
 * if it is there and with_after.
 */
bool
TopologyLogRead(const char *after, bool with_after, int count, List **entries, char **errmsg)
{
	char	   *key = TopologyLogStreamKey();
	char	   *start = strcmp(after, "0-0") == 0 ? pstrdup("-") :
		with_after ? pstrdup(after) : psprintf("(%s", after);
	char	   *limit = psprintf("%d", count);
	const char *argv[6] = {"XRANGE", key, start, "+", "COUNT", limit};
	redisReply *reply = command_argv(errmsg, "XRANGE failed", 6, argv, NULL);
	size_t		i;

	if (reply == NULL)
		return false;
	for (i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++)
	{
		redisReply *entry = reply->element[i];
		RedisEvent *e;
		size_t		f;

		if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
			entry->element[1]->type != REDIS_REPLY_ARRAY)
			continue;
		e = palloc0(sizeof(RedisEvent));
		e->id = pnstrdup(entry->element[0]->str, entry->element[0]->len);
		for (f = 0; f + 1 < entry->element[1]->elements; f += 2)
		{
			redisReply *name = entry->element[1]->element[f];
			redisReply *value = entry->element[1]->element[f + 1];

			if (name->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING)
				continue;
			if (strcmp(name->str, "event") == 0)
				e->event = copy_bytes(value, &e->len);
			else if (strcmp(name->str, "kind") == 0)
				e->kind = copy_bytes(value, NULL);
			else if (strcmp(name->str, "node") == 0)
				e->node = copy_bytes(value, NULL);
		}
		e->received_at = GetCurrentTimestamp();
		*entries = lappend(*entries, e);
	}
	freeReplyObject(reply);
	return true;
}

/* TopologyLogFreeEvents frees a list of RedisEvent */
void
TopologyLogFreeEvents(List *events)
{
	ListCell   *lc;

	foreach(lc, events)
	{
		RedisEvent *e = lfirst(lc);

		if (e->id)
			pfree(e->id);
		if (e->event)
			pfree(e->event);
		if (e->kind)
			pfree(e->kind);
		if (e->node)
			pfree(e->node);
		pfree(e);
	}
	list_free(events);
}

/*
 * TopologyLogHasEntry tells whether the stream still holds entry id: the
 * stream is only ever trimmed from its start, so when it does, nothing
 * after id was trimmed.
 */
bool
TopologyLogHasEntry(const char *id, bool *has, char **errmsg)
{
	const char *argv[6] = {"XRANGE", TopologyLogStreamKey(), id, id, "COUNT", "1"};
	redisReply *reply = command_argv(errmsg, "XRANGE failed", 6, argv, NULL);

	if (reply == NULL)
		return false;
	*has = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0;
	freeReplyObject(reply);
	return true;
}

/* ------------------------------------------------------------------------
 * Outcomes
 * ------------------------------------------------------------------------
 */

/*
 * TopologyLogGetOutcomes returns the recorded outcome of each entry of ids
 * (of char *), NULL where none is: "applied", "rejected: reason" or
 * "ignored: reason", as decided where the entry was first applied.
 */
bool
TopologyLogGetOutcomes(List *ids, char ***outcomes, char **errmsg)
{
	int			n = list_length(ids);
	const char **argv = palloc(sizeof(char *) * (n + 2));
	redisReply *reply;
	ListCell   *lc;
	int			i = 0;

	*outcomes = palloc0(sizeof(char *) * (n + 1));
	if (n == 0)
		return true;
	argv[i++] = "HMGET";
	argv[i++] = outcome_key();
	foreach(lc, ids)
		argv[i++] = lfirst(lc);
	reply = command_argv(errmsg, "reading outcomes failed", n + 2, argv, NULL);
	if (reply == NULL)
		return false;
	for (i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements && i < n; i++)
		if (reply->element[i]->type == REDIS_REPLY_STRING)
			(*outcomes)[i] = reply_string(reply->element[i]);
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogPutOutcomes records the outcome of each entry of ids unless
 * one is recorded already, and returns in *recorded the one recorded.
 */
bool
TopologyLogPutOutcomes(List *ids, List *outcomes, char ***recorded, char **errmsg)
{
	int			n = list_length(ids);
	const char **args = palloc(sizeof(char *) * (2 * n + 1));
	redisReply *reply;
	int			i;

	*recorded = palloc0(sizeof(char *) * (n + 1));
	if (n == 0)
		return true;
	args[0] = outcome_key();
	for (i = 0; i < n; i++)
	{
		args[1 + 2 * i] = list_nth(ids, i);
		args[2 + 2 * i] = list_nth(outcomes, i);
	}
	reply = run_script(SCRIPT_OUTCOME, "recording outcomes failed", 1, 2 * n + 1, args, NULL,
					   errmsg);
	if (reply == NULL)
		return false;
	for (i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements && i < n; i++)
		(*recorded)[i] = reply_string(reply->element[i]);
	freeReplyObject(reply);
	return true;
}

/* ------------------------------------------------------------------------
 * The snapshot
 * ------------------------------------------------------------------------
 */

/*
 * TopologyLogGetSnapshot reads the snapshot (its topology only if
 * with_topology); snapshot->exists is false if there is none.
 */
bool
TopologyLogGetSnapshot(TopologySnapshot *snapshot, bool with_topology, char **errmsg)
{
	const char *argv[7] = {"HMGET", snapshot_key(), "epoch", "position", "digest", "node",
	"topology"};
	redisReply *reply = command_argv(errmsg, "reading the topology snapshot failed",
									 with_topology ? 7 : 6, argv, NULL);

	memset(snapshot, 0, sizeof(*snapshot));
	if (reply == NULL)
		return false;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 4 &&
		reply->element[0]->type == REDIS_REPLY_STRING &&
		reply->element[1]->type == REDIS_REPLY_STRING)
	{
		snapshot->exists = true;
		snapshot->epoch = reply_string(reply->element[0]);
		snapshot->position = reply_string(reply->element[1]);
		snapshot->digest = reply_string(reply->element[2]);
		snapshot->node = reply_string(reply->element[3]);
		if (with_topology && reply->elements >= 5 &&
			reply->element[4]->type == REDIS_REPLY_STRING)
			snapshot->topology = reply_string(reply->element[4]);
		else if (with_topology)
			snapshot->exists = false;
	}
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogSeed seeds a Redis that has no snapshot with this
 * coordinator's topology (SEED_SCRIPT); *seeded_at is the position it was
 * seeded at, or NULL if a snapshot existed already.
 */
bool
TopologyLogSeed(const char *epoch, const char *position, const char *topology,
				const char *digest, char **seeded_at, char **errmsg)
{
	const char *args[7] = {TopologyLogStreamKey(), snapshot_key(), epoch, position, topology,
	OriginName(), digest};
	redisReply *reply = run_script(SCRIPT_SEED, "seeding the topology snapshot failed", 2, 7,
								   args, NULL, errmsg);

	if (reply == NULL)
		return false;
	*seeded_at = reply_string(reply);
	if ((*seeded_at)[0] == '\0')
		*seeded_at = NULL;
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogReseed starts a new log (new_epoch) from this coordinator's
 * topology when the log of epoch ends before position, its catalog's
 * (RESEED_SCRIPT): *outcome is "seeded" (then *seeded_at is the new log's
 * position), "snapshot" (the snapshot is further than position: adopt it
 * first) or "no" (the log does not end before position, or is another).
 */
bool
TopologyLogReseed(const char *epoch, const char *position, const char *new_epoch,
				  const char *topology, const char *digest, char **outcome, char **seeded_at,
				  char **errmsg)
{
	const char *args[9] = {TopologyLogStreamKey(), snapshot_key(), outcome_key(), epoch, position,
	new_epoch, topology, OriginName(), digest};
	redisReply *reply = run_script(SCRIPT_RESEED, "starting a new topology log failed", 3, 9,
								   args, NULL, errmsg);

	if (reply == NULL)
		return false;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
	{
		freeReplyObject(reply);
		set_error(errmsg, "starting a new topology log failed", "unexpected reply");
		return false;
	}
	*outcome = reply_string(reply->element[0]);
	*seeded_at = reply->elements > 1 ? reply_string(reply->element[1]) : NULL;
	freeReplyObject(reply);
	return true;
}

/*
 * TopologyLogPutSnapshot moves the snapshot forward to position; *outcome
 * is "ok", "older" (it is there already or further) or "epoch" (another
 * log).
 */
bool
TopologyLogPutSnapshot(const char *epoch, const char *position, const char *topology,
					   const char *digest, const char **outcome, char **errmsg)
{
	const char *args[9] = {TopologyLogStreamKey(), snapshot_key(), outcome_key(), epoch, position,
	topology, OriginName(), digest, psprintf("%d", TenantRouterLogRetention)};
	redisReply *reply = run_script(SCRIPT_SNAPSHOT, "writing the topology snapshot failed", 3, 9,
								   args, NULL, errmsg);

	if (reply == NULL)
		return false;
	*outcome = reply_string(reply);
	freeReplyObject(reply);
	return true;
}

/* ------------------------------------------------------------------------
 * What the backends and the worker share
 * ------------------------------------------------------------------------
 */

static void
topology_log_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(TopologyLogShared)));
}

static void
topology_log_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("tenant_router topology log", sizeof(TopologyLogShared), &found);
	if (!found)
	{
		ConditionVariableInit(&shared->advanced);
		pg_atomic_init_u32(&shared->catch_up, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* TopologyLogInit reserves the shared memory area; called from _PG_init. */
void
TopologyLogInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = topology_log_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = topology_log_shmem_startup;
}

/* TopologyLogRequestCatchUp asks the worker to read the log now */
void
TopologyLogRequestCatchUp(void)
{
	pg_atomic_write_u32(&shared->catch_up, 1);
	OutboxWake();
}

/* TopologyLogTakeCatchUpRequest tells the worker whether it was asked to */
bool
TopologyLogTakeCatchUpRequest(void)
{
	return pg_atomic_exchange_u32(&shared->catch_up, 0) != 0;
}

/* TopologyLogAdvanced wakes the backends waiting for the worker's catalog */
void
TopologyLogAdvanced(void)
{
	ConditionVariableBroadcast(&shared->advanced);
}

/*
 * TopologyLogWaitForAdvance waits at most timeout_ms for the worker's
 * catalog to move; called in a loop that checks what it waits for, ended
 * by ConditionVariableCancelSleep (the first call only prepares the wait).
 */
void
TopologyLogWaitForAdvance(long timeout_ms)
{
	(void) ConditionVariableTimedSleep(&shared->advanced, timeout_ms, PG_WAIT_EXTENSION);
}
