"""What a customer asks next: the smallest change that would have changed an adverse outcome.

Searched under the same model and the same policy (the full policy is re-applied to
every candidate, rules included), over the catalogue's actionable numeric features,
within their catalogue ranges, moving each only in a direction that can lower risk
(for features with a monotone direction) or both ways (others). Cost is the relative
change |new - old| / max(|old|, 1); one-feature changes are tried first, then pairs
on a coarser grid. Partial by design: categorical actionable features are not searched.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import pandas as pd

from creditgov.spec import Feature, PipelineSpec

FAVOURABLE = {"decline": ("approve",), "cut": ("keep", "raise"), "suspend": ("keep", "raise", "restore")}


def _moves(f: Feature, cur: np.ndarray, grid: int) -> list[np.ndarray]:
    """Candidate values per row (rows x grid) for each allowed direction."""
    lo, hi = f.range
    dirs = [-1] if f.sign > 0 else [1] if f.sign < 0 else [-1, 1]
    frac = np.arange(1, grid + 1) / grid
    out = []
    for d in dirs:
        bound = lo if d < 0 else hi
        vals = cur[:, None] + (bound - cur)[:, None] * frac[None, :]
        integral = np.all(np.isnan(cur) | (cur == np.round(cur)))
        out.append(np.round(vals) if integral else vals)
    return out


def search(rows: pd.DataFrame, adverse_action: np.ndarray, spec: PipelineSpec,
           outcome: Callable[[pd.DataFrame], np.ndarray], grid: int = 40, pair_grid: int = 10) -> list[dict | None]:
    """One result per row of `rows` (the adverse decisions): the cheapest outcome-changing change, or a note."""
    feats = [f for f in spec.model_inputs if f.actionable and f.type == "numeric"]
    n = len(rows)
    best: list[dict | None] = [None] * n
    if n == 0 or not feats:
        return [{"found": False, "note": "no actionable numeric feature in the catalogue"}] * n
    favourable = [FAVOURABLE.get(a, ()) for a in adverse_action]

    def evaluate(candidates: list[tuple[int, dict[str, float], float]]):
        if not candidates:
            return
        trial = rows.iloc[[c[0] for c in candidates]].reset_index(drop=True)
        for col in sorted({k for c in candidates for k in c[1]}):
            new = np.array([c[1].get(col, np.nan) for c in candidates])
            values = pd.to_numeric(trial[col], errors="coerce").to_numpy(dtype="float64").copy()
            values[~np.isnan(new)] = new[~np.isnan(new)]
            trial[col] = values
        actions, pds = outcome(trial)
        for k, (i, change, cost) in enumerate(candidates):
            if actions[k] in favourable[i] and (best[i] is None or cost < best[i]["cost"]):
                best[i] = {"found": True, "cost": float(cost), "action_after": str(actions[k]),
                           "pd_after": float(pds[k]),
                           "changes": [{"feature": c, "from": float(rows.iloc[i][c]), "to": float(v)}
                                       for c, v in change.items()]}

    cur = {f.name: pd.to_numeric(rows[f.name], errors="coerce").to_numpy(dtype="float64") for f in feats}
    moves = {f.name: _moves(f, cur[f.name], grid) for f in feats}
    single = []
    for f in feats:
        c = cur[f.name]
        for vals in moves[f.name]:
            for i in range(n):
                if np.isnan(c[i]):
                    continue
                for v in vals[i]:
                    if v != c[i]:
                        single.append((i, {f.name: float(v)}, abs(v - c[i]) / max(abs(c[i]), 1.0)))
    evaluate(single)

    todo = [i for i in range(n) if best[i] is None]
    if todo and len(feats) > 1:
        step = max(grid // pair_grid, 1)
        pairs = []
        for fa, fb in itertools.combinations(feats, 2):
            for va, vb in itertools.product(moves[fa.name], moves[fb.name]):
                for i in todo:
                    ca, cb = cur[fa.name][i], cur[fb.name][i]
                    if np.isnan(ca) or np.isnan(cb):
                        continue
                    for a in va[i][step - 1::step]:
                        for b in vb[i][step - 1::step]:
                            cost = abs(a - ca) / max(abs(ca), 1.0) + abs(b - cb) / max(abs(cb), 1.0)
                            pairs.append((i, {fa.name: float(a), fb.name: float(b)}, cost))
        evaluate(pairs)
    names = ", ".join(f.name for f in feats)
    return [b if b is not None else {"found": False, "note": f"no change of the actionable features ({names}) "
                                                           "within their catalogue ranges changes this outcome"}
            for b in best]
