"""The collections ladder: one treatment per delinquent account at each review (spec: policy.collections).

Pure and vectorised, like the policy: `treatments(frame, pd, policy)` -> one row per input row with

* `treatment`: none, reminder, call, hardship_plan, agency (a third-party collection agency acting for the
  lender) or legal;
* `treatment_status`: "" (no treatment), `sent`, `pending_approval` (the agency and legal steps: carried out
  only once a person approves it, recorded with `creditgov.decision.oversight.approve_treatment`) or
  `held_contact_limit` (no treatment fits the contact limits this month);
* `treatment_rules`: the rule that chose the treatment (`collect_<treatment>`, or `on_hardship_plan`), the
  rules that changed it (`contact_limit_reached`, `pending_approval`), then the checks made on every treatment,
  `check:contact_frequency` and `check:customer_only`;
* `treatment_reasons_en` / `treatment_reasons_zh`: the catalogue's statements of those rules (no column names).

The ladder, first match wins: no treatment for a current account; none while a hardship plan is in force (no
other collection contact meanwhile); a hardship plan for an account at most `hardship_plan.max_days_past_due`
days past due that declared a capacity shock and missed no more than `max_prior_missed_months` payments in the
12 months before this episode; otherwise the most intense step whose `min_days_past_due` is reached (or whose
`early_tiers` holds the account's risk tier, from 1 day past due). Then the checks: the treatment's contacts
added to those of the last 30 days must stay within `contact_limits.max_contacts_30_days` (else it steps down
the ladder until one fits, or is held), its calls within `max_calls_7_days` (the spec refuses a step above it),
and it contacts the customer only (the spec refuses any other party: no family, friends or employer).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from creditgov.decision.policy import tier_of
from creditgov.spec import COLLECTION_STEPS, Policy

TREATMENTS = ("none", *COLLECTION_STEPS[:2], "hardship_plan", *COLLECTION_STEPS[2:])
NEEDS_APPROVAL_STATUS = "pending_approval"
CHECKS = ("check:contact_frequency", "check:customer_only")


def collections_apply(frame: pd.DataFrame, policy: Policy) -> bool:
    col = policy.collections
    return col is not None and all(c in frame.columns for c in col.fields.columns())


def _flag(col: pd.Series) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy()
    return col.astype(str).str.strip().str.lower().isin(["1", "true", "yes", "y", "1.0"]).to_numpy()


def treatments(frame: pd.DataFrame, pd_values: np.ndarray, policy: Policy) -> pd.DataFrame:
    """The treatment of each row (module documentation); `frame` carries the spec's collections fields."""
    col, f = policy.collections, policy.collections.fields
    n = len(frame)
    num = lambda c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")  # noqa: E731
    dpd = np.nan_to_num(num(f.days_past_due))
    missed = np.nan_to_num(num(f.months_overdue_12m))
    on_plan = np.nan_to_num(num(f.hardship_plan_months_left)) > 0
    contacts = np.nan_to_num(num(f.contacts_30d))
    declared = _flag(frame[f.hardship_declared])
    tier = tier_of(np.asarray(pd_values, dtype="float64"), policy)
    late = dpd > 0

    # the ladder: the most intense step reached (steps ascend in min_days_past_due)
    step = np.full(n, -1, dtype=np.int64)
    for i, name in enumerate(COLLECTION_STEPS):
        s = getattr(col, name)
        reached = late & ((dpd >= s.min_days_past_due) | np.isin(tier, s.early_tiers))
        step[reached] = i
    episode = np.floor(dpd / 30) + 1  # missed months of the current episode
    hp = col.hardship_plan
    plan = late & ~on_plan & declared & (dpd <= hp.max_days_past_due) & (missed - episode <= hp.max_prior_missed_months)

    codes = ("none", *COLLECTION_STEPS, "hardship_plan")  # code k: step k - 1; the last, the plan
    chosen = np.where(plan, len(codes) - 1, step + 1)
    chosen[on_plan | ~late] = 0
    first = chosen.copy()
    # the contact-frequency check: step down the ladder until the treatment's contacts fit the 30-day limit
    planned = np.array([0] + [getattr(col, s).contacts for s in COLLECTION_STEPS] + [hp.contacts])
    limit = col.contact_limits.max_contacts_30_days
    for _ in range(len(codes)):
        over = (chosen > 0) & (contacts + planned[chosen] > limit)
        if not over.any():
            break
        chosen = np.where(over, np.where(chosen == len(codes) - 1, 0, chosen - 1), chosen)
    held = (first > 0) & (chosen == 0)
    approval = np.array([False] + [getattr(col, s).requires_approval for s in COLLECTION_STEPS] + [False])

    name_of = np.array(codes, dtype=object)
    treatment = name_of[chosen]
    status = np.where(chosen == 0, np.where(held, "held_contact_limit", ""),
                      np.where(approval[chosen], NEEDS_APPROVAL_STATUS, "sent")).astype(object)

    # rules and reasons: one list per (first choice, final choice, on plan) pattern
    key = (first * len(codes) + chosen) * 2 + (on_plan & late)
    reasons = {**{s: getattr(col, s).reason for s in COLLECTION_STEPS}, "hardship_plan": hp.reason,
               **col.reasons}

    def pattern(k: int) -> tuple[list, list, list]:
        k, plan_in_force = divmod(k, 2)
        a, b = divmod(k, len(codes))
        rules = []
        if plan_in_force:
            rules.append("on_hardship_plan")
        if a:
            rules.append("collect_" + codes[a])
        if a != b:
            rules.append("contact_limit_reached")
            if b:
                rules.append("collect_" + codes[b])
        if b and approval[b]:
            rules.append(NEEDS_APPROVAL_STATUS)
        named = [r[8:] if r.startswith("collect_") else r for r in rules]
        en = [reasons[r].en for r in named]
        zh = [reasons[r].zh for r in named]
        return rules + (list(CHECKS) if a else []), en, zh

    uniq, inv = np.unique(key, return_inverse=True)
    lut = [pattern(int(k)) for k in uniq]
    inv = inv.ravel().tolist()
    return pd.DataFrame({
        "treatment": treatment, "treatment_status": status,
        "treatment_rules": [list(lut[i][0]) for i in inv],
        "treatment_reasons_en": [list(lut[i][1]) for i in inv],
        "treatment_reasons_zh": [list(lut[i][2]) for i in inv],
    }, index=frame.index)
