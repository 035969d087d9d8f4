"""What a customer asks next: the smallest change that would have changed an adverse outcome.

Searched under the same model and the same policy (the full policy is re-applied to
every candidate, rules included), over the catalogue's actionable numeric features,
within their catalogue ranges, moving each only in a direction that can lower risk
(for features with a monotone direction) or both ways (others). Cost is the relative
change |new - old| / max(|old|, 1); one-feature changes are tried first on a fine grid,
then pairs of features on a coarse grid. Partial by design: categorical actionable
features are not searched, and the pair search covers at most `max_pair_rows` rows
(the rest say so in their note).
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import pandas as pd

from creditgov.spec import Feature, PipelineSpec

FAVOURABLE = {"decline": ("approve",), "cut": ("keep", "raise"), "suspend": ("keep", "raise", "restore")}


def _grid(f: Feature, cur: np.ndarray, direction: int, steps: int) -> np.ndarray:
    """rows x steps candidate values from the current value towards the range bound, nearest first."""
    lo, hi = f.range
    bound = lo if direction < 0 else hi
    vals = cur[:, None] + (bound - cur)[:, None] * (np.arange(1, steps + 1) / steps)[None, :]
    integral = np.all(np.isnan(cur) | (cur == np.round(cur)))
    return np.round(vals) if integral else vals


def _directions(f: Feature) -> list[int]:
    return [-1] if f.sign > 0 else [1] if f.sign < 0 else [-1, 1]


def search(rows: pd.DataFrame, adverse_action: np.ndarray, spec: PipelineSpec,
           outcome: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]], grid: int = 40,
           pair_grid: int = 6, max_pair_rows: int = 2000) -> list[dict]:
    """One result per row of `rows` (the adverse decisions): the cheapest outcome-changing change, or a note."""
    feats = [f for f in spec.model_inputs if f.actionable and f.type == "numeric"]
    n = len(rows)
    if n == 0:
        return []
    if not feats:
        return [{"found": False, "note": "no actionable numeric feature in the catalogue"}] * n
    rows = rows.reset_index(drop=True)
    ok_actions = [set(FAVOURABLE.get(a, ())) for a in adverse_action]
    cur = {f.name: pd.to_numeric(rows[f.name], errors="coerce").to_numpy(dtype="float64") for f in feats}
    best_cost = np.full(n, np.inf)
    best: list[dict | None] = [None] * n

    def try_batch(row_idx: np.ndarray, changes: dict[str, np.ndarray]):
        """Evaluate candidates (row_idx[k] with changes[col][k]) and keep each row's cheapest success."""
        if len(row_idx) == 0:
            return
        trial = rows.iloc[row_idx].reset_index(drop=True)
        cost = np.zeros(len(row_idx))
        for col, vals in changes.items():
            trial[col] = vals
            c = cur[col][row_idx]
            cost += np.abs(vals - c) / np.maximum(np.abs(c), 1.0)
        actions, pds = outcome(trial)
        good = np.array([a in ok_actions[i] for a, i in zip(actions, row_idx)])
        for k in np.flatnonzero(good & (cost < best_cost[row_idx])):
            i = row_idx[k]
            if cost[k] < best_cost[i]:
                best_cost[i] = cost[k]
                best[i] = {"found": True, "cost": float(cost[k]), "action_after": str(actions[k]),
                           "pd_after": float(pds[k]),
                           "changes": [{"feature": col, "from": float(cur[col][i]), "to": float(v[k])}
                                       for col, v in changes.items()]}

    for f in feats:
        valid = np.flatnonzero(~np.isnan(cur[f.name]))
        for d in _directions(f):
            vals = _grid(f, cur[f.name][valid], d, grid)
            try_batch(np.repeat(valid, grid), {f.name: vals.ravel()})

    todo = np.flatnonzero(np.isinf(best_cost))
    capped = todo[max_pair_rows:]
    todo = todo[:max_pair_rows]
    if len(todo) and len(feats) > 1:
        for fa, fb in itertools.combinations(feats, 2):
            ok = todo[~np.isnan(cur[fa.name][todo]) & ~np.isnan(cur[fb.name][todo])]
            for da, db in itertools.product(_directions(fa), _directions(fb)):
                va = _grid(fa, cur[fa.name][ok], da, pair_grid)
                vb = _grid(fb, cur[fb.name][ok], db, pair_grid)
                # every (a, b) combination per row: rows x grid x grid
                a = np.repeat(va, pair_grid, axis=1).ravel()
                b = np.tile(vb, (1, pair_grid)).ravel()
                try_batch(np.repeat(ok, pair_grid * pair_grid), {fa.name: a, fb.name: b})
    names = ", ".join(f.name for f in feats)
    out = []
    capped_set = set(capped.tolist())
    for i in range(n):
        if best[i] is not None:
            out.append(best[i])
        elif i in capped_set:
            out.append({"found": False, "note": f"no single change of {names} within the catalogue ranges changes "
                                                "this outcome; two-feature changes were not searched for this row "
                                                "(batch above the search cap)"})
        else:
            out.append({"found": False, "note": f"no change of the actionable features ({names}) within their "
                                                "catalogue ranges changes this outcome"})
    return out
