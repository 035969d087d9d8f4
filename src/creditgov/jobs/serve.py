"""`creditgov serve`: the one decision path over HTTP (FastAPI on uvicorn, one process; `--workers N`: N such
processes on one socket, their journal sealed by the parent, see creditgov.jobs.workers).

A request's rows go through what a batch goes through, in the same functions: validated by the suite's own
rules (validate.CompiledSuite: the GX suite compiled to vectorised checks, held to GX's verdicts by
tests/data/test_fast_validation.py), decided by decide.decide_rows with the model loaded once from the
registry (@champion), and recorded durably before the answer leaves (in the audit trail, or in the decision
journal that is sealed into the trail within --merge-delay seconds: see below). So a served decision is,
field for field, the decision the batch path writes for the same row, model version, policy and as-of
date (only input_source and input_hash say where the rows came from: "api", and the request's rows).

Micro-batches (DecideBatcher): each request puts its body on a queue and waits. One task takes whatever is
queued (no waiting window: a request that arrives alone is decided alone, at once; requests that arrive while a
micro-batch is being decided form the next one) and decides it in the decide thread with ONE model. Requests
without `previous` and with the same as-of date are decided by one decide_rows call when that gives each
request exactly the records it gets alone (Decider._merged says how that is ensured; the rest is decided
alone), and tests/e2e/test_serve.py compares the two field for field.

The audit trail takes decision logs, one chain entry per log. A micro-batch's decisions become ONE decision
log (one Parquet file in --out per model version and as-of date, written under a temporary name, fsynced and
renamed) put in the trail in ONE transaction (audit.record_log_bytes: batch opened, decisions indexed, chain
entry sealed, one commit with SQLite's WAL synchronous=FULL). The audit writer runs in its own thread while
the next micro-batch is decided; micro-batches queued meanwhile go into the next log (group commit).

The decision journal (--merge-delay S > 0, the default 1 s), Certificate Transparency's construction (RFC 6962 /
9162: a signed certificate timestamp at once, inclusion in the Merkle tree within a maximum merge delay): the
audit writer appends a micro-batch's decision-log rows to the current journal segment in --out
(governance.journal: Arrow IPC record batches, the log frame as `_arrow_table` converts it; whatever is queued
goes in one write and one fdatasync) and the requests are answered once that fdatasync returns, each answer
carrying the promise: `journal` = the segment, the frame's sequence number in it and each decision's record
hash (the Merkle leaf the audit index will hold for it). A sealer, in its own thread, rotates the segment at
most every S seconds (or once it holds AUDIT_MAX_ROWS rows) and seals the old one: its frames read back, made
into decision logs exactly as the micro-batches' logs (append_logs: same grouping, names, bytes, one
transaction each) and the segment deleted. The server holds an exclusive flock on each segment until it is
sealed, so `creditgov audit verify` tells a live segment (pending, not a finding) from one a dead server left
(a finding: start `creditgov serve` again, which seals it before its port opens: complete_interrupted). GET
/v1/decisions/{id}, reviews and contests of a decision still only in the journal seal it on demand first.
--merge-delay 0: no journal; the answer waits for the seal, as described above.

Either way a 2xx is never sent for a decision that is not durably recorded (in the trail, or in the journal
with its promise), and an append that fails answers 503 (the decision was not issued). A decision the trail
already holds (the same row decided again: the same decision id) is answered but not appended twice. Shutdown
(SIGTERM, SIGINT) stops accepting, lets in-flight requests finish (their appends included), then drains the
queues, seals every journal segment and stops the writer.

Human oversight: POST /v1/reviews (a person confirms or overrides a decision) and POST /v1/contests (a customer
contests one with a corrected row) call decision.oversight's review / contest_rows, the functions behind
`creditgov review` / `creditgov contest`, which record their events in the audit trail; a decision id the trail
does not hold is 404, an invalid body 422. A crash (kill -9) can leave a served log written but not sealed in
the trail (its requests unanswered), or journal segments not yet sealed (their requests answered with the
promise): the next start completes those appends and seals those segments before the port opens.

Operations: API keys from $CREDITGOV_API_KEYS (comma separated), compared with hmac.compare_digest against
every configured key; none configured refuses to start unless --insecure-dev. Request bodies over
--max-body-bytes get 413, more than MAX_ROWS rows 413. The log has method, path, status, rows, milliseconds
and the rules a refused row broke: no client address, no values, no identifiers. The @champion alias is
polled every --reload-seconds; a moved alias loads the new version beside the old one, warms it up and swaps
it in between micro-batches (a micro-batch, so each request, is decided by one model; every answer names it).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from pandas.core.dtypes.cast import maybe_box_native
import pyarrow as pa
import pyarrow.parquet as pq
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from creditgov.data import expectations, inputs, validate
from creditgov.decision import counterfactual
from creditgov.decision import decide as engine
from creditgov.decision import oversight
from creditgov.errors import CreditGovError, SpecError, TrackingError, UsageError
from creditgov.governance import audit, journal, merkle, registry
from creditgov.report import wording
from creditgov.spec import PipelineSpec

MAX_BODY_BYTES = 1 << 20  # 1 MiB: ~2,000 rows of the application catalogue
MAX_ROWS = 1000
AUDIT_WINDOW_S = 0.0  # no waiting: requests that arrive during an append form the next one
MERGE_MAX_ROWS = 1000  # rows decided together in one micro-batch
# a micro-batch of at most this many rows is decided, and its journal frame written, on the event loop itself:
# the hops (loop -> decide thread -> loop -> audit thread -> loop, each waiting for the GIL) cost more than
# the loop's few milliseconds of block (at 100 requests/s, 2 workers: p50 9.0-9.3 -> 8.4-8.5 ms, p99
# 27-32 -> 26 ms, 5% less CPU); a larger one goes to the threads, so that the loop keeps answering meanwhile
INLINE_ROWS = 16
AUDIT_MAX_ROWS = 20_000  # rows per audit append; also the rows at which a journal segment is sealed at once
MERGE_DELAY_S = 1.0  # a journaled decision is sealed in the trail within about this many seconds
LABEL = "api"

log = logging.getLogger("creditgov.serve")


class Refused(Exception):
    """An answer other than 200, with its JSON body."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.body = status, {"error": message, **extra}


def _json(obj, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                                 default=_default), status_code=status, media_type="application/json")


def _default(v):
    if isinstance(v, (np.ndarray, tuple, set)):
        return list(v)
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.generic,)):
        return v.item()
    raise TypeError(type(v).__name__)


def records(log_frame: pd.DataFrame) -> list[dict]:
    """The decision records of a log frame as JSON-ready dicts (missing values as null): what
    `to_dict("records")` gives (Python scalars, numpy scalars in object columns boxed), without its
    column-by-column Series slicing (~3 ms for one 60-column row); other dtypes go through to_dict."""
    cols = log_frame.columns.tolist()
    if not log_frame.columns.is_unique or not all(isinstance(t, np.dtype) and t.kind in "fiubO"
                                                  for t in inputs.dtypes_of(log_frame)):
        out = log_frame.to_dict("records")
        for r in out:
            for k, v in r.items():
                if isinstance(v, float) and v != v:
                    r[k] = None
        return out
    # numeric columns become Python scalars (as Series iteration gives them); object columns keep their values
    return [{k: _json_value(v) for k, v in zip(cols, row)} for row in log_frame.to_numpy(dtype=object).tolist()]


def _json_value(v):
    if isinstance(v, np.generic):
        v = maybe_box_native(v)
    return None if isinstance(v, float) and v != v else v


# --------------------------------------------------------------------------- deciding a request


