"""The collections ladder (creditgov.decision.collections, spec policy.collections): treatments by bucket and
risk, the hardship plan's eligibility, the contact-frequency check and the third-party ban on every treatment,
approval-gated steps, and the customer notices of a treatment (report.wording.treatment_notice)."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from creditgov.decision import collections
from creditgov.errors import SpecError
from creditgov.report import wording
from creditgov.spec import load_spec
from helpers import names_leaked


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "pipelines" / "behaviour.yaml")


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = {"days_past_due": 0.0, "months_overdue_12m": 0.0, "hardship_declared": False,
            "hardship_plan_months_left": 0.0, "collection_contacts_30d": 0.0}
    return pd.DataFrame([{**base, **r} for r in rows])


LOW, HIGH = 0.01, 0.5  # PDs in the low and high tiers of the behaviour policy
CASES = [  # (row, PD, treatment, status, first rule)
    ({}, LOW, "none", "", None),
    ({"days_past_due": 12, "months_overdue_12m": 1}, LOW, "reminder", "sent", "collect_reminder"),
    ({"days_past_due": 12, "months_overdue_12m": 1}, HIGH, "call", "sent", "collect_call"),  # risk: called early
    ({"days_past_due": 45, "months_overdue_12m": 2}, LOW, "call", "sent", "collect_call"),
    ({"days_past_due": 100, "months_overdue_12m": 4}, LOW, "agency", "pending_approval", "collect_agency"),
    ({"days_past_due": 160, "months_overdue_12m": 6}, LOW, "legal", "pending_approval", "collect_legal"),
    # the hardship plan: a declared shock with a clean history before this episode, up to 59 days
    ({"days_past_due": 20, "months_overdue_12m": 1, "hardship_declared": True}, HIGH, "hardship_plan", "sent",
     "collect_hardship_plan"),
    ({"days_past_due": 50, "months_overdue_12m": 2, "hardship_declared": "yes"}, LOW, "hardship_plan", "sent",
     "collect_hardship_plan"),
    ({"days_past_due": 20, "months_overdue_12m": 3, "hardship_declared": True}, LOW, "reminder", "sent",
     "collect_reminder"),  # two missed months before this episode: not a clean history
    ({"days_past_due": 70, "months_overdue_12m": 3, "hardship_declared": True}, LOW, "call", "sent",
     "collect_call"),  # past the plan's 59 days
    ({"days_past_due": 20, "months_overdue_12m": 1, "hardship_plan_months_left": 2}, LOW, "none", "",
     "on_hardship_plan"),  # no other collection contact while a plan runs
    ({"days_past_due": 12, "months_overdue_12m": 1, "collection_contacts_30d": 9}, LOW, "none",
     "held_contact_limit", "collect_reminder"),  # 9 + 2 contacts > 10 in 30 days
    ({"days_past_due": 12, "months_overdue_12m": 1, "collection_contacts_30d": 8}, LOW, "reminder", "sent",
     "collect_reminder"),  # 8 + 2 = 10: within the limit
]


def test_the_ladder_treats_by_bucket_risk_and_hardship(spec):
    frame = _frame([c[0] for c in CASES])
    got = collections.treatments(frame, np.array([c[1] for c in CASES]), spec.policy)
    col = spec.policy.collections
    for i, (row, _, treatment, status, first) in enumerate(CASES):
        r = got.iloc[i]
        assert (r["treatment"], r["treatment_status"]) == (treatment, status), (i, row)
        assert (r["treatment_rules"][0] if r["treatment_rules"] else None) == first, (i, r["treatment_rules"])
        if first and first.startswith("collect_"):  # every treatment chosen was checked, and says so
            assert r["treatment_rules"][-2:] == ["check:contact_frequency", "check:customer_only"]
            reason = getattr(col, first[8:]).reason
            assert (r["treatment_reasons_en"][0], r["treatment_reasons_zh"][0]) == (reason.en, reason.zh)
        if status == "pending_approval":
            assert "pending_approval" in r["treatment_rules"]
            assert col.reasons["pending_approval"].zh in r["treatment_reasons_zh"]
    held = got.iloc[11]
    assert held["treatment_rules"][:2] == ["collect_reminder", "contact_limit_reached"]
    assert held["treatment_reasons_en"][1] == col.reasons["contact_limit_reached"].en


def test_a_treatment_over_the_contact_limit_steps_down_the_ladder(spec):
    col = spec.policy.collections
    pol = spec.policy.model_copy(update={"collections": col.model_copy(
        update={"call": col.call.model_copy(update={"contacts": 4})})})
    frame = _frame([{"days_past_due": 40, "months_overdue_12m": 2, "collection_contacts_30d": 7}])
    r = collections.treatments(frame, np.array([LOW]), pol).iloc[0]
    assert (r["treatment"], r["treatment_status"]) == ("reminder", "sent")  # 7 + 4 > 10, 7 + 2 fits
    assert r["treatment_rules"][:3] == ["collect_call", "contact_limit_reached", "collect_reminder"]


@pytest.mark.parametrize("where, key, value, message", [
    (["call"], "contacts_whom", ["customer", "family"], r"call\.contacts_whom: \['family'\] \(rule: no contact with third parties"),
    (["agency"], "requires_approval", False, r"agency\.requires_approval: must be true \(rule: a third-party or legal step"),
    (["reminder"], "early_tiers", ["urgent"], r"reminder\.early_tiers: \['urgent'\] are not tiers"),
])
def test_the_spec_refuses_third_party_contact_and_unapproved_steps(tmp_path, repo_root, where, key, value, message):
    raw = yaml.safe_load((repo_root / "pipelines" / "behaviour.yaml").read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    node = raw["policy"]["collections"]
    for step in where:
        node = node[step]
    node[key] = value
    path = tmp_path / "behaviour.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def _row(spec, treatment: str, status: str, dpd: float) -> pd.Series:
    rules = ["collect_" + treatment] + (["pending_approval"] if status == "pending_approval" else [])
    col = spec.policy.collections
    reasons = [getattr(col, treatment).reason] + ([col.reasons["pending_approval"]] if len(rules) > 1 else [])
    return pd.Series({"decision_id": "ab" * 16, "decision_time": "2026-11-01T00:00:00Z", "treatment": treatment,
                      "treatment_status": status, "treatment_rules": rules + list(collections.CHECKS),
                      "treatment_reasons_en": [r.en for r in reasons], "treatment_reasons_zh": [r.zh for r in reasons],
                      "input__days_past_due": dpd})


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_treatment_notice_names_the_lender_the_plan_and_never_a_third_party_or_a_column(spec, lang):
    n = wording.treatment_notice(_row(spec, "hardship_plan", "sent", 21.0), spec, lang, "2026-11-02T00:00:00Z")
    text = " ".join([n["title"], *n["paragraphs"], *n["reasons"], *[t for _, t in n["rights"]]])
    assert getattr(spec.lender.name, lang) in n["paragraphs"][0]
    assert ("3 monthly instalments" if lang == "en" else "分3个月偿还") in text
    assert ("21 days overdue" if lang == "en" else "逾期21天") in text
    assert ("never contact your family" if lang == "en" else "绝不会就此联系您的家人") in text
    assert names_leaked(text, spec, lang) == []
    assert n["reasons"] == [getattr(spec.policy.collections.hardship_plan.reason, lang)]
    # each treatment that reaches the customer has its own wording in both languages
    seen = set()
    for t in ("reminder", "call", "hardship_plan"):
        m = wording.treatment_notice(_row(spec, t, "sent", 40.0), spec, lang, "2026-11-02T00:00:00Z")
        seen.add(m["paragraphs"][0])
        assert names_leaked(" ".join(m["paragraphs"]), spec, lang) == []
    assert len(seen) == 3


def test_an_agency_or_legal_step_has_no_notice_until_a_person_approves_it(spec):
    for t in ("agency", "legal"):
        row = _row(spec, t, "pending_approval", 155.0)
        assert wording.treatment_notice(row, spec, "en", "2026-11-02T00:00:00Z") is None
        n = wording.treatment_notice(row, spec, "en", "2026-11-02T00:00:00Z", approved=True)
        assert "After a review by a member of our staff" in n["paragraphs"][0]
        assert all("approves" not in r for r in n["reasons"])  # the pending-approval rule is not a reason to the customer
    held = _row(spec, "reminder", "held_contact_limit", 10.0)
    assert wording.treatment_notice(held, spec, "en", "2026-11-02T00:00:00Z") is None
