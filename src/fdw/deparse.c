/*-------------------------------------------------------------------------
 *
 * deparse.c
 *	  Every SQL text the foreign-data wrapper sends to a shard: the SELECT
 *	  of a scan (with its shipped conditions, order and limit), the grouped
 *	  SELECT of an aggregate computed on the shards, and the INSERT, UPDATE,
 *	  DELETE and TRUNCATE of the rows it writes, as postgres_fdw keeps its
 *	  remote SQL in its deparse.c.
 *
 * Expressions are deparsed by PostgreSQL's own deparser, under the shard
 * sessions' settings (remote_session.c): every name outside pg_catalog is
 * schema-qualified.  Parameters are $1.. in the order of the expressions
 * the coordinator computes; a scan's last two parameters bound the shard's
 * range, so that a shard is read only within it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/htup_details.h"
#include "catalog/pg_operator.h"
#include "lib/stringinfo.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteManip.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "tenant_router/deparse.h"
#include "tenant_router/partial_agg.h"
#include "tenant_router/remote_session.h"

/* operator_name returns the schema-qualified name of an operator, for OPERATOR() */
static char *
operator_name(Oid opno)
{
	HeapTuple	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	Form_pg_operator op;
	char	   *name;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	op = (Form_pg_operator) GETSTRUCT(tuple);
	name = psprintf("%s.%s", quote_identifier(get_namespace_name(op->oprnamespace)),
					NameStr(op->oprname));
	ReleaseSysCache(tuple);
	return name;
}

static void
append_column_list(StringInfo buf, Relation rel, List *attrs)
{
	ListCell   *lc;

	foreach(lc, attrs)
		appendStringInfo(buf, "%s%s", lc == list_head(attrs) ? "" : ", ",
						 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
																lfirst_int(lc) - 1)->attname)));
}

/* a deparse context with the relation as the only one, numbered 1 */
static List *
relation_context(Relation rel)
{
	return deparse_context_for(RelationGetRelationName(rel), RelationGetRelid(rel));
}

/* expression_text deparses expr, whose Vars of relation varno become the context's */
static char *
expression_text(Node *expr, Index varno, List *dpcontext)
{
	Node	   *copy = copyObject(expr);

	ChangeVarNodes(copy, varno, 1, 0);
	return deparse_expression(copy, dpcontext, false, false);
}

/*
 * append_where appends the shipped conditions and the shard's range (none
 * for a reference table, whose copies are whole: the range's parameters are
 * sent all the same, unused)
 */
static void
append_where(StringInfo buf, List *conds, Index varno, List *dpcontext,
			 LogicalTable *table, int nparams)
{
	ListCell   *lc;

	foreach(lc, conds)
		appendStringInfo(buf, "%s(%s)", lc == list_head(conds) ? " WHERE " : " AND ",
						 expression_text(lfirst(lc), varno, dpcontext));
	if (table->is_reference)
		return;
	appendStringInfo(buf, "%s%s >= $%d AND %s <= $%d",
					 conds ? " AND " : " WHERE ",
					 table->tenant_column, nparams + 1,
					 table->tenant_column, nparams + 2);
}

/*
 * DeparseScan returns the SELECT of a scan of rel (relation varno of the
 * plan) on a shard: the columns in attrs (plus the ctid with want_ctid),
 * the conditions conds (already made shippable, with nparams parameters),
 * the shard's range, then sort keys, a limit (> 0) and a locking clause.
 * *retrieved_attrs receives the attribute number of each column returned.
 */
char *
DeparseScan(Relation rel, LogicalTable *table, Index varno, Bitmapset *attrs,
			bool want_ctid, List *conds, int nparams, List *sort_keys, int64 limit,
			const char *lock, List **retrieved_attrs)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	bool		whole_row = bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, attrs);
	List	   *dpcontext = relation_context(rel);
	StringInfoData buf;
	ListCell   *lc;
	AttrNumber	attno;
	int			nestlevel = EnterRemoteSqlSettings();

	*retrieved_attrs = NIL;
	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	for (attno = 1; attno <= tupdesc->natts; attno++)
	{
		if (TupleDescAttr(tupdesc, attno - 1)->attisdropped)
			continue;
		if (!whole_row && attno != table->tenant_attno &&
			!bms_is_member(attno - FirstLowInvalidHeapAttributeNumber, attrs))
			continue;
		if (*retrieved_attrs != NIL)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, quote_identifier(NameStr(TupleDescAttr(tupdesc, attno - 1)->attname)));
		*retrieved_attrs = lappend_int(*retrieved_attrs, attno);
	}
	if (want_ctid)
	{
		appendStringInfoString(&buf, ", ctid");
		*retrieved_attrs = lappend_int(*retrieved_attrs, SelfItemPointerAttributeNumber);
	}
	appendStringInfo(&buf, " FROM %s", table->remote_name);
	append_where(&buf, conds, varno, dpcontext, table, nparams);

	foreach(lc, sort_keys)
	{
		DeparseSortKey *key = lfirst(lc);

		TypeCacheEntry *typentry = lookup_type_cache(exprType((Node *) key->expr),
													 TYPECACHE_LT_OPR | TYPECACHE_GT_OPR);

		appendStringInfo(&buf, "%s%s", lc == list_head(sort_keys) ? " ORDER BY " : ", ",
						 expression_text((Node *) key->expr, varno, dpcontext));
		if (key->collation != exprCollation((Node *) key->expr) && OidIsValid(key->collation))
			appendStringInfo(&buf, " COLLATE %s", generate_collation_name(key->collation));
		if (key->sortop == typentry->lt_opr)
			appendStringInfoString(&buf, " ASC");
		else if (key->sortop == typentry->gt_opr)
			appendStringInfoString(&buf, " DESC");
		else
			appendStringInfo(&buf, " USING OPERATOR(%s)", operator_name(key->sortop));
		appendStringInfoString(&buf, key->nulls_first ? " NULLS FIRST" : " NULLS LAST");
	}
	if (limit > 0)
		appendStringInfo(&buf, " LIMIT " INT64_FORMAT, limit);
	appendStringInfoString(&buf, lock);
	LeaveRemoteSqlSettings(nestlevel);
	return buf.data;
}

