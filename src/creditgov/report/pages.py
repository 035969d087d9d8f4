"""Regulator-ready HTML from a decision log: per-decision reports, customer notices, portfolio report.

Every page is self-contained (inline CSS and SVG charts drawn by matplotlib, report.charts; a
Content-Security-Policy that forbids any network request), escapes every value it prints (jinja2
autoescape; chart text through matplotlib's SVG writer), and states when it was made, from which
model version and which data. What a customer reads (labels, units, notices, rights) comes from
report.wording.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from creditgov.atomic import replace_dir, temp_beside
from creditgov.decision.decide import INPUT_PREFIX, SHAP_PREFIX, read_log
from creditgov.decision.oversight import treatment_approval
from creditgov.decision.policy import ADVERSE_ACTIONS, REPRICE_RULE, WARN_PREFIX
from creditgov.errors import DataError, SpecError
from creditgov.data.privacy import GROUP_PREFIX, MISSING_GROUP
from creditgov.governance import audit, inventory, registry
from creditgov.model import fairness
from creditgov.model.derived import derived_values
from creditgov.report import charts, wording
from creditgov.spec import PipelineSpec, derived_order


@dataclass(frozen=True)
class ReportResult:
    directory: Path
    index: Path
    decisions: list[str]


def _template_text(name: str) -> str:
    return resources.files("creditgov").joinpath("templates", name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)  # templates ship with the package: one environment, its compiled templates reused
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FunctionLoader(_template_text), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v: "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"
    env.filters["num"] = _fmt
    return env


def stylesheet() -> str:
    """The reports' stylesheet (templates/base.css), inlined in every page."""
    return _template_text("base.css")


def render(template: str, **context) -> str:
    """One page from templates/`template`, the one way every creditgov report is rendered: values
    escaped (autoescape), a missing value an error rather than a blank (StrictUndefined), the
    `pct` and `num` filters, and the stylesheet inlined as `css`."""
    return _env().get_template(template).render(css=stylesheet(), **context)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "missing"
    if isinstance(v, (float, np.floating)):
        if float(v).is_integer():
            return f"{v:,.0f}"
        return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.4g}"
    return str(v)


def _thresholds(spec: PipelineSpec, on_book: bool) -> list[tuple[str, float]]:
    """The policy's PD thresholds a reader compares this PD with (the waterfall's dashed lines)."""
    pol = spec.policy
    lo, hi = pol.review_band
    out = [("human review from", lo)] if hi > lo else []
    if on_book and pol.on_book is not None:
        out.append((f"limit cut above (tier {pol.on_book.cut_tier})", _tier_floor(pol, pol.on_book.cut_tier)))
    else:
        out.append(("decline at", pol.decline_at_pd))
    return out


def _rule_row(name: str, what: str, threshold: str, val: str, trig: set) -> dict:
    return {"name": name, "what": what, "threshold": threshold, "value": val, "triggered": name in trig}


