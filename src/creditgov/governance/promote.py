"""Promotion: `@champion` moves to a version only when its registration gates pass.

The gates are re-evaluated from the version's own run metrics (not from what the
registration step said), and the outcome, pass or refusal, is recorded as tags on
the model version: who asked, when, and the evidence of every gate.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from creditgov.errors import PromotionRefused, TrackingError
from creditgov.governance import audit, inventory, modelcard, registry
from creditgov.governance.gates import (EVIDENCE_KEYS, OPTIONAL_KEYS, GateResult, all_pass, evaluate_gates,
                                        less_discriminatory, separation_of_duties)
from creditgov.governance.registry import get_version, is_not_found
from creditgov.spec import PipelineSpec


APPROVAL_SELF = "self-approved (development)"  # the approval of a development spec's trainer, wherever it shows


def resolve_version(client, name: str, version: str | None) -> str:
    """A version number, or the version behind alias `challenger` when none is given. A --version that
    names no version is a usage error listing the versions that exist (tracking.get_version)."""
    from mlflow.exceptions import MlflowException  # heavy: see registry.configure

    if version is not None:
        return str(get_version(client, name, version).version)
    try:
        return str(client.get_model_version_by_alias(name, "challenger").version)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        raise TrackingError(f"registered model '{name}' has no version with the alias 'challenger'") from None


SEARCH_TAG = "creditgov.search.alternatives"  # training run tag: JSON list of the less discriminatory alternatives


def search_gate(run_tags: dict, justification: str | None) -> GateResult | None:
    """The less_discriminatory_alternative gate of a version from its training run's tags (None: not searched)."""
    if SEARCH_TAG not in run_tags:
        return None
    alts = json.loads(run_tags[SEARCH_TAG])
    tol, margin = run_tags.get("creditgov.search.auc_tolerance"), run_tags.get("creditgov.search.air_margin")
    return less_discriminatory(alts, justification, float(tol) if tol else None, float(margin) if margin else None)


def promote(spec: PipelineSpec, approver: str, version: str | None = None,
            justification: str | None = None) -> tuple[str, list[GateResult]]:
    """`justification`: a business-necessity justification by the approver, needed while the version's search
    found a less discriminatory alternative; recorded on the version, in the audit trail and on the model card."""
    justification = (justification or "").strip() or None
    if not approver.strip():
        raise PromotionRefused("promotion needs --approver: the person accountable for it")
    registry.configure()
    client = registry.client()
    name = spec.registry.model_name
    with registry.backend_errors(f"promote {name}"):
        version = resolve_version(client, name, version)
        mv = client.get_model_version(name, version)
        if mv.tags.get("creditgov.registration") != "complete":
            raise PromotionRefused(f"{name} version {version} not promoted: its registration is incomplete "
                                   "(the training run was interrupted)")
        run = client.get_run(mv.run_id)
        evidence = {k: run.data.metrics[k] for k in EVIDENCE_KEYS + OPTIONAL_KEYS if k in run.data.metrics}
        trainer = mv.tags.get("trained_by") or run.data.tags.get("creditgov.trained_by")
        duty = separation_of_duties(trainer, approver, spec.development)
        lda = search_gate(run.data.tags, justification)
        results = evaluate_gates(spec.gates, evidence) + ([lda] if lda is not None else []) + [duty]
        self_approved = duty.passed and duty.value == "self-approved (development)"
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = json.dumps({"gates": [r.to_dict() for r in results], "evidence": evidence,
                             "spec_hash": spec.content_hash, "trained_by": trainer,
                             "approval": APPROVAL_SELF if self_approved else "independent",
                             **({"business_necessity": justification} if justification else {})}, sort_keys=True)
        for r in results:
            client.set_model_version_tag(name, version, f"gate.{r.name}", f"{'pass' if r.passed else 'fail'}: "
                                                                           f"{r.value} ({r.rule})")
        client.set_model_version_tag(name, version, inventory.SUMMARY_TAG, inventory.gates_summary(results))
        inventory.describe_promotion(client, name, version, results,
                                     "promoted" if all_pass(results) else "refused", now)
        if not all_pass(results):
            client.set_model_version_tag(name, version, "promotion.refused_at", now)
            client.set_model_version_tag(name, version, "promotion.refused_for", approver)
            failed = [r for r in results if not r.passed]
            _record(name, version, approver, now, "refused", record, None)
            raise PromotionRefused(
                f"{name} version {version} not promoted: gate {failed[0].name} failed "
                f"({failed[0].rule}; value {failed[0].value})"
                + (f"; also failed: {', '.join(r.name for r in failed[1:])}" if len(failed) > 1 else ""))
        try:
            previous = str(client.get_model_version_by_alias(name, "champion").version)
        except Exception:
            previous = None
        client.set_model_version_tag(name, version, "approved_by", approver)
        client.set_model_version_tag(name, version, "approved_at", now)
        client.set_model_version_tag(name, version, "approval", APPROVAL_SELF if self_approved else "independent")
        client.set_model_version_tag(name, version, "gate_evidence", record)
        inventory.on_approval(client, spec, name, version, datetime.fromisoformat(now).date())
        if justification:
            client.set_model_version_tag(name, version, "business_necessity", justification)
            modelcard.record_justification(mv.run_id, justification, approver, now)
        if previous and previous != version:
            client.set_model_version_tag(name, version, "previous_champion", previous)
            client.set_model_version_tag(name, previous, "superseded_by", version)
        client.set_registered_model_alias(name, "champion", version)
    _record(name, version, approver, now, "promoted", record, previous)
    return version, results


def _record(name: str, version: str, approver: str, at: str, outcome: str, evidence: str,
            previous: str | None) -> None:
    """The promotion decision in the audit trail, beside the decisions the model will make."""
    audit.append([("promotion", f"{name}@{version}", {
        "model_name": name, "model_version": version, "outcome": outcome, "approver": approver, "at": at,
        "previous_champion": previous, **json.loads(evidence)})])
