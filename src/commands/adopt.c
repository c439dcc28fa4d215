/*-------------------------------------------------------------------------
 *
 * adopt.c
 *	  Shards that already hold rows, and ids that never collide: the rows a
 *	  shard brings must be its own tenants', and the coordinator's sequences
 *	  must draw above the ids the shards hold, within this coordinator's
 *	  block.
 *
 * Adopting.  When a logical table gets its range constraint on a shard for
 * the first time (shard_add, logical_table_add; commands/shard_ddl.c calls
 * AdoptShardTable), rows of tenants outside the shard's range are an error
 * that says how many and on which shard, instead of the shard's bare check
 * violation; then the coordinator's sequences are moved above the largest
 * value that shard holds.
 *
 * Sequence blocks.  Several coordinators draw ids for the same tables; each
 * draws from its own block, as Citus does for bigserial on several nodes:
 * sequence_block_set(n) splits the positive range of each sequence's type
 * into SEQUENCE_BLOCKS equal blocks and bounds this coordinator's sequences
 * to block n (MINVALUE, MAXVALUE).  Without a block a sequence keeps its own
 * bounds: right for one coordinator.  Either way a sequence starts above the
 * largest value the shards hold within its bounds, so that rows a shard
 * brought, or another coordinator's rows in other blocks, are never met.
 *
 * The sequences of a logical table are those its columns' defaults use
 * (serial and bigserial, or any nextval() default).  Sequences move with
 * ALTER SEQUENCE ... RESTART, which is transactional: a change that rolls
 * back leaves them as they were.
 *
 * Invariant: after any of these runs and commits, each sequence's next value
 * lies in its block and above every value the shards it asked hold there.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"

#include "access/htup_details.h"
#include "catalog/pg_sequence.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "ddl_internal.h"
#include "tenant_router/adopt.h"
#include "tenant_router/catalog.h"

PG_FUNCTION_INFO_V1(tenant_router_sequence_block_set);

/* how many blocks a sequence type's positive range is split into */
#define SEQUENCE_BLOCKS 64

/* a sequence that feeds a column of a logical table */
typedef struct FedColumn
{
	char	   *column;			/* quoted */
	Oid			seqid;
} FedColumn;

/*
 * fed_columns lists the columns of relid whose default draws from a
 * sequence, with the sequence; integer columns only.  SPI is connected.
 */
static List *
fed_columns(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	List	   *fed = NIL;
	uint64		i;

	DdlCatalogExec("SELECT pg_catalog.quote_ident(a.attname), d.refobjid "
				   "FROM pg_catalog.pg_attrdef ad "
				   "JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum "
				   "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass "
				   "AND d.objid = ad.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass "
				   "JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' "
				   "WHERE ad.adrelid = $1 AND NOT a.attisdropped "
				   "AND a.atttypid IN ('pg_catalog.int2'::pg_catalog.regtype, "
				   "'pg_catalog.int4'::pg_catalog.regtype, 'pg_catalog.int8'::pg_catalog.regtype) "
				   "ORDER BY a.attnum",
				   1, types, values, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		FedColumn  *col = SPI_palloc(sizeof(FedColumn));
		bool		isnull;

		col->column = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		col->seqid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
													SPI_tuptable->tupdesc, 2, &isnull));
		fed = lappend(fed, col);
	}
	return fed;
}

/*
 * configured_block returns this coordinator's block, or -1 (none, or a
 * catalog not yet updated to have blocks).  SPI is connected.
 */
static int
configured_block(void)
{
	bool		isnull;

	if (!OidIsValid(get_relname_relid("sequence_block",
									  get_namespace_oid("tenant_router", false))))
		return -1;
	DdlCatalogExec("SELECT block FROM tenant_router.sequence_block", 0, NULL, NULL,
				   SPI_OK_SELECT);
	if (SPI_processed == 0)
		return -1;
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
									   &isnull));
}

/* type_max returns the largest value of an integer type */
static int64
type_max(Oid type)
{
	switch (type)
	{
		case INT2OID:
			return PG_INT16_MAX;
		case INT4OID:
			return PG_INT32_MAX;
		default:
			return PG_INT64_MAX;
	}
}

/*
 * fit_sequence moves a sequence into its bounds (block, or its own) and
 * above held, the largest value the shards hold within them (or below
 * them: none).  SPI is connected, as the catalog's owner.
 */
