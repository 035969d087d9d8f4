"""The training job: spec -> load -> validate -> split -> train + evaluate -> register.

Each stage is a pure step from the modules it names; this module only wires them
together and writes what they return to disk and to MLflow.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

import creditgov
from creditgov import __version__, progress
from creditgov.data import inputs as data
from creditgov.explain import importance as explain
from creditgov.model import metrics
from creditgov.governance import inventory, modelcard
from creditgov.model import monotonic
from creditgov.governance import registry
from creditgov.model import train
from creditgov.data import validate
from creditgov.governance import gates as gates_mod
from creditgov.model.credit_model import CreditModel
from creditgov.model.derived import with_derived
from creditgov.monitor.reference import build_profile
from creditgov.report import charts
from creditgov.model.scorecard import ScorecardModel, fit_scorecard
from creditgov.model.scorecard_pd import ScorecardPD, compile_scorecard
from creditgov.model.stored import model_kind as kind_of
from creditgov.spec import PipelineSpec
from creditgov.model.train import Splits
from creditgov.data.validate import Validated
from creditgov.data import privacy
from creditgov.decision.decide import with_previous_pd
from creditgov.decision.policy import apply_policy, on_book_applies
from creditgov.model import fairness
from creditgov.model import search
from creditgov.jobs import search as search_job
from creditgov.spec import LEGAL_BASES
from creditgov.errors import SpecError, UsageError
from creditgov.governance.promote import SEARCH_TAG


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    version: str
    metrics: dict
    gates: list
    quarantine_path: Path
    card_json: dict


def validate_input(spec: PipelineSpec, data_path: str | None = None) -> Validated:
    """Load and validate a training batch (its target included); the quarantine file is written."""
    loaded = data.load(spec, data_path)
    return validate.validate_batch(loaded.frame, spec, loaded.label, target_required=True,
                                   quarantine_dir=spec.validation.quarantine_dir)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def importance_chart(importance: pd.DataFrame, spec: PipelineSpec) -> str:
    """The model card's global importance bars (mean |SHAP|, log-odds), each feature by its label and column."""
    names = {f.name: f"{f.label.en} ({f.name})" if f.label else f.name for f in spec.features}
    items = [(names.get(str(r.feature), str(r.feature)), float(r.mean_abs_shap)) for r in importance.itertuples()]
    return charts.bars(items, "Global SHAP importance (mean |attribution|, log-odds)", "mean |SHAP| (log-odds)",
                       fmt="{:.3f}", label_chars=72)  # a derived feature's label and column in full


