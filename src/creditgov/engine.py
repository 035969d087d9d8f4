"""Scale-out engine: `creditgov decide` and `creditgov monitor` on a Dask cluster.

The single-process engine (creditgov.decide, creditgov.monitor) is the reference; this one
splits the batch into partitions and runs the same stages per partition on Dask workers,
so its outputs are the same: the decision log is byte-identical (same rows, order, ids
and values), and PSI / CSI are computed from per-partition bin counts summed on the
client, which gives the same numbers.

Input: one CSV / Parquet file, read by the client and split into `partitions` row ranges
(default: one per worker thread), or a directory of Parquet files, one partition per file
in name order, read by the workers themselves (so they need the directory at the same
path: shared storage). Models travel as their saved JSON files (booster.json + model.json),
loaded on each worker once per content; no pickled booster is ever sent.

Batch-wide rules stay batch-wide: the quarantine share is checked on the whole batch, the
content hash is the whole batch's, grid rounding and the pair-search cap of the
counterfactual search are decided over the whole batch (the pair stage runs on the
client, for at most `max_pair_rows` rows).

Resumable: each partition's decisions are checkpointed on the client as soon as they
arrive (creditgov.checkpoint: Parquet under `<out_dir>/.partial/`, written to a
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

from creditgov.spec import PipelineSpec

_MODEL_FILES = ("booster.json", "model.json")
_models: dict[str, object] = {}  # per worker process: CreditModel by content hash


# --------------------------------------------------------------------------- cluster and model


def client_for(scheduler: str | None = None, workers: int | None = None, processes: bool = True):
    """A dask.distributed Client: on `scheduler` (an address) or on a new LocalCluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency of creditgov
        from creditgov.errors import SpecError

        raise SpecError("--engine dask needs dask[distributed] (pip install 'dask[distributed]')") from None
    if scheduler:
        return Client(scheduler)
    import os

    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=None)
    return Client(cluster)


def model_blob(model_dir: str | Path) -> dict[str, bytes]:
    """The saved model's JSON files, as bytes: what travels to the workers."""
    d = Path(model_dir)
    return {name: (d / name).read_bytes() for name in _MODEL_FILES}


def load_blob(blob: dict[str, bytes]):
    """The CreditModel of a blob, loaded once per worker process (keyed by content)."""
    from creditgov.model import CreditModel

    key = hashlib.sha256(b"".join(blob[n] for n in _MODEL_FILES)).hexdigest()
    model = _models.get(key)
    if model is None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in blob.items():
                (Path(tmp) / name).write_bytes(data)
            model = CreditModel.load(tmp)
        _models[key] = model
    return model


