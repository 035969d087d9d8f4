"""HTML for `creditgov monitor`: a drift page per batch, a trend page, and the run's index.html.

Same rules as every report: self-contained, escaped, stamped with time, model version and data.
"""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np

from creditgov.monitor.drift import VERDICTS, MonitorResult
from creditgov.report.pages import render
from creditgov.spec import PipelineSpec

_COLOURS = {"stable": "#2e7d32", "watch": "#b7791f", "recalibrate": "#c05621", "rebuild": "#a3201b"}


def line_svg(labels: list[str], series: dict[str, list[float | None]], title: str,
             bands: tuple[float, float] | None = None, width: int = 720, height: int = 240) -> str:
    """Lines over batches; None values leave gaps. `bands` draws the watch / act thresholds."""
    vals = [v for s in series.values() for v in s if v is not None and np.isfinite(v)]
    if bands:
        vals += list(bands)
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    left, right, top, bottom = 60, 150, 26, 40
    pw, ph = width - left - right, height - top - bottom
    n = max(len(labels) - 1, 1)
    x = lambda i: left + pw * i / n  # noqa: E731
    y = lambda v: top + ph * (1 - (v - lo) / (hi - lo))  # noqa: E731
    colours = ["#3b6ea5", "#c0392b", "#2e7d32", "#8e44ad", "#b7791f"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
           f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>']
    for v in (lo, (lo + hi) / 2, hi):
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    if bands:
        for b, name in zip(bands, ("watch", "act")):
            out.append(f'<line x1="{left}" y1="{y(b):.1f}" x2="{left + pw}" y2="{y(b):.1f}" stroke="#b7791f" '
                       f'stroke-dasharray="4,3"/><text x="{left + pw + 4}" y="{y(b) + 4:.1f}">{name} {b:g}</text>')
    for i, lab in enumerate(labels):
        out.append(f'<text x="{x(i):.1f}" y="{top + ph + 14}" text-anchor="middle">{escape(lab[-2:])}</text>')
    for k, (name, s) in enumerate(series.items()):
        col = colours[k % len(colours)]
        pts = [(x(i), y(v)) for i, v in enumerate(s) if v is not None and np.isfinite(v)]
        if pts:
            out.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" points="'
                       + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
            out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{col}"/>' for a, b in pts]
        out.append(f'<text x="{left + pw + 4}" y="{top + 40 + 14 * k}" fill="{col}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _stamp(spec: PipelineSpec, version: str, label: str) -> dict:
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": f"{spec.registry.model_name} version {version}", "data": label}


def write_batch_page(out: Path, spec: PipelineSpec, r: MonitorResult, version: str, run_stamp: str) -> Path:
    page = out / f"drift-{r.label}.html"
    page.write_text(render(
        "drift.html", r=r, cfg=spec.monitoring, stamp=_stamp(spec, version, r.label), colour=_COLOURS,
        evidently=Path(r.evidently_html).name if r.evidently_html else None), encoding="utf-8")
    return page


def write_index(out: Path, spec: PipelineSpec, results: list[MonitorResult], version: str, run_stamp: str) -> Path:
    labels = [r.label for r in results]
    cfg = spec.monitoring
    psi = line_svg(labels, {"score PSI": [r.score_psi for r in results],
                            **{f"CSI {k}": [r.csi.get(k) for r in results] for k in cfg.key_features[:3]}},
                   "Score PSI and key-feature CSI", (cfg.psi_watch, cfg.psi_act))
    perf = line_svg(labels, {
        "estimated AUC": [r.estimated.auc if r.estimated else None for r in results],
        "observed AUC": [r.matured.auc if r.matured else None for r in results],
        "development AUC": [(r.matured.dev_auc if r.matured else None)
                            or (r.calibration_basis.dev_auc if r.calibration_basis else None) for r in results]},
        "Performance: estimated (CBPE) and observed AUC")
    verdict_svg = line_svg(labels, {"verdict level": [VERDICTS.index(r.verdict) for r in results]},
                           "Verdict (0 stable, 1 watch, 2 recalibrate, 3 rebuild)")
    index = out / "index.html"
    index.write_text(render(
        "monitor_index.html", results=results, stamp=_stamp(spec, version, ", ".join(labels)), colour=_COLOURS,
        psi_svg=psi, perf_svg=perf, verdict_svg=verdict_svg), encoding="utf-8")
    return index
