/*-------------------------------------------------------------------------
 *
 * tenant_router.c
 *	  Module load: refuses to load unless preloaded, defines the settings
 *	  (tenant_router.*), and has each part install its hooks and register
 *	  what it needs (remote transactions, planner hook, custom scan, routing
 *	  cache, outbox, statistics, topology worker, health worker).
 *
 * Invariants: every hook saves the previous one and calls it; the settings
 * are defined in alphabetical order and the prefix is reserved.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "tenant_router/connection.h"
#include "tenant_router/ddl_propagation.h"
#include "tenant_router/deadlock.h"
#include "tenant_router/guc.h"
#include "tenant_router/fast_path.h"
#include "tenant_router/health_worker.h"
#include "tenant_router/outbox.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/router_scan.h"
#include "tenant_router/stats.h"
#include "tenant_router/topology_log.h"
#include "tenant_router/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* settings */
bool		TenantRouterAutoCleanup = true;
int			TenantRouterConnectTimeout = 10;
int			TenantRouterCommitTimeout = 30000;
char	   *TenantRouterDatabase = NULL;
int			TenantRouterDeadlockCheckInterval = 1000;
bool		TenantRouterEnableFastPath = true;
int			TenantRouterEventLogSize = 1000;
int			TenantRouterLogRetention = 600;
int			TenantRouterMultiShardReads = MULTI_SHARD_READS_ALLOW;
int			TenantRouterMultiShardWrites = MULTI_SHARD_WRITES_2PC;
char	   *TenantRouterNodeName = NULL;
char	   *TenantRouterOperationPauseBefore = NULL;
int			TenantRouterProbeInterval = 2000;
int			TenantRouterProbeTimeout = 1000;
int			TenantRouterRedisDb = 0;
char	   *TenantRouterRedisHost = NULL;
char	   *TenantRouterRedisPassword = NULL;
int			TenantRouterRedisPort = 6379;
bool		TenantRouterRemotePrepare = true;
int			TenantRouterShardLockTimeout = 10000;
bool		TenantRouterSingleCoordinator = false;
int			TenantRouterStatsMaxShards = 1000;
int			TenantRouterStatsMaxTenants = 10000;
int			TenantRouterSwitchWaitTimeout = 5000;
char	   *TenantRouterTopologyChannel = NULL;
bool		TenantRouterTrackStats = true;

static const struct config_enum_entry multi_shard_reads_options[] = {
	{"allow", MULTI_SHARD_READS_ALLOW, false},
	{"refuse", MULTI_SHARD_READS_REFUSE, false},
	{NULL, 0, false}
};

static const struct config_enum_entry multi_shard_writes_options[] = {
	{"2pc", MULTI_SHARD_WRITES_2PC, false},
	{"refuse", MULTI_SHARD_WRITES_REFUSE, false},
	{NULL, 0, false}
};

static void define_settings(void);

/*
 * _PG_init refuses to load unless tenant_router is in shared_preload_libraries:
 * the topology worker, its shared memory and the hooks must exist in every
 * backend from the start.
 */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tenant_router must be loaded via shared_preload_libraries"),
				 errhint("Add tenant_router to shared_preload_libraries in postgresql.conf and restart the server.")));

	define_settings();

	RemoteXactInit();
	InstallPlannerHook();
	RegisterRouterScan();
	RouteCacheInit();
	OutboxInit();
	TopologyLogInit();
	StatsInit();
	WorkerInit();
	HealthWorkerInit();
	DeadlockDetectorInit();
	DdlPropagationInit();
}

