"""Shared fixtures for the creditgov test suite.

Tiers: tests/code (unit, fast), tests/data (the real data and the expectation suite),
tests/model (the real model's properties), tests/e2e (the pipeline, MLflow and the CLI).

Anything that writes (the MLflow SQLite store, quarantine files, suites) runs in a
temporary project root: the code resolves `expectations/...`, `quarantine/` and the
default tracking URI `sqlite:///<cwd>/mlflow.db` against the working directory.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from creditgov import env

# telemetry off, no progress bars: set before any heavy library is imported by a test
env.apply()

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = "pipelines/application.yaml"
# environment variables that would point MLflow away from the project's own SQLite file
MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def copy_project(dst: Path) -> Path:
    """A minimal project root: the pipelines/ and expectations/ of the repository."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("pipelines", "expectations"):
        shutil.copytree(REPO_ROOT / name, dst / name)
    return dst


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def spec(repo_root):
    from creditgov.spec import load_spec

    return load_spec(repo_root / SPEC_PATH)


@pytest.fixture(scope="session")
def stored_suite(repo_root, spec) -> dict:
    from creditgov.data.expectations import read_suite

    return read_suite(repo_root / spec.validation.suite)


@pytest.fixture(scope="session")
def credit_data(spec):
    """The real modeldata credit_data frame as creditgov loads it. Shared: copy before changing it."""
    from creditgov.data import inputs

    return inputs.load(spec).frame


@pytest.fixture(scope="session")
def make_project():
    """Factory for a project root in a given directory (for module-scoped projects)."""
    return copy_project


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A temporary project root as the working directory, MLflow on its default SQLite file there."""
    copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    for var in MLFLOW_URI_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def seed() -> int:
    return 20240611


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server for the whole session (tests/pg_server.py), stopped at its end.

    `postgres.url("name")` creates a fresh, empty database and returns its SQLAlchemy / MLflow URL
    `postgresql+psycopg2://postgres@127.0.0.1:PORT/name` (no name: a generated one);
    `postgres.connect("name")` is a psycopg2 connection to it (autocommit) for SQL assertions.
    Where the server cannot start (no binaries, initdb fails) every test using it is skipped with
    the reason, or fails when CREDITGOV_REQUIRE_POSTGRES=1 (CI sets it once it has installed PostgreSQL).
    """
    import os
    import sys

    tests_dir = str(Path(__file__).resolve().parent)
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from pg_server import PostgresServer, PostgresUnavailable

    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CREDITGOV_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL server not available: {exc} (CREDITGOV_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(f"PostgreSQL server not available: {exc}")
    try:
        yield server
    finally:
        server.stop()
