"""The vectorised decide stages and the counterfactual bisection give the same answers as the plain
per-row definitions they replace; the Dask engine's model blob round-trips. Nothing is written to disk
but temporary files; no cluster is started here (see tests/e2e/test_dask_engine.py)."""
from __future__ import annotations

import hashlib
import hmac
import json

import numpy as np
import pandas as pd
import pytest

from helpers import assert_evaluator_matches_batch

from creditgov.decision import counterfactual
from creditgov.decision import decide
from creditgov.data import privacy
from creditgov.decision.policy import apply_policy, favourable_downward_closed
from creditgov.spec import Policy


@pytest.fixture(scope="module")
def behaviour(behaviour_spec):
    return behaviour_spec


# --------------------------------------------------------------------------- row hashes and canonical inputs


def _reference_hashes(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    out = []
    for rec in frame[columns].itertuples(index=False, name=None):
        text = json.dumps([decide._canonical(v) for v in rec], separators=(",", ":"), ensure_ascii=False)
        out.append(hashlib.sha256(text.encode()).hexdigest())
    return out


def test_row_hashes_match_the_per_row_definition():
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame({
        "id": [f"A{i:05d}" if i % 17 else None for i in range(n)],
        "x": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n) * 1e3),
        "k": rng.integers(-5, 5, n),
        "big": np.where(rng.random(n) < 0.5, 2.0**60, 1e-7),
        "z": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(0, 9, n)), dtype="Int64"),
        "cat": rng.choice(np.array(["a", "b", 'q"uote', "中文", None], dtype=object), n),
        "whole": np.round(rng.normal(size=n) * 10),
        "neg0": np.where(rng.random(n) < 0.5, -0.0, 0.0),
        "flag": rng.random(n) < 0.5,
    })
    cols = list(frame.columns)
    assert decide.row_hashes(frame, cols) == _reference_hashes(frame, cols)
    assert decide.row_hashes(frame.iloc[:0], cols) == []
    for c in cols:
        values, texts = decide._canonical_column(frame[c])
        canonical = [decide._canonical(v) for v in frame[c].astype(object)]
        assert [type(v) for v in values] == [type(v) for v in canonical], c
        assert list(values) == canonical, c
        assert texts == [json.dumps(v, ensure_ascii=False) for v in canonical]
        # the input__ columns of the log hold what the per-row map made of them, dtype inference included
        mapped = decide._as_mapped(values)
        expected = frame[c].map(decide._canonical).astype(object).to_numpy()
        assert [type(v) for v in mapped] == [type(v) for v in expected], c
        pd.testing.assert_series_equal(pd.Series(mapped), pd.Series(expected), check_exact=True)


def test_pseudonymise_is_the_keyed_hash_of_each_value(monkeypatch):
    """privacy.pseudonymise (one prepared HMAC state copied per value) gives each value's own keyed hash."""
    values = pd.Series(["A1", None, "B2", np.nan, "中", 7], dtype=object, index=[10, 11, 12, 13, 14, 15], name="id")

    def reference(key: bytes) -> list:
        return [None if pd.isna(v) else hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()[:24]
                for v in values]

    monkeypatch.setenv(privacy.KEY_ENV, "a key")
    got = privacy.pseudonymise(values)
    assert list(got) == reference(b"a key")
    assert list(got.index) == list(values.index) and got.name == "id" and got.dtype == object
    monkeypatch.setenv(privacy.KEY_ENV, "another key")
    assert list(privacy.pseudonymise(values)) == reference(b"another key")
    assert privacy.pseudonymise(values)[10] == hmac.new(b"another key", b"A1", hashlib.sha256).hexdigest()[:24]


# --------------------------------------------------------------------------- reason lists


