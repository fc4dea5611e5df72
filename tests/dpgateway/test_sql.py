"""The SQL subset parses into exactly the plan the structured query gives, and refuses the rest by name."""

from __future__ import annotations

import pytest

from privmesh.dpgateway.plan import Aggregate, Filter, Function, KeysMode, Operator, Plan, digest, validate_plan
from privmesh.dpgateway.schema import Column, ColumnType, DataFormat, DatasetSpec, Source
from privmesh.dpgateway.sql import parse_sql
from privmesh.runtime.errors import InvalidArgument

SPEC = DatasetSpec("patients", Source("/data/p.csv", DataFormat.CSV), (
    Column("age", ColumnType.INT64, bounds=(18, 90)),
    Column("bmi", ColumnType.FLOAT64, nullable=True, bounds=(15, 45), fill_value=25.0),
    Column("sex", ColumnType.STRING, categories=("F", "M")),
    Column("visit", ColumnType.DATE),
    Column("smoker", ColumnType.BOOL),
))


def _sql(text: str, mode: KeysMode = KeysMode.DECLARED) -> Plan:
    parsed = parse_sql(text)
    return validate_plan(SPEC, parsed.plan(SPEC, mode, ()))


def test_sql_and_structured_plans_are_equal() -> None:
    sql = _sql("SELECT sex, COUNT(*), AVG(bmi) AS m, VAR_POP(age), PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY age) "
               "FROM patients WHERE age BETWEEN 30 AND 60 AND sex IN ('F') AND bmi IS NOT NULL AND 2.5 < bmi "
               "AND visit >= DATE '2024-01-01' AND smoker = TRUE GROUP BY sex")
    structured = validate_plan(SPEC, Plan("patients", (
        Aggregate(Function.COUNT), Aggregate(Function.MEAN, "bmi", "m"), Aggregate(Function.VARIANCE, "age"),
        Aggregate(Function.QUANTILE, "age", quantiles=(0.9,))), (
        Filter("age", Operator.GREATER_OR_EQUAL, (30,)), Filter("age", Operator.LESS_OR_EQUAL, (60,)),
        Filter("sex", Operator.IN, ("F",)), Filter("bmi", Operator.IS_NOT_NULL),
        Filter("bmi", Operator.GREATER, (2.5,)), Filter("visit", Operator.GREATER_OR_EQUAL, ("2024-01-01",)),
        Filter("smoker", Operator.EQUAL, (True,))), ("sex",)))
    assert sql == structured
    assert digest(sql, {"rho": 0.1}) == digest(structured, {"rho": 0.1}) != digest(structured, {"rho": 0.2})
    assert sql.keys == (("F",), ("M",)) and sql.aggregates[3].candidates[0] == 18.0


@pytest.mark.parametrize(("text", "reason"), [
    ("SELECT COUNT(*) FROM patients WHERE age > 1 OR age < 0", "SQL_UNSUPPORTED"),
    ("SELECT COUNT(DISTINCT age) FROM patients", "SQL_UNSUPPORTED"),
    ("SELECT COUNT(*) FROM patients ORDER BY 1", "SQL_UNSUPPORTED"),
    ("SELECT COUNT(*) FROM (SELECT * FROM patients)", "SQL_UNSUPPORTED"),
    ("SELECT COUNT(*) FROM patients WHERE age IN (SELECT age FROM patients)", "SQL_UNSUPPORTED"),
    ("SELECT COUNT(*) FROM patients; SELECT COUNT(*) FROM patients", "SQL_UNSUPPORTED"),
    ("SELECT MAX(age) FROM patients", "SQL_UNSUPPORTED"),
    ("SELECT COUNT(*) FROM patients HAVING COUNT(*) > 3", "SQL_UNSUPPORTED"),
    ("SELECT COUNT(*", "SQL_SYNTAX_ERROR"),
    ("", "SQL_SYNTAX_ERROR"),
])
def test_unsupported_sql_is_refused_by_name(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_sql(text).plan(SPEC, KeysMode.DECLARED, ())
    assert exc.value.reason == reason and [v.field for v in exc.value.violations] == ["sql"]


@pytest.mark.parametrize(("text", "reason"), [
    ("SELECT SUM(sex) FROM patients", "COLUMN_TYPE_MISMATCH"),
    ("SELECT SUM(visit) FROM patients", "COLUMN_TYPE_MISMATCH"),
    ("SELECT COUNT(*) FROM patients WHERE age = 'old'", "COLUMN_TYPE_MISMATCH"),
    ("SELECT COUNT(*) FROM patients WHERE sex < 'M'", "COLUMN_TYPE_MISMATCH"),
    ("SELECT COUNT(*) FROM patients GROUP BY age", "CATEGORIES_MISSING"),
    ("SELECT QUANTILE(age, 1.5) FROM patients", "QUERY_INVALID"),
    ("SELECT COUNT(*) AS n, SUM(age) AS n FROM patients", "QUERY_INVALID"),
])
def test_plans_that_do_not_fit_the_schema_are_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        _sql(text)
    assert exc.value.reason == reason
