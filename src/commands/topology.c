/*-------------------------------------------------------------------------
 *
 * topology.c
 *	  shard_add(), shard_remove(), shard_update_range(), shard_for(),
 *	  shard_cleanup(), the code the Redis events share with them, and the
 *	  statements that write a shard's catalog row.
 *
 * Every change first bumps tenant_router.topology.version, which takes that
 * row's lock: changes are serialized, and validation sees the latest
 * committed topology.  Validation happens before anything is written, and
 * an error anywhere (including on a shard) rolls back the whole change.
 * The exclusion constraint on the catalog backs the overlap check, so no
 * path can create overlapping ranges.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "tenant_router/catalog.h"
#include "tenant_router/connection.h"
#include "tenant_router/dsn.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/outbox.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/shard_ddl.h"
#include "tenant_router/topology.h"

PG_FUNCTION_INFO_V1(tenant_router_shard_add);
PG_FUNCTION_INFO_V1(tenant_router_shard_remove);
PG_FUNCTION_INFO_V1(tenant_router_shard_update_range);
PG_FUNCTION_INFO_V1(tenant_router_shard_for);
PG_FUNCTION_INFO_V1(tenant_router_shard_cleanup);
PG_FUNCTION_INFO_V1(tenant_router_dsn_redact);
PG_FUNCTION_INFO_V1(tenant_router_is_superuser);

/*
 * TopologyRequireUpdate raises the error of a feature that the catalog,
 * still at version 0.1, cannot hold yet.
 */
void
TopologyRequireUpdate(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the tenant_router catalog of this database is at version 0.1"),
			 errdetail("Pins, modulo shards and online operations need the catalog of this version."),
			 errhint("Run ALTER EXTENSION tenant_router UPDATE.")));
}

/*
 * TopologyCopyShardId copies a shard id given to a function into a buffer of
 * SHARD_ID_MAXLEN: a new one is validated, an existing one that cannot fit
 * does not exist.
 */
void
TopologyCopyShardId(char *dst, const char *shard_id, bool existing)
{
	if (!existing)
		ValidateShardId(shard_id);
	else if (strlen(shard_id) >= SHARD_ID_MAXLEN)
		TopologyUnknownShard(shard_id);
	strlcpy(dst, shard_id, SHARD_ID_MAXLEN);
}

/* ValidateShardId raises an error unless shard_id is usable as one. */
void
ValidateShardId(const char *shard_id)
{
	const unsigned char *p;
	size_t		len = strlen(shard_id);

	if (len == 0 || len >= SHARD_ID_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid shard_id \"%s\"", shard_id),
				 errdetail("A shard_id has 1 to %d characters.", SHARD_ID_MAXLEN - 1)));
	for (p = (const unsigned char *) shard_id; *p; p++)
		if (*p <= ' ' || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid shard_id \"%s\"", shard_id),
					 errdetail("A shard_id may not contain spaces or control characters.")));
}

static void
validate_range(int64 range_start, int64 range_end)
{
	if (range_start > range_end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("range_start " INT64_FORMAT " is greater than range_end " INT64_FORMAT,
						range_start, range_end),
				 errdetail("A shard owns the tenants range_start..range_end, both inclusive.")));
}

/*
 * TopologyRequireSuperuser refuses a caller that is not a superuser: the
 * functions that take a connection string need one, since a DSN is a
 * credential (as for CREATE SUBSCRIPTION).  They are not SECURITY DEFINER
 * and EXECUTE is not granted to anyone (superusers have it anyway): this
 * check is for a GRANT made by hand.
 */
void
TopologyRequireSuperuser(const char *function, const char *why)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only superusers may call %s()", function),
				 errdetail("%s", why),
				 errhint("Members of tenant_router_admin may change ranges, remove shards, clean up shards and add logical tables; adding or splitting a shard takes a superuser.")));
}

/* TopologySpiExec runs a catalog statement and checks its outcome */
void
TopologySpiExec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
				int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "tenant_router: unexpected result %d from \"%s\"", rc, sql);
}

