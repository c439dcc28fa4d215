/*-------------------------------------------------------------------------
 *
 * fdw_reference.c
 *	  Where the foreign-data wrapper sends the reads and writes of a
 *	  reference table: a table with a whole copy on every shard database.
 *
 * A read goes to one shard, the first of the catalog in range order: every
 * copy holds the same rows, and within a transaction that wrote the table
 * that shard's remote transaction sees the write.  A write goes to every
 * copy, one shard per database, each in its remote transaction as a write,
 * so that with several shards the transaction commits with two-phase commit
 * (connection/remote_xact.c): every copy changes, or none.  With
 * tenant_router.multi_shard_writes = 'refuse' and more than one copy, a
 * write is refused before anything is sent.  A write when no shard exists
 * is refused too: its rows would be kept nowhere.
 *
 * Each shard runs the same statement; when their row counts differ the
 * copies had diverged (someone wrote to one shard directly), and the
 * statement fails rather than make them differ more.  A statement runs on
 * the first copy before the others (then all of those at once): two
 * writers of the same rows queue on the first copy, so neither can hold a
 * row on one shard that the other holds on another, which no shard's
 * deadlock detector would see.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tenant_router/connection.h"
#include "tenant_router/fdw.h"
#include "tenant_router/guc.h"
#include "tenant_router/reference_catalog.h"

/* TrReferenceReadShards returns the shard a read goes to, as a list (NIL: none) */
List *
TrReferenceReadShards(void)
{
	ShardRow   *shard = ReferenceReadShard();

	return shard != NULL ? list_make1(shard) : NIL;
}

/*
 * TrReferenceWriteShards returns the shards a write to reference table
 * table_name goes to (one per database), refusing the write when there is
 * none (unless allow_none) or when tenant_router.multi_shard_writes forbids
 * writing to several.
 */
List *
TrReferenceWriteShards(const char *table_name, bool allow_none)
{
	List	   *shards = ReferenceShards();

	if (shards == NIL && !allow_none)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no shard holds reference table \"%s\"", table_name),
				 errdetail("The rows of a reference table are kept on the shards, and there is none."),
				 errhint("Add a shard with shard_add() first.")));
	if (list_length(shards) > 1 &&
		TenantRouterMultiShardWrites == MULTI_SHARD_WRITES_REFUSE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a write to reference table \"%s\" must reach %d shards",
						table_name, list_length(shards)),
				 errdetail("tenant_router.multi_shard_writes is \"refuse\", which forbids writing to more than one shard in a transaction; a reference table has a copy on every shard."),
				 errhint("SET tenant_router.multi_shard_writes = '2pc' in this session to write every copy atomically.")));
	return shards;
}

/*
 * TrReferenceWriteConns returns the connections of TrReferenceWriteShards's
 * shards, each in its remote transaction as a write.
 */
List *
TrReferenceWriteConns(const char *table_name, bool allow_none)
{
	List	   *conns = NIL;
	ListCell   *lc;

	foreach(lc, TrReferenceWriteShards(table_name, allow_none))
	{
		ShardRow   *shard = lfirst(lc);
		ShardConn  *sc = ShardConnGet(shard->shard_id, shard->dsn);

		ShardConnBegin(sc, SHARD_WRITE);
		conns = lappend(conns, sc);
	}
	return conns;
}

/*
 * TrReferenceExec runs a statement on every copy (conns, from
 * TrReferenceWriteConns): the first copy alone, then the others at once.
 * It returns the first copy's row count; the others must change as many.
 */
uint64
TrReferenceExec(const char *table_name, List *conns, const char *sql, int nparams,
				const Oid *types, const char *const *values)
{
	int			n = list_length(conns);
	ShardConn **scs = palloc(sizeof(ShardConn *) * (n + 1));
	const char **sqls = palloc(sizeof(char *) * (n + 1));
	int		   *nparamss = palloc(sizeof(int) * (n + 1));
	const Oid **typess = palloc(sizeof(Oid *) * (n + 1));
	const char *const **valuess = palloc(sizeof(char **) * (n + 1));
	PGresult  **results = palloc(sizeof(PGresult *) * (n + 1));
	PGresult   *first;
	uint64		count;
	int			i = 0;
	ListCell   *lc;

	if (n == 0)
		return 0;
	first = ShardConnExec(linitial(conns), sql, nparams, types, values);
	count = strtou64(PQcmdTuples(first), NULL, 10);
	PQclear(first);
	for_each_from(lc, conns, 1)
	{
		scs[i] = lfirst(lc);
		sqls[i] = sql;
		nparamss[i] = nparams;
		typess[i] = types;
		valuess[i] = values;
		i++;
	}
	ShardConnExecParams(i, scs, sqls, nparamss, typess, (const char *const *const *) valuess,
						results);
	for (n = 0; n < i; n++)
	{
		uint64		affected = strtou64(PQcmdTuples(results[n]), NULL, 10);

		PQclear(results[n]);
		results[n] = NULL;
		TrReferenceCheckCount(table_name, ShardConnLabel(scs[n]), count, affected);
	}
	return count;
}

/*
 * TrReferenceCheckCount raises the error of a write whose row count on a
 * shard (affected) differs from the first shard's (expected).
 */
void
TrReferenceCheckCount(const char *table_name, const char *shard_label,
					  uint64 expected, uint64 affected)
{
	if (affected != expected)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the copies of reference table \"%s\" differ between shards", table_name),
				 errdetail("The statement changed " UINT64_FORMAT " rows on shard \"%s\" but " UINT64_FORMAT " on the first shard.",
						   affected, shard_label, expected),
				 errhint("A copy was changed on its shard directly; make the copies equal again on the shards, then retry.")));
}
