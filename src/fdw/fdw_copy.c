/*-------------------------------------------------------------------------
 *
 * fdw_copy.c
 *	  COPY FROM into a logical table: each row routed by its tenant and
 *	  streamed, in COPY text format, to a COPY ... FROM STDIN open on its
 *	  shard, every shard's COPY running at the same time.
 *
 * A shard's COPY starts with its first row (in the shard's remote
 * transaction, as a write: rows for several shards commit with two-phase
 * commit) and ends when the local COPY does; a shard's error (a constraint,
 * a misrouted tenant caught by the range CHECK) is raised then, naming the
 * shard, and the whole COPY rolls back.  Rows are sent in blocks of
 * COPY_BLOCK bytes; a full socket waits on the latch, interruptibly.  If
 * something else needs a shard's connection meanwhile (a trigger reading
 * the shard), that shard's COPY ends there and a new one starts with its
 * next row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "tenant_router/connection.h"
#include "tenant_router/fdw.h"
#include "tenant_router/remote_io.h"
#include "tenant_router/remote_session.h"

/* bytes of rows sent to a shard at a time */
#define COPY_BLOCK 65536

/* the COPY on one shard connection */
typedef struct CopyTarget
{
	ShardConnClaim claim;		/* first: the claim on sc while copying */
	struct TrCopy *copy;
	ShardConn  *sc;
	bool		active;
	StringInfoData buf;
} CopyTarget;

struct TrCopy
{
	char	   *sql;
	List	   *attrs;
	RemoteParams columns;		/* the columns' output functions and settings */
	List	   *targets;
	MemoryContext cxt;			/* lives as long as the COPY */
	MemoryContext row_cxt;
	uint64		rows;
};

/* flush sends the target's buffered rows */
static void
flush(CopyTarget *target)
{
	if (target->buf.len > 0)
		ShardCopyPut(target->sc, target->buf.data, target->buf.len);
	resetStringInfo(&target->buf);
}

/* finish ends the target's COPY on its shard */
static void
finish(CopyTarget *target)
{
	if (!target->active)
		return;
	flush(target);
	target->active = false;
	ShardConnClaimDone(target->sc, &target->claim);
	target->copy->rows += ShardCopyEnd(target->sc, target->copy->sql);
}

static void
target_release(ShardConnClaim *claim)
{
	finish((CopyTarget *) claim);
}

static void
target_abandon(ShardConnClaim *claim)
{
	CopyTarget *target = (CopyTarget *) claim;

	target->active = false;
	resetStringInfo(&target->buf);
}

/*
 * TrCopyBegin prepares a COPY of the columns attrs into rel's copies on the
 * shards.
 */
TrCopy *
TrCopyBegin(Relation rel, LogicalTable *table, List *attrs)
{
	TrCopy	   *copy = palloc0(sizeof(TrCopy));
	Oid		   *typids = palloc(sizeof(Oid) * (list_length(attrs) + 1));
	StringInfoData sql;
	ListCell   *lc;
	int			i = 0;

	copy->cxt = CurrentMemoryContext;
	copy->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "tenant_router copy row",
										  ALLOCSET_SMALL_SIZES);
	copy->attrs = attrs;
	initStringInfo(&sql);
	appendStringInfo(&sql, "COPY %s (", table->remote_name);
	foreach(lc, attrs)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), lfirst_int(lc) - 1);

		appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "", quote_identifier(NameStr(att->attname)));
		typids[i++] = att->atttypid;
	}
	appendStringInfoString(&sql, ") FROM STDIN");
	copy->sql = sql.data;
	RemoteParamsInit(&copy->columns, i, typids);
	return copy;
}

/* append_escaped appends a value in COPY text format */
static void
append_escaped(StringInfo buf, const char *s)
{
	for (; *s; s++)
	{
		switch (*s)
		{
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			default:
				appendStringInfoChar(buf, *s);
		}
	}
}

/* target_of returns the COPY of a shard connection, started if needed */
static CopyTarget *
target_of(TrCopy *copy, ShardConn *sc)
{
	CopyTarget *target = NULL;
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, copy->targets)
		if (((CopyTarget *) lfirst(lc))->sc == sc)
			target = lfirst(lc);
	if (target == NULL)
	{
		old = MemoryContextSwitchTo(copy->cxt);
		target = palloc0(sizeof(CopyTarget));
		target->claim.release = target_release;
		target->claim.abandon = target_abandon;
		target->copy = copy;
		target->sc = sc;
		initStringInfo(&target->buf);
		copy->targets = lappend(copy->targets, target);
		MemoryContextSwitchTo(old);
	}
	if (!target->active)
	{
		ShardConnBegin(sc, SHARD_WRITE);
		ShardCopyStart(sc, copy->sql);
		ShardConnClaimSet(sc, &target->claim);
		target->active = true;
	}
	return target;
}

/* TrCopyRow sends one row to the COPY of its shard. */
void
TrCopyRow(TrCopy *copy, ShardConn *sc, TupleTableSlot *slot)
{
	CopyTarget *target = target_of(copy, sc);
	MemoryContext old = MemoryContextSwitchTo(copy->row_cxt);
	int			nestlevel = EnterRemoteValueSettings(copy->columns.needs);
	ListCell   *lc;
	int			i = 0;

	slot_getallattrs(slot);
	foreach(lc, copy->attrs)
	{
		int			attno = lfirst_int(lc);

		if (i > 0)
			appendStringInfoChar(&target->buf, '\t');
		if (slot->tts_isnull[attno - 1])
			appendStringInfoString(&target->buf, "\\N");
		else
			append_escaped(&target->buf,
						   OutputFunctionCall(&copy->columns.out_funcs[i],
											  slot->tts_values[attno - 1]));
		i++;
	}
	appendStringInfoChar(&target->buf, '\n');
	LeaveRemoteValueSettings(nestlevel);
	MemoryContextSwitchTo(old);
	MemoryContextReset(copy->row_cxt);
	if (target->buf.len >= COPY_BLOCK)
		flush(target);
}

/*
 * TrCopyEnd ends the COPY on every shard and returns the rows the shards
 * copied; a shard's error is raised.
 */
uint64
TrCopyEnd(TrCopy *copy)
{
	ListCell   *lc;

	foreach(lc, copy->targets)
		finish(lfirst(lc));
	return copy->rows;
}
