/*-------------------------------------------------------------------------
 *
 * fast_path.c
 *	  The router's fast path: a planner hook that sends a statement whose
 *	  logical tables are all pinned to one tenant whole to that tenant's
 *	  shard, as one round trip.
 *
 * A logical table is pinned when a condition that filters its rows says
 * tenant_column = value, where the value is a constant, a parameter or a
 * stable expression, or equates its tenant column with that of a pinned
 * table (a join, a correlated subquery).  WHERE and INNER JOIN conditions
 * filter every table they mention; a LEFT JOIN's ON condition only its
 * right side.  Every logical table scanned anywhere in the statement
 * (subqueries, CTEs, sublinks, views) must be pinned, to the same value.
 * An INSERT ... VALUES is pinned by the value of its tenant column, the
 * same in every row; its values, defaults included, are computed on the
 * coordinator, row by row.  Reference tables need no pin: every shard has
 * their whole copy, so a statement pinned to one tenant reads them on that
 * tenant's shard; a write to a reference table goes to every shard, never
 * through the fast path.  When the fast path does not take a statement,
 * it says why at DEBUG1.
 *
 * The plan is a CustomScan holding the statement's text for the shard,
 * produced by PostgreSQL's own deparser under search_path = pg_catalog, and
 * the expressions that compute the tenant and the parameters.  The shard is
 * chosen when the plan runs, so a cached generic plan follows topology
 * changes.  Anything the fast path cannot take is planned by the standard
 * planner, through the foreign-data wrapper: correct, if slower.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "catalog/pg_opfamily.h"
#include "access/stratnum.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "parser/parsetree.h"
#include "tcop/utility.h"
#include "utils/lsyscache.h"
#include "utils/ruleutils.h"

#include "tenant_router/remote_session.h"
#include "tenant_router/aggregate_rewrite.h"
#include "tenant_router/fast_path.h"
#include "tenant_router/guc.h"
#include "tenant_router/route_cache.h"
#include "tenant_router/router_scan.h"
#include "tenant_router/shippable.h"

/* the most parameters one statement can carry (libpq's limit) */
#define MAX_STATEMENT_PARAMS 65535

static planner_hook_type prev_planner = NULL;

/* one query level of the statement being analyzed */
typedef struct Level
{
	struct Level *parent;
	Query	   *query;
	Node	  **pin;			/* [rtindex]: the tenant value, or NULL */
	AttrNumber *tenant;			/* [rtindex]: tenant column of a logical
								 * table scanned here, or 0 */
	List	  **seeds;			/* [rtindex] of a subquery: (attno, value)
								 * pairs its output is filtered by */
} Level;

typedef struct Analysis
{
	bool		ok;
	const char *reason;
	List	   *pins;			/* the pin of every scanned logical table */
	List	   *rtable;			/* RTE_RELATION entries, for the plan */
	List	   *relids;
	bool		writes;
	LogicalTable *target;		/* the table an INSERT/UPDATE/DELETE writes */
	LogicalTable *first_read;	/* the first logical table scanned */
} Analysis;

/* a condition and the range table entries whose rows it filters */
typedef struct Cond
{
	Expr	   *clause;
	Bitmapset  *filters;
} Cond;

static void analyze_level(Query *query, Level *parent, List *seeds, Analysis *a,
						  bool top);

/* fail records that the fast path cannot take the statement, and the first reason why */
static void
fail(Analysis *a, const char *reason)
{
	if (a->ok)
	{
		a->ok = false;
		a->reason = reason;
	}
}

