"""What a customer asks next: the smallest change that would have changed an adverse outcome.

Searched under the same model and the same policy (the full policy is re-applied to
every candidate, rules included), over the catalogue's actionable numeric features,
within their catalogue ranges, moving each only in a direction that can lower risk
(for features with a monotone direction) or both ways (others). Cost is the relative
change |new - old| / max(|old|, 1). Candidates lie on a grid from the current value to
the range bound: one-feature changes on a fine grid (`grid` steps) are tried first, then
pairs of features on a coarse grid (`pair_grid` steps). The answer is the cheapest
candidate that changes the outcome to a favourable one; ties go to the first feature in
catalogue order, then to the nearest grid point.

How the grid is searched (the answer is the same as scanning every grid point):

* A feature is *monotone* for the search when it has a monotone risk direction (so the
  model, trained with that monotone constraint, can only lower the PD as it moves that
  way), every derived feature that reads it moves, over the catalogue ranges, in a direction
  whose own monotone constraint agrees (Amount up -> Amount / Price up, constrained
  increasing; a divisor that may cross zero or an unconstrained derived feature: not
  monotone), the policy reads it only in that sense (no application rule names it; of the
  on-book fields only days past due and cumulative overdue days, falling, or clean months,
  rising), and the policy's favourable outcomes are downward-closed in PD
  (`policy.favourable_downward_closed`). Along such a feature the outcome, once
  favourable, stays favourable, so the first favourable grid point is found by bisection
  (about log2(grid) evaluations instead of `grid`), and only grid points cheaper than
  the best change found so far are considered.
* When every actionable feature is monotone, each row is first evaluated once with all of
  them at their bounds together: if even that does not change the outcome, no one- or
  two-feature change can, and the row is settled without further evaluations.
* Other features (no monotone direction, or read by a policy rule) are scanned on the
  full grid, both ways.

Partial by design: categorical actionable features are not searched, and the pair search
covers at most `max_pair_rows` rows, the first in batch order among those without a
one-feature change (the rest say so in their note). Deterministic: the same rows, model
and policy give the same answer, whatever else is in the batch, except that whether a
feature's grid is rounded to integers depends on all the batch's values of that feature
(`integral`: both decide engines pass the flags of the whole batch's valid rows).
"""
from __future__ import annotations

import ast
import itertools
from typing import Callable

import numpy as np
import pandas as pd

from creditgov.data import inputs
from creditgov.decision.policy import favourable_downward_closed, on_book_applies
from creditgov.spec import Feature, PipelineSpec, parse_expression

FAVOURABLE = {"decline": ("approve",), "cut": ("keep", "raise", "watch_reminder"),
              "suspend": ("keep", "raise", "restore", "watch_reminder"),
              "watch_freeze": ("keep", "raise", "watch_reminder"), "reprice": ("keep", "raise", "watch_reminder")}
GRID = 40  # one-feature candidates per feature and direction
PAIR_GRID = 6  # two-feature candidates per feature of a pair and direction
MAX_PAIR_ROWS = 2000  # rows of a batch (the first in batch order) that get the two-feature search
# up to this many rows (a served request's adverse rows), the screening and every grid point are evaluated in one
# call before each stage of the search, which is then answered from them (_Memo; the pair stage by position)
MEMO_ROWS = 16

# evaluate(row_idx, changes) -> (actions, pds): the outcome of rows[row_idx] with changes[col][k] applied
Evaluate = Callable[[np.ndarray, dict], tuple]


def _fractions(steps: int) -> np.ndarray:
    return np.arange(1, steps + 1) / steps


def _bound(f: Feature, direction: int) -> float:
    lo, hi = f.range
    return lo if direction < 0 else hi


def _is_integral(cur: np.ndarray) -> bool:
    return bool(np.all(np.isnan(cur) | (cur == np.round(cur))))


