/*-------------------------------------------------------------------------
 *
 * ddl_alter_table.c
 *	  ALTER TABLE on a logical table: the coordinator's foreign table and
 *	  every shard's table change together (ddl_propagation.c sends).
 *
 * Each subcommand is either propagated, applied on the coordinator only
 * because its whole effect is there, or refused, naming it:
 *
 *	propagated: ADD COLUMN, DROP COLUMN, ALTER COLUMN TYPE [USING],
 *	  SET/DROP NOT NULL, ADD CONSTRAINT (CHECK, PRIMARY KEY, UNIQUE,
 *	  EXCLUDE), DROP CONSTRAINT, VALIDATE CONSTRAINT;
 *	coordinator only: ALTER COLUMN SET/DROP DEFAULT and DROP EXPRESSION
 *	  (defaults and generated columns are computed on the coordinator),
 *	  SET STATISTICS, SET/RESET (column options), OWNER TO, ENABLE/DISABLE
 *	  TRIGGER, OPTIONS;
 *	refused: the rest (SET TABLESPACE, ENABLE ROW LEVEL SECURITY, INHERIT,
 *	  ATTACH PARTITION, identity columns, foreign keys, ...).
 *
 * The shards' text is made from what PostgreSQL stored on the coordinator
 * once the subcommands ran there (a new column's type, collation and NOT
 * NULL; a new CHECK constraint through pg_get_constraintdef_command), under
 * the shard sessions' settings, so that every name is qualified.  A column
 * added with a default gets it on the shards as a constant computed here,
 * once (what PostgreSQL does for a non-volatile default), then the shards'
 * default is dropped again: defaults stay on the coordinator.  Primary key,
 * unique and exclusion constraints cannot exist on a foreign table; their
 * text comes from ddl_index.c.
 *
 * ALTER FOREIGN TABLE changes the coordinator only (PostgreSQL's meaning),
 * except that the tenant column can be neither dropped nor given a type
 * other than an integer there either.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_type.h"
#include "commands/tablecmds.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "parser/parse_type.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "ddl_internal.h"
#include "tenant_router/adopt.h"
#include "tenant_router/remote_session.h"
#include "tenant_router/shard_ddl_safety.h"

/* what becomes of a subcommand */
typedef enum SubcommandKind
{
	SUB_PROPAGATED,				/* on the coordinator and the shards */
	SUB_SHARDS_ONLY,			/* constraints a foreign table cannot have */
	SUB_COORDINATOR_ONLY		/* its whole effect is on the coordinator */
} SubcommandKind;

/* a subcommand and what was prepared for it before it ran */
typedef struct Subcommand
{
	AlterTableCmd *cmd;
	SubcommandKind kind;
	char	   *alter_type;		/* ALTER COLUMN TYPE: the shards' text */
} Subcommand;

