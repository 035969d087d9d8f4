"""The simulated book against the calibration bands stated in creditgov.data.simulate's module documentation.

Three no_shock books (seeds 1-3) and one default book (the shock), 6,000 accounts each, plus the no_shock
book of seed 1 with the lender's limit raises turned off (what a limit change does to spending). The bands and
where they come from are in simulate's docstring; each test names the band it checks.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from creditgov.data import simulate
from helpers import quiet

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "pipelines" / "scenarios"
ACCOUNTS = 6000
SEEDS = (1, 2, 3)
MONTHS = range(1, 25)

# the stated bands (simulate's module documentation)
DPD30_BAND = (0.015, 0.045)        # 30+ DPD share of the active book, every calm month
DPD1_BAND = (0.04, 0.10)           # 1+ DPD share
DPD30_DRIFT = 0.01                 # |months 19-24 mean - months 1-6 mean| of the 30+ share: no climb
ROLL_BANDS = {"current": (0.015, 0.06), "1-29": (0.15, 0.45), "30-59": (0.30, 0.60), "60-89": (0.50, 0.80),
              "90-179": (0.75, 0.97)}  # share that does not cure (rolls on, or stays 90-179, or is charged off)
CHARGE_OFF_BAND = (0.015, 0.06)    # annualised share of active accounts charged off
RECOVERY_BAND = (0.05, 0.25)       # recoveries over charged-off balances
UTILISATION_BAND = (0.15, 0.40)    # mean utilisation of the active book
SHOCK_MULTIPLE_HIT = (4.0, 8.0)    # 30+ share of freelance/temporary, months 17-19 over months 13-15
SHOCK_MULTIPLE_SALARIED = 2.5      # and salaried workers' below this, and the hit segments' at least 2.5x it


def _book(root: Path, name: str, **over) -> SimpleNamespace:
    scn = simulate.load_scenario(SCENARIOS / f"{name}.yaml", accounts=ACCOUNTS, **over)
    res = simulate.simulate(scn, root, log=quiet)
    snaps = {m: pd.read_parquet(root / f"month={m:02d}" / "snapshot.parquet") for m in MONTHS}
    return SimpleNamespace(res=res, snaps=snaps, ledger=pd.read_parquet(root / "ledger.parquet"))


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    out = {f"calm{s}": _book(root / f"calm{s}", "no_shock", seed=s) for s in SEEDS}
    out["shock"] = _book(root / "shock", "default")
    out["no_raises"] = _book(root / "no_raises", "no_shock", seed=SEEDS[0], limit_raise_rate=0.0)
    return out


def _calm(books):
    return [books[f"calm{s}"] for s in SEEDS]


def _share(books, key, pred):
    return {s: [float(pred(b.snaps[m]).mean()) for m in MONTHS] for s, b in zip(SEEDS, _calm(books))}


def _transitions(book) -> pd.DataFrame:
    """Each account's bucket at m-1 and at m (charged_off when it left the book), pooled over the months."""
    parts = []
    for m in list(MONTHS)[1:]:
        a = book.snaps[m - 1][["account_id", "delinquency_bucket", "days_past_due"]]
        b = book.snaps[m][["account_id", "delinquency_bucket"]].rename(columns={"delinquency_bucket": "next"})
        j = a.merge(b, on="account_id", how="left")
        j["next"] = j["next"].fillna("charged_off")
        j["month"] = m
        parts.append(j)
    return pd.concat(parts, ignore_index=True)


def test_the_30_plus_share_is_low_single_digit_and_stable_in_calm_months(books):
    shares = _share(books, "dpd30", lambda s: s["days_past_due"] >= 30)
    for seed, xs in shares.items():
        assert all(DPD30_BAND[0] <= x <= DPD30_BAND[1] for x in xs), (seed, xs)
        assert abs(np.mean(xs[18:]) - np.mean(xs[:6])) < DPD30_DRIFT, (seed, xs)
    print("30+ DPD share by seed, months 1-24: " + "; ".join(f"{s}: {min(x):.3f}-{max(x):.3f}"
                                                           for s, x in shares.items()))


def test_days_past_due_are_days_and_buckets_agree_with_them(books):
    shares = _share(books, "dpd1", lambda s: s["days_past_due"] >= 1)
    for seed, xs in shares.items():
        assert all(DPD1_BAND[0] <= x <= DPD1_BAND[1] for x in xs), (seed, xs)
    snap = pd.concat(books["calm1"].snaps.values())
    dpd = snap["days_past_due"]
    assert dpd.between(1, 29).any() and dpd.between(31, 59).any()  # not only 0 or multiples of 30
    assert dpd.nunique() > 100
    edges = pd.cut(dpd, [-1, 0, 29, 59, 89, 179], labels=list(simulate.BUCKETS)).astype(str)
    assert (edges == snap["delinquency_bucket"]).all()


