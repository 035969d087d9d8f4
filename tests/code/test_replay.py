"""Policy replay (creditgov.decision.replay, creditgov.report.replay): the example candidate (a stricter suspension
trigger) against the behaviour spec's current policy on a small default-scenario book (700 accounts, months 13-16,
a 30-round model fitted on months 1-3), the resimulated books kept, and the figures checked against independent
computations from those books: what each review decided shows in the next month's snapshot, the losses are the
ledger's, the two books are one book before the first review, and the files and the attached comparison."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creditgov.data import simulate, validate
from creditgov.decision import replay
from creditgov.decision.decide import DecisionModel, PreviousReview, decide_rows, explain_batch
from creditgov.errors import SpecError, UsageError
from creditgov.model import train
from creditgov.report.replay import policy_differences, write_replay
from creditgov.spec import load_spec
from helpers import quiet

REPO = Path(__file__).resolve().parents[2]
CANDIDATE = REPO / "pipelines" / "candidates" / "behaviour-strict-suspension.yaml"
ACCOUNTS = 700
MONTHS = [13, 14, 15, 16]


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO / "pipelines" / "behaviour.yaml")


@pytest.fixture(scope="module")
def candidate(spec):
    return replay.load_candidate(CANDIDATE, spec)


@pytest.fixture(scope="module")
def model(spec, tmp_path_factory):
    d = tmp_path_factory.mktemp("trainbook")
    scn = simulate.load_scenario(spec.source.scenario, accounts=ACCOUNTS, months=16)
    simulate.simulate(scn, d, log=quiet)
    s = train.split(simulate.load_months(d, [1, 2, 3]), spec)
    return DecisionModel(train.fit_model(s.train, s.validation, spec, n_estimators=30), "test")


@pytest.fixture(scope="module")
def result(spec, candidate, model, tmp_path_factory):
    return replay.replay(spec, candidate, model, MONTHS, accounts=ACCOUNTS, work=tmp_path_factory.mktemp("rp"),
                         keep=True)


def _snap(book: Path, m: int) -> pd.DataFrame:
    return pd.read_parquet(simulate.partition_dir(book, m - 1) / "snapshot.parquet")


def _metric(r, name: str, who: str) -> float:
    return float(r.summary.set_index("metric").loc[name, who])


def test_the_candidate_file_is_read_and_checked(spec, candidate, tmp_path):
    assert candidate.policy.version == "2026.12-1" and candidate.policy.content_hash != spec.policy.content_hash
    diffs = {k for k, _, _ in policy_differences(spec, candidate)}
    assert diffs == {"policy.version", "policy.on_book.suspend_days_past_due", "policy.on_book.suspend_pd_rise_factor",
                     "policy.on_book.suspend_pd_rise_min_pd", "policy.on_book.early_warning.pd_rise_factor"}
    with pytest.raises(SpecError, match="candidate policy file not found"):
        replay.load_candidate(tmp_path / "none.yaml", spec)
    same = tmp_path / "same.yaml"
    same.write_text((REPO / "pipelines" / "behaviour.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(UsageError, match="is the current one"):
        replay.load_candidate(same, spec)
    bad = tmp_path / "bad.yaml"
    bad.write_text(CANDIDATE.read_text(encoding="utf-8").replace("cut_factor: 0.5", "cut_factor: 1.5"),
                   encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad.yaml: policy\.on_book\.cut_factor"):
        replay.load_candidate(bad, spec)


def test_both_books_are_one_book_until_the_first_review_shows(result):
    cur, cand = result.books["current"], result.books["candidate"]
    for m in (1, 12, 13):  # the month-13 review first shows in month 14's snapshot
        pd.testing.assert_frame_equal(_snap(cur, m), _snap(cand, m))
    a, b = _snap(cur, 14), _snap(cand, 14)
    assert not a["suspended"].reset_index(drop=True).equals(b["suspended"].reset_index(drop=True))


def test_each_review_decides_the_next_months_suspensions_and_limits(result, candidate, model):
    """The month-13 review of the candidate's book, decided again through decide_rows, against the book's
    month-14 snapshot: who is suspended and what the limits are."""
    book = result.books["candidate"]
    s12, s13, s14 = _snap(book, 12), _snap(book, 13), _snap(book, 14)
    compiled = validate.CompiledSuite(validate.suite_for(candidate, s12.columns))
    prev = validate.validate_rows(s12, candidate, compiled, "m12").clean
    e = explain_batch(model.model, prev, candidate)
    ids = prev["account_id"].astype(str).to_numpy()
    previous = PreviousReview(pd.Series(e.pd, index=ids), pd.DataFrame(e.phi, index=ids, columns=e.features))
    rows = validate.validate_rows(s13, candidate, compiled, "m13")
    log = decide_rows(rows, model, candidate, "2025-01-01", previous).log
    action = pd.Series(log["action"].to_numpy(), index=s13["account_id"].to_numpy()[log["row_number"] - 1])
    was = s13.set_index("account_id")["suspended"]
    expect_suspended = (action == "suspend") | (was & (action != "restore"))
    nxt = s14.set_index("account_id")
    both = nxt.index.intersection(action.index)
    assert len(both) > 0.9 * len(s13)
    assert (nxt.loc[both, "suspended"] == expect_suspended.loc[both]).all()
    moved = action[action.isin(["cut", "raise"])].index.intersection(both)
    lim = pd.Series(log["limit"].to_numpy(), index=action.index)
    assert (nxt.loc[moved, "credit_limit"] == lim.loc[moved]).all()
    assert (nxt.loc[moved, "months_since_limit_change"] == 1).all()
    # the reviewer's own record of month 13 agrees
    row = result.candidate.months.set_index("month_index").loc[13]
    assert row["newly_suspended"] == int(((action == "suspend") & ~was.reindex(action.index)).sum())
    assert row["suspended_after_review"] == int(expect_suspended.sum())


def test_losses_and_spending_are_the_resimulated_books(result):
    for who in ("current", "candidate"):
        book = result.books[who]
        led = pd.read_parquet(book / "ledger.parquet").set_index("month_index").loc[MONTHS]
        net = float((led["charged_off_balance"] - led["recoveries"]).sum())
        assert _metric(result, "net loss", who) == pytest.approx(net)
        assert _metric(result, "charged-off accounts", who) == led["charged_off_accounts"].sum()
        spend = sum(float(_snap(book, m)["spend_amount"].sum()) for m in MONTHS)
        assert _metric(result, "spending", who) == pytest.approx(spend)
        share = np.mean([(_snap(book, m)["days_past_due"] >= 30).mean() for m in MONTHS])
        assert _metric(result, "mean 30+ DPD share", who) == pytest.approx(share)
    # the stricter trigger suspends more accounts and leaves less credit open
    assert _metric(result, "newly suspended", "candidate") > _metric(result, "newly suspended", "current")
    assert (_metric(result, "mean credit open to customers", "candidate")
            < _metric(result, "mean credit open to customers", "current"))
    assert (_metric(result, "customers given an adverse action", "candidate")
            >= _metric(result, "customers given an adverse action", "current"))


def test_the_page_the_files_and_the_attached_comparison(result, spec, candidate, tmp_path):
    attached = replay.attach(result, spec, tmp_path / "policy_replays")
    c = candidate.policy
    assert attached.parent == tmp_path / "policy_replays" / c.name / f"{c.version}-{c.content_hash[:16]}"
    assert attached.name == (f"replay-vs-{spec.policy.version}-{spec.policy.content_hash[:12]}-default-seed20240101-"
                             f"{ACCOUNTS}-months-13-16.json")
    body = json.loads(attached.read_text(encoding="utf-8"))
    assert body["candidate"]["content_hash"] == c.content_hash
    assert body["current"]["content_hash"] == spec.policy.content_hash
    assert body["months"] == MONTHS and body["model"]["version"] == "test"
    out = write_replay(result, spec, candidate, attached, tmp_path / "reports")
    summary = pd.read_csv(out / "replay_summary.csv").set_index("metric")
    assert summary.loc["net loss", "candidate"] == pytest.approx(_metric(result, "net loss", "candidate"), rel=1e-6)
    months = pd.read_csv(out / "replay_months.csv")
    assert sorted(months["policy"].unique()) == ["candidate", "current"] and len(months) == 2 * len(MONTHS)
    assert json.loads((out / "comparison.json").read_text(encoding="utf-8")) == body
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "resimulating the book from the same seed" in html and "2026.12-1" in html and "2026.11-1" in html
    assert "suspend_days_past_due" in html and "<svg" in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "").replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["kind"] == "replay" and "2026.12-1" in run["policy"]
    assert out.name in (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")
