"""Charts drawn by matplotlib, inlined in the reports as SVG.

Every chart is a matplotlib Figure (no pyplot state) written as SVG with its text kept as text (svg.fonttype
none: readable, searchable, escaped by the SVG writer), a fixed id salt and no date, so the same figures give
the same bytes. The SVG is made inert for the reports' Content-Security-Policy: no <style> element (the page's
one style sheet stays the only one) and no clip paths (no url() reference anywhere in a page).
"""
from __future__ import annotations

import io
import math
import re

BLUE, RED, GREEN, GREY, AMBER = "#3b6ea5", "#c0392b", "#2e7d32", "#8a94a6", "#b7791f"
LINES = [BLUE, RED, GREEN, "#8e44ad", AMBER, "#16a085", "#d35400", "#1f3a5f", "#c71585"]  # no two series alike


def _figure(width: float, height: float, left: float = 0.1, right: float = 0.97, bottom: float = 0.6,
            top: float = 0.35):
    """A figure whose axes take `left` to `right` of its width and leave `bottom` / `top` inches; saved with a
    tight bounding box, so long labels widen the picture rather than being cut."""
    from matplotlib.figure import Figure  # heavy (half a second): only the reports draw charts

    fig = Figure(figsize=(width, height), dpi=100)
    fig.patch.set_alpha(0)
    fig.subplots_adjust(left=left, right=right, bottom=bottom / height, top=1 - top / height)
    return fig


def _short(text: str, n: int = 58) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def to_svg(fig, title: str) -> str:
    """The figure as an inline <svg> element (no XML prolog), deterministic and inert."""
    import matplotlib  # heavy: only the reports draw charts

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "creditgov", "font.family": "sans-serif",
                                "font.size": 9}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<style[^>]*>.*?</style>", "", svg, flags=re.S)
    svg = re.sub(r'\s*clip-path="url\(#[^"]*\)"', "", svg)
    svg = re.sub(r"<clipPath .*?</clipPath>", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r"<defs>\s*</defs>", "", svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(title)}" ', 1)
    return svg.strip()


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _t(text: str) -> str:
    """Text as matplotlib draws it literally: a '$' would otherwise start mathematical notation."""
    return str(text).replace("$", r"\$")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def waterfall(base: float, contributions: list[tuple[str, float]], final: float,
              thresholds: list[tuple[str, float]], note: str | None = None) -> str:
    """Attribution waterfall on the PD scale: from the average PD (base value), each feature's push moves the
    PD to the next bar's start, ending at this decision's PD; the policy's PD thresholds as dashed lines.
    `contributions` are (label, log-odds attribution), in the order shown (top first)."""
    rows = [("average applicant (base)", None, _sigmoid(base))]
    running = base
    for name, v in contributions:
        rows.append((name, _sigmoid(running), _sigmoid(running + v)))
        running += v
    rows.append(("this decision's PD", None, _sigmoid(final)))
    n = len(rows)
    fig = _figure(6.0, 0.3 * n + 1.5, left=0.05, right=0.95, bottom=1.0, top=0.15)
    ax = fig.add_subplot()
    for i, (name, start, end) in enumerate(rows):
        y = n - 1 - i
        if start is None:
            ax.barh(y, end, color=GREY if i == 0 else BLUE, height=0.6)
            ax.text(end, y, f" {100 * end:.1f}%", va="center", fontsize=8)
        else:
            up = end > start
            ax.barh(y, end - start, left=start, color=RED if up else GREEN, height=0.6)
            ax.text(max(start, end), y, f" {'+' if up else '−'}{100 * abs(end - start):.1f} pts", va="center",
                    fontsize=8)
    hi = max(max(r[2] for r in rows), max((r[1] or 0) for r in rows), max((t for _, t in thresholds), default=0))
    for k, (name, t) in enumerate(thresholds):
        ax.axvline(t, color=[AMBER, "#8e44ad", "#555555", "#16a085"][k % 4], linestyle="--", linewidth=1,
                   label=_t(f"{name} ({100 * t:.1f}%)"))
    from matplotlib.patches import Patch  # heavy: only the reports draw charts

    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=RED, label="raises the PD"), Patch(color=GREEN, label="lowers the PD")]
    ax.set_yticks(range(n), [_t(_short(r[0])) for r in reversed(rows)])
    ax.set_xlim(0, min(1.0, hi * 1.25 + 0.01))
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
    ax.set_xlabel("probability of default (PD)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.55 / (0.3 * n)), ncol=2, fontsize=8,
              frameon=False)
    if note:
        ax.set_title(_t(note), fontsize=8, loc="left", color="#55607a")
    return to_svg(fig, "Attribution waterfall on the PD scale")


