/*-------------------------------------------------------------------------
 *
 * deparse.h
 *	  SQL text for shards, produced by PostgreSQL's own deparser.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_DEPARSE_H
#define TENANT_ROUTER_DEPARSE_H

#include "nodes/parsenodes.h"

extern int	EnterRemoteSqlSettings(void);
extern void LeaveRemoteSqlSettings(int nestlevel);
/* what values need to print as a shard reads them */
#define REMOTE_NEEDS_DATESTYLE		0x01
#define REMOTE_NEEDS_INTERVALSTYLE	0x02
#define REMOTE_NEEDS_FLOAT_DIGITS	0x04
#define REMOTE_NEEDS_ALL			0x07

extern int	EnterRemoteValueSettings(int needs);
extern void LeaveRemoteValueSettings(int nestlevel);

#endif
