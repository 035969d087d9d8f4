"""End to end: faults. An unreachable or silent MLflow server, training and deciding killed with SIGKILL,
two trainings at once on one SQLite store.

One module project (application spec copy: cheaper evaluation, permissive gates; the faults are the
subject here, not the gates). Loopback servers are started and stopped by the tests themselves; every
subprocess has a timeout. The tests run in file order and share the project's MLflow store: the kills
leave their traces, and the later tests check the store stays consistent through all of them.
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import sqlite3
import shutil
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import cli_env, creditgov_argv, in_project, quiet, run_creditgov, write_fast_spec

pytestmark = pytest.mark.e2e

SPEC = "pipelines/application-faults.yaml"
NAME = "credit-application-pd"
AS_OF = "2026-11-01"
KEY = "faults-test-key-90ab"
DROP_ENV = ("CREDITGOV_AUDIT_URL", "CREDITGOV_DEBUG")


@pytest.fixture(scope="module")
def proj(tmp_path_factory, make_project):
    from creditgov.data import inputs
    from creditgov.governance import registry
    from creditgov.spec import load_spec

    root = make_project(tmp_path_factory.mktemp("faults_project"))
    write_fast_spec(root, SPEC)
    with in_project(root, drop=DROP_ENV, CREDITGOV_PSEUDONYM_KEY=KEY):
        spec = load_spec(SPEC)
        registry.check()  # the store's schema exists before any process is killed: kills are the subject
        batch = root / "batch.csv"  # a small batch to decide: the faults do not need the whole data set
        inputs.load(spec).frame.head(300).to_csv(batch, index=False)
        yield SimpleNamespace(root=root, spec=spec, uri=registry.default_uri(root), db=root / "mlflow.db",
                              batch=batch)


def _client(proj):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=proj.uri, registry_uri=proj.uri)


def _versions(proj) -> list:
    c = _client(proj)
    return sorted((c.get_model_version(NAME, v.version) for v in c.search_model_versions(f"name='{NAME}'")),
                  key=lambda v: int(v.version))


def _complete(mv) -> bool:
    return mv.tags.get("creditgov.registration") == "complete"


def _assert_registry_consistent(proj) -> tuple[list, list]:
    """Every version is complete with its evidence, or refused by promote and by load_registered;
    aliases point at complete versions only. Returns (complete, incomplete) versions."""
    from creditgov.governance import promote
    from creditgov.governance import registry
    from creditgov.errors import PromotionRefused, TrackingError
    from mlflow.exceptions import MlflowException

    c = _client(proj)
    versions = _versions(proj)
    numbers = [int(v.version) for v in versions]
    assert numbers == list(range(1, len(numbers) + 1)), numbers  # no gaps, no duplicates
    complete = [v for v in versions if _complete(v)]
    incomplete = [v for v in versions if not _complete(v)]
    for v in complete:
        for tag in ("run_id", "spec_hash", "train_data_hash", "input_data_hash", "gates_at_registration"):
            assert v.tags.get(tag), (v.version, tag)
        assert v.tags["run_id"] == v.run_id
        run = c.get_run(v.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["spec_hash"] == v.tags["spec_hash"]
    for v in incomplete:
        assert not v.aliases, (v.version, v.aliases)
        with pytest.raises(PromotionRefused, match=f"version {v.version} not promoted: its registration is incomplete"):
            promote.promote(proj.spec, "fault tester", v.version)
        with pytest.raises(TrackingError, match=f"version {v.version} is not completely registered"):
            registry.load_registered(NAME, v.version)
        assert "approved_by" not in c.get_model_version(NAME, v.version).tags
    for alias in ("challenger", "champion"):
        try:
            mv = c.get_model_version_by_alias(NAME, alias)
        except MlflowException:
            continue
        assert _complete(mv), (alias, mv.version)
    return complete, incomplete


def _model_version_count(db: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)) as c:
            return c.execute("SELECT COUNT(*) FROM model_versions WHERE name = ?", (NAME,)).fetchone()[0]
    except sqlite3.OperationalError:  # busy (a writer holds the lock): ask again
        return -1


# --------------------------------------------------------------------------- (a) (b) unreachable backend


class SilentServer:
    """A loopback TCP server that accepts connections and never answers (a hung tracking server)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set() and len(self.conns) < 64:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.conns.append(conn)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