def _grid(f: Feature, cur: np.ndarray, direction: int, steps: int, integral: bool | None = None) -> np.ndarray:
    """rows x steps candidate values from the current value towards the range bound, nearest first."""
    bound = _bound(f, direction)
    vals = cur[:, None] + (bound - cur)[:, None] * _fractions(steps)[None, :]
    if integral is None:
        integral = _is_integral(cur)
    return np.round(vals) if integral else vals


def _grid_at(f: Feature, cur: np.ndarray, direction: int, steps: int, k: np.ndarray, integral: bool) -> np.ndarray:
    """The grid value of each row at its index k: the same numbers as _grid(...)[i, k[i]]."""
    bound = _bound(f, direction)
    vals = cur + (bound - cur) * _fractions(steps)[k]
    return np.round(vals) if integral else vals


def _cost(vals: np.ndarray, cur: np.ndarray) -> np.ndarray:
    return np.abs(vals - cur) / np.maximum(np.abs(cur), 1.0)


def _directions(f: Feature) -> list[int]:
    return [-1] if f.sign > 0 else [1] if f.sign < 0 else [-1, 1]


def actionable(spec: PipelineSpec) -> list[Feature]:
    return [f for f in spec.model_inputs if f.actionable and f.type == "numeric"]


def _interval(node, spec: PipelineSpec) -> tuple[float, float]:
    """Bounds of an expression's values over the catalogue ranges (a missing value aside)."""
    if isinstance(node, ast.Constant):
        return float(node.value), float(node.value)
    if isinstance(node, ast.Name):
        f = spec.feature(node.id)
        if f.derived is not None:
            return _interval(parse_expression(f.derived)[0], spec)
        return (float(f.range[0]), float(f.range[1])) if f.range else (-np.inf, np.inf)
    if isinstance(node, ast.UnaryOp):
        lo, hi = _interval(node.operand, spec)
        return (-hi, -lo) if isinstance(node.op, ast.USub) else (lo, hi)
    (a, b), (c, d) = _interval(node.left, spec), _interval(node.right, spec)
    with np.errstate(all="ignore"):
        if isinstance(node.op, ast.Add):
            return a + c, b + d
        if isinstance(node.op, ast.Sub):
            return a - d, b - c
        if isinstance(node.op, ast.Div):
            if c <= 0 <= d:
                return -np.inf, np.inf
            c, d = 1.0 / d, 1.0 / c
        prods = [x * y for x in (a, b) for y in (c, d)]
        prods = [0.0 if np.isnan(p) else p for p in prods]  # 0 * inf: a zero bound
        return min(prods), max(prods)


def _direction(node, x: str, spec: PipelineSpec) -> int | None:
    """How an expression moves as feature `x` grows, the others fixed: +1 (never falls), -1 (never rises), 0 (does
    not depend on x), None (either way, or through a divisor that may cross zero)."""
    if isinstance(node, ast.Constant):
        return 0
    if isinstance(node, ast.Name):
        if node.id == x:
            return 1
        f = spec.feature(node.id)
        return _direction(parse_expression(f.derived)[0], x, spec) if f.derived is not None else 0
    if isinstance(node, ast.UnaryOp):
        d = _direction(node.operand, x, spec)
        return None if d is None else (-d if isinstance(node.op, ast.USub) else d)
    dl, dr = _direction(node.left, x, spec), _direction(node.right, x, spec)
    if dl is None or dr is None:
        return None
    if isinstance(node.op, (ast.Add, ast.Sub)):
        dr = -dr if isinstance(node.op, ast.Sub) else dr
        return dl if dr == 0 else dr if dl == 0 else dl if dl == dr else None

    def sign(n) -> int | None:  # the sign of a factor that does not depend on x
        lo, hi = _interval(n, spec)
        return 1 if lo >= 0 else -1 if hi <= 0 else None

    if dl == 0 and dr == 0:
        return 0
    if isinstance(node.op, ast.Mult):
        if dl != 0 and dr != 0:
            return None
        moving, other = (dl, node.right) if dl != 0 else (dr, node.left)
        s = sign(other)
        return None if s is None else moving * s
    if dr == 0:  # x in the numerator: a divisor of fixed sign (a zero divisor: missing, whatever x is)
        s = sign(node.right)
        return None if s is None else dl * s
    if dl != 0:
        return None
    lo, hi = _interval(node.right, spec)  # x in the divisor only: it must stay on one side of zero
    s = sign(node.left)
    return None if s is None or not (lo > 0 or hi < 0) else -dr * s


