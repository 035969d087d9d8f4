"""Issue 13 on a trained project: protected attributes out of the model and into the fairness evidence,
separation of duties, and the registry checked against the audit trail's promotions.

One copy of the session's fast application project (trained and promoted once per session,
tests/e2e/conftest.py trained_application_fast); everything here runs in process.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from helpers import CLI_DROP_ENV, copy_trained_project, in_project, quiet

pytestmark = pytest.mark.e2e

SPEC = "pipelines/application-fast.yaml"
AS_OF = "2026-11-01"


@pytest.fixture(scope="module")
def proj(tmp_path_factory, trained_application_fast):
    from creditgov.governance import registry
    from creditgov.spec import load_spec

    root = copy_trained_project(trained_application_fast.root, tmp_path_factory.mktemp("governance"))
    with in_project(root, drop=(*CLI_DROP_ENV, "CREDITGOV_PSEUDONYM_KEY")):
        spec = load_spec(SPEC)
        registry.configure()
        yield SimpleNamespace(root=root, spec=spec, version=trained_application_fast.version,
                              trained=trained_application_fast.trained, client=registry.client(),
                              name=spec.registry.model_name)


def test_protected_attributes_never_reach_the_model_and_are_in_the_fairness_evidence(proj):
    card = proj.trained.card_json
    roles = {f["name"]: f for f in card["features"]}
    assert roles["Age"]["protected"] and roles["Age"]["importance"] is None
    assert roles["Marital"]["protected"] and roles["Marital"]["importance"] is None
    fair = card["fairness"]
    assert fair["protected"] == ["Age", "Marital"] and set(fair["outcomes"]) == {"approval"}
    age = fair["outcomes"]["approval"]["Age"]
    assert {g["group"] for g in age["groups"]} <= {"<25", "25-39", "40-61", "62+"}
    assessed = [g for g in age["groups"] if g["air"] is not None]
    assert assessed and all(g["air_ci"][0] <= g["air"] <= g["air_ci"][1] for g in assessed)
    proxies = card["proxies"]
    assert proxies["threshold"] == 0.25 and len(proxies["pairs"]) == 17 * 2  # model inputs (derived too) x protected
    assert all(p["flagged"] == (p["cramers_v"] >= 0.25) for p in proxies["pairs"])
    assert {"feature": "Seniority", "protected": "Age"} in [{k: p[k] for k in ("feature", "protected")}
                                                           for p in proxies["flagged"]]  # years at work vs age
    run = proj.client.get_run(proj.trained.run_id)
    assert run.data.metrics["proxies_flagged"] == len(proxies["flagged"])
    assert run.data.metrics["fair_min_air"] == pytest.approx(
        min(g["air"] for a in ("Age", "Marital") for g in fair["outcomes"]["approval"][a]["groups"]
            if g["air"] is not None))
    assert run.data.tags["creditgov.trained_by"] == proj.trained.card_json["governance"]["trained_by"]


def test_decisions_carry_group_labels_and_no_protected_reason(proj):
    from creditgov.decision import decide

    res = decide.decide(proj.spec, as_of=AS_OF, log=quiet)
    log = res.log
    assert "input__Age" not in log.columns and "input__Marital" not in log.columns
    assert "shap__Age" not in log.columns
    assert set(log.loc[log["status"] == "decided", "group__Age"]) <= {"<25", "25-39", "40-61", "62+"}
    codes = {c for cs in log["reason_codes"] for c in cs}
    assert codes and not codes & {"Age", "Marital"}


def test_trainer_cannot_approve_outside_a_development_spec_and_self_approval_is_marked(proj, tmp_path):
    from creditgov.errors import PromotionRefused
    from creditgov.governance import promote
    from creditgov.report.pages import approval_of
    from creditgov.spec import load_spec

    trainer = proj.client.get_model_version(proj.name, proj.version).tags["trained_by"]
    raw = yaml.safe_load((proj.root / SPEC).read_text(encoding="utf-8"))
    raw["development"] = False
    (proj.root / "pipelines" / "production.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    production = load_spec(proj.root / "pipelines" / "production.yaml")
    with pytest.raises(PromotionRefused, match="gate separation_of_duties failed"):
        promote.promote(production, trainer, proj.version)
    assert proj.client.get_model_version(proj.name, proj.version).tags["gate.separation_of_duties"].startswith(
        "fail: trained by")
    v, gates = promote.promote(proj.spec, trainer, proj.version)  # the development spec: waived, and marked
    assert {g.name: g.value for g in gates}["separation_of_duties"] == "self-approved (development)"
    tags = proj.client.get_model_version(proj.name, v).tags
    assert tags["approval"] == "self-approved (development)" and tags["approved_by"] == trainer
    assert approval_of(proj.name, v) == f"approved by {trainer}: self-approved (development)"


def test_audit_verify_names_an_alias_moved_or_a_gate_tag_edited_outside_creditgov(proj):
    from creditgov.governance import integrity

    assert integrity.verify_registry() == []
    c, name, v = proj.client, proj.name, proj.version
    original = c.get_model_version(name, v).tags["gate.min_auc"]
    c.set_model_version_tag(name, v, "gate.min_auc", "pass: 0.9900 (test AUC >= 0.6)")
    (found,) = integrity.verify_registry()
    assert f"{name} version {v} tag 'gate.min_auc'" in found and "edited outside creditgov" in found
    c.set_model_version_tag(name, v, "gate.min_auc", original)
    assert integrity.verify_registry() == []
    mv = c.get_model_version(name, v)
    other = c.create_model_version(name, mv.source, run_id=mv.run_id)
    c.set_registered_model_alias(name, "champion", other.version)
    (found,) = integrity.verify_registry()
    assert f"@champion is version {other.version}" in found and "alias moved outside creditgov" in found
    c.set_registered_model_alias(name, "champion", v)
    evidence = json.loads(c.get_model_version(name, v).tags["gate_evidence"])
    evidence["evidence"]["test_auc"] = 0.99
    c.set_model_version_tag(name, v, "gate_evidence", json.dumps(evidence, sort_keys=True))
    (found,) = integrity.verify_registry()
    assert "tag 'gate_evidence'" in found


def test_inventory_change_log_gate_summary_and_verdicts_are_in_the_registry_and_on_the_card(proj):
    """Point 6 and 7 in the registry: the inventory as tags (re-dated at approval), the readable gate summary
    (checked by audit verify), the change log of the first version and of a next one (a real run and version,
    registered in process), and the model card of a report with the verdict history."""
    from datetime import date

    import mlflow

    from creditgov.governance import integrity, inventory, registry
    from creditgov.report.pages import model_card_of

    c, name, v = proj.client, proj.name, proj.version
    tags = c.get_model_version(name, v).tags
    approved = date.fromisoformat(tags["approved_at"][:10])
    assert tags["inventory.owner"] == proj.spec.inventory.owner and tags["inventory.risk_tier"] == "high"
    assert tags["inventory.next_review"] == inventory.add_months(approved, 12).isoformat()
    assert tags["inventory.review"] == f"every 12 months from {approved.isoformat()}"
    assert c.get_registered_model(name).tags["inventory.validator"] == proj.spec.inventory.validator
    gates = [k[len("gate."):] for k in tags if k.startswith("gate.")]
    assert len(gates) >= 5 and tags["gates.summary"].count(": pass (") == len(gates)  # one line, every gate
    assert all(f"{g}: pass (" in tags["gates.summary"] for g in gates)
    assert tags["changelog.summary"] == f"first version of {name}" and proj.trained.card_json["changes"][
        "previous_version"] is None

    assert not [f for f in integrity.verify_registry() if "gates.summary" in f]
    c.set_model_version_tag(name, v, "gates.summary", tags["gates.summary"].replace("pass", "FAIL", 1))
    assert [f for f in integrity.verify_registry() if "tag 'gates.summary' is" in f and "edited outside" in f]
    c.set_model_version_tag(name, v, "gates.summary", tags["gates.summary"])

    # a next version: the spec and metrics changed, the data too
    run = c.get_run(proj.trained.run_id)
    metrics = {**run.data.metrics, "test_auc": run.data.metrics["test_auc"] + 0.01}
    spec2 = proj.spec.model_copy(update={
        "model": proj.spec.model.model_copy(update={"max_depth": proj.spec.model.max_depth + 1}),
        "inventory": proj.spec.inventory.model_copy(update={"owner": "Chief Risk Officer"})})
    with mlflow.start_run(experiment_id=run.info.experiment_id, run_name="inventory-test"):
        mv = c.create_model_version(name, c.get_model_version(name, v).source,
                                    run_id=mlflow.active_run().info.run_id)
        entry, log = inventory.record_registration(spec2, str(mv.version), metrics, "f" * 64)
    assert entry["owner"] == "Chief Risk Officer" and log["previous_version"] == str(v)
    assert log["data"]["changed"] and [(d["key"], d["old"], d["new"]) for d in log["spec"]] == [
        ("inventory.owner", proj.spec.inventory.owner, "Chief Risk Officer"),
        ("model.max_depth", str(proj.spec.model.max_depth), str(proj.spec.model.max_depth + 1))]
    auc = next(m for m in log["metrics"] if m["metric"] == "test_auc")
    assert auc["delta"] == pytest.approx(0.01)
    new = c.get_model_version(name, mv.version)
    assert new.tags["changelog.previous_version"] == str(v) and "model.max_depth: " in new.tags["changelog.spec"]
    assert f"### Change log: {name} version {mv.version}" in new.description
    assert "| owner | Chief Risk Officer |" in c.get_registered_model(name).description

    registry.record_verdict(name, v, "month-13", "watch", "run-13", "score PSI 0.12 > 0.10")
    registry.record_verdict(name, v, "month-14", "rebuild", "run-14", "AUC fell by 0.08")
    _, html = model_card_of(name, v)
    for text in ("<h2>Model inventory</h2>", "<h2>Change log</h2>", f"First version of {name}",
                 "Status in the registry", "Monitoring verdicts (2, oldest first", "The latest verdict is <b>rebuild"):
        assert text in html, text
    assert html.index("month-13") < html.index("month-14")