/*
 * TopologyBumpVersion takes the topology lock and returns the new version;
 * SPI must be connected.
 */
int64
TopologyBumpVersion(void)
{
	bool		isnull;

	/* above every shard's version too: after a restore, version starts at 0 */
	TopologySpiExec("UPDATE tenant_router.topology SET version = GREATEST(version, "
					"(SELECT pg_catalog.max(version) FROM tenant_router.shard)) + 1, "
					"changed_at = now() RETURNING version", 0, NULL, NULL, NULL,
					SPI_OK_UPDATE_RETURNING);
	if (SPI_processed != 1)
		elog(ERROR, "tenant_router: the topology row is missing");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/* shard_row_from_spi returns row i of SPI's result, a full tenant_router.shard row */
static ShardRow *
shard_row_from_spi(uint64 i)
{
	HeapTuple	tuple = SPI_tuptable->vals[i];
	TupleDesc	tupdesc = SPI_tuptable->tupdesc;
	ShardRow   *row = palloc0(sizeof(ShardRow));
	bool		isnull;
	Datum		d;

	row->shard_id = TextDatumGetCString(SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "shard_id"), &isnull));
	d = SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "range_start"), &isnull);
	row->has_range = !isnull;
	row->range_start = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "range_end"), &isnull);
	row->range_end = isnull ? 0 : DatumGetInt64(d);
	row->dsn = TextDatumGetCString(SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "dsn"), &isnull));
	row->state = TextDatumGetCString(SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "state"), &isnull));
	row->version = DatumGetInt64(SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "version"), &isnull));
	row->modulus = 1;
	if (SPI_fnumber(tupdesc, "modulus") > 0)	/* not in a catalog still at 0.1 */
	{
		row->db_identity = SPI_getvalue(tuple, tupdesc, SPI_fnumber(tupdesc, "db_identity"));
		row->modulus = DatumGetInt32(SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "modulus"), &isnull));
		row->remainder = DatumGetInt32(SPI_getbinval(tuple, tupdesc, SPI_fnumber(tupdesc, "remainder"), &isnull));
	}
	return row;
}

/* shard_row_values fills the parameters of TopologyInsertShard and TopologyUpdateShard */
static void
shard_row_values(const ShardRow *shard, Datum *values, char *nulls)
{
	memset(nulls, ' ', 9);
	values[0] = CStringGetTextDatum(shard->shard_id);
	values[1] = Int64GetDatum(shard->range_start);
	values[2] = Int64GetDatum(shard->range_end);
	if (!shard->has_range)
		nulls[1] = nulls[2] = 'n';
	values[3] = CStringGetTextDatum(shard->dsn);
	values[4] = CStringGetTextDatum(shard->state ? shard->state : "active");
	values[5] = Int64GetDatum(shard->version);
	values[6] = shard->db_identity ? CStringGetTextDatum(shard->db_identity) : (nulls[6] = 'n', (Datum) 0);
	values[7] = Int32GetDatum(shard->modulus);
	values[8] = Int32GetDatum(shard->remainder);
}

/*
 * The query that tells whether a server runs the session {pid, database,
 * start}: pg_stat_get_activity of that pid alone, not pg_stat_activity,
 * which builds a row for every backend.
 */
#define SEES_SESSION "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity($1::pg_catalog.int4) a " \
	"JOIN pg_catalog.pg_database d ON d.oid = a.datid " \
	"WHERE d.datname = $2 AND d.datname = pg_catalog.current_database() " \
	"AND (a.backend_start IS NULL OR a.backend_start = $3::pg_catalog.timestamptz))"

/*
 * session_here tells whether this server runs the session, in this
 * database; a pid that is no backend here (the shard is elsewhere, the
 * common case) answers without a query.
 */
