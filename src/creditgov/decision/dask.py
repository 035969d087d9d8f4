"""Scale-out engine: `creditgov decide` and `creditgov monitor` on a Dask cluster.

The single-process engine (creditgov.decision.decide, creditgov.monitor.drift) is the reference; this one
splits the batch into partitions and runs the same decision path per partition on Dask
workers (decide.decide_rows, unchanged), so its outputs are the same: the decision log is
byte-identical (same rows, order, ids and values), and PSI / CSI are computed from
per-partition bin counts summed on the client, which gives the same numbers.

Input: one CSV / Parquet file, read by the client and split into `partitions` row ranges
(default: one per worker thread), or a directory of Parquet files, one partition per file
in name order, read by the workers themselves (so they need the directory at the same
path: shared storage). Models travel as their saved JSON files (booster.json + model.json),
loaded on each worker once per content; no pickled booster is ever sent.

Batch-wide rules stay batch-wide: the quarantine share is checked on the whole batch, the
content hash is the whole batch's (data.ContentHash over the partitions' row digests), grid
rounding and the pair-search cap of the counterfactual search are decided over the whole
batch (decide.BatchScope: the pair stage runs on the client, for at most `max_pair_rows` rows).

Resumable: each partition's decisions are checkpointed on the client as soon as they
arrive (creditgov.decision.checkpoint: Parquet under `<out_dir>/.partial/`, written to a
temporary name and renamed), so when a run is killed, running it again on the same batch
decides only the partitions that were missing (the others are neither validated nor
decided again), then writes the same log as an uninterrupted run.

Where a rule cannot be checked per partition (an identifier repeated across partitions,
a critical data error, a previous review), the engine says so and runs the
single-process path, which gives the same answer.

    creditgov decide --engine dask [--scheduler tcp://host:8786] [--partitions N] --data DIR_OR_FILE
    creditgov monitor --engine dask [--scheduler ...] [--partitions N] --data FILE ...
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from creditgov.decision import checkpoint
from creditgov.decision import counterfactual
from creditgov.data import inputs
from creditgov.decision import decide as single
from creditgov.data import privacy
from creditgov.governance import registry
from creditgov.data import validate
from creditgov import progress
from creditgov.cluster import client_for, close_client, row_ranges
from creditgov.errors import DataError
from creditgov.model.credit_model import CreditModel
from creditgov.model.stored import load_model
from creditgov.spec import PipelineSpec

_MODEL_FILES = ("booster.json", "model.json")
_models: dict[str, object] = {}  # per worker process: CreditModel by content hash
LOG_FORMAT = 2  # what a checkpointed partition holds: its finished log rows and its pending pair-search rows


# --------------------------------------------------------------------------- cluster and model


def model_blob(model_dir: str | Path) -> dict[str, bytes]:
    """The saved model's JSON files, as bytes: what travels to the workers."""
    d = Path(model_dir)
    return {name: (d / name).read_bytes() for name in _MODEL_FILES if (d / name).exists()}  # a scorecard: model.json


def load_blob(blob: dict[str, bytes]) -> CreditModel:
    """The CreditModel of a blob, loaded once per worker process (keyed by content)."""
    key = hashlib.sha256(b"".join(blob[n] for n in _MODEL_FILES if n in blob)).hexdigest()
    model = _models.get(key)
    if model is None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in blob.items():
                (Path(tmp) / name).write_bytes(content)
            model = load_model(tmp)
        _models[key] = model
    return model


def registered_model(spec: PipelineSpec, version: str | None):
    """(CreditModel, blob, version, run_id) of the registered version (default the @champion)."""
    import mlflow  # heavy: only once the batch is known to be decidable here

    registry.configure()
    model, version, run_id = registry.load_registered(spec.registry.model_name, version)
    single.check_protected_inputs(model, spec, f"{spec.registry.model_name} version {version}")
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{spec.registry.model_name}/{version}")
    return model, model_blob(Path(local) / "artifacts" / "model"), version, run_id


