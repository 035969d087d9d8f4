"""The hostile-input corpus (tests/data/hostile/: README.md, cases.yaml), run in process.

Every case either raises its specific CreditGovError subclass with one line naming the file,
the column (where there is one) and the rule, or returns a ValidationOutcome in which nothing
is lost: rows in = clean + quarantined, each row in exactly one of them, with the expected
rules, and the values as they were read. Cases that creditgov does not handle yet carry a
`bug` in cases.yaml and run as xfail(strict): fixing the bug turns them into failures to
remove the mark, so the corpus stays honest.
"""
from __future__ import annotations

import csv
import io
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from creditgov.data import inputs
from creditgov.data import expectations
from creditgov.data import validate
from creditgov.errors import CreditGovError, QuarantineError
from creditgov.spec import load_spec

from helpers import HOSTILE_DIR, copy_hostile_project, hostile_corpus, hostile_params, in_project

corpus = hostile_corpus()
CASES = corpus.load_cases()
BY_ID = {c["id"]: c for c in CASES}
# cells a spreadsheet would run as a formula (OWASP CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory):
    """A project root (pipelines/, expectations/) with the corpus in hostile/, as working directory."""
    root = copy_hostile_project(tmp_path_factory.mktemp("hostile-project"))
    (root / "generated").mkdir()
    with in_project(root):
        yield root


def _run(case: dict, root: Path):
    """What `creditgov validate` does, in process and without writing: spec, suite, read, validate."""
    spec = load_spec(corpus.spec_arg(case))
    suite = expectations.checked_suite(spec)
    data_path = corpus.data_arg(case, root / "generated")
    loaded = inputs.read_path(data_path, spec)
    outcome = validate.validate(loaded.frame, spec, suite, loaded.label)
    return spec, loaded, outcome


def _assert_one_line(msg: str) -> None:
    assert msg.strip(), "empty message"
    assert "\n" not in msg and "\r" not in msg, f"multi-line message: {msg!r}"
    assert "Traceback" not in msg
    assert len(msg) < 1000, f"message of {len(msg)} characters"


def _assert_nothing_lost(frame: pd.DataFrame, outcome, spec) -> None:
    n = len(frame)
    assert outcome.rows_in == n
    assert len(outcome.clean) + len(outcome.quarantine) == n
    q_rows = [int(r) for r in outcome.quarantine["row_number"]]
    clean_rows = [int(i) + 1 for i in outcome.clean.index]
    assert len(set(q_rows)) == len(q_rows), "a row quarantined twice"
    assert not set(q_rows) & set(clean_rows), "a row both clean and quarantined"
    assert sorted(q_rows + clean_rows) == list(range(1, n + 1)), "row numbers are not 1..n"
    # the values are the ones read, for whoever repairs them (personal columns pseudonymised)
    kept = [c for c in frame.columns if c not in outcome.ignored_columns]
    assert list(outcome.clean.columns) == kept
    # dtypes may be normalised (e.g. nullable Int64 to float64), values may not change
    pd.testing.assert_frame_equal(outcome.clean, frame.loc[outcome.clean.index, kept], check_dtype=False)
    personal = {f.name for f in spec.features if f.personal} | ({spec.source.id_column} - {None})
    plain = [c for c in kept if c not in personal]
    got = outcome.quarantine.set_index(outcome.quarantine["row_number"] - 1)[plain]
    want = frame.loc[[r - 1 for r in q_rows], plain]
    pd.testing.assert_frame_equal(got, want, check_names=False, check_index_type=False, check_dtype=False)
    # no reader artefact in what is kept: a BOM in a column name, a carriage return in a value
    assert not any("\ufeff" in str(c) for c in frame.columns)
    for col in kept:
        if frame[col].dtype == object:
            assert not frame[col].dropna().astype(str).str.contains("\r|\ufeff").any(), col


def _rules_by_row(outcome) -> dict[int, list[str]]:
    return {int(r): rules.split("; ") for r, rules in zip(outcome.quarantine["row_number"], outcome.quarantine["rules"])}