static bool
session_here(const char *const *session)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	MemoryContext cxt = CurrentMemoryContext;
	bool		isnull;
	bool		here;

	if (BackendPidGetProc(atoi(session[0])) == NULL)
		return false;
	for (int i = 0; i < 3; i++)
		values[i] = CStringGetTextDatum(session[i]);
	TopologySpiExec(SEES_SESSION, 3, types, values, NULL, SPI_OK_SELECT);
	here = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	MemoryContextSwitchTo(cxt);
	return here;
}

/*
 * sees_session tells whether shard other (at other_dsn) runs the session
 * {pid, database, start}: then both DSNs reach the same database.  An
 * unreachable shard sees nothing.
 */
static bool
sees_session(const char *other, const char *other_dsn, const char *const *session)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool seen = false;

	PG_TRY();
	{
		ShardConn  *osc = ShardConnGet(other, other_dsn);
		PGresult   *res = ShardConnExec(osc, SEES_SESSION, 3, NULL, session);

		seen = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
	}
	PG_END_TRY();
	return seen;
}

/*
 * TopologyLockShard returns the shard's row, locked for update, or NULL; the
 * row is the latest committed version.  SPI must be connected.
 */
ShardRow *
TopologyLockShard(const char *shard_id)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};
	MemoryContext cxt = CurrentMemoryContext;
	ShardRow   *row;

	TopologySpiExec("SELECT * FROM tenant_router.shard WHERE shard_id = $1 FOR UPDATE",
					1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return NULL;
	MemoryContextSwitchTo(cxt);
	row = shard_row_from_spi(0);
	return row;
}

/*
 * TopologyInsertShard and TopologyUpdateShard write a shard's catalog row:
 * the only statements that do.  SPI must be connected.
 */
void
TopologyInsertShard(const ShardRow *shard)
{
	Oid			types[9] = {TEXTOID, INT8OID, INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID,
	INT4OID, INT4OID};
	Datum		values[9];
	char		nulls[9];

	shard_row_values(shard, values, nulls);
	if (!CatalogHasOperations())
		TopologySpiExec("INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, "
						"state, version) VALUES ($1, $2, $3, $4, $5, $6)", 6, types, values, nulls,
						SPI_OK_INSERT);
	else
		TopologySpiExec("INSERT INTO tenant_router.shard (shard_id, range_start, range_end, dsn, "
						"state, version, db_identity, modulus, remainder) "
						"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", 9, types, values, nulls,
						SPI_OK_INSERT);
}

void
TopologyUpdateShard(const ShardRow *shard)
{
	Oid			types[9] = {TEXTOID, INT8OID, INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID,
	INT4OID, INT4OID};
	Datum		values[9];
	char		nulls[9];

	shard_row_values(shard, values, nulls);
	if (!CatalogHasOperations())
		TopologySpiExec("UPDATE tenant_router.shard SET range_start = $2, range_end = $3, dsn = $4, "
						"state = $5, version = $6, updated_at = now() WHERE shard_id = $1",
						6, types, values, nulls, SPI_OK_UPDATE);
	else
		TopologySpiExec("UPDATE tenant_router.shard SET range_start = $2, range_end = $3, dsn = $4, "
						"state = $5, version = $6, db_identity = $7, modulus = $8, remainder = $9, "
						"updated_at = now() WHERE shard_id = $1", 9, types, values, nulls, SPI_OK_UPDATE);
	if (SPI_processed != 1)
		TopologyUnknownShard(shard->shard_id);
}

/*
 * TopologySetShardState sets a shard's state (active, or what an online
 * operation is doing to it): bookkeeping of this coordinator, not a change
 * of the topology, so no version.  A shard that is gone is left alone.
 */
void
TopologySetShardState(const char *shard_id, const char *state)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(shard_id), CStringGetTextDatum(state)};

	TopologySpiExec("UPDATE tenant_router.shard SET state = $2 WHERE shard_id = $1 AND state <> $2",
					2, types, values, NULL, SPI_OK_UPDATE);
}

/* what a shard session said of itself: identity, pid, database, start */
typedef struct KnownSession
{
	char	   *dsn;
	int			pid;			/* ShardConnBackendPid: the same session */
	char	   *identity;
	const char *session[3];
} KnownSession;

