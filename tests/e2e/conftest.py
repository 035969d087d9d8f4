"""End-to-end fixtures: a module-scoped project root as the working directory, the real CLI, and the models
several modules decide with, trained or fitted once per session.

Session-trained projects are never used in place: a module decides in its own copy
(`helpers.copy_trained_project`, which rewrites MLflow's absolute artifact locations to the copy's), so no
module sees another's decisions, audit records or registry changes.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import (APPLICATION_FAST, CLI_DROP_ENV, QUICK_ROUNDS, copy_project, fit_saved_model, in_project,
                     run_creditgov, train_and_promote, write_fast_spec)

APPLICATION = "pipelines/application.yaml"
# what a session training must not inherit from the caller (besides the MLflow URIs in_project unsets)
TRAINING_DROP_ENV = (*CLI_DROP_ENV, "CREDITGOV_DECISION_LOG", "CREDITGOV_SPEC", "CREDITGOV_CHUNK_ROWS",
                     "CREDITGOV_AUDIT_CHUNK_ROWS", "CREDITGOV_PSEUDONYM_KEY")


@pytest.fixture(scope="module")
def e2e_root(tmp_path_factory, make_project):
    """One project root per test module, the working directory for the whole module."""
    root = make_project(tmp_path_factory.mktemp("e2e-project"))
    with in_project(root):
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
    def run(*args: str, cwd: Path | None = None):
        return run_creditgov(*args, cwd=cwd or e2e_root)

    return run


# --------------------------------------------------------------------------- models shared by modules


@pytest.fixture(scope="session")
def application_model_dir(tmp_path_factory) -> Path:
    """The quick application model: QUICK_ROUNDS (30) boosting rounds on credit_data's split (the spec's
    seed and thread count), saved as JSON files; the golden logs (golden/) were made with this fit. Read
    only: modules load it and serve it as a registered version (helpers.serve_saved_models)."""
    from creditgov.data import inputs
    from creditgov.spec import load_spec

    root = copy_project(tmp_path_factory.mktemp("application-model"))
    with in_project(root, drop=TRAINING_DROP_ENV):
        spec = load_spec(APPLICATION)
        return fit_saved_model(spec, inputs.load(spec).frame, root / "model", QUICK_ROUNDS)


def _trained(root: Path, spec_path: str, rounds: int, approver: str) -> SimpleNamespace:
    from creditgov.spec import load_spec

    with in_project(root, drop=TRAINING_DROP_ENV):
        t = train_and_promote(load_spec(spec_path), spec_path, rounds, approver)
    return SimpleNamespace(root=root, spec_path=spec_path, trained=t.trained, version=t.version, gates=t.gates)


@pytest.fixture(scope="session")
def trained_application(tmp_path_factory) -> SimpleNamespace:
    """pipelines/application.yaml as shipped, trained with 40 boosting rounds and promoted by "reviewer", once
    per session. Copy it (helpers.copy_trained_project) before deciding."""
    return _trained(copy_project(tmp_path_factory.mktemp("trained-application")), APPLICATION, 40, "reviewer")


@pytest.fixture(scope="session")
def trained_application_fast(tmp_path_factory) -> SimpleNamespace:
    """The application spec with a cheaper evaluation and permissive gates (helpers.write_fast_spec, as
    APPLICATION_FAST), trained with 30 boosting rounds and promoted by "audit test approver", once per
    session. Copy it (helpers.copy_trained_project) before deciding."""
    root = copy_project(tmp_path_factory.mktemp("trained-application-fast"))
    write_fast_spec(root, APPLICATION_FAST)
    return _trained(root, APPLICATION_FAST, 30, "audit test approver")
