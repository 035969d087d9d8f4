"""Monitor a batch against the champion's reference: stability, performance, and a verdict.

Calculator -> Result: `run_monitor` computes a `MonitorResult` (to_frame / alerts / to_dict /
from_dict) of typed parts, which the report renders and MLflow records. Banking conventions throughout:

* score PSI and feature CSI on the REFERENCE bins stored with the model (deciles, missing as
  its own bin, categories as their own bins), against the spec's watch / act thresholds;
* the same score PSI within each category of the spec's segment features, so a shock that
  hits one segment is named;
* matured labels: AUC and KS with bootstrap CIs against development, and calibration per
  risk tier (observed vs predicted default rate, Jeffreys interval);
* no labels yet: performance estimated from the calibrated PDs (in the manner of NannyML's
  CBPE), trusted only while the calibration check on the last matured data passes;
* an Evidently DataDriftPreset report on a capped sample, for the reviewer.

Verdict: rebuild (ranking degraded, or a key feature shifted beyond the act threshold),
recalibrate (ranking holds but level or calibration drifted), watch, or stable, each
with its reasons stated.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import beta

from creditgov.decision.policy import tier_of
from creditgov.governance import registry
from creditgov.model.metrics import auc, bootstrap_auc_ci, ks, psi_from_shares, weighted_ks
from creditgov.model.derived import with_derived
from creditgov.model.train import target_vector
from creditgov.monitor.reference import categorical_bins, n_bins, numeric_bins, segment_keys
from creditgov.spec import KS_BOOTSTRAP_MAX, Monitoring, PipelineSpec

VERDICTS = ("stable", "watch", "recalibrate", "rebuild")


# ------------------------------------------------------------------------------ typed results


def _numbers(obj) -> dict[str, float]:
    """The numeric fields of a result, in field order (flags, texts, tables and missing values left out)."""
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f.name] = v
    return out


@dataclass(frozen=True)
class TierCalibration:
    """Observed vs predicted default rate in one risk tier, with the Jeffreys interval of the observed rate."""

    tier: str
    n: int
    observed_bad: int
    observed_rate: float
    predicted_rate: float
    jeffreys_low: float
    jeffreys_high: float
    assessed: bool  # enough rows to judge (Monitoring.min_tier_rows)
    passed: bool


@dataclass(frozen=True)
class ObservedPerformance:
    """Ranking and calibration on matured labels, beside the development figures."""

    kind: str = field(default="observed", init=False)
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    ks: float
    ks_ci_low: float
    ks_ci_high: float
    dev_auc: float | None
    dev_auc_ci_low: float | None
    dev_ks: float | None
    bad_rate: float
    predicted_rate: float
    calibration: tuple[TierCalibration, ...]
    calibration_passed: bool
    n: int

    def numbers(self) -> dict[str, float]:
        return _numbers(self)

    @classmethod
    def from_dict(cls, d: dict) -> ObservedPerformance:
        d = {k: v for k, v in d.items() if k != "kind"}
        return cls(**{**d, "calibration": tuple(TierCalibration(**c) for c in d["calibration"])})


@dataclass(frozen=True)
class EstimatedPerformance:
    """AUC and KS expected if the PDs are calibrated (CBPE), and whether the last matured data says they are."""

    kind: str = field(default="estimated", init=False)
    auc: float
    ks: float
    expected_bad_rate: float
    trusted: bool
    basis: str  # why the estimate is trusted or not

    def numbers(self) -> dict[str, float]:
        return _numbers(self)

    @classmethod
    def from_dict(cls, d: dict) -> EstimatedPerformance:
        return cls(**{k: v for k, v in d.items() if k != "kind"})


@dataclass(frozen=True)
class CalibrationBasis:
    """Tier calibration on the last matured data: the condition for trusting the estimated performance."""

    passed: bool
    calibration: tuple[TierCalibration, ...]
    n: int
    dev_auc: float | None

    @classmethod
    def from_dict(cls, d: dict) -> CalibrationBasis:
        return cls(**{**d, "calibration": tuple(TierCalibration(**c) for c in d["calibration"])})


@dataclass(frozen=True)
class Stability:
    """Score PSI, CSI per feature, and score PSI per segment value (only segments with enough rows)."""

    score_psi: float
    csi: dict[str, float]
    segment_psi: dict[str, dict[str, float]]


@dataclass(frozen=True)
class MonitorResult:
    label: str
    rows: int
    score_psi: float
    csi: dict[str, float]
    segment_psi: dict[str, dict[str, float]]
    level: dict[str, float]  # relative change of mean PD vs reference: "all" and "col=value" segments
    matured: ObservedPerformance | None
    estimated: EstimatedPerformance | None
    calibration_basis: CalibrationBasis | None
    verdict: str = "stable"
    reasons: tuple[str, ...] = ()
    evidently_html: str | None = None
    # segment values in the batch that the development reference never saw: {column: {value: rows}}. No PSI can
    # be computed for them (no reference shares), so they are named instead of silently left out
    unseen_segments: dict[str, dict[str, int]] = field(default_factory=dict)
    # what was monitored: the batch (its source and content hash) and the matured data the estimates rest on
    source: str | None = None
    batch_hash: str | None = None
    basis_label: str | None = None
    basis_source: str | None = None
    basis_hash: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MonitorResult:
        """The result back from `to_dict` (or its stored JSON, monitor/result.json)."""
        m, e, b = d["matured"], d["estimated"], d["calibration_basis"]
        return cls(**{**d, "reasons": tuple(d["reasons"]), "unseen_segments": d.get("unseen_segments") or {},
                      "matured": ObservedPerformance.from_dict(m) if m is not None else None,
                      "estimated": EstimatedPerformance.from_dict(e) if e is not None else None,
                      "calibration_basis": CalibrationBasis.from_dict(b) if b is not None else None})

    def to_frame(self) -> pd.DataFrame:
        rows = [{"measure": "score PSI", "value": self.score_psi}]
        rows += [{"measure": f"CSI {k}", "value": v} for k, v in self.csi.items()]
        rows += [{"measure": f"mean PD change {k}", "value": v} for k, v in self.level.items()]
        for col, seg in self.segment_psi.items():
            rows += [{"measure": f"score PSI {col}={k}", "value": v} for k, v in seg.items()]
        for src in (self.matured, self.estimated):
            if src:
                rows += [{"measure": f"{src.kind} {k}", "value": v} for k, v in src.numbers().items()]
        return pd.DataFrame(rows)

    def alerts(self) -> list[str]:
        return list(self.reasons)


# ------------------------------------------------------------------------------- stability


@dataclass(frozen=True, eq=False)
class BinCounts:
    """Rows per reference bin: of the score, of each feature, and of the score within each reference segment.

    Counts add up over partitions of a batch, so a scaled-out engine can bin its partitions apart and sum.
    """

    score: np.ndarray
    features: dict[str, np.ndarray]
    segments: dict[str, dict[str, np.ndarray]]

    def __add__(self, other: BinCounts) -> BinCounts:
        return BinCounts(self.score + other.score,
                         {k: v + other.features[k] for k, v in self.features.items()},
                         {col: {k: v + other.segments[col][k] for k, v in seg.items()}
                          for col, seg in self.segments.items()})


# How a batch is binned on the reference: `bin_counts` in one process; creditgov.decision.dask passes one that
# bins the partitions on a Dask cluster and sums their counts.
Binning = Callable[[pd.DataFrame, np.ndarray, dict], BinCounts]


def bin_counts(frame: pd.DataFrame, p: np.ndarray, profile: dict) -> BinCounts:
    """Count the rows of `frame` (PDs `p`) in the bins of the stored reference `profile`."""
    p = np.asarray(p, dtype="float64")

    def numeric(values: np.ndarray, prof: dict) -> np.ndarray:
        return np.bincount(numeric_bins(values, np.asarray(prof["edges"], dtype="float64")), minlength=n_bins(prof))

    feats = {}
    for name, prof in profile["features"].items():
        if prof["kind"] == "numeric":
            feats[name] = numeric(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64"), prof)
        else:
            feats[name] = np.bincount(categorical_bins(frame[name], prof["categories"]), minlength=n_bins(prof))
    segments = {}
    for col, profs in profile.get("segments", {}).items():
        keys = segment_keys(frame[col])
        segments[col] = {value: numeric(p[keys == value], prof) for value, prof in profs.items()}
    return BinCounts(numeric(p, profile["score"]), feats, segments)


def _psi(prof: dict, counts: np.ndarray) -> float:
    """PSI of binned counts against a stored profile's shares."""
    c = np.asarray(counts, dtype="float64")
    return float(psi_from_shares(np.asarray(prof["shares"]), c / c.sum() if c.sum() else c))


