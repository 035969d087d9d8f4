"""The Great Expectations suite of a pipeline, derived from its feature catalogue.

The suite is stored as JSON in expectations/ so that reviewers read and diff it;
`suite_from_catalogue` is how it is written and how tests check that the file
still agrees with the catalogue. Each expectation's meta says its severity:
  critical - the batch cannot be used at all (missing column, wrong type, no rows): stop;
  row      - the rows it flags are quarantined with the rule's name.
"""
from __future__ import annotations

import json
from pathlib import Path

from creditgov.errors import SpecError
from creditgov.spec import Feature, PipelineSpec

NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
    "float16", "float32", "float64", "Float32", "Float64",
]  # fmt: skip


def _exp(kind: str, severity: str, rule: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": kwargs, "meta": {"severity": severity, "rule": rule}}


def _feature_expectations(f: Feature) -> list[dict]:
    out = [_exp("expect_column_to_exist", "critical", "column present", column=f.name)]
    if f.type == "numeric":
        out.append(_exp("expect_column_values_to_be_in_type_list", "critical", "numeric type",
                        column=f.name, type_list=NUMERIC_TYPES))
        lo, hi = f.range
        out.append(_exp("expect_column_values_to_be_between", "row", f"within [{lo:g}, {hi:g}]",
                        column=f.name, min_value=lo, max_value=hi))
    elif f.type == "categorical":
        out.append(_exp("expect_column_values_to_be_in_set", "row", f"one of {f.categories}",
                        column=f.name, value_set=list(f.categories)))
    if not f.missing_allowed:
        out.append(_exp("expect_column_values_to_not_be_null", "row", "not missing", column=f.name))
    return out


# spellings of a yes/no account flag that the on-book policy reads (policy._truthy); anything else is quarantined
BOOLEAN_VALUES = [True, False, "true", "false", "True", "False", "TRUE", "FALSE", "1", "0", 1, 0, "yes", "no", "y", "n"]


def _on_book_expectations(spec: PipelineSpec) -> list[dict]:
    """The account fields the on-book policy reads (previous_pd is computed by decide, not read)."""
    if not (spec.policy and spec.policy.on_book):
        return []
    f = spec.policy.on_book.fields
    out = []
    numeric = [f.current_limit, f.days_past_due, f.cumulative_overdue_days, f.clean_months]
    if f.months_since_limit_change is not None:
        numeric.append(f.months_since_limit_change)
    flags = [f.fraud_signal, f.suspended]
    cf = spec.policy.collections.fields if spec.policy.collections else None
    if cf is not None:  # the collections ladder's account fields
        numeric += [c for c in (cf.days_past_due, cf.months_overdue_12m, cf.hardship_plan_months_left,
                                cf.contacts_30d) if c not in numeric]
        flags.append(cf.hardship_declared)
    for col in numeric:
        if col in {x.name for x in spec.input_features}:
            continue  # already expected as a catalogue feature
        out += [_exp("expect_column_to_exist", "critical", "account field present", column=col),
                _exp("expect_column_values_to_be_in_type_list", "critical", "numeric type", column=col,
                     type_list=NUMERIC_TYPES),
                _exp("expect_column_values_to_be_between", "row", "within [0, 1e12]", column=col,
                     min_value=0, max_value=1e12),
                _exp("expect_column_values_to_not_be_null", "row", "not missing", column=col)]
    for col in flags:
        out += [_exp("expect_column_to_exist", "critical", "account flag present", column=col),
                _exp("expect_column_values_to_be_in_set", "row", "a yes/no flag", column=col,
                     value_set=BOOLEAN_VALUES),
                _exp("expect_column_values_to_not_be_null", "row", "not missing", column=col)]
    return out


def suite_from_catalogue(spec: PipelineSpec) -> dict:
    """The suite (GX 1.x JSON shape) that the spec's catalogue implies."""
    t = spec.target
    exps = [_exp("expect_table_row_count_to_be_between", "critical", "at least one row", min_value=1)]
    exps.append(_exp("expect_column_to_exist", "critical", "target column present", column=t.column))
    exps.append(_exp("expect_column_values_to_not_be_null", "row", "target not missing", column=t.column))
    exps.append(_exp("expect_column_values_to_be_in_set", "row", f"target one of {t.bad_values + t.good_values}",
                     column=t.column, value_set=t.bad_values + t.good_values))
    if spec.source.id_column:
        idc = spec.source.id_column
        exps.append(_exp("expect_column_to_exist", "critical", "id column present", column=idc))
        exps.append(_exp("expect_column_values_to_not_be_null", "row", "id not missing", column=idc))
        if spec.source.date_column:  # panel data: one row per id and date
            exps.append(_exp("expect_compound_columns_to_be_unique", "row", "id unique per date",
                             column_list=[idc, spec.source.date_column]))
        else:
            exps.append(_exp("expect_column_values_to_be_unique", "row", "id unique", column=idc))
    if spec.source.date_column:
        dc = spec.source.date_column
        exps.append(_exp("expect_column_to_exist", "critical", "date column present", column=dc))
        exps.append(_exp("expect_column_values_to_not_be_null", "row", "date not missing", column=dc))
    for f in spec.input_features:  # a derived feature is no column of the data: computed by the model's encoding
        exps.extend(_feature_expectations(f))
    exps.extend(_on_book_expectations(spec))
    return {
        "name": f"{spec.name}.input",
        "expectations": exps,
        "meta": {"generated_from": f"pipeline spec '{spec.name}' feature catalogue",
                 "regenerate_with": "creditgov expectations --write"},
        "notes": None,
    }


def _comparable(suite: dict) -> list[tuple]:
    # GX adds ids and rendered content when it saves; only type, kwargs and meta carry meaning
    return [(e["type"], json.dumps(e.get("kwargs", {}), sort_keys=True), json.dumps(e.get("meta", {}), sort_keys=True))
            for e in suite.get("expectations", [])]


def read_suite(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: expectation suite not found (write it with: creditgov expectations --write)") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: expectation suite is not valid JSON (line {exc.lineno})") from None


def suite_differences(spec: PipelineSpec, suite: dict) -> list[str]:
    """Human-readable differences between a stored suite and the catalogue; empty when they agree."""
    want, have = _comparable(suite_from_catalogue(spec)), _comparable(suite)
    missing = [w for w in want if w not in have]
    extra = [h for h in have if h not in want]
    return [f"missing {t} {k}" for t, k, _ in missing] + [f"not in catalogue {t} {k}" for t, k, _ in extra]


def checked_suite(spec: PipelineSpec) -> dict:
    """The stored suite, refused when it no longer agrees with the catalogue."""
    suite = read_suite(spec.validation.suite)
    diffs = suite_differences(spec, suite)
    if diffs:
        raise SpecError(f"{spec.validation.suite}: suite disagrees with the feature catalogue ({diffs[0]}"
                        f"{f' and {len(diffs) - 1} more' if len(diffs) > 1 else ''}); "
                        "regenerate with: creditgov expectations --write")
    return suite


def write_suite(spec: PipelineSpec, path: str | Path | None = None) -> Path:
    path = Path(path or spec.validation.suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite_from_catalogue(spec), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def for_scoring(suite: dict, spec: PipelineSpec, columns) -> dict:
    """The same suite for a batch to score: target expectations drop out when the batch has no target."""
    if spec.target.column in columns:
        return suite
    keep = [e for e in suite["expectations"] if e.get("kwargs", {}).get("column") != spec.target.column]
    return {**suite, "expectations": keep}
