"""The decision policy: probability of default + input columns -> tier, action, limit, rules.

Pure and vectorised: `apply_policy` takes the raw batch and the PDs and returns a new
frame, one row per input row. Application decisions (approve / decline / review with
an initial limit) apply to every batch; when the batch carries the on-book account
columns named in `policy.on_book.fields`, the account-review decisions apply instead
(suspend / restore / cut / raise / keep / review), with, when the spec sets them, the early
warning's watchlist (watch_reminder / watch_freeze, from pre-delinquency signals of accounts still
current: `early_warning`) and risk-based pricing (the tier's annual rate under a legal cap, repriced at
a limit review; a rise is the adverse action reprice: `reprice`). Rules that decide an action are
listed first in `rules_triggered` and name themselves in `decided_by`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.core.algorithms import isin as _isin  # what Series.isin applies to its array

from creditgov.data.inputs import column_values, frame_of_columns, numbers_of
from creditgov.spec import Condition, Policy

# watch_reminder: on the watchlist, a reminder is sent (not adverse); watch_freeze: on the watchlist, new purchases
# are frozen until the next review (adverse); reprice: the annual rate rises with the risk tier (adverse)
ADVERSE_ACTIONS = ("decline", "cut", "suspend", "watch_freeze", "reprice")
WATCH_ACTIONS = ("watch_reminder", "watch_freeze")
WARN_PREFIX = "warn_"
REPRICE_RULE = "reprice_tier_rise"


def tier_index(pd_values: np.ndarray, policy: Policy) -> np.ndarray:
    bounds = np.array([t.max_pd for t in policy.tiers])
    idx = np.searchsorted(bounds, pd_values, side="left")  # pd <= max_pd belongs to that tier
    return np.minimum(idx, len(bounds) - 1)


def tier_of(pd_values: np.ndarray, policy: Policy) -> np.ndarray:
    names = np.array([t.name for t in policy.tiers], dtype=object)
    return names[tier_index(pd_values, policy)]


def _lists_by_key(key: np.ndarray, pattern) -> list[list[str]]:
    """One new list per row: pattern(k) for the row's key k, computed once per distinct key."""
    uniq, inv = np.unique(key, return_inverse=True)
    lut = [pattern(int(k)) for k in uniq]
    return [list(lut[i]) for i in inv.ravel().tolist()]


def condition_mask(frame: pd.DataFrame, cond: Condition) -> np.ndarray:
    # the Series' values (its numpy or extension array), without the Series: Series.isna is pd.isna of them,
    # Series.isin pandas' algorithms.isin of them; a comparison reads an extension array's to_numpy, as written
    values = column_values(frame, cond.feature)
    if cond.op == "missing":
        return np.asarray(pd.isna(values), dtype=bool)
    if cond.op == "in":
        return np.asarray(_isin(values, cond.value), dtype=bool)
    compared = values if isinstance(values, np.ndarray) else frame[cond.feature].to_numpy()
    with np.errstate(invalid="ignore"):
        out = _OPS[cond.op](compared, cond.value)
    return np.asarray(out, dtype=bool) & ~np.asarray(pd.isna(values), dtype=bool)


_OPS = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
        "ge": np.greater_equal}


def _round_limit(raw: np.ndarray, policy: Policy) -> np.ndarray:
    lim = policy.limit
    rounded = np.floor(raw / lim.round_to) * lim.round_to  # round down: never more credit than computed
    return np.clip(rounded, lim.minimum, lim.maximum)


def on_book_applies(frame: pd.DataFrame, policy: Policy) -> bool:
    ob = policy.on_book
    return ob is not None and all(c in frame.columns for c in ob.fields.columns())


def apply_policy(frame: pd.DataFrame, pd_values: np.ndarray, policy: Policy, *,
                 rules_triggered: bool = True) -> pd.DataFrame:
    """The policy's decisions; `rules_triggered=False` leaves that column empty (None), for callers
    that need only the actions (the counterfactual search)."""
    pd_values = np.asarray(pd_values, dtype="float64")
    if on_book_applies(frame, policy):
        return _on_book(frame, pd_values, policy, rules_triggered)
    return frame_of_columns(_application(frame, pd_values, policy, rules_triggered), len(frame), frame.index)


