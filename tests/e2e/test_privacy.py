"""End to end: planted personal data never leaves the input.

A small simulated book (4,000 accounts, default scenario) gets planted, unique personal values in
every monthly snapshot: names '测试张三00001'..., phones '139xxxxxxxx' (one per account), and in the
batches scored or validated an extra column `national_id` that is in no catalogue, plus bad rows
(quarantined) with their own planted values. Then the whole flow runs in-process in a temporary
project: train (a behaviour spec copy, 30 rounds) and promote, decide a month against the previous
one, report, monitor two months with the Evidently report, recalibrate, validate a batch with
quarantined rows, and decide again under another pseudonymisation key. Every file the flow wrote
(MLflow store and artifacts, decision logs, audit trail, reports, quarantine) is scanned as bytes,
Parquet decoded to text and SQLite dumped, for any planted value and for the key itself.
"""
from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import in_project, quiet, write_fast_spec

pytestmark = pytest.mark.e2e

SPEC = "pipelines/behaviour-privacy.yaml"
SIM = "data/sim"
KEY = "privacy-test-key-7f3e9a1c"
KEY2 = "privacy-test-other-key-b24d06"
AS_OF = "2025-05-01"
DROP_ENV = ("CREDITGOV_AUDIT_URL", "CREDITGOV_DEBUG")
N_BAD = 3

NAME_PREFIX = "测试"          # every planted name starts with it: no planted name can appear without it
PHONE_RE = re.compile(rb"(?<![0-9])139[0-9]{8}(?![0-9])")
NID_RE = re.compile(rb"(?<![0-9])1101011990[0-9]{8}(?![0-9])")
ACCOUNT_RE = re.compile(rb"A101[0-9]{8}")  # the simulator's raw account ids for seed 20240101


def _name(i: int) -> str:
    return f"测试张三{i:05d}"


def _phone(i: int) -> str:
    return f"139{(i * 7919 + 1234567) % 10**8:08d}"  # unique per account, digits that look like a phone number


def _nid(i: int) -> str:
    return f"1101011990{i:08d}"


def _serial(account_ids: pd.Series) -> np.ndarray:
    return account_ids.str[-8:].astype(int).to_numpy()


def _plant(frame: pd.DataFrame) -> pd.DataFrame:
    s = _serial(frame["account_id"])
    return frame.assign(customer_name=[_name(i) for i in s], phone=[_phone(i) for i in s])


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")