static void
define_settings(void)
{
	DefineCustomBoolVariable("tenant_router.auto_cleanup",
							 "Lets the topology worker remove the rows a split left on the old shard.",
							 "When off, run tenant_router.shard_cleanup() for the shards in tenant_router.pending_cleanup.",
							 &TenantRouterAutoCleanup,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.commit_timeout",
							"Longest wait for the shards to answer a commit (COMMIT or PREPARE TRANSACTION).",
							"Past it the commit fails: the transaction is rolled back, or, when a single shard "
							"was written and committed in one phase, fails with 08007 (its outcome there is unknown). "
							"0 waits without limit.",
							&TenantRouterCommitTimeout,
							30000,
							0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.connect_timeout",
							"Longest wait for a connection to a shard.",
							"A shard that has not answered by then is reported unreachable.",
							&TenantRouterConnectTimeout,
							10,
							1, 3600,
							PGC_USERSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("tenant_router.database",
							   "Database whose tenant_router catalog the topology worker maintains.",
							   NULL,
							   &TenantRouterDatabase,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.deadlock_check_interval",
							"Time between two looks of the deadlock detector for cycles of waits spanning shards.",
							"A cycle is broken once two looks in a row have seen it, by failing one transaction "
							"of it with 40P01. 0 turns the detector off (and the naming of transactions on the "
							"shards it needs).",
							&TenantRouterDeadlockCheckInterval,
							1000,
							0, 3600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("tenant_router.enable_fast_path",
							 "Sends statements pinned to one tenant whole to its shard.",
							 "When off, every statement on a logical table runs through the foreign-data wrapper.",
							 &TenantRouterEnableFastPath,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.event_log_size",
							"Number of topology events kept in tenant_router.event_log.",
							NULL,
							&TenantRouterEventLogSize,
							1000,
							10, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.log_retention",
							"How long the topology log on Redis keeps an entry once a newer snapshot holds it.",
							"A coordinator away for less reads the changes it missed; one away longer starts from the snapshot.",
							&TenantRouterLogRetention,
							600,
							0, INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("tenant_router.multi_shard_reads",
							 "Whether a statement may read from more than one shard.",
							 "\"refuse\" makes a statement that would read several shards an error, against accidental full scans.",
							 &TenantRouterMultiShardReads,
							 MULTI_SHARD_READS_ALLOW,
							 multi_shard_reads_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("tenant_router.multi_shard_writes",
							 "How a transaction that writes to more than one shard commits.",
							 "\"2pc\" commits it on every shard atomically with two-phase commit; \"refuse\" makes the write to a second shard an error.",
							 &TenantRouterMultiShardWrites,
							 MULTI_SHARD_WRITES_2PC,
							 multi_shard_writes_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("tenant_router.node_name",
							   "Name of this coordinator in the topology events it publishes.",
							   "Empty means the database system identifier.",
							   &TenantRouterNodeName,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("tenant_router.operation_pause_before",
							   "For tests: an online operation waits before this phase (or \"phase/step\") until it is cancelled.",
							   NULL,
							   &TenantRouterOperationPauseBefore,
							   "",
							   PGC_SUSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.probe_interval",
							"Time between two probes of every shard by the health worker.",
							"Every shard is sent \"SELECT 1\" this often, and shows as unreachable in tenant_router.shard_health when it does not answer; 0 turns the probe off.",
							&TenantRouterProbeInterval,
							2000,
							0, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.probe_timeout",
							"Longest wait for the shards' answers to a probe.",
							"A shard that has not connected and answered by then is reported unreachable.",
							&TenantRouterProbeTimeout,
							1000,
							10, 60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.redis_db",
							"Redis database number that holds the topology stream.",
							NULL,
							&TenantRouterRedisDb,
							0,
							0, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("tenant_router.redis_host",
							   "Redis host the topology worker subscribes to; empty disables Redis.",
							   NULL,
							   &TenantRouterRedisHost,
							   "127.0.0.1",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("tenant_router.redis_password",
							   "Password the topology worker sends to Redis (AUTH); empty sends none.",
							   NULL,
							   &TenantRouterRedisPassword,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.redis_port",
							"Redis port the topology worker connects to.",
							NULL,
							&TenantRouterRedisPort,
							6379,
							1, 65535,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("tenant_router.remote_prepare",
							 "Prepares repeated statements on the shard connections.",
							 NULL,
							 &TenantRouterRemotePrepare,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.shard_lock_timeout",
							"Longest wait for a lock on a shard's table by DDL tenant_router sends (range constraints, online operations).",
							"0 waits without limit.  A statement that waits longer fails with 55P03.",
							&TenantRouterShardLockTimeout,
							10000,
							0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("tenant_router.single_coordinator",
							 "Declares this coordinator the only one on its topology channel.",
							 "When on, a topology change made in SQL takes effect at once and is published later, even while Redis is unreachable; when off (the default), it first takes its place in the order kept on Redis, and is refused while Redis is unreachable.",
							 &TenantRouterSingleCoordinator,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.stats_max_shards",
							"Number of shards whose health and statistics are kept in shared memory.",
							"When a new shard finds them all taken, about 5% of them, those used least recently, are forgotten.",
							&TenantRouterStatsMaxShards,
							1000,
							10, 1000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.stats_max_tenants",
							"Number of tenants whose statistics are kept in shared memory.",
							"When a new tenant finds them all taken, about 5% of them, those whose last statement is the oldest, are forgotten.",
							&TenantRouterStatsMaxTenants,
							10000,
							10, 10000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("tenant_router.switch_wait_timeout",
							"Longest wait of a write whose tenant an online operation is moving, for its new shard.",
							"A write refused by the old shard after the switch runs on the new shard once routing sends it there; past this wait it fails with 40001.  0 fails at once.",
							&TenantRouterSwitchWaitTimeout,
							5000,
							0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("tenant_router.topology_channel",
							   "Redis pub/sub channel that carries topology events.",
							   NULL,
							   &TenantRouterTopologyChannel,
							   "db_shard_topology_updates",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("tenant_router.track_stats",
							 "Counts statements, rows, errors and time per shard and per tenant.",
							 "Shown in tenant_router.shard_stats and tenant_router.tenant_stats; shard health is recorded either way.",
							 &TenantRouterTrackStats,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("tenant_router");
}
