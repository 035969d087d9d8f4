"""Split, fit the calibrated XGBoost PD model, and cross-validate it beside the scorecard.

Pure steps: each takes frames and spec sections and returns new objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.model_selection import StratifiedKFold, train_test_split

from creditgov.model.metrics import auc
from creditgov.model.credit_model import CreditModel, encode, encodings_from_spec
from creditgov.model.scorecard import fit_scorecard
from creditgov.spec import ModelParams, PipelineSpec, Split


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    method: str  # stratified | out-of-time

    def sizes(self) -> dict:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def target_vector(frame: pd.DataFrame, spec: PipelineSpec) -> np.ndarray:
    return frame[spec.target.column].isin(spec.target.bad_values).astype("int8").to_numpy()


def split(frame: pd.DataFrame, spec: PipelineSpec) -> Splits:
    """Stratified train / validation / test; out-of-time test when the source has a date column."""
    cfg: Split = spec.split
    y = target_vector(frame, spec)
    date_col = spec.source.date_column
    if date_col:
        dates = pd.to_datetime(frame[date_col])
        order = np.argsort(dates.to_numpy(), kind="stable")
        n_test = int(round(len(frame) * cfg.test))
        test = frame.iloc[order[len(frame) - n_test:]]
        dev = frame.iloc[order[: len(frame) - n_test]]
        method = "out-of-time"
    else:
        dev, test = train_test_split(frame, test_size=cfg.test, stratify=y, random_state=cfg.seed)
        method = "stratified"
    val_share = cfg.validation / (cfg.train + cfg.validation)
    train, val = train_test_split(dev, test_size=val_share, stratify=target_vector(dev, spec), random_state=cfg.seed)
    return Splits(train, val, test, method)


def _xgb_params(p: ModelParams, monotone: list[int]) -> dict:
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "learning_rate": p.learning_rate,
        "max_depth": p.max_depth,
        "min_child_weight": p.min_child_weight,
        "subsample": p.subsample,
        "colsample_bytree": p.colsample_bytree,
        "reg_lambda": p.reg_lambda,
        "seed": p.seed,
        "nthread": p.nthread,
        "monotone_constraints": "(" + ",".join(str(m) for m in monotone) + ")",
    }


def fit_platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic recalibration of the margin: log-odds = a * margin + b, by maximum likelihood."""
    def nll(theta):
        z = theta[0] * margin + theta[1]
        return float(np.sum(np.logaddexp(0.0, z) - y * z))

    def grad(theta):
        r = 1.0 / (1.0 + np.exp(-(theta[0] * margin + theta[1]))) - y
        return np.array([np.sum(r * margin), np.sum(r)])

    res = minimize(nll, x0=np.array([1.0, 0.0]), jac=grad, method="BFGS")
    return float(res.x[0]), float(res.x[1])


def fit_model(train: pd.DataFrame, valid: pd.DataFrame, spec: PipelineSpec,
              n_estimators: int | None = None, weight: np.ndarray | None = None) -> CreditModel:
    """XGBoost with the catalogue's monotone constraints, early stopping and Platt calibration on `valid`.
    `weight`: a weight per training row (the reweighting candidate of model/search.py), None: equal weights."""
    import xgboost as xgb  # heavy: only when a model is fitted

    p = spec.model
    encs = encodings_from_spec(spec)
    params = _xgb_params(p, [e.monotone for e in encs])
    dtrain = xgb.DMatrix(encode(train, encs), label=target_vector(train, spec), weight=weight,
                         enable_categorical=True, nthread=p.nthread)
    dvalid = xgb.DMatrix(encode(valid, encs), label=target_vector(valid, spec), enable_categorical=True, nthread=p.nthread)
    rounds = n_estimators or p.n_estimators
    booster = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "validation")],
                        early_stopping_rounds=min(p.early_stopping_rounds, rounds), verbose_eval=False)
    best = int(booster.best_iteration)
    booster = booster[: best + 1]  # keep only the trees early stopping chose
    info = {"best_iteration": best, "n_trees": best + 1, "params": params, "nthread": p.nthread}
    # calibrated on the margin scoring will use (CreditModel.margin: float64 leaf sums), not xgboost's float32 one
    margin = CreditModel(booster, encs, 1.0, 0.0, info).margin(valid)
    a, b = fit_platt(margin, target_vector(valid, spec))
    return CreditModel(booster, encs, a, b, info)


def cross_validate(dev: pd.DataFrame, spec: PipelineSpec, n_estimators: int | None = None,
                   xgboost: bool = True) -> dict:
    """k-fold AUC of the XGBoost model and of the scorecard on the same folds of the development data.

    Inside each fold the training part is split again for early stopping and calibration,
    exactly as in the main fit. `xgboost` False: the scorecard's only (a registered scorecard: "xgb" is then []).
    """
    y = target_vector(dev, spec)
    folds = StratifiedKFold(spec.evaluation.cv_folds, shuffle=True, random_state=spec.split.seed)
    xgb_auc, sc_auc = [], []
    val_share = spec.split.validation / (spec.split.train + spec.split.validation)
    for tr, te in folds.split(dev, y):
        fold_train, fold_test = dev.iloc[tr], dev.iloc[te]
        if xgboost:
            inner_tr, inner_va = train_test_split(fold_train, test_size=val_share, stratify=y[tr],
                                                  random_state=spec.split.seed)
            model = fit_model(inner_tr, inner_va, spec, n_estimators)
            xgb_auc.append(auc(y[te], model.predict_pd(fold_test)))
        card = fit_scorecard(fold_train, y[tr], spec)
        sc_auc.append(auc(y[te], card.predict_pd(fold_test)))
    return {"xgb": xgb_auc, "scorecard": sc_auc}
