"""Decide and explain a batch: validate -> score with the champion -> policy -> reasons -> decision log.

The decision log has one row per input row: decided rows carry PD, tier, action, limit,
rules, reasons (en / zh) and the exact attributions; quarantined rows carry the rules
they broke. Rows in = rows decided + rows quarantined. Same input, model and policy:
byte-identical log (the decision time is the batch's as-of date, not the wall clock).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.spec import PipelineSpec

SHAP_PREFIX = "shap__"
INPUT_PREFIX = "input__"


@dataclass(frozen=True)
class DecideResult:
    log: pd.DataFrame
    path: Path
    rows_in: int
    rows_decided: int
    rows_quarantined: int
    model_version: str
    run_id: str
    input_label: str
    input_hash: str


def _canonical(v) -> object:
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        # 9.0 and 9 are the same input whatever dtype the reader chose
        return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)
    return str(v)


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """SHA-256 of each row's values in `columns` (canonical JSON), independent of dtype quirks."""
    out = []
    for rec in frame[columns].itertuples(index=False, name=None):
        text = json.dumps([_canonical(v) for v in rec], separators=(",", ":"), ensure_ascii=False)
        out.append(hashlib.sha256(text.encode()).hexdigest())
    return out


def explain_batch(model, clean: pd.DataFrame, spec: PipelineSpec):
    """PD, calibrated log-odds, exact attributions (grouped to catalogue features) and the additivity error."""
    from creditgov.reasons import check_additivity, group_by_feature

    log_odds = model.log_odds(clean)
    phi, base = model.contributions(clean)
    err = check_additivity(base, phi, log_odds)
    phi_f, features = group_by_feature(phi, model.feature_names, {e.name: e.name for e in model.encodings})
    return 1.0 / (1.0 + np.exp(-log_odds)), log_odds, phi_f, features, base, err


def score_and_decide(model, frame: pd.DataFrame, spec: PipelineSpec):
    """The (action, PD) the policy gives each row under this model; used by the counterfactual search."""
    from creditgov.policy import apply_policy

    p = model.predict_pd(frame)
    return apply_policy(frame, p, spec.policy)["action"].to_numpy(), p


def _reason_lists(top, decided: pd.DataFrame, spec: PipelineSpec):
    from creditgov.policy import rule_reasons

    rr = rule_reasons(spec.policy)
    feat_reason = {f.name: f.reason for f in spec.features}
    codes, en, zh, attr = [], [], [], []
    for i, reasons in enumerate(top):
        c, e, z, a = [], [], [], []
        by = decided["decided_by"].iloc[i]
        if by.startswith("rule:") and by[5:] in rr:  # a decision made by a rule names the rule first
            name = by[5:]
            c.append("rule:" + name)
            e.append(rr[name]["en"])
            z.append(rr[name]["zh"])
            a.append(None)
        for feat, val in reasons[: spec.policy.max_reasons - len(c) if c else spec.policy.max_reasons]:
            c.append(feat)
            e.append(feat_reason[feat].en)
            z.append(feat_reason[feat].zh)
            a.append(val)
        codes.append(c), en.append(e), zh.append(z), attr.append(a)
    return codes, en, zh, attr


def _previous_review(spec: PipelineSpec, model, path: str, suite: dict) -> tuple[pd.Series, pd.DataFrame]:
    """PD and attributions of each account at its previous review (valid rows of that batch), by id."""
    from creditgov import data, expectations, validate

    idc = spec.source.id_column
    prev = data.read_path(path, spec)
    outcome = validate.validate(prev.frame, spec, expectations.for_scoring(suite, spec, prev.frame.columns), prev.label)
    clean = outcome.clean
    p, _, phi, features, _, _ = explain_batch(model, clean, spec)
    ids = clean[idc].astype(str).to_numpy()
    return pd.Series(p, index=ids), pd.DataFrame(phi, index=ids, columns=features)