def policy_actions(frame: pd.DataFrame, pd_values: np.ndarray, policy: Policy) -> np.ndarray:
    """apply_policy(frame, pd_values, policy, rules_triggered=False)["action"].to_numpy(): the same computation,
    without the frame of the other columns (the counterfactual search asks for actions only, many times a row)."""
    pd_values = np.asarray(pd_values, dtype="float64")
    if on_book_applies(frame, policy):
        return _on_book(frame, pd_values, policy, False)["action"].to_numpy()
    return _application(frame, pd_values, policy, False)["action"]


def _application(frame: pd.DataFrame, p: np.ndarray, policy: Policy, rules: bool = True) -> dict:
    """The application decisions' columns (apply_policy's frame, column by column)."""
    n = len(p)
    tier = tier_of(p, policy)
    lo, hi = policy.review_band
    model_decline = p >= policy.decline_at_pd
    model_review = (p >= lo) & (p < hi) & ~model_decline
    action = np.where(model_decline, "decline", np.where(model_review, "review", "approve")).astype(object)
    decided_by = np.full(n, "model", dtype=object)

    # rules_triggered, vectorised: each row's list depends only on which rules hit, the model's band and the
    # rule that decided, so it is built once per distinct pattern (a small number) and copied per row
    n_rules = len(policy.rules)
    hits = np.zeros(n, dtype=np.int64)
    decider = np.full(n, -1, dtype=np.int64)
    for r, rule in enumerate(policy.rules):
        hit = condition_mask(frame, rule.when)
        hits |= hit.astype(np.int64) << r
        if rule.action == "decline":
            take = hit & (action != "decline")
        else:  # a review rule sends an automatic approval to a person; a model decline stays a decline
            take = hit & (action == "approve")
        action[take] = rule.action
        decided_by[take] = "rule:" + rule.name
        decider[take] = r
    band = np.where(model_decline, 1, np.where(model_review, 2, 0))
    key = (hits * 3 + band) * (n_rules + 1) + (decider + 1)

    def pattern(k: int) -> tuple:
        k, d = divmod(k, n_rules + 1)
        h, b = divmod(k, 3)
        names = [rule.name for r, rule in enumerate(policy.rules) if (h >> r) & 1]
        names += [(), ("pd_at_or_above_decline",), ("pd_in_review_band",)][b]
        if d:  # the rule that decided comes first
            first = policy.rules[d - 1].name
            names = [first] + [x for x in names if x != first]
        return tuple(names)

    triggered = _lists_by_key(key, pattern) if rules else None

    capacity = numbers_of(frame, policy.limit.capacity_feature)
    multiple = np.array([policy.limit.multiple[t.name] for t in policy.tiers])[tier_index(p, policy)]
    proposed = np.where(np.isnan(capacity), policy.limit.minimum, _round_limit(np.nan_to_num(capacity) * multiple, policy))
    limit = np.where(action == "decline", 0.0, proposed)
    out = {
        "tier": tier, "action": action, "decided_by": decided_by, "limit": limit,
        "previous_limit": np.full(n, np.nan), "rules_triggered": triggered,
        "review_queue": action == "review",
    }
    if policy.pricing is not None:  # the rate offered with the line; none for a decline
        out["apr"] = np.where(action == "decline", np.nan, tier_apr(p, policy))
        out["previous_apr"] = np.full(n, np.nan)
    return out


def _truthy(col: pd.Series) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy()
    text = col.astype(str).str.strip().str.lower()
    return text.isin(["1", "true", "yes", "y", "1.0"]).to_numpy()


