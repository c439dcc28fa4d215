/*-------------------------------------------------------------------------
 *
 * shard_ddl_safety.h
 *	  What a user who is not a superuser may have the shards evaluate.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_SHARD_DDL_SAFETY_H
#define TENANT_ROUTER_SHARD_DDL_SAFETY_H

#include "nodes/nodes.h"

extern bool ShardDdlTrusted(Oid userid);
extern char *ShardExprOffence(Node *expr);
extern void ShardCheckExpr(Node *expr, const char *what, Oid relid,
						   const char *definition);
extern void ShardCheckIndex(Oid indexoid, const char *what, Oid relid,
							const char *definition);
extern void ShardCheckConstraint(Oid conoid, const char *name, Oid relid);

#endif