static Node *
strip_relabel(Node *node)
{
	while (node && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	return node;
}

static Bitmapset *
jointree_relids(Node *jtnode)
{
	Bitmapset  *relids = NULL;
	ListCell   *lc;

	if (jtnode == NULL)
		return NULL;
	if (IsA(jtnode, RangeTblRef))
		return bms_make_singleton(((RangeTblRef *) jtnode)->rtindex);
	if (IsA(jtnode, FromExpr))
	{
		foreach(lc, ((FromExpr *) jtnode)->fromlist)
			relids = bms_add_members(relids, jointree_relids(lfirst(lc)));
		return relids;
	}
	if (IsA(jtnode, JoinExpr))
	{
		JoinExpr   *j = (JoinExpr *) jtnode;

		relids = bms_union(jointree_relids(j->larg), jointree_relids(j->rarg));
		return bms_add_member(relids, j->rtindex);
	}
	return NULL;
}

static void
add_conds(List **conds, Node *quals, Bitmapset *filters)
{
	ListCell   *lc;

	if (quals == NULL || filters == NULL)
		return;
	foreach(lc, make_ands_implicit((Expr *) quals))
	{
		Cond	   *cond = palloc(sizeof(Cond));

		cond->clause = lfirst(lc);
		cond->filters = filters;
		*conds = lappend(*conds, cond);
	}
}

/* collect_conds gathers the conditions of the join tree with what they filter */
static void
collect_conds(Node *jtnode, List **conds)
{
	ListCell   *lc;

	if (jtnode == NULL || IsA(jtnode, RangeTblRef))
		return;
	if (IsA(jtnode, FromExpr))
	{
		FromExpr   *f = (FromExpr *) jtnode;

		foreach(lc, f->fromlist)
			collect_conds(lfirst(lc), conds);
		add_conds(conds, f->quals, jointree_relids(jtnode));
	}
	else if (IsA(jtnode, JoinExpr))
	{
		JoinExpr   *j = (JoinExpr *) jtnode;

		collect_conds(j->larg, conds);
		collect_conds(j->rarg, conds);
		switch (j->jointype)
		{
			case JOIN_INNER:
				add_conds(conds, j->quals, jointree_relids(jtnode));
				break;
			case JOIN_LEFT:
				add_conds(conds, j->quals, jointree_relids(j->rarg));
				break;
			case JOIN_RIGHT:
				add_conds(conds, j->quals, jointree_relids(j->larg));
				break;
			default:
				break;			/* FULL: filters nobody */
		}
	}
}

/*
 * tenant_var returns the range table index of a logical table's tenant
 * column at this level, or 0; for an outer-level reference it sets *outer
 * to the level holding the table.
 */
static Index
tenant_var(Node *node, Level *lv, Level **outer)
{
	Var		   *var;
	Level	   *l = lv;
	Index		i;

	node = strip_relabel(node);
	if (!IsA(node, Var))
		return 0;
	var = (Var *) node;
	for (i = 0; i < var->varlevelsup && l != NULL; i++)
		l = l->parent;
	if (l == NULL || var->varno < 1 || var->varno > list_length(l->query->rtable))
		return 0;
	if (l->tenant[var->varno] == 0 || l->tenant[var->varno] != var->varattno)
		return 0;
	*outer = l;
	return var->varno;
}

static bool
is_tenant_equality(Expr *clause)
{
	return IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2 &&
		get_op_opfamily_strategy(((OpExpr *) clause)->opno, INTEGER_BTREE_FAM_OID) ==
		BTEqualStrategyNumber;
}

/*
 * subquery_column returns the range table index of a subquery at this level
 * whose output column node is, or 0.
 */
static Index
subquery_column(Node *node, Level *lv, AttrNumber *attno)
{
	Var		   *var;
	RangeTblEntry *rte;

	node = strip_relabel(node);
	if (!IsA(node, Var) || ((Var *) node)->varlevelsup != 0)
		return 0;
	var = (Var *) node;
	if (var->varno < 1 || var->varno > list_length(lv->query->rtable) || var->varattno <= 0)
		return 0;
	rte = rt_fetch(var->varno, lv->query->rtable);
	if (rte->rtekind != RTE_SUBQUERY)
		return 0;
	*attno = var->varattno;
	return var->varno;
}

/*
 * simple_subquery tells whether a filter on a subquery's output filters the
 * rows it reads: no grouping, aggregates, DISTINCT, window functions, LIMIT
 * or set operations make one output row depend on other rows.
 */
static bool
simple_subquery(Query *query)
{
	return query->groupClause == NIL && query->groupingSets == NIL &&
		!query->hasAggs && !query->hasWindowFuncs && query->distinctClause == NIL &&
		query->limitCount == NULL && query->limitOffset == NULL &&
		query->setOperations == NULL && !query->hasTargetSRFs &&
		query->havingQual == NULL;
}

static void
seed(Level *lv, Index rti, AttrNumber attno, Node *value)
{
	lv->seeds[rti] = lappend(lv->seeds[rti], list_make2(makeInteger(attno), value));
}

/*
 * find_pins sets lv->pin for the logical tables of this level from its
 * conditions, following equalities between tenant columns, and seeds the
 * subqueries whose output these conditions filter.
 */
static void
find_pins(Level *lv)
{
	List	   *conds = NIL;
	List	   *edges = NIL;	/* pairs (from, to): to gets from's pin */
	ListCell   *lc;
	bool		changed = true;

	collect_conds((Node *) lv->query->jointree, &conds);
	foreach(lc, conds)
	{
		Cond	   *cond = lfirst(lc);
		Node	   *l,
				   *r;
		Level	   *ll = NULL,
				   *rl = NULL;
		Index		li,
					ri;
		int			side;

		if (!is_tenant_equality(cond->clause))
			continue;
		l = linitial(((OpExpr *) cond->clause)->args);
		r = lsecond(((OpExpr *) cond->clause)->args);
		li = tenant_var(l, lv, &ll);
		ri = tenant_var(r, lv, &rl);
		for (side = 0; side < 2; side++)
		{
			AttrNumber	attno;
			Index		sub = subquery_column(side == 0 ? l : r, lv, &attno);
			Node	   *other = side == 0 ? r : l;

			if (sub != 0 && bms_is_member(sub, cond->filters) &&
				IsStandaloneValue(other, false))
				seed(lv, sub, attno, other);
		}
		for (side = 0; side < 2; side++)
		{
			Index		xi = side == 0 ? li : ri;
			Level	   *xl = side == 0 ? ll : rl;
			Index		yi = side == 0 ? ri : li;
			Level	   *yl = side == 0 ? rl : ll;
			Node	   *other = side == 0 ? r : l;

			/* only a table of this level gets a pin here */
			if (xi == 0 || xl != lv || !bms_is_member(xi, cond->filters))
				continue;
			if (yi == 0 && IsStandaloneValue(other, false))
			{
				if (lv->pin[xi] == NULL)
					lv->pin[xi] = other;
			}
			else if (yi != 0 && yl == lv)
				edges = lappend(edges, list_make2_int(yi, xi));
			else if (yi != 0 && yl->pin[yi] != NULL && lv->pin[xi] == NULL)
				lv->pin[xi] = yl->pin[yi];
		}
	}
	while (changed)
	{
		changed = false;
		foreach(lc, edges)
		{
			int			from = linitial_int(lfirst(lc));
			int			to = lsecond_int(lfirst(lc));

			if (lv->pin[from] != NULL && lv->pin[to] == NULL)
			{
				lv->pin[to] = lv->pin[from];
				changed = true;
			}
		}
	}

	/* a subquery column equal to a pinned tenant column is filtered too */
	foreach(lc, conds)
	{
		Cond	   *cond = lfirst(lc);
		int			side;

		if (!is_tenant_equality(cond->clause))
			continue;
		for (side = 0; side < 2; side++)
		{
			Node	   *x = side == 0 ? linitial(((OpExpr *) cond->clause)->args) :
				lsecond(((OpExpr *) cond->clause)->args);
			Node	   *y = side == 0 ? lsecond(((OpExpr *) cond->clause)->args) :
				linitial(((OpExpr *) cond->clause)->args);
			AttrNumber	attno;
			Index		sub = subquery_column(x, lv, &attno);
			Level	   *yl = NULL;
			Index		yi = tenant_var(y, lv, &yl);

			if (sub != 0 && yi != 0 && yl->pin[yi] != NULL &&
				bms_is_member(sub, cond->filters))
				seed(lv, sub, attno, yl->pin[yi]);
		}
	}
}

/*
 * apply_seeds pins what a filter on this subquery's output pins: its
 * tenant columns passed through unchanged, if the subquery is simple.
 */
static void
apply_seeds(Level *lv, List *seeds)
{
	ListCell   *lc;

	if (seeds == NIL || !simple_subquery(lv->query))
		return;
	foreach(lc, seeds)
	{
		AttrNumber	attno = intVal(linitial(lfirst(lc)));
		Node	   *value = lsecond(lfirst(lc));
		TargetEntry *tle = get_tle_by_resno(lv->query->targetList, attno);
		Var		   *var;
		RangeTblEntry *rte;

		if (tle == NULL || !IsA(strip_relabel((Node *) tle->expr), Var))
			continue;
		var = (Var *) strip_relabel((Node *) tle->expr);
		if (var->varlevelsup != 0 || var->varno < 1 ||
			var->varno > list_length(lv->query->rtable))
			continue;
		rte = rt_fetch(var->varno, lv->query->rtable);
		if (lv->tenant[var->varno] == var->varattno && lv->pin[var->varno] == NULL)
			lv->pin[var->varno] = value;
		else if (rte->rtekind == RTE_SUBQUERY)
			seed(lv, var->varno, var->varattno, value);
	}
}

static bool
sublink_walker(Node *node, void *context)
{
	void	  **args = (void **) context;

	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
	{
		SubLink    *sublink = (SubLink *) node;

		analyze_level((Query *) sublink->subselect, args[0], NIL, args[1], false);
		return sublink_walker(sublink->testexpr, context);
	}
	if (IsA(node, Query))
		return false;			/* levels are analyzed by analyze_level */
	return expression_tree_walker(node, sublink_walker, context);
}

/*
 * analyze_level checks one query level and, recursively, the levels under
 * it: every table is a logical table, and every one scanned is pinned.
 */
static void
analyze_level(Query *query, Level *parent, List *seeds, Analysis *a, bool top)
{
	int			nrtes = list_length(query->rtable);
	Level		lv;
	Bitmapset  *scanned = jointree_relids((Node *) query->jointree);
	ListCell   *lc;
	Index		rti;
	void	   *walker_args[2];

	if (!a->ok)
		return;
	if (query->commandType == CMD_MERGE || query->utilityStmt != NULL)
	{
		fail(a, query->commandType == CMD_MERGE ? "MERGE" : "a utility statement");
		return;
	}
	if (query->withCheckOptions != NIL)
	{
		fail(a, "a WITH CHECK OPTION of a view or a row level security policy");
		return;
	}
	if (!top && query->commandType == CMD_INSERT)
	{
		fail(a, "an INSERT in a WITH clause");
		return;
	}
	if (query->rowMarks != NIL || query->commandType != CMD_SELECT)
		a->writes = true;

	lv.parent = parent;
	lv.query = query;
	lv.pin = palloc0(sizeof(Node *) * (nrtes + 1));
	lv.tenant = palloc0(sizeof(AttrNumber) * (nrtes + 1));
	lv.seeds = palloc0(sizeof(List *) * (nrtes + 1));

	rti = 0;
	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);
		bool		is_scanned;
		LogicalTable *table;

		rti++;
		if (rte->rtekind == RTE_NAMEDTUPLESTORE)
		{
			fail(a, "a trigger's transition table");
			return;
		}
		if (rte->rtekind != RTE_RELATION)
			continue;
		a->rtable = lappend(a->rtable, copyObject(rte));
		a->relids = list_append_unique_oid(a->relids, rte->relid);
		is_scanned = bms_is_member(rti, scanned);
		if (!is_scanned && rti != query->resultRelation)
			continue;			/* a view's placeholder, ON CONFLICT's EXCLUDED */
		table = rte->relkind == RELKIND_FOREIGN_TABLE ? LookupRouterTable(rte->relid) : NULL;
		if (table == NULL)
		{
			fail(a, psprintf("table \"%s\" is not a logical table", get_rel_name(rte->relid)));
			return;
		}
		if (rte->securityQuals != NIL || rte->tablesample != NULL)
		{
			fail(a, psprintf("%s on %s table \"%s\"",
							 rte->tablesample ? "TABLESAMPLE" : "row level security",
							 table->is_reference ? "reference" : "logical",
							 get_rel_name(rte->relid)));
			return;
		}
		if (table->is_reference)
		{
			/* read on the tenant's shard, whose copy is whole */
			if (rti == query->resultRelation)
			{
				fail(a, psprintf("a write to reference table \"%s\" goes to every shard",
								 get_rel_name(rte->relid)));
				return;
			}
			continue;
		}
		if (rti == query->resultRelation)
		{
			if (table->has_triggers || table->has_generated)
			{
				fail(a, psprintf("logical table \"%s\" has triggers or generated columns",
								 get_rel_name(rte->relid)));
				return;
			}
			if (top)
				a->target = table;
		}
		if (is_scanned)
		{
			lv.tenant[rti] = table->tenant_attno;
			if (a->first_read == NULL)
				a->first_read = table;
		}
	}

	apply_seeds(&lv, seeds);
	find_pins(&lv);
	for (rti = 1; rti <= nrtes; rti++)
	{
		if (lv.tenant[rti] == 0)
			continue;
		if (lv.pin[rti] == NULL)
		{
			fail(a, psprintf("logical table \"%s\" is not pinned to one tenant",
							 get_rel_name(rt_fetch(rti, query->rtable)->relid)));
			return;
		}
		a->pins = lappend(a->pins, lv.pin[rti]);
	}

	/* the levels below */
	rti = 0;
	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		rti++;
		if (rte->rtekind == RTE_SUBQUERY)
			analyze_level(rte->subquery, &lv, lv.seeds[rti], a, false);
	}
	foreach(lc, query->cteList)
		analyze_level((Query *) ((CommonTableExpr *) lfirst(lc))->ctequery, &lv, NIL, a,
					  false);
	walker_args[0] = &lv;
	walker_args[1] = a;
	query_tree_walker(query, sublink_walker, walker_args, QTW_IGNORE_RC_SUBQUERIES);
}

