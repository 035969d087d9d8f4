"""`creditgov recalibrate`: refit the calibration layer on recent matured data, register a challenger.

The booster (the ranking) is kept; only the Platt layer log-odds = a * margin + b is refitted,
on a stratified 70% of the matured rows, and judged on the other 30%, before and after, side by
side. The result is a new model version with alias `challenger`, tags naming its parent version
and the monitoring run that asked for it, its own reference profile (the score distribution
changed) and the evidence the promotion gates read; promotion goes through the same gates.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from creditgov.data import inputs
from creditgov.model import metrics
from creditgov.governance import inventory, modelcard
from creditgov.model import monotonic
from creditgov.jobs import training
from creditgov.governance import registry
from creditgov.model import train
from creditgov.model.credit_model import CreditModel
from creditgov.report.pages import render
from creditgov.spec import PipelineSpec
from creditgov.errors import UsageError


@dataclass(frozen=True)
class RecalibrationResult:
    version: str
    parent_version: str
    run_id: str
    before: dict
    after: dict
    calibration: dict  # a, b before and after


def _side_by_side_html(spec: PipelineSpec, parent: str, before: dict, after: dict, cal_before: pd.DataFrame,
                       cal_after: pd.DataFrame, calib: dict, label: str) -> str:
    return render(
        "recalibration.html", spec=spec, parent=parent, before=before, after=after, label=label, calib=calib,
        rows=list(zip(cal_before.to_dict("records"), cal_after.to_dict("records"))))


def recalibrate(spec: PipelineSpec, matured: pd.DataFrame, label: str, version: str | None = None,
                monitoring_run: str | None = None, log=print) -> RecalibrationResult:
    import mlflow  # heavy: see registry.configure

    registry.configure()
    model, parent, parent_run = registry.load_registered(spec.registry.model_name, version)
    if not isinstance(model, CreditModel):  # a registered scorecard: its logistic regression is its calibration
        raise UsageError(f"{spec.registry.model_name} version {parent} is a scorecard: recalibration refits the "
                         "Platt layer of an XGBoost model; train a new scorecard version instead")
    client = registry.client()
    name = spec.registry.model_name
    if monitoring_run is None:
        monitoring_run = client.get_model_version(name, parent).tags.get("monitor.last_run")
    y = train.target_vector(matured, spec)
    fit, hold = train_test_split(matured, test_size=0.3, stratify=y, random_state=spec.split.seed)
    y_fit, y_hold = train.target_vector(fit, spec), train.target_vector(hold, spec)
    a, b = train.fit_platt(model.margin(fit), y_fit)
    new = CreditModel(model.booster_, model.encodings, a, b, {**model.info, "recalibrated_from": parent})
    seed, n_boot = spec.split.seed, spec.evaluation.bootstrap
    p_before, p_after = model.predict_pd(hold), new.predict_pd(hold)
    before = metrics.evaluate(y_hold, p_before, n_boot=n_boot, seed=seed)
    after = metrics.evaluate(y_hold, p_after, n_boot=n_boot, seed=seed)
    bins = spec.evaluation.calibration_bins
    cal_before = metrics.calibration_table(y_hold, p_before, bins)
    cal_after = metrics.calibration_table(y_hold, p_after, bins)
    mono = monotonic.check_monotonicity(new, fit.sample(min(spec.evaluation.monotonicity_sample, len(fit)),
                                                        random_state=seed), spec.evaluation.monotonicity_grid)
    parent_metrics = client.get_run(parent_run).data.metrics
    calib = {"before": {"a": model.calib_a_, "b": model.calib_b_}, "after": {"a": a, "b": b}}

    exp_id = registry.ensure_experiment(spec.registry.experiment)
    with registry.backend_errors("log the recalibration run"), tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"recalibrate-{spec.name}-from-v{parent}") as run:
            flat = {f"test_{k}": float(v) for k, v in after.items() if np.isfinite(v)}
            flat.update({f"before_test_{k}": float(v) for k, v in before.items() if np.isfinite(v)})
            # the scorecard is not refitted: its evidence is the parent's, as the tag says
            flat["scorecard_test_auc"] = float(parent_metrics.get("scorecard_test_auc", np.nan))
            flat["scorecard_auc_shortfall"] = float(parent_metrics.get("scorecard_test_auc", np.nan)
                                                    - parent_metrics.get("test_auc", np.nan))
            flat["monotonicity_violations"] = int(sum(r["violations"] for r in mono.values()))
            mlflow.log_metrics({k: v for k, v in flat.items() if np.isfinite(v)})
            mlflow.log_params({"spec": spec.name, "spec_hash": spec.content_hash, "parent_version": parent,
                               "recalibration_data": label, "recalibration_data_hash": inputs.content_hash(matured),
                               "calibration": "platt-on-margin", "calib_a": a, "calib_b": b})
            mlflow.set_tags({"creditgov.stage": "recalibrate", "parent_version": parent,
                             "monitoring_run": monitoring_run or "none",
                             "scorecard_evidence": f"inherited from v{parent}: recalibration keeps the ranking"})
            mlflow.log_text(cal_before.to_csv(index=False), "recalibration/calibration_before.csv")
            mlflow.log_text(cal_after.to_csv(index=False), "recalibration/calibration_after.csv")
            html = _side_by_side_html(spec, parent, before, after, cal_before, cal_after, calib, label)
            mlflow.log_text(html, "recalibration/before_after.html")
            training.log_reference(fit, new.predict_pd(fit), spec,
                                   {k: v for k, v in flat.items() if k.startswith("test_")}, tmpdir)
            card = _card_from_parent(parent_run, after, calib, parent, label, run.info.run_id)
            info = training.log_pyfunc_model(new, spec, training.input_example(fit, spec), tmpdir)
            version_new = training.register(info, spec, {
                "parent_version": parent, "monitoring_run": monitoring_run or "none", "run_id": run.info.run_id,
                "recalibration_data": label[:500], "recalibration_data_hash": inputs.content_hash(matured),
                "spec_hash": spec.content_hash,
                "trained_by": training.current_user()},  # who refitted it: the maker promote checks against
                f"Calibration of v{parent} refitted on {label}.")
            mlflow.log_text(json.dumps(spec.model_dump(mode="json"), indent=2, ensure_ascii=False), "spec/spec.json")
            entry, changes = inventory.record_registration(spec, version_new, flat, inputs.content_hash(matured))
            if card:
                card.update(inventory=entry, changes=changes)
                card["model"]["version"] = version_new
                if "governance" in card:
                    card["governance"]["trained_by"] = training.current_user()
                svg = _parent_text(parent_run, "explain/shap_importance.svg") or ""
                mlflow.log_text(modelcard.to_json(card), "model_card/model_card.json")
                mlflow.log_text(modelcard.render_html(card, svg), "model_card/model_card.html")
            run_id = run.info.run_id
        training.finish_registration(spec, version_new)
    log(f"{name} v{version_new} (challenger) recalibrated from v{parent} on {label}: Hosmer-Lemeshow p "
        f"{before['hl_pvalue']:.4f} -> {after['hl_pvalue']:.4f}, Brier {before['brier']:.4f} -> {after['brier']:.4f}, "
        f"AUC {after['auc']:.4f} (ranking unchanged)")
    return RecalibrationResult(version_new, parent, run_id, before, after, calib)


def _parent_text(run_id: str, path: str) -> str | None:
    import mlflow  # heavy: see registry.configure

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
                        ).read_text(encoding="utf-8")
        except Exception:
            return None


def _card_from_parent(parent_run: str, after: dict, calib: dict, parent: str, label: str, run_id: str) -> dict | None:
    text = _parent_text(parent_run, "model_card/model_card.json")
    if not text:
        return None
    card = json.loads(text)
    card["model"]["run_id"] = run_id
    card["model"]["calibration"] = calib["after"]
    card["model"]["type"] += f"; calibration refitted from version {parent} on {label}"
    card["metrics"]["xgboost"] = after
    card["limitations"] = list(card.get("limitations", [])) + [
        f"Recalibrated from version {parent} on {label}: the trees are the parent's; metrics are on a 30% "
        "hold-out of that matured data; the scorecard comparison is the parent's."]
    card["lineage"]["parent_version"] = parent
    return card