class Decider:
    """The spec, its suite compiled (with and without the target's rules), and the model: one request's
    JSON rows -> decide_rows' Decisions, or Refused (422) naming each refused row's field and rule."""

    def __init__(self, spec: PipelineSpec, model: engine.DecisionModel, as_of: str | None):
        suite = expectations.checked_suite(spec)
        self.spec = spec
        self.compiled = {True: validate.CompiledSuite(suite),
                         False: validate.CompiledSuite(expectations.for_scoring(suite, spec, []))}
        self.model = model
        self.as_of = as_of  # None: the date of each request
        # catalogue fields that may be missing: a request may leave them out (the schema does not require them)
        self.known = ({f.name for f in spec.input_features} | {spec.target.column} | spec.policy_columns
                      | ({spec.source.id_column, spec.source.date_column} - {None}))
        self.optional = {f.name: ("float64" if f.type == "numeric" else "object") for f in spec.input_features
                         if f.missing_allowed}

    def frame(self, rows, what: str) -> pd.DataFrame:
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise Refused(422, f"{what}: a non-empty list of objects (one per row) is required")
        if len(rows) > MAX_ROWS:
            raise Refused(413, f"{what}: {len(rows)} rows; at most {MAX_ROWS} per request")
        # keys the spec does not know are ignored, as the batch path ignores columns outside the catalogue
        rows = [{k: v for k, v in r.items() if k in self.known} for r in rows]
        try:  # text a decision record could not hold: a lone surrogate (orjson refuses to write one)
            orjson.dumps(rows)
        except TypeError as exc:
            raise Refused(422, f"{what}: {str(exc).splitlines()[0][:120]}") from None
        frame = inputs.frame_of_records(rows)
        have = dict(zip(frame.columns.tolist(), inputs.dtypes_of(frame)))  # (no Series per optional column)
        for name, dtype in self.optional.items():  # a key left out of JSON is a missing value (null)
            if name not in have:
                frame[name] = pd.Series(np.nan if dtype == "float64" else None, index=frame.index, dtype=dtype)
            elif dtype == "float64" and have[name] == object and frame[name].isna().all():
                # only nulls in a numeric column: missing numbers, as a batch file reads them (and the same
                # dtype as in a request where the column also has numbers: requests can be decided together)
                frame[name] = frame[name].astype("float64")
        return frame

    def validated(self, rows, what: str) -> validate.Validated:
        return self._validated_frame(self.frame(rows, what), what)

    def _validated_frame(self, frame: pd.DataFrame, what: str) -> validate.Validated:
        suite = self.compiled[self.spec.target.column in frame.columns]
        try:
            v = validate.validate_rows(frame, self.spec, suite, what)
        except CreditGovError as exc:
            raise Refused(422, str(exc)) from None
        if len(v.quarantine):
            bad = [{"row": int(n), "rules": r.split("; ")} for n, r in zip(v.quarantine["row_number"],
                                                                           v.quarantine["rules"])]
            first = bad[0]
            raise Refused(422, f"{what}: row {first['row']} breaks the suite's rule {first['rules'][0]!r}"
                          + (f" and {len(bad) - 1} more rows are refused" if len(bad) > 1 else ""), rows=bad)
        return v

    def _as_of(self, body: dict) -> str:
        as_of = body.get("as_of", self.as_of)
        if as_of is not None and not isinstance(as_of, str):
            raise Refused(422, "as_of: a date YYYY-MM-DD")
        try:
            return engine.check_as_of(self.spec, as_of)
        except CreditGovError as exc:
            raise Refused(422, str(exc).replace("--as-of", "as_of")) from None

    def decide(self, body: dict, model: engine.DecisionModel | None = None) -> engine.Decisions:
        model = model or self.model  # one model for the whole request, whatever a reload does meanwhile
        spec = self.spec
        as_of = self._as_of(body)
        rows = self.validated(body.get("rows"), "rows")
        prev = None
        if body.get("previous") is not None:
            if spec.policy.on_book is None:
                raise Refused(422, f"previous: the {spec.name} policy has no on-book review")
            p = self.validated(body["previous"], "previous")
            e = engine.explain_batch(model.model, p.clean, spec)
            ids = p.clean[spec.source.id_column].astype(str).to_numpy()
            prev = engine.PreviousReview(pd.Series(e.pd, index=ids), pd.DataFrame(e.phi, index=ids,
                                                                                  columns=e.features))
        v = validate.Validated(spec, rows.outcome, LABEL, rows.input_hash)
        return engine.decide_rows(v, model, spec, as_of, prev)

    # ----------------------------------------------------------------------- micro-batches

    def decide_many(self, bodies: list[dict]) -> tuple[list, list[pd.DataFrame]]:
        """Requests that arrived together, decided with ONE model (the one in use when the micro-batch
        started): (per request, its Served answer or the exception that refuses it; the decision-log frames
        holding every answered decision, for the audit writer).

        Requests without `previous` and with the same as-of date are decided together by one decide_rows
        call when that gives each request exactly the records it would get alone (`_merged`); any other
        request, and a group where that cannot be shown, is decided alone, as `decide` does."""
        model = self.model
        out: list = [None] * len(bodies)
        frames: list[pd.DataFrame] = []
        groups: dict[str, list[tuple[int, pd.DataFrame]]] = {}
        for i, body in enumerate(bodies):
            try:
                if len(bodies) == 1 or body.get("previous") is not None:
                    d = self.decide(body, model)
                    out[i] = Served(records(d.log), d.model_version, d.as_of, len(d.log))
                    frames.append(d.log)
                else:
                    groups.setdefault(self._as_of(body), []).append((i, self.frame(body.get("rows"), "rows")))
            except Exception as exc:  # Refused, or a defect the handler reports as 500
                out[i] = exc
        for as_of, members in groups.items():
            for (i, answer), log_frame in self._merged(members, as_of, model):
                out[i] = answer
                if log_frame is not None:
                    frames.append(log_frame)
        return out, frames

    def _alone(self, i: int, frame: pd.DataFrame, as_of: str, model) -> tuple[tuple, pd.DataFrame | None]:
        try:
            v = self._validated_frame(frame, "rows")
            d = engine.decide_rows(validate.Validated(self.spec, v.outcome, LABEL, v.input_hash), model,
                                   self.spec, as_of)
        except Exception as exc:
            return (i, exc), None
        return (i, Served(records(d.log), d.model_version, d.as_of, len(d.log))), d.log

    def _merged(self, members: list[tuple[int, pd.DataFrame]], as_of: str, model):
        """Yield ((request index, answer), log frame or None) for the members of one as-of group.

        One decide_rows call over the concatenated rows gives each request the records it would get alone
        when (checked here, else each request goes alone): the requests have the same columns with the same
        dtypes (so validation prepares and types each column as it would alone, and the content hash of a
        request is its own rows' digests under the same header); the concatenation breaks no rule (a rule
        of one row holds for that row alone; a unique column unique over all is unique in each part;
        min-only row counts); the counterfactual grid rounding flags, which the batch path takes over a
        request's own rows, are the same for every member (else the members are split by their flags). What
        depends on a row's place in its batch is then set per request, as finish_log sets it: row numbers
        from 1, the input hash, the decision ids. The pair stage of the counterfactual search (capped and
        rounded over a batch's pending rows; each row's search otherwise its own) runs once for the
        requests whose pending rows hold whole numbers only (rounded alone as together) within the cap,
        and per request for the others, as decide_rows runs it."""
        spec = self.spec
        if len(members) == 1:
            yield self._alone(members[0][0], members[0][1], as_of, model)
            return
        by: dict[tuple, list] = {}
        for m in members:  # the same columns with the same dtypes
            by.setdefault((tuple(m[1].columns), tuple(str(t) for t in m[1].dtypes)), []).append(m)
        if len(by) > 1:
            for sub in by.values():
                yield from self._merged(sub, as_of, model)
            return
        counts = np.array([len(f) for _, f in members])
        if counts.sum() > 2 * MERGE_MAX_ROWS:
            half = len(members) // 2
            yield from self._merged(members[:half], as_of, model)
            yield from self._merged(members[half:], as_of, model)
            return
        first = members[0][1]
        merged = pd.concat([f for _, f in members], ignore_index=True)
        ends = np.cumsum(counts)
        v = None
        if merged.dtypes.equals(first.dtypes):
            try:
                v = validate.validate_rows(merged, spec, self.compiled[spec.target.column in merged.columns], "rows")
            except CreditGovError:
                v = None
        if v is None:
            for i, f in members:
                yield self._alone(i, f, as_of, model)
            return
        if len(v.quarantine):  # the requests with a refused row go alone (each gets its own verdict), the rest
            bad = set(np.searchsorted(ends, v.quarantine["row_number"].to_numpy() - 1, side="right").tolist())
            rest = [m for k, m in enumerate(members) if k not in bad]
            for k in sorted(bad):
                yield self._alone(*members[k], as_of, model)
            if rest:
                yield from self._merged(rest, as_of, model)
            return
        starts = ends - counts
        clean = v.clean
        flags = [tuple(sorted(counterfactual.integral_flags(clean.iloc[a:b], spec).items()))
                 for a, b in zip(starts, ends)]
        if len(set(flags)) > 1:  # decided in groups of equal rounding flags (each group merged again)
            by: dict[tuple, list] = {}
            for m, fl in zip(members, flags):
                by.setdefault(fl, []).append(m)
            for sub in by.values():
                yield from self._merged(sub, as_of, model)
            return
        d = engine.decide_rows(validate.Validated(spec, v.outcome, LABEL, v.input_hash), model, spec, as_of, None,
                               engine.BatchScope(integral=dict(flags[0]), defer_pairs=True))
        log_frame = d.log
        header = inputs.dtype_header(merged.columns, merged.dtypes)
        digests = inputs.row_digests(merged)
        hashes = []
        for a, b in zip(starts, ends):
            h = inputs.ContentHash(header)
            h.update(digests[8 * a:8 * b])
            hashes.append(h.hexdigest())
        row_numbers = np.concatenate([np.arange(1, n + 1, dtype=np.int64) for n in counts])
        log_frame["row_number"] = row_numbers
        log_frame["input_hash"] = np.repeat(np.array(hashes, dtype=object), counts)
        log_frame["decision_id"] = engine.decision_ids(spec, model.version, as_of,
                                                       log_frame["input_row_hash"].tolist(), row_numbers.tolist())
        pending = d.pending
        if len(pending):
            pos = pending["_pos"].to_numpy()
            whole, alone = [], []
            for a, b in zip(starts, ends):
                mine = pending[(pos >= a) & (pos < b)].reset_index(drop=True)
                if len(mine):  # whole numbers only: the pair grids are rounded alone as together
                    (whole if all(counterfactual.integral_flags(mine, spec).values()) else alone).append(mine)
            if sum(len(m) for m in whole) > engine.MAX_PAIR_ROWS:  # the batch's cap would cut some short
                whole, alone = [], whole + alone
            groups = ([whole] if whole else []) + [[m] for m in alone]
            for g in groups:
                for mine, found in zip(g, engine.pair_counterfactuals(model.model, g, spec)):
                    engine.fill_pairs(log_frame, mine, found, spec)
        recs = records(log_frame)
        for k, ((i, _), a, b) in enumerate(zip(members, starts, ends)):
            yield (i, Served(recs[a:b], d.model_version, as_of, int(b - a))), (log_frame if k == 0 else None)


