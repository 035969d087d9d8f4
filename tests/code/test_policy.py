"""The decision policy (creditgov.decision.policy): pure, on synthetic frames.

Application decisions use the policy of pipelines/application.yaml as shipped; on-book
decisions use that policy plus an `on_book` section built here from a dict (so the
pydantic validators run) over synthetic account columns.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from creditgov.decision.policy import apply_policy, condition_mask, on_book_applies, rule_reasons, tier_of
from creditgov.spec import Condition, Policy

NAN = float("nan")


@pytest.fixture(scope="module")
def policy(spec) -> Policy:
    return spec.policy


def _app_frame(income, **extra) -> pd.DataFrame:
    data = {"Income": pd.Series(income, dtype="float64")}
    for k, v in extra.items():
        data[k] = v
    return pd.DataFrame(data)


def _expected_limit(income: float, multiple: float, lim) -> float:
    raw = np.floor(multiple * income / lim.round_to) * lim.round_to
    return float(np.clip(raw, lim.minimum, lim.maximum))


# --------------------------------------------------------------------------- the shipped policy


def test_shipped_policy_is_the_one_these_tests_assume(policy):
    # if the YAML changes, these numbers must be revisited, not silently re-derived
    assert [(t.name, t.max_pd) for t in policy.tiers] == [("low", 0.15), ("medium", 0.35), ("high", 1.0)]
    assert policy.decline_at_pd == 0.5
    assert tuple(policy.review_band) == (0.4, 0.5)
    assert policy.limit.capacity_feature == "Income"
    assert (policy.limit.minimum, policy.limit.maximum, policy.limit.round_to) == (200, 5000, 50)
    assert [r.name for r in policy.rules] == ["income_not_stated"]


# --------------------------------------------------------------------------- tiers


@pytest.mark.parametrize("p, tier", [
    (0.0, "low"), (0.01, "low"), (0.15, "low"),            # exactly max_pd belongs to that tier
    (np.nextafter(0.15, 1), "medium"), (0.2, "medium"), (0.35, "medium"),
    (np.nextafter(0.35, 1), "high"), (0.5, "high"), (0.99, "high"), (1.0, "high"),
])
def test_tier_by_pd_bounds(policy, p, tier):
    assert tier_of(np.array([p]), policy)[0] == tier
    out = apply_policy(_app_frame([1000.0]), np.array([p]), policy)
    assert out["tier"].iloc[0] == tier


def test_tier_of_vectorised_matches_scalar(policy):
    p = np.array([0.35, 0.15, 0.9, 0.0, 0.151, 0.349])
    assert list(tier_of(p, policy)) == ["medium", "low", "high", "low", "medium", "medium"]


# --------------------------------------------------------------------------- actions


@pytest.mark.parametrize("p, action", [
    (0.10, "approve"), (np.nextafter(0.40, 0), "approve"),
    (0.40, "review"), (0.45, "review"), (np.nextafter(0.50, 0), "review"),   # [low, high)
    (0.50, "decline"), (0.51, "decline"), (0.99, "decline"),              # PD >= decline_at_pd
])
def test_action_by_pd(policy, p, action):
    out = apply_policy(_app_frame([1000.0]), np.array([p]), policy)
    row = out.iloc[0]
    assert row["action"] == action
    assert row["decided_by"] == "model"
    assert bool(row["review_queue"]) is (action == "review")
    if action == "decline":
        assert row["limit"] == 0.0
        assert row["rules_triggered"] == ["pd_at_or_above_decline"]
    elif action == "review":
        assert row["limit"] > 0
        assert row["rules_triggered"] == ["pd_in_review_band"]
    else:
        assert row["limit"] > 0
        assert row["rules_triggered"] == []


def test_decline_has_zero_limit_whatever_the_income(policy):
    out = apply_policy(_app_frame([100.0, 1000.0, 50000.0, NAN]), np.full(4, 0.7), policy)
    assert (out["action"] == "decline").all()
    assert (out["limit"] == 0.0).all()
    assert not out["review_queue"].any()


def test_previous_limit_is_missing_for_applications(policy):
    out = apply_policy(_app_frame([500.0, 700.0]), np.array([0.1, 0.6]), policy)
    assert out["previous_limit"].isna().all()


# --------------------------------------------------------------------------- the income_not_stated rule


def test_income_not_stated_sends_an_approval_to_review(policy):
    out = apply_policy(_app_frame([NAN, 1000.0]), np.array([0.05, 0.05]), policy)
    missing, stated = out.iloc[0], out.iloc[1]
    assert missing["action"] == "review"
    assert bool(missing["review_queue"]) is True
    assert missing["decided_by"] == "rule:income_not_stated"
    assert missing["rules_triggered"][0] == "income_not_stated"
    assert missing["tier"] == "low"  # the tier is still the model's
    assert stated["action"] == "approve"
    assert stated["decided_by"] == "model"
    assert "income_not_stated" not in stated["rules_triggered"]


def test_income_not_stated_does_not_turn_a_model_decline_into_a_review(policy):
    out = apply_policy(_app_frame([NAN]), np.array([0.8]), policy)
    row = out.iloc[0]
    assert row["action"] == "decline"
    assert row["decided_by"] == "model"
    assert row["limit"] == 0.0
    assert bool(row["review_queue"]) is False
    # the rule held, so it is recorded, but it did not decide
    assert set(row["rules_triggered"]) == {"income_not_stated", "pd_at_or_above_decline"}


def test_income_not_stated_on_a_model_review_stays_a_model_review(policy):
    out = apply_policy(_app_frame([NAN]), np.array([0.45]), policy)
    row = out.iloc[0]
    assert row["action"] == "review"
    assert row["decided_by"] == "model"
    assert set(row["rules_triggered"]) == {"income_not_stated", "pd_in_review_band"}


def test_income_not_stated_review_gets_the_minimum_limit(policy):
    # no capacity to size a limit on: the proposal is the policy minimum, for the reviewer to confirm
    out = apply_policy(_app_frame([NAN]), np.array([0.05]), policy)
    assert out["limit"].iloc[0] == policy.limit.minimum


def test_a_decline_rule_overrides_a_model_approval_and_is_listed_first(policy):
    rules = [r.model_dump() for r in policy.rules] + [{
        "name": "bad_records", "when": {"feature": "Records", "op": "eq", "value": "yes"},
        "action": "decline", "reason": {"en": "Bad records", "zh": "不良记录"}}]
    pol = Policy.model_validate({**policy.model_dump(), "rules": rules})
    frame = _app_frame([1000.0, 1000.0, NAN, 1000.0], Records=["yes", "no", "yes", "yes"])
    out = apply_policy(frame, np.array([0.05, 0.05, 0.05, 0.45]), pol)
    assert list(out["action"]) == ["decline", "approve", "decline", "decline"]
    assert list(out["decided_by"]) == ["rule:bad_records", "model", "rule:bad_records", "rule:bad_records"]
    assert list(out["limit"])[0] == 0.0 and list(out["limit"])[2] == 0.0 and list(out["limit"])[3] == 0.0
    for i in (0, 2, 3):
        assert out["rules_triggered"].iloc[i][0] == "bad_records"
    assert "income_not_stated" in out["rules_triggered"].iloc[2]
    assert "pd_in_review_band" in out["rules_triggered"].iloc[3]
    assert not out["review_queue"].iloc[3]


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("income, p, expected", [
    (117.0, 0.10, 350.0),     # low: 3 x 117 = 351 -> rounded down to 350
    (100.0, 0.10, 300.0),     # exact multiple of 50 stays
    (149.0, 0.20, 250.0),     # medium: 2 x 149 = 298 -> 250
    (50.0, 0.10, 200.0),      # 150 -> below the minimum: 200
    (0.0, 0.10, 200.0),       # no income at all: minimum
    (3000.0, 0.10, 5000.0),   # 9000 -> capped at the maximum
    (2499.0, 0.20, 4950.0),   # 4998 -> 4950, under the cap
    (399.0, 0.45, 350.0),     # high tier (review band): 1 x 399 -> 350
    (5100.0, 0.36, 5000.0),   # high: 5100 -> capped
])
def test_limit_examples(policy, income, p, expected):
    out = apply_policy(_app_frame([income]), np.array([p]), policy)
    assert out["limit"].iloc[0] == expected


def test_limit_formula_over_a_grid(policy):
    rng = np.random.default_rng(7)
    income = np.concatenate([rng.integers(0, 4000, 300).astype(float), [0.0, 50.0, 66.0, 67.0, 1666.0, 1667.0]])
    p = rng.uniform(0, 0.3999, len(income))  # never declined, never in the review band
    out = apply_policy(_app_frame(income), p, policy)
    lim = policy.limit
    for inc, pd_, tier, got in zip(income, p, out["tier"], out["limit"]):
        assert got == _expected_limit(inc, lim.multiple[tier], lim), (inc, pd_, tier)
        assert got % lim.round_to == 0
        assert lim.minimum <= got <= lim.maximum
    assert (out["action"] == "approve").all()


def test_limit_never_exceeds_the_computed_amount_unless_raised_to_the_minimum(policy):
    income = np.arange(0, 3000, 7, dtype=float)
    out = apply_policy(_app_frame(income), np.full(len(income), 0.1), policy)
    computed = 3.0 * income
    over = out["limit"].to_numpy() > computed
    assert (out["limit"].to_numpy()[over] == policy.limit.minimum).all()


# --------------------------------------------------------------------------- shape of the output


def test_one_row_per_input_row_same_index(policy):
    idx = pd.Index([10, 3, 7, 42, 0], name="whatever")
    frame = pd.DataFrame({"Income": [100.0, NAN, 5000.0, 250.0, 80.0]}, index=idx)
    out = apply_policy(frame, np.array([0.1, 0.1, 0.6, 0.45, 0.2]), policy)
    assert len(out) == len(frame)
    assert out.index.equals(frame.index)
    assert list(out.columns) == ["tier", "action", "decided_by", "limit", "previous_limit", "rules_triggered",
                                 "review_queue"]
    assert list(out["action"]) == ["approve", "review", "decline", "review", "approve"]


def test_empty_batch(policy):
    out = apply_policy(_app_frame([]), np.array([]), policy)
    assert len(out) == 0


def test_apply_policy_does_not_mutate_its_input(policy):
    frame = _app_frame([100.0, NAN])
    before = frame.copy()
    apply_policy(frame, np.array([0.1, 0.6]), policy)
    pd.testing.assert_frame_equal(frame, before)


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize("op, value, expected", [
    ("missing", None, [False, True, False, False]),
    ("eq", 5.0, [False, False, True, False]),
    ("ne", 5.0, [True, False, False, True]),   # a missing value never satisfies a comparison
    ("lt", 5.0, [True, False, False, False]),
    ("le", 5.0, [True, False, True, False]),
    ("gt", 5.0, [False, False, False, True]),
    ("ge", 5.0, [False, False, True, True]),
])
def test_condition_mask(op, value, expected):
    frame = pd.DataFrame({"x": [1.0, NAN, 5.0, 9.0]})
    got = condition_mask(frame, Condition(feature="x", op=op, value=value))
    assert list(got) == expected


def test_condition_mask_in():
    frame = pd.DataFrame({"h": ["owner", None, "rent", "other"]})
    got = condition_mask(frame, Condition(feature="h", op="in", value=["rent", "other"]))
    assert list(got) == [False, False, True, True]


# --------------------------------------------------------------------------- on book

ON_BOOK_REASONS = {
    k: {"en": f"{k} (en)", "zh": f"{k}（中文）"}
    for k in ("suspend_fraud", "suspend_overdue", "suspend_cumulative_overdue", "suspend_risk_rise",
              "restore_after_clean_repayment", "remain_suspended", "raise_after_clean_repayment")
}


@pytest.fixture(scope="module")
def ob_policy(policy) -> Policy:
    on_book = {
        "fields": {"current_limit": "credit_limit", "days_past_due": "dpd", "cumulative_overdue_days": "cum_overdue",
                   "previous_pd": "prev_pd", "fraud_signal": "fraud", "clean_months": "clean_months",
                   "suspended": "suspended"},
        "suspend_days_past_due": 30,
        "suspend_cumulative_overdue_days": 90,
        "suspend_pd_rise_factor": 2.0,
        "suspend_pd_rise_min_pd": 0.2,
        "cut_tier": "high",
        "cut_factor": 0.5,
        "raise_max_pd": 0.1,
        "raise_clean_months": 6,
        "raise_factor": 1.5,
        "restore_clean_months": 3,
        "reasons": ON_BOOK_REASONS,
    }
    return Policy.model_validate({**policy.model_dump(), "on_book": on_book})


def _account(**kw) -> dict:
    base = {"credit_limit": 1000.0, "dpd": 0.0, "cum_overdue": 0.0, "prev_pd": 0.5, "fraud": False,
            "clean_months": 0.0, "suspended": False, "Income": 800.0}
    base.update(kw)
    return base


def _decide_accounts(pol, accounts: list[dict], p) -> pd.DataFrame:
    return apply_policy(pd.DataFrame(accounts), np.asarray(p, dtype=float), pol)


def test_on_book_applies_only_with_all_its_columns(ob_policy, policy):
    full = pd.DataFrame([_account()])
    assert on_book_applies(full, ob_policy)
    assert not on_book_applies(full, policy)  # no on_book section
    partial = full.drop(columns=["clean_months"])
    assert not on_book_applies(partial, ob_policy)
    # without every on-book column the application decisions apply
    out = apply_policy(partial, np.array([0.05]), ob_policy)
    assert out["action"].iloc[0] == "approve"


@pytest.mark.parametrize("account, p, trigger", [
    (_account(fraud=True), 0.05, "suspend_fraud"),
    (_account(dpd=30.0), 0.05, "suspend_overdue"),
    (_account(dpd=95.0), 0.05, "suspend_overdue"),
    (_account(cum_overdue=90.0), 0.05, "suspend_cumulative_overdue"),
    (_account(prev_pd=0.1), 0.25, "suspend_risk_rise"),     # 0.25 >= 2 x 0.1 and >= 0.2
    (_account(prev_pd=0.1), 0.2, "suspend_risk_rise"),      # both bounds inclusive
])
def test_each_suspension_trigger(ob_policy, account, p, trigger):
    row = _decide_accounts(ob_policy, [account], [p]).iloc[0]
    assert row["action"] == "suspend"
    assert row["decided_by"] == "rule:" + trigger
    assert row["rules_triggered"][0] == trigger
    assert row["limit"] == 0.0
    assert row["previous_limit"] == account["credit_limit"]
    assert bool(row["review_queue"]) is False


@pytest.mark.parametrize("account, p", [
    (_account(dpd=29.0), 0.05),                  # one day short
    (_account(cum_overdue=89.0), 0.05),
    (_account(prev_pd=0.1), 0.19),               # doubled, but below the minimum PD
    (_account(prev_pd=0.2), 0.3),                # above the minimum PD, but only 1.5x
    (_account(prev_pd=NAN), 0.3),                # no previous PD: no rise can be measured
    (_account(fraud="no"), 0.05),
])
def test_no_suspension_below_thresholds(ob_policy, account, p):
    row = _decide_accounts(ob_policy, [account], [p]).iloc[0]
    assert row["action"] != "suspend"
    assert row["limit"] > 0


def test_fraud_takes_precedence_when_several_triggers_hold(ob_policy):
    accounts = [
        _account(fraud=True, dpd=60.0, cum_overdue=200.0, prev_pd=0.05),
        _account(dpd=60.0, cum_overdue=200.0, prev_pd=0.05),
        _account(cum_overdue=200.0, prev_pd=0.05),
    ]
    out = _decide_accounts(ob_policy, accounts, [0.6, 0.6, 0.6])
    assert (out["action"] == "suspend").all()
    assert list(out["decided_by"]) == ["rule:suspend_fraud", "rule:suspend_overdue", "rule:suspend_cumulative_overdue"]
    assert out["rules_triggered"].iloc[0] == ["suspend_fraud", "suspend_overdue", "suspend_cumulative_overdue",
                                              "suspend_risk_rise"]
    assert out["rules_triggered"].iloc[1][0] == "suspend_overdue"
    assert (out["limit"] == 0.0).all()


@pytest.mark.parametrize("truthy", [True, "yes", "1", 1, "TRUE", "y"])
def test_fraud_signal_truthy_spellings(ob_policy, truthy):
    row = _decide_accounts(ob_policy, [_account(fraud=truthy)], [0.05]).iloc[0]
    assert row["decided_by"] == "rule:suspend_fraud"


def test_suspended_account_restored_after_enough_clean_months(ob_policy):
    accounts = [
        _account(suspended=True, clean_months=3.0, credit_limit=1200.0),   # exactly restore_clean_months
        _account(suspended=True, clean_months=12.0, credit_limit=700.0),
        _account(suspended=True, clean_months=2.0, credit_limit=1200.0),   # too few
        _account(suspended=True, clean_months=0.0, credit_limit=1200.0),
        _account(suspended=True, clean_months=12.0, dpd=45.0),              # a trigger holds: no restore
    ]
    out = _decide_accounts(ob_policy, accounts, [0.05, 0.05, 0.05, 0.05, 0.05])
    assert list(out["action"]) == ["restore", "restore", "suspend", "suspend", "suspend"]
    assert list(out["decided_by"]) == ["rule:restore_after_clean_repayment", "rule:restore_after_clean_repayment",
                                       "rule:remain_suspended", "rule:remain_suspended", "rule:suspend_overdue"]
    assert list(out["limit"]) == [1200.0, 700.0, 0.0, 0.0, 0.0]
    assert out["rules_triggered"].iloc[0] == ["restore_after_clean_repayment"]
    assert out["rules_triggered"].iloc[2] == ["remain_suspended"]


def test_high_tier_cut_by_factor_rounded_down(ob_policy):
    accounts = [_account(credit_limit=1030.0), _account(credit_limit=2000.0), _account(credit_limit=999.0)]
    out = _decide_accounts(ob_policy, accounts, [0.6, 0.9, 0.36])  # high tier, outside the review band
    assert list(out["tier"]) == ["high", "high", "high"]
    assert list(out["action"]) == ["cut", "cut", "cut"]
    assert list(out["decided_by"]) == ["model", "model", "model"]
    assert list(out["limit"]) == [500.0, 1000.0, 450.0]  # 515 -> 500, 1000, 499.5 -> 450
    assert list(out["previous_limit"]) == [1030.0, 2000.0, 999.0]
    assert out["rules_triggered"].iloc[0] == ["tier_high"]


def test_a_cut_never_raises_the_limit(ob_policy):
    accounts = [_account(credit_limit=100.0), _account(credit_limit=300.0)]
    out = _decide_accounts(ob_policy, accounts, [0.6, 0.6])
    assert list(out["action"]) == ["cut", "cut"]
    assert (out["limit"] <= out["previous_limit"]).all(), list(zip(out["previous_limit"], out["limit"]))


def test_low_pd_with_clean_months_is_raised(ob_policy):
    accounts = [
        _account(clean_months=6.0, credit_limit=1000.0),    # exactly raise_clean_months
        _account(clean_months=24.0, credit_limit=1010.0),   # 1515 -> 1500
        _account(clean_months=12.0, credit_limit=4000.0),   # 6000 -> capped at 5000
        _account(clean_months=5.0, credit_limit=1000.0),    # too few clean months: keep
    ]
    out = _decide_accounts(ob_policy, accounts, [0.1, 0.05, 0.02, 0.05])
    assert list(out["action"]) == ["raise", "raise", "raise", "keep"]
    assert list(out["decided_by"])[:3] == ["rule:raise_after_clean_repayment"] * 3
    assert list(out["limit"]) == [1500.0, 1500.0, 5000.0, 1000.0]
    assert out["rules_triggered"].iloc[0] == ["raise_after_clean_repayment"]
    assert out["rules_triggered"].iloc[3] == []


def test_pd_above_raise_bound_is_kept(ob_policy):
    out = _decide_accounts(ob_policy, [_account(clean_months=24.0)], [0.11])
    row = out.iloc[0]
    assert row["action"] == "keep"
    assert row["limit"] == 1000.0


def test_on_book_review_band(ob_policy):
    out = _decide_accounts(ob_policy, [_account(), _account(suspended=True, clean_months=0.0)], [0.45, 0.45])
    assert out["action"].iloc[0] == "review"
    assert bool(out["review_queue"].iloc[0]) is True
    assert out["limit"].iloc[0] == 1000.0
    assert out["rules_triggered"].iloc[0] == ["pd_in_review_band"]
    # a suspended account stays suspended in the review band: the suspension rules come first
    assert out["action"].iloc[1] == "suspend"


def test_on_book_output_rows_and_index(ob_policy):
    accounts = [_account(fraud=True), _account(), _account(suspended=True, clean_months=5.0),
                _account(clean_months=9.0), _account(dpd=31.0)]
    frame = pd.DataFrame(accounts, index=pd.Index([101, 5, 77, 8, 3]))
    out = apply_policy(frame, np.array([0.05, 0.2, 0.05, 0.05, 0.05]), ob_policy)
    assert len(out) == len(frame)
    assert out.index.equals(frame.index)
    assert list(out["action"]) == ["suspend", "keep", "restore", "raise", "suspend"]
    assert (out.loc[out["action"] == "suspend", "limit"] == 0.0).all()


def test_rule_reasons_cover_rules_and_on_book(ob_policy, policy):
    rr = rule_reasons(ob_policy)
    assert set(rr) == {"income_not_stated"} | set(ON_BOOK_REASONS)
    assert rr["income_not_stated"]["zh"] == policy.rules[0].reason.zh
    assert rr["suspend_fraud"] == ON_BOOK_REASONS["suspend_fraud"]
    assert set(rule_reasons(policy)) == {"income_not_stated"}