def _versions() -> dict:
    out = {"creditgov": __version__}
    for pkg in ("xgboost", "optbinning", "mlflow", "great-expectations", "pandas", "numpy", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Evaluation:
    """Both models fitted on one split and measured on the same test rows (evaluate_models)."""

    splits: Splits
    model: CreditModel | ScorecardPD  # the model registered: XGBoost, or the scorecard compiled (model_kind)
    scorecard: ScorecardModel
    metrics: dict  # {"xgboost": metrics.evaluate(...), "scorecard": metrics.evaluate(...)} on the test rows
    calibration: pd.DataFrame  # the model's calibration table on the test rows
    psi_train_test: float
    cv: dict  # {"xgb": [fold AUC], "scorecard": [fold AUC]} (train.cross_validate)
    monotonicity: dict  # monotonic.check_monotonicity of the model
    train_hash: str  # content hash of the development rows (train + validation)
    p_test: np.ndarray  # model PDs of the test rows
    p_card: np.ndarray  # scorecard PDs of the test rows
    comparison: dict | None  # test metrics of the model without spec.evaluation.compare_without
    fairness: dict | None = None  # fair_lending_evidence on the test rows ({} when the spec has no policy)
    legal_basis: dict | None = None  # {feature: monotonic.elderly_check} for protected inputs with a legal basis
    proxies: dict | None = None  # fairness.proxy_screen of the model inputs against the protected attributes

    @property
    def dev(self) -> pd.DataFrame:
        """The development rows: train + validation."""
        return pd.concat([self.splits.train, self.splits.validation])

    def flat_metrics(self) -> dict:
        """The run's metrics, as logged to MLflow and read by the gates."""
        out = {}
        for prefix, m in (("test", self.metrics["xgboost"]), ("scorecard_test", self.metrics["scorecard"])):
            for k, val in m.items():
                if np.isfinite(val):
                    out[f"{prefix}_{k}"] = float(val)
        if self.comparison:
            for k in ("auc", "auc_ci_low", "auc_ci_high", "gini", "ks"):
                out[f"test_without_{k}"] = float(self.comparison[k])
        for name, aucs in self.cv.items():
            prefix = "cv_auc" if name == "xgb" else "scorecard_cv_auc"
            out[f"{prefix}_mean"] = float(np.mean(aucs))
            out[f"{prefix}_sd"] = float(np.std(aucs, ddof=1))
        out["psi_train_test"] = float(self.psi_train_test)
        out["monotonicity_violations"] = int(sum(r["violations"] for r in self.monotonicity.values()))
        if "n_trees" in self.model.info:  # a registered scorecard has characteristics, not trees
            out["n_trees"] = int(self.model.info["n_trees"])
        if self.proxies:
            out["proxy_max_cramers_v"] = float(max(r["cramers_v"] for r in self.proxies["pairs"]))
            out["proxies_flagged"] = len(self.proxies["flagged"])
        if self.legal_basis:
            out["legal_basis_violations"] = int(sum(r["violations"] for r in self.legal_basis.values()))
        if self.fairness:
            prot = set(self.fairness["protected"])
            low, _ = fairness.lowest_air({o: {a: e for a, e in by.items() if a in prot}
                                          for o, by in self.fairness["outcomes"].items()})
            if low is not None:
                out["fair_min_air"] = float(low)
            for o, by_attr in self.fairness["outcomes"].items():
                for a, ev in by_attr.items():
                    for r in ev["groups"]:
                        if r["air"] is not None:
                            key = _metric_key(f"fair_{o}_{a}_{r['group']}")
                            out[key + "_air"] = float(r["air"])
                            out[key + "_smd"] = float(r["smd"])
        return out


def _metric_key(text: str) -> str:
    """An MLflow metric name from free text (group labels such as "<25" or "62+")."""
    text = text.replace("<", "lt").replace("+", "plus")
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in text)


def fairness_outcomes(spec: PipelineSpec, frame: pd.DataFrame, p: np.ndarray) -> dict[str, np.ndarray]:
    """The favourable outcome of each row under the spec's policy, per outcome compared across groups: approval
    for applications; for accounts on book, not being suspended and not being cut (each adverse on-book action
    on its own)."""
    frame = with_previous_pd(frame, spec, None)  # no previous review at training: the risk-rise trigger is idle
    actions = apply_policy(frame, p, spec.policy, rules_triggered=False)["action"].to_numpy()
    if on_book_applies(frame, spec.policy):
        return {"not_suspended": actions != "suspend", "not_cut": actions != "cut"}
    return {"approval": actions == "approve"}


def proxy_screen(spec: PipelineSpec, dev: pd.DataFrame) -> dict:
    """Each model input against each protected attribute's group labels on the development rows
    (fairness.proxy_screen); {} when the catalogue marks nothing protected."""
    prot = [f for f in spec.protected_features if f.name in dev.columns]
    if not prot:
        return {}
    labels = {f.name: privacy.group_labels(f, dev[f.name]) for f in prot}
    return fairness.proxy_screen(with_derived(dev, spec), spec.model_inputs, labels,
                                 spec.evaluation.proxy_max_cramers_v)


