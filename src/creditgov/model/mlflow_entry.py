"""MLflow "model from code" entry point: loads the JSON-stored model (CreditModel or
ScorecardPD, model/stored.py), no pickle.

MLflow runs this file when the model is loaded; `set_model` names the model object.
"""
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class CreditPDModel(PythonModel):
    def load_context(self, context):
        # creditgov is importable only once MLflow has put the logged code_paths on sys.path
        from creditgov.model.stored import load_model

        self.model = load_model(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"pd": self.model.predict_pd(model_input)}, index=model_input.index)


mlflow.models.set_model(CreditPDModel())