static List *known_sessions = NIL;	/* in TopMemoryContext */

/*
 * TopologyCheckDsn connects to dsn as shard shard_id and refuses it if it
 * reaches the coordinator's own database, or the database of a shard (the
 * same shard too: a move to where it is); it returns the database's
 * identity (system identifier/name) to store in the shard's row.  Another
 * shard's database is recognized by its stored identity, then by asking
 * that shard whether it sees the session just opened: a copy of a server
 * has the same identity but not the same sessions.  SPI must be connected.
 */
char *
TopologyCheckDsn(const char *shard_id, const char *dsn)
{
	ShardConn  *sc;
	PGresult   *res;
	char	   *identity;
	const char *session[3];
	List	   *others;
	ListCell   *lc;

	/* a change of the order applied elsewhere first, which checked the DSN */
	if (TopologyShardWorkDone)
		return NULL;
	sc = ShardConnGet(shard_id, dsn);

	/* the session's identity, asked once per session (floods of events add many shards) */
	for (lc = list_head(known_sessions); lc != NULL; lc = lnext(known_sessions, lc))
	{
		KnownSession *known = lfirst(lc);

		if (strcmp(known->dsn, dsn) == 0 && known->pid == ShardConnBackendPid(sc))
			break;
	}
	if (lc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		KnownSession *known = palloc0(sizeof(KnownSession));

		res = ShardConnExec(sc, "SELECT s.system_identifier::pg_catalog.text OPERATOR(pg_catalog.||) '/' "
							"OPERATOR(pg_catalog.||) pg_catalog.current_database(), "
							"pg_catalog.pg_backend_pid()::pg_catalog.text, pg_catalog.current_database(), "
							"a.backend_start::pg_catalog.text "
							"FROM pg_catalog.pg_control_system() s, "
							"pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a", 0, NULL, NULL);
		known->dsn = pstrdup(dsn);
		known->pid = ShardConnBackendPid(sc);
		known->identity = pstrdup(PQgetvalue(res, 0, 0));
		for (int i = 0; i < 3; i++)
			known->session[i] = pstrdup(PQgetvalue(res, 0, i + 1));
		PQclear(res);
		/* one per DSN: the entry of an older session goes */
		foreach(lc, known_sessions)
			if (strcmp(((KnownSession *) lfirst(lc))->dsn, dsn) == 0)
				known_sessions = foreach_delete_current(known_sessions, lc);
		known_sessions = lappend(known_sessions, known);
		MemoryContextSwitchTo(old);
		lc = list_tail(known_sessions);
	}
	identity = ((KnownSession *) lfirst(lc))->identity;
	for (int i = 0; i < 3; i++)
		session[i] = ((KnownSession *) lfirst(lc))->session[i];

	/* this very server, in this database, runs that session */
	if (session_here(session))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the DSN of shard \"%s\" reaches the coordinator itself", shard_id),
				 errdetail("It connects to database \"%s\" of this server, which holds the logical tables.",
						   session[1]),
				 errhint("A shard is another database, on this server or another one.")));

	/* another shard's database: one with that identity, seeing that session */
	others = CatalogShardsWithIdentity(identity);
	foreach(lc, others)
	{
		char	   *other = ((ShardRow *) lfirst(lc))->shard_id;
		char	   *other_dsn = ((ShardRow *) lfirst(lc))->dsn;

		if (strcmp(other_dsn, dsn) != 0 && !sees_session(other, other_dsn, session))
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the DSN of shard \"%s\" reaches the database of shard \"%s\"", shard_id, other),
				 errdetail("Two shards in one database would overwrite each other's range constraints."),
				 errhint("Give each shard a database of its own (CREATE DATABASE on the shard's server).")));
	}
	return identity;
}

void
TopologyUnknownShard(const char *shard_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("shard \"%s\" does not exist", shard_id)));
}