static void
fit_sequence(Oid seqid, int block, bool has_held, int64 held, int64 lo, int64 hi,
			 bool rebound)
{
	char	   *seqname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(seqid)),
													 get_rel_name(seqid));
	bool		isnull;
	int64		last;
	bool		called;
	int64		next;
	int64		target;
	int64		increment;
	HeapTuple	tuple;

	tuple = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seqid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for sequence %u", seqid);
	increment = ((Form_pg_sequence) GETSTRUCT(tuple))->seqincrement;
	ReleaseSysCache(tuple);
	if (increment <= 0)
		return;					/* a descending sequence: left as it is */

	DdlCatalogExec(psprintf("SELECT last_value, is_called FROM %s", seqname), 0, NULL, NULL,
				   SPI_OK_SELECT);
	last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	called = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	next = called ? (last > PG_INT64_MAX - increment ? PG_INT64_MAX : last + increment) : last;

	target = (next >= lo && next <= hi) ? next : lo;
	if (has_held && held >= target)
	{
		if (held >= hi)
			ereport(ERROR,
					(errcode(ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED),
					 errmsg("sequence %s has no value left above " INT64_FORMAT ", the largest the shards hold within its range " INT64_FORMAT ".." INT64_FORMAT,
							seqname, held, lo, hi),
					 block >= 0 ?
					 errhint("Give this coordinator another block with sequence_block_set(), or use a bigint column.") :
					 errhint("Use a bigint column.")));
		target = held + 1;
	}
	if (!rebound && target == next)
		return;
	DdlCatalogExec(psprintf(rebound ?
							"ALTER SEQUENCE %s MINVALUE " INT64_FORMAT " MAXVALUE " INT64_FORMAT
							" START WITH " INT64_FORMAT " RESTART WITH " INT64_FORMAT :
							"ALTER SEQUENCE %s RESTART WITH " INT64_FORMAT,
							seqname,
							rebound ? lo : target, hi, lo, target),
				   0, NULL, NULL, SPI_OK_UTILITY);
}

/*
 * bounds returns the range a sequence draws from: its block's, or without
 * one its own; *rebound tells whether ALTER SEQUENCE must set them.
 */
static void
bounds(Oid seqid, int block, int64 *lo, int64 *hi, bool *rebound)
{
	HeapTuple	tuple = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seqid));
	Form_pg_sequence seq;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for sequence %u", seqid);
	seq = (Form_pg_sequence) GETSTRUCT(tuple);
	if (block < 0)
	{
		*lo = seq->seqmin;
		*hi = seq->seqmax;
		*rebound = false;
	}
	else
	{
		int64		size = type_max(seq->seqtypid) / SEQUENCE_BLOCKS;

		*lo = block * size + 1;
		*hi = (block + 1) * size;
		*rebound = (seq->seqmin != *lo || seq->seqmax != *hi);
	}
	ReleaseSysCache(tuple);
}

/*
 * held_max asks each shard connection for the largest value of column in
 * lo..hi of table qualname; false if none holds one.
 */
static bool
held_max(List *conns, const char *qualname, const char *column, int64 lo, int64 hi,
		 int64 *held)
{
	char	   *sql = psprintf("SELECT max(%s) FROM %s WHERE %s >= " INT64_FORMAT
							   " AND %s <= " INT64_FORMAT,
							   column, qualname, column, lo, column, hi);
	ListCell   *lc;
	bool		found = false;

	foreach(lc, conns)
	{
		PGresult   *res = ShardConnExec(lfirst(lc), sql, 0, NULL, NULL);

		if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
		{
			int64		value = pg_strtoint64(PQgetvalue(res, 0, 0));

			if (!found || value > *held)
				*held = value;
			found = true;
		}
		PQclear(res);
	}
	return found;
}

/*
 * AdoptSequences fits the sequences that feed the columns of logical table
 * relid (named qualname on the shards) into this coordinator's block and
 * above what the shards of conns hold (NIL: every shard).
 */
void
AdoptSequences(Oid relid, const char *qualname, List *conns)
{
	DdlCatalogAccess access;
	List	   *fed;
	ListCell   *lc;
	int			block;

	if (conns == NIL)
		foreach(lc, DdlShards(false))
		{
			DdlShard   *shard = lfirst(lc);
			ShardConn  *sc = ShardConnGet(shard->shard_id, shard->dsn);

			ShardConnBegin(sc, SHARD_READ);
			conns = lappend(conns, sc);
		}

	DdlCatalogBegin(&access);
	block = configured_block();
	fed = fed_columns(relid);
	foreach(lc, fed)
	{
		FedColumn  *col = lfirst(lc);
		int64		lo;
		int64		hi;
		int64		held = 0;
		bool		rebound;
		bool		has_held;

		bounds(col->seqid, block, &lo, &hi, &rebound);
		has_held = held_max(conns, qualname, col->column, lo, hi, &held);
		fit_sequence(col->seqid, block, has_held, held, lo, hi, rebound);
	}
	DdlCatalogEnd(&access);
}

