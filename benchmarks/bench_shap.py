"""Throughput of exact TreeSHAP: creditgov.model.treeshap vs xgboost pred_contribs vs shap.TreeExplainer.

A 300-tree depth-5 binary model on synthetic data (20 features, some missing, one native
categorical). Prints rows/s of each, the speed-ups and the largest absolute difference against
pred_contribs, and writes the figures to benchmarks/results/shap.json.

    .venv/bin/python benchmarks/bench_shap.py [--trees 300] [--depth 5] [--rows 100000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

NTHREAD = 2


def make_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = {f"x{i:02d}": rng.normal(size=n) for i in range(19)}
    X = pd.DataFrame(cols)
    for i in (0, 3, 7, 11):
        X.loc[rng.random(n) < 0.15, f"x{i:02d}"] = np.nan
    cats = ["owner", "rent", "parents", "priv", "other", "ignore"]
    region = rng.choice(cats, size=n, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05]).astype(object)
    region[rng.random(n) < 0.05] = None
    X["home"] = pd.Categorical(region, categories=cats)
    effect = pd.Series(X["home"]).map({"owner": -0.8, "rent": 0.4, "parents": 0.2, "priv": -0.3,
                                       "other": 0.9, "ignore": 0.0}).astype(float).fillna(0.5).to_numpy()
    z = (0.9 * np.nan_to_num(X["x00"].to_numpy(), nan=1.0) - 0.7 * X["x01"] + 0.5 * X["x02"] * X["x04"]
         + 0.4 * np.sin(3 * X["x05"]) + effect + 0.3 * (X["x06"] > 0.5) - 1.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return X, y


def rate(fn, n_rows: int, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return n_rows / best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100_000, help="rows explained by FastTreeShap")
    ap.add_argument("--slow-rows", type=int, default=2_000, help="rows for pred_contribs and shap")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "shap.json"))
    args = ap.parse_args()

    import numba
    import shap
    import xgboost as xgb

    from creditgov.model.treeshap import FastTreeShap

    numba.set_num_threads(min(NTHREAD, numba.config.NUMBA_NUM_THREADS))
    X_train, y_train = make_data(20_000, seed=1)
    params = {"objective": "binary:logistic", "max_depth": args.depth, "eta": 0.05, "subsample": 0.8,
              "colsample_bytree": 0.8, "max_cat_to_onehot": 1, "nthread": NTHREAD, "seed": 0}
    t0 = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(X_train, y_train, enable_categorical=True), args.trees)
    train_s = time.perf_counter() - t0

    X_big, _ = make_data(args.rows, seed=2)
    X_slow = X_big.iloc[: args.slow_rows]

    t0 = time.perf_counter()
    explainer = FastTreeShap(booster)
    build_s = time.perf_counter() - t0  # includes numba compilation on a cold process
    explainer.shap_values(X_slow.iloc[:100])  # warm
    t0 = time.perf_counter()
    FastTreeShap(booster)
    cached_s = time.perf_counter() - t0

    fast_rate, fast_big = rate(lambda: explainer.shap_values(X_big), len(X_big))
    fast_small_rate, _ = rate(lambda: explainer.shap_values(X_slow), len(X_slow))

    def xgb_contribs():
        return booster.predict(xgb.DMatrix(X_slow, enable_categorical=True, nthread=NTHREAD), pred_contribs=True)

    xgb_rate, ref = rate(xgb_contribs, len(X_slow))

    # shap.TreeExplainer does not pass enable_categorical to its DMatrix: give it the codes
    X_codes = X_slow.copy()
    for col in X_codes.columns:
        if isinstance(X_codes[col].dtype, pd.CategoricalDtype):
            X_codes[col] = X_codes[col].cat.codes.astype("float64").where(X_codes[col].notna())
    shap_rate, shap_err, shap_note = None, None, None
    try:
        tree_explainer = shap.TreeExplainer(booster)
        shap_rate, sv = rate(lambda: tree_explainer.shap_values(X_codes), len(X_slow), repeat=1)
        shap_err = float(np.abs(np.asarray(sv, dtype=np.float64) - ref[:, :-1]).max())
        if getattr(tree_explainer.model, "model_type", "") == "xgboost":
            shap_note = ("shap.TreeExplainer (tree_path_dependent, no background data) delegates xgboost "
                         "models to booster.predict(pred_contribs=True); it is given categorical codes "
                         "because it builds its DMatrix without enable_categorical")
    except Exception as e:
        shap_note = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"

    fast_slow = fast_big[: len(X_slow)]
    max_diff = float(np.abs(fast_slow - ref).max())
    margin = booster.predict(xgb.DMatrix(X_big, enable_categorical=True, nthread=NTHREAD), output_margin=True)
    sum_diff = float(np.abs(fast_big.sum(axis=1) - margin).max())

    res = {
        "model": {"trees": args.trees, "max_depth": args.depth, "features": X_big.shape[1],
                  "categorical_features": 1, "objective": "binary:logistic", "train_seconds": round(train_s, 2)},
        "machine": {"cpus": os.cpu_count(), "threads": NTHREAD, "python": platform.python_version(),
                    "xgboost": xgb.__version__, "numba": numba.__version__, "shap": shap.__version__,
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "rows": {"fastshap": len(X_big), "pred_contribs": len(X_slow), "shap_tree_explainer": len(X_slow)},
        "rows_per_s": {"fastshap": round(fast_rate), "fastshap_2000_rows": round(fast_small_rate),
                       "pred_contribs": round(xgb_rate),
                       "shap_tree_explainer": None if shap_rate is None else round(shap_rate)},
        "speedup_vs_pred_contribs": round(fast_rate / xgb_rate, 1),
        "speedup_vs_shap": None if shap_rate is None else round(fast_rate / shap_rate, 1),
        "max_abs_diff_vs_pred_contribs": max_diff,
        "max_abs_diff_row_sum_vs_margin": sum_diff,
        "max_abs_diff_shap_vs_pred_contribs": shap_err,
        "shap_note": shap_note,
        "setup_seconds": {"first_build_incl_numba_compile": round(build_s, 2), "cached_build": round(cached_s, 4)},
    }
    print(f"model: {args.trees} trees, depth {args.depth}, {X_big.shape[1]} features; {NTHREAD} threads")
    print(f"FastTreeShap         {fast_rate:>10,.0f} rows/s  ({len(X_big):,} rows)")
    print(f"xgboost pred_contribs{xgb_rate:>10,.0f} rows/s  ({len(X_slow):,} rows)")
    if shap_rate is not None:
        print(f"shap.TreeExplainer   {shap_rate:>10,.0f} rows/s  ({len(X_slow):,} rows)")
    if shap_note:
        print(f"  note: {shap_note}")
    print(f"speed-up vs pred_contribs: {res['speedup_vs_pred_contribs']}x"
          + ("" if shap_rate is None else f", vs shap: {res['speedup_vs_shap']}x"))
    print(f"max |fast - pred_contribs| = {max_diff:.3g}; max |row sum - margin| = {sum_diff:.3g}")
    print(f"setup: first build {build_s:.2f}s (numba compile), cached {cached_s * 1e3:.1f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
