/*-------------------------------------------------------------------------
 *
 * pin.c
 *	  tenant_pin() and tenant_unpin() (seed 003's VIP tenants): a tenant
 *	  pinned to a shard is owned by it whatever the ranges say, and routing
 *	  looks at pins first.  When its rows must move, pinning and unpinning
 *	  are online operations (operation.c) that move one tenant; otherwise,
 *	  and for the PIN_TENANT and UNPIN_TENANT events, they change the
 *	  catalog and the two shards' range constraints at once.
 *
 * What a shard owns with the pins (ShardOwnsSql): its range and remainder,
 * less the tenants of them pinned elsewhere, plus the tenants pinned to it.
 * A pin therefore changes the constraints of two shards: the one that owned
 * the tenant, and the one it is pinned to.  The online pin gives the target
 * its new constraint first (which admits the tenant's rows), copies them,
 * narrows the source's constraint at the switch, and stores the pin; the
 * source keeps the tenant's rows until its cleanup.  Unpinning moves the
 * tenant back to the shard whose range holds it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "tenant_router/catalog.h"
#include "tenant_router/operation.h"
#include "tenant_router/operation_worker.h"
#include "tenant_router/ordered_change.h"
#include "tenant_router/outbox.h"
#include "tenant_router/shard_ddl.h"
#include "tenant_router/topology.h"

PG_FUNCTION_INFO_V1(tenant_router_tenant_pin);
PG_FUNCTION_INFO_V1(tenant_router_tenant_unpin);

/* pinned_shard returns the shard tenant is pinned to, or NULL; with lock, its pin locked */
static char *
pinned_shard(int64 tenant, bool lock)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(tenant)};
	MemoryContext cxt = CurrentMemoryContext;
	char	   *shard_id;

	TopologySpiExec(lock ? "SELECT shard_id FROM tenant_router.pin WHERE tenant_id = $1 FOR UPDATE" :
					"SELECT shard_id FROM tenant_router.pin WHERE tenant_id = $1",
					1, types, values, NULL, SPI_OK_SELECT);
	MemoryContextSwitchTo(cxt);
	shard_id = SPI_processed > 0 ?
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
	return shard_id;
}

/* range_shard returns the shard whose range and remainder hold tenant, or NULL */
static char *
range_shard(int64 tenant)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(tenant)};
	MemoryContext cxt = CurrentMemoryContext;

	TopologySpiExec("SELECT shard_id FROM tenant_router.shard "
					"WHERE range_start <= $1 AND range_end >= $1 "
					"AND ($1 % modulus + modulus) % modulus = remainder",
					1, types, values, NULL, SPI_OK_SELECT);
	MemoryContextSwitchTo(cxt);
	return SPI_processed > 0 ?
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
}

/* lock_shard returns the locked row of a shard that must exist */
static ShardRow *
lock_shard(const char *shard_id)
{
	ShardRow   *row = TopologyLockShard(shard_id);

	if (row == NULL)
		TopologyUnknownShard(shard_id);
	return row;
}

/*
 * owns_after returns row as it will own once tenant is pinned to pinned_to
 * (NULL: not pinned), with its other pins as in the catalog: the
 * constraint text every coordinator will compute for it then.
 */
static ShardRow *
owns_after(const ShardRow *row, int64 tenant, const char *pinned_to)
{
	ShardRow   *after = palloc(sizeof(ShardRow));

	*after = *row;
	CatalogLoadPins(after, NULL);
	after->pinned = TenantListWithout(after->pinned, tenant);
	after->pinned_away = TenantListWithout(after->pinned_away, tenant);
	if (pinned_to != NULL && strcmp(pinned_to, row->shard_id) == 0)
		after->pinned = TenantListWith(after->pinned, tenant);
	else if (pinned_to != NULL && ShardRangeOwns(row, tenant))
		after->pinned_away = TenantListWith(after->pinned_away, tenant);
	after->state = "active";
	return after;
}

/* one_tenant returns a row owning just tenant: what moves */
static ShardRow *
one_tenant(const char *shard_id, int64 tenant)
{
	ShardRow   *row = palloc0(sizeof(ShardRow));

	row->shard_id = (char *) shard_id;
	row->dsn = "";
	row->modulus = 1;
	row->pins_known = true;
	row->pinned = TenantListWith(NIL, tenant);
	return row;
}

