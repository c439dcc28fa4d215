/*-------------------------------------------------------------------------
 *
 * shard_ddl_safety.c
 *	  What a user who is not a superuser may have the shards evaluate.
 *
 * Shards run everything they are sent as the user of their connection
 * string, often a superuser there.  Definitions shipped with a logical table
 * (CHECK constraints, index expressions and predicates, exclusion operators,
 * ALTER COLUMN TYPE ... USING) are code that the shard evaluates for every
 * row: a CHECK calling pg_read_file() would read the shard host's files as
 * that user.  So a definition chosen by a user who is not a superuser is
 * shipped only when everything in it is built in (made by initdb) and cannot
 * do more than compute: immutable functions, operators whose functions are
 * immutable, built-in types (whose I/O, comparison and subscripting
 * functions are then built in too) and built-in collations, and access
 * methods and operator classes of indexes.  This is the rule the planner
 * applies to the functions it ships in queries (planner/shippable.c), here
 * extended to every object an expression uses and checked on
 * the expression trees PostgreSQL stores (pg_constraint.conbin,
 * pg_index.indexprs and indpred), never on their text.
 *
 * The rule is sufficient, not only necessary: no built-in immutable
 * function has EXECUTE revoked from PUBLIC or checks who calls it (those
 * that read files, tables or settings are volatile or stable), so any role
 * could have the shard run it in a routed query anyway; the type check keeps
 * a built-in polymorphic function (array_eq, record_eq, a cast through text)
 * from calling a user type's functions on the user's behalf.  Constants of
 * the reg* types name objects the shard resolves itself (a text search
 * configuration in to_tsvector): they run nothing the user defined.

 * Invariant: every definition that commands/ ships to the shards is checked
 * here unless its author is a superuser (ShardDdlTrusted).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "tenant_router/shard_ddl_safety.h"

/* ShardDdlTrusted tells whether userid may send the shards any definition. */
bool
ShardDdlTrusted(Oid userid)
{
	return superuser_arg(userid);
}

/*
 * builtin tells whether oid belongs to an object made while bootstrapping,
 * from the catalogs' .dat files: below FirstUnpinnedObjectId, so that the
 * OIDs genbki assigns (operator classes, for one) count.  Objects that
 * initdb's SQL scripts make afterwards (information_schema, the collations
 * it imports from the system) do not, nor anything made later.
 */
static bool
builtin(Oid oid)
{
	return oid < FirstUnpinnedObjectId;
}

/* index_method returns the access method of an index */
static Oid
index_method(Oid indexoid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(indexoid));
	Oid			am;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", indexoid);
	am = ((Form_pg_class) GETSTRUCT(tuple))->relam;
	ReleaseSysCache(tuple);
	return am;
}

static bool
builtin_or_none(Oid oid)
{
	return !OidIsValid(oid) || builtin(oid);
}

static bool
unsafe_function(Oid funcid, void *context)
{
	if (builtin(funcid) && func_volatile(funcid) == PROVOLATILE_IMMUTABLE)
		return false;
	*(char **) context = psprintf("function %s", format_procedure(funcid));
	return true;
}

static char *
opclass_name(Oid opclass)
{
	HeapTuple	tuple = SearchSysCache1(CLAOID, ObjectIdGetDatum(opclass));
	Form_pg_opclass form;
	char	   *name;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for operator class %u", opclass);
	form = (Form_pg_opclass) GETSTRUCT(tuple);
	name = quote_qualified_identifier(get_namespace_name(form->opcnamespace),
									  NameStr(form->opcname));
	ReleaseSysCache(tuple);
	return name;
}

static char *
unsafe_operator(Oid opno)
{
	if (builtin(opno))
		return NULL;
	return psprintf("operator %s", format_operator(opno));
}

