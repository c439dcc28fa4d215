/*-------------------------------------------------------------------------
 *
 * events.c
 *	  Applies the topology events received from Redis, and records them.
 *
 * An event is a JSON object in seed 000's format:
 *	 {"op": "ADD_SHARD", "payload": {"shard_id": ..., "range_start": ...,
 *	  "range_end": ..., "dsn": ...}}, REMOVE_SHARD (shard_id) or
 *	 UPDATE_SHARD_RANGE (shard_id, range_start, range_end);
 * SHARD_SPLIT_COMPLETED, SHARD_MOVE_COMPLETED and SHARD_MERGE_COMPLETED
 * (seed 001's notification of a completed operation) are recorded and
 * ignored, with the reason "notification";
 * extra fields are allowed, and "origin" and "version" (added by the
 * coordinators that publish) make an event with a version not above the
 * last applied from its origin stale.  It is parsed by PostgreSQL's jsonb
 * input and applied by the same code as the SQL functions, in a
 * subtransaction: a rejected event changes nothing.
 *
 * Events come from the log, in its order (worker/order.c), and every
 * coordinator decides each the same way: the same catalog, the same
 * validation.  A batch first takes the topology lock and reads the
 * catalog's position: the entries up to it are passed over, applied
 * already by the admin function that put them in the order here
 * (commands/ordered_change.c).  An event this coordinator published from
 * its outbox (a change in force here since its transaction committed,
 * made while the coordinator was declared the only one or Redis was
 * unreachable) is not applied again where the log puts it: that would undo
 * the changes made here after it (shard_add then shard_remove would bring
 * the shard back until the removal's entry is read).  It is recorded as
 * applied, its outcome too, so the other coordinators make its catalog
 * change only (the shard work was done here); they wait for that outcome
 * as for an event ordered from the channel (ORDERER_WAIT_MS).
 *
 * Events are applied in order, several in one transaction (group commit:
 * one WAL flush for up to EVENT_BATCH events or EVENT_BATCH_MS), each in a
 * subtransaction of its own with a fresh snapshot, so that each sees the
 * ones before it and a rejected one does not touch the others.  An applied
 * event that may have changed a shard's tables (ADD_SHARD or
 * UPDATE_SHARD_RANGE while there are logical tables) ends its batch, so
 * that a transaction of the worker never commits on more than one shard.
 * The batch's stream position and counters are stored in the same
 * transaction as its effects, so a restart neither skips nor repeats an
 * entry.  When a batch's transaction fails (a shard's COMMIT, a constraint
 * checked at commit), it is rolled back and its events are applied again,
 * one per transaction; an event whose own transaction fails is recorded as
 * rejected in a transaction of its own, its stream entry passed: the worker
 * goes on instead of replaying it forever.
 *
 * Every event is recorded in tenant_router.event_log with the time the
 * worker read it, twice redacted: its DSN's password for superusers, and
 * every string but those that name the change for everyone else (the view
 * tenant_router.events shows each the right one); the log keeps the last
 * tenant_router.event_log_size events, trimmed once per batch.  The
 * statements run for every event are prepared once per worker.  Outcomes
 * go to the server log once their transaction has committed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonfuncs.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tenant_router/catalog.h"
#include "tenant_router/dsn.h"
#include "tenant_router/events.h"
#include "tenant_router/guc.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/outbox.h"
#include "tenant_router/topology_log.h"
#include "tenant_router/topology.h"
#include "tenant_router/worker.h"

/* events larger than this are rejected unread */
#define MAX_EVENT_BYTES 65536
/* what of an event the log keeps */
#define LOGGED_EVENT_BYTES 2000
/* a batch's transaction takes at most this many events, or this long */
#define EVENT_BATCH 100
#define EVENT_BATCH_MS 50

/*
 * How an entry is applied: decided here (its first application, or this
 * coordinator's own change that its caller's transaction did not keep), or
 * as it came out where it was first applied -- applied: its catalog change
 * only, the shard work being done; rejected or ignored: only recorded.
 */
typedef enum ApplyMode
{
	APPLY_DECIDE,
	APPLY_FOLLOW,
	APPLY_RECORD_ONLY,
	APPLY_OWN					/* this coordinator's outbox: in force here already */
} ApplyMode;

/*
 * How long an entry decided here is tried again, every TRANSIENT_POLL_MS,
 * when it failed for a reason that may pass (see transient()), before it
 * is recorded as rejected.
 */
#define TRANSIENT_RETRY_MS 3000
#define TRANSIENT_POLL_MS 100

/* how long an entry ordered elsewhere from the channel waits for its outcome */
#define ORDERER_WAIT_MS 50
#define ORDERER_POLL_MS 2
/*
 * and a change another coordinator ordered from SQL: its outcome comes once
 * that coordinator's transaction has committed (commands/ordered_change.c)
 */
#define ORDERED_CHANGE_WAIT_MS 2000

/* the longest reason an outcome keeps */
#define OUTCOME_REASON_BYTES 1000

/* what the parse of an event found, for the log */
typedef struct EventInfo
{
	char	   *op;
	char	   *shard_id;
	char	   *origin;
	int64		version;
	bool		has_version;
	char	   *redacted;		/* the event as superusers see it */
	char	   *redacted_public;	/* and as everyone else does */
	List	   *inexact;		/* fields whose number has a fraction or exponent */
} EventInfo;