def _what_changed(phi_now: np.ndarray, features: list[str], prev_phi: pd.DataFrame, ids: np.ndarray,
                  mask: np.ndarray, spec: PipelineSpec, k: int = 3):
    """For rows in `mask` with a previous review: the features whose attribution rose most since then."""
    reason = {f.name: f.reason for f in spec.features}
    out_f, out_en, out_zh, out_d = ([[] for _ in range(len(ids))] for _ in range(4))
    have = mask & (pd.Index(prev_phi.index).get_indexer(ids) >= 0)
    rows = np.flatnonzero(have)
    if len(rows):
        delta = phi_now[rows] - prev_phi.loc[ids[rows], features].to_numpy()
        order = np.argsort(-delta, axis=1, kind="stable")
        for r, i in enumerate(rows):
            for j in order[r, :k]:
                if delta[r, j] > 0:
                    out_f[i].append(features[j])
                    out_en[i].append(reason[features[j]].en)
                    out_zh[i].append(reason[features[j]].zh)
                    out_d[i].append(float(delta[r, j]))
    return out_f, out_en, out_zh, out_d


def decide(spec: PipelineSpec, data_path: str | None = None, version: str | None = None,
           as_of: str | None = None, out_dir: str | Path = "decisions", log=print,
           previous: str | None = None) -> DecideResult:
    from creditgov import counterfactual, data, expectations, privacy, tracking, validate
    from creditgov.errors import SpecError
    from creditgov.policy import ADVERSE_ACTIONS, apply_policy
    from creditgov.reasons import top_reasons

    if spec.policy is None:
        raise SpecError(f"spec '{spec.name}' has no 'policy' section: nothing to decide with")
    as_of = as_of or date.today().isoformat()
    try:
        date.fromisoformat(as_of)
    except ValueError:
        raise SpecError(f"--as-of '{as_of}': not an ISO date (YYYY-MM-DD)") from None

    loaded = data.load(spec, data_path)
    suite = expectations.for_scoring(expectations.checked_suite(spec), spec, loaded.frame.columns)
    outcome = validate.validate(loaded.frame, spec, suite, loaded.label)
    validate.enforce_quarantine_share(outcome, spec, loaded.label)
    input_hash = data.content_hash(loaded.frame)

    tracking.configure()
    model, version, run_id = tracking.load_registered(spec.registry.model_name, version)
    clean = outcome.clean
    prev_phi = None
    idc = spec.source.id_column
    if policy_on_book := (spec.policy.on_book is not None):
        col = spec.policy.on_book.fields.previous_pd
        clean = clean.copy()
        if previous:
            prev_pd, prev_phi = _previous_review(spec, model, previous, suite)
            clean[col] = prev_pd.reindex(clean[idc].astype(str)).to_numpy()
        elif col not in clean.columns:
            clean[col] = np.nan  # first review: the risk-rise trigger cannot fire
    p, log_odds, phi, features, base, add_err = explain_batch(model, clean, spec)
    decided = apply_policy(clean, p, spec.policy)
    top = top_reasons(phi, features, spec.policy.max_reasons)
    codes, en, zh, attr = _reason_lists(top, decided, spec)

    adverse = decided["action"].isin(ADVERSE_ACTIONS).to_numpy()
    cf = [None] * len(clean)
    if adverse.any():
        found = counterfactual.search(clean[adverse], decided["action"].to_numpy()[adverse], spec,
                                      lambda f: score_and_decide(model, f, spec))
        for i, r in zip(np.flatnonzero(adverse), found):
            cf[i] = json.dumps(r, sort_keys=True)

    changed = ([[] for _ in range(len(clean))],) * 4
    if prev_phi is not None:
        changed = _what_changed(phi, features, prev_phi, clean[idc].astype(str).to_numpy(), adverse, spec)

    inputs = [f.name for f in spec.model_inputs]
    hash_cols = ([idc] if idc else []) + inputs
    policy = spec.policy
    rows = pd.DataFrame({
        "row_number": clean.index.to_numpy() + 1,
        "status": "decided",
        "quarantine_rules": None,
        "pd": p, "log_odds": log_odds, "tier": decided["tier"].to_numpy(),
        "action": decided["action"].to_numpy(), "decided_by": decided["decided_by"].to_numpy(),
        "limit": decided["limit"].to_numpy(), "previous_limit": decided["previous_limit"].to_numpy(),
        "review_queue": decided["review_queue"].to_numpy(),
        "rules_triggered": list(decided["rules_triggered"]),
        "reason_codes": codes, "reasons_en": en, "reasons_zh": zh, "reason_attributions": attr,
        "counterfactual": cf, "shap_base": base, "additivity_error": add_err,
        "changed_features": changed[0], "changed_en": changed[1], "changed_zh": changed[2],
        "changed_attribution_deltas": changed[3],
        "previous_pd": (clean[spec.policy.on_book.fields.previous_pd].to_numpy(dtype="float64") if policy_on_book
                        else np.full(len(clean), np.nan)),
    })
    for j, feat in enumerate(features):
        rows[SHAP_PREFIX + feat] = phi[:, j]
    for col in inputs:
        rows[INPUT_PREFIX + col] = clean[col].map(_canonical).astype(object).to_numpy()
    rows["input_row_hash"] = row_hashes(clean, [c for c in hash_cols if c in clean.columns])
    rows["account_key"] = privacy.pseudonymise(clean[idc]).to_numpy() if idc else rows["input_row_hash"].str[:24]

    q = outcome.quarantine
    qrows = pd.DataFrame({
        "row_number": q["row_number"].to_numpy(), "status": "quarantined", "quarantine_rules": q["rules"].to_numpy(),
        "action": "quarantined", "review_queue": False,
        "rules_triggered": [[] for _ in range(len(q))], "reason_codes": [[] for _ in range(len(q))],
        "reasons_en": [[] for _ in range(len(q))], "reasons_zh": [[] for _ in range(len(q))],
        "reason_attributions": [[] for _ in range(len(q))],
        "changed_features": [[] for _ in range(len(q))], "changed_en": [[] for _ in range(len(q))],
        "changed_zh": [[] for _ in range(len(q))], "changed_attribution_deltas": [[] for _ in range(len(q))],
        "input_row_hash": row_hashes(q, [c for c in hash_cols if c in q.columns]),
    })
    if idc:
        qrows["account_key"] = privacy.pseudonymise(q[idc]).to_numpy()
    else:
        qrows["account_key"] = qrows["input_row_hash"].str[:24]
    full = pd.concat([rows, qrows], ignore_index=True) if len(qrows) else rows
    full = full.sort_values("row_number", kind="stable").reset_index(drop=True)

    stamp = {"decision_time": f"{as_of}T00:00:00Z", "model_name": spec.registry.model_name,
             "model_version": version, "policy_name": policy.name, "policy_version": policy.version,
             "policy_hash": policy.content_hash, "spec_hash": spec.content_hash, "input_hash": input_hash,
             "input_source": loaded.label,
             "pseudonym_key": privacy.key_source()}
    for k, v in stamp.items():
        full[k] = v
    full.insert(0, "decision_id", [
        hashlib.sha256("|".join([spec.registry.model_name, version, policy.content_hash, h, as_of, str(r)]).encode())
        .hexdigest()[:32] for h, r in zip(full["input_row_hash"], full["row_number"])])
    if len(full) != outcome.rows_in:  # the invariant this whole module exists to keep
        raise RuntimeError(f"rows in {outcome.rows_in} != rows logged {len(full)}")

    path = write_log(full, Path(out_dir) / f"{spec.name}-{as_of}-v{version}-{input_hash[:12]}.parquet")
    log(f"{loaded.label}: {outcome.rows_in} rows in = {len(rows)} decided + {len(qrows)} quarantined; "
        f"model {spec.registry.model_name} v{version}, policy {policy.name} {policy.version} "
        f"({policy.content_hash[:12]}) -> {path}")
    return DecideResult(full, path, outcome.rows_in, len(rows), len(qrows), version, run_id, loaded.label, input_hash)


def write_log(frame: pd.DataFrame, path: Path) -> Path:
    """Write atomically (temporary name, then rename) so no half-written log is ever visible."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return path


def read_log(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)
