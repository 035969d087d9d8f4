"""Fair-lending evidence: adverse impact ratio (AIR) and standardized mean difference (SMD) of scores by group.

Pure arithmetic on arrays: the groups (labels from privacy.group_labels), whether each row got the favourable
outcome (approval; for accounts on book, not being suspended, not being cut), and the score (PD). The caller
decides what the outcome is (the policy applied to the test rows at training, the decision log in a report).

- AIR of a group: its favourable-outcome rate divided by the reference group's, the reference being the
  assessed group with the highest favourable rate (the four-fifths convention compares with the most favoured).
- SMD of a group: (its mean PD - the reference group's mean PD) / the pooled standard deviation of the two
  groups' PDs. Positive: the group is scored riskier than the reference.
- Confidence intervals: percentile bootstrap, each group resampled within itself (stratified), the
  reference group resampled too, `n_boot` replicates with a fixed seed (deterministic).
- Groups with fewer than `min_group_size` rows are shown but neither serve as reference nor get a ratio.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CI_LEVEL = 0.95
_MAX_DRAWS = 4_000_000  # bootstrap indices drawn at once at most (memory stays flat on large groups)


def _boot_means(rng: np.random.Generator, values: np.ndarray, n_boot: int) -> np.ndarray:
    """n_boot bootstrap means of `values` (rows: replicates; columns: the value's components)."""
    n = len(values)
    out = np.empty((n_boot, values.shape[1]))
    step = max(1, _MAX_DRAWS // max(n, 1))
    for a in range(0, n_boot, step):
        b = min(n_boot, a + step)
        idx = rng.integers(0, n, size=(b - a, n))
        out[a:b] = values[idx].mean(axis=1)
    return out


def _ci(x: np.ndarray) -> list[float | None]:
    x = x[np.isfinite(x)]
    if not len(x):
        return [None, None]
    lo, hi = np.quantile(x, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    return [float(lo), float(hi)]


def _smd(m_g, v_g, n_g, m_r, v_r, n_r):
    pooled = np.sqrt(((n_g - 1) * v_g + (n_r - 1) * v_r) / max(n_g + n_r - 2, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pooled > 0, (m_g - m_r) / pooled, 0.0)


def group_evidence(groups: pd.Series, favourable: np.ndarray, score: np.ndarray, min_group_size: int,
                   n_boot: int = 500, seed: int = 42) -> dict:
    """AIR and SMD with bootstrap CIs for each group of one attribute; see the module docstring."""
    groups = pd.Series(groups).astype(str).to_numpy(dtype=object)
    fav = np.asarray(favourable, dtype="float64")
    score = np.asarray(score, dtype="float64")
    names = sorted(set(groups.tolist()))
    rows = {}
    for g in names:
        m = groups == g
        rows[g] = {"group": g, "n": int(m.sum()), "favourable_rate": float(fav[m].mean()),
                   "mean_score": float(score[m].mean()), "sd_score": float(score[m].std(ddof=1)) if m.sum() > 1 else 0.0,
                   "assessed": bool(m.sum() >= min_group_size), "mask": m}
    assessed = [g for g in names if rows[g]["assessed"]]
    ref = max(assessed, key=lambda g: (rows[g]["favourable_rate"], -names.index(g))) if assessed else None
    rng = np.random.default_rng(seed)
    boot = {}
    for g in assessed:  # one set of replicates per group: the reference's replicates pair with every group's
        m = rows[g]["mask"]
        boot[g] = _boot_means(rng, np.column_stack([fav[m], score[m], score[m] ** 2]), n_boot)
    out = []
    for g in names:
        r = rows[g]
        rec = {k: v for k, v in r.items() if k != "mask"}
        rec.update({"air": None, "air_ci": [None, None], "smd": None, "smd_ci": [None, None]})
        if ref is not None and r["assessed"]:
            rr = rows[ref]
            fr = rr["favourable_rate"]
            rec["air"] = float(r["favourable_rate"] / fr) if fr > 0 else None
            rec["smd"] = float(_smd(r["mean_score"], r["sd_score"] ** 2, r["n"], rr["mean_score"],
                                    rr["sd_score"] ** 2, rr["n"]))
            bg, br = boot[g], boot[ref]
            with np.errstate(divide="ignore", invalid="ignore"):
                rec["air_ci"] = _ci(bg[:, 0] / br[:, 0])
            var_g = (bg[:, 2] - bg[:, 1] ** 2) * r["n"] / max(r["n"] - 1, 1)
            var_r = (br[:, 2] - br[:, 1] ** 2) * rr["n"] / max(rr["n"] - 1, 1)
            rec["smd_ci"] = _ci(_smd(bg[:, 1], var_g, r["n"], br[:, 1], var_r, rr["n"]))
        out.append(rec)
    airs = [r["air"] for r in out if r["air"] is not None]
    return {"reference": ref, "min_group_size": int(min_group_size), "n_boot": int(n_boot),
            "groups": out, "min_air": float(min(airs)) if airs else None}


def evidence_by_attribute(frame_groups: dict[str, pd.Series], outcomes: dict[str, np.ndarray], score: np.ndarray,
                          min_group_size: int, n_boot: int = 500, seed: int = 42) -> dict:
    """{outcome: {attribute: group_evidence}} for every outcome (e.g. "approval", "not suspended") and
    attribute; `outcomes` maps an outcome's name to the favourable flag of each row."""
    return {o: {a: group_evidence(g, fav, score, min_group_size, n_boot, seed) for a, g in frame_groups.items()}
            for o, fav in outcomes.items()}


def lowest_air(evidence: dict) -> tuple[float | None, str]:
    """The lowest AIR of any assessed group over every outcome and attribute, and where it is."""
    best, where = None, ""
    for o, by_attr in evidence.items():
        for a, ev in by_attr.items():
            for r in ev["groups"]:
                if r["air"] is not None and (best is None or r["air"] < best):
                    best, where = r["air"], f"{o}, {a} = {r['group']}"
    return best, where


def _codes(values: pd.Series, numeric: bool, bins: int = 10) -> np.ndarray:
    """Integer codes of a column for a contingency table: deciles of a number (ties merged), categories as
    they are; missing is a code of its own."""
    s = pd.Series(values).reset_index(drop=True)
    if numeric:
        num = pd.to_numeric(s, errors="coerce")
        edges = np.unique(np.nanquantile(num.to_numpy(dtype="float64"), np.linspace(0, 1, bins + 1)[1:-1])) \
            if num.notna().any() else np.array([])
        codes = np.searchsorted(edges, num.to_numpy(dtype="float64"), side="right")
        codes[num.isna().to_numpy()] = len(edges) + 1
        return codes
    return pd.factorize(s.astype(object).where(s.notna(), "\x00missing"), sort=True)[0]


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two integer-coded columns (0: independent, 1: one determines the other), without the
    bias correction: the plain statistic a reviewer recomputes from the contingency table."""
    table = pd.crosstab(a, b).to_numpy(dtype="float64")
    r, c = table.shape
    if min(r, c) < 2:
        return 0.0
    n = table.sum()
    expected = table.sum(axis=1, keepdims=True) @ table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * (min(r, c) - 1))))


def proxy_screen(frame: pd.DataFrame, features: list, protected: dict[str, pd.Series], threshold: float) -> dict:
    """How well each model feature tells each protected attribute: Cramér's V of the feature (deciles of a number,
    categories) against the attribute's group labels, on `frame`'s rows. A pair at or above `threshold` is
    flagged as a possible proxy. `features`: catalogue Features; `protected`: attribute -> group labels."""
    rows = []
    for f in features:
        fc = _codes(frame[f.name], f.type == "numeric")
        for attr, labels in protected.items():
            v = cramers_v(fc, _codes(labels, False))
            rows.append({"feature": f.name, "protected": attr, "cramers_v": round(v, 6), "flagged": v >= threshold})
    rows.sort(key=lambda r: (-r["cramers_v"], r["feature"], r["protected"]))
    return {"measure": "Cramér's V (numbers in deciles)", "threshold": threshold, "rows": int(len(frame)),
            "pairs": rows, "flagged": [r for r in rows if r["flagged"]]}