/*
 * An object or array open while the raw text of an event is checked
 * (check_syntax): where it is ("" for the event, "payload", ...), and for an
 * object the fields seen so far and the one whose value comes next.
 */
typedef struct SyntaxFrame
{
	bool		is_object;
	char	   *path;
	List	   *fields;
	char	   *field;
} SyntaxFrame;

typedef struct SyntaxCheck
{
	List	   *frames;			/* innermost first */
	EventInfo  *info;
} SyntaxCheck;

/* what became of an event, for the server log */
typedef struct EventOutcome
{
	char	   *op;
	char	   *shard_id;
	const char *status;
	char	   *reason;
} EventOutcome;

/* what a batch adds to tenant_router.worker_state */
typedef struct BatchTotals
{
	int64		applied;
	int64		rejected;
	int64		ignored;
	const char *stream_id;		/* the last stream entry, or NULL */
	TimestampTz last_event_at;
	int64		last_log_id;	/* the last event_log row */
} BatchTotals;

/* the statements run for every event or batch, prepared once */
static SPIPlanPtr insert_log_plan = NULL;
static SPIPlanPtr trim_log_plan = NULL;
static SPIPlanPtr worker_state_plan = NULL;
static SPIPlanPtr origin_get_plan = NULL;
static SPIPlanPtr origin_set_plan = NULL;

/* event_log rows up to this id are trimmed already */
static int64 log_trimmed_upto = 0;

static void
reject(const char *fmt, const char *arg)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg_internal(fmt, arg)));
}

/*
 * prepared returns the statement's saved plan, preparing it the first time;
 * the plan cache replans it after a change of the tables it uses.
 */
static SPIPlanPtr
prepared(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

		if (p == NULL)
			elog(ERROR, "tenant_router: could not prepare \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
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

/*
 * integer_field returns the field key of the object at path ("" for the
 * event, "payload") as an integer: a JSON number written without fraction
 * or exponent (50001, not 50001.0, 5.0001e4 or 61e3), within bigint.
 */
static int64
integer_field(EventInfo *info, JsonbContainer *object, const char *path, const char *key)
{
	JsonbValue *value = field(object, key);
	Numeric		num;
	char	   *where = path[0] ? psprintf("%s.%s", path, key) : pstrdup(key);
	ListCell   *lc;

	if (value == NULL)
		reject("field \"%s\" is missing or null", key);
	if (value->type != jbvNumeric)
		reject("field \"%s\" must be an integer", key);
	foreach(lc, info->inexact)
		if (strcmp(lfirst(lc), where) == 0)
			reject("field \"%s\" must be an integer", key);
	num = value->val.numeric;
	if (DatumGetBool(DirectFunctionCall2(numeric_gt, NumericGetDatum(num),
										 DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MAX)))) ||
		DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(num),
										 DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MIN)))))
		reject("field \"%s\" is out of range for bigint", key);
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num)));
}

/*
 * The raw text of an event is checked with PostgreSQL's JSON parser
 * (pg_parse_json) before jsonb_in reads it: jsonb keeps the last of two
 * fields with the same name, and turns 5.0001e4 into 50001.
 */
static void
syntax_open(SyntaxCheck *check, bool is_object)
{
	SyntaxFrame *parent = check->frames ? linitial(check->frames) : NULL;
	SyntaxFrame *frame = palloc0(sizeof(SyntaxFrame));

	frame->is_object = is_object;
	if (parent == NULL)
		frame->path = "";
	else
	{
		const char *name = parent->is_object ? parent->field : "[]";

		frame->path = parent->path[0] ? psprintf("%s.%s", parent->path, name) : pstrdup(name);
	}
	check->frames = lcons(frame, check->frames);
}

static void
syntax_object_start(void *state)
{
	syntax_open(state, true);
}

static void
syntax_array_start(void *state)
{
	syntax_open(state, false);
}

static void
syntax_close(void *state)
{
	SyntaxCheck *check = state;

	check->frames = list_delete_first(check->frames);
}

/* syntax_field refuses a field that its object already has */
static void
syntax_field(void *state, char *fname, bool isnull)
{
	SyntaxCheck *check = state;
	SyntaxFrame *frame = linitial(check->frames);
	ListCell   *lc;

	foreach(lc, frame->fields)
		if (strcmp(lfirst(lc), fname) == 0)
			reject("duplicate field \"%s\"",
				   pnstrdup(fname, pg_mbcliplen(fname, strlen(fname), 64)));
	frame->fields = lappend(frame->fields, fname);
	frame->field = fname;
}

/* syntax_scalar notes where a number has a fraction or an exponent */
static void
syntax_scalar(void *state, char *token, JsonTokenType type)
{
	SyntaxCheck *check = state;
	SyntaxFrame *frame = check->frames ? linitial(check->frames) : NULL;

	if (type == JSON_TOKEN_NUMBER && frame != NULL && frame->is_object &&
		strpbrk(token, ".eE") != NULL)
		check->info->inexact = lappend(check->info->inexact,
									   frame->path[0] ? psprintf("%s.%s", frame->path, frame->field) :
									   pstrdup(frame->field));
}

/*
 * check_syntax checks the bytes of an event: valid in the database encoding
 * (UTF-8), without a NUL byte, JSON, no object with two fields of the same
 * name; it notes in info the numbers written with a fraction or exponent.
 */
