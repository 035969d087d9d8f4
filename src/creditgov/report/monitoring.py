"""HTML for `creditgov monitor`: a drift page per batch, a trend page, and the run's index.html; and the
creditgov frame around Evidently's optional page per batch (dress_evidently).

Same rules as every report: self-contained, escaped, stamped with time, model version and data.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from creditgov.errors import DataError
from creditgov.monitor.drift import VERDICTS, MonitorResult
from creditgov.report import charts, wording
from creditgov.report.pages import render, write_run_summary
from creditgov.spec import PipelineSpec

_COLOURS = {"stable": "#2e7d32", "watch": "#b7791f", "recalibrate": "#c05621", "rebuild": "#a3201b"}


def feature_label(spec: PipelineSpec, name: str) -> str:
    """A feature as a person reads it on the monitoring pages: its catalogue label, else its column name."""
    try:
        return wording.label(spec.feature(name), "en")
    except KeyError:
        return name


_CSI_REASON = re.compile(r"^(CSI \S+ of (?:key feature )?)(.+?)( >= \S+)$")
_SEGMENT = re.compile(r"(segment )([^\s=]+)=")


def readable_reason(spec: PipelineSpec, text: str) -> str:
    """A verdict reason (monitor.drift.decide_verdict's words, kept as they are in the registry) with each feature
    and segment column named by its catalogue label, the column name after it for traceability."""
    def named(name: str) -> str:
        lab = feature_label(spec, name)
        return name if lab == name else f"{lab} ({name})"

    m = _CSI_REASON.match(text)
    if m:
        return m.group(1) + named(m.group(2)) + m.group(3)
    return _SEGMENT.sub(lambda s: s.group(1) + named(s.group(2)) + " = ", text)


def _stamp(spec: PipelineSpec, version: str, label: str) -> dict:
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": f"{spec.registry.model_name} version {version}", "data": label}


def write_batch_page(out: Path, spec: PipelineSpec, r: MonitorResult, version: str, run_stamp: str) -> Path:
    page = out / f"drift-{r.label}.html"
    page.write_text(render(
        "drift.html", r=r, cfg=spec.monitoring, stamp=_stamp(spec, version, r.label), colour=_COLOURS,
        flabel=lambda name: feature_label(spec, name), reasons=[readable_reason(spec, x) for x in r.reasons],
        evidently=Path(r.evidently_html).name if r.evidently_html else None), encoding="utf-8")
    return page


def drivers(results: list[MonitorResult], spec: PipelineSpec, most: int = 6) -> list[str]:
    """The features the trend plots: every one whose CSI reached the watch threshold in some batch (what
    drives a verdict: a key feature's up to rebuild, any other's to watch), key features first, then the
    largest CSI first; else the first three of the catalogue's key features."""
    cfg = spec.monitoring
    names = list(dict.fromkeys([*cfg.key_features, *(k for r in results for k in r.csi)]))
    worst = {k: max((r.csi.get(k) or 0.0 for r in results), default=0.0) for k in names}
    moved = sorted((k for k, v in worst.items() if v >= cfg.csi_watch),
                   key=lambda k: (k not in cfg.key_features, -worst[k]))
    return moved[:most] if moved else cfg.key_features[:3]


def _short(text: str, n: int = 56) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def labels_note(results: list[MonitorResult]) -> str:
    """What the performance chart can and cannot show, said in words: which batches have matured labels, and
    which estimates are not trusted."""
    matured = [r.label for r in results if r.matured]
    untrusted = [r.label for r in results if r.estimated and not r.estimated.trusted]
    parts = [("Observed AUC for " + ", ".join(matured) + " (matured labels)." if matured else
              "No observed AUC: none of these batches has matured labels yet (each batch's outcome window must "
              "close first), so the observed series is empty.")]
    if untrusted:
        parts.append("Estimated AUC not trusted for " + ", ".join(untrusted) + " (no matured basis, or the "
                     "calibration check on it failed): drawn grey and dotted, and not used for the verdict.")
    return " ".join(parts)


def write_index(out: Path, spec: PipelineSpec, results: list[MonitorResult], version: str, run_stamp: str,
                history: list | None = None, run_ids: list[str] | None = None) -> Path:
    """The run's index.html: this run's batches and trend, and `history` (registry.Verdict, oldest first): every
    verdict kept on the model version, earlier runs' too (`run_ids`: this run's monitoring runs, marked)."""
    labels = [r.label for r in results]
    cfg = spec.monitoring
    psi = charts.lines(labels, {"score PSI": [r.score_psi for r in results],
                                **{f"CSI {_short(feature_label(spec, k))}": [r.csi.get(k) for r in results]
                                   for k in drivers(results, spec)}},
                       "Score PSI and the CSI of the features behind the verdicts", (cfg.psi_watch, cfg.psi_act))
    trusted = [bool(r.estimated and r.estimated.trusted) for r in results]
    perf = charts.lines(labels, {
        "estimated AUC (CBPE)": [r.estimated.auc if r.estimated and t else None for r, t in zip(results, trusted)],
        "estimated AUC, not trusted": [r.estimated.auc if r.estimated and not t else None
                                       for r, t in zip(results, trusted)],
        "observed AUC": [r.matured.auc if r.matured else None for r in results],
        "development AUC": [(r.matured.dev_auc if r.matured else None)
                            or (r.calibration_basis.dev_auc if r.calibration_basis else None) for r in results]},
        "Performance: estimated (CBPE) and observed AUC", greyed={"estimated AUC, not trusted"})
    verdict_svg = charts.lines(labels, {"verdict": [VERDICTS.index(r.verdict) for r in results]},
                               "Verdict of each batch", levels=list(VERDICTS))
    index = out / "index.html"
    index.write_text(render(
        "monitor_index.html", results=results, stamp=_stamp(spec, version, ", ".join(labels)), colour=_COLOURS,
        psi_svg=psi, perf_svg=perf, verdict_svg=verdict_svg, cfg=cfg, labels_note=labels_note(results),
        first_reasons=[readable_reason(spec, r.reasons[0]) if r.reasons else "" for r in results],
        drivers=[feature_label(spec, k) for k in drivers(results, spec)],
        history=history or [], this_run=set(run_ids or ()), model_name=spec.registry.model_name, version=version,
        on_rebuild=spec.monitoring.on_rebuild), encoding="utf-8")
    worst = max((r.verdict for r in results), key=VERDICTS.index, default="stable")
    write_run_summary(out, kind="monitoring", model=f"{spec.registry.model_name} v{version}",
                      policy=f"{spec.policy.name} {spec.policy.version}" if spec.policy else None,
                      rows=sum(r.rows for r in results),
                      detail=f"{len(results)} batches ({labels[0]} to {labels[-1]}), worst verdict {worst}" if results
                      else "no batch",
                      verdict=f"{results[-1].verdict} ({results[-1].label})" if results else None)
    return index


# Evidently's page: its script bundle (the same 3.5 MB in every page of one Evidently version) between these
_BUNDLE = re.compile(r"(<script>var global = globalThis</script>\s*)<script>(.*?)</script>"
                     r"(\s*<script>\s*window\.drawDashboard)", re.S)
# scripts only from the page itself and the run folder ('self'), no request anywhere (no connect, no frame)
EVIDENTLY_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                 "font-src data:; img-src data:; connect-src 'none'; frame-src 'none'; form-action 'none'; "
                 "base-uri 'none'")