def _with_bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The batch with an extra `national_id` column and N_BAD rows that break a rule (age 5), all planted."""
    out = frame.assign(national_id=[_nid(i) for i in _serial(frame["account_id"])])
    bad = out.head(N_BAD).copy()
    serial = 90_000_000 + np.arange(N_BAD)
    bad["account_id"] = [f"A101{i:08d}" for i in serial]
    bad["customer_name"] = [f"测试李四{i:05d}" for i in range(N_BAD)]
    bad["phone"] = [_phone(int(i)) for i in serial]
    bad["national_id"] = [_nid(int(i)) for i in serial]
    bad["age"] = 5.0
    return pd.concat([out, bad], ignore_index=True)


def _privacy_spec(root: Path) -> None:
    """behaviour.yaml on the planted book (the spec is in pipelines/: its paths are relative to that folder),
    cheaper evaluation and monitoring, gates that never stand in the way."""
    write_fast_spec(root, SPEC, base="pipelines/behaviour.yaml", source={"path": f"../{SIM}"},
                    gates={"min_auc": 0.5, "max_auc_shortfall_vs_scorecard": 1.0},
                    monitoring={"bootstrap": 100, "reference_sample": 500, "evidently_sample": 300})


def _hmac(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:24]


@pytest.fixture(scope="module")
def flow(tmp_path_factory, make_project):
    from creditgov.governance import audit
    from creditgov.decision import decide
    from creditgov.jobs import monitoring
    from creditgov.jobs import training
    from creditgov.governance import promote
    from creditgov.jobs import recalibrate
    from creditgov.report import pages
    from creditgov.data import simulate
    from creditgov.spec import load_spec

    root = make_project(tmp_path_factory.mktemp("privacy_project"))
    _privacy_spec(root)
    with in_project(root, drop=DROP_ENV, CREDITGOV_PSEUDONYM_KEY=KEY) as mp:
        # temporary files of the flow (MLflow downloads, GX, Evidently) go inside the project: scanned as well
        (root / "tmp").mkdir()
        mp.setattr(tempfile, "tempdir", str(root / "tmp"))

        scn = simulate.load_scenario("pipelines/scenarios/default.yaml", accounts=4000)
        simulate.simulate(scn, SIM, log=quiet)
        planted_phones: set[bytes] = set()
        for snap in sorted((root / SIM).glob("month=*/snapshot.parquet")):
            frame = _plant(pd.read_parquet(snap))
            planted_phones.update(p.encode() for p in frame["phone"])
            _write_parquet(frame, snap)

        batch = root / "data/batches/month17.parquet"
        _write_parquet(_with_bad_rows(pd.read_parquet(root / SIM / "month=17/snapshot.parquet")), batch)
        labelled = root / "data/batches/labelled04.parquet"
        _write_parquet(_with_bad_rows(simulate.load_months(SIM, [4], labelled=True)), labelled)
        planted_phones.update(p.encode() for p in pd.read_parquet(batch)["phone"])

        spec = load_spec(SPEC)
        trained = training.run_training(spec, SPEC, n_estimators=30, log=quiet)
        version, _ = promote.promote(spec, "privacy test approver", trained.version)
        res = decide.decide(spec, str(batch), as_of=AS_OF, previous=f"{SIM}/month=16/snapshot.parquet", log=quiet)
        audit.record_log(res.path)
        rep = pages.make_report(spec, res.path, "reports", sample=20)
        job = monitoring.monitor(spec, monitoring.simulator_batches(spec, SIM, [13, 14], observed=False),
                                  out_root="reports", evidently=True, log=quiet)
        matured = simulate.load_months(SIM, [5, 6], labelled=True)
        recal = recalibrate.recalibrate(spec, monitoring._validated(spec, matured, f"{SIM} months 5-6"),
                                        f"{SIM} months 5-6", log=quiet)
        validated = training.validate_input(spec, str(labelled))
        mp.setenv("CREDITGOV_PSEUDONYM_KEY", KEY2)
        res2 = decide.decide(spec, str(batch), as_of=AS_OF, out_dir="decisions/other-key", log=quiet)
        mp.setenv("CREDITGOV_PSEUDONYM_KEY", KEY)
        yield SimpleNamespace(root=root, spec=spec, version=version, res=res, res2=res2, report=rep, job=job,
                              recal=recal, validated=validated, batch=batch, labelled=labelled,
                              phones=frozenset(planted_phones))


# --------------------------------------------------------------------------- the scanner


def _texts(path: Path) -> list[bytes]:
    """The file's bytes, and what it holds once decoded: Parquet values as CSV text, SQLite as an SQL dump."""
    raw = path.read_bytes()
    out = [raw]
    if raw[:4] == b"PAR1":
        frame = pd.read_parquet(path)
        out.append(" ".join(map(str, frame.columns)).encode())
        out.append(frame.astype(str).to_csv(index=False).encode("utf-8"))
    elif raw.startswith(b"SQLite format 3\x00"):
        with closing(sqlite3.connect(path)) as c:
            out.append("\n".join(c.iterdump()).encode("utf-8"))
    elif raw[:2] == b"\x1f\x8b":
        out.append(gzip.decompress(raw))
    return out


