/*-------------------------------------------------------------------------
 *
 * remote_io.c
 *	  Converts values to the text a shard reads and rows it returns back
 *	  to datums.
 *
 * Parameters are sent in text form, produced under the shard sessions'
 * settings (ISO dates, full float precision) when their type's output
 * depends on settings.  Rows come back in text form and go through the
 * coordinator's input functions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "tenant_router/remote_session.h"
#include "tenant_router/remote_io.h"

/*
 * RemoteParamType returns the type OID to declare for a parameter: built-in
 * types have the same OID everywhere; others are left to the shard to infer
 * (the deparsed text casts them by name).
 */
Oid
RemoteParamType(Oid typid)
{
	return typid < FirstGenbkiObjectId ? typid : InvalidOid;
}

/* output_needs returns the settings a type's text form depends on */
static int
output_needs(Oid typid)
{
	switch (typid)
	{
		case BOOLOID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case NUMERICOID:
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case UUIDOID:
		case JSONOID:
		case JSONBOID:
		case BYTEAOID:
		case CHAROID:
			return 0;
		case DATEOID:
		case TIMEOID:
		case TIMETZOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return REMOTE_NEEDS_DATESTYLE;
		case INTERVALOID:
			return REMOTE_NEEDS_INTERVALSTYLE;
		case FLOAT4OID:
		case FLOAT8OID:
			return REMOTE_NEEDS_FLOAT_DIGITS;
		default:
			return REMOTE_NEEDS_ALL;	/* arrays, rows, other types */
	}
}

/* RemoteParamsInit prepares n parameters of the given types. */
void
RemoteParamsInit(RemoteParams *params, int n, const Oid *typids)
{
	int			i;

	params->n = n;
	params->types = palloc0(sizeof(Oid) * (n + 1));
	params->values = palloc0(sizeof(char *) * (n + 1));
	params->out_funcs = palloc0(sizeof(FmgrInfo) * (n + 1));
	params->needs = 0;
	for (i = 0; i < n; i++)
	{
		Oid			outfunc;
		bool		isvarlena;

		params->types[i] = RemoteParamType(typids[i]);
		getTypeOutputInfo(typids[i], &outfunc, &isvarlena);
		fmgr_info(outfunc, &params->out_funcs[i]);
		params->needs |= output_needs(typids[i]);
	}
}

/* RemoteParamsFill converts the values to text, in the current memory context. */
void
RemoteParamsFill(RemoteParams *params, const Datum *values, const bool *nulls)
{
	int			nestlevel = 0;
	int			i;

	if (params->needs != 0)
		nestlevel = EnterRemoteValueSettings(params->needs);
	for (i = 0; i < params->n; i++)
		params->values[i] = nulls[i] ? NULL :
			OutputFunctionCall(&params->out_funcs[i], values[i]);
	LeaveRemoteValueSettings(nestlevel);
}

/*
 * RemoteRowDecode converts row of res into values/nulls (indexed by
 * attribute number - 1); retrieved_attrs gives the attribute number of each
 * column of res, SelfItemPointerAttributeNumber meaning the ctid.
 */
void
RemoteRowDecode(PGresult *res, int row, List *retrieved_attrs,
				AttInMetadata *attinmeta, Datum *values, bool *nulls,
				ItemPointer ctid)
{
	ListCell   *lc;
	int			col = 0;

	if (PQnfields(res) != list_length(retrieved_attrs))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_COLUMN_NUMBER),
				 errmsg("shard returned %d columns where %d were expected",
						PQnfields(res), list_length(retrieved_attrs))));
	foreach(lc, retrieved_attrs)
	{
		int			attnum = lfirst_int(lc);
		char	   *text = PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);

		if (attnum == SelfItemPointerAttributeNumber)
		{
			if (text != NULL && ctid != NULL)
				*ctid = *((ItemPointer) DatumGetPointer(DirectFunctionCall1(tidin, CStringGetDatum(text))));
		}
		else
		{
			int			i = attnum - 1;

			nulls[i] = (text == NULL);
			values[i] = InputFunctionCall(&attinmeta->attinfuncs[i], text,
										  attinmeta->attioparams[i],
										  attinmeta->atttypmods[i]);
		}
		col++;
	}
}
