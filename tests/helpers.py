"""Helpers shared by the test tiers: imported by tests/conftest.py (which puts tests/ on sys.path) and by the
test modules as `helpers`.

- `quiet`: the no-op `log=` of the library calls.
- Project roots: `copy_project` (pipelines/ and expectations/ of the repository), `in_project` (the working
  directory and the environment of a module-scoped project), `write_fast_spec` (a spec copy with a cheaper
  evaluation and permissive gates), `copy_trained_project` (a trained project's copy that refers to
  nothing of the original, so a module can change its copy freely), `copy_hostile_project` (with the
  hostile-input corpus); `hostile_corpus` and `hostile_params` (tests/data/hostile/).
- Models: `train_and_promote` (the real training job, then promote), `fit_saved_model` (a quick fit saved as
  JSON files), `serve_saved_models` (those files served as a "registered" version, registry untouched).
- The command line: `creditgov_argv`, `cli_env`, `run_creditgov` (`python -m creditgov ...` as a subprocess),
  `start_serve` (`creditgov serve` started on a free port, once it says where it listens).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HOSTILE_DIR = REPO_ROOT / "tests" / "data" / "hostile"
# environment variables that would point MLflow away from the project's own SQLite file
MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# ... and what else a subprocess must not inherit from the caller: its own audit store, debug tracebacks
CLI_DROP_ENV = (*MLFLOW_URI_VARS, "CREDITGOV_AUDIT_URL", "CREDITGOV_DEBUG")
# the cheaper evaluation and the gates that do not stand in the way, where the gates are not the subject
FAST_EVALUATION = {"bootstrap": 100, "cv_folds": 2, "monotonicity_grid": 10, "monotonicity_sample": 50}
PERMISSIVE_GATES = {"min_auc": 0.6, "min_calibration_pvalue": 0.0, "max_auc_shortfall_vs_scorecard": 0.2}
APPLICATION_FAST = "pipelines/application-fast.yaml"  # the fast spec of tests/e2e/conftest.py's trained project
QUICK_ROUNDS = 30  # tests/e2e/conftest.py application_model_dir: the fit the golden logs were made with
TINY_ROUNDS = 12  # the code and data tiers' one model (tests/conftest.py tiny_model): mechanics, not quality


def quiet(_msg: str) -> None:
    """A `log=` that says nothing."""


# --------------------------------------------------------------------------- project roots


def copy_project(dst: Path) -> Path:
    """A minimal project root: the pipelines/ and expectations/ of the repository."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("pipelines", "expectations"):
        shutil.copytree(REPO_ROOT / name, dst / name)
    return dst


