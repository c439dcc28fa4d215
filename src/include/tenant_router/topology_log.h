/*-------------------------------------------------------------------------
 *
 * topology_log.h
 *	  The ordered history of topology changes on Redis: the stream, the
 *	  snapshot next to it, the scripts that order a change, and what the
 *	  backends and the topology worker share about it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_TOPOLOGY_LOG_H
#define TENANT_ROUTER_TOPOLOGY_LOG_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/* an epoch: 32 hex digits, and the terminating NUL */
#define TOPOLOGY_EPOCH_LEN 33

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
	char	   *kind;			/* the entry's "kind": change, raw, outbox; or NULL */
	char	   *node;			/* the coordinator that appended it, or NULL */
	char	   *outcome;		/* how it came out where first applied, or NULL */
	TimestampTz received_at;	/* when the worker read it */
} RedisEvent;

/* what Redis says to an attempt to append a change (TopologyLogAppend) */
typedef enum TopologyLogOutcome
{
	TOPOLOGY_LOG_APPENDED,		/* in the order: ids holds the new entries */
	TOPOLOGY_LOG_MOVED,			/* another change came first: head is the last entry */
	TOPOLOGY_LOG_OTHER_EPOCH	/* the log is not the one this coordinator follows */
} TopologyLogOutcome;

typedef struct TopologyLogAppendResult
{
	TopologyLogOutcome outcome;
	char	   *epoch;			/* Redis's epoch ("" if it has none) */
	char	   *head;			/* the last entry of the log */
	List	   *ids;			/* of char *, the entries appended */
	int64		expires;		/* Redis time (ms) after which the append cannot
								 * be made any more, even if Redis failed to
								 * answer; 0 if it was not sent */
} TopologyLogAppendResult;

/* the snapshot kept next to the log */
typedef struct TopologySnapshot
{
	bool		exists;
	char	   *epoch;
	char	   *position;		/* the last entry whose effect it holds */
	char	   *topology;		/* JSON; NULL unless asked for */
	char	   *digest;			/* md5 of topology */
	char	   *node;			/* the coordinator that wrote it */
} TopologySnapshot;

/* stream entry ids */
extern bool StreamIdParse(const char *text, uint64 *ms, uint64 *seq);
extern int	StreamIdCompare(const char *a, const char *b);

/* keys */
extern char *TopologyLogStreamKey(void);

/* connections: the command connection of this process */
struct redisContext;
extern struct redisContext *TopologyLogOpen(char **errmsg);
extern bool TopologyLogConnect(char **errmsg);
extern void TopologyLogDisconnect(void);
extern bool TopologyLogConnected(void);

/* ordering */
extern bool TopologyLogHead(char **epoch, char **head, char **errmsg);
extern bool TopologyLogServerTime(int64 *ms, char **errmsg);
extern bool TopologyLogAppend(const char *epoch, const char *position, const char *origin,
							  List *events, TopologyLogAppendResult *result, char **errmsg);
extern bool TopologyLogOrderRaw(const char *event, int len, const char *prev,
								char **id, char **errmsg);
extern bool TopologyLogPublish(const char *event, char **id, char **errmsg);

/* reading */
extern bool TopologyLogRead(const char *after, bool with_after, int count, List **entries,
							char **errmsg);
extern void TopologyLogFreeEvents(List *events);
extern bool TopologyLogHasEntry(const char *id, bool *has, char **errmsg);

/* outcomes: how each entry came out where it was first applied */
extern bool TopologyLogGetOutcomes(List *ids, char ***outcomes, char **errmsg);
extern bool TopologyLogPutOutcomes(List *ids, List *outcomes, char ***recorded, char **errmsg);

/* the snapshot */
extern bool TopologyLogGetSnapshot(TopologySnapshot *snapshot, bool with_topology,
								   char **errmsg);
extern bool TopologyLogSeed(const char *epoch, const char *position, const char *topology,
							const char *digest, char **seeded_at, char **errmsg);
extern bool TopologyLogPutSnapshot(const char *epoch, const char *position,
								   const char *topology, const char *digest,
								   const char **outcome, char **errmsg);
extern bool TopologyLogReseed(const char *epoch, const char *position, const char *new_epoch,
							  const char *topology, const char *digest, char **outcome,
							  char **seeded_at, char **errmsg);
extern char *TopologyLogNewEpoch(void);

/* what the backends and the worker share */
extern void TopologyLogInit(void);
extern void TopologyLogRequestCatchUp(void);
extern bool TopologyLogTakeCatchUpRequest(void);
extern void TopologyLogAdvanced(void);
extern void TopologyLogWaitForAdvance(long timeout_ms);

#endif