def _closed_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def unreachable(proj):
    """train and decide against a closed port and against a silent server, all four at once."""
    server = SilentServer()
    closed = _closed_port()
    cases = {
        "closed": cli_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed}", MLFLOW_HTTP_REQUEST_TIMEOUT="2"),
        "silent": cli_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{server.port}", MLFLOW_HTTP_REQUEST_TIMEOUT="2",
                       MLFLOW_HTTP_REQUEST_MAX_RETRIES="1"),
    }
    commands = {"train": creditgov_argv("train", "--spec", SPEC, "--rounds", "5"),
                "decide": creditgov_argv("decide", "--spec", SPEC, "--data", str(proj.batch), "--as-of", AS_OF)}
    procs, out = {}, {}
    try:
        t0 = time.monotonic()
        for case, e in cases.items():
            for cmd, argv in commands.items():
                procs[case, cmd] = subprocess.Popen(argv, cwd=proj.root, env=e, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, text=True)
        for key, p in procs.items():
            try:
                so, se = p.communicate(timeout=max(120 - (time.monotonic() - t0), 1))
            except subprocess.TimeoutExpired:
                p.kill()
                so, se = p.communicate()
                pytest.fail(f"{key}: still running after 120 s against an unreachable tracking server")
            out[key] = SimpleNamespace(rc=p.returncode, stdout=so, stderr=se, elapsed=time.monotonic() - t0,
                                       uri=cases[key[0]]["MLFLOW_TRACKING_URI"])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        server.close()
    assert server.conns, "the silent server was never contacted"
    return out


@pytest.mark.parametrize("case", ["closed", "silent"])
@pytest.mark.parametrize("cmd", ["train", "decide"])
def test_unreachable_tracking_server_fails_with_exit_7_and_one_line(unreachable, case, cmd):
    r = unreachable[case, cmd]
    assert r.rc == 7, (r.rc, r.stderr[-2000:])
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("creditgov: error: ")
    assert r.elapsed < 120


@pytest.mark.parametrize("case", ["closed", "silent"])
def test_unreachable_training_names_the_backend(unreachable, case):
    r = unreachable[case, "train"]
    assert f"MLflow tracking at {r.uri}: reach the tracking backend failed" in r.stderr


@pytest.mark.parametrize("case", ["closed", "silent"])
def test_unreachable_deciding_names_the_backend(unreachable, case):
    r = unreachable[case, "decide"]
    assert f"MLflow tracking at {r.uri}" in r.stderr
    assert "has no" not in r.stderr


# --------------------------------------------------------------------------- (c) training killed


def _start_training(proj, log: Path, rounds: int = 30) -> subprocess.Popen:
    f = open(log, "w")
    try:
        return subprocess.Popen(creditgov_argv("train", "--spec", SPEC, "--rounds", str(rounds)), cwd=proj.root,
                                env=cli_env(), stdout=f, stderr=subprocess.STDOUT)
    finally:
        f.close()


# where a kill lands: (a line the training log shows, seconds after it). Stages the log names, not fractions of
# a measured training: under a varying load (two test workers, other jobs) a fraction of one training's time
# once outlived the next, faster one
KILL_POINTS = {"while fitting": ("validated ", 0.0), "as registering starts": ("XGBoost test AUC", 0.0),
               "while registering": ("XGBoost test AUC", 0.5)}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_training_killed_midway_leaves_a_consistent_registry(proj, tmp_path, point):
    marker, delay = KILL_POINTS[point]
    before = len(_versions(proj))
    log = tmp_path / "train.log"
    p = _start_training(proj, log)
    try:
        deadline = time.monotonic() + 600
        while p.poll() is None and time.monotonic() < deadline and marker not in log.read_text():
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        p.kill()
        p.wait(timeout=30)
    text = log.read_text()
    assert p.returncode == -signal.SIGKILL, text[-2000:]
    assert marker in text and "registered credit-application-pd version" not in text, text[-2000:]
    complete, incomplete = _assert_registry_consistent(proj)
    assert len(complete) + len(incomplete) <= before + 1


def test_training_killed_right_after_registering_leaves_an_unusable_version(proj, tmp_path):
    before = len(_versions(proj))
    p = _start_training(proj, tmp_path / "train.log")
    deadline = time.monotonic() + 400
    try:
        while p.poll() is None and time.monotonic() < deadline:
            if _model_version_count(proj.db) > before:
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if p.poll() is None:  # past the deadline, or the loop failed: never leave it running
            p.kill()
        p.wait(timeout=30)
    log = (tmp_path / "train.log").read_text()
    assert p.returncode == -signal.SIGKILL, log[-2000:]
    assert "registered credit-application-pd version" not in log  # killed before the registration finished
    complete, incomplete = _assert_registry_consistent(proj)
    assert len(complete) + len(incomplete) == before + 1
    newest = _versions(proj)[-1]
    assert not _complete(newest)
    assert newest.tags.get("run_id") == newest.run_id  # the evidence tags came with the version, in one call