def _derived_agree(f: Feature, spec: PipelineSpec) -> bool:
    """Does every derived model input that reads `f` move the model's risk the way `f`'s own direction says?
    (each constrained by its monotone direction in the model)"""
    for d in spec.model_inputs:
        if d.derived is None:
            continue
        way = _direction(parse_expression(d.derived)[0], f.name, spec)
        if way == 0:
            continue
        if way is None or d.sign == 0 or way * d.sign != f.sign:
            return False
    return True


def monotone_for_search(f: Feature, spec: PipelineSpec, on_book: bool) -> bool:
    """Can the outcome only improve as `f` moves in its risk-lowering direction? (see the module docstring)"""
    if f.sign == 0 or not _derived_agree(f, spec):
        return False
    pol = spec.policy
    if pol is None:
        return True
    if not favourable_downward_closed(pol, on_book):
        return False
    if any(r.when.feature == f.name for r in pol.rules):
        return False
    if on_book and pol.on_book is not None:
        fl = pol.on_book.fields
        if f.name in (fl.days_past_due, fl.cumulative_overdue_days):
            return f.sign > 0
        if f.name == fl.clean_months:
            return f.sign < 0
        if f.name in (fl.previous_pd, fl.fraud_signal, fl.suspended):
            return False
        ew = pol.on_book.early_warning
        if ew is not None and any(c.feature == f.name for s in ew.signals for c in s.when):
            return False  # a warning signal may read it either way (a band, a collapse)
    return True


_MONOTONE: dict[tuple[int, bool], tuple] = {}


def _monotone_table(spec: PipelineSpec, on_book: bool) -> tuple[list[Feature], dict[str, bool]]:
    """(actionable features, monotone_for_search of each), once per spec object and kind of row (specs are
    frozen; an entry holds its spec, so its id is not reused while cached): the expressions' directions and
    intervals are read from the catalogue alone, and a served decline's two searches asked for them each time."""
    got = _MONOTONE.get((id(spec), on_book))
    if got is None or got[0] is not spec:
        if len(_MONOTONE) >= 64:
            _MONOTONE.clear()
        feats = actionable(spec)
        got = _MONOTONE[(id(spec), on_book)] = (spec, feats, {f.name: monotone_for_search(f, spec, on_book)
                                                              for f in feats})
    return got[1], got[2]


def _current(rows: pd.DataFrame, spec: PipelineSpec) -> dict[str, np.ndarray]:
    """The actionable features' values, as the search reads them: pd.to_numeric(errors="coerce") as float64
    (inputs.numbers_of: numeric columns read from their arrays, without a Series each: the same values)."""
    return {f.name: inputs.numbers_of(rows, f.name) for f in actionable(spec)}


def integral_flags(rows: pd.DataFrame, spec: PipelineSpec) -> dict[str, bool]:
    """Per actionable feature: are all the (non-missing) values whole numbers? Decides grid rounding;
    a caller that splits a batch combines the parts' flags with `and`."""
    return {name: _is_integral(v) for name, v in _current(rows, spec).items()}


