"""Decide and explain a batch: validate -> score with the champion -> policy -> reasons -> decision log.

The decision log has one row per input row: decided rows carry PD, tier, action, limit,
rules, reasons (en / zh) and the exact attributions; quarantined rows carry the rules
they broke. Rows in = rows decided + rows quarantined. Same input, model and policy:
byte-identical log (the decision time is the batch's as-of date, not the wall clock).

Built for large batches: everything per row is vectorised or computed once per distinct
value (canonical input values, row hashes, reason lists), and the counterfactual search
scores its candidates on the encoded feature matrix. The stages below (`decide_part`,
`counterfactuals`, `log_rows`, `quarantine_rows`, `finish_log`) are also what the Dask
engine (creditgov.engine) runs per partition, so both engines write the same bytes.
"""
from __future__ import annotations

import gc
import hashlib
import hmac
import json
from contextlib import contextmanager
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


def _canonical_uniques(uniques) -> tuple[list, list[str]]:
    """_canonical of each distinct value and its JSON text; numbers vectorised, the rest one by one."""
    from json.encoder import encode_basestring

    u = np.asarray(uniques)
    if u.dtype.kind == "f":
        finite = np.isfinite(u)
        whole = finite & (u == np.floor(np.where(finite, u, 0))) & (np.abs(np.where(finite, u, 0)) < 2**53)
        canon = np.empty(len(u), dtype=object)
        canon[whole] = u[whole].astype(np.int64).tolist()
        canon[~whole] = u[~whole].tolist()
        canon = canon.tolist()
        texts = [str(c) if w else float.__repr__(c) if f else json.dumps(c)
                 for c, w, f in zip(canon, whole.tolist(), finite.tolist())]
        return canon, texts
    if u.dtype.kind in "iu":
        canon = u.tolist()
        return canon, list(map(str, canon))
    canon = [_canonical(v) for v in uniques]
    texts = [encode_basestring(c) if type(c) is str else json.dumps(c, ensure_ascii=False) for c in canon]
    return canon, texts


