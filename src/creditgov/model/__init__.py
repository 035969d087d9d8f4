"""Model room: probability-of-default models and their measures.

credit_model (the calibrated XGBoost PD model, stored as JSON), treeshap (exact per-decision
attributions of its log-odds), scorecard (the binned logistic challenger), scorecard_pd (the scorecard
compiled into a registrable PD model with exact points-below-maximum attributions), stored (loads either kind),
monotonic (monotone constraints from the catalogue), metrics (AUC, KS, Gini, PSI, calibration), train (fitting both),
mlflow_entry (the MLflow "model from code" file that loads a registered model).
"""


def __getattr__(name):
    # models registered before the rooms existed load `from creditgov.model import CreditModel`
    if name == "CreditModel":
        from creditgov.model.credit_model import CreditModel

        return CreditModel
    raise AttributeError(f"module 'creditgov.model' has no attribute {name!r}")