/*
 * DeparseGrouped returns the grouped SELECT of an aggregate computed on the
 * shards over rel: one column per output expression, several for a partial
 * aggregate state (kinds: 0 for an expression returned as is, else the
 * PartialKind of the Aggref), the conditions and range as for a scan, then
 * GROUP BY the grouping expressions (group_positions, 1-based among the
 * outputs) and the HAVING conditions (the whole aggregate only).
 */
char *
DeparseGrouped(Relation rel, LogicalTable *table, Index varno, List *outputs,
			   List *kinds, List *conds, int nparams, List *group_positions,
			   List *having)
{
	List	   *dpcontext = relation_context(rel);
	StringInfoData buf;
	ListCell   *lc;
	ListCell   *kc;
	int			nestlevel = EnterRemoteSqlSettings();

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	forboth(lc, outputs, kc, kinds)
	{
		Node	   *expr = lfirst(lc);
		PartialKind kind = (PartialKind) lfirst_int(kc);

		if (lc != list_head(outputs))
			appendStringInfoString(&buf, ", ");
		if (kind == PARTIAL_NONE)
			appendStringInfoString(&buf, expression_text(expr, varno, dpcontext));
		else
		{
			Aggref	   *aggref = (Aggref *) copyObject(expr);

			ChangeVarNodes((Node *) aggref, varno, 1, 0);
			PartialAggDeparse(&buf, aggref, kind, dpcontext);
		}
	}
	appendStringInfo(&buf, " FROM %s", table->remote_name);
	append_where(&buf, conds, varno, dpcontext, table, nparams);
	foreach(lc, group_positions)
		appendStringInfo(&buf, "%s%d", lc == list_head(group_positions) ? " GROUP BY " : ", ",
						 lfirst_int(lc));
	foreach(lc, having)
		appendStringInfo(&buf, "%s(%s)", lc == list_head(having) ? " HAVING " : " AND ",
						 expression_text(lfirst(lc), varno, dpcontext));
	LeaveRemoteSqlSettings(nestlevel);
	return buf.data;
}

/*
 * DeparseInsert returns the INSERT of nrows rows of the columns attrs into
 * the shard's copy of rel, parameters $1.. row after row.
 */
char *
DeparseInsert(Relation rel, LogicalTable *table, List *attrs, int nrows,
			  bool do_nothing, List *returning)
{
	StringInfoData buf;
	int			ncols = list_length(attrs);
	int			r;
	int			c;
	int			p = 0;

	initStringInfo(&buf);
	appendStringInfo(&buf, "INSERT INTO %s (", table->remote_name);
	append_column_list(&buf, rel, attrs);
	appendStringInfoString(&buf, ") VALUES ");
	for (r = 0; r < nrows; r++)
	{
		appendStringInfoString(&buf, r > 0 ? ", (" : "(");
		for (c = 0; c < ncols; c++)
			appendStringInfo(&buf, "%s$%d", c > 0 ? ", " : "", ++p);
		appendStringInfoChar(&buf, ')');
	}
	if (do_nothing)
		appendStringInfoString(&buf, " ON CONFLICT DO NOTHING");
	if (returning != NIL)
	{
		appendStringInfoString(&buf, " RETURNING ");
		append_column_list(&buf, rel, returning);
	}
	return buf.data;
}

/*
 * DeparseUpdate returns the UPDATE of one row (by ctid and tenant, the
 * last two parameters) of the shard's copy of rel, setting attrs to $1..
 */
