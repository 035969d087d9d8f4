"""The compiled WOE scorecard (model/scorecard_pd.py) against optbinning's own scorecard: the same PDs and points,
exact additive attributions (points below each characteristic's maximum), a JSON round trip, and decide_rows."""
from __future__ import annotations

import numpy as np
import pytest

from creditgov.data import validate
from creditgov.decision import decide
from creditgov.model import train
from creditgov.model.derived import with_derived
from creditgov.model.scorecard import fit_scorecard
from creditgov.model.scorecard_pd import ScorecardPD, compile_scorecard
from creditgov.model.stored import load_model


@pytest.fixture(scope="module")
def fitted(spec, tiny_rows):
    rows = tiny_rows[0]
    card = fit_scorecard(rows, train.target_vector(rows, spec), spec)
    return card, compile_scorecard(card, spec, rows)


def test_pds_and_points_are_optbinnings(fitted, credit_splits, spec):
    card, model = fitted
    test = credit_splits.test
    np.testing.assert_allclose(model.predict_pd(test), card.predict_pd(test), rtol=0, atol=1e-12)
    # optbinning's score takes a missing value's points from its bin's empirical WOE, its PD from WOE 0: the
    # points agree where no input is missing
    full = with_derived(test, spec)[[f.name for f in spec.model_inputs]].notna().all(axis=1).to_numpy()
    assert full.sum() > 500
    np.testing.assert_allclose(model.score(test)[full], card.points(test)[full], rtol=0, atol=1e-8)


def test_attributions_are_points_below_the_maximum_and_add_up(fitted, credit_splits):
    _, model = fitted
    test = credit_splits.test
    log_odds, phi, base = model.explain(test)
    assert np.abs(base + phi.sum(axis=1) - log_odds).max() < 1e-12
    np.testing.assert_allclose(phi * model.factor, model.points_below_max(test), atol=1e-9)
    assert phi.min() == 0.0  # some row sits at a characteristic's best value
    table = model.table()
    assert (table.groupby("characteristic")["points_below_max"].min() == 0).all()


def test_stored_as_json_and_loaded_by_kind(fitted, credit_splits, tmp_path):
    _, model = fitted
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json"]  # no pickle
    back = load_model(tmp_path / "m")
    assert isinstance(back, ScorecardPD)
    np.testing.assert_array_equal(back.predict_pd(credit_splits.test), model.predict_pd(credit_splits.test))


def test_decide_rows_with_a_scorecard(fitted, credit_splits, spec):
    _, model = fitted
    batch = credit_splits.test.drop(columns=[spec.target.column]).head(300).reset_index(drop=True)
    rows = validate.validate_batch(batch, spec, "batch.csv")
    log = decide.decide_rows(rows, decide.DecisionModel(model, "1"), spec, "2026-11-01").log
    np.testing.assert_allclose(log["pd"].to_numpy(), model.predict_pd(rows.clean), atol=1e-12)
    by_model = (log["decided_by"] == "model").to_numpy()
    below = model.points_below_max(rows.clean)[by_model]
    names = model.feature_names
    k = spec.policy.max_reasons
    for codes, row in zip(log.loc[by_model, "reason_codes"], below):
        assert list(codes) == [names[j] for j in np.argsort(-row, kind="stable") if row[j] > 1e-9][:k]
    assert (log["action"] == "decline").any()
