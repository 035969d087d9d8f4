"""Validate an input batch with Great Expectations: clean rows + quarantined rows, nothing lost.

Critical expectations (see expectations.py) stop the run with a one-line DataError.
Row expectations never stop it: the rows they flag go to quarantine with every
rule each broke, and rows in = clean rows + quarantined rows, always.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from creditgov.errors import DataError, QuarantineError
from creditgov.spec import PipelineSpec

# GX result keys that carry raw values: dropped for personal-data columns before storing.
_VALUE_KEYS = ("unexpected_list", "partial_unexpected_list", "partial_unexpected_counts", "observed_value")


@dataclass(frozen=True)
class ValidationOutcome:
    clean: pd.DataFrame
    quarantine: pd.DataFrame  # the offending rows, plus row_number (1-based) and rules
    rows_in: int
    gx_result: dict = field(repr=False)  # the GX validation result, personal values redacted
    ignored_columns: tuple[str, ...] = ()

    @property
    def share_quarantined(self) -> float:
        return len(self.quarantine) / self.rows_in if self.rows_in else 0.0

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for rules in self.quarantine.get("rules", pd.Series(dtype=object)):
            for r in rules.split("; "):
                counts[r] = counts.get(r, 0) + 1
        return {
            "rows_in": self.rows_in,
            "rows_clean": len(self.clean),
            "rows_quarantined": len(self.quarantine),
            "share_quarantined": round(self.share_quarantined, 6),
            "rows_by_rule": dict(sorted(counts.items())),
            "ignored_columns": list(self.ignored_columns),
            "gx_success": bool(self.gx_result.get("success")),
        }


def _run_gx(frame: pd.DataFrame, suite: dict) -> dict:
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (context.data_sources.add_pandas("input")
                 .add_dataframe_asset("batch")
                 .add_batch_definition_whole_dataframe("whole"))
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite["name"], expectations=suite["expectations"]))
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(gx_suite, result_format="COMPLETE").to_json_dict()


def _first_bad_number(series: pd.Series) -> tuple[int, str]:
    parsed = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & parsed.isna()
    if not bad.any():  # every value parses: numbers stored as text, a dtype problem, not a bad value
        return 0, ""
    pos = int(bad.to_numpy().argmax())
    return pos + 1, str(series.iloc[pos])[:40]


def _critical_message(label: str, frame: pd.DataFrame, exp: dict) -> str:
    cfg = exp["expectation_config"]
    kind, kw = cfg["type"], cfg["kwargs"]
    col = kw.get("column")
    if kind == "expect_table_row_count_to_be_between":
        return f"{label}: no data rows (rule: {cfg['meta']['rule']})"
    if kind == "expect_column_to_exist":
        return f"{label}: column '{col}' is missing (rule: {cfg['meta']['rule']})"
    if kind == "expect_column_values_to_be_in_type_list":
        row, value = _first_bad_number(frame[col]) if col in frame else (0, "")
        found = f"text {value!r} in row {row}" if row else f"dtype {frame[col].dtype}"
        return f"{label}: column '{col}' has {found} (rule: numeric type)"
    exc = exp.get("exception_info", {}).get("exception_message") or "failed"
    return f"{label}: column '{col}': {kind} failed ({exc})"


def validate(frame: pd.DataFrame, spec: PipelineSpec, suite: dict, label: str) -> ValidationOutcome:
    """Run the suite on `frame` (rows numbered 0..n-1); raise DataError on a critical failure."""
    if frame.shape[1] == 0:
        raise DataError(f"{label}: no columns (rule: input must have a header)")
    known = ({f.name for f in spec.features} | {spec.target.column} | {spec.source.id_column, spec.source.date_column}
             | spec.policy_columns)
    ignored = tuple(c for c in frame.columns if c not in known)
    frame = frame.drop(columns=list(ignored))
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise DataError(f"{label}: column '{dup}' appears twice (rule: unique column names)")

    result = _run_gx(frame, suite)
    by_sev = {"critical": [], "row": []}
    for r in result["results"]:
        by_sev[r["expectation_config"]["meta"]["severity"]].append(r)
    for r in by_sev["critical"]:
        if not r["success"]:
            raise DataError(_critical_message(label, frame, r))

    rules: dict[int, list[str]] = {}
    for r in by_sev["row"]:
        if r["success"]:
            continue
        if r.get("exception_info", {}).get("raised_exception"):
            col = r["expectation_config"]["kwargs"].get("column")
            msg = r["exception_info"].get("exception_message", "")
            raise DataError(f"{label}: column '{col}': {r['expectation_config']['type']} could not run ({msg})")
        cfg = r["expectation_config"]
        col = cfg["kwargs"].get("column") or "+".join(cfg["kwargs"].get("column_list", []))
        name = f"{col}: {cfg['meta']['rule']}"
        for idx in r["result"].get("unexpected_index_list", []):
            rules.setdefault(int(idx), []).append(name)

    bad_idx = sorted(rules)
    quarantine = frame.loc[bad_idx].copy()
    quarantine.insert(0, "row_number", [i + 1 for i in bad_idx])
    quarantine["rules"] = ["; ".join(rules[i]) for i in bad_idx]
    clean = frame.drop(index=bad_idx)
    personal = {f.name for f in spec.features if f.personal} | ({spec.source.id_column} - {None})
    from creditgov.privacy import pseudonymise

    for col in personal & set(quarantine.columns):  # the quarantine file is shared to fix data: no raw personal data
        quarantine[col] = pseudonymise(quarantine[col])
    return ValidationOutcome(clean=clean, quarantine=quarantine, rows_in=len(frame),
                             gx_result=_redact(result, personal), ignored_columns=ignored)


def _redact(result: dict, columns: set[str]) -> dict:
    """Drop raw values of personal columns from the GX result (counts and row indices stay)."""
    for r in result["results"]:
        if r["expectation_config"]["kwargs"].get("column") in columns:
            for key in _VALUE_KEYS:
                if key in r.get("result", {}):
                    r["result"][key] = "[redacted: personal data]"
    return result


def enforce_quarantine_share(outcome: ValidationOutcome, spec: PipelineSpec, label: str) -> None:
    limit = spec.validation.max_quarantine_share
    if outcome.share_quarantined > limit:
        top = max(outcome.summary()["rows_by_rule"].items(), key=lambda kv: kv[1])
        raise QuarantineError(
            f"{label}: {len(outcome.quarantine)} of {outcome.rows_in} rows quarantined "
            f"({outcome.share_quarantined:.1%} > max_quarantine_share {limit:.1%}); most common rule: {top[0]} ({top[1]} rows)"
        )


def write_quarantine(outcome: ValidationOutcome, directory: str | Path, stem: str) -> Path:
    """Write the quarantined rows (with their rules) as CSV; an empty file with a header when none."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.csv"
    tmp = path.with_suffix(".csv.tmp")
    outcome.quarantine.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def result_json(outcome: ValidationOutcome) -> str:
    return json.dumps(outcome.gx_result, indent=1, default=str)
