"""Numerical check that the trained model's score moves only in the catalogue's direction.

The constraint flag says what xgboost was asked; this measures what it did: for a
sample of real rows, sweep each monotone feature over a grid of its values with
the other features held fixed and count steps that go the wrong way.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from creditgov.model.credit_model import CreditModel
from creditgov.model.treeshap import UnsupportedModel


def check_monotonicity(model: CreditModel, sample: pd.DataFrame, grid_points: int = 50,
                       tol: float = 1e-9) -> dict:
    """Per monotone feature: rows swept, grid size, wrong-way steps and the worst one (log-odds)."""
    out: dict[str, dict] = {}
    n = len(sample)
    for enc in model.encodings:
        if enc.monotone == 0:
            continue
        if enc.kind == "derived":  # computed from other columns: swept where the trees read it
            out[enc.name] = _derived_sweep(model, sample, enc, grid_points, tol)
            continue
        if enc.kind == "ordinal":
            grid = list(enc.categories)
        else:
            vals = pd.to_numeric(sample[enc.name], errors="coerce").dropna().to_numpy()
            grid = np.unique(np.quantile(vals, np.linspace(0, 1, grid_points))) if len(vals) else np.array([])
        if len(grid) < 2:
            out[enc.name] = {"direction": enc.monotone, "rows": n, "grid": len(grid), "violations": 0, "worst": 0.0}
            continue
        swept = sample.loc[sample.index.repeat(len(grid))].reset_index(drop=True)
        swept[enc.name] = np.tile(np.asarray(grid, dtype=object if enc.kind == "ordinal" else float), n)
        score = model.log_odds(swept).reshape(n, len(grid))
        steps = np.diff(score, axis=1) * enc.monotone  # >= 0 when the direction holds
        out[enc.name] = {
            "direction": enc.monotone,
            "rows": n,
            "grid": len(grid),
            "violations": int((steps < -tol).sum()),
            "worst": float(min(steps.min(), 0.0)),
        }
    return out


def _derived_sweep(model, sample: pd.DataFrame, enc, grid_points: int, tol: float) -> dict:
    """check_monotonicity of a derived feature: its encoded column swept over its sample quantiles, the other
    encoded columns fixed, scored by the trees (a model without the matrix interface: not swept, said so)."""
    n = len(sample)
    try:
        X = model.matrix(sample)
    except (AttributeError, UnsupportedModel):
        return {"direction": enc.monotone, "rows": n, "grid": 0, "violations": 0, "worst": 0.0,
                "note": "not swept (the model does not expose its encoded matrix)"}
    j = model.feature_names.index(enc.name)
    vals = X[:, j][~np.isnan(X[:, j])]
    grid = np.unique(np.quantile(vals, np.linspace(0, 1, grid_points))).astype(np.float32) if len(vals) else []
    if len(grid) < 2:
        return {"direction": enc.monotone, "rows": n, "grid": len(grid), "violations": 0, "worst": 0.0}
    swept = np.repeat(X, len(grid), axis=0)
    swept[:, j] = np.tile(grid, n)
    steps = np.diff(model.margin_matrix(swept).reshape(n, len(grid)), axis=1) * enc.monotone
    return {"direction": enc.monotone, "rows": n, "grid": len(grid), "violations": int((steps < -tol).sum()),
            "worst": float(min(steps.min(), 0.0))}


def is_monotone(report: dict) -> bool:
    return all(v["violations"] == 0 for v in report.values())


def elderly_check(model: CreditModel, sample: pd.DataFrame, feature: str, elderly_age: float, age_range: tuple,
                  tol: float = 1e-9) -> dict:
    """Regulation B 1002.6(b)(2)(ii), measured: an applicant aged `elderly_age` or more must never be scored worse
    for their age than at the most favoured younger age. For a sample of real rows, `feature` is swept over
    every whole year of `age_range` with the other features fixed; a row violates when its highest log-odds at
    an elderly age exceeds its lowest log-odds at any younger age. Returns rows, violations and the worst excess."""
    lo, hi = int(np.ceil(age_range[0])), int(np.floor(age_range[1]))
    grid = np.arange(lo, hi + 1, dtype=float)
    young, old = grid < elderly_age, grid >= elderly_age
    n = len(sample)
    if not young.any() or not old.any() or not n:
        return {"feature": feature, "elderly_age": elderly_age, "rows": n, "grid": len(grid), "violations": 0,
                "worst": 0.0}
    swept = sample.loc[sample.index.repeat(len(grid))].reset_index(drop=True)
    swept[feature] = np.tile(grid, n)
    score = model.log_odds(swept).reshape(n, len(grid))
    excess = score[:, old].max(axis=1) - score[:, young].min(axis=1)
    return {"feature": feature, "elderly_age": float(elderly_age), "rows": n, "grid": len(grid),
            "violations": int((excess > tol).sum()), "worst": float(max(excess.max(), 0.0))}
