"""The expectation suite derived from the feature catalogue, and drift between file and catalogue."""
from __future__ import annotations

import copy
import json

import pytest

from creditgov.data import expectations as ex
from creditgov.errors import SpecError


def _by(suite: dict, kind: str, column: str | None = None) -> list[dict]:
    return [e for e in suite["expectations"]
            if e["type"] == kind and (column is None or e["kwargs"].get("column") == column)]


@pytest.fixture(scope="module")
def catalogue_suite(spec) -> dict:
    return ex.suite_from_catalogue(spec)


def test_one_between_expectation_per_numeric_feature_with_the_catalogue_range(spec, catalogue_suite):
    numeric = [f for f in spec.input_features if f.type == "numeric"]
    between = _by(catalogue_suite, "expect_column_values_to_be_between")
    assert sorted(e["kwargs"]["column"] for e in between) == sorted(f.name for f in numeric)
    for f in numeric:
        (e,) = _by(catalogue_suite, "expect_column_values_to_be_between", f.name)
        assert (e["kwargs"]["min_value"], e["kwargs"]["max_value"]) == tuple(f.range)
        assert e["meta"]["severity"] == "row"
        (typed,) = _by(catalogue_suite, "expect_column_values_to_be_in_type_list", f.name)
        assert {"int64", "float64"} <= set(typed["kwargs"]["type_list"])
        assert "object" not in typed["kwargs"]["type_list"]


def test_one_in_set_expectation_per_categorical_feature_with_its_categories(spec, catalogue_suite):
    categorical = [f for f in spec.features if f.type == "categorical"]
    for f in categorical:
        (e,) = _by(catalogue_suite, "expect_column_values_to_be_in_set", f.name)
        assert e["kwargs"]["value_set"] == list(f.categories)
        assert e["meta"]["severity"] == "row"
        assert not _by(catalogue_suite, "expect_column_values_to_be_between", f.name)
    (target,) = _by(catalogue_suite, "expect_column_values_to_be_in_set", spec.target.column)
    assert target["kwargs"]["value_set"] == spec.target.bad_values + spec.target.good_values
    in_set_columns = {e["kwargs"]["column"] for e in _by(catalogue_suite, "expect_column_values_to_be_in_set")}
    assert in_set_columns == {f.name for f in categorical} | {spec.target.column}


def test_not_null_exactly_for_features_without_missing_allowed(spec, catalogue_suite):
    not_null = {e["kwargs"]["column"] for e in _by(catalogue_suite, "expect_column_values_to_not_be_null")}
    required = {f.name for f in spec.input_features if not f.missing_allowed}
    assert not_null == required | {spec.target.column, spec.source.id_column}
    assert "Income" not in not_null  # 381 real applicants did not state it
    assert {"Seniority", "Records", "Amount"} <= not_null


def test_structural_expectations_are_critical_and_the_rest_are_row_level(spec, catalogue_suite):
    critical_kinds = {"expect_column_to_exist", "expect_column_values_to_be_in_type_list",
                      "expect_table_row_count_to_be_between"}
    for e in catalogue_suite["expectations"]:
        want = "critical" if e["type"] in critical_kinds else "row"
        assert e["meta"]["severity"] == want, e
        assert e["meta"]["rule"]
    exist = {e["kwargs"]["column"] for e in _by(catalogue_suite, "expect_column_to_exist")}
    assert exist == {f.name for f in spec.input_features} | {spec.target.column, spec.source.id_column}
    (rows,) = _by(catalogue_suite, "expect_table_row_count_to_be_between")
    assert rows["kwargs"] == {"min_value": 1}
    (unique,) = _by(catalogue_suite, "expect_column_values_to_be_unique")
    assert unique["kwargs"]["column"] == spec.source.id_column
    assert catalogue_suite["name"] == f"{spec.name}.input"


def test_suite_differences_empty_for_the_catalogue_itself_in_any_order(spec, catalogue_suite):
    shuffled = copy.deepcopy(catalogue_suite)
    shuffled["expectations"].reverse()
    for i, e in enumerate(shuffled["expectations"]):  # what GX adds when it saves a suite
        e["id"] = f"00000000-0000-0000-0000-{i:012d}"
        e["rendered_content"] = []
    assert ex.suite_differences(spec, catalogue_suite) == []
    assert ex.suite_differences(spec, shuffled) == []


def test_suite_differences_detects_a_changed_range_in_the_stored_suite(spec, catalogue_suite):
    stored = copy.deepcopy(catalogue_suite)
    (age,) = _by(stored, "expect_column_values_to_be_between", "Age")
    age["kwargs"]["max_value"] = 99.0
    diffs = ex.suite_differences(spec, stored)
    assert len(diffs) == 2
    assert diffs[0].startswith("missing expect_column_values_to_be_between") and '"max_value": 100' in diffs[0]
    assert diffs[1].startswith("not in catalogue expect_column_values_to_be_between") and '"max_value": 99' in diffs[1]
    assert all('"column": "Age"' in d for d in diffs)


def test_suite_differences_detects_a_catalogue_change(spec, catalogue_suite):
    features = [f.model_copy(update={"range": (21.0, 100.0)}) if f.name == "Age" else f for f in spec.features]
    changed = spec.model_copy(update={"features": features})
    diffs = ex.suite_differences(changed, catalogue_suite)
    assert any(d.startswith("missing") and '"min_value": 21' in d for d in diffs)
    assert any(d.startswith("not in catalogue") and '"min_value": 18' in d for d in diffs)


def test_suite_differences_detects_dropped_and_changed_severity(spec, catalogue_suite):
    dropped = copy.deepcopy(catalogue_suite)
    dropped["expectations"] = [e for e in dropped["expectations"]
                               if not (e["type"] == "expect_column_values_to_not_be_null"
                                       and e["kwargs"]["column"] == "Amount")]
    assert ex.suite_differences(spec, dropped) == [
        'missing expect_column_values_to_not_be_null {"column": "Amount"}']

    demoted = copy.deepcopy(catalogue_suite)
    (exists,) = _by(demoted, "expect_column_to_exist", "Age")
    exists["meta"]["severity"] = "row"
    assert len(ex.suite_differences(spec, demoted)) == 2


def test_write_suite_round_trips_and_checked_suite_refuses_drift(project):
    from creditgov.spec import load_spec

    spec = load_spec("pipelines/application.yaml")
    path = ex.write_suite(spec, project / "expectations" / "rewritten.json")
    assert ex.suite_differences(spec, ex.read_suite(path)) == []
    assert ex.checked_suite(spec)["name"] == f"{spec.name}.input"

    suite_path = project / spec.validation.suite
    stored = json.loads(suite_path.read_text(encoding="utf-8"))
    (between,) = _by(stored, "expect_column_values_to_be_between", "Amount")
    between["kwargs"]["min_value"] = 0.0
    suite_path.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        ex.checked_suite(spec)
    msg = str(info.value)
    assert info.value.exit_code == 3
    assert spec.validation.suite in msg and "Amount" in msg and "creditgov expectations --write" in msg
    assert "and 1 more" in msg and "\n" not in msg


def test_read_suite_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="not found.*creditgov expectations --write"):
        ex.read_suite(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "name": "x",\n  oops\n}', encoding="utf-8")
    with pytest.raises(SpecError, match=r"not valid JSON \(line 3\)"):
        ex.read_suite(bad)
