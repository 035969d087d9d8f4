"""The PD model as it is stored and served: an XGBoost booster plus a Platt calibration layer.

The calibration is logistic on the booster's margin (log-odds): PD = sigmoid(a * margin + b)
with a > 0. Because it is affine in log-odds, exact TreeSHAP attributions of the
margin scaled by `a` are exact attributions of the calibrated log-odds, so reasons
stay faithful to the probability the policy acts on. Stored as JSON files only
(xgboost's own JSON format, no pickle).

Margin and attributions come from one float64 computation over the same trees (creditgov.model.treeshap):
the margin is the float64 sum of the leaf values a row reaches, and the attributions add up to it
to float64 rounding, so base + sum(attributions) equals the log-odds the PD is computed from within
1e-9. (xgboost's predict and pred_contribs each accumulate in float32 and agree only to ~1e-6.) A
booster fastshap does not support (trees deeper than 12) falls back to xgboost for both, with a
FastShapFallbackWarning; additivity then holds to float32 precision (the 1e-4 decide checks).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.data.inputs import plain_columns
from creditgov.model.derived import evaluate as evaluate_expression, numeric_column
from creditgov.model.treeshap import FastShapFallbackWarning, FastTreeShap, UnsupportedModel
from creditgov.spec import PipelineSpec, parse_expression

BOOSTER_FILE = "booster.json"
META_FILE = "model.json"


@dataclass(frozen=True)
class Encoding:
    """How one catalogue feature becomes one model column."""

    name: str
    kind: str  # numeric | ordinal | categorical | derived
    categories: tuple[str, ...] = ()
    monotone: int = 0
    expression: str | None = None  # derived: the catalogue's arithmetic over other features (model.derived)

    def to_json(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "categories": list(self.categories), "monotone": self.monotone}
        if self.expression is not None:
            out["expression"] = self.expression
        return out


def encodings_from_spec(spec: PipelineSpec) -> list[Encoding]:
    out = []
    for f in spec.model_inputs:
        if f.derived is not None:
            out.append(Encoding(f.name, "derived", (), f.sign, f.derived))
        elif f.type == "numeric":
            out.append(Encoding(f.name, "numeric", (), f.sign))
        elif f.ordered:
            out.append(Encoding(f.name, "ordinal", tuple(f.categories), f.sign))
        else:
            out.append(Encoding(f.name, "categorical", tuple(f.categories), 0))
    return out


_CATEGORIES: dict[tuple, tuple[dict, pd.CategoricalDtype]] = {}


def _category_lookup(categories: tuple) -> tuple[dict, pd.CategoricalDtype]:
    """(category -> code, the dtype pd.Categorical(values, categories=list(categories)) has), once per catalogue."""
    got = _CATEGORIES.get(categories)
    if got is None:
        dtype = pd.Categorical([], categories=list(categories)).dtype
        got = _CATEGORIES[categories] = ({c: i for i, c in enumerate(categories)}, dtype)
    return got


def raw_columns(encodings: list[Encoding]) -> list[str]:
    """The raw columns `encode` reads: each encoded input column, and each derived feature's operands."""
    derived = {e.name for e in encodings if e.kind == "derived"}
    out = [e.name for e in encodings if e.kind != "derived"]
    for e in encodings:
        if e.kind == "derived":
            out += [n for n in parse_expression(e.expression)[1] if n not in derived]
    return list(dict.fromkeys(out))


def _derived_columns(raw: pd.DataFrame, encodings: list[Encoding], cols: dict) -> None:
    """The derived columns into `cols`, each evaluated once, after the derived columns it reads."""
    exprs = {e.name: e.expression for e in encodings if e.kind == "derived"}
    done: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if name in done:
            return done[name]
        if name in exprs:
            done[name] = evaluate_expression(exprs[name], value, len(raw))
            return done[name]
        if name in cols and isinstance(cols[name], np.ndarray) and cols[name].dtype == np.float64:
            return cols[name]
        return numeric_column(raw, name)

    for name in exprs:
        cols[name] = value(name)


