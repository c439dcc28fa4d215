/*-------------------------------------------------------------------------
 *
 * remote_session.h
 *	  The settings of a shard session, and the same settings on the
 *	  coordinator while text for a shard is produced.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_REMOTE_SESSION_H
#define TENANT_ROUTER_REMOTE_SESSION_H

extern const char *RemoteSessionSetupSql(void);

extern int	EnterRemoteSqlSettings(void);
extern void LeaveRemoteSqlSettings(int nestlevel);
/* what values need to print as a shard reads them */
#define REMOTE_NEEDS_DATESTYLE		0x01
#define REMOTE_NEEDS_INTERVALSTYLE	0x02
#define REMOTE_NEEDS_FLOAT_DIGITS	0x04
#define REMOTE_NEEDS_ALL			0x07

extern int	EnterRemoteValueSettings(int needs);
extern void LeaveRemoteValueSettings(int nestlevel);

#endif