@dataclass
class Served:
    """A request's answer before its audit append: its decision records (JSON-ready), model version, as-of."""
    records: list
    model_version: str
    as_of: str
    rows: int
    journal: dict | None = None  # the journal's promise (segment, sequence, record hashes); None once sealed


class NotRecorded(Exception):
    """The audit append of a micro-batch failed: none of its decisions is issued."""


class DecideBatcher:
    """Concurrent POST /v1/decisions requests, decided in micro-batches and recorded before they are answered.

    Each request puts its body on a queue and waits. One task takes whatever is queued (no waiting window: a
    request that arrives alone is decided alone at once; requests that arrive while a micro-batch is decided
    form the next one), decides them in the decide thread (Decider.decide_many: one model, one decide_rows
    call where that gives each request its own records), then hands the decision-log frames to the audit
    writer and goes on with the next micro-batch while this one is appended. A request's answer is released
    only when the append holding its decisions has committed (merge delay 0) or its rows are fdatasynced in the
    decision journal (the answer then carries the journal's promise); an append that fails answers 503."""

    def __init__(self, decider: Decider, writer: "AuditWriter", pool: ThreadPoolExecutor,
                 max_rows: int = MERGE_MAX_ROWS):
        self.decider, self.writer, self.pool, self.max_rows = decider, writer, pool, max_rows
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.sealing: set[asyncio.Task] = set()
        self.batches = 0

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def decide(self, body: dict) -> Served:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((body, fut))
        return await fut

    async def stop(self) -> None:
        if self.task is not None:
            await self.queue.put(None)
            await self.task
        while self.sealing:
            await asyncio.gather(*list(self.sealing), return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.queue.get()
            if item is None:
                break
            items, stop = _take_queued(self.queue, item, self.max_rows, lambda it: _rows_of(it[0]))
            try:
                bodies = [b for b, _ in items]
                if sum(_rows_of(b) for b in bodies) <= INLINE_ROWS:
                    outs, frames = self.decider.decide_many(bodies)
                else:
                    outs, frames = await loop.run_in_executor(self.pool, self.decider.decide_many, bodies)
            except Exception as exc:
                outs, frames = [exc] * len(items), []
            self.batches += 1
            answered = []
            for (_, fut), res in zip(items, outs):
                if isinstance(res, BaseException):
                    if not fut.done():
                        fut.set_exception(res)
                else:
                    answered.append((fut, res))
            if answered:
                t = loop.create_task(self._seal(frames, answered))
                self.sealing.add(t)
                t.add_done_callback(self.sealing.discard)
            if stop:
                break

    async def _seal(self, frames: list[pd.DataFrame], answered: list) -> None:
        try:
            promise = await self.writer.record(frames)
        except Exception:
            for fut, _ in answered:
                if not fut.done():
                    fut.set_exception(NotRecorded())
            return
        for fut, res in answered:
            if promise is not None:  # journaled, not yet sealed: the answer carries the promise
                got = [promise["record_hashes"].get(r.get("decision_id")) for r in res.records]
                res.journal = {"segment": promise["segment"],
                               "sequence": min((g[0] for g in got if g), default=None),
                               "record_hashes": [g[1] if g else None for g in got],
                               "merge_delay_s": self.writer.merge_delay}
            if not fut.done():
                fut.set_result(res)


def _take_queued(queue: asyncio.Queue, first, max_rows: int, rows_of) -> tuple[list, bool]:
    """`first` and the items already queued behind it, up to `max_rows` rows (rows_of(item) each); the flag says
    a None (shut down) was taken, after which the caller stops once these items are done."""
    items, rows = [first], rows_of(first)
    while rows < max_rows and not queue.empty():
        nxt = queue.get_nowait()
        if nxt is None:
            return items, True
        items.append(nxt)
        rows += rows_of(nxt)
    return items, False


def _rows_of(body) -> int:
    rows = body.get("rows") if isinstance(body, dict) else None
    return len(rows) if isinstance(rows, list) else 1


# --------------------------------------------------------------------------- the audit writer


class AuditWriter:
    """Served decisions into the audit trail, many requests per decision log (see the module's docstring).

    merge_delay 0: a micro-batch's `record` returns once its decision log is sealed in the trail. merge_delay > 0
    (the journal): `record` returns once its rows are durably in the current journal segment (one write and one
    fdatasync for whatever is queued), with the promise (segment, frame sequence, record hashes); the sealer
    rotates the segment at most every merge_delay seconds (or once it holds max_rows rows) and seals the old one
    into decision logs in the trail, in its own thread so that journal appends do not wait behind a seal. With
    a `sealer` (a worker process of `creditgov serve --workers`), a rotated segment is not sealed here: its lock
    is handed to the parent, which seals it (journal.Journal.hand_over), so no seal holds this process's GIL;
    `sealer.segment(path, fd)` hands one over, `sealer.flush()` asks every worker to hand its segments over now
    (SIGUSR1, which rotates at once)."""

    def __init__(self, spec: PipelineSpec, out_dir: Path, window: float = AUDIT_WINDOW_S,
                 max_rows: int = AUDIT_MAX_ROWS, merge_delay: float = 0.0, sealer=None):
        self.spec, self.out_dir, self.window, self.max_rows = spec, Path(out_dir), window, max_rows
        self.merge_delay = merge_delay
        self.sealer = sealer  # the sealer process's channel (None: segments are sealed here)
        self.queue: asyncio.Queue | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="audit")
        self.task: asyncio.Task | None = None
        self.appended = 0  # decision records this process appended
        self.logs = 0  # decision logs it wrote
        self.journal = journal.Journal(self.out_dir, spec.name) if merge_delay > 0 else None
        self.seal_pool = ThreadPoolExecutor(1, thread_name_prefix="seal") if self.journal else None
        self.rotator: asyncio.Task | None = None
        self.seal_lock: asyncio.Lock | None = None
        self.full: asyncio.Event | None = None
        self.stopping = False

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())
        if self.journal is not None:
            self.seal_lock, self.full = asyncio.Lock(), asyncio.Event()
            self.rotator = asyncio.get_running_loop().create_task(self._rotator())
            if self.sealer is not None:  # the parent asks for this worker's segments (a seal on demand elsewhere)
                asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.full.set)

    async def record(self, frames: list[pd.DataFrame]) -> dict | None:
        """None once sealed in the trail (merge_delay 0); with the journal, the promise once journaled:
        {"segment", "sequence", "record_hashes": {decision id: (frame sequence, leaf hash hex)}}."""
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((frames, fut))
        return await fut

    async def stop(self) -> None:
        """Everything queued is written first (the sentinel is the queue's last item); with the journal, every
        segment is then sealed (a graceful shutdown leaves no promise open)."""
        if self.task is not None:
            await self.queue.put(None)
            await self.task
        if self.journal is not None:
            self.stopping = True
            if self.rotator is not None:
                self.full.set()
                await self.rotator
            await self.seal_now(fresh=False)
            self.journal.close()
            self.seal_pool.shutdown(wait=True)
        self.pool.shutdown(wait=True)

    def is_pending(self, decision_id: str) -> bool:
        """Journaled (answered) by this process and not yet sealed in the trail."""
        return self.journal is not None and self.journal.holds(decision_id)

    def unsealed(self) -> int:
        """Rows journaled and not yet sealed (0 without the journal)."""
        return self.journal.unsealed_rows() if self.journal is not None else 0

    async def seal_now(self, fresh: bool = True) -> None:
        """Rotate the current segment (a fresh one takes its place when `fresh`) and seal every segment rotated
        and not yet sealed, oldest first, in the seal thread (or hand each to the sealer process)."""
        async with self.seal_lock:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.seal_pool, self.journal.rotate, fresh)
            for seg in self.journal.to_seal():
                if self.sealer is None:
                    await loop.run_in_executor(self.seal_pool, self._seal_segment, seg)
                else:
                    self.journal.hand_over(seg, self.sealer.segment)

    async def sealed(self, decision_id: str, limit: float = 60.0) -> None:
        """A decision answered from the journal and not yet in the trail, sealed now (seal on demand). Alone, its
        segment is rotated and sealed here. A worker hands its own segments over; a decision another worker
        answered is in one of the segments not empty now: every worker is asked to hand its segments over, and
        those segments are waited for (the parent deletes each once sealed; bounded)."""
        if self.journal is None:
            return
        if self.sealer is None:
            if self.is_pending(decision_id):
                await self.seal_now()
            return
        waiting = self.journal.holding(decision_id)
        if waiting:  # this worker's segment: handed over now
            await self.seal_now()
        else:
            if await asyncio.get_running_loop().run_in_executor(None, audit.recorded, [decision_id]):
                return
            waiting = [p for p in journal.segments(self.out_dir) if _size(p)]
            if not waiting:
                return
            self.sealer.flush()
        deadline = time.monotonic() + limit
        while any(p.exists() for p in waiting):
            if time.monotonic() > deadline:
                raise TimeoutError(f"decision journal: not sealed within {limit:g} s")
            await asyncio.sleep(0.005)

    async def _rotator(self) -> None:
        """Within the merge delay (or at once when the segment holds max_rows rows, or when asked): rotate and
        seal (or hand over)."""
        while not self.stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.full.wait(), self.merge_delay)
            self.full.clear()
            if self.stopping:
                break
            try:
                await self.seal_now()
            except Exception as exc:  # the segments stay (and stay locked): sealed at the next tick, or at stop
                log.error("sealing the decision journal failed: %s", str(exc).splitlines()[0][:200])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            item = await self.queue.get()
            if item is None:
                break
            if self.window:
                await asyncio.sleep(self.window)
            items, stop = _take_queued(self.queue, item, self.max_rows, lambda it: sum(len(f) for f in it[0]))
            try:
                if self.journal is None:
                    await loop.run_in_executor(self.pool, self._append, [f for fs, _ in items for f in fs])
                    promises = [None] * len(items)
                else:
                    groups = [fs for fs, _ in items]
                    if sum(len(f) for fs in groups for f in fs) <= INLINE_ROWS:
                        promises = self._journal_append(groups)
                    else:
                        promises = await loop.run_in_executor(self.pool, self._journal_append, groups)
            except Exception as exc:  # the decisions were not recorded: none of them is issued
                log.error("audit append failed for %d requests: %s", len(items), str(exc).splitlines()[0][:200])
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for (_, fut), promise in zip(items, promises):
                    if not fut.done():
                        fut.set_result(promise)
                if self.journal is not None and self.journal.pending_rows() >= self.max_rows:
                    self.full.set()

    def _journal_append(self, groups: list[list[pd.DataFrame]]) -> list[dict]:
        """The frames of these micro-batches appended to the current segment: one write, one fdatasync. Each
        frame is the log frame as an Arrow table (_arrow_table: what _log_bytes writes to Parquet); its record
        hashes are the leaves the audit index will hold (merkle, over the same table, as record_log_bytes
        hashes it)."""
        blobs, ids, rows, out = [], [], 0, []
        for frames in groups:
            hashes: dict[str, tuple[int, str]] = {}
            for f in frames:
                table = _arrow_table(f)
                leaves = merkle.hash_prepared_for(merkle.prepare_for(table, merkle.LEAF_FORMAT))
                fid = f["decision_id"].tolist()
                seq = len(blobs)
                hashes.update((d, (seq, leaf.tobytes().hex())) for d, leaf in zip(fid, leaves))
                blobs.append(journal.frame_bytes(table))
                ids += fid
                rows += len(f)
            out.append(hashes)
        if not blobs:
            return [None] * len(groups)
        path, first = self.journal.append(blobs, rows, ids)
        return [{"segment": path.name, "record_hashes": {d: (first + k, h) for d, (k, h) in hashes.items()}}
                for hashes in out]

    def _seal_segment(self, seg: journal.Segment) -> None:
        """A rotated segment into the trail (its whole frames; see journal.read_segment), then deleted."""
        appended, logs = seal_frames(self.spec.name, self.out_dir, journal.read_segment(seg.path).tables)
        self.appended += appended
        self.logs += logs
        self.journal.sealed(seg)

    def _append(self, frames: list[pd.DataFrame]) -> None:
        appended, logs = append_logs(self.spec.name, self.out_dir, frames)
        self.appended += appended
        self.logs += logs


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # sealed and deleted meanwhile
        return 0


