"""Reason codes (creditgov.explain.reasons): additivity, ranking, grouping; and faithfulness on a real model.

The real-model tests use the tiny CreditModel (tests/conftest.py: 12 boosting rounds on 800 rows of the
bundled credit_data split) and score all of credit_data; nothing is written to disk.
"""
from __future__ import annotations

import numpy as np
import pytest

from creditgov.errors import CreditGovError
from creditgov.explain.reasons import (
    ADDITIVITY_TOLERANCE, AdditivityError, check_additivity, group_by_feature, top_reasons)


# --------------------------------------------------------------------------- check_additivity


def _additive(n=6, k=4, seed=3):
    rng = np.random.default_rng(seed)
    phi = rng.normal(0, 0.5, (n, k))
    base = np.full(n, -1.2)
    return base, phi, base + phi.sum(axis=1)


def test_check_additivity_returns_the_errors_when_within_tolerance():
    base, phi, lo = _additive()
    lo = lo.copy()
    lo[1] += 5e-5
    err = check_additivity(base, phi, lo)
    assert err.shape == (6,)
    np.testing.assert_allclose(err, np.abs(base + phi.sum(axis=1) - lo), rtol=0, atol=1e-15)
    assert err[1] == pytest.approx(5e-5, abs=1e-12)
    assert np.all(err <= ADDITIVITY_TOLERANCE)


def test_check_additivity_raises_naming_the_row():
    base, phi, lo = _additive()
    lo = lo.copy()
    lo[2] += 1e-3
    with pytest.raises(AdditivityError) as exc:
        check_additivity(base, phi, lo)
    msg = str(exc.value)
    assert "row 3" in msg  # 1-based, like every other row number creditgov reports
    assert "0.001" in msg
    assert isinstance(exc.value, CreditGovError)


def test_check_additivity_names_the_worst_row():
    base, phi, lo = _additive(n=8)
    lo = lo.copy()
    lo[1] -= 2e-4
    lo[6] += 3e-3
    with pytest.raises(AdditivityError, match=r"row 7\b"):
        check_additivity(base, phi, lo)


def test_check_additivity_custom_tolerance():
    base, phi, lo = _additive()
    lo = lo.copy()
    lo[0] += 1e-3
    assert check_additivity(base, phi, lo, tol=1e-2)[0] == pytest.approx(1e-3)
    with pytest.raises(AdditivityError):
        check_additivity(base, phi, lo, tol=1e-4)


def test_check_additivity_nan_is_a_failure():
    base, phi, lo = _additive()
    lo = lo.copy()
    lo[4] = np.nan
    with pytest.raises(AdditivityError):
        check_additivity(base, phi, lo)


def test_check_additivity_empty():
    err = check_additivity(np.zeros(0), np.zeros((0, 3)), np.zeros(0))
    assert err.shape == (0,)


# --------------------------------------------------------------------------- top_reasons


def test_top_reasons_example():
    feats = ["a", "b", "c", "d", "e", "f"]
    phi = np.array([[0.5, -0.2, 0.0, 0.3, 0.1, 0.7],
                    [-0.1, -0.2, 0.0, -0.3, 0.0, -0.7],
                    [0.0, 0.0, 0.2, 0.0, 0.0, 0.0]])
    out = top_reasons(phi, feats, 4)
    assert [f for f, _ in out[0]] == ["f", "a", "d", "e"]
    assert [v for _, v in out[0]] == [0.7, 0.5, 0.3, 0.1]
    assert out[1] == []            # nothing raised the risk: no reason at all
    assert out[2] == [("c", 0.2)]  # zero is not a reason
    assert [f for f, _ in top_reasons(phi, feats, 2)[0]] == ["f", "a"]
    assert all(isinstance(v, float) for _, v in out[0])


def test_top_reasons_ties_are_stable_in_column_order():
    feats = ["x", "y", "z", "w"]
    phi = np.array([[0.2, 0.2, 0.3, 0.2]])
    assert top_reasons(phi, feats, 4)[0] == [("z", 0.3), ("x", 0.2), ("y", 0.2), ("w", 0.2)]
    assert top_reasons(phi, feats, 2)[0] == [("z", 0.3), ("x", 0.2)]
    # same values, other column order: the order follows the columns
    assert [f for f, _ in top_reasons(phi[:, ::-1], feats[::-1], 4)[0]] == ["z", "w", "y", "x"]


