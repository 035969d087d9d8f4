"""The transparent challenger: a WOE-binned logistic scorecard (optbinning), scaled to points.

The catalogue's risk directions hold for it as for the XGBoost model: a numeric feature marked `monotone` is
binned with optbinning's monotonic event-rate trend in that direction, and an ordered categorical marked so is
binned as its position in the catalogue's order (0, 1, ...) with the same trend; other categoricals are binned as
categories. So the scorecard can pass the monotonicity gate and be registered (model/scorecard_pd.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from creditgov.model.derived import derived_values
from creditgov.spec import PipelineSpec, derived_order

TREND = {"increasing": "ascending", "decreasing": "descending"}  # risk direction -> optbinning event-rate trend


@dataclass
class ScorecardModel:
    scorecard_: object  # optbinning.scorecard.Scorecard
    features: list[str]
    ordinal: dict[str, list[str]] = field(default_factory=dict)  # monotone ordered categoricals: binned as positions
    derived: dict[str, str] = field(default_factory=dict)  # derived features: their expressions (model.derived)

    def prepare(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The frame optbinning reads: the features (derived ones computed), a monotone ordered categorical as its
        position."""
        return _frame(raw, self.features, self.ordinal, self.derived)

    def predict_pd(self, raw: pd.DataFrame) -> np.ndarray:
        return self.scorecard_.predict_proba(self.prepare(raw))[:, 1]

    def points(self, raw: pd.DataFrame) -> np.ndarray:
        return self.scorecard_.score(self.prepare(raw))

    def table(self) -> pd.DataFrame:
        """The regulator-readable table: variable, bin, WOE, points."""
        return self.scorecard_.table(style="detailed")


def _frame(raw: pd.DataFrame, features: list[str], ordinal: dict[str, list[str]],
           derived: dict[str, str] | None = None) -> pd.DataFrame:
    if derived:
        values = derived_values(raw, derived)
        raw = raw.drop(columns=[c for c in derived if c in raw.columns]).assign(
            **{k: pd.Series(v, index=raw.index) for k, v in values.items()})
    out = raw[features].copy()
    for name, cats in ordinal.items():
        pos = pd.Categorical(out[name].astype(object).where(out[name].notna(), None), categories=cats).codes
        out[name] = np.where(pos < 0, np.nan, pos.astype("float64"))
    return out


def fit_scorecard(train: pd.DataFrame, y: np.ndarray, spec: PipelineSpec) -> ScorecardModel:
    """The scorecard fitted on `train` with targets `y` (train.target_vector): the caller derives the target,
    so this module needs nothing from train.py (which uses it in cross-validation)."""
    from optbinning import BinningProcess, Scorecard  # heavy: only when a scorecard is fitted
    from sklearn.linear_model import LogisticRegression  # heavy: as above

    feats = [f.name for f in spec.model_inputs]
    ordinal = {f.name: list(f.categories) for f in spec.model_inputs
               if f.type == "categorical" and f.ordered and f.monotone in TREND}
    cats = [f.name for f in spec.model_inputs if f.type == "categorical" and f.name not in ordinal]
    trends = {f.name: {"monotonic_trend": TREND[f.monotone]} for f in spec.model_inputs
              if f.monotone in TREND and f.name not in cats}
    derived = {f.name: f.derived for f in derived_order(spec.model_inputs)}
    related = set(derived) | {op for f in spec.model_inputs for op in f.operands}
    frame = _frame(train, feats, ordinal, derived)
    s = spec.scorecard
    while True:
        card = Scorecard(
            binning_process=BinningProcess(feats, categorical_variables=cats, binning_fit_params=trends),
            estimator=LogisticRegression(max_iter=1000),
            scaling_method="pdo_odds",
            scaling_method_params={"pdo": s.pdo, "odds": s.odds, "scorecard_points": s.base_points},
        )
        card.fit(frame[feats], y)
        # a derived feature, or a feature one is computed from, binned with a risk direction whose coefficient came
        # out reversed (> 0: more risk where its bins say less; assets beside assets less debts do this) would turn
        # its points the wrong way: the classic remedy, it leaves the scorecard (the largest first) and the rest
        # is fitted again. (Other characteristics are left as they were before derived features existed.)
        coef = dict(zip(card.binning_process_.variable_names, np.ravel(card.estimator_.coef_)))
        reversed_ = [f for f in feats if f in trends and f in related and coef.get(f, 0.0) > 0]
        if not reversed_ or len(feats) == 1:
            break
        worst = max(reversed_, key=lambda f: coef[f])
        feats = [f for f in feats if f != worst]
        trends.pop(worst)
        ordinal.pop(worst, None)
    return ScorecardModel(card, feats, ordinal, derived)