/* node_kind_unsafe names a kind of expression that is never shipped */
static char *
node_kind_unsafe(Node *node)
{
	switch (nodeTag(node))
	{
		case T_Var:
		case T_Const:
		case T_FuncExpr:
		case T_NamedArgExpr:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_ScalarArrayOpExpr:
		case T_BoolExpr:
		case T_FieldSelect:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_CollateExpr:
		case T_CaseExpr:
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_ArrayExpr:
		case T_RowExpr:
		case T_RowCompareExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_SubscriptingRef:
		case T_List:
			return NULL;
		case T_SQLValueFunction:
			return pstrdup("a SQL value function (CURRENT_USER, CURRENT_DATE, ...)");
		case T_XmlExpr:
			return pstrdup("an XML expression");
		case T_CoerceToDomain:
		case T_CoerceToDomainValue:
			return pstrdup("a domain");
		case T_NextValueExpr:
			return pstrdup("a sequence");
		case T_SubLink:
			return pstrdup("a subquery");
		default:
			return pstrdup("an expression that is not a built-in immutable one");
	}
}

/*
 * safety_walker stops at the first node that is not safe to ship, leaving
 * what it uses in *context.
 */
static bool
safety_walker(Node *node, void *context)
{
	char	  **offence = (char **) context;

	if (node == NULL)
		return false;

	/* the types and collations the node computes with, columns included */
	if (!IsA(node, List) && !IsA(node, CaseWhen))
	{
		Oid			type = exprType(node);
		Oid			collation = exprCollation(node);
		Oid			input_collation = exprInputCollation(node);

		if (!builtin_or_none(type))
		{
			*offence = psprintf("type %s", format_type_be(type));
			return true;
		}
		if (!builtin_or_none(collation) || !builtin_or_none(input_collation))
		{
			*offence = psprintf("collation %s",
								generate_collation_name(builtin_or_none(collation) ?
														input_collation : collation));
			return true;
		}
	}

	if ((*offence = node_kind_unsafe(node)) != NULL)
		return true;

	switch (nodeTag(node))
	{
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			*offence = unsafe_operator(((OpExpr *) node)->opno);
			break;
		case T_ScalarArrayOpExpr:
			*offence = unsafe_operator(((ScalarArrayOpExpr *) node)->opno);
			break;
		case T_RowCompareExpr:
			{
				RowCompareExpr *rc = (RowCompareExpr *) node;
				ListCell   *lc;

				foreach(lc, rc->opnos)
					if ((*offence = unsafe_operator(lfirst_oid(lc))) != NULL)
						break;
				foreach(lc, rc->inputcollids)
					if (*offence == NULL && !builtin_or_none(lfirst_oid(lc)))
						*offence = psprintf("collation %s",
											generate_collation_name(lfirst_oid(lc)));
				break;
			}
		case T_SubscriptingRef:
			if (!builtin_or_none(((SubscriptingRef *) node)->refcontainertype))
				*offence = psprintf("type %s",
									format_type_be(((SubscriptingRef *) node)->refcontainertype));
			break;
		default:
			break;
	}
	if (*offence != NULL)
		return true;

	/* functions, including the I/O functions of a cast through text */
	if (check_functions_in_node(node, unsafe_function, context))
		return true;

	return expression_tree_walker(node, safety_walker, context);
}

/*
 * ShardExprOffence returns what in expr may not be shipped on behalf of a
 * user who is not a superuser ("function pg_read_file(text)"), or NULL.
 */
char *
ShardExprOffence(Node *expr)
{
	char	   *offence = NULL;

	(void) safety_walker(expr, &offence);
	return offence;
}

static void
refuse(const char *what, Oid relid, const char *offence, const char *definition)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s of table \"%s\" uses %s, which only a superuser may send to the shards",
					what, get_rel_name(relid), offence),
			 errdetail("Shards evaluate it as the user of their connection string. Its definition is: %s.",
					   definition),
			 errhint("Other users may send the shards expressions made only of built-in immutable functions and operators, built-in types and collations, and built-in index methods and operator classes.")));
}

/*
 * ShardCheckExpr refuses expr, the "what" of table relid (definition: its
 * text), unless ShardExprOffence accepts it.
 */
void
ShardCheckExpr(Node *expr, const char *what, Oid relid, const char *definition)
{
	char	   *offence = ShardExprOffence(expr);

	if (offence != NULL)
		refuse(what, relid, offence, definition);
}

static Node *
stored_expression(HeapTuple tuple, int cacheid, AttrNumber attnum)
{
	bool		isnull;
	Datum		datum = SysCacheGetAttr(cacheid, tuple, attnum, &isnull);

	if (isnull)
		return NULL;
	return stringToNode(TextDatumGetCString(datum));
}

