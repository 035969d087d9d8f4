"""Decide and explain a batch: validate -> score with the champion -> policy -> reasons -> decision log.

The decision log has one row per input row: decided rows carry PD, tier, action, limit,
rules, reasons (en / zh) and the exact attributions; quarantined rows carry the rules
they broke. Rows in = rows decided + rows quarantined. Same input, model and policy:
byte-identical log (the decision time is the batch's as-of date, not the wall clock).

Built for large batches: everything per row is vectorised or computed once per distinct
value (canonical input values, row hashes, reason lists), and the counterfactual search
scores its candidates on the encoded feature matrix. A batch of more than one chunk
(data.chunk_rows(): 250,000 rows, or $CREDITGOV_CHUNK_ROWS) is streamed: read, validated,
decided and written chunk by chunk, with the batch-wide rules kept batch-wide, into the
same log, byte for byte, as deciding it in one piece (see "a batch in chunks" below);
memory then no longer grows with the batch. The stages below (`decide_part`,
`first_counterfactuals` / `pair_counterfactuals`, `log_rows`, `quarantine_rows`,
`finish_log`) are also what the Dask engine (creditgov.engine) runs per partition, so both
engines write the same bytes.
"""
from __future__ import annotations

import gc
import hashlib
import hmac
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.atomic import clear_stale, temp_beside
from creditgov.spec import PipelineSpec

SHAP_PREFIX = "shap__"
MAX_PAIR_ROWS = 2000  # the pair search cap of counterfactual.search
ROW_GROUP_ROWS = 1024 * 1024  # the decision log's Parquet row groups (pyarrow write_table's default)
CF_SLICE_ROWS = 20_000  # adverse rows searched at once by the counterfactual search's first stage
INPUT_PREFIX = "input__"


@dataclass(frozen=True)
class DecideResult:
    """What a decide run wrote. `log` is the decision log as a frame: kept in memory for a batch decided in
    one piece, read from `path` on each access for a batch decided in chunks (a 10M-row log does not fit)."""

    path: Path
    rows_in: int
    rows_decided: int
    rows_quarantined: int
    model_version: str
    run_id: str
    input_label: str
    input_hash: str
    action_counts: dict[str, int] = field(default_factory=dict)  # log rows by action, quarantined included
    chunks: int = 1  # how many chunks the batch was decided in
    frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def log(self) -> pd.DataFrame:
        return self.frame if self.frame is not None else read_log(self.path)


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


def first_counterfactuals(model, part: DecidedPart, spec: PipelineSpec, integral: dict[str, bool]):
    """The first stage of the counterfactual search, per part: (JSON of each adverse row's one-feature change,
    None elsewhere and where none was found; the adverse rows still without one, as `adverse_rows` frames with
    `_pos`, their place in the part, and `_action`). `integral`: grid rounding flags of the whole batch."""
    from creditgov import counterfactual

    adverse = np.flatnonzero(part.adverse)
    cf = [None] * len(part.clean)
    pending = pd.DataFrame({"_pos": np.array([], dtype=np.int64), "_action": np.array([], dtype=object)})
    if not len(adverse):
        return cf, pending
    if not counterfactual.actionable(spec):
        note = json.dumps({"found": False, "note": "no actionable numeric feature in the catalogue"}, sort_keys=True)
        for i in adverse:
            cf[i] = note
        return cf, pending
    rows = adverse_rows(part, spec)
    actions = part.decided["action"].to_numpy()[part.adverse]
    singles = []
    # each row's search is its own (given the batch's rounding flags): in slices, so that the candidate
    # grids of a large part are never all in memory at once
    for a in range(0, len(rows), CF_SLICE_ROWS):
        sl = rows.iloc[a:a + CF_SLICE_ROWS].reset_index(drop=True)
        singles += counterfactual.single_changes(sl, actions[a:a + CF_SLICE_ROWS], spec,
                                                 lambda f: score_and_decide(model, f, spec),
                                                 evaluate=candidate_evaluator(model, sl, spec), integral=integral)
    todo = np.array([j for j, s in enumerate(singles) if s is None], dtype=np.int64)
    for j, s in enumerate(singles):
        if s is not None:
            cf[adverse[j]] = json.dumps(s, sort_keys=True)
    pending = rows.iloc[todo].reset_index(drop=True)
    pending["_pos"] = adverse[todo].astype(np.int64)
    pending["_action"] = actions[todo].astype(object)
    return cf, pending


