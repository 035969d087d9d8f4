"""Shared fixtures for the creditgov test suite.

Tiers: tests/code (unit, fast), tests/data (the real data and the expectation suite),
tests/model (the real model's properties), tests/e2e (the pipeline, MLflow and the CLI).

Helpers shared across tiers live in tests/helpers.py (`import helpers`; this file puts tests/ on sys.path).

Anything that writes (the MLflow SQLite store, quarantine files, suites) runs in a
temporary project root: the code resolves `expectations/...`, `quarantine/` and the
default tracking URI `sqlite:///<cwd>/mlflow.db` against the working directory.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from creditgov import env

# telemetry off, no progress bars: set before any heavy library is imported by a test
env.apply()

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # the shared helpers (tests/helpers.py) and tests/pg_server.py
    sys.path.insert(0, str(TESTS_DIR))

from helpers import REPO_ROOT, TINY_ROUNDS, copy_project, in_project  # noqa: E402

SPEC_PATH = "pipelines/application.yaml"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def spec(repo_root):
    from creditgov.spec import load_spec

    return load_spec(repo_root / SPEC_PATH)


@pytest.fixture(scope="session")
def behaviour_spec(repo_root):
    from creditgov.spec import load_spec

    return load_spec(repo_root / "pipelines/behaviour.yaml")


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
def credit_splits(spec, credit_data):
    """The application spec's train / validation / test split of credit_data. Shared: copy before changing it."""
    from creditgov.model import train

    return train.split(credit_data, spec)


@pytest.fixture(scope="session")
def tiny_rows(credit_splits):
    """(training rows, validation rows) of the tiny model: 800 and 400 rows of the split."""
    return credit_splits.train.sample(800, random_state=1), credit_splits.validation.sample(400, random_state=1)


@pytest.fixture(scope="session")
def tiny_model(spec, tiny_rows):
    """The one real CreditModel of the code and data tiers: TINY_ROUNDS boosting rounds on tiny_rows, the
    application spec's catalogue, constraints and calibration. Shared: never change it (patch a copy)."""
    from creditgov.model import train

    return train.fit_model(*tiny_rows, spec, n_estimators=TINY_ROUNDS)


@pytest.fixture(scope="session")
def make_project():
    """Factory for a project root in a given directory (for module-scoped projects)."""
    return copy_project


@pytest.fixture
def project(tmp_path) -> Path:
    """A temporary project root as the working directory, MLflow on its default SQLite file there."""
    with in_project(copy_project(tmp_path)):
        yield tmp_path


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