@pytest.mark.parametrize("max_reasons", [1, 2, 4, 10])
def test_top_reasons_properties_on_random_attributions(max_reasons):
    rng = np.random.default_rng(11)
    feats = [f"f{j}" for j in range(9)]
    phi = rng.normal(0, 1, (400, 9))
    phi[rng.random(phi.shape) < 0.1] = 0.0
    phi[:20] = -np.abs(phi[:20])  # rows where every attribution lowers the risk
    out = top_reasons(phi, feats, max_reasons)
    assert len(out) == len(phi)
    for i, reasons in enumerate(out):
        assert len(reasons) <= max_reasons
        vals = [v for _, v in reasons]
        assert all(v > 0 for v in vals)
        assert vals == sorted(vals, reverse=True)
        positive = sorted((v for v in phi[i] if v > 0), reverse=True)
        assert vals == positive[:max_reasons]
        for f, v in reasons:
            assert phi[i, feats.index(f)] == v
    assert all(out[i] == [] for i in range(20))


# --------------------------------------------------------------------------- group_by_feature


def test_group_by_feature_sums_one_hot_columns():
    columns = ["Age", "Home=owner", "Home=rent", "Income", "Home=other"]
    feature_of = {"Home=owner": "Home", "Home=rent": "Home", "Home=other": "Home"}
    phi = np.array([[0.1, 0.2, -0.05, 0.3, 0.01],
                    [-0.4, 0.0, 0.5, 0.0, -0.2]])
    out, feats = group_by_feature(phi, columns, feature_of)
    assert feats == ["Age", "Home", "Income"]  # first-seen order
    np.testing.assert_allclose(out, [[0.1, 0.16, 0.3], [-0.4, 0.3, 0.0]])
    np.testing.assert_allclose(out.sum(axis=1), phi.sum(axis=1))  # grouping keeps additivity


def test_group_by_feature_identity_when_one_column_per_feature():
    phi = np.arange(12, dtype=float).reshape(3, 4)
    out, feats = group_by_feature(phi, ["a", "b", "c", "d"], {"a": "a", "b": "b", "c": "c", "d": "d"})
    assert feats == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(out, phi)


def test_grouped_reason_can_outrank_its_parts():
    # two one-hot parts of 0.2 each make Home (0.4) the top reason over Age (0.3)
    columns = ["Age", "Home=owner", "Home=rent"]
    out, feats = group_by_feature(np.array([[0.3, 0.2, 0.2]]), columns, {"Home=owner": "Home", "Home=rent": "Home"})
    assert top_reasons(out, feats, 4)[0][0][0] == "Home"


# --------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def quick(tiny_model, credit_data):
    return tiny_model, credit_data


def test_real_model_additivity_every_row(quick):
    model, frame = quick
    log_odds = model.log_odds(frame)
    phi, base = model.contributions(frame)
    assert phi.shape == (len(frame), len(model.feature_names))
    gap = np.abs(base + phi.sum(axis=1) - log_odds)
    assert gap.max() <= 1e-4, f"worst row {int(gap.argmax()) + 1}: {gap.max():.3g}"
    err = check_additivity(base, phi, log_odds)
    np.testing.assert_allclose(err, gap)
    # the calibrated log-odds are what the PD is made of
    np.testing.assert_allclose(model.predict_pd(frame), 1 / (1 + np.exp(-log_odds)), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_real_model_attributions_match_shap_tree_explainer(quick):
    import shap
    import xgboost

    from creditgov.model.credit_model import encode

    model, frame = quick
    raw = frame.iloc[::4]  # every fourth applicant: ~1,100 rows across the whole file
    sv = shap.TreeExplainer(model.booster_).shap_values(
        xgboost.DMatrix(encode(raw, model.encodings), enable_categorical=True))
    phi, _ = model.contributions(raw)
    assert sv.shape == phi.shape
    np.testing.assert_allclose(phi, np.asarray(sv) * model.calib_a_, rtol=0, atol=1e-5)


def test_real_model_reasons_only_name_risk_raising_features(quick, spec):
    model, frame = quick
    phi, _ = model.contributions(frame)
    grouped, feats = group_by_feature(phi, model.feature_names, {e.name: e.name for e in model.encodings})
    assert feats == [f.name for f in spec.model_inputs]
    top = top_reasons(grouped, feats, spec.policy.max_reasons)
    n_with_reason = 0
    for i, reasons in enumerate(top):
        assert len(reasons) <= spec.policy.max_reasons
        for f, v in reasons:
            assert grouped[i, feats.index(f)] == v > 0
        n_with_reason += bool(reasons)
    assert n_with_reason > len(frame) * 0.9  # almost every applicant has some risk-raising feature
