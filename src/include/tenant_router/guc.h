/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  Settings of tenant_router (tenant_router.*), defined in tenant_router.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_GUC_H
#define TENANT_ROUTER_GUC_H

extern bool TenantRouterAutoCleanup;
extern int	TenantRouterConnectTimeout;
extern int	TenantRouterCommitTimeout;
extern char *TenantRouterDatabase;
extern int	TenantRouterDeadlockCheckInterval;
extern bool TenantRouterEnableFastPath;
extern int	TenantRouterEventLogSize;
extern int	TenantRouterLogRetention;

/* tenant_router.multi_shard_reads */
typedef enum MultiShardReads
{
	MULTI_SHARD_READS_ALLOW,
	MULTI_SHARD_READS_REFUSE
} MultiShardReads;
extern int	TenantRouterMultiShardReads;

/* tenant_router.multi_shard_writes */
typedef enum MultiShardWrites
{
	MULTI_SHARD_WRITES_2PC,
	MULTI_SHARD_WRITES_REFUSE
} MultiShardWrites;
extern int	TenantRouterMultiShardWrites;
extern char *TenantRouterNodeName;
extern char *TenantRouterOperationPauseBefore;
extern int	TenantRouterProbeInterval;
extern int	TenantRouterProbeTimeout;
extern int	TenantRouterRedisDb;
extern char *TenantRouterRedisHost;
extern char *TenantRouterRedisPassword;
extern int	TenantRouterRedisPort;
extern bool TenantRouterRemotePrepare;
extern int	TenantRouterShardLockTimeout;
extern bool TenantRouterSingleCoordinator;
extern int	TenantRouterStatsMaxShards;
extern int	TenantRouterStatsMaxTenants;
extern int	TenantRouterSwitchWaitTimeout;
extern char *TenantRouterTopologyChannel;
extern bool TenantRouterTrackStats;

#endif