def frame_evaluator(rows: pd.DataFrame, outcome: Callable[[pd.DataFrame], tuple]) -> Evaluate:
    """Evaluate candidates by building their rows and calling outcome(frame) -> (actions, pds)."""
    rows = rows.reset_index(drop=True)

    def evaluate(row_idx: np.ndarray, changes: dict) -> tuple:
        trial = rows.iloc[row_idx].reset_index(drop=True)
        for col, vals in changes.items():
            trial[col] = vals
        actions, pds = outcome(trial)
        return np.asarray(actions, dtype=object), np.asarray(pds, dtype="float64")

    return evaluate


def evaluate_groups(evaluate: Evaluate, cur: dict[str, np.ndarray], groups: list[tuple[np.ndarray, dict]]) -> list:
    """(actions, PDs) of each group of candidates (row_idx, changes), all evaluated in ONE call: each group's
    columns changed and the other searched columns at the rows' current values (`cur`: what the search reads
    them as). The same numbers as a call per group: evaluate decides each candidate from its row and these
    values alone."""
    groups = [(np.asarray(r), ch) for r, ch in groups]
    if not any(len(r) for r, _ in groups):
        return [(np.empty(0, dtype=object), np.empty(0, dtype=np.float64)) for _ in groups]
    row_idx = np.concatenate([r for r, _ in groups])
    cols = sorted({c for _, ch in groups for c in ch})
    changes = {c: np.concatenate([np.broadcast_to(np.asarray(ch[c], dtype=np.float64), (len(r),)) if c in ch
                                  else cur[c][r] for r, ch in groups]) for c in cols}
    actions, pds = evaluate(row_idx, changes)
    pds = np.asarray(pds, dtype=np.float64)
    ends = np.cumsum([len(r) for r, _ in groups]).tolist()
    return [(actions[a:b], pds[a:b]) for a, b in zip([0] + ends[:-1], ends)]


class _Memo:
    """An Evaluate that answers candidates it was given beforehand and passes any other call on. The search of
    one row makes about seven calls a feature (a screening, a bisection's steps), each costing about the same
    whatever its size. `add` evaluates many such calls' candidates (groups of (row_idx, changes)) in ONE call,
    each group's columns changed and the other searched columns at the rows' current values (`cur`: what the
    search reads them as; evaluate decides each candidate from its row and these values alone), and answers
    each group's own candidates from a lookup afterwards: the same numbers in one call."""

    def __init__(self, evaluate: Evaluate, cur: dict[str, np.ndarray]):
        self.evaluate, self.cur = evaluate, cur
        self.known: dict = {}

    @staticmethod
    def _keys(row_idx: np.ndarray, changes: dict) -> list:
        # each candidate: its row and its changed values, bit for bit (NaN included)
        cols = tuple(sorted(changes))
        n = len(row_idx)
        bits = [np.broadcast_to(np.asarray(changes[c], dtype=np.float64), (n,)).view(np.int64).tolist() for c in cols]
        return list(zip(itertools.repeat(cols, n), np.asarray(row_idx).tolist(), *bits))

    def add(self, groups: list[tuple[np.ndarray, dict]]) -> None:
        groups = [(np.asarray(r), ch) for r, ch in groups if len(r)]
        for (r, ch), (actions, pds) in zip(groups, evaluate_groups(self.evaluate, self.cur, groups)):
            self.known.update(zip(self._keys(r, ch), zip(actions, pds)))

    def __call__(self, row_idx: np.ndarray, changes: dict) -> tuple:
        try:
            got = [self.known[k] for k in self._keys(row_idx, changes)]
        except KeyError:
            return self.evaluate(row_idx, changes)
        return (np.array([a for a, _ in got], dtype=object), np.array([p for _, p in got], dtype=np.float64))