def fair_lending_evidence(spec: PipelineSpec, frame: pd.DataFrame, p: np.ndarray) -> dict:
    """AIR and SMD with bootstrap CIs by protected group (and the policy's other fairness groups) on `frame`
    (the test rows) with PDs `p`: {"outcomes": {outcome: {attribute: fairness.group_evidence}}, ...}."""
    if spec.policy is None or not spec.fairness_groups:
        return {}
    groups = {}
    for name in spec.fairness_groups:
        if name in frame.columns:
            f = spec.feature(name)
            groups[name] = (privacy.group_labels(f, frame[name]) if f.protected
                            else frame[name].astype(object).where(frame[name].notna(), privacy.MISSING_GROUP))
    outcomes = fairness_outcomes(spec, frame, p)
    n_boot = min(spec.evaluation.bootstrap, 500)
    ev = fairness.evidence_by_attribute(groups, outcomes, p, spec.policy.fairness.min_group_size, n_boot,
                                        spec.split.seed)
    return {"outcomes": ev, "protected": [f.name for f in spec.protected_features],
            "rows": int(len(frame)), "on": "test split", "score": "PD",
            "min_group_size": spec.policy.fairness.min_group_size, "n_boot": n_boot}


SEARCH_BOOT = 100  # bootstrap replicates of each candidate's AIR / SMD in the search (the frontier shows points)


def protected_evidence(spec: PipelineSpec, frame: pd.DataFrame, p: np.ndarray) -> dict:
    """{outcome: {protected attribute: fairness.group_evidence}} of the policy applied to PDs `p` on `frame`:
    each search candidate's fair-lending figures (jobs/search.py); {} without a policy or protected features."""
    prot = [f for f in spec.protected_features if f.name in frame.columns]
    if spec.policy is None or not prot:
        return {}
    groups = {f.name: privacy.group_labels(f, frame[f.name]) for f in prot}
    return fairness.evidence_by_attribute(groups, fairness_outcomes(spec, frame, p), p,
                                          spec.policy.fairness.min_group_size, SEARCH_BOOT, spec.split.seed)


def evaluate_models(v: Validated, n_estimators: int | None = None,
                    steps: progress.Task = progress.OFF, searched: search_job.SearchResult | None = None,
                    model_kind: str = "xgboost") -> Evaluation:
    """Fit both models on the same split and measure them on the same test rows. `steps`: the training
    job's progress (TRAINING_STEPS). `searched`: the search's result; the model fitted is then its chosen
    candidate, and the cross-validation AUCs are the search's (the same folds). `model_kind` "scorecard" (or a
    search that chose the scorecard): the model registered is the scorecard, fitted on the development rows and
    compiled (model/scorecard_pd.py); its CV AUCs are the scorecard's."""
    spec = v.spec
    steps.step("fit")
    splits = train.split(v.outcome.clean, spec)
    dev = pd.concat([splits.train, splits.validation])
    if searched is not None and searched.chosen.candidate.method == "scorecard":
        model_kind = "scorecard"
    model = None
    if model_kind != "scorecard":
        if searched is None:
            model = train.fit_model(splits.train, splits.validation, spec, n_estimators)
        else:
            model = search.fit_candidate(splits.train, splits.validation, spec, searched.chosen.candidate,
                                         searched.groups, n_estimators)
    steps.step("scorecard")
    card = fit_scorecard(dev, train.target_vector(dev, spec), spec)
    if model is None:
        model = compile_scorecard(card, spec, dev)  # the same fit: its PDs are the challenger's own

    steps.step("evaluate")
    seed, n_boot = spec.split.seed, spec.evaluation.bootstrap
    y_test = train.target_vector(splits.test, spec)
    p_test = model.predict_pd(splits.test)
    p_card = card.predict_pd(splits.test)
    m_xgb = metrics.evaluate(y_test, p_test, n_boot=n_boot, seed=seed)
    m_card = metrics.evaluate(y_test, p_card, n_boot=n_boot, seed=seed)
    calib = metrics.calibration_table(y_test, p_test, spec.evaluation.calibration_bins)
    psi = metrics.psi(model.predict_pd(splits.train), p_test)
    steps.step("cross-validation")
    if searched is not None and searched.scorecard is not None:
        cv = {"xgb": list(searched.chosen.fold_auc), "scorecard": list(searched.scorecard.fold_auc)}
    else:
        cv = train.cross_validate(dev, spec, n_estimators, xgboost=model_kind != "scorecard")
        if searched is not None:
            cv["xgb"] = list(searched.chosen.fold_auc)
        elif model_kind == "scorecard":
            cv["xgb"] = list(cv["scorecard"])  # "xgb": the registered model's folds

    steps.step("checks")
    comparison = None
    if spec.evaluation.compare_without:
        # same split, same parameters, fewer features: what do the left-out features add?
        drop = set(spec.evaluation.compare_without)
        reduced = spec.without_features(drop)  # with the derived features that read a left-out feature
        small = train.fit_model(splits.train, splits.validation, reduced, n_estimators)
        comparison = metrics.evaluate(y_test, small.predict_pd(splits.test), n_boot=n_boot, seed=seed)

    sample = dev.sample(min(spec.evaluation.monotonicity_sample, len(dev)), random_state=seed)
    mono = monotonic.check_monotonicity(model, sample, spec.evaluation.monotonicity_grid)
    legal = {f.name: monotonic.elderly_check(model, sample, f.name, LEGAL_BASES[f.legal_basis]["elderly_age"],
                                             f.range)
             for f in spec.protected_features if f.legal_basis is not None}
    fair = fair_lending_evidence(spec, splits.test, p_test)
    proxies = proxy_screen(spec, dev)
    return Evaluation(splits=splits, model=model, scorecard=card, metrics={"xgboost": m_xgb, "scorecard": m_card},
                      calibration=calib, psi_train_test=psi, cv=cv, monotonicity=mono,
                      train_hash=data.content_hash(dev), p_test=p_test, p_card=p_card, comparison=comparison,
                      fairness=fair, legal_basis=legal, proxies=proxies)