def stability(frame: pd.DataFrame, p: np.ndarray, profile: dict, spec: PipelineSpec,
              binning: Binning = bin_counts) -> Stability:
    """Score PSI, CSI and segment score PSI on the reference bins; a segment with fewer than
    `min_tier_rows` rows in the batch is left out (too few rows for a stable PSI). A frame without the spec's
    derived columns gets them as the model's encoding computes them (run_monitor adds them once)."""
    if any(f.derived is not None and f.name not in frame.columns for f in spec.features):
        frame = with_derived(frame, spec)
    counts = binning(frame, p, profile)
    min_rows = spec.monitoring.min_tier_rows
    return Stability(
        _psi(profile["score"], counts.score),
        {name: _psi(prof, counts.features[name]) for name, prof in profile["features"].items()},
        {col: {value: _psi(prof, counts.segments[col][value]) for value, prof in profs.items()
               if counts.segments[col][value].sum() >= min_rows}
         for col, profs in profile.get("segments", {}).items()})


def unseen_segments(frame: pd.DataFrame, profile: dict) -> dict[str, dict[str, int]]:
    """Per segment column of the reference: the batch's values the reference has no profile for, with their rows
    (a category absent from development, such as a new employment type)."""
    out = {}
    for col, profs in profile.get("segments", {}).items():
        if col not in frame.columns:
            continue
        counts = pd.Series(segment_keys(frame[col])).value_counts(sort=False)
        new = {str(v): int(n) for v, n in sorted(counts.items()) if v not in profs}
        if new:
            out[col] = new
    return out