def pair_counterfactuals(model, pending: list[pd.DataFrame], spec: PipelineSpec,
                         max_pair_rows: int = MAX_PAIR_ROWS) -> list[list]:
    """The second stage, over the whole batch: two-feature changes for the first `max_pair_rows` pending rows
    in batch order (grid rounding decided over those rows, as counterfactual.search does). One list per
    pending frame: the result of each of its first rows that were searched (None where no pair changes the
    outcome); rows past the cap have no entry, so a list can be shorter than its frame."""
    from creditgov import counterfactual

    budget, picks = max_pair_rows, []
    for pend in pending:
        take = min(budget, len(pend))
        budget -= take
        picks.append(take)
    out: list[list] = [[] for _ in pending]
    if not sum(picks):
        return out
    sub = pd.concat([p.iloc[:t] for p, t in zip(pending, picks) if t], ignore_index=True)
    actions = sub.pop("_action").to_numpy(dtype=object)
    sub = sub.drop(columns="_pos")
    res = counterfactual.pair_changes(sub, actions, spec, lambda f: score_and_decide(model, f, spec),
                                      evaluate=candidate_evaluator(model, sub, spec))
    pos = 0
    for k, take in enumerate(picks):
        out[k] = res[pos:pos + take]
        pos += take
    return out


def pair_json(found: list, n: int, spec: PipelineSpec) -> list[str]:
    """The counterfactual JSON of n pending rows given their pair-stage results (see pair_counterfactuals)."""
    from creditgov import counterfactual

    notes = {c: json.dumps(counterfactual.not_found_note(spec, c), sort_keys=True) for c in (False, True)}
    return [(json.dumps(found[t], sort_keys=True) if found[t] else notes[False]) if t < len(found) else notes[True]
            for t in range(n)]


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
    rows["account_key"] = pseudonymise(clean[idc]) if idc else _key_from_hash(rows["input_row_hash"])
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
    else:  # no identifier: the key is the row's content hash (as the decision id, with the row number)
        qrows["account_key"] = _key_from_hash(qrows["input_row_hash"])
    return qrows


def _key_from_hash(hashes: pd.Series) -> np.ndarray:
    """The account key of a row without an identifier: the first 24 hex digits of its input hash
    (an object array, also when there are no rows)."""
    return np.array([h[:24] for h in hashes.tolist()] + [None], dtype=object)[:-1]


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
    from creditgov.errors import SpecError, UsageError

    if spec.policy is None:
        raise SpecError(f"spec '{spec.name}' has no 'policy' section: nothing to decide with")
    if as_of is None:
        return date.today().isoformat()
    try:  # strictly YYYY-MM-DD: the date is part of every decision id
        if len(as_of) != 10:
            raise ValueError
        date.fromisoformat(as_of)
    except ValueError:
        raise UsageError(f"--as-of '{as_of}': not a date; give the decision date as YYYY-MM-DD") from None
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
           previous: str | None = None, chunk_rows: int | None = None) -> DecideResult:
    """Decide a batch. A batch of more than `chunk_rows` rows (default data.chunk_rows(): $CREDITGOV_CHUNK_ROWS
    or 250,000) is read, validated, decided and written chunk by chunk (see `_decide_stream`); the log is
    the same, byte for byte, as deciding it in one piece."""
    with no_gc():
        return _decide(spec, data_path, version, as_of, out_dir, log, previous, chunk_rows)