/* queue_pin queues PIN_TENANT (to shard_id), or UNPIN_TENANT (shard_id NULL) */
static void
queue_pin(int64 tenant, const char *shard_id, int64 version)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"tenant_id\": " INT64_FORMAT, tenant);
	if (shard_id != NULL)
	{
		appendStringInfoString(&buf, ", \"shard_id\": ");
		escape_json(&buf, shard_id);
	}
	appendStringInfoChar(&buf, '}');
	OutboxQueue(shard_id ? "PIN_TENANT" : "UNPIN_TENANT", buf.data, version);
}

static void
pin_flip(Operation *op)
{
	int64		version = TopologyBumpVersion();

	TopologyStorePin(op->tenant, op->target->shard_id);
	TopologyQueueCleanup(op->source->shard_id);
	queue_pin(op->tenant, op->target->shard_id, version);
}

static void
unpin_flip(Operation *op)
{
	int64		version = TopologyBumpVersion();

	TopologyDeletePin(op->tenant);
	TopologyQueueCleanup(op->source->shard_id);
	queue_pin(op->tenant, NULL, version);
}

/* moved_meanwhile is the error of an operation whose tenant has no rows to move any more */
static void
moved_meanwhile(int64 tenant)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("the owner of tenant " INT64_FORMAT " changed meanwhile", tenant),
			 errhint("Call the function again.")));
}

/* fill fills in what moves: tenant, from source to target */
static void
fill(Operation *op, ShardRow *source, ShardRow *target, int64 tenant, const char *pinned_to)
{
	op->has_tenant = true;
	op->tenant = tenant;
	op->source = OperationKeepShard(op, source);
	op->source_after = OperationKeepShard(op, owns_after(source, tenant, pinned_to));
	op->target_before = OperationKeepShard(op, target);
	op->target = OperationKeepShard(op, owns_after(target, tenant, pinned_to));
	op->moving = OperationKeepShard(op, one_tenant(target->shard_id, tenant));
}

/*
 * PinPrepare checks a pin of args->tenant to args->target_id and says what
 * moves: that tenant, from the shard that owns it.  SPI is connected.
 */
void
PinPrepare(Operation *op, const OperationArgs *args)
{
	ShardRow   *target = lock_shard(args->target_id);
	char	   *pinned = pinned_shard(args->tenant, true);
	char	   *owner = pinned ? pinned : range_shard(args->tenant);

	if (owner == NULL || strcmp(owner, target->shard_id) == 0)
		moved_meanwhile(args->tenant);
	fill(op, lock_shard(owner), target, args->tenant, target->shard_id);
	op->flip = pin_flip;
}

/*
 * UnpinPrepare checks an unpin of args->tenant and says what moves: that
 * tenant, back to the shard whose range holds it.  SPI is connected.
 */
void
UnpinPrepare(Operation *op, const OperationArgs *args)
{
	char	   *pinned = pinned_shard(args->tenant, true);
	char	   *owner = range_shard(args->tenant);

	if (pinned == NULL || owner == NULL || strcmp(owner, pinned) == 0)
		moved_meanwhile(args->tenant);
	fill(op, lock_shard(pinned), lock_shard(owner), args->tenant, NULL);
	op->flip = unpin_flip;
}

/*
 * cleanup_owners runs the pending cleanups of the shards named, before
 * the pin changes what they own (rows they gave away would fail their
 * constraints' validation); sync_owners then makes their range
 * constraints say what they own.
 */
static void
cleanup_owners(const char *first, const char *second)
{
	if (first != NULL)
		TopologyCleanupIfPending(first);
	if (second != NULL && (first == NULL || strcmp(first, second) != 0))
		TopologyCleanupIfPending(second);
}

static void
sync_owners(const char *first, const char *second)
{
	if (first != NULL)
		ShardSyncAllTables(lock_shard(first));
	if (second != NULL && (first == NULL || strcmp(first, second) != 0))
		ShardSyncAllTables(lock_shard(second));
}

/*
 * TopologyPinTenant pins tenant to shard_id in the catalog, and sets the
 * range constraints of that shard and of the tenant's owner until now: the
 * code of tenant_pin() when no row has to move, and of a PIN_TENANT event.
 * The old owner's constraint is validated: rows of the tenant still there
 * make it fail (23514), and nothing changes.
 */
