"""Regulator-ready HTML from a decision log: per-decision reports, customer notices, portfolio report.

Every page is self-contained (inline CSS and SVG, a Content-Security-Policy that forbids
any network request), escapes every value it prints (jinja2 autoescape; SVG text through
html.escape), and states when it was made, from which model version and which data.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone
from html import escape
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from creditgov.atomic import replace_dir, temp_beside
from creditgov.decision.decide import INPUT_PREFIX, SHAP_PREFIX, read_log
from creditgov.decision.policy import ADVERSE_ACTIONS
from creditgov.errors import DataError, SpecError
from creditgov.data.privacy import GROUP_PREFIX, MISSING_GROUP
from creditgov.governance import audit, registry
from creditgov.model import fairness
from creditgov.spec import PipelineSpec


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


def waterfall_svg(base: float, contributions: list[tuple[str, float]], final: float, width: int = 640) -> str:
    """Attribution waterfall in log-odds: base value, each feature's push, the model's final log-odds."""
    steps = [("base value", base, None)] + [(f, v, None) for f, v in contributions] + [("model log-odds", final, None)]
    running, bars = base, []
    for name, v, _ in steps[1:-1]:
        bars.append((name, running, running + v))
        running += v
    lo = min([0.0, base, final] + [min(a, b) for _, a, b in bars])
    hi = max([0.0, base, final] + [max(a, b) for _, a, b in bars])
    span = (hi - lo) or 1.0
    left, plot_w, row_h = 170, width - 250, 20
    x = lambda v: left + (v - lo) / span * plot_w  # noqa: E731
    rows = [("base value", lo if base > lo else base, base, "#8a94a6", base)]
    rows += [(n, a, b, "#c0392b" if b > a else "#2e7d32", b - a) for n, a, b in bars]
    rows += [("model log-odds", min(0.0, final) if final < 0 else 0.0, final, "#3b6ea5", final)]
    h = 30 + row_h * len(rows) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
           f'aria-label="Attribution waterfall" font-family="sans-serif" font-size="11">',
           f'<line x1="{x(0):.1f}" y1="20" x2="{x(0):.1f}" y2="{h - 15}" stroke="#999" stroke-dasharray="3,3"/>',
           f'<text x="{x(0):.1f}" y="14" text-anchor="middle">0</text>']
    for i, (name, a, b, colour, label_v) in enumerate(rows):
        y = 24 + i * row_h
        if name in ("base value", "model log-odds"):
            a, b = 0.0, label_v
        x0, x1 = sorted((x(a), x(b)))
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(str(name))}</text>')
        out.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1):.1f}" height="{row_h - 6}" fill="{colour}"/>')
        out.append(f'<text x="{x1 + 4:.1f}" y="{y + 13}">{label_v:+.3f}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bars_svg(items: list[tuple[str, float]], title: str, fmt: str = "{:.0f}") -> str:
    top = max((v for _, v in items), default=1.0) or 1.0
    left, w, rh = 230, 360, 20
    h = 30 + rh * len(items)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + w + 70}" height="{h}" role="img" '
           f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
           f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>']
    for i, (name, v) in enumerate(items):
        y = 22 + i * rh
        bw = w * v / top
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(str(name))}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{bw:.1f}" height="{rh - 6}" fill="#3b6ea5"/>')
        out.append(f'<text x="{left + bw + 4:.1f}" y="{y + 13}">{escape(fmt.format(v))}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _rules_evaluated(row: pd.Series, spec: PipelineSpec) -> list[dict]:
    pol = spec.policy
    trig = set(row["rules_triggered"])
    out = [{"name": "pd_at_or_above_decline", "rule": f"PD >= {pol.decline_at_pd}", "value": f"{row['pd']:.4f}",
            "triggered": "pd_at_or_above_decline" in trig},
           {"name": "pd_in_review_band", "rule": f"{pol.review_band[0]} <= PD < {pol.review_band[1]}",
            "value": f"{row['pd']:.4f}", "triggered": "pd_in_review_band" in trig}]
    for r in pol.rules:
        val = row.get(INPUT_PREFIX + r.when.feature)
        out.append({"name": r.name, "rule": f"{r.when.feature} {r.when.op} {'' if r.when.value is None else r.when.value}",
                    "value": _fmt(val), "triggered": r.name in trig})
    known = {o["name"] for o in out}
    out += [{"name": t, "rule": "account-review rule", "value": "", "triggered": True} for t in row["rules_triggered"]
            if t not in known]
    tiers = ", ".join(f"{t.name} <= {t.max_pd}" for t in pol.tiers)
    out.append({"name": "tier", "rule": tiers, "value": row["tier"], "triggered": True})
    return out


def _decision_context(row: pd.Series, spec: PipelineSpec, card: dict, stamp: dict) -> dict:
    feats = [f for f in spec.features]
    shap = {f.name: float(row[SHAP_PREFIX + f.name]) for f in spec.model_inputs if SHAP_PREFIX + f.name in row}
    contrib = sorted(shap.items(), key=lambda kv: -abs(kv[1]))
    shown, rest = contrib[:10], contrib[10:]
    if rest:
        shown.append((f"{len(rest)} other features", float(sum(v for _, v in rest))))
    inputs = [{"name": f.name, "description": f.description,
               "value": "[redacted: personal data]" if f.personal else _fmt(row.get(INPUT_PREFIX + f.name)),
               "attribution": shap.get(f.name)} for f in feats]
    cf = json.loads(row["counterfactual"]) if isinstance(row.get("counterfactual"), str) else None
    reasons = [{"code": c, "en": e, "zh": z,
                "attribution": None if a is None or (isinstance(a, float) and np.isnan(a)) else float(a)}
               for c, e, z, a in zip(row["reason_codes"], row["reasons_en"], row["reasons_zh"],
                                     row["reason_attributions"])]
    changed = [{"feature": f, "en": e, "zh": z, "delta": d} for f, e, z, d in
               zip(*(row.get(k, []) if row.get(k) is not None else [] for k in
                     ("changed_features", "changed_en", "changed_zh", "changed_attribution_deltas")))]

    events = audit.events_for(str(row["decision_id"])) if audit.exists() else []
    return {"row": row, "inputs": inputs, "reasons": reasons, "cf": cf, "card": card, "stamp": stamp,
            "changed": changed, "events": events,
            "rules": _rules_evaluated(row, spec),
            "waterfall": waterfall_svg(float(row["shap_base"]), shown, float(row["log_odds"])),
            "adverse": row["action"] in ADVERSE_ACTIONS}


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
    for a in adverse:
        parts.append(decided[decided["action"] == a].head(per))
    parts.append(decided[decided["action"] == "review"].head(max(n // 5, 1)))
    return pd.concat(parts) if parts else decided.head(0)


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
        for lang in ("en", "zh"):
            (tmp / "notices" / f"{did}.{lang}.html").write_text(
                render("notice.html", lang=lang, **ctx), encoding="utf-8")
        links.append({"id": did, "action": row["action"], "tier": row["tier"], "pd": row["pd"],
                      "reason": (row["reasons_en"][0] if len(row["reasons_en"]) else "")})

    decided = log[log["status"] == "decided"]
    by = decided.groupby(["tier", "action"]).size().unstack(fill_value=0)
    tier_order = [t.name for t in spec.policy.tiers if t.name in by.index]
    by = by.loc[tier_order]
    adverse = decided[decided["action"].isin(ADVERSE_ACTIONS)]
    freq = pd.Series([c for codes in adverse["reason_codes"] for c in codes], dtype=object).value_counts()
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
        "reason_svg": bars_svg(list(freq.head(15).items()), "Reason codes among adverse decisions (count)"),
        "impact": impact, "min_air": spec.policy.fairness.min_adverse_impact_ratio, "fair_log": fair_log,
        "protected": [f.name for f in spec.protected_features],
        **_card_min_air(card, spec),
        "min_group": spec.policy.fairness.min_group_size,
        "pd_svg": bars_svg(_pd_histogram(decided["pd"].to_numpy()), "Decisions by PD band (count)"),
    }
    (tmp / "portfolio.html").write_text(render("portfolio.html", **portfolio_ctx), encoding="utf-8")
    if card_html:
        (tmp / "model_card.html").write_text(card_html, encoding="utf-8")
    (tmp / "index.html").write_text(render(
        "index.html", stamp=stamp, links=links, has_card=bool(card_html), n_in=len(log), n_decided=len(decided),
        n_quarantined=len(quarantined)), encoding="utf-8")
    replace_dir(tmp, out)
    write_root_index(out_root)
    return ReportResult(out, out / "index.html", [lk["id"] for lk in links])


def _pd_histogram(p: np.ndarray) -> list[tuple[str, float]]:
    edges = [0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
    counts, _ = np.histogram(p, bins=edges)
    return [(f"{a:.2f} – {b:.2f}", float(c)) for a, b, c in zip(edges[:-1], edges[1:], counts)]


def latest_log(spec: PipelineSpec, directory: str | Path = "decisions") -> Path | None:
    logs = sorted(Path(directory).glob(f"{spec.name}-*.parquet"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


def model_card_of(model_name: str, version: str) -> tuple[dict, str | None]:
    """The model card (JSON and HTML) stored with a registered version's training run."""
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


def write_root_index(out_root: str | Path = "reports") -> Path:
    """reports/index.html: every report run under the root, newest first (decision and monitoring reports)."""
    out_root = Path(out_root)
    runs = sorted((d for d in out_root.iterdir() if d.is_dir() and (d / "index.html").exists()
                   and not d.name.startswith(".")), key=lambda d: d.stat().st_mtime, reverse=True)
    rows = [{"name": d.name, "kind": "monitoring" if "-monitor-" in d.name else "decisions",
             "made": datetime.fromtimestamp(d.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")}
            for d in runs]
    page = out_root / "index.html"
    page.write_text(render("root_index.html", rows=rows,
                           generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds")), encoding="utf-8")
    return page