/* subcommand_name names an ALTER TABLE form for messages */
static const char *
subcommand_name(AlterTableType type)
{
	switch (type)
	{
		case AT_SetStorage:
			return "ALTER TABLE ... ALTER COLUMN ... SET STORAGE";
		case AT_SetCompression:
			return "ALTER TABLE ... ALTER COLUMN ... SET COMPRESSION";
		case AT_AddIndex:
		case AT_AddIndexConstraint:
			return "ALTER TABLE ... ADD CONSTRAINT ... USING INDEX";
		case AT_AlterConstraint:
			return "ALTER TABLE ... ALTER CONSTRAINT";
		case AT_ClusterOn:
			return "ALTER TABLE ... CLUSTER ON";
		case AT_DropCluster:
			return "ALTER TABLE ... SET WITHOUT CLUSTER";
		case AT_SetLogged:
			return "ALTER TABLE ... SET LOGGED";
		case AT_SetUnLogged:
			return "ALTER TABLE ... SET UNLOGGED";
		case AT_DropOids:
			return "ALTER TABLE ... SET WITHOUT OIDS";
		case AT_SetAccessMethod:
			return "ALTER TABLE ... SET ACCESS METHOD";
		case AT_SetTableSpace:
			return "ALTER TABLE ... SET TABLESPACE";
		case AT_SetRelOptions:
		case AT_ResetRelOptions:
		case AT_ReplaceRelOptions:
			return "ALTER TABLE ... SET/RESET (storage parameters)";
		case AT_EnableRule:
		case AT_EnableAlwaysRule:
		case AT_EnableReplicaRule:
		case AT_DisableRule:
			return "ALTER TABLE ... ENABLE/DISABLE RULE";
		case AT_AddInherit:
			return "ALTER TABLE ... INHERIT";
		case AT_DropInherit:
			return "ALTER TABLE ... NO INHERIT";
		case AT_AddOf:
			return "ALTER TABLE ... OF";
		case AT_DropOf:
			return "ALTER TABLE ... NOT OF";
		case AT_ReplicaIdentity:
			return "ALTER TABLE ... REPLICA IDENTITY";
		case AT_EnableRowSecurity:
		case AT_DisableRowSecurity:
		case AT_ForceRowSecurity:
		case AT_NoForceRowSecurity:
			return "ALTER TABLE ... ROW LEVEL SECURITY";
		case AT_AttachPartition:
			return "ALTER TABLE ... ATTACH PARTITION";
		case AT_DetachPartition:
		case AT_DetachPartitionFinalize:
			return "ALTER TABLE ... DETACH PARTITION";
		case AT_AddIdentity:
			return "ALTER TABLE ... ADD GENERATED AS IDENTITY";
		case AT_SetIdentity:
			return "ALTER TABLE ... ALTER COLUMN ... SET (identity options)";
		case AT_DropIdentity:
			return "ALTER TABLE ... DROP IDENTITY";
		default:
			return "this form of ALTER TABLE";
	}
}

/* check_column_def refuses what ADD COLUMN cannot carry to the shards */
static void
check_column_def(ColumnDef *def, DdlTable *table)
{
	ListCell   *lc;

	if (def->identity || def->generated)
		DdlRefuse("ALTER TABLE ... ADD COLUMN ... GENERATED", table,
				  "The shards would have to compute it for the rows they hold.",
				  "Add a plain column, fill it with UPDATE, then make the coordinator compute it for new rows with a default.");
	foreach(lc, def->constraints)
	{
		Constraint *con = lfirst_node(Constraint, lc);

		switch (con->contype)
		{
			case CONSTR_NULL:
			case CONSTR_NOTNULL:
			case CONSTR_DEFAULT:
			case CONSTR_CHECK:
			case CONSTR_ATTR_DEFERRABLE:
			case CONSTR_ATTR_NOT_DEFERRABLE:
			case CONSTR_ATTR_DEFERRED:
			case CONSTR_ATTR_IMMEDIATE:
				DdlCheckConstraintName(con->conname, table);
				break;
			case CONSTR_IDENTITY:
			case CONSTR_GENERATED:
				DdlRefuse("ALTER TABLE ... ADD COLUMN ... GENERATED", table,
						  "The shards would have to compute it for the rows they hold.",
						  "Add a plain column, fill it with UPDATE, then make the coordinator compute it for new rows with a default.");
				break;
			default:
				DdlRefuse("ALTER TABLE ... ADD COLUMN with a key or foreign key", table,
						  "A foreign table cannot carry it in the same subcommand.",
						  "Add the column first, then ALTER TABLE ... ADD CONSTRAINT.");
		}
	}
}

/*
 * alter_type_text prepares ALTER COLUMN TYPE for the shards, before the
 * coordinator's column changes: the conversion of the old values (the USING
 * expression, or the implicit cast), checked, and the shards' statement.
 */
