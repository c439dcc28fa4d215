/*-------------------------------------------------------------------------
 *
 * events.h
 *	  Applying topology events received from Redis.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_EVENTS_H
#define TENANT_ROUTER_EVENTS_H

/* where an event was read */
typedef enum EventSource
{
	EVENT_FROM_CHANNEL,			/* published on the channel only */
	EVENT_FROM_STREAM			/* read from the stream next to it */
} EventSource;

typedef enum EventStatus
{
	EVENT_APPLIED,
	EVENT_REJECTED,
	EVENT_IGNORED
} EventStatus;

extern EventStatus ApplyTopologyEvent(const char *text, EventSource source,
									  const char *stream_id);

#endif
