"""Property-based tests (hypothesis) of validate -> decide on corrupted credit_data batches.

Each example takes real credit_data rows (rows may repeat, which duplicates ids), corrupts
some cells (missing values, out-of-range numbers, +-inf, unknown categories, case and spacing
changes, formula and markup strings, duplicated ids, text in numeric columns, NA spellings,
a dropped column), writes the batch as CSV and reads it back as creditgov does. Then:

* the reader loses and adds no row;
* validate.validate either raises a one-line DataError naming a column that really is broken,
  or returns an outcome with rows_in == len(clean) + len(quarantine), no row in both, and the
  union of row numbers == 1..n; the quarantined rows and their rules are exactly what an
  independent reading of the suite (the oracle below) says;
* every clean row gets exactly one decision from creditgov.policy.apply_policy with the PDs of
  a quickly fitted CreditModel, so rows in = rows decided + rows quarantined.

derandomize=True: the same examples on every run, so CI is deterministic. NUL bytes are left out of
the generated text: the reader truncates a field at a NUL (corpus case app_nul_byte, a known bug).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from creditgov.data import inputs as data
from creditgov.data import validate
from creditgov.errors import DataError

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
N_CREDIT = 4454
NA_SPELLINGS = ["", "NA", "NaN", "nan", "null"]  # what creditgov's CSV reader reads as missing
HOSTILE_TEXT = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3",
                "<script>alert(1)</script>", "indépendant", "飞行员", "fixed ", " rent", "FIXED", "None",
                "a,b", 'say "hi"', "two\nlines", "tab\there", "\u200b", "🙂"]
NOT_NUMBERS = ["lots", "n/a", "N/A", "1,5", "12abc", "--", "NULL", "None", "TRUE", "1e400x"]
_TMP = Path(tempfile.mkdtemp(prefix="creditgov-properties-"))
# hypothesis keeps caches in <cwd>/.hypothesis: not in the work tree (database=None keeps no examples either)
set_hypothesis_home_dir(_TMP / "hypothesis")


# ------------------------------------------------------------------------------- strategies


def _text():
    return st.one_of(st.sampled_from(HOSTILE_TEXT),
                     st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                             min_size=1, max_size=12))


@st.composite
def corrupted_batch(draw, spec, credit):
    n = draw(st.integers(1, 40))
    rows = draw(st.lists(st.integers(0, N_CREDIT - 1), min_size=n, max_size=n))
    frame = credit.iloc[rows].reset_index(drop=True).astype(object)
    numeric = [f for f in spec.input_features if f.type == "numeric"]
    categorical = [f for f in spec.input_features if f.type == "categorical"]
    target, idc = spec.target.column, spec.source.id_column
    kinds = ["missing", "out_of_range", "inf", "unknown_category", "case", "spaces", "duplicate_id",
             "na_spelling", "target", "text_in_numeric", "drop_column"]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(kinds))
        i = draw(st.integers(0, n - 1))
        if kind == "missing":
            col = draw(st.sampled_from([idc, target] + [f.name for f in spec.input_features]))
            frame.at[i, col] = None
        elif kind == "out_of_range":
            f = draw(st.sampled_from(numeric))
            lo, hi = f.range
            frame.at[i, f.name] = draw(st.sampled_from([lo - 1, -abs(hi) - 1, hi + 1, hi * 10 + 1]))
        elif kind == "inf":
            frame.at[i, draw(st.sampled_from(numeric)).name] = draw(st.sampled_from([math.inf, -math.inf]))
        elif kind == "unknown_category":
            frame.at[i, draw(st.sampled_from(categorical)).name] = draw(_text())
        elif kind in ("case", "spaces"):
            f = draw(st.sampled_from(categorical))
            v = draw(st.sampled_from(f.categories))
            frame.at[i, f.name] = v.upper() if kind == "case" else draw(st.sampled_from([" " + v, v + " ", f" {v} "]))
        elif kind == "duplicate_id":
            frame.at[i, idc] = frame.at[draw(st.integers(0, n - 1)), idc]
        elif kind == "na_spelling":
            col = draw(st.sampled_from([f.name for f in spec.input_features]))
            frame.at[i, col] = draw(st.sampled_from(NA_SPELLINGS))
        elif kind == "target":
            frame.at[i, target] = draw(st.one_of(st.sampled_from(["Bad", "GOOD", "unknown", " bad", "1"]), _text()))
        elif kind == "text_in_numeric":
            frame.at[i, draw(st.sampled_from(numeric)).name] = draw(st.sampled_from(NOT_NUMBERS))
        elif kind == "drop_column" and draw(st.booleans()):  # rarer: half of these draws do nothing
            col = draw(st.sampled_from([target, idc] + [f.name for f in spec.input_features]))
            if col in frame.columns:
                frame = frame.drop(columns=[col])
    return frame


# -------------------------------------------------------------------------------- the oracle


def _oracle(frame: pd.DataFrame, suite: dict) -> dict[int, set[str]]:
    """Rules each row (0-based) breaks, read from the suite's row expectations, without GX."""
    out: dict[int, set[str]] = {}
    for e in suite["expectations"]:
        if e["meta"]["severity"] != "row":
            continue
        kw, col = e["kwargs"], e["kwargs"].get("column")
        s = frame[col]
        if e["type"] == "expect_column_values_to_not_be_null":
            bad = s.isna()
        elif e["type"] == "expect_column_values_to_be_between":
            v = pd.to_numeric(s, errors="coerce")
            bad = s.notna() & ~((v >= kw["min_value"]) & (v <= kw["max_value"]))
        elif e["type"] == "expect_column_values_to_be_in_set":
            bad = s.notna() & ~s.isin(kw["value_set"])
        elif e["type"] == "expect_column_values_to_be_unique":
            bad = s.notna() & s.duplicated(keep=False)
        else:
            raise AssertionError(f"the oracle does not know {e['type']}")
        for i in np.flatnonzero(bad.to_numpy()):
            out.setdefault(int(i), set()).add(f"{col}: {e['meta']['rule']}")
    return out


