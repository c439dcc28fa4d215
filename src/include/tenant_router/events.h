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

extern void ApplyTopologyEvents(List *events);

#endif
