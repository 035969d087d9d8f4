"""End-to-end fixtures: a module-scoped project root as the working directory, and the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(scope="module")
def e2e_root(tmp_path_factory, make_project):
    """One project root per test module, the working directory for the whole module."""
    root = make_project(tmp_path_factory.mktemp("e2e-project"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for var in MLFLOW_URI_VARS:
            mp.delenv(var, raising=False)
        yield root


@pytest.fixture(scope="module")
def tracking_uri(e2e_root) -> str:
    from creditgov.governance import registry

    return registry.default_uri(e2e_root)


@pytest.fixture(scope="module")
def client(tracking_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@pytest.fixture(scope="module")
def run_cli(e2e_root):
    """`python -m creditgov ...` in the project root, MLflow on the project's default SQLite file."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_URI_VARS and k != "CREDITGOV_DEBUG"}

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "creditgov", *args], cwd=cwd or e2e_root, env=env,
                              capture_output=True, text=True, timeout=300)

    return run

