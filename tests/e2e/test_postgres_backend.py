"""End to end: MLflow's backend on a real PostgreSQL server.

The session's private server (`postgres` fixture, tests/pg_server.py) gives this module a fresh
database; the real CLI trains, registers and promotes the application model into it, then decides
with the champion loaded from it. What landed is read back twice, through MlflowClient on the same
URI and with plain SQL on MLflow's registry tables. The audit store is a temporary SQLite file here
(the audit store's own PostgreSQL tests use the same fixture). An unreachable PostgreSQL URI fails
fast with exit 7 and one line; that test needs no server.

The gates are not the subject here: the temporary project's pipelines/application.yaml is the
repository's with a cheaper evaluation and permissive gates (same source, catalogue and policy), so
five boosting rounds are enough for the version to be promoted to @champion.
"""
from __future__ import annotations

import json
import socket
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import cli_env, run_creditgov, write_fast_spec

pytestmark = pytest.mark.e2e

NAME = "credit-application-pd"
SPEC = "pipelines/application.yaml"
AS_OF = "2025-01-01"
APPROVER = "tester"
DB = "mlflow_backend"


def _env(**extra: str) -> dict:
    return cli_env(CREDITGOV_PSEUDONYM_KEY="postgres-backend-test-key", **extra)


def _sqlite_files(root: Path) -> list[Path]:
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                if fh.read(16) == b"SQLite format 3\x00":
                    found.append(p)
    return found


@pytest.fixture(scope="module")
def pg(postgres, tmp_path_factory, make_project):
    """Train --promote, then decide, in a temporary project with MLflow on a fresh PostgreSQL database."""
    root = make_project(tmp_path_factory.mktemp("pg-project"))
    write_fast_spec(root, SPEC)  # in place
    audit_db = tmp_path_factory.mktemp("pg-audit") / "audit.db"
    uri = postgres.url(DB)
    env = _env(MLFLOW_TRACKING_URI=uri, CREDITGOV_AUDIT_URL=f"sqlite:///{audit_db}")
    t0 = time.monotonic()
    train = run_creditgov("train", "--spec", SPEC, "--rounds", "5", "--promote", "--approver", APPROVER, cwd=root,
                          env=env)
    t1 = time.monotonic()
    decide = (run_creditgov("decide", "--spec", SPEC, "--as-of", AS_OF, cwd=root, env=env)
              if train.returncode == 0 else None)
    t2 = time.monotonic()
    print(f"postgres backend: server start {postgres.start_seconds:.2f} s, train {t1 - t0:.1f} s, "
          f"decide {t2 - t1:.1f} s")
    return SimpleNamespace(root=root, uri=uri, audit_db=audit_db, train=train, decide=decide)


@pytest.fixture(scope="module")
def trained(pg):
    assert pg.train.returncode == 0, f"train exited {pg.train.returncode}: {pg.train.stderr[-2000:]}"
    return pg


@pytest.fixture(scope="module")
def client(trained):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=trained.uri, registry_uri=trained.uri)


@pytest.fixture(scope="module")
def champion(client):
    return client.get_model_version_by_alias(NAME, "champion")


@pytest.fixture(scope="module")
def sql(postgres, trained):
    """rows of a query on the module's MLflow database, straight from PostgreSQL."""
    def query(text: str, *params) -> list[tuple]:
        with closing(postgres.connect(DB)) as conn, conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall()

    return query


def test_the_tracking_uri_is_the_private_postgresql_server(pg, postgres):
    assert pg.uri == f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/{DB}"


def test_train_with_promote_exits_0(trained):
    assert "Traceback" not in trained.train.stderr


def test_mlflow_client_finds_the_model_its_evidence_and_the_champion(client, champion, trained):
    assert client.get_registered_model(NAME).name == NAME
    assert str(champion.version) == "1"
    tags = champion.tags
    assert tags["creditgov.registration"] == "complete"
    assert tags["approved_by"] == APPROVER
    assert tags["gates_at_registration"] == "pass"
    assert json.loads(tags["gate_evidence"])
    for key in ("spec_hash", "train_data_hash", "input_data_hash", "run_id"):
        assert tags[key], key
    assert tags["run_id"] == champion.run_id
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == str(champion.version)
    run = client.get_run(champion.run_id)  # the training run is in the same database
    assert run.data.params["spec_hash"] == tags["spec_hash"]
    assert run.data.tags["creditgov.stage"] == "train"
    assert run.data.metrics and run.info.status == "FINISHED"


def test_sql_on_the_registry_tables_finds_the_same_model_and_champion(sql, champion):
    assert sql("SELECT name FROM registered_models") == [(NAME,)]
    versions = sql("SELECT version, run_id, status FROM model_versions WHERE name = %s", NAME)
    assert versions == [(1, champion.run_id, "READY")]
    aliases = dict(sql("SELECT alias, version FROM registered_model_aliases WHERE name = %s", NAME))
    assert aliases == {"champion": 1, "challenger": 1}
    tags = dict(sql("SELECT key, value FROM model_version_tags WHERE name = %s AND version = 1", NAME))
    assert tags["creditgov.registration"] == "complete"
    assert tags["approved_by"] == APPROVER
    assert tags["run_id"] == champion.run_id
    runs = sql("SELECT status FROM runs WHERE run_uuid = %s", champion.run_id)
    assert runs == [("FINISHED",)]


def test_decide_loads_the_champion_from_postgresql_and_decides(trained, champion):
    r = trained.decide
    assert r is not None and r.returncode == 0, f"decide exited {r and r.returncode}: {r and r.stderr[-2000:]}"
    logs = sorted((trained.root / "decisions").glob(f"*-{AS_OF}-v{str(champion.version)}-*.parquet"))
    assert len(logs) == 1, sorted(p.name for p in (trained.root / "decisions").iterdir())
    import pandas as pd

    log = pd.read_parquet(logs[0])
    assert len(log) > 4000
    assert set(log["model_version"].astype(str)) == {str(champion.version)}
    assert trained.audit_db.exists()  # the audit store went where CREDITGOV_AUDIT_URL said


def test_nothing_was_written_to_a_sqlite_mlflow_store_in_the_project(trained):
    assert not list(trained.root.rglob("mlflow.db"))
    assert _sqlite_files(trained.root) == []


def _closed_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_postgresql_fails_training_fast_with_exit_7_and_one_line(tmp_path, make_project):
    root = make_project(tmp_path / "project")
    port = _closed_port()
    uri = f"postgresql+psycopg2://postgres:s3cret-pw@127.0.0.1:{port}/{DB}"
    env = _env(MLFLOW_TRACKING_URI=uri, CREDITGOV_AUDIT_URL=f"sqlite:///{tmp_path / 'audit.db'}")
    t0 = time.monotonic()
    r = run_creditgov("train", "--spec", SPEC, "--rounds", "5", "--promote", "--approver", APPROVER, cwd=root,
                      env=env, timeout=120)
    elapsed = time.monotonic() - t0
    assert r.returncode == 7, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("creditgov: error: MLflow tracking at postgresql+psycopg2://postgres:***@127.0.0.1")
    assert f":{port}/" in lines[0] and "Connection refused" in lines[0]
    assert "s3cret-pw" not in r.stderr + r.stdout  # the password is never printed
    assert elapsed < 30, f"took {elapsed:.1f} s to report an unreachable server"
    assert not (root / "mlflow.db").exists() and not (root / "mlruns").exists()
