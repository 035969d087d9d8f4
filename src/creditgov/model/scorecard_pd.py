"""The WOE scorecard as a PD model the decision path serves: the same interface as CreditModel, exact reasons.

A fitted optbinning scorecard (model/scorecard.py) is compiled into plain numbers, stored as JSON (no pickle, no
optbinning needed to score): for each characteristic (model input) its bins and, for each value it can take (a
numeric bin, a catalogue category, missing), its log-odds contribution coef_j * WOE_j(x) exactly as optbinning's
predict_proba uses it (its WOE transform, missing and special values at WOE 0, a category unseen in training at
its mean WOE), and the logistic intercept. So

    log-odds(x) = intercept + sum_j coef_j * WOE_j(x_j),   PD = sigmoid(log-odds)

Points (pdo/odds scaling, optbinning's formula): points_j(x) = -(coef_j WOE_j(x) + intercept / n) * factor + offset / n,
factor = pdo / ln 2, offset = base_points - factor * ln(odds); the total score is offset - factor * log-odds, so a
higher score is a lower PD, and the PD is a function of the points alone.

Attributions (the classic adverse-action method, exact and additive): phi_j = coef_j WOE_j(x_j) minus its reference,
the smallest contribution characteristic j can give (its best value, the maximum points), so
phi_j = (max points_j - points_j(x)) / factor >= 0: the points below the maximum per characteristic in log-odds,
and base + sum(phi) = log-odds with base = intercept + sum_j min contribution_j. Ranking features by phi is ranking
them by points below the maximum; the decision path takes its reasons in that order (positive phi first), with
the catalogue's never-a-reason and protected rules applied as for any model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.model.credit_model import META_FILE, Encoding, encode, encodings_from_spec, sigmoid
from creditgov.model.scorecard import ScorecardModel, fit_scorecard
from creditgov.model.treeshap import UnsupportedModel
from creditgov.spec import PipelineSpec

FORMAT = "creditgov.ScorecardPD/1"
KIND = "scorecard"


class ScorecardPD:
    """A compiled WOE scorecard: `characteristics` (one dict per model input: kind, splits or categories, the
    contribution of each value and of missing), `intercept_`, `scaling` (pdo, odds, base_points)."""

    def __init__(self, encodings: list[Encoding], characteristics: list[dict], intercept: float, scaling: dict,
                 info: dict | None = None):
        self.encodings = list(encodings)
        if [c["name"] for c in characteristics] != [e.name for e in self.encodings]:
            raise ValueError("scorecard characteristics do not match the model's encodings")
        self.characteristics = [dict(c) for c in characteristics]
        self.intercept_ = float(intercept)
        self.scaling = {k: float(scaling[k]) for k in ("pdo", "odds", "base_points")}
        self.info = {"kind": KIND, **dict(info or {})}
        self._values = [np.asarray(c["contrib"] + [c["missing"]], dtype="float64") for c in self.characteristics]
        self._ref = np.array([v.min() for v in self._values])  # best value of each characteristic: max points

    @property
    def feature_names(self) -> list[str]:
        return [e.name for e in self.encodings]

    @property
    def factor(self) -> float:
        return self.scaling["pdo"] / np.log(2.0)

    @property
    def offset(self) -> float:
        return self.scaling["base_points"] - self.factor * np.log(self.scaling["odds"])

    # ------------------------------------------------------------------ scoring

    def _bin_index(self, raw: pd.DataFrame) -> np.ndarray:
        """[n, characteristics] index into each characteristic's values (its last value: missing)."""
        enc = encode(raw, self.encodings)  # validates columns and categories, names a bad column
        out = np.empty((len(raw), len(self.characteristics)), dtype=np.int64)
        for j, (c, e) in enumerate(zip(self.characteristics, self.encodings)):
            col = enc[e.name]
            if c["kind"] == "numeric":
                x = col.to_numpy(dtype="float64")
                idx = np.digitize(x, np.asarray(c["splits"], dtype="float64"), right=False)  # optbinning's binning
                miss = np.isnan(x)
            else:
                codes = (col.cat.codes.to_numpy() if e.kind == "categorical"
                         else np.nan_to_num(col.to_numpy(dtype="float64"), nan=-1).astype(np.int64))
                idx, miss = codes, codes < 0
            out[:, j] = np.where(miss, len(self._values[j]) - 1, idx)
        return out

    def contribution_matrix(self, raw: pd.DataFrame) -> np.ndarray:
        """coef_j * WOE_j(x_j) of each row and characteristic (log-odds)."""
        idx = self._bin_index(raw)
        return np.column_stack([v[idx[:, j]] for j, v in enumerate(self._values)]) if len(self._values) else \
            np.zeros((len(raw), 0))

    def log_odds(self, raw: pd.DataFrame) -> np.ndarray:
        return self.intercept_ + self.contribution_matrix(raw).sum(axis=1)

    def predict_pd(self, raw: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.log_odds(raw))

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        """The scorecard's log-odds are its own calibration: identity (the interface of CreditModel)."""
        return margin

    def points(self, raw: pd.DataFrame) -> np.ndarray:
        """Points of each row and characteristic (sum over characteristics: the score)."""
        n = len(self.characteristics)
        return -(self.contribution_matrix(raw) + self.intercept_ / n) * self.factor + self.offset / n

    def max_points(self) -> np.ndarray:
        n = len(self.characteristics)
        return -(self._ref + self.intercept_ / n) * self.factor + self.offset / n

    def score(self, raw: pd.DataFrame) -> np.ndarray:
        """The total score: offset - factor * log-odds."""
        return self.points(raw).sum(axis=1)

    def points_below_max(self, raw: pd.DataFrame) -> np.ndarray:
        """[n, characteristics]: the maximum points of each characteristic minus the row's points (>= 0)."""
        return self.max_points()[None, :] - self.points(raw)

    # ------------------------------------------------------------------ attributions

    def contributions(self, raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(phi[n, characteristics], base[n]): phi_j = contribution_j - its minimum = points below max / factor;
        base + phi.sum(axis=1) = log_odds(raw)."""
        phi = self.contribution_matrix(raw) - self._ref[None, :]
        return phi, np.full(len(raw), self.intercept_ + float(self._ref.sum()))

    def explain(self, raw: pd.DataFrame, *, matrix: bool = False) -> tuple:
        """(log_odds, phi, base) from one encoding of `raw`; with `matrix`, None after them (CreditModel.explain's
        tree matrix: a scorecard has none, see `matrix`)."""
        contrib = self.contribution_matrix(raw)
        phi = contrib - self._ref[None, :]
        out = (self.intercept_ + contrib.sum(axis=1), phi, np.full(len(raw), self.intercept_ + float(self._ref.sum())))
        return (*out, None) if matrix else out

    def matrix(self, raw: pd.DataFrame) -> np.ndarray:
        """No tree matrix: the counterfactual search builds candidate frames and calls predict_pd instead."""
        raise UnsupportedModel("a scorecard has no tree matrix")

    def margin_matrix(self, X: np.ndarray) -> np.ndarray:
        raise UnsupportedModel("a scorecard has no tree matrix")

    # ------------------------------------------------------------------ the table and storage

    def table(self) -> pd.DataFrame:
        """characteristic, bin, log-odds contribution, points, points below the maximum: the regulator's table."""
        rows = []
        n = len(self.characteristics)
        for c, vals, ref in zip(self.characteristics, self._values, self._ref):
            for label, v in zip(c["labels"] + ["missing"], vals):
                pts = -(v + self.intercept_ / n) * self.factor + self.offset / n
                rows.append({"characteristic": c["name"], "bin": label, "log_odds": float(v), "points": float(pts),
                             "points_below_max": float((v - ref) * self.factor)})
        return pd.DataFrame(rows)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "encodings": [e.to_json() for e in self.encodings],
                "characteristics": self.characteristics, "intercept": self.intercept_, "scaling": self.scaling,
                "info": self.info}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ScorecardPD":
        meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a stored scorecard (format {meta.get('format')!r})")
        encs = [Encoding(e["name"], e["kind"], tuple(e["categories"]), e["monotone"], e.get("expression"))
                for e in meta["encodings"]]
        return cls(encs, meta["characteristics"], meta["intercept"], meta["scaling"], meta.get("info"))


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def compile_scorecard(card: ScorecardModel, spec: PipelineSpec, sample: pd.DataFrame) -> ScorecardPD:
    """The fitted optbinning scorecard `card` as a ScorecardPD. Each value's contribution is read from optbinning's
    own WOE transform (the one its predict_proba uses) of a representative of that value, so the PDs are
    optbinning's; `sample`: one row of the training frame (the other columns of the representative rows)."""
    sc = card.scorecard_
    bp = sc.binning_process_
    coef = dict(zip(bp.variable_names, np.ravel(sc.estimator_.coef_)))
    encs = [e for e in encodings_from_spec(spec) if e.name in card.features]  # its characteristics
    by_name = {f.name: f for f in spec.model_inputs}
    base_row = card.prepare(sample.iloc[[0]])
    chars = []
    for e in encs:
        f = by_name[e.name]
        if f.type == "numeric" or e.name in card.ordinal:  # an ordinal: binned as its position (encode's codes)
            splits = [float(s) for s in np.asarray(bp.get_binned_variable(e.name).splits, dtype="float64")]
            reps = ([splits[0] - 1.0] + splits) if splits else [0.0]
            if e.name in card.ordinal:
                edges = [-np.inf] + splits + [np.inf]
                labels = [", ".join(c for i, c in enumerate(f.categories) if lo <= i < hi) or "-"
                          for lo, hi in zip(edges, edges[1:])]
            else:
                labels = ([f"< {_fmt(splits[0])}"] + [f"[{_fmt(a)}, {_fmt(b)})" for a, b in zip(splits, splits[1:])]
                          + [f">= {_fmt(splits[-1])}"]) if splits else ["all values"]
            kind = "numeric"
        else:
            splits, reps, labels, kind = [], list(f.categories), list(f.categories), "categorical"
        frame = pd.concat([base_row] * (len(reps) + 1), ignore_index=True)
        frame[e.name] = pd.Series(reps + [None], dtype="float64" if kind == "numeric" else object)
        woe = bp.transform(frame[bp.variable_names], metric="woe", metric_special=0,
                           metric_missing=0)[e.name].to_numpy(dtype="float64")
        contrib = (coef[e.name] * woe).tolist()
        chars.append({"name": e.name, "kind": kind, "splits": splits, "labels": labels,
                      "contrib": contrib[:-1], "missing": contrib[-1], "coef": float(coef[e.name])})
    s = spec.scorecard
    return ScorecardPD(encs, chars, float(np.ravel(sc.estimator_.intercept_)[0]),
                       {"pdo": s.pdo, "odds": s.odds, "base_points": s.base_points},
                       {"n_characteristics": len(chars), "method": "optbinning WOE + logistic regression"})


def fit_scorecard_pd(frame: pd.DataFrame, y: np.ndarray, spec: PipelineSpec) -> ScorecardPD:
    """The scorecard fitted on `frame` with targets `y` (train.target_vector), compiled: the registrable model."""
    return compile_scorecard(fit_scorecard(frame, y, spec), spec, frame)