def _rules_evaluated(row: pd.Series, spec: PipelineSpec) -> list[dict]:
    """Every rule of the policy with its threshold and this account's value, so a reviewer can check the trigger."""
    pol = spec.policy
    cur = spec.lender.currency if spec.lender else "CNY"
    trig = set(row["rules_triggered"])
    p = wording.pd_text(row["pd"])
    on_book = pol.on_book is not None and not wording.missing(row.get("previous_limit"))

    def val(col: str) -> str:
        f = next((x for x in spec.features if x.name == col), None)
        return wording.value(f, row.get(INPUT_PREFIX + col), "en", cur)

    out = []
    if not on_book:
        out.append(_rule_row("pd_at_or_above_decline", "PD at or above the decline threshold",
                             f"PD ≥ {pol.decline_at_pd:.4f}", f"PD {p}", trig))
    out.append(_rule_row("pd_in_review_band", "PD in the human-review band",
                         f"{pol.review_band[0]:.4f} ≤ PD < {pol.review_band[1]:.4f}", f"PD {p}", trig))
    if not on_book:
        for r in pol.rules:
            cond = wording.condition_text(spec, r.name, "en", cur, article="")
            out.append(_rule_row(r.name, r.reason.en, cond[:1].upper() + cond[1:], val(r.when.feature), trig))
    else:
        ob, fl = pol.on_book, pol.on_book.fields
        prev = row.get("previous_pd")
        prev_t = "no previous review" if wording.missing(prev) else f"previous PD {wording.pd_text(prev)}"
        fraud = "suspend_fraud" in trig
        out += [
            _rule_row("suspend_fraud", "Fraud signal on the account", "signal set",
                      "set" if fraud else "not set", trig),
            _rule_row("suspend_overdue", "Repayment overdue", f"days past due ≥ {ob.suspend_days_past_due}",
                      val(fl.days_past_due), trig),
            _rule_row("suspend_cumulative_overdue", "Overdue days in the last 12 months",
                      f"total ≥ {ob.suspend_cumulative_overdue_days} days", val(fl.cumulative_overdue_days), trig),
            _rule_row("suspend_risk_rise", "PD rose sharply since the previous review",
                      f"PD ≥ {ob.suspend_pd_rise_factor:g} × previous PD and PD ≥ {ob.suspend_pd_rise_min_pd:.4f}",
                      f"PD {p}, {prev_t}", trig),
            _rule_row("restore_after_clean_repayment", "A suspended line is restored",
                      f"suspended, no suspension rule holds, on-time months ≥ {ob.restore_clean_months}",
                      f"{val(fl.clean_months)} on time", trig),
            _rule_row("remain_suspended", "A suspended line stays suspended",
                      f"suspended and (a suspension rule holds or on-time months < {ob.restore_clean_months})",
                      f"{val(fl.clean_months)} on time", trig),
            _rule_row(f"tier_{ob.cut_tier}", f"Limit cut by {100 * (1 - ob.cut_factor):g}% in tier {ob.cut_tier}",
                      f"PD > {_tier_floor(pol, ob.cut_tier):.4f}", f"PD {p}", trig),
            _rule_row("raise_after_clean_repayment", f"Limit raised by {100 * (ob.raise_factor - 1):g}%",
                      f"PD ≤ {ob.raise_max_pd:.4f} and on-time months ≥ {ob.raise_clean_months}",
                      f"PD {p}, {val(fl.clean_months)} on time", trig),
        ]
        out += _warning_and_price_rows(row, spec, trig, val, p)
        out += _collections_rows(row, spec, val)
    tiers = ", ".join(f"{t.name} ≤ {t.max_pd:.4f}" for t in pol.tiers)
    out.append({"name": "tier", "what": "Risk tier by PD", "threshold": tiers, "value": f"{row['tier']} (PD {p})",
                "triggered": True})
    return out


def _warning_and_price_rows(row: pd.Series, spec: PipelineSpec, trig: set, val, p: str) -> list[dict]:
    """The early warning's signals and the pricing rule with their thresholds and this account's values."""
    pol, out = spec.policy, []
    ew = pol.on_book.early_warning
    if ew is not None:
        for sig in ew.signals:
            cond = "; ".join(wording.condition_text_of(spec, c, "en", article="") for c in sig.when)
            vals = ", ".join(dict.fromkeys(val(c.feature) for c in sig.when))
            out.append(_rule_row(WARN_PREFIX + sig.name, f"Early warning: {sig.reason.en}", cond, vals, trig))
        prev = row.get("previous_pd")
        prev_t = "no previous review" if wording.missing(prev) else f"previous PD {wording.pd_text(prev)}"
        out.append(_rule_row(WARN_PREFIX + "pd_rise", "Early warning: PD rising below the suspension trigger",
                             f"PD ≥ {ew.pd_rise_factor:g} × previous PD and PD ≥ {ew.pd_rise_min_pd:.4f}",
                             f"PD {p}, {prev_t}", trig))
    if pol.pricing is not None:
        pct = lambda v: "–" if wording.missing(v) else f"{100 * float(v):.2f}%"  # noqa: E731
        table = ", ".join(f"{r.tier} {pct(r.apr)}" for r in pol.pricing.table)
        out.append(_rule_row(REPRICE_RULE, "Rate raised with the risk tier at a limit review",
                             f"{table}; legal cap {pct(pol.pricing.legal_cap_apr)}",
                             f"{pct(row.get('previous_apr'))} → {pct(row.get('apr'))}", trig))
    return out


