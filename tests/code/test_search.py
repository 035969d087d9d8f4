"""The search for less discriminatory alternatives (model/search.py, jobs/search.py, the promotion gate):
candidates on the same folds, reweighting, the choice, the gate and the frontier chart, on a tiny sample."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import TINY_ROUNDS

from creditgov.governance.gates import less_discriminatory
from creditgov.governance.promote import SEARCH_TAG, search_gate
from creditgov.jobs import search as search_job
from creditgov.jobs import training
from creditgov.model import search, train
from creditgov.spec import Search


@pytest.fixture(scope="module")
def small(spec, credit_splits):
    """A 3-fold spec with a search section and 600 development rows of credit_data."""
    s = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"cv_folds": 3}),
                                "search": Search(n_trials=1, scorecard=False)})
    dev = pd.concat([credit_splits.train, credit_splits.validation]).sample(600, random_state=3)
    return s, dev


def _measured(name, auc, air, method="xgboost"):
    m = search.Measured(search.Candidate(name, "baseline", method=method), [auc, auc], [0.3, 0.3], np.zeros(2))
    m.fairness = {"min_air": air}
    return m


def test_candidates_use_the_folds_of_cross_validation(small):
    s, dev = small
    dev = dev.iloc[:300]
    baseline = search.measure(dev, s, search.Candidate("baseline", "baseline"), None, TINY_ROUNDS)
    cv = train.cross_validate(dev, s, TINY_ROUNDS)
    assert baseline.fold_auc == pytest.approx(cv["xgb"], abs=1e-12)
    assert not np.isnan(baseline.oof_pd).any() and len(baseline.oof_pd) == len(dev)


def test_reweighting_makes_group_and_target_independent():
    groups = np.array(["a"] * 60 + ["b"] * 40)
    y = np.array([1] * 30 + [0] * 30 + [1] * 5 + [0] * 35)
    w = search.reweighting(groups, y)
    rate = {g: np.sum(w[(groups == g) & (y == 1)]) / np.sum(w[groups == g]) for g in ("a", "b")}
    assert rate["a"] == pytest.approx(rate["b"]) == pytest.approx(y.mean())
    assert np.sum(w) == pytest.approx(len(y))


def test_feature_drop_candidate_fits_without_the_proxy(small, tiny_rows):
    s, _ = small
    cand = search.Candidate("drop-Expenses", "feature drop", drop=("Expenses",))
    model = search.fit_candidate(*tiny_rows, s, cand, None, TINY_ROUNDS)
    names = [e.name for e in model.encodings]
    assert "Expenses" not in names and "Seniority" in names
    assert "Expenses" in {f.name for f in s.model_inputs}  # the catalogue itself keeps it (validation, logs)


def test_candidates_list_has_each_kind(small):
    s, _ = small
    names = [c.name for c in search.candidates_list(s, ["Expenses", "Seniority", "Age"])]
    assert names == ["baseline", "drop-Expenses", "drop-Seniority", "drop-all-proxies", "reweighting",
                     "expgrad-dp"]  # Age is no model input: nothing to drop; scorecard off in this spec


def test_choose_moves_to_a_registrable_less_discriminatory_candidate():
    best = _measured("best", 0.850, 0.70)
    near = _measured("near", 0.847, 0.75)  # within 0.005, AIR higher by 0.05: preferred
    far = _measured("far", 0.830, 0.95)  # too far below in AUC
    mix = _measured("mix", 0.846, 0.80, method="expgrad")  # measured only: cannot be chosen
    chosen, why = search.choose([best, near, far, mix], 0.005, 0.02)
    assert chosen is near and len(why) == 2 and "near" in why[1]
    left = search.alternatives([best, near, far, mix], chosen, 0.005, 0.02)
    assert left == [mix]


def test_the_trainer_may_name_another_candidate_whose_alternatives_then_stand():
    best = _measured("best", 0.850, 0.70)
    near = _measured("near", 0.847, 0.75)
    mix = _measured("mix", 0.846, 0.80, method="expgrad")
    chosen, why = search.choose([best, near, mix], 0.005, 0.02)
    picked, why2 = search.named([best, near, mix], chosen, why, "best")
    assert picked is best and len(why2) == len(why) + 1 and "best" in why2[-1]
    # the search's own choice is now an alternative: the promotion gate refuses without a justification
    assert near in search.alternatives([best, near, mix], picked, 0.005, 0.02)
    assert search.named([best, near, mix], chosen, why, "near") == (chosen, why)
    with pytest.raises(KeyError, match="best, near"):
        search.named([best, near, mix], chosen, why, "mix")  # measured only


def test_reweighting_is_also_tried_with_the_best_trials_parameters(small):
    s, _ = small
    base = _measured("baseline", 0.840, 0.70)
    t1 = search.Measured(search.Candidate("optuna-1", "hyperparameters", {"max_depth": 5}), [0.845], [0.3],
                         np.zeros(2))
    t2 = search.Measured(search.Candidate("optuna-2", "hyperparameters", {"max_depth": 2}), [0.842], [0.3],
                         np.zeros(2))
    c = search.tuned_reweighting([base, t1, t2], s)
    assert c.name == "reweighting-optuna-1" and c.method == "reweighting" and c.params == {"max_depth": 5}
    worse = search.Measured(search.Candidate("optuna-1", "hyperparameters", {"max_depth": 5}), [0.83], [0.3],
                            np.zeros(2))
    assert search.tuned_reweighting([base, worse], s) is None  # no trial beats the spec's parameters
    off = s.model_copy(update={"search": s.search.model_copy(update={"fairness_aware": False})})
    assert search.tuned_reweighting([base, t1], off) is None


def test_choose_may_register_the_scorecard():
    best = _measured("best", 0.850, 0.70)
    card = _measured("card", 0.846, 0.80, method="scorecard")  # registrable: a ScorecardPD with its own reasons
    chosen, why = search.choose([best, card], 0.005, 0.02)
    assert chosen is card and "card" in why[1]
    assert search.alternatives([best, card], chosen, 0.005, 0.02) == []


def test_gate_refuses_an_alternative_unless_justified():
    refused = less_discriminatory(["scorecard"], None, 0.005, 0.02)
    assert not refused.passed and "scorecard" in refused.value
    ok = less_discriminatory(["scorecard"], "the scorecard cannot score thin-file applicants", 0.005, 0.02)
    assert ok.passed and "thin-file" in ok.value
    assert less_discriminatory([], None).passed
    assert search_gate({}, None) is None  # a version not searched has no such gate
    assert not search_gate({SEARCH_TAG: '["expgrad-dp"]', "creditgov.search.auc_tolerance": "0.005",
                            "creditgov.search.air_margin": "0.02"}, "  ").passed


def test_search_measures_fairness_and_draws_the_frontier(small):
    s, dev = small
    s = s.model_copy(update={"search": Search(n_trials=1, scorecard=False, fairness_aware=False)})
    result = search_job.run_search(s, dev, ["Expenses"], lambda f, p: training.protected_evidence(s, f, p),
                                   TINY_ROUNDS, log=lambda _m: None)
    names = [m.candidate.name for m in result.measured]
    assert names == ["baseline", "optuna-1", "drop-Expenses"]
    assert all(m.min_air is not None and 0 < m.min_air <= 1 for m in result.measured)
    assert all("Age" in m.fairness["where"] or "Marital" in m.fairness["where"] for m in result.measured)
    summary = result.summary(s)
    assert summary["chosen"] == result.chosen.candidate.name and sum(c["chosen"] for c in summary["candidates"]) == 1
    svg = search_job.frontier_chart(result, s)
    assert svg.startswith("<svg") and "drop-Expenses" in svg and "chosen" in svg
    assert "Age=" in result.groups.iloc[0] and "Marital=" in result.groups.iloc[0]
