"""The search for less discriminatory alternatives: candidate models on the same cross-validation folds.

Every candidate is fitted fold by fold on the folds train.cross_validate uses (StratifiedKFold of the development
rows with the split seed; inside each fold the training part split again for early stopping and calibration), so
each candidate has a PD for every development row from a model that never saw it (out-of-fold PDs). The job
(jobs/search.py) applies the policy to those PDs and compares groups (AIR, SMD); this module only fits and
measures AUC and KS, and chooses among measured candidates (`choose`, `alternatives`).

Candidates (spec `search`):
- baseline: the spec's own XGBoost parameters (its CV AUC is the training run's cv_auc_mean);
- hyperparameter variants: Optuna's TPE sampler with a fixed seed, `n_trials` trials maximising CV AUC;
- feature drops: the baseline without each input flagged as a proxy of a protected attribute (proxy screening),
  and without all of them;
- fairness-aware: reweighting (Kamiran & Calders: each row weighted P(group) P(outcome) / P(group, outcome), so
  that the protected groups and the target are independent in the weighted training rows) and fairlearn's
  ExponentiatedGradient under a demographic-parity constraint on the protected groups (a randomised mixture of
  models: measured, not registrable);
- the WOE scorecard (registrable: compiled into a ScorecardPD, model/scorecard_pd.py, with its own exact reasons).

Protected attributes are never model inputs here either: they only define the groups of the reweighting and of
the ExponentiatedGradient constraint, at fitting time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from creditgov.model.credit_model import encode, encodings_from_spec
from creditgov.model.metrics import auc, ks
from creditgov.model.scorecard import fit_scorecard
from creditgov.model.scorecard_pd import fit_scorecard_pd
from creditgov.model.train import fit_model, fit_platt, target_vector
from creditgov.spec import PipelineSpec

KINDS = ("baseline", "hyperparameters", "feature drop", "fairness-aware", "scorecard")
TUNED = ("learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "reg_lambda")
EG_ROUNDS = 150  # boosting rounds of each ExponentiatedGradient base model (no early stopping inside a reduction)
EG_MAX_ITER = 10  # ExponentiatedGradient iterations: each one fits a base model


@dataclass(frozen=True)
class Candidate:
    """One candidate model: XGBoost with `params` (spec.model overrides) on the inputs minus `drop`, optionally
    reweighted; or the ExponentiatedGradient reduction; or the scorecard."""

    name: str
    kind: str  # one of KINDS
    params: dict = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    method: str = "xgboost"  # xgboost | reweighting | expgrad | scorecard

    @property
    def registrable(self) -> bool:
        """creditgov can register it as the PD model (a CreditModel, or a ScorecardPD for the scorecard); the
        reduction's randomised mixture is measured only."""
        return self.method in ("xgboost", "reweighting", "scorecard")

    def describe(self) -> str:
        parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(self.params.items())]
        if self.drop:
            parts.append("without " + ", ".join(self.drop))
        if self.method == "reweighting":
            parts.append("reweighted (group x outcome)")
        if self.method == "expgrad":
            parts.append("fairlearn ExponentiatedGradient, demographic parity")
        if self.method == "scorecard":
            parts.append("WOE scorecard")
        return "; ".join(parts) or "spec parameters"


@dataclass
class Measured:
    """A candidate measured on the folds: fold AUC and KS, and the out-of-fold PD of every development row."""

    candidate: Candidate
    fold_auc: list[float]
    fold_ks: list[float]
    oof_pd: np.ndarray
    fairness: dict = field(default_factory=dict)  # filled by the job: min_air, max_smd, where, groups

    @property
    def auc(self) -> float:
        return float(np.mean(self.fold_auc))

    @property
    def ks(self) -> float:
        return float(np.mean(self.fold_ks))

    @property
    def min_air(self) -> float | None:
        return self.fairness.get("min_air")


def fit_spec(spec: PipelineSpec, cand: Candidate) -> PipelineSpec:
    """The spec a candidate's XGBoost model is fitted with: its parameters, its inputs (a dropped feature leaves
    the catalogue of the fit only; validation and decisions keep the full catalogue)."""
    update = {}
    if cand.params:
        update["model"] = spec.model.model_copy(update=cand.params)
    if cand.drop:  # the derived features that read a dropped feature go with it
        update["features"] = spec.without_features(cand.drop).features
    return spec.model_copy(update=update) if update else spec