def append_logs(name: str, out_dir: Path, frames: list[pd.DataFrame]) -> tuple[int, int]:
    """One decision log per (model version, as-of date) of these frames, each written (fsynced, then renamed
    into place) and put in the trail in one transaction (audit.record_log_bytes): one commit per log. Decisions
    the trail already holds, or that came twice, are left out. (records appended, logs written)"""
    ids = [d for f in frames for d in f["decision_id"].tolist()]
    held = audit.recorded(ids)
    seen: set[str] = set(held)
    groups: dict[tuple, list[pd.DataFrame]] = {}
    for f in frames:
        keep = []
        for d in f["decision_id"].tolist():
            keep.append(d not in seen)
            seen.add(d)
        part = f[np.array(keep, dtype=bool)] if not all(keep) else f
        if len(part):
            key = (str(part["model_version"].iloc[0]), str(part["decision_time"].iloc[0])[:10])
            groups.setdefault(key, []).append(part.reset_index(drop=True))
    appended = logs = 0
    for (version, as_of), parts in groups.items():
        digest = hashlib.sha256("".join(d for p in parts for d in p["decision_id"].tolist()).encode())
        path = Path(out_dir) / f"{name}-{as_of}-v{version}-served-{digest.hexdigest()[:16]}.parquet"
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        data, table = _log_bytes(frame)
        _write_durably(path, data)
        a = audit.record_log_bytes(path, data, table=table)
        if a is None:  # an interrupted append of the same log (a crash, then the same rows again)
            a = audit.record_log(path)
        appended += a.inserted
        logs += 1
    return appended, logs


def journal_frames(tables: list[pa.Table]) -> list[pd.DataFrame]:
    """A segment's tables as log frames, in journal order: the frame `pd.concat` of the frames they were made from
    gives (held to it, byte for byte in the Parquet log, by tests/e2e/test_serve.py), split into runs of one
    model version and as-of date (append_logs' unit). Tables of the same Arrow types are converted together
    (to_pandas once per type signature, not once per micro-batch: ~0.8 ms each), then the rows put back in
    journal order."""
    if not tables:
        return []
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tables):
        groups.setdefault((tuple(t.schema.names), tuple(t.schema.types)), []).append(i)
    starts = np.cumsum([0] + [t.num_rows for t in tables])
    parts, rows = [], []
    for idx in groups.values():
        parts.append(_frame_of([tables[i] for i in idx]))
        rows += [np.arange(starts[i], starts[i + 1]) for i in idx]
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        frame = frame.take(np.argsort(np.concatenate(rows), kind="stable")).reset_index(drop=True)
    key = frame["model_version"].astype(str) + "|" + frame["decision_time"].astype(str).str[:10]
    cuts = np.flatnonzero(key.to_numpy()[1:] != key.to_numpy()[:-1]) + 1
    if not len(cuts):
        return [frame]
    return [frame.iloc[a:b].reset_index(drop=True) for a, b in zip([0, *cuts], [*cuts, len(frame)])]


