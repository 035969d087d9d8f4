"""Early warning (watchlist) and risk-based pricing (issue 15, points 2 and 4): the spec's rules, the policy's
actions, the one decision path (log, reasons, notices, audit trail) and the lift in the risk report, checked
against a count made here from the snapshots.

One small default-scenario book (3,000 accounts, 24 months) and one quick behaviour model (12 rounds on months
1-3) serve the module."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from creditgov.data import inputs as data_inputs
from creditgov.data import simulate, validate
from creditgov.decision import decide
from creditgov.decision.policy import ADVERSE_ACTIONS, apply_policy
from creditgov.errors import SpecError
from creditgov.model import train
from creditgov.report import early_warning, pages, risk, wording
from creditgov.spec import load_spec
from helpers import TINY_ROUNDS, in_project, names_leaked, notice_body, quiet

MONTHS = list(range(2, 15))
BASE = {"account_id": "A1", "snapshot_month": "2025-01", "customer_name": "x", "phone": "1", "age": 40,
        "employment": "salaried", "income": 8000, "tenure_months": 24, "prior_bad_records": 0, "inquiries_6m": 1,
        "credit_limit": 10000, "txn_count": 5, "spend_amount": 1200, "instalment_share": 0.2, "spend_change_3m": 1.1,
        "utilisation": 0.3, "payment_ratio": 1.5, "days_past_due": 0, "max_dpd_6m": 0, "months_overdue_12m": 0,
        "cum_overdue_days_12m": 0, "clean_months": 12, "shared_device_count": 1, "previous_pd": 0.05,
        "fraud_signal": 0, "suspended": 0, "months_since_limit_change": 5}


@pytest.fixture(scope="module")
def book(tmp_path_factory, repo_root):
    d = tmp_path_factory.mktemp("ewbook") / "book"
    scn = simulate.load_scenario(repo_root / "pipelines" / "scenarios" / "default.yaml", accounts=3000)
    simulate.simulate(scn, d, log=quiet)
    return d


@pytest.fixture(scope="module")
def model(book, behaviour_spec):
    s = train.split(simulate.load_months(book, [1, 2, 3]), behaviour_spec)
    return train.fit_model(s.train, s.validation, behaviour_spec, n_estimators=TINY_ROUNDS)


@pytest.fixture(scope="module")
def figs(book, behaviour_spec, model):
    return early_warning.figures(book, MONTHS, behaviour_spec, model)


# ------------------------------------------------------------------------------------------------ the spec


@pytest.mark.parametrize("change, message", [
    (lambda r: r["policy"]["pricing"]["table"].__setitem__(2, {"tier": "high", "apr": 0.3}),
     "tier 'high' rate 0.3 is above the legal cap"),
    (lambda r: r["policy"]["pricing"]["table"].pop(), "no rate for tiers ['high']"),
    (lambda r: r["policy"]["on_book"]["early_warning"].__setitem__("pd_rise_factor", 2.5),
     "must be below the suspension trigger"),
    (lambda r: r["policy"]["on_book"]["early_warning"]["signals"][0]["when"][0].__setitem__("feature", "age"),
     "signals.inquiries_spike: feature 'age' is protected"),
])
def test_spec_refuses_a_rate_above_the_cap_an_unpriced_tier_a_warning_above_the_trigger(tmp_path, repo_root, change,
                                                                                         message):
    raw = copy.deepcopy(yaml.safe_load((repo_root / "pipelines/behaviour.yaml").read_text(encoding="utf-8")))
    change(raw)
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ the policy


def test_policy_warns_current_accounts_freezes_on_two_signals_and_reprices_only_at_a_review(behaviour_spec):
    cases = [  # (changes, PD, expected action, expected signals)
        ({"inquiries_6m": 8}, 0.05, "watch_reminder", ["inquiries_spike"]),
        ({"inquiries_6m": 8, "payment_ratio": 1.05}, 0.05, "watch_freeze", ["inquiries_spike", "payment_ratio_drop"]),
        ({"previous_pd": 0.04}, 0.07, "watch_reminder", ["pd_rise"]),           # x1.75: below the x2 suspension
        ({"previous_pd": 0.04}, 0.09, "watch_reminder", ["pd_rise"]),           # x2.25, PD < 0.15: no suspension
        ({"inquiries_6m": 8, "days_past_due": 10}, 0.05, "keep", []),           # already late: collections' case
        ({"inquiries_6m": 8, "previous_pd": 0.004, "clean_months": 30, "months_since_limit_change": 6}, 0.004,
         "watch_reminder", ["inquiries_spike"]),                                # warned: not raised
        ({"previous_pd": 0.025, "months_since_limit_change": 6}, 0.035, "reprice", []),  # low -> medium at a review
        ({"previous_pd": 0.025, "months_since_limit_change": 5}, 0.035, "keep", []),     # between reviews: held
        ({"previous_pd": 0.05, "months_since_limit_change": 6}, 0.02, "keep", []),      # a fall is no adverse action
    ]
    frame = pd.DataFrame([{**BASE, **c} for c, *_ in cases])
    p = np.array([c[1] for c in cases])
    d = apply_policy(frame, p, behaviour_spec.policy)
    for i, (_, _, action, signals) in enumerate(cases):
        assert (d.loc[i, "action"], list(d.loc[i, "warning_signals"])) == (action, signals), i
    assert d["watchlist"].tolist() == [bool(c[3]) for c in cases]
    assert d.loc[1, "decided_by"] == "rule:warn_inquiries_spike" and "watch_freeze" in ADVERSE_ACTIONS
    assert (d.loc[6, "apr"], d.loc[6, "previous_apr"]) == (0.18, 0.12) and d.loc[6, "decided_by"] == "rule:reprice_tier_rise"
    assert (d.loc[7, "apr"], d.loc[7, "previous_apr"]) == (0.12, 0.12)
    assert (d.loc[8, "apr"], d.loc[8, "previous_apr"]) == (0.12, 0.18)
    assert d.loc[5, "limit"] == d.loc[5, "previous_limit"]  # the raise withheld


def test_no_rate_above_the_legal_cap_whatever_the_account_says(behaviour_spec):
    frame = pd.DataFrame([{**BASE, "previous_pd": 0.5, "months_since_limit_change": 6}] * 3)
    d = apply_policy(frame, np.array([0.2, 0.6, 0.99]), behaviour_spec.policy)
    assert (d["apr"] <= behaviour_spec.policy.pricing.legal_cap_apr).all()


# ------------------------------------------------------------------------------------------------ the decision path


def test_watchlist_and_reprice_decisions_flow_through_the_decision_path(book, behaviour_spec, model, tmp_path):
    spec = behaviour_spec
    dm = decide.DecisionModel(model, "1", "run")
    before = simulate.load_months(book, [16], labelled=False)
    month = simulate.load_months(book, [17], labelled=False)
    probe = month.assign(previous_pd=month["account_id"].map(
        pd.Series(model.predict_pd(before), index=before["account_id"])).to_numpy(dtype="float64"))
    acts = apply_policy(probe, model.predict_pd(probe), spec.policy)["action"]
    pick = pd.concat([month[acts.to_numpy() == a].head(3) for a in ("watch_reminder", "watch_freeze", "reprice", "keep")])
    assert set(acts[pick.index]) >= {"watch_reminder", "watch_freeze", "reprice"}
    # the previous review of these accounts, as decide --previous makes it (validated, explained)
    prev_rows = validate.validate_batch(before[before["account_id"].isin(pick["account_id"])], spec, "m16")
    e = decide.explain_batch(model, prev_rows.clean, spec)
    ids = prev_rows.clean["account_id"].astype(str).to_numpy()
    previous = decide.PreviousReview(pd.Series(e.pd, index=ids), pd.DataFrame(e.phi, index=ids, columns=e.features))
    rows = validate.validate_batch(pick.reset_index(drop=True), spec, "m17")
    with in_project(tmp_path):
        dec = decide.decide_rows(rows, dm, spec, "2025-05-01", previous)
        with pytest.MonkeyPatch.context() as mp:  # a few rows' frames (inputs.frame_of_columns): the constructor's
            mp.setattr(data_inputs, "SMALL_FRAME_ROWS", 0)
            ref = decide.decide_rows(rows, dm, spec, "2025-05-01", previous).log
        assert len(ref) <= data_inputs.SMALL_FRAME_ROWS and ref.dtypes.tolist() == dec.log.dtypes.tolist()
        assert all(repr(dec.log[c].tolist()) == repr(ref[c].tolist()) for c in ref.columns)
        res = decide.publish(dec, spec, "decisions", log=quiet)
        from creditgov.governance import audit
        log = res.log
        assert res.audit.inserted == len(log)
        for a in ("watch_reminder", "watch_freeze", "reprice"):
            row = log[log["action"] == a].iloc[0]
            assert audit.find_decision(str(row["decision_id"]))["action"] == a
            assert row["apr"] <= spec.policy.pricing.legal_cap_apr
            if a.startswith("watch"):
                signals = ["rule:warn_" + s for s in row["warning_signals"]]
                assert list(row["reason_codes"][:len(signals)]) == signals[:spec.policy.max_reasons]
                assert row["watchlist"]
            else:
                assert row["apr"] > row["previous_apr"] and row["reason_codes"][0] == "rule:reprice_tier_rise"
            assert len(row["reasons_zh"]) == len(row["reasons_en"]) == len(row["reason_codes"]) <= 4
            stamp = {"generated_at": "2026-11-30T08:00:00+00:00", "model": "m", "policy": "p", "data": "d",
                     "log": "l", "decision_time": row["decision_time"]}
            ctx = pages._decision_context(row, spec, {}, stamp)
            for lang in ("en", "zh"):
                n = ctx["notices"][lang]
                html = pages.render("notice.html", n=n, **ctx)
                text = notice_body(html)
                assert spec.lender.name.en in html if lang == "en" else spec.lender.name.zh in html
                assert not names_leaked(text, spec, lang), (a, lang, names_leaked(text, spec, lang))
                assert n["reasons"] == list(row["reasons_" + lang])
                if a == "reprice":
                    assert ("12%" in n["rate"] or "18%" in n["rate"]) and "24%" not in text
            adverse = any(r == "reg_b_reasons" for r, _ in ctx["notices"]["en"]["rights"]) or a in ADVERSE_ACTIONS
            assert adverse == (a != "watch_reminder")


# ------------------------------------------------------------------------------------------------ the lift


def test_lift_and_warned_share_match_a_count_made_from_the_snapshots(book, behaviour_spec, model, figs):
    spec, ew = behaviour_spec, behaviour_spec.policy.on_book.early_warning
    ob = spec.policy.on_book
    snaps = {m: pd.read_parquet(book / f"month={m:02d}" / "snapshot.parquet") for m in range(1, MONTHS[-1] + 1)}
    pds = {m: pd.Series(model.predict_pd(s.assign(previous_pd=np.nan)), index=s["account_id"]) for m, s in snaps.items()}
    ops = {"ge": np.greater_equal, "gt": np.greater, "le": np.less_equal, "lt": np.less}
    watched_n = warned_n = bad_n = warned_bad_n = 0
    for m in MONTHS:
        if m + ew.lift_horizon_months > MONTHS[-1]:
            continue
        s = snaps[m]
        p = pds[m].to_numpy()
        prev = s["account_id"].map(pds[m - 1]).to_numpy(dtype="float64")
        lo, hi = spec.policy.review_band
        suspend = ((s["fraud_signal"] == 1) | (s["days_past_due"] >= ob.suspend_days_past_due)
                   | (s["cum_overdue_days_12m"] >= ob.suspend_cumulative_overdue_days)
                   | ((p >= prev * ob.suspend_pd_rise_factor) & (p >= ob.suspend_pd_rise_min_pd))).to_numpy()
        watched = (s["days_past_due"].to_numpy() == 0) & ~suspend & ~s["suspended"].astype(bool).to_numpy() \
            & ~((p >= lo) & (p < hi))
        warned = (p >= prev * ew.pd_rise_factor) & (p >= ew.pd_rise_min_pd)
        for sig in ew.signals:
            hit = np.ones(len(s), dtype=bool)
            for c in sig.when:
                hit &= ops[c.op](s[c.feature].to_numpy(dtype="float64"), c.value)
            warned |= hit
        warned &= watched
        future = pd.concat([snaps[m + k][["account_id", "days_past_due"]] for k in range(1, ew.lift_horizon_months + 1)])
        worst = future.groupby("account_id")["days_past_due"].max()
        seen = future.groupby("account_id").size()
        bad = (s["account_id"].map(worst).fillna(0).to_numpy() >= ew.lift_days_past_due) | \
              (s["account_id"].map(seen).fillna(0).to_numpy() < ew.lift_horizon_months)
        watched_n += watched.sum()
        warned_n += warned.sum()
        bad_n += (bad & watched).sum()
        warned_bad_n += (bad & warned).sum()
    lift = (warned_bad_n / warned_n) / (bad_n / watched_n)
    got = figs.pooled
    assert (got["watched"], got["warned"]) == (watched_n, warned_n)
    assert got["lift"] == pytest.approx(lift, rel=1e-12)
    assert got["warned_share"] == pytest.approx(warned_n / watched_n, rel=1e-12)
    assert 0.02 < got["warned_share"] < 0.25 and got["lift"] > 1.5  # the warning knows something
    by_tier = figs.pricing_pooled.set_index("tier")
    assert (by_tier["mean_apr"] <= spec.policy.pricing.legal_cap_apr + 1e-12).all()


def test_risk_report_shows_the_lift_and_pricing_and_writes_their_csv(book, figs, tmp_path):
    out = risk.write_report(book, MONTHS, tmp_path, figs)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "Early warning" in html and f"{figs.pooled['lift']:.2f}" in html and "Pricing by tier" in html
    csv = pd.read_csv(out / "early_warning_by_month.csv")
    assert csv["warned"].sum() == figs.pooled["warned"]
    assert set(pd.read_csv(out / "pricing_by_tier.csv")["tier"]) == {"low", "medium", "high"}


def test_an_application_policy_with_pricing_offers_its_tier_rate_with_each_line(spec, behaviour_spec):
    from creditgov.spec import Policy

    raw = spec.policy.model_dump()
    raw["pricing"] = behaviour_spec.policy.pricing.model_dump()
    raw["pricing"]["table"] = [{"tier": t.name, "apr": 0.1 + 0.05 * i} for i, t in enumerate(spec.policy.tiers)]
    pol = Policy.model_validate(raw)
    frame = pd.DataFrame({"Income": [500.0] * 3, **{r.when.feature: [np.nan if r.when.op != "missing" else 1.0] * 3
                                                      for r in spec.policy.rules}})
    p = np.array([0.01, 0.2, 0.9])
    d = apply_policy(frame, p, pol)
    approved = (d["action"] == "approve").to_numpy()
    assert approved.any() and (d["action"] == "decline").any()
    assert np.isnan(d.loc[d["action"] == "decline", "apr"]).all()
    expect = {t.name: 0.1 + 0.05 * i for i, t in enumerate(spec.policy.tiers)}
    assert [round(a, 10) for a in d.loc[approved, "apr"]] == [round(expect[t], 10) for t in d.loc[approved, "tier"]]


def test_counterfactuals_of_a_few_on_book_rows_answered_from_their_grids_are_the_sequential_searchs(
        book, behaviour_spec, model):
    """counterfactual's memo route (a served request's few rows: every candidate in one evaluation first) on on-book
    accounts (cut, suspend, watch_freeze, reprice; the on-book fields the policy reads): the same one- and
    two-feature changes as the sequential search, row by row and as a batch."""
    from creditgov.decision import counterfactual

    before = simulate.load_months(book, [16], labelled=False)
    month = simulate.load_months(book, [17], labelled=False)
    rows = month.assign(previous_pd=month["account_id"].map(
        pd.Series(model.predict_pd(before), index=before["account_id"])).to_numpy(dtype="float64"))
    actions = apply_policy(rows, model.predict_pd(rows), behaviour_spec.policy)["action"].to_numpy()
    pick = np.concatenate([np.flatnonzero(actions == a)[:4] for a in ADVERSE_ACTIONS])
    rows, actions = rows.iloc[pick].reset_index(drop=True), actions[pick].astype(object)
    assert len(set(actions)) >= 2, set(actions)

    def both(sub, adv):
        ev = [decide.candidate_evaluator(model, sub, behaviour_spec) for _ in range(2)]
        one = [counterfactual.single_changes(sub, adv, behaviour_spec, evaluate=ev[t], memo=bool(t))
               for t in (1, 0)]
        two = [counterfactual.pair_changes(sub, adv, behaviour_spec, evaluate=ev[t], memo=bool(t))
               for t in (1, 0)]
        return one, two

    (fast, slow), (pfast, pslow) = both(rows, actions)
    assert fast == slow and pfast == pslow
    assert any(fast) or any(pfast), "some adverse account must have a change"
    for i in range(len(rows)):
        (f1, s1), (p1, q1) = both(rows.iloc[[i]].reset_index(drop=True), actions[[i]])
        assert f1 == s1 == fast[i:i + 1] and p1 == q1
