/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  The topology of this coordinator's catalog as one JSON document (what
 *	  the snapshot on Redis holds), and the catalog made to match such a
 *	  document.
 *
 * The topology is the rows of the catalog tables that every coordinator
 * holds alike once it has applied the same changes: the shards, the pinned
 * tenants (when the catalog has them) and the progress of each origin,
 * without what each coordinator keeps for itself (a shard's version, its
 * state during an operation here, times).  Arrays are sorted by key in
 * byte order, and jsonb writes an object's keys in one order, so that two
 * coordinators with the same topology write the same text and the same
 * digest.  The document names its columns, so it survives a column added
 * to a table: rows are read with to_jsonb() and written back with
 * jsonb_populate_recordset().
 *
 * Adopting a snapshot makes the catalog hold exactly its rows: the rows
 * that differ go, the missing ones come, in one transaction under the
 * topology lock, with the snapshot's epoch and position.  The shards are
 * not touched: they are the same for every coordinator, and were changed
 * by the coordinators that applied the changes the snapshot holds.  The
 * catalog triggers invalidate every backend's routing cache and NOTIFY the
 * changed shards as usual.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "tenant_router/snapshot.h"
#include "tenant_router/topology.h"
#include "tenant_router/topology_log.h"
#include "tenant_router/worker.h"

/*
 * The catalog tables of the topology, in the order rows are added (removed
 * in the reverse order): the key that sorts them, the columns each
 * coordinator keeps for itself, and what a row added gets in one of them
 * that has no default.
 */
static const struct
{
	const char *table;
	const char *key;
	const char *local;			/* a text[] literal */
	const char *local_set;		/* column = value ($2: the topology version), or NULL */
}			topology_tables[] =
{
	{"shard", "shard_id COLLATE \"C\"", "{version,state,created_at,updated_at,db_identity}", "version"},
	{"pin", "tenant_id", "{pinned_at}", NULL},
	{"origin_progress", "origin COLLATE \"C\"", "{}", NULL},
};

static bool
table_exists(const char *table)
{
	return OidIsValid(get_relname_relid(table, get_namespace_oid("tenant_router", false)));
}

/* topology_sql returns the expression of the topology as jsonb */
static char *
topology_sql(void)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "pg_catalog.jsonb_build_object(");
	for (int i = 0; i < lengthof(topology_tables); i++)
	{
		if (!table_exists(topology_tables[i].table))
			continue;
		appendStringInfo(&sql, "%s'%s', (SELECT COALESCE(pg_catalog.jsonb_agg("
						 "pg_catalog.to_jsonb(x) OPERATOR(pg_catalog.-) '%s'::text[] ORDER BY x.%s), "
						 "'[]'::jsonb) FROM tenant_router.%s x)",
						 sql.data[sql.len - 1] == '(' ? "" : ", ",
						 topology_tables[i].table, topology_tables[i].local,
						 topology_tables[i].key, topology_tables[i].table);
	}
	appendStringInfoChar(&sql, ')');
	return sql.data;
}

/*
 * SnapshotLocal returns the catalog's epoch and position, and its topology
 * with its digest if asked, as of one moment.
 */
LocalTopology *
SnapshotLocal(bool with_topology)
{
	MemoryContext cxt = CurrentMemoryContext;
	LocalTopology *local = palloc0(sizeof(LocalTopology));
	char	   *sql;
	HeapTuple	tuple;
	TupleDesc	tupdesc;

	WorkerStartTransaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (with_topology)
		sql = psprintf("SELECT w.epoch, w.stream_id, t.j::text, pg_catalog.md5(t.j::text) "
					   "FROM tenant_router.worker_state w, (SELECT %s AS j) t", topology_sql());
	else
		sql = "SELECT epoch, stream_id FROM tenant_router.worker_state";
	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tenant_router: could not read the topology");
	tuple = SPI_tuptable->vals[0];
	tupdesc = SPI_tuptable->tupdesc;
	MemoryContextSwitchTo(cxt);
	local->epoch = SPI_getvalue(tuple, tupdesc, 1);
	local->position = SPI_getvalue(tuple, tupdesc, 2);
	if (with_topology)
	{
		local->topology = SPI_getvalue(tuple, tupdesc, 3);
		local->digest = SPI_getvalue(tuple, tupdesc, 4);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return local;
}

static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) != expected)
		elog(ERROR, "tenant_router: could not run \"%s\"", sql);
}

/* set_position records the catalog's epoch and position; SPI connected */
static void
set_position(const char *epoch, const char *position)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3] = {CStringGetTextDatum(epoch), CStringGetTextDatum(position),
	CStringGetTextDatum(TopologyLogStreamKey())};

	spi_exec("UPDATE tenant_router.worker_state SET epoch = $1, stream_id = $2, stream_key = $3",
			 3, types, values, SPI_OK_UPDATE);
}