# --------------------------------------------------------------------------- (e) two trainings at once


def test_trainings_after_the_kills_two_at_once_on_one_sqlite_store(proj, tmp_path):
    """The trainings that follow the kills: two at once on the same SQLite store. Both succeed, or one is
    refused with one clear line; the registry stays numbered without gaps, each version with its own run."""
    before = _versions(proj)
    procs = []
    for i in range(2):
        f = open(tmp_path / f"train{i}.out", "w")
        procs.append(subprocess.Popen(creditgov_argv("train", "--spec", SPEC, "--rounds", "20"), cwd=proj.root,
                                      env=cli_env(), stdout=f, stderr=subprocess.PIPE, text=True))
        f.close()
    errs = []
    try:
        for p in procs:
            errs.append(p.communicate(timeout=600)[1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    rcs = [p.returncode for p in procs]
    for rc, err in zip(rcs, errs):
        if rc != 0:  # refused: one clear line of ours, the last, never a traceback (MLflow logs INFO lines)
            ours = [ln for ln in err.splitlines() if ln.startswith("creditgov:")]
            assert len(ours) == 1 and err.splitlines()[-1] == ours[0], err[-3000:]
            assert ours[0].startswith("creditgov: error: ") and "Traceback" not in err, err[-3000:]
    assert rcs.count(0) >= 1, (rcs, [e[-2000:] for e in errs])  # a training after the kills succeeds

    complete, incomplete = _assert_registry_consistent(proj)
    new = [v for v in complete if int(v.version) > len(before)]
    assert len(new) == rcs.count(0)
    assert len({v.run_id for v in complete}) == len(complete)  # one run per version
    registered = sorted(int(ln.split(" version ")[1].split()[0]) for i in range(2)
                        for ln in (tmp_path / f"train{i}.out").read_text().splitlines()
                        if ln.startswith(f"registered {NAME} version "))
    assert registered == sorted(int(v.version) for v in new)
    challenger = _client(proj).get_model_version_by_alias(NAME, "challenger")
    assert str(challenger.version) in {str(v.version) for v in new}
    with closing(sqlite3.connect(proj.db)) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    if shutil.which("sqlite3"):
        r = subprocess.run(["sqlite3", str(proj.db), "PRAGMA integrity_check"], capture_output=True, text=True,
                           timeout=60)
        assert r.stdout.strip() == "ok"


# --------------------------------------------------------------------------- (d) deciding killed


DYING_DECIDE = """
import os, signal, sys
import pyarrow.parquet as pq

_write, _replace = pq.write_table, os.replace

def dying_write(table, where, *args, **kwargs):
    # half the rows reach the disk, then the process is killed (as by the OOM killer) mid-write
    _write(table.slice(0, max(table.num_rows // 2, 1)), where, *args, **kwargs)
    with open(where, "r+b") as f:
        f.truncate(max(os.path.getsize(where) // 2, 1))
    os.kill(os.getpid(), signal.SIGKILL)

def dying_replace(src, dst, *args, **kwargs):
    if str(src).endswith(".tmp"):  # (should the log be written another way: killed before the rename)
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)

pq.write_table, os.replace = dying_write, dying_replace
sys.argv = ["creditgov"] + sys.argv[1:]
from creditgov.cli import main
main()
"""


@pytest.fixture()
def champion(proj):
    """The deciding tests need an @champion: in file order, the @challenger the trainings above registered,
    promoted here once; run alone (-k), a training registers one first."""
    from creditgov.governance import promote

    def aliases() -> dict:
        return {a: str(v.version) for v in _versions(proj) for a in v.aliases}

    if "challenger" not in aliases():
        r = run_creditgov("train", "--spec", SPEC, "--rounds", "20", cwd=proj.root, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    have = aliases()
    if have.get("champion") != have["challenger"]:
        promote.promote(proj.spec, "fault tester")
    return aliases()["champion"]


def test_decide_killed_while_writing_leaves_no_partial_log(proj, champion, tmp_path):
    from creditgov.decision import decide

    batch = proj.batch
    ref = decide.decide(proj.spec, str(batch), as_of=AS_OF, out_dir=tmp_path / "reference", log=quiet)
    expected = proj.root / "decisions" / ref.path.name

    r = subprocess.run([sys.executable, "-c", DYING_DECIDE, "decide", "--spec", SPEC, "--data", str(batch),
                        "--as-of", AS_OF], cwd=proj.root, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not expected.exists()  # no partial log under the final name...
    left = sorted(p.name for p in (proj.root / "decisions").iterdir())
    assert len(left) == 1 and re.fullmatch(rf"\.{re.escape(expected.name)}\.tmp-\d+-[0-9a-f]{{8}}", left[0]), left
    # ...only the killed process's own temporary file
    with pytest.raises(Exception):
        decide.read_log(proj.root / "decisions" / left[0])

    rerun = decide.decide(proj.spec, str(batch), as_of=AS_OF, log=quiet)
    assert rerun.path.resolve() == expected.resolve()
    assert expected.read_bytes() == ref.path.read_bytes()  # complete and byte-identical
    assert len(decide.read_log(expected)) == 300
    assert sorted(p.name for p in (proj.root / "decisions").iterdir()) == [expected.name]


# --------------------------------------------------------------------------- (f) partitioned decide resumed


RUN_ENGINE = """
import sys
from distributed import Client, LocalCluster
from creditgov.decision import dask as engine
from creditgov.spec import load_spec

spec, data, as_of, out = sys.argv[1:5]
# the Dask engine's own API on an in-process cluster (threads, no TCP): the partitions run as they would
# on workers, without paying for worker processes
with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
    with Client(cluster) as client:
        engine.decide(load_spec(spec), data, as_of=as_of, out_dir=out, client=client, log=print)
"""


def test_partitioned_decide_killed_midway_resumes_without_duplicates(proj, champion, tmp_path):
    """Killed while deciding a partitioned batch, a rerun resumes from the partitions already decided
    (they were persisted) and the log holds every decision once: the same log as one uninterrupted run."""
    import pandas as pd

    from creditgov.data import inputs
    from creditgov.decision import decide

    frame = inputs.load(proj.spec).frame.head(1200)
    parts = tmp_path / "partitioned"
    parts.mkdir()
    for i in range(6):
        frame.iloc[i * 200:(i + 1) * 200].to_parquet(parts / f"part-{i:02d}.parquet", index=False)
    whole = tmp_path / "whole.parquet"
    frame.to_parquet(whole, index=False)

    out = tmp_path / "decisions"
    argv = [sys.executable, "-c", RUN_ENGINE, SPEC, str(parts), AS_OF, str(out)]
    p = subprocess.Popen(argv, cwd=proj.root, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    first = None
    done: list[Path] = []
    deadline = time.monotonic() + 300
    try:
        while p.poll() is None and time.monotonic() < deadline:
            written = [q for q in out.rglob("*") if q.is_file()] if out.exists() else []
            first = first or (written[0] if written else None)
            done = [d for d in out.glob(".partial/*/part-*") if d.is_dir() and ".tmp" not in d.name]
            if done:  # a partition's decisions are persisted: kill the run (and anything it started) there
                os.killpg(p.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    assert first is not None, "the partitioned decide persisted nothing before it ended"
    whole_log = first.parent == out and (first.suffix == ".parquet" or first.name.endswith(".parquet.tmp"))
    assert not whole_log, (f"the first thing persisted is the whole log ({first.name}): no partition's decisions "
                           "survive a kill, so a rerun can only start over")
    assert done, "the run ended before any partition was persisted: nothing was killed mid-way"
    assert not list(out.glob("*.parquet")), "the log was written although the run was killed"

    r = subprocess.run(argv, cwd=proj.root, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = [line for line in r.stdout.splitlines() if "resuming from" in line]
    assert resumed and int(resumed[0].split(": ")[-1].split()[0]) >= 1, r.stdout
    assert not (out / ".partial").exists(), "the checkpoints outlived the finished log"

    ref = decide.decide(proj.spec, str(whole), as_of=AS_OF, out_dir=tmp_path / "reference", log=quiet)
    logs = sorted(out.glob("*.parquet"))
    assert [q.name for q in logs] == [ref.path.name]
    log = decide.read_log(logs[0])
    assert log["decision_id"].is_unique and len(log) == len(frame)
    ref_log = decide.read_log(ref.path)
    # the same decisions as one process deciding the same rows from one file (only the named source differs)
    assert (log["input_source"] == str(parts)).all() and (ref_log["input_source"] == str(whole)).all()
    pd.testing.assert_frame_equal(log.drop(columns="input_source"), ref_log.drop(columns="input_source"))

    # and byte for byte the log of an uninterrupted partitioned run
    again = subprocess.run([*argv[:-1], str(tmp_path / "uninterrupted")], cwd=proj.root, env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" not in again.stdout
    assert (tmp_path / "uninterrupted" / logs[0].name).read_bytes() == logs[0].read_bytes()


def test_cli_decides_a_partitioned_batch_with_the_dask_engine_and_audits_it_once(proj, champion, tmp_path):
    """`creditgov decide --engine dask` end to end (LocalCluster worker processes): the log, the audit
    trail, and a second run of the same command that adds nothing."""
    import pandas as pd

    from creditgov.data import inputs
    from creditgov.decision import decide

    frame = inputs.load(proj.spec).frame.head(600)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(3):
        frame.iloc[i * 200:(i + 1) * 200].to_parquet(parts / f"part-{i}.parquet", index=False)
    env = cli_env(CREDITGOV_AUDIT_URL=f"sqlite:///{tmp_path / 'audit.db'}")
    cmd = creditgov_argv("decide", "--spec", SPEC, "--engine", "dask", "--data", str(parts), "--as-of", AS_OF,
                         "--out", str(tmp_path / "out"))
    first = subprocess.run(cmd, cwd=proj.root, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "[engine dask, 3 partitions]" in first.stdout
    assert "600 decision records appended" in first.stdout
    logs = list((tmp_path / "out").glob("*.parquet"))
    assert len(logs) == 1 and not (tmp_path / "out" / ".partial").exists()
    whole = tmp_path / "whole.parquet"
    frame.to_parquet(whole, index=False)
    ref = decide.read_log(decide.decide(proj.spec, str(whole), as_of=AS_OF, out_dir=tmp_path / "ref",
                                        log=quiet).path)
    pd.testing.assert_frame_equal(decide.read_log(logs[0]).drop(columns="input_source"),
                                  ref.drop(columns="input_source"))
    before = logs[0].read_bytes()

    second = subprocess.run(cmd, cwd=proj.root, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "already recorded" in second.stdout and "nothing appended" in second.stdout
    assert logs[0].read_bytes() == before
    verify = run_creditgov("audit", "verify", cwd=tmp_path, env=env)
    assert verify.returncode == 0 and "1 batches, 600 decisions verified" in verify.stdout, verify.stdout + verify.stderr


# --------------------------------------------------------------------------- registration completed in order


class _Killed(BaseException):
    """Stands for SIGKILL arriving between two MLflow calls (not an Exception: nothing catches it)."""


def test_a_kill_inside_finish_registration_leaves_aliases_on_complete_versions(proj, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from creditgov.jobs import training
    from creditgov.governance import registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a registry of its own: the project's store stays as it is
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    try:
        registry.configure()
        c = registry.client()
        c.create_registered_model(NAME)
        src = tmp_path / "model"
        src.mkdir()
        v1 = str(c.create_model_version(NAME, str(src)).version)
        training.finish_registration(proj.spec, v1)
        assert str(c.get_model_version_by_alias(NAME, "challenger").version) == v1
        v2 = str(c.create_model_version(NAME, str(src)).version)

        def killed(*_a, **_k):
            raise _Killed()

        with monkeypatch.context() as m:
            m.setattr(MlflowClient, "set_model_version_tag", killed)
            with pytest.raises(_Killed):
                training.finish_registration(proj.spec, v2)
        challenger = c.get_model_version_by_alias(NAME, "challenger")
        assert _complete(challenger), f"@challenger is version {challenger.version}, which is incomplete"
    finally:
        mlflow.set_tracking_uri(proj.uri)
        mlflow.set_registry_uri(proj.uri)


def test_the_default_store_follows_the_working_directory(proj, tmp_path, monkeypatch):
    import mlflow

    from creditgov.governance import registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    try:
        assert registry.configure() == proj.uri  # this project's store, as every command configures it
        monkeypatch.chdir(tmp_path)
        assert registry.configure() == registry.default_uri(tmp_path)
        assert mlflow.get_registry_uri() == registry.default_uri(tmp_path)
    finally:
        monkeypatch.chdir(proj.root)
        mlflow.set_tracking_uri(proj.uri)
        mlflow.set_registry_uri(proj.uri)