/* same_pin tells whether two pins are certainly the same tenant */
static bool
same_pin(Node *x, Node *y)
{
	x = strip_relabel(x);
	y = strip_relabel(y);
	if (equal(x, y))
		return true;
	if (IsA(x, Const) && IsA(y, Const) &&
		!((Const *) x)->constisnull && !((Const *) y)->constisnull)
		return TenantDatumToInt64(((Const *) x)->constvalue, getBaseType(((Const *) x)->consttype)) ==
			TenantDatumToInt64(((Const *) y)->constvalue, getBaseType(((Const *) y)->consttype));
	return false;
}

/*
 * insert_values turns the rows of an INSERT into parameters computed on the
 * coordinator, row after row and column after column as the executor would
 * compute them, defaults included.  values_rti is the VALUES list of a
 * multi-row INSERT (copy's then holds parameters only), or 0 for a single
 * row (its target list then does).  Every row must be for one tenant: the
 * same constant, parameter or stable expression.  It returns the number of
 * the tenant's parameter, or 0 if the tenant column is not given.
 */
static int
insert_values(Query *copy, Index values_rti, LogicalTable *table, ShipContext *ctx,
			  Analysis *a)
{
	RangeTblEntry *values = values_rti ? rt_fetch(values_rti, copy->rtable) : NULL;
	List	   *rows = values ? values->values_lists : list_make1(NIL);
	List	   *param_rows = NIL;
	Node	   *tenant = NULL;
	int			tenant_param = 0;
	ListCell   *row;
	ListCell   *lc;

	foreach(row, rows)
	{
		List	   *params = NIL;

		foreach(lc, copy->targetList)
		{
			TargetEntry *tle = lfirst(lc);
			Node	   *expr = (Node *) tle->expr;
			Node	   *param;

			if (tle->resjunk)
				continue;
			/* a column of the VALUES list: this row's item */
			if (values && IsA(expr, Var) && ((Var *) expr)->varno == values_rti &&
				((Var *) expr)->varlevelsup == 0)
				expr = list_nth(lfirst(row), ((Var *) expr)->varattno - 1);
			if (!IsStandaloneValue(expr, true))
			{
				fail(a, "an INSERT value that needs a subquery or another row");
				return 0;
			}
			if (tle->resno == table->tenant_attno)
			{
				if (values && contain_volatile_functions(expr))
				{
					fail(a, "a multi-row INSERT whose tenant is computed by a volatile function");
					return 0;
				}
				if (tenant != NULL && !same_pin(tenant, expr))
				{
					fail(a, "a multi-row INSERT for more than one tenant");
					return 0;
				}
				tenant = expr;
			}
			param = ShipParam(expr, ctx);
			if (tle->resno == table->tenant_attno)
				tenant_param = ((Param *) strip_relabel(param))->paramid;
			if (values)
				params = lappend(params, param);
			else
				tle->expr = (Expr *) param;
		}
		param_rows = lappend(param_rows, params);
	}

	if (values)
	{
		/* the VALUES list, now of parameters, holds every target column */
		AttrNumber	attno = 0;

		values->values_lists = param_rows;
		values->coltypes = values->coltypmods = values->colcollations = NIL;
		values->eref->colnames = NIL;
		foreach(lc, copy->targetList)
		{
			TargetEntry *tle = lfirst(lc);
			Node	   *param;

			if (tle->resjunk)
				continue;
			param = list_nth(linitial(param_rows), attno++);
			values->coltypes = lappend_oid(values->coltypes, exprType(param));
			values->coltypmods = lappend_int(values->coltypmods, exprTypmod(param));
			values->colcollations = lappend_oid(values->colcollations,
												exprCollation(param));
			values->eref->colnames = lappend(values->eref->colnames,
											 makeString(psprintf("column%d", attno)));
			tle->expr = (Expr *) makeVar(values_rti, attno, exprType(param),
										 exprTypmod(param), exprCollation(param), 0);
		}
	}
	return tenant_param;
}