static char *
alter_type_text(DdlCall *call, AlterTableCmd *cmd, DdlTable *table, bool trusted)
{
	ColumnDef  *def = castNode(ColumnDef, cmd->def);
	Relation	rel = relation_open(table->relid, NoLock);
	ParseState *pstate = make_parsestate(NULL);
	ParseNamespaceItem *nsitem;
	AttrNumber	attnum = get_attnum(table->relid, cmd->name);
	Form_pg_attribute att;
	Oid			targettype;
	int32		targettypmod;
	Oid			targetcollid;
	Node	   *transform;
	char	   *using_text = NULL;
	char	   *text;
	int			nestlevel;

	if (attnum <= 0)
	{
		relation_close(rel, NoLock);
		return NULL;			/* PostgreSQL reports the missing column */
	}
	att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	pstate->p_sourcetext = call->queryString;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock, NULL, false, true);
	addNSItemToQuery(pstate, nsitem, false, true, true);
	typenameTypeIdAndMod(pstate, def->typeName, &targettype, &targettypmod);
	targetcollid = GetColumnDefCollation(pstate, def, targettype);

	if (strcmp(cmd->name, table->tenant_column) == 0 &&
		targettype != INT2OID && targettype != INT4OID && targettype != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("tenant column \"%s\" must be of type smallint, integer or bigint",
						cmd->name)));

	if (def->raw_default != NULL)
		transform = transformExpr(pstate, copyObject(def->raw_default),
								  EXPR_KIND_ALTER_COL_TRANSFORM);
	else
		transform = (Node *) makeVar(1, attnum, att->atttypid, att->atttypmod,
									 att->attcollation, 0);
	transform = coerce_to_target_type(pstate, transform, exprType(transform),
									  targettype, targettypmod,
									  COERCION_ASSIGNMENT, COERCE_IMPLICIT_CAST, -1);
	if (transform == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" cannot be cast automatically to type %s",
						cmd->name, format_type_be(targettype)),
				 errhint("Specify a USING expression to perform the conversion.")));
	assign_expr_collations(pstate, transform);
	if (expression_returns_set(transform))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("transform expression must not return a set")));

	nestlevel = EnterRemoteSqlSettings();
	if (def->raw_default != NULL)
		using_text = deparse_expression(transform,
										deparse_context_for(table->relname, table->relid),
										false, false);
	text = psprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s%s%s%s%s", table->qualname,
					quote_identifier(cmd->name),
					format_type_with_typemod(targettype, targettypmod),
					def->collClause ? " COLLATE " : "",
					def->collClause ? generate_collation_name(targetcollid) : "",
					using_text ? " USING " : "", using_text ? using_text : "");
	LeaveRemoteSqlSettings(nestlevel);

	if (!trusted)
		ShardCheckExpr(transform, psprintf("the conversion of column \"%s\"", cmd->name),
					   table->relid, text);
	free_parsestate(pstate);
	relation_close(rel, NoLock);
	return text;
}

/*
 * default_literal computes the default of a new column once, as PostgreSQL
 * does for the rows a table already holds, and returns it as a constant for
 * the shards, or NULL if the column has none.
 */
static char *
default_literal(Relation rel, AttrNumber attnum, DdlTable *table)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	Node	   *expr;
	EState	   *estate;
	ExprState  *exprstate;
	Datum		value;
	bool		isnull;
	int16		typlen;
	bool		typbyval;
	Const	   *constant;
	char	   *text;
	int			nestlevel;

	if (!att->atthasdef)
		return NULL;
	expr = build_column_default(rel, attnum);
	if (expr == NULL)
		return NULL;
	if (contain_volatile_functions(expr))
		DdlRefuse("ALTER TABLE ... ADD COLUMN with a volatile default", table,
				  "Every shard would compute other values for the rows it holds.",
				  "Add the column without a default, fill it with UPDATE, then ALTER TABLE ... ALTER COLUMN ... SET DEFAULT.");

	estate = CreateExecutorState();
	exprstate = ExecPrepareExpr((Expr *) expression_planner((Expr *) expr), estate);
	value = ExecEvalExprSwitchContext(exprstate, GetPerTupleExprContext(estate), &isnull);
	get_typlenbyval(att->atttypid, &typlen, &typbyval);
	constant = makeConst(att->atttypid, att->atttypmod, att->attcollation, typlen,
						 isnull ? (Datum) 0 : datumCopy(value, typbyval, typlen),
						 isnull, typbyval);
	FreeExecutorState(estate);

	nestlevel = EnterRemoteSqlSettings();
	text = deparse_expression((Node *) constant, NIL, false, false);
	LeaveRemoteSqlSettings(nestlevel);
	return text;
}

