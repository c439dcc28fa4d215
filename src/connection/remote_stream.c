/*-------------------------------------------------------------------------
 *
 * remote_stream.c
 *	  Streams: a statement whose rows are read one at a time as they arrive
 *	  (single-row mode), the fast path's way of returning a shard's rows.
 *
 * A stream is its connection's claim while it reads: a command that needs
 * the connection first reads the rest of the stream into memory.  A stream
 * closed early outside a remote transaction cancels its statement instead
 * of reading it to its end.  A stream that writes one tenant's rows can
 * hold the shard's refusal because the tenant moved (ShardStreamHoldMoved)
 * when it comes before any row, for its owner to send the statement to the
 * tenant's new shard.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "connection_internal.h"
#include "tenant_router/guc.h"

struct ShardStream
{
	ShardConnClaim claim;		/* first: the stream is its connection's claim */
	ShardConn  *sc;
	char	   *sql;
	MemoryContext mcxt;
	List	   *buffered;		/* results drained while conn was needed */
	PGresult   *current;		/* row returned by the last ShardStreamNext */
	bool		done;
	bool		aborted;		/* cancelled by a rollback: reading is an error */
	bool		hold_moved;		/* ShardStreamHoldMoved */
	bool		inserting;
	uint64		rows;			/* rows read so far */
	PGresult   *moved;			/* the refusal held */
	char		label[SHARD_ID_MAXLEN]; /* the shard, for that error */
	uint64		affected;
	MemoryContextCallback cleanup;
};

static void stream_release(ShardConnClaim *claim);
static void stream_abandon(ShardConnClaim *claim);

static void
stream_cleanup(void *arg)
{
	ShardStream *stream = (ShardStream *) arg;
	ListCell   *lc;

	foreach(lc, stream->buffered)
		PQclear(lfirst(lc));
	stream->buffered = NIL;
	PQclear(stream->current);
	stream->current = NULL;
	PQclear(stream->moved);
	stream->moved = NULL;
	if (stream->sc != NULL)
		ShardConnClaimDone(stream->sc, &stream->claim);	/* the transaction end
														 * cleans the conn */
}

/*
 * ShardStreamOpen sends a statement whose rows are read one at a time with
 * ShardStreamNext.  With prepare, the statement is prepared on the shard
 * the first time and executed by name after that.  The stream belongs to
 * the current memory context.
 */
ShardStream *
ShardStreamOpen(ShardConn *sc, const char *sql, int nparams, const Oid *types,
				const char *const *values, bool prepare)
{
	ShardStream *stream = palloc0(sizeof(ShardStream));

	stream->claim.release = stream_release;
	stream->claim.abandon = stream_abandon;
	stream->sql = pstrdup(sql);
	stream->mcxt = CurrentMemoryContext;
	stream->cleanup.func = stream_cleanup;
	stream->cleanup.arg = stream;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &stream->cleanup);

	RemoteSendStatement(sc, sql, sql, nparams, types, values, prepare, true);
	stream->sc = sc;
	strlcpy(stream->label, sc->label, sizeof(stream->label));
	ShardConnClaimSet(sc, &stream->claim);
	return stream;
}

/* stream_finished marks the stream's statement finished and frees its connection */
static void
stream_finished(ShardStream *stream)
{
	stream->done = true;
	ShardConnClaimDone(stream->sc, &stream->claim);
	RemoteFinishCommand(stream->sc);
	RemoteEndCommand(stream->sc);
}

/*
 * stream_read reads the next result of the stream from its connection;
 * it returns a row, or NULL once the statement is complete.
 */
static PGresult *
stream_read(ShardStream *stream)
{
	ShardConn  *sc = stream->sc;
	PGresult   *res;

	if (sc == NULL || sc->claim != &stream->claim)
		elog(ERROR, "tenant_router: stream read without its connection");
	(void) RemoteReadPrefix(sc, true);
	if (sc->cmd.error != NULL)
	{
		stream->done = true;
		ShardConnClaimDone(sc, &stream->claim);
		RemoteReportPrefixError(sc);
	}
	res = RemoteGetResult(sc);

	if (res == NULL)
		ShardConnLost(sc);
	switch (PQresultStatus(res))
	{
		case PGRES_SINGLE_TUPLE:
			stream->rows++;
			return res;
		case PGRES_TUPLES_OK:
		case PGRES_COMMAND_OK:
			{
				char	   *tuples = PQcmdTuples(res);

				stream->affected = tuples[0] ? strtou64(tuples, NULL, 10) : 0;
				PQclear(res);
				stream_finished(stream);
				return NULL;
			}
		default:
			RemoteForgetStale(sc, res);
			stream_finished(stream);
			if (stream->hold_moved && stream->rows == 0 &&
				RemoteTenantMoved(res, stream->inserting))
			{
				stream->moved = res;
				return NULL;
			}
			RemoteReport(sc, res, stream->sql);
	}
	return NULL;				/* not reached */
}

