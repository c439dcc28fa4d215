/*-------------------------------------------------------------------------
 *
 * connection_internal.h
 *	  What the files of src/connection/ share about a shard connection;
 *	  the rest of the extension sees ShardConn as opaque (connection.h).
 *
 * connection.c owns the cache and the lifecycle (connect, lost connection,
 * disconnect), remote_command.c what travels on a connection (commands,
 * pipelines, prepared statements, streams, errors), remote_xact.c the
 * remote transaction tied to the local one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_CONNECTION_INTERNAL_H
#define TENANT_ROUTER_CONNECTION_INTERNAL_H

#include "libpq-fe.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "tenant_router/connection.h"
#include "tenant_router/route_cache.h"

/* why a remote transaction cannot go on */
typedef enum ShardBroken
{
	SHARD_OK = 0,
	SHARD_LOST,					/* the connection was lost */
	SHARD_FAILED				/* it failed at a savepoint level rolled back since */
} ShardBroken;

/* where a shard's part of the local transaction is */
typedef enum RemoteXactState
{
	REMOTE_XACT_NONE = 0,		/* no remote transaction */
	REMOTE_XACT_OPEN,			/* open (its BEGIN may still be queued) */
	REMOTE_XACT_PREPARING,		/* PREPARE TRANSACTION sent, answer not read */
	REMOTE_XACT_PREPARED		/* PREPARE TRANSACTION done: gid names it */
} RemoteXactState;

#define GID_MAXLEN 128

/* a command queued to go before the next statement (ShardConnQueue) */
typedef struct QueuedCommand
{
	char	   *sql;
	int			nparams;
	Oid		   *types;
	char	  **values;
	bool		keep;			/* its result is kept for ShardConnTakeKept */
} QueuedCommand;

/* the statement in flight on a connection, and the commands sent before it */
typedef struct InFlight
{
	bool		active;
	int			nprefix;		/* commands sent before the statement */
	int			ndone;			/* of them, those whose results are all read */
	List	   *prefix_sql;		/* their text, for errors */
	bool		single_row;		/* the statement's rows one result each */
	struct PreparedStmt *preparing; /* prepared by the last prefix command */
	struct PreparedStmt *executing; /* the prepared statement executed, if any */
	PGresult   *error;			/* the first prefix command that failed */
	char	   *error_sql;
	int			keep;			/* the prefix command whose result is kept, or -1 */
	char	   *shown;			/* the statement as errors show it; NULL: a secret */
} InFlight;

struct ShardConn
{
	uint64		key;			/* hash of the DSN (and side): hash key */
	PGconn	   *conn;			/* NULL when not connected */
	char	   *dsn;
	char		label[SHARD_ID_MAXLEN]; /* the shard named in messages */
	char	   *app_suffix;		/* the DSN's application_name, or "" */

	/* remote_command.c */
	bool		in_pipeline;	/* the command in flight was pipelined */
	bool		copying;		/* in COPY FROM STDIN (non-blocking) */
	List	   *pending;		/* QueuedCommands to send before the next statement */
	InFlight	cmd;
	PGresult   *kept;			/* the kept result of a queued command, not taken yet */
	ShardConnClaim *claim;		/* a command in flight that another owns */
	HTAB	   *prepared;		/* remote prepared statements */
	uint32		next_stmt;
	WaitEventSet *wait_set;		/* latch, postmaster death, conn's socket */

	/* remote_xact.c */
	RemoteXactState xact_state;
	int			xact_depth;		/* 0: no remote transaction; n: savepoint level */
	ShardBroken broken;			/* remote transaction unusable: fail until its end */
	bool		wrote;			/* written in this local transaction */
	int			xact_statements;	/* statements sent in the remote transaction */
	char		gid[GID_MAXLEN];	/* while prepared */
};

/* connection.c */
extern void ShardConnDisconnect(ShardConn *sc);
extern void ShardConnLost(ShardConn *sc) pg_attribute_noreturn();
extern char *ShardConnLibpqMessage(PGconn *conn);
extern bool ShardConnSocketHasInput(PGconn *conn);
extern void ShardConnForEach(void (*fn) (ShardConn *sc, void *arg), void *arg);

/* remote_xact.c */
extern void RemoteXactCheck(ShardConn *sc);
extern bool RemoteXactCommitting;
extern ShardConn **RemoteConnArray(List *list);

/* two_phase.c */
extern void TwoPhaseInit(void);
extern void TwoPhasePrepare(List *writers);
extern void TwoPhaseFinish(bool commit);
extern void TwoPhaseReset(void);

/* remote_command.c */
extern bool RemoteTenantMoved(const PGresult *res, bool inserting);
extern PGresult *RemoteGetResult(ShardConn *sc);
extern void RemoteSetDeadline(TimestampTz at, int errcode);
extern void RemoteClearDeadline(void);
extern void RemoteReport(ShardConn *sc, PGresult *res, const char *sql) pg_attribute_noreturn();
extern void RemoteForgetPrepared(ShardConn *sc);
extern void RemoteForgetUnconfirmed(ShardConn *sc);
extern void RemoteForgetCommands(ShardConn *sc);
extern void RemoteFreeQueued(QueuedCommand *qc);
extern void RemoteSendStatement(ShardConn *sc, const char *sql, const char *shown,
								int nparams, const Oid *types, const char *const *values,
								bool prepare, bool single_row);
extern bool RemoteReadPrefix(ShardConn *sc, bool wait);
extern void RemoteReportPrefixError(ShardConn *sc) pg_attribute_noreturn();
extern void RemoteFinishCommand(ShardConn *sc);
extern void RemoteEndCommand(ShardConn *sc);
extern void RemoteForgetStale(ShardConn *sc, PGresult *res);

/* remote_deadlock.c */
extern char *RemoteSessionSuffix(const char *dsn);
extern char *RemoteSessionName(const char *suffix);
extern char *RemoteXactNameSql(const char *suffix);
extern void RemoteDeadlockCheck(void);

/* remote_cancel.c */
extern bool RemoteSendCancel(ShardConn *sc, TimestampTz deadline);
extern bool RemoteCleanup(ShardConn *sc, int timeout_ms);
extern bool RemoteCleanupExec(ShardConn *sc, const char *sql, int timeout_ms);
extern void RemoteExecAllBounded(int n, ShardConn **scs, const char *const *sqls,
								 int timeout_ms, bool *ok);


#endif
