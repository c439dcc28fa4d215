/*-------------------------------------------------------------------------
 *
 * shard_probe.h
 *	  The probe of every shard, run by the health worker (shard_probe.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_SHARD_PROBE_H
#define TENANT_ROUTER_SHARD_PROBE_H

#include "nodes/pg_list.h"

extern void ShardProbeAll(List *shards);

#endif