class _Search:
    """The state of one search: the best change found so far for each row."""

    def __init__(self, rows: pd.DataFrame, adverse_action: np.ndarray, spec: PipelineSpec, evaluate: Evaluate):
        on_book = spec.policy is not None and on_book_applies(rows, spec.policy)
        feats, mono = _monotone_table(spec, on_book)
        self.feats, self.mono = list(feats), dict(mono)
        self.n = len(rows)
        self.evaluate = evaluate
        self.adverse = np.asarray(adverse_action, dtype=object)
        kinds = set(self.adverse.tolist())
        self.one_kind = next(iter(kinds)) if len(kinds) == 1 else None
        self.cur = _current(rows, spec)
        self.best_cost = np.full(self.n, np.inf)
        # the rank of each row's best (catalogue position x 2 + direction): of two changes that cost the same, the
        # one of the earlier feature (direction) wins, whatever order the features are searched in
        self.best_rank = np.full(self.n, np.iinfo(np.int64).max, dtype=np.int64)
        self.rank = 0
        self.best: list[dict | None] = [None] * self.n
        self.evaluations = 0

    def favourable(self, row_idx: np.ndarray, actions: np.ndarray) -> np.ndarray:
        if self.one_kind is not None:  # every searched row has the same adverse action (a served row's search)
            allowed = FAVOURABLE.get(self.one_kind, ())
            if len(actions) <= 64:  # set membership, as isin decides it for these strings, without its fixed cost
                return np.fromiter((a in allowed for a in actions.tolist()), dtype=bool, count=len(actions))
            return np.isin(actions, allowed)
        out = np.zeros(len(row_idx), dtype=bool)
        adv = self.adverse[row_idx]
        for a, allowed in FAVOURABLE.items():
            m = adv == a
            if m.any():
                out[m] = np.isin(actions[m], allowed)
        return out

    def run(self, row_idx: np.ndarray, changes: dict) -> tuple:
        self.evaluations += len(row_idx)
        actions, pds = self.evaluate(row_idx, changes)
        return self.favourable(row_idx, actions), actions, pds

    def better(self, row_idx, cost) -> np.ndarray:
        """Candidates of the current rank that would beat each row's best: cheaper, or as cheap and ranked
        earlier. `cost` is one value per row_idx, or a (rows, grid) matrix."""
        best = self.best_cost[row_idx]
        early = self.rank < self.best_rank[row_idx]
        if np.ndim(cost) == 2:
            best, early = best[:, None], early[:, None]
        return (cost < best) | ((cost == best) & early)

    def keep(self, row_idx, cost, actions, pds, changes, good) -> None:
        """Keep each row's cheapest success among these candidates (a row's candidates in grid order)."""
        for k in np.flatnonzero(good & self.better(row_idx, cost)):
            i = row_idx[k]
            if cost[k] < self.best_cost[i] or (cost[k] == self.best_cost[i] and self.rank < self.best_rank[i]):
                self.best_cost[i] = cost[k]
                self.best_rank[i] = self.rank
                self.best[i] = {"found": True, "cost": float(cost[k]), "action_after": str(actions[k]),
                                "pd_after": float(pds[k]),
                                "changes": [{"feature": col, "from": float(self.cur[col][i]), "to": float(v[k])}
                                            for col, v in changes.items()]}

    # ------------------------------------------------------------------ screening

    def hopeless(self, rows_idx: np.ndarray, outcome: tuple | None = None) -> np.ndarray:
        """Rows that no one- or two-feature change can flip: all monotone features at their bounds together
        do not (only when every actionable feature is monotone; else no row is screened out). `outcome`: the
        (actions, PDs) of that candidate, when already evaluated."""
        out = np.zeros(self.n, dtype=bool)
        if len(rows_idx) == 0 or not all(self.mono.values()):
            return out
        if outcome is None:
            good, _, _ = self.run(rows_idx, self.at_bounds(rows_idx))
        else:
            self.evaluations += len(rows_idx)
            good = self.favourable(rows_idx, outcome[0])
        out[rows_idx[~good]] = True
        return out

    def at_bounds(self, rows_idx: np.ndarray) -> dict:
        """The screening's candidate: every feature at the most extreme value any grid reaches (rounding included)."""
        changes = {}
        for f in self.feats:
            d = _directions(f)[0]
            b = _bound(f, d)
            z = min(b, float(np.round(b))) if d < 0 else max(b, float(np.round(b)))
            c = self.cur[f.name][rows_idx]
            changes[f.name] = np.where(np.isnan(c), c, z)
        return changes

    def remember(self, groups: list[tuple[np.ndarray, dict]]) -> None:
        """Evaluate these candidate groups in one call; the search's calls are answered from them (_Memo)."""
        memo = self.evaluate if isinstance(self.evaluate, _Memo) else _Memo(self.evaluate, self.cur)
        memo.add(groups)
        self.evaluate = memo

    def screening_and_grids(self, grid: int, integral: dict[str, bool]) -> list:
        """The screening's candidates (when it runs) and every one-feature grid point of every row."""
        groups = [(np.arange(self.n), self.at_bounds(np.arange(self.n)))] if all(self.mono.values()) else []
        for f in self.feats:
            cur = self.cur[f.name]
            valid = np.flatnonzero(~np.isnan(cur))
            for d in _directions(f):
                vals = _grid(f, cur[valid], d, grid, integral[f.name]).ravel()
                groups.append((np.repeat(valid, grid), {f.name: vals}))
        return groups

    def pair_grids(self, todo: np.ndarray, pair_grid: int) -> list:
        """Every pair of features and directions with rows to search, in search order: (fa, fb, a, b, rows),
        each row's grid points of the pair (`_pair_grid`)."""
        out = []
        for fa, fb in itertools.combinations(self.feats, 2):
            ok = todo[~np.isnan(self.cur[fa.name][todo]) & ~np.isnan(self.cur[fb.name][todo])]
            if len(ok) == 0:
                continue
            for da, db in itertools.product(_directions(fa), _directions(fb)):
                out.append((fa, fb, *self._pair_grid(fa, fb, da, db, ok, pair_grid)))
        return out

    def _pair_grid(self, fa: Feature, fb: Feature, da: int, db: int, ok: np.ndarray, pair_grid: int) -> tuple:
        """Every (a, b) combination of two features' grids, per row: the values of a and b and their rows."""
        va = _grid(fa, self.cur[fa.name][ok], da, pair_grid)
        vb = _grid(fb, self.cur[fb.name][ok], db, pair_grid)
        return (np.repeat(va, pair_grid, axis=1).ravel(), np.tile(vb, (1, pair_grid)).ravel(),
                np.repeat(ok, pair_grid * pair_grid))

    # ------------------------------------------------------------------ one feature

    def singles(self, grid: int, integral: dict[str, bool], skip: np.ndarray) -> None:
        # the bisected (monotone) features first: the cheap changes they find prune the grid scans of the
        # others (a scan scores every grid point cheaper than the best so far); ranks keep the catalogue's
        # tie-breaking, so the result is the one of a search in catalogue order
        order = sorted(range(len(self.feats)), key=lambda j: (not self.mono[self.feats[j].name], j))
        for j in order:
            f = self.feats[j]
            cur = self.cur[f.name]
            valid = np.flatnonzero(~np.isnan(cur) & ~skip)
            for k, d in enumerate(_directions(f)):
                self.rank = 2 * j + k
                if self.mono[f.name]:
                    self._bisect(f, d, valid, grid, integral[f.name])
                else:
                    self._scan(f, d, valid, grid, integral[f.name])

    def _scan(self, f: Feature, d: int, valid: np.ndarray, grid: int, integral: bool) -> None:
        c = self.cur[f.name][valid]
        vals = _grid(f, c, d, grid, integral)
        cost = _cost(vals, c[:, None])
        keep = self.better(valid, cost)  # dearer candidates can never win
        rows = np.repeat(valid, grid).reshape(len(valid), grid)[keep]
        if len(rows) == 0:
            return
        v, cst = vals[keep], cost[keep]
        good, actions, pds = self.run(rows, {f.name: v})
        self.keep(rows, cst, actions, pds, {f.name: v}, good)

    def _bisect(self, f: Feature, d: int, valid: np.ndarray, grid: int, integral: bool) -> None:
        c_all = self.cur[f.name]
        c = c_all[valid]
        # the costs rise along the grid: the last grid point cheaper than the best so far bounds the search
        cost = _cost(_grid(f, c, d, grid, integral), c[:, None])
        hi = self.better(valid, cost).sum(axis=1) - 1
        live = hi >= 0
        rows, hi = valid[live], hi[live]
        if len(rows) == 0:
            return
        vals = _grid_at(f, c_all[rows], d, grid, hi, integral)
        good, actions, pds = self.run(rows, {f.name: vals})
        rows, hi = rows[good], hi[good]
        act, pd_ = actions[good], pds[good]
        lo = np.full(len(rows), -1)  # index -1 is the row as it is: adverse
        while True:
            open_ = np.flatnonzero(hi - lo > 1)
            if len(open_) == 0:
                break
            mid = (lo[open_] + hi[open_]) // 2
            r = rows[open_]
            g, a, p = self.run(r, {f.name: _grid_at(f, c_all[r], d, grid, mid, integral)})
            yes, no = open_[g], open_[~g]
            hi[yes], act[yes], pd_[yes] = mid[g], a[g], p[g]
            lo[no] = mid[~g]
        vals = _grid_at(f, c_all[rows], d, grid, hi, integral)
        self.keep(rows, _cost(vals, c_all[rows]), act, pd_, {f.name: vals}, np.ones(len(rows), dtype=bool))

    # ------------------------------------------------------------------ two features

    def pairs(self, todo: np.ndarray, pair_grid: int, at_once: bool = False) -> None:
        """The two-feature search of `todo`. `at_once` (a few rows): the screening and every pair's grid points
        are evaluated in one call first (evaluate_groups), and the search reads each one's outcome by its
        position: the same outcomes its calls would get, in one evaluation instead of one per pair."""
        if len(todo) == 0 or len(self.feats) < 2:
            return
        grids = self.pair_grids(todo, pair_grid)
        screen = all(self.mono.values())
        known = None
        if at_once:
            known = evaluate_groups(self.evaluate, self.cur, ([(todo, self.at_bounds(todo))] if screen else []) +
                                    [(rows, {fa.name: a, fb.name: b}) for fa, fb, a, b, rows in grids])
        # rows no change can flip are not evaluated; they still count in the grids' rounding below
        hopeless = self.hopeless(todo, known.pop(0) if known is not None and screen else None)
        for k, (fa, fb, a, b, rows) in enumerate(grids):
            cost = _cost(a, self.cur[fa.name][rows]) + _cost(b, self.cur[fb.name][rows])
            keep = (cost < self.best_cost[rows]) & ~hopeless[rows]
            if not keep.any():
                continue
            rows, a, b, cost = rows[keep], a[keep], b[keep], cost[keep]
            if known is None:
                good, actions, pds = self.run(rows, {fa.name: a, fb.name: b})
            else:
                actions, pds = known[k][0][keep], known[k][1][keep]
                self.evaluations += len(rows)
                good = self.favourable(rows, actions)
            self.keep(rows, cost, actions, pds, {fa.name: a, fb.name: b}, good)


