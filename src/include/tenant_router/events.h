/*-------------------------------------------------------------------------
 *
 * events.h
 *	  Applying topology events received from Redis.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_EVENTS_H
#define TENANT_ROUTER_EVENTS_H

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

extern bool ApplyTopologyEvents(List *events, char **why);
extern char *TopologyEventsDiverged(TimestampTz *since);
extern void TopologyEventsConverged(void);
extern bool TopologyEventsRecordDecided(char **why);

#endif