def _reference_reasons(phi, features, decided_by, spec):
    from creditgov.decision.policy import rule_features, rule_reasons
    from creditgov.explain.reasons import top_reasons

    rr = rule_reasons(spec.policy)
    behind = rule_features(spec.policy)
    never = {f.name for f in spec.features if f.never_a_reason}
    feat_reason = {f.name: f.reason for f in spec.features}
    k = spec.policy.max_reasons
    codes, en, zh, attr = [], [], [], []
    for i in range(len(phi)):
        c, e, z, a = [], [], [], []
        by = decided_by[i]
        rule = by[5:] if by.startswith("rule:") else None
        if rule in rr:
            c.append("rule:" + rule), e.append(rr[rule]["en"]), z.append(rr[rule]["zh"]), a.append(None)
        # one line per cause: never-a-reason features, and the features of the rule that decided, are left out
        left_out = never | set(behind.get(rule, ()))
        kept = [j for j, f in enumerate(features) if f not in left_out]
        reasons = top_reasons(phi[i:i + 1, kept], [features[j] for j in kept], k)[0]
        for feat, val in reasons[: k - len(c) if c else k]:
            c.append(feat), e.append(feat_reason[feat].en), z.append(feat_reason[feat].zh), a.append(val)
        codes.append(c), en.append(e), zh.append(z), attr.append(a)
    return codes, en, zh, attr


def test_reason_lists_match_the_per_row_definition(behaviour):
    rng = np.random.default_rng(5)
    features = [f.name for f in behaviour.model_inputs]
    n = 400
    phi = rng.normal(size=(n, len(features)))
    phi[rng.random(phi.shape) < 0.3] = 0.0  # ties and non-positive attributions
    phi[:5] = -1.0  # no reason at all
    decided_by = rng.choice(np.array(["model", "rule:suspend_fraud", "rule:remain_suspended", "rule:unknown"],
                                     dtype=object), n)
    got = decide._reason_lists(phi, features, decided_by, behaviour)
    assert tuple(got) == tuple(_reference_reasons(phi, features, decided_by, behaviour))


# --------------------------------------------------------------------------- policy


def test_policy_rules_triggered_per_pattern(behaviour):
    rng = np.random.default_rng(8)
    n = 300
    frame = pd.DataFrame({"credit_limit": 1000.0, "days_past_due": rng.choice([0.0, 30.0], n),
                          "cum_overdue_days_12m": rng.choice([0.0, 95.0], n),
                          "previous_pd": rng.choice([np.nan, 0.05], n), "fraud_signal": rng.random(n) < 0.1,
                          "clean_months": rng.choice([0.0, 4.0, 24.0], n), "suspended": rng.random(n) < 0.3,
                          "months_since_limit_change": rng.choice([5.0, 6.0, 12.0], n), "income": 5000.0})
    p = rng.random(n) * 0.6
    out = apply_policy(frame, p, behaviour.policy)
    lists = list(out["rules_triggered"])
    assert len({id(x) for x in lists}) == n  # one list object per row
    for i in range(n):
        assert (out["decided_by"].iloc[i] == "model") or lists[i][0] == out["decided_by"].iloc[i][5:]


def test_favourable_downward_closed(spec, behaviour):
    assert favourable_downward_closed(spec.policy, on_book=False)
    assert favourable_downward_closed(behaviour.policy, on_book=True)
    raw = behaviour.policy.model_dump()
    raw["review_band"] = (0.05, 0.10)  # a band under the cut tier: keep above it, review below
    assert not favourable_downward_closed(Policy.model_validate(raw), on_book=True)
    raw = spec.policy.model_dump()
    raw["review_band"] = (0.2, 0.3)  # approvals between the band and the decline threshold
    assert not favourable_downward_closed(Policy.model_validate(raw), on_book=False)


# --------------------------------------------------------------------------- counterfactual: bisection == full scan


