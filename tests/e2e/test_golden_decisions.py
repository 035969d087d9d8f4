"""Golden decisions: the decision logs of fixed inputs stay byte-identical (issue 12).

Two small, deterministic projects are rebuilt in a temporary folder exactly as when the golden
files under tests/e2e/golden/ were made: the application model (credit_data, 30 boosting rounds: the
session's application_model_dir, tests/e2e/conftest.py) and the behaviour model (a 2,000-account
simulated book, months 1-3, 30 rounds), each fitted with the spec's seed and thread count and served as
registered version "1". Each decides a fixed batch
with planted bad rows (quarantined: out of range, unknown category, a repeated identifier); the
behaviour batch also with its previous review (--previous). Every engine must write the golden
log: the whole batch in one piece, the batch streamed in chunks, and (application) the Dask engine.

What is compared: each log row's canonical record (creditgov.merkle.records, the audit trail's
leaf) by its SHA-256, against tests/e2e/golden/<name>.leaves.gz; a sample of records kept readable
in <name>.sample.jsonl names the columns that changed when a leaf differs; and the log file's own
SHA-256 while pyarrow is the version that wrote the golden file (its bytes depend on the writer).
No column is left out: nothing in these logs varies from run to run (the input source is a path
relative to the project, the decision time is the as-of date, the model version is pinned).

Regenerate on purpose (a deliberate change to decisions), then review the diff of the sample:
    CREDITGOV_GOLDEN=write .venv/bin/python -m pytest -q tests/e2e/test_golden_decisions.py
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import (QUICK_ROUNDS, fit_saved_model, in_project, names_leaked, notice_body, quiet,
                     serve_saved_models)

pytestmark = pytest.mark.e2e

GOLDEN = Path(__file__).resolve().parent / "golden"
WRITE = os.environ.get("CREDITGOV_GOLDEN") == "write"
AS_OF = "2026-11-01"
ROUNDS = QUICK_ROUNDS  # 30: the application model is the session's application_model_dir (tests/e2e/conftest.py)
VERSION = "1"
BOOK = "data/simulated/golden"
BOOK_ACCOUNTS = 2000
BOOK_MONTHS = 18
DECIDE_MONTH = 17
CHUNK = 700  # rows per chunk of the streamed runs: several chunks per batch
DROP_ENV = ("CREDITGOV_DECISION_LOG", "CREDITGOV_SPEC", "CREDITGOV_PSEUDONYM_KEY", "CREDITGOV_CHUNK_ROWS",
            "CREDITGOV_DEBUG")


def _application_batch(spec, frame: pd.DataFrame) -> pd.DataFrame:
    """credit_data without its target, with bad rows: out of range, unknown category, a repeated id."""
    batch = frame.drop(columns=[spec.target.column]).copy()
    idc = spec.source.id_column
    batch.loc[9, "Age"] = -5
    batch.loc[1500, "Home"] = "castle"
    batch.loc[2999, idc] = batch.loc[3000, idc]  # both rows break the unique-id rule
    batch.loc[4000, "Expenses"] = 20_000
    return batch


def _behaviour_batch(spec, frame: pd.DataFrame) -> pd.DataFrame:
    """Month 17 of the book, with bad rows: out of range, unknown category, a repeated account."""
    batch = frame.copy()
    idc = spec.source.id_column
    batch.loc[4, "age"] = 12
    batch.loc[300, "employment"] = "astronaut"
    batch.loc[801, idc] = batch.loc[800, idc]
    return batch


@pytest.fixture(scope="module")
def golden_project(tmp_path_factory, make_project, application_model_dir):
    from creditgov.data import inputs
    from creditgov.data import simulate
    from creditgov.spec import load_spec

    root = make_project(tmp_path_factory.mktemp("golden_project"))
    with in_project(root, drop=DROP_ENV, CREDITGOV_AUDIT_URL=f"sqlite:///{root / 'audit.db'}") as mp:
        app = load_spec("pipelines/application.yaml")
        app_frame = inputs.load(app).frame
        _application_batch(app, app_frame).to_csv("application-batch.csv", index=False)

        scn = simulate.load_scenario("pipelines/scenarios/default.yaml", accounts=BOOK_ACCOUNTS, months=BOOK_MONTHS)
        simulate.simulate(scn, BOOK, log=quiet)
        beh = load_spec("pipelines/behaviour.yaml")
        beh = beh.model_copy(update={"source": beh.source.model_copy(update={"path": BOOK})})
        beh_model_dir = fit_saved_model(beh, inputs.load(beh).frame, root / "models" / "behaviour", ROUNDS)
        month = pd.read_parquet(f"{BOOK}/month={DECIDE_MONTH:02d}/snapshot.parquet")
        _behaviour_batch(beh, month).to_parquet("behaviour-batch.parquet", index=False)

        # the registry itself is tested elsewhere: here every engine loads the same saved model as version 1
        serve_saved_models(mp, {app.registry.model_name: application_model_dir,
                                beh.registry.model_name: beh_model_dir}, VERSION, "golden-{name}")
        yield SimpleNamespace(root=root, specs={"application": app, "behaviour": beh},
                              batches={"application": "application-batch.csv", "behaviour": "behaviour-batch.parquet"},
                              previous={"application": None,
                                        "behaviour": f"{BOOK}/month={DECIDE_MONTH - 1:02d}/snapshot.parquet"})


# --------------------------------------------------------------------------- the golden files


def _table(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _leaves(path: Path) -> list[str]:
    from creditgov.governance import merkle

    return [bytes(h).hex() for h in merkle.leaf_hashes(_table(path))]


def _records(path: Path) -> list[str]:
    from creditgov.governance import merkle

    return merkle.records(_table(path))


def _sample_rows(log: pd.DataFrame) -> list[int]:
    """A readable sample: every quarantined row, and the first rows of each action and counterfactual kind."""
    picks = list(np.flatnonzero(log["status"].to_numpy() == "quarantined"))
    for action in sorted(log["action"].dropna().unique()):
        picks += list(np.flatnonzero(log["action"].to_numpy() == action)[:2])
    cf = log["counterfactual"].fillna("")
    for kind in ('"found": true', "two-feature changes were not searched", "no change of the actionable"):
        picks += list(np.flatnonzero(cf.str.contains(kind, regex=False).to_numpy())[:1])
    pairs = cf.map(lambda t: t.count('"feature"') == 2)
    picks += list(np.flatnonzero(pairs.to_numpy())[:1])
    if "changed_features" in log:
        picks += list(np.flatnonzero(log["changed_features"].map(len).to_numpy() > 0)[:2])
    return sorted(set(int(i) for i in picks))


def _pyarrow_version() -> str:
    import pyarrow

    return pyarrow.__version__


def _write_golden(name: str, path: Path) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    leaves = _leaves(path)
    with gzip.GzipFile(GOLDEN / f"{name}.leaves.gz", "wb", mtime=0) as fh:
        fh.write(("\n".join(leaves) + "\n").encode())
    log = pd.read_parquet(path)
    records = _records(path)
    rows = _sample_rows(log)
    (GOLDEN / f"{name}.sample.jsonl").write_text(
        "".join(json.dumps({"position": i, "record": json.loads(records[i])}, ensure_ascii=False, sort_keys=True)
                + "\n" for i in rows), encoding="utf-8")
    manifest_path = GOLDEN / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    manifest[name] = {"log_name": path.name, "rows": len(log), "columns": list(log.columns),
                      "statuses": {k: int(v) for k, v in log["status"].value_counts().sort_index().items()},
                      "actions": {k: int(v) for k, v in log["action"].value_counts().sort_index().items()},
                      "log_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "pyarrow": _pyarrow_version()}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _golden(name: str) -> SimpleNamespace:
    manifest = json.loads((GOLDEN / "manifest.json").read_text(encoding="utf-8"))[name]
    with gzip.open(GOLDEN / f"{name}.leaves.gz", "rt") as fh:
        leaves = fh.read().split()
    sample = [json.loads(line) for line in (GOLDEN / f"{name}.sample.jsonl").read_text(encoding="utf-8").splitlines()]
    return SimpleNamespace(manifest=manifest, leaves=leaves, sample=sample)


def _differences(name: str, path: Path) -> list[str]:
    """What differs from the golden log, said so that a reviewer sees which rows and columns moved."""
    gold = _golden(name)
    out = []
    if path.name != gold.manifest["log_name"]:
        out.append(f"log name {path.name} != {gold.manifest['log_name']}")
    log_cols = list(pd.read_parquet(path).columns)
    if log_cols != gold.manifest["columns"]:
        out.append(f"columns differ: {sorted(set(log_cols) ^ set(gold.manifest['columns']))}")
    leaves = _leaves(path)
    if len(leaves) != len(gold.leaves):
        out.append(f"{len(leaves)} rows != {len(gold.leaves)} golden rows")
    bad = [i for i, (a, b) in enumerate(zip(leaves, gold.leaves)) if a != b]
    if bad:
        out.append(f"{len(bad)} of {len(gold.leaves)} records differ, first at positions {bad[:10]}")
        records = _records(path)
        changed: dict[str, int] = {}
        for s in gold.sample:
            now = json.loads(records[s["position"]]) if s["position"] < len(records) else {}
            for col in sorted(set(now) | set(s["record"])):
                # compared as JSON text: 5 and 5.0 are different records (a column's type changed)
                if json.dumps(now.get(col), sort_keys=True) != json.dumps(s["record"].get(col), sort_keys=True):
                    changed[col] = changed.get(col, 0) + 1
        out.append(f"columns that differ in the golden sample: {changed or 'none (the sample rows agree)'}")
    if not out and _pyarrow_version() == gold.manifest["pyarrow"]:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha != gold.manifest["log_sha256"]:
            out.append(f"same records, but the file's bytes differ (SHA-256 {sha[:16]}... != "
                       f"{gold.manifest['log_sha256'][:16]}...): a dtype or schema change")
    return out


def _assert_golden(name: str, path: Path) -> None:
    diffs = _differences(name, path)
    assert not diffs, f"{name}: the decision log differs from the golden log:\n" + "\n".join(diffs)


# --------------------------------------------------------------------------- the runs


def _decide(proj, name: str, out: str, chunk_rows: int | None = None):
    from creditgov.decision import decide

    return decide.decide(proj.specs[name], proj.batches[name], as_of=AS_OF, out_dir=out, log=quiet,
                         previous=proj.previous[name], chunk_rows=chunk_rows)


@pytest.fixture(scope="module")
def whole(golden_project):
    runs = {name: _decide(golden_project, name, f"decisions/whole-{name}", chunk_rows=10**9)
            for name in ("application", "behaviour")}
    if WRITE:
        for name, res in runs.items():
            _write_golden(name, res.path)
    return runs


@pytest.mark.parametrize("name", ["application", "behaviour"])
def test_whole_batch_log_matches_the_golden_log(whole, name):
    res = whole[name]
    assert res.chunks == 1
    gold = _golden(name)
    assert res.rows_quarantined == gold.manifest["statuses"]["quarantined"] >= 3
    _assert_golden(name, res.path)


@pytest.mark.parametrize("name", ["application", "behaviour"])
def test_streamed_log_matches_the_golden_log(golden_project, whole, name):
    res = _decide(golden_project, name, f"decisions/streamed-{name}", chunk_rows=CHUNK)
    assert res.chunks > 1  # really streamed
    _assert_golden(name, res.path)


def test_dask_log_matches_the_golden_log(golden_project, whole):
    from creditgov import cluster
    from creditgov.decision import dask

    client = cluster.client_for(workers=2, processes=False)
    try:
        res = dask.decide(golden_project.specs["application"], golden_project.batches["application"], as_of=AS_OF,
                            out_dir="decisions/dask-application", log=quiet, partitions=6, client=client)
    finally:
        local = client.cluster
        client.close()
        local.close()
    assert res.chunks == 6  # partitions with and without quarantined rows
    _assert_golden("application", res.path)


def test_golden_batches_cover_what_they_must(whole):
    """The fixed inputs exercise the paths a refactor could break: quarantine, every action, counterfactuals
    of both stages, the previous review's reasons."""
    app, beh = (pd.read_parquet(whole[n].path) for n in ("application", "behaviour"))
    assert (app["status"] == "quarantined").sum() == 5 and (beh["status"] == "quarantined").sum() == 4
    assert {"approve", "decline", "review"} <= set(app["action"])
    assert {"keep", "cut", "suspend"} <= set(beh["action"])
    cf = app["counterfactual"].dropna()
    assert cf.str.contains('"found": true').any() and cf.map(lambda t: t.count('"feature"') == 2).any()
    assert (beh["changed_features"].map(len) > 0).any()