def level_shift(frame: pd.DataFrame, p: np.ndarray, profile: dict, spec: PipelineSpec) -> dict[str, float]:
    """Relative change of the mean PD against the reference, for the book and each reference segment
    with at least `min_tier_rows` rows in the batch."""
    out = {"all": float(p.mean() / profile["score"]["mean"] - 1)} if "mean" in profile["score"] else {}
    for col, profs in profile.get("segments", {}).items():
        keys = segment_keys(frame[col])
        for value, prof in profs.items():
            m = keys == value
            if m.sum() >= spec.monitoring.min_tier_rows and "mean" in prof:
                out[f"{col}={value}"] = float(p[m].mean() / prof["mean"] - 1)
    return out


# ----------------------------------------------------------------------------- performance


def _bootstrap_ks(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    bad, good = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(bad, len(bad)), rng.choice(good, len(good))])
        vals.append(ks(y[idx], p[idx]))
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def calibration_by_tier(y: np.ndarray, p: np.ndarray, tiers: np.ndarray, cfg: Monitoring) -> list[TierCalibration]:
    """Observed vs predicted default rate per tier, with the Jeffreys interval of the observed rate."""
    out = []
    for t in pd.unique(tiers):
        m = tiers == t
        n, k = int(m.sum()), int(y[m].sum())
        predicted = float(p[m].mean())
        lo, hi = beta.ppf([cfg.calibration_alpha / 2, 1 - cfg.calibration_alpha / 2], k + 0.5, n - k + 0.5)
        assessed = n >= cfg.min_tier_rows
        out.append(TierCalibration(
            tier=str(t), n=n, observed_bad=k, observed_rate=k / n if n else float("nan"), predicted_rate=predicted,
            jeffreys_low=float(lo), jeffreys_high=float(hi), assessed=assessed,
            passed=(not assessed) or bool(lo <= predicted <= hi)
            or abs(predicted - k / n) <= max(cfg.calibration_tolerance * (k / n), cfg.calibration_abs_tolerance)))
    return out


def matured_performance(y: np.ndarray, p: np.ndarray, tiers: np.ndarray, profile: dict, cfg: Monitoring,
                        seed: int) -> ObservedPerformance:
    """AUC and KS (the development KS's definition: metrics.ks) with bootstrap CIs, and tier calibration."""
    lo, hi = bootstrap_auc_ci(y, p, n_boot=cfg.bootstrap, seed=seed)
    ks_lo, ks_hi = _bootstrap_ks(y, p, min(cfg.bootstrap, KS_BOOTSTRAP_MAX), seed)
    cal = calibration_by_tier(y, p, tiers, cfg)
    dev = profile["development_metrics"]
    return ObservedPerformance(
        auc=auc(y, p), auc_ci_low=lo, auc_ci_high=hi, ks=ks(y, p), ks_ci_low=ks_lo, ks_ci_high=ks_hi,
        dev_auc=dev.get("test_auc"), dev_auc_ci_low=dev.get("test_auc_ci_low"), dev_ks=dev.get("test_ks"),
        bad_rate=float(y.mean()), predicted_rate=float(p.mean()), calibration=tuple(cal),
        calibration_passed=all(c.passed for c in cal), n=int(len(y)))


