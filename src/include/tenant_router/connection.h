/*-------------------------------------------------------------------------
 *
 * connection.h
 *	  Shard connections (connection.c), what travels on them
 *	  (remote_command.c) and the remote transactions tied to the local one
 *	  (remote_xact.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_CONNECTION_H
#define TENANT_ROUTER_CONNECTION_H

#include "libpq-fe.h"

typedef struct ShardConn ShardConn;
typedef struct ShardStream ShardStream;

/*
 * A command in flight on a connection that its owner reads at its own pace
 * (a stream, an asynchronous fetch).  Before anything else is sent on the
 * connection, release finishes the command (keeping what its owner still
 * needs) and leaves the connection idle; abandon tells the owner the command
 * is gone (rolled back, or the connection lost) without touching the
 * connection.
 */
typedef struct ShardConnClaim ShardConnClaim;
struct ShardConnClaim
{
	void		(*release) (ShardConnClaim *claim);
	void		(*abandon) (ShardConnClaim *claim);
};

/* how a statement uses its shard connection */
typedef enum ShardXactMode
{
	SHARD_AUTOCOMMIT,			/* no remote transaction: one round trip */
	SHARD_READ,					/* inside the remote transaction */
	SHARD_WRITE					/* inside it, and counts as a write */
} ShardXactMode;

/* connection.c */
extern ShardConn *ShardConnGet(const char *shard_id, const char *dsn);
extern ShardConn *ShardConnGetSide(const char *shard_id, const char *dsn);
extern const char *ShardConnLabel(ShardConn *sc);
extern int	ShardConnBackendPid(ShardConn *sc);

/* remote_xact.c */
extern void RemoteXactInit(void);
extern bool ShardConnCanAutocommit(void);
extern void ShardConnBegin(ShardConn *sc, ShardXactMode mode);
extern bool ShardConnFirstStatement(ShardConn *sc);
extern bool ShardConnInTransaction(ShardConn *sc);
extern void ShardConnRollbackRemote(ShardConn *sc);
extern int	RemoteXactRecover(void);

/* remote_command.c */
extern PGresult *ShardConnExec(ShardConn *sc, const char *sql, int nparams,
							   const Oid *types, const char *const *values);
extern PGresult *ShardConnExecSecret(ShardConn *sc, const char *sql);
extern PGresult *ShardConnExecHoldMoved(ShardConn *sc, const char *sql, int nparams,
										const Oid *types, const char *const *values,
										bool inserting);
extern bool ShardResultMoved(const PGresult *res, bool inserting);
extern void ShardConnRaise(ShardConn *sc, PGresult *res, const char *sql) pg_attribute_noreturn();
extern void ShardConnReportMoved(ShardConn *sc, PGresult *res, const char *why) pg_attribute_noreturn();
extern void ShardConnQueue(ShardConn *sc, const char *sql);
extern void ShardConnQueueKept(ShardConn *sc, const char *sql);
extern PGresult *ShardConnTakeKept(ShardConn *sc);
extern void ShardConnQueueParams(ShardConn *sc, const char *sql, int nparams,
								 const Oid *types, const char *const *values);
extern void ShardConnSend(ShardConn *sc, const char *sql, int nparams,
						  const Oid *types, const char *const *values);
extern bool ShardConnResultReady(ShardConn *sc);
extern PGresult *ShardConnResult(ShardConn *sc, bool raise);
extern pgsocket ShardConnSocket(ShardConn *sc);
extern void ShardConnExecParams(int n, ShardConn **scs, const char *const *sqls,
								const int *nparams, const Oid *const *types,
								const char *const *const *values, PGresult **results);
extern void ShardConnExecParamsHoldMoved(int n, ShardConn **scs, const char *const *sqls,
										 const int *nparams, const Oid *const *types,
										 const char *const *const *values,
										 PGresult **results);
extern void ShardConnExecAll(int n, ShardConn **scs, const char *const *sqls,
							 PGresult **results);
extern void ShardConnClaimSet(ShardConn *sc, ShardConnClaim *claim);
extern void ShardConnClaimDone(ShardConn *sc, ShardConnClaim *claim);
extern void ShardConnRelease(ShardConn *sc);

extern void ShardCopyStart(ShardConn *sc, const char *sql);
extern void ShardCopyPut(ShardConn *sc, const char *data, int len);
extern uint64 ShardCopyEnd(ShardConn *sc, const char *sql);

extern ShardStream *ShardStreamOpen(ShardConn *sc, const char *sql, int nparams,
									const Oid *types, const char *const *values,
									bool prepare);
extern void ShardStreamHoldMoved(ShardStream *stream, bool inserting);
extern PGresult *ShardStreamNext(ShardStream *stream);
extern PGresult *ShardStreamTakeMoved(ShardStream *stream);
extern uint64 ShardStreamRowsAffected(ShardStream *stream);
extern void ShardStreamClose(ShardStream *stream);

#endif