def test_collections_treatments_flow_through_the_decision_path_audit_and_oversight(golden_project, whole):
    """Month 17's treatments (decision.collections) are in the log beside the review's action, as the ladder
    gives them for the logged PDs, each with its checks; the audit trail holds them; an agency or legal step gets
    its notice only once a person approves it (oversight.approve_treatment), and only a step pending approval."""
    from creditgov.decision import collections, oversight
    from creditgov.errors import UsageError
    from creditgov.governance import audit
    from creditgov.report import wording

    spec = golden_project.specs["behaviour"]
    log = pd.read_parquet(whole["behaviour"].path)
    decided = log[log["status"] == "decided"].reset_index(drop=True)
    batch = pd.read_parquet(golden_project.batches["behaviour"])
    rows = batch.iloc[decided["row_number"].to_numpy() - 1].reset_index(drop=True)
    again = collections.treatments(rows, decided["pd"].to_numpy(), spec.policy)
    assert (again["treatment"].to_numpy() == decided["treatment"].to_numpy()).all()
    assert (again["treatment_status"].to_numpy() == decided["treatment_status"].to_numpy()).all()
    assert {"reminder", "call", "agency"} <= set(decided["treatment"])
    treated = decided[decided["treatment"] != "none"]
    assert treated["treatment_rules"].map(lambda r: list(r[-2:]) == list(collections.CHECKS)).all()
    assert (log.loc[log["status"] == "quarantined", "treatment"] == "none").all()
    # suspended and treated: the review's action and the collections treatment are one decision
    assert ((decided["action"] == "suspend") & (decided["treatment"] == "call")).any()

    pending = treated[treated["treatment_status"] == "pending_approval"].sort_values("decision_id").iloc[0]
    did = str(pending["decision_id"])
    assert audit.find_decision(did)["treatment"] == pending["treatment"]
    assert wording.treatment_notice(pending, spec, "en", "2026-11-02T00:00:00Z") is None
    assert oversight.treatment_approval(did) is None
    event = oversight.approve_treatment(did, "A. Reviewer", "contacts exhausted, amount verified")
    assert oversight.treatment_approval(did)["reviewer"] == "A. Reviewer" == event["reviewer"]
    assert wording.treatment_notice(pending, spec, "zh", "2026-11-02T00:00:00Z", approved=True) is not None
    with pytest.raises(UsageError, match="already approved"):
        oversight.approve_treatment(did, "B. Reviewer", "again")
    sent = treated[treated["treatment_status"] == "sent"].iloc[0]
    with pytest.raises(UsageError, match="only a step pending approval can be approved"):
        oversight.approve_treatment(str(sent["decision_id"]), "A. Reviewer", "not needed")

    # the report pages: one decision of each treatment and status, a treatment notice where one reaches the customer
    from creditgov.report import pages, pdf

    res = pages.build(spec, log, whole["behaviour"].path, {"lineage": {"train_data_hash": "0" * 64}}, None,
                      Path("reports-collections"), sample=1)
    notices = {p.name for p in (res.directory / "notices").glob("*.treatment.*.html")}
    chosen = decided[decided["decision_id"].isin(res.decisions)]
    for _, r in chosen[chosen["treatment"] != "none"].iterrows():
        reaches = r["treatment_status"] == "sent" or r["decision_id"] == did  # did: approved above
        assert (f"{r['decision_id']}.treatment.zh.html" in notices) == reaches, (r["treatment"], r["treatment_status"])
    assert f"{did}.treatment.en.html" in notices
    for name in notices:  # real treatment notices: the lender and its contact, no column name, either language
        lang = name.split(".")[-2]
        text = unescape(notice_body((res.directory / "notices" / name).read_text(encoding="utf-8")))
        assert names_leaked(text, spec, lang) == [], (name, names_leaked(text, spec, lang))
        assert getattr(spec.lender.name, lang) in text and spec.lender.contact[0].text(lang) in text, name
    titles = [doc.title for doc in pdf.pack_documents(res.directory)]
    # the regulator pack prints them after the decision's own notices
    assert f"Collections notice {did} (English)" in titles and f"Collections notice {did} (Chinese)" in titles
    page = (res.directory / "decisions" / f"{did}.html").read_text(encoding="utf-8")
    assert "Collections treatment" in page and "approved by a person" in page
    # every ladder rule shows the account's value: the ladder-only fields are in the log (decide.log_rows)
    for p in (res.directory / "decisions").glob("*.html"):
        assert "not kept in the decision log" not in p.read_text(encoding="utf-8"), p.name
    assert "contacts in the last 30 days: " in page and "declared: " in page