def _frame_of(run: list[pa.Table]) -> pd.DataFrame:
    """Tables of the same Arrow types as one frame, with the dtypes pd.concat of their own frames would have: a
    column of Python numbers in an object column (the log's input__ columns) comes back from Arrow as
    int64/float64; a table's pandas metadata says object, and so does the concatenation: made object again."""
    table = pa.concat_tables(run) if len(run) > 1 else run[0]  # (the first table's pandas metadata)
    frame = table.to_pandas()
    seen, objects = set(), set()
    for t in run:  # (the metadata of one schema is read once: a segment repeats a few schemas many times)
        meta = (t.schema.metadata or {}).get(b"pandas")
        if meta is not None and meta not in seen:
            seen.add(meta)
            objects.update(c.get("name") for c in orjson.loads(meta).get("columns", [])
                           if c.get("numpy_type") == "object")
    for name, dtype in zip(frame.columns.tolist(), frame.dtypes.tolist()):
        if name in objects and dtype != object:
            frame[name] = frame[name].astype(object)
    return frame


def seal_frames(name: str, out_dir: Path, tables: list[pa.Table]) -> tuple[int, int]:
    """A journal segment's tables into the trail as decision logs (append_logs); (records appended, logs)."""
    return append_logs(name, out_dir, journal_frames(tables)) if tables else (0, 0)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The decision log as the batch path writes it (decide.write_log: Arrow from pandas, zstd), in memory."""
    return _log_bytes(frame)[0]


_READS_BACK: set = set()  # Arrow schemas (types and metadata) whose Parquet bytes were read back equal to the table


def _log_bytes(frame: pd.DataFrame) -> tuple[bytes, pa.Table | None]:
    """(_parquet_bytes, the Arrow table written when a log of its schema was read back from its bytes equal to
    the table written, else None). What the audit indexes is what verify reads back from the file: the first log
    of each schema is read back and compared, column types, values and metadata (Table.equals); once one has
    read back equal, the tables of that schema are handed to the audit append (record_log_bytes' `table`),
    which then does not parse the bytes again (~4 ms a one-row log). `audit verify` reads every file back."""
    table = _arrow_table(frame)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    if table.schema in _READS_BACK:
        return data, table
    back = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    # (a list's child field reads back named "element", not "item": not part of the types or values)
    if back.schema.equals(table.schema) and back.schema.metadata == table.schema.metadata and back.equals(table):
        if len(_READS_BACK) >= 256:
            _READS_BACK.clear()
        _READS_BACK.add(table.schema)
    return data, None


_PANDAS_META: dict[tuple, dict] = {}


def _object_type(a: np.ndarray):
    """The Arrow type pyarrow infers (from_pandas) for an object column of a few rows whose values are plain
    (None, float NaN, texts, bools, whole numbers within int64, floats, or lists of those): given it, the
    conversion skips inference (~2-4 us a column, ~40 such columns a log row); None (infer) for any other
    column, and for any other dtype. Held to pyarrow's inference by tests/code/test_row_digests.py."""
    if a.dtype != object or len(a) > inputs.SMALL_FRAME_ROWS:  # (a few rows' values are checked one by one)
        return None
    return _inferred(a.tolist(), True)


_INFERRED = {frozenset(): pa.null(), frozenset({str}): pa.string(), frozenset({bool}): pa.bool_(),
             frozenset({int}): pa.int64(), frozenset({float}): pa.float64(), frozenset({int, float}): pa.float64()}


def _inferred(values: list, lists: bool):
    kinds, items = set(), []
    for v in values:
        t = type(v)
        if v is None or (t is float and v != v):
            continue
        if t is list and lists:
            items += v
        elif t is int and not -2 ** 63 <= v < 2 ** 63:
            return None
        elif t not in (str, bool, int, float):
            return None
        kinds.add(t)
    if list in kinds:
        if len(kinds) > 1:
            return None
        item = _inferred(items, False)
        return None if item is None else pa.list_(item)
    if int in kinds and float in kinds and any(type(v) is int and not -2 ** 53 <= v <= 2 ** 53 for v in values):
        return None  # (pyarrow refuses a whole number a double cannot hold exactly)
    return _INFERRED.get(frozenset(kinds))


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """pa.Table.from_pandas(frame, preserve_index=False) of a log frame, column by column: each column converted
    as pyarrow's pandas conversion converts it (pa.array(values, from_pandas=True), types inferred from the
    values, or given where _object_type knows them), the schema's pandas metadata taken from a cache keyed by the
    column names, pandas dtypes and Arrow types it depends on (filled by from_pandas itself the first time).
    from_pandas spends ~1.5 ms on a one-row, 60-column log building that metadata. A few rows' columns of one
    dtype and Arrow type are converted in one call, each column a slice of its result. Held to from_pandas
    (types, values, metadata, Parquet bytes, journal frames read back) by tests/code/test_row_digests.py."""
    ix = frame.index
    dtypes = tuple(inputs.dtypes_of(frame))
    if not (frame.columns.is_unique and isinstance(ix, pd.RangeIndex) and ix.start == 0 and ix.step == 1
            and all(isinstance(t, np.dtype) and t.kind in "fiubO" for t in dtypes)):
        return pa.Table.from_pandas(frame, preserve_index=False)
    names = frame.columns.tolist()
    columns = inputs.column_arrays(frame)
    arrays: list = [None] * len(columns)
    types = [_object_type(a) for a in columns]
    if len(frame) <= inputs.SMALL_FRAME_ROWS:
        # a few rows: the columns of one dtype and one Arrow type converted together, each a slice of that array
        # (pyarrow spends ~3 us setting up each conversion, whatever its size; ~65 columns a log row)
        groups: dict[tuple, list[int]] = {}
        for j, (a, t) in enumerate(zip(columns, types)):
            if t is not None or a.dtype != object:  # (an object column of no known type is inferred alone)
                groups.setdefault((a.dtype, t), []).append(j)
        n = len(frame)
        for (_, t), js in groups.items():
            if len(js) > 1:
                whole = pa.array(np.concatenate([columns[j] for j in js]), type=t, from_pandas=True)
                for k, j in enumerate(js):
                    arrays[j] = whole.slice(k * n, n)
    arrays = [pa.array(a, type=t, from_pandas=True) if got is None else got
              for a, t, got in zip(columns, types, arrays)]
    key = (tuple(names), dtypes, tuple(a.type for a in arrays), frame.columns.dtype, frame.columns.name)
    meta = _PANDAS_META.get(key)
    if meta is None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if table.schema.types == [a.type for a in arrays] and table.schema.names == names:
            if len(_PANDAS_META) >= 256:
                _PANDAS_META.clear()
            _PANDAS_META[key] = table.schema.metadata
        return table
    return pa.Table.from_arrays(arrays, names=names, metadata=meta)


def _write_durably(path: Path, data: bytes) -> None:
    """Write under a temporary name, fsync, rename into place, fsync the directory: the log is on disk
    before its append commits (the trail holds its SHA-256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the application


@dataclass
class Settings:
    spec: PipelineSpec
    out_dir: Path
    as_of: str | None = None
    api_keys: tuple[str, ...] = ()
    insecure_dev: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    reload_seconds: float = 30.0
    audit_window: float = AUDIT_WINDOW_S
    merge_delay: float = MERGE_DELAY_S


def _authorised(request: Request, keys: tuple[bytes, ...]) -> bool:
    given = request.headers.get("x-api-key")
    if given is None:
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth[:7].lower() == "bearer " else None
    if given is None:
        return False
    g = given.encode("utf-8", "surrogateescape")
    ok = False
    for k in keys:  # every key compared, in constant time each: no early exit
        ok |= hmac.compare_digest(g, k)
    return ok


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(settings: Settings, model: engine.DecisionModel, sealer=None) -> FastAPI:
    """The ASGI application: the model given, the audit writer started by its lifespan (`sealer`: see
    AuditWriter)."""
    spec = settings.spec
    decider = Decider(spec, model, settings.as_of)
    writer = AuditWriter(spec, settings.out_dir, settings.audit_window, merge_delay=settings.merge_delay,
                         sealer=sealer)
    decide_pool = ThreadPoolExecutor(1, thread_name_prefix="decide")
    batcher = DecideBatcher(decider, writer, decide_pool)
    keys = tuple(k.encode() for k in settings.api_keys)
    state = {"ready": False, "served": 0, "refused": 0, "reloads": 0}

    async def _reload_loop():
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(settings.reload_seconds)
            try:
                fresh = await loop.run_in_executor(None, _champion_if_moved, spec, decider.model.version)
                if fresh is not None:  # warmed up before it takes requests (its first micro-batch is not slower)
                    await loop.run_in_executor(None, lambda: decider.decide({"rows": warm_up_rows(spec)}, fresh))
            except Exception as exc:  # the model in use stays; said once per failed poll
                log.warning("champion reload failed: %s", str(exc).splitlines()[0][:200])
                continue
            if fresh is not None:
                old = decider.model.version
                decider.model = fresh
                state["reloads"] += 1
                log.info("champion moved: model %s v%s replaces v%s", spec.registry.model_name, fresh.version, old)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        writer.start()
        batcher.start()
        reload_task = (asyncio.get_running_loop().create_task(_reload_loop())
                       if settings.reload_seconds > 0 else None)
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            if reload_task is not None:
                reload_task.cancel()
            await batcher.stop()  # in-flight requests have finished; a micro-batch still being sealed is awaited
            await writer.stop()  # in-flight requests have finished: their records are written, the rest drained
            decide_pool.shutdown(wait=True)
            log.info("stopped: %d decisions served, %d records appended in %d decision logs, %d requests refused",
                     state["served"], writer.appended, writer.logs, state["refused"])

    app = FastAPI(title=f"creditgov serve: {spec.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    schema = openapi_schema(spec, secured=bool(keys))
    app.openapi = lambda: schema

    def _check_key(request: Request) -> None:
        if keys and not _authorised(request, keys):
            raise Refused(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")

    @app.post("/v1/decisions")
    async def post_decisions(request: Request):
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:12]
        n = 0
        try:
            _check_key(request)
            body = await _json_body(request, 'a JSON object {"rows": [...]}')
            n = len(body.get("rows") or []) if isinstance(body.get("rows"), list) else 0
            try:
                served = await batcher.decide(body)
            except NotRecorded:
                raise Refused(503, "the decision could not be recorded in the audit trail; it is not issued") from None
            state["served"] += served.rows
            answer = {"decisions": served.records, "model_version": served.model_version,
                      "as_of": served.as_of, "policy": {"name": spec.policy.name, "version": spec.policy.version,
                                                        "hash": spec.policy.content_hash},
                      "recorded": True}
            if served.journal is not None:
                answer["journal"] = served.journal
            resp = _json(answer)
        except Refused as r:
            state["refused"] += 1
            if r.status == 422:
                for row in r.body.get("rows", []):
                    log.warning("request %s refused: row %d breaks %s", rid, row["row"], "; ".join(row["rules"]))
                if not r.body.get("rows"):
                    log.warning("request %s refused: %s", rid, _no_values(r.body["error"]))
            resp = _json(r.body, r.status)
        except Exception as exc:  # a defect: said without its message, which may quote a request's values
            log.error("request %s failed: internal error %s", rid, type(exc).__name__)
            resp = _json({"error": f"internal error ({type(exc).__name__}); request {rid}"}, 500)
        log.info("POST /v1/decisions %d rows=%d %.1f ms", resp.status_code, n, (time.perf_counter() - t0) * 1000)
        return resp

    @app.get("/v1/decisions/{decision_id}")
    async def get_decision(decision_id: str, request: Request):
        try:
            _check_key(request)
            if len(decision_id) != 32 or any(c not in "0123456789abcdef" for c in decision_id):
                raise Refused(404, "no such decision (a decision id is 32 hexadecimal digits)")
            await _sealed(decision_id)
            try:
                rec = await asyncio.get_running_loop().run_in_executor(None, audit.find_decision, decision_id)
            except audit.AuditError as exc:
                raise Refused(404, str(exc)) from None
            resp = _json({"decision": _plain(rec), "notice": notice(rec, spec), "verified": True})
        except Refused as r:
            resp = _json(r.body, r.status)
        log.info("GET /v1/decisions/{id} %d", resp.status_code)
        return resp

    async def _sealed(decision_id: str) -> None:
        """A decision answered but still only in the journal is sealed now (seal on demand), so that the desk,
        a review or a contest finds it in the trail."""
        try:
            await writer.sealed(decision_id)
        except TimeoutError as exc:
            raise Refused(503, f"{exc}; try again") from None

    async def _json_body(request: Request, shape: str = "a JSON object") -> dict:
        raw = await _body(request, settings.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(422, f"body: not JSON ({str(exc).splitlines()[0][:120]})") from None
        if not isinstance(body, dict):
            raise Refused(422, f"body: {shape} is required")
        return body

    async def _oversight(request: Request, what: str, act) -> Response:
        """The human-oversight endpoints: key, body, the decision known to the trail (else 404), then `act`
        (an oversight function, which records its event in the audit trail as the CLI's review/contest do)."""
        t0 = time.perf_counter()
        try:
            _check_key(request)
            body = await _json_body(request)
            did = body.get("decision_id")
            if not isinstance(did, str) or len(did) != 32 or any(c not in "0123456789abcdef" for c in did):
                raise Refused(404, "decision_id: no such decision (a decision id is 32 hexadecimal digits)")
            loop = asyncio.get_running_loop()
            await _sealed(did)
            if not await loop.run_in_executor(None, audit.recorded, [did]):
                raise Refused(404, f"decision_id: no decision {did} in the audit trail")
            try:
                out = await act(loop, body, did)
            except audit.AuditError as exc:  # the decision's record does not check against the trail
                raise Refused(409, str(exc).splitlines()[0][:300]) from None
            except CreditGovError as exc:
                raise Refused(422, str(exc).splitlines()[0][:300].replace("--", "")) from None
            resp = _json(out)
        except Refused as r:
            state["refused"] += 1
            if r.status == 422:
                log.warning("%s refused: %s", what, _no_values(r.body["error"]))
            resp = _json(r.body, r.status)
        except Exception as exc:  # a defect: said without its message, which may quote a request's values
            log.error("%s failed: internal error %s", what, type(exc).__name__)
            resp = _json({"error": f"internal error ({type(exc).__name__})"}, 500)
        log.info("POST %s %d %.1f ms", what, resp.status_code, (time.perf_counter() - t0) * 1000)
        return resp

    def _text(body: dict, name: str, required: bool = True) -> str | None:
        v = body.get(name)
        if v is None and not required:
            return None
        if not isinstance(v, str) or not v.strip():
            raise Refused(422, f"{name}: a non-empty string is required")
        if len(v) > 2000:
            raise Refused(422, f"{name}: at most 2000 characters")
        return v

    @app.post("/v1/reviews")
    async def post_reviews(request: Request):
        async def act(loop, body, did):
            approve = body.get("approve", False)
            if not isinstance(approve, bool):
                raise Refused(422, "approve: true or false")
            override = _text(body, "override", required=False)
            limit = body.get("limit")
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                      or not 0 <= limit <= 1e12):
                raise Refused(422, "limit: a number in [0, 1e12]")
            reviewer, reason = _text(body, "reviewer"), _text(body, "reason")
            event = await loop.run_in_executor(None, oversight.review, did, approve, override, reviewer, reason,
                                               None if limit is None else float(limit))
            return {"review": event, "recorded": True}

        return await _oversight(request, "/v1/reviews", act)

    @app.post("/v1/contests")
    async def post_contests(request: Request):
        async def act(loop, body, did):
            reason = _text(body, "reason", required=False) or "customer contest with corrected data"
            row = body.get("row")
            if not isinstance(row, dict):
                raise Refused(422, "row: the corrected row, one JSON object, is required")
            v = decider.validated([row], "row")  # 422 naming the field and rule, as POST /v1/decisions
            rows = validate.Validated(spec, v.outcome, LABEL, v.input_hash)
            # the decide thread: the served model may be the one that decided (then it is not loaded again)
            event = await loop.run_in_executor(decide_pool, lambda: oversight.contest_rows(
                spec, did, rows, reason, log=lambda m: None, model=decider.model))
            new = await loop.run_in_executor(None, audit.find_decision, event["new_decision_id"])
            return {"contest": event, "decision": _plain(new), "recorded": True}

        return await _oversight(request, "/v1/contests", act)

    @app.get("/healthz")
    async def healthz():
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz():
        if not state["ready"]:
            return _json({"status": "not ready"}, 503)
        return _json({"status": "ready", "model": spec.registry.model_name, "model_version": decider.model.version,
                      "policy": spec.policy.name, "policy_version": spec.policy.version,
                      "unsealed": writer.unsealed()})

    app.state.writer, app.state.decider, app.state.counters, app.state.batcher = writer, decider, state, batcher
    return app


def _no_values(message: str) -> str:
    """A refusal message for the log: the critical-rule messages quote the offending text; drop it."""
    return message.split(" has text ")[0] + (" (text in a numeric column)" if " has text " in message else "")


def _plain(rec: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}


def notice(rec: dict, spec: PipelineSpec) -> dict | None:
    """The customer's notice of a decided record in both languages, as the notice page words it
    (report.wording: catalogue labels and units, the lender and its channels, the rights), structured for the
    desk; None for a quarantined record or a spec without a `lender:` section (no notice is sent then)."""
    if spec.lender is None or rec.get("status") != "decided":
        return None
    row = pd.Series(rec, dtype=object)
    cf = orjson.loads(rec["counterfactual"]) if isinstance(rec.get("counterfactual"), str) else None
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {lang: wording.notice(row, spec, lang, wording.changed_lines(row), cf, now) for lang in ("en", "zh")}


def _champion_if_moved(spec: PipelineSpec, current: str):
    c = registry.client()
    mv = c.get_model_version_by_alias(spec.registry.model_name, "champion")
    if str(mv.version) == str(current):
        return None
    return engine.load_model(spec)


# --------------------------------------------------------------------------- the OpenAPI schema


def _row_schema(spec: PipelineSpec, with_policy_fields: bool) -> dict:
    props: dict[str, dict] = {}
    required: list[str] = []
    for f in spec.input_features:  # a derived feature is computed by the model, never a request field
        if f.type == "numeric":
            lo, hi = f.range
            s = {"type": "number", "minimum": lo, "maximum": hi}
        elif f.type == "text":  # free text (a name, a phone): validated for presence only, pseudonymised
            s = {"type": "string"}
        else:
            s = {"type": "string", "enum": list(f.categories)}
        s["description"] = f.description
        if f.missing_allowed:
            s = {**s, "type": [s["type"], "null"]}
            if "enum" in s:
                s["enum"] = s["enum"] + [None]
        else:
            required.append(f.name)
        props[f.name] = s
    if spec.source.id_column:
        props[spec.source.id_column] = {"type": ["string", "integer"], "minimum": -(2**63), "maximum": 2**63 - 1,
                                        "description": "Row identifier "
                                        "(pseudonymised in every record)"}
        required.append(spec.source.id_column)
    if spec.source.date_column:
        props[spec.source.date_column] = {"type": "string", "description": "Snapshot date YYYY-MM or YYYY-MM-DD, "
                                          "not in the future"}
        required.append(spec.source.date_column)
    if with_policy_fields and spec.policy and spec.policy.on_book:
        fs = spec.policy.on_book.fields
        for col in (fs.current_limit, fs.days_past_due, fs.cumulative_overdue_days, fs.clean_months):
            if col not in props:
                props[col] = {"type": "number", "minimum": 0, "maximum": 1e12, "description": "Account field"}
                required.append(col)
        for col in (fs.fraud_signal, fs.suspended):
            props[col] = {"type": ["boolean", "string", "integer"], "enum": expectations.BOOLEAN_VALUES,
                          "description": "Account flag (yes/no)"}
            required.append(col)
    if with_policy_fields and spec.policy and spec.policy.collections:  # the collections ladder's account fields
        cf = spec.policy.collections.fields
        for col in (cf.days_past_due, cf.months_overdue_12m, cf.hardship_plan_months_left, cf.contacts_30d):
            if col not in props:
                props[col] = {"type": "number", "minimum": 0, "maximum": 1e12, "description": "Account field"}
                required.append(col)
        props[cf.hardship_declared] = {"type": ["boolean", "string", "integer"], "enum": expectations.BOOLEAN_VALUES,
                                       "description": "Account flag (yes/no)"}
        required.append(cf.hardship_declared)
    return {"type": "object", "properties": props, "required": required}


def openapi_schema(spec: PipelineSpec, secured: bool = True) -> dict:
    """The service's OpenAPI 3.1 document, its request rows generated from the feature catalogue."""
    row = _row_schema(spec, True)
    request = {"type": "object", "required": ["rows"], "properties": {
        "rows": {"type": "array", "minItems": 1, "maxItems": MAX_ROWS, "items": {"$ref": "#/components/schemas/Row"}},
        "as_of": {"type": "string", "format": "date", "description": "Decision date (default: "
                  "the server's --as-of, else today)"}}}
    if spec.policy and spec.policy.on_book:
        request["properties"]["previous"] = {"type": "array", "minItems": 1, "maxItems": MAX_ROWS,
                                             "items": {"$ref": "#/components/schemas/Row"},
                                             "description": "The accounts' rows at their previous review"}
    decision = {"type": "object", "required": ["decision_id", "action", "status"], "properties": {
        "decision_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "status": {"type": "string", "enum": ["decided", "quarantined"]},
        "action": {"type": "string"}, "tier": {"type": ["string", "null"]},
        "limit": {"type": ["number", "null"]}, "pd": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "reasons_en": {"type": "array", "items": {"type": "string"}},
        "reasons_zh": {"type": "array", "items": {"type": "string"}},
        "counterfactual": {"type": ["string", "null"], "description": "JSON: the smallest change of actionable "
                           "inputs that changes an adverse outcome"},
        "model_version": {"type": "string"}, "policy_version": {"type": "string"},
        "decision_time": {"type": "string"}}}
    error = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"},
        "rows": {"type": "array", "items": {"type": "object", "properties": {
            "row": {"type": "integer"}, "rules": {"type": "array", "items": {"type": "string"}}}}}}}
    decision_id = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "The decision's id"}
    review = {"type": "object", "required": ["decision_id", "reviewer", "reason"], "properties": {
        "decision_id": decision_id,
        "reviewer": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "Who reviewed"},
        "reason": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "Why: recorded with the "
                   "decision"},
        "approve": {"type": "boolean", "description": "Confirm what the policy proposed (exactly one of approve: "
                    "true and override)"},
        "override": {"type": "string", "enum": list(oversight.ACTIONS), "description": "Replace the decision "
                     "with this action"},
        "limit": {"type": "number", "minimum": 0, "maximum": 1e12, "description": "The credit limit granted"}}}
    contest = {"type": "object", "required": ["decision_id", "row"], "properties": {
        "decision_id": decision_id, "row": {"$ref": "#/components/schemas/Row"},
        "reason": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "Why"}}}
    promise = {"type": "object", "required": ["segment", "sequence", "record_hashes"], "description":
               "With --merge-delay > 0: the decisions are durably in this decision-journal segment (fdatasynced) "
               "and are sealed into the audit trail within about merge_delay_s seconds; record_hashes are the "
               "Merkle leaves the audit index will hold for them, in the order of `decisions`",
               "properties": {"segment": {"type": "string"}, "sequence": {"type": ["integer", "null"], "minimum": 0},
                              "record_hashes": {"type": "array", "items": {
                                  "type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}},
                              "merge_delay_s": {"type": "number", "minimum": 0}}}
    err = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    security = [{"ApiKey": []}, {"Bearer": []}] if secured else []  # --insecure-dev: no key asked
    return {
        "openapi": "3.1.0",
        "info": {"title": f"creditgov serve: {spec.name}", "version": spec.policy.version if spec.policy else "0",
                 "description": spec.description or ""},
        "paths": {
            "/v1/decisions": {"post": {
                "summary": "Decide rows (one or a small batch) with the @champion and the policy; each decision is "
                           "durably recorded before the answer: in the audit trail, or in the decision journal "
                           "(then `journal` says where) that is sealed into the trail within the merge delay",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/DecisionRequest"}}}},
                "responses": {
                    "200": {"description": "decisions", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["decisions", "model_version", "as_of"], "properties": {
                            "decisions": {"type": "array", "items": {"$ref": "#/components/schemas/Decision"}},
                            "model_version": {"type": "string"}, "as_of": {"type": "string"},
                            "policy": {"type": "object"}, "recorded": {"type": "boolean"},
                            "journal": {"$ref": "#/components/schemas/JournalPromise"}}}}}},
                    "401": err, "413": err, "422": err, "503": err}}},
            "/v1/decisions/{decision_id}": {"get": {
                "summary": "A recorded decision, checked against the audit trail, with its notice text (en/zh)",
                "security": security,
                "parameters": [{"name": "decision_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the decision", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"decision": {"$ref": "#/components/schemas/Decision"},
                                                     "notice": {"type": "object"}}}}}},
                              "401": err, "404": err}}},
            "/v1/reviews": {"post": {
                "summary": "A person resolves a decision (human oversight): confirm what the policy proposed "
                           "(approve: true) or override it with another action; recorded in the audit trail",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ReviewRequest"}}}},
                "responses": {"200": {"description": "the review as recorded", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["review", "recorded"], "properties": {
                        "review": {"type": "object"}, "recorded": {"type": "boolean"}}}}}},
                              "401": err, "404": err, "409": err, "413": err, "422": err}}},
            "/v1/contests": {"post": {
                "summary": "A customer contests a decision with a corrected row: re-decided under the model "
                           "version and policy that made it, the new decision linked to the old in the audit trail",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ContestRequest"}}}},
                "responses": {"200": {"description": "the contest as recorded and the new decision", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["contest", "decision"],
                                                    "properties": {"contest": {"type": "object"},
                                                                   "decision": {"$ref": "#/components/schemas/Decision"},
                                                                   "recorded": {"type": "boolean"}}}}}},
                              "401": err, "404": err, "409": err, "413": err, "422": err}}},
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Model loaded and the audit writer running",
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        },
        "components": {
            "schemas": {"Row": row, "DecisionRequest": request, "Decision": decision, "Error": error,
                        "JournalPromise": promise,
                        "ReviewRequest": review, "ContestRequest": contest},
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "Bearer": {"type": "http", "scheme": "bearer"}}},
    }