/* gcd returns the greatest common divisor of two moduli */
static int32
gcd(int32 a, int32 b)
{
	while (b != 0)
	{
		int32		t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/*
 * TopologyCheckPlacement raises an error naming a shard, other than except
 * and also_except (NULL: none), that the range and remainder of shard would
 * overlap.  Ranges may not overlap, but
 * shards with the same range share it by modulo: tenant t goes to the shard
 * whose remainder is t mod its modulus, so their remainders must differ by
 * the gcd of their moduli (no tenant for two shards), and their moduli must
 * divide one another (one table routes by the largest).
 */
void
TopologyCheckPlacement(const ShardRow *shard, const char *except, const char *also_except)
{
	ListCell   *lc;

	if (!shard->has_range)
		return;
	foreach(lc, CatalogShardRanges(shard->range_start, shard->range_end))
	{
		ShardRow   *other = lfirst(lc);
		int32		g = gcd(shard->modulus, other->modulus);

		if ((except != NULL && strcmp(other->shard_id, except) == 0) ||
			(also_except != NULL && strcmp(other->shard_id, also_except) == 0))
			continue;
		if (other->range_start != shard->range_start || other->range_end != shard->range_end)
			ereport(ERROR,
					(errcode(ERRCODE_EXCLUSION_VIOLATION),
					 errmsg("range " INT64_FORMAT ".." INT64_FORMAT " overlaps shard \"%s\" (" INT64_FORMAT ".." INT64_FORMAT ")",
							shard->range_start, shard->range_end, other->shard_id,
							other->range_start, other->range_end),
					 errhint("Ranges may not overlap: shrink or remove shard \"%s\" first (shard_update_range, shard_remove).",
							 other->shard_id)));
		if (shard->remainder % g == other->remainder % g)
			ereport(ERROR,
					(errcode(ERRCODE_EXCLUSION_VIOLATION),
					 errmsg("range " INT64_FORMAT ".." INT64_FORMAT " with remainder %d of %d overlaps shard \"%s\" (remainder %d of %d)",
							shard->range_start, shard->range_end, shard->remainder, shard->modulus,
							other->shard_id, other->remainder, other->modulus),
					 errdetail("Shards share a range by the tenant's remainder: no tenant may have the remainders of two of them."),
					 errhint("Choose another remainder, or split shard \"%s\" with shard_split_modulo().",
							 other->shard_id)));
		if (shard->modulus % other->modulus != 0 && other->modulus % shard->modulus != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("modulus %d does not divide modulus %d of shard \"%s\", nor it", shard->modulus,
							other->modulus, other->shard_id),
					 errdetail("The moduli of shards sharing a range must divide one another (2, 4, 8, ...).")));
	}
}

/* validate_modulus raises an error unless modulus and remainder are usable */
static void
validate_modulus(bool has_range, int32 modulus, int32 remainder)
{
	if (modulus < 1 || modulus > SHARD_MODULUS_MAX || remainder < 0 || remainder >= modulus)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid modulus %d and remainder %d", modulus, remainder),
				 errdetail("The modulus is 1 to %d and the remainder 0 to modulus - 1.", SHARD_MODULUS_MAX)));
	if (!has_range && modulus != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a shard without a range cannot have a modulus"),
				 errdetail("A shard added with NULL range_start and range_end owns only the tenants pinned to it.")));
}

/*
 * TopologyShardPayload returns the payload of an event describing shard:
 * its id, range, modulus and remainder, and its DSN with with_dsn.
 */