def bars(items: list[tuple[str, float]], title: str, xlabel: str = "count", fmt: str = "{:,.0f}",
         label_chars: int = 48) -> str:
    """Horizontal bars, largest label first as given; a label longer than `label_chars` is shortened."""
    fig = _figure(5.5, 0.26 * max(len(items), 1) + 1.1, left=0.05, right=0.95, bottom=0.55, top=0.4)
    ax = fig.add_subplot()
    n = len(items)
    ax.barh(range(n), [v for _, v in reversed(items)], color=BLUE, height=0.6)
    for i, (_, v) in enumerate(reversed(items)):
        ax.text(v, i, " " + fmt.format(v), va="center", fontsize=8)
    ax.set_yticks(range(n), [_t(_short(name, label_chars)) for name, _ in reversed(items)])
    ax.set_xlabel(_t(xlabel))
    ax.set_title(_t(title), fontsize=9, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return to_svg(fig, title)


def lines(labels: list[str], series: dict[str, list[float | None]], title: str,
          bands: tuple[float, float] | None = None, greyed: set[str] = frozenset(), ylabel: str = "",
          levels: list[str] | None = None) -> str:
    """Lines over batches (None leaves a gap); `bands` the watch and act thresholds; series named in `greyed`
    drawn grey and dotted (values shown but not trusted); `levels` names the y values 0, 1, ... (an ordinal
    series such as the verdict)."""
    fig = _figure(9.0, 3.0, left=0.08, right=0.72, bottom=0.9, top=0.35)
    ax = fig.add_subplot()
    x = list(range(len(labels)))
    for k, (name, s) in enumerate(series.items()):
        ys = [float("nan") if v is None else float(v) for v in s]
        grey = name in greyed
        ax.plot(x, ys, marker="o", markersize=3, linewidth=1.2 if grey else 1.8,
                color="#9aa3b2" if grey else LINES[k % len(LINES)], linestyle=":" if grey else "-", label=_t(name))
    if bands:
        for b, name, col in zip(bands, ("watch", "act"), (AMBER, RED)):
            ax.axhline(b, color=col, linestyle="--", linewidth=1, label=f"{name} {b:g}")
    ax.set_xticks(x, [_t(lab) for lab in labels], rotation=45 if len(labels) > 8 else 0,
                  ha="right" if len(labels) > 8 else "center")
    ax.set_title(_t(title), fontsize=9, loc="left")
    if ylabel:
        ax.set_ylabel(_t(ylabel))
    if levels:
        ax.set_yticks(range(len(levels)), [_t(v) for v in levels])
        ax.set_ylim(-0.3, len(levels) - 0.7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    return to_svg(fig, title)


def frontier(points: list[tuple[str, float, float, str, bool]], title: str,
             region: tuple[float, float] | None = None) -> str:
    """Candidates as points: x the lowest adverse impact ratio, y the CV AUC; `points` are (name, air, auc, kind,
    chosen), the chosen one ringed and named, as is every point but the hyperparameter variants (a cluster: the
    table beside the chart names them); `region` (air from, auc from): the shaded corner up and to the right
    where a candidate is a less discriminatory alternative to the chosen one."""
    fig = _figure(8.0, 5.2, left=0.1, right=0.72, bottom=0.6, top=0.35)
    ax = fig.add_subplot()
    kinds = list(dict.fromkeys(p[3] for p in points))
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    if region is not None:
        x0, y0 = region
        xs_all, ys_all = xs + [x0], ys + [y0]
        x_hi = max(xs_all) + 0.03
        y_hi = max(ys_all) + 0.003
        ax.fill_between([x0, x_hi], y0, y_hi, color=AMBER, alpha=0.12, linewidth=0,
                        label="an alternative here stops the promotion")
        ax.axvline(x0, color=AMBER, linestyle="--", linewidth=0.8)
        ax.axhline(y0, color=AMBER, linestyle="--", linewidth=0.8)
    for k, kind in enumerate(kinds):
        sel = [p for p in points if p[3] == kind]
        ax.scatter([p[1] for p in sel], [p[2] for p in sel], s=28, color=LINES[k % len(LINES)], label=_t(kind),
                   zorder=3)
    for name, x, y, kind, chosen in points:
        if chosen:
            ax.scatter([x], [y], s=160, facecolors="none", edgecolors="#222222", linewidths=1.6, zorder=4,
                       label="chosen")
        if chosen or kind != "hyperparameters":
            ax.annotate(_t(name), (x, y), textcoords="offset points", xytext=(6, -10 if chosen else 3),
                        fontsize=7, color="#111111" if chosen else "#333333",
                        fontweight="bold" if chosen else "normal")
    ax.set_xlabel("lowest adverse impact ratio of a protected group (approval, out-of-fold PDs)")
    ax.set_ylabel("cross-validated AUC")
    ax.set_title(_t(title), fontsize=9, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    return to_svg(fig, title)