def _key_columns(spec: PipelineSpec) -> list[str] | None:
    """The columns the suite requires to be unique together (expectations.suite_from_catalogue)."""
    idc, dc = spec.source.id_column, spec.source.date_column
    if not idc:
        return None
    return [idc, dc] if dc else [idc]


def _decide(spec: PipelineSpec, data_path: str | None, version: str | None, as_of: str | None,
            out_dir: str | Path, log, previous: str | None, chunk_rows: int | None) -> DecideResult:
    from creditgov import data

    as_of = check_as_of(spec, as_of)
    size = data.chunk_rows(chunk_rows)
    batch = data.open_chunked(spec, data_path, size, _key_columns(spec))
    if isinstance(batch, data.ChunkedData):
        try:
            return _decide_stream(spec, batch, version, as_of, out_dir, log, previous, size)
        except _Whole:
            pass  # a critical data error, or a chunk unlike the rest: the whole-batch path says it as before
    loaded = batch if isinstance(batch, data.LoadedData) else None
    return _decide_whole(spec, data_path, loaded, version, as_of, out_dir, log, previous)


def _decide_whole(spec: PipelineSpec, data_path: str | None, loaded, version: str | None, as_of: str,
                  out_dir: str | Path, log, previous: str | None) -> DecideResult:
    """The batch in one piece: read, validated, decided and written at once."""
    from creditgov import data, expectations, tracking, validate

    loaded = loaded or data.load(spec, data_path)
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
    _say_done(log, spec, loaded.label, outcome.rows_in, len(rows), len(qrows), version, path)
    counts = {str(k): int(v) for k, v in full["action"].value_counts().sort_index().items()}
    return DecideResult(path, outcome.rows_in, len(rows), len(qrows), version, run_id, loaded.label, input_hash,
                        counts, 1, full)


def _say_done(log, spec: PipelineSpec, label: str, rows_in: int, decided: int, quarantined: int, version: str,
              path: Path, suffix: str = "") -> None:
    policy = spec.policy
    log(f"{label}: {rows_in} rows in = {decided} decided + {quarantined} quarantined; "
        f"model {spec.registry.model_name} v{version}, policy {policy.name} {policy.version} "
        f"({policy.content_hash[:12]}) -> {path}{suffix}")


# --------------------------------------------------------------------------- a batch in chunks
#
# Pass 1 reads the batch chunk by chunk (creditgov.data.open_chunked: every chunk has the rows, values and
# dtypes the whole-file read gives), hashes it (the content hash of the whole frame: the dtype header,
# then each row's hash_pandas_object, which does not depend on the other rows), validates each chunk with
# the same suite, and spills its valid rows and its quarantine log rows to a work directory beside the log.
# What is batch-wide stays batch-wide: a key (id, or id and date) repeated anywhere in the batch is found
# before validation and its rows are shown to GX twice, so that the uniqueness rules flag exactly the rows
# the whole batch's validation flags; the quarantine share is checked over the whole batch, the rounding
# flags of the counterfactual grid are combined over all valid rows, and the previous review (--previous)
# is read in chunks into a per-account table first. Pass 2 decides chunk by chunk from the spill; the
# counterfactual pair search runs once over the first MAX_PAIR_ROWS rows without a one-feature change, in
# batch order (chunks whose rows wait for it are spilled until it has run), and the log is written as
# Parquet row groups of ROW_GROUP_ROWS rows (_LogSink), so its bytes do not depend on the chunk size.
# A critical data error in any chunk (or a chunk unlike the others) sends the batch to the whole-batch
# path, which reports it exactly as before.


class _Whole(Exception):
    """Decide this batch in one piece (a critical data error is reported there, as it always was)."""


@dataclass
class _Chunk:
    offset: int
    rows: int
    clean: Path | pd.DataFrame | None  # spilled valid rows (a frame when Parquet cannot hold them)
    n_clean: int
    quarantine: Path | None  # spilled quarantine log rows
    n_quarantined: int


