"""Fair-lending evidence (issue 13): AIR and SMD with bootstrap intervals, on crafted groups with known values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from creditgov.governance.gates import evaluate_gates, separation_of_duties
from creditgov.model.fairness import group_evidence, lowest_air
from creditgov.spec import Gates


def _crafted():
    # group A: 200 rows, 80% favourable, PD 0.10 +- 0.02; B: 100 rows, 60% favourable, PD 0.14 +- 0.02;
    # C: 10 rows (below the minimum group size)
    rng = np.random.default_rng(0)
    groups = ["A"] * 200 + ["B"] * 100 + ["C"] * 10
    fav = np.r_[np.arange(200) < 160, np.arange(100) < 60, np.ones(10, bool)]
    score = np.r_[0.10 + 0.02 * rng.standard_normal(200), 0.14 + 0.02 * rng.standard_normal(100), np.full(10, 0.5)]
    return pd.Series(groups), fav, score


def test_air_and_smd_against_the_most_favoured_assessed_group_with_intervals():
    groups, fav, score = _crafted()
    ev = group_evidence(groups, fav, score, min_group_size=30, n_boot=400, seed=1)
    by = {r["group"]: r for r in ev["groups"]}
    assert ev["reference"] == "A"  # C is favoured more (100%) but too small to be the reference
    assert by["B"]["air"] == pytest.approx(0.6 / 0.8)
    sa, sb = score[:200], score[200:300]
    pooled = np.sqrt((199 * sa.var(ddof=1) + 99 * sb.var(ddof=1)) / 298)
    assert by["B"]["smd"] == pytest.approx((sb.mean() - sa.mean()) / pooled)
    assert by["B"]["smd"] > 1.5  # scored clearly riskier
    lo, hi = by["B"]["air_ci"]
    assert lo < 0.75 < hi and hi - lo < 0.4
    assert by["B"]["smd_ci"][0] < by["B"]["smd"] < by["B"]["smd_ci"][1]
    assert by["C"]["air"] is None and by["C"]["assessed"] is False
    assert ev["min_air"] == pytest.approx(0.75)
    again = group_evidence(groups, fav, score, min_group_size=30, n_boot=400, seed=1)
    assert again == ev  # deterministic
    assert lowest_air({"approval": {"Age": ev}}) == (pytest.approx(0.75), "approval, Age = B")


def test_min_air_gate_and_legal_basis_gate():
    g = Gates(min_auc=0.8, min_calibration_pvalue=0.05, max_auc_shortfall_vs_scorecard=0.02, min_air=0.8)
    ok = {"test_auc": 0.85, "monotonicity_violations": 0, "test_hl_pvalue": 0.3, "scorecard_test_auc": 0.84}
    air = {r.name: r for r in evaluate_gates(g, {**ok, "fair_min_air": 0.75})}["min_air"]
    assert not air.passed and air.value == "0.7500"
    assert {r.name: r for r in evaluate_gates(g, {**ok, "fair_min_air": 0.81})}["min_air"].passed
    assert not {r.name: r for r in evaluate_gates(g, ok)}["min_air"].passed  # not measured: refused
    basis = {r.name: r for r in evaluate_gates(g, {**ok, "fair_min_air": 0.9, "legal_basis_violations": 3})}
    assert not basis["legal_basis"].passed and basis["legal_basis"].value == "3"


@pytest.mark.parametrize("trainer, approver, development, passed, value", [
    ("alice", "alice", False, False, "trained by alice, approved by alice"),
    ("alice", " Alice ", False, False, "trained by alice, approved by  Alice "),
    ("alice", "bob", False, True, "trained by alice, approved by bob"),
    ("alice", "alice", True, True, "self-approved (development)"),
    (None, "bob", False, False, "trainer not recorded"),
])
def test_separation_of_duties_gate(trainer, approver, development, passed, value):
    r = separation_of_duties(trainer, approver, development)
    assert r.name == "separation_of_duties" and r.passed is passed and r.value == value


@pytest.mark.parametrize("direction, violates", [("decreasing", False), ("increasing", True)])
def test_reg_b_age_check_measures_what_the_model_does_to_applicants_aged_62_plus(spec, tiny_rows, direction,
                                                                                violates):
    """Age with the legal basis is a model input; the check sweeps each row's age over every year of its range:
    risk falling with age never scores a 62-year-old worse than the best younger age, risk rising does."""
    from creditgov.model import train
    from creditgov.model.monotonic import elderly_check
    from helpers import TINY_ROUNDS

    # the input columns only: with the derived ratios too, 12 rounds on 800 rows need not split on Age at all
    feats = [f.model_copy(update={"legal_basis": "Reg B 1002.6(b)(2)", "monotone": direction})
             if f.name == "Age" else f for f in spec.input_features]
    with_age = spec.model_copy(update={"features": feats})
    assert "Age" in {f.name for f in with_age.model_inputs}
    model = train.fit_model(*tiny_rows, with_age, n_estimators=TINY_ROUNDS)
    assert "Age" in {e.name for e in model.encodings}
    r = elderly_check(model, tiny_rows[1].head(60), "Age", 62.0, (18, 100))
    assert r["rows"] == 60 and r["grid"] == 83
    assert (r["violations"] > 0) is violates and (r["worst"] > 0) is violates
    # the same model under the bundled spec (Age protected, no legal basis): decide refuses it
    from creditgov.decision.decide import check_protected_inputs
    from creditgov.errors import SpecError

    with pytest.raises(SpecError, match=r"v9 uses \['Age'\], protected in the spec's catalogue"):
        check_protected_inputs(model, spec, "v9")
    check_protected_inputs(model, with_age, "v9")  # with the basis recorded it may decide


def test_proxy_screen_flags_a_feature_that_tells_the_protected_group_and_not_noise(spec):
    from creditgov.model.fairness import cramers_v, proxy_screen

    rng = np.random.default_rng(3)
    n = 2000
    group = pd.Series(rng.choice(["<25", "25-39", "40-61", "62+"], n))
    years = {"<25": 1.0, "25-39": 6.0, "40-61": 15.0, "62+": 30.0}
    frame = pd.DataFrame({"Seniority": group.map(years) + rng.normal(0, 1, n),  # a proxy of the age band
                          "Time": rng.integers(6, 72, n).astype(float),  # unrelated
                          "Home": rng.choice(["owner", "rent", None], n)})
    feats = [spec.feature("Seniority"), spec.feature("Time"), spec.feature("Home")]
    r = proxy_screen(frame, feats, {"Age": group}, threshold=0.25)
    by = {p["feature"]: p for p in r["pairs"]}
    assert by["Seniority"]["cramers_v"] > 0.9 and by["Seniority"]["flagged"]
    assert by["Time"]["cramers_v"] < 0.1 and by["Home"]["cramers_v"] < 0.1
    assert [p["feature"] for p in r["flagged"]] == ["Seniority"] and r["pairs"][0]["feature"] == "Seniority"
    codes = pd.factorize(group)[0]
    assert cramers_v(codes, codes) == pytest.approx(1.0)
