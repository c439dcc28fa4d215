/*-------------------------------------------------------------------------
 *
 * dsn.h
 *	  Shard connection strings: validation, redaction, libpq keywords.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_DSN_H
#define TENANT_ROUTER_DSN_H

extern void DsnValidate(const char *dsn);
extern char *DsnRedact(const char *dsn);

#endif