def _validate_chunk(frame: pd.DataFrame, dup: np.ndarray | None, spec: PipelineSpec, suite: dict, label: str):
    """validate.validate on one chunk; rows whose key repeats elsewhere in the batch are shown twice, so
    that the uniqueness rules (duplicated(keep=False)) flag them as on the whole batch; the copies go."""
    from creditgov import validate

    n = len(frame)
    if dup is None or not dup.any():
        return validate.validate(frame, spec, suite, label)
    twice = pd.concat([frame, frame[dup]], ignore_index=True)
    out = validate.validate(twice, spec, suite, label)
    q = out.quarantine
    q = q[q["row_number"].to_numpy() <= n]
    clean = out.clean
    if len(clean) and clean.index.max() >= n:  # a copy always breaks a uniqueness rule
        raise RuntimeError("a repeated key's copy passed validation")
    return validate.ValidationOutcome(clean=clean, quarantine=q, rows_in=n, gx_result=out.gx_result,
                                      ignored_columns=out.ignored_columns)


def _spill(frame: pd.DataFrame, path: Path):
    """Valid rows to Parquet (exactly: index, dtypes, NaN or None); the frame itself if Parquet cannot hold it."""
    from creditgov import checkpoint

    try:
        checkpoint.write_exact(frame, path)
        return path
    except (ValueError, TypeError, ArithmeticError, LookupError, NotImplementedError) as exc:
        if "pyarrow" not in type(exc).__module__ and not type(exc).__name__.startswith("Arrow"):
            raise
        path.unlink(missing_ok=True)
        return frame


def _load(item) -> pd.DataFrame:
    from creditgov import checkpoint

    return item if isinstance(item, pd.DataFrame) else checkpoint.read_exact(item)


@dataclass
class _Scan:
    input_hash: str
    chunks: list[_Chunk]
    integral: dict[str, bool]
    rows_in: int
    rows_decided: int
    rows_quarantined: int
    q_sample: pd.DataFrame | None  # the first quarantine log row (for the log's column types)


def _scan(batch, spec: PipelineSpec, suite: dict, work: Path) -> _Scan:
    """Pass 1: hash, validate and spill each chunk; the batch-wide facts."""
    from creditgov import counterfactual, validate

    h = hashlib.sha256()
    h.update(batch.header().encode())
    chunks, integral = [], {}
    rule_ids: dict[str, int] = {}
    rule_codes = []
    q_sample = None
    for k, (offset, frame, dup) in enumerate(batch.chunks()):
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        outcome = _validate_chunk(frame, dup, spec, suite, batch.label)
        del frame
        clean, q = outcome.clean, outcome.quarantine
        if len(clean):
            for name, flag in counterfactual.integral_flags(clean, spec).items():
                integral[name] = integral.get(name, True) and flag
        rules = q["rules"].tolist() if len(q) else []
        rule_codes.append(np.array([rule_ids.setdefault(r, len(rule_ids)) for r in rules], dtype=np.int64))
        qpath = None
        if len(q):
            qrows = quarantine_rows(q, spec, row_offset=offset)
            if q_sample is None:
                q_sample = qrows.iloc[:1].copy()
            from creditgov import checkpoint

            qpath = work / f"quarantine-{k:06d}.parquet"
            checkpoint.write_frame(qrows, qpath)
            del qrows
        spilled = _spill(clean, work / f"clean-{k:06d}.parquet") if len(clean) else None
        chunks.append(_Chunk(offset, outcome.rows_in, spilled, len(clean), qpath, len(q)))
        del outcome, clean, q
        gc.collect()  # the cyclic collector is paused (no_gc): collect each chunk's garbage here
    rows_in = sum(c.rows for c in chunks)
    codes = np.concatenate(rule_codes) if rule_codes else np.array([], dtype=np.int64)
    whole = validate.ValidationOutcome(
        clean=pd.DataFrame(), rows_in=rows_in, gx_result={},
        quarantine=pd.DataFrame({"rules": pd.Categorical.from_codes(codes, categories=list(rule_ids))}))
    validate.enforce_quarantine_share(whole, spec, batch.label)
    if not any(c.n_clean for c in chunks):
        raise _Whole("no valid rows")  # (a batch allowed to be all quarantined)
    return _Scan(h.hexdigest(), chunks, integral, rows_in, sum(c.n_clean for c in chunks),
                 sum(c.n_quarantined for c in chunks), q_sample)