char *
TopologyShardPayload(const ShardRow *shard, bool with_dsn)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"shard_id\": ");
	escape_json(&buf, shard->shard_id);
	if (shard->has_range)
		appendStringInfo(&buf, ", \"range_start\": " INT64_FORMAT ", \"range_end\": " INT64_FORMAT,
						 shard->range_start, shard->range_end);
	else
		appendStringInfoString(&buf, ", \"range_start\": null, \"range_end\": null");
	appendStringInfo(&buf, ", \"modulus\": %d, \"remainder\": %d", shard->modulus, shard->remainder);
	if (with_dsn)
	{
		appendStringInfoString(&buf, ", \"dsn\": ");
		escape_json(&buf, shard->dsn);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * TopologyAddShard adds a shard owning range_start..range_end (none if
 * !has_range: a pin-only shard) and the remainder of modulus, creates the
 * logical tables on it and returns the new topology version.
 */
int64
TopologyAddShard(const char *shard_id, bool has_range, int64 range_start, int64 range_end,
				 const char *dsn, int32 modulus, int32 remainder, TopologySource source)
{
	ShardRow	shard;

	ValidateShardId(shard_id);
	if (has_range)
		validate_range(range_start, range_end);
	validate_modulus(has_range, modulus, remainder);
	DsnValidate(dsn);
	if ((!has_range || modulus != 1) && !CatalogHasOperations())
		TopologyRequireUpdate();

	SPI_connect();
	memset(&shard, 0, sizeof(shard));
	shard.shard_id = (char *) shard_id;
	shard.has_range = has_range;
	shard.range_start = has_range ? range_start : 0;
	shard.range_end = has_range ? range_end : 0;
	shard.modulus = modulus;
	shard.remainder = remainder;
	shard.dsn = (char *) dsn;
	shard.version = TopologyBumpVersion();
	if (TopologyLockShard(shard_id) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("shard \"%s\" already exists", shard_id)));
	TopologyCheckPlacement(&shard, NULL, NULL);
	shard.db_identity = TopologyCheckDsn(shard_id, dsn);

	TopologyInsertShard(&shard);
	ShardSyncAllTables(&shard);
	if (source == TOPOLOGY_FROM_SQL)
		TopologyQueueAddShard(&shard);
	SPI_finish();
	return shard.version;
}

/* TopologyQueueAddShard queues the ADD_SHARD event of shard */
void
TopologyQueueAddShard(const ShardRow *shard)
{
	if (shard->has_range && shard->modulus == 1)
		OutboxAddShard(shard->shard_id, shard->range_start, shard->range_end, shard->dsn,
					   shard->version);
	else
		OutboxQueue("ADD_SHARD", TopologyShardPayload(shard, true), shard->version);
}

/*
 * TopologyRemoveShard takes a shard out of routing; its data stays where it
 * is, and the shard is not contacted (so a dead shard can be removed).
 */
int64
TopologyRemoveShard(const char *shard_id, TopologySource source)
{
	int64		version;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};
	List	   *pins;
	ListCell   *lc;

	SPI_connect();
	version = TopologyBumpVersion();
	if (TopologyLockShard(shard_id) == NULL)
		TopologyUnknownShard(shard_id);
	if (source == TOPOLOGY_FROM_SQL)
		OperationCheckIdle(shard_id);
	pins = CatalogPinsOf(shard_id);
	if (pins != NIL)
	{
		StringInfoData list;

		initStringInfo(&list);
		foreach(lc, pins)
			appendStringInfo(&list, "%s" INT64_FORMAT, list.len ? ", " : "", *(int64 *) lfirst(lc));
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("shard \"%s\" has pinned tenants: %s", shard_id, list.data),
				 errdetail("Removed, they would be owned by no shard or by one that does not have their rows."),
				 errhint("Unpin them (tenant_unpin) or pin them to another shard (tenant_pin) first.")));
	}
	TopologySpiExec("DELETE FROM tenant_router.shard WHERE shard_id = $1",
			 1, types, values, NULL, SPI_OK_DELETE);
	if (source == TOPOLOGY_FROM_SQL)
		OutboxRemoveShard(shard_id, version);
	SPI_finish();
	return version;
}

/*
 * TopologyUpdateRange changes a shard's range (and its modulus and
 * remainder, unless -1) and its tables' range constraint; rows outside the
 * new range on the shard make it fail.
 */