char *
DeparseUpdate(Relation rel, LogicalTable *table, List *attrs, List *returning)
{
	StringInfoData buf;
	ListCell   *lc;
	int			i = 1;

	initStringInfo(&buf);
	appendStringInfo(&buf, "UPDATE %s SET ", table->remote_name);
	foreach(lc, attrs)
	{
		appendStringInfo(&buf, "%s%s = $%d", i > 1 ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
																lfirst_int(lc) - 1)->attname)),
						 i);
		i++;
	}
	appendStringInfo(&buf, " WHERE ctid = $%d AND %s = $%d", i, table->tenant_column, i + 1);
	if (returning != NIL)
	{
		appendStringInfoString(&buf, " RETURNING ");
		append_column_list(&buf, rel, returning);
	}
	return buf.data;
}

/* DeparseDelete returns the DELETE of one row by ctid ($1) and tenant ($2). */
char *
DeparseDelete(Relation rel, LogicalTable *table, List *returning)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "DELETE FROM %s WHERE ctid = $1 AND %s = $2",
					 table->remote_name, table->tenant_column);
	if (returning != NIL)
	{
		appendStringInfoString(&buf, " RETURNING ");
		append_column_list(&buf, rel, returning);
	}
	return buf.data;
}

/*
 * DeparseDirectModify returns the UPDATE (setting attrs to exprs) or DELETE
 * of the rows of the shard's copy of rel that meet conds, within the
 * shard's range, returning the columns returning.
 */
char *
DeparseDirectModify(Relation rel, LogicalTable *table, Index varno, CmdType operation,
					List *attrs, List *exprs, List *conds, int nparams, List *returning)
{
	List	   *dpcontext = relation_context(rel);
	StringInfoData buf;
	ListCell   *lc;
	ListCell   *ec;
	int			nestlevel = EnterRemoteSqlSettings();

	initStringInfo(&buf);
	if (operation == CMD_UPDATE)
	{
		appendStringInfo(&buf, "UPDATE %s SET ", table->remote_name);
		forboth(lc, attrs, ec, exprs)
			appendStringInfo(&buf, "%s%s = %s", lc == list_head(attrs) ? "" : ", ",
							 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
																	lfirst_int(lc) - 1)->attname)),
							 expression_text(lfirst(ec), varno, dpcontext));
	}
	else
		appendStringInfo(&buf, "DELETE FROM %s", table->remote_name);
	append_where(&buf, conds, varno, dpcontext, table, nparams);
	if (returning != NIL)
	{
		appendStringInfoString(&buf, " RETURNING ");
		append_column_list(&buf, rel, returning);
	}
	LeaveRemoteSqlSettings(nestlevel);
	return buf.data;
}

/* DeparseTruncate returns the TRUNCATE of the shards' copies of rels. */
char *
DeparseTruncate(List *tables, bool cascade)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "TRUNCATE ");
	foreach(lc, tables)
		appendStringInfo(&buf, "%s%s", lc == list_head(tables) ? "" : ", ",
						 ((LogicalTable *) lfirst(lc))->remote_name);
	if (cascade)
		appendStringInfoString(&buf, " CASCADE");
	return buf.data;
}

/*
 * DeparseForShard returns sql, built above with nparams shipped parameters,
 * for one shard: its range condition (on $nparams+1 and $nparams+2) becomes
 * the condition on the tenants the shard owns now, ShardOwnsSql(), which may
 * leave out pinned tenants, add tenants pinned to it, or take one remainder
 * of a range shared by modulo.  The tenant column is read from the range
 * condition itself.  The two range parameters are still sent, unused.  SQL
 * without a range condition (a reference table's) is returned as it is.
 * With whole, *whole receives the same SQL without any condition on the
 * tenants (for a table that holds only what the shard owns) and
 * *owns_comment the comment of the range constraint of such a table
 * (ShardSetOwnership); both NULL for SQL without a range condition.
 */
char *
DeparseForShard(const char *sql, int nparams, const ShardRow *shard, char **whole,
				char **owns_comment)
{
	char	   *lower = psprintf(" >= $%d AND ", nparams + 1);
	char	   *upper = psprintf(" <= $%d", nparams + 2);
	const char *at = strstr(sql, lower);
	const char *column;
	const char *end;
	char	   *owns;
	int			len;

	if (whole)
		*whole = *owns_comment = NULL;
	if (at == NULL)
		return (char *) sql;	/* a reference table: every shard has it all */
	column = at + strlen(lower);
	end = strstr(column, upper);
	if (end == NULL)
		elog(ERROR, "tenant_router: remote SQL without its range condition");
	len = end - column;
	if (at - sql < len || strncmp(at - len, column, len) != 0)
		elog(ERROR, "tenant_router: remote SQL without its range condition");
	owns = ShardOwnsSql(shard, pnstrdup(column, len));
	if (whole)
	{
		*whole = psprintf("%.*strue%s", (int) (at - len - sql), sql, end + strlen(upper));
		*owns_comment = psprintf("tenant_router owns %s", owns);
	}
	return psprintf("%.*s%s%s", (int) (at - len - sql), sql, owns, end + strlen(upper));
}