def _previous_review_chunked(spec: PipelineSpec, model, path: str, suite: dict, size: int):
    """_previous_review, reading the previous batch in chunks: only each account's PD and attributions stay."""
    from creditgov import data
    from creditgov.errors import DataError

    batch = data.open_chunked(spec, path, size, _key_columns(spec))
    if not isinstance(batch, data.ChunkedData):
        return _previous_review(spec, model, path, suite)
    idc = spec.source.id_column
    ids, ps, phis, features = [], [], [], None
    try:
        for _, frame, dup in batch.chunks():
            clean = _validate_chunk(frame, dup, spec, suite, batch.label).clean
            if len(clean):
                p, _, phi, features, _, _ = explain_batch(model, clean, spec)
                ids.append(clean[idc].astype(str).to_numpy())
                ps.append(p)
                phis.append(phi)
            del frame, clean
            gc.collect()
    except (DataError, data.NotStreamable):
        return _previous_review(spec, model, path, suite)  # says what is wrong with it, as before
    if features is None:
        return _previous_review(spec, model, path, suite)
    index = np.concatenate(ids)
    return pd.Series(np.concatenate(ps), index=index), pd.DataFrame(np.vstack(phis), index=index, columns=features)


class _PairStage:
    """The counterfactual pair search over the whole batch: chunks whose rows take part wait (spilled)
    until it has run, once MAX_PAIR_ROWS rows are pending or the batch ends."""

    def __init__(self, model, spec: PipelineSpec, work: Path, cap: int = MAX_PAIR_ROWS):
        self.model, self.spec, self.work = model, spec, work
        self.budget, self.done = cap, False
        self.waiting: list[list] = []  # [chunk, rows (frame or spilled path), pending rows searched]

    def add(self, ch: _Chunk, rows: pd.DataFrame, pending: pd.DataFrame, last: bool) -> list:
        """Chunks ready to finish, in batch order: [(chunk, () -> its log rows)] (rows that waited on disk
        are read back one chunk at a time, as they are finished)."""
        from creditgov import checkpoint

        n = len(pending)
        take = 0 if self.done else min(self.budget, n)
        self.budget -= take
        _set_cf(rows, pending["_pos"].to_numpy()[take:], pair_json([], n - take, self.spec))  # past the cap
        if self.done or (take == 0 and not self.waiting):  # nothing of it waits, nothing before it waits
            return [(ch, lambda: rows)]
        self.waiting.append([ch, rows, pending.iloc[:take]])
        if self.budget > 0 and not last:
            path = self.work / f"waiting-{ch.offset:012d}.parquet"
            checkpoint.write_frame(rows, path)
            self.waiting[-1][1] = path
            return []
        found = pair_counterfactuals(self.model, [w[2] for w in self.waiting], self.spec)
        waiting, self.waiting, self.done = self.waiting, [], True
        return [self._patched(c, r, pend["_pos"].to_numpy(), pair_json(res, len(pend), self.spec))
                for (c, r, pend), res in zip(waiting, found)]

    @staticmethod
    def _patched(ch: _Chunk, rows, positions: np.ndarray, texts: list[str]):
        """(chunk, log rows): the rows read back (when they waited on disk) only when asked for."""
        from creditgov import checkpoint

        def load() -> pd.DataFrame:
            r = rows if isinstance(rows, pd.DataFrame) else checkpoint.read_frame(rows)
            _set_cf(r, positions, texts)
            return r

        return ch, load