/* columns returns the table's columns but the local ones, quoted, r. before each if prefixed */
static char *
columns(const char *table, const char *local, bool prefixed)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(table), CStringGetTextDatum(local)};
	MemoryContext cxt = CurrentMemoryContext;
	char	   *list;

	spi_exec(prefixed ?
			 "SELECT pg_catalog.string_agg('r.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(attname), ', ' ORDER BY attnum) "
			 "FROM pg_catalog.pg_attribute WHERE attrelid = ('tenant_router.' OPERATOR(pg_catalog.||) $1)::regclass "
			 "AND attnum > 0 AND NOT attisdropped AND attname <> ALL ($2::text[])" :
			 "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(attname), ', ' ORDER BY attnum) "
			 "FROM pg_catalog.pg_attribute WHERE attrelid = ('tenant_router.' OPERATOR(pg_catalog.||) $1)::regclass "
			 "AND attnum > 0 AND NOT attisdropped AND attname <> ALL ($2::text[])",
			 2, types, values, SPI_OK_SELECT);
	list = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	MemoryContextSwitchTo(cxt);
	return pstrdup(list);
}

/*
 * SnapshotAdopt makes the catalog hold the topology of a snapshot, at its
 * epoch and position, in one transaction; it returns how many rows it
 * removed and added.
 */
AdoptCounts
SnapshotAdopt(const char *epoch, const char *position, const char *topology)
{
	MemoryContext cxt = CurrentMemoryContext;
	AdoptCounts counts = {0, 0};
	Datum		snapshot;
	int64		version;
	int			n = lengthof(topology_tables);

	WorkerStartTransaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	snapshot = DirectFunctionCall1(jsonb_in, CStringGetDatum(topology));
	spi_exec("SELECT version FROM tenant_router.topology FOR UPDATE", 0, NULL, NULL, SPI_OK_SELECT);

	/* the rows that differ go, dependent tables first */
	for (int i = n - 1; i >= 0; i--)
	{
		Oid			types[2] = {JSONBOID, TEXTOID};
		Datum		values[2];

		if (!table_exists(topology_tables[i].table))
			continue;
		values[0] = snapshot;
		values[1] = CStringGetTextDatum(topology_tables[i].local);
		spi_exec(psprintf("DELETE FROM tenant_router.%s t WHERE NOT EXISTS ("
						  "SELECT 1 FROM pg_catalog.jsonb_array_elements(COALESCE("
						  "$1 OPERATOR(pg_catalog.->) '%s', '[]')) x "
						  "WHERE x.value OPERATOR(pg_catalog.=) (pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.-) $2::text[]))",
						  topology_tables[i].table, topology_tables[i].table),
				 2, types, values, SPI_OK_DELETE);
		counts.removed += SPI_processed;
	}

	version = TopologyBumpVersion();

	/* the missing rows come */
	for (int i = 0; i < n; i++)
	{
		Oid			types[3] = {JSONBOID, INT8OID, TEXTOID};
		Datum		values[3];
		const char *extra = topology_tables[i].local_set;

		if (!table_exists(topology_tables[i].table))
			continue;
		values[0] = snapshot;
		values[1] = Int64GetDatum(version);
		values[2] = CStringGetTextDatum(topology_tables[i].local);
		spi_exec(psprintf("INSERT INTO tenant_router.%s (%s%s%s) SELECT %s%s FROM "
						  "pg_catalog.jsonb_populate_recordset(NULL::tenant_router.%s, COALESCE("
						  "$1 OPERATOR(pg_catalog.->) '%s', '[]')) r "
						  "WHERE NOT EXISTS (SELECT 1 FROM tenant_router.%s t "
						  "WHERE (pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.-) $3::text[]) OPERATOR(pg_catalog.=) "
						  "(pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.-) $3::text[]))",
						  topology_tables[i].table,
						  columns(topology_tables[i].table, topology_tables[i].local, false),
						  extra ? ", " : "", extra ? extra : "",
						  columns(topology_tables[i].table, topology_tables[i].local, true),
						  extra ? ", $2" : "",
						  topology_tables[i].table, topology_tables[i].table,
						  topology_tables[i].table),
				 3, types, values, SPI_OK_INSERT);
		counts.added += SPI_processed;
	}

	set_position(epoch, position);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return counts;
}

/* SnapshotJoin records that the catalog is at position of the log of epoch */
void
SnapshotJoin(const char *epoch, const char *position)
{
	MemoryContext cxt = CurrentMemoryContext;

	WorkerStartTransaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	spi_exec("SELECT version FROM tenant_router.topology FOR UPDATE", 0, NULL, NULL, SPI_OK_SELECT);
	set_position(epoch, position);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}
