"""Credit-risk evaluation metrics for a binary target and a predicted probability of default.

Conventions: ``y`` is 1 for a bad (default) and 0 for a good; ``p`` is the predicted
probability of default (higher = riskier).  Rank-based metrics (``auc``,
``bootstrap_auc_ci``, ``ks``) accept any finite score; metrics that interpret ``p`` as a
probability (``brier``, ``calibration_table``, ``hosmer_lemeshow``, ``evaluate``)
require ``0 <= p <= 1``.  Invalid input raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from creditgov.spec import PSI_SHARE_FLOOR, QUANTILE_BINS

__all__ = [
    "auc",
    "bootstrap_auc_ci",
    "gini",
    "ks",
    "weighted_ks",
    "brier",
    "calibration_table",
    "hosmer_lemeshow",
    "decile_edges",
    "psi_from_shares",
    "psi",
    "evaluate",
]

# Cap on (replicate x row) cells per bootstrap chunk: bounds memory for large samples,
# and chunks of a few MB were measured faster than one big block (cache effects).
_BOOT_CELLS_PER_CHUNK = 500_000


# --------------------------------------------------------------------------- validation


def _as_1d_float(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; could not convert to float ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got length 0")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(f"{name} must not contain NaN; found {n_nan} NaN value(s)")
    if not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)][0]
        raise ValueError(f"{name} must be finite; found {float(bad)!r}")
    return arr


def _check_y(y, name: str = "y") -> np.ndarray:
    arr = _as_1d_float(y, name)
    invalid = (arr != 0) & (arr != 1)
    if invalid.any():
        raise ValueError(
            f"{name} must contain only 0 and 1; found {int(invalid.sum())} other value(s), "
            f"e.g. {float(arr[invalid][0])!r}"
        )
    return arr.astype(np.int64)


def _check_prob(p, name: str = "p") -> np.ndarray:
    arr = _as_1d_float(p, name)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must be within [0, 1]; found min {lo!r}, max {hi!r}")
    return arr


def _check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same length; "
            f"got len({name_a})={a.shape[0]}, len({name_b})={b.shape[0]}"
        )


def _check_both_classes(y: np.ndarray, name: str = "y") -> None:
    n_bad = int(y.sum())
    if n_bad == 0 or n_bad == y.size:
        only = 1 if n_bad else 0
        raise ValueError(
            f"{name} must contain both classes (0 and 1); found only class {only} in {y.size} rows"
        )


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _yp(y, p, *, prob: bool, both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    y_arr = _check_y(y)
    p_arr = _check_prob(p) if prob else _as_1d_float(p, "p")
    _check_same_length(y_arr, p_arr, "y", "p")
    if both_classes:
        _check_both_classes(y_arr)
    return y_arr, p_arr


# ----------------------------------------------------------------------- discrimination


def auc(y, p) -> float:
    """ROC AUC of score ``p`` for target ``y`` (ties count one half)."""
    y_arr, p_arr = _yp(y, p, prob=False, both_classes=True)
    return float(roc_auc_score(y_arr, p_arr))


def _bootstrap_auc_replicates(y, p, n_boot: int = 1000, seed=0) -> np.ndarray:
    """AUC of each stratified bootstrap replicate (validated inputs assumed).

    Draw order (relied on by tests): one call per chunk of replicates to
    ``rng.integers(0, high, size=(k, n_bad + n_good))`` where ``high`` is ``n_bad``
    for the first ``n_bad`` columns (positions among the bads, in original order) and
    ``n_good`` for the rest (positions among the goods).  With an array ``high`` numpy
    draws element by element, so the stream does not depend on the chunk size and equals
    ``n_boot`` successive calls ``rng.integers(0, high)``.
    """
    bad_scores = p[y == 1]
    good_scores = p[y == 0]
    n1, n0 = bad_scores.size, good_scores.size
    n = n1 + n0
    high = np.concatenate([np.full(n1, n1, dtype=np.int64), np.full(n0, n0, dtype=np.int64)])

    # Mann-Whitney with multiplicities: AUC_b = sum_i cb_i * (#goods < s_i + #goods == s_i / 2)
    # where the good counts are weighted by how often each good was drawn.  With goods
    # sorted, "#goods below s_i" is a prefix sum of the good counts at a fixed position.
    g_order = np.argsort(good_scores, kind="stable")
    g_sorted = good_scores[g_order]
    lo = np.searchsorted(g_sorted, bad_scores, side="left")
    hi = np.searchsorted(g_sorted, bad_scores, side="right")

    rng = np.random.default_rng(seed)
    out = np.empty(n_boot, dtype=float)
    chunk = max(1, min(n_boot, _BOOT_CELLS_PER_CHUNK // n))
    denom = 2.0 * n1 * n0
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, high, size=(k, n))
        offsets = np.arange(k, dtype=np.int64)[:, None]
        cb = np.bincount((idx[:, :n1] + offsets * n1).ravel(), minlength=k * n1).reshape(k, n1)
        cg = np.bincount((idx[:, n1:] + offsets * n0).ravel(), minlength=k * n0).reshape(k, n0)
        cum = np.zeros((k, n0 + 1), dtype=np.int64)
        np.cumsum(cg[:, g_order], axis=1, out=cum[:, 1:])
        # Integer arithmetic keeps the sum exact (2*U fits in int64 for any realistic n).
        twice_u = (cb * (cum[:, lo] + cum[:, hi])).sum(axis=1)
        out[start : start + k] = twice_u / denom
    return out


def bootstrap_auc_ci(y, p, n_boot: int = 1000, level: float = 0.95, seed=0) -> tuple[float, float]:
    """Percentile bootstrap CI for the AUC; bads and goods are resampled separately."""
    y_arr, p_arr = _yp(y, p, prob=False, both_classes=True)
    n_boot = _check_int(n_boot, "n_boot", 1)
    if not isinstance(level, Real) or isinstance(level, bool) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a number strictly between 0 and 1; got {level!r}")
    reps = _bootstrap_auc_replicates(y_arr, p_arr, n_boot=n_boot, seed=seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(low), float(high)


def gini(auc_value) -> float:
    """Gini coefficient (accuracy ratio) from an AUC: ``2 * auc - 1``."""
    try:
        a = float(auc_value)
    except (TypeError, ValueError):
        raise ValueError(f"auc_value must be a number in [0, 1]; got {auc_value!r}") from None
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"auc_value must be a number in [0, 1]; got {auc_value!r}")
    return 2.0 * a - 1.0


def ks(y, p) -> float:
    """Kolmogorov-Smirnov statistic: max |F_bad(t) - F_good(t)| over unique scores t."""
    y_arr, p_arr = _yp(y, p, prob=False, both_classes=True)
    return _weighted_ks(p_arr, y_arr.astype(float), 1.0 - y_arr)


def weighted_ks(score, bad_weight, good_weight) -> float:
    """KS between two weighted populations over the same rows: max |W_bad(t) - W_good(t)| over unique
    scores t, each W the weight share at scores <= t.

    ``ks(y, p)`` is ``weighted_ks(p, y, 1 - y)``; the KS expected if ``p`` are calibrated
    PDs (CBPE, no labels needed) is ``weighted_ks(p, p, 1 - p)``.  Weights must be
    non-negative with a positive total on each side.
    """
    s = _as_1d_float(score, "score")
    wb = _as_1d_float(bad_weight, "bad_weight")
    wg = _as_1d_float(good_weight, "good_weight")
    _check_same_length(s, wb, "score", "bad_weight")
    _check_same_length(s, wg, "score", "good_weight")
    for name, w in (("bad_weight", wb), ("good_weight", wg)):
        if w.min() < 0 or not w.sum() > 0:
            raise ValueError(f"{name} must be non-negative with a positive total; found min {float(w.min())!r}, "
                             f"total {float(w.sum())!r}")
    return _weighted_ks(s, wb, wg)


def _weighted_ks(s: np.ndarray, wb: np.ndarray, wg: np.ndarray) -> float:
    order = np.argsort(s, kind="stable")
    s = s[order]
    cb, cg = np.cumsum(wb[order]), np.cumsum(wg[order])
    # Both CDFs are read only at the end of each tied block (P(score <= t)): stepping through
    # sorted rows one by one would split a tie and report a gap no threshold can make.
    end = np.append(s[1:] != s[:-1], True)
    return float(np.max(np.abs(cb[end] / cb[-1] - cg[end] / cg[-1])))


# -------------------------------------------------------------------------- calibration


def brier(y, p) -> float:
    """Brier score: mean squared difference between ``p`` and ``y``."""
    y_arr, p_arr = _yp(y, p, prob=True, both_classes=False)
    return float(np.mean((p_arr - y_arr) ** 2))


def _rank_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """0-based equal-count bin of each row by rank of p (ties split by row order)."""
    n = p.size
    order = np.argsort(p, kind="stable")
    bins = np.empty(n, dtype=np.int64)
    bins[order] = (np.arange(n, dtype=np.int64) * n_bins) // n
    return bins


def _check_n_bins_rows(n_bins, n: int, minimum: int) -> int:
    n_bins = _check_int(n_bins, "n_bins", minimum)
    if n_bins > n:
        raise ValueError(f"n_bins must not exceed the number of rows ({n}); got {n_bins}")
    return n_bins


def calibration_table(y, p, n_bins: int = QUANTILE_BINS) -> pd.DataFrame:
    """Observed vs expected bads per equal-count bin of ``p`` (bin 1 = lowest p).

    Bins are formed on the rank of ``p`` (ties broken by row order), so each bin holds
    ``len(p) // n_bins`` or one more rows even when many scores are tied.
    """
    y_arr, p_arr = _yp(y, p, prob=True, both_classes=False)
    n_bins = _check_n_bins_rows(n_bins, y_arr.size, 1)
    bins = _rank_bins(p_arr, n_bins)
    n = np.bincount(bins, minlength=n_bins)
    expected = np.bincount(bins, weights=p_arr, minlength=n_bins)
    observed = np.bincount(bins, weights=y_arr, minlength=n_bins).round().astype(np.int64)
    p_min = np.full(n_bins, np.inf)
    p_max = np.full(n_bins, -np.inf)
    np.minimum.at(p_min, bins, p_arr)
    np.maximum.at(p_max, bins, p_arr)
    return pd.DataFrame(
        {
            "bin": np.arange(1, n_bins + 1, dtype=np.int64),
            "n": n.astype(np.int64),
            "p_min": p_min,
            "p_max": p_max,
            "mean_pd": expected / n,
            "expected_bad": expected,
            "observed_bad": observed,
            "observed_rate": observed / n,
        }
    )


def hosmer_lemeshow(y, p, n_bins: int = QUANTILE_BINS) -> dict:
    """Hosmer-Lemeshow goodness-of-fit test on the ``calibration_table`` bins.

    statistic = sum_g (O_g - E_g)^2 / (E_g * (1 - E_g / n_g)), dof = n_bins - 2.
    A bin whose expected count is 0 or n_g has zero variance: it contributes 0 if the
    observed count matches, otherwise the statistic is ``inf`` (p-value 0), since a
    model that predicts certainty and is wrong is infinitely miscalibrated.
    """
    y_arr, p_arr = _yp(y, p, prob=True, both_classes=True)
    n_bins = _check_n_bins_rows(n_bins, y_arr.size, 3)
    table = calibration_table(y_arr, p_arr, n_bins=n_bins)
    n_g = table["n"].to_numpy(dtype=float)
    e = table["expected_bad"].to_numpy(dtype=float)
    o = table["observed_bad"].to_numpy(dtype=float)
    var = e * (1.0 - e / n_g)
    degenerate = var <= 1e-12 * n_g
    diff2 = (o - e) ** 2
    if np.any(degenerate & (np.abs(o - e) > 1e-9)):
        statistic = math.inf
    else:
        statistic = float(np.sum(diff2[~degenerate] / var[~degenerate]))
    dof = n_bins - 2
    pvalue = float(stats.chi2.sf(statistic, dof))
    return {"statistic": float(statistic), "dof": int(dof), "pvalue": pvalue}


# -------------------------------------------------------------------------- stability


def decile_edges(reference, n_bins: int = QUANTILE_BINS) -> np.ndarray:
    """Inner bin edges for PSI: unique quantiles of ``reference`` at 1/n_bins, ..., (n_bins-1)/n_bins.

    The outer bins are open, (-inf, e_1) and [e_last, +inf).  Duplicate quantiles (heavy
    ties) are merged, so fewer than ``n_bins`` bins may result.
    """
    ref = _as_1d_float(reference, "reference")
    n_bins = _check_int(n_bins, "n_bins", 2)
    qs = np.arange(1, n_bins) / n_bins
    return np.unique(np.quantile(ref, qs))


def _bin_shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # side="right": a value equal to an edge goes to the bin above that edge.
    idx = np.searchsorted(edges, x, side="right")
    return np.bincount(idx, minlength=edges.size + 1) / x.size


def psi_from_shares(ref_share, cur_share, eps: float = PSI_SHARE_FLOOR) -> float:
    """PSI from per-bin shares: sum((cur - ref) * ln(cur / ref)), each share floored at ``eps``.

    Shares must be non-negative and sum to 1 (tolerance 1e-6 + len * eps, so shares that
    were already floored at ``eps`` are accepted; counts are rejected).
    """
    if not isinstance(eps, Real) or isinstance(eps, bool) or not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be a number strictly between 0 and 1; got {eps!r}")
    ref = _as_1d_float(ref_share, "ref_share")
    cur = _as_1d_float(cur_share, "cur_share")
    _check_same_length(ref, cur, "ref_share", "cur_share")
    tol = 1e-6 + ref.size * eps
    for name, arr in (("ref_share", ref), ("cur_share", cur)):
        if arr.min() < 0:
            raise ValueError(f"{name} must be non-negative; found {float(arr.min())!r}")
        total = float(arr.sum())
        if abs(total - 1.0) > tol:
            raise ValueError(f"{name} must sum to 1 (shares, not counts); sums to {total!r}")
    ref = np.maximum(ref, eps)
    cur = np.maximum(cur, eps)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi(reference, current, n_bins: int = QUANTILE_BINS, eps: float = PSI_SHARE_FLOOR) -> float:
    """Population Stability Index of ``current`` against ``reference``.

    Bins: inner edges from ``decile_edges(reference, n_bins)``, open outer bins;
    assignment with ``numpy.searchsorted(edges, x, side="right")``, so a value equal to an
    edge goes to the upper bin.  Shares are floored at ``eps`` before
    sum((cur - ref) * ln(cur / ref)).  Both inputs are raw values (not shares); NaN raises.
    """
    ref = _as_1d_float(reference, "reference")
    cur = _as_1d_float(current, "current")
    edges = decile_edges(ref, n_bins)
    return psi_from_shares(_bin_shares(ref, edges), _bin_shares(cur, edges), eps=eps)


# ----------------------------------------------------------------------------- summary


def evaluate(y, p, n_boot: int = 1000, seed=0) -> dict:
    """All headline metrics as a flat dict of Python floats/ints (JSON-serialisable).

    ``hl_statistic`` may be ``inf`` (see ``hosmer_lemeshow``), which ``json.dumps``
    writes as ``Infinity`` unless ``allow_nan=False``.
    """
    y_arr, p_arr = _yp(y, p, prob=True, both_classes=True)
    auc_value = auc(y_arr, p_arr)
    ci_low, ci_high = bootstrap_auc_ci(y_arr, p_arr, n_boot=n_boot, seed=seed)
    hl = hosmer_lemeshow(y_arr, p_arr)
    n = int(y_arr.size)
    n_bad = int(y_arr.sum())
    return {
        "auc": float(auc_value),
        "auc_ci_low": float(ci_low),
        "auc_ci_high": float(ci_high),
        "gini": float(gini(auc_value)),
        "ks": float(ks(y_arr, p_arr)),
        "brier": float(brier(y_arr, p_arr)),
        "hl_statistic": float(hl["statistic"]),
        "hl_dof": int(hl["dof"]),
        "hl_pvalue": float(hl["pvalue"]),
        "n": n,
        "n_bad": n_bad,
        "bad_rate": float(n_bad / n),
    }