EVIDENTLY_DIFFERS = (
    "Why its scores differ from the drift page: Evidently tests each column of a capped sample ({n} rows against "
    "{n} development rows) with its own default test, the normalised Wasserstein distance for numeric columns "
    "and the Jensen-Shannon distance for categorical ones, each flagged at 0.1, and calls the data drifted when "
    "half the columns are; the drift page's PSI and CSI compare the whole batch with the development deciles "
    "stored with the model, judged on the banking thresholds (watch {watch}, act {act}). The two can disagree "
    "on a column; the verdict is creditgov's.")


def dress_evidently(path: Path, spec: PipelineSpec, r: MonitorResult, version: str) -> Path:
    """Put Evidently's page in its place, in place: a creditgov header (what it is, of which batch and model,
    a link back to the batch's drift page and the index, why its scores differ from the banking PSI), a
    Content-Security-Policy that allows scripts only from the page and the run folder and no request at all,
    and its script bundle moved to one file per run folder (evidently-<hash>.js), shared by the run's pages."""
    html = path.read_text(encoding="utf-8")
    m = _BUNDLE.search(html)
    if m:  # a layout this code knows: share the bundle; otherwise the page keeps it inline
        bundle = m.group(2).encode("utf-8")
        name = f"evidently-{hashlib.sha256(bundle).hexdigest()[:12]}.js"
        shared = path.parent / name
        if not shared.exists():
            shared.write_bytes(bundle)
        html = html[:m.start()] + m.group(1) + f'<script src="{name}"></script>' + m.group(3) + html[m.end():]
    cfg = spec.monitoring
    stamp = _stamp(spec, version, r.label)
    head = (f'<meta http-equiv="Content-Security-Policy" content="{EVIDENTLY_CSP}">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>Evidently data-drift report {escape(r.label)}: creditgov</title>")
    bar = ('<header style="font:14px/1.45 system-ui,sans-serif;color:#1d2433;background:#eef2f7;'
           'border-bottom:2px solid #3b6ea5;padding:.6em 1.2em">'
           f'<p style="margin:0 0 .3em"><a href="drift-{escape(r.label)}.html">← drift report {escape(r.label)}</a>'
           ' · <a href="index.html">monitoring index</a></p>'
           f'<p style="margin:0 0 .3em"><b>creditgov</b> · Evidently data-drift report (DataDriftPreset), batch '
           f'<b>{escape(r.label)}</b>; model <b>{escape(stamp["model"])}</b>; made {escape(stamp["generated_at"])}'
           + (f'; batch content hash <code>{escape((r.batch_hash or "")[:16])}</code>' if r.batch_hash else "")
           + '. Reviewer detail only: the verdict is on the drift page.</p>'
           '<p style="margin:0;color:#55607a;font-size:.9em">'
           + escape(EVIDENTLY_DIFFERS.format(n=f"{cfg.evidently_sample:,}", watch=f"{cfg.psi_watch:g}",
                                             act=f"{cfg.psi_act:g}")) + "</p></header>")
    html, n_head = re.subn(r"<head>", lambda _m: "<head>" + head, html, count=1)
    html, n_body = re.subn(r"<body>", lambda _m: "<body>" + bar, html, count=1)
    if not (n_head and n_body):
        raise DataError(f"{path}: not an Evidently page (no <head> or <body>)")
    path.write_text(html, encoding="utf-8")
    return path
