"""Decide and explain a batch: validate -> score with the model -> policy -> reasons -> decision log -> audit.

The decision log has one row per input row: decided rows carry PD, tier, action, limit,
rules, reasons (en / zh) and the exact attributions; quarantined rows carry the rules
they broke. Rows in = rows decided + rows quarantined. Same input, model and policy:
byte-identical log (the decision time is the batch's as-of date, not the wall clock).

The decision path is one function, `decide_rows`: validated rows (validate.Validated), a loaded model
(`DecisionModel`), the spec and its policy, the as-of date and, for accounts on book, their previous
review -> `Decisions`, the typed decision records (the log rows, stamped, with their decision ids, and
their counts). Every way of deciding calls it unchanged: `decide` on a batch in one piece or streamed
in chunks, the Dask engine per partition (creditgov.decision.dask), oversight.contest, and the HTTP service.
A caller holding a part of a larger batch (a chunk, a partition) says so with `BatchScope`: the grid
rounding flags of the whole batch, and the counterfactual pair search left to the batch (it is capped
over the whole batch, in batch order: `pair_counterfactuals`, then `fill_pairs`). Every log written is
appended to the audit trail by `audited` (through `publish` for decisions held in memory): a library
caller of `decide` gets the audit record, as the command line does.

Built for large batches: everything per row is vectorised or computed once per distinct
value (canonical input values, row hashes, reason lists), and the counterfactual search
scores its candidates on the encoded feature matrix. A batch of more than one chunk
(data.chunk_rows(): 250,000 rows, or $CREDITGOV_CHUNK_ROWS) is streamed: read, validated,
decided and written chunk by chunk, with the batch-wide rules kept batch-wide, into the
same log, byte for byte, as deciding it in one piece (see "a batch in chunks" below);
memory then no longer grows with the batch.
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from json.encoder import encode_basestring
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from creditgov import progress
from creditgov.governance import audit
from creditgov.decision import checkpoint
from creditgov.decision import counterfactual
from creditgov.data import inputs as data
from creditgov.data import privacy
from creditgov.governance import registry
from creditgov.data import validate
from creditgov.atomic import clear_stale, temp_beside
from creditgov.errors import DataError, ModelStatusRefused, SpecError, UsageError
from creditgov.model.credit_model import CreditModel, sigmoid
from creditgov.decision import collections
from creditgov.decision.policy import (ADVERSE_ACTIONS, WARN_PREFIX, WATCH_ACTIONS, apply_policy, policy_actions,
                                      rule_features, rule_reasons)
from creditgov.explain.reasons import check_additivity, group_by_feature
from creditgov.model.treeshap import UnsupportedModel
from creditgov.spec import PipelineSpec, parse_expression
from creditgov.data.validate import Validated, ValidationOutcome

try:  # pandas' own dtype inference for an object array: private API, so _as_mapped has a slow fallback
    from pandas._libs.lib import maybe_convert_objects
except ImportError:  # pragma: no cover
    maybe_convert_objects = None

SHAP_PREFIX = "shap__"
INPUT_PREFIX = "input__"
MAX_PAIR_ROWS = counterfactual.MAX_PAIR_ROWS
ROW_GROUP_ROWS = 1024 * 1024  # the decision log's Parquet row groups (pyarrow write_table's default)
CF_SLICE_ROWS = 20_000  # adverse rows searched at once by the counterfactual search's first stage


# --------------------------------------------------------------------------- typed results


@dataclass(frozen=True)
class DecideResult:
    """What a decide run wrote. `log` is the decision log as a frame: kept in memory for a batch decided in
    one piece, read from `path` on each access for a batch decided in chunks (a 10M-row log does not fit).
    `audit`: the log's batch in the audit trail (audit.LogAppend)."""

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
    audit: audit.LogAppend | None = None

    @property
    def log(self) -> pd.DataFrame:
        return self.frame if self.frame is not None else read_log(self.path)


@dataclass(frozen=True)
class DecisionModel:
    """A loaded model as the decision path uses it: the model and the registered version it is (stamped on
    every decision and part of every decision id)."""

    model: CreditModel
    version: str
    run_id: str = ""
    # the version's latest monitoring verdict ("" when never monitored): stamped on each decision
    # (log column model_status) only when there is one, so logs of unmonitored versions stay as they were
    status: str = ""


@dataclass(frozen=True)
class Explanation:
    """What the model says of each row: PD, calibrated log-odds, exact attributions of the log-odds grouped to
    catalogue features (phi[n, features]), their base value, and base + sum(phi) - log-odds."""

    pd: np.ndarray
    log_odds: np.ndarray
    phi: np.ndarray
    features: list[str]
    base: np.ndarray
    additivity_error: np.ndarray


@dataclass(frozen=True)
class PreviousReview:
    """Each account's PD and attributions at its previous review (the valid rows of that batch), by id."""

    pds: pd.Series
    attributions: pd.DataFrame


@dataclass(frozen=True)
class BatchScope:
    """Where the rows given to decide_rows sit when they are a part of a larger batch (a chunk, a partition).
    `integral`: the counterfactual grid rounding flags of the whole batch's valid rows (default: these rows');
    `defer_pairs`: leave the counterfactual pair search, capped over the whole batch, to the caller."""

    integral: dict[str, bool] | None = None
    defer_pairs: bool = False


@dataclass
class Decisions:
    """The decision records of a batch (or of a part of one): `log`, one decision-log row per input row in row
    order, stamped and with its decision id; `pending`, with BatchScope(defer_pairs=True), the adverse rows
    still waiting for the batch's pair search (`_pos`: their position in `log`, `_action`, their inputs)."""

    log: pd.DataFrame
    rows_in: int
    rows_decided: int
    rows_quarantined: int
    model_version: str
    as_of: str
    input_hash: str
    input_label: str
    pending: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    @property
    def action_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.log["action"].value_counts().sort_index().items()}


# --------------------------------------------------------------------------- canonical values and row hashes


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


def _canonical_small(t, values: list) -> tuple[list, list[str]] | None:
    """_canonical_column of a few rows value by value (factorizing costs more than it saves for a served row),
    given the column's dtype `t` and its values (`to_numpy().tolist()`): numbers, and text columns with no
    missing value; None for anything else."""
    if not isinstance(t, np.dtype):
        return None
    if t.kind in "iu":
        canon = values
        return canon, list(map(str, canon))
    if t.kind == "f":
        canon, texts = [], []
        for v in values:
            if v != v:
                canon.append(None)
                texts.append("null")
            elif v in (_INF, -_INF):
                canon.append(v)
                texts.append(json.dumps(v))
            elif v.is_integer() and abs(v) < 2**53:
                canon.append(int(v))
                texts.append(str(int(v)))
            else:
                canon.append(v)
                texts.append(float.__repr__(v))
        return canon, texts
    if t.kind == "O" and all(type(v) is str for v in values):
        return values, [encode_basestring(v) for v in values]
    return None


_INF = float("inf")
SMALL_ROWS = 16  # up to this many rows, _canonical_column goes value by value