/* add_column_text returns the shards' statements for ADD COLUMN */
static List *
add_column_text(AlterTableCmd *cmd, DdlTable *table)
{
	ColumnDef  *def = castNode(ColumnDef, cmd->def);
	Relation	rel = relation_open(table->relid, NoLock);
	AttrNumber	attnum = get_attnum(table->relid, def->colname);
	Form_pg_attribute att;
	char	   *literal;
	char	   *type;
	char	   *collation = NULL;
	List	   *commands;
	int			nestlevel;

	if (attnum <= 0)
		elog(ERROR, "tenant_router: column \"%s\" was not added", def->colname);
	att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	literal = default_literal(rel, attnum, table);
	nestlevel = EnterRemoteSqlSettings();
	type = format_type_with_typemod(att->atttypid, att->atttypmod);
	if (OidIsValid(att->attcollation) && att->attcollation != get_typcollation(att->atttypid))
		collation = generate_collation_name(att->attcollation);
	LeaveRemoteSqlSettings(nestlevel);

	commands = list_make1(psprintf("ALTER TABLE %s ADD COLUMN %s%s %s%s%s%s%s%s", table->qualname,
								   cmd->missing_ok ? "IF NOT EXISTS " : "",
								   quote_identifier(def->colname), type,
								   collation ? " COLLATE " : "", collation ? collation : "",
								   att->attnotnull ? " NOT NULL" : "",
								   literal ? " DEFAULT " : "", literal ? literal : ""));
	if (literal != NULL)
		commands = lappend(commands,
						   psprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT",
									table->qualname, quote_identifier(def->colname)));
	relation_close(rel, NoLock);
	return commands;
}

/*
 * check_constraints returns the names of relid's CHECK constraints, in the
 * order they were made.  Names, not OIDs: ALTER COLUMN TYPE makes the
 * constraints on the column again, which the shards do on their own.
 */
