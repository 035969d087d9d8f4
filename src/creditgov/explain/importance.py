"""Global explanations from exact TreeSHAP attributions (CreditModel.contributions: creditgov.model.treeshap)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from creditgov.model.credit_model import CreditModel


def global_importance(model: CreditModel, raw: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| in calibrated log-odds per model feature, largest first."""
    phi, _ = model.contributions(raw)
    imp = pd.DataFrame({"feature": model.feature_names, "mean_abs_shap": np.abs(phi).mean(axis=0)})
    return imp.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
