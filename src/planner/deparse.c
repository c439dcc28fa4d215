/*-------------------------------------------------------------------------
 *
 * deparse.c
 *	  The settings under which text for a shard is produced.
 *
 * Shard sessions run with search_path = pg_catalog and ISO date and
 * interval styles (see connection.c).  Text sent to them is produced under
 * the same settings, the rule postgres_fdw follows: PostgreSQL's deparser
 * then schema-qualifies every name outside pg_catalog, and values print in
 * a form the shard reads back exactly.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "tenant_router/deparse.h"

/*
 * EnterRemoteSqlSettings switches to the shard sessions' settings until
 * LeaveRemoteSqlSettings is called with the level it returns.
 */
int
EnterRemoteSqlSettings(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (DateStyle != USE_ISO_DATES)
		(void) set_config_option("datestyle", "ISO",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (IntervalStyle != INTSTYLE_POSTGRES)
		(void) set_config_option("intervalstyle", "postgres",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (extra_float_digits < 3)
		(void) set_config_option("extra_float_digits", "3",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
LeaveRemoteSqlSettings(int nestlevel)
{
	AtEOXact_GUC(true, nestlevel);
}

/*
 * DatumToRemoteText returns the text form of a value as a shard session
 * reads it; the caller must be inside EnterRemoteSqlSettings when the type's
 * output depends on settings.
 */
char *
DatumToRemoteText(Datum value, Oid typid)
{
	Oid			outfunc;
	bool		isvarlena;

	getTypeOutputInfo(typid, &outfunc, &isvarlena);
	return OidOutputFunctionCall(outfunc, value);
}