def _collections_rows(row: pd.Series, spec: PipelineSpec, val) -> list[dict]:
    """The collections ladder's rules with their thresholds and this account's values; a row is marked
    triggered when the decision's treatment_rules name it."""
    col = spec.policy.collections
    if col is None:
        return []
    rules = row.get("treatment_rules")
    trig = set() if rules is None or (isinstance(rules, float) and np.isnan(rules)) else {str(r) for r in rules}
    f, hp = col.fields, col.hardship_plan

    def cval(name: str) -> str:  # a catalogue feature in its unit; a ladder-only field as a count or yes / no
        if INPUT_PREFIX + name not in row.index:  # a log written before the ladder's fields were logged
            return "not kept in the decision log"
        if any(x.name == name for x in spec.features):
            return val(name)
        v = row.get(INPUT_PREFIX + name)
        if wording.missing(v):
            return "not stated"
        if isinstance(v, (bool, np.bool_)) or str(v).lower() in ("true", "false", "yes", "no"):
            return "yes" if str(v).lower() in ("true", "yes") else "no"
        try:
            return f"{float(v):,.0f}" if float(v).is_integer() else f"{float(v):,.2f}"
        except (TypeError, ValueError):
            return str(v)

    dpd = cval(f.days_past_due)
    out = [_rule_row("on_hardship_plan", "A hardship plan is in force: no other collection contact",
                     "plan months left > 0", cval(f.hardship_plan_months_left), trig)]
    for name in ("reminder", "call", "agency", "legal"):
        step = getattr(col, name)
        cond = f"days past due ≥ {step.min_days_past_due}"
        if step.early_tiers:
            cond += f", or overdue at all in tier {', '.join(step.early_tiers)}"
        if step.requires_approval:
            cond += "; a person approves it before it is carried out"
        out.append(_rule_row("collect_" + name, f"Collections: {name.replace('_', ' ')}", cond,
                             f"{dpd}, tier {row['tier']}", trig))
    out.append(_rule_row(
        "collect_hardship_plan", f"Collections: hardship instalment plan over {hp.plan_months} months",
        f"hardship declared, overdue and days past due ≤ {hp.max_days_past_due}, missed months before this episode "
        f"≤ {hp.max_prior_missed_months}",
        f"declared: {cval(f.hardship_declared)}; {dpd}; missed months in 12: {cval(f.months_overdue_12m)}", trig))
    out.append(_rule_row("contact_limit_reached", "Contact limit: the treatment steps down the ladder",
                         f"contacts in 30 days + the treatment's contacts > {col.contact_limits.max_contacts_30_days}",
                         f"contacts in the last 30 days: {cval(f.contacts_30d)}", trig))
    return out


def _tier_floor(pol, name: str) -> float:
    names = [t.name for t in pol.tiers]
    i = names.index(name)
    return pol.tiers[i - 1].max_pd if i else 0.0


def _with_derived_inputs(row: pd.Series, spec: PipelineSpec) -> pd.Series:
    """The logged row with each derived feature's value as an input column, computed from the logged inputs as the
    model's encoding computes it (model.derived); the log keeps the row's own values only."""
    order = derived_order(spec.features)
    if not order:
        return row
    raw = pd.DataFrame({f.name: [pd.to_numeric(row.get(INPUT_PREFIX + f.name), errors="coerce")]
                        for f in spec.input_features if f.type == "numeric"}, dtype="float64")
    values = derived_values(raw, {f.name: f.derived for f in order})
    return pd.concat([row, pd.Series({INPUT_PREFIX + k: float(v[0]) for k, v in values.items()}, dtype=object)])