/*
 * ShardStreamHoldMoved makes the stream, a write of one tenant's rows (an
 * INSERT if inserting), hold the shard's refusal because the tenant moved
 * (RemoteTenantMoved) if it comes before any row: ShardStreamNext then
 * returns NULL, and ShardStreamTakeMoved the refusal.
 */
void
ShardStreamHoldMoved(ShardStream *stream, bool inserting)
{
	stream->hold_moved = true;
	stream->inserting = inserting;
}

/*
 * ShardStreamTakeMoved returns the refusal the stream held (the caller
 * frees it), or NULL.
 */
PGresult *
ShardStreamTakeMoved(ShardStream *stream)
{
	PGresult   *res = stream->moved;

	stream->moved = NULL;
	return res;
}

/*
 * ShardStreamNext returns the next row (a one-row PGresult, valid until the
 * next call), or NULL when there are no more.
 */
PGresult *
ShardStreamNext(ShardStream *stream)
{
	PQclear(stream->current);
	stream->current = NULL;

	if (stream->buffered != NIL)
	{
		stream->current = linitial(stream->buffered);
		stream->buffered = list_delete_first(stream->buffered);
		return stream->current;
	}
	if (stream->aborted)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_CURSOR_STATE),
				 errmsg("the remote query on shard \"%s\" was cancelled by a rollback",
						stream->label),
				 errdetail("The query started inside a savepoint that was rolled back since."),
				 errhint("Open the cursor again.")));
	if (stream->done)
		return NULL;
	stream->current = stream_read(stream);
	return stream->current;
}

/* ShardStreamRowsAffected returns the row count of the finished statement. */
uint64
ShardStreamRowsAffected(ShardStream *stream)
{
	return stream->affected;
}

/*
 * stream_abandon: the stream's query was cancelled or its connection
 * closed; it can never read the rest of its rows.
 */
static void
stream_abandon(ShardConnClaim *claim)
{
	ShardStream *stream = (ShardStream *) claim;

	stream->aborted = true;
	stream->done = true;
	stream->sc = NULL;
}

/*
 * stream_release frees the connection from the stream, by reading the
 * stream's remaining rows into memory.
 */
static void
stream_release(ShardConnClaim *claim)
{
	ShardStream *stream = (ShardStream *) claim;
	MemoryContext old = MemoryContextSwitchTo(stream->mcxt);

	while (!stream->done)
	{
		PGresult   *res = stream_read(stream);

		if (res != NULL)
			stream->buffered = lappend(stream->buffered, res);
	}
	MemoryContextSwitchTo(old);
}

/*
 * ShardStreamClose ends a stream.  Rows not read are discarded; outside a
 * remote transaction the statement is cancelled rather than read to its end.
 */
void
ShardStreamClose(ShardStream *stream)
{
	ShardConn  *sc = stream->sc;

	if (!stream->done && sc != NULL && sc->claim == &stream->claim)
	{
		if (sc->xact_depth == 0)
		{
			TimestampTz deadline =
				TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											TenantRouterConnectTimeout * 1000);

			/* a shard that does not handle the cancel in time is given up */
			if (!RemoteSendCancel(sc, deadline))
			{
				CHECK_FOR_INTERRUPTS();
				ShardConnLost(sc);
			}
			/* the cancel error, if it arrives, is expected: drop it */
			while (!stream->done)
			{
				PGresult   *res = RemoteGetResult(sc);

				if (res == NULL)
					ShardConnLost(sc);
				if (PQresultStatus(res) != PGRES_SINGLE_TUPLE)
					stream_finished(stream);
				PQclear(res);
			}
		}
		else
		{
			while (!stream->done)
				PQclear(stream_read(stream));
		}
	}
	stream_cleanup(stream);
	stream->done = true;
}