def _card(v: Validated, ev: Evaluation, importance: pd.DataFrame, gates: list, run_id: str, version: str,
          spec_path: str, trainer: str = "") -> dict:
    spec, summary = v.spec, v.outcome.summary()
    imp = dict(zip(importance["feature"], importance["mean_abs_shap"]))
    clean_y = v.outcome.clean[spec.target.column].isin(spec.target.bad_values)
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": spec.registry.model_name, "version": version, "run_id": run_id,
                  **_model_description(ev.model)},
        "intended_use": spec.model_card.intended_use,
        "limitations": list(spec.model_card.limitations),
        "data": {"source": v.label, "rows_in": summary["rows_in"], "rows_clean": summary["rows_clean"],
                 "rows_quarantined": summary["rows_quarantined"], "bad_rate": float(clean_y.mean()),
                 "split_method": ev.splits.method, "split": ev.splits.sizes(), "split_seed": spec.split.seed,
                 "target": f"{spec.target.column} = " + " or ".join(map(str, spec.target.bad_values)),
                 "ignored_columns": summary["ignored_columns"]},
        "lineage": {"train_data_hash": ev.train_hash, "input_data_hash": v.input_hash,
                    "spec_path": spec_path, "spec_hash": spec.content_hash,
                    "suite_path": spec.validation.suite,
                    "suite_hash": _sha256_text(json.dumps(v.suite, sort_keys=True)),
                    "git_commit": _git_commit()},
        "metrics": ev.metrics,
        "cv": {"folds": spec.evaluation.cv_folds,
               **{("xgboost" if k == "xgb" else k): {"mean": float(np.mean(a)), "sd": float(np.std(a, ddof=1)),
                                                    "folds": [float(x) for x in a]} for k, a in ev.cv.items()}},
        "psi_train_test": float(ev.psi_train_test),
        "comparison": ({"without": list(spec.evaluation.compare_without), "metrics": ev.comparison}
                       if ev.comparison else None),
        "calibration": ev.calibration.to_dict("records"),
        "monotonicity": ev.monotonicity,
        "features": [{"name": f.name, "description": f.description, "type": f.type, "monotone": f.monotone,
                      "actionable": f.actionable, "personal": f.personal, "protected": f.protected,
                      "legal_basis": f.legal_basis,
                      "importance": float(imp[f.name]) if f.name in imp else None,
                      "reason_en": f.reason.en, "reason_zh": f.reason.zh,
                      "label_en": f.label.en if f.label else None, "unit": f.unit,
                      "never_a_reason": f.never_a_reason, "bureau": f.bureau, "derived": f.derived}
                     for f in spec.features],
        "gates": [g.to_dict() for g in gates],
        "environment": _versions(),
        "fairness": ev.fairness or {},
        "legal_basis": ev.legal_basis or {},
        "proxies": ev.proxies or {},
        "governance": {"trained_by": trainer, "development": spec.development,
                       "approval": ("development spec: the trainer may approve; such an approval is recorded as "
                                    "\"self-approved (development)\"") if spec.development else
                       "separation of duties: promotion refuses an approver who trained the model"},
    }