def reweighting(groups: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kamiran-Calders weights: P(group) P(y) / P(group, y) for each row, so that group and target are
    independent in the weighted rows; a (group, y) cell that is empty gets no row, so no weight is undefined."""
    g = pd.Series(np.asarray(groups, dtype=object).astype(str))
    yy = pd.Series(np.asarray(y))
    n = len(g)
    p_g = g.map(g.value_counts() / n)
    p_y = yy.map(yy.value_counts() / n)
    joint = pd.Series(list(zip(g, yy)))
    p_gy = joint.map(joint.value_counts() / n)
    return (p_g * p_y / p_gy).to_numpy(dtype="float64")


def fit_candidate(train: pd.DataFrame, valid: pd.DataFrame, spec: PipelineSpec, cand: Candidate,
                  groups: pd.Series | None = None, n_estimators: int | None = None):
    """The candidate's registrable model (a CreditModel) fitted on `train`, early stopping and calibration on
    `valid`; `groups`: the protected group label of each row of `train` (reweighting). The scorecard (a
    ScorecardPD) is fitted on `train` and `valid` together, as on each fold's whole training part in `measure`."""
    if not cand.registrable:
        raise ValueError(f"candidate {cand.name} ({cand.method}) is not a registrable model")
    if cand.method == "scorecard":
        rows = pd.concat([train, valid])
        return fit_scorecard_pd(rows, target_vector(rows, spec), spec)
    weight = None
    if cand.method == "reweighting":
        weight = reweighting(groups.loc[train.index].to_numpy(), target_vector(train, spec))
    return fit_model(train, valid, fit_spec(spec, cand), n_estimators, weight)


def _expgrad_pd(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, spec: PipelineSpec,
                groups: pd.Series, n_estimators: int | None = None) -> np.ndarray:
    """fairlearn's ExponentiatedGradient (demographic parity on the protected groups) over monotone XGBoost
    base models; its randomised mixture's probability, Platt-calibrated on `valid` like every other candidate."""
    import xgboost as xgb  # heavy: only when a model is fitted
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient  # heavy: only in a search

    p = spec.model
    encs = encodings_from_spec(spec)
    base = xgb.XGBClassifier(
        n_estimators=min(EG_ROUNDS, n_estimators or EG_ROUNDS), learning_rate=p.learning_rate, max_depth=p.max_depth,
        min_child_weight=p.min_child_weight, subsample=p.subsample, colsample_bytree=p.colsample_bytree,
        reg_lambda=p.reg_lambda, random_state=p.seed, n_jobs=p.nthread, tree_method="hist",
        enable_categorical=True, monotone_constraints="(" + ",".join(str(e.monotone) for e in encs) + ")")
    eg = ExponentiatedGradient(base, DemographicParity(), max_iter=EG_MAX_ITER)
    eg.fit(encode(train, encs), target_vector(train, spec), sensitive_features=groups.loc[train.index].to_numpy())

    def logit(frame):
        q = np.clip(eg._pmf_predict(encode(frame, encs))[:, 1], 1e-6, 1 - 1e-6)
        return np.log(q / (1 - q))

    a, b = fit_platt(logit(valid), target_vector(valid, spec))
    return 1.0 / (1.0 + np.exp(-(a * logit(test) + b)))


def measure(dev: pd.DataFrame, spec: PipelineSpec, cand: Candidate, groups: pd.Series | None = None,
            n_estimators: int | None = None) -> Measured:
    """The candidate on the cross-validation folds of `dev` (the folds of train.cross_validate)."""
    y = target_vector(dev, spec)
    folds = StratifiedKFold(spec.evaluation.cv_folds, shuffle=True, random_state=spec.split.seed)
    val_share = spec.split.validation / (spec.split.train + spec.split.validation)
    oof = np.full(len(dev), np.nan)
    fa, fk = [], []
    for tr, te in folds.split(dev, y):
        fold_train, fold_test = dev.iloc[tr], dev.iloc[te]
        if cand.method == "scorecard":
            p = fit_scorecard(fold_train, y[tr], spec).predict_pd(fold_test)
        else:
            inner_tr, inner_va = train_test_split(fold_train, test_size=val_share, stratify=y[tr],
                                                  random_state=spec.split.seed)
            if cand.method == "expgrad":
                p = _expgrad_pd(inner_tr, inner_va, fold_test, fit_spec(spec, cand), groups, n_estimators)
            else:
                p = fit_candidate(inner_tr, inner_va, spec, cand, groups, n_estimators).predict_pd(fold_test)
        oof[te] = p
        fa.append(auc(y[te], p))
        fk.append(ks(y[te], p))
    return Measured(cand, fa, fk, oof)


def optuna_candidates(dev: pd.DataFrame, spec: PipelineSpec, n_trials: int,
                      n_estimators: int | None = None) -> list[Measured]:
    """`n_trials` hyperparameter variants chosen by Optuna's TPE sampler (seeded: the same trials every run),
    each measured on the folds; the objective is the CV AUC."""
    if n_trials <= 0:
        return []
    import optuna  # heavy: only in a search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: list[Measured] = []

    def objective(trial):
        params = {
            "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.2, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 6),
            "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 20.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 10.0, log=True),
        }
        params = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in params.items()}
        m = measure(dev, spec, Candidate(f"optuna-{trial.number + 1}", "hyperparameters", params), None,
                    n_estimators)
        out.append(m)
        return m.auc

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.split.seed))
    study.optimize(objective, n_trials=n_trials)
    return out