def _full_scan(monkeypatch):
    monkeypatch.setattr(counterfactual, "monotone_for_search", lambda f, spec, on_book: False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bisection_finds_what_the_full_grid_finds(spec, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    n = 120
    rows = pd.DataFrame({"Time": rng.choice([12.0, 36.0, 60.0], n),
                         "Debt": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 3000, n).astype(float)),
                         "Amount": rng.integers(100, 5000, n).astype(float),
                         "Income": np.where(rng.random(n) < 0.1, np.nan, 200.0)})

    def outcome(f):  # monotone in Debt and Amount, not in Time; the income rule sends approvals to review
        risk = f["Amount"] / 5000 + f["Debt"].fillna(0) / 3000 + np.abs(f["Time"] - 36) / 100
        p = (1 / (1 + np.exp(-(6 * risk - 4)))).to_numpy()
        return apply_policy(f, p, spec.policy)["action"].to_numpy(), p

    adverse = np.array(["decline"] * n, dtype=object)
    fast = counterfactual.search(rows, adverse, spec, outcome, max_pair_rows=40)
    with monkeypatch.context() as m:
        _full_scan(m)
        slow = counterfactual.search(rows, adverse, spec, outcome, max_pair_rows=40)
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True)
    assert any(r["found"] for r in fast)


def test_bisection_on_book_screens_hopeless_rows(behaviour, monkeypatch):
    rng = np.random.default_rng(11)
    n = 200
    feats = {f.name: rng.uniform(*f.range, n).round() for f in behaviour.model_inputs if f.type == "numeric"}
    rows = pd.DataFrame({**feats, "employment": "salaried", "utilisation": rng.uniform(0, 1.5, n).round(4),
                         "payment_ratio": rng.uniform(0, 3, n).round(4),
                         "days_past_due": rng.choice([0.0, 30.0, 60.0], n),
                         "cum_overdue_days_12m": rng.choice([0.0, 120.0], n), "previous_pd": np.nan,
                         "fraud_signal": rng.random(n) < 0.1, "suspended": rng.random(n) < 0.2,
                         "clean_months": rng.choice([0.0, 5.0], n), "credit_limit": 1000.0,
                         "months_since_limit_change": 6.0})

    def outcome(f):
        risk = (f["utilisation"] + f["days_past_due"] / 60 + f["inquiries_6m"] / 500 - f["payment_ratio"] / 3)
        p = (1 / (1 + np.exp(-(3 * risk - 2)))).to_numpy()
        return apply_policy(f, p, behaviour.policy)["action"].to_numpy(), p

    actions, _ = outcome(rows)
    adverse = np.isin(actions, ["cut", "suspend"])
    assert adverse.sum() > 50
    sub, act = rows[adverse].reset_index(drop=True), actions[adverse]
    fast = counterfactual.search(sub, act, behaviour, outcome, max_pair_rows=30)
    with monkeypatch.context() as m:
        _full_scan(m)
        slow = counterfactual.search(sub, act, behaviour, outcome, max_pair_rows=30)
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True)
    for r, (_, row) in zip(fast, sub.iterrows()):
        if r["found"]:
            for c in r["changes"]:
                lo, hi = behaviour.feature(c["feature"]).range
                assert lo <= c["to"] <= hi
                sign = behaviour.feature(c["feature"]).sign
                assert (c["to"] - c["from"]) * sign <= 0  # only in the risk-lowering direction


def test_split_search_equals_whole_search(spec):
    """What the Dask engine does: singles per part with the batch's rounding flags, pairs on the first rows."""
    rng = np.random.default_rng(4)
    n = 90
    rows = pd.DataFrame({"Time": 36.0, "Debt": rng.integers(0, 3000, n).astype(float),
                         "Amount": rng.integers(100, 5000, n).astype(float), "Income": 200.0})
    rows.loc[::7, "Amount"] += 0.5  # the whole batch is not integral; some parts are

    def outcome(f):
        p = (1 / (1 + np.exp(-(6 * (f["Amount"] / 5000 + f["Debt"] / 3000) - 4.5)))).to_numpy()
        return apply_policy(f, p, spec.policy)["action"].to_numpy(), p

    adverse = np.array(["decline"] * n, dtype=object)
    whole = counterfactual.search(rows, adverse, spec, outcome, max_pair_rows=10)
    integral = counterfactual.integral_flags(rows, spec)
    singles = []
    for a, b in ((0, 30), (30, 61), (61, n)):
        singles += counterfactual.single_changes(rows.iloc[a:b], adverse[a:b], spec, outcome, integral=integral)
    todo = [i for i, s in enumerate(singles) if s is None][:10]
    pairs = counterfactual.pair_changes(rows.iloc[todo], adverse[todo], spec, outcome)
    got = []
    for i, s in enumerate(singles):
        if s is not None:
            got.append(s)
        elif i in todo:
            got.append(pairs[todo.index(i)] or counterfactual.not_found_note(spec, capped=False))
        else:
            got.append(counterfactual.not_found_note(spec, capped=True))
    assert json.dumps(got, sort_keys=True) == json.dumps(whole, sort_keys=True)