def _set_cf(rows: pd.DataFrame, positions: np.ndarray, texts: list[str]) -> None:
    if len(positions):
        col = rows.columns.get_loc("counterfactual")
        for pos, text in zip(positions.tolist(), texts):
            rows.iat[pos, col] = text


def _decide_stream(spec: PipelineSpec, batch, version: str | None, as_of: str, out_dir: str | Path, log,
                   previous: str | None, size: int) -> DecideResult:
    import shutil

    from creditgov import checkpoint, expectations, tracking
    from creditgov.errors import DataError

    suite = expectations.for_scoring(expectations.checked_suite(spec), spec, batch.columns)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_stale(out_dir / "decide-work")  # work directories (.decide-work.tmp-<pid>-<id>) of killed runs
    work = temp_beside(out_dir / "decide-work")
    work.mkdir()
    try:
        try:
            scan = _scan(batch, spec, suite, work)
        except DataError as exc:
            raise _Whole(str(exc)) from None
        except Exception as exc:
            from creditgov.data import NotStreamable

            if isinstance(exc, NotStreamable):
                raise _Whole(str(exc)) from None
            raise

        tracking.configure()
        model, version, run_id = tracking.load_registered(spec.registry.model_name, version)
        idc = spec.source.id_column
        prev_pd = prev_phi = None
        if spec.policy.on_book is not None and previous:
            prev_pd, prev_phi = _previous_review_chunked(spec, model, previous, suite, size)

        path = log_path(spec, out_dir, as_of, version, scan.input_hash)
        sink = _LogSink(path)
        pairs = _PairStage(model, spec, work)
        counts: dict[str, int] = {}
        logged = 0

        sample = None  # a decided log row: the log's column types

        def finish(ch: _Chunk, rows: pd.DataFrame) -> None:
            nonlocal logged
            qrows = checkpoint.read_frame(ch.quarantine) if ch.quarantine is not None else rows.iloc[:0]
            if sink.dtypes is None:
                sink.dtypes = _log_dtypes(sample, scan, spec, version, as_of, batch.label)
            full = finish_log(rows, qrows, spec, version, as_of, scan.input_hash, batch.label)
            for k, v in full["action"].value_counts().items():
                counts[str(k)] = counts.get(str(k), 0) + int(v)
            logged += len(full)
            sink.push(full)
            del full, qrows

        empty_rows = None
        for i, ch in enumerate(scan.chunks):
            last = i == len(scan.chunks) - 1
            if ch.clean is None:  # every row quarantined: nothing to decide, nothing to wait for
                if empty_rows is None:
                    empty_rows = _empty_rows(model, spec, scan, prev_pd)
                rows, pending = empty_rows.copy(), pd.DataFrame({"_pos": np.array([], dtype=np.int64)})
            else:
                clean = with_previous_pd(_load(ch.clean), spec, prev_pd)
                part = decide_part(model, clean, spec)
                cf, pending = first_counterfactuals(model, part, spec, scan.integral)
                changed = None
                if prev_phi is not None:
                    changed = _what_changed(part.phi, part.features, prev_phi, clean[idc].astype(str).to_numpy(),
                                            part.adverse, spec)
                rows = log_rows(part, spec, cf, changed, row_offset=ch.offset)
                del clean, part, cf, changed
                if sample is None and len(rows):
                    sample = rows.iloc[:1].copy()
            ready = pairs.add(ch, rows, pending, last)
            del rows, pending
            while ready:
                c, rows_of = ready.pop(0)
                finish(c, rows_of())
                del rows_of
            gc.collect()
            _release_memory()
            sink.flush()
        if logged != scan.rows_in:  # the invariant this whole module exists to keep
            raise RuntimeError(f"rows in {scan.rows_in} != rows logged {logged}")
        sink.close()
    except BaseException:
        if "sink" in locals():
            sink.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _say_done(log, spec, batch.label, scan.rows_in, scan.rows_decided, scan.rows_quarantined, version, path,
              f" [{len(scan.chunks)} chunks of up to {size} rows]")
    return DecideResult(path, scan.rows_in, scan.rows_decided, scan.rows_quarantined, version, run_id, batch.label,
                        scan.input_hash, dict(sorted(counts.items())), len(scan.chunks), None)