# --------------------------------------------------------------------------- running it


class Server(uvicorn.Server):
    """uvicorn's server, without raising the captured signal again after the graceful shutdown: the drain
    finished, the command ends with 0."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    return sock


SERVE_SQLITE_CACHE_KIB = 8192


def prepare(spec: PipelineSpec, version: str | None = None) -> engine.DecisionModel:
    """What must work before the port opens: the suite compiles, the audit store opens, the model loads.
    Each failure is one CreditGovError line."""
    if spec.policy is None:
        raise SpecError(f"spec '{spec.name}' has no 'policy' section: nothing to decide with")
    validate.CompiledSuite(expectations.checked_suite(spec))
    # a micro-batch's append touches a few index pages: a bulk append's 256 MiB page cache would fill as the
    # store grows and the service's memory with it (+10.7% over 100,000 requests)
    audit.set_cache_kib(SERVE_SQLITE_CACHE_KIB)
    try:
        audit.recorded([])
    except CreditGovError:
        raise
    except Exception as exc:
        raise audit.AuditError(f"audit store {audit.audit_url()}: {str(exc).splitlines()[0][:200]}") from None
    uri = registry.tracking_uri()
    if uri == registry.default_uri() and not Path(registry.DB_FILE).exists():  # do not create an empty store
        raise TrackingError(f"MLflow tracking at {uri}: no store here; train and promote a model first (make train)")
    registry.check()
    return engine.load_model(spec, version)


def complete_interrupted(out_dir: Path) -> int:
    """Decision logs of this service that a crash (kill -9, power loss) left out of the trail (written, or their
    append begun, but not sealed), appended before the port opens, and every journal segment no live server
    holds, sealed (its whole frames: a torn final write was never answered) and deleted: `audit verify` then
    passes again. The logs' requests were never answered (an answer waits for its append), so this records
    decisions that were made but not issued; a segment's were answered with the journal's promise, which this
    keeps. Returns the logs and segments completed."""
    out = Path(out_dir)
    if not out.is_dir():
        return 0
    status = {str(Path(p).resolve()): s for p, s in audit.log_status().items()}
    done = 0
    for path in sorted(out.glob("*.parquet")):
        if status.get(str(path.resolve())) in (None, "open"):
            audit.record_log(path)
            done += 1
    return done + seal_abandoned(out)[0]


def seal_abandoned(out_dir: Path) -> tuple[int, int, int]:
    """Every journal segment in `out_dir` that no live process holds (journal.claim), sealed and deleted: those
    of a server or worker that is gone. (segments, records appended, decision logs written)"""
    segments = appended = logs = 0
    for path in journal.segments(out_dir):
        fd = journal.claim(path)
        if fd is None:  # a live process holds it: it seals it, or hands it to its sealer
            continue
        try:
            a, n = seal_segment(path)
        finally:
            journal.release(fd)
        segments, appended, logs = segments + 1, appended + a, logs + n
    return segments, appended, logs


def seal_segment(path: Path) -> tuple[int, int]:
    """A segment this process holds the lock of, sealed into the trail (its whole frames: a torn final write was
    never answered) and deleted. (records appended, decision logs written)"""
    done = seal_frames(journal.label_of(path), path.parent, journal.read_segment(path).tables)
    journal.discard(path)
    return done


def warm_up_rows(spec: PipelineSpec) -> list[dict]:
    """Two rows made from the catalogue alone (each feature at the bottom, then the top of its range; the first
    category; account fields at zero): deciding them once compiles what the first request would otherwise
    wait for (the numba kernels of TreeSHAP, the counterfactual search and the audit's record hashing)."""
    out = []
    for end in (0, 1):
        row: dict = {}
        for f in spec.input_features:
            row[f.name] = f.range[end] if f.type == "numeric" else f.categories[0]
        if spec.source.id_column:
            row[spec.source.id_column] = f"warm-up-{end}"
        if spec.source.date_column:
            row[spec.source.date_column] = "2000-01"
        if spec.policy and spec.policy.on_book:
            fs = spec.policy.on_book.fields
            for col in (fs.current_limit, fs.days_past_due, fs.cumulative_overdue_days, fs.clean_months):
                row.setdefault(col, 0)
            row[fs.fraud_signal] = row[fs.suspended] = "no"
        if spec.policy and spec.policy.collections:
            cf = spec.policy.collections.fields
            for col in (cf.days_past_due, cf.months_overdue_12m, cf.hardship_plan_months_left, cf.contacts_30d):
                row.setdefault(col, 0)
            row[cf.hardship_declared] = "no"
        out.append(row)
    return out


def warm_up(settings: Settings, model: engine.DecisionModel) -> None:
    """Decide the warm-up rows (alone, and as a micro-batch of two requests) and hash their records as the
    audit does; nothing is kept or recorded."""
    d = Decider(settings.spec, model, settings.as_of)
    rows = warm_up_rows(settings.spec)
    d.decide_many([{"rows": [rows[0]]}, {"rows": [rows[1]]}])
    decisions = d.decide({"rows": rows})
    table = pq.read_table(pa.BufferReader(_parquet_bytes(decisions.log)))
    merkle.hash_prepared_for((merkle.LEAF_FORMAT, merkle.prepare_bin(table)))  # the kernels (a few rows skip them)
    records(decisions.log)


def server_config(app: FastAPI) -> uvicorn.Config:
    # keep-alive longer than clients keep idle pooled connections (httpx: 5 s, uvicorn's default also 5 s): with
    # equal timeouts the server may close a connection just as a client sends on it, a request lost in transit
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=65,
                          timeout_graceful_shutdown=30, server_header=False, date_header=False)


