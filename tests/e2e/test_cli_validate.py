"""CLI contract of `creditgov validate`, run as a real process: exit codes and one-line errors."""
from __future__ import annotations

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def _missing_column(frame: pd.DataFrame, path):
    frame.drop(columns=["Seniority"]).to_csv(path, index=False)


def _text_in_numeric(frame: pd.DataFrame, path):
    frame = frame.copy()
    frame["Amount"] = frame["Amount"].astype(object)
    frame.loc[4, "Amount"] = "two thousand"
    frame.to_csv(path, index=False)


def _empty(frame: pd.DataFrame, path):
    path.write_bytes(b"")


@pytest.mark.parametrize("make, name, column, rule", [
    (_missing_column, "no_seniority.csv", "Seniority", "rule: column present"),
    (_text_in_numeric, "text_amount.csv", "Amount", "rule: numeric type"),
    (_empty, "empty.csv", None, "rule: input must have a header and rows"),
], ids=["missing-column", "text-in-numeric", "empty-file"])
def test_validate_bad_input_exits_4_with_one_line(e2e_root, run_cli, credit_data, make, name, column, rule):
    make(credit_data.head(100), e2e_root / name)
    proc = run_cli("validate", "--data", name)
    assert proc.returncode == 4, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"creditgov: error: {name}: ")
    if column:
        assert f"'{column}'" in line
    assert rule in line
    assert "Traceback" not in proc.stdout + proc.stderr
    if column == "Amount":
        assert "'two thousand' in row 5" in line


def test_validate_good_input_reports_rows_and_rules(e2e_root, run_cli, credit_data):
    frame = credit_data.head(200).copy()
    frame.loc[3, "Age"] = 250
    frame.loc[9, "Records"] = "maybe"
    frame["Comment"] = "free text"
    frame.to_csv(e2e_root / "batch.csv", index=False)
    proc = run_cli("validate", "--data", "batch.csv")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "batch.csv: 200 rows in = 198 clean + 2 quarantined" in out
    assert "1  Age: within [18, 100]" in out and "1  Records: one of ['no', 'yes']" in out
    assert "columns not in the catalogue, ignored: Comment" in out
    written = list((e2e_root / "quarantine").glob("credit-application-*.csv"))
    assert len(written) == 1 and len(pd.read_csv(written[0])) == 2