def _canonical_column(s: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(canonical value, its JSON text) of each value of `s`: computed once per distinct value."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    canon, texts = _canonical_uniques(uniques)
    values = np.empty(len(canon) + 1, dtype=object)
    values[: len(canon)] = canon
    out = values[codes]
    txt = np.array(texts + ["null"], dtype=object)[codes]
    na = np.flatnonzero(codes < 0)
    if len(na):  # missing values: None, except odd ones such as NaT, exactly as _canonical says
        raw = s.to_numpy(dtype=object)[na]
        c = [_canonical(v) for v in raw]
        out[na] = np.array(c + [None], dtype=object)[:-1]
        txt[na] = np.array([json.dumps(x, ensure_ascii=False) for x in c] + [""], dtype=object)[:-1]
    return out, txt.tolist()


def _as_mapped(values: np.ndarray) -> np.ndarray:
    """What `Series.map(_canonical).astype(object)` holds for these canonical values: pandas infers one
    dtype for the mapped column (ints with a missing value become floats, missing becomes NaN)."""
    try:
        from pandas._libs.lib import maybe_convert_objects

        converted = maybe_convert_objects(np.asarray(values, dtype=object))
    except (ImportError, TypeError):  # pragma: no cover - the same, the slow way
        converted = pd.Series(values, dtype=object).map(lambda v: v).to_numpy()
    return np.asarray(converted).astype(object)


def _hashes_from_texts(texts: list[list[str]], n: int) -> list[str]:
    if not texts:
        return [hashlib.sha256(b"[]").hexdigest()] * n
    sha = hashlib.sha256
    return [sha(("[" + ",".join(parts) + "]").encode()).hexdigest() for parts in zip(*texts)]


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """SHA-256 of each row's values in `columns` (canonical JSON), independent of dtype quirks."""
    return _hashes_from_texts([_canonical_column(frame[c])[1] for c in columns], len(frame))


def pseudonymise(values: pd.Series) -> np.ndarray:
    """privacy.pseudonymise, the same keyed hashes, computed from one prepared HMAC state."""
    from creditgov import privacy

    base = hmac.new(privacy._key(), digestmod=hashlib.sha256)
    na = pd.isna(values).to_numpy()
    out = []
    for v, missing in zip(values.to_numpy(dtype=object).tolist(), na.tolist()):
        if missing:
            out.append(None)
        else:
            h = base.copy()
            h.update(str(v).encode())
            out.append(h.hexdigest()[:24])
    return np.array(out + [None], dtype=object)[:-1]


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


def _policy_columns(spec: PipelineSpec) -> list[str]:
    pol = spec.policy
    cols = {pol.limit.capacity_feature} | {r.when.feature for r in pol.rules} | spec.policy_columns
    return sorted(cols)


def candidate_evaluator(model, rows: pd.DataFrame, spec: PipelineSpec):
    """evaluate(row_idx, changes) -> (actions, PDs) of rows[row_idx] with changed columns, for the
    counterfactual search: the same numbers as score_and_decide on the changed rows, without building
    them. Rows are encoded once into xgboost's float32 matrix; a candidate copies its row and sets the
    changed columns. None when the model's encoding cannot be reproduced (then frames are built)."""
    from creditgov.fastshap import FastTreeShap, UnsupportedModel
    from creditgov.model import encode, sigmoid
    from creditgov.policy import apply_policy

    rows = rows.reset_index(drop=True)
    try:
        X = FastTreeShap(model.booster_).matrix(encode(rows, model.encodings))
    except (UnsupportedModel, ValueError, TypeError):
        return None
    col = {name: j for j, name in enumerate(model.feature_names)}
    pol_cols = [c for c in _policy_columns(spec) if c in rows.columns]
    pol_frame = rows[pol_cols]
    booster, a, b = model.booster_, model.calib_a_, model.calib_b_

    def evaluate(row_idx: np.ndarray, changes: dict) -> tuple[np.ndarray, np.ndarray]:
        Xc = X[row_idx]
        for c, v in changes.items():
            Xc[:, col[c]] = v  # float64 -> float32, as xgboost converts the encoded column
        margin = booster.inplace_predict(Xc, predict_type="margin").astype("float64")
        p = sigmoid(a * margin + b)
        frame = pol_frame.iloc[row_idx].reset_index(drop=True)
        for c, v in changes.items():
            if c in frame.columns:
                frame[c] = v
        return apply_policy(frame, p, spec.policy, rules_triggered=False)["action"].to_numpy(), p

    return evaluate


def _reason_lists(phi: np.ndarray, features: list[str], decided_by: np.ndarray, spec: PipelineSpec):
    """Per row: reason codes, statements (en, zh) and attributions; a deciding rule first, then the
    features whose attribution raised risk (> 0), largest first, up to max_reasons in all."""
    from creditgov.policy import rule_reasons

    k = spec.policy.max_reasons
    rr = rule_reasons(spec.policy)
    feat_reason = {f.name: f.reason for f in spec.features}
    n = phi.shape[0]
    if n == 0:
        return [], [], [], []
    order = np.argsort(-phi, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(phi, order, axis=1)
    npos = (top > 0).sum(axis=1)  # sorted descending: the positive ones come first
    by_codes, by_values = pd.factorize(pd.Series(decided_by, dtype=object))
    prefix = []
    for by in by_values:
        name = by[5:] if isinstance(by, str) and by.startswith("rule:") else None
        prefix.append((["rule:" + name], [rr[name]["en"]], [rr[name]["zh"]], [None]) if name in rr else None)
    is_rule = np.array([p is not None for p in prefix] + [False])[by_codes]
    count = np.where(is_rule, np.minimum(npos, max(k - 1, 0)), npos)
    # codes and statements depend only on (deciding rule, the top features, how many): one list per pattern
    cols = np.arange(order.shape[1])[None, :]
    pattern = np.column_stack([by_codes, count, np.where(cols < count[:, None], order, -1)])
    _, first, inv = np.unique(pattern, axis=0, return_index=True, return_inverse=True)
    empty = ([], [], [], [])
    luts = ([], [], [])
    for r in first.tolist():
        pre = prefix[by_codes[r]] if by_codes[r] >= 0 and prefix[by_codes[r]] is not None else empty
        idx = order[r, : count[r]].tolist()
        luts[0].append(tuple(pre[0] + [features[i] for i in idx]))
        luts[1].append(tuple(pre[1] + [feat_reason[features[i]].en for i in idx]))
        luts[2].append(tuple(pre[2] + [feat_reason[features[i]].zh for i in idx]))
    inv = inv.ravel().tolist()
    codes, en, zh = ([list(lut[i]) for i in inv] for lut in luts)
    rule_rows = is_rule.tolist()
    attr = [([None] + v[:m]) if r else (v if m == k else v[:m])
            for v, m, r in zip(top.tolist(), count.tolist(), rule_rows)]
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


# --------------------------------------------------------------------------- stages (shared with the Dask engine)


@dataclass
class DecidedPart:
    """A batch's (or partition's) valid rows, scored, explained and decided; counterfactuals to come."""

    clean: pd.DataFrame
    p: np.ndarray
    log_odds: np.ndarray
    phi: np.ndarray
    features: list[str]
    base: np.ndarray
    add_err: np.ndarray
    decided: pd.DataFrame
    adverse: np.ndarray


def with_previous_pd(clean: pd.DataFrame, spec: PipelineSpec, prev_pd: pd.Series | None) -> pd.DataFrame:
    """The on-book policy's previous-PD column: from the previous review by id, else missing."""
    if spec.policy.on_book is None:
        return clean
    col = spec.policy.on_book.fields.previous_pd
    clean = clean.copy()
    if prev_pd is not None:
        clean[col] = prev_pd.reindex(clean[spec.source.id_column].astype(str)).to_numpy()
    elif col not in clean.columns:
        clean[col] = np.nan  # first review: the risk-rise trigger cannot fire
    return clean


def decide_part(model, clean: pd.DataFrame, spec: PipelineSpec) -> DecidedPart:
    from creditgov.policy import ADVERSE_ACTIONS, apply_policy

    p, log_odds, phi, features, base, add_err = explain_batch(model, clean, spec)
    decided = apply_policy(clean, p, spec.policy)
    adverse = decided["action"].isin(ADVERSE_ACTIONS).to_numpy()
    return DecidedPart(clean, p, log_odds, phi, features, base, add_err, decided, adverse)


def adverse_rows(part: DecidedPart, spec: PipelineSpec) -> pd.DataFrame:
    """The adverse rows, only the columns the model and the policy read (what the search needs)."""
    cols = [f.name for f in spec.model_inputs] + _policy_columns(spec)
    cols = [c for c in dict.fromkeys(cols) if c in part.clean.columns]
    return part.clean.loc[part.adverse, cols].reset_index(drop=True)


def counterfactuals(model, part: DecidedPart, spec: PipelineSpec) -> list:
    """JSON of the counterfactual of each adverse row (None for the others)."""
    from creditgov import counterfactual

    cf = [None] * len(part.clean)
    if part.adverse.any():
        rows = adverse_rows(part, spec)
        actions = part.decided["action"].to_numpy()[part.adverse]
        evaluate = candidate_evaluator(model, rows, spec)
        # grid rounding follows the whole batch's valid values, as the partitioned engine does
        found = counterfactual.search(rows, actions, spec, lambda f: score_and_decide(model, f, spec),
                                      evaluate=evaluate, integral=counterfactual.integral_flags(part.clean, spec))
        for i, r in zip(np.flatnonzero(part.adverse), found):
            cf[i] = json.dumps(r, sort_keys=True)
    return cf


def log_rows(part: DecidedPart, spec: PipelineSpec, cf: list, changed=None, row_offset: int = 0) -> pd.DataFrame:
    """The decision-log rows of the decided rows (before the batch-wide stamps)."""
    clean, decided = part.clean, part.decided
    n = len(clean)
    idc = spec.source.id_column
    codes, en, zh, attr = _reason_lists(part.phi, part.features, decided["decided_by"].to_numpy(), spec)
    if changed is None:
        changed = ([[] for _ in range(n)],) * 4
    inputs = [f.name for f in spec.model_inputs]
    hash_cols = [c for c in ([idc] if idc else []) + inputs if c in clean.columns]
    canon = {c: _canonical_column(clean[c]) for c in dict.fromkeys(hash_cols + inputs)}
    on_book = spec.policy.on_book
    rows = pd.DataFrame({
        "row_number": clean.index.to_numpy() + 1 + row_offset,
        "status": "decided",
        "quarantine_rules": None,
        "pd": part.p, "log_odds": part.log_odds, "tier": decided["tier"].to_numpy(),
        "action": decided["action"].to_numpy(), "decided_by": decided["decided_by"].to_numpy(),
        "limit": decided["limit"].to_numpy(), "previous_limit": decided["previous_limit"].to_numpy(),
        "review_queue": decided["review_queue"].to_numpy(),
        "rules_triggered": list(decided["rules_triggered"]),
        "reason_codes": codes, "reasons_en": en, "reasons_zh": zh, "reason_attributions": attr,
        "counterfactual": cf, "shap_base": part.base, "additivity_error": part.add_err,
        "changed_features": changed[0], "changed_en": changed[1], "changed_zh": changed[2],
        "changed_attribution_deltas": changed[3],
        "previous_pd": (clean[on_book.fields.previous_pd].to_numpy(dtype="float64") if on_book is not None
                        else np.full(n, np.nan)),
    })
    shap = pd.DataFrame(part.phi, columns=[SHAP_PREFIX + f for f in part.features])
    inp = pd.DataFrame({INPUT_PREFIX + c: _as_mapped(canon[c][0]) for c in inputs}, dtype=object)
    tail = pd.DataFrame({"input_row_hash": _hashes_from_texts([canon[c][1] for c in hash_cols], n)})
    rows = pd.concat([rows, shap, inp, tail], axis=1)
    rows["account_key"] = pseudonymise(clean[idc]) if idc else rows["input_row_hash"].str[:24]
    return rows


def quarantine_rows(q: pd.DataFrame, spec: PipelineSpec, row_offset: int = 0) -> pd.DataFrame:
    idc = spec.source.id_column
    inputs = [f.name for f in spec.model_inputs]
    hash_cols = ([idc] if idc else []) + inputs
    n = len(q)
    qrows = pd.DataFrame({
        "row_number": q["row_number"].to_numpy() + row_offset, "status": "quarantined",
        "quarantine_rules": q["rules"].to_numpy(),
        "action": "quarantined", "review_queue": False,
        "rules_triggered": [[] for _ in range(n)], "reason_codes": [[] for _ in range(n)],
        "reasons_en": [[] for _ in range(n)], "reasons_zh": [[] for _ in range(n)],
        "reason_attributions": [[] for _ in range(n)],
        "changed_features": [[] for _ in range(n)], "changed_en": [[] for _ in range(n)],
        "changed_zh": [[] for _ in range(n)], "changed_attribution_deltas": [[] for _ in range(n)],
        "input_row_hash": row_hashes(q, [c for c in hash_cols if c in q.columns]),
    })
    if idc:
        # the quarantine frame already holds pseudonymised identifiers (validate.py): as before, key them again
        qrows["account_key"] = pseudonymise(q[idc]) if n else np.array([], dtype=object)
    else:
        qrows["account_key"] = qrows["input_row_hash"].str[:24]
    return qrows


def finish_log(rows: pd.DataFrame, qrows: pd.DataFrame, spec: PipelineSpec, version: str, as_of: str,
               input_hash: str, input_label: str) -> pd.DataFrame:
    """One frame in row order with the batch stamps and the decision ids."""
    from creditgov import privacy

    policy = spec.policy
    full = pd.concat([rows, qrows], ignore_index=True) if len(qrows) else rows
    if not full["row_number"].is_monotonic_increasing:
        full = full.sort_values("row_number", kind="stable")
    full = full.reset_index(drop=True)
    stamp = {"decision_time": f"{as_of}T00:00:00Z", "model_name": spec.registry.model_name,
             "model_version": version, "policy_name": policy.name, "policy_version": policy.version,
             "policy_hash": policy.content_hash, "spec_hash": spec.content_hash, "input_hash": input_hash,
             "input_source": input_label,
             "pseudonym_key": privacy.key_source()}
    for k, v in stamp.items():
        full[k] = v
    prefix = "|".join([spec.registry.model_name, version, policy.content_hash]) + "|"
    suffix = "|" + as_of + "|"
    sha = hashlib.sha256
    full.insert(0, "decision_id", [
        sha((prefix + h + suffix + str(r)).encode()).hexdigest()[:32]
        for h, r in zip(full["input_row_hash"].tolist(), full["row_number"].tolist())])
    return full


def log_path(spec: PipelineSpec, out_dir, as_of: str, version: str, input_hash: str) -> Path:
    return Path(out_dir) / f"{spec.name}-{as_of}-v{version}-{input_hash[:12]}.parquet"


def check_as_of(spec: PipelineSpec, as_of: str | None) -> str:
    from creditgov.errors import SpecError

    if spec.policy is None:
        raise SpecError(f"spec '{spec.name}' has no 'policy' section: nothing to decide with")
    as_of = as_of or date.today().isoformat()
    try:
        date.fromisoformat(as_of)
    except ValueError:
        raise SpecError(f"--as-of '{as_of}': not an ISO date (YYYY-MM-DD)") from None
    return as_of


@contextmanager
def no_gc():
    """Pause the cyclic garbage collector: building millions of per-row lists would otherwise trigger
    full collections over every object of the batch, again and again (the lists hold no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def decide(spec: PipelineSpec, data_path: str | None = None, version: str | None = None,
           as_of: str | None = None, out_dir: str | Path = "decisions", log=print,
           previous: str | None = None) -> DecideResult:
    with no_gc():
        return _decide(spec, data_path, version, as_of, out_dir, log, previous)


def _decide(spec: PipelineSpec, data_path: str | None, version: str | None, as_of: str | None,
            out_dir: str | Path, log, previous: str | None) -> DecideResult:
    from creditgov import data, expectations, tracking, validate

    as_of = check_as_of(spec, as_of)
    loaded = data.load(spec, data_path)
    suite = expectations.for_scoring(expectations.checked_suite(spec), spec, loaded.frame.columns)
    outcome = validate.validate(loaded.frame, spec, suite, loaded.label)
    validate.enforce_quarantine_share(outcome, spec, loaded.label)
    input_hash = data.content_hash(loaded.frame)

    tracking.configure()
    model, version, run_id = tracking.load_registered(spec.registry.model_name, version)
    idc = spec.source.id_column
    prev_pd = prev_phi = None
    if spec.policy.on_book is not None and previous:
        prev_pd, prev_phi = _previous_review(spec, model, previous, suite)
    clean = with_previous_pd(outcome.clean, spec, prev_pd)
    part = decide_part(model, clean, spec)
    cf = counterfactuals(model, part, spec)
    changed = None
    if prev_phi is not None:
        changed = _what_changed(part.phi, part.features, prev_phi, clean[idc].astype(str).to_numpy(),
                                part.adverse, spec)
    rows = log_rows(part, spec, cf, changed)
    qrows = quarantine_rows(outcome.quarantine, spec)
    full = finish_log(rows, qrows, spec, version, as_of, input_hash, loaded.label)
    if len(full) != outcome.rows_in:  # the invariant this whole module exists to keep
        raise RuntimeError(f"rows in {outcome.rows_in} != rows logged {len(full)}")

    path = write_log(full, log_path(spec, out_dir, as_of, version, input_hash))
    policy = spec.policy
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