def listening(settings: Settings, version: str, sock: socket.socket, workers: str = "") -> str:
    host, port = sock.getsockname()[:2]
    mode = "no API key (--insecure-dev)" if not settings.api_keys else f"{len(settings.api_keys)} API key(s)"
    return (f"creditgov serve: {settings.spec.registry.model_name} v{version}, policy {settings.spec.policy.name} "
            f"{settings.spec.policy.version}, {mode}{workers}; listening on http://{host}:{port} (Ctrl-C or SIGTERM "
            "to stop)")


def freeze_start_up() -> None:
    """What start-up made (the model, pandas, MLflow, the app: ~420,000 objects the cyclic garbage collector
    tracks) moved out of its sight before serving: a full collection over them took 195-309 ms, a stall about
    every 1,000 requests that lands in the p99; frozen, 0.6 ms (gc.freeze, as pre-forking servers do)."""
    gc.collect()
    gc.freeze()


def run(settings: Settings, model: engine.DecisionModel, sock: socket.socket, say=print) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    completed = complete_interrupted(settings.out_dir)
    if completed:
        say(f"creditgov serve: completed {completed} interrupted audit append(s) and journal segment(s) of "
            f"{settings.out_dir}")
    warm_up(settings, model)
    app = build_app(settings, model)
    freeze_start_up()
    server = Server(server_config(app))
    say(listening(settings, model.version, sock))
    server.run(sockets=[sock])  # uvicorn's loop factory: uvloop (a declared dependency), ~1 ms less a request
    writer = app.state.writer
    say(f"creditgov serve: stopped; {app.state.counters['served']} decisions served, {writer.appended} audit "
        f"records appended in {writer.logs} decision logs")
