"""Global explanations from exact TreeSHAP attributions (CreditModel.contributions: creditgov.model.treeshap)."""
from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

from creditgov.model.credit_model import CreditModel


def global_importance(model: CreditModel, raw: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| in calibrated log-odds per model feature, largest first."""
    phi, _ = model.contributions(raw)
    imp = pd.DataFrame({"feature": model.feature_names, "mean_abs_shap": np.abs(phi).mean(axis=0)})
    return imp.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)


def importance_svg(importance: pd.DataFrame, title: str = "Global SHAP importance (mean |attribution|, log-odds)") -> str:
    """A self-contained horizontal bar chart (no scripts, no external fonts)."""
    rows = importance.to_dict("records")
    bar_h, left, width = 22, 150, 420
    height = 40 + bar_h * len(rows)
    top = max((r["mean_abs_shap"] for r in rows), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
             f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="12">',
             f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for i, r in enumerate(rows):
        y = 30 + i * bar_h
        w = width * r["mean_abs_shap"] / top
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(str(r["feature"]))}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="#3b6ea5"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 14}">{r["mean_abs_shap"]:.3f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