def _log_reference(ev: Evaluation, spec: PipelineSpec, flat: dict, workdir: Path) -> None:
    dev = ev.dev
    dev_metrics = {k: flat[k] for k in flat if k.startswith("test_") and not k.startswith("test_without")}
    log_reference(dev, ev.model.predict_pd(dev), spec, dev_metrics, workdir)


def log_reference(dev: pd.DataFrame, pd_dev: np.ndarray, spec: PipelineSpec, dev_metrics: dict,
                  workdir: Path) -> None:
    """The reference profile `creditgov monitor` compares new batches with (see reference.py)."""
    import mlflow  # heavy: see registry.configure

    profile = build_profile(dev, pd_dev, spec, dev_metrics, spec.monitoring.segment_by)
    mlflow.log_text(json.dumps(profile, indent=1, sort_keys=True), "reference/profile.json")
    feats = [f.name for f in spec.model_inputs]  # model inputs only: no personal data leaves the run
    sample = with_derived(dev, spec)[feats].assign(pd=pd_dev).sample(min(spec.monitoring.reference_sample, len(dev)),
                                                random_state=spec.split.seed)
    path = workdir / "reference_sample.parquet"
    sample.to_parquet(path, index=False)
    mlflow.log_artifact(str(path), "reference")


def input_example(frame: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    """Five rows for the registry, typed as loaded, including one with a missing value when the catalogue
    allows any."""
    rows = frame[spec.model_columns]  # the raw columns a caller sends (derived features are computed from them)
    with_missing = rows[rows.isna().any(axis=1)].head(1)
    return pd.concat([rows.head(5 - len(with_missing)), with_missing])


def pyfunc_signature(spec: PipelineSpec):
    """The registered model's signature, from the catalogue: model inputs by name, categories as strings,
    numerics as "any".

    A numeric column arrives as int64 in one batch and float64 in the next (the loader gives an integer
    column with a gap float64), and MLflow's schema enforcement refuses int64 for "double" (it converts
    integers of at most 6 bytes) and float64 for "long", so no numeric type would accept the rows as
    creditgov loads them; CreditModel's encoding converts each numeric column, naming a column that is not
    numeric."""
    from mlflow.models import ModelSignature  # heavy: see registry.configure
    from mlflow.types import ColSpec, Schema  # heavy: see registry.configure
    from mlflow.types.schema import AnyType  # heavy: see registry.configure

    inputs = Schema([ColSpec(AnyType() if f.type == "numeric" else "string", f.name) for f in spec.model_inputs
                     if f.derived is None])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "pd")]))


def log_pyfunc_model(model: CreditModel, spec: PipelineSpec, example: pd.DataFrame, workdir: Path):
    """Log `model` to the active run as an MLflow pyfunc "model from code" (model/mlflow_entry.py, JSON files, no
    pickle); returns MLflow's ModelInfo for `register`."""
    import mlflow  # heavy: see registry.configure

    model_dir = model.save(workdir / "model")
    pkg_dir = Path(creditgov.__file__).parent
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(pkg_dir / "model" / "mlflow_entry.py"),
        artifacts={"model": str(model_dir)},
        code_paths=[str(pkg_dir)],
        signature=pyfunc_signature(spec),
        input_example=example,
        # numba: scoring computes the margin with creditgov.model.treeshap
        pip_requirements=[f"{pkg}=={metadata.version(pkg)}"
                          for pkg in ("xgboost", "pandas", "numpy", "numba", "mlflow")],
    )