int64
TopologyPinTenant(int64 tenant, const char *shard_id, TopologySource source)
{
	int64		version;
	char	   *pinned;
	char	   *owner;

	SPI_connect();
	version = TopologyBumpVersion();
	(void) lock_shard(shard_id);
	pinned = pinned_shard(tenant, true);
	if (pinned != NULL && strcmp(pinned, shard_id) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("tenant " INT64_FORMAT " is already pinned to shard \"%s\"", tenant, shard_id)));
	owner = pinned ? pinned : range_shard(tenant);
	if (source == TOPOLOGY_FROM_SQL)
	{
		OperationCheckIdle(shard_id);
		if (owner != NULL)
			OperationCheckIdle(owner);
	}
	cleanup_owners(shard_id, owner);
	TopologyStorePin(tenant, shard_id);
	sync_owners(shard_id, owner);
	if (source == TOPOLOGY_FROM_SQL)
		queue_pin(tenant, shard_id, version);
	SPI_finish();
	return version;
}

/*
 * TopologyUnpinTenant unpins tenant in the catalog and sets the range
 * constraints of its shard and of the shard whose range holds it: the code
 * of tenant_unpin() when no row has to move, and of an UNPIN_TENANT event.
 */
int64
TopologyUnpinTenant(int64 tenant, TopologySource source)
{
	int64		version;
	char	   *pinned;
	char	   *owner;

	SPI_connect();
	version = TopologyBumpVersion();
	pinned = pinned_shard(tenant, true);
	if (pinned == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tenant " INT64_FORMAT " is not pinned", tenant)));
	owner = range_shard(tenant);
	if (owner == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no shard's range holds tenant " INT64_FORMAT, tenant),
				 errdetail("Unpinned, the tenant would be owned by no shard."),
				 errhint("Add a shard whose range holds it (shard_add), or pin it to another shard (tenant_pin).")));
	if (source == TOPOLOGY_FROM_SQL)
	{
		OperationCheckIdle(pinned);
		OperationCheckIdle(owner);
	}
	cleanup_owners(pinned, owner);
	TopologyDeletePin(tenant);
	sync_owners(pinned, owner);
	if (source == TOPOLOGY_FROM_SQL)
		queue_pin(tenant, NULL, version);
	SPI_finish();
	return version;
}

/*
 * tenant_pin(tenant_id, shard_id): an online operation when the tenant's
 * rows are on another shard, a catalog change otherwise (no shard owned
 * it, or the shard it is pinned to owns it already).
 */
Datum
tenant_router_tenant_pin(PG_FUNCTION_ARGS)
{
	int64		tenant = PG_GETARG_INT64(0);
	char	   *shard_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *owner;
	bool		known;

	TopologyRequireSuperuser("tenant_pin",
							 "The shard the tenant moves to receives the connection string of the shard it leaves, for its subscription.");
	SPI_connect();
	owner = pinned_shard(tenant, false);
	if (owner == NULL)
		owner = range_shard(tenant);
	known = CatalogGetShard(shard_id) != NULL;
	owner = owner ? pstrdup(owner) : NULL;
	SPI_finish();
	if (!known)
		TopologyUnknownShard(shard_id);
	if (owner == NULL || strcmp(owner, shard_id) == 0)
		OrderedPinTenant(tenant, shard_id);
	else
	{
		OperationArgs args;

		memset(&args, 0, sizeof(args));
		args.kind = OPERATION_PIN;
		args.tenant = tenant;
		TopologyCopyShardId(args.shard_id, owner, true);
		TopologyCopyShardId(args.target_id, shard_id, true);
		OperationLaunch(&args, "tenant_pin");
	}
	PG_RETURN_VOID();
}

/*
 * tenant_unpin(tenant_id): the tenant goes back to the shard whose range
 * holds it, online if it was pinned to another one.
 */
Datum
tenant_router_tenant_unpin(PG_FUNCTION_ARGS)
{
	int64		tenant = PG_GETARG_INT64(0);
	char	   *pinned;
	char	   *owner;

	TopologyRequireSuperuser("tenant_unpin",
							 "The shard the tenant moves back to receives the connection string of the shard it leaves, for its subscription.");
	SPI_connect();
	pinned = pinned_shard(tenant, false);
	owner = range_shard(tenant);
	pinned = pinned ? pstrdup(pinned) : NULL;
	owner = owner ? pstrdup(owner) : NULL;
	SPI_finish();
	if (pinned == NULL || owner == NULL || strcmp(owner, pinned) == 0)
		OrderedUnpinTenant(tenant);
	else
	{
		OperationArgs args;

		memset(&args, 0, sizeof(args));
		args.kind = OPERATION_UNPIN;
		args.tenant = tenant;
		TopologyCopyShardId(args.shard_id, pinned, true);
		TopologyCopyShardId(args.target_id, owner, true);
		OperationLaunch(&args, "tenant_unpin");
	}
	PG_RETURN_VOID();
}
