"""Where MLflow lives and how creditgov talks to it.

Default backend: a SQLite file `mlflow.db` in the project root (the working directory)
with artifacts under `mlartifacts/`; any MLFLOW_TRACKING_URI is honoured instead.
Nothing here runs at import time: `configure()` is called by the commands.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from creditgov.errors import TrackingError, UsageError
from creditgov.model.stored import load_model

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
    import mlflow  # heavy (seconds): only when a command uses the registry

    uri = tracking_uri()
    registry = _user_env("MLFLOW_REGISTRY_URI") or uri
    if not _user_env("MLFLOW_TRACKING_URI"):
        _DEFAULTS_SET.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    _watch_transactions()
    return uri


# Ctrl-C and the store. A KeyboardInterrupt raised inside one of the store's SQLAlchemy transactions
# can leave the SQLite file locked until the process ends: MLflow's own clean-up (ending the run as
# FAILED) then waits out its 20 s busy timeout, fails and logs a traceback. The command line's SIGINT
# handler asks `in_transaction()`: while the main thread is inside a transaction the signal is only
# noted, and `on_transaction_end` (set by the command line) delivers it again once the transaction is
# over. Consistency does not depend on this (a version's aliases come after its `complete` tag); how
# fast and how quietly an interrupted command ends does.
_open_transactions: set[int] = set()
on_transaction_end = None  # callable, or None
_watching = False


def in_transaction() -> bool:
    return bool(_open_transactions)


def _transaction_created(session, transaction) -> None:
    if transaction.parent is None and threading.current_thread() is threading.main_thread():
        _open_transactions.add(id(transaction))


def _transaction_ended(session, transaction) -> None:
    if id(transaction) in _open_transactions:
        _open_transactions.discard(id(transaction))
        if not _open_transactions and on_transaction_end is not None:
            on_transaction_end()


def _watch_transactions() -> None:
    global _watching
    if _watching:
        return
    from sqlalchemy import event  # heavy: only once the registry is configured
    from sqlalchemy.orm import Session  # heavy: only once the registry is configured

    event.listen(Session, "after_transaction_create", _transaction_created)
    event.listen(Session, "after_transaction_end", _transaction_ended)
    _watching = True


@contextmanager
def backend_errors(action: str):
    """Turn MLflow and connection failures into one TrackingError line."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:  # mlflow raises MlflowException, requests errors, sqlalchemy errors
        from mlflow.exceptions import MlflowException  # heavy: only once something failed

        if not isinstance(exc, (MlflowException, OSError, ConnectionError)) and "sqlalchemy" not in type(exc).__module__:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise TrackingError(f"MLflow tracking at {tracking_uri()}: {action} failed: {first}") from None