def register(info, spec: PipelineSpec, tags: dict, description: str) -> str:
    """Create the model version with its evidence tags in one call; `finish_registration` completes it.

    A run killed before this leaves no version; one killed between the two leaves a version without
    alias and without the `creditgov.registration: complete` tag, which promote and decide refuse.
    """
    import mlflow  # heavy: see registry.configure

    name = spec.registry.model_name
    with registry.backend_errors(f"register {name}"):
        mv = mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in tags.items()})
        registry.client().update_model_version(name, mv.version, description=description)
    return str(mv.version)


def finish_registration(spec: PipelineSpec, version: str) -> None:
    c, name = registry.client(), spec.registry.model_name
    with registry.backend_errors(f"finish registering {name} v{version}"):
        c.set_model_version_tag(name, version, "creditgov.registration", "complete")
        c.set_registered_model_alias(name, "challenger", version)  # last: aliases only ever name complete versions


MODEL_KINDS = ("xgboost", "scorecard")  # what `creditgov train --model` registers


def _model_description(model) -> dict:
    """The model card's model type and learned state, for either kind of registered model."""
    if kind_of(model) == "scorecard":
        return {"kind": "scorecard", "type": "WOE scorecard (optbinning bins, logistic regression), points by "
                "pdo/odds; reasons: points below the maximum per characteristic",
                "characteristics": model.info["n_characteristics"], "scaling": dict(model.scaling)}
    return {"kind": "xgboost", "type": "XGBoost gradient-boosted trees, monotone constraints, Platt calibration",
            "n_trees": model.info["n_trees"], "calibration": {"a": model.calib_a_, "b": model.calib_b_}}


# what the progress bar of a training shows (checks: the comparison model, monotonicity, importance, gates)
TRAINING_STEPS = ("validate", "fit", "scorecard", "evaluate", "cross-validation", "checks", "register")
SEARCH_STEPS = ("validate", "search") + TRAINING_STEPS[1:]  # train --search