def _decision_context(row: pd.Series, spec: PipelineSpec, card: dict, stamp: dict) -> dict:
    cur = spec.lender.currency if spec.lender else "CNY"
    row = _with_derived_inputs(row, spec)
    shap = {f.name: float(row[SHAP_PREFIX + f.name]) for f in spec.model_inputs if SHAP_PREFIX + f.name in row}
    contrib = sorted(shap.items(), key=lambda kv: -abs(kv[1]))
    shown, rest = contrib[:10], contrib[10:]
    shown = [(f"{wording.label(spec.feature(n), 'en')} = "
              f"{wording.value(spec.feature(n), row.get(INPUT_PREFIX + n), 'en', cur)}", v) for n, v in shown]
    if rest:
        what = "1 feature with a smaller effect" if len(rest) == 1 else f"{len(rest)} features with smaller effects"
        shown.append((what, float(sum(v for _, v in rest))))
    on_book = spec.policy.on_book is not None and not wording.missing(row.get("previous_limit"))
    inputs = [{"name": f.name, "label": wording.label(f, "en"),
               "value": "[redacted: personal data]" if f.personal else
               wording.value(f, row.get(INPUT_PREFIX + f.name), "en", cur),
               "attribution": shap.get(f.name)} for f in spec.features]
    cf = json.loads(row["counterfactual"]) if isinstance(row.get("counterfactual"), str) else None
    cf_changes = wording.counterfactual_changes(cf, spec, "en", cur) if cf and cf.get("found") else []
    reasons = [{"code": c, "en": e, "zh": z,
                "attribution": None if a is None or (isinstance(a, float) and np.isnan(a)) else float(a)}
               for c, e, z, a in zip(row["reason_codes"], row["reasons_en"], row["reasons_zh"],
                                     row["reason_attributions"])]
    changed = wording.changed_lines(row)
    money = lambda v: "–" if wording.missing(v) else wording.money(v, cur)  # noqa: E731
    limit = {"decline": "none (declined)", "suspend": "none while suspended",
             "watch_freeze": f"{money(row['limit'])}, new purchases paused until the next review"}.get(
        str(row["action"]), money(row["limit"]))
    events = audit.events_for(str(row["decision_id"])) if audit.exists() else []
    notices = ({lang: wording.notice(row, spec, lang, changed, cf, stamp["generated_at"]) for lang in ("en", "zh")}
               if spec.lender is not None else {})
    approved = treatment_approval(str(row["decision_id"]), events) is not None
    treatment_notices = {lang: n for lang in ("en", "zh")
                         if (n := wording.treatment_notice(row, spec, lang, stamp["generated_at"], approved))}
    return {"row": row, "inputs": inputs, "reasons": reasons, "cf": cf, "cf_changes": cf_changes, "card": card,
            "stamp": stamp, "changed": changed, "events": events, "limit": limit,
            "previous_limit": money(row.get("previous_limit")), "pd": wording.pd_text(row["pd"]),
            "rules": _rules_evaluated(row, spec), "notices": notices, "treatment_notices": treatment_notices,
            "treatment": _treatment(row, approved),
            "remedy": wording.remedy(spec, row, "en", cur) if spec.policy else [],
            "waterfall": lambda: charts.waterfall(float(row["shap_base"]), shown, float(row["log_odds"]),
                                                  _thresholds(spec, on_book)),  # drawn only on the page
            "adverse": row["action"] in ADVERSE_ACTIONS, "model_status": _model_status(row)}


def _treatment(row: pd.Series, approved: bool) -> dict | None:
    """The decision's collections treatment as the decision page shows it (None without one)."""
    t = row.get("treatment")
    if wording.missing(t) or str(t) == "none" and not len(row.get("treatment_rules", [])):
        return None
    status = str(row.get("treatment_status") or "")
    if status == "pending_approval" and approved:
        status = "pending_approval, then approved by a person (see the oversight entries)"
    return {"treatment": str(t), "status": status, "rules": [str(r) for r in row["treatment_rules"]],
            "reasons": list(zip(row["treatment_reasons_en"], row["treatment_reasons_zh"]))}


def _model_status(row: pd.Series) -> str:
    """The model's latest monitoring verdict stamped on the decision ("" when the version was not monitored)."""
    status = row.get("model_status")
    return "" if wording.missing(status) else str(status)


