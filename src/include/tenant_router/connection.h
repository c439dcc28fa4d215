/*-------------------------------------------------------------------------
 *
 * connection.h
 *	  Shard connections and the remote transactions tied to the local one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_CONNECTION_H
#define TENANT_ROUTER_CONNECTION_H

#include "libpq-fe.h"

typedef struct ShardConn ShardConn;
typedef struct ShardStream ShardStream;

/* how a statement uses its shard connection */
typedef enum ShardXactMode
{
	SHARD_AUTOCOMMIT,			/* no remote transaction: one round trip */
	SHARD_READ,					/* inside the remote transaction */
	SHARD_WRITE,				/* inside it, and counts as a write */
	SHARD_WRITE_ALL				/* a write to every shard (TRUNCATE): the only
								 * write of its transaction */
} ShardXactMode;

extern ShardConn *ShardConnGet(const char *shard_id, const char *dsn);
extern ShardConn *ShardConnGetSide(const char *shard_id, const char *dsn);
extern bool ShardConnCanAutocommit(void);
extern void ShardConnBegin(ShardConn *sc, ShardXactMode mode);
extern const char *ShardConnLabel(ShardConn *sc);

extern PGresult *ShardConnExec(ShardConn *sc, const char *sql, int nparams,
							   const Oid *types, const char *const *values);
extern PGresult *ShardConnExecSecret(ShardConn *sc, const char *sql);
extern void ShardConnQueue(ShardConn *sc, const char *sql);

extern ShardStream *ShardStreamOpen(ShardConn *sc, const char *sql, int nparams,
									const Oid *types, const char *const *values,
									bool prepare);
extern PGresult *ShardStreamNext(ShardStream *stream);
extern uint64 ShardStreamRowsAffected(ShardStream *stream);
extern void ShardStreamClose(ShardStream *stream);

#endif
