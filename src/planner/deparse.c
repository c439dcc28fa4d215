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

#include "tenant_router/deparse.h"

/*
 * EnterRemoteSqlSettings switches to the shard sessions' settings (for
 * deparsing: search_path too) until LeaveRemoteSqlSettings is called with
 * the level it returns.
 */
int
EnterRemoteSqlSettings(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* a nested level: leaving the outer one undoes it too */
	(void) EnterRemoteValueSettings(REMOTE_NEEDS_ALL);
	return nestlevel;
}

void
LeaveRemoteSqlSettings(int nestlevel)
{
	AtEOXact_GUC(true, nestlevel);
}

/*
 * EnterRemoteValueSettings switches the settings that change how the values
 * at hand print (needs: REMOTE_NEEDS_*), and only those that differ from
 * the shard sessions'; it returns 0 when nothing changed, the common case,
 * which costs no GUC nest level.
 */
int
EnterRemoteValueSettings(int needs)
{
	bool		datestyle = (needs & REMOTE_NEEDS_DATESTYLE) && DateStyle != USE_ISO_DATES;
	bool		intervalstyle = (needs & REMOTE_NEEDS_INTERVALSTYLE) &&
		IntervalStyle != INTSTYLE_POSTGRES;
	bool		floats = (needs & REMOTE_NEEDS_FLOAT_DIGITS) && extra_float_digits < 3;
	int			nestlevel;

	if (!datestyle && !intervalstyle && !floats)
		return 0;
	nestlevel = NewGUCNestLevel();
	if (datestyle)
		(void) set_config_option("datestyle", "ISO",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (intervalstyle)
		(void) set_config_option("intervalstyle", "postgres",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (floats)
		(void) set_config_option("extra_float_digits", "3",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
LeaveRemoteValueSettings(int nestlevel)
{
	if (nestlevel != 0)
		AtEOXact_GUC(true, nestlevel);
}
