"""HTML for `creditgov monitor`: a drift page per batch, a trend page, and the run's index.html.

Same rules as every report: self-contained, escaped, stamped with time, model version and data.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from creditgov.monitor.drift import VERDICTS, MonitorResult
from creditgov.report import charts
from creditgov.report.pages import render, write_run_summary
from creditgov.spec import PipelineSpec

_COLOURS = {"stable": "#2e7d32", "watch": "#b7791f", "recalibrate": "#c05621", "rebuild": "#a3201b"}


def _stamp(spec: PipelineSpec, version: str, label: str) -> dict:
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": f"{spec.registry.model_name} version {version}", "data": label}


def write_batch_page(out: Path, spec: PipelineSpec, r: MonitorResult, version: str, run_stamp: str) -> Path:
    page = out / f"drift-{r.label}.html"
    page.write_text(render(
        "drift.html", r=r, cfg=spec.monitoring, stamp=_stamp(spec, version, r.label), colour=_COLOURS,
        evidently=Path(r.evidently_html).name if r.evidently_html else None), encoding="utf-8")
    return page


def drivers(results: list[MonitorResult], spec: PipelineSpec, most: int = 6) -> list[str]:
    """The key features the trend plots: every one whose CSI reached the watch threshold in some batch (what
    drives a verdict), the largest first, else the first three of the catalogue's key features."""
    cfg = spec.monitoring
    worst = {k: max((r.csi.get(k) or 0.0 for r in results), default=0.0) for k in cfg.key_features}
    moved = sorted((k for k, v in worst.items() if v >= cfg.csi_watch), key=lambda k: -worst[k])
    return moved[:most] if moved else cfg.key_features[:3]


def write_index(out: Path, spec: PipelineSpec, results: list[MonitorResult], version: str, run_stamp: str,
                history: list | None = None, run_ids: list[str] | None = None) -> Path:
    """The run's index.html: this run's batches and trend, and `history` (registry.Verdict, oldest first): every
    verdict kept on the model version, earlier runs' too (`run_ids`: this run's monitoring runs, marked)."""
    labels = [r.label for r in results]
    cfg = spec.monitoring
    psi = charts.lines(labels, {"score PSI": [r.score_psi for r in results],
                                **{f"CSI {k}": [r.csi.get(k) for r in results] for k in drivers(results, spec)}},
                       "Score PSI and key-feature CSI", (cfg.psi_watch, cfg.psi_act))
    trusted = [bool(r.estimated and r.estimated.trusted) for r in results]
    perf = charts.lines(labels, {
        "estimated AUC (CBPE)": [r.estimated.auc if r.estimated and t else None for r, t in zip(results, trusted)],
        "estimated AUC, not trusted": [r.estimated.auc if r.estimated and not t else None
                                       for r, t in zip(results, trusted)],
        "observed AUC": [r.matured.auc if r.matured else None for r in results],
        "development AUC": [(r.matured.dev_auc if r.matured else None)
                            or (r.calibration_basis.dev_auc if r.calibration_basis else None) for r in results]},
        "Performance: estimated (CBPE) and observed AUC", greyed={"estimated AUC, not trusted"})
    verdict_svg = charts.lines(labels, {"verdict level": [VERDICTS.index(r.verdict) for r in results]},
                               "Verdict (0 stable, 1 watch, 2 recalibrate, 3 rebuild)")
    index = out / "index.html"
    index.write_text(render(
        "monitor_index.html", results=results, stamp=_stamp(spec, version, ", ".join(labels)), colour=_COLOURS,
        psi_svg=psi, perf_svg=perf, verdict_svg=verdict_svg, history=history or [],
        this_run=set(run_ids or ()), model_name=spec.registry.model_name, version=version,
        on_rebuild=spec.monitoring.on_rebuild), encoding="utf-8")
    worst = max((r.verdict for r in results), key=VERDICTS.index, default="stable")
    write_run_summary(out, kind="monitoring", model=f"{spec.registry.model_name} v{version}",
                      policy=f"{spec.policy.name} {spec.policy.version}" if spec.policy else None,
                      rows=sum(r.rows for r in results),
                      detail=f"{len(results)} batches ({labels[0]} to {labels[-1]}), worst verdict {worst}" if results
                      else "no batch",
                      verdict=f"{results[-1].verdict} ({results[-1].label})" if results else None)
    return index