@contextmanager
def in_project(root: Path, drop: tuple[str, ...] = (), **env: str):
    """`root` as the working directory, MLflow on its default SQLite file there: the MLflow URI variables and
    `drop` unset, `env` set; all undone on exit. Yields the MonkeyPatch, for more patches of the same span."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for var in dict.fromkeys((*MLFLOW_URI_VARS, *drop)):
            # set, then unset: the exit restores the caller's value even where the span set it (as
            # mlflow.set_tracking_uri does), so no module's store leaks into the next one's environment
            mp.setenv(var, "")
            mp.delenv(var)
        for var, value in env.items():
            mp.setenv(var, value)
        yield mp


def write_fast_spec(root: Path, name: str, base: str = "pipelines/application.yaml", **sections: dict) -> str:
    """`base` with FAST_EVALUATION and PERMISSIVE_GATES (same source, catalogue and policy), written to
    root/name (may be `base` itself); `sections` are further updates of top-level sections, applied last."""
    import yaml

    raw = yaml.safe_load((root / base).read_text(encoding="utf-8"))
    raw["evaluation"].update(FAST_EVALUATION)
    raw["gates"].update(PERMISSIVE_GATES)
    for section, update in sections.items():
        raw[section].update(update)
    (root / name).write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return name


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def copy_trained_project(src: Path, dst: Path) -> Path:
    """A copy of the project `src` (MLflow store, artifacts, audit trail, everything) at `dst`, for a module to
    decide with and change freely instead of training again. MLflow keeps absolute artifact locations in its
    SQLite store (and MLmodel files name theirs): they are rewritten to the copy's, and the copy is checked to
    name nothing of `src` any more, so nothing the module does reaches the original or another copy."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*-wal", "*-shm", "*-journal"))
    for copied in [p for p in dst.rglob("*") if p.is_file() and _is_sqlite(p)]:
        # MLflow's store and the audit trail through SQLite's backup API: consistent, its WAL included
        copied.unlink()
        with closing(sqlite3.connect(src / copied.relative_to(dst))) as a, closing(sqlite3.connect(copied)) as b:
            a.backup(b)
    old, new = f"{src}/", f"{dst}/"
    with closing(sqlite3.connect(dst / "mlflow.db")) as c:
        tables = [t for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for col in [r[1] for r in c.execute(f'PRAGMA table_info("{table}")')]:
                c.execute(f'UPDATE "{table}" SET "{col}" = REPLACE("{col}", ?, ?) WHERE typeof("{col}") = '
                          f"'text' AND INSTR(\"{col}\", ?) > 0", (old, new, old))
        c.commit()
    for mlmodel in dst.rglob("MLmodel"):
        mlmodel.write_text(mlmodel.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    named = re.compile(re.escape(str(src).encode()) + rb"(?![\w.-])")  # src itself, not a longer sibling name
    left = [p for p in dst.rglob("*") if p.is_file() and named.search(p.read_bytes())]
    assert not left, f"the copy of {src} still names it in {left}"
    return dst


def copy_hostile_project(dst: Path) -> Path:
    """A project root with the hostile-input corpus (tests/data/hostile/, its data files) in hostile/."""
    copy_project(dst)
    shutil.copytree(HOSTILE_DIR, dst / hostile_corpus().CORPUS_DIR,
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dst


# --------------------------------------------------------------------------- the hostile-input corpus


@functools.cache
def hostile_corpus():
    """tests/data/hostile/make_corpus.py as a module: the cases and how to run them."""
    spec = importlib.util.spec_from_file_location("hostile_make_corpus", HOSTILE_DIR / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def hostile_params(cases: list[dict]) -> list:
    """The corpus cases as pytest params by id; a case with a known `bug` is xfail(strict): fixing the bug
    fails the test until the mark goes, so the corpus stays honest."""
    return [pytest.param(c, id=c["id"], marks=[pytest.mark.xfail(reason=c["bug"], strict=True)] if c.get("bug")
                         else []) for c in cases]


# --------------------------------------------------------------------------- models


def train_and_promote(spec, spec_path: str, rounds: int, approver: str) -> SimpleNamespace:
    """The training job (validate, fit, evaluate, register) with `rounds` boosting rounds, then promote the
    new version; in the working directory's project."""
    from creditgov.governance import promote
    from creditgov.jobs import training

    trained = training.run_training(spec, spec_path, n_estimators=rounds, log=quiet)
    version, gates = promote.promote(spec, approver, trained.version)
    return SimpleNamespace(trained=trained, version=version, gates=gates)


def fit_saved_model(spec, frame, directory: Path, rounds: int) -> Path:
    """A quick fit (`rounds` boosting rounds on the spec's split of `frame`) saved as JSON files in `directory`."""
    from creditgov.model import train

    splits = train.split(frame, spec)
    train.fit_model(splits.train, splits.validation, spec, n_estimators=rounds).save(directory)
    return Path(directory)


def serve_saved_models(mp: pytest.MonkeyPatch, dirs: dict[str, Path], version: str, run_id: str) -> None:
    """Every engine loads the saved model of `dirs` (registered model name -> directory) as `version`: the
    registry itself is tested elsewhere. `run_id` may name the model as `{name}`."""
    from creditgov.decision import dask
    from creditgov.governance import registry
    from creditgov.model.credit_model import CreditModel

    served = version

    def load_registered(name, version=None, alias="champion"):
        return CreditModel.load(dirs[name]), served, run_id.format(name=name)

    def registered_model(spec, version):
        name = spec.registry.model_name
        return CreditModel.load(dirs[name]), dask.model_blob(dirs[name]), served, run_id.format(name=name)

    mp.setattr(registry, "load_registered", load_registered)
    mp.setattr(dask, "registered_model", registered_model)
    mp.setattr(registry, "latest_verdict", lambda name, version: None)  # never monitored


# --------------------------------------------------------------------------- the command line


def creditgov_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "creditgov", *args]


def cli_env(drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The environment of a creditgov subprocess: this one's without CLI_DROP_ENV and `drop` (MLflow on the
    project's own SQLite file, the default audit store, no debug tracebacks), output unbuffered, no
    telemetry; `extra` set last."""
    e = {k: v for k, v in os.environ.items() if k not in CLI_DROP_ENV and k not in drop}
    e.update(PYTHONUNBUFFERED="1", DO_NOT_TRACK="1")
    e.update(extra)
    return e


def run_creditgov(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300,
                  **extra: str) -> subprocess.CompletedProcess:
    """`python -m creditgov ARGS` in `cwd`, output captured as text; `env` or cli_env(**extra)."""
    return subprocess.run(creditgov_argv(*args), cwd=cwd, env=cli_env(**extra) if env is None else env,
                          capture_output=True, text=True, timeout=timeout)


def start_serve(root: Path, err, *args: str, env: dict, timeout: float = 180,
                banner: str = "") -> tuple[subprocess.Popen, str]:
    """`creditgov serve ARGS` in `root` (stderr to the open file `err`), once its start-up line says where it
    listens (after `banner`, e.g. "2 workers; "): (process, base URL); the test fails with the line and the log's
    end if it does not start within `timeout` seconds."""
    proc = subprocess.Popen(creditgov_argv("serve", *args), cwd=root, env=env, stdout=subprocess.PIPE, stderr=err,
                            text=True)
    line, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline and "listening on" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    m = re.search(re.escape(banner) + r"listening on (http://127\.0\.0\.1:\d+)", line)
    if not m:
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {Path(err.name).read_text()[-2000:]}")
    return proc, m.group(1)


SNAKE_CASE = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b")


def names_leaked(text: str, spec, lang: str) -> list[str]:
    """Catalogue column names and snake_case identifiers in a customer's text (issue 14). In English a
    lowercase one-word name (age, income) is an ordinary word the labels use too; every other name counts, in
    Chinese every name. Hex references and hashes are left out."""
    text = re.sub(r"\b[0-9a-f]{16,}\b", "", text)
    found = SNAKE_CASE.findall(text)
    for f in spec.features:
        if lang == "en" and re.fullmatch(r"[a-z]+", f.name):
            continue
        if re.search(rf"(?<![A-Za-z]){re.escape(f.name)}(?![A-Za-z])", text):
            found.append(f.name)
    return found


def notice_body(html: str) -> str:
    """A notice's text without its style sheet and without the footer line naming model and policy."""
    body = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    body = re.sub(r'<p class="meta">.*?</p>', "", body, flags=re.S)
    return re.sub(r"<[^>]+>", " ", body)


def assert_evaluator_matches_batch(evaluate, model, rows, idx, changes, spec):
    """The candidate evaluator's actions and PDs for rows[idx] with `changes` set equal, bit for bit, those of
    decide.score_and_decide on the changed rows built as a frame; returns the evaluator's (actions, pds)."""
    import numpy as np

    from creditgov.decision import decide

    actions, p = evaluate(idx, changes)
    trial = rows.iloc[idx].reset_index(drop=True)
    for c, v in changes.items():
        trial[c] = v
    ref_actions, ref_p = decide.score_and_decide(model, trial, spec)
    np.testing.assert_array_equal(p, ref_p)
    np.testing.assert_array_equal(actions, ref_actions)
    return actions, p
