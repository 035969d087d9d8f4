"""The behaviour spec's on-book policy on calm simulated months: how many accounts a monthly review suspends, cuts
and raises, and the bound on limit changes (a limit review every `limit_review_every_months`).

Two no_shock books (6,000 accounts, seeds 11 and 12), a behaviour model (150 rounds, early stopping) fitted on months 1-3
of each, then the policy (creditgov.decision.policy.apply_policy, the decision path's policy step) on months
4-15 with the previous month's PD. Stated bands of a calm month (share of the active book):

* suspension 2-8%: the 30+ DPD share is 1.5-4.5% (simulate's documented band), plus fraud signals,
  cumulative overdue days and a doubled PD;
* limit cut 0.1-2% and raise 0.3-4%: card issuers change a few percent of lines a year each way (about
  10-20% of accounts get a limit increase in a year), and here the limit is reviewed only every 6 months since
  it last changed (each change at most +20% / -50%, the spec's raise and cut factors);
* review (human) at most 2%.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creditgov.data import simulate
from creditgov.decision.policy import apply_policy
from creditgov.model import train
from creditgov.spec import load_spec
from helpers import quiet

REPO = Path(__file__).resolve().parents[2]
SEEDS = (11, 12)
CALM = range(4, 16)
BANDS = {"suspend": (0.02, 0.08), "cut": (0.001, 0.02), "raise": (0.003, 0.04), "review": (0.0, 0.02)}


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO / "pipelines" / "behaviour.yaml")


@pytest.fixture(scope="module")
def decided(spec, tmp_path_factory):
    """Per seed and month: the snapshot and the policy's decisions."""
    out = {}
    for seed in SEEDS:
        d = tmp_path_factory.mktemp(f"calm{seed}")
        scn = simulate.load_scenario(REPO / "pipelines" / "scenarios" / "no_shock.yaml", accounts=6000, seed=seed)
        simulate.simulate(scn, d, log=quiet)
        s = train.split(simulate.load_months(d, [1, 2, 3]), spec)
        model = train.fit_model(s.train, s.validation, spec, n_estimators=150)
        prev = None
        for m in [CALM[0] - 1, *CALM]:
            snap = simulate.load_months(d, [m], labelled=False)
            p = model.predict_pd(snap)
            snap["previous_pd"] = snap["account_id"].map(prev).to_numpy(dtype="float64") if prev is not None \
                else np.nan
            prev = pd.Series(p, index=snap["account_id"].to_numpy())
            if m in CALM:
                out[(seed, m)] = (snap, apply_policy(snap, p, spec.policy))
    return out


def test_calm_month_suspension_cut_and_raise_rates_are_in_their_bands(decided):
    rates = {k: d["action"].value_counts(normalize=True) for k, (_, d) in decided.items()}
    table = pd.DataFrame(rates).T.fillna(0.0)
    print("calm-month action shares, min-max over seeds and months 4-15: " + ", ".join(
        f"{a} {table[a].min():.4f}-{table[a].max():.4f}" for a in BANDS))
    for key, r in rates.items():
        for action, (lo, hi) in BANDS.items():
            assert lo <= r.get(action, 0.0) <= hi, (key, action, r.round(4).to_dict())


def test_limits_change_only_at_a_review_and_within_the_factors(decided, spec):
    ob = spec.policy.on_book
    every = ob.limit_review_every_months
    for (seed, m), (snap, d) in decided.items():
        since = snap[ob.fields.months_since_limit_change].to_numpy()
        changed = d["action"].isin(["cut", "raise"]).to_numpy()
        assert changed.any(), (seed, m)
        assert ((since[changed] >= every) & (since[changed] % every == 0)).all(), (seed, m)
        prev, new = d["previous_limit"].to_numpy(), d["limit"].to_numpy()
        up, down = d["action"].eq("raise").to_numpy(), d["action"].eq("cut").to_numpy()
        assert (new[up] > prev[up]).all() and (new[up] <= prev[up] * ob.raise_factor + 1e-9).all()
        assert (new[down] <= prev[down]).all() and (new[down] >= np.minimum(prev[down], spec.policy.limit.minimum)
                                                    - 1e-9).all()
        assert (new[down] >= prev[down] * ob.cut_factor - spec.policy.limit.round_to).all()


def test_a_high_risk_account_between_reviews_keeps_its_limit(spec):
    ob = spec.policy.on_book
    f = ob.fields
    base = {f.current_limit: 5000.0, f.days_past_due: 0.0, f.cumulative_overdue_days: 0.0, f.previous_pd: 0.2,
            f.fraud_signal: False, f.clean_months: 24.0, f.suspended: False, "income": 8000.0}
    rows = pd.DataFrame([{**base, f.months_since_limit_change: s} for s in (5.0, 6.0, 7.0, 12.0, 13.0)])
    high = apply_policy(rows, np.full(len(rows), 0.2), spec.policy)  # high tier, below the review band
    assert high["action"].tolist() == ["keep", "cut", "keep", "cut", "keep"]
    low = apply_policy(rows.assign(**{f.previous_pd: 0.001}), np.full(len(rows), 0.001), spec.policy)
    assert low["action"].tolist() == ["keep", "raise", "keep", "raise", "keep"]
    assert (low.loc[low["action"] == "raise", "limit"] == 6000.0).all()


def test_the_spec_rejects_a_review_cycle_without_its_field():
    from pydantic import ValidationError

    from creditgov.spec import OnBookPolicy

    raw = load_spec(REPO / "pipelines" / "behaviour.yaml").policy.on_book.model_dump()
    raw["fields"]["months_since_limit_change"] = None
    with pytest.raises(ValidationError, match="limit_review_every_months needs fields.months_since_limit_change"):
        OnBookPolicy.model_validate(raw)