static List *
check_constraints(Oid relid)
{
	Relation	rel = table_open(ConstraintRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	List	   *oids = NIL;
	List	   *names = NIL;
	ListCell   *lc;

	ScanKeyInit(&key, Anum_pg_constraint_conrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, ConstraintRelidTypidNameIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_constraint con = (Form_pg_constraint) GETSTRUCT(tuple);

		if (con->contype == CONSTRAINT_CHECK)
			oids = lappend_oid(oids, con->oid);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	list_sort(oids, list_oid_cmp);
	foreach(lc, oids)
		names = lappend(names, get_constraint_name(lfirst_oid(lc)));
	return names;
}

/* drop_text returns the shards' ALTER TABLE ... DROP COLUMN or CONSTRAINT */
static char *
drop_text(DdlTable *table, const char *what, AlterTableCmd *cmd)
{
	return psprintf("ALTER TABLE %s DROP %s %s%s%s", table->qualname, what,
					cmd->missing_ok ? "IF EXISTS " : "", quote_identifier(cmd->name),
					cmd->behavior == DROP_CASCADE ? " CASCADE" : "");
}

/* name_in tells whether name is in a list of strings */
static bool
name_in(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	return false;
}

/*
 * classify decides what becomes of a subcommand, refusing what is not
 * propagated and what would break the logical table.
 */
static SubcommandKind
classify(AlterTableCmd *cmd, DdlTable *table)
{
	switch (cmd->subtype)
	{
		case AT_AddColumn:
			check_column_def(castNode(ColumnDef, cmd->def), table);
			return SUB_PROPAGATED;
		case AT_DropColumn:
			if (strcmp(cmd->name, table->tenant_column) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("cannot drop column \"%s\": it is the tenant column of logical table \"%s\"",
								cmd->name, table->relname),
						 errdetail("Rows are routed to the shards by it.")));
			return SUB_PROPAGATED;
		case AT_AlterColumnType:
		case AT_SetNotNull:
		case AT_DropNotNull:
			return SUB_PROPAGATED;
		case AT_AddConstraint:
			{
				Constraint *con = castNode(Constraint, cmd->def);

				DdlCheckConstraintName(con->conname, table);
				switch (con->contype)
				{
					case CONSTR_CHECK:
						return SUB_PROPAGATED;
					case CONSTR_PRIMARY:
					case CONSTR_UNIQUE:
					case CONSTR_EXCLUSION:
						if (con->indexname != NULL)
							DdlRefuse("ALTER TABLE ... ADD CONSTRAINT ... USING INDEX", table,
									  "Indexes of logical tables exist on the shards only.",
									  "Add the constraint without USING INDEX.");
						if (con->indexspace != NULL)
							DdlRefuse("USING INDEX TABLESPACE", table,
									  "tenant_router does not manage the shards' tablespaces.", NULL);
						return SUB_SHARDS_ONLY;
					case CONSTR_FOREIGN:
						DdlRefuse("ALTER TABLE ... ADD FOREIGN KEY", table,
								  "A foreign key cannot be checked across shards.", NULL);
						break;
					default:
						DdlRefuse("this kind of constraint", table, NULL, NULL);
				}
				break;
			}
		case AT_DropConstraint:
		case AT_ValidateConstraint:
			DdlCheckConstraintName(cmd->name, table);
			return SUB_PROPAGATED;
		case AT_ColumnDefault:
		case AT_DropExpression:
		case AT_SetStatistics:
		case AT_SetOptions:
		case AT_ResetOptions:
		case AT_ChangeOwner:
		case AT_EnableTrig:
		case AT_EnableAlwaysTrig:
		case AT_EnableReplicaTrig:
		case AT_DisableTrig:
		case AT_EnableTrigAll:
		case AT_DisableTrigAll:
		case AT_EnableTrigUser:
		case AT_DisableTrigUser:
		case AT_GenericOptions:
		case AT_AlterColumnGenericOptions:
			return SUB_COORDINATOR_ONLY;
		default:
			DdlRefuse(subcommand_name(cmd->subtype), table, NULL, NULL);
	}
	return SUB_COORDINATOR_ONLY;	/* not reached */
}

/*
 * alter_foreign_table runs ALTER FOREIGN TABLE on the coordinator only,
 * after refusing what would break routing.
 */
static void
alter_foreign_table(DdlCall *call, AlterTableStmt *stmt, DdlTable *table)
{
	ListCell   *lc;
	bool		defaults_changed = false;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		if (cmd->subtype == AT_DropColumn || cmd->subtype == AT_AlterColumnType)
			(void) classify(cmd, table);
		if (cmd->subtype == AT_AlterColumnType &&
			strcmp(cmd->name, table->tenant_column) == 0)
		{
			ColumnDef  *def = castNode(ColumnDef, cmd->def);
			Oid			type = typenameTypeId(NULL, def->typeName);

			if (type != INT2OID && type != INT4OID && type != INT8OID)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("tenant column \"%s\" must be of type smallint, integer or bigint",
								cmd->name)));
		}
		if (cmd->subtype == AT_ColumnDefault)
			defaults_changed = true;
	}
	DdlRunLocal(call, (Node *) stmt);
	if (defaults_changed)
		AdoptSequences(table->relid, table->qualname, NIL);
}

/*
 * DdlAlterTable runs ALTER TABLE on a logical table: on the coordinator,
 * then on every shard.
 */