def registered_model(spec: PipelineSpec, version: str | None):
    """(CreditModel, blob, version, run_id) of the registered version (default the @champion)."""
    import mlflow

    from creditgov import tracking

    tracking.configure()
    model, version, run_id = tracking.load_registered(spec.registry.model_name, version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{spec.registry.model_name}/{version}")
    return model, model_blob(Path(local) / "artifacts" / "model"), version, run_id


# --------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class Source:
    label: str
    files: list[str] = field(default_factory=list)  # a directory's Parquet files, or empty
    frame: pd.DataFrame | None = None  # a file read by the client


def source(spec: PipelineSpec, data_path: str | None) -> Source:
    from creditgov import data
    from creditgov.errors import DataError

    if data_path is not None and Path(data_path).is_dir():
        files = sorted(str(p) for p in Path(data_path).iterdir() if p.suffix.lower() in (".parquet", ".pq"))
        if not files:
            raise DataError(f"{data_path}: no Parquet files in this directory")
        return Source(str(data_path), files)
    loaded = data.load(spec, data_path)
    return Source(loaded.label, frame=loaded.frame)


def _read_file(path: str) -> pd.DataFrame:
    from creditgov import data

    return data._read_parquet(Path(path)).reset_index(drop=True)


def _row_ranges(n: int, k: int) -> list[tuple[int, int]]:
    k = max(1, min(k, n or 1))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


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
    for a, b in _row_ranges(len(frame), k):
        out.append((client.scatter(frame.iloc[a:b].reset_index(drop=True)), a))
    return out


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


# --------------------------------------------------------------------------- decide: worker stages


class _Fallback(Exception):
    """This batch needs the single-process engine (the message says why)."""


def _stage_fingerprint(frame: pd.DataFrame, offset: int, spec: PipelineSpec) -> dict:
    """What the batch-wide checks and the batch hash need of a partition, without validating it."""
    header = "\x1f".join(f"{c}:{frame[c].dtype}" for c in frame.columns)
    row_hash = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    keys = None
    idc, dc = spec.source.id_column, spec.source.date_column
    if idc and idc in frame.columns and (not dc or dc in frame.columns):
        cols = [idc, dc] if dc else [idc]
        keys = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
    return {"offset": offset, "rows": len(frame), "header": header, "row_hash": row_hash, "keys": keys}


def _stage_validate(frame: pd.DataFrame, offset: int, spec: PipelineSpec, suite: dict, label: str) -> dict:
    from creditgov import counterfactual, validate
    from creditgov.errors import DataError

    try:
        outcome = validate.validate(frame, spec, suite, label)
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


def _stage_partition(st: dict, blob: dict, spec: PipelineSpec, integral: dict) -> dict[str, pd.DataFrame]:
    """One partition decided and explained, with its one-feature counterfactuals: its log rows (the
    counterfactual of rows still without one left empty), its quarantine rows, and those rows'
    inputs for the batch-wide pair search (`_pos`: their place in the log rows)."""
    from creditgov import decide

    model = load_blob(blob)
    clean = decide.with_previous_pd(st["outcome"].clean, spec, None)
    part = decide.decide_part(model, clean, spec)
    cf, pending = decide.first_counterfactuals(model, part, spec, integral)
    return {"rows": decide.log_rows(part, spec, cf, None, row_offset=st["offset"]),
            "quarantine": decide.quarantine_rows(st["outcome"].quarantine, spec, row_offset=st["offset"]),
            "pending": pending}


# --------------------------------------------------------------------------- decide: the client


def decide(spec: PipelineSpec, data_path: str | None = None, version: str | None = None,
           as_of: str | None = None, out_dir: str | Path = "decisions", log=print, previous: str | None = None,
           scheduler: str | None = None, partitions: int | None = None, client=None, max_pair_rows: int = 2000):
    """creditgov.decide.decide on a Dask cluster: the same DecideResult and the same log file.

    Each decided partition is checkpointed (creditgov.checkpoint) as soon as it is gathered, so a run
    that is killed resumes, when started again on the same batch, from the partitions already decided."""
    from creditgov import decide as single

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
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _decide(client, spec, data_path, version, as_of, out_dir, log, partitions, max_pair_rows):
    from distributed import as_completed

    from creditgov import checkpoint, decide as single, expectations, privacy, validate

    src = source(spec, data_path)
    parts = partition_futures(client, src, partitions)
    if src.frame is not None:
        columns = src.frame.columns
    else:
        import pyarrow.parquet as pq

        columns = pq.ParquetFile(src.files[0]).read_row_group(0).slice(0, 0).to_pandas().columns
    suite = expectations.for_scoring(expectations.checked_suite(spec), spec, columns)

    # the batch: its hash (which keys the checkpoints) and the rules that span partitions
    infos = client.gather([client.submit(_stage_fingerprint, f, off, spec, pure=False) for f, off in parts])
    if len({i["header"] for i in infos if i["rows"]}) > 1:
        raise _Fallback("the partitions' column types differ")
    keys = [i["keys"] for i in infos if i["keys"] is not None and len(i["keys"])]
    if len(keys) > 1 and len(np.unique(np.concatenate(keys))) != sum(len(np.unique(k)) for k in keys):
        raise _Fallback("an identifier repeats across partitions (uniqueness is a batch-wide rule)")
    rows_in = sum(i["rows"] for i in infos)
    if rows_in == 0 or any(i["rows"] == 0 for i in infos):
        raise _Fallback("a partition has no rows")
    h = hashlib.sha256()
    h.update(infos[0]["header"].encode())
    for i in infos:
        h.update(i["row_hash"])
    input_hash = h.hexdigest()

    model, blob, version, run_id = registered_model(spec, version)
    path = single.log_path(spec, out_dir, as_of, version, input_hash)
    work = checkpoint.WorkDir(path, {
        "input_hash": input_hash, "layout": [[i["offset"], i["rows"]] for i in infos],
        "model": spec.registry.model_name, "version": version,
        "model_files": hashlib.sha256(b"".join(blob[n] for n in _MODEL_FILES)).hexdigest(),
        "spec_hash": spec.content_hash, "policy_hash": spec.policy.content_hash, "as_of": as_of,
        "max_pair_rows": max_pair_rows, "pseudonym_key": privacy.key_fingerprint(), "format": 1})
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
    quarantine = pd.DataFrame({"rules": [r for s in summaries for r in s["rules"]]})
    whole = validate.ValidationOutcome(clean=pd.DataFrame(), quarantine=quarantine, rows_in=rows_in, gx_result={})
    validate.enforce_quarantine_share(whole, spec, src.label)
    # grid rounding of the counterfactual search: decided over the whole batch's valid rows
    integral: dict[str, bool] = {}
    for s in summaries:
        for k, v in s["integral"].items():
            integral[k] = integral.get(k, True) and v

    if todo:
        work.open()
        blob_f = client.scatter(blob, broadcast=True)
        futures = {client.submit(_stage_partition, states[k], blob_f, spec, integral, pure=False): k for k in todo}
        for fut in as_completed(futures):
            k = futures[fut]
            work.save(k, fut.result(), meta=fresh[k])  # persisted as each partition arrives
            fut.release()
            states.pop(k).release()  # the worker may drop the partition's validated rows now
    del states, parts

    # the pair stage: the first `max_pair_rows` rows (batch order) without a one-feature change, on the client
    pending = [work.load(k, "pending") for k in range(n_parts)]
    pairs = work.load_json("pairs.json")
    if pairs is None:
        pairs = _pair_stage(model, pending, spec, max_pair_rows)
        work.save_json("pairs.json", pairs)

    rows, qrows = [], []
    for k, pend in enumerate(pending):
        r = work.load(k, "rows")
        if len(pend):
            cf = single.pair_json(pairs.get(str(k), []), len(pend), spec)
            col = r.columns.get_loc("counterfactual")
            for pos, text in zip(pend["_pos"].tolist(), cf):
                r.iat[pos, col] = text
        rows.append(r)
        qrows.append(work.load(k, "quarantine"))
    rows_all = pd.concat([r for r in rows if len(r)], ignore_index=True)
    qs = [q for q in qrows if len(q)]
    qrows_all = pd.concat(qs, ignore_index=True) if qs else qrows[0]
    full = single.finish_log(rows_all, qrows_all, spec, version, as_of, input_hash, src.label)
    if len(full) != rows_in:
        raise RuntimeError(f"rows in {rows_in} != rows logged {len(full)}")
    path = single.write_log(full, path)
    work.remove()
    policy = spec.policy
    log(f"{src.label}: {rows_in} rows in = {len(rows_all)} decided + {len(qrows_all)} quarantined; "
        f"model {spec.registry.model_name} v{version}, policy {policy.name} {policy.version} "
        f"({policy.content_hash[:12]}) -> {path} [engine dask, {n_parts} partitions]")
    counts = {str(k): int(v) for k, v in full["action"].value_counts().sort_index().items()}
    return single.DecideResult(path, rows_in, len(rows_all), len(qrows_all), version, run_id, src.label,
                               input_hash, counts, n_parts, full)


def _pair_stage(model, pending: list[pd.DataFrame], spec: PipelineSpec, max_pair_rows: int) -> dict[str, list]:
    """Two-feature changes for the first `max_pair_rows` pending rows in batch order: {partition: results}
    (None where no pair changes the outcome); rows past the cap have no entry."""
    from creditgov import decide as single

    found = single.pair_counterfactuals(model, pending, spec, max_pair_rows)
    return {str(k): res for k, res in enumerate(found) if res}


# --------------------------------------------------------------------------- explain


def _stage_explain(frame: pd.DataFrame, blob: dict, spec: PipelineSpec):
    from creditgov import decide

    p, log_odds, phi, features, base, err = decide.explain_batch(load_blob(blob), frame, spec)
    return p, phi, base, features


def explain(client, model, frame: pd.DataFrame, spec: PipelineSpec, partitions: int | None = None,
            model_dir: str | Path | None = None):
    """(PD, attributions[n, features], base, features) of valid rows, computed per partition on the cluster."""
    from creditgov.model import CreditModel

    if model_dir is None:
        tmp = tempfile.mkdtemp(prefix="creditgov-model-")
        model_dir = CreditModel.save(model, tmp)
    blob_f = client.scatter(model_blob(model_dir), broadcast=True)
    k = partitions or max(1, sum(client.nthreads().values()))
    futs = [client.submit(_stage_explain, client.scatter(frame.iloc[a:b]), blob_f, spec, pure=False)
            for a, b in _row_ranges(len(frame), k)]
    parts = client.gather(futs)
    return (np.concatenate([p[0] for p in parts]), np.vstack([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), parts[0][3])


# --------------------------------------------------------------------------- monitor: PSI / CSI from bin counts


def _stage_counts(frame: pd.DataFrame, p: np.ndarray, profile: dict) -> dict:
    from creditgov.monitor import MISSING
    from creditgov.reference import categorical_bins, numeric_bins

    def count(values, edges):
        edges = np.asarray(edges, dtype="float64")
        return np.bincount(numeric_bins(values, edges), minlength=len(edges) + 2)

    feats = {}
    for name, prof in profile["features"].items():
        if prof["kind"] == "numeric":
            feats[name] = count(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64"), prof["edges"])
        else:
            cats = prof["categories"]
            feats[name] = np.bincount(categorical_bins(frame[name], cats), minlength=len(cats) + 2)
    segs = {}
    for col, profs in profile.get("segments", {}).items():
        keys = frame[col].astype(object).where(frame[col].notna(), MISSING).astype(str).to_numpy()
        segs[col] = {value: count(p[keys == value], prof["edges"]) for value, prof in profs.items()}
    return {"score": count(p, profile["score"]["edges"]), "features": feats, "segments": segs}


def _psi(prof: dict, counts: np.ndarray, n_bins: int) -> float:
    from creditgov.metrics import psi_from_shares

    c = np.asarray(counts)[:n_bins].astype(float)
    cur = c / c.sum() if c.sum() else c
    return float(psi_from_shares(np.asarray(prof["shares"]), cur))


def stability(client, frame: pd.DataFrame, p: np.ndarray, profile: dict, partitions: int | None = None):
    """monitor.stability on the cluster: each partition bins its rows on the reference bins, the client
    sums the counts and computes PSI / CSI from them (the same numbers as the single-process engine)."""
    k = partitions or max(1, sum(client.nthreads().values()))
    cols = list(profile["features"]) + [c for c in profile.get("segments", {}) if c not in profile["features"]]
    futs = [client.submit(_stage_counts, client.scatter(frame[cols].iloc[a:b]), p[a:b], profile, pure=False)
            for a, b in _row_ranges(len(frame), k)]
    parts = client.gather(futs)
    score = profile["score"]
    score_psi = _psi(score, sum(x["score"] for x in parts), len(score["edges"]) + 2)
    csi = {}
    for name, prof in profile["features"].items():
        n_bins = len(prof["edges"]) + 2 if prof["kind"] == "numeric" else len(prof["categories"]) + 2
        csi[name] = _psi(prof, sum(x["features"][name] for x in parts), n_bins)
    segments = {}
    for col, profs in profile.get("segments", {}).items():
        segments[col] = {}
        for value, prof in profs.items():
            c = sum(x["segments"][col][value] for x in parts)
            if c.sum() >= 100:
                segments[col][value] = _psi(prof, c, len(prof["edges"]) + 2)
    return score_psi, csi, segments


def monitor(spec: PipelineSpec, batches: list, version: str | None = None, out_root: str | Path = "reports",
            evidently: bool = True, log=print, scheduler: str | None = None, partitions: int | None = None,
            client=None):
    """creditgov.monitor_job.monitor with PSI / CSI computed on the cluster (see `stability`)."""
    from creditgov import monitor as mon, monitor_job

    own = client is None
    client = client or client_for(scheduler)
    single = mon.stability

    def distributed(frame, p, profile, spec_):
        return stability(client, frame, np.asarray(p, dtype="float64"), profile, partitions)

    mon.stability = distributed  # run_monitor looks it up at call time
    try:
        return monitor_job.monitor(spec, batches, version, out_root, evidently, log=log)
    finally:
        mon.stability = single
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