def _leaks(text: bytes, phones: frozenset) -> list[str]:
    found = []
    if NAME_PREFIX.encode() in text:
        found.append("planted name (UTF-8)")
    if re.search(rb"\\u6d4b\\u8bd5", text, re.IGNORECASE) or b"&#27979;&#35797;" in text or b"&#x6d4b;" in text:
        found.append("planted name (escaped)")
    hits = {m for m in PHONE_RE.findall(text) if m in phones}
    if hits:
        found.append(f"planted phone {sorted(hits)[0].decode()}")
    m = NID_RE.search(text)
    if m:
        found.append(f"planted national id {m.group().decode()}")
    return found


def _outputs(root: Path) -> list[Path]:
    """Every file the flow wrote: everything in the project but its inputs (data/) and its configuration."""
    inputs = {root / "data", root / "pipelines", root / "expectations"}
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(d in p.parents for d in inputs))


# --------------------------------------------------------------------------- tests


def test_the_flow_leaves_nothing_in_the_temporary_directory(flow):
    left = sorted(str(p.relative_to(flow.root / "tmp")) for p in (flow.root / "tmp").rglob("*") if p.is_file())
    assert not left, left[:10]



def test_the_scanner_finds_planted_values_in_the_input(flow):
    """Positive control: the same scan does see the planted values where they are meant to be."""
    texts = b"\n".join(_texts(flow.batch)[1:])  # the decoded values only
    found = _leaks(texts, flow.phones)
    assert any("name" in f for f in found) and any("phone" in f for f in found)
    assert any("national id" in f for f in found)
    # and in the other encodings it decodes: SQLite, and JSON written with ASCII escapes
    db = flow.root.parent / "control.db"
    with closing(sqlite3.connect(db)) as c:
        c.execute("CREATE TABLE t (v TEXT)")
        c.execute("INSERT INTO t VALUES (?)", (_name(7),))
        c.commit()
    assert any("name (UTF-8)" in f for t in _texts(db) for f in _leaks(t, flow.phones))
    assert _leaks(json.dumps({"n": _name(7)}).encode(), flow.phones) == ["planted name (escaped)"]


def test_the_flow_wrote_every_kind_of_artifact(flow):
    root, files = flow.root, _outputs(flow.root)
    names = {p.name for p in files}
    rel = [str(p.relative_to(root)) for p in files]
    assert {"mlflow.db", "audit.db", "model_card.json", "gx_validation_result.json",
            "reference_sample.parquet", "before_after.html", "result.json"} <= names
    assert any(r.startswith("mlartifacts/") and r.endswith("/MLmodel") for r in rel)
    assert flow.res.path.resolve() in [p.resolve() for p in files]
    assert any(r.startswith("reports/") and "/decisions/" in r for r in rel)
    assert any(r.startswith("reports/") and "/notices/" in r and r.endswith(".zh.html") for r in rel)
    evidently = [p for p in rel if Path(p).name.startswith("evidently-") and p.endswith(".html")]
    assert len([p for p in evidently if p.startswith("reports/")]) == 2  # one per monitored month
    assert not [p for p in evidently if p.startswith("mlartifacts/")]  # not copied into MLflow (megabytes each)
    assert all((root / p).stat().st_size > 10_000 for p in evidently)
    bundles = [p for p in rel if Path(p).name.startswith("evidently-") and p.endswith(".js")]
    assert len(bundles) == 1 and bundles[0].startswith("reports/")  # Evidently's script, shared by the run's pages
    # the bad rows were quarantined by decide (in its log) and by validation (in the quarantine file)
    assert flow.res.rows_quarantined == N_BAD
    q = pd.read_csv(flow.validated.quarantine_path, dtype=str)
    assert len(q) == N_BAD and q["rules"].str.contains("age").all()
    assert flow.validated.quarantine_path.resolve() in [p.resolve() for p in files]


def test_no_planted_personal_value_in_any_artifact(flow):
    files = _outputs(flow.root)
    assert len(files) > 50
    leaks = {}
    for path in files:
        found = [f for t in _texts(path) for f in _leaks(t, flow.phones)]
        if found:
            leaks[str(path.relative_to(flow.root))] = sorted(set(found))
    assert not leaks, leaks


