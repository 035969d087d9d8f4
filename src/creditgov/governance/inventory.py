"""The model inventory, the change log between versions and the readable gate summary (issue 13, point 6).

- Inventory: the spec's `inventory` section (owner, validator, risk tier, intended use, approval conditions,
  next review) as `inventory.*` tags on the registered model and on each version, and a section of the model
  card. `review_every_months` counts from the registration, then from each approval (promote re-dates it).
- Change log: each registered version compared with the previous complete version of the same registered
  model: the training data hash, a readable spec diff (each changed key, old -> new) and metric deltas (AUC,
  KS, AIR, ...); logged as run artifacts (`changelog/changelog.json`, `changelog/changelog.md`), as
  `changelog.*` version tags, in the version's description (Markdown, shown by the MLflow UI) and on the
  model card. The first version says so.
- Gate summary: one line per evaluation, `gates.summary` = "min_auc: pass (0.8460; test AUC >= 0.8); ...",
  beside the one `gate.<name>` tag per gate.
- Registry status: what the registry says of a version now (aliases, approval, gates, inventory, the
  monitoring verdict history), added to a model card when a report shows it.
"""
from __future__ import annotations

import calendar
import html
import json
from datetime import date, datetime, timezone

from creditgov.governance import registry
from creditgov.governance.gates import GateResult
from creditgov.spec import PipelineSpec

PREFIX = "inventory."
SUMMARY_TAG = "gates.summary"
CHANGELOG_PREFIX = "changelog."
_TAG_MAX = 5000  # the SQL stores keep tag values in 5,000 characters

# the metrics a change log compares: (run metric, label, decimals)
CHANGE_METRICS = (("test_auc", "test AUC", 4), ("test_ks", "test KS", 4), ("test_gini", "test Gini", 4),
                  ("test_brier", "test Brier", 4), ("test_hl_pvalue", "Hosmer-Lemeshow p", 4),
                  ("cv_auc_mean", "CV AUC (mean)", 4), ("scorecard_test_auc", "scorecard test AUC", 4),
                  ("fair_min_air", "lowest AIR (protected groups)", 3), ("psi_train_test", "score PSI train/test", 4),
                  ("monotonicity_violations", "monotonicity violations", 0), ("proxies_flagged", "proxies flagged", 0))


# --------------------------------------------------------------------------------------------------- inventory

def add_months(day: date, months: int) -> date:
    """`day` plus `months` calendar months (the 31st becomes the month's last day)."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def next_review(spec: PipelineSpec, since: date) -> date | None:
    """The next review date: the spec's date, or `since` (registration or approval) plus its interval."""
    inv = spec.inventory
    if inv is None:
        return None
    return inv.next_review if inv.next_review is not None else add_months(since, inv.review_every_months)


def entry(spec: PipelineSpec, since: date) -> dict:
    """The inventory entry of a version registered or approved on `since` ({} when the spec has none)."""
    inv = spec.inventory
    if inv is None:
        return {}
    review = next_review(spec, since)
    return {"owner": inv.owner, "validator": inv.validator, "risk_tier": inv.risk_tier,
            "intended_use": inv.intended_use or " ".join(spec.model_card.intended_use.split()),
            "approval_conditions": list(inv.approval_conditions),
            "next_review": review.isoformat(),
            "review": (f"every {inv.review_every_months} months from {since.isoformat()}"
                       if inv.review_every_months else "date set in the spec")}


def tags(item: dict) -> dict[str, str]:
    """The `inventory.*` tags of an entry."""
    if not item:
        return {}
    conditions = " ".join(f"({i}) {c.strip().rstrip('.;')}." for i, c in enumerate(item["approval_conditions"], 1))
    out = {"owner": item["owner"], "validator": item["validator"], "risk_tier": item["risk_tier"],
           "intended_use": item["intended_use"], "approval_conditions": conditions or "none",
           "next_review": item["next_review"], "review": item["review"]}
    return {PREFIX + k: str(v)[:_TAG_MAX] for k, v in out.items()}


