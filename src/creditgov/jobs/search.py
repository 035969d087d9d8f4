"""The search for less discriminatory alternatives as a stage of training (`creditgov train --search`).

model/search.py fits and measures the candidates on the cross-validation folds of the development rows; this
stage gives each candidate its fair-lending figures (the policy applied to its out-of-fold PDs, AIR and SMD by
protected group, via the `evidence` callable training passes in), chooses the candidate to register
(search.choose), names the less discriminatory alternatives that remain (the promotion gate's evidence), draws
the frontier, and logs one MLflow child run per candidate under the training run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from creditgov.data import privacy
from creditgov.errors import UsageError
from creditgov.model import fairness
from creditgov.model import search
from creditgov.report import charts
from creditgov.spec import PipelineSpec


@dataclass
class SearchResult:
    measured: list[search.Measured]
    chosen: search.Measured
    why: list[str]
    remaining: list[search.Measured]  # less discriminatory alternatives to the chosen one (measured-only ones)
    groups: pd.Series  # the joint protected group label of each development row (reweighting, the reduction)
    seconds: float

    @property
    def scorecard(self) -> search.Measured | None:
        return next((m for m in self.measured if m.candidate.method == "scorecard"), None)

    def summary(self, spec: PipelineSpec) -> dict:
        """The search as the model card and the run artifact search/candidates.json show it."""
        s = spec.search
        return {
            "auc_tolerance": s.auc_tolerance, "air_margin": s.air_margin, "n_trials": s.n_trials,
            "folds": spec.evaluation.cv_folds, "rows": int(len(self.groups)), "seconds": round(self.seconds, 1),
            "chosen": self.chosen.candidate.name, "why": list(self.why),
            "alternatives": [m.candidate.name for m in self.remaining],
            "candidates": [{
                "name": m.candidate.name, "kind": m.candidate.kind, "method": m.candidate.method,
                "describe": m.candidate.describe(), "registrable": m.candidate.registrable,
                "params": dict(m.candidate.params), "drop": list(m.candidate.drop),
                "cv_auc": m.auc, "cv_auc_sd": float(np.std(m.fold_auc, ddof=1)), "cv_ks": m.ks,
                "min_air": m.min_air, "min_air_where": m.fairness.get("where"), "max_smd": m.fairness.get("max_smd"),
                "chosen": m is self.chosen, "alternative": m in self.remaining} for m in self.measured],
        }


def joint_groups(spec: PipelineSpec, frame: pd.DataFrame) -> pd.Series:
    """Each row's protected groups as one label ("Age=25-39 | Marital=single"): group labels only
    (privacy.group_labels), never the values."""
    parts = [f"{f.name}=" + privacy.group_labels(f, frame[f.name]).astype(str)
             for f in spec.protected_features if f.name in frame.columns]
    if not parts:
        return pd.Series("all", index=frame.index)
    out = parts[0]
    for p in parts[1:]:
        out = out + " | " + p
    return pd.Series(out.to_numpy(dtype=object), index=frame.index)


def fairness_summary(ev: dict, protected: list[str]) -> dict:
    """The frontier's fairness figures of one candidate from its evidence ({outcome: {attribute: ...}}): the
    lowest AIR of a protected group, where, and the largest SMD (positive: scored riskier than the reference)."""
    prot = {o: {a: e for a, e in by.items() if a in protected} for o, by in ev.items()}
    low, where = fairness.lowest_air(prot)
    smds = [r["smd"] for by in prot.values() for e in by.values() for r in e["groups"] if r["smd"] is not None]
    groups = {f"{o}/{a}={r['group']}": {"air": r["air"], "smd": r["smd"]}
              for o, by in prot.items() for a, e in by.items() for r in e["groups"] if r["air"] is not None}
    return {"min_air": low, "where": where, "max_smd": max(smds) if smds else None, "groups": groups}


def run_search(spec: PipelineSpec, dev: pd.DataFrame, flagged: list[str],
               evidence: Callable[[pd.DataFrame, np.ndarray], dict], n_estimators: int | None = None,
               log=print, pick: str | None = None) -> SearchResult:
    """Measure every candidate on the folds of `dev`, give each its fairness figures and choose. `flagged`: the
    inputs proxy screening flagged; `evidence(frame, pd)`: {outcome: {attribute: fairness.group_evidence}} of
    the policy applied to `pd` on `frame`. `pick`: a registrable candidate the trainer names instead of the
    search's choice; its less discriminatory alternatives then stand in the promotion gate (a business-necessity
    justification is needed to promote it)."""
    s = spec.search
    if s is None:
        raise ValueError("the spec has no `search` section")
    started = time.perf_counter()
    groups = joint_groups(spec, dev)
    measured = []
    for c in search.candidates_list(spec, flagged):
        t0 = time.perf_counter()
        measured.append(search.measure(dev, spec, c, groups, n_estimators))
        log(f"  measured {c.name}: CV AUC {measured[-1].auc:.4f} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    measured[1:1] = search.optuna_candidates(dev, spec, s.n_trials, n_estimators)
    log(f"  measured {s.n_trials} Optuna trials ({time.perf_counter() - t0:.1f} s)")
    tuned = search.tuned_reweighting(measured, spec)
    if tuned is not None:  # the fairness-aware variant of the best hyperparameters, on the same folds
        t0 = time.perf_counter()
        measured.append(search.measure(dev, spec, tuned, groups, n_estimators))
        log(f"  measured {tuned.name}: CV AUC {measured[-1].auc:.4f} ({time.perf_counter() - t0:.1f} s)")
    protected = [f.name for f in spec.protected_features]
    for m in measured:
        m.fairness = fairness_summary(evidence(dev, m.oof_pd), protected)
    chosen, why = search.choose(measured, s.auc_tolerance, s.air_margin)
    if pick is not None:
        try:
            chosen, why = search.named(measured, chosen, why, pick)
        except KeyError as e:
            raise UsageError(f"--candidate {pick}: {e.args[0]}") from None
    remaining = search.alternatives(measured, chosen, s.auc_tolerance, s.air_margin)
    result = SearchResult(measured, chosen, why, remaining, groups, time.perf_counter() - started)
    for m in measured:
        air = "n/a" if m.min_air is None else f"{m.min_air:.3f}"
        log(f"  candidate {m.candidate.name:18s} CV AUC {m.auc:.4f}  KS {m.ks:.3f}  lowest AIR {air}"
            f"{'  <- chosen' if m is chosen else ''}{'  (less discriminatory alternative)' if m in remaining else ''}")
    return result


def frontier_chart(result: SearchResult, spec: PipelineSpec) -> str:
    """CV AUC against the lowest AIR of a protected group, one point per candidate, the chosen one ringed, and
    the region where an alternative to it would stop the promotion (within the AUC tolerance, AIR higher by the
    margin) shaded."""
    s = spec.search
    pts = [(m.candidate.name, m.min_air, m.auc, m.candidate.kind, m is result.chosen) for m in result.measured
           if m.min_air is not None]
    ref = result.chosen
    region = None
    if ref.min_air is not None:
        region = (ref.min_air + s.air_margin, ref.auc - s.auc_tolerance)
    return charts.frontier(pts, "Candidate frontier: CV AUC against the lowest AIR of a protected group", region)


def log_child_runs(result: SearchResult, spec: PipelineSpec) -> None:
    """One nested MLflow run per candidate under the active (training) run: its parameters, CV AUC and KS, the
    lowest AIR and largest SMD, and whether it was chosen or is an alternative."""
    import mlflow  # heavy: see registry.configure

    experiment = mlflow.active_run().info.experiment_id  # a nested run goes to the parent's experiment only if told
    for m in result.measured:
        c = m.candidate
        with mlflow.start_run(run_name=f"candidate-{c.name}", nested=True, experiment_id=experiment):
            mlflow.set_tags({"creditgov.stage": "search-candidate", "creditgov.spec": spec.name,
                             "candidate.kind": c.kind, "candidate.method": c.method,
                             "candidate.registrable": str(c.registrable).lower(),
                             "candidate.chosen": str(m is result.chosen).lower(),
                             "candidate.alternative": str(m in result.remaining).lower(),
                             "candidate.describe": c.describe()[:500]})
            mlflow.log_params({"kind": c.kind, "method": c.method, "drop": ",".join(c.drop) or "-",
                               **{f"xgb_{k}": v for k, v in c.params.items()}})
            out = {"cv_auc_mean": m.auc, "cv_auc_sd": float(np.std(m.fold_auc, ddof=1)), "cv_ks_mean": m.ks}
            out.update({f"cv_auc_fold_{i + 1}": float(a) for i, a in enumerate(m.fold_auc)})
            if m.min_air is not None:
                out["fair_min_air"] = float(m.min_air)
            if m.fairness.get("max_smd") is not None:
                out["fair_max_smd"] = float(m.fairness["max_smd"])
            mlflow.log_metrics(out)
