"""CreditModel: JSON persistence, TreeSHAP additivity, encoding, Platt calibration."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from creditgov.model import train
from creditgov.model.credit_model import BOOSTER_FILE, META_FILE, CreditModel, Encoding, encode, encodings_from_spec
from helpers import TINY_ROUNDS


@pytest.fixture(scope="module")
def splits(credit_splits):
    return credit_splits


@pytest.fixture(scope="module")
def tiny(tiny_rows):
    """(train rows, validation rows) of the tiny model (tests/conftest.py)."""
    return tiny_rows


@pytest.fixture(scope="module")
def model(tiny_model) -> CreditModel:
    return tiny_model


def _is_pickle(path) -> bool:
    return path.suffix in (".pkl", ".pickle") or path.read_bytes()[:1] == b"\x80"


def test_split_is_stratified_disjoint_and_complete(spec, credit_data, splits):
    ids = [set(s[spec.source.id_column]) for s in (splits.train, splits.validation, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(credit_data[spec.source.id_column])
    assert splits.method == "stratified"
    assert splits.sizes() == {"train": 2672, "validation": 891, "test": 891}
    rate = train.target_vector(credit_data, spec).mean()
    for part in (splits.train, splits.validation, splits.test):
        assert abs(train.target_vector(part, spec).mean() - rate) < 0.01


def test_save_load_round_trip_gives_identical_predictions_and_no_pickle(model, splits, tmp_path):
    saved = model.save(tmp_path / "model")
    files = sorted(p.name for p in saved.rglob("*") if p.is_file())
    assert files == sorted([BOOSTER_FILE, META_FILE])
    assert not any(_is_pickle(p) for p in saved.rglob("*") if p.is_file())
    meta = json.loads((saved / META_FILE).read_text(encoding="utf-8"))
    assert meta["calibration"] == {"method": "platt-on-margin", "a": model.calib_a_, "b": model.calib_b_}

    loaded = CreditModel.load(saved)
    assert loaded.encodings == model.encodings
    assert (loaded.calib_a_, loaded.calib_b_) == (model.calib_a_, model.calib_b_)
    assert loaded.info["n_trees"] == model.info["n_trees"] == TINY_ROUNDS
    test = splits.test
    np.testing.assert_array_equal(loaded.predict_pd(test), model.predict_pd(test))
    np.testing.assert_array_equal(loaded.contributions(test)[0], model.contributions(test)[0])


def test_predictions_are_probabilities_and_calibration_keeps_direction(model, splits):
    p = model.predict_pd(splits.test)
    assert p.shape == (len(splits.test),) and np.all((p > 0) & (p < 1))
    assert model.calib_a_ > 0
    order_margin = np.argsort(model.margin(splits.test), kind="stable")
    assert np.all(np.diff(p[order_margin]) >= 0)


def test_contributions_add_up_to_the_log_odds_within_1e_9(model, splits):
    phi, base = model.contributions(splits.test)
    np.testing.assert_allclose(base + phi.sum(axis=1), model.log_odds(splits.test), rtol=0, atol=1e-9)


def test_platt_layer_is_fitted_on_the_margin_scoring_uses(model, tiny, spec):
    valid = tiny[1]
    assert (model.calib_a_, model.calib_b_) == train.fit_platt(model.margin(valid), train.target_vector(valid, spec))


def test_margin_is_the_fastshap_leaf_sum_and_matches_xgboost_to_float32(model, splits):
    import xgboost as xgb

    from creditgov.model.treeshap import FastTreeShap

    test = splits.test
    margin = model.margin(test)
    np.testing.assert_array_equal(margin, FastTreeShap(model.booster_).margin(encode(test, model.encodings)))
    np.testing.assert_array_equal(model.log_odds(test), model.calibrate(margin))
    xgb_margin = model.booster_.predict(xgb.DMatrix(encode(test, model.encodings), enable_categorical=True),
                                        output_margin=True)
    np.testing.assert_allclose(margin, xgb_margin, rtol=0, atol=1e-5)


def test_margin_matrix_scores_an_encoded_matrix_like_margin(model, splits):
    from creditgov.model.treeshap import FastTreeShap

    X = FastTreeShap(model.booster_).matrix(encode(splits.test, model.encodings))
    np.testing.assert_array_equal(model.margin_matrix(X), model.margin(splits.test))


def test_margin_changed_scores_each_leaf_group_once_with_the_same_sums(model, splits, monkeypatch):
    """The counterfactual grid: candidates of a base row differing in one or two columns (fine grids, NaN,
    values on a threshold) get margin_matrix's numbers bit for bit, from fewer rows scored."""
    from creditgov.model.treeshap import FastTreeShap

    trees = FastTreeShap(model.booster_)
    X = trees.matrix(encode(splits.test.iloc[:40], model.encodings))
    cols = [j for j in range(X.shape[1]) if trees.split_points(j) is not None and len(trees.split_points(j))][:2]
    base = np.repeat(np.arange(len(X)), 30)
    real = model.margin_matrix
    scored = []
    monkeypatch.setattr(model, "margin_matrix", lambda M: scored.append(len(M)) or real(M))
    for changed in ([cols[0]], cols):
        Xc = X[base]
        for j in changed:
            points = trees.split_points(j)
            grid = np.linspace(points[0] - 1, points[-1] + 1, 30, dtype=np.float32)
            grid[3], grid[4] = points[len(points) // 2], np.nan  # exactly on a threshold; missing
            Xc[:, j] = np.tile(grid[::-1] if j == cols[1] else grid, len(X))
        scored.clear()
        got = model.margin_changed(X, base, {j: Xc[:, j].astype(np.float64) for j in changed})
        np.testing.assert_array_equal(got, real(Xc))
        assert 0 < scored[0] < len(Xc)


def test_a_model_fastshap_cannot_compile_falls_back_to_xgboost_with_a_warning(seed):
    """Trees deeper than fastshap's limit: margin and attributions both come from xgboost (float32 bound)."""
    import xgboost as xgb

    from creditgov.model.treeshap import MAX_DEPTH, FastShapFallbackWarning, FastTreeShap, UnsupportedModel

    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"x": rng.random(500), "z": rng.normal(size=500)})
    encs = [Encoding("x", "numeric"), Encoding("z", "numeric")]
    booster = xgb.train({"objective": "binary:logistic", "max_depth": MAX_DEPTH + 4, "min_child_weight": 0,
                         "reg_lambda": 0.01, "nthread": 2},
                        xgb.DMatrix(encode(rows, encs), label=rng.integers(0, 2, len(rows))), 1)
    with pytest.raises(UnsupportedModel, match="deeper than"):
        FastTreeShap(booster)
    deep = CreditModel(booster, encs, 0.9, -0.2)
    with pytest.warns(FastShapFallbackWarning, match="deeper than"):
        margin = deep.margin(rows)
    dm = xgb.DMatrix(encode(rows, encs))
    np.testing.assert_array_equal(margin, booster.predict(dm, output_margin=True).astype("float64"))
    phi, base = deep.contributions(rows)
    np.testing.assert_array_equal(phi, booster.predict(dm, pred_contribs=True)[:, :-1].astype("float64") * 0.9)
    np.testing.assert_allclose(base + phi.sum(axis=1), deep.log_odds(rows), rtol=0, atol=1e-4)