# --------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class Source:
    label: str
    files: list[str] = field(default_factory=list)  # a directory's Parquet files, or empty
    frame: pd.DataFrame | None = None  # a file read by the client


def source(spec: PipelineSpec, data_path: str | None) -> Source:
    if data_path is not None and Path(data_path).is_dir():
        files = sorted(str(p) for p in Path(data_path).iterdir() if p.suffix.lower() in (".parquet", ".pq"))
        if not files:
            raise DataError(f"{data_path}: no Parquet files in this directory")
        return Source(str(data_path), files)
    loaded = inputs.load(spec, data_path)
    return Source(loaded.label, frame=loaded.frame)


def _read_file(path: str) -> pd.DataFrame:
    return inputs.read_parquet(path).reset_index(drop=True)


def partition_futures(client, src: Source, partitions: int | None) -> list:
    """Futures of (frame, row offset) per partition, in batch order."""
    if src.files:
        sizes = [_parquet_rows(f) for f in src.files]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        frames = client.map(_read_file, src.files, pure=False)
        return list(zip(frames, offsets.tolist()))
    k = partitions or max(1, sum(client.nthreads().values()))
    frame = src.frame
    out = []
    for a, b in row_ranges(len(frame), k):
        out.append((client.scatter(frame.iloc[a:b].reset_index(drop=True)), a))
    return out


