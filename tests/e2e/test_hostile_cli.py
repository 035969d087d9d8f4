"""`creditgov validate` on the hostile-input corpus, as a real process (cases marked `cli` in
tests/data/hostile/cases.yaml): the documented exit code, exactly one line on stderr starting with
`creditgov: error:` (nothing on stderr on success), never a traceback; bounded time and memory.

Each CLI call pays the imports (GX, pandas, pydantic), so the cases run concurrently in one
module-scoped fixture and the tests assert on what each run left.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from helpers import cli_env, copy_hostile_project, creditgov_argv, hostile_corpus, hostile_params

pytestmark = pytest.mark.e2e

DEFAULT_TIMEOUT = 180  # seconds for one CLI call (imports included) on a loaded machine
WORKERS = 3


corpus = hostile_corpus()
CLI_CASES = [c for c in corpus.load_cases() if c.get("cli")]


@dataclass
class Run:
    args: list[str]
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    seconds: float
    max_rss_bytes: int  # the CLI process's own peak RSS (wait4)
    timed_out: bool
    data: str = ""  # --data as given
    fragments: list[str] = field(default_factory=list)  # expected message fragments, resolved


def _cli(args: list[str], cwd: Path, timeout: float) -> Run:
    """Run `python -m creditgov ARGS`; its own peak RSS comes from wait4, not from the test process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(creditgov_argv(*args), cwd=cwd, env=cli_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Run(args, None if timed_out else proc.returncode, out.read().decode("utf-8", "replace"),
                   err.read().decode("utf-8", "replace"), seconds, usage.ru_maxrss * 1024, timed_out)


def _run_case(case: dict, root: Path) -> Run:
    generated = root / "generated" / case["id"]
    generated.mkdir(parents=True)
    try:
        data = corpus.data_arg(case, generated)
        frags = corpus.message_fragments(case, root / data) if case["expect"].get("message") else []
        args = ["validate", "--spec", corpus.spec_arg(case), "--data", data]
        timeout = case["expect"].get("within_seconds", DEFAULT_TIMEOUT)
        run = _cli(args, root, timeout)
        run.data = data
        run.fragments = frags
        return run
    finally:
        shutil.rmtree(generated, ignore_errors=True)  # the 1 GB file goes as soon as its run ends


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, Run]:
    root = copy_hostile_project(tmp_path_factory.mktemp("hostile-cli"))
    # the slow ones first, so they overlap the many short runs
    order = sorted(CLI_CASES, key=lambda c: not c.get("cli_only"))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {c["id"]: pool.submit(_run_case, c, root) for c in order}
        runs = {cid: f.result() for cid, f in futures.items()}
    runs["_root"] = root
    return runs


@pytest.mark.parametrize("case", hostile_params(CLI_CASES))
def test_hostile_input_cli_contract(cli_runs, case):
    run = cli_runs[case["id"]]
    exp = case["expect"]
    limit = exp.get("within_seconds", DEFAULT_TIMEOUT)
    assert not run.timed_out, f"still running after {limit} s: killed"
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-2000:]
    assert run.returncode == exp["exit"], f"exit {run.returncode}: {run.stderr[-1000:]}"
    if "max_rss_bytes" in exp:
        assert run.max_rss_bytes < exp["max_rss_bytes"], f"peak RSS {run.max_rss_bytes / 1e9:.2f} GB"

    if exp["exit"] != 0:
        lines = run.stderr.splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"stderr is not one line: {run.stderr!r}"
        line = lines[0]
        assert line.startswith("creditgov: error: "), line
        detail = line[len("creditgov: error: "):]
        if exp["outcome"] == "quarantine":  # exit 5: the share, named by the data file
            assert detail.startswith(f"{run.data}: "), line
            assert "rows quarantined" in detail and "max_quarantine_share" in detail, line
        else:
            assert detail.startswith(corpus.message_file(case, run.data) + ": "), line
        for frag in run.fragments:
            assert frag in detail, f"{frag!r} not in {line!r}"
        return

    assert run.stderr.strip() == "", run.stderr
    n_q = len(exp.get("quarantined") or {})
    assert f"{run.data}: {exp['rows_in']} rows in = {exp['rows_in'] - n_q} clean + {n_q} quarantined" in run.stdout
    for col in exp.get("ignored", []):
        assert col in run.stdout.split("ignored:")[-1]
    qfile = run.stdout.split("(", 1)[1].split(")", 1)[0]
    written = pd.read_csv(cli_runs["_root"] / qfile, dtype=str, keep_default_na=False)
    assert sorted(written["row_number"].astype(int)) == sorted(int(r) for r in exp.get("quarantined") or {})


def _quarantine_file(cli_runs, case_id: str) -> Path:
    run = cli_runs[case_id]
    return cli_runs["_root"] / run.stdout.split("(", 1)[1].split(")", 1)[0]


def test_cli_quarantine_file_neutralises_formulas(cli_runs):
    text = _quarantine_file(cli_runs, "app_formula_injection").read_text(encoding="utf-8")
    import csv
    import io

    cells = [v for row in csv.reader(io.StringIO(text)) for v in row]
    raw = [v for v in cells if v.startswith(("=", "+", "@")) or (v.startswith("-") and not _number(v))]
    assert not raw, f"formulas written raw: {raw}"


def test_cli_quarantine_file_keeps_the_formula_rows_and_their_rules(cli_runs):
    written = pd.read_csv(_quarantine_file(cli_runs, "app_formula_injection"), dtype=str, keep_default_na=False)
    assert written["row_number"].tolist() == ["1", "2", "3", "4", "5"]
    assert written["rules"].str.contains(" one of \\[").all()
    assert len(written["rownames"].iloc[0]) == 24  # the id is pseudonymised


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