/*
 * ShardCheckIndex refuses the index indexoid of table relid ("what": how to
 * name it, definition: its text) unless its method, operator classes,
 * collations, expressions and predicate are all safe to ship.
 */
void
ShardCheckIndex(Oid indexoid, const char *what, Oid relid, const char *definition)
{
	HeapTuple	tuple;
	Form_pg_index index;
	oidvector  *opclasses;
	oidvector  *collations;
	bool		isnull;
	Oid			am = index_method(indexoid);
	char	   *offence = NULL;
	int			i;

	if (!builtin(am))
		offence = psprintf("index access method %s", get_am_name(am));

	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for index %u", indexoid);
	index = (Form_pg_index) GETSTRUCT(tuple);
	opclasses = (oidvector *) DatumGetPointer(SysCacheGetAttr(INDEXRELID, tuple,
															  Anum_pg_index_indclass,
															  &isnull));
	collations = (oidvector *) DatumGetPointer(SysCacheGetAttr(INDEXRELID, tuple,
															   Anum_pg_index_indcollation,
															   &isnull));
	for (i = 0; offence == NULL && i < index->indnkeyatts; i++)
	{
		if (!builtin(opclasses->values[i]))
			offence = psprintf("operator class %s",
							   opclass_name(opclasses->values[i]));
		else if (!builtin_or_none(collations->values[i]))
			offence = psprintf("collation %s", generate_collation_name(collations->values[i]));
	}
	if (offence == NULL)
		offence = ShardExprOffence(stored_expression(tuple, INDEXRELID, Anum_pg_index_indexprs));
	if (offence == NULL)
		offence = ShardExprOffence(stored_expression(tuple, INDEXRELID, Anum_pg_index_indpred));
	ReleaseSysCache(tuple);

	if (offence != NULL)
		refuse(what, relid, offence,
			   definition ? definition : pg_get_indexdef_string(indexoid));
}

/* constraint_kind names a kind of constraint for messages */
static const char *
constraint_kind(char contype)
{
	switch (contype)
	{
		case CONSTRAINT_CHECK:
			return "check constraint";
		case CONSTRAINT_PRIMARY:
			return "primary key";
		case CONSTRAINT_UNIQUE:
			return "unique constraint";
		case CONSTRAINT_EXCLUSION:
			return "exclusion constraint";
		default:
			return "constraint";
	}
}

/*
 * ShardCheckConstraint refuses the constraint conoid unless its expression,
 * its index and its exclusion operators are all safe to ship.  Messages name
 * it name of table relid, or by its own names when they are not given.
 */
void
ShardCheckConstraint(Oid conoid, const char *name, Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(CONSTROID, ObjectIdGetDatum(conoid));
	Form_pg_constraint con;
	char	   *what;
	char	   *definition;
	char	   *offence = NULL;
	Oid			indexoid;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for constraint %u", conoid);
	con = (Form_pg_constraint) GETSTRUCT(tuple);
	if (!OidIsValid(relid))
		relid = con->conrelid;
	indexoid = con->conindid;
	what = psprintf("%s \"%s\"", constraint_kind(con->contype),
					name ? name : NameStr(con->conname));
	definition = TextDatumGetCString(DirectFunctionCall1(pg_get_constraintdef,
														 ObjectIdGetDatum(conoid)));

	if (con->contype == CONSTRAINT_CHECK)
		offence = ShardExprOffence(stored_expression(tuple, CONSTROID, Anum_pg_constraint_conbin));
	else if (con->contype == CONSTRAINT_EXCLUSION)
	{
		bool		isnull;
		Datum		ops = SysCacheGetAttr(CONSTROID, tuple, Anum_pg_constraint_conexclop,
										  &isnull);
		Datum	   *elems;
		int			nelems;
		int			i;

		if (!isnull)
		{
			deconstruct_array(DatumGetArrayTypeP(ops), OIDOID, sizeof(Oid), true,
							  TYPALIGN_INT, &elems, NULL, &nelems);
			for (i = 0; offence == NULL && i < nelems; i++)
				offence = unsafe_operator(DatumGetObjectId(elems[i]));
		}
	}
	ReleaseSysCache(tuple);

	if (offence != NULL)
		refuse(what, relid, offence, definition);
	if (OidIsValid(indexoid))
		ShardCheckIndex(indexoid, what, relid, definition);
}