def _on_book(frame: pd.DataFrame, p: np.ndarray, policy: Policy, rules: bool = True) -> pd.DataFrame:
    ob, f = policy.on_book, policy.on_book.fields
    n = len(p)
    num = lambda c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")  # noqa: E731
    current, dpd, cum = num(f.current_limit), num(f.days_past_due), num(f.cumulative_overdue_days)
    prev_pd, clean = num(f.previous_pd), num(f.clean_months)
    fraud, suspended = _truthy(frame[f.fraud_signal]), _truthy(frame[f.suspended])
    tier = tier_of(p, policy)
    lo, hi = policy.review_band

    triggers = {  # in order of precedence: the first that holds decides
        "suspend_fraud": fraud,
        "suspend_overdue": dpd >= ob.suspend_days_past_due,
        "suspend_cumulative_overdue": cum >= ob.suspend_cumulative_overdue_days,
        "suspend_risk_rise": (p >= prev_pd * ob.suspend_pd_rise_factor) & (p >= ob.suspend_pd_rise_min_pd)
                             & ~np.isnan(prev_pd),
    }
    any_suspend = np.zeros(n, dtype=bool)
    for m in triggers.values():
        any_suspend |= m
    restore = suspended & ~any_suspend & (clean >= ob.restore_clean_months)
    stay = suspended & ~any_suspend & ~restore
    review = ~suspended & ~any_suspend & (p >= lo) & (p < hi)
    # the limit is reviewed every limit_review_every_months since it last changed; between reviews it is kept
    settled = np.ones(n, dtype=bool)
    if ob.limit_review_every_months is not None:
        since, every = num(f.months_since_limit_change), ob.limit_review_every_months
        settled = (since >= every) & (np.mod(since, every) == 0)
    cut = ~suspended & ~any_suspend & ~review & (tier == ob.cut_tier) & settled
    raise_ = (~suspended & ~any_suspend & ~review & (tier != ob.cut_tier) & settled & (p <= ob.raise_max_pd)
              & (clean >= ob.raise_clean_months)
              & (_round_limit(np.nan_to_num(current) * ob.raise_factor, policy) > current))  # at the maximum: keep
    # early warning and pricing (issue 15): accounts neither suspended, restored nor in review
    open_ = ~suspended & ~any_suspend & ~review
    warn = early_warning(frame, p, policy, open_ & (dpd == 0))
    watched = warn.any(axis=1)
    freeze = watched & ~cut & (warn.sum(axis=1) >= ob.early_warning.freeze_min_signals) if watched.any() else watched
    remind = watched & ~cut & ~freeze
    raise_ &= ~watched  # a warned account is not raised
    apr, prev_apr = reprice(frame, p, policy, settled)
    reprice_up = open_ & ~cut & ~freeze & (apr > prev_apr)
    remind &= ~reprice_up
    if policy.pricing is not None:  # a suspended line keeps its rate; otherwise the tier's rate at a review
        apr = np.where(open_, apr, prev_apr)

    action = np.full(n, "keep", dtype=object)
    decided_by = np.full(n, "model", dtype=object)
    first = np.full(n, "", dtype=object)
    for name, m in reversed(list(triggers.items())):  # precedence: the earliest trigger that holds names it
        first[m] = "rule:" + name
    action[any_suspend] = "suspend"
    decided_by[any_suspend] = first[any_suspend]
    action[restore], decided_by[restore] = "restore", "rule:restore_after_clean_repayment"
    action[stay], decided_by[stay] = "suspend", "rule:remain_suspended"
    action[review] = "review"
    action[cut] = "cut"
    action[raise_], decided_by[raise_] = "raise", "rule:raise_after_clean_repayment"
    first_warn = np.array([f"rule:{WARN_PREFIX}{n}" for n in warning_names(policy)] + [""], dtype=object)[
        np.argmax(warn, axis=1) if warn.shape[1] else np.zeros(n, dtype=np.int64)]
    action[remind], decided_by[remind] = "watch_reminder", first_warn[remind]
    action[freeze], decided_by[freeze] = "watch_freeze", first_warn[freeze]
    action[reprice_up], decided_by[reprice_up] = "reprice", "rule:" + REPRICE_RULE

    # rules_triggered: the triggers that hold (in order), then the state rule; built once per pattern
    names = list(triggers) + [WARN_PREFIX + w for w in warning_names(policy)]
    bits = np.zeros(n, dtype=np.int64)
    for t, m in enumerate([*triggers.values(), *warn.T]):
        bits |= np.asarray(m, dtype=np.int64) << t
    states = ("restore_after_clean_repayment", "remain_suspended", "pd_in_review_band", f"tier_{ob.cut_tier}",
              "raise_after_clean_repayment", REPRICE_RULE)
    state = np.zeros(n, dtype=np.int64)
    for s_i, m in enumerate((restore, stay, review, cut, raise_, reprice_up), start=1):  # mutually exclusive
        state[m] = s_i
    key = bits * (len(states) + 1) + state

    def pattern(k: int) -> tuple:
        b, st = divmod(k, len(states) + 1)
        out = [nm for t, nm in enumerate(names) if (b >> t) & 1]
        return tuple(out + ([states[st - 1]] if st else []))

    triggered = _lists_by_key(key, pattern) if rules else None

    limit = current.copy()
    limit[cut] = np.minimum(current[cut], _round_limit(current[cut] * ob.cut_factor, policy))  # a cut never raises
    limit[raise_] = np.maximum(current[raise_], _round_limit(current[raise_] * ob.raise_factor, policy))
    limit[action == "suspend"] = 0.0
    out = pd.DataFrame({
        "tier": tier, "action": action, "decided_by": decided_by, "limit": limit, "previous_limit": current,
        "rules_triggered": triggered, "review_queue": action == "review",
    }, index=frame.index)
    if ob.early_warning is not None:
        out["watchlist"] = watched
        out["warning_signals"] = _signal_lists(warn, policy) if rules else None
    if policy.pricing is not None:
        out["apr"], out["previous_apr"] = apr, prev_apr
    return out