def _parquet_rows(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows


# --------------------------------------------------------------------------- decide: worker stages


class _Fallback(Exception):
    """This batch needs the single-process engine (the message says why)."""


def _stage_fingerprint(frame: pd.DataFrame, offset: int, spec: PipelineSpec) -> dict:
    """What the batch-wide checks and the batch hash need of a partition, without validating it: its dtype
    header and row digests (data.content_hash's parts) and its distinct keys (data.key_hashes)."""
    keys = None
    cols = validate.key_columns(spec)
    if cols and all(c in frame.columns for c in cols):
        keys = np.unique(np.column_stack(inputs.key_hashes(frame, cols)), axis=0)
    return {"offset": offset, "rows": len(frame), "header": inputs.dtype_header(frame.columns, frame.dtypes),
            "row_hash": inputs.row_digests(frame), "keys": keys}


def _stage_validate(frame: pd.DataFrame, offset: int, spec: PipelineSpec, suite: dict, label: str) -> dict:
    try:
        outcome = validate.validate_part(frame, spec, suite, label)
        error = None
        integral = counterfactual.integral_flags(outcome.clean, spec) if len(outcome.clean) else {}
    except DataError as exc:
        outcome, error, integral = None, str(exc), {}
    return {"outcome": outcome, "offset": offset, "error": error, "integral": integral}


def _summary(st: dict) -> dict:
    """A validated partition as the client needs it: its quarantine rules and rounding flags."""
    out = {"error": st["error"], "integral": st["integral"], "rules": []}
    if st["outcome"] is not None:
        out["rules"] = st["outcome"].quarantine.get("rules", pd.Series(dtype=object)).tolist()
    return out


def _stage_partition(st: dict, blob: dict, spec: PipelineSpec, integral: dict, version: str, as_of: str,
                     input_hash: str, label: str, status: str = "") -> dict[str, pd.DataFrame]:
    """One partition through the decision path (decide.decide_rows), the pair search left to the client: its
    log rows (the counterfactual of rows still without one left empty) and those rows' inputs for the
    batch-wide pair search (`_pos`: their place in the log rows)."""
    rows = validate.Validated(spec, st["outcome"], label, input_hash, row_offset=st["offset"])
    d = single.decide_rows(rows, single.DecisionModel(load_blob(blob), version, status=status), spec, as_of,
                           scope=single.BatchScope(integral=integral, defer_pairs=True))
    return {"log": d.log, "pending": d.pending}


# --------------------------------------------------------------------------- decide: the client


def decide(spec: PipelineSpec, data_path: str | None = None, version: str | None = None,
           as_of: str | None = None, out_dir: str | Path = "decisions", log=print, previous: str | None = None,
           scheduler: str | None = None, partitions: int | None = None, client=None,
           max_pair_rows: int = counterfactual.MAX_PAIR_ROWS) -> single.DecideResult:
    """creditgov.decide.decide on a Dask cluster: the same DecideResult, the same log file, the same audit record.

    Each decided partition is checkpointed (creditgov.decision.checkpoint) as soon as it is gathered, so a run
    that is killed resumes, when started again on the same batch, from the partitions already decided."""
    as_of = single.check_as_of(spec, as_of)
    if previous:
        log("engine dask: a previous review (--previous) is joined by id across the whole batch; "
            "deciding with the single-process engine")
        return single.decide(spec, data_path, version, as_of, out_dir, log, previous)
    own = client is None
    client = client or client_for(scheduler)
    try:
        return _decide(client, spec, data_path, version, as_of, out_dir, log, partitions, max_pair_rows)
    except _Fallback as why:
        log(f"engine dask: {why}; deciding with the single-process engine")
        return single.decide(spec, data_path, version, as_of, out_dir, log, None)
    finally:
        if own:
            close_client(client)


def _decide(client, spec, data_path, version, as_of, out_dir, log, partitions, max_pair_rows):
    from distributed import as_completed  # heavy: only for --engine dask

    src = source(spec, data_path)
    parts = partition_futures(client, src, partitions)
    if src.frame is not None:
        columns = src.frame.columns
    else:
        columns = pq.ParquetFile(src.files[0]).read_row_group(0).slice(0, 0).to_pandas().columns
    suite = validate.suite_for(spec, columns)

    # the batch: its hash (which keys the checkpoints) and the rules that span partitions
    infos = client.gather([client.submit(_stage_fingerprint, f, off, spec, pure=False) for f, off in parts])
    if len({i["header"] for i in infos if i["rows"]}) > 1:
        raise _Fallback("the partitions' column types differ")
    keys = [i["keys"] for i in infos if i["keys"] is not None and len(i["keys"])]
    if len(keys) > 1 and len(np.unique(np.concatenate(keys), axis=0)) != sum(len(k) for k in keys):
        raise _Fallback("an identifier repeats across partitions (uniqueness is a batch-wide rule)")
    rows_in = sum(i["rows"] for i in infos)
    if rows_in == 0 or any(i["rows"] == 0 for i in infos):
        raise _Fallback("a partition has no rows")
    h = inputs.ContentHash(infos[0]["header"])
    for i in infos:
        h.update(i["row_hash"])
    input_hash = h.hexdigest()

    model, blob, version, run_id = registered_model(spec, version)
    status = single.model_status(spec, str(version))  # refuses a `rebuild` when the spec says so
    single.note_status(spec, version, status, log)
    path = single.log_path(spec, out_dir, as_of, version, input_hash)
    work = checkpoint.WorkDir(path, {
        "input_hash": input_hash, "layout": [[i["offset"], i["rows"]] for i in infos],
        "model": spec.registry.model_name, "version": version,
        "model_files": hashlib.sha256(b"".join(blob[n] for n in _MODEL_FILES)).hexdigest(),
        "spec_hash": spec.content_hash, "policy_hash": spec.policy.content_hash, "as_of": as_of,
        "max_pair_rows": max_pair_rows, "pseudonym_key": privacy.key_fingerprint(), "format": LOG_FORMAT})
    done = work.done()
    n_parts = len(infos)
    todo = [k for k in range(n_parts) if k not in done]
    if done:
        log(f"engine dask: resuming from {work.path}: {len(done)} of {n_parts} partitions already decided")

    # validation of the partitions still to decide; the decided ones kept their summary
    states = {k: client.submit(_stage_validate, parts[k][0], parts[k][1], spec, suite, src.label, pure=False)
              for k in todo}
    fresh = dict(zip(todo, client.gather([client.submit(_summary, states[k], pure=False) for k in todo])))
    summaries = [fresh[k] if k in fresh else work.load_meta(k) for k in range(n_parts)]
    if any(s["error"] for s in summaries):
        raise _Fallback("a partition has a critical data error (reported for the whole batch)")
    validate.enforce_batch_share(rows_in, [r for s in summaries for r in s["rules"]], spec, src.label)
    # grid rounding of the counterfactual search: decided over the whole batch's valid rows
    integral: dict[str, bool] = {}
    for s in summaries:
        for k, v in s["integral"].items():
            integral[k] = integral.get(k, True) and v

    if todo:
        work.open()
        blob_f = client.scatter(blob, broadcast=True)
        futures = {client.submit(_stage_partition, states[k], blob_f, spec, integral, version, as_of, input_hash,
                                 src.label, status, pure=False): k for k in todo}
        with progress.task("Deciding", total=sum(infos[k]["rows"] for k in todo), unit="rows") as bar:
            for fut in as_completed(futures):
                k = futures[fut]
                work.save(k, fut.result(), meta=fresh[k])  # persisted as each partition arrives
                fut.release()
                states.pop(k).release()  # the worker may drop the partition's validated rows now
                bar.advance(infos[k]["rows"])
    del states, parts

    # the pair stage: the first `max_pair_rows` rows (batch order) without a one-feature change, on the client
    pending = [work.load(k, "pending") for k in range(n_parts)]
    pairs = work.load_json("pairs.json")
    if pairs is None:
        found = single.pair_counterfactuals(model, pending, spec, max_pair_rows)
        pairs = {str(k): res for k, res in enumerate(found) if res}
        work.save_json("pairs.json", pairs)

    logs = []
    for k, pend in enumerate(pending):
        part_log = work.load(k, "log")
        if len(pend):
            single.fill_pairs(part_log, pend, pairs.get(str(k), []), spec)
        logs.append(part_log)
    if sum(len(x) for x in logs) != rows_in:
        raise RuntimeError(f"rows in {rows_in} != rows logged {sum(len(x) for x in logs)}")
    counts: dict[str, int] = {}
    for part_log in logs:
        for a, n in part_log["action"].value_counts().items():
            counts[str(a)] = counts.get(str(a), 0) + int(n)
    decided = sum(int((x["status"] == "decided").sum()) for x in logs)
    path = single.write_log_parts(logs, path)
    work.remove()
    result = single.DecideResult(path, rows_in, decided, rows_in - decided, version, run_id, src.label, input_hash,
                                 dict(sorted(counts.items())), n_parts, None)
    return single.audited(result, spec, log, f" [engine dask, {n_parts} partitions]")


# --------------------------------------------------------------------------- explain


def _stage_explain(frame: pd.DataFrame, blob: dict, spec: PipelineSpec) -> single.Explanation:
    return single.explain_batch(load_blob(blob), frame, spec)


def explain(client, model, frame: pd.DataFrame, spec: PipelineSpec, partitions: int | None = None,
            model_dir: str | Path | None = None) -> single.Explanation:
    """decide.explain_batch of valid rows, computed per partition on the cluster."""
    if model_dir is None:
        tmp = tempfile.mkdtemp(prefix="creditgov-model-")
        model_dir = model.save(tmp)
    blob_f = client.scatter(model_blob(model_dir), broadcast=True)
    k = partitions or max(1, sum(client.nthreads().values()))
    futs = [client.submit(_stage_explain, client.scatter(frame.iloc[a:b]), blob_f, spec, pure=False)
            for a, b in row_ranges(len(frame), k)]
    parts = client.gather(futs)
    return single.Explanation(np.concatenate([e.pd for e in parts]), np.concatenate([e.log_odds for e in parts]),
                              np.vstack([e.phi for e in parts]), parts[0].features,
                              np.concatenate([e.base for e in parts]),
                              np.concatenate([e.additivity_error for e in parts]))


# --------------------------------------------------------------------------- monitor: PSI / CSI from bin counts