int64
TopologyUpdateRange(const char *shard_id, int64 range_start, int64 range_end,
					int32 modulus, int32 remainder, TopologySource source)
{
	int64		version;
	ShardRow   *shard;

	validate_range(range_start, range_end);

	SPI_connect();
	version = TopologyBumpVersion();
	shard = TopologyLockShard(shard_id);
	if (shard == NULL)
		TopologyUnknownShard(shard_id);
	if (source == TOPOLOGY_FROM_SQL)
		OperationCheckIdle(shard_id);
	shard->has_range = true;
	shard->range_start = range_start;
	shard->range_end = range_end;
	if (modulus >= 0)
		shard->modulus = modulus;
	if (remainder >= 0)
		shard->remainder = remainder;
	validate_modulus(true, shard->modulus, shard->remainder);
	TopologyCheckPlacement(shard, shard_id, NULL);

	shard->version = version;
	TopologyCleanupIfPending(shard_id);
	TopologyUpdateShard(shard);
	ShardSyncAllTables(shard);
	if (source == TOPOLOGY_FROM_SQL)
		TopologyQueueUpdateRange(shard);
	SPI_finish();
	return version;
}

/* TopologyQueueUpdateRange queues the UPDATE_SHARD_RANGE event of shard */
void
TopologyQueueUpdateRange(const ShardRow *shard)
{
	if (shard->modulus == 1)
		OutboxUpdateRange(shard->shard_id, shard->range_start, shard->range_end, shard->version);
	else
		OutboxQueue("UPDATE_SHARD_RANGE", TopologyShardPayload(shard, false), shard->version);
}

/*
 * TopologyStorePin pins tenant to shard_id, TopologyDeletePin unpins it,
 * TopologyRepointPins moves the pins of one shard to another: the only
 * statements that write tenant_router.pin.  SPI must be connected.
 */
void
TopologyStorePin(int64 tenant, const char *shard_id)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(tenant), CStringGetTextDatum(shard_id)};

	TopologySpiExec("INSERT INTO tenant_router.pin (tenant_id, shard_id) VALUES ($1, $2) "
					"ON CONFLICT (tenant_id) DO UPDATE SET shard_id = excluded.shard_id, pinned_at = now()",
					2, types, values, NULL, SPI_OK_INSERT);
}

void
TopologyDeletePin(int64 tenant)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(tenant)};

	TopologySpiExec("DELETE FROM tenant_router.pin WHERE tenant_id = $1",
					1, types, values, NULL, SPI_OK_DELETE);
}

void
TopologyRepointPins(const char *from_shard_id, const char *to_shard_id)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(from_shard_id), CStringGetTextDatum(to_shard_id)};

	TopologySpiExec("UPDATE tenant_router.pin SET shard_id = $2 WHERE shard_id = $1",
					2, types, values, NULL, SPI_OK_UPDATE);
}

/* TopologyQueueCleanup queues a shard that keeps rows it gave away */
void
TopologyQueueCleanup(const char *shard_id)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};

	TopologySpiExec("INSERT INTO tenant_router.pending_cleanup (shard_id) VALUES ($1) "
					"ON CONFLICT DO NOTHING", 1, types, values, NULL, SPI_OK_INSERT);
}

/*
 * TopologyCleanupIfPending runs the cleanup of shard_id first if it is
 * pending: a range constraint cannot be validated on a shard that still
 * keeps rows it gave away.  SPI must be connected.
 */
void
TopologyCleanupIfPending(const char *shard_id)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};
	static SPIPlanPtr plan = NULL;	/* every range change asks */

	/* a change of the order applied elsewhere first: the shards are done */
	if (TopologyShardWorkDone)
		return;

	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT 1 FROM tenant_router.pending_cleanup WHERE shard_id = $1",
						   1, types);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "tenant_router: could not plan the pending cleanups");
	}
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tenant_router: could not read the pending cleanups");
	if (SPI_processed > 0)
		(void) TopologyCleanupShard(shard_id);
}

/*
 * TopologyCleanupShard deletes the rows shard_id keeps that it does not own
 * (given away by an online operation) and validates its range constraints;
 * it returns the rows deleted.  The code of shard_cleanup(); the worker
 * runs it too.
 */
