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
extern char *TenantRouterDatabase;
extern bool TenantRouterEnableFastPath;
extern int	TenantRouterEventLogSize;
extern char *TenantRouterNodeName;
extern char *TenantRouterOperationPauseBefore;
extern int	TenantRouterRedisDb;
extern char *TenantRouterRedisHost;
extern char *TenantRouterRedisPassword;
extern int	TenantRouterRedisPort;
extern bool TenantRouterRemotePrepare;
extern int	TenantRouterShardLockTimeout;
extern char *TenantRouterTopologyChannel;

#endif
