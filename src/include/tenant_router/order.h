/*-------------------------------------------------------------------------
 *
 * order.h
 *	  The topology worker follows the one order of topology changes on
 *	  Redis: joins it, orders what was only PUBLISHed, applies it, keeps
 *	  the snapshot.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_ORDER_H
#define TENANT_ROUTER_ORDER_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

extern bool OrderJoin(char **why);
extern bool OrderMessages(List *messages, char **why);
extern bool OrderCatchUp(int max_entries, bool *more, char **why);
extern bool OrderKeepSnapshot(TimestampTz now, bool check, char **why);

#endif