# ------------------------------------------------------------------ early warning (issue 15, point 2)


def warning_names(policy: Policy) -> list[str]:
    """The early warning's signal names in order (the catalogue signals, then pd_rise); none without one."""
    ew = policy.on_book.early_warning if policy.on_book else None
    return [] if ew is None else [s.name for s in ew.signals] + ["pd_rise"]


def early_warning(frame: pd.DataFrame, p: np.ndarray, policy: Policy, eligible: np.ndarray) -> np.ndarray:
    """rows x signals (warning_names order): which pre-delinquency signals hold for each eligible row (an account
    still current, neither suspended nor in review). The PD-rise signal: PD at least pd_rise_factor times the
    previous review's PD and at least pd_rise_min_pd (the suspension trigger, higher, is checked before)."""
    names = warning_names(policy)
    out = np.zeros((len(p), len(names)), dtype=bool)
    if not names:
        return out
    ew = policy.on_book.early_warning
    for j, sig in enumerate(ew.signals):
        if any(c.feature not in frame.columns for c in sig.when):
            continue  # a frame without the signal's columns (a policy-only caller; validated batches have them)
        m = eligible.copy()
        for cond in sig.when:
            m &= condition_mask(frame, cond)
        out[:, j] = m
    prev = pd.to_numeric(frame[policy.on_book.fields.previous_pd], errors="coerce").to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        out[:, -1] = eligible & (p >= prev * ew.pd_rise_factor) & (p >= ew.pd_rise_min_pd) & ~np.isnan(prev)
    return out


def _signal_lists(warn: np.ndarray, policy: Policy) -> list[list[str]]:
    names = warning_names(policy)
    key = np.zeros(len(warn), dtype=np.int64)
    for j in range(warn.shape[1]):
        key |= warn[:, j].astype(np.int64) << j
    return _lists_by_key(key, lambda k: tuple(nm for j, nm in enumerate(names) if (k >> j) & 1))


# ------------------------------------------------------------------ risk-based pricing (issue 15, point 4)


def tier_apr(p: np.ndarray, policy: Policy) -> np.ndarray:
    """The pricing table's annual rate of each row's tier, never above the legal cap; NaN without pricing."""
    pr = policy.pricing
    if pr is None:
        return np.full(len(p), np.nan)
    rates = np.array([min(pr.apr_of(t.name), pr.legal_cap_apr) for t in policy.tiers])
    return rates[tier_index(p, policy)]


