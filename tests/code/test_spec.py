"""Spec loading: strict keys, catalogue rules, content hash, user files as a source."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from creditgov.data import inputs
from creditgov.errors import CreditGovError, SpecError
from creditgov.spec import load_spec


@pytest.fixture(scope="module")
def raw_spec(repo_root) -> dict:
    return yaml.safe_load((repo_root / "pipelines/application.yaml").read_text(encoding="utf-8"))


def _write(path, raw: dict, **dump_kwargs):
    dump_kwargs.setdefault("sort_keys", False)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, **dump_kwargs), encoding="utf-8")
    return path


def _spec_error(path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value


def _set(raw: dict, where: list, key: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    for step in where:
        node = node[step]
    node[key] = value
    return raw


def test_repository_spec_loads_with_catalogue_derived_properties(spec):
    assert spec.name == "credit-application"
    assert len(spec.input_features) == 13  # and derived features (no input columns: tests/code/test_derived.py)
    signs = {f.name: f.sign for f in spec.features}
    assert signs["Seniority"] == -1 and signs["Income"] == -1 and signs["Assets"] == -1
    assert signs["Debt"] == 1 and signs["Amount"] == 1 and signs["Records"] == 1
    assert signs["Home"] == 0 and signs["Time"] == 0
    assert spec.feature("Records").ordered is True
    assert [f.name for f in spec.model_inputs] == [f.name for f in spec.features
                                                   if not f.personal and not f.protected]
    with pytest.raises(KeyError):
        spec.feature("NoSuchFeature")


# --------------------------------------------------------------------------- catalogue roles (issue 13)


def test_bundled_specs_mark_age_and_marital_protected_and_keep_them_out_of_the_model(spec, repo_root):
    from creditgov.spec import load_spec

    assert [f.name for f in spec.protected_features] == ["Age", "Marital"]
    assert not {"Age", "Marital"} & {f.name for f in spec.model_inputs}
    assert spec.fairness_groups[:2] == ["Age", "Marital"]  # always analysed, whatever group_columns says
    behaviour = load_spec(repo_root / "pipelines" / "behaviour.yaml")
    assert [f.name for f in behaviour.protected_features] == ["age"]
    assert "age" not in {f.name for f in behaviour.model_inputs}
    assert spec.development and behaviour.development  # the quick start's specs: see README, separation of duties


def _age(raw: dict) -> int:
    return next(i for i, f in enumerate(raw["features"]) if f["name"] == "Age")


@pytest.mark.parametrize("update, rule", [
    ({"personal": True}, "'protected' and 'personal' are distinct roles"),
    ({"group_bands": None}, "needs 'group_bands'"),
    ({"group_bands": [62, 25]}, "distinct ascending band edges"),
    ({"legal_basis": "because we can"}, "not one creditgov can check"),
])
def test_protected_feature_rules_are_spec_errors(tmp_path, raw_spec, update, rule):
    raw = copy.deepcopy(raw_spec)
    raw["features"][_age(raw)].update(update)
    err = _spec_error(_write(tmp_path / "s.yaml", raw))
    assert rule in str(err) and f"features.{_age(raw)}" in str(err)


def test_legal_basis_makes_age_a_model_input_and_a_rule_on_a_protected_feature_is_refused(tmp_path, raw_spec):
    from creditgov.spec import load_spec

    raw = copy.deepcopy(raw_spec)
    raw["features"][_age(raw)]["legal_basis"] = "Reg B 1002.6(b)(2)"
    s = load_spec(_write(tmp_path / "basis.yaml", raw))
    assert "Age" in {f.name for f in s.model_inputs} and "Marital" not in {f.name for f in s.model_inputs}
    raw = copy.deepcopy(raw_spec)
    raw["policy"]["rules"].append({"name": "young", "when": {"feature": "Marital", "op": "eq", "value": "single"},
                                   "action": "review", "reason": {"en": "x", "zh": "x"}})
    assert "feature 'Marital' is protected" in str(_spec_error(_write(tmp_path / "rule.yaml", raw)))


def test_group_labels_are_bands_or_categories_never_values():
    import pandas as pd

    from creditgov.data.privacy import group_labels
    from creditgov.spec import Feature

    age = Feature(name="Age", type="numeric", range=(18, 100), protected=True, group_bands=[25, 40, 62],
                  reason={"en": "a", "zh": "a"})
    assert group_labels(age, pd.Series([18, 24.5, 25, 39, 40, 61.9, 62, 99, None])).tolist() == [
        "<25", "<25", "25-39", "25-39", "40-61", "40-61", "62+", "62+", "(missing)"]
    marital = Feature(name="Marital", type="categorical", categories=["married", "single"], protected=True,
                      reason={"en": "m", "zh": "m"})
    assert group_labels(marital, pd.Series(["single", None])).tolist() == ["single", "(missing)"]


@pytest.mark.parametrize("where, key, key_path", [
    (["features", 0], "colour", "features.0.colour"),
    (["features", 4, "reason"], "fr", "features.4.reason.fr"),
    ([], "colour", "colour"),
    (["gates"], "min_acu", "gates.min_acu"),
    (["source"], "url", "source.url"),
    (["model"], "n_estimator", "model.n_estimator"),
    (["split"], "holdout", "split.holdout"),
])
def test_unknown_key_anywhere_is_a_spec_error_naming_the_key_path(tmp_path, raw_spec, where, key, key_path):
    path = _write(tmp_path / "spec.yaml", _set(raw_spec, where, key, "red"))
    err = _spec_error(path)
    assert isinstance(err, CreditGovError)
    assert err.exit_code == 3
    message = str(err)
    assert f"{key_path}: unknown key" in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_monotone_direction_on_unordered_categorical_is_refused(tmp_path, raw_spec):
    home = raw_spec["features"][1]
    assert home["name"] == "Home" and not home.get("ordered")
    path = _write(tmp_path / "spec.yaml", _set(raw_spec, ["features", 1], "monotone", "increasing"))
    err = _spec_error(path)
    assert err.exit_code == 3
    assert "features.1" in str(err) and "Home" in str(err) and "ordered" in str(err)


def test_monotone_direction_on_ordered_categorical_is_accepted(tmp_path, raw_spec):
    raw = _set(raw_spec, ["features", 1], "monotone", "increasing")
    raw["features"][1]["ordered"] = True
    spec = load_spec(_write(tmp_path / "spec.yaml", raw))
    assert spec.feature("Home").sign == 1


@pytest.mark.parametrize("fractions", [(0.6, 0.2, 0.3), (0.5, 0.2, 0.2), (0.6, 0.3, 0.2)])
def test_split_fractions_not_summing_to_one_are_refused(tmp_path, raw_spec, fractions):
    raw = copy.deepcopy(raw_spec)
    raw["split"].update(dict(zip(("train", "validation", "test"), fractions)))
    err = _spec_error(_write(tmp_path / "spec.yaml", raw))
    assert err.exit_code == 3
    assert "split" in str(err) and "must be 1" in str(err)


def test_split_fractions_summing_to_one_up_to_rounding_are_accepted(tmp_path, raw_spec):
    raw = copy.deepcopy(raw_spec)
    raw["split"].update({"train": 0.7, "validation": 0.15, "test": 0.15})
    assert load_spec(_write(tmp_path / "spec.yaml", raw)).split.test == 0.15


@pytest.mark.parametrize("text, rule", [
    ("features: [\n  - name: x\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping at the top level"),
])
def test_unreadable_spec_is_one_line_spec_error(tmp_path, text, rule):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    err = _spec_error(path)
    assert err.exit_code == 3 and rule in str(err) and str(path) in str(err) and "\n" not in str(err)


def test_missing_spec_file_is_spec_error(tmp_path):
    err = _spec_error(tmp_path / "nope.yaml")
    assert err.exit_code == 3 and "spec file not found" in str(err)


# ------------------------------------------------------------------------ content hash


def test_content_hash_is_stable_under_yaml_reformatting_and_comments(tmp_path, repo_root, raw_spec, spec):
    original = repo_root / "pipelines/application.yaml"
    # flow style, sorted keys, no comments at all
    flow = _write(tmp_path / "flow.yaml", raw_spec, default_flow_style=True, sort_keys=True, width=10_000)
    # the original text with extra comments, blank lines and a number written differently
    text = original.read_text(encoding="utf-8")
    assert "learning_rate: 0.05\n" in text
    edited = "# reviewer note: nothing changes here\n\n" + text.replace(
        "learning_rate: 0.05\n", "learning_rate: 0.050   # same value, other spelling\n")
    commented = tmp_path / "commented.yaml"
    commented.write_text(edited, encoding="utf-8")

    hashes = {load_spec(p).content_hash for p in (original, flow, commented)}
    assert hashes == {spec.content_hash}
    assert len(spec.content_hash) == 64


@pytest.mark.parametrize("where, key, value", [
    (["model"], "learning_rate", 0.06),
    (["gates"], "min_auc", 0.81),
    (["features", 0, "reason"], "en", "Short tenure"),
    (["features", 3], "range", [18, 99]),
])
def test_content_hash_changes_with_any_value(tmp_path, raw_spec, spec, where, key, value):
    changed = load_spec(_write(tmp_path / "spec.yaml", _set(raw_spec, where, key, value)))
    assert changed.content_hash != spec.content_hash


# --------------------------------------------------------------- user files as a source


def _user_spec(path: str, kind: str) -> dict:
    reason = {"en": "reason", "zh": "原因"}
    return {
        "name": "user-file", "description": "A user's own file.",
        "source": {"kind": kind, "path": path, "id_column": "loan_id"},
        "target": {"column": "outcome", "bad_values": ["default"], "good_values": ["repaid"]},
        "features": [
            {"name": "income", "type": "numeric", "range": [0, 1e6], "missing_allowed": True,
             "monotone": "decreasing", "reason": reason},
            {"name": "grade", "type": "categorical", "categories": ["1", "2", "3"], "ordered": True,
             "monotone": "increasing", "reason": reason},
            {"name": "housing", "type": "categorical", "categories": ["own", "rent", "None"],
             "missing_allowed": True, "reason": reason},
        ],
        "validation": {"suite": "expectations/user.json", "max_quarantine_share": 0.1},
        "split": {"seed": 1, "train": 0.6, "validation": 0.2, "test": 0.2},
        "model": {"n_estimators": 10, "early_stopping_rounds": 5, "learning_rate": 0.1, "max_depth": 2,
                  "min_child_weight": 1, "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1.0},
        "scorecard": {"pdo": 20, "odds": 50, "base_points": 600},
        "evaluation": {"bootstrap": 100, "cv_folds": 2, "calibration_bins": 5},
        "registry": {"experiment": "user-file", "model_name": "user-file-pd"},
        "gates": {"min_auc": 0.5, "min_calibration_pvalue": 0.0, "max_auc_shortfall_vs_scorecard": 1.0},
        "model_card": {"intended_use": "tests", "limitations": []},
    }


CSV_TEXT = (
    "loan_id,outcome,income,grade,housing,extra\n"
    "007,repaid,1200.5,1,own,x\n"
    "008,default,,3,None,y\n"
    "009,repaid,800,2,NA,z\n"
    "010,default,inf,2,rent,w\n"
)


def test_csv_source_spec_loads_a_user_file_without_code_change(tmp_path):
    csv = tmp_path / "loans.csv"
    csv.write_text(CSV_TEXT, encoding="utf-8")
    spec_path = _write(tmp_path / "user.yaml", _user_spec(str(csv), "csv"))

    spec = load_spec(spec_path)
    loaded = inputs.load(spec)
    frame = loaded.frame
    assert loaded.label == str(csv)
    assert list(frame.columns) == ["loan_id", "outcome", "income", "grade", "housing", "extra"]
    assert list(frame.index) == [0, 1, 2, 3]
    # identifiers and categories stay text, whatever they look like
    assert frame["loan_id"].tolist() == ["007", "008", "009", "010"]
    assert frame["grade"].tolist() == ["1", "3", "2", "2"]
    # "None" is a category; "NA" and "" are missing
    assert frame["housing"].iloc[1] == "None" and pd.isna(frame["housing"].iloc[2])
    assert frame["income"].dtype == np.float64
    assert np.isnan(frame["income"].iloc[1]) and np.isinf(frame["income"].iloc[3])


def test_parquet_source_spec_loads_a_user_file_without_code_change(tmp_path):
    frame = pd.DataFrame({"loan_id": ["a", "b", "c"], "outcome": ["repaid", "default", "repaid"],
                          "income": [100.0, None, 300.0], "grade": ["1", "2", "3"],
                          "housing": ["own", None, "rent"]})
    pq = tmp_path / "loans.parquet"
    frame.to_parquet(pq, index=False)
    spec = load_spec(_write(tmp_path / "user.yaml", _user_spec(str(pq), "parquet")))

    loaded = inputs.load(spec)
    assert loaded.label == str(pq)
    pd.testing.assert_frame_equal(loaded.frame, frame)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_file_source_without_path_is_refused(tmp_path, kind):
    raw = _user_spec("x", kind)
    del raw["source"]["path"]
    err = _spec_error(_write(tmp_path / "user.yaml", raw))
    assert "needs 'path'" in str(err)


def test_missing_user_file_is_data_error_naming_it(tmp_path):
    from creditgov.errors import DataError

    spec = load_spec(_write(tmp_path / "user.yaml", _user_spec(str(tmp_path / "absent.csv"), "csv")))
    with pytest.raises(DataError) as info:
        inputs.load(spec)
    assert info.value.exit_code == 4
    assert str(tmp_path / "absent.csv") in str(info.value) and "not found" in str(info.value)


@pytest.mark.parametrize("where,key,value,message", [
    (["features", 1], "unit", "currency", "features.1: Value error, feature Home: 'unit' applies to numeric features only"),
    (["features", 0], "unit", "furlongs", "features.0.unit: Input should be"),
    (["lender"], "bureau", None, "lender.bureau: features ['Records'] are marked bureau"),
    (["lender"], "customer_wording", {"no_such_rule": {"en": "x", "zh": "x"}},
     "lender.customer_wording: ['no_such_rule'] are not policy rules"),
    (["lender"], "jurisdiction", "FR", "lender.jurisdiction: Input should be 'CN' or 'US'"),
    (["lender"], "contact", [], "lender.contact: List should have at least 1 item"),
])
def test_notice_settings_are_checked_with_one_line_errors(tmp_path, raw_spec, where, key, value, message):
    raw = _set(raw_spec, where, key, value)
    err = str(_spec_error(_write(tmp_path / "spec.yaml", raw)))
    assert message in err and "\n" not in err, err


def test_months_are_written_as_a_person_writes_them():
    from creditgov.spec import months_text

    assert months_text([3, 1, 2]) == "months 1-3"
    assert months_text([13]) == "month 13"
    assert months_text([1, 2, 5]) == "months 1, 2 and 5"


# --------------------------------------------------------------------------- model inventory (issue 13, point 6)


@pytest.mark.parametrize("update, message", [
    ({"next_review": "2027-06-30"}, "inventory: give either next_review (a date) or review_every_months"),
    ({"review_every_months": None}, "inventory: give either next_review (a date) or review_every_months"),
    ({"risk_tier": "extreme"}, "inventory.risk_tier: Input should be 'high', 'medium' or 'low'"),
    ({"validator": "Head of Consumer Credit Risk, BNPL credit line"}, "inventory.validator: the validator must "
     "not be the owner"),
    ({"approval_conditions": ["  "]}, "inventory.approval_conditions: an empty condition"),
    ({"next_review": "not a date", "review_every_months": None}, "inventory.next_review: Input should be a valid date"),
])
def test_inventory_rules_are_one_line_spec_errors(tmp_path, raw_spec, update, message):
    raw = _set(raw_spec, [], "development", False)
    raw["inventory"] = {**raw["inventory"], **update}
    err = str(_spec_error(_write(tmp_path / "s.yaml", raw)))
    assert message in err and "\n" not in err and err.startswith(str(tmp_path / "s.yaml"))


def test_inventory_is_recorded_but_not_part_of_the_spec_hash(tmp_path, raw_spec, spec):
    assert spec.inventory.risk_tier == "high" and spec.inventory.review_every_months == 12
    raw = _set(raw_spec, ["inventory"], "owner", "Chief Risk Officer")
    moved = load_spec(_write(tmp_path / "owner.yaml", raw))
    assert moved.inventory.owner == "Chief Risk Officer" and moved.content_hash == spec.content_hash
    gone = {k: v for k, v in raw_spec.items() if k != "inventory"}
    assert load_spec(_write(tmp_path / "none.yaml", gone)).inventory is None
