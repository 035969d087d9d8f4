"""Model inventory, change log and gate summary (issue 13, point 6): the pure parts, on crafted inputs.
The registry side (tags, artifacts, descriptions, the model card) is in tests/e2e/test_governance.py."""
from __future__ import annotations

from datetime import date

from creditgov.governance import inventory
from creditgov.governance.gates import GateResult


def test_review_interval_counts_calendar_months_and_a_spec_date_wins(spec):
    assert inventory.add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert inventory.add_months(date(2026, 11, 30), 12) == date(2027, 11, 30)
    entry = inventory.entry(spec, date(2026, 11, 30))
    assert entry["next_review"] == "2027-11-30" and entry["review"] == "every 12 months from 2026-11-30"
    fixed = spec.model_copy(update={"inventory": spec.inventory.model_copy(
        update={"review_every_months": None, "next_review": date(2027, 3, 31)})})
    assert inventory.entry(fixed, date(2026, 11, 30))["next_review"] == "2027-03-31"
    tags = inventory.tags(entry)
    assert tags["inventory.risk_tier"] == "high" and tags["inventory.owner"] == spec.inventory.owner
    assert tags["inventory.approval_conditions"].startswith("(1) Decisions only") and "(3) Monthly" in tags[
        "inventory.approval_conditions"]
    assert inventory.entry(spec.model_copy(update={"inventory": None}), date(2026, 1, 1)) == {}


def test_gate_summary_is_one_readable_line_in_evaluation_order():
    results = [GateResult("min_auc", "test AUC >= 0.8", "0.8460", True),
               GateResult("calibration", "Hosmer-Lemeshow p >= 0.05", "0.0100", False)]
    assert inventory.gates_summary(results) == ("min_auc: pass (0.8460; test AUC >= 0.8); "
                                                "calibration: FAIL (0.0100; Hosmer-Lemeshow p >= 0.05)")


def test_spec_diff_names_each_changed_key_and_named_items_once():
    old = {"model": {"max_depth": 3, "eta": 0.1}, "gates": {"min_air": None},
           "features": [{"name": "Age", "protected": False, "range": [18, 99]}, {"name": "Gone", "type": "numeric"}]}
    new = {"model": {"max_depth": 4, "eta": 0.1}, "gates": {"min_air": 0.8},
           "features": [{"name": "Age", "protected": True, "range": [18, 99]}, {"name": "New", "type": "text"}]}
    assert inventory.spec_diff(old, new) == [
        {"key": "features[Age].protected", "old": "false", "new": "true"},
        {"key": "features[Gone]", "old": "present", "new": "absent"},
        {"key": "features[New]", "old": "absent", "new": "present"},
        {"key": "gates.min_air", "old": "unset", "new": "0.8"},
        {"key": "model.max_depth", "old": "3", "new": "4"}]
    assert inventory.spec_diff(old, old) == []


def test_change_log_first_version_and_against_a_previous_one():
    first = inventory.change_log("m", "1", {"version": "1"}, None)
    assert first["summary"] == "first version of m" and first["previous_version"] is None
    assert inventory.changelog_tags(first) == {"changelog.summary": "first version of m",
                                               "changelog.previous_version": "none (first version)"}
    assert "First version of m." in inventory.changelog_markdown(first)
    this = {"version": "2", "data_hash": "b" * 64, "spec": {"model": {"max_depth": 4}},
            "metrics": {"test_auc": 0.8465, "test_ks": 0.55, "fair_min_air": 0.81}}
    prev = {"version": "1", "data_hash": "a" * 64, "spec": {"model": {"max_depth": 3}},
            "metrics": {"test_auc": 0.8400, "test_ks": 0.56}}
    log = inventory.change_log("m", "2", this, prev)
    assert log["summary"] == ("against version 1: training data changed, 1 spec change, "
                              "test AUC 0.8400 -> 0.8465 (+0.0065)")
    by = {m["metric"]: m for m in log["metrics"]}
    assert set(by) == {"test_auc", "test_ks", "fair_min_air"} and by["fair_min_air"]["delta"] is None
    tags = inventory.changelog_tags(log)
    assert tags["changelog.spec"] == "model.max_depth: 3 -> 4"
    assert tags["changelog.data"] == f"changed: {'a' * 12} -> {'b' * 12}"
    assert tags["changelog.metrics"] == ("test AUC 0.8400 -> 0.8465 (+0.0065); test KS 0.5600 -> 0.5500 (-0.0100); "
                                         "lowest AIR (protected groups) n/a -> 0.810 (n/a)")
    md = inventory.changelog_markdown(log)
    assert "| `model.max_depth` | 3 | 4 |" in md and "| test AUC | 0.8400 | 0.8465 | +0.0065 |" in md
    unrecorded = inventory.change_log("m", "2", {**this, "spec": None, "spec_hash": "y"},
                                      {**prev, "spec": None, "spec_hash": "x"})
    assert [c["key"] for c in unrecorded["spec"]] == ["(spec hash; the previous spec was not recorded)"]


def test_registry_status_section_escapes_and_lists_every_verdict():
    status = {"model": "m<x>", "version": "2", "as_of": "2026-11-30", "aliases": ["champion"],
              "approved_by": "<b>eve</b>", "approved_at": "2026-11-01", "approval": "independent",
              "gates": [{"name": "min_auc", "result": "pass", "detail": "0.85 (test AUC >= 0.8)"}],
              "gates_summary": "min_auc: pass", "inventory": {"next_review": "2026-11-01"}, "review_overdue": True,
              "verdicts": [{"seq": 1, "verdict": "watch", "batch": "month-13", "run_id": "r1"},
                           {"seq": 2, "verdict": "rebuild", "batch": "month-14", "run_id": "r2"}],
              "changelog": "first version of m"}
    page = inventory.with_status("<html><body><h1>card</h1></body></html>", status)
    assert page.endswith("</body></html>") and "<b>eve</b>" not in page and "&lt;b&gt;eve&lt;/b&gt;" in page
    assert "m&lt;x&gt; version 2" in page and "overdue" in page and "@champion" in page
    assert page.index("month-13") < page.index("month-14") and "The latest verdict is <b>rebuild</b>" in page