def _assert_rules(case: dict, outcome) -> None:
    exp = case["expect"]
    got = _rules_by_row(outcome)
    if "quarantined_all" in exp:
        want = {r: exp["quarantined_all"] for r in range(1, exp["rows_in"] + 1)}
    else:
        want = {int(k): v for k, v in (exp.get("quarantined") or {}).items()}
    assert sorted(got) == sorted(want), f"quarantined rows {sorted(got)}, expected {sorted(want)}"
    for row, rules in want.items():
        if exp.get("rules_match") == "prefix":
            for prefix in rules:
                assert any(r.startswith(prefix) for r in got[row]), f"row {row}: {got[row]} has no rule {prefix!r}..."
        else:
            assert sorted(got[row]) == sorted(rules), f"row {row}"


# ------------------------------------------------------------------------------ the corpus


def test_corpus_has_the_cases_the_issue_asks_for():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40
    for c in CASES:
        assert c["expect"]["outcome"] in ("error", "quarantine", "ok"), c["id"]
        assert c["expect"]["exit"] in (0, 1, 2, 3, 4, 5, 6, 7), c["id"]
        assert c.get("wrong"), c["id"]
        assert bool(c.get("data")) != bool(c.get("generate")), c["id"]
        if c["expect"]["outcome"] == "error":
            err = c["expect"]["error"]
            assert {"DataError": 4, "SpecError": 3, "QuarantineError": 5}[err] == c["expect"]["exit"], c["id"]
            assert c["expect"]["message"], c["id"]
    assert len([c for c in CASES if c.get("cli")]) >= 15


def test_every_corpus_file_is_a_case_and_small():
    referenced = {c["data"] for c in CASES if c.get("data")} | {c["spec"] for c in CASES}
    for c in CASES:
        if c.get("data") and not c.get("absent"):
            assert (HOSTILE_DIR / c["data"]).is_file(), c["data"]
        if c.get("absent"):
            assert not (HOSTILE_DIR / c["data"]).exists()
    on_disk = {p.relative_to(HOSTILE_DIR).as_posix() for p in HOSTILE_DIR.glob("*/*") if p.is_file()}
    suites = {p for p in on_disk if p.endswith(".json")}  # named by a spec case's validation.suite
    for p in suites:
        assert any(p in (HOSTILE_DIR / s).read_text(encoding="utf-8", errors="replace")
                   for s in referenced if s.startswith("spec/")), p
    assert on_disk - suites <= referenced, sorted(on_disk - suites - referenced)
    for p in on_disk:
        assert (HOSTILE_DIR / p).stat().st_size < 20_000, p


def test_readme_lists_every_case():
    readme = (HOSTILE_DIR / "README.md").read_text(encoding="utf-8")
    missing = [c["id"] for c in CASES if f"`{c['id']}`" not in readme]
    assert not missing, f"README.md does not list {missing}"


def test_committed_text_files_are_what_make_corpus_writes():
    made = corpus.corpus()
    stale = [rel for rel, content in made.items()
             if not rel.endswith(".parquet") and (HOSTILE_DIR / rel).read_bytes() != content]
    assert not stale, f"run tests/data/hostile/make_corpus.py: {stale} differ"


# ------------------------------------------------------------------------------- the cases