def is_not_found(exc) -> bool:
    """True for MLflow's "no such model / version / alias" answers, false for a backend failure."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


# Database servers MLflow reaches through SQLAlchemy. MLflow itself retries a refused connection for
# about 100 s, logging every attempt, and waits on a silent server without a timeout: they are reached
# here first, a few times, each with a connect timeout.
SQL_SERVER_SCHEMES = ("postgresql", "mysql", "mssql")
SQL_CONNECT_TIMEOUT_S = 10
SQL_CONNECT_ATTEMPTS = 3


def _check_sql_server(uri: str) -> None:
    """One connection to a database-server URI with bounded retries and timeouts, or one TrackingError line."""
    import sqlalchemy  # heavy: only for a database-server URI
    from sqlalchemy.engine import make_url  # heavy: only for a database-server URI
    from sqlalchemy.pool import NullPool  # heavy: only for a database-server URI

    try:
        url = make_url(uri)
    except Exception:  # sqlalchemy.exc.ArgumentError, whose message repeats the URL and its password
        raise TrackingError(f"MLflow tracking URI {uri.split(':', 1)[0]}:... is not a valid database URL") from None
    shown = url.render_as_string(hide_password=True)
    connect_args = {"connect_timeout": SQL_CONNECT_TIMEOUT_S} if url.get_backend_name() in ("postgresql", "mysql") else {}
    first = ""
    for attempt in range(1, SQL_CONNECT_ATTEMPTS + 1):
        try:
            engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
            try:
                with engine.connect():
                    return
            finally:
                engine.dispose()
        except ImportError as exc:  # SQLAlchemy 2.1 takes psycopg 3 for plain postgresql://; psycopg2 is installed
            hint = "; use postgresql+psycopg2://" if url.drivername == "postgresql" else ""
            raise TrackingError(f"MLflow tracking at {shown}: no database driver for '{url.drivername}' "
                                f"({exc}{hint})") from None
        except Exception as exc:
            if "sqlalchemy" not in type(exc).__module__:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if attempt < SQL_CONNECT_ATTEMPTS:
                time.sleep(0.5 * attempt)
    raise TrackingError(f"MLflow tracking at {shown}: reach the tracking backend failed "
                        f"({SQL_CONNECT_ATTEMPTS} attempts): {first}")


def check() -> None:
    """One cheap call to the backend, so an unreachable server fails in bounded time with one line."""
    uri = configure()
    # libpq's own connect timeout, for MLflow's engine too: a silent PostgreSQL server must not stall a run
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(SQL_CONNECT_TIMEOUT_S))
    for backend in dict.fromkeys((uri, _user_env("MLFLOW_REGISTRY_URI") or uri)):
        if backend.split(":", 1)[0].split("+", 1)[0].lower() in SQL_SERVER_SCHEMES:
            _check_sql_server(backend)
    with backend_errors("reach the tracking backend"):
        client().search_experiments(max_results=1)


def ensure_experiment(name: str) -> str:
    """The experiment id, creating it with artifacts beside the SQLite file for the default backend."""
    import mlflow  # heavy: see configure

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
    from mlflow.tracking import MlflowClient  # heavy: see configure

    return MlflowClient()


def registered_versions(c, model_name: str) -> list[str]:
    """The version numbers of a registered model, ascending (none when the model is not registered)."""
    from mlflow.exceptions import MlflowException  # heavy: see configure

    try:
        found = c.search_model_versions(f"name='{model_name}'")
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        found = []
    return sorted({str(v.version) for v in found}, key=int)


def _listed(versions: list[str]) -> str:
    """'1, 2, 3'; past 20 versions, runs of consecutive numbers as ranges ('1-57, 59')."""
    if len(versions) <= 20:
        return ", ".join(versions)
    runs: list[list[int]] = []
    for v in map(int, versions):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def unknown_version(c, model_name: str, version) -> UsageError:
    """The usage error for a --version that names no version: it lists the versions that exist."""
    versions = registered_versions(c, model_name)
    have = (f"versions: {_listed(versions)}" if versions
            else "no version is registered yet (train one first: creditgov train)")
    return UsageError(f"{model_name} has no version {' '.join(str(version).split()) or repr(str(version))}; {have}")


def get_version(c, model_name: str, version):
    """The registered version `version` (a --version argument) names. A malformed or unknown number is a
    UsageError naming the model and the versions that exist; a backend failure stays a backend failure."""
    from mlflow.exceptions import MlflowException  # heavy: see configure

    text = str(version).strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise unknown_version(c, model_name, version)
    try:
        return c.get_model_version(model_name, str(int(text)))
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        raise unknown_version(c, model_name, version) from None


# monitoring verdicts on a model version: `monitor.last_*` (the latest batch) and one `monitor.verdict.NNNN`
# tag per monitored batch, in the order monitored, each "verdict | batch | monitoring run id"
LAST_VERDICT = "monitor.last_verdict"
VERDICT_PREFIX = "monitor.verdict."


@dataclass(frozen=True)
class Verdict:
    seq: int
    verdict: str
    batch: str
    run_id: str


def verdict_history(tags: dict) -> list[Verdict]:
    """The monitoring verdicts recorded on a model version (its tags), oldest first."""
    out = []
    for key, value in tags.items():
        seq = key[len(VERDICT_PREFIX):]
        if key.startswith(VERDICT_PREFIX) and seq.isdigit():
            verdict, _, rest = str(value).partition(" | ")
            batch, _, run_id = rest.rpartition(" | ")
            out.append(Verdict(int(seq), verdict, batch, run_id))
    return sorted(out, key=lambda v: v.seq)


def record_verdict(model_name: str, version: str, batch: str, verdict: str, run_id: str, reason: str) -> None:
    """Keep a monitored batch's verdict on the model version: the next history tag and the `monitor.last_*`."""
    c = client()
    with backend_errors(f"record the monitoring verdict on {model_name} version {version}"):
        history = verdict_history(c.get_model_version(model_name, str(version)).tags)
        seq = history[-1].seq + 1 if history else 1
        batch = " ".join(str(batch).replace("|", "/").split())
        tags = {f"{VERDICT_PREFIX}{seq:04d}": f"{verdict} | {batch} | {run_id}"[:5000],
                LAST_VERDICT: verdict, "monitor.last_batch": batch, "monitor.last_run": run_id,
                "monitor.last_reason": reason[:500]}
        for k, v in tags.items():
            c.set_model_version_tag(model_name, str(version), k, v)


def latest_verdict(model_name: str, version: str) -> Verdict | None:
    """The latest monitoring verdict of a registered version (None when it was never monitored)."""
    from mlflow.exceptions import MlflowException  # heavy: see configure

    c = client()
    with backend_errors(f"read the monitoring verdict of {model_name} version {version}"):
        try:
            tags = c.get_model_version(model_name, str(version)).tags
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
            return None
    history = verdict_history(tags)
    if history:
        return history[-1]
    if tags.get(LAST_VERDICT):  # monitored before the history was kept
        return Verdict(0, tags[LAST_VERDICT], tags.get("monitor.last_batch", ""), tags.get("monitor.last_run", ""))
    return None


def load_registered(model_name: str, version: str | None = None, alias: str = "champion"):
    """(model, version, run_id) of a registered version, or of the version behind `alias`: the model a CreditModel
    (XGBoost) or a ScorecardPD (the WOE scorecard), as its stored model.json says (model/stored.py)."""
    import mlflow  # heavy: see configure
    from mlflow.exceptions import MlflowException  # heavy: see configure

    c = client()
    with backend_errors(f"load model {model_name}"):
        if version is not None:
            mv = get_version(c, model_name, version)
        else:
            try:
                mv = c.get_model_version_by_alias(model_name, alias)
            except MlflowException as exc:
                if not is_not_found(exc):
                    raise
                raise TrackingError(f"registered model '{model_name}' has no version with alias '{alias}' "
                                    f"(train and promote one first: make train)") from None
        if mv.tags.get("creditgov.registration") != "complete":
            raise TrackingError(f"{model_name} version {mv.version} is not completely registered "
                                "(its training run was interrupted): train again")

        with tempfile.TemporaryDirectory() as tmp:  # the model is read into memory; no copy is left behind
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{mv.version}", dst_path=tmp)
            model = load_model(Path(local) / "artifacts" / "model")
    return model, str(mv.version), mv.run_id
