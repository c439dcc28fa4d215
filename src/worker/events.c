/*-------------------------------------------------------------------------
 *
 * events.c
 *	  Applies one topology event received from Redis, and records it.
 *
 * An event is a JSON object in seed 000's format:
 *	 {"op": "ADD_SHARD", "payload": {"shard_id": ..., "range_start": ...,
 *	  "range_end": ..., "dsn": ...}}, REMOVE_SHARD (shard_id) or
 *	 UPDATE_SHARD_RANGE (shard_id, range_start, range_end);
 * extra fields are allowed, and "origin" and "version" (added by the
 * coordinators that publish) make an event from this coordinator an echo to
 * ignore, and one from another coordinator with a version not above the last
 * applied from it stale.  It is parsed by PostgreSQL's jsonb input and
 * applied by the same code as the SQL functions, in a subtransaction: a
 * rejected event changes nothing.  Every event is recorded in
 * tenant_router.event_log, with its DSN redacted; the log keeps the last
 * tenant_router.event_log_size events.  A stream entry's id is stored in
 * the same transaction as its effect, so a restart neither skips nor
 * repeats it.  An event whose transaction fails after the subtransaction
 * (a shard's COMMIT, a constraint checked at commit) is rolled back and
 * recorded as rejected in a transaction of its own, its stream entry
 * passed: the worker goes on instead of replaying it forever.
 *
 * What the parse finds, and the reasons, live in a memory context of the
 * event's own, not in SPI's, which SPI_finish frees: they are logged after.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"

#include "tenant_router/dsn.h"
#include "tenant_router/events.h"
#include "tenant_router/guc.h"
#include "tenant_router/outbox.h"
#include "tenant_router/redis.h"
#include "tenant_router/topology.h"

/* events larger than this are rejected unread */
#define MAX_EVENT_BYTES 65536
/* what of an event the log keeps */
#define LOGGED_EVENT_BYTES 2000

/* what the parse of an event found, for the log */
typedef struct EventInfo
{
	char	   *op;
	char	   *shard_id;
	char	   *origin;
	int64		version;
	bool		has_version;
	char	   *redacted;		/* the event as logged */
	MemoryContext cxt;			/* where all of the above live */
} EventInfo;

static void
reject(const char *fmt, const char *arg)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg_internal(fmt, arg)));
}

/* field returns a payload's field, or NULL if absent or JSON null */
static JsonbValue *
field(JsonbContainer *object, const char *key)
{
	JsonbValue *value = getKeyJsonValueFromContainer(object, key, strlen(key), NULL);

	if (value != NULL && value->type == jbvNull)
		return NULL;
	return value;
}

static char *
string_field(JsonbContainer *object, const char *key)
{
	JsonbValue *value = field(object, key);

	if (value == NULL)
		reject("field \"%s\" is missing or null", key);
	if (value->type != jbvString)
		reject("field \"%s\" must be a string", key);
	return pnstrdup(value->val.string.val, value->val.string.len);
}

static int64
integer_field(JsonbContainer *object, const char *key)
{
	JsonbValue *value = field(object, key);
	Numeric		num;
	Datum		truncated;

	if (value == NULL)
		reject("field \"%s\" is missing or null", key);
	if (value->type != jbvNumeric)
		reject("field \"%s\" must be an integer", key);
	num = value->val.numeric;
	truncated = DirectFunctionCall2(numeric_trunc, NumericGetDatum(num), Int32GetDatum(0));
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(num), truncated)) ||
		numeric_is_nan(num) || numeric_is_inf(num))
		reject("field \"%s\" must be an integer", key);
	if (DatumGetBool(DirectFunctionCall2(numeric_gt, NumericGetDatum(num),
										 DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MAX)))) ||
		DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(num),
										 DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MIN)))))
		reject("field \"%s\" is out of range for bigint", key);
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num)));
}

