"""The one decision path (issue 12): decide_rows, the audit append that comes with every written log, one
validation entry with the quarantine-share rule everywhere, one pseudonymisation per row, one calibration.

The session's quick application model (tests/e2e/conftest.py: 30 boosting rounds on credit_data, saved as
JSON), served as version "3" in a temporary project; the audit trail is a SQLite file of the project. The
engines' byte-identity with the logs made before the decision path existed is test_golden_decisions.py's.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import in_project, quiet, serve_saved_models

pytestmark = pytest.mark.e2e

SPEC_PATH = "pipelines/application.yaml"
AS_OF = "2026-11-01"
BAD = [9, 700, 1500]  # rows (0-based) given an out-of-range age: 3 of 4,454, under the 5% limit
DROP_ENV = ("CREDITGOV_PSEUDONYM_KEY", "CREDITGOV_CHUNK_ROWS")


@pytest.fixture(scope="module")
def proj(tmp_path_factory, make_project, application_model_dir):
    from creditgov.data import inputs
    from creditgov.spec import load_spec

    root = make_project(tmp_path_factory.mktemp("decision_path"))
    with in_project(root, drop=DROP_ENV, CREDITGOV_AUDIT_URL=f"sqlite:///{root / 'audit.db'}") as mp:
        spec = load_spec(SPEC_PATH)
        frame = inputs.load(spec).frame
        serve_saved_models(mp, {spec.registry.model_name: application_model_dir}, "3", "run-3")
        batch = frame.drop(columns=[spec.target.column])
        batch.to_csv("clean.csv", index=False)
        bad = batch.copy()
        bad.loc[BAD, "Age"] = -5
        bad.to_csv("bad.csv", index=False)
        yield SimpleNamespace(root=root, spec=spec, frame=frame, batch=batch, bad=bad)


@pytest.fixture(scope="module")
def decided(proj):
    from creditgov.decision import decide

    return decide.decide(proj.spec, "bad.csv", as_of=AS_OF, out_dir="decisions/lib", log=quiet)


# --------------------------------------------------------------------------- the audit append


def test_a_library_caller_of_decide_gets_the_audit_record(proj, decided):
    from creditgov.governance import audit

    a = decided.audit
    assert a is not None and not a.already_sealed
    assert a.inserted == a.tree_size == decided.rows_in == len(proj.bad)
    assert a.log_sha256 == audit.file_sha256(decided.path)
    some = decided.log.iloc[[0, BAD[0], 2000]]
    for _, row in some.iterrows():
        found = audit.find_decision(row["decision_id"])
        assert (found["action"], found["row_number"]) == (row["action"], row["row_number"])
    v = audit.verify()
    assert v.ok, v.problems


def test_a_streamed_decide_is_audited_once_too(proj, decided):
    from creditgov.decision import decide

    streamed = decide.decide(proj.spec, "bad.csv", as_of=AS_OF, out_dir="decisions/streamed", log=quiet,
                             chunk_rows=1000)
    assert streamed.chunks == 5
    assert streamed.path.read_bytes() == decided.path.read_bytes()
    # the same log: the trail already holds it, nothing is appended twice
    assert streamed.audit.already_sealed and streamed.audit.inserted == 0
    assert streamed.audit.batch == decided.audit.batch


# --------------------------------------------------------------------------- decide_rows


def test_decide_rows_gives_the_records_decide_writes_and_writes_nothing(proj, decided):
    from creditgov.governance import audit
    from creditgov.data import inputs
    from creditgov.decision import decide
    from creditgov.data import validate

    before = sorted(p.relative_to(proj.root) for p in proj.root.rglob("*") if p.is_file())
    entries = audit.verify().entries
    loaded = inputs.load(proj.spec, "bad.csv")
    rows = validate.validate_batch(loaded.frame, proj.spec, loaded.label)
    model = decide.load_model(proj.spec)
    d = decide.decide_rows(rows, model, proj.spec, AS_OF)
    assert (d.rows_in, d.rows_decided, d.rows_quarantined) == (decided.rows_in, decided.rows_decided,
                                                               decided.rows_quarantined) == (4454, 4451, 3)
    assert d.action_counts == decided.action_counts
    assert d.pending.empty  # a batch of its own: the pair search ran
    pd.testing.assert_frame_equal(d.log, decided.log)
    after = sorted(p.relative_to(proj.root) for p in proj.root.rglob("*") if p.is_file())
    assert after == before and audit.verify().entries == entries


def test_parts_decided_with_their_batch_scope_give_the_whole_batchs_records(proj, decided):
    """What the streamed and Dask engines (and a micro-batching service) do with decide_rows: parts validated
    on their own, the batch's rounding flags, the pair search deferred and run once over the batch."""
    from creditgov.decision import counterfactual
    from creditgov.decision import decide
    from creditgov.data import validate
    from creditgov.data.validate import Validated

    spec = proj.spec
    suite = validate.suite_for(spec, proj.bad.columns)
    cuts = [0, 1200, 3100, len(proj.bad)]
    outcomes = [validate.validate_part(proj.bad.iloc[a:b].reset_index(drop=True), spec, suite, "bad.csv")
                for a, b in zip(cuts, cuts[1:])]
    integral: dict[str, bool] = {}
    for o in outcomes:
        for k, v in counterfactual.integral_flags(o.clean, spec).items():
            integral[k] = integral.get(k, True) and v
    model = decide.load_model(spec)
    scope = decide.BatchScope(integral=integral, defer_pairs=True)
    parts = [decide.decide_rows(Validated(spec, o, "bad.csv", decided.input_hash, row_offset=a), model, spec,
                                AS_OF, scope=scope) for o, a in zip(outcomes, cuts)]
    assert sum(len(p.pending) for p in parts) > 0  # adverse rows without a one-feature change wait for the batch
    found = decide.pair_counterfactuals(model.model, [p.pending for p in parts], spec)
    for p, res in zip(parts, found):
        decide.fill_pairs(p.log, p.pending, res, spec)
    whole = pd.concat([p.log for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(whole, decided.log, check_dtype=False)
    path = decide.write_log_parts([p.log for p in parts], proj.root / "parts" / decided.path.name)
    assert path.read_bytes() == decided.path.read_bytes()


# --------------------------------------------------------------------------- one pseudonymisation per row


def test_a_quarantined_row_carries_its_accounts_one_pseudonym(proj, decided):
    from creditgov.decision import decide
    from creditgov.data import privacy

    clean = decide.decide(proj.spec, "clean.csv", as_of=AS_OF, out_dir="decisions/clean", log=quiet)
    ids = proj.batch["rownames"].iloc[BAD]
    q = decided.log[decided.log["status"] == "quarantined"]
    assert list(q["row_number"]) == [i + 1 for i in BAD]
    pseudonyms = list(privacy.pseudonymise(ids))
    assert list(q["account_key"]) == pseudonyms  # keyed once, not a key of the quarantine file's pseudonym
    same_rows = clean.log.set_index("row_number").loc[[i + 1 for i in BAD]]
    assert (same_rows["status"] == "decided").all()
    assert list(same_rows["account_key"]) == pseudonyms  # the account's decided rows have the same key
    assert decided.log["account_key"].is_unique


# --------------------------------------------------------------------------- one validation entry, one share rule


@pytest.fixture(scope="module")
def dirty(proj):
    """A labelled batch with 10% of its rows out of range: over the spec's 5% quarantine limit."""
    frame = proj.frame.copy()
    frame.loc[frame.index[::10], "Age"] = -5
    frame.to_csv("dirty.csv", index=False)
    return "dirty.csv"


@pytest.mark.parametrize("chunk_rows", [10**9, 1000], ids=["whole", "chunked"])
def test_the_quarantine_share_rule_holds_on_every_way_in(proj, dirty, chunk_rows):
    from creditgov.data import inputs
    from creditgov.decision import decide
    from creditgov.jobs import monitoring
    from creditgov.jobs import training
    from creditgov.data import validate
    from creditgov.errors import QuarantineError

    frame = inputs.load(proj.spec, dirty).frame
    rule = r"dirty.csv: 446 of 4454 rows quarantined \(10.0% > max_quarantine_share 5.0%\)"
    with pytest.raises(QuarantineError, match=rule):
        decide.decide(proj.spec, dirty, as_of=AS_OF, out_dir="decisions/dirty", log=quiet, chunk_rows=chunk_rows)
    # the previous review of an on-book batch is validated like any batch: the limit holds there too
    with pytest.raises(QuarantineError, match=rule):
        decide.previous_review(proj.spec, decide.load_model(proj.spec).model, dirty, chunk_rows=chunk_rows)
    with pytest.raises(QuarantineError, match=rule):
        validate.validate_batch(frame, proj.spec, "dirty.csv")
    with pytest.raises(QuarantineError, match="446 of 4454 rows quarantined"):
        monitoring._validated(proj.spec, frame, "dirty.csv")
    with pytest.raises(QuarantineError, match="446 of 4454 rows quarantined"):
        training.validate_input(proj.spec, dirty)  # a training batch: needs its target, and breaks the limit
    assert not list((proj.root / "decisions").glob("dirty*/*.parquet"))


# --------------------------------------------------------------------------- one calibration


def test_counterfactual_candidates_are_scored_with_the_models_own_calibration(proj, monkeypatch):
    """decide.candidate_evaluator scores candidates through CreditModel.calibrate, as scoring does: a change
    of calibration moves both together."""
    from creditgov.decision import decide

    spec = proj.spec
    model = decide.load_model(spec).model
    rows = proj.batch.iloc[:300].reset_index(drop=True)
    idx = np.arange(0, 300, 3)
    amount = np.linspace(100, 5000, len(idx)).round()
    trial = rows.iloc[idx].reset_index(drop=True)
    trial["Amount"] = amount
    before = decide.candidate_evaluator(model, rows, spec)(idx, {"Amount": amount})[1]
    calibrate = model.calibrate
    monkeypatch.setattr(model, "calibrate", lambda margin: calibrate(margin) + 1.5)
    actions, p = decide.candidate_evaluator(model, rows, spec)(idx, {"Amount": amount})
    ref_actions, ref_p = decide.score_and_decide(model, trial, spec)
    np.testing.assert_array_equal(p, ref_p)
    np.testing.assert_array_equal(actions, ref_actions)
    assert (p > before).all()  # the new calibration is the one both used