def _canonical_column(s: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(canonical value, its JSON text) of each value of `s`: computed once per distinct value."""
    small = (_canonical_small(s.dtype, s.to_numpy().tolist()) if len(s) <= SMALL_ROWS and isinstance(s.dtype, np.dtype)
             else None)
    if small is not None:
        return _small_column(small)
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


def _small_column(small: tuple[list, list[str]]) -> tuple[np.ndarray, list[str]]:
    out = np.empty(len(small[0]), dtype=object)
    out[:] = small[0]
    return out, small[1]


def _canonical_columns(frame: pd.DataFrame, columns) -> dict[str, tuple[np.ndarray, list[str]]]:
    """{column: _canonical_column(frame[column])}; a frame of a few rows read from its plain numpy columns
    (the values `frame[c].to_numpy()` gives) without a Series per column."""
    plain = data.plain_columns(frame) if len(frame) <= SMALL_ROWS else {}
    out = {}
    for c in columns:
        a = plain.get(c)
        small = _canonical_small(a.dtype, a.tolist()) if a is not None else None
        out[c] = _small_column(small) if small is not None else _canonical_column(frame[c])
    return out


def _as_mapped(values: np.ndarray) -> np.ndarray:
    """What `Series.map(_canonical).astype(object)` holds for these canonical values: pandas infers one
    dtype for the mapped column (ints with a missing value become floats, missing becomes NaN)."""
    try:
        converted = maybe_convert_objects(np.asarray(values, dtype=object))
    except TypeError:  # pragma: no cover - the same, the slow way (also where pandas lacks it: None)
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


# --------------------------------------------------------------------------- model, policy, reasons


def explain_batch(model: CreditModel, clean: pd.DataFrame, spec: PipelineSpec, *, matrix: bool = False):
    """PD, calibrated log-odds, exact attributions (grouped to catalogue features) and the additivity error;
    with `matrix`, (that Explanation, the model's float32 matrix of the rows or None: CreditModel.explain)."""
    got = model.explain(clean, matrix=matrix)  # one encoding for the score and the attributions
    log_odds, phi, base = got[:3]
    err = check_additivity(base, phi, log_odds)
    phi_f, features = group_by_feature(phi, model.feature_names, {e.name: e.name for e in model.encodings})
    e = Explanation(1.0 / (1.0 + np.exp(-log_odds)), log_odds, phi_f, features, base, err)
    return (e, got[3]) if matrix else e


def score_and_decide(model: CreditModel, frame: pd.DataFrame, spec: PipelineSpec):
    """The (action, PD) the policy gives each row under this model; used by the counterfactual search."""
    p = model.predict_pd(frame)
    return policy_actions(frame, p, spec.policy), p


def _policy_columns(spec: PipelineSpec) -> list[str]:
    pol = spec.policy
    cols = {pol.limit.capacity_feature} | {r.when.feature for r in pol.rules} | spec.policy_columns
    ew = pol.on_book.early_warning if pol.on_book else None
    cols |= {c.feature for s in (ew.signals if ew else []) for c in s.when}  # the early warning's signals
    return sorted(cols)


def candidate_evaluator(model: CreditModel, rows: pd.DataFrame, spec: PipelineSpec, X: np.ndarray | None = None):
    """evaluate(row_idx, changes) -> (actions, PDs) of rows[row_idx] with changed columns, for the
    counterfactual search: the same numbers as score_and_decide on the changed rows, without building
    them. Rows are encoded once into xgboost's float32 matrix (`X`, when the caller has it: model.matrix(rows));
    a candidate copies its row and sets the changed columns. None when the model's encoding cannot be
    reproduced (then frames are built)."""
    ix = rows.index
    if not (isinstance(ix, pd.RangeIndex) and ix.start == 0 and ix.step == 1):
        rows = rows.reset_index(drop=True)
    if X is None:
        try:
            X = model.matrix(rows)  # the model's compiled trees: compiling them again cost ~20 ms a call
        except (UnsupportedModel, ValueError, TypeError):
            return None
    col = {name: j for j, name in enumerate(model.feature_names)}
    pol_cols = [c for c in _policy_columns(spec) if c in rows.columns]
    plain = data.plain_columns(rows) if len(rows) <= data.SMALL_FRAME_ROWS else {}
    # (a few rows: the policy columns' frame from their arrays, without rows[pol_cols]'s take, ~0.3 ms)
    pol_frame = (data.frame_of_columns({c: plain[c] for c in pol_cols}, len(rows))
                 if all(c in plain for c in pol_cols) and plain else rows[pol_cols])
    derived = model.derived_updater(rows)

    def evaluate(row_idx: np.ndarray, changes: dict) -> tuple[np.ndarray, np.ndarray]:
        # the rows of X with the changed columns (float64 -> float32, as the encoded columns are converted for the
        # trees) and the derived columns that read them, scored by the model's own margin and calibration: each
        # group of candidates reaching the same leaves once
        moved = {**changes, **derived(row_idx, changes)}
        p = sigmoid(model.calibrate(model.margin_changed(X, row_idx, {col[c]: v for c, v in moved.items()})))
        # the policy decides a row from its own values and its PD: the candidates of a row with the same PD and
        # the same values in the changed columns the policy reads are decided once
        read = {c: np.broadcast_to(np.asarray(v, dtype=np.float64), p.shape) for c, v in changes.items()
                if c in pol_frame.columns}
        first, inverse = _distinct([np.asarray(row_idx, dtype=np.int64), p] + list(read.values()))
        # (take: the rows as iloc gives them, without marking the frame a copy; the policy reads columns by
        # position only, so the repeated index labels are kept rather than reset)
        frame = pol_frame.take(row_idx[first])
        for c, v in read.items():
            frame[c] = v[first]
        actions = policy_actions(frame, p[first], spec.policy)
        return actions[inverse], p

    return evaluate


def _distinct(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse) of the distinct rows of these same-length columns (compared bit for bit): row i is
    row first[inverse[i]]."""
    keys = np.stack([np.ascontiguousarray(c).view(np.int64) for c in columns])
    order = np.lexsort(keys[::-1])
    ordered = keys[:, order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (ordered[:, 1:] != ordered[:, :-1]).any(axis=0)
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def _reason_lists(phi: np.ndarray, features: list[str], decided_by: np.ndarray, spec: PipelineSpec,
                  small: bool | None = None):
    """Per row: reason codes, statements (en, zh) and attributions; a deciding rule first, then the
    features whose attribution raised risk (> 0), largest first, up to max_reasons in all.

    `small` (default: up to SMALL_ROWS rows whose deciders are all text): the deciders and the reason patterns
    are grouped by dicts in order of first appearance instead of pd.factorize and np.unique (whose fixed costs
    dominate a served row); each row's lists depend on its own pattern only, so both routes give the same lists
    (tests/code/test_fastpath.py runs both)."""
    k = spec.policy.max_reasons
    rr, feat_reason, never, behind = _reason_tables(spec)
    n = phi.shape[0]
    if n == 0:
        return [], [], [], []
    deciders = decided_by.tolist() if isinstance(decided_by, np.ndarray) else list(decided_by)
    if small is None:
        small = n <= SMALL_ROWS and all(type(v) is str for v in deciders)
    if small:  # pd.factorize's codes and uniques for text (first appearance order, no missing value)
        seen: dict = {}
        by_codes = np.array([seen.setdefault(v, len(seen)) for v in deciders], dtype=np.intp)
        by_values = list(seen)
    else:
        by_codes, by_values = pd.factorize(pd.Series(decided_by, dtype=object))
    # never a reason: features the catalogue marks so (policy-set values), and, where a rule decided, the
    # features that rule reads (the rule is the one line of that cause)
    col = {f: j for j, f in enumerate(features)}
    phi = phi.copy()
    phi[:, [col[f] for f in never if f in col]] = -np.inf
    for c, by in enumerate(by_values):
        name = by[5:] if isinstance(by, str) and by.startswith("rule:") else None
        cols = [col[f] for f in behind.get(name, ()) if f in col]
        if cols:
            rows = np.flatnonzero(by_codes == c)
            phi[np.ix_(rows, cols)] = -np.inf
    order = np.argsort(-phi, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(phi, order, axis=1)
    npos = (top > 0).sum(axis=1)  # sorted descending: the positive ones come first
    prefix = []
    for by in by_values:
        name = by[5:] if isinstance(by, str) and by.startswith("rule:") else None
        prefix.append((["rule:" + name], [rr[name]["en"]], [rr[name]["zh"]], [None]) if name in rr else None)
    is_rule = np.array([p is not None for p in prefix] + [False])[by_codes]
    count = np.where(is_rule, np.minimum(npos, max(k - 1, 0)), npos)
    # codes and statements depend only on (deciding rule, the top features, how many): one list per pattern
    cols = np.arange(order.shape[1])[None, :]
    pattern = np.column_stack([by_codes, count, np.where(cols < count[:, None], order, -1)])
    if small:
        index: dict = {}
        first, inv = [], []
        for r, key in enumerate(map(tuple, pattern.tolist())):
            j = index.get(key)
            if j is None:
                j = index[key] = len(first)
                first.append(r)
            inv.append(j)
    else:
        _, first_at, inv_at = np.unique(pattern, axis=0, return_index=True, return_inverse=True)
        first, inv = first_at.tolist(), inv_at.ravel().tolist()
    empty = ([], [], [], [])
    luts = ([], [], [])
    for r in first:
        pre = prefix[by_codes[r]] if by_codes[r] >= 0 and prefix[by_codes[r]] is not None else empty
        idx = order[r, : count[r]].tolist()
        luts[0].append(tuple(pre[0] + [features[i] for i in idx]))
        luts[1].append(tuple(pre[1] + [feat_reason[features[i]].en for i in idx]))
        luts[2].append(tuple(pre[2] + [feat_reason[features[i]].zh for i in idx]))
    codes, en, zh = ([list(lut[i]) for i in inv] for lut in luts)
    rule_rows = is_rule.tolist()
    attr = [([None] + v[:m]) if r else (v if m == k else v[:m])
            for v, m, r in zip(top.tolist(), count.tolist(), rule_rows)]
    return codes, en, zh, attr


_REASON_TABLES: dict[int, tuple] = {}


def _reason_tables(spec: PipelineSpec) -> tuple[dict, dict, list[str], dict]:
    """What _reason_lists reads from the spec, once per spec object (specs are frozen; an entry holds its spec,
    so its id is not reused while cached): the rules' reason statements, each feature's reason, the features
    never given as a reason, and the features behind each rule with the derived features computed from them
    (income not stated: no income ratio either)."""
    got = _REASON_TABLES.get(id(spec))
    if got is None or got[0] is not spec:
        if len(_REASON_TABLES) >= 32:
            _REASON_TABLES.clear()
        behind = {k: tuple(v) + tuple(sorted(spec.dependents(v))) for k, v in rule_features(spec.policy).items()}
        got = _REASON_TABLES[id(spec)] = (spec, rule_reasons(spec.policy), {f.name: f.reason for f in spec.features},
                                          [f.name for f in spec.features if f.never_a_reason], behind)
    return got[1], got[2], got[3], got[4]


def _what_changed(phi_now: np.ndarray, features: list[str], prev_phi: pd.DataFrame, ids: np.ndarray,
                  mask: np.ndarray, spec: PipelineSpec, k: int = 3):
    """For rows in `mask` with a previous review: the features whose attribution rose most since then."""
    reason = {f.name: f.reason for f in spec.features}
    never = [j for j, f in enumerate(features) if spec.feature(f).never_a_reason]
    out_f, out_en, out_zh, out_d = ([[] for _ in range(len(ids))] for _ in range(4))
    have = mask & (pd.Index(prev_phi.index).get_indexer(ids) >= 0)
    rows = np.flatnonzero(have)
    if len(rows):
        delta = phi_now[rows] - prev_phi.loc[ids[rows], features].to_numpy()
        delta[:, never] = -np.inf  # a policy-set value is not what changed in the customer's risk
        order = np.argsort(-delta, axis=1, kind="stable")
        for r, i in enumerate(rows):
            for j in order[r, :k]:
                if delta[r, j] > 0:
                    out_f[i].append(features[j])
                    out_en[i].append(reason[features[j]].en)
                    out_zh[i].append(reason[features[j]].zh)
                    out_d[i].append(float(delta[r, j]))
    return out_f, out_en, out_zh, out_d


# --------------------------------------------------------------------------- the previous review


def previous_review(spec: PipelineSpec, model: CreditModel, path: str, chunk_rows: int | None = None) -> PreviousReview:
    """PD and attributions of each account at its previous review (the valid rows of that batch, validated
    like any batch: same suite, same quarantine-share limit), by id. Read in chunks of `chunk_rows` rows
    (default data.chunk_rows()) when it is larger: only each account's PD and attributions stay in memory."""
    size = data.chunk_rows(chunk_rows)
    batch = data.open_chunked(spec, path, size, validate.key_columns(spec))
    if isinstance(batch, data.ChunkedData):
        try:
            found = _previous_review_chunked(spec, model, batch)
        except (DataError, data.NotStreamable):
            found = None  # the whole read says what is wrong with it, as before
        if found is not None:
            return found
    loaded = batch if isinstance(batch, data.LoadedData) else data.read_path(path, spec)
    clean = validate.validate_batch(loaded.frame, spec, loaded.label).clean
    e = explain_batch(model, clean, spec)
    ids = clean[spec.source.id_column].astype(str).to_numpy()
    return PreviousReview(pd.Series(e.pd, index=ids), pd.DataFrame(e.phi, index=ids, columns=e.features))


def _previous_review_chunked(spec: PipelineSpec, model: CreditModel, batch) -> PreviousReview | None:
    """previous_review of a batch read in chunks; None when no row is valid (the whole read then answers)."""
    suite = validate.suite_for(spec, batch.columns)
    idc = spec.source.id_column
    ids, ps, phis, features, rules, rows_in = [], [], [], None, [], 0
    for _, frame, dup in batch.chunks():
        outcome = validate.validate_part(frame, spec, suite, batch.label, dup)
        rows_in += outcome.rows_in
        rules += outcome.quarantine["rules"].tolist() if len(outcome.quarantine) else []
        clean = outcome.clean
        if len(clean):
            e = explain_batch(model, clean, spec)
            ids.append(clean[idc].astype(str).to_numpy())
            ps.append(e.pd)
            phis.append(e.phi)
            features = e.features
        del frame, clean, outcome
        gc.collect()
    validate.enforce_batch_share(rows_in, rules, spec, batch.label)
    if features is None:
        return None
    index = np.concatenate(ids)
    return PreviousReview(pd.Series(np.concatenate(ps), index=index),
                          pd.DataFrame(np.vstack(phis), index=index, columns=features))


# --------------------------------------------------------------------------- the stages of decide_rows


_ADVERSE = frozenset(ADVERSE_ACTIONS)


@dataclass
class DecidedPart:
    """A batch's (or part's) valid rows, scored, explained and decided; counterfactuals to come."""

    clean: pd.DataFrame
    explained: Explanation
    decided: pd.DataFrame
    adverse: np.ndarray
    # the model's float32 matrix of the adverse rows, from the explanation's (model.matrix of adverse_rows: each
    # row is encoded from its own values), or None: the search encodes them itself
    adverse_matrix: np.ndarray | None = None


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


def _values(frame: pd.DataFrame, name: str) -> np.ndarray:
    """frame[name].to_numpy() of a numpy column, read from the frame's blocks without building the Series (a
    one-row decision's policy frame is asked for a dozen columns: ~5 us each as Series)."""
    v = data.column_values(frame, name)
    return v if isinstance(v, np.ndarray) else frame[name].to_numpy()


def decide_part(model: CreditModel, clean: pd.DataFrame, spec: PipelineSpec) -> DecidedPart:
    e, X = explain_batch(model, clean, spec, matrix=True)
    decided = apply_policy(clean, e.pd, spec.policy)
    if collections.collections_apply(clean, spec.policy):  # the collections treatment, beside the review's action
        decided = pd.concat([decided, collections.treatments(clean, e.pd, spec.policy)], axis=1)
    # (set membership, as Series.isin decides it for these strings, without a Series)
    adverse = np.fromiter((a in _ADVERSE for a in _values(decided, "action").tolist()), dtype=bool, count=len(decided))
    return DecidedPart(clean, e, decided, adverse, X[adverse] if X is not None else None)


def adverse_rows(part: DecidedPart, spec: PipelineSpec) -> pd.DataFrame:
    """The adverse rows, only the columns the model and the policy read (what the search needs)."""
    cols = spec.model_columns + _policy_columns(spec)
    cols = [c for c in dict.fromkeys(cols) if c in part.clean.columns]
    if part.adverse.sum() > data.SMALL_FRAME_ROWS:
        return part.clean.loc[part.adverse, cols].reset_index(drop=True)
    return _rows_of(part.clean, cols, np.flatnonzero(part.adverse))


def _rows_of(frame: pd.DataFrame, cols: list[str], idx: np.ndarray, extra: dict | None = None) -> pd.DataFrame:
    """frame.iloc[idx][cols].reset_index(drop=True) with the `extra` columns (arrays) after them; a few rows
    from the columns' arrays (frame_of_columns: no pandas take, ~0.3 ms a served decline)."""
    plain = data.plain_columns(frame) if len(idx) <= data.SMALL_FRAME_ROWS else {}
    if plain and all(c in plain for c in cols):
        return data.frame_of_columns({**{c: plain[c][idx] for c in cols}, **(extra or {})}, len(idx))
    out = frame.iloc[idx].reset_index(drop=True) if cols == frame.columns.tolist() else \
        frame.iloc[idx][cols].reset_index(drop=True)
    for c, v in (extra or {}).items():
        out[c] = v
    return out


_EMPTY_PENDING = pd.DataFrame({"_pos": np.array([], dtype=np.int64), "_action": np.array([], dtype=object)})


def first_counterfactuals(model: CreditModel, part: DecidedPart, spec: PipelineSpec, integral: dict[str, bool]):
    """The first stage of the counterfactual search: (JSON of each adverse row's one-feature change, None
    elsewhere and where none was found; the adverse rows still without one, as `adverse_rows` frames with
    `_pos`, their place in the part, and `_action`; an Evaluate of those pending rows, in their order, for
    pair_counterfactuals: the first stage's, when its rows were searched in one slice, else None).
    `integral`: grid rounding flags of the whole batch."""
    adverse = np.flatnonzero(part.adverse)
    cf = [None] * len(part.clean)
    pending = _EMPTY_PENDING.copy()
    if not len(adverse):
        return cf, pending, None
    if not counterfactual.actionable(spec):
        note = json.dumps(counterfactual.no_actionable_note(), sort_keys=True)
        for i in adverse:
            cf[i] = note
        return cf, pending, None
    rows = adverse_rows(part, spec)
    actions = _values(part.decided, "action")[part.adverse]
    singles, evaluate = [], None
    # each row's search is its own (given the batch's rounding flags): in slices, so that the candidate
    # grids of a large part are never all in memory at once
    for a in range(0, len(rows), CF_SLICE_ROWS):
        sl = rows if len(rows) <= CF_SLICE_ROWS else rows.iloc[a:a + CF_SLICE_ROWS].reset_index(drop=True)
        X = part.adverse_matrix[a:a + CF_SLICE_ROWS] if part.adverse_matrix is not None else None
        evaluate = candidate_evaluator(model, sl, spec, X)
        singles += counterfactual.single_changes(sl, actions[a:a + CF_SLICE_ROWS], spec,
                                                 lambda f: score_and_decide(model, f, spec),
                                                 evaluate=evaluate, integral=integral)
    todo = np.array([j for j, s in enumerate(singles) if s is None], dtype=np.int64)
    for j, s in enumerate(singles):
        if s is not None:
            cf[adverse[j]] = json.dumps(s, sort_keys=True)
    pending = _rows_of(rows, rows.columns.tolist(), todo, {"_pos": adverse[todo].astype(np.int64),
                                                           "_action": actions[todo].astype(object)})
    if evaluate is None or len(rows) > CF_SLICE_ROWS or not len(todo):
        return cf, pending, None

    # a candidate of a pending row is scored from that row alone: the first stage's evaluator (its rows already
    # encoded) answers the pair stage's candidates as an evaluator built over the pending rows would
    def evaluate_pending(row_idx: np.ndarray, changes: dict, _first=evaluate, _rows=todo) -> tuple:
        return _first(_rows[np.asarray(row_idx, dtype=np.int64)], changes)

    return cf, pending, evaluate_pending


def pair_counterfactuals(model: CreditModel, pending: list[pd.DataFrame], spec: PipelineSpec,
                         max_pair_rows: int = MAX_PAIR_ROWS, evaluate=None) -> list[list]:
    """The second stage, over the whole batch: two-feature changes for the first `max_pair_rows` pending rows
    in batch order (grid rounding decided over those rows, as counterfactual.search does). One list per
    pending frame: the result of each of its first rows that were searched (None where no pair changes the
    outcome); rows past the cap have no entry, so a list can be shorter than its frame. `evaluate` (one
    pending frame only): first_counterfactuals' Evaluate of its rows."""
    budget, picks = max_pair_rows, []
    for pend in pending:
        take = min(budget, len(pend))
        budget -= take
        picks.append(take)
    out: list[list] = [[] for _ in pending]
    if not sum(picks):
        return out
    if evaluate is not None and len(pending) == 1:
        # the search reads the searched columns and the on-book flags by name: the frame as it is (its first
        # rows: evaluate's row k is the frame's row k)
        sub = pending[0] if picks[0] == len(pending[0]) else pending[0].iloc[:picks[0]]
        actions = sub["_action"].to_numpy(dtype=object)
        out[0] = counterfactual.pair_changes(sub, actions, spec, lambda f: score_and_decide(model, f, spec),
                                             evaluate=evaluate)
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
    if not n:
        return []
    notes = {c: json.dumps(counterfactual.not_found_note(spec, c), sort_keys=True) for c in (False, True)}
    return [(json.dumps(found[t], sort_keys=True) if found[t] else notes[False]) if t < len(found) else notes[True]
            for t in range(n)]


def fill_pairs(log: pd.DataFrame, pending: pd.DataFrame, found: list, spec: PipelineSpec) -> None:
    """Write the pair stage's answers (pair_counterfactuals' list for this `pending` frame) into the
    counterfactual column of the log rows at `pending["_pos"]`; in place."""
    _set_cf(log, pending["_pos"].to_numpy(), pair_json(found, len(pending), spec))


def _set_cf(rows: pd.DataFrame, positions: np.ndarray, texts: list[str]) -> None:
    if len(positions):
        col = rows.columns.get_loc("counterfactual")
        for pos, text in zip(positions.tolist(), texts):
            rows.iat[pos, col] = text


def log_rows(part: DecidedPart, spec: PipelineSpec, cf: list, changed=None, row_offset: int = 0) -> pd.DataFrame:
    """The decision-log rows of the decided rows (before the batch-wide stamps)."""
    return pd.DataFrame(_log_columns(part, spec, cf, changed, row_offset))


def _log_columns(part: DecidedPart, spec: PipelineSpec, cf: list, changed=None, row_offset: int = 0) -> dict:
    """log_rows' columns, in order (numpy arrays, lists, or a scalar for every row): one frame is built from
    them at the end (a frame per group of columns, then concatenated, cost ~1.5 ms a served row)."""
    clean, decided, e = part.clean, part.decided, part.explained
    n = len(clean)
    idc = spec.source.id_column
    codes, en, zh, attr = _reason_lists(e.phi, e.features, _values(decided, "decided_by"), spec)
    if "warning_signals" in decided.columns:
        _add_warning_reasons(codes, en, zh, attr, decided, spec)
    if changed is None:
        changed = ([[] for _ in range(n)],) * 4
    inputs = spec.model_columns  # the row's own values (a derived feature is computed from them, not logged)
    hash_cols = [c for c in ([idc] if idc else []) + inputs if c in clean.columns]
    # the columns only the collections ladder reads are logged too, so a reviewer sees each ladder rule's value
    # (they are not model inputs, so not in the row hash)
    ladder = ([c for c in spec.policy.collections.fields.columns() if c in clean.columns and c not in inputs]
              if spec.policy.collections is not None else [])
    canon = _canonical_columns(clean, dict.fromkeys(hash_cols + inputs + ladder))
    on_book = spec.policy.on_book
    rows = {
        "row_number": clean.index.to_numpy() + 1 + row_offset,
        "status": "decided",
        "quarantine_rules": None,
        "pd": e.pd, "log_odds": e.log_odds, "tier": _values(decided, "tier"),
        "action": _values(decided, "action"), "decided_by": _values(decided, "decided_by"),
        "limit": _values(decided, "limit"), "previous_limit": _values(decided, "previous_limit"),
        "review_queue": _values(decided, "review_queue"),
        "rules_triggered": list(_values(decided, "rules_triggered")),
        "reason_codes": codes, "reasons_en": en, "reasons_zh": zh, "reason_attributions": attr,
        "counterfactual": cf, "shap_base": e.base, "additivity_error": e.additivity_error,
        "changed_features": changed[0], "changed_en": changed[1], "changed_zh": changed[2],
        "changed_attribution_deltas": changed[3],
        "previous_pd": (clean[on_book.fields.previous_pd].to_numpy(dtype="float64") if on_book is not None
                        else np.full(n, np.nan)),
    }
    if "treatment" in decided.columns:  # the collections treatment (decision.collections), its rules and reasons
        for c in ("treatment", "treatment_status", "treatment_rules", "treatment_reasons_en", "treatment_reasons_zh"):
            rows[c] = list(_values(decided, c)) if c.startswith(("treatment_rules", "treatment_reasons")) else \
                _values(decided, c)
    for col in ("watchlist", "warning_signals", "apr", "previous_apr"):  # early warning, pricing (when in the spec)
        if col in decided.columns:
            rows[col] = _values(decided, col) if col != "warning_signals" else list(_values(decided, col))
    for j, f in enumerate(e.features):
        rows[SHAP_PREFIX + f] = e.phi[:, j]
    for c in inputs + ladder:  # object columns (a frame of object arrays infers nothing from these values)
        rows[INPUT_PREFIX + c] = _as_mapped(canon[c][0])
    hashes = _hashes_from_texts([canon[c][1] for c in hash_cols], n)
    rows["input_row_hash"] = hashes
    rows["account_key"] = (privacy.pseudonymise(clean[idc]).to_numpy() if idc else _key_from_hash(pd.Series(hashes)))
    for f in spec.protected_features:  # the fairness groups: labels only, never the values (privacy.group_labels)
        if f.name in clean.columns:
            rows[privacy.GROUP_PREFIX + f.name] = privacy.group_labels(f, clean[f.name]).to_numpy(dtype=object)
    return rows


def _add_warning_reasons(codes: list, en: list, zh: list, attr: list, decided: pd.DataFrame,
                         spec: PipelineSpec) -> None:
    """A watchlist decision's reasons are all its signals (the first, which decided, is already first), then the
    features the model weighed most that no signal reads, up to max_reasons; in place, watchlist rows only."""
    k = spec.policy.max_reasons
    rr, behind = rule_reasons(spec.policy), rule_features(spec.policy)
    actions = decided["action"].to_numpy()
    for i in np.flatnonzero(np.isin(actions, WATCH_ACTIONS)).tolist():
        signals = [WARN_PREFIX + s for s in decided["warning_signals"].iat[i]]
        if len(signals) < 2:
            continue
        read = {f for s in signals for f in behind.get(s, ())}
        rest = [j for j, c in enumerate(codes[i]) if not c.startswith("rule:") and c not in read]
        take = rest[:max(k - len(signals), 0)]
        codes[i] = ["rule:" + s for s in signals][:k] + [codes[i][j] for j in take]
        en[i] = [rr[s]["en"] for s in signals][:k] + [en[i][j] for j in take]
        zh[i] = [rr[s]["zh"] for s in signals][:k] + [zh[i][j] for j in take]
        attr[i] = [None] * min(len(signals), k) + [attr[i][j] for j in take]


def quarantine_rows(q: pd.DataFrame, spec: PipelineSpec, row_offset: int = 0) -> pd.DataFrame:
    """The decision-log rows of the quarantined rows: validate's quarantine frame (row number, rules; personal
    values and the identifier already pseudonymised) -> status, rules, input hash, account key."""
    idc = spec.source.id_column
    inputs = spec.model_columns
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
    if spec.policy.collections is not None:  # no treatment for a row not decided
        qrows["treatment"], qrows["treatment_status"] = "none", ""
        for c in ("treatment_rules", "treatment_reasons_en", "treatment_reasons_zh"):
            qrows[c] = [[] for _ in range(n)]
    if spec.policy.on_book is not None and spec.policy.on_book.early_warning is not None:
        qrows["watchlist"] = False
        qrows["warning_signals"] = [[] for _ in range(n)]
    if idc:
        # validate.py pseudonymised the identifier of each quarantined row already: that pseudonym is the row's
        # account key, the same key as the account's decided rows get (a pseudonym is never keyed again)
        qrows["account_key"] = q[idc].to_numpy(dtype=object) if n else np.array([], dtype=object)
    else:  # no identifier: the key is the row's content hash (as the decision id, with the row number)
        qrows["account_key"] = _key_from_hash(qrows["input_row_hash"])
    return qrows


def _key_from_hash(hashes: pd.Series) -> np.ndarray:
    """The account key of a row without an identifier: the first 24 hex digits of its input hash
    (an object array, also when there are no rows)."""
    return np.array([h[:24] for h in hashes.tolist()] + [None], dtype=object)[:-1]


_HASHES: dict[int, tuple] = {}


def _content_hashes(spec: PipelineSpec) -> tuple[str, str]:
    """(spec hash, policy hash) of this spec object, computed once per object (~0.5 ms a call otherwise: both
    dump the whole model). Specs are frozen; an entry holds its spec, so its id is not reused while cached."""
    got = _HASHES.get(id(spec))
    if got is None or got[0] is not spec:
        if len(_HASHES) >= 32:
            _HASHES.clear()
        got = _HASHES[id(spec)] = (spec, spec.content_hash, spec.policy.content_hash)
    return got[1], got[2]


def finish_log(rows: pd.DataFrame, qrows: pd.DataFrame, spec: PipelineSpec, version: str, as_of: str,
               input_hash: str, input_label: str, status: str = "") -> pd.DataFrame:
    """One frame in row order with the batch stamps and the decision ids."""
    full = pd.concat([rows, qrows], ignore_index=True) if len(qrows) else rows
    if not full["row_number"].is_monotonic_increasing:
        full = full.sort_values("row_number", kind="stable")
    ix = full.index
    if not (isinstance(ix, pd.RangeIndex) and ix.start == 0 and ix.step == 1 and ix.name is None):
        full = full.reset_index(drop=True)  # (already 0..n-1: the concat below makes the new frame)
    stamp = _stamps(spec, version, as_of, input_hash, input_label, status)
    # the stamps in one block (inserting ten columns one by one cost ~5 ms a request), each an object column
    full = pd.concat([full, pd.DataFrame({k: np.full(len(full), v, dtype=object) for k, v in stamp.items()},
                                         index=full.index)], axis=1)
    full.insert(0, "decision_id", decision_ids(spec, version, as_of, full["input_row_hash"].tolist(),
                                               full["row_number"].tolist()))
    return full


def _stamps(spec: PipelineSpec, version: str, as_of: str, input_hash: str, input_label: str, status: str) -> dict:
    """The batch stamps of every log row, in column order."""
    policy = spec.policy
    spec_hash, policy_hash = _content_hashes(spec)
    stamp = {"decision_time": f"{as_of}T00:00:00Z", "model_name": spec.registry.model_name,
             "model_version": version, "policy_name": policy.name, "policy_version": policy.version,
             "policy_hash": policy_hash, "spec_hash": spec_hash, "input_hash": input_hash,
             "input_source": input_label,
             "pseudonym_key": privacy.key_source()}
    if status:  # the model's latest monitoring verdict (DecisionModel.status); not part of the decision id
        stamp["model_status"] = status
    return stamp


def _finished_columns(cols: dict, n: int, spec: PipelineSpec, version: str, as_of: str, input_hash: str,
                      input_label: str, status: str = "") -> pd.DataFrame:
    """finish_log(pd.DataFrame(cols), no quarantined rows, ...) for decided rows already in row order, built as ONE
    frame: the decision id first, the columns, the stamps (object columns), as finish_log lays them out."""
    out = {"decision_id": decision_ids(spec, version, as_of, list(cols["input_row_hash"]),
                                       np.asarray(cols["row_number"]).tolist())}
    out.update(cols)
    out.update({k: np.full(n, v, dtype=object) for k, v in
                _stamps(spec, version, as_of, input_hash, input_label, status).items()})
    return data.frame_of_columns(out, n)


def decision_ids(spec: PipelineSpec, version: str, as_of: str, input_row_hashes: list[str],
                 row_numbers: list[int]) -> list[str]:
    """The decision id of each row: model name and version, policy hash, the row's input hash, the as-of date
    and its row number in its batch."""
    prefix = "|".join([spec.registry.model_name, version, _content_hashes(spec)[1]]) + "|"
    suffix = "|" + as_of + "|"
    sha = hashlib.sha256
    return [sha((prefix + h + suffix + str(r)).encode()).hexdigest()[:32]
            for h, r in zip(input_row_hashes, row_numbers)]


# --------------------------------------------------------------------------- the decision path


def load_model(spec: PipelineSpec, version: str | None = None, on_rebuild: str | None = None) -> DecisionModel:
    """The registered model to decide with: `version`, or the @champion, with its latest monitoring verdict.
    A `rebuild` verdict under `on_rebuild` (default: the spec's monitoring.on_rebuild) `refuse` stops here."""
    registry.configure()
    model, version, run_id = registry.load_registered(spec.registry.model_name, version)
    check_protected_inputs(model, spec, f"{spec.registry.model_name} version {version}")
    return DecisionModel(model, str(version), run_id, model_status(spec, str(version), on_rebuild))


def model_status(spec: PipelineSpec, version: str, on_rebuild: str | None = None) -> str:
    """The version's latest monitoring verdict ("" when never monitored). A `rebuild` verdict is refused
    (ModelStatusRefused) when `on_rebuild` (default: the spec's monitoring.on_rebuild) says `refuse`."""
    latest = registry.latest_verdict(spec.registry.model_name, version)
    if latest is None:
        return ""
    if latest.verdict == "rebuild" and (on_rebuild or spec.monitoring.on_rebuild) == "refuse":
        raise ModelStatusRefused(
            f"{spec.registry.model_name} version {version}: latest monitoring verdict is rebuild (batch "
            f"{latest.batch or '?'}, monitoring run {latest.run_id or '?'}); monitoring.on_rebuild: refuse "
            "(rebuild and promote a new version, or set on_rebuild: flag)")
    return latest.verdict


def note_status(spec: PipelineSpec, version: str, status: str, log) -> None:
    """Say once per run that the decisions are flagged: the version's latest monitoring verdict is not stable."""
    if status and status != "stable":
        log(f"warning: {spec.registry.model_name} version {version}: latest monitoring verdict is {status}; each "
            f"decision carries it (model_status)" + ("" if status != "rebuild" else
                                                     " (monitoring.on_rebuild: flag)"))


def check_protected_inputs(model: CreditModel, spec: PipelineSpec, what: str) -> None:
    """Refuse a model that reads a feature the spec marks protected without a legal basis (a version trained
    before the catalogue said so): its decisions and reasons would rest on a prohibited basis."""
    barred = {f.name for f in spec.protected_features if not f.is_model_input}
    reads = {e.name for e in model.encodings} | {n for e in model.encodings if getattr(e, "expression", None)
                                                   for n in parse_expression(e.expression)[1]}
    used = sorted(barred & reads)
    if used:
        raise SpecError(f"{what} uses {used}, protected in the spec's catalogue without a legal basis "
                        "(rule: protected features never reach a model or a reason); train a new version")


def decide_rows(rows: Validated, model: DecisionModel, spec: PipelineSpec, as_of: str | None,
                previous: PreviousReview | None = None, scope: BatchScope | None = None) -> Decisions:
    """The decision path: validated rows -> score, explain, apply the policy, reasons, counterfactuals, and
    for accounts on book what changed since `previous` -> the decision records of every row (decided and
    quarantined), stamped with the model version, policy, as-of date (YYYY-MM-DD) and input, with their
    decision ids. Pure: nothing is written (see `publish`). `scope`: when `rows` is a part of a larger batch."""
    scope = scope or BatchScope()
    as_of = check_as_of(spec, as_of)
    on_book = spec.policy.on_book is not None
    clean = with_previous_pd(rows.clean, spec, previous.pds if previous is not None and on_book else None)
    part = decide_part(model.model, clean, spec)
    # the grid rounding flags are read only by the search of adverse rows: none, no flags to compute
    integral = (scope.integral if scope.integral is not None else
                counterfactual.integral_flags(part.clean, spec) if part.adverse.any() else {})
    cf, pending, evaluate_pending = first_counterfactuals(model.model, part, spec, integral)
    changed = None
    if previous is not None and on_book:
        changed = _what_changed(part.explained.phi, part.explained.features, previous.attributions,
                                clean[spec.source.id_column].astype(str).to_numpy(), part.adverse, spec)
    cols = _log_columns(part, spec, cf, changed, row_offset=rows.row_offset)
    n_decided = len(part.clean)
    del part, cf, changed
    decided_numbers = np.asarray(cols["row_number"])
    if not len(rows.quarantine) and n_decided and bool((np.diff(decided_numbers) > 0).all()):
        # nothing quarantined, rows in order: the log is built as ONE frame (what finish_log gives)
        n_quarantined = 0
        log = _finished_columns(cols, n_decided, spec, model.version, as_of, rows.input_hash, rows.label,
                                model.status)
    else:
        quarantined = (quarantine_rows(rows.quarantine, spec, row_offset=rows.row_offset) if len(rows.quarantine)
                       else pd.DataFrame())  # nothing quarantined: finish_log takes the decided rows as they are
        n_quarantined = len(quarantined)
        log = finish_log(pd.DataFrame(cols), quarantined, spec, model.version, as_of, rows.input_hash, rows.label,
                         model.status)
    del cols
    if len(log) != rows.rows_in:  # the invariant this whole module exists to keep
        raise RuntimeError(f"rows in {rows.rows_in} != rows logged {len(log)}")
    # pending rows by their place in the log (decided and quarantined rows interleave by row number)
    if len(pending):
        pending["_pos"] = np.searchsorted(log["row_number"].to_numpy(),
                                          decided_numbers[pending["_pos"].to_numpy()]).astype(np.int64)
    if not scope.defer_pairs and len(pending):
        fill_pairs(log, pending, pair_counterfactuals(model.model, [pending], spec,
                                                      evaluate=evaluate_pending)[0], spec)
        pending = pending.iloc[:0]
    return Decisions(log, rows.rows_in, n_decided, n_quarantined, model.version, as_of, rows.input_hash,
                     rows.label, pending)


# --------------------------------------------------------------------------- the log and the audit trail


def log_path(spec: PipelineSpec, out_dir, as_of: str, version: str, input_hash: str) -> Path:
    return Path(out_dir) / f"{spec.name}-{as_of}-v{version}-{input_hash[:12]}.parquet"


def check_as_of(spec: PipelineSpec, as_of: str | None) -> str:
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


def publish(decisions: Decisions, spec: PipelineSpec, out_dir: str | Path, run_id: str = "", log=print,
            suffix: str = "") -> DecideResult:
    """Write decision records as a decision log in `out_dir` and append it to the audit trail."""
    d = decisions
    path = write_log(d.log, log_path(spec, out_dir, d.as_of, d.model_version, d.input_hash))
    return audited(DecideResult(path, d.rows_in, d.rows_decided, d.rows_quarantined, d.model_version, run_id,
                                d.input_label, d.input_hash, d.action_counts, 1, d.log), spec, log, suffix)


def audited(result: DecideResult, spec: PipelineSpec, log=print, suffix: str = "") -> DecideResult:
    """A decision log is written: say so and append it to the audit trail. Every engine ends here, so every
    written decision is in the trail, once (appending the same log again adds nothing)."""
    policy = spec.policy
    log(f"{result.input_label}: {result.rows_in} rows in = {result.rows_decided} decided + "
        f"{result.rows_quarantined} quarantined; model {spec.registry.model_name} v{result.model_version}, "
        f"policy {policy.name} {policy.version} ({policy.content_hash[:12]}) -> {result.path}{suffix}")
    a = audit.record_log(result.path)
    if a.already_sealed and a.inserted == 0:
        log(f"  audit trail {audit.audit_url()}: this decision log is already recorded (batch {a.batch}); "
            "nothing appended")
    else:
        log(f"  {a.inserted} decision records appended to the audit trail {audit.audit_url()} "
            f"(batch {a.batch}, Merkle root {a.merkle_root[:16]}...)")
    return replace(result, audit=a)


# --------------------------------------------------------------------------- the decide job


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
    """Decide a batch, write its decision log and append it to the audit trail. A batch of more than
    `chunk_rows` rows (default data.chunk_rows(): $CREDITGOV_CHUNK_ROWS or 250,000) is read, validated, decided
    and written chunk by chunk (see `_decide_stream`); the log is the same, byte for byte, as deciding it in
    one piece."""
    with no_gc():
        return _decide(spec, data_path, version, as_of, out_dir, log, previous, chunk_rows)


def _decide(spec: PipelineSpec, data_path: str | None, version: str | None, as_of: str | None,
            out_dir: str | Path, log, previous: str | None, chunk_rows: int | None) -> DecideResult:
    as_of = check_as_of(spec, as_of)
    size = data.chunk_rows(chunk_rows)
    batch = data.open_chunked(spec, data_path, size, validate.key_columns(spec))
    if isinstance(batch, data.ChunkedData):
        try:
            return _decide_stream(spec, batch, version, as_of, out_dir, log, previous, size)
        except _Whole:
            pass  # a critical data error, or a chunk unlike the rest: the whole-batch path says it as before
    loaded = batch if isinstance(batch, data.LoadedData) else data.load(spec, data_path)
    with progress.task("Deciding", total=len(loaded.frame), unit="rows") as bar:  # in one piece
        bar.note("validating")
        rows = validate.validate_batch(loaded.frame, spec, loaded.label)
        bar.note("loading the model")
        model = load_model(spec, version)
        note_status(spec, model.version, model.status, log)
        prev = None
        if spec.policy.on_book is not None and previous:
            prev = previous_review(spec, model.model, previous, size)
        bar.note("scoring, explaining, applying the policy")
        decisions = decide_rows(rows, model, spec, as_of, prev)
        bar.advance(rows.rows_in)
    return publish(decisions, spec, out_dir, model.run_id, log)


# --------------------------------------------------------------------------- a batch in chunks
#
# Pass 1 reads the batch chunk by chunk (creditgov.data.open_chunked: every chunk has the rows, values and
# dtypes the whole-file read gives), hashes it (data.ContentHash: the whole frame's content hash, chunk by
# chunk), validates each chunk with the same suite (validate.validate_part), and spills its valid rows and
# its quarantined rows to a work directory beside the log. What is batch-wide stays batch-wide: a key (id,
# or id and date) repeated anywhere in the batch is found before validation and its rows are shown to GX
# twice, so that the uniqueness rules flag exactly the rows the whole batch's validation flags; the
# quarantine share is checked over the whole batch, the rounding flags of the counterfactual grid are
# combined over all valid rows, and the previous review (--previous) is read in chunks into a per-account
# table first. Pass 2 decides chunk by chunk from the spill with decide_rows (BatchScope: the batch's flags,
# the pair search deferred); the counterfactual pair search runs once over the first MAX_PAIR_ROWS rows
# without a one-feature change, in batch order (chunks whose rows wait for it are spilled until it has
# run), and the log is written as Parquet row groups of ROW_GROUP_ROWS rows (_LogSink), so its bytes do not
# depend on the chunk size. A critical data error in any chunk (or a chunk unlike the others) sends the
# batch to the whole-batch path, which reports it exactly as before.


class _Whole(Exception):
    """Decide this batch in one piece (a critical data error is reported there, as it always was)."""


@dataclass
class _Chunk:
    offset: int
    rows: int
    clean: Path | pd.DataFrame  # spilled valid rows (a frame when Parquet cannot hold them, or none are valid)
    n_clean: int
    quarantine: Path | pd.DataFrame  # spilled quarantined rows (validate's frame: pseudonyms, rules), likewise
    n_quarantined: int


def _spill(frame: pd.DataFrame, path: Path):
    """Rows to Parquet (exactly: index, dtypes, NaN or None); the frame itself if Parquet cannot hold it or
    it has no rows."""
    if not len(frame):
        return frame
    try:
        checkpoint.write_exact(frame, path)
        return path
    except (ValueError, TypeError, ArithmeticError, LookupError, NotImplementedError) as exc:
        if "pyarrow" not in type(exc).__module__ and not type(exc).__name__.startswith("Arrow"):
            raise
        path.unlink(missing_ok=True)
        return frame


def _load(item) -> pd.DataFrame:
    return item if isinstance(item, pd.DataFrame) else checkpoint.read_exact(item)


@dataclass
class _Scan:
    input_hash: str
    chunks: list[_Chunk]
    integral: dict[str, bool]
    rows_in: int
    rows_decided: int
    rows_quarantined: int
    q_sample: pd.DataFrame | None  # the first quarantined row (for the log's column types)


def _scan(batch, spec: PipelineSpec, suite: dict, work: Path) -> _Scan:
    """Pass 1: hash, validate and spill each chunk; the batch-wide facts."""
    h = data.ContentHash(batch.header())
    chunks, integral = [], {}
    rule_ids: dict[str, int] = {}
    rule_codes = []
    q_sample = None
    with progress.task("Validating", total=batch.rows, unit="rows") as bar:
        for k, (offset, frame, dup) in enumerate(batch.chunks()):
            h.update(data.row_digests(frame))
            outcome = validate.validate_part(frame, spec, suite, batch.label, dup)
            del frame
            clean, q = outcome.clean, outcome.quarantine
            if len(clean):
                for name, flag in counterfactual.integral_flags(clean, spec).items():
                    integral[name] = integral.get(name, True) and flag
            rules = q["rules"].tolist() if len(q) else []
            rule_codes.append(np.array([rule_ids.setdefault(r, len(rule_ids)) for r in rules], dtype=np.int64))
            if len(q) and q_sample is None:
                q_sample = q.iloc[:1].copy()
            chunks.append(_Chunk(offset, outcome.rows_in, _spill(clean, work / f"clean-{k:06d}.parquet"),
                                 len(clean), _spill(q, work / f"quarantine-{k:06d}.parquet"), len(q)))
            del outcome, clean, q
            gc.collect()  # the cyclic collector is paused (no_gc): collect each chunk's garbage here
            bar.advance(chunks[-1].rows)
    rows_in = sum(c.rows for c in chunks)
    codes = np.concatenate(rule_codes) if rule_codes else np.array([], dtype=np.int64)
    validate.enforce_batch_share(rows_in, pd.Categorical.from_codes(codes, categories=list(rule_ids)), spec,
                                 batch.label)
    if not any(c.n_clean for c in chunks):
        raise _Whole("no valid rows")  # (a batch allowed to be all quarantined)
    return _Scan(h.hexdigest(), chunks, integral, rows_in, sum(c.n_clean for c in chunks),
                 sum(c.n_quarantined for c in chunks), q_sample)


class _PairStage:
    """The counterfactual pair search over the whole batch: chunks whose rows take part wait (spilled)
    until it has run, once MAX_PAIR_ROWS rows are pending or the batch ends."""

    def __init__(self, model: CreditModel, spec: PipelineSpec, work: Path, cap: int = MAX_PAIR_ROWS):
        self.model, self.spec, self.work = model, spec, work
        self.budget, self.done = cap, False
        self.waiting: list[list] = []  # [chunk, log rows (frame or spilled path), pending rows searched]

    def add(self, ch: _Chunk, rows: pd.DataFrame, pending: pd.DataFrame, last: bool) -> list:
        """Chunks ready to finish, in batch order: [(chunk, () -> its log rows)] (rows that waited on disk
        are read back one chunk at a time, as they are finished)."""
        n = len(pending)
        take = 0 if self.done else min(self.budget, n)
        self.budget -= take
        fill_pairs(rows, pending.iloc[take:], [], self.spec)  # past the cap
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
        return [self._patched(c, r, pend, res) for (c, r, pend), res in zip(waiting, found)]

    def _patched(self, ch: _Chunk, rows, pending: pd.DataFrame, found: list):
        """(chunk, log rows): the rows read back (when they waited on disk) only when asked for."""
        def load() -> pd.DataFrame:
            r = rows if isinstance(rows, pd.DataFrame) else checkpoint.read_frame(rows)
            fill_pairs(r, pending, found, self.spec)
            return r

        return ch, load


def _decide_stream(spec: PipelineSpec, batch, version: str | None, as_of: str, out_dir: str | Path, log,
                   previous: str | None, size: int) -> DecideResult:
    suite = validate.suite_for(spec, batch.columns)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_stale(out_dir / "decide-work")  # work directories (.decide-work.tmp-<pid>-<id>) of killed runs
    work = temp_beside(out_dir / "decide-work")
    work.mkdir()
    try:
        try:
            scan = _scan(batch, spec, suite, work)
        except (DataError, data.NotStreamable) as exc:
            raise _Whole(str(exc)) from None

        model = load_model(spec, version)
        note_status(spec, model.version, model.status, log)
        prev = None
        if spec.policy.on_book is not None and previous:
            prev = previous_review(spec, model.model, previous, size)
        scope = BatchScope(integral=scan.integral, defer_pairs=True)

        def part(ch: _Chunk) -> Validated:
            outcome = ValidationOutcome(clean=_load(ch.clean), quarantine=_load(ch.quarantine), rows_in=ch.rows,
                                        gx_result={})
            return Validated(spec, outcome, batch.label, scan.input_hash, None, suite, ch.offset)

        path = log_path(spec, out_dir, as_of, model.version, scan.input_hash)
        sink = _LogSink(path)
        sink.dtypes = _log_dtypes([_probe(model, spec, as_of, scan, batch.label, prev, scope)])
        pairs = _PairStage(model.model, spec, work)
        counts: dict[str, int] = {}
        logged = 0
        with progress.task("Deciding", total=scan.rows_in, unit="rows") as bar:
            for i, ch in enumerate(scan.chunks):
                decided = decide_rows(part(ch), model, spec, as_of, prev, scope)
                ready = pairs.add(ch, decided.log, decided.pending, i == len(scan.chunks) - 1)
                del decided
                while ready:
                    _, rows_of = ready.pop(0)
                    full = rows_of()
                    for k, v in full["action"].value_counts().items():
                        counts[str(k)] = counts.get(str(k), 0) + int(v)
                    logged += len(full)
                    sink.push(full)
                    del full, rows_of
                gc.collect()
                _release_memory()
                sink.flush()
                bar.advance(ch.rows)
        if logged != scan.rows_in:  # the invariant this whole module exists to keep
            raise RuntimeError(f"rows in {scan.rows_in} != rows logged {logged}")
        sink.close()
    except BaseException:
        if "sink" in locals():
            sink.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = DecideResult(path, scan.rows_in, scan.rows_decided, scan.rows_quarantined, model.version, model.run_id,
                          batch.label, scan.input_hash, dict(sorted(counts.items())), len(scan.chunks), None)
    return audited(result, spec, log, f" [{len(scan.chunks)} chunks of up to {size} rows]")


def _probe(model: DecisionModel, spec: PipelineSpec, as_of: str, scan: _Scan, label: str,
           prev: PreviousReview | None, scope: BatchScope) -> pd.DataFrame:
    """The log rows of the batch's first valid row and first quarantined row decided together: the log's
    column types before any chunk is written (they depend only on the columns' types and on whether the batch
    has quarantined rows, not on the values)."""
    clean = _load(next(c for c in scan.chunks if c.n_clean).clean).iloc[:1]
    q = scan.q_sample if scan.q_sample is not None else _load(scan.chunks[0].quarantine).iloc[:0]
    outcome = ValidationOutcome(clean=clean, quarantine=q, rows_in=len(clean) + len(q), gx_result={})
    return decide_rows(Validated(spec, outcome, label, scan.input_hash), model, spec, as_of, prev, scope).log


def _log_dtypes(logs) -> dict:
    """The pandas dtypes of a log assembled from these log frames (finish_log's on all the rows at once): those
    of one decided row and one quarantined row (when any) together."""
    decided = next(f for f in logs if (f["status"] == "decided").any())
    parts = [decided[decided["status"] == "decided"].iloc[:1]]
    quarantined = next((f for f in logs if (f["status"] == "quarantined").any()), None)
    if quarantined is not None:
        parts.append(quarantined[quarantined["status"] == "quarantined"].iloc[:1])
    return dict(pd.concat(parts, ignore_index=True).dtypes)


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
        fields = [pa.field(n, self.types.get(n) or self.null_types.get(n) or pa.null()) for n in self.names]
        empty = pd.DataFrame({n: pd.Series([], dtype=self.dtypes[n]) for n in self.names})
        return pa.Table.from_pandas(empty, schema=pa.schema(fields), preserve_index=False).schema

    def _flush(self, n: int) -> None:
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
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _pack(a):
    """An Arrow array as a zstd-compressed IPC stream (a pyarrow Buffer)."""
    batch = pa.record_batch([a], names=["c"])
    out = pa.BufferOutputStream()
    with pa.ipc.new_stream(out, batch.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_batch(batch)
    return out.getvalue()


def _unpack(packed):
    return pa.ipc.open_stream(packed).read_next_batch().column(0)


def _unify(a, b):
    """The type pyarrow infers for values of type a and values of type b together."""
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
    if a.type == typ:
        return a
    if a.null_count == len(a):
        return pa.nulls(len(a), type=typ)
    return pc.cast(a, typ, safe=False)


def _contiguous(arrays: list, typ):
    """One array (write_table writes each column of a row group from one array; pages follow from it)."""
    if not arrays:
        return pa.array([], type=typ)
    if len(arrays) == 1 and arrays[0].offset == 0:
        return arrays[0]
    return pa.concat_arrays(arrays)


def write_log_parts(parts: list[pd.DataFrame], path: Path) -> Path:
    """Write the log rows of a batch decided in parts (decide_rows' logs, in batch order) as one decision log:
    the file write_log writes for the whole batch at once, byte for byte (_LogSink), without assembling it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = _LogSink(path)
    try:
        sink.dtypes = _log_dtypes(parts)
        for part in parts:
            sink.push(part)
            sink.flush()
        return sink.close()
    except BaseException:
        sink.abort()
        raise


def write_log(frame: pd.DataFrame, path: Path) -> Path:
    """Write atomically (temporary name, then rename) so no half-written log is ever visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)  # the temporaries of a killed earlier write of this log
    tmp = temp_beside(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return path


def read_log(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)
