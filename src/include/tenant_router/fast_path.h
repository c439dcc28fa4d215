/*-------------------------------------------------------------------------
 *
 * fast_path.h
 *	  The planner hook that sends statements pinned to one tenant whole to
 *	  that tenant's shard (executed by executor/router_scan.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_FAST_PATH_H
#define TENANT_ROUTER_FAST_PATH_H

extern void InstallPlannerHook(void);

#endif