def no_actionable_note() -> dict:
    """The answer for every adverse row when the catalogue has no actionable numeric feature."""
    return {"found": False, "note": "no actionable numeric feature in the catalogue"}


def not_found_note(spec: PipelineSpec, capped: bool) -> dict:
    names = ", ".join(f.name for f in actionable(spec))
    if capped:
        return {"found": False, "note": f"no single change of {names} within the catalogue ranges changes "
                                        "this outcome; two-feature changes were not searched for this row "
                                        "(batch above the search cap)"}
    return {"found": False, "note": f"no change of the actionable features ({names}) within their "
                                    "catalogue ranges changes this outcome"}


def single_changes(rows: pd.DataFrame, adverse_action: np.ndarray, spec: PipelineSpec,
                   outcome: Callable | None = None, grid: int = GRID, *, evaluate: Evaluate | None = None,
                   integral: dict[str, bool] | None = None, memo: bool | None = None) -> list[dict | None]:
    """The cheapest one-feature change per row, or None (the first stage of `search`). `memo` (default: up to
    MEMO_ROWS rows) evaluates the screening and every grid point in one call first (_Memo: the same answer)."""
    rows = rows.reset_index(drop=True)
    s = _Search(rows, adverse_action, spec, evaluate or frame_evaluator(rows, outcome))
    if s.n == 0 or not s.feats:
        return [None] * s.n
    integral = integral if integral is not None else integral_flags(rows, spec)
    if s.n <= MEMO_ROWS if memo is None else memo:
        s.remember(s.screening_and_grids(grid, integral))
    skip = s.hopeless(np.arange(s.n))
    s.singles(grid, integral, skip)
    return s.best