static void
check_syntax(RedisEvent *e, EventInfo *info)
{
	SyntaxCheck check = {NIL, info};
	JsonSemAction sem;
	JsonLexContext *lex;

	pg_verifymbstr(e->event, e->len, false);
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &check;
	sem.object_start = syntax_object_start;
	sem.object_end = syntax_close;
	sem.array_start = syntax_array_start;
	sem.array_end = syntax_close;
	sem.object_field_start = syntax_field;
	sem.scalar = syntax_scalar;
	lex = makeJsonLexContextCstringLen(e->event, e->len, GetDatabaseEncoding(), true);
	pg_parse_json_or_ereport(lex, &sem);
}

/*
 * What of an event the log shows.  Superusers see it as received, but for
 * its DSN: a "dsn" (or "new_dsn") string with its password masked, any other
 * value there masked whole (a DSN given as an object, say).  Everyone else
 * sees only what names the change: the strings of "op", "shard_id",
 * "origin", "new_shard_id" and "into_shard_id", the DSN as superusers see
 * it, and numbers, booleans and nulls; every other string, at any depth (an
 * extra "password", a token in a nested object) is masked.
 */
typedef enum RedactFor
{
	REDACT_FOR_SUPERUSER,
	REDACT_FOR_PUBLIC
} RedactFor;

#define MASK "********"

static bool
key_is(JsonbValue *key, const char *const *names)
{
	for (; *names; names++)
		if (key->val.string.len == strlen(*names) &&
			memcmp(key->val.string.val, *names, key->val.string.len) == 0)
			return true;
	return false;
}

static const char *const dsn_keys[] = {"dsn", "new_dsn", NULL};
static const char *const public_keys[] = {"op", "shard_id", "origin", "new_shard_id",
"into_shard_id", NULL};

static void
set_string(JsonbValue *v, char *str)
{
	v->type = jbvString;
	v->val.string.val = str;
	v->val.string.len = strlen(str);
}

/*
 * redact_into pushes onto *state a copy of container with what who may not
 * see masked; it returns what the last push returned (the whole value once
 * the outermost container is closed).
 */
static JsonbValue *
redact_into(JsonbContainer *container, RedactFor who, JsonbParseState **state)
{
	JsonbIterator *it = JsonbIteratorInit(container);
	JsonbIteratorToken token;
	JsonbValue	v;
	JsonbValue	key = {0};
	JsonbValue *result = NULL;

	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (token == WJB_KEY)
			key = v;
		else if (token == WJB_VALUE && key_is(&key, dsn_keys))
			set_string(&v, v.type == jbvString ?
					   DsnRedact(pnstrdup(v.val.string.val, v.val.string.len)) : MASK);
		else if ((token == WJB_VALUE || token == WJB_ELEM) && v.type == jbvBinary)
		{
			redact_into(v.val.binary.data, who, state);
			continue;
		}
		else if ((token == WJB_VALUE || token == WJB_ELEM) && v.type == jbvString &&
				 who == REDACT_FOR_PUBLIC && (token == WJB_ELEM || !key_is(&key, public_keys)))
			set_string(&v, MASK);
		result = pushJsonbValue(state, token,
								token == WJB_BEGIN_OBJECT || token == WJB_END_OBJECT ||
								token == WJB_END_ARRAY ? NULL : &v);
	}
	return result;
}

/* redact returns the text of the event as who may see it */
static char *
redact(Jsonb *event, RedactFor who)
{
	JsonbParseState *state = NULL;
	Jsonb	   *redacted = JsonbValueToJsonb(redact_into(&event->root, who, &state));

	return JsonbToCString(NULL, &redacted->root, VARSIZE(redacted));
}

/*
 * parse_and_apply parses an event and applies it (as mode says); it raises
 * an error for an event to reject and returns a reason for one to ignore,
 * or NULL.  What it finds goes into info, in the current memory context (it
 * returns to it after each SPI call, which leaves SPI's memory current).
 */
