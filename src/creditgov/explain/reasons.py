"""Reason codes from exact TreeSHAP attributions, faithful to the model that decided.

Attributions are in calibrated log-odds of default. A reason is a catalogue feature
whose attribution pushed risk UP (> 0); never one that lowered it. Model columns are
grouped back to their catalogue feature (sum of attributions) before ranking.
"""
from __future__ import annotations

import numpy as np

from creditgov.errors import CreditGovError

ADDITIVITY_TOLERANCE = 1e-4


class AdditivityError(CreditGovError):
    exit_code = 1


def check_additivity(base: np.ndarray, phi: np.ndarray, log_odds: np.ndarray,
                     tol: float = ADDITIVITY_TOLERANCE) -> np.ndarray:
    """|base + sum(phi) - log_odds| per row; raises when any row breaks the tolerance."""
    err = np.abs(base + phi.sum(axis=1) - log_odds)
    if len(err) and not np.all(err <= tol):
        worst = int(np.argmax(err))
        raise AdditivityError(f"SHAP additivity broken: row {worst + 1} differs by {err[worst]:.3g} > {tol:g}; "
                              "the explanation would not be faithful, no decision was written")
    return err


def group_by_feature(phi: np.ndarray, columns: list[str], feature_of: dict[str, str]) -> tuple[np.ndarray, list[str]]:
    """Sum attribution columns that encode the same catalogue feature."""
    features = list(dict.fromkeys(feature_of.get(c, c) for c in columns))
    pos = {f: i for i, f in enumerate(features)}
    out = np.zeros((phi.shape[0], len(features)))
    for j, c in enumerate(columns):
        out[:, pos[feature_of.get(c, c)]] += phi[:, j]
    return out, features


def top_reasons(phi_features: np.ndarray, features: list[str], max_reasons: int) -> list[list[tuple[str, float]]]:
    """Per row, up to `max_reasons` (feature, attribution) with attribution > 0, largest first."""
    order = np.argsort(-phi_features, axis=1, kind="stable")
    out = []
    for i in range(phi_features.shape[0]):
        row = []
        for j in order[i, :max_reasons]:
            if phi_features[i, j] > 0:
                row.append((features[j], float(phi_features[i, j])))
        out.append(row)
    return out
