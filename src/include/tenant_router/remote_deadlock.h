/*-------------------------------------------------------------------------
 *
 * remote_deadlock.h
 *	  What the remote layer does for the distributed deadlock detector
 *	  (worker/deadlock.c): the identity a shard session shows, the lock
 *	  waits read from a shard, and the victims failed with 40P01.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_REMOTE_DEADLOCK_H
#define TENANT_ROUTER_REMOTE_DEADLOCK_H

#include "datatype/timestamp.h"
#include "libpq-fe.h"

#include "tenant_router/connection.h"

/*
 * A coordinator transaction, as its shard sessions name it: the
 * coordinator's node (OriginId: a hash of its node_name), the backend's pid, its local
 * transaction id and the transaction's start (milliseconds since 2000).
 */
typedef struct RemoteXactId
{
	uint64		node;
	int			pid;
	LocalTransactionId lxid;
	int64		start_ms;
} RemoteXactId;

/* what an application_name says of a session (RemoteParseSessionName) */
typedef enum RemoteSessionKind
{
	REMOTE_SESSION_OTHER,		/* not a tenant_router session */
	REMOTE_SESSION_IDLE,		/* a tenant_router session outside a transaction */
	REMOTE_SESSION_XACT			/* inside a coordinator transaction: id set */
} RemoteSessionKind;

/* the columns of RemoteLockWaitsSql's rows */
#define REMOTE_WAIT_WAITER_PID	0
#define REMOTE_WAIT_WAITER_NAME 1
#define REMOTE_WAIT_BLOCKER_PID 2
#define REMOTE_WAIT_BLOCKER_NAME 3

extern void RemoteDeadlockInit(void);
extern RemoteSessionKind RemoteParseSessionName(const char *name, RemoteXactId *id);
extern RemoteXactId RemoteLocalXactId(int pid, TimestampTz xact_start);
extern bool RemoteXactIdEqual(const RemoteXactId *a, const RemoteXactId *b);
extern void RemoteLockWaits(int n, ShardConn **scs, int timeout_ms, PGresult **results);
extern bool RemoteDeadlockFail(int pid, LocalTransactionId lxid, const char *detail);

#endif