void
DdlAlterTable(DdlCall *call, AlterTableStmt *stmt, DdlTable *table)
{
	AlterTableStmt *local;
	List	   *subcommands = NIL;
	List	   *commands = NIL;
	List	   *before;
	List	   *after;
	ListCell   *lc;
	bool		trusted = DdlUserTrusted();
	bool		defaults_changed = false;

	if (stmt->objtype == OBJECT_FOREIGN_TABLE)
	{
		alter_foreign_table(call, stmt, table);
		return;
	}

	/* the coordinator's lock first, as ALTER TABLE takes it */
	LockRelationOid(table->relid, AccessExclusiveLock);
	local = copyObject(stmt);
	local->cmds = NIL;
	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		Subcommand *sub = palloc0(sizeof(Subcommand));

		sub->cmd = cmd;
		sub->kind = classify(cmd, table);
		if (cmd->subtype == AT_AlterColumnType)
		{
			AlterTableCmd *copy = copyObject(cmd);

			/* a foreign table's column takes no USING: the shards' rows convert */
			sub->alter_type = alter_type_text(call, cmd, table, trusted);
			castNode(ColumnDef, copy->def)->raw_default = NULL;
			local->cmds = lappend(local->cmds, copy);
		}
		else if ((cmd->subtype == AT_DropConstraint || cmd->subtype == AT_ValidateConstraint) &&
				 !OidIsValid(DdlLocalConstraint(table, cmd->name)))
			;					/* a constraint the shards only have */
		else if (sub->kind != SUB_SHARDS_ONLY)
			local->cmds = lappend(local->cmds, cmd);
		if (cmd->subtype == AT_ColumnDefault)
			defaults_changed = true;
		subcommands = lappend(subcommands, sub);
	}

	before = check_constraints(table->relid);
	if (local->cmds != NIL)
		DdlRunLocal(call, (Node *) local);
	else
		DdlRequireOwner(table);
	after = check_constraints(table->relid);

	foreach(lc, subcommands)
	{
		Subcommand *sub = lfirst(lc);
		AlterTableCmd *cmd = sub->cmd;

		switch (cmd->subtype)
		{
			case AT_AddColumn:
				commands = list_concat(commands, add_column_text(cmd, table));
				break;
			case AT_DropColumn:
				commands = lappend(commands, drop_text(table, "COLUMN", cmd));
				break;
			case AT_AlterColumnType:
				if (sub->alter_type != NULL)
					commands = lappend(commands, sub->alter_type);
				break;
			case AT_SetNotNull:
			case AT_DropNotNull:
				commands = lappend(commands,
								   psprintf("ALTER TABLE %s ALTER COLUMN %s %s NOT NULL",
											table->qualname, quote_identifier(cmd->name),
											cmd->subtype == AT_SetNotNull ? "SET" : "DROP"));
				break;
			case AT_AddConstraint:
				if (sub->kind == SUB_SHARDS_ONLY)
					commands = lappend(commands,
									   DdlIndexConstraint(table, castNode(Constraint, cmd->def)));
				break;
			case AT_DropConstraint:
				commands = lappend(commands, drop_text(table, "CONSTRAINT", cmd));
				break;
			case AT_ValidateConstraint:
				commands = lappend(commands,
								   psprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s",
											table->qualname, quote_identifier(cmd->name)));
				break;
			default:
				break;
		}
	}

	/* CHECK constraints added, inline in ADD COLUMN or by ADD CONSTRAINT */
	foreach(lc, after)
	{
		Oid			conoid;
		int			nestlevel;

		if (name_in(before, lfirst(lc)))
			continue;
		conoid = DdlLocalConstraint(table, lfirst(lc));
		if (!trusted)
			ShardCheckConstraint(conoid, NULL, InvalidOid);
		nestlevel = EnterRemoteSqlSettings();
		commands = lappend(commands, pg_get_constraintdef_command(conoid));
		LeaveRemoteSqlSettings(nestlevel);
	}

	DdlSendToShards(table, commands);
	if (defaults_changed)
		AdoptSequences(table->relid, table->qualname, NIL);
}