/*
 * insert_values_rte returns the range table index of the VALUES list of a
 * multi-row INSERT, 0 for a single row, or -1 if the rows come from
 * elsewhere (INSERT ... SELECT, a WITH clause).
 */
static int
insert_values_rte(Query *parse)
{
	List	   *from = parse->jointree->fromlist;
	Index		rti;

	if (parse->cteList != NIL)
		return -1;
	if (from == NIL)
		return 0;
	if (list_length(from) != 1 || !IsA(linitial(from), RangeTblRef))
		return -1;
	rti = ((RangeTblRef *) linitial(from))->rtindex;
	return rt_fetch(rti, parse->rtable)->rtekind == RTE_VALUES ? rti : -1;
}

static TargetEntry *
output_entry(TargetEntry *tle, int resno, Index varno)
{
	Var		   *var = makeVar(varno, resno, exprType((Node *) tle->expr),
							  exprTypmod((Node *) tle->expr),
							  exprCollation((Node *) tle->expr), 0);

	return makeTargetEntry((Expr *) var, resno, tle->resname, false);
}

/*
 * make_plan builds the PlannedStmt: a CustomScan producing the statement's
 * output (or RETURNING) from the shard's rows.
 */
static PlannedStmt *
make_plan(Query *parse, Analysis *a, char *sql, Node *tenant_expr, int tenant_param,
		  List *param_exprs, int flags)
{
	CustomScan *cscan = makeNode(CustomScan);
	PlannedStmt *stmt = makeNode(PlannedStmt);
	List	   *outputs = parse->commandType == CMD_SELECT ? parse->targetList :
		parse->returningList;
	List	   *colnames = NIL;
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	Index		output_varno = list_length(a->rtable) + 1;
	List	   *exprs = NIL;
	ListCell   *lc;
	int			resno = 0;
	char	   *label;

	foreach(lc, outputs)
	{
		TargetEntry *tle = lfirst(lc);

		if (tle->resjunk)
			continue;
		resno++;
		cscan->scan.plan.targetlist = lappend(cscan->scan.plan.targetlist,
											  output_entry(tle, resno, INDEX_VAR));
		cscan->custom_scan_tlist = lappend(cscan->custom_scan_tlist,
										   output_entry(tle, resno, output_varno));
		colnames = lappend(colnames, makeString(tle->resname ? tle->resname : "?column?"));
	}
	/* a range table entry naming the shard's output columns, for EXPLAIN */
	rte->rtekind = RTE_VALUES;
	rte->eref = makeAlias("remote", colnames);
	rte->inFromCl = false;

	exprs = lappend(exprs, tenant_expr ? expression_planner((Expr *) tenant_expr) :
					(Expr *) makeNullConst(INT8OID, -1, InvalidOid));
	foreach(lc, param_exprs)
		exprs = lappend(exprs, expression_planner(lfirst(lc)));

	/* the table that messages name: the one written, or the first one read */
	label = get_rel_name(a->target ? a->target->relid : a->first_read->relid);

	cscan->scan.plan.startup_cost = 0;
	cscan->scan.plan.total_cost = 1;
	cscan->scan.plan.plan_rows = 1;
	cscan->scan.plan.plan_width = 32;
	cscan->scan.plan.parallel_safe = false;
	cscan->scan.scanrelid = 0;
	cscan->flags = 0;
	cscan->custom_exprs = exprs;
	cscan->custom_private = list_make4(makeString(sql), makeInteger(flags),
									   makeInteger(tenant_param), makeString(label));
	cscan->methods = &RouterScanMethods;

	stmt->commandType = parse->commandType;
	stmt->queryId = parse->queryId;
	stmt->hasReturning = (parse->returningList != NIL);
	stmt->hasModifyingCTE = parse->hasModifyingCTE;
	stmt->canSetTag = parse->canSetTag;
	stmt->transientPlan = false;
	stmt->dependsOnRole = false;
	stmt->parallelModeNeeded = false;
	stmt->jitFlags = 0;
	stmt->planTree = (Plan *) cscan;
	stmt->rtable = lappend(list_copy(a->rtable), rte);
	stmt->relationOids = a->relids;
	stmt->stmt_location = parse->stmt_location;
	stmt->stmt_len = parse->stmt_len;
	return stmt;
}