# --------------------------------------------------------------------------- engine: the model travels as JSON


def test_model_blob_round_trip(spec, tmp_path):
    import xgboost as xgb

    from creditgov.decision import dask
    from creditgov.model.credit_model import CreditModel, encode, encodings_from_spec

    encs = encodings_from_spec(spec)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({f.name: rng.uniform(*f.range, 300) if f.type == "numeric" else
                          rng.choice(f.categories, 300) for f in spec.model_inputs if f.derived is None})
    y = rng.random(300) < 0.3
    booster = xgb.train({"max_depth": 3, "objective": "binary:logistic"},
                        xgb.DMatrix(encode(frame, encs), label=y, enable_categorical=True), 5)
    model = CreditModel(booster, encs, 1.2, -0.1, {})
    blob = dask.model_blob(model.save(tmp_path / "m"))
    assert set(blob) == {"booster.json", "model.json"} and all(isinstance(v, bytes) for v in blob.values())
    loaded = dask.load_blob(blob)
    assert dask.load_blob(blob) is loaded  # once per worker process
    np.testing.assert_array_equal(loaded.predict_pd(frame), model.predict_pd(frame))


def test_candidate_evaluator_scores_like_the_model(spec):
    """The counterfactual's matrix evaluator gives the PDs and actions of model + policy on changed rows."""
    import xgboost as xgb

    from creditgov.model.credit_model import CreditModel, encode, encodings_from_spec

    encs = encodings_from_spec(spec)
    rng = np.random.default_rng(9)
    n = 400
    frame = pd.DataFrame({f.name: rng.uniform(*f.range, n).round() if f.type == "numeric" else
                          rng.choice(f.categories + [None], n) if f.missing_allowed else rng.choice(f.categories, n)
                          for f in spec.model_inputs if f.derived is None})
    frame.loc[::9, "Income"] = np.nan
    y = rng.random(n) < 0.4
    booster = xgb.train({"max_depth": 3, "objective": "binary:logistic", "monotone_constraints":
                         "(" + ",".join(str(e.monotone) for e in encs) + ")"},
                        xgb.DMatrix(encode(frame, encs), label=y, enable_categorical=True), 20)
    model = CreditModel(booster, encs, 0.9, 0.2, {})
    evaluate = decide.candidate_evaluator(model, frame, spec)
    idx = rng.integers(0, n, 1000)
    amount = rng.uniform(1, 10000, 1000).round()
    actions, p = evaluate(idx, {"Amount": amount})
    trial = frame.iloc[idx].reset_index(drop=True)
    trial["Amount"] = amount
    ref_actions, ref_p = decide.score_and_decide(model, trial, spec)
    np.testing.assert_array_equal(p, ref_p)
    np.testing.assert_array_equal(actions, ref_actions)
    # a search's grid: many candidates of one row alike (equal leaves, equal PD and policy inputs: each group is
    # scored and decided once), a missing value among them
    idx = np.repeat(np.arange(50), 40)
    changes = {"Time": np.tile(np.repeat([6.0, 24.0, 36.0, 60.0], 10), 50),
               "Amount": np.tile(np.r_[np.linspace(100, 5000, 38).round(), np.nan, 100.0], 50)}
    assert_evaluator_matches_batch(evaluate, model, frame, idx, changes, spec)
