"""`creditgov train --search` end to end: child runs under the training run, the frontier on the model card, and the
promotion gate refusing a version while a less discriminatory alternative exists, until the approver records a
business-necessity justification, which the model card then shows."""
from __future__ import annotations

import json

import pytest

from helpers import copy_project, in_project, quiet, write_fast_spec

pytestmark = pytest.mark.e2e

ROUNDS = 20
ROWS = 1500  # a sample of credit_data: the search refits every candidate on each fold
# a wide AUC tolerance and a hair's AIR margin: a measured-only candidate (the ExponentiatedGradient reduction
# under demographic parity, or the scorecard), fairer than every registrable candidate on these folds, is a less
# discriminatory alternative to whichever registrable candidate is chosen
SEARCH = {"n_trials": 0, "feature_drop": False, "fairness_aware": True, "scorecard": True,
          "auc_tolerance": 0.2, "air_margin": 0.001}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    import mlflow
    import yaml

    from creditgov.governance import registry
    from creditgov.jobs import training
    from creditgov.spec import load_spec

    root = copy_project(tmp_path_factory.mktemp("search"))
    with in_project(root):
        name = write_fast_spec(root, "pipelines/app-search.yaml")
        raw = yaml.safe_load((root / name).read_text(encoding="utf-8"))
        raw["search"] = SEARCH
        (root / name).write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
        spec = load_spec(name)
        from creditgov.data import inputs

        inputs.load(spec).frame.sample(ROWS, random_state=0).to_csv(root / "sample.csv", index=False)
        result = training.run_training(spec, name, str(root / "sample.csv"), n_estimators=ROUNDS, log=quiet,
                                       trainer="maker", search=True)
        client = registry.client()
        run = client.get_run(result.run_id)
        children = client.search_runs([run.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
        html = (root / mlflow.artifacts.download_artifacts(run_id=result.run_id,
                                                           artifact_path="model_card/model_card.html",
                                                           dst_path=str(root / "card"))).__str__()
        yield {"root": root, "spec": spec, "result": result, "run": run, "children": children,
               "html": open(html, encoding="utf-8").read(), "client": client}


def test_each_candidate_is_a_child_run_with_auc_ks_air_smd(searched):
    kids = {r.data.tags["mlflow.runName"]: r for r in searched["children"]}
    assert set(kids) == {"candidate-baseline", "candidate-reweighting", "candidate-expgrad-dp", "candidate-scorecard"}
    for r in kids.values():
        assert {"cv_auc_mean", "cv_ks_mean", "fair_min_air", "fair_max_smd"} <= set(r.data.metrics)
    chosen = [n for n, r in kids.items() if r.data.tags["candidate.chosen"] == "true"]
    assert chosen == ["candidate-" + searched["run"].data.tags["creditgov.search.chosen"]]
    assert searched["result"].metrics["cv_auc_mean"] == pytest.approx(
        kids[chosen[0]].data.metrics["cv_auc_mean"])  # the registered model's CV AUC is its candidate's


def test_model_card_shows_the_frontier_and_the_choice(searched):
    card, html = searched["result"].card_json, searched["html"]
    assert card["search"]["chosen"] == searched["run"].data.tags["creditgov.search.chosen"]
    assert card["search"]["why"] and "highest CV AUC" in card["search"]["why"][0]
    assert "Search for less discriminatory alternatives" in html and "Candidate frontier" in html
    table = [(c["name"], round(c["cv_auc"], 4), c["min_air"]) for c in card["search"]["candidates"]]
    assert card["search"]["alternatives"], table
    assert set(card["search"]["alternatives"]) <= {"expgrad-dp", "scorecard"}, table  # measured-only ones
    gate = next(g for g in searched["result"].gates if g.name == "less_discriminatory_alternative")
    assert not gate.passed


def test_promotion_needs_a_business_necessity_justification(searched):
    import mlflow

    from creditgov.errors import PromotionRefused
    from creditgov.governance import promote

    spec, version = searched["spec"], searched["result"].version
    with in_project(searched["root"]):
        with pytest.raises(PromotionRefused, match="less_discriminatory_alternative"):
            promote.promote(spec, "checker", version)
        text = "The scorecard cannot use the bureau record the policy requires for thin files"
        v, gates = promote.promote(spec, "checker", version, justification=text)
        tags = searched["client"].get_model_version(spec.registry.model_name, v).tags
        local = mlflow.artifacts.download_artifacts(run_id=searched["result"].run_id, artifact_path="model_card",
                                                    dst_path=str(searched["root"] / "card2"))
    assert tags["business_necessity"] == text and json.loads(tags["gate_evidence"])["business_necessity"] == text
    assert next(g for g in gates if g.name == "less_discriminatory_alternative").passed
    card = json.loads(open(f"{local}/model_card.json", encoding="utf-8").read())
    assert card["search"]["business_necessity"]["text"] == text
    assert card["search"]["business_necessity"]["approver"] == "checker"
    html = open(f"{local}/model_card.html", encoding="utf-8").read()
    assert "Business-necessity justification" in html and "thin files" in html and "Candidate frontier" in html