static PlannedStmt *
not_taken(const char **reason, const char *why)
{
	Assert(why != NULL);
	*reason = why;
	return NULL;
}

/*
 * try_fast_path returns the plan that sends parse whole to one shard, or
 * NULL with the reason why it cannot (Citus's deferred error: the caller
 * falls back to the FDW, and says why at DEBUG1).
 */
static PlannedStmt *
try_fast_path(Query *parse, int cursorOptions, const char **reason)
{
	Analysis	a;
	ShipContext ctx;
	Query	   *copy;
	Node	   *tenant_expr = NULL;
	int			tenant_param = -1;
	int			values_rti = 0;
	int			flags = 0;
	char	   *sql;
	int			nestlevel;
	ListCell   *lc;

	memset(&a, 0, sizeof(a));
	a.ok = true;

	if (cursorOptions & CURSOR_OPT_SCROLL)
		return not_taken(reason, "a scrollable cursor");
	if (parse->commandType == CMD_INSERT)
	{
		values_rti = insert_values_rte(parse);
		if (values_rti < 0)
			return not_taken(reason, "an INSERT ... SELECT or an INSERT with a WITH clause");
	}
	analyze_level(parse, NULL, NIL, &a, true);
	if (!a.ok)
		return not_taken(reason, a.reason);

	ShipContextInit(&ctx, 0, true);
	if (parse->commandType == CMD_INSERT)
	{
		/*
		 * A logical table read by a subquery of RETURNING or ON CONFLICT
		 * may live on another shard than the inserted row's tenant: only
		 * the FDW path reads it from the right one.
		 */
		if (a.pins != NIL)
			return not_taken(reason, "a subquery of the INSERT reads a logical table");
		Assert(a.target != NULL);
		copy = copyObject(parse);
		tenant_param = insert_values(copy, values_rti, a.target, &ctx, &a);
		if (!a.ok)
			return not_taken(reason, a.reason);
		if (tenant_param == 0)
			tenant_param = -1;	/* no tenant given: NULL, refused at run time */
		copy->returningList = (List *) ShipExpr((Node *) copy->returningList, &ctx);
		copy->onConflict = (OnConflictExpr *) ShipExpr((Node *) copy->onConflict, &ctx);
		flags |= ROUTER_INSERT;
		if (parse->onConflict != NULL && parse->onConflict->action == ONCONFLICT_UPDATE)
			foreach(lc, parse->onConflict->onConflictSet)
				if (((TargetEntry *) lfirst(lc))->resno == a.target->tenant_attno)
					flags |= ROUTER_SETS_TENANT;
	}
	else
	{
		if (a.pins == NIL)
			return not_taken(reason, "it reads no logical table");
		foreach(lc, a.pins)
			if (!same_pin(linitial(a.pins), lfirst(lc)))
				return not_taken(reason, "its logical tables are pinned to tenants that may differ");
		tenant_expr = linitial(a.pins);
		copy = (Query *) ShipExpr((Node *) parse, &ctx);

		/*
		 * An UPDATE or DELETE through an auto-updatable view has its target
		 * taken from the view's FROM list, marked as being in FROM: the
		 * deparser would name it again after FROM ("table name specified
		 * more than once" on the shard).  A target is never in FROM.
		 */
		if (ctx.ok && copy->resultRelation > 0)
			rt_fetch(copy->resultRelation, copy->rtable)->inFromCl = false;
	}
	if (!ctx.ok)
		return not_taken(reason, ctx.reason);
	if (list_length(ctx.param_exprs) > MAX_STATEMENT_PARAMS)
		return not_taken(reason, psprintf("it needs more than %d parameters",
										  MAX_STATEMENT_PARAMS));

	nestlevel = EnterRemoteSqlSettings();
	sql = pg_get_querydef(copy, false);
	LeaveRemoteSqlSettings(nestlevel);
	while (*sql == ' ')
		sql++;					/* the deparser indents the first line */

	if (a.writes)
		flags |= ROUTER_WRITE;
	if (tenant_expr != NULL && ContainsParam(tenant_expr))
		flags |= ROUTER_TENANT_PARAMS;
	if (parse->commandType != CMD_SELECT)
		flags |= ROUTER_COUNT_ROWS;
	if (ctx.param_exprs != NIL)
		flags |= ROUTER_PREPARE;
	return make_plan(parse, &a, sql, tenant_expr, tenant_param, ctx.param_exprs, flags);
}