def pair_changes(rows: pd.DataFrame, adverse_action: np.ndarray, spec: PipelineSpec,
                 outcome: Callable | None = None, pair_grid: int = PAIR_GRID, *,
                 evaluate: Evaluate | None = None, memo: bool | None = None) -> list[dict | None]:
    """The cheapest two-feature change per row, or None (the second stage of `search`, for rows that
    have no one-feature change; grid rounding is decided over these rows). `memo` (default: up to MEMO_ROWS
    rows): the screening and every pair's grid points evaluated in one call first (_Search.pairs' at_once)."""
    rows = rows.reset_index(drop=True)
    s = _Search(rows, adverse_action, spec, evaluate or frame_evaluator(rows, outcome))
    s.pairs(np.arange(s.n), pair_grid, at_once=s.n <= MEMO_ROWS if memo is None else memo)
    return s.best


def search(rows: pd.DataFrame, adverse_action: np.ndarray, spec: PipelineSpec,
           outcome: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]] | None = None, grid: int = GRID,
           pair_grid: int = PAIR_GRID, max_pair_rows: int = MAX_PAIR_ROWS, *, evaluate: Evaluate | None = None,
           integral: dict[str, bool] | None = None) -> list[dict]:
    """One result per row of `rows` (the adverse decisions): the cheapest outcome-changing change, or a note.

    `outcome(frame) -> (actions, pds)` scores candidate rows under the model and policy; or pass
    `evaluate(row_idx, changes) -> (actions, pds)`, which scores rows[row_idx] with the changed columns.
    """
    n = len(rows)
    if n == 0:
        return []
    if not actionable(spec):
        return [no_actionable_note() for _ in range(n)]
    rows = rows.reset_index(drop=True)
    evaluate = evaluate or frame_evaluator(rows, outcome)
    best = single_changes(rows, adverse_action, spec, grid=grid, evaluate=evaluate, integral=integral)
    todo = np.flatnonzero(np.array([b is None for b in best], dtype=bool))
    capped, todo = todo[max_pair_rows:], todo[:max_pair_rows]
    if len(todo):
        sub = rows.iloc[todo].reset_index(drop=True)

        def sub_evaluate(idx, changes, _map=todo):
            return evaluate(_map[idx], changes)

        for i, r in zip(todo, pair_changes(sub, np.asarray(adverse_action, dtype=object)[todo], spec,
                                           pair_grid=pair_grid, evaluate=sub_evaluate)):
            best[i] = r
    capped_set = set(capped.tolist())
    notes = {c: not_found_note(spec, c) for c in (False, True)}
    return [b if b is not None else dict(notes[i in capped_set]) for i, b in enumerate(best)]