def _empty_rows(model, spec: PipelineSpec, scan: _Scan, prev_pd) -> pd.DataFrame:
    """The (empty) log rows of a chunk without valid rows, with the columns and types of any other."""
    ch = next(c for c in scan.chunks if c.clean is not None)
    clean = _load(ch.clean).iloc[:0]
    part = decide_part(model, with_previous_pd(clean, spec, prev_pd), spec)
    return log_rows(part, spec, [], None)


def _log_dtypes(sample: pd.DataFrame | None, scan: _Scan, spec: PipelineSpec, version: str, as_of: str,
                label: str) -> dict | None:
    """The pandas dtypes of the whole batch's log frame (what finish_log gives on all its rows at once): they
    depend only on the columns' dtypes and on whether the batch has quarantined rows. None until a decided
    row has been seen (the log's writer waits)."""
    if sample is None:
        return None
    q = scan.q_sample if scan.q_sample is not None else pd.DataFrame()
    return dict(finish_log(sample, q, spec, version, as_of, "0" * 64, label).dtypes)



class _LogSink:
    """The decision log written as it is made: frames (finish_log's, in batch order) -> Parquet row groups of
    ROW_GROUP_ROWS rows in a temporary file beside the log, renamed into place by close().

    The file is the one write_log writes for the whole frame, byte for byte: the same row groups, each
    column of a row group written from one contiguous array, the same Arrow schema and pandas metadata.
    The Arrow type of each column is what pyarrow infers over the whole log (unified over the chunks: a
    column without a value in one chunk, ints in one and floats in another, empty lists in one); the pandas
    dtypes come from `dtypes` (see _log_dtypes). A type that only a later chunk reveals, after row groups
    were written, makes the sink rewrite them (one row group at a time) under the new schema. Rows waiting
    for their row group are held column by column, compressed (zstd): a row group is materialised only
    while it is written."""

    def __init__(self, path: Path, row_group_rows: int | None = None):
        self.path, self.rg = path, row_group_rows or ROW_GROUP_ROWS
        clear_stale(path)  # the temporaries of a killed earlier write of this log
        self.tmp = temp_beside(path)
        self.dtypes: dict | None = None
        self.names: list[str] | None = None
        self.types: dict = {}  # per column: the type over the chunks where it has a value
        self.null_types: dict = {}  # per column: the type inferred where it has none
        self.pieces: dict[str, list] = {}  # per column: [(compressed array, rows)] not written yet
        self.buffered = 0
        self.writer = None
        self.schema = None

    def push(self, frame: pd.DataFrame) -> None:
        """Take a frame's rows (call flush() once the caller has let go of its frames)."""
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.names is None:
            self.names = table.schema.names
            self.pieces = {n: [] for n in self.names}
        elif table.schema.names != self.names:
            raise RuntimeError("decision log chunks with different columns")
        for f, col in zip(table.schema, table.columns):
            if col.null_count == len(col):
                if self.null_types.get(f.name) in (None, pa.null()):
                    self.null_types[f.name] = f.type
            else:
                self.types[f.name] = _unify(self.types.get(f.name), f.type)
            for a in col.chunks:
                self.pieces[f.name].append((_pack(a), len(a)))
        self.buffered += table.num_rows

    def flush(self) -> None:
        """Write every full row group held (once the column types are known)."""
        while self.dtypes is not None and self.buffered >= self.rg:
            self._flush(self.rg)

    def _schema(self):
        import pyarrow as pa

        fields = [pa.field(n, self.types.get(n) or self.null_types.get(n) or pa.null()) for n in self.names]
        empty = pd.DataFrame({n: pd.Series([], dtype=self.dtypes[n]) for n in self.names})
        return pa.Table.from_pandas(empty, schema=pa.schema(fields), preserve_index=False).schema

    def _flush(self, n: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self._schema()
        if self.writer is None:
            self.writer, self.schema = pq.ParquetWriter(self.tmp, schema, compression="zstd"), schema
        elif not schema.equals(self.schema, check_metadata=True):
            self._rewrite(schema)
        arrays = []
        for name, typ in zip(self.names, schema.types):
            taken, left, rest = [], n, []
            for packed, rows in self.pieces[name]:
                if left >= rows:
                    taken.append(_unpack(packed))
                    left -= rows
                elif left > 0:
                    a = _unpack(packed)
                    taken.append(a.slice(0, left))
                    rest.append((_pack(a.slice(left)), rows - left))
                    left = 0
                else:
                    rest.append((packed, rows))
            self.pieces[name] = rest
            arrays.append(_contiguous([_cast(a, typ) for a in taken], typ))
            del taken
        table = pa.Table.from_arrays(arrays, schema=schema)
        del arrays
        self.writer.write_table(table, row_group_size=max(n, 1))
        self.buffered -= n
        del table
        _release_memory()

    def _rewrite(self, schema) -> None:
        """Row groups already written, again under `schema` (a type revealed by a later chunk)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.writer.close()
        old, self.tmp = self.tmp, temp_beside(self.path)
        writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        done = pq.ParquetFile(old)
        for i in range(done.num_row_groups):
            t = done.read_row_group(i)
            arrays = [_contiguous([_cast(a, typ) for a in t.column(j).chunks], typ)
                      for j, typ in enumerate(schema.types)]
            del t
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=max(len(arrays[0]), 1))
            del arrays
        done.close()
        old.unlink()
        self.writer, self.schema = writer, schema

    def close(self) -> Path:
        if self.dtypes is None:
            raise RuntimeError("decision log: no column types")
        self.flush()
        if self.buffered or self.writer is None:
            self._flush(self.buffered)
        final = self._schema()
        if not final.equals(self.schema, check_metadata=True):
            self._rewrite(final)
        self.writer.close()
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
        self.tmp.unlink(missing_ok=True)


def _release_memory() -> None:
    """Hand freed memory back to the system: Arrow's allocator (jemalloc) keeps a written row group's pages,
    and glibc's malloc the heap a chunk's frames grew, for reuse that the other allocator cannot make."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _pack(a):
    """An Arrow array as a zstd-compressed IPC stream (a pyarrow Buffer)."""
    import pyarrow as pa

    batch = pa.record_batch([a], names=["c"])
    out = pa.BufferOutputStream()
    with pa.ipc.new_stream(out, batch.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_batch(batch)
    return out.getvalue()


def _unpack(packed):
    import pyarrow as pa

    return pa.ipc.open_stream(packed).read_next_batch().column(0)


def _unify(a, b):
    """The type pyarrow infers for values of type a and values of type b together."""
    import pyarrow as pa

    if a is None or a == b:
        return b
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if {str(a), str(b)} == {"int64", "double"}:
        return pa.float64()
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_unify(a.value_type, b.value_type))
    raise RuntimeError(f"decision log: a column is {a} in one chunk and {b} in another")


def _cast(a, typ):
    import pyarrow as pa
    import pyarrow.compute as pc

    if a.type == typ:
        return a
    if a.null_count == len(a):
        return pa.nulls(len(a), type=typ)
    return pc.cast(a, typ, safe=False)


def _contiguous(arrays: list, typ):
    """One array (write_table writes each column of a row group from one array; pages follow from it)."""
    import pyarrow as pa

    if not arrays:
        return pa.array([], type=typ)
    if len(arrays) == 1 and arrays[0].offset == 0:
        return arrays[0]
    return pa.concat_arrays(arrays)


def write_log(frame: pd.DataFrame, path: Path) -> Path:
    """Write atomically (temporary name, then rename) so no half-written log is ever visible."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)  # the temporaries of a killed earlier write of this log
    tmp = temp_beside(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return path


def read_log(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)