/*
 * AdoptShardTable adopts a shard's copy of a logical table that gets its
 * range constraint for the first time: rows of tenants the shard does not
 * own (ShardOwnsSql) are an error naming how many and the shard; the
 * coordinator's sequences move above the ids the shard holds.
 */
void
AdoptShardTable(ShardConn *sc, LogicalTableRow *table, const char *qualname,
				const ShardRow *shard)
{
	const char *tenant = quote_identifier(table->tenant_column);
	PGresult   *res;
	int64		outside;

	res = ShardConnExec(sc, psprintf("SELECT count(*) FROM %s WHERE NOT %s",
									 qualname, ShardOwnsSql(shard, tenant)),
						0, NULL, NULL);
	outside = pg_strtoint64(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (outside > 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg_plural("shard \"%s\" holds " INT64_FORMAT " row of table %s outside its range " INT64_FORMAT ".." INT64_FORMAT,
								"shard \"%s\" holds " INT64_FORMAT " rows of table %s outside its range " INT64_FORMAT ".." INT64_FORMAT,
								outside,
								ShardConnLabel(sc), outside, qualname, shard->range_start, shard->range_end),
				 errdetail("Their %s names tenants the shard does not own; tenant_router adopts a shard's rows only when all are its own.",
						   tenant),
				 errhint("Move or delete those rows on the shard, or add the shard with a range that covers them.")));
	AdoptSequences(table->relid, qualname, list_make1(sc));
}

/* reset_bounds gives relid's sequences the default bounds of their type */
static void
reset_bounds(Oid relid)
{
	DdlCatalogAccess access;
	ListCell   *lc;

	DdlCatalogBegin(&access);
	foreach(lc, fed_columns(relid))
	{
		Oid			seqid = ((FedColumn *) lfirst(lc))->seqid;

		DdlCatalogExec(psprintf("ALTER SEQUENCE %s NO MINVALUE NO MAXVALUE",
								quote_qualified_identifier(get_namespace_name(get_rel_namespace(seqid)),
														   get_rel_name(seqid))),
					   0, NULL, NULL, SPI_OK_UTILITY);
	}
	DdlCatalogEnd(&access);
}

/*
 * sequence_block_set(block) makes this coordinator draw the ids of logical
 * tables from block (0..63), or, with NULL, from the sequences' whole range.
 */
Datum
tenant_router_sequence_block_set(PG_FUNCTION_ARGS)
{
	DdlCatalogAccess access;
	ListCell   *lc;

	if (!PG_ARGISNULL(0) &&
		(PG_GETARG_INT32(0) < 0 || PG_GETARG_INT32(0) >= SEQUENCE_BLOCKS))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sequence block %d is out of range", PG_GETARG_INT32(0)),
				 errdetail("Blocks are numbered 0 to %d; give each coordinator its own.",
						   SEQUENCE_BLOCKS - 1)));

	DdlCatalogBegin(&access);
	DdlCatalogExec("DELETE FROM tenant_router.sequence_block", 0, NULL, NULL, SPI_OK_DELETE);
	if (!PG_ARGISNULL(0))
	{
		Oid			types[1] = {INT4OID};
		Datum		values[1] = {PG_GETARG_DATUM(0)};

		DdlCatalogExec("INSERT INTO tenant_router.sequence_block (block) VALUES ($1)",
					   1, types, values, SPI_OK_INSERT);
	}
	DdlCatalogEnd(&access);

	foreach(lc, CatalogLogicalTables())
	{
		LogicalTableRow *row = lfirst(lc);
		char	   *relname = get_rel_name(row->relid);

		if (relname == NULL)
			continue;
		if (PG_ARGISNULL(0))
			reset_bounds(row->relid);
		AdoptSequences(row->relid,
					   quote_qualified_identifier(get_namespace_name(get_rel_namespace(row->relid)),
												  relname),
					   NIL);
	}
	PG_RETURN_VOID();
}