static const char *
parse_and_apply(RedisEvent *e, EventInfo *info, ApplyMode mode)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *event;
	JsonbValue *v;
	JsonbContainer *payload = NULL;

	if (e->event == NULL)
		reject("%s", "the stream entry has no \"event\" field");
	if (e->len > MAX_EVENT_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event of %d bytes exceeds the limit of %d bytes", e->len,
						MAX_EVENT_BYTES)));
	check_syntax(e, info);
	event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(e->event)));
	if (!JB_ROOT_IS_OBJECT(event) || JB_ROOT_IS_SCALAR(event))
		reject("%s", "the event is not a JSON object");

	v = field(&event->root, "payload");
	if (v != NULL && v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
		payload = v->val.binary.data;
	info->redacted = redact(event, REDACT_FOR_SUPERUSER);
	info->redacted_public = redact(event, REDACT_FOR_PUBLIC);

	v = field(&event->root, "origin");
	if (v != NULL)
	{
		if (v->type != jbvString)
			reject("field \"%s\" must be a string", "origin");
		info->origin = pnstrdup(v->val.string.val, v->val.string.len);
	}
	if (field(&event->root, "version") != NULL)
	{
		info->version = integer_field(info, &event->root, "", "version");
		info->has_version = true;
	}
	info->op = string_field(&event->root, "op");

	/* a completed split, move or merge, told to every coordinator */
	if (strcmp(info->op, "SHARD_SPLIT_COMPLETED") == 0 ||
		strcmp(info->op, "SHARD_MOVE_COMPLETED") == 0 ||
		strcmp(info->op, "SHARD_MERGE_COMPLETED") == 0)
		return "notification";

	if (payload == NULL)
		reject("%s", "field \"payload\" must be a JSON object");
	if (field(payload, "shard_id") != NULL && field(payload, "shard_id")->type == jbvString)
		info->shard_id = string_field(payload, "shard_id");
	if (mode == APPLY_RECORD_ONLY)
		return NULL;

	/* an event from another coordinator not newer than the last applied */
	/* (a change a coordinator ordered is in the log once: never a replay) */
	if (info->origin != NULL && info->has_version && mode == APPLY_DECIDE &&
		(e->kind == NULL || strcmp(e->kind, "change") != 0))
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(info->origin)};
		bool		isnull;

		if (SPI_execute_plan(prepared(&origin_get_plan,
									  "SELECT version FROM tenant_router.origin_progress WHERE origin = $1",
									  1, types),
							 values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "tenant_router: could not read origin_progress");
		MemoryContextSwitchTo(cxt);
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
						 ranged ? integer_field(info, payload, "payload", "range_start") : 0,
						 ranged ? integer_field(info, payload, "payload", "range_end") : 0,
						 string_field(payload, "dsn"),
						 field(payload, "modulus") ? integer_field(info, payload, "payload", "modulus") : 1,
						 field(payload, "remainder") ? integer_field(info, payload, "payload", "remainder") : 0,
						 TOPOLOGY_FROM_EVENT);
	}
	else if (strcmp(info->op, "REMOVE_SHARD") == 0)
		TopologyRemoveShard(string_field(payload, "shard_id"), TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "UPDATE_SHARD_RANGE") == 0)
		TopologyUpdateRange(string_field(payload, "shard_id"),
							integer_field(info, payload, "payload", "range_start"),
							integer_field(info, payload, "payload", "range_end"),
							field(payload, "modulus") ? integer_field(info, payload, "payload", "modulus") : -1,
							field(payload, "remainder") ? integer_field(info, payload, "payload", "remainder") : -1,
							TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "PIN_TENANT") == 0)
		TopologyPinTenant(integer_field(info, payload, "payload", "tenant_id"),
						  string_field(payload, "shard_id"), TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "UNPIN_TENANT") == 0)
		TopologyUnpinTenant(integer_field(info, payload, "payload", "tenant_id"), TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "UPDATE_SHARD_DSN") == 0)
		TopologyMoveShard(string_field(payload, "shard_id"), string_field(payload, "dsn"),
						  TOPOLOGY_FROM_EVENT);
	else if (strcmp(info->op, "MERGE_SHARD") == 0)
		TopologyMergeShard(string_field(payload, "shard_id"), string_field(payload, "into_shard_id"),
						   TOPOLOGY_FROM_EVENT);
	else
		reject("unknown op \"%s\"", info->op);
	MemoryContextSwitchTo(cxt);

	if (info->origin != NULL && info->has_version)
	{
		Oid			types[2] = {TEXTOID, INT8OID};
		Datum		values[2] = {CStringGetTextDatum(info->origin), Int64GetDatum(info->version)};

		if (SPI_execute_plan(prepared(&origin_set_plan,
									  "INSERT INTO tenant_router.origin_progress (origin, version) "
									  "VALUES ($1, $2) ON CONFLICT (origin) DO UPDATE "
									  "SET version = GREATEST(tenant_router.origin_progress.version, excluded.version)", 2, types),
							 values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "tenant_router: could not record origin_progress");
		MemoryContextSwitchTo(cxt);
	}
	return NULL;
}

/*
 * apply_in_subtransaction applies one event in a subtransaction and returns
 * its status, with *reason for one rejected or ignored.  It runs in and
 * returns to cxt.
 */
static const char *
apply_in_subtransaction(RedisEvent *e, EventInfo *info, ApplyMode mode, char **reason,
						int *sqlerrcode, MemoryContext cxt)
{
	ResourceOwner owner = CurrentResourceOwner;
	const char *status;

	*sqlerrcode = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		TopologyShardWorkDone = mode == APPLY_FOLLOW;
		*reason = (char *) parse_and_apply(e, info, mode);
		TopologyShardWorkDone = false;
		ReleaseCurrentSubTransaction();
		status = *reason ? "ignored" : "applied";
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		TopologyShardWorkDone = false;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		/* the primary message only: a parse error's detail quotes the input */
		*reason = edata->message;
		*sqlerrcode = edata->sqlerrcode;
		status = "rejected";
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return status;
}

/* logged_text returns what the log keeps of an event's text */
static char *
logged_text(char *text)
{
	size_t		len = strlen(text);

	if (len <= LOGGED_EVENT_BYTES)
		return text;
	return psprintf("%.*s...", pg_mbcliplen(text, len, LOGGED_EVENT_BYTES), text);
}