@pytest.mark.parametrize("case", hostile_params([c for c in CASES if not c.get("cli_only")]))
def test_hostile_case(hostile_root, case):
    exp = case["expect"]
    if exp["outcome"] == "error":
        with pytest.raises(CreditGovError) as info:
            spec, loaded, outcome = _run(case, hostile_root)
            validate.enforce_quarantine_share(outcome, spec, loaded.label)
        err = info.value
        msg = str(err)
        _assert_one_line(msg)
        assert type(err).__name__ == exp["error"], msg
        assert err.exit_code == exp["exit"]
        data_path = corpus.data_arg(case, hostile_root / "generated")
        assert msg.startswith(corpus.message_file(case, data_path) + ": "), msg
        for frag in corpus.message_fragments(case, data_path):
            assert frag in msg, f"{frag!r} not in {msg!r}"
        return

    spec, loaded, outcome = _run(case, hostile_root)
    _assert_nothing_lost(loaded.frame, outcome, spec)
    _assert_rules(case, outcome)
    if "ignored" in exp:
        assert list(outcome.ignored_columns) == exp["ignored"]
    if "ignored_count" in exp:
        assert len(outcome.ignored_columns) == exp["ignored_count"]
    assert outcome.summary()["rows_quarantined"] == len(outcome.quarantine)

    # the quarantine file has every quarantined row, nothing more
    qfile = validate.write_quarantine(outcome, hostile_root / "quarantine-check", case["id"])
    written = pd.read_csv(qfile, dtype=str, keep_default_na=False)
    assert written["row_number"].astype(int).tolist() == outcome.quarantine["row_number"].tolist()
    assert written["rules"].tolist() == outcome.quarantine["rules"].tolist()

    if exp["exit"] == 5:
        with pytest.raises(QuarantineError) as info:
            validate.enforce_quarantine_share(outcome, spec, loaded.label)
        msg = str(info.value)
        _assert_one_line(msg)
        assert info.value.exit_code == 5
        assert msg.startswith(f"{loaded.label}: {len(outcome.quarantine)} of {outcome.rows_in} rows quarantined")
        for frag in exp.get("message", []):
            assert frag in msg, f"{frag!r} not in {msg!r}"
    else:
        assert exp["exit"] == 0
        validate.enforce_quarantine_share(outcome, spec, loaded.label)


# ----------------------------------------------------------- what reaches the quarantine file


def _written_cells(case_id: str, root: Path) -> list[dict]:
    _, _, outcome = _run(BY_ID[case_id], root)
    path = validate.write_quarantine(outcome, root / "quarantine-cells", case_id)
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("case_id", ["app_formula_injection", "beh_formula_in_fields"])
def test_formulas_are_neutralised_in_the_quarantine_file(hostile_root, case_id):
    rows = _written_cells(case_id, hostile_root)
    assert rows
    raw = [(r["row_number"], col, v) for r in rows for col, v in r.items()
           if v and v.startswith(FORMULA_START) and not _is_number(v)]
    assert not raw, f"formulas written raw: {raw}"


def test_quarantine_file_keeps_formula_rows_and_pseudonymises_personal_fields(hostile_root):
    rows = _written_cells("beh_formula_in_fields", hostile_root)
    assert [r["row_number"] for r in rows] == ["1", "2"]
    text = "\n".join(",".join(r.values()) for r in rows)
    assert "HYPERLINK" not in text and "555-0100" not in text  # customer_name, phone: personal
    frame = pd.read_csv(HOSTILE_DIR / BY_ID["beh_formula_in_fields"]["data"], dtype=str)
    assert frame.loc[0, "account_id"] not in text
    assert all(len(r["customer_name"]) == 24 and len(r["phone"]) == 24 for r in rows)


def test_script_injection_is_kept_as_data_not_interpreted(hostile_root):
    rows = _written_cells("app_script_injection", hostile_root)
    assert rows[0]["Job"] == "<script>alert(1)</script>"  # CSV is data; HTML reports must escape it
    assert rows[1]["Home"] == '<img src=x onerror="alert(1)">'


# ---------------------------------------------------------------------------- the YAML bomb


def test_yaml_bomb_fails_fast_without_expanding(hostile_root):
    from creditgov.errors import SpecError

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(SpecError) as info:
            load_spec(corpus.spec_arg(BY_ID["spec_yaml_bomb"]))
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _assert_one_line(str(info.value))
    assert seconds < 2, f"{seconds:.1f} s"
    assert peak < 50_000_000, f"peak {peak / 1e6:.0f} MB: the aliases were expanded"


def test_utf8_offset_helper_finds_the_first_bad_byte_across_chunks(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes("a,b\n".encode() + "é".encode() * 10 + b"\xe9")
    assert corpus.utf8_offset(p, chunk=3) == 24
    p.write_bytes("a,é\n".encode())
    assert corpus.utf8_offset(p, chunk=3) is None
