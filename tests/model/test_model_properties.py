"""The real model with the spec's full parameters: monotone, reproducible, better than the scorecard."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from creditgov.model import monotonic
from creditgov.model import train
from creditgov.model.credit_model import CreditModel, encodings_from_spec
from creditgov.spec import PipelineSpec


@pytest.fixture(scope="module")
def splits(credit_splits):
    return credit_splits


@pytest.fixture(scope="module")
def dev(splits) -> pd.DataFrame:
    return pd.concat([splits.train, splits.validation])


@pytest.fixture(scope="module")
def model(spec, splits) -> CreditModel:
    return train.fit_model(splits.train, splits.validation, spec)


@pytest.fixture(scope="module")
def sweep_sample(spec, dev) -> pd.DataFrame:
    return dev.sample(spec.evaluation.monotonicity_sample, random_state=spec.split.seed)


@pytest.fixture(scope="module")
def unconstrained_spec(repo_root) -> PipelineSpec:
    raw = yaml.safe_load((repo_root / "pipelines/application.yaml").read_text(encoding="utf-8"))
    for feature in raw["features"]:
        feature["monotone"] = "none"
    return PipelineSpec.model_validate(raw)


def _monotone_features(spec) -> set[str]:
    return {f.name for f in spec.model_inputs if f.monotone != "none"}


def test_full_model_uses_early_stopping_within_the_round_budget(spec, model):
    assert 1 < model.info["n_trees"] < spec.model.n_estimators
    assert model.info["n_trees"] == model.info["best_iteration"] + 1
    signs = [f.sign for f in spec.model_inputs]
    assert model.info["params"]["monotone_constraints"] == "(" + ",".join(map(str, signs)) + ")"
    assert signs.count(0) < len(signs)


def test_trained_model_has_no_monotonicity_violation(spec, model, sweep_sample):
    report = monotonic.check_monotonicity(model, sweep_sample, spec.evaluation.monotonicity_grid)
    assert set(report) == _monotone_features(spec) == {"Seniority", "Records", "Income", "Assets", "Debt", "Amount",
                                                       *(f.name for f in spec.features if f.derived)}
    for name, r in report.items():
        assert r["violations"] == 0, (name, r)
        assert r["worst"] == 0.0
        assert r["rows"] == len(sweep_sample) and r["grid"] >= 2
        assert r["direction"] == spec.feature(name).sign
    assert report["Records"]["grid"] == 2  # the ordered categories, swept in catalogue order
    assert monotonic.is_monotone(report)


def test_checker_finds_violations_in_a_model_trained_without_constraints(spec, unconstrained_spec, splits,
                                                                       sweep_sample):
    free = train.fit_model(splits.train, splits.validation, unconstrained_spec)
    assert set(free.info["params"]["monotone_constraints"].strip("()").split(",")) == {"0"}
    # the same booster, judged against the catalogue's directions
    judged = CreditModel(free.booster_, encodings_from_spec(spec), free.calib_a_, free.calib_b_, free.info)
    report = monotonic.check_monotonicity(judged, sweep_sample, spec.evaluation.monotonicity_grid)
    assert set(report) == _monotone_features(spec)
    violating = {name for name, r in report.items() if r["violations"] > 0}
    assert violating, report
    assert all(report[name]["worst"] < 0 for name in violating)
    assert not monotonic.is_monotone(report)


def test_training_twice_with_the_same_seed_is_byte_identical(spec, splits, model):
    again = train.fit_model(splits.train, splits.validation, spec)
    assert bytes(again.booster_.save_raw("json")) == bytes(model.booster_.save_raw("json"))
    assert (again.calib_a_, again.calib_b_) == (model.calib_a_, model.calib_b_)
    np.testing.assert_array_equal(again.predict_pd(splits.test), model.predict_pd(splits.test))


def test_model_beats_chance_clearly_on_the_test_split(spec, model, splits):
    from creditgov.model.metrics import auc

    y = train.target_vector(splits.test, spec)
    assert auc(y, model.predict_pd(splits.test)) >= 0.80


def test_cross_validated_auc_meets_the_acceptance_criterion(spec, dev):
    cv = train.cross_validate(dev, spec)
    assert len(cv["xgb"]) == len(cv["scorecard"]) == spec.evaluation.cv_folds == 5
    xgb_mean, card_mean = float(np.mean(cv["xgb"])), float(np.mean(cv["scorecard"]))
    assert xgb_mean >= 0.84, cv
    assert xgb_mean >= card_mean, cv