def adverse_impact(log: pd.DataFrame, column: str, min_group_size: int = 30,
                   favourable: tuple[str, ...] = ("approve",)) -> pd.DataFrame:
    """Approval rate per group and its ratio to the most favoured group (four-fifths convention).

    Groups with fewer than `min_group_size` decisions get no ratio and cannot be the reference:
    one approval in a group of one would otherwise set the bar for everyone.
    """
    decided = log[log["status"] == "decided"]
    col = GROUP_PREFIX + column if GROUP_PREFIX + column in decided.columns else INPUT_PREFIX + column
    groups = decided[col].fillna(MISSING_GROUP).astype(str)
    ok = decided["action"].isin(favourable)
    t = pd.DataFrame({"group": groups, "ok": ok}).groupby("group", sort=True)["ok"].agg(["size", "mean"])
    t = t.rename(columns={"size": "n", "mean": "approval_rate"}).reset_index()
    big = t["n"] >= min_group_size
    best = t.loc[big, "approval_rate"].max() if big.any() else np.nan
    t["adverse_impact_ratio"] = np.where(big & (best > 0), t["approval_rate"] / best, np.nan)
    return t


def _log_fairness(decided: pd.DataFrame, columns: list[str], outcomes: list, spec: PipelineSpec) -> dict:
    """AIR and SMD of PDs with bootstrap CIs by group on this log's decided rows (fairness.group_evidence), per
    outcome compared and group column: {outcome: {column: evidence}}."""
    out = {}
    n_boot = min(spec.evaluation.bootstrap, 300)
    for label, adverse_action in outcomes:
        fav = (decided["action"] == "approve") if adverse_action is None else (decided["action"] != adverse_action)
        out[label] = {}
        for c in columns:
            col = GROUP_PREFIX + c if GROUP_PREFIX + c in decided.columns else INPUT_PREFIX + c
            out[label][c] = fairness.group_evidence(decided[col].fillna(MISSING_GROUP).astype(str),
                                                    fav.to_numpy(), decided["pd"].to_numpy(dtype="float64"),
                                                    spec.policy.fairness.min_group_size, n_boot, spec.split.seed)
    return out


def _card_min_air(card: dict, spec: PipelineSpec) -> dict:
    fair = card.get("fairness") or {}
    if not fair:
        return {"card_min_air": None, "card_min_air_where": ""}
    prot = set(fair.get("protected", []))
    low, where = fairness.lowest_air({o: {a: e for a, e in by.items() if a in prot}
                                      for o, by in fair.get("outcomes", {}).items()})
    return {"card_min_air": low, "card_min_air_where": where}


