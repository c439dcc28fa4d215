/*-------------------------------------------------------------------------
 *
 * remote_session.c
 *	  The contract of a shard session: the settings it runs with, and the
 *	  same settings in force on the coordinator while text for it is made.
 *
 * A shard session runs with search_path = pg_catalog, ISO dates, the
 * postgres interval style, full float precision and UTC (RemoteSessionSetup,
 * sent once at connect).  Text sent to it is produced under the same
 * settings, the rule postgres_fdw follows: PostgreSQL's deparser then
 * schema-qualifies every name outside pg_catalog, and values print in a form
 * the shard reads back exactly.
 *
 * Invariant: the settings sent at connect and those switched here for
 * deparsing and value output are the same list, written once below.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/float.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "lib/stringinfo.h"

#include "tenant_router/remote_session.h"

/*
 * The settings of a shard session.  needs says which values' text depends
 * on the setting (REMOTE_NEEDS_*): those settings are switched on the
 * coordinator while such values are printed for a shard; in_force tells
 * whether the coordinator's own setting already prints them the same way.
 * search_path is switched while SQL text is deparsed; timezone only on the
 * shard (timestamptz values print with their offset, read the same anywhere).
 */
typedef struct SessionSetting
{
	const char *name;
	const char *value;
	int			needs;			/* REMOTE_NEEDS_*, 0: not for values */
	bool		deparse;		/* switched while deparsing SQL text */
	bool		(*in_force) (void);
} SessionSetting;

static bool
iso_dates(void)
{
	return DateStyle == USE_ISO_DATES;
}

static bool
postgres_intervals(void)
{
	return IntervalStyle == INTSTYLE_POSTGRES;
}

static bool
full_float_digits(void)
{
	return extra_float_digits >= 3;
}

static const SessionSetting session_settings[] = {
	{"search_path", "pg_catalog", 0, true, NULL},
	{"datestyle", "ISO", REMOTE_NEEDS_DATESTYLE, true, iso_dates},
	{"intervalstyle", "postgres", REMOTE_NEEDS_INTERVALSTYLE, true, postgres_intervals},
	{"extra_float_digits", "3", REMOTE_NEEDS_FLOAT_DIGITS, true, full_float_digits},
	{"timezone", "UTC", 0, false, NULL},
};

static char *setup_sql = NULL;

/*
 * RemoteSessionSetupSql returns the commands a new shard session is sent
 * before anything else.
 */
const char *
RemoteSessionSetupSql(void)
{
	if (setup_sql == NULL)
	{
		StringInfoData buf;
		int			i;

		initStringInfo(&buf);
		for (i = 0; i < lengthof(session_settings); i++)
			appendStringInfo(&buf, "%sSET %s = %s", i > 0 ? "; " : "",
							 session_settings[i].name,
							 quote_literal_cstr(session_settings[i].value));
		setup_sql = MemoryContextStrdup(TopMemoryContext, buf.data);
		pfree(buf.data);
	}
	return setup_sql;
}

static void
set_local(const SessionSetting *setting)
{
	(void) set_config_option(setting->name, setting->value,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * EnterRemoteSqlSettings switches to the shard sessions' settings for
 * deparsing (search_path and the value formats) until LeaveRemoteSqlSettings
 * is called with the level it returns.
 */
int
EnterRemoteSqlSettings(void)
{
	int			nestlevel = NewGUCNestLevel();
	int			i;

	for (i = 0; i < lengthof(session_settings); i++)
		if (session_settings[i].deparse)
			set_local(&session_settings[i]);
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
	int			nestlevel = 0;
	int			i;

	for (i = 0; i < lengthof(session_settings); i++)
	{
		const SessionSetting *setting = &session_settings[i];

		if ((needs & setting->needs) == 0 || setting->in_force())
			continue;
		if (nestlevel == 0)
			nestlevel = NewGUCNestLevel();
		set_local(setting);
	}
	return nestlevel;
}

void
LeaveRemoteValueSettings(int nestlevel)
{
	if (nestlevel != 0)
		AtEOXact_GUC(true, nestlevel);
}
