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
extern char *DatumToRemoteText(Datum value, Oid typid);

#endif