def encode(raw: pd.DataFrame, encodings: list[Encoding]) -> pd.DataFrame:
    """Model columns from raw catalogue columns (derived features computed from them); never mutates `raw`."""
    return pd.DataFrame(encoded_columns(raw, encodings), index=raw.index)


def encoded_columns(raw: pd.DataFrame, encodings: list[Encoding]) -> dict:
    """encode's columns (name -> float64 array or pandas Categorical, in the model's order), before the frame
    is built (the trees read them directly: FastTreeShap.matrix_of)."""
    cols = {}
    plain = plain_columns(raw)
    for e in encodings:
        if e.kind == "derived":
            continue
        if e.name not in raw.columns:
            raise ValueError(f"column '{e.name}' is missing from the input")
        a = plain.get(e.name)  # the column's numpy values, or None: then its Series
        s = raw[e.name] if a is None else None
        if e.kind == "numeric":
            dtype = a.dtype if a is not None else s.dtype
            if dtype == np.float64:  # what to_numeric and astype would give: the values themselves
                cols[e.name] = a if a is not None else s.to_numpy()
                continue
            if isinstance(dtype, np.dtype) and dtype.kind in "iuf":  # to_numeric keeps these: numpy's cast
                cols[e.name] = (a if a is not None else s.to_numpy()).astype("float64")
                continue
            try:
                s = raw[e.name] if s is None else s
                cols[e.name] = pd.to_numeric(s, errors="raise").astype("float64").to_numpy()
            except (TypeError, ValueError) as exc:  # a served row's column must be named, not just its value
                raise ValueError(f"column '{e.name}' is not numeric: {exc}") from None
            continue
        # (a numpy column's to_numpy(dtype=object, copy=True) is numpy's own conversion)
        values = np.array(a, dtype=object, copy=True) if a is not None else s.to_numpy(dtype=object, copy=True)
        missing = pd.isna(values)
        values[missing] = None
        unknown = sorted({str(v) for v in values[~missing].tolist()} - set(e.categories))
        if unknown:
            raise ValueError(f"column '{e.name}' has categories {unknown[:3]} not in the catalogue")
        # the codes pd.Categorical(values, categories=e.categories) finds (equality lookup; missing -> -1),
        # without its per-call inference (~1 ms a column for a served row)
        index, dtype = _category_lookup(e.categories)
        codes = np.fromiter((index.get(v, -1) for v in values.tolist()), dtype=np.int64, count=len(values))
        cat = pd.Categorical.from_codes(codes, dtype=dtype, validate=False)
        if e.kind == "ordinal":
            codes = cat.codes.astype("float64")
            codes[codes < 0] = np.nan
            cols[e.name] = codes
        else:
            cols[e.name] = cat
    if any(e.kind == "derived" for e in encodings):
        _derived_columns(raw, encodings, cols)
        cols = {e.name: cols[e.name] for e in encodings}  # the model's column order
    return cols


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class CreditModel:
    """Calibrated XGBoost PD model. Learned state: booster_, calib_a_, calib_b_."""

    def __init__(self, booster, encodings: list[Encoding], calib_a: float, calib_b: float, info: dict | None = None):
        if not calib_a > 0:
            raise ValueError(f"calibration slope must be > 0 to keep the score's direction, got {calib_a}")
        self.booster_ = booster
        self.encodings = list(encodings)
        self.calib_a_ = float(calib_a)
        self.calib_b_ = float(calib_b)
        self.info = dict(info or {})

    @property
    def feature_names(self) -> list[str]:
        return [e.name for e in self.encodings]

    def dmatrix(self, raw: pd.DataFrame):
        import xgboost as xgb  # heavy: only for models fastshap does not support

        return xgb.DMatrix(encode(raw, self.encodings), enable_categorical=True, nthread=self.info.get("nthread", 2))

    def _trees(self):
        """The booster compiled by fastshap (FastTreeShap), or None when fastshap does not support it."""
        if getattr(self, "_trees_of", None) is not self.booster_:
            try:
                trees = FastTreeShap(self.booster_)
            except UnsupportedModel as exc:
                warnings.warn(f"FastTreeShap does not support this model ({exc}); using xgboost's predict and "
                              "pred_contribs, whose sums agree only to float32 precision",
                              FastShapFallbackWarning, stacklevel=3)
                trees = None
            self._trees_cache, self._trees_of = trees, self.booster_
        return self._trees_cache

    def margin_matrix(self, X: np.ndarray) -> np.ndarray:
        """margin() of rows already encoded into the float32 matrix the trees read (FastTreeShap.matrix)."""
        trees = self._trees()
        if trees is None:
            return self.booster_.inplace_predict(X, predict_type="margin").astype("float64")
        return trees.margin(X)

    def margin_changed(self, X: np.ndarray, base: np.ndarray, changes: dict[int, np.ndarray]) -> np.ndarray:
        """margin_matrix() of the candidate rows X[base] with columns changed (`changes`: column -> one value per
        candidate, converted to float32 as the matrix holds them; a changed raw column's derived columns must be
        among the changes, see `derived_updater`, so the grouping below sees every column that moved). Candidates of the same base row whose changed
        values lie between the same split thresholds of every tree reach the same leaves, so each such group is
        built and scored once: the same float64 sums, bit for bit, for a fraction of the copies and tree walks
        (the counterfactual search's grids put many candidates between two thresholds)."""
        rows = np.asarray(base, dtype=np.int64)
        n = len(rows)
        values = {j: np.broadcast_to(np.asarray(v, dtype=np.float32), (n,)) for j, v in changes.items()}

        def build(pick):
            M = X[rows[pick]]
            for j, v in values.items():
                M[:, j] = v[pick]
            return M

        trees = self._trees()
        if trees is None or n < 2:
            return self.margin_matrix(build(slice(None)))
        key = rows.copy()
        span = int(key.max(initial=0)) + 1
        for j, x in values.items():
            points = trees.split_points(j)
            if points is None or span * (len(points) + 2) >= 1 << 62:
                return self.margin_matrix(build(slice(None)))
            k = np.searchsorted(points, x, side="right").astype(np.int64)
            k[np.isnan(x)] = len(points) + 1  # missing: the default direction at every split
            key = key * (len(points) + 2) + k
            span *= len(points) + 2
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        if len(uniq) > 0.8 * n:
            return self.margin_matrix(build(slice(None)))
        return self.margin_matrix(build(first))[inverse.ravel()]

    def derived_updater(self, raw: pd.DataFrame):
        """update(row_idx, changes) -> {derived feature: its values} for the candidate rows raw[row_idx] with raw
        columns changed (`changes`: column -> one float64 value per candidate): the derived features that read a
        changed column (directly or through another derived feature), evaluated as `encode` evaluates them, so a
        candidate matrix with these columns set is the matrix of the changed rows, bit for bit. {} when no derived
        feature reads a changed column."""
        exprs = {e.name: e.expression for e in self.encodings if e.kind == "derived"}
        reads = {name: set(parse_expression(x)[1]) for name, x in exprs.items()}

        def closure(name: str) -> set[str]:
            out = set()
            for op in reads.get(name, ()):
                out |= {op} | closure(op)
            return out

        reads = {name: closure(name) for name in exprs}
        base: dict[str, np.ndarray] = {}

        def update(row_idx: np.ndarray, changes: dict) -> dict[str, np.ndarray]:
            hit = [name for name in exprs if reads[name] & set(changes)]
            if not hit:
                return {}
            n = len(row_idx)
            done: dict[str, np.ndarray] = {}

            def value(name: str) -> np.ndarray:
                if name in changes:
                    return np.broadcast_to(np.asarray(changes[name], dtype=np.float64), (n,))
                if name in done:
                    return done[name]
                if name in exprs:
                    done[name] = evaluate_expression(exprs[name], value, n)
                    return done[name]
                if name not in base:
                    base[name] = numeric_column(raw, name)
                return base[name][row_idx]

            return {name: value(name) for name in hit}

        return update

    def margin(self, raw: pd.DataFrame) -> np.ndarray:
        """Uncalibrated log-odds: the base margin plus the float64 sum of the leaf values each row reaches."""
        trees = self._trees()
        if trees is None:
            return self.booster_.predict(self.dmatrix(raw), output_margin=True).astype("float64")
        return trees.margin(trees.matrix_of(encoded_columns(raw, self.encodings)))

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated log-odds of booster margins: the one place the calibration is applied (scoring and the
        counterfactual search's candidate evaluator both call it)."""
        return self.calib_a_ * margin + self.calib_b_

    def log_odds(self, raw: pd.DataFrame) -> np.ndarray:
        return self.calibrate(self.margin(raw))

    def predict_pd(self, raw: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.log_odds(raw))

    def contributions(self, raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Exact TreeSHAP attributions of the calibrated log-odds: (phi[n, features], base[n]).

        base + phi.sum(axis=1) equals log_odds(raw) within 1e-9 (see the module docstring)."""
        # exact TreeSHAP from the same trees as margin(), ~50x faster than xgboost's pred_contribs (which
        # agrees within 1e-5); pred_contribs only for a model fastshap does not support
        trees = self._trees()
        if trees is None:
            contrib = self.booster_.predict(self.dmatrix(raw), pred_contribs=True).astype("float64")
        else:
            contrib = trees.shap_values(trees.matrix_of(encoded_columns(raw, self.encodings)))
        phi = contrib[:, :-1] * self.calib_a_  # the calibration is affine: attributions scale by its slope
        return phi, self.calibrate(contrib[:, -1])

    def matrix(self, raw: pd.DataFrame) -> np.ndarray:
        """The float32 matrix the trees read for `raw` (FastTreeShap.matrix of the encoded columns), with the
        model's compiled trees (built once per booster); UnsupportedModel when fastshap cannot compile it."""
        trees = self._trees()
        if trees is None:
            raise UnsupportedModel("fastshap does not support this model")
        return trees.matrix_of(encoded_columns(raw, self.encodings))

    def explain(self, raw: pd.DataFrame, *, matrix: bool = False) -> tuple:
        """(log_odds(raw), *contributions(raw)), the same numbers, with `raw` encoded once, not twice; with
        `matrix`, also the float32 matrix they were computed from (`matrix(raw)`; None when fastshap does not
        support the model), which the counterfactual search reuses rather than encoding its rows again."""
        trees = self._trees()
        if trees is None:
            out = (self.log_odds(raw), *self.contributions(raw))
            return (*out, None) if matrix else out
        X = trees.matrix_of(encoded_columns(raw, self.encodings))
        contrib = trees.shap_values(X)
        out = (self.calibrate(trees.margin(X)), contrib[:, :-1] * self.calib_a_, self.calibrate(contrib[:, -1]))
        return (*out, X) if matrix else out

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(directory / BOOSTER_FILE))
        meta = {
            "format": "creditgov.CreditModel/1",
            "encodings": [e.to_json() for e in self.encodings],
            "calibration": {"method": "platt-on-margin", "a": self.calib_a_, "b": self.calib_b_},
            "info": self.info,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "CreditModel":
        import xgboost as xgb  # heavy: only when a model is loaded

        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        booster = xgb.Booster()
        booster.load_model(str(directory / BOOSTER_FILE))
        encs = [Encoding(e["name"], e["kind"], tuple(e["categories"]), e["monotone"], e.get("expression"))
                for e in meta["encodings"]]
        cal = meta["calibration"]
        return cls(booster, encs, cal["a"], cal["b"], meta.get("info"))
