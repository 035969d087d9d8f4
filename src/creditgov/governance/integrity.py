"""Registry integrity: the MLflow registry agrees with the promotions the audit trail records.

`creditgov promote` writes each promotion twice: as tags and the `@champion` alias in the MLflow registry
(what the UI and `decide` read), and as a chained entry in the audit trail (what cannot be edited unnoticed).
Anyone with the MLflow UI can move an alias or edit a tag; this module compares the two and names every
difference, so `creditgov audit verify` fails (exit 8) when the registry was changed outside creditgov:

- each registered model's `@champion` is the version of the last promotion recorded as `promoted`;
  a champion with no recorded promotion, or a recorded champion whose alias was removed, is named;
- (when the trail records any promotion: a store kept for decisions only is not compared)
- the champion version's gate tags (`gate.<name>`), `gate_evidence`, `approved_by` and `approval` equal what
  the last promotion entry of that version recorded, and so does the readable `gates.summary` where present.
"""
from __future__ import annotations

import json
from pathlib import Path

from creditgov.governance import audit, inventory, registry
from creditgov.governance.gates import GateResult

# keys of a promotion entry's payload around the gate record (promote._record); the rest is the record itself
# tags a promotion made before they existed lacks: compared when present (the gate tags themselves always are)
OPTIONAL_TAGS = (inventory.SUMMARY_TAG,)
_ENVELOPE = ("model_name", "model_version", "outcome", "approver", "at", "previous_champion", "seq", "recorded_at")


def expected_tags(last: dict, promoted: dict) -> dict[str, str]:
    """The version tags the trail implies: one per gate from the version's `last` promotion entry (every attempt,
    refused too, rewrites them), the evidence record and who approved and how from its `promoted` entry."""
    tags = {f"gate.{g['name']}": f"{'pass' if g['passed'] else 'fail'}: {g['value']} ({g['rule']})"
            for g in last.get("gates", [])}
    tags[inventory.SUMMARY_TAG] = inventory.gates_summary(
        [GateResult(g["name"], g["rule"], g["value"], g["passed"]) for g in last.get("gates", [])])
    record = {k: v for k, v in promoted.items() if k not in _ENVELOPE}
    tags["gate_evidence"] = json.dumps(record, sort_keys=True)
    tags["approved_by"] = promoted["approver"]
    if "approval" in promoted:
        tags["approval"] = promoted["approval"]
    return tags


def registry_findings(entries: list[dict], champions: dict[str, str | None], tags_of) -> list[str]:
    """Differences between the recorded promotions (`entries`, audit.promotions) and the registry: `champions`
    maps each registered model to its @champion version (None: no alias); `tags_of(name, version)` gives a
    version's tags."""
    problems = []
    last_promoted: dict[str, dict] = {}
    last_of_version: dict[tuple[str, str], dict] = {}
    for e in entries:
        last_of_version[(e["model_name"], str(e["model_version"]))] = e
        if e.get("outcome") == "promoted":
            last_promoted[e["model_name"]] = e
    for name in sorted(set(champions) | set(last_promoted)):
        champion, rec = champions.get(name), last_promoted.get(name)
        if rec is None:
            if champion is not None:
                problems.append(f"registry: {name} @champion is version {champion}, but the audit trail records no "
                                "promotion of it (alias set outside creditgov)")
            continue
        recorded = str(rec["model_version"])
        if champion is None:
            problems.append(f"registry: {name} has no @champion, but the audit trail's last promotion (entry "
                            f"{rec['seq']}) made version {recorded} champion (alias removed outside creditgov)")
            continue
        if champion != recorded:
            problems.append(f"registry: {name} @champion is version {champion}, but the audit trail's last promotion "
                            f"(entry {rec['seq']}) made version {recorded} champion (alias moved outside creditgov)")
            continue
        entry = last_of_version[(name, recorded)]
        tags = tags_of(name, recorded)
        for key, want in sorted(expected_tags(entry, rec).items()):
            have = tags.get(key)
            if have is None and key in OPTIONAL_TAGS:
                continue
            if have != want:
                what = "removed" if have is None else "edited"
                problems.append(f"registry: {name} version {recorded} tag '{key}' is {have!r}, the audit trail "
                                f"(entry {entry['seq']}) recorded {want!r} (tag {what} outside creditgov)")
    return problems


def registry_in_use() -> bool:
    """Whether there is a registry to compare: a tracking URI the user set, or the project's mlflow.db (reading
    must not create one)."""
    uri = registry.tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists()


def verify_registry(url: str | None = None) -> list[str]:
    """registry_findings against the MLflow registry creditgov uses (registry.configure); `url`: the audit
    store."""
    from mlflow.exceptions import MlflowException  # heavy: see registry.configure

    entries = audit.promotions(url)
    if not entries:  # a trail that records no promotion (a separate store for decisions only) says nothing here
        return []
    registry.configure()
    c = registry.client()
    champions: dict[str, str | None] = {}
    with registry.backend_errors("read the registry for audit verify"):
        token = None
        while True:
            page = c.search_registered_models(max_results=100, page_token=token)
            for m in page:
                aliases = getattr(m, "aliases", {}) or {}
                champions[m.name] = str(aliases["champion"]) if "champion" in aliases else None
            token = page.token
            if not token:
                break

        def tags_of(name: str, version: str) -> dict:
            try:
                return dict(c.get_model_version(name, version).tags)
            except MlflowException:
                return {}

        return registry_findings(entries, champions, tags_of)