def current_user() -> str:
    """Who runs this process (the default trainer and, at the command line, the default approver)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def run_training(spec: PipelineSpec, spec_path: str, data_path: str | None = None,
                 n_estimators: int | None = None, log=print, trainer: str | None = None,
                 search: bool = False, model_kind: str = "xgboost", candidate: str | None = None) -> TrainResult:
    """`trainer`: who trains (default: the user running the process), recorded as the run's
    `creditgov.trained_by` tag and the version's `trained_by` tag; promote refuses that person as approver
    unless the spec is a development spec. `search`: first search for less discriminatory alternatives (spec
    `search`, jobs/search.py) and register the candidate it chooses, or the one `candidate` names. `model_kind`: "xgboost" (default) or
    "scorecard" (register the WOE scorecard, with its points-below-maximum reasons; with `search`, the search's
    choice decides instead)."""
    if model_kind not in MODEL_KINDS:
        raise UsageError(f"--model '{model_kind}': not a model kind; choose one of {', '.join(MODEL_KINDS)}")
    if search and spec.search is None:
        raise SpecError(f"{spec_path}: --search needs a `search:` section in the spec (n_trials, auc_tolerance, "
                        "air_margin)")
    with progress.task("Training", steps=SEARCH_STEPS if search else TRAINING_STEPS) as steps:
        return _run_training(spec, spec_path, data_path, n_estimators, log, steps,
                             (trainer or "").strip() or current_user(), search, model_kind, candidate)


def _run_training(spec: PipelineSpec, spec_path: str, data_path: str | None, n_estimators: int | None, log,
                  steps: progress.Task, trainer: str = "", search: bool = False,
                  model_kind: str = "xgboost", candidate: str | None = None) -> TrainResult:
    import mlflow  # heavy: see registry.configure

    registry.check()  # fail fast, before minutes of training, when the backend is unreachable
    steps.step("validate")
    v = validate_input(spec, data_path)
    s = v.outcome.summary()
    log(f"validated {v.label}: {s['rows_in']} rows in, {s['rows_clean']} clean, "
        f"{s['rows_quarantined']} quarantined -> {v.quarantine_path}")
    searched = None
    if search:
        steps.step("search")
        splits = train.split(v.outcome.clean, spec)
        dev = pd.concat([splits.train, splits.validation])
        flagged = [r["feature"] for r in proxy_screen(spec, dev).get("flagged", [])]
        log(f"searching for less discriminatory alternatives on {len(dev)} development rows, "
            f"{spec.evaluation.cv_folds} folds")
        searched = search_job.run_search(spec, dev, flagged, lambda f, p: protected_evidence(spec, f, p),
                                         n_estimators, log, pick=candidate)
        log(f"chosen: {searched.chosen.candidate.name} ({'; '.join(searched.why)})")
    ev = evaluate_models(v, n_estimators, steps, searched, model_kind)
    kind = kind_of(ev.model)
    flat = ev.flat_metrics()
    if searched is not None:
        flat.update({"search_chosen_cv_auc": searched.chosen.auc, "search_chosen_cv_ks": searched.chosen.ks,
                     "search_candidates": len(searched.measured), "search_alternatives": len(searched.remaining)})
        if searched.chosen.min_air is not None:
            flat["search_chosen_min_air"] = float(searched.chosen.min_air)
    log(f"{'XGBoost' if kind == 'xgboost' else 'Registered scorecard'} test AUC {flat['test_auc']:.4f} [{flat['test_auc_ci_low']:.4f}, {flat['test_auc_ci_high']:.4f}], "
        f"scorecard {flat['scorecard_test_auc']:.4f}; {spec.evaluation.cv_folds}-fold CV AUC "
        f"{flat['cv_auc_mean']:.4f} vs scorecard {flat['scorecard_cv_auc_mean']:.4f}")
    gate_results = gates_mod.evaluate_gates(spec.gates, flat)
    if searched is not None:
        gate_results.append(gates_mod.less_discriminatory([m.candidate.name for m in searched.remaining], None,
                                                          spec.search.auc_tolerance, spec.search.air_margin))
    importance = explain.global_importance(ev.model, ev.splits.test)
    svg = importance_chart(importance, spec)
    frontier_svg = search_job.frontier_chart(searched, spec) if searched is not None else ""

    steps.step("register")
    registry.configure()
    exp_id = registry.ensure_experiment(spec.registry.experiment)
    with registry.backend_errors("log the training run"), tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{spec.name}") as run:
            run_id = run.info.run_id
            mlflow.log_params({
                "spec": spec.name, "spec_hash": spec.content_hash, "data_source": v.label,
                "input_data_hash": v.input_hash, "train_data_hash": ev.train_hash,
                "split_method": ev.splits.method, "split_seed": spec.split.seed,
                **{f"xgb_{k}": val for k, val in spec.model.model_dump().items()},
                "xgb_n_estimators_used": n_estimators or spec.model.n_estimators,
                "calibration": "platt-on-margin" if kind == "xgboost" else "logistic on WOE (scorecard)",
                "model_kind": kind,
            })
            mlflow.log_metrics({**flat, "rows_in": s["rows_in"], "rows_clean": s["rows_clean"],
                                "rows_quarantined": s["rows_quarantined"]})
            mlflow.set_tags({"creditgov.stage": "train", "creditgov.spec": spec.name, "creditgov.model_kind": kind,
                             "creditgov.trained_by": trainer, "creditgov.development": str(spec.development).lower()})
            if searched is not None:
                c = searched.chosen.candidate
                mlflow.set_tags({SEARCH_TAG: json.dumps([m.candidate.name for m in searched.remaining]),
                                 "creditgov.search.auc_tolerance": str(spec.search.auc_tolerance),
                                 "creditgov.search.air_margin": str(spec.search.air_margin),
                                 "creditgov.search.chosen": c.name})
                mlflow.log_params({"search_chosen": c.name, "search_chosen_method": c.method,
                                   "search_chosen_drop": ",".join(c.drop) or "-",
                                   **{f"search_chosen_xgb_{k}": val for k, val in c.params.items()}})
                mlflow.log_dict(searched.summary(spec), "search/candidates.json")
                mlflow.log_text(frontier_svg, "search/frontier.svg")
                search_job.log_child_runs(searched, spec)
            if ev.fairness:
                mlflow.log_dict(ev.fairness, "fairness/fair_lending.json")
            if ev.legal_basis:
                mlflow.log_dict(ev.legal_basis, "fairness/legal_basis.json")
            if ev.proxies:
                mlflow.log_dict(ev.proxies, "fairness/proxies.json")
            mlflow.log_text(validate.result_json(v.outcome), "validation/gx_validation_result.json")
            mlflow.log_dict(s, "validation/quarantine_summary.json")
            mlflow.log_dict(v.suite, "validation/expectation_suite.json")
            mlflow.log_text(svg, "explain/shap_importance.svg")
            mlflow.log_text(importance.to_csv(index=False), "explain/shap_importance.csv")
            mlflow.log_text(ev.calibration.to_csv(index=False), "evaluation/calibration_deciles.csv")
            mlflow.log_dict(ev.monotonicity, "evaluation/monotonicity.json")
            mlflow.log_dict({k: [float(x) for x in a] for k, a in ev.cv.items()}, "evaluation/cv_auc.json")
            mlflow.log_text(ev.scorecard.table().to_csv(index=False), "scorecard/scorecard_table.csv")
            if kind == "scorecard":  # the registered model's points table: reasons are points below each maximum
                mlflow.log_text(ev.model.table().to_csv(index=False), "scorecard/registered_points.csv")
            mlflow.log_text(json.dumps(spec.model_dump(mode="json"), indent=2, ensure_ascii=False), "spec/spec.json")
            _log_reference(ev, spec, flat, tmpdir)

            info = log_pyfunc_model(ev.model, spec, input_example(ev.splits.train, spec), tmpdir)
            version = register(info, spec, {
                "run_id": run_id, "spec_hash": spec.content_hash, "train_data_hash": ev.train_hash,
                "input_data_hash": v.input_hash, "trained_by": trainer, "model_kind": kind,
                "gates_at_registration": "pass" if gates_mod.all_pass(gate_results) else
                "fail: " + ", ".join(g.name for g in gate_results if not g.passed),
                inventory.SUMMARY_TAG: inventory.gates_summary(gate_results)},
                f"{spec.description} Test AUC {flat['test_auc']:.4f} [{flat['test_auc_ci_low']:.4f}, "
                f"{flat['test_auc_ci_high']:.4f}]; model card in run artifacts.")
            entry, changes = inventory.record_registration(spec, version, flat, ev.train_hash, gate_results)
            card = _card(v, ev, importance, gate_results, run_id, version, spec_path, trainer)
            card.update(inventory=entry, changes=changes)
            if searched is not None:
                card["search"] = searched.summary(spec)
                card["model"]["type"] += f"; search candidate {searched.chosen.candidate.name} " \
                                        f"({searched.chosen.candidate.describe()})"
            mlflow.log_text(modelcard.to_json(card), "model_card/model_card.json")
            mlflow.log_text(modelcard.render_html(card, svg, frontier_svg), "model_card/model_card.html")
        finish_registration(spec, version)
    name = spec.registry.model_name
    log(f"registered {name} version {version} (alias challenger), run {run_id}; {changes['summary']}")
    return TrainResult(run_id, name, version, flat, gate_results, v.quarantine_path, card)