/* record_event inserts an event's row into the event log and returns its id */
static int64
record_event(RedisEvent *e, EventInfo *info, const char *status, const char *reason)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[10] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char	   *unlogged = psprintf("(%d bytes, not logged)", e->event ? e->len : 0);
	bool		isnull;
	int64		id;

	/* an event ordered from a channel message came by the channel */
	values[0] = CStringGetTextDatum(e->id != NULL && (e->kind == NULL || strcmp(e->kind, "raw") != 0) ?
									"stream" : "channel");
	values[1] = info->op ? CStringGetTextDatum(info->op) : (nulls[1] = 'n', (Datum) 0);
	values[2] = info->shard_id ? CStringGetTextDatum(info->shard_id) : (nulls[2] = 'n', (Datum) 0);
	values[3] = info->origin ? CStringGetTextDatum(info->origin) : (nulls[3] = 'n', (Datum) 0);
	values[4] = info->has_version ? Int64GetDatum(info->version) : (nulls[4] = 'n', (Datum) 0);
	values[5] = CStringGetTextDatum(status);
	values[6] = reason ? CStringGetTextDatum(reason) : (nulls[6] = 'n', (Datum) 0);
	/* an event that could not be parsed is logged only by its size */
	values[7] = CStringGetTextDatum(info->redacted ? logged_text(info->redacted) : unlogged);
	values[8] = CStringGetTextDatum(info->redacted ? logged_text(info->redacted_public) : unlogged);
	values[9] = TimestampTzGetDatum(e->received_at);

	if (SPI_execute_plan(prepared(&insert_log_plan,
								  "INSERT INTO tenant_router.event_log (source, op, shard_id, origin, "
								  "version, status, reason, event, event_public, received_at) "
								  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
								  10, types),
						 values, nulls, false, 1) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "tenant_router: could not log a topology event");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	MemoryContextSwitchTo(cxt);
	return id;
}

/*
 * finish_batch adds the batch's counts and stream position to worker_state
 * and trims the event log past tenant_router.event_log_size.
 */