def select_sample(log: pd.DataFrame, n: int) -> pd.DataFrame:
    """A deterministic sample of adverse decisions (each adverse action represented) plus a few reviews."""
    decided = log[log["status"] == "decided"].sort_values("decision_id", kind="stable")
    parts = []
    adverse = [a for a in ADVERSE_ACTIONS if (decided["action"] == a).any()]
    per = max(n // max(len(adverse), 1), 1)
    for a in adverse:  # each rule (or the model) that made this action is represented
        rows = decided[decided["action"] == a]
        makers = sorted(rows["decided_by"].astype(str).unique())
        each = max(per // len(makers), 1)
        parts += [rows[rows["decided_by"].astype(str) == m].head(each) for m in makers]
    parts.append(decided[decided["action"] == "review"].head(max(n // 5, 1)))
    if "treatment" in decided.columns:  # one decision of each collections treatment, by status
        t = decided[decided["treatment"].astype(str) != "none"]
        parts += [g.head(1) for _, g in t.groupby(["treatment", "treatment_status"], sort=True)]
    if not parts:
        return decided.head(0)
    chosen = pd.concat(parts)
    return chosen[~chosen["decision_id"].duplicated()]


def build(spec: PipelineSpec, log: pd.DataFrame, log_path: Path, card: dict, card_html: str | None,
          out_root: Path, sample: int = 20, group_columns: list[str] | None = None,
          approval: str = "") -> ReportResult:
    """`approval`: how the version was approved, as its registry tags say ("approved by X: self-approved
    (development)"), shown on every page beside the model."""
    first = log.iloc[0]
    version = str(first["model_version"])
    run_name = f"{spec.name}-{str(first['decision_time'])[:10]}-v{version}-{str(first['input_hash'])[:8]}"
    out = out_root / run_name
    tmp = temp_beside(out)
    (tmp / "decisions").mkdir(parents=True)
    (tmp / "notices").mkdir()
    stamp = {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "model": f"{first['model_name']} version {version}", "policy": f"{first['policy_name']} "
             f"{first['policy_version']} (hash {str(first['policy_hash'])[:16]})",
             "data": f"{first['input_source']} (content hash {str(first['input_hash'])[:16]})",
             "log": log_path.name, "decision_time": first["decision_time"], "approval": approval}

    chosen = select_sample(log, sample)
    links = []
    for _, row in chosen.iterrows():
        ctx = _decision_context(row, spec, card, stamp)
        did = row["decision_id"]
        (tmp / "decisions" / f"{did}.html").write_text(render("decision.html", **ctx),
                                                       encoding="utf-8")
        for lang, n in ctx["notices"].items():
            (tmp / "notices" / f"{did}.{lang}.html").write_text(render("notice.html", n=n, **ctx), encoding="utf-8")
        for lang, n in ctx["treatment_notices"].items():  # a collections treatment sent to the customer
            (tmp / "notices" / f"{did}.treatment.{lang}.html").write_text(render("treatment_notice.html", n=n, **ctx),
                                                                          encoding="utf-8")
        links.append({"id": did, "action": row["action"], "tier": row["tier"], "pd": row["pd"],
                      "reason": (row["reasons_en"][0] if len(row["reasons_en"]) else "")})

    decided = log[log["status"] == "decided"]
    by = decided.groupby(["tier", "action"]).size().unstack(fill_value=0)
    tier_order = [t.name for t in spec.policy.tiers if t.name in by.index]
    by = by.loc[tier_order]
    adverse = decided[decided["action"].isin(ADVERSE_ACTIONS)]
    freq = pd.Series([c for codes in adverse["reason_codes"] for c in codes], dtype=object).value_counts()
    rule_text = {c: str(e) for codes, ens in zip(adverse["reason_codes"], adverse["reasons_en"])
                 for c, e in zip(codes, ens) if str(c).startswith("rule:")}  # a rule as the log words it
    groups = group_columns if group_columns is not None else spec.fairness_groups
    present = [c for c in groups if INPUT_PREFIX + c in log.columns or GROUP_PREFIX + c in log.columns]
    min_group = spec.policy.fairness.min_group_size
    # per outcome compared: approval for applications; each adverse on-book action (suspend, cut) on its own
    outcomes = ([("not suspended", "suspend"), ("not cut", "cut")] if (decided["action"].isin(["suspend", "cut"]).any()
                or spec.policy.on_book is not None) else [("approval", None)])
    impact = {}
    for label, adverse_action in outcomes:
        fav = (("approve",) if adverse_action is None else
               tuple(a for a in decided["action"].unique().tolist() if a != adverse_action))
        impact[label] = {c: adverse_impact(log, c, min_group, fav).to_dict("records") for c in present}
    fair_log = _log_fairness(decided, present, outcomes, spec)
    quarantined = log[log["status"] == "quarantined"]
    portfolio_ctx = {
        "stamp": stamp, "card": card, "spec": spec,
        "n_in": len(log), "n_decided": len(decided), "n_quarantined": len(quarantined),
        "quarantine": quarantined[["row_number", "quarantine_rules"]].to_dict("records"),
        "by_tier": {"columns": list(by.columns), "rows": [(t, [int(v) for v in by.loc[t]]) for t in by.index]},
        "actions": decided["action"].value_counts().sort_index().to_dict(),
        "approval_rate": float((decided["action"] == "approve").mean()) if len(decided) else float("nan"),
        "reason_svg": charts.bars([(_reason_label(spec, c, rule_text), float(v)) for c, v in freq.head(15).items()],
                                  "Reasons given for adverse decisions", "adverse decisions"),
        "impact": impact, "min_air": spec.policy.fairness.min_adverse_impact_ratio, "fair_log": fair_log,
        "protected": [f.name for f in spec.protected_features], "flabel": lambda n: _feature_label(spec, n),
        **_card_min_air(card, spec),
        "min_group": spec.policy.fairness.min_group_size,
        "pd_svg": charts.bars(_pd_histogram(decided["pd"].to_numpy()), "Decisions by PD band", "decisions"),
    }
    (tmp / "portfolio.html").write_text(render("portfolio.html", **portfolio_ctx), encoding="utf-8")
    if card_html:
        (tmp / "model_card.html").write_text(card_html, encoding="utf-8")
    (tmp / "index.html").write_text(render(
        "index.html", stamp=stamp, links=links, has_card=bool(card_html), has_notices=spec.lender is not None, n_in=len(log), n_decided=len(decided),
        n_quarantined=len(quarantined)), encoding="utf-8")
    status = sorted(set(decided["model_status"].dropna().astype(str))) if "model_status" in decided else []
    write_run_summary(tmp, kind="decisions", model=f"{first['model_name']} v{version}",
                      policy=f"{spec.policy.name} {spec.policy.version}", rows=len(log),
                      detail=f"{len(decided):,} decided, {int(decided['action'].isin(ADVERSE_ACTIONS).sum()):,} adverse, "
                             f"{len(quarantined):,} quarantined",
                      verdict=", ".join(status) or None)
    replace_dir(tmp, out)
    write_root_index(out_root)
    return ReportResult(out, out / "index.html", [lk["id"] for lk in links])


def _feature_label(spec: PipelineSpec, name: str) -> str:
    """A catalogue column as a person reads it: its label, else its name."""
    try:
        return wording.label(spec.feature(name), "en")
    except KeyError:
        return name


def _reason_label(spec: PipelineSpec, code: str, rule_text: dict[str, str] | None = None) -> str:
    """A reason code as the portfolio page names it: the rule's reason as the log words it, or the feature's
    label."""
    if code.startswith("rule:"):
        return (rule_text or {}).get(code) or f"rule {code[5:]}"
    return _feature_label(spec, code)


def _pd_histogram(p: np.ndarray) -> list[tuple[str, float]]:
    edges = [0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
    counts, _ = np.histogram(p, bins=edges)
    return [(f"{100 * a:.0f}% – {100 * b:.0f}%", float(c)) for a, b, c in zip(edges[:-1], edges[1:], counts)]


def latest_log(spec: PipelineSpec, directory: str | Path = "decisions") -> Path | None:
    logs = sorted(Path(directory).glob(f"{spec.name}-*.parquet"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


def model_card_of(model_name: str, version: str) -> tuple[dict, str | None]:
    """The model card (JSON and HTML) stored with a registered version's training run; the HTML with the
    version's status in the registry now (approval, gates, inventory, monitoring verdicts) added."""
    import mlflow  # heavy: see registry.configure

    registry.configure()
    with registry.backend_errors(f"read the model card of {model_name} v{version}"), \
            tempfile.TemporaryDirectory() as tmp:
        run_id = registry.client().get_model_version(model_name, version).run_id
        try:
            local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model_card", dst_path=tmp))
        except Exception:
            return {}, None
        card = json.loads((local / "model_card.json").read_text(encoding="utf-8"))
        html_path = local / "model_card.html"
        html = html_path.read_text(encoding="utf-8") if html_path.exists() else None
    if html is not None:
        html = inventory.with_status(html, inventory.registry_status(model_name, version))
    return card, html


def make_report(spec: PipelineSpec, log_path: str | Path, out_root: str | Path = "reports", sample: int = 20,
                group_columns: list[str] | None = None) -> ReportResult:
    log_path = Path(log_path)
    log = read_log(log_path)
    if log.empty:
        raise DataError(f"{log_path}: decision log has no rows")
    first = log.iloc[0]
    if spec.policy is None or str(first["policy_hash"]) != spec.policy.content_hash:
        raise SpecError(f"{log_path}: decided under policy hash {str(first['policy_hash'])[:12]}, but the spec's "
                        f"policy is {spec.policy.content_hash[:12] if spec.policy else 'absent'}: report with the "
                        "spec version that made the decisions, so the rules shown are the rules applied")
    card, card_html = model_card_of(str(first["model_name"]), str(first["model_version"]))
    approval = approval_of(str(first["model_name"]), str(first["model_version"]))
    return build(spec, log, log_path, card, card_html, Path(out_root), sample, group_columns, approval)


def approval_of(model_name: str, version: str) -> str:
    """How a version was approved, from its registry tags: "approved by X (self-approved (development))",
    "approved by X (independent)", or "not approved"."""
    registry.configure()
    with registry.backend_errors(f"read the approval of {model_name} v{version}"):
        tags = registry.client().get_model_version(model_name, version).tags
    who = tags.get("approved_by")
    if not who:
        return "not approved"
    how = tags.get("approval", "")
    return f"approved by {who}" + (f": {how}" if how else "")


RUN_SUMMARY = "run.json"  # what reports/index.html lists of a run: written by each kind of report
PACK_NAME = "regulator-pack.pdf"  # the run printed to one PDF (creditgov report --pdf, report.pdf)
PACK_MARK = "<!--regulator-pack-->"  # where the run's index.html gets its link to the pack


def write_run_summary(directory: Path, kind: str, model: str | None, policy: str | None, rows: int | None,
                      detail: str, verdict: str | None) -> None:
    """The line of a report run in reports/index.html: its kind, model version, policy, rows, what was decided
    or found, and the monitoring verdict (the model's status where the decisions carry one)."""
    summary = {"kind": kind, "model": model, "policy": policy, "rows": rows, "detail": detail, "verdict": verdict}
    (Path(directory) / RUN_SUMMARY).write_text(json.dumps(summary, sort_keys=True), encoding="utf-8")


def link_pack(run_dir: Path, pages: int) -> None:
    """Link the regulator pack printed into `run_dir` from the run's index.html and from reports/index.html,
    and name it in run.json (a run is printed after its pages are written, so its index is linked afterwards)."""
    run_dir = Path(run_dir)
    index = run_dir / "index.html"
    html = index.read_text(encoding="utf-8")
    link = (f'<li><a href="{PACK_NAME}" type="application/pdf">Regulator pack (PDF)</a>: this run printed to one '
            f'document ({pages:,} pages): index, portfolio, model card, the sampled decisions and their notices</li>')
    if PACK_MARK in html and f'href="{PACK_NAME}"' not in html:
        index.write_text(html.replace(PACK_MARK, link + PACK_MARK, 1), encoding="utf-8")
    summary_path = run_dir / RUN_SUMMARY
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    summary["pack"] = {"file": PACK_NAME, "pages": pages}
    summary_path.write_text(json.dumps(summary, sort_keys=True), encoding="utf-8")
    if (run_dir.parent / "index.html").is_file():
        write_root_index(run_dir.parent)


def _run_row(d: Path) -> dict:
    try:
        summary = json.loads((d / RUN_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a run made before run.json existed: its name says its kind
        summary = {"kind": "monitoring" if "-monitor-" in d.name else "risk" if d.name.startswith("risk-")
                   else "decisions"}
    return {"name": d.name, "made": datetime.fromtimestamp(d.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
            "pack": PACK_NAME if (d / PACK_NAME).is_file() else None,
            **{k: summary.get(k) for k in ("kind", "model", "policy", "rows", "detail", "verdict")}}


def write_root_index(out_root: str | Path = "reports") -> Path:
    """reports/index.html: every report run under the root, newest first (decision, monitoring and risk
    reports), each with its model version, policy, rows, adverse counts and monitoring verdict."""
    out_root = Path(out_root)
    runs = sorted((d for d in out_root.iterdir() if d.is_dir() and (d / "index.html").exists()
                   and not d.name.startswith(".")), key=lambda d: d.stat().st_mtime, reverse=True)
    rows = [_run_row(d) for d in runs]
    page = out_root / "index.html"
    page.write_text(render("root_index.html", rows=rows,
                           generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds")), encoding="utf-8")
    return page
