"""Derived features (catalogue `derived: "<expression>"`): the spec's checks, the model's encoding (one place,
saved with the model), reasons, the counterfactual's matrix evaluator and the non-input surfaces (validation,
serve schema). The application spec's derived features and the tiny real model (tests/conftest.py)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import assert_evaluator_matches_batch

from creditgov.data import expectations
from creditgov.decision import counterfactual, decide
from creditgov.decision.policy import apply_policy
from creditgov.errors import SpecError
from creditgov.model.credit_model import META_FILE, CreditModel, encode
from creditgov.model.derived import with_derived
from creditgov.spec import load_spec


@pytest.fixture(scope="module")
def raw_spec(repo_root) -> dict:
    return yaml.safe_load((repo_root / "pipelines/application.yaml").read_text(encoding="utf-8"))


def _derived(name: str, expr: str, **more) -> dict:
    return {"name": name, "type": "numeric", "derived": expr, "monotone": "none",
            "reason": {"en": "x", "zh": "x"}, **more}


def _load(tmp_path, raw: dict, *features: dict, edit=None):
    raw = copy.deepcopy(raw)
    raw["features"] += list(features)
    if edit:
        edit(raw)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_spec(path)


def _refused(tmp_path, raw, *features, edit=None) -> str:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, raw, *features, edit=edit)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _personal(raw):
    raw["features"].append({"name": "PhoneDigits", "type": "numeric", "range": [0, 1e12], "personal": True,
                            "reason": {"en": "x", "zh": "x"}})


def _age_with_basis(raw):
    next(f for f in raw["features"] if f["name"] == "Age")["legal_basis"] = "Reg B 1002.6(b)(2)"


@pytest.mark.parametrize("features, edit, words", [
    ([_derived("r", "Amount / Nope")], None, ["feature r", "'Nope'", "not in the catalogue"]),
    ([_derived("r", "Amount / PhoneDigits")], _personal, ["feature r", "'PhoneDigits'", "personal"]),
    ([_derived("r", "Amount / Age")], None, ["feature r", "'Age'", "protected without a legal basis"]),
    ([_derived("r", "Amount / Home")], None, ["feature r", "'Home'", "categorical"]),
    ([_derived("a", "b + 1"), _derived("b", "a * 2")], None, ["cycle", "a -> b -> a"]),
    ([_derived("r", "__import__('os').system('true')")], None, ["feature r", "Call"]),
    ([_derived("r", "Amount ** 2")], None, ["feature r", "Pow"]),
    ([_derived("r", "Amount.real")], None, ["feature r", "Attribute"]),
    ([_derived("r", "Amount if Price else 1")], None, ["feature r", "IfExp"]),
    ([_derived("r", "'1' + Amount")], None, ["feature r", "Constant"]),
    ([_derived("r", "Amount / (Price")], None, ["feature r", "not an arithmetic expression"]),
    ([_derived("r", "Amount / Price", actionable=True)], None, ["feature r", "actionable"]),
])
def test_an_expression_outside_the_rules_is_one_line_naming_the_feature(tmp_path, raw_spec, features, edit, words):
    msg = _refused(tmp_path, raw_spec, *features, edit=edit)
    for w in words:
        assert w in msg, msg


def test_a_protected_input_with_a_legal_basis_may_be_read_and_a_rule_may_not_read_a_derived_one(tmp_path, raw_spec):
    spec = _load(tmp_path, raw_spec, _derived("age_ratio", "Amount / Age"), edit=_age_with_basis)
    assert "age_ratio" in [f.name for f in spec.model_inputs]

    def rule(raw):
        raw["policy"]["rules"][0]["when"]["feature"] = "loan_to_price"
    assert "not in the catalogue" in _refused(tmp_path, raw_spec, edit=rule)


def test_derived_features_are_model_inputs_but_never_input_columns(spec):
    derived = {f.name for f in spec.features if f.derived}
    assert {"loan_to_price", "instalment_to_income"} <= derived
    assert derived <= {f.name for f in spec.model_inputs}
    assert not derived & set(spec.model_columns)
    assert not derived & {f.name for f in spec.input_features}
    suite = expectations.checked_suite(spec)
    assert not derived & {e["kwargs"].get("column") for e in suite["expectations"]}
    assert spec.without_features(["Price"]).model_inputs == [f for f in spec.model_inputs
                                                             if f.name not in ("Price", "loan_to_price")]


def test_encode_computes_the_expression_and_a_zero_divisor_or_missing_operand_is_missing(tiny_model):
    rows = pd.DataFrame({"Seniority": [1, 2, 3, 4], "Home": ["rent"] * 4, "Time": [10, 20, 40, 0],
                         "Records": ["no"] * 4, "Job": ["fixed"] * 4, "Expenses": [50, 60, 70, 80],
                         "Income": [100.0, 0.0, np.nan, 100.0], "Assets": [1000, 0, 5, np.nan],
                         "Debt": [10, 0, 5, 1], "Amount": [1000, 500, 800, 900], "Price": [2000, 1000, 0, 1000]})
    enc = encode(rows, tiny_model.encodings)
    np.testing.assert_array_equal(enc["loan_to_price"], [0.5, 0.5, np.nan, 0.9])
    np.testing.assert_array_equal(enc["instalment_to_income"], [1.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(enc["free_income"], [100 - 50 - 100, 0 - 60 - 25, np.nan, np.nan])
    np.testing.assert_array_equal(enc["net_assets"], [990, 0, 0, np.nan])
    assert list(enc.columns) == tiny_model.feature_names


def test_the_monitor_computes_derived_values_as_the_encoding_does(tiny_model, credit_splits, spec):
    test = credit_splits.test
    enc, mon = encode(test, tiny_model.encodings), with_derived(test, spec)
    for name in spec.dependents(["Amount", "Income", "Assets"]):
        assert enc[name].to_numpy().tobytes() == mon[name].to_numpy().tobytes()


def test_a_saved_and_loaded_model_computes_the_same_derived_values_byte_for_byte(tiny_model, credit_splits, tmp_path):
    saved = tiny_model.save(tmp_path / "m")
    meta = json.loads((saved / META_FILE).read_text(encoding="utf-8"))
    assert {"name": "loan_to_price", "kind": "derived", "categories": [], "monotone": 1,
            "expression": "Amount / Price"} in meta["encodings"]
    loaded = CreditModel.load(saved)
    test = credit_splits.test
    a, b = encode(test, tiny_model.encodings), encode(test, loaded.encodings)
    for e in tiny_model.encodings:
        if e.kind == "derived":
            assert a[e.name].to_numpy().tobytes() == b[e.name].to_numpy().tobytes()
    np.testing.assert_array_equal(loaded.predict_pd(test), tiny_model.predict_pd(test))


def test_reasons_of_a_derived_feature_are_its_catalogue_text(tiny_model, credit_splits, spec):
    rows = credit_splits.test
    e = decide.explain_batch(tiny_model, rows, spec)
    decided = apply_policy(rows, e.pd, spec.policy)
    codes, en, zh, _ = decide._reason_lists(e.phi, e.features, decided["decided_by"].to_numpy(), spec)
    derived = {f.name: f for f in spec.features if f.derived}
    seen = 0
    for c, te, tz in zip(codes, en, zh):
        for code, s_en, s_zh in zip(c, te, tz):
            if code in derived:
                seen += 1
                assert (s_en, s_zh) == (derived[code].reason.en, derived[code].reason.zh)
                assert derived[code].derived not in s_en and code not in s_en
    assert seen, "the tiny model should give some derived feature as a reason"
    # a row decided by the income rule never gets an income ratio as a reason
    income_rule = decided["decided_by"].to_numpy() == "rule:income_not_stated"
    assert income_rule.any()
    reads_income = spec.dependents(["Income"])
    assert reads_income and not any(set(c) & reads_income for c, r in zip(codes, income_rule) if r)


def test_counterfactual_matrix_evaluator_moves_the_derived_columns_bit_for_bit(tiny_model, credit_splits, spec):
    rows = credit_splits.test.iloc[:60].reset_index(drop=True)
    evaluate = decide.candidate_evaluator(tiny_model, rows, spec)
    assert evaluate is not None
    idx = np.repeat(np.arange(60), 25)
    grid = np.r_[np.linspace(100, 6000, 23).round(), np.nan, 100.0]
    changes = {"Amount": np.tile(grid, 60), "Time": np.tile(np.repeat([6.0, 24.0, 36.0, 60.0, 1.0], 5), 60)}
    actions, p = assert_evaluator_matches_batch(evaluate, tiny_model, rows, idx, changes, spec)
    # without moving the derived columns the scores would differ: the test can fail
    X = tiny_model.matrix(rows)
    col = {n: j for j, n in enumerate(tiny_model.feature_names)}
    stale = tiny_model.margin_changed(X, idx, {col[c]: v for c, v in changes.items()})
    assert not np.array_equal(tiny_model.calibrate(stale), np.log(p / (1 - p)))  # p: the batch PD, bit for bit


def test_a_feature_is_monotone_for_the_search_only_when_its_derived_features_agree(tmp_path, raw_spec, spec):
    amount = spec.feature("Amount")
    assert counterfactual.monotone_for_search(amount, spec, on_book=False)
    assert counterfactual.monotone_for_search(spec.feature("Debt"), spec, on_book=False)

    def flip(raw):  # loan_to_price unconstrained: Amount no longer moves the PD one way only
        next(f for f in raw["features"] if f["name"] == "loan_to_price")["monotone"] = "none"
    other = _load(tmp_path, raw_spec, edit=flip)
    assert not counterfactual.monotone_for_search(other.feature("Amount"), other, on_book=False)
    # a divisor that may be zero depends on Amount: no direction
    crossing = _load(tmp_path, raw_spec, _derived("odd", "Price / (Amount - 500)", monotone="increasing"))
    assert not counterfactual.monotone_for_search(crossing.feature("Amount"), crossing, on_book=False)


def test_a_derived_feature_is_no_request_field_and_a_row_carrying_it_is_not_read(spec, credit_splits, tiny_model):
    from creditgov.jobs import serve

    row = serve.openapi_schema(spec)["components"]["schemas"]["Row"]
    assert "loan_to_price" not in row["properties"] and "Amount" in row["properties"]
    rows = credit_splits.test.iloc[:20].copy()
    tampered = rows.assign(loan_to_price=999.0)
    np.testing.assert_array_equal(tiny_model.predict_pd(tampered), tiny_model.predict_pd(rows))


def test_the_reference_profile_and_the_monitor_bin_derived_features(tiny_model, credit_splits, spec):
    from creditgov.monitor.drift import stability
    from creditgov.monitor.reference import build_profile

    dev, test = credit_splits.train, credit_splits.test
    profile = build_profile(dev, tiny_model.predict_pd(dev), spec, {}, [])
    assert profile["features"]["loan_to_price"]["kind"] == "numeric" and profile["features"]["loan_to_price"]["edges"]
    same = stability(dev, tiny_model.predict_pd(dev), profile, spec)
    assert same.csi["loan_to_price"] == pytest.approx(0.0, abs=1e-12)
    # a batch whose loan amounts doubled: the ratio drifts
    shifted = test.assign(Amount=test["Amount"] * 2)
    assert stability(shifted, tiny_model.predict_pd(shifted), profile, spec).csi["loan_to_price"] > 0.25
