"""Counterfactual search (creditgov.counterfactual).

Synthetic outcome functions pin down the search itself (direction, cheapest change,
pairs, notes); the tiny real model (tests/conftest.py: 12 boosting rounds on 800 rows of the bundled
credit_data split) with the application policy checks that what it finds really flips the decision.
Nothing is written to disk.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from creditgov.decision import counterfactual
from creditgov.decision.policy import apply_policy

ACTIONABLE = {"Time", "Debt", "Amount"}


def _rows(**cols) -> pd.DataFrame:
    base = {"Time": 60.0, "Debt": 0.0, "Amount": 1000.0, "Income": 200.0}
    n = max((len(v) for v in cols.values()), default=1)
    return pd.DataFrame({k: cols.get(k, [v] * n) for k, v in base.items()})


def _outcome(rule):
    """An outcome function for `search`: approve where rule(frame) holds, else decline; PD 0.1 / 0.9."""
    def outcome(frame: pd.DataFrame):
        ok = np.asarray(rule(frame), dtype=bool)
        return np.where(ok, "approve", "decline").astype(object), np.where(ok, 0.1, 0.9)
    return outcome


# --------------------------------------------------------------------------- the search, synthetic


def test_actionable_numeric_features_of_the_catalogue(spec):
    assert {f.name for f in spec.model_inputs if f.actionable and f.type == "numeric"} == ACTIONABLE
    assert spec.feature("Amount").sign > 0 and spec.feature("Debt").sign > 0 and spec.feature("Time").sign == 0


def test_cheapest_single_change_on_a_monotone_feature(spec):
    rows = _rows(Amount=[1000.0])
    res = counterfactual.search(rows, np.array(["decline"]), spec, _outcome(lambda f: f["Amount"] <= 500))
    r = res[0]
    assert r["found"] is True
    assert r["action_after"] == "approve"
    assert r["pd_after"] == 0.1
    assert len(r["changes"]) == 1
    c = r["changes"][0]
    assert c["feature"] == "Amount" and c["from"] == 1000.0
    # the grid towards the lower bound (1) in 40 steps, rounded: the largest value <= 500 is 500
    assert c["to"] == 500.0
    assert r["cost"] == pytest.approx(0.5)


def test_monotone_features_only_move_to_lower_risk(spec):
    # the outcome would approve a LARGER amount; the search must not offer it
    rows = _rows(Amount=[1000.0], Debt=[500.0])
    res = counterfactual.search(rows, np.array(["decline"]), spec,
                                _outcome(lambda f: (f["Amount"] > 1500) | (f["Debt"] > 900)))
    assert res[0]["found"] is False


def test_non_monotone_feature_moves_both_ways(spec):
    rows = _rows(Time=[60.0, 60.0])
    up = counterfactual.search(rows.iloc[:1], np.array(["decline"]), spec, _outcome(lambda f: f["Time"] >= 100))[0]
    down = counterfactual.search(rows.iloc[:1], np.array(["decline"]), spec, _outcome(lambda f: f["Time"] <= 20))[0]
    assert up["found"] and up["changes"][0]["feature"] == "Time" and up["changes"][0]["to"] >= 100
    assert down["found"] and down["changes"][0]["feature"] == "Time" and down["changes"][0]["to"] <= 20
    assert 1 <= down["changes"][0]["to"] and up["changes"][0]["to"] <= 120


def test_the_cheaper_feature_wins(spec):
    # Amount needs a 10% cut, Debt a 100% cut: Amount is the cheaper change
    rows = _rows(Amount=[1000.0], Debt=[400.0])
    res = counterfactual.search(rows, np.array(["decline"]), spec,
                                _outcome(lambda f: (f["Amount"] <= 900) | (f["Debt"] <= 0)))
    assert [c["feature"] for c in res[0]["changes"]] == ["Amount"]
    assert res[0]["changes"][0]["to"] >= 900 - 25  # one grid step of 1000/40 at most below the need


def test_pairs_are_tried_when_no_single_change_works(spec):
    rows = _rows(Amount=[1000.0], Debt=[400.0])
    res = counterfactual.search(rows, np.array(["decline"]), spec,
                                _outcome(lambda f: (f["Amount"] <= 600) & (f["Debt"] <= 200)))
    r = res[0]
    assert r["found"] is True
    changed = {c["feature"]: c for c in r["changes"]}
    assert set(changed) == {"Amount", "Debt"}
    assert changed["Amount"]["to"] <= 600 and changed["Debt"]["to"] <= 200
    assert changed["Amount"]["to"] < 1000 and changed["Debt"]["to"] < 400
    expected_cost = sum(abs(c["to"] - c["from"]) / max(abs(c["from"]), 1.0) for c in r["changes"])
    assert r["cost"] == pytest.approx(expected_cost)


def test_rows_are_independent_and_in_order(spec):
    rows = _rows(Amount=[1000.0, 400.0, 2000.0])
    res = counterfactual.search(rows, np.array(["decline"] * 3), spec, _outcome(lambda f: f["Amount"] <= 300))
    assert len(res) == 3
    assert all(r["found"] for r in res)
    assert [r["changes"][0]["from"] for r in res] == [1000.0, 400.0, 2000.0]
    assert all(r["changes"][0]["to"] <= 300 for r in res)


def test_not_found_note_names_the_actionable_features(spec):
    rows = _rows(Amount=[1000.0])
    res = counterfactual.search(rows, np.array(["decline"]), spec, _outcome(lambda f: np.zeros(len(f), bool)))
    assert res[0]["found"] is False
    for name in ACTIONABLE:
        assert name in res[0]["note"]


def test_missing_actionable_values_are_not_searched(spec):
    rows = _rows(Amount=[1000.0], Debt=[np.nan])
    res = counterfactual.search(rows, np.array(["decline"]), spec, _outcome(lambda f: f["Debt"].fillna(1e9) <= 10))
    assert res[0]["found"] is False


def test_no_actionable_feature_in_the_catalogue(spec):
    frozen = spec.model_copy(update={"features": [f.model_copy(update={"actionable": False}) for f in spec.features]})
    res = counterfactual.search(_rows(Amount=[1.0, 2.0]), np.array(["decline", "decline"]), frozen,
                                _outcome(lambda f: np.ones(len(f), bool)))
    assert [r["found"] for r in res] == [False, False]
    assert "no actionable numeric feature" in res[0]["note"]


def test_unfavourable_targets_do_not_count(spec):
    # a decline that becomes a review is not an outcome change the customer asked about
    def outcome(f):
        return np.full(len(f), "review", dtype=object), np.full(len(f), 0.45)
    res = counterfactual.search(_rows(Amount=[1000.0]), np.array(["decline"]), spec, outcome)
    assert res[0]["found"] is False


def test_empty_input(spec):
    assert counterfactual.search(_rows().iloc[:0], np.array([], dtype=object), spec,
                                 _outcome(lambda f: np.ones(len(f), bool))) == []


# --------------------------------------------------------------------------- a real model and the real policy


@pytest.fixture(scope="module")
def declined(spec, credit_splits, tiny_model):
    model = tiny_model
    test = credit_splits.test
    decided = apply_policy(test, model.predict_pd(test), spec.policy)
    rows = test[(decided["action"] == "decline").to_numpy()]
    assert len(rows) >= 30, "the tiny model should decline a fair number of test applicants"

    def outcome(f):
        p = model.predict_pd(f)
        return apply_policy(f, p, spec.policy)["action"].to_numpy(), p

    res = counterfactual.search(rows, np.array(["decline"] * len(rows)), spec, outcome)
    return model, rows, res, outcome


def _apply_changes(row: pd.Series, changes: list[dict]) -> pd.DataFrame:
    changed = row.to_frame().T.reset_index(drop=True).infer_objects()
    for c in changes:
        changed[c["feature"]] = pd.Series([c["to"]], dtype="float64")
    return changed


def test_real_one_result_per_declined_row(declined):
    _, rows, res, _ = declined
    assert len(res) == len(rows)
    found = [r for r in res if r["found"]]
    assert found, "some declined applicant should have a counterfactual"
    assert len(found) < len(res), "and some should have none (e.g. income not stated)"


def test_real_counterfactuals_flip_the_outcome(declined, spec):
    model, rows, res, _ = declined
    for (_, row), r in zip(rows.iterrows(), res):
        if not r["found"]:
            continue
        changed = _apply_changes(row, r["changes"])
        p = model.predict_pd(changed)
        after = apply_policy(changed, p, spec.policy)
        assert after["action"].iloc[0] == "approve" == r["action_after"], (row.name, r)
        assert p[0] == pytest.approx(r["pd_after"], abs=1e-12)
        assert p[0] < spec.policy.review_band[0]
        # and the unchanged row really was declined
        p0 = model.predict_pd(row.to_frame().T.reset_index(drop=True).infer_objects())
        assert p0[0] >= spec.policy.decline_at_pd


def test_real_counterfactuals_change_only_actionable_features_within_ranges(declined, spec):
    _, rows, res, _ = declined
    for (_, row), r in zip(rows.iterrows(), res):
        if not r["found"]:
            continue
        assert 1 <= len(r["changes"]) <= 2
        names = [c["feature"] for c in r["changes"]]
        assert len(set(names)) == len(names)
        assert set(names) <= ACTIONABLE
        for c in r["changes"]:
            lo, hi = spec.feature(c["feature"]).range
            assert lo <= c["to"] <= hi, c
            assert c["from"] == float(row[c["feature"]])
            if c["feature"] in ("Amount", "Debt"):  # monotone increasing risk: never increased
                assert c["to"] <= c["from"], c
        expected = sum(abs(c["to"] - c["from"]) / max(abs(c["from"]), 1.0) for c in r["changes"])
        assert r["cost"] == pytest.approx(expected)


def test_real_not_found_rows_carry_a_note(declined):
    _, rows, res, _ = declined
    for r in res:
        if r["found"]:
            assert set(r) == {"found", "cost", "action_after", "pd_after", "changes"}
        else:
            assert set(r) == {"found", "note"}
            assert "Time, Debt, Amount" in r["note"]


def test_real_income_not_stated_is_never_approved_by_a_counterfactual(declined):
    # the full policy is re-applied: with Income missing the rule sends any approval to review
    _, rows, res, _ = declined
    missing = rows["Income"].isna().to_numpy()
    assert missing.any(), "the test split should hold declined applicants without income"
    assert not any(r["found"] for r, m in zip(res, missing) if m)


def test_real_search_is_deterministic(declined, spec):
    _, rows, res, outcome = declined
    again = counterfactual.search(rows, np.array(["decline"] * len(rows)), spec, outcome)
    assert json.dumps(again, sort_keys=True) == json.dumps(res, sort_keys=True)


def test_equal_costs_go_to_the_earlier_catalogue_feature_whatever_the_search_order(spec):
    # the bisected features are searched before the scanned ones; a tie keeps the catalogue's order (Time first)
    rows = _rows(Time=[60.0], Amount=[900.0])
    s = counterfactual._Search(rows, np.array(["decline"]), spec, lambda idx, ch: (np.array(["approve"]),
                                                                                   np.array([0.1])))
    third = np.array([1 / 3])
    yes = np.array([True])

    def offer(feature, rank, to):
        s.rank = rank
        s.keep(np.array([0]), third, np.array(["approve"]), np.array([0.1]), {feature: np.array([to])}, yes)
        return s.best[0]["changes"][0]["feature"]

    assert offer("Amount", 4, 600.0) == "Amount"  # found first (bisection)
    assert offer("Time", 0, 40.0) == "Time"  # as cheap, earlier in the catalogue: wins the tie
    assert offer("Amount", 4, 600.0) == "Time"  # as cheap, later: does not
    assert s.better(np.array([0]), np.array([[0.3, 1 / 3, 0.4]])).tolist() == [[True, False, False]]


def test_a_few_rows_are_answered_from_their_grids_evaluated_first(declined, spec, monkeypatch):
    """Up to MEMO_ROWS rows, the screening and every grid point (one feature, then pairs) are evaluated in one
    call before each stage and the search answered from them: the same results as the search calling evaluate
    itself (one-feature changes, pairs, notes), in fewer calls."""
    _, rows, _, outcome = declined
    rows = rows.head(24).reset_index(drop=True)
    adverse = np.array(["decline"] * len(rows))
    integral = counterfactual.integral_flags(rows, spec)

    def searched(memo_rows: int, one: pd.DataFrame, adv) -> tuple[list, int]:
        monkeypatch.setattr(counterfactual, "MEMO_ROWS", memo_rows)
        plain, calls = counterfactual.frame_evaluator(one, outcome), [0]

        def counted(idx, changes):
            calls[0] += 1
            return plain(idx, changes)

        got = counterfactual.search(one, adv, spec, evaluate=counted, integral=integral)
        return json.dumps(got, sort_keys=True), calls[0]

    fewer = pairs = 0
    for i in range(len(rows)):  # one row at a time, as a served request
        one = rows.iloc[[i]].reset_index(drop=True)
        (direct, n_direct), (memo, n_memo) = searched(0, one, adverse[:1]), searched(16, one, adverse[:1])
        assert memo == direct
        fewer += n_memo < n_direct
        pairs += memo.count('"feature"') == 2 or '"found": false' in memo  # (the pair stage ran)
    assert fewer >= len(rows) // 2 and pairs, (fewer, pairs)
    assert searched(16, rows.head(8), adverse[:8])[0] == searched(0, rows.head(8), adverse[:8])[0]