int64
TopologyCleanupShard(const char *shard_id)
{
	ShardRow   *shard;
	ShardConn  *sc;
	ListCell   *lc;
	int64		deleted = 0;
	bool		guards_dropped = true;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(shard_id)};

	SPI_connect();
	TopologySpiExec("SELECT 1 FROM tenant_router.shard WHERE shard_id = $1 FOR SHARE",
					1, types, values, NULL, SPI_OK_SELECT);
	shard = SPI_processed > 0 ? CatalogGetShard(shard_id) : NULL;
	if (shard == NULL)
		TopologyUnknownShard(shard_id);
	OperationCheckIdle(shard_id);

	sc = ShardConnGet(shard_id, shard->dsn);
	ShardConnBegin(sc, SHARD_WRITE);
	foreach(lc, CatalogLogicalTables())
	{
		LogicalTableRow *table = lfirst(lc);

		deleted += ShardDeleteNotOwned(sc, table, shard);
		ShardValidateOwnership(sc, table);
	}
	foreach(lc, CatalogLogicalTables())
		guards_dropped = ShardDropGuard(sc, lfirst(lc)) && guards_dropped;
	if (guards_dropped)
		TopologySpiExec("DELETE FROM tenant_router.pending_cleanup WHERE shard_id = $1",
						1, types, values, NULL, SPI_OK_DELETE);
	else
		ereport(NOTICE,
				(errmsg("the cleanup of shard \"%s\" stays pending: a session on the shard holds one of its tables",
						shard_id),
				 errdetail("Its moved rows are deleted; the trigger that guarded them could not be dropped within %d ms.",
						   GUARD_DROP_LOCK_MS),
				 errhint("It is tried again by the next tenant_router.shard_cleanup() (the worker's, with tenant_router.auto_cleanup).")));
	SPI_finish();
	return deleted;
}

Datum
tenant_router_shard_cleanup(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(TopologyCleanupShard(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/*
 * shard_add(shard_id, range_start, range_end, dsn, modulus, remainder) is
 * not strict: NULL range_start and range_end make a pin-only shard, any
 * other NULL is an error.
 */
Datum
tenant_router_shard_add(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"shard_id", NULL, NULL, "dsn", "modulus", "remainder"};

	TopologyRequireSuperuser("shard_add",
							 "Every backend reaches the shard with its connection string, which may connect as a superuser of the shard.");
	for (int i = 0; i < PG_NARGS(); i++)
		if (names[i] != NULL && PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s of shard_add() must not be null", names[i])));
	if (PG_ARGISNULL(1) != PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("range_start and range_end of shard_add() must be both null or both not null"),
				 errhint("NULL for both adds a shard that owns only the tenants pinned to it (tenant_pin).")));
	OrderedAddShard(text_to_cstring(PG_GETARG_TEXT_PP(0)), !PG_ARGISNULL(1),
					PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1),
					PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2),
					text_to_cstring(PG_GETARG_TEXT_PP(3)),
					PG_NARGS() > 4 ? PG_GETARG_INT32(4) : 1,
					PG_NARGS() > 5 ? PG_GETARG_INT32(5) : 0);
	PG_RETURN_VOID();
}

Datum
tenant_router_shard_remove(PG_FUNCTION_ARGS)
{
	OrderedRemoveShard(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

Datum
tenant_router_shard_update_range(PG_FUNCTION_ARGS)
{
	OrderedUpdateRange(text_to_cstring(PG_GETARG_TEXT_PP(0)),
					   PG_GETARG_INT64(1), PG_GETARG_INT64(2), -1, -1);
	PG_RETURN_VOID();
}

/* shard_for(tenant) returns the shard that owns the tenant now, or NULL. */
Datum
tenant_router_shard_for(PG_FUNCTION_ARGS)
{
	ShardRoute *route = RouteTenant(PG_GETARG_INT64(0));

	if (route == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(route->shard_id));
}

Datum
tenant_router_dsn_redact(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(DsnRedact(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

Datum
tenant_router_is_superuser(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(superuser());
}
