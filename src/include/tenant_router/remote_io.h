/*-------------------------------------------------------------------------
 *
 * remote_io.h
 *	  Values to and from shards, in text form.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_REMOTE_IO_H
#define TENANT_ROUTER_REMOTE_IO_H

#include "fmgr.h"
#include "funcapi.h"
#include "libpq-fe.h"
#include "storage/itemptr.h"

/* parameters of a remote statement */
typedef struct RemoteParams
{
	int			n;
	Oid		   *types;			/* declared to the shard (0: shard infers) */
	const char **values;		/* text, NULL for SQL NULL */
	FmgrInfo   *out_funcs;
	int			needs;			/* REMOTE_NEEDS_*: settings the output uses */
} RemoteParams;

extern Oid	RemoteParamType(Oid typid);
extern void RemoteParamsInit(RemoteParams *params, int n, const Oid *typids);
extern void RemoteParamsFill(RemoteParams *params, const Datum *values, const bool *nulls);
extern void RemoteRowDecode(PGresult *res, int row, List *retrieved_attrs,
							AttInMetadata *attinmeta, Datum *values, bool *nulls,
							ItemPointer ctid);

#endif