/*
 * redact returns the event text with its payload's DSN redacted, in the
 * current memory context (not SPI's)
 */
static char *
redact(Jsonb *event, JsonbContainer *payload)
{
	MemoryContext cxt = CurrentMemoryContext;
	JsonbValue *dsn = payload ? field(payload, "dsn") : NULL;
	char	   *event_text = JsonbToCString(NULL, &event->root, VARSIZE(event));
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (dsn == NULL || dsn->type != jbvString)
		return event_text;
	values[0] = CStringGetTextDatum(event_text);
	values[1] = CStringGetTextDatum(DsnRedact(pnstrdup(dsn->val.string.val, dsn->val.string.len)));
	if (SPI_execute_with_args("SELECT pg_catalog.jsonb_set($1::pg_catalog.jsonb, '{payload,dsn}', "
							  "pg_catalog.to_jsonb($2::text))::text",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tenant_router: could not redact an event");
	MemoryContextSwitchTo(cxt);
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * parse_and_apply parses an event and applies it; it raises an error for an
 * event to reject and returns a reason for one to ignore, or NULL.  It runs
 * in info->cxt, and returns to it after each SPI call (which leaves SPI's
 * memory current).
 */
static const char *
parse_and_apply(const char *text, EventInfo *info)
{
	Jsonb	   *event;
	JsonbValue *v;
	JsonbContainer *payload = NULL;
	char	   *me;

	if (text == NULL)
		reject("%s", "the stream entry has no \"event\" field");
	if (strlen(text) > MAX_EVENT_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event of %zu bytes exceeds the limit of %d bytes", strlen(text),
						MAX_EVENT_BYTES)));
	event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	if (!JB_ROOT_IS_OBJECT(event) || JB_ROOT_IS_SCALAR(event))
		reject("%s", "the event is not a JSON object");

	v = field(&event->root, "payload");
	if (v != NULL && v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
		payload = v->val.binary.data;
	info->redacted = redact(event, payload);

	v = field(&event->root, "origin");
	if (v != NULL)
	{
		if (v->type != jbvString)
			reject("field \"%s\" must be a string", "origin");
		info->origin = pnstrdup(v->val.string.val, v->val.string.len);
	}
	if (field(&event->root, "version") != NULL)
	{
		info->version = integer_field(&event->root, "version");
		info->has_version = true;
	}
	info->op = string_field(&event->root, "op");
	if (payload == NULL)
		reject("%s", "field \"payload\" must be a JSON object");
	if (field(payload, "shard_id") != NULL && field(payload, "shard_id")->type == jbvString)
		info->shard_id = string_field(payload, "shard_id");

	/* this coordinator's own event, come back */
	me = OriginName();
	if (info->origin != NULL && strcmp(info->origin, me) == 0)
		return "published by this coordinator";

	/* an event from another coordinator not newer than the last applied */
	if (info->origin != NULL && info->has_version)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(info->origin)};
		bool		isnull;

		if (SPI_execute_with_args("SELECT version FROM tenant_router.origin_progress "
								  "WHERE origin = $1", 1, types, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "tenant_router: could not read origin_progress");
		MemoryContextSwitchTo(info->cxt);
		if (SPI_processed > 0)
		{
			int64		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull));

			if (info->version <= last)
				return psprintf("stale: version " INT64_FORMAT " of origin \"%s\" is not above " INT64_FORMAT,
								info->version, info->origin, last);
		}
	}

	if (strcmp(info->op, "ADD_SHARD") == 0)
	{
		/* null ranges: a pin-only shard */
		bool		ranged = field(payload, "range_start") || field(payload, "range_end");

		TopologyAddShard(string_field(payload, "shard_id"), ranged,
						 ranged ? integer_field(payload, "range_start") : 0,
						 ranged ? integer_field(payload, "range_end") : 0,
						 string_field(payload, "dsn"),
						 field(payload, "modulus") ? integer_field(payload, "modulus") : 1,
						 field(payload, "remainder") ? integer_field(payload, "remainder") : 0,
						 TOPOLOGY_FROM_EVENT);
	}
	else if (strcmp(info->op, "REMOVE_SHARD") == 0)
		TopologyRemoveShard(string_field(payload, "shard_id"), TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "UPDATE_SHARD_RANGE") == 0)
		TopologyUpdateRange(string_field(payload, "shard_id"),
							integer_field(payload, "range_start"),
							integer_field(payload, "range_end"),
							field(payload, "modulus") ? integer_field(payload, "modulus") : -1,
							field(payload, "remainder") ? integer_field(payload, "remainder") : -1,
							TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "PIN_TENANT") == 0)
		TopologyPinTenant(integer_field(payload, "tenant_id"), string_field(payload, "shard_id"),
						  TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "UNPIN_TENANT") == 0)
		TopologyUnpinTenant(integer_field(payload, "tenant_id"), TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "UPDATE_SHARD_DSN") == 0)
		TopologyMoveShard(string_field(payload, "shard_id"), string_field(payload, "dsn"),
						  TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "MERGE_SHARD") == 0)
		TopologyMergeShard(string_field(payload, "shard_id"), string_field(payload, "into_shard_id"),
						   TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "SHARD_SPLIT_COMPLETED") == 0 ||
			 strcmp(info->op, "SHARD_MOVE_COMPLETED") == 0 ||
			 strcmp(info->op, "SHARD_MERGE_COMPLETED") == 0)
		return "the notification of a completed operation: recorded only";
	else
		reject("unknown op \"%s\"", info->op);

	if (info->origin != NULL && info->has_version)
	{
		Oid			types[2] = {TEXTOID, INT8OID};
		Datum		values[2] = {CStringGetTextDatum(info->origin), Int64GetDatum(info->version)};

		if (SPI_execute_with_args("INSERT INTO tenant_router.origin_progress (origin, version) "
								  "VALUES ($1, $2) ON CONFLICT (origin) DO UPDATE "
								  "SET version = excluded.version", 2, types, values, NULL,
								  false, 0) != SPI_OK_INSERT)
			elog(ERROR, "tenant_router: could not record origin_progress");
		MemoryContextSwitchTo(info->cxt);
	}
	return NULL;
}

