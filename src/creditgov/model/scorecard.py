"""The transparent challenger: a WOE-binned logistic scorecard (optbinning), scaled to points."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from creditgov.spec import PipelineSpec


@dataclass
class ScorecardModel:
    scorecard_: object  # optbinning.scorecard.Scorecard
    features: list[str]

    def predict_pd(self, raw: pd.DataFrame) -> np.ndarray:
        return self.scorecard_.predict_proba(_frame(raw, self.features))[:, 1]

    def points(self, raw: pd.DataFrame) -> np.ndarray:
        return self.scorecard_.score(_frame(raw, self.features))

    def table(self) -> pd.DataFrame:
        """The regulator-readable table: variable, bin, WOE, points."""
        return self.scorecard_.table(style="detailed")


def _frame(raw: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    return raw[features].copy()


def fit_scorecard(train: pd.DataFrame, y: np.ndarray, spec: PipelineSpec) -> ScorecardModel:
    """The scorecard fitted on `train` with targets `y` (train.target_vector): the caller derives the target,
    so this module needs nothing from train.py (which uses it in cross-validation)."""
    from optbinning import BinningProcess, Scorecard  # heavy: only when a scorecard is fitted
    from sklearn.linear_model import LogisticRegression  # heavy: as above

    feats = [f.name for f in spec.model_inputs]
    cats = [f.name for f in spec.model_inputs if f.type == "categorical"]
    s = spec.scorecard
    card = Scorecard(
        binning_process=BinningProcess(feats, categorical_variables=cats),
        estimator=LogisticRegression(max_iter=1000),
        scaling_method="pdo_odds",
        scaling_method_params={"pdo": s.pdo, "odds": s.odds, "scorecard_points": s.base_points},
    )
    card.fit(_frame(train, feats), y)
    return ScorecardModel(card, feats)