def test_contributions_add_up_to_the_log_odds_at_float32_precision(model, splits):
    phi, base = model.contributions(splits.test)
    assert phi.shape == (len(splits.test), len(model.feature_names))
    assert np.all(base == base[0])  # the bias term is the same for every row
    np.testing.assert_allclose(base + phi.sum(axis=1), model.log_odds(splits.test), rtol=0, atol=1e-4)


def test_encode_refuses_an_unknown_category_naming_the_column(model, credit_data):
    raw = credit_data.head(10).copy()
    raw.loc[raw.index[3], "Job"] = "astronaut"
    before = raw.copy()
    with pytest.raises(ValueError, match=r"column 'Job' has categories \['astronaut'\] not in the catalogue"):
        encode(raw, model.encodings)
    with pytest.raises(ValueError, match="'Job'"):
        model.predict_pd(raw)
    pd.testing.assert_frame_equal(raw, before)


def test_encode_refuses_a_missing_column(model, credit_data):
    with pytest.raises(ValueError, match="column 'Amount' is missing"):
        encode(credit_data.head(3).drop(columns=["Amount"]), model.encodings)


def test_encode_maps_the_catalogue_without_touching_the_input(spec, credit_data):
    raw = credit_data.head(50).copy()
    raw.loc[raw.index[0], "Records"] = None
    raw.loc[raw.index[1], "Home"] = None
    before = raw.copy()
    encs = encodings_from_spec(spec)
    out = encode(raw, encs)
    pd.testing.assert_frame_equal(raw, before)
    assert list(out.columns) == [f.name for f in spec.model_inputs]
    kinds = {e.name: e.kind for e in encs}
    assert kinds["Records"] == "ordinal" and kinds["Home"] == "categorical" and kinds["Seniority"] == "numeric"
    assert "Age" not in kinds and "Marital" not in kinds  # protected: never a model input
    # ordinal: position in the catalogue; missing stays missing
    expected = raw["Records"].map({"no": 0.0, "yes": 1.0})
    np.testing.assert_array_equal(out["Records"].to_numpy(), expected.to_numpy(dtype=float))
    assert np.isnan(out["Records"].iloc[0])
    assert list(out["Home"].cat.categories) == list(spec.feature("Home").categories)
    assert pd.isna(out["Home"].iloc[1])
    assert out["Seniority"].dtype == np.float64
    assert {e.name: e.monotone for e in encs}["Seniority"] == -1


def test_unordered_categorical_never_carries_a_monotone_sign():
    enc = Encoding("Home", "categorical", ("owner", "rent"), 0)
    assert enc.to_json() == {"name": "Home", "kind": "categorical", "categories": ["owner", "rent"], "monotone": 0}


def test_calibration_slope_must_be_positive(model):
    with pytest.raises(ValueError, match="slope must be > 0"):
        CreditModel(model.booster_, model.encodings, 0.0, 0.1)


def test_fit_platt_recovers_known_slope_and_intercept(seed):
    rng = np.random.default_rng(seed)
    margin = rng.normal(0.0, 2.0, size=100_000)
    a_true, b_true = 0.7, -1.2
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-(a_true * margin + b_true)))).astype(float)
    a, b = train.fit_platt(margin, y)
    assert abs(a - a_true) < 0.02 and abs(b - b_true) < 0.03

    # and it is the maximum-likelihood fit: the unpenalised logistic regression on the margin
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(margin[:, None], y)
    assert a == pytest.approx(lr.coef_[0, 0], abs=1e-4)
    assert b == pytest.approx(lr.intercept_[0], abs=1e-4)


def test_fit_platt_identity_when_margin_is_already_calibrated(seed):
    rng = np.random.default_rng(seed + 1)
    margin = rng.normal(-1.0, 1.5, size=200_000)
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-margin))).astype(float)
    a, b = train.fit_platt(margin, y)
    assert a == pytest.approx(1.0, abs=0.02) and b == pytest.approx(0.0, abs=0.02)
