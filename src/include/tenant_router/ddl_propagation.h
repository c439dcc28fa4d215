/*-------------------------------------------------------------------------
 *
 * ddl_propagation.h
 *	  DDL on logical tables applied on every shard with the coordinator.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_DDL_PROPAGATION_H
#define TENANT_ROUTER_DDL_PROPAGATION_H

extern void DdlPropagationInit(void);

#endif