def reprice(frame: pd.DataFrame, p: np.ndarray, policy: Policy, at_review: np.ndarray):
    """(new rate, previous rate) of accounts on book. The previous rate is the account's own (fields.current_apr)
    or else the table's rate of its tier at the previous review (previous PD); the rate changes to its tier's
    at a limit review, or when there is no previous rate. NaN throughout without pricing."""
    pr, n = policy.pricing, len(p)
    if pr is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    f = policy.on_book.fields
    if f.current_apr is not None and f.current_apr in frame.columns:
        prev = pd.to_numeric(frame[f.current_apr], errors="coerce").to_numpy(dtype="float64")
    else:
        prev_pd = pd.to_numeric(frame[f.previous_pd], errors="coerce").to_numpy(dtype="float64")
        prev = np.where(np.isnan(prev_pd), np.nan, tier_apr(np.nan_to_num(prev_pd), policy))
    new = tier_apr(p, policy)
    apr = np.where(at_review | np.isnan(prev), new, prev)
    return np.minimum(apr, pr.legal_cap_apr), prev


def rule_reasons(policy: Policy) -> dict[str, dict]:
    """Reason statements of every named rule (en, zh)."""
    out = {r.name: r.reason.model_dump() for r in policy.rules}
    if policy.on_book:
        out.update({k: v.model_dump() for k, v in policy.on_book.reasons.items()})
        ew = policy.on_book.early_warning
        if ew is not None:
            out.update({WARN_PREFIX + s.name: s.reason.model_dump() for s in ew.signals})
            out[WARN_PREFIX + "pd_rise"] = ew.pd_rise_reason.model_dump()
    if policy.pricing is not None:
        out[REPRICE_RULE] = policy.pricing.rise_reason.model_dump()
    return out


def rule_features(policy: Policy) -> dict[str, tuple[str, ...]]:
    """The input columns behind each named rule: a rule that decided is the one reason for its cause, so the
    features it reads are not given again as reasons of their own (one line per cause)."""
    out = {r.name: (r.when.feature,) for r in policy.rules}
    ob = policy.on_book
    if ob is not None:
        f = ob.fields
        out.update({"suspend_fraud": (f.fraud_signal,), "suspend_overdue": (f.days_past_due,),
                    "suspend_cumulative_overdue": (f.cumulative_overdue_days,),
                    "suspend_risk_rise": (f.previous_pd,),
                    "remain_suspended": (f.suspended, f.clean_months),
                    "restore_after_clean_repayment": (f.suspended, f.clean_months),
                    "raise_after_clean_repayment": (f.clean_months,)})
        if ob.early_warning is not None:
            out.update({WARN_PREFIX + s.name: tuple(dict.fromkeys(c.feature for c in s.when))
                        for s in ob.early_warning.signals})
            out[WARN_PREFIX + "pd_rise"] = (f.previous_pd,)
    return out


def favourable_downward_closed(policy: Policy, on_book: bool) -> bool:
    """True when, all else equal, a lower PD can never turn a favourable outcome into an adverse one.

    Application decisions approve below a PD threshold unless the review band sits below the decline
    threshold with room above it; on-book decisions keep or raise below the cut tier unless the review
    band leaves a gap under it, or the cut tier is not the last. The counterfactual search relies on
    this (with the model's monotone constraints) to bisect instead of scanning a grid.
    """
    lo, hi = policy.review_band
    band_empty = hi <= lo
    ob = policy.on_book
    if not on_book or ob is None:  # the application decisions
        return band_empty or hi >= policy.decline_at_pd or lo >= policy.decline_at_pd
    names = [t.name for t in policy.tiers]
    idx = names.index(ob.cut_tier)
    if idx != len(names) - 1:
        return False
    t_prev = policy.tiers[idx - 1].max_pd if idx > 0 else 0.0
    return band_empty or hi > t_prev
