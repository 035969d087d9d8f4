"""The periodic risk report (creditgov.report.risk) on a small default-scenario book (3,000 accounts, 24 months):
its figures against independent computations from the snapshots and the ledger, its files and its page."""
from __future__ import annotations

import json

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creditgov.data import simulate
from creditgov.errors import DataError
from creditgov.report import risk
from helpers import quiet

REPO = Path(__file__).resolve().parents[2]
MONTHS = list(range(1, 25))


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    d = tmp_path_factory.mktemp("riskbook") / "book"
    scn = simulate.load_scenario(REPO / "pipelines" / "scenarios" / "default.yaml", accounts=3000)
    simulate.simulate(scn, d, log=quiet)
    return d


@pytest.fixture(scope="module")
def figs(book):
    return risk.book_figures(book, MONTHS)


@pytest.fixture(scope="module")
def written(book, tmp_path_factory):
    return risk.write_report(book, MONTHS, tmp_path_factory.mktemp("reports"))


def _snap(book, m):
    return pd.read_parquet(book / f"month={m:02d}" / "snapshot.parquet")


def _bucket(dpd: np.ndarray) -> np.ndarray:
    return np.select([dpd == 0, dpd < 30, dpd < 60, dpd < 90], ["current", "1-29", "30-59", "60-89"], "90-179")


def test_bucket_distribution_matches_a_count_of_days_past_due(book, figs):
    for m in (1, 12, 17, 24):
        dpd = _snap(book, m)["days_past_due"].to_numpy()
        counts = Counter(_bucket(dpd).tolist())
        row = figs.buckets.set_index("month_index").loc[m]
        assert row["accounts"] == len(dpd)
        for b in simulate.BUCKETS:
            assert row[f"share_{b}"] == pytest.approx(counts[b] / len(dpd), abs=1e-12), (m, b)
        assert row["share_30_plus"] == pytest.approx(float((dpd >= 30).mean()), abs=1e-12)
    # the shock shows: the 30+ share after month 16 is well above the months before
    s = figs.buckets.set_index("month_index")["share_30_plus"]
    assert s.loc[17:19].mean() > 1.5 * s.loc[13:15].mean()


def test_roll_matrix_matches_an_account_by_account_count(book, figs):
    pairs = Counter()
    for m in MONTHS[1:]:
        a, b = _snap(book, m - 1), _snap(book, m)
        nxt = dict(zip(b["account_id"], _bucket(b["days_past_due"].to_numpy())))
        for acc, bk in zip(a["account_id"], _bucket(a["days_past_due"].to_numpy())):
            pairs[(bk, nxt.get(acc, "charged_off"))] += 1
    for (frm, to), n in pairs.items():
        assert figs.roll_counts.loc[frm, to] == n, (frm, to)
    assert int(figs.roll_counts.to_numpy().sum()) == sum(pairs.values())
    rates = figs.roll_rates
    assert np.allclose(rates.sum(axis=1), 1.0)
    assert rates.loc["1-29", "30-59"] == pytest.approx(pairs[("1-29", "30-59")] / sum(
        n for (f, _), n in pairs.items() if f == "1-29"))


def test_a_vintage_curve_matches_a_direct_count(book, figs):
    """Q2 (opened in months 4-6), found by first appearance rather than by tenure."""
    first, worst = {}, {}
    snaps = {m: _snap(book, m) for m in MONTHS}
    for m, f in snaps.items():
        for acc in f["account_id"]:
            first.setdefault(acc, m)
    q2 = {a for a, m in first.items() if 4 <= m <= 6 and m > 1}
    for m, f in snaps.items():
        for acc, dpd in zip(f["account_id"], f["days_past_due"]):
            if acc in q2:
                worst.setdefault(acc, []).append((m - first[acc], dpd))
    v = figs.vintages[figs.vintages["vintage"] == "Q2"].set_index("months_on_book")
    assert v["accounts"].iloc[0] == len(q2)
    for k in (0, 3, 6, 12, 18):
        ever30 = sum(any(mob <= k and d >= 30 for mob, d in worst[a]) for a in q2) / len(q2)
        ever90 = sum(any(mob <= k and d >= 90 for mob, d in worst[a]) for a in q2) / len(q2)
        assert v.loc[k, "ever_30"] == pytest.approx(ever30, abs=1e-12), k
        assert v.loc[k, "ever_90"] == pytest.approx(ever90, abs=1e-12), k
    assert v.index.max() == 24 - 6  # as far as every account of the vintage has reached
    assert (np.diff(v["ever_30"].to_numpy()) >= 0).all()


