"""`creditgov monitor`: run the monitor on batches (files, or simulator months), record and render it.

Each monitored batch gets an MLflow run in `<experiment>-monitoring` (metrics, verdict, reasons,
the result JSON and the drift page), and the model version gets `monitor.*` tags: the latest verdict
and one `monitor.verdict.NNNN` tag per batch, the history (registry.record_verdict). The HTML goes
to reports/<run>/: one drift page per batch, a trend page over the batches, and index.html linking them, with the
version's whole verdict history (earlier runs' too).
Evidently's DataDriftPreset page per batch is opt-in (`evidently=True`, `creditgov monitor --evidently`):
about 1.3 MB of data per page plus Evidently's 3.5 MB script, written once per run and shared by its pages
(report.monitoring.dress_evidently); it stays in the report folder and is not copied into MLflow.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from creditgov import progress
from creditgov.data.simulate import HORIZON, TARGET, load_months
from creditgov.errors import UsageError
from creditgov.governance import registry
from creditgov.monitor import dask
from creditgov.data import validate
from creditgov.data.inputs import content_hash
from creditgov.cluster import client_for, close_client
from creditgov.monitor.drift import Binning, MonitorResult, bin_counts, load_reference, run_monitor
from creditgov.report import monitoring
from creditgov.report.pages import write_root_index
from creditgov.spec import PipelineSpec


class Batch(NamedTuple):
    """One batch to monitor: its label, rows and the matured (labelled) rows its estimates rest on, with where
    each came from (named on the drift page beside its content hash). A plain (label, frame, basis) tuple is
    a Batch without sources."""

    label: str
    frame: pd.DataFrame
    basis: pd.DataFrame | None = None
    source: str | None = None
    basis_label: str | None = None
    basis_source: str | None = None


@dataclass(frozen=True)
class MonitorJob:
    results: list[MonitorResult]
    run_ids: list[str]
    report_dir: Path
    model_version: str


def _validated(spec: PipelineSpec, frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """The valid rows of a batch to monitor (validate.validate_batch: the one validation entry point)."""
    return validate.validate_batch(frame, spec, label).clean


def _log(spec: PipelineSpec, r: MonitorResult, version: str, html: Path | None) -> str:
    import mlflow  # heavy: see registry.configure

    exp = registry.ensure_experiment(f"{spec.registry.experiment}-monitoring")
    with registry.backend_errors("log the monitoring run"), \
            mlflow.start_run(experiment_id=exp, run_name=f"monitor-{r.label}") as run:
        metrics = {"score_psi": r.score_psi, "rows": r.rows, **{f"csi.{k}": v for k, v in r.csi.items()}}
        for col, seg in r.segment_psi.items():
            metrics.update({f"segment_psi.{col}.{k}": v for k, v in seg.items()})
        metrics.update({f"level.{k}": v for k, v in r.level.items()})
        for src in (r.matured, r.estimated):
            if src:
                metrics.update({f"{src.kind}_{k}": float(v) for k, v in src.numbers().items()})
        mlflow.log_metrics({k.replace("=", "_"): float(v) for k, v in metrics.items() if np.isfinite(v)})
        mlflow.set_tags({"verdict": r.verdict, "batch": r.label, "model_name": spec.registry.model_name,
                         "model_version": version, "reasons": " | ".join(r.reasons)[:5000]})
        mlflow.log_dict(r.to_dict(), "monitor/result.json")
        if html is not None:
            mlflow.log_artifact(str(html), "monitor")
        if r.evidently_html:  # the page stays in the report folder (megabytes each): the run names it
            mlflow.set_tag("evidently_page", Path(r.evidently_html).name)
        run_id = run.info.run_id
    registry.record_verdict(spec.registry.model_name, version, r.label, r.verdict, run_id,
                            r.reasons[0] if r.reasons else "no threshold crossed")
    return run_id


def monitor(spec: PipelineSpec, batches: list[tuple[str, pd.DataFrame, pd.DataFrame | None]],
            version: str | None = None, out_root: str | Path = "reports", evidently: bool = False,
            log=print, binning: Binning = bin_counts) -> MonitorJob:
    """Monitor each Batch (or (label, batch, matured-basis) tuple) in order; write and record everything.
    `evidently`: also Evidently's page per batch (opt-in: megabytes each). `binning` counts each batch on the
    reference bins (creditgov.decision.dask passes one that runs on a Dask cluster)."""
    registry.configure()
    model, version, _ = registry.load_registered(spec.registry.model_name, version)
    profile, ref_sample, _ = load_reference(spec.registry.model_name, version)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(out_root) / f"{spec.name}-monitor-v{version}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    results, run_ids = [], []
    with progress.task("Monitoring", total=len(batches), unit="batches") as bar:
        for b in bar.track([Batch(*t) for t in batches]):
            label = b.label
            bar.note(label)
            clean = _validated(spec, b.frame, label)
            basis_clean = _validated(spec, b.basis, f"{label} (matured basis)") if b.basis is not None else None
            ev_path = out / f"evidently-{label}.html" if evidently else None
            r = run_monitor(spec, model, profile, clean, label, ref_sample=ref_sample, matured_frame=basis_clean,
                            evidently_path=ev_path, binning=binning)
            r = replace(r, source=b.source, batch_hash=content_hash(b.frame),
                        basis_label=(b.basis_label or "matured basis") if b.basis is not None else None,
                        basis_source=b.basis_source if b.basis is not None else None,
                        basis_hash=content_hash(b.basis) if b.basis is not None else None)
            if r.evidently_html:
                monitoring.dress_evidently(Path(r.evidently_html), spec, r, version)
            page = monitoring.write_batch_page(out, spec, r, version, stamp)
            run_ids.append(_log(spec, r, version, page))
            results.append(r)
            log(f"{label}: {r.verdict}" + (f" - {r.reasons[0]}" if r.reasons else ""))
    monitoring.write_index(out, spec, results, version, stamp, history=verdict_history(spec, version),
                           run_ids=run_ids)
    write_root_index(out_root)
    return MonitorJob(results, run_ids, out, version)


def verdict_history(spec: PipelineSpec, version: str) -> list[registry.Verdict]:
    """Every monitoring verdict kept on the model version (this run's and earlier runs'), oldest first."""
    name = spec.registry.model_name
    with registry.backend_errors(f"read the verdict history of {name} version {version}"):
        return registry.verdict_history(registry.client().get_model_version(name, str(version)).tags)


def simulator_batches(spec: PipelineSpec, directory: str, months: list[int], observed: bool) -> list:
    """(label, batch, matured basis) per month: the batch has labels only in `observed` mode
    (retrospective); the basis is the month whose outcome window has just closed (m - 12)."""
    out = []
    for m in months:
        frame = load_months(directory, [m], labelled=observed)
        basis = load_months(directory, [m - HORIZON], labelled=True) if m - HORIZON >= 1 else None
        if spec.target.column != TARGET:
            frame = frame.rename(columns={TARGET: spec.target.column})
            basis = basis.rename(columns={TARGET: spec.target.column}) if basis is not None else None
        snapshot = f"{directory}/month={{:02d}}/snapshot.parquet".format
        out.append(Batch(f"month-{m:02d}", frame, basis, snapshot(m),
                         f"month-{m - HORIZON:02d}" if basis is not None else None,
                         snapshot(m - HORIZON) if basis is not None else None))
    return out


def parse_months(text: str) -> list[int]:
    """'13-24' or '13,14,20' -> list of months (1-based, ascending within a range). Anything else is a
    UsageError naming the option."""
    def bad(why: str) -> UsageError:
        return UsageError(f"--months {text!r}: {why} (write a range such as 13-24, or months such as 13,14,20)")

    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"([0-9]+)(?:\s*-\s*([0-9]+))?", part)
        if not m:
            raise bad(f"'{part}' is not a month or a range of months" if part else "an empty month")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if a < 1:
            raise bad("months are numbered from 1")
        if b < a:
            raise bad(f"the range {a}-{b} runs backwards")
        out.extend(range(a, b + 1))
    dup = sorted({m for m in out if out.count(m) > 1})
    if dup:
        raise bad(f"month {dup[0]} is given twice")
    return out


def result_json(r: MonitorResult) -> str:
    return json.dumps(r.to_dict(), indent=1, default=float)


def monitor_on_dask(spec: PipelineSpec, batches: list, version: str | None = None, out_root: str | Path = "reports",
                    evidently: bool = False, log=print, scheduler: str | None = None, partitions: int | None = None,
                    client=None):
    """`monitor` with PSI / CSI binned on a Dask cluster (engine_monitor.bin_counts)."""
    own = client is None
    client = client or client_for(scheduler)
    try:
        return monitor(spec, batches, version, out_root, evidently, log=log,
                       binning=partial(dask.bin_counts, client, partitions=partitions))
    finally:
        if own:
            close_client(client)
