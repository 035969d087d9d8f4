"""The policy replay's page and files (`creditgov replay`): a candidate policy against the current one, side by side.

reports/replay-<candidate version>-vs-<current version>-<months>/: index.html (self-contained: inline CSS and SVG),
replay_summary.csv (metric, current, candidate, difference), replay_months.csv (per policy and month: decisions
and the book's outcome), replay_actions.csv (per policy and month: decisions by action) and comparison.json,
the same comparison as attached to the candidate policy version (decision.replay.attach).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.atomic import build_dir
from creditgov.decision.replay import Replay, comparison_json
from creditgov.report import charts
from creditgov.report.pages import render, write_root_index, write_run_summary
from creditgov.spec import PipelineSpec, months_text

# summary metrics shown as a share (the rest as counts or amounts)
SHARES = {"approval rate", "mean 30+ DPD share", "30+ DPD share, last month", "net loss rate (annualised)"}
# a lower figure is better for the lender's losses / for the customer: how the difference column is read
LOSSES = {"mean 30+ DPD share", "30+ DPD share, last month", "charged-off accounts", "charged-off balance",
          "net loss", "net loss rate (annualised)"}


def _flat(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def policy_differences(a: PipelineSpec, b: PipelineSpec) -> list[tuple[str, str, str]]:
    """(key, current, candidate) of every policy setting that differs, keys as in the spec (policy.x.y)."""
    fa, fb = _flat(a.policy.model_dump(mode="json")), _flat(b.policy.model_dump(mode="json"))
    keys = sorted(set(fa) | set(fb))
    return [(f"policy.{k}", json.dumps(fa.get(k), ensure_ascii=False), json.dumps(fb.get(k), ensure_ascii=False))
            for k in keys if fa.get(k) != fb.get(k)]


def fmt_metric(metric: str, v) -> str:
    """A summary figure as shown: shares in %, counts and amounts with thousands separators."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if metric in SHARES:
        return f"{100 * v:.2f}%"
    return f"{v:,.0f}"


def _diff(metric: str, v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if metric in SHARES:
        return f"{100 * v:+.2f} pts"
    return f"{v:+,.0f}"


def write_replay(r: Replay, spec: PipelineSpec, candidate: PipelineSpec, attached: Path | None,
                 out_root: str | Path = "reports") -> Path:
    """The replay's files in <out_root>/replay-<candidate version>-vs-<current version>-<a>-<b>/; returns it."""
    cur, cand = r.current.policy, r.candidate.policy
    out = Path(out_root) / f"replay-{cand.version}-vs-{cur.version}-{r.months[0]:02d}-{r.months[-1]:02d}"
    months = pd.concat([r.current.months.assign(policy="current"), r.candidate.months.assign(policy="candidate")],
                       ignore_index=True)
    months.insert(0, "policy", months.pop("policy"))
    actions = pd.concat([r.current.actions.reset_index().assign(policy="current"),
                         r.candidate.actions.reset_index().assign(policy="candidate")], ignore_index=True)
    actions = actions.fillna(0)
    actions.insert(0, "policy", actions.pop("policy"))
    for c in actions.columns[2:]:
        actions[c] = actions[c].astype(int)

    labels = [str(m) for m in r.months]
    a, b = r.current.months, r.candidate.months
    name_a, name_b = f"current {cur.version}", f"candidate {cand.version}"
    chart = {
        "dpd": charts.lines(labels, {name_a: list(100 * a["share_30_plus"]), name_b: list(100 * b["share_30_plus"])},
                            "Accounts 30+ days past due, % of the active book", ylabel="%"),
        "loss": charts.lines(labels, {name_a: list(a["net_loss"] / 1e3), name_b: list(b["net_loss"] / 1e3)},
                             "Net loss a month (charged-off balances less recoveries)", ylabel="thousands"),
        "suspended": charts.lines(labels, {name_a: list(a["suspended_after_review"]),
                                           name_b: list(b["suspended_after_review"])},
                                  "Accounts suspended after the month's review", ylabel="accounts"),
        "credit": charts.lines(labels, {name_a: list(a["credit_open"] / 1e6), name_b: list(b["credit_open"] / 1e6)},
                               "Credit open to customers (limits of accounts not suspended)", ylabel="millions"),
    }
    summary = [{"metric": row["metric"], "current": fmt_metric(row["metric"], row["current"]),
                "candidate": fmt_metric(row["metric"], row["candidate"]),
                "difference": _diff(row["metric"], row["difference"]),
                "better": (None if row["metric"] not in LOSSES or row["difference"] == 0
                           else bool(row["difference"] < 0))}
               for row in r.summary.to_dict("records")]
    monthly = [{"month": int(m), "snapshot_month": x["snapshot_month"],
                "cur": x, "cand": y} for m, (_, x), (_, y) in zip(r.months, a.iterrows(), b.iterrows())]
    comparison = comparison_json(r, spec)

    def fill(tmp: Path) -> None:
        r.summary.to_csv(tmp / "replay_summary.csv", index=False, float_format="%.6f")
        months.to_csv(tmp / "replay_months.csv", index=False, float_format="%.6f")
        actions.to_csv(tmp / "replay_actions.csv", index=False)
        (tmp / "comparison.json").write_text(json.dumps(comparison, indent=2, sort_keys=True, ensure_ascii=False),
                                             encoding="utf-8")
        html = render("replay.html", cur=cur, cand=cand, model_name=spec.registry.model_name,
                      model_version=r.model_version, scenario=r.scenario, months=r.months,
                      generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      differences=policy_differences(spec, candidate), summary=summary, charts=chart,
                      monthly=monthly, attached=str(attached) if attached else None)
        (tmp / "index.html").write_text(html, encoding="utf-8")
        write_run_summary(tmp, kind="replay", model=f"{spec.registry.model_name} v{r.model_version}",
                          policy=f"{cand.name} {cand.version} vs {cur.version}",
                          rows=int(a["accounts_reviewed"].sum() + b["accounts_reviewed"].sum()),
                          detail=f"policy replay, {r.scenario['name']} {months_text(r.months)}", verdict=None)

    build_dir(out, fill)
    write_root_index(out_root)
    return out
