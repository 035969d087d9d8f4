"""Where MLflow lives and how creditgov talks to it.

Default backend: a SQLite file `mlflow.db` in the project root (the working directory)
with artifacts under `mlartifacts/`; any MLFLOW_TRACKING_URI is honoured instead.
Nothing here runs at import time: `configure()` is called by the commands.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from creditgov.errors import TrackingError

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"


def default_uri(root: Path | None = None) -> str:
    root = (root or Path.cwd()).resolve()
    return f"sqlite:///{root / DB_FILE}"


_DEFAULTS_SET: set[str] = set()  # mlflow.set_tracking_uri exports the URI; a default we set is not the user's


def _user_env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value and value not in _DEFAULTS_SET else None


def tracking_uri() -> str:
    return _user_env("MLFLOW_TRACKING_URI") or default_uri()


def configure() -> str:
    import mlflow

    uri = tracking_uri()
    registry = _user_env("MLFLOW_REGISTRY_URI") or uri
    if not _user_env("MLFLOW_TRACKING_URI"):
        _DEFAULTS_SET.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    return uri


@contextmanager
def backend_errors(action: str):
    """Turn MLflow and connection failures into one TrackingError line."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:  # mlflow raises MlflowException, requests errors, sqlalchemy errors
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, (MlflowException, OSError, ConnectionError)) and "sqlalchemy" not in type(exc).__module__:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise TrackingError(f"MLflow tracking at {tracking_uri()}: {action} failed: {first}") from None


def is_not_found(exc) -> bool:
    """True for MLflow's "no such model / version / alias" answers, false for a backend failure."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def check() -> None:
    """One cheap call to the backend, so an unreachable server fails in bounded time with one line."""
    configure()
    with backend_errors("reach the tracking backend"):
        client().search_experiments(max_results=1)


def ensure_experiment(name: str) -> str:
    """The experiment id, creating it with artifacts beside the SQLite file for the default backend."""
    import mlflow

    with backend_errors(f"open experiment '{name}'"):
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        uri = tracking_uri()
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / ARTIFACT_DIR).resolve().as_uri()
        return mlflow.create_experiment(name, artifact_location=location)


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def load_registered(model_name: str, version: str | None = None, alias: str = "champion"):
    """(CreditModel, version, run_id) of a registered version, or of the version behind `alias`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from creditgov.model import CreditModel

    c = client()
    with backend_errors(f"load model {model_name}"):
        try:
            mv = (c.get_model_version(model_name, str(version)) if version
                  else c.get_model_version_by_alias(model_name, alias))
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
            what = f"version {version}" if version else f"version with alias '{alias}'"
            raise TrackingError(f"registered model '{model_name}' has no {what} "
                                f"(train and promote one first: make train)") from None
        if mv.tags.get("creditgov.registration") != "complete":
            raise TrackingError(f"{model_name} version {mv.version} is not completely registered "
                                "(its training run was interrupted): train again")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the model is read into memory; no copy is left behind
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{mv.version}", dst_path=tmp)
            model = CreditModel.load(Path(local) / "artifacts" / "model")
    return model, str(mv.version), mv.run_id
