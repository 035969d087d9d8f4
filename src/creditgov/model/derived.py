"""Derived features: the values of a catalogue feature's `derived` expression ("Amount / Price").

One evaluator for every consumer: the model's encoding (credit_model.encode, so batch decide, serve, the
counterfactual search, replay and the scorecard see the same numbers), the reference profile and the
monitor (`with_derived`), and the decision page. The expression is the tree `spec.parse_expression`
checked (arithmetic over feature names and numbers only), walked here with float64 numpy: no Python `eval`.
A zero divisor or a missing operand gives NaN (xgboost's missing branch); so does an overflow to +-inf.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from typing import Callable

import numpy as np
import pandas as pd

from creditgov.data.inputs import column_values
from creditgov.spec import PipelineSpec, derived_order, parse_expression


def numeric_column(raw: pd.DataFrame, name: str) -> np.ndarray:
    """A raw numeric catalogue column as float64 (the conversion the model's encoding makes)."""
    if name not in raw.columns:
        raise ValueError(f"column '{name}' is missing from the input")
    v = column_values(raw, name)  # (the Series' array, without the Series)
    if isinstance(v, np.ndarray) and v.dtype == np.float64:
        return v
    if isinstance(v, np.ndarray) and v.dtype.kind in "iuf":
        return v.astype("float64")
    try:
        return pd.to_numeric(raw[name], errors="raise").astype("float64").to_numpy()
    except (TypeError, ValueError) as exc:  # a served row's column must be named, not just its value
        raise ValueError(f"column '{name}' is not numeric: {exc}") from None


def evaluate(expression: str, value: Callable[[str], np.ndarray], n: int) -> np.ndarray:
    """float64 values of `expression` for n rows; `value(name)` gives an operand's float64 column."""
    with np.errstate(all="ignore"):  # (once per expression, not per operation: the same values)
        out = np.array(_compiled(expression)(value, n), dtype="float64", copy=True)
    out[~np.isfinite(out)] = np.nan
    return out


@lru_cache(maxsize=1024)  # (as spec.parse_expression: a catalogue holds a handful of expressions)
def _compiled(expression: str) -> Callable:
    """The checked tree of `expression` as nested closures (value, n) -> float64 values, built once per text:
    each node does what a walk of the tree does at that node (the same numpy operations, in the same order),
    without parsing the text or testing node types again on every call. Called under np.errstate(all="ignore")
    (`evaluate`): a zero divisor, an overflow are no warnings."""
    return _node(parse_expression(expression)[0])


def _node(node) -> Callable:
    if isinstance(node, ast.Constant):
        c = float(node.value)
        return lambda value, n: np.full(n, c)
    if isinstance(node, ast.Name):
        name = node.id
        return lambda value, n: np.asarray(value(name), dtype="float64")
    if isinstance(node, ast.UnaryOp):
        inner = _node(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda value, n: -inner(value, n)
        return inner
    left, right = _node(node.left), _node(node.right)
    op = node.op

    if isinstance(op, ast.Add):
        return lambda value, n: left(value, n) + right(value, n)
    if isinstance(op, ast.Sub):
        return lambda value, n: left(value, n) - right(value, n)
    if isinstance(op, ast.Mult):
        return lambda value, n: left(value, n) * right(value, n)

    def divide(value, n):
        a, b = left(value, n), right(value, n)
        return np.where(b == 0, np.nan, a / np.where(b == 0, 1.0, b))

    return divide


def derived_values(raw: pd.DataFrame, expressions: dict[str, str]) -> dict[str, np.ndarray]:
    """{name: values} of derived features (`expressions`, each after the derived features it reads) over raw
    catalogue columns."""
    done: dict[str, np.ndarray] = {}
    for name, expr in expressions.items():
        done[name] = evaluate(expr, lambda op: done[op] if op in done else numeric_column(raw, op), len(raw))
    return done


def with_derived(frame: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    """`frame` with the spec's derived features as columns (a copy; `frame` itself when it has none)."""
    order = derived_order(spec.features)
    if not order:
        return frame
    values = derived_values(frame, {f.name: f.derived for f in order})
    return frame.assign(**{k: pd.Series(v, index=frame.index) for k, v in values.items()})