def test_roll_and_cure_rates_are_in_their_bands(books):
    for seed, book in zip(SEEDS, _calm(books)):
        j = _transitions(book)
        rolled = j.groupby("delinquency_bucket")["next"].apply(lambda x: float((x != "current").mean()))
        for bucket, (lo, hi) in ROLL_BANDS.items():
            assert lo <= rolled[bucket] <= hi, (seed, bucket, rolled.to_dict())
        # one bucket a month at most: nobody skips a bucket; only 90-179 accounts are charged off
        order = {b: i for i, b in enumerate(simulate.BUCKETS)}
        nxt = j[~j["next"].isin(["current", "charged_off"])]
        step = nxt["next"].map(order) - nxt["delinquency_bucket"].map(order)
        assert step.isin([0, 1]).all() and (step[nxt["delinquency_bucket"] != "90-179"] == 1).all()
        assert (j.loc[j["next"] == "charged_off", "days_past_due"] >= 150).all()
    print("roll rates (seed 1): " + ", ".join(f"{b} {v:.3f}" for b, v in _transitions(books["calm1"]).groupby(
        "delinquency_bucket")["next"].apply(lambda x: float((x != "current").mean())).items()))


def test_charge_off_at_180_days_removes_the_account_and_the_ledger_counts_it(books):
    for seed, book in zip(SEEDS, _calm(books)):
        j = _transitions(book)
        gone = j[j["next"] == "charged_off"].groupby("month").size()
        led = book.ledger.set_index("month_index")
        assert led.loc[2:, "charged_off_accounts"].tolist() == gone.reindex(range(2, 25), fill_value=0).tolist()
        assert (led["active_accounts"] == [len(book.snaps[m]) for m in MONTHS]).all()
        gone_ids = set(j.loc[j["next"] == "charged_off", "account_id"])
        for m in MONTHS:  # a charged-off account never comes back
            later = set(book.snaps[m]["account_id"])
            assert not (later & {a for a, mm in j.loc[j["next"] == "charged_off", ["account_id", "month"]]
                                 .itertuples(index=False) if mm <= m})
        assert gone_ids
        rate = float(led["charged_off_accounts"].sum() / led["active_accounts"].sum() * 12)
        assert CHARGE_OFF_BAND[0] <= rate <= CHARGE_OFF_BAND[1], (seed, rate)
        late = led.loc[13:]
        recovery = float(late["recoveries"].sum() / led.loc[1:24, "charged_off_balance"].sum())
        assert RECOVERY_BAND[0] <= recovery <= RECOVERY_BAND[1], (seed, recovery)
        assert (late["recoveries"] > 0).all()


def test_utilisation_is_in_its_band(books):
    for seed, book in zip(SEEDS, _calm(books)):
        means = [float(book.snaps[m]["utilisation"].mean()) for m in MONTHS]
        assert all(UTILISATION_BAND[0] <= x <= UTILISATION_BAND[1] for x in means), (seed, means)
        assert float((book.snaps[12]["utilisation"] < 0.05).mean()) > 0.1  # transactors near 0


def test_spending_responds_to_a_limit_raise_less_than_in_proportion(books):
    """Same seed, same draws; only the lender's raises differ."""
    with_r, without = books["calm1"].snaps[24], books["no_raises"].snaps[24]
    j = with_r.merge(without, on="account_id", suffixes=("", "_base"))
    raised = j[(j["credit_limit"] > j["credit_limit_base"]) & (j["days_past_due"] == 0)
               & (j["days_past_due_base"] == 0)]
    assert len(raised) > 200
    limit_ratio = float((raised["credit_limit"] / raised["credit_limit_base"]).mean())
    spend = raised["spend_amount"].sum() / raised["spend_amount_base"].sum()
    assert 1.02 < spend < limit_ratio, (spend, limit_ratio)
    assert raised["utilisation"].mean() < raised["utilisation_base"].mean()
    raised_now = with_r[with_r["months_since_limit_change"] == 0]
    share = len(raised_now) / len(with_r)
    assert 0.002 < share < 0.03, share  # the lender's raises: about 1% of the book a month


def test_the_shock_multiplies_the_hit_segments_30_plus_share(books):
    snaps = books["shock"].snaps

    def share(months):
        f = pd.concat([snaps[m] for m in months])
        return (f["days_past_due"] >= 30).groupby(f["employment"]).mean()

    ratio = share([17, 18, 19]) / share([13, 14, 15])
    for seg in ("freelance", "temporary"):
        assert SHOCK_MULTIPLE_HIT[0] <= ratio[seg] <= SHOCK_MULTIPLE_HIT[1], ratio.to_dict()
    assert ratio["salaried"] < SHOCK_MULTIPLE_SALARIED, ratio.to_dict()
    assert min(ratio["freelance"], ratio["temporary"]) > 2.5 * ratio["salaried"], ratio.to_dict()
    print("shock multiple of the 30+ share, months 17-19 over 13-15: " + ", ".join(
        f"{k} {v:.2f}" for k, v in ratio.items()))
