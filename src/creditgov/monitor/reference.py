"""The reference profile stored with each model version: what "normal" looked like at development.

Banking-convention bins: reference deciles per numeric feature (missing as its own bin),
categories as their own bins (plus missing and "other"); the reference score deciles;
per-segment score deciles for the spec's segment features; development metrics with CIs;
and a capped sample for Evidently. Stored as JSON + Parquet artifacts, never pickled.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from creditgov.model.derived import with_derived
from creditgov.model.metrics import decile_edges
from creditgov.spec import DISCRETE_MAX, QUANTILE_BINS, PipelineSpec

MISSING = "(missing)"
OTHER = "(other)"


def numeric_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per value: 0..len(edges) for the deciles (side='right'), len(edges)+1 for missing."""
    values = np.asarray(values, dtype="float64")
    idx = np.searchsorted(edges, values, side="right")
    return np.where(np.isnan(values), len(edges) + 1, idx)


def categorical_bins(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Bin per value: its category's position, then missing, then anything not in the list."""
    pos = {c: i for i, c in enumerate(categories)}
    out = values.map(lambda v: len(categories) if pd.isna(v) else pos.get(str(v), len(categories) + 1))
    return out.to_numpy(dtype="int64")


def n_bins(prof: dict) -> int:
    """Bins of a stored profile: numeric (and the score) inner edges + 1, then missing; categorical its
    categories, then missing, then other."""
    return len(prof["categories"]) + 2 if prof.get("kind") == "categorical" else len(prof["edges"]) + 2


def segment_keys(values: pd.Series) -> np.ndarray:
    """The segment each row belongs to, as the profile names it: the value as text, or MISSING."""
    return values.astype(object).where(values.notna(), MISSING).astype(str).to_numpy()


def shares(bins: np.ndarray, n_bins: int) -> list[float]:
    counts = np.bincount(bins, minlength=n_bins)[:n_bins].astype(float)
    return (counts / counts.sum()).tolist() if counts.sum() else counts.tolist()


def reference_edges(values: np.ndarray) -> np.ndarray:
    """Inner bin edges: reference deciles, or each distinct value for a feature with few of them.

    Deciles of a zero-inflated count (days past due is 0 for most accounts) collapse into one
    bin and would hide a shift from 0 to 30; with at most DISCRETE_MAX distinct values every
    value is its own bin (values above the largest fall in the last bin); with more, a value
    holding more than a tenth of the rows gets its own bin and the values above it their deciles.
    """
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) <= DISCRETE_MAX:
        return distinct[1:]
    edges = decile_edges(values)
    # a value holding more than a decile (days past due: 0 for most accounts, in days otherwise) is a bin of its
    # own, and the values above the largest such value get their own deciles, so a shift off it shows
    heavy = distinct[counts > len(values) / QUANTILE_BINS]
    if len(heavy):
        tail = values[values > heavy.max()]
        extra = [np.nextafter(heavy, np.inf)] + ([decile_edges(tail)] if len(tail) >= QUANTILE_BINS else [])
        edges = np.unique(np.concatenate([edges, *extra]))
    return edges


def feature_profile(frame: pd.DataFrame, spec: PipelineSpec) -> dict:
    """Reference bins and shares of each model input; a derived feature's from its values as the model's encoding
    computes them (model.derived)."""
    out = {}
    frame = with_derived(frame, spec)
    for f in spec.model_inputs:
        if f.type == "numeric":
            v = pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype="float64")
            finite = v[~np.isnan(v)]
            edges = reference_edges(finite) if len(finite) else np.array([])
            out[f.name] = {"kind": "numeric", "edges": edges.tolist(),
                           "shares": shares(numeric_bins(v, edges), len(edges) + 2)}
        else:
            cats = list(f.categories)
            out[f.name] = {"kind": "categorical", "categories": cats,
                           "shares": shares(categorical_bins(frame[f.name], cats), len(cats) + 2)}
    return out


def score_profile(pd_values: np.ndarray) -> dict:
    edges = decile_edges(pd_values)
    return {"edges": edges.tolist(), "shares": shares(numeric_bins(pd_values, edges), len(edges) + 2),
            "mean": float(np.mean(pd_values)), "n": int(len(pd_values))}


def build_profile(dev: pd.DataFrame, pd_dev: np.ndarray, spec: PipelineSpec, dev_metrics: dict,
                  segment_by: list[str]) -> dict:
    segments = {}
    for col in segment_by:
        segments[col] = {}
        keys = segment_keys(dev[col])
        for value in np.unique(keys):
            idx = np.flatnonzero(keys == value)
            if len(idx) >= spec.monitoring.min_tier_rows:  # too few rows give unstable deciles
                segments[col][str(value)] = score_profile(pd_dev[idx])
    return {"format": "creditgov.reference/1", "rows": int(len(dev)), "features": feature_profile(dev, spec),
            "score": score_profile(pd_dev), "segments": segments, "development_metrics": dev_metrics}