def set_inventory_tags(client, name: str, version: str, item: dict) -> None:
    """The entry on the version and on the registered model (tags, and the registered model's description the
    MLflow UI shows): the registered model's is the latest written."""
    for k, v in tags(item).items():
        client.set_model_version_tag(name, version, k, v)
        client.set_registered_model_tag(name, k, v)
    if item:
        client.update_registered_model(name, description=inventory_markdown(name, item))


def on_approval(client, spec: PipelineSpec, name: str, version: str, day: date) -> dict:
    """Promote: the entry re-dated from the approval (a review interval runs from it); tags rewritten."""
    item = entry(spec, day)
    set_inventory_tags(client, name, version, item)
    return item


# ------------------------------------------------------------------------------------------------ gate summary

def gates_summary(results: list[GateResult]) -> str:
    """One readable line: "min_auc: pass (0.8460; test AUC >= 0.8); calibration: FAIL (...)"."""
    text = "; ".join(f"{r.name}: {'pass' if r.passed else 'FAIL'} ({r.value}; {r.rule})" for r in results)
    return text[:_TAG_MAX]


PROMOTION_HEADING = "### Gates at the last promotion attempt"


def gates_markdown(heading: str, results: list[GateResult]) -> str:
    """The gates as a Markdown table (the version description the MLflow UI renders)."""
    lines = [heading, "", "| gate | result | value | rule |", "|---|---|---|---|"]
    lines += [f"| {_md(r.name)} | {'pass' if r.passed else '**FAIL**'} | {_md(r.value)} | {_md(r.rule)} |"
              for r in results]
    return "\n".join(lines) + "\n"


def describe_promotion(client, name: str, version: str, results: list[GateResult], outcome: str, at: str) -> None:
    """The version description's promotion section, replaced at each attempt (promoted or refused)."""
    mv = client.get_model_version(name, version)
    before = (mv.description or "").split("\n" + PROMOTION_HEADING)[0].rstrip()
    section = gates_markdown(f"{PROMOTION_HEADING} ({outcome}, {at})", results)
    client.update_model_version(name, version, description=(before + "\n\n" + section).strip())


# -------------------------------------------------------------------------------------------------- change log

def _flatten(value, prefix: str = "") -> dict[str, object]:
    """Dotted keys of a spec dump; a list of named items (features, rules, tiers) keyed by name."""
    out: dict[str, object] = {}
    if isinstance(value, dict):
        for k in sorted(value):
            out.update(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value) \
            and len({str(v["name"]) for v in value}) == len(value):
        for v in value:
            out.update(_flatten({k: x for k, x in v.items() if k != "name"}, f"{prefix}[{v['name']}]"))
            out.setdefault(f"{prefix}[{v['name']}]", "present")
    else:
        out[prefix] = value
    return out


