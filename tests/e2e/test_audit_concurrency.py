"""The audit trail under concurrent writers and kills, on SQLite and on a real PostgreSQL server.

Issue 11: two `creditgov decide` runs of the same batch at the same moment must leave one set of
decision records (the store's unique key, not a read-then-write check); `kill -9` at any moment of
decide or of the append must leave a trail that verifies, or names the batch as incomplete until the
same command, run again, completes it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import APPLICATION_FAST, cli_env, copy_trained_project, creditgov_argv, in_project, quiet, run_creditgov

pytestmark = pytest.mark.e2e

SPEC = APPLICATION_FAST
AS_OF = "2026-10-01"
DROP_ENV = ("CREDITGOV_AUDIT_URL", "CREDITGOV_DEBUG", "CREDITGOV_AUDIT_CHUNK_ROWS")


@pytest.fixture(scope="module")
def proj(tmp_path_factory, trained_application_fast):
    """A copy of the session's trained and promoted application model (tests/e2e/conftest.py: fast spec, 30
    rounds), and one decision log of credit_data (4,454 rows)."""
    from creditgov.decision import decide
    from creditgov.spec import load_spec

    root = copy_trained_project(trained_application_fast.root, tmp_path_factory.mktemp("audit_concurrency"))
    with in_project(root, drop=DROP_ENV):
        spec = load_spec(SPEC)
        res = decide.decide(spec, as_of=AS_OF, out_dir=root / "reference", log=quiet)
        yield SimpleNamespace(root=root, spec=spec, log=res.path, n=res.rows_in, ids=set(res.log["decision_id"]))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """An empty audit store: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return SimpleNamespace(kind="sqlite", url=f"sqlite:///{tmp_path / 'audit.db'}", db=tmp_path / "audit.db")
    pg = request.getfixturevalue("postgres")
    name = f"audit_{request.node.name.split('[')[0][-30:].lower()}_{os.getpid()}_{int(time.time() * 1000) % 10**6}"
    name = "".join(ch if ch.isalnum() else "_" for ch in name)[:60]
    return SimpleNamespace(kind="postgresql", url=pg.url(name), db=None)


def _env(store, **extra) -> dict:
    return cli_env(drop=DROP_ENV, CREDITGOV_AUDIT_URL=store.url, **extra)


def _index(store, proj) -> list[tuple]:
    from sqlalchemy import create_engine, text

    eng = create_engine(store.url)
    with eng.connect() as c:
        rows = c.execute(text("SELECT decision_id, batch, position FROM audit_decisions")).all()
        batches = c.execute(text("SELECT status FROM audit_batches")).all()
        entries = c.execute(text("SELECT kind FROM audit_entries")).all()
    eng.dispose()
    return rows, [b[0] for b in batches], [e[0] for e in entries]


def _verify(proj, store, cwd: Path):
    return run_creditgov("audit", "verify", cwd=cwd, env=_env(store))