static void
finish_batch(BatchTotals *totals)
{
	Oid			types[6] = {INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int64		trim_to = totals->last_log_id - TenantRouterEventLogSize;

	values[0] = Int64GetDatum(totals->applied);
	values[1] = Int64GetDatum(totals->rejected);
	values[2] = Int64GetDatum(totals->ignored);
	values[3] = TimestampTzGetDatum(totals->last_event_at);
	if (totals->stream_id != NULL)
	{
		values[4] = CStringGetTextDatum(totals->stream_id);
		values[5] = CStringGetTextDatum(TopologyLogStreamKey());
	}
	else
		nulls[4] = nulls[5] = 'n';
	if (SPI_execute_plan(prepared(&worker_state_plan,
								  "UPDATE tenant_router.worker_state SET applied = applied + $1, "
								  "rejected = rejected + $2, ignored = ignored + $3, last_event_at = $4, "
								  "stream_id = coalesce($5, stream_id), stream_key = coalesce($6, stream_key)",
								  6, types),
						 values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "tenant_router: could not update worker_state");

	/* from the last bound trimmed: the index scan skips what is gone */
	if (trim_to > log_trimmed_upto)
	{
		Oid			trim_types[2] = {INT8OID, INT8OID};
		Datum		trim_values[2] = {Int64GetDatum(log_trimmed_upto), Int64GetDatum(trim_to)};

		if (SPI_execute_plan(prepared(&trim_log_plan,
									  "DELETE FROM tenant_router.event_log WHERE id > $1 AND id <= $2",
									  2, trim_types),
							 trim_values, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "tenant_router: could not trim the event log");
	}
}

/*
 * ends_batch tells whether an event must be the last of its transaction:
 * an applied one that may have changed a shard's tables, whose shard
 * commits with the local transaction.
 */
static bool
ends_batch(EventInfo *info, const char *status)
{
	if (strcmp(status, "applied") != 0 || strcmp(info->op, "REMOVE_SHARD") == 0)
		return false;
	if (strcmp(info->op, "ADD_SHARD") == 0 || strcmp(info->op, "UPDATE_SHARD_RANGE") == 0)
		return CatalogLogicalTables() != NIL;
	return true;
}

/*
 * record_rejected records an event whose own transaction failed as
 * rejected, in a transaction of its own.
 */
static void
record_rejected(RedisEvent *e, EventInfo *info, const char *reason)
{
	MemoryContext cxt = CurrentMemoryContext;
	BatchTotals totals = {0};

	WorkerStartTransaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	MemoryContextSwitchTo(cxt);
	totals.rejected = 1;
	totals.stream_id = e->id;
	totals.last_event_at = e->received_at;
	totals.last_log_id = record_event(e, info, "rejected", reason);
	finish_batch(&totals);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	log_trimmed_upto = Max(log_trimmed_upto, totals.last_log_id - TenantRouterEventLogSize);
}

static void
log_outcome(EventOutcome *o)
{
	ereport(strcmp(o->status, "rejected") == 0 ? LOG : DEBUG1,
			(errmsg("tenant_router: %s topology event %s%s%s%s%s",
					o->status, o->op ? o->op : "(no op)",
					o->shard_id ? " for shard " : "", o->shard_id ? o->shard_id : "",
					o->reason ? ": " : "", o->reason ? o->reason : "")));
}

/* an entry whose decision failed for a transient reason: tried again */
static bool transient_stop = false;
static char *transient_id = NULL;
static TimestampTz transient_since = 0;

/*
 * transient tells whether an entry that failed with sqlerrcode here may
 * come out otherwise a moment later, so that it is tried again (for
 * TRANSIENT_RETRY_MS) rather than recorded as rejected for every
 * coordinator: a shard unreachable or its connection lost, a unique
 * violation on a shard, or a table or object that exists already (another
 * coordinator, or a session, creating the same table at the same moment:
 * it commits, and the table is then there; which of the two errors comes
 * depends on whether the DDL was waiting for it or started after), a
 * deadlock, a serialization failure, a lock not available.
 */
static bool
transient(int sqlerrcode, const char *id)
{
	TimestampTz now = GetCurrentTimestamp();

	if (sqlerrcode == 0 || id == NULL ||
		!(ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_CONNECTION_EXCEPTION ||
		  sqlerrcode == ERRCODE_UNIQUE_VIOLATION ||
		  sqlerrcode == ERRCODE_DUPLICATE_TABLE ||
		  sqlerrcode == ERRCODE_DUPLICATE_OBJECT ||
		  sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		  sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		  sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE))
		return false;
	if (transient_id == NULL || strcmp(transient_id, id) != 0)
	{
		if (transient_id != NULL)
			pfree(transient_id);
		transient_id = MemoryContextStrdup(TopMemoryContext, id);
		transient_since = now;
		return true;
	}
	return !TimestampDifferenceExceeds(transient_since, now, TRANSIENT_RETRY_MS);
}

/* the outcomes decided here, to record once their transactions committed */
static MemoryContext decided_cxt = NULL;
static List *decided_ids = NIL;
static List *decided_outcomes = NIL;
/* the first entry that came out here otherwise than where it was first applied */
static char *diverged_at = NULL;
static TimestampTz diverged_since = 0;

/* apply_mode says how an entry is applied, from its recorded outcome */
static ApplyMode
apply_mode(RedisEvent *e)
{
	char	   *me = OriginName();

	/*
	 * an event of this coordinator's outbox: a change in force here since
	 * its transaction committed, shard work included; applying it again
	 * where the log puts it would undo the changes made here after it
	 */
	if (e->kind != NULL && strcmp(e->kind, "outbox") == 0 && e->node != NULL &&
		strcmp(e->node, me) == 0)
		return APPLY_OWN;
	if (e->outcome == NULL)
		return APPLY_DECIDE;
	/* this coordinator's own change, which its caller's transaction did not keep */
	if (e->kind != NULL && strcmp(e->kind, "change") == 0 && e->node != NULL &&
		strcmp(e->node, me) == 0)
		return APPLY_DECIDE;
	return strcmp(e->outcome, "applied") == 0 ? APPLY_FOLLOW : APPLY_RECORD_ONLY;
}

/* outcome_text returns an entry's outcome as recorded: status, and reason */
static char *
outcome_text(const char *status, const char *reason)
{
	if (reason == NULL)
		return pstrdup(status);
	return psprintf("%s: %.*s", status,
					pg_mbcliplen(reason, strlen(reason), OUTCOME_REASON_BYTES), reason);
}

/* recorded_status sets status and reason from an outcome recorded elsewhere */
static void
recorded_status(const char *outcome, const char **status, char **reason)
{
	const char *colon = strchr(outcome, ':');

	*status = strncmp(outcome, "ignored", 7) == 0 ? "ignored" : "rejected";
	*reason = colon ? pstrdup(colon[1] == ' ' ? colon + 2 : colon + 1) :
		pstrdup("as where it was first applied");
}

/* decided notes the outcome of an entry decided here, once committed */
static void
decided(RedisEvent *e, const char *status, const char *reason)
{
	MemoryContext old;

	ApplyMode	mode = apply_mode(e);

	if (e->id == NULL || (mode != APPLY_DECIDE && mode != APPLY_OWN) || e->outcome != NULL)
		return;
	old = MemoryContextSwitchTo(decided_cxt);
	decided_ids = lappend(decided_ids, pstrdup(e->id));
	decided_outcomes = lappend(decided_outcomes, outcome_text(status, reason));
	MemoryContextSwitchTo(old);
}

/*
 * diverged notes that an entry came out here otherwise than where it was
 * first applied: the catalog is wrong from there on, until the worker
 * adopts a snapshot (worker/order.c).
 */
static void
diverged(const char *id, const char *here, const char *there)
{
	ereport(WARNING,
			(errmsg("tenant_router: entry %s of the topology log came out here as \"%s\", but as \"%s\" where it was first applied",
					id, here, there),
			 errdetail("This coordinator adopts the topology snapshot once it holds that entry.")));
	if (diverged_at == NULL)
		diverged_since = GetCurrentTimestamp();
	if (diverged_at == NULL || StreamIdCompare(id, diverged_at) < 0)
		diverged_at = MemoryContextStrdup(TopMemoryContext, id);
}

/*
 * TopologyEventsDiverged returns the first entry that came out otherwise
 * here, or NULL, and since when (if since is not NULL)
 */
char *
TopologyEventsDiverged(TimestampTz *since)
{
	if (since)
		*since = diverged_since;
	return diverged_at;
}

/* TopologyEventsConverged forgets that the catalog diverged (a snapshot was adopted) */
void
TopologyEventsConverged(void)
{
	diverged_at = NULL;
}

/*
 * lock_position takes the topology lock and returns the catalog's position
 * in the order, in cxt; SPI connected.
 */
static char *
lock_position(MemoryContext cxt)
{
	char	   *position;

	if (SPI_execute("SELECT version FROM tenant_router.topology FOR UPDATE", false, 0) !=
		SPI_OK_SELECT ||
		SPI_execute("SELECT stream_id FROM tenant_router.worker_state", false, 1) !=
		SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tenant_router: could not read the topology position");
	position = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1));
	MemoryContextSwitchTo(cxt);
	return position;
}

/*
 * apply_batch applies and records events[first..], at most max of them, in
 * one transaction, and returns how many it handled (passing over those the
 * catalog's position covers).  If the transaction
 * fails, the events it held are applied again one per transaction; a single
 * event whose transaction fails is recorded as rejected.
 */
static int
apply_batch(RedisEvent **events, int nevents, int first, int max)
{
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext event_cxt = AllocSetContextCreate(cxt, "tenant_router event",
													ALLOCSET_DEFAULT_SIZES);
	EventOutcome *outcomes = palloc0(sizeof(EventOutcome) * max);
	EventInfo  *info = palloc0(sizeof(EventInfo));
	BatchTotals totals = {0};
	TimestampTz started = GetCurrentTimestamp();
	volatile int handled = 0;
	volatile bool committing = false;
	ErrorData  *failure = NULL;
	int			i;

	PG_TRY();
	{
		char	   *position;

		WorkerStartTransaction();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		position = lock_position(cxt);
		while (handled < max && first + handled < nevents)
		{
			RedisEvent *e = events[first + handled];
			EventOutcome *o = &outcomes[handled];
			char	   *reason = NULL;
			const char *status;
			ApplyMode	mode;
			int			sqlerrcode;

			if (e->id != NULL && StreamIdCompare(e->id, position) <= 0)
			{
				/* applied by the admin function that ordered it */
				o->status = NULL;
				handled++;
				continue;
			}
			MemoryContextReset(event_cxt);
			memset(info, 0, sizeof(EventInfo));
			CommandCounterIncrement();
			PushActiveSnapshot(GetTransactionSnapshot());
			mode = apply_mode(e);
			/* an own outbox event is parsed for the log, not applied again */
			status = apply_in_subtransaction(e, info,
											 mode == APPLY_OWN ? APPLY_RECORD_ONLY : mode,
											 &reason, &sqlerrcode, event_cxt);
			if (mode == APPLY_DECIDE && strcmp(status, "rejected") == 0 &&
				transient(sqlerrcode, e->id))
			{
				/* not decided: the batch ends before it, it is tried again */
				PopActiveSnapshot();
				transient_stop = true;
				ereport(LOG,
						(errmsg("tenant_router: topology event %s%s%s failed for now, trying it again: %s",
								info->op ? info->op : "(no op)",
								info->shard_id ? " for shard " : "",
								info->shard_id ? info->shard_id : "", reason)));
				break;
			}
			if (mode == APPLY_RECORD_ONLY)
				recorded_status(e->outcome, &status, &reason);
			else if (e->outcome != NULL && strcmp(outcome_text(status, reason), e->outcome) != 0)
				diverged(e->id, outcome_text(status, reason), e->outcome);
			totals.last_log_id = record_event(e, info, status, reason);
			PopActiveSnapshot();

			o->status = status;
			o->op = info->op ? MemoryContextStrdup(cxt, info->op) : NULL;
			o->shard_id = info->shard_id ? MemoryContextStrdup(cxt, info->shard_id) : NULL;
			o->reason = reason ? MemoryContextStrdup(cxt, reason) : NULL;
			totals.applied += strcmp(status, "applied") == 0;
			totals.rejected += strcmp(status, "rejected") == 0;
			totals.ignored += strcmp(status, "ignored") == 0;
			if (e->id != NULL)
				totals.stream_id = e->id;
			totals.last_event_at = e->received_at;
			handled++;
			if (ends_batch(info, status) ||
				TimestampDifferenceExceeds(started, GetCurrentTimestamp(), EVENT_BATCH_MS))
				break;
		}
		if (totals.applied + totals.rejected + totals.ignored > 0)
			finish_batch(&totals);
		SPI_finish();
		PopActiveSnapshot();
		committing = true;
		CommitTransactionCommand();
		committing = false;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		failure = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	if (failure == NULL)
	{
		log_trimmed_upto = Max(log_trimmed_upto,
							   totals.last_log_id - TenantRouterEventLogSize);
		for (i = 0; i < handled; i++)
			if (outcomes[i].status != NULL)
			{
				decided(events[first + i], outcomes[i].status, outcomes[i].reason);
				log_outcome(&outcomes[i]);
			}
	}
	else if (max > 1)
	{
		/* the events of the batch, the failing one included, one by one */
		int			attempted = Min(handled + (committing ? 0 : 1), nevents - first);

		ereport(LOG,
				(errmsg("tenant_router: a transaction of %d topology events failed%s: %s; applying them one by one",
						attempted, committing ? " to commit" : "", failure->message)));
		transient_stop = false;
		for (i = 0; i < attempted && !transient_stop;)
			i += apply_batch(events, nevents, first + i, 1);
		handled = i;
	}
	else
	{
		EventOutcome o;

		o.status = "rejected";
		o.op = info->op;
		o.shard_id = info->shard_id;
		o.reason = committing ? psprintf("commit failed: %s", failure->message) : failure->message;
		record_rejected(events[first], info, o.reason);
		decided(events[first], o.status, o.reason);
		log_outcome(&o);
		handled = 1;
	}
	MemoryContextDelete(event_cxt);
	return handled;
}

/*
 * record_decided records the outcomes decided here; an entry recorded
 * otherwise meanwhile (applied at the same time elsewhere, and decided
 * otherwise there) makes this catalog diverge.  False if Redis failed: the
 * outcomes are kept (decided_cxt lives as long as the worker) and recorded
 * by the next call, before any other entry is applied.
 */
static bool
record_decided(char **why)
{
	char	  **recorded;
	bool		ok;

	if (decided_ids == NIL)
		return true;
	ok = TopologyLogPutOutcomes(decided_ids, decided_outcomes, &recorded, why);
	if (!ok)
		return false;			/* kept: recorded on the next call */
	for (int i = 0; i < list_length(decided_ids); i++)
		if (recorded[i] != NULL && strcmp(recorded[i], list_nth(decided_outcomes, i)) != 0)
			diverged(list_nth(decided_ids, i), list_nth(decided_outcomes, i), recorded[i]);
	decided_ids = decided_outcomes = NIL;
	MemoryContextReset(decided_cxt);
	return true;
}

/*
 * TopologyEventsRecordDecided records the outcomes decided here that a
 * failure of Redis kept from being recorded; false if it fails again.
 */
bool
TopologyEventsRecordDecided(char **why)
{
	return record_decided(why);
}

/*
 * awaiting_orderer returns how long to wait for the outcome of entries that
 * have none yet and were put in the order by another coordinator, which
 * applies them first, shard work included (0: none): from a channel
 * message or its outbox, ORDERER_WAIT_MS (it applies them at once); a
 * change made in SQL, ORDERED_CHANGE_WAIT_MS (its outcome is recorded when
 * the caller's transaction commits).
 */
static long
awaiting_orderer(RedisEvent **events, char **outcomes, int n)
{
	char	   *me = OriginName();
	long		wait = 0;

	for (int i = 0; i < n; i++)
		if (outcomes[i] == NULL && events[i]->kind != NULL && events[i]->node != NULL &&
			strcmp(events[i]->node, me) != 0)
		{
			if (strcmp(events[i]->kind, "change") == 0)
				wait = Max(wait, ORDERED_CHANGE_WAIT_MS);
			else if (strcmp(events[i]->kind, "raw") == 0 ||
					 strcmp(events[i]->kind, "outbox") == 0)
				wait = Max(wait, ORDERER_WAIT_MS);
		}
	return wait;
}

/*
 * ApplyTopologyEvents applies and records entries of the log (a list of
 * RedisEvent), in order, several per transaction: each as it came out
 * where it was first applied, or decided here and recorded as such (see
 * ApplyMode).  It never raises an error for a bad event, nor for one whose
 * transaction fails to commit (that one is rolled back and recorded as
 * rejected, its stream entry passed).  False if Redis failed: *why says
 * why.
 */
bool
ApplyTopologyEvents(List *events, char **why)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	int			n = list_length(events);
	RedisEvent **array;
	List	   *ids = NIL;
	char	  **outcomes;
	TimestampTz started;
	long		wait;
	int			i = 0;
	ListCell   *lc;

	if (events == NIL)
		return true;
	array = palloc(sizeof(RedisEvent *) * n);
	foreach(lc, events)
	{
		array[i++] = lfirst(lc);
		ids = lappend(ids, ((RedisEvent *) lfirst(lc))->id);
	}
	if (!TopologyLogGetOutcomes(ids, &outcomes, why))
		return false;

	/*
	 * An event ordered from the channel (or its outbox) by another
	 * coordinator is applied there at once, and a change ordered there
	 * from SQL is recorded once its transaction commits: its outcome comes
	 * within milliseconds, and then this coordinator has only the catalog
	 * to change.  It waits that long, no more (that one may be behind, or
	 * gone), then decides itself.
	 */
	started = GetCurrentTimestamp();
	while ((wait = awaiting_orderer(array, outcomes, n)) > 0 &&
		   !TimestampDifferenceExceeds(started, GetCurrentTimestamp(), wait))
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait > ORDERER_WAIT_MS ? 5 * ORDERER_POLL_MS : ORDERER_POLL_MS,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (!TopologyLogGetOutcomes(ids, &outcomes, why))
			return false;
	}
	for (i = 0; i < n; i++)
		array[i]->outcome = outcomes[i];

	cxt = AllocSetContextCreate(caller, "tenant_router event batch", ALLOCSET_DEFAULT_SIZES);
	if (decided_cxt == NULL)
		decided_cxt = AllocSetContextCreate(TopMemoryContext, "tenant_router decided outcomes",
											ALLOCSET_SMALL_SIZES);
	/* the outcomes a failure of Redis kept from being recorded, first */
	if (!record_decided(why))
		return false;
	for (i = 0; i < n;)
	{
		MemoryContextSwitchTo(cxt);
		transient_stop = false;
		i += apply_batch(array, n, i, EVENT_BATCH);
		MemoryContextReset(cxt);
		MemoryContextSwitchTo(caller);
		if (transient_stop && i < n)
		{
			List	   *one = list_make1(array[i]->id);
			char	  **now;

			/* meanwhile, another coordinator may have decided it */
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 TRANSIENT_POLL_MS, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			if (!TopologyLogGetOutcomes(one, &now, why))
			{
				char	   *lost = NULL;

				(void) record_decided(&lost);
				MemoryContextDelete(cxt);
				return false;
			}
			if (now[0] != NULL)
				array[i]->outcome = now[0];
		}
	}
	transient_stop = false;
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(cxt);
	pfree(array);
	return record_decided(why);
}
