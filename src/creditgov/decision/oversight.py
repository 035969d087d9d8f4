"""Human oversight: resolve review-queue decisions, and contest a decision with corrected data.

Both are recorded in the audit trail (kind `review` / `contest`, keyed by the decision id they
are about), and shown on the per-decision report. A contest re-decides with the SAME model
version and policy that made the original decision and links the new decision to the old one.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from creditgov.governance import audit
from creditgov.data import inputs
from creditgov.decision import decide
from creditgov.data import validate
from creditgov.errors import SpecError, UsageError
from creditgov.spec import PipelineSpec

ACTIONS = ("approve", "decline", "review", "keep", "raise", "cut", "suspend", "restore", "watch_reminder", "watch_freeze",
           "reprice")
CONTEST_DIR = Path("decisions/contests")


def review(decision_id: str, approve: bool, override: str | None, reviewer: str, reason: str,
           limit: float | None = None) -> dict:
    if approve == bool(override):
        raise UsageError("review needs exactly one of --approve or --override ACTION")
    if override and override not in ACTIONS:
        raise UsageError(f"--override '{override}': not an action ({', '.join(ACTIONS)})")
    if not reviewer.strip() or not reason.strip():
        raise UsageError("review needs --reviewer and a --reason: the record must say who decided and why")
    original = audit.find_decision(decision_id)
    proposed = original["action"]
    if proposed == "review":  # approving a queued case grants what the policy proposed
        prev = original.get("previous_limit")
        on_book = prev is not None and prev == prev  # NaN in older records means "no previous limit"
        proposed = "keep" if on_book else "approve"
    outcome = proposed if approve else override
    event = {"decision_id": decision_id, "reviewer": reviewer, "reason": reason,
             "resolution": "approved" if approve else "overridden", "original_action": original["action"],
             "final_action": outcome, "final_limit": limit if limit is not None else original.get("limit"),
             "was_in_review_queue": bool(original.get("review_queue")),
             "reviewed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    audit.append([("review", decision_id, event)])
    return event


def approve_treatment(decision_id: str, reviewer: str, reason: str) -> dict:
    """Record a person's approval of a collections step that needs one (the agency or legal step, status
    pending_approval): only then is it carried out and its notice sent. A review entry in the audit trail."""
    if not reviewer.strip() or not reason.strip():
        raise UsageError("approve-treatment needs --reviewer and a --reason: the record must say who approved and why")
    original = audit.find_decision(decision_id)
    treatment, status = original.get("treatment"), original.get("treatment_status")
    if status != "pending_approval":
        raise UsageError(f"decision {decision_id}: its collections treatment is {treatment or 'none'} "
                         f"({status or 'no status'}); only a step pending approval can be approved")
    if treatment_approval(decision_id) is not None:
        raise UsageError(f"decision {decision_id}: the {treatment} step is already approved")
    event = {"decision_id": decision_id, "subject": "treatment", "treatment": treatment, "reviewer": reviewer,
             "reason": reason, "resolution": "approved", "original_action": f"{treatment} (pending approval)",
             "final_action": treatment, "was_in_review_queue": bool(original.get("review_queue")),
             "reviewed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    audit.append([("review", decision_id, event)])
    return event


def treatment_approval(decision_id: str, events: list[dict] | None = None) -> dict | None:
    """The recorded approval of the decision's collections step (approve_treatment), or None."""
    events = audit.events_for(decision_id) if events is None else events
    return next((e for e in events if e.get("kind") == "review" and e.get("subject") == "treatment"), None)


def contest(spec: PipelineSpec, decision_id: str, corrected: str, reason: str, log=print) -> dict:
    """Re-decide one row through the decision path (decide.decide_rows) under the model version and policy of
    the decision contested; the new decision is written (decisions/contests/) and audited like any other."""
    original = _contestable(spec, decision_id)
    loaded = inputs.load(spec, corrected)
    if len(loaded.frame) != 1:
        raise SpecError(f"{corrected}: a contest corrects one application or account; the file has "
                        f"{len(loaded.frame)} rows")
    rows = validate.validate_batch(loaded.frame, spec, loaded.label)
    return _contest(spec, original, decision_id, rows, corrected, reason, log, None)


def contest_rows(spec: PipelineSpec, decision_id: str, rows: validate.Validated, reason: str, log=print,
                 model: decide.DecisionModel | None = None) -> dict:
    """`contest` with the corrected row already validated (one row: `creditgov serve`'s POST /v1/contests).
    `model`: a model already loaded, used when it is the version that made the decision contested."""
    original = _contestable(spec, decision_id)
    if rows.rows_in != 1:
        raise SpecError(f"{rows.label}: a contest corrects one application or account; {rows.rows_in} rows given")
    return _contest(spec, original, decision_id, rows, rows.label, reason, log, model)


def _contestable(spec: PipelineSpec, decision_id: str) -> dict:
    original = audit.find_decision(decision_id)
    if spec.policy is None or original["policy_hash"] != spec.policy.content_hash:
        raise SpecError(f"decision {decision_id} was made under policy {original['policy_hash'][:12]}; the spec's "
                        "policy differs: contest with the spec version that made it")
    return original


def _contest(spec: PipelineSpec, original: dict, decision_id: str, rows: validate.Validated, corrected: str,
             reason: str, log, model: decide.DecisionModel | None) -> dict:
    if model is None or str(model.version) != str(original["model_version"]):
        # a contest is the customer's right: never refused for the model's monitoring status, only flagged
        model = decide.load_model(spec, str(original["model_version"]), on_rebuild="flag")
    # decided in memory first: a refused contest leaves no decision log behind (verify would name it)
    decided = decide.decide_rows(rows, model, spec, datetime.now(timezone.utc).date().isoformat())
    new = decided.log.iloc[0]
    if spec.source.id_column and new["account_key"] != original["account_key"]:
        raise SpecError(f"{corrected}: the corrected row is for another account than decision {decision_id}")
    result = decide.publish(decided, spec, CONTEST_DIR, model.run_id, log=log)
    event = {"decision_id": decision_id, "new_decision_id": str(new["decision_id"]), "reason": reason,
             "original_action": original["action"], "new_action": str(new["action"]),
             "original_pd": original.get("pd"), "new_pd": None if new["pd"] != new["pd"] else float(new["pd"]),
             "model_version": str(original["model_version"]), "corrected_input_hash": result.input_hash,
             "contested_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    audit.append([("contest", decision_id, event), ("contest", str(new["decision_id"]), {**event, "role": "new"})])
    return event