def test_two_appends_of_one_log_at_the_same_moment_record_each_decision_once(proj, store, tmp_path):
    """Several processes racing on the same log, small chunks so that they interleave."""
    code = ("import sys; from creditgov.governance import audit; a = audit.record_log(sys.argv[1]); "
            "print('inserted', a.inserted, 'sealed-before', a.already_sealed)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(proj.log)], cwd=tmp_path,
                              env=_env(store, CREDITGOV_AUDIT_CHUNK_ROWS="300"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    inserted = sum(int(o[0].split()[1]) for o in outs)
    rows, statuses, entries = _index(store, proj)
    assert inserted == proj.n == len(rows)
    assert {bytes(r[0]).hex() for r in rows} == proj.ids
    assert statuses == ["sealed"] and entries.count("batch") == 1
    v = _verify(proj, store, tmp_path)
    assert v.returncode == 0, v.stderr
    assert f"1 batches, {proj.n} decisions verified" in v.stdout


def test_two_decide_runs_of_one_batch_at_once_leave_one_set_of_records(proj, store, tmp_path):
    cmd = creditgov_argv("decide", "--spec", SPEC, "--as-of", AS_OF, "--out", str(tmp_path / "decisions"))
    e = _env(store, CREDITGOV_AUDIT_CHUNK_ROWS="500")
    procs = [subprocess.Popen(cmd, cwd=proj.root, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert "Traceback" not in "".join(o[1] for o in outs)
    rows, statuses, entries = _index(store, proj)
    assert len(rows) == proj.n and {bytes(r[0]).hex() for r in rows} == proj.ids
    assert statuses == ["sealed"] and entries.count("batch") == 1
    logs = list((tmp_path / "decisions").glob("*.parquet"))
    assert len(logs) == 1 and logs[0].read_bytes() == proj.log.read_bytes()
    assert not [p for p in (tmp_path / "decisions").iterdir() if p.name.startswith(".")]  # no temporaries left
    v = _verify(proj, store, tmp_path)
    assert v.returncode == 0, v.stderr


def _wait_for_open_batch(store, proc, timeout=120.0) -> bool:
    """True once the batch is open with some decisions indexed (then the append is mid-way)."""
    from sqlalchemy import create_engine, text

    eng = create_engine(store.url)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout and proc.poll() is None:
            try:
                with eng.connect() as c:
                    n = c.execute(text("SELECT COUNT(*) FROM audit_decisions")).scalar()
                    st = c.execute(text("SELECT status FROM audit_batches")).scalar()
                if n and st == "open":
                    return True
            except Exception:  # tables not created yet
                pass
            time.sleep(0.005)
        return False
    finally:
        eng.dispose()


def test_kill_9_in_the_middle_of_the_append_is_named_and_completed_by_the_same_command(proj, store, tmp_path):
    cmd = creditgov_argv("audit", "append", str(proj.log))
    e = _env(store, CREDITGOV_AUDIT_CHUNK_ROWS="40")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert _wait_for_open_batch(store, proc), "the append finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    rows, statuses, entries = _index(store, proj)
    assert statuses == ["open"] and 0 < len(rows) < proj.n and "batch" not in entries

    v = _verify(proj, store, tmp_path)
    assert v.returncode == 8
    assert "incomplete: its append was interrupted before the batch was sealed" in v.stderr
    assert "Traceback" not in v.stderr

    again = subprocess.run(cmd, cwd=tmp_path, env=_env(store), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows, statuses, entries = _index(store, proj)
    assert len(rows) == proj.n and statuses == ["sealed"] and entries.count("batch") == 1
    v = _verify(proj, store, tmp_path)
    assert v.returncode == 0, v.stderr


def test_kill_9_during_decide_is_named_incomplete_and_a_rerun_of_the_same_command_completes_it(proj, tmp_path):
    """Killed while decide appends its log (the log is written, the batch open): verify names the batch,
    the same command completes it. (Killed before the log is renamed into place, nothing is left:
    test_faults.py::test_decide_killed_while_writing_leaves_no_partial_log.)"""
    store = SimpleNamespace(url=f"sqlite:///{tmp_path / 'audit.db'}")
    out = tmp_path / "decisions"
    cmd = creditgov_argv("decide", "--spec", SPEC, "--as-of", AS_OF, "--out", str(out))
    proc = subprocess.Popen(cmd, cwd=proj.root, env=_env(store, CREDITGOV_AUDIT_CHUNK_ROWS="40"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert _wait_for_open_batch(store, proc), "decide finished its append before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    v = _verify(proj, store, tmp_path)
    assert v.returncode == 8 and "incomplete" in v.stderr, v.stderr
    assert f"decisions are not in the audit trail" not in v.stderr  # the log is named once, as incomplete
    logs = list(out.glob("*.parquet"))
    assert len(logs) == 1 and logs[0].read_bytes() == proj.log.read_bytes()  # the log is whole

    again = subprocess.run(cmd, cwd=proj.root, env=_env(store), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    v = _verify(proj, store, tmp_path)
    assert v.returncode == 0, v.stderr
    assert f"1 batches, {proj.n} decisions verified" in v.stdout
