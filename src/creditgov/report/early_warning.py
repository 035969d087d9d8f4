"""The early warning's lift and the book's pricing, measured on a simulated book (issue 15, points 2 and 4).

Each month of the range is decided again with the behaviour model and the spec's on-book policy
(creditgov.decision.policy.apply_policy, the decision path's policy step), with the previous month's PD as the
previous review. The early warning watches the accounts it may warn: current (0 days past due), neither
suspended, restored nor sent to review this month. Its outcome is the book's own future: an account is "bad"
when it is `lift_days_past_due`+ days past due at any of the next `lift_horizon_months` month-end snapshots, or
has left the book (charge-off is the only way out). Measured for the months whose horizon lies in the range:

* warned share: warned accounts over watched accounts;
* hit rate: the share of warned accounts that went bad; base rate: the share of all watched accounts that did;
* lift: hit rate over base rate (1 means the warning knows nothing), also per signal and per treatment.

Pricing: the accounts, mean annual rate and rate rises and falls by tier, per month and over the range.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.data import simulate
from creditgov.decision.policy import WATCH_ACTIONS, apply_policy, warning_names
from creditgov.errors import SpecError
from creditgov.model.credit_model import CreditModel
from creditgov.spec import PipelineSpec

NOT_WATCHED = ("suspend", "restore", "review")


@dataclass(frozen=True)
class EarlyWarningFigures:
    horizon: int
    days_past_due: int
    by_month: pd.DataFrame    # month_index, watched, warned, freeze, bad, warned_bad, base_rate, hit_rate, lift
    signals: pd.DataFrame     # signal, warned, warned_bad, hit_rate, lift (pooled over the measured months)
    pooled: dict              # watched, warned, warned_share, base_rate, hit_rate, lift, freeze_*, reminder_*
    pricing: pd.DataFrame     # month_index, tier, accounts, mean_apr, rises, falls
    pricing_pooled: pd.DataFrame  # tier, apr (table), accounts, mean_apr, rises, falls
    cap: float | None


def _decide_month(snap: pd.DataFrame, model: CreditModel, spec: PipelineSpec, prev: pd.Series | None):
    frame = snap.copy()
    frame[spec.policy.on_book.fields.previous_pd] = (frame["account_id"].map(prev).to_numpy(dtype="float64")
                                                     if prev is not None else np.nan)
    p = model.predict_pd(frame)
    return apply_policy(frame, p, spec.policy), pd.Series(p, index=frame["account_id"].to_numpy())


def figures(directory: str | Path, months: list[int], spec: PipelineSpec, model: CreditModel) -> EarlyWarningFigures:
    """The early warning's lift and the pricing by tier over `months` of the book (see the module doc)."""
    pol = spec.policy
    ew = pol.on_book.early_warning if pol is not None and pol.on_book is not None else None
    if ew is None:
        raise SpecError(f"spec '{spec.name}': policy.on_book.early_warning is not set: no early warning to measure")
    directory = Path(directory)
    h, dpd_bad = ew.lift_horizon_months, ew.lift_days_past_due
    names = warning_names(pol)
    snaps, decided, prev = {}, {}, None
    first = months[0] - 1 if (simulate.partition_dir(directory, months[0] - 2) / "snapshot.parquet").exists() else None
    for m in ([first] if first else []) + list(months):  # the month before the range gives month 1's previous PD
        snap = simulate.load_months(directory, [m], labelled=False)
        d, prev = _decide_month(snap, model, spec, prev)
        if m in months:
            snaps[m] = snap[["account_id", "days_past_due"]]
            decided[m] = d
    rows, sig_rows = [], []
    for m in months:
        if any(m + k not in snaps for k in range(1, h + 1)):
            continue  # its horizon is not in the range yet
        d, snap = decided[m], snaps[m]
        watched = (snap["days_past_due"].to_numpy() == 0) & ~d["action"].isin(NOT_WATCHED).to_numpy()
        later = pd.concat([snaps[m + k].assign(k=k) for k in range(1, h + 1)])
        bad_ids = set(later.loc[later["days_past_due"] >= dpd_bad, "account_id"])
        counts = later["account_id"].value_counts()
        gone = set(snap["account_id"]) - set(counts[counts == h].index)  # left the book: charged off
        bad = snap["account_id"].isin(bad_ids | gone).to_numpy()
        warned = d["watchlist"].to_numpy(dtype=bool) & watched
        freeze = warned & (d["action"] == "watch_freeze").to_numpy()
        remind = warned & (d["action"] == "watch_reminder").to_numpy()
        rows.append({"month_index": m, "watched": int(watched.sum()), "warned": int(warned.sum()),
                     "freeze": int(freeze.sum()), "reminder": int(remind.sum()),
                     "bad": int((bad & watched).sum()), "warned_bad": int((bad & warned).sum()),
                     "freeze_bad": int((bad & freeze).sum()), "reminder_bad": int((bad & remind).sum())})
        sig = d["warning_signals"]
        for name in names:
            has = watched & sig.map(lambda s, n=name: n in s).to_numpy()
            sig_rows.append({"signal": name, "warned": int(has.sum()), "warned_bad": int((bad & has).sum())})
    by_month = pd.DataFrame(rows, columns=["month_index", "watched", "warned", "freeze", "reminder", "bad",
                                           "warned_bad", "freeze_bad", "reminder_bad"])
    rate = lambda a, b: float(a) / float(b) if b else float("nan")  # noqa: E731
    by_month["warned_share"] = [rate(w, n) for w, n in zip(by_month["warned"], by_month["watched"])]
    by_month["base_rate"] = [rate(b, n) for b, n in zip(by_month["bad"], by_month["watched"])]
    by_month["hit_rate"] = [rate(b, n) for b, n in zip(by_month["warned_bad"], by_month["warned"])]
    by_month["lift"] = by_month["hit_rate"] / by_month["base_rate"]
    tot = by_month.sum(numeric_only=True)
    base = rate(tot["bad"], tot["watched"]) if len(by_month) else float("nan")
    pooled = {"months": [int(m) for m in by_month["month_index"]], "watched": int(tot.get("watched", 0)),
              "warned": int(tot.get("warned", 0)), "warned_share": rate(tot.get("warned", 0), tot.get("watched", 0)),
              "base_rate": base}
    for key, n, b in (("", "warned", "warned_bad"), ("freeze_", "freeze", "freeze_bad"),
                      ("reminder_", "reminder", "reminder_bad")):
        pooled[key + "accounts"] = int(tot.get(n, 0))
        pooled[key + "hit_rate"] = rate(tot.get(b, 0), tot.get(n, 0))
        pooled[key + "lift"] = pooled[key + "hit_rate"] / base if base else float("nan")
    signals = (pd.DataFrame(sig_rows, columns=["signal", "warned", "warned_bad"]).groupby("signal", sort=False)
               .sum().reset_index())
    signals["share_of_watched"] = signals["warned"] / max(pooled["watched"], 1)
    signals["hit_rate"] = [rate(b, n) for b, n in zip(signals["warned_bad"], signals["warned"])]
    signals["lift"] = signals["hit_rate"] / base if base else float("nan")
    said = {**{x.name: x.reason.en for x in ew.signals}, "pd_rise": ew.pd_rise_reason.en}
    signals["label"] = [said.get(x, x) for x in signals["signal"]]  # what a reader sees: the signal's own reason
    pricing, pricing_pooled = _pricing(decided, spec)
    return EarlyWarningFigures(h, dpd_bad, by_month, signals, pooled, pricing, pricing_pooled,
                               pol.pricing.legal_cap_apr if pol.pricing else None)


