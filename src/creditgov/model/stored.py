"""A stored PD model, whichever kind it is: the calibrated XGBoost model (credit_model.CreditModel) or the compiled
WOE scorecard (scorecard_pd.ScorecardPD). Both are JSON files in one directory with the same `model.json`, whose
`format` says which; both give the decision path the same interface (predict_pd, explain, contributions,
encodings, feature_names)."""
from __future__ import annotations

import json
from pathlib import Path

from creditgov.model.credit_model import META_FILE, CreditModel
from creditgov.model.scorecard_pd import FORMAT as SCORECARD_FORMAT
from creditgov.model.scorecard_pd import ScorecardPD


def model_kind(model) -> str:
    """"scorecard" or "xgboost"."""
    return "scorecard" if isinstance(model, ScorecardPD) else "xgboost"


def load_model(directory: str | Path):
    """The stored model in `directory`: a ScorecardPD when its model.json says so, else a CreditModel."""
    meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format") == SCORECARD_FORMAT:
        return ScorecardPD.load(directory)
    return CreditModel.load(directory)