def estimated_performance(p: np.ndarray, basis: CalibrationBasis | None = None) -> EstimatedPerformance:
    """Expected AUC and KS if the PDs are calibrated (CBPE): expected TPR/FPR along the score order.

    Trusted only when the tier calibration on the last matured data (`basis`) passed."""
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    tpr = np.concatenate([[0.0], np.cumsum(ps) / ps.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(1 - ps) / (1 - ps).sum()])
    trusted = basis is not None and basis.passed
    return EstimatedPerformance(
        auc=float(np.trapezoid(tpr, fpr)), ks=weighted_ks(p, p, 1 - p), expected_bad_rate=float(p.mean()),
        trusted=trusted, basis="calibration on the last matured data passes" if trusted else
        "not trusted: no matured data, or calibration failed on it")


def decide_verdict(r: MonitorResult, cfg: Monitoring) -> tuple[str, list[str]]:
    reasons: list[tuple[int, str]] = []
    if r.score_psi >= cfg.psi_act:
        reasons.append((2, f"score PSI {r.score_psi:.3f} >= {cfg.psi_act}: the score level has shifted"))
    elif r.score_psi >= cfg.psi_watch:
        reasons.append((1, f"score PSI {r.score_psi:.3f} >= {cfg.psi_watch}"))
    for col, seg in r.segment_psi.items():
        for value, v in sorted(seg.items(), key=lambda kv: -kv[1]):
            if v >= cfg.psi_act:
                reasons.append((2, f"score PSI {v:.3f} in segment {col}={value} >= {cfg.psi_act}: "
                                   "this segment's risk has shifted"))
            elif v >= cfg.psi_watch:
                reasons.append((1, f"score PSI {v:.3f} in segment {col}={value} >= {cfg.psi_watch}"))
    for col, seg in r.unseen_segments.items():
        for value, rows in seg.items():
            if rows >= cfg.min_tier_rows:
                reasons.append((1, f"segment {col}={value} ({rows:,} rows) is absent from the development reference: "
                                   "no score PSI can be computed for it, and the model never saw it"))
    for key, v in sorted(r.level.items(), key=lambda kv: -abs(kv[1])):
        where = "the book" if key == "all" else f"segment {key}"
        # informative only: a mean PD is driven by its tail and moves with the book's ageing and survivorship
        # (about -35% over a year in the simulator's no-shock book), so it never escalates beyond watch
        if abs(v) >= cfg.level_act:
            reasons.append((1, f"mean PD of {where} moved {v:+.0%} against development "
                               f"(|change| >= {cfg.level_act:.0%})"))
    for name, v in sorted(r.csi.items(), key=lambda kv: -kv[1]):
        key = name in cfg.key_features
        if v >= cfg.csi_act:
            reasons.append((3 if key else 1, f"CSI {v:.3f} of {'key feature ' if key else ''}{name} >= {cfg.csi_act}"))
        elif v >= cfg.csi_watch:
            reasons.append((1, f"CSI {v:.3f} of {name} >= {cfg.csi_watch}"))
    m = r.matured
    if m:
        if m.dev_auc is not None and m.auc < m.dev_auc - cfg.auc_drop_rebuild:
            reasons.append((3, f"observed AUC {m.auc:.3f} [{m.auc_ci_low:.3f}, {m.auc_ci_high:.3f}] is more "
                               f"than {cfg.auc_drop_rebuild} below development {m.dev_auc:.3f}: ranking degraded"))
        for c in m.calibration:
            if not c.passed:
                reasons.append((2, f"calibration fails in tier {c.tier}: observed {c.observed_rate:.3f} "
                                   f"(Jeffreys [{c.jeffreys_low:.3f}, {c.jeffreys_high:.3f}]) vs predicted "
                                   f"{c.predicted_rate:.3f}"))
    e = r.estimated
    if e and e.trusted and r.calibration_basis is not None:
        dev_auc = r.calibration_basis.dev_auc
        if dev_auc is not None and e.auc < dev_auc - cfg.auc_drop_rebuild:
            reasons.append((1, f"estimated AUC {e.auc:.3f} is more than {cfg.auc_drop_rebuild} below development"))
    if r.calibration_basis is not None and not r.calibration_basis.passed:
        failed = "; ".join(f"tier {c.tier} observed {c.observed_rate:.3f} (Jeffreys [{c.jeffreys_low:.3f}, "
                           f"{c.jeffreys_high:.3f}]) vs predicted {c.predicted_rate:.3f}"
                           for c in r.calibration_basis.calibration if not c.passed)
        reasons.append((2, f"calibration failed on the last matured data ({failed}; tolerance "
                           f"{cfg.calibration_tolerance:.0%}): estimates are not trusted, recalibrate"))
    worst = max((lvl for lvl, _ in reasons), default=0)
    ordered = [text for lvl, text in sorted(reasons, key=lambda x: -x[0])]
    return VERDICTS[worst], ordered