def candidates_list(spec: PipelineSpec, flagged: list[str]) -> list[Candidate]:
    """The candidates besides the Optuna trials, in the order they are measured and shown."""
    s = spec.search
    out = [Candidate("baseline", "baseline")]
    if s.feature_drop:
        inputs = {f.name for f in spec.model_inputs}
        flagged = [f for f in dict.fromkeys(flagged) if f in inputs]
        out += [Candidate(f"drop-{f}", "feature drop", drop=(f,)) for f in flagged]
        if len(flagged) > 1 and len(flagged) < len(inputs):
            out.append(Candidate("drop-all-proxies", "feature drop", drop=tuple(flagged)))
    if s.fairness_aware and spec.protected_features:
        out += [Candidate("reweighting", "fairness-aware", method="reweighting"),
                Candidate("expgrad-dp", "fairness-aware", method="expgrad")]
    if s.scorecard:
        out.append(Candidate("scorecard", "scorecard", method="scorecard"))
    return out


def tuned_reweighting(measured: list[Measured], spec: PipelineSpec) -> Candidate | None:
    """Reweighting with the hyperparameters of the best Optuna trial, when a trial beats the baseline: the
    reweighting candidate of candidates_list keeps the spec's parameters, so without this the search could only
    trade the tuned model's AUC for the reweighted one's AIR, never have both."""
    if not (spec.search.fairness_aware and spec.protected_features):
        return None
    tuned = [m for m in measured if m.candidate.kind == "hyperparameters"]
    base = next((m for m in measured if m.candidate.kind == "baseline"), None)
    if not tuned or base is None:
        return None
    best = max(tuned, key=lambda m: (m.auc, -tuned.index(m)))
    if best.auc <= base.auc:
        return None
    return Candidate(f"reweighting-{best.candidate.name}", "fairness-aware", params=dict(best.candidate.params),
                     method="reweighting")


def named(measured: list[Measured], chosen: Measured, why: list[str], name: str) -> tuple[Measured, list[str]]:
    """The registrable candidate `name`, which the trainer registers instead of the search's choice; `why`
    says so. KeyError (naming the registrable candidates) for any other name."""
    pool = {m.candidate.name: m for m in measured if m.candidate.registrable}
    if name not in pool:
        raise KeyError(f"not a registrable candidate of this search; candidates: {', '.join(pool)}")
    if pool[name] is chosen:
        return chosen, why
    return pool[name], [*why, f"the trainer named {name} instead (CV AUC {pool[name].auc:.4f}): its less "
                              "discriminatory alternatives stand in the promotion gate"]


def alternatives(measured: list[Measured], ref: Measured, auc_tolerance: float, air_margin: float,
                 registrable_only: bool = False) -> list[Measured]:
    """The less discriminatory alternatives to `ref`: candidates whose CV AUC is at least ref's minus
    `auc_tolerance` and whose lowest AIR is at least ref's plus `air_margin` (1e-12: displayed values count)."""
    if ref.min_air is None:
        return []
    return [m for m in measured if m is not ref and m.min_air is not None
            and (m.candidate.registrable or not registrable_only)
            and m.auc >= ref.auc - auc_tolerance - 1e-12 and m.min_air >= ref.min_air + air_margin - 1e-12]


def choose(measured: list[Measured], auc_tolerance: float, air_margin: float) -> tuple[Measured, list[str]]:
    """The registrable candidate to register, and why, step by step: start from the highest CV AUC; while a
    registrable candidate is a less discriminatory alternative to the current one, move to the alternative with
    the highest lowest-AIR (then AUC). Each move raises the lowest AIR by at least `air_margin`, so it ends; the
    chosen candidate has no registrable alternative (a measured-only one may remain: the promotion gate)."""
    pool = [m for m in measured if m.candidate.registrable]
    if not pool:
        raise ValueError("the search measured no registrable candidate")
    cur = max(pool, key=lambda m: (m.auc, -pool.index(m)))
    why = [f"{cur.candidate.name} has the highest CV AUC of the registrable candidates ({cur.auc:.4f})"]
    while True:
        alts = alternatives(pool, cur, auc_tolerance, air_margin)
        if not alts:
            break
        nxt = max(alts, key=lambda m: (m.min_air, m.auc, -pool.index(m)))
        why.append(f"{nxt.candidate.name} is within {auc_tolerance:g} of its CV AUC ({nxt.auc:.4f} vs "
                   f"{cur.auc:.4f}) and less discriminatory (lowest AIR {nxt.min_air:.3f} vs {cur.min_air:.3f})")
        cur = nxt
    return cur, why