def _pricing(decided: dict[int, pd.DataFrame], spec: PipelineSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    pr = spec.policy.pricing
    cols = ["month_index", "tier", "accounts", "mean_apr", "rises", "falls"]
    if pr is None:
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=["tier", "apr", *cols[2:]])
    rows = []
    for m, d in decided.items():
        priced = d[d["apr"].notna()]
        for t in (t.name for t in spec.policy.tiers):
            g = priced[priced["tier"] == t]
            rows.append({"month_index": m, "tier": t, "accounts": len(g), "mean_apr": float(g["apr"].mean()) if len(g)
                         else float("nan"), "rises": int((g["apr"] > g["previous_apr"]).sum()),
                         "falls": int((g["apr"] < g["previous_apr"]).sum())})
    by_month = pd.DataFrame(rows, columns=cols)
    by_month["apr_sum"] = by_month["mean_apr"].fillna(0) * by_month["accounts"]
    pooled = by_month.groupby("tier", sort=False)[["accounts", "apr_sum", "rises", "falls"]].sum().reset_index()
    pooled["mean_apr"] = pooled["apr_sum"] / pooled["accounts"].replace(0, np.nan)
    pooled.insert(1, "apr", [pr.apr_of(t) for t in pooled["tier"]])
    return by_month.drop(columns="apr_sum"), pooled.drop(columns="apr_sum")[["tier", "apr", "accounts", "mean_apr",
                                                                              "rises", "falls"]]


def write_csv(figs: EarlyWarningFigures, directory: Path) -> None:
    figs.by_month.to_csv(directory / "early_warning_by_month.csv", index=False, float_format="%.6f")
    figs.signals.to_csv(directory / "early_warning_signals.csv", index=False, float_format="%.6f")
    figs.pricing.to_csv(directory / "pricing_by_month.csv", index=False, float_format="%.6f")
    figs.pricing_pooled.to_csv(directory / "pricing_by_tier.csv", index=False, float_format="%.6f")


def context(figs: EarlyWarningFigures | None, note: str = "") -> dict:
    """What the risk report's early-warning and pricing section shows."""
    if figs is None:
        return {"early_warning": None, "early_warning_note": note}
    return {"early_warning": {"horizon": figs.horizon, "dpd": figs.days_past_due, "pooled": figs.pooled,
                              "by_month": figs.by_month.to_dict("records"), "signals": figs.signals.to_dict("records"),
                              "pricing": figs.pricing_pooled.to_dict("records"), "cap": figs.cap,
                              "treatments": WATCH_ACTIONS},
            "early_warning_note": note}