def test_the_pseudonymisation_key_is_in_no_artifact(flow):
    for path in _outputs(flow.root):
        for t in _texts(path):
            assert KEY.encode() not in t and KEY2.encode() not in t, path
    assert set(flow.res.log["pseudonym_key"]) == {"environment"}


def test_no_raw_account_id_in_any_artifact(flow):
    """Identifiers are pseudonymised wherever they are written (decision log, audit, quarantine, reports)."""
    leaks = {}
    for path in _outputs(flow.root):
        hits = {m for t in _texts(path) for m in ACCOUNT_RE.findall(t)}
        if hits:
            leaks[str(path.relative_to(flow.root))] = sorted(hits)[:3]
    assert not leaks, leaks


def test_quarantine_file_holds_pseudonyms_of_the_personal_values(flow):
    q = pd.read_csv(flow.validated.quarantine_path, dtype=str)
    src = pd.read_parquet(flow.labelled).tail(N_BAD)
    assert "national_id" not in q.columns  # not in the catalogue: dropped, not copied
    assert list(q["customer_name"]) == [_hmac(KEY, v) for v in src["customer_name"]]
    assert list(q["phone"]) == [_hmac(KEY, v) for v in src["phone"]]
    assert list(q["account_id"]) == [_hmac(KEY, v) for v in src["account_id"]]


def test_account_keys_are_stable_per_key_and_change_with_the_key(flow, monkeypatch):
    from creditgov.data import privacy

    batch = pd.read_parquet(flow.batch)
    log, log2 = flow.res.log, flow.res2.log
    decided = log["status"] == "decided"
    ids = batch["account_id"].iloc[log.loc[decided, "row_number"].to_numpy() - 1]
    assert list(log.loc[decided, "account_key"]) == [_hmac(KEY, v) for v in ids]
    assert list(log2.loc[decided, "account_key"]) == [_hmac(KEY2, v) for v in ids]
    assert (log["account_key"] != log2["account_key"]).all()
    assert list(log["row_number"]) == list(log2["row_number"])

    monkeypatch.setenv("CREDITGOV_PSEUDONYM_KEY", KEY)
    a = privacy.pseudonymise(pd.Series(ids.to_numpy()))
    b = privacy.pseudonymise(pd.Series(ids.to_numpy()))
    assert list(a) == list(b) == list(log.loc[decided, "account_key"])
    assert privacy.key_source() == "environment"
    monkeypatch.setenv("CREDITGOV_PSEUDONYM_KEY", KEY2)
    c = privacy.pseudonymise(pd.Series(ids.to_numpy()))
    assert (a.to_numpy() != c.to_numpy()).all()
    monkeypatch.delenv("CREDITGOV_PSEUDONYM_KEY")
    assert privacy.key_source() == "development"
    assert (privacy.pseudonymise(pd.Series(ids.to_numpy())).to_numpy() != a.to_numpy()).all()


def test_personal_columns_are_redacted_on_the_report_pages(flow):
    page = next((flow.report.directory / "decisions").glob("*.html")).read_text(encoding="utf-8")
    assert page.count("[redacted: personal data]") == 2  # customer_name and phone rows of the inputs table


def test_gx_result_of_a_duplicated_row_carries_no_raw_identifier(flow):
    from creditgov.data import inputs as data
    from creditgov.data import expectations
    from creditgov.data import validate

    spec = flow.spec
    frame = data.load(spec).frame  # the training input, as run_training validates it
    dup = frame.iloc[[17]]
    outcome = validate.validate(pd.concat([frame, dup], ignore_index=True), spec,
                                expectations.checked_suite(spec), "training input with a duplicated row")
    assert "id unique per date" in " ".join(outcome.quarantine["rules"])
    text = validate.result_json(outcome)
    assert json.loads(text)["success"] is False
    assert dup["account_id"].iloc[0] not in text
