"""Registration gates on crafted evidence."""
from __future__ import annotations

import pytest

from creditgov.governance.gates import EVIDENCE_KEYS, all_pass, evaluate_gates
from creditgov.spec import Gates

GATE_NAMES = ["min_auc", "monotonicity", "calibration", "vs_scorecard"]


@pytest.fixture
def gates() -> Gates:
    return Gates(min_auc=0.80, require_monotone=True, min_calibration_pvalue=0.05,
                 max_auc_shortfall_vs_scorecard=0.02)


def _passing() -> dict:
    return {"test_auc": 0.85, "monotonicity_violations": 0, "test_hl_pvalue": 0.30, "scorecard_test_auc": 0.84}


def test_repository_spec_gates(spec):
    assert spec.gates == Gates(min_auc=0.80, require_monotone=True, min_calibration_pvalue=0.05,
                               max_auc_shortfall_vs_scorecard=0.02)


def test_all_gates_pass_on_good_evidence_in_a_fixed_order(gates):
    results = evaluate_gates(gates, _passing())
    assert [r.name for r in results] == GATE_NAMES
    assert all(r.passed for r in results) and all_pass(results)
    assert {r.name: r.value for r in results} == {"min_auc": "0.8500", "monotonicity": "0",
                                                  "calibration": "0.3000", "vs_scorecard": "-0.0100"}


@pytest.mark.parametrize("failing, change", [
    ("min_auc", {"test_auc": 0.79, "scorecard_test_auc": 0.78}),
    ("monotonicity", {"monotonicity_violations": 3}),
    ("calibration", {"test_hl_pvalue": 0.01}),
    ("vs_scorecard", {"scorecard_test_auc": 0.90}),
])
def test_each_gate_fails_alone_and_is_named(gates, failing, change):
    results = evaluate_gates(gates, {**_passing(), **change})
    assert [r.name for r in results if not r.passed] == [failing]
    assert not all_pass(results)
    (bad,) = [r for r in results if r.name == failing]
    assert bad.to_dict() == {"name": failing, "rule": bad.rule, "value": bad.value, "passed": False}


def test_several_failures_are_all_reported(gates):
    evidence = {"test_auc": 0.70, "monotonicity_violations": 12, "test_hl_pvalue": 0.0, "scorecard_test_auc": 0.80}
    assert [r.name for r in evaluate_gates(gates, evidence) if not r.passed] == GATE_NAMES


def test_thresholds_are_inclusive(gates):
    evidence = {**_passing(), "test_auc": 0.80, "scorecard_test_auc": 0.79, "test_hl_pvalue": 0.05}
    assert all_pass(evaluate_gates(gates, evidence))


def test_scorecard_shortfall_exactly_at_the_threshold_passes(gates):
    results = evaluate_gates(gates, {**_passing(), "test_auc": 0.83, "scorecard_test_auc": 0.85})
    (vs,) = [r for r in results if r.name == "vs_scorecard"]
    assert vs.value == "+0.0200"
    assert vs.passed


def test_monotonicity_not_required_passes_with_violations(gates):
    lenient = gates.model_copy(update={"require_monotone": False})
    results = evaluate_gates(lenient, {**_passing(), "monotonicity_violations": 5})
    (mono,) = [r for r in results if r.name == "monotonicity"]
    assert mono.passed and mono.rule == "not required" and mono.value == "5"
    assert all_pass(results)


@pytest.mark.parametrize("key", EVIDENCE_KEYS)
def test_missing_evidence_fails_naming_the_metric(gates, key):
    evidence = _passing()
    del evidence[key]
    results = evaluate_gates(gates, evidence)
    assert len(results) == 1 and results[0].name == "evidence" and not results[0].passed
    assert key in results[0].value
    assert not all_pass(results)


def test_extra_run_metrics_are_ignored(gates):
    evidence = {**_passing(), "test_gini": 0.7, "cv_auc_mean": 0.1}
    assert all_pass(evaluate_gates(gates, evidence))