def _text_cells(frame: pd.DataFrame, spec) -> dict[str, tuple[int, str]]:
    """Numeric catalogue columns read as text: column -> (1-based row, value) of the first bad cell."""
    out = {}
    for f in spec.input_features:
        if f.type == "numeric" and f.name in frame.columns and not pd.api.types.is_numeric_dtype(frame[f.name]):
            parsed = pd.to_numeric(frame[f.name], errors="coerce")
            bad = np.flatnonzero((frame[f.name].notna() & parsed.isna()).to_numpy())
            out[f.name] = (int(bad[0]) + 1, str(frame[f.name].iloc[bad[0]])[:40]) if len(bad) else (0, "")
    return out


def _read_back(frame: pd.DataFrame, spec, name: str):
    path = _TMP / f"{name}.csv"
    frame.to_csv(path, index=False)
    return data.read_path(path, spec)


# ------------------------------------------------------------------------------ properties


@pytest.fixture(scope="module")
def quick_model(tiny_model):
    """The tiny model of tests/conftest.py: the property is about rows, not about the model's quality."""
    return tiny_model


def _check_validate(frame, loaded, spec, suite):
    assert len(loaded.frame) == len(frame), "the CSV reader lost or added rows"
    n = len(frame)
    try:
        outcome = validate.validate(loaded.frame, spec, suite, loaded.label)
    except DataError as err:
        msg = str(err)
        assert msg.startswith(f"{loaded.label}: ") and "\n" not in msg and err.exit_code == 4, msg
        dropped = [c for c in [spec.target.column, spec.source.id_column, *(f.name for f in spec.input_features)]
                   if c not in loaded.frame.columns]
        texts = _text_cells(loaded.frame, spec)
        explained = [f"column '{c}' is missing" for c in dropped]
        explained += [f"column '{c}' has text {v!r} in row {r}" if r else f"column '{c}' has dtype"
                      for c, (r, v) in texts.items()]
        assert any(e in msg for e in explained), f"{msg!r} explains none of {explained}"
        event("batch refused (DataError)")
        return None
    assert not [c for c in spec.input_features if c.name not in loaded.frame.columns], "a missing column passed"
    assert not _text_cells(loaded.frame, spec), "text in a numeric column passed"
    assert outcome.rows_in == n == len(outcome.clean) + len(outcome.quarantine)
    q_rows = outcome.quarantine["row_number"].astype(int).tolist()
    c_rows = [int(i) + 1 for i in outcome.clean.index]
    assert not set(q_rows) & set(c_rows)
    assert sorted(q_rows + c_rows) == list(range(1, n + 1))
    got = {r - 1: set(rules.split("; ")) for r, rules in zip(q_rows, outcome.quarantine["rules"])}
    assert got == _oracle(loaded.frame, suite)
    event("some rows quarantined" if got else "all rows clean")
    return outcome


@SETTINGS
@given(st.data())
def test_validate_keeps_every_row_and_quarantines_exactly_the_broken_ones(spec, stored_suite, credit_data, data):
    frame = data.draw(corrupted_batch(spec, credit_data))
    loaded = _read_back(frame, spec, "validate")
    _check_validate(frame, loaded, spec, stored_suite)


@SETTINGS
@given(st.data())
def test_every_row_is_decided_or_quarantined_exactly_once(spec, stored_suite, credit_data, quick_model, data):
    from creditgov.decision.policy import apply_policy

    frame = data.draw(corrupted_batch(spec, credit_data))
    loaded = _read_back(frame, spec, "decide")
    outcome = _check_validate(frame, loaded, spec, stored_suite)
    if outcome is None:  # the batch was refused as a whole: nothing to decide
        return
    clean = outcome.clean
    if len(clean):
        p = quick_model.predict_pd(clean)
        assert len(p) == len(clean) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
        decided = apply_policy(clean, p, spec.policy)
    else:
        decided = apply_policy(clean, np.array([]), spec.policy)
    assert len(decided) == len(clean) and decided.index.equals(clean.index)
    assert decided["action"].isin(["approve", "decline", "review"]).all()
    assert decided["decided_by"].notna().all() and decided["tier"].notna().all()
    # the decision log's invariant: rows in = rows decided + rows quarantined, each exactly once
    numbers = [int(i) + 1 for i in decided.index] + outcome.quarantine["row_number"].astype(int).tolist()
    assert sorted(numbers) == list(range(1, outcome.rows_in + 1))