def test_loss_rates_come_from_the_ledger(book, figs):
    led = pd.read_parquet(book / "ledger.parquet").set_index("month_index")
    got = figs.losses.set_index("month_index")
    for m in (5, 20):
        assert got.loc[m, "charge_off_rate_accounts"] == pytest.approx(
            12 * led.loc[m, "charged_off_accounts"] / led.loc[m, "active_accounts"])
        assert got.loc[m, "net_loss_rate"] == pytest.approx(
            12 * (led.loc[m, "charged_off_balance"] - led.loc[m, "recoveries"]) / led.loc[m, "active_balance"])


def test_the_report_writes_csv_files_equal_to_the_figures_and_a_self_contained_page(written, figs):
    assert sorted(p.name for p in written.iterdir()) == sorted(
        ["index.html", "bucket_distribution.csv", "roll_rates.csv", "roll_counts.csv", "vintages.csv", "losses.csv",
         "treatment_outcomes.csv", "hardship_plans.csv", "limit_changes.csv",
         "run.json"])  # run.json: the run's line in reports/index.html
    assert json.loads((written / "run.json").read_text())["kind"] == "risk"
    buckets = pd.read_csv(written / "bucket_distribution.csv")
    assert np.allclose(buckets["share_30_plus"], figs.buckets["share_30_plus"], atol=1e-6)
    counts = pd.read_csv(written / "roll_counts.csv").set_index("from")
    assert (counts.to_numpy() == figs.roll_counts.to_numpy()).all()
    html = (written / "index.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert html.count("<svg") >= 3
    assert not re.search(r"""(src|href)\s*=\s*["']https?:""", html)
    assert "Roll-rate matrix" in html and "Vintage curves" in html and "Charge-offs and net losses" in html
    assert "Collections treatments and their outcomes" in html and "Hardship instalment plans by month offered" in html
    outcomes = pd.read_csv(written / "treatment_outcomes.csv")
    assert np.allclose(outcomes["cure_rate_3m"], figs.treatments["cure_rate_3m"], atol=1e-6, equal_nan=True)


def test_a_missing_book_or_one_without_a_ledger_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="no simulated book here"):
        risk.book_figures(tmp_path, [1, 2])
    (tmp_path / "scenario.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="no ledger.parquet"):
        risk.book_figures(tmp_path, [1, 2])


def test_treatment_cure_rates_match_an_account_by_account_count(book, figs):
    """Each treatment given at a month-end review, followed account by account through the next 3 snapshots."""
    snaps = {m: dict(zip(_snap(book, m)["account_id"], _snap(book, m)["days_past_due"])) for m in MONTHS}
    tally: dict = {}
    for m in MONTHS:
        f = _snap(book, m)
        for acc, t, dpd in zip(f["account_id"], f["collection_treatment"], f["days_past_due"]):
            if t == "none":
                continue
            for key in ((t, "all"), (t, str(_bucket(np.array([dpd]))[0]))):
                c = tally.setdefault(key, Counter())
                if m + 1 in snaps:
                    c["n1"] += 1
                    c["cured1"] += snaps[m + 1].get(acc) == 0
                if m + 3 in snaps:
                    later = [snaps[m + k].get(acc) for k in (1, 2, 3)]
                    c["n3"] += 1
                    c["cured3"] += any(d == 0 for d in later)
                    c["gone3"] += any(d is None for d in later)
    got = figs.treatments.set_index(["treatment", "bucket"])
    assert set(got.index) == set(tally)
    for key, c in tally.items():
        assert got.loc[key, "treated"] == c["n1"], key
        assert got.loc[key, "cure_rate_1m"] == pytest.approx(c["cured1"] / c["n1"], abs=1e-12), key
        assert got.loc[key, "treated_3m"] == c["n3"], key
        if c["n3"]:
            assert got.loc[key, "cure_rate_3m"] == pytest.approx(c["cured3"] / c["n3"], abs=1e-12), key
            assert got.loc[key, "charge_off_rate_3m"] == pytest.approx(c["gone3"] / c["n3"], abs=1e-12), key
    # the ladder shows: reminders in 1-29, the agency only from 90 days, plans at most 59 days past due
    assert set(got.loc["reminder"].index) == {"all", "1-29"}
    assert set(got.loc["agency"].index) == {"all", "90-179"}
    assert set(got.loc["hardship_plan"].index) <= {"all", "1-29", "30-59"}
    plans = figs.plans.set_index("month_index")
    assert plans["plans"].sum() == got.loc[("hardship_plan", "all"), "treated_3m"]
    assert plans["plans"].idxmax() == 16  # the shock month: customers hit by it declare it and are offered a plan


def test_the_book_responds_to_the_hardship_plan(book, figs, tmp_path):
    """The same book with the plan's effect set to 0: plans offered to the same customers cure less often."""
    scn = simulate.load_scenario(REPO / "pipelines" / "scenarios" / "default.yaml", accounts=3000)
    scn = scn.model_copy(update={"collections": scn.collections.model_copy(update={"hardship_effect": 0.0})})
    simulate.simulate(scn, tmp_path / "book", log=quiet)
    without, _ = risk.treatment_outcomes(tmp_path / "book", MONTHS)
    with_plan = figs.treatments.set_index(["treatment", "bucket"]).loc[("hardship_plan", "all")]
    no_effect = without.set_index(["treatment", "bucket"]).loc[("hardship_plan", "all")]
    assert with_plan["treated_3m"] == pytest.approx(no_effect["treated_3m"], rel=0.1)  # the same offers, about
    assert with_plan["cure_rate_3m"] > no_effect["cure_rate_3m"] + 0.05
    print(f"hardship plans, cure within 3 months: {with_plan['cure_rate_3m']:.3f} with the plan's effect, "
          f"{no_effect['cure_rate_3m']:.3f} without")


def test_limit_changes_match_an_account_by_account_comparison(book):
    lim = risk.limit_changes(book, MONTHS).set_index("month_index")
    assert list(lim.index) == MONTHS[1:]  # month 1 has no month before it in the book
    for m in (2, 12, 20):
        before = dict(zip(_snap(book, m - 1)["account_id"], _snap(book, m - 1)["credit_limit"]))
        now = _snap(book, m)
        up = down = both = 0
        amount_up = 0.0
        for acc, limit in zip(now["account_id"], now["credit_limit"]):
            if acc in before:
                both += 1
                up += limit > before[acc]
                down += limit < before[acc]
                amount_up += max(limit - before[acc], 0.0)
        row = lim.loc[m]
        assert (row["accounts_both"], row["raised"], row["cut"]) == (both, up, down), m
        assert row["raised_share"] == pytest.approx(up / both) and row["raised_amount"] == pytest.approx(amount_up)
        assert row["mean_limit"] == pytest.approx(now["credit_limit"].mean())
    # the book's own limit management raises limits and never cuts them (simulate.py)
    assert lim["raised"].sum() > 0 and lim["cut"].sum() == 0
    # a range starting later counts its first month against the month before it
    assert risk.limit_changes(book, [12, 13]).set_index("month_index").loc[12, "raised"] == lim.loc[12, "raised"]