def _shown(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def spec_diff(old: dict, new: dict) -> list[dict]:
    """The changed keys between two spec dumps, each {"key", "old", "new"} as text, in key order. A named item
    added or removed is one line ("features[X]": absent -> present), not one per field."""
    a, b = _flatten(old), _flatten(new)
    gone = {k for k in a if k.endswith("]") and k not in b}
    came = {k for k in b if k.endswith("]") and k not in a}
    out = []
    for key in sorted(set(a) | set(b)):
        inside = [g for g in gone | came if key != g and key.startswith(g + ".")]
        if inside or a.get(key) == b.get(key):
            continue
        out.append({"key": key, "old": "absent" if key not in a else _shown(a[key]),
                    "new": "absent" if key not in b else _shown(b[key])})
    return out


def metric_deltas(old: dict, new: dict) -> list[dict]:
    """CHANGE_METRICS present in either run: previous, this, delta (None where one side lacks it)."""
    out = []
    for key, label, places in CHANGE_METRICS:
        if key not in old and key not in new:
            continue
        a, b = old.get(key), new.get(key)
        out.append({"metric": key, "label": label, "previous": a, "this": b, "places": places,
                    "delta": None if a is None or b is None else float(b) - float(a)})
    return out


def change_log(name: str, version: str, this: dict, previous: dict | None) -> dict:
    """`this` / `previous`: {"version", "data_hash", "spec": dump or None, "spec_hash", "metrics"}."""
    if previous is None:
        return {"model": name, "version": version, "previous_version": None,
                "summary": f"first version of {name}", "data": None, "spec": [], "metrics": []}
    data = {"previous": previous.get("data_hash"), "this": this.get("data_hash")}
    data["changed"] = data["previous"] != data["this"]
    if previous.get("spec") is not None and this.get("spec") is not None:
        spec = spec_diff(previous["spec"], this["spec"])
    elif previous.get("spec_hash") != this.get("spec_hash"):
        spec = [{"key": "(spec hash; the previous spec was not recorded)", "old": str(previous.get("spec_hash")),
                 "new": str(this.get("spec_hash"))}]
    else:
        spec = []
    deltas = metric_deltas(previous.get("metrics", {}), this.get("metrics", {}))
    auc = next((d for d in deltas if d["metric"] == "test_auc" and d["delta"] is not None), None)
    parts = [f"against version {previous['version']}: training data {'changed' if data['changed'] else 'unchanged'}",
             f"{len(spec)} spec change{'s' if len(spec) != 1 else ''}"]
    if auc:
        parts.append(f"test AUC {auc['previous']:.4f} -> {auc['this']:.4f} ({auc['delta']:+.4f})")
    return {"model": name, "version": version, "previous_version": previous["version"], "summary": ", ".join(parts),
            "data": data, "spec": spec, "metrics": deltas}


def _num(value, places: int) -> str:
    if value is None:
        return "n/a"
    return f"{float(value):.{places}f}" if places else f"{float(value):.0f}"


def _delta(d: dict) -> str:
    if d["delta"] is None:
        return "n/a"
    return f"{d['delta']:+.{d['places']}f}" if d["places"] else f"{d['delta']:+.0f}"


def changelog_tags(log: dict) -> dict[str, str]:
    """`changelog.*` version tags: the summary, the previous version, the data, the spec keys changed and the
    metric deltas, each one readable line."""
    out = {"summary": log["summary"], "previous_version": log["previous_version"] or "none (first version)"}
    if log["previous_version"] is not None:
        d = log["data"]
        out["data"] = (f"changed: {str(d['previous'])[:12]} -> {str(d['this'])[:12]}" if d["changed"]
                       else f"unchanged ({str(d['this'])[:12]})")
        out["spec"] = "; ".join(f"{c['key']}: {c['old']} -> {c['new']}" for c in log["spec"]) or "unchanged"
        out["metrics"] = "; ".join(f"{m['label']} {_num(m['previous'], m['places'])} -> {_num(m['this'], m['places'])}"
                                   f" ({_delta(m)})" for m in log["metrics"]) or "none compared"
    return {CHANGELOG_PREFIX + k: str(v)[:_TAG_MAX] for k, v in out.items()}


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def changelog_markdown(log: dict, limit: int = 40) -> str:
    """The change log as Markdown (the run artifact and the version description the MLflow UI renders)."""
    lines = [f"### Change log: {log['model']} version {log['version']}", "", log["summary"][:1].upper()
             + log["summary"][1:] + "."]
    if log["previous_version"] is None:
        return "\n".join(lines) + "\n"
    d = log["data"]
    lines += ["", f"**Training data** (content hash): {'changed' if d['changed'] else 'unchanged'}, "
              f"`{str(d['previous'])[:16]}` -> `{str(d['this'])[:16]}`", ""]
    if log["spec"]:
        lines += ["**Spec changes**", "", "| key | previous | this |", "|---|---|---|"]
        lines += [f"| `{_md(c['key'])}` | {_md(c['old'])[:200]} | {_md(c['new'])[:200]} |" for c in log["spec"][:limit]]
        if len(log["spec"]) > limit:
            lines.append(f"| ... | {len(log['spec']) - limit} more in changelog/changelog.json | |")
    else:
        lines.append("**Spec**: unchanged")
    if log["metrics"]:
        lines += ["", "**Metrics**", "", "| metric | previous | this | change |", "|---|---:|---:|---:|"]
        lines += [f"| {m['label']} | {_num(m['previous'], m['places'])} | {_num(m['this'], m['places'])} | "
                  f"{_delta(m)} |" for m in log["metrics"]]
    return "\n".join(lines) + "\n"


def _spec_of_run(run_id: str) -> dict | None:
    """The spec dump a training run logged (spec/spec.json), or None."""
    import mlflow  # heavy: see registry.configure

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/spec/spec.json")
    except Exception:  # an artifact never logged (an older or a recalibration run), a store without it
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def previous_of(client, name: str, version: str) -> dict | None:
    """The previous complete version of the registered model (the highest lower number), as change_log reads
    it; None for the first."""
    lower = [v for v in registry.registered_versions(client, name) if int(v) < int(version)]
    for v in reversed(lower):
        mv = client.get_model_version(name, v)
        if mv.tags.get("creditgov.registration") != "complete":
            continue
        run = client.get_run(mv.run_id)
        return {"version": v, "data_hash": mv.tags.get("train_data_hash") or mv.tags.get("recalibration_data_hash"),
                "spec_hash": mv.tags.get("spec_hash"), "spec": _spec_of_run(mv.run_id),
                "metrics": dict(run.data.metrics)}
    return None


def record_registration(spec: PipelineSpec, version: str, metrics: dict, data_hash: str,
                        gates: list[GateResult] | None = None, day: date | None = None) -> tuple[dict, dict]:
    """At registration, inside the version's run: the inventory entry (tags on the registered model and the
    version) and the change log against the previous version (tags, run artifacts, version description, with
    the registration `gates` when given). Returns (inventory entry, change log) for the model card."""
    import mlflow  # heavy: see registry.configure

    c, name = registry.client(), spec.registry.model_name
    day = day or datetime.now(timezone.utc).date()
    with registry.backend_errors(f"record the inventory and change log of {name} v{version}"):
        item = entry(spec, day)
        set_inventory_tags(c, name, version, item)
        this = {"version": version, "data_hash": data_hash, "spec_hash": spec.content_hash,
                "spec": spec.model_dump(mode="json"), "metrics": metrics}
        log = change_log(name, version, this, previous_of(c, name, version))
        for k, v in changelog_tags(log).items():
            c.set_model_version_tag(name, version, k, v)
        md = changelog_markdown(log)
        mlflow.log_dict(log, "changelog/changelog.json")
        mlflow.log_text(md, "changelog/changelog.md")
        mv = c.get_model_version(name, version)
        if gates:
            md += "\n" + gates_markdown("### Gates at registration", gates)
        c.update_model_version(name, version, description=((mv.description or "").rstrip() + "\n\n" + md).strip())
    return item, log


def inventory_markdown(name: str, item: dict) -> str:
    """The registered model's description (the MLflow UI renders it): its inventory entry."""
    rows = [("owner", item["owner"]), ("validator", item["validator"]), ("risk tier", item["risk_tier"]),
            ("intended use", item["intended_use"]), ("next review", f"{item['next_review']} ({item['review']})")]
    lines = [f"### Model inventory: {name}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in rows]
    if item["approval_conditions"]:
        lines += ["", "**Approval conditions**", ""] + [f"{i}. {_md(c)}" for i, c in
                                                        enumerate(item["approval_conditions"], 1)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- registry status

def registry_status(name: str, version: str, today: date | None = None) -> dict:
    """What the registry says of a version now: aliases, approval, the gates of its last evaluation, its
    inventory tags (with whether the review is overdue) and every monitoring verdict, oldest first."""
    c = registry.client()
    today = today or datetime.now(timezone.utc).date()
    with registry.backend_errors(f"read the registry status of {name} v{version}"):
        mv = c.get_model_version(name, version)
        tags = dict(mv.tags)
        aliases = sorted(getattr(mv, "aliases", []) or [])
    summary = tags.get(SUMMARY_TAG) or ""
    gates = sorted(({"name": k[len("gate."):], "result": v.split(":", 1)[0], "detail": v.split(":", 1)[-1].strip()}
                    for k, v in tags.items() if k.startswith("gate.")),  # in evaluation order, as the summary
                   key=lambda g: (summary.find(g["name"] + ": ") % (len(summary) + 1), g["name"]))
    inv = {k[len(PREFIX):]: v for k, v in tags.items() if k.startswith(PREFIX)}
    overdue = None
    if inv.get("next_review"):
        try:
            overdue = date.fromisoformat(inv["next_review"]) < today
        except ValueError:
            overdue = None
    return {"model": name, "version": str(version), "as_of": today.isoformat(), "aliases": aliases,
            "approved_by": tags.get("approved_by"), "approved_at": tags.get("approved_at"),
            "approval": tags.get("approval"), "gates": gates, "gates_summary": tags.get(SUMMARY_TAG),
            "inventory": inv, "review_overdue": overdue,
            "verdicts": [{"seq": v.seq, "verdict": v.verdict, "batch": v.batch, "run_id": v.run_id}
                         for v in registry.verdict_history(tags)],
            "changelog": tags.get(CHANGELOG_PREFIX + "summary")}


_VERDICT_COLOURS = {"stable": "#2e7d32", "watch": "#b7791f", "recalibrate": "#c05621", "rebuild": "#a3201b"}


def status_html(status: dict) -> str:
    """The registry status as an HTML section (escaped), for a model card shown after the fact."""
    e = html.escape
    out = [f'<h2 id="registry-status">Status in the registry (as of {e(status["as_of"])})</h2>',
           f'<p class="meta">Read from the MLflow registry when this page was made: what happened to '
           f'{e(status["model"])} version {e(status["version"])} after its training run (approval, monitoring).</p>',
           "<table>",
           f'<tr><th>aliases</th><td>{e(", ".join("@" + a for a in status["aliases"])) or "none"}</td></tr>',
           "<tr><th>approval</th><td>" + (f'approved by {e(status["approved_by"])} on {e(str(status["approved_at"]))}'
                                          f' ({e(str(status["approval"]))})' if status["approved_by"]
                                          else "not approved") + "</td></tr>"]
    inv = status["inventory"]
    if inv.get("next_review"):
        due = (' <b class="fail">overdue</b>' if status["review_overdue"] else "")
        out.append(f'<tr><th>next review</th><td>{e(inv["next_review"])}{due}</td></tr>')
    if status["changelog"]:
        out.append(f'<tr><th>change log</th><td>{e(status["changelog"])}</td></tr>')
    out.append("</table>")
    if status["gates"]:
        out += ["<h3>Gates at the last promotion attempt (MLflow tags <code>gate.*</code>)</h3>",
                "<table><tr><th>gate</th><th>result</th><th>value (rule)</th></tr>"]
        out += [f'<tr><td>{e(g["name"])}</td><td class="{"pass" if g["result"] == "pass" else "fail"}">'
                f'{e(g["result"])}</td><td>{e(g["detail"])}</td></tr>' for g in status["gates"]]
        out.append("</table>")
    verdicts = status["verdicts"]
    out.append(f"<h3>Monitoring verdicts ({len(verdicts)}, oldest first; MLflow tags <code>monitor.verdict.*</code>)</h3>")
    if verdicts:
        out.append("<table><tr><th>#</th><th>batch</th><th>verdict</th><th>monitoring run</th></tr>")
        out += [f'<tr><td class="num">{v["seq"]}</td><td>{e(v["batch"])}</td><td style="color:'
                f'{_VERDICT_COLOURS.get(v["verdict"], "inherit")}"><b>{e(v["verdict"])}</b></td><td><code>'
                f'{e(v["run_id"])}</code></td></tr>' for v in verdicts]
        out.append("</table>")
        latest = verdicts[-1]
        if latest["verdict"] == "rebuild":
            out.append(f'<p class="fail">The latest verdict is <b>rebuild</b> ({e(latest["batch"])}): decisions with this '
                       "version are flagged or refused (spec monitoring.on_rebuild).</p>")
    else:
        out.append('<p class="meta">Never monitored.</p>')
    return "\n".join(out)


def with_status(card_html: str, status: dict) -> str:
    """A stored model card with the registry status added before its end."""
    section = status_html(status)
    at = card_html.rfind("</body>")
    return card_html[:at] + section + "\n" + card_html[at:] if at >= 0 else card_html + section
