"""The SQL subset, parsed with sqlglot into the same Plan a structured query gives:

    SELECT <aggregate> [AS alias], ... [, <group column>, ...] FROM <dataset id>
    [WHERE <condition> AND ...] [GROUP BY <column>, ...]

Anything else (joins, subqueries, OR, ORDER BY, LIMIT, HAVING, DISTINCT, expressions over columns) is
refused as SQL_UNSUPPORTED, with the offending construct named.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from privmesh.dpgateway.plan import Aggregate, Filter, Function, KeysMode, Operator, Plan
from privmesh.dpgateway.schema import ColumnType, DatasetSpec, Scalar
from privmesh.runtime.errors import InvalidArgument

MAX_SQL_BYTES = 64 * 1024

_COMPARISONS: dict[type[exp.Expression], tuple[Operator, Operator]] = {
    # the operator as written, and as seen from the column when the literal comes first
    exp.EQ: (Operator.EQUAL, Operator.EQUAL),
    exp.NEQ: (Operator.NOT_EQUAL, Operator.NOT_EQUAL),
    exp.LT: (Operator.LESS, Operator.GREATER),
    exp.LTE: (Operator.LESS_OR_EQUAL, Operator.GREATER_OR_EQUAL),
    exp.GT: (Operator.GREATER, Operator.LESS),
    exp.GTE: (Operator.GREATER_OR_EQUAL, Operator.LESS_OR_EQUAL),
}
_UNSUPPORTED_CLAUSES = ("joins", "order", "limit", "offset", "having", "distinct", "with", "qualify", "windows")


def _unsupported(message: str) -> InvalidArgument:
    return InvalidArgument.single("sql", message, "SQL_UNSUPPORTED")


@dataclass(frozen=True)
class ParsedSql:
    dataset_id: str
    select: exp.Select

    def plan(self, spec: DatasetSpec, keys_mode: KeysMode, keys: tuple[tuple[Scalar, ...], ...]) -> Plan:
        """The plan, with literals typed by the declared columns they are compared with."""
        group_clause = self.select.args.get("group")
        group_by = tuple(_column_name(e, "GROUP BY") for e in (group_clause.expressions if group_clause else []))
        aggregates: list[Aggregate] = []
        for item in self.select.expressions:
            alias = ""
            if isinstance(item, exp.Alias):
                alias, item = item.alias, item.this
            if isinstance(item, exp.Column):
                if _column_name(item, "SELECT") not in group_by:
                    raise _unsupported(f"column {item.sql()!r} is selected but not grouped by")
                continue
            aggregates.append(_aggregate(item, alias))
        where = self.select.args.get("where")
        filters = _conditions(where.this, spec) if where is not None else []
        return Plan(self.dataset_id, tuple(aggregates), tuple(filters), group_by,
                    keys_mode if group_by else KeysMode.DECLARED, keys if group_by else ())


def parse_sql(text: str) -> ParsedSql:
    """The one SELECT in `text` and the dataset it reads; INVALID_ARGUMENT (field "sql") otherwise."""
    if not text.strip():
        raise InvalidArgument.single("sql", "required", "SQL_SYNTAX_ERROR")
    if len(text.encode()) > MAX_SQL_BYTES:
        raise InvalidArgument.single("sql", f"at most {MAX_SQL_BYTES} bytes", "QUERY_INVALID")
    try:
        statements = [s for s in sqlglot.parse(text) if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else "does not parse"
        raise InvalidArgument.single("sql", f"does not parse: {first}", "SQL_SYNTAX_ERROR") from None
    if len(statements) != 1:
        raise _unsupported("exactly one statement")
    select = statements[0]
    if not isinstance(select, exp.Select):
        raise _unsupported("only SELECT queries are supported")
    for clause in _UNSUPPORTED_CLAUSES:
        if select.args.get(clause):
            raise _unsupported(f"{clause.upper()} is not supported")
    source = select.args.get("from_") or select.args.get("from")
    if source is None or not isinstance(source.this, exp.Table) or source.this.args.get("db"):
        raise _unsupported("FROM must name one dataset")
    if any(isinstance(node, exp.Subquery | exp.Union) for node in select.walk()):
        raise _unsupported("subqueries are not supported")
    return ParsedSql(source.this.name, select)


def _column_name(node: exp.Expression, where: str) -> str:
    if not isinstance(node, exp.Column) or node.table:
        raise _unsupported(f"{where} takes plain column names, not {node.sql()!r}")
    return str(node.name)


def _number(node: exp.Expression) -> float:
    negative = isinstance(node, exp.Neg)
    inner = node.this if negative else node
    if not isinstance(inner, exp.Literal) or inner.is_string:
        raise _unsupported(f"expected a number, not {node.sql()!r}")
    value = float(inner.this)
    return -value if negative else value


def _aggregate(node: exp.Expression, alias: str) -> Aggregate:
    if isinstance(node, exp.Count):
        target = node.this
        if isinstance(target, exp.Star):
            return Aggregate(Function.COUNT, alias=alias)
        if isinstance(target, exp.Distinct):
            raise _unsupported("COUNT(DISTINCT ...) is not supported")
        return Aggregate(Function.COUNT, _column_name(target, "COUNT"), alias)
    simple: dict[type[exp.Expression], Function] = {exp.Sum: Function.SUM, exp.Avg: Function.MEAN,
                                                    exp.VariancePop: Function.VARIANCE, exp.Variance: Function.VARIANCE}
    function = simple.get(type(node))  # the exact class: a subclass may mean another aggregate
    if function is not None:
        return Aggregate(function, _column_name(node.this, function.value), alias)
    if isinstance(node, exp.Median):
        return Aggregate(Function.QUANTILE, _column_name(node.this, "MEDIAN"), alias, quantiles=(0.5,))
    if isinstance(node, exp.Quantile):
        return Aggregate(Function.QUANTILE, _column_name(node.this, "QUANTILE"), alias,
                         quantiles=(_number(node.args["quantile"]),))
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        order = node.expression
        if not isinstance(order, exp.Order) or len(order.expressions) != 1:
            raise _unsupported("PERCENTILE_CONT needs WITHIN GROUP (ORDER BY <column>)")
        ordered = order.expressions[0]
        if ordered.args.get("desc"):
            raise _unsupported("PERCENTILE_CONT orders ascending only")
        return Aggregate(Function.QUANTILE, _column_name(ordered.this, "PERCENTILE_CONT"), alias,
                         quantiles=(_number(node.this.this),))
    raise _unsupported(f"{node.sql()!r} is not a supported aggregate")


def _literal(node: exp.Expression, column_type: ColumnType | None) -> Scalar:
    """A literal typed for the column (an unknown column keeps the literal's own type; the plan refuses it)."""
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        return str(node.this.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal) and node.is_string:
        return str(node.this)
    value = _number(node)
    if column_type is ColumnType.FLOAT64:
        return value
    return int(value) if value.is_integer() and abs(value) < 2**63 else value


def _conditions(node: exp.Expression, spec: DatasetSpec) -> list[Filter]:
    if isinstance(node, exp.Paren):
        return _conditions(node.this, spec)
    if isinstance(node, exp.And):
        return _conditions(node.this, spec) + _conditions(node.expression, spec)
    negated = isinstance(node, exp.Not)
    inner = node.this if negated else node
    if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
        column = _column_name(inner.this, "IS NULL")
        return [Filter(column, Operator.IS_NOT_NULL if negated else Operator.IS_NULL)]
    if isinstance(inner, exp.In):
        if inner.args.get("query"):
            raise _unsupported("subqueries are not supported")
        column = _column_name(inner.this, "IN")
        kind = _type_of(spec, column)
        return [Filter(column, Operator.NOT_IN if negated else Operator.IN,
                       tuple(_literal(v, kind) for v in inner.expressions))]
    if negated:
        raise _unsupported("NOT is supported only in NOT IN and IS NOT NULL")
    if isinstance(node, exp.Between):
        column = _column_name(node.this, "BETWEEN")
        kind = _type_of(spec, column)
        return [Filter(column, Operator.GREATER_OR_EQUAL, (_literal(node.args["low"], kind),)),
                Filter(column, Operator.LESS_OR_EQUAL, (_literal(node.args["high"], kind),))]
    operators = _COMPARISONS.get(type(node))
    if operators is not None:
        left, right = node.this, node.expression
        if isinstance(left, exp.Column):
            column, literal, operator = _column_name(left, "WHERE"), right, operators[0]
        elif isinstance(right, exp.Column):
            column, literal, operator = _column_name(right, "WHERE"), left, operators[1]
        else:
            raise _unsupported(f"{node.sql()!r} compares no column")
        return [Filter(column, operator, (_literal(literal, _type_of(spec, column)),))]
    if isinstance(node, exp.Or):
        raise _unsupported("OR is not supported; use IN")
    raise _unsupported(f"{node.sql()!r} is not a supported condition")


def _type_of(spec: DatasetSpec, name: str) -> ColumnType | None:
    column = spec.column(name)
    return column.type if column else None