static void
record(EventSource source, const char *stream_id, EventInfo *info, const char *status,
	   const char *reason, const char *text)
{
	Oid			types[9] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	const char *logged = info->redacted;
	char	   *sql;

	/* an event that could not be parsed is logged only by its size */
	if (logged == NULL)
		logged = psprintf("(%zu bytes, not logged)", text ? strlen(text) : 0);
	else if (strlen(logged) > LOGGED_EVENT_BYTES)
		logged = psprintf("%.*s...", LOGGED_EVENT_BYTES, logged);

	values[0] = CStringGetTextDatum(source == EVENT_FROM_STREAM ? "stream" : "channel");
	values[1] = info->op ? CStringGetTextDatum(info->op) : (nulls[1] = 'n', (Datum) 0);
	values[2] = info->shard_id ? CStringGetTextDatum(info->shard_id) : (nulls[2] = 'n', (Datum) 0);
	values[3] = info->origin ? CStringGetTextDatum(info->origin) : (nulls[3] = 'n', (Datum) 0);
	values[4] = info->has_version ? Int64GetDatum(info->version) : (nulls[4] = 'n', (Datum) 0);
	values[5] = CStringGetTextDatum(status);
	values[6] = reason ? CStringGetTextDatum(reason) : (nulls[6] = 'n', (Datum) 0);
	values[7] = CStringGetTextDatum(logged);
	values[8] = Int32GetDatum(TenantRouterEventLogSize);

	if (SPI_execute_with_args("INSERT INTO tenant_router.event_log "
							  "(source, op, shard_id, origin, version, status, reason, event) "
							  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
							  8, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "tenant_router: could not log a topology event");
	if (SPI_execute_with_args("DELETE FROM tenant_router.event_log "
							  "WHERE id <= (SELECT max(id) FROM tenant_router.event_log) - $1",
							  1, types + 8, values + 8, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "tenant_router: could not trim the event log");

	sql = psprintf("UPDATE tenant_router.worker_state SET %s = %s + 1, last_event_at = now()%s",
				   status, status, stream_id ? ", stream_id = $1, stream_key = $2" : "");
	if (stream_id)
	{
		Oid			st[2] = {TEXTOID, TEXTOID};
		Datum		sv[2] = {CStringGetTextDatum(stream_id), CStringGetTextDatum(RedisStreamKey())};

		if (SPI_execute_with_args(sql, 2, st, sv, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "tenant_router: could not update worker_state");
	}
	else if (SPI_execute(sql, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "tenant_router: could not update worker_state");
}

/*
 * apply_and_record applies and records one event in its own transaction and
 * returns its status.  The event's own errors are caught in a
 * subtransaction; an error it raises comes from the transaction itself
 * (its commit, with *committing set, or the record).
 */
static const char *
apply_and_record(const char *text, EventSource source, const char *stream_id,
				 EventInfo *info, const char **reason, volatile bool *committing)
{
	ResourceOwner owner;
	const char *status;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(info->cxt);
	PG_TRY();
	{
		*reason = parse_and_apply(text, info);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(info->cxt);
		CurrentResourceOwner = owner;
		status = *reason ? "ignored" : "applied";
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(info->cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(info->cxt);
		CurrentResourceOwner = owner;
		/* the primary message only: a parse error's detail quotes the input */
		*reason = edata->message;
		status = "rejected";
	}
	PG_END_TRY();

	record(source, stream_id, info, status, *reason, text);
	SPI_finish();
	PopActiveSnapshot();
	*committing = true;
	CommitTransactionCommand();
	*committing = false;
	MemoryContextSwitchTo(info->cxt);
	return status;
}

/* record_rejected records a rejected event in a transaction of its own */
static void
record_rejected(const char *text, EventSource source, const char *stream_id,
				EventInfo *info, const char *reason)
{
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	record(source, stream_id, info, "rejected", reason, text);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(info->cxt);
}

/*
 * ApplyTopologyEvent applies and records one event in its own transaction;
 * it never raises an error for a bad event, nor for one whose transaction
 * fails to commit (that one is rolled back and recorded as rejected, its
 * stream entry passed).  It returns the status.
 */
EventStatus
ApplyTopologyEvent(const char *text, EventSource source, const char *stream_id)
{
	MemoryContext caller = CurrentMemoryContext;
	EventInfo  *info;
	const char *reason = NULL;
	const char *status;
	volatile bool committing = false;
	EventStatus result;

	info = MemoryContextAllocZero(caller, sizeof(EventInfo));
	info->cxt = AllocSetContextCreate(caller, "tenant_router event", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(info->cxt);
	PG_TRY();
	{
		status = apply_and_record(text, source, stream_id, info, &reason, &committing);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(info->cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(info->cxt);
		reason = committing ? psprintf("commit failed: %s", edata->message) : edata->message;
		status = "rejected";
		record_rejected(text, source, stream_id, info, reason);
	}
	PG_END_TRY();

	result = strcmp(status, "applied") == 0 ? EVENT_APPLIED :
		strcmp(status, "ignored") == 0 ? EVENT_IGNORED : EVENT_REJECTED;
	ereport(result == EVENT_REJECTED ? LOG : DEBUG1,
			(errmsg("tenant_router: %s topology event %s%s%s%s%s",
					status, info->op ? info->op : "(no op)",
					info->shard_id ? " for shard " : "", info->shard_id ? info->shard_id : "",
					reason ? ": " : "", reason ? reason : "")));
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(info->cxt);
	pfree(info);
	return result;
}