static bool
has_logical_table_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		return rte->rtekind == RTE_RELATION && rte->relkind == RELKIND_FOREIGN_TABLE &&
			LookupLogicalTable(rte->relid) != NULL;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, has_logical_table_walker, context,
								 QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, has_logical_table_walker, context);
}

/*
 * tr_planner plans a statement that reads or writes a logical table through
 * the fast path if it can, else through the standard planner (the FDW),
 * saying at DEBUG1 why not.
 */
static PlannedStmt *
tr_planner(Query *parse, const char *query_string, int cursorOptions,
		   ParamListInfo boundParams)
{
	if (parse->commandType != CMD_UTILITY && has_logical_table_walker((Node *) parse, NULL))
	{
		PlannedStmt *stmt = NULL;
		const char *reason = "tenant_router.enable_fast_path is off";

		if (TenantRouterEnableFastPath)
			stmt = try_fast_path(parse, cursorOptions, &reason);
		if (stmt != NULL)
			return stmt;
		ereport(DEBUG1,
				(errmsg("tenant_router fast path not taken for %s: %s",
						GetCommandTagName(CreateCommandTag((Node *) parse)), reason)));
		/* over several shards: count(DISTINCT tenant) computed in parts */
		parse = RewriteTenantCounts(parse);
	}
	if (prev_planner)
		return prev_planner(parse, query_string, cursorOptions, boundParams);
	return standard_planner(parse, query_string, cursorOptions, boundParams);
}

/* InstallPlannerHook installs the fast path; called from _PG_init. */
void
InstallPlannerHook(void)
{
	prev_planner = planner_hook;
	planner_hook = tr_planner;
}
