/*-------------------------------------------------------------------------
 *
 * publish.h
 *	  Publishing the outbox on Redis (the topology worker).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_PUBLISH_H
#define TENANT_ROUTER_PUBLISH_H

extern int	OutboxPublish(char **errmsg);

#endif
