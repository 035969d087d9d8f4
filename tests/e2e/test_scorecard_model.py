"""A WOE scorecard registered as the model of a version (`creditgov train --model scorecard`, or a search that
chooses it) and decided through the one decision path: its PDs are optbinning's own, its attributions add up to
its log-odds, its reasons are the characteristics with the most points below their maximum, and its decision log
is sealed in the audit trail as any other."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from creditgov.model.credit_model import raw_columns
from helpers import APPLICATION_FAST, TINY_ROUNDS, copy_trained_project, in_project, quiet

pytestmark = pytest.mark.e2e

ROWS = 1200  # a sample of credit_data: enough bins for a scorecard, quick to train
AS_OF = "2026-11-01"
DROP_ENV = ("CREDITGOV_PSEUDONYM_KEY", "CREDITGOV_CHUNK_ROWS", "CREDITGOV_DECISION_LOG", "CREDITGOV_SPEC")


@pytest.fixture(scope="module")
def card(tmp_path_factory, trained_application_fast):
    """The session's trained project (XGBoost version promoted), copied; a scorecard version trained on it through
    the real training job, promoted by another person, and a batch decided with the champion by `decide` (load
    from the registry, decide_rows, publish: log and audit trail)."""
    from creditgov.data import inputs, validate
    from creditgov.decision import decide
    from creditgov.governance import audit, promote, registry
    from creditgov.jobs import training
    from creditgov.spec import load_spec

    root = copy_trained_project(trained_application_fast.root, tmp_path_factory.mktemp("scorecard"))
    with in_project(root, drop=DROP_ENV, CREDITGOV_AUDIT_URL=f"sqlite:///{root / 'audit.db'}"):
        spec = load_spec(APPLICATION_FAST)
        frame = inputs.load(spec).frame
        frame.sample(ROWS, random_state=0).to_csv(root / "sample.csv", index=False)
        result = training.run_training(spec, APPLICATION_FAST, str(root / "sample.csv"), n_estimators=TINY_ROUNDS,
                                       log=quiet, trainer="maker", model_kind="scorecard")
        version, _ = promote.promote(spec, "checker", result.version)
        batch = frame.drop(columns=[spec.target.column]).sample(400, random_state=5).reset_index(drop=True)
        batch.to_csv(root / "batch.csv", index=False)
        published = decide.decide(spec, "batch.csv", as_of=AS_OF, out_dir="decisions/scorecard", log=quiet)
        model, _, _ = registry.load_registered(spec.registry.model_name)
        loaded = inputs.load(spec, "batch.csv")
        rows = validate.validate_batch(loaded.frame, spec, loaded.label)  # the rows decide scored
        verified = audit.verify()
        tags = registry.client().get_model_version(spec.registry.model_name, version).tags
        first = audit.find_decision(published.log["decision_id"].iloc[0])
        yield SimpleNamespace(root=root, spec=spec, result=result, model=model, version=version, rows=rows,
                              log=published.log, published=published, verified=verified, tags=tags, first=first)


def test_the_registered_version_is_the_scorecard(card):
    from creditgov.model.scorecard_pd import ScorecardPD

    assert isinstance(card.model, ScorecardPD)
    assert card.tags["model_kind"] == "scorecard" and card.tags["creditgov.registration"] == "complete"
    assert card.version == card.result.version != "1"  # after the session's XGBoost version, now the champion
    assert card.result.card_json["model"]["kind"] == "scorecard"
    # the registered model's CV AUC is the scorecard's (the same folds)
    assert card.result.metrics["cv_auc_mean"] == pytest.approx(card.result.metrics["scorecard_cv_auc_mean"])


def test_pds_are_the_models_own_and_attributions_add_up(card):
    log, clean = card.log, card.rows.clean
    decided = log[log["status"] != "quarantined"]
    assert len(decided) == len(clean) > 300
    np.testing.assert_allclose(decided["pd"].to_numpy(), card.model.predict_pd(clean), rtol=0, atol=1e-12)
    shap = decided[[c for c in log.columns if c.startswith("shap__")]].to_numpy(dtype="float64")
    err = decided["shap_base"].to_numpy() + shap.sum(axis=1) - decided["log_odds"].to_numpy()
    assert np.abs(err).max() < 1e-9
    assert (shap >= -1e-12).all()  # each characteristic's points are at most its maximum
    # the PD is a function of the points: score = offset - factor * log-odds
    np.testing.assert_allclose(card.model.score(clean),
                               card.model.offset - card.model.factor * decided["log_odds"].to_numpy(), atol=1e-9)


def test_reasons_are_the_characteristics_most_below_their_maximum(card):
    spec, log = card.spec, card.log
    decided = log[log["decided_by"] == "model"]
    below = card.model.points_below_max(card.rows.clean)[(log.loc[log["status"] != "quarantined", "decided_by"]
                                                          == "model").to_numpy()]
    names = card.model.feature_names
    barred = {f.name for f in spec.features if f.never_a_reason or f.protected}
    assert not barred & set(names) - {f.name for f in spec.features if f.legal_basis}
    k = spec.policy.max_reasons
    checked = 0
    for codes, row in zip(decided["reason_codes"], below):
        order = [names[j] for j in np.argsort(-row, kind="stable") if row[j] > 1e-9 and names[j] not in barred][:k]
        assert list(codes) == order
        checked += 1
    assert checked > 300
    adverse = log[log["action"] == "decline"]
    assert len(adverse) and all(len(c) for c in adverse["reason_codes"])
    catalogue = {f.name: f.reason.en for f in spec.features}
    for codes, texts in zip(adverse["reason_codes"], adverse["reasons_en"]):
        for c, t in zip(codes, texts):
            if not c.startswith("rule:"):
                assert t == catalogue[c]


def test_the_log_is_sealed_and_verifies(card):
    p = card.published
    assert p.audit is not None and p.audit.inserted == len(card.log) == p.rows_in
    assert card.verified.ok, card.verified.problems
    assert set(card.log["model_version"]) == {card.version}
    assert card.first["action"] == card.log["action"].iloc[0]


def test_the_mlflow_pyfunc_gives_the_scorecards_pds(card):
    import mlflow

    with in_project(card.root, drop=DROP_ENV):
        from creditgov.governance import registry

        registry.configure()
        served = mlflow.pyfunc.load_model(f"models:/{card.spec.registry.model_name}/{card.version}")
        clean = card.rows.clean.head(50)
        out = served.predict(clean[raw_columns(card.model.encodings)])  # derived features: computed by the model
    np.testing.assert_allclose(out["pd"].to_numpy(), card.model.predict_pd(clean), rtol=0, atol=1e-12)
