"""Registry integrity (issue 13): the registry's @champion and gate tags against the promotions the audit trail
records, on crafted entries (tests/e2e/test_governance.py does it against a real MLflow registry)."""
from __future__ import annotations

import json

from creditgov.governance.integrity import expected_tags, registry_findings

GATES = [{"name": "min_auc", "rule": "test AUC >= 0.8", "value": "0.8500", "passed": True}]


def _entry(seq, version, outcome="promoted", approver="bob"):
    return {"seq": seq, "recorded_at": "t", "model_name": "m", "model_version": version, "outcome": outcome,
            "approver": approver, "at": "t", "previous_champion": None, "gates": GATES,
            "evidence": {"test_auc": 0.85}, "spec_hash": "h", "trained_by": "alice", "approval": "independent"}


def _tags(e):
    return expected_tags(e, e)


def test_an_untouched_registry_has_no_finding_and_the_tags_are_what_promote_writes():
    e = _entry(3, "2")
    tags = _tags(e)
    assert tags["gate.min_auc"] == "pass: 0.8500 (test AUC >= 0.8)" and tags["approved_by"] == "bob"
    assert json.loads(tags["gate_evidence"]) == {"gates": GATES, "evidence": {"test_auc": 0.85}, "spec_hash": "h",
                                                 "trained_by": "alice", "approval": "independent"}
    assert registry_findings([_entry(1, "1"), e], {"m": "2"}, lambda n, v: tags) == []


def test_moved_removed_or_unrecorded_aliases_and_edited_tags_are_named():
    e = _entry(3, "2")
    tags = _tags(e)
    (moved,) = registry_findings([_entry(1, "1"), e], {"m": "1"}, lambda n, v: tags)
    assert "m @champion is version 1" in moved and "entry 3) made version 2" in moved and "moved" in moved
    (removed,) = registry_findings([e], {"m": None}, lambda n, v: tags)
    assert "has no @champion" in removed
    (unrecorded,) = registry_findings([e], {"m": "2", "other": "5"}, lambda n, v: tags)
    assert "other @champion is version 5" in unrecorded and "no promotion" in unrecorded
    edited = registry_findings([e], {"m": "2"}, lambda n, v: {**tags, "gate.min_auc": "pass: 0.99 (x)",
                                                               "approved_by": "mallory"})
    assert len(edited) == 2 and all("edited outside creditgov" in p for p in edited)
    gone = {k: v for k, v in tags.items() if k != "gate_evidence"}
    (missing,) = registry_findings([e], {"m": "2"}, lambda n, v: gone)
    assert "tag 'gate_evidence' is None" in missing and "removed" in missing


def test_a_refused_attempt_after_the_promotion_sets_the_gate_tags_but_not_the_approval():
    promoted, refused = _entry(3, "2"), _entry(5, "2", outcome="refused", approver="alice")
    refused["gates"] = [dict(GATES[0], passed=False, value="0.7000")]
    tags = expected_tags(refused, promoted)
    assert tags["gate.min_auc"].startswith("fail: 0.7000") and tags["approved_by"] == "bob"
    assert registry_findings([promoted, refused], {"m": "2"}, lambda n, v: tags) == []