def load_reference(model_name: str, version: str) -> tuple[dict, pd.DataFrame | None, dict]:
    import mlflow  # heavy: see registry.configure

    c = registry.client()
    # read into memory inside a temporary directory: no copy of development rows is left behind
    with registry.backend_errors(f"read the reference profile of {model_name} v{version}"), \
            tempfile.TemporaryDirectory() as tmp:
        run_id = c.get_model_version(model_name, version).run_id
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reference", dst_path=tmp))
        profile = json.loads((local / "profile.json").read_text(encoding="utf-8"))
        sample_path = local / "reference_sample.parquet"
        sample = pd.read_parquet(sample_path) if sample_path.exists() else None
    return profile, sample, {"run_id": run_id}


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, spec: PipelineSpec, path: Path) -> Path:
    """Evidently's DataDriftPreset on capped samples: its cost does not grow with the batch."""
    from evidently import DataDefinition, Dataset, Report  # heavy (seconds): only when its report is asked for
    from evidently.presets import DataDriftPreset  # heavy: as above

    num = [f.name for f in spec.model_inputs if f.type == "numeric"]
    cat = [f.name for f in spec.model_inputs if f.type == "categorical"]
    dd = DataDefinition(numerical_columns=num + ["pd"], categorical_columns=cat)
    cols = num + cat + ["pd"]
    snap = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current[cols].reset_index(drop=True), data_definition=dd),
        reference_data=Dataset.from_pandas(reference[cols].reset_index(drop=True), data_definition=dd))
    path.parent.mkdir(parents=True, exist_ok=True)
    snap.save_html(str(path))
    return path


def run_monitor(spec: PipelineSpec, model, profile: dict, frame: pd.DataFrame, label: str, *,
                ref_sample: pd.DataFrame | None = None, matured_frame: pd.DataFrame | None = None,
                evidently_path: Path | None = None, binning: Binning = bin_counts) -> MonitorResult:
    """Monitor one batch (validated rows). `frame` may carry the target (matured labels) or not.
    `binning` counts the batch on the reference bins (see `Binning`)."""
    cfg = spec.monitoring
    frame = with_derived(frame, spec)  # derived model inputs drift too: computed as the model's encoding does
    p = model.predict_pd(frame)
    st = stability(frame, p, profile, spec, binning)
    matured = estimated = basis = None
    seed = spec.split.seed
    tiers_of = (lambda q: tier_of(q, spec.policy)) if spec.policy else (lambda q: np.full(len(q), "all"))
    has_target = spec.target.column in frame.columns and frame[spec.target.column].notna().all()
    if has_target:
        y = target_vector(frame, spec)
        if 0 < y.sum() < len(y):
            matured = matured_performance(y, p, tiers_of(p), profile, cfg, seed)
    if matured_frame is not None and len(matured_frame):
        ym = target_vector(matured_frame, spec)
        pm = model.predict_pd(matured_frame)
        cal = calibration_by_tier(ym, pm, tiers_of(pm), cfg)
        basis = CalibrationBasis(passed=all(c.passed for c in cal), calibration=tuple(cal), n=int(len(ym)),
                                 dev_auc=profile["development_metrics"].get("test_auc"))
    if matured is None:
        estimated = estimated_performance(p, basis)
    result = MonitorResult(label, int(len(frame)), st.score_psi, st.csi, st.segment_psi,
                           level_shift(frame, p, profile, spec), matured, estimated, basis,
                           unseen_segments=unseen_segments(frame, profile))
    if evidently_path is not None and ref_sample is not None:
        cur = frame[[f.name for f in spec.model_inputs]].assign(pd=p)
        cur = cur.sample(min(cfg.evidently_sample, len(cur)), random_state=seed)
        ref = ref_sample.sample(min(cfg.evidently_sample, len(ref_sample)), random_state=seed)
        result = replace(result, evidently_html=str(evidently_report(ref, cur, spec, evidently_path)))
    verdict, reasons = decide_verdict(result, cfg)
    return replace(result, verdict=verdict, reasons=tuple(reasons))
