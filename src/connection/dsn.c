/*-------------------------------------------------------------------------
 *
 * dsn.c
 *	  Shard connection strings (libpq conninfo or URI).
 *
 * DsnValidate parses with libpq's own parser and applies the options policy
 * PostgreSQL uses for its own server-side connections.  DsnRedact rebuilds
 * a connection string with the password hidden: it is what non-superusers
 * see, and the only form of a DSN that ever goes into a message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "libpq/libpq-be-fe-helpers.h"

#include "tenant_router/dsn.h"

#define REDACTED "********"

/*
 * mask_quoted replaces every quoted fragment of a libpq message by "...",
 * unless it is the name of a libpq option or a lone punctuation character
 * (the "=" of 'missing "=" after ...'): libpq quotes the piece of the
 * connection string it could not parse, which may be part of a password.
 * When the connection string itself holds a double quote, the quotes of the
 * message cannot be paired: everything from the first to the last is masked.
 */
static char *
mask_quoted(const char *msg, const char *dsn)
{
	StringInfoData buf;
	PQconninfoOption *defaults;
	const char *p = msg;

	initStringInfo(&buf);
	if (strchr(dsn, '"') != NULL)
	{
		const char *first = strchr(msg, '"');
		const char *last = strrchr(msg, '"');

		if (first == NULL)
			appendStringInfoString(&buf, msg);
		else
		{
			appendBinaryStringInfo(&buf, msg, first - msg);
			appendStringInfoString(&buf, "\"...\"");
			if (last != first)
				appendStringInfoString(&buf, last + 1);
		}
		return buf.data;
	}

	defaults = PQconndefaults();
	while (*p)
	{
		const char *end;
		bool		keyword = false;

		if (*p != '"' || (end = strchr(p + 1, '"')) == NULL)
		{
			appendStringInfoChar(&buf, *p++);
			continue;
		}
		if (end - p == 2 && ispunct((unsigned char) p[1]))
			keyword = true;
		for (PQconninfoOption *o = defaults; o && o->keyword; o++)
			if (strlen(o->keyword) == (size_t) (end - p - 1) &&
				strncmp(o->keyword, p + 1, end - p - 1) == 0)
				keyword = true;
		if (keyword)
			appendBinaryStringInfo(&buf, p, end - p + 1);
		else
			appendStringInfoString(&buf, "\"...\"");
		p = end + 1;
	}
	if (defaults)
		PQconninfoFree(defaults);
	return buf.data;
}

/*
 * DsnValidate raises an error unless dsn is a connection string libpq can
 * parse, with only the options a server-side connection may use.  The DSN
 * itself is never quoted in the error, since it may hold a password.
 */
void
DsnValidate(const char *dsn)
{
	char	   *parse_error = NULL;
	PQconninfoOption *opts;

	if (dsn[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid shard DSN"),
				 errdetail("The connection string is empty.")));

	opts = PQconninfoParse(dsn, &parse_error);
	if (opts == NULL)
	{
		char	   *detail = mask_quoted(parse_error ? parse_error : "out of memory", dsn);
		int			len = strlen(detail);

		if (parse_error)
			PQfreemem(parse_error);
		while (len > 0 && (detail[len - 1] == '\n' || detail[len - 1] == ' '))
			detail[--len] = '\0';
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid shard DSN"),
				 errdetail("libpq could not parse the connection string: %s", detail),
				 errhint("Use a libpq connection string such as 'host=... port=... dbname=...' or a postgres:// URI.")));
	}

	PG_TRY();
	{
		libpqsrv_check_proxy_conninfo_opts(opts);
	}
	PG_FINALLY();
	{
		PQconninfoFree(opts);
	}
	PG_END_TRY();
}

static void
append_conninfo_value(StringInfo buf, const char *val)
{
	const char *p;
	bool		needs_quotes = (val[0] == '\0');

	for (p = val; *p; p++)
		if (*p == ' ' || *p == '\'' || *p == '\\' || *p == '\t' || *p == '\n')
			needs_quotes = true;
	if (!needs_quotes)
	{
		appendStringInfoString(buf, val);
		return;
	}
	appendStringInfoChar(buf, '\'');
	for (p = val; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '\'');
}

/*
 * DsnRedact returns dsn as "keyword=value ..." with every secret option
 * (password, sslpassword) replaced by asterisks.  A string libpq cannot parse comes back as a fixed marker, so
 * that nothing of it leaks.
 */
char *
DsnRedact(const char *dsn)
{
	PQconninfoOption *opts;
	PQconninfoOption *opt;
	StringInfoData buf;
	char	   *parse_error = NULL;

	opts = PQconninfoParse(dsn, &parse_error);
	if (opts == NULL)
	{
		if (parse_error)
			PQfreemem(parse_error);
		return pstrdup("(invalid connection string)");
	}

	initStringInfo(&buf);
	for (opt = opts; opt->keyword != NULL; opt++)
	{
		if (opt->val == NULL)
			continue;
		if (buf.len > 0)
			appendStringInfoChar(&buf, ' ');
		appendStringInfo(&buf, "%s=", opt->keyword);
		/* libpq marks its secret options (password, sslpassword) with '*' */
		if (opt->dispchar && opt->dispchar[0] == '*')
			appendStringInfoString(&buf, REDACTED);
		else
			append_conninfo_value(&buf, opt->val);
	}
	PQconninfoFree(opts);
	return buf.data;
}
