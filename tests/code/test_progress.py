"""Progress bars (creditgov.progress): shown on a terminal, erased when the work ends, and nothing at all (rich
not even imported) in CI, with CREDITGOV_NO_PROGRESS, on a dumb terminal or when stderr is not a terminal.

The terminal is a real pseudo-terminal (os.openpty) that a subprocess writes to; `_screen` replays what it
received (carriage returns, line feeds, cursor up, erase line) to give the lines a person would see."""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from creditgov import progress
from helpers import REPO_ROOT, cli_env, creditgov_argv

ESC = "\x1b["
PROGRESS_ENV = ("CI", "CREDITGOV_NO_PROGRESS", "TERM")  # dropped, then set per test
ROWS, COLS = 40, 200


class _TTY:
    def isatty(self) -> bool:
        return True


def _env(**extra: str) -> dict[str, str]:
    return cli_env(drop=PROGRESS_ENV, **{"TERM": "xterm-256color", **extra})


def _run(argv: list[str], env: dict, cwd: Path, stdout: Path | None = None, stderr: Path | None = None,
         timeout: float = 120, interrupt_on: str | None = None) -> tuple[int, str]:
    """Run `argv` with its stderr, and its stdout unless `stdout` (a file) is given, on a fresh pseudo-terminal;
    (exit code, everything the terminal received). `stderr`: a file instead of the terminal. `interrupt_on`:
    send SIGINT (a Ctrl-C) once the terminal has shown this text."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    files = [open(p, "wb") if p else None for p in (stdout, stderr)]  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=files[0] or slave, stderr=files[1] or slave)
    finally:
        os.close(slave)
        for f in files:
            if f:
                f.close()
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every end of the terminal's other side is closed
                break
            if not data:
                break
            received += data
            if interrupt_on and interrupt_on.encode() in received:
                proc.send_signal(signal.SIGINT)
                interrupt_on = None
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, received.decode("utf-8", errors="replace")


_CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


def _screen(text: str) -> list[str]:
    """The lines on the screen after `text` (no trailing blank lines)."""
    lines, row, col, i = [""], 0, 0, 0
    while i < len(text):
        ch = text[i]
        m = _CSI.match(text, i) if ch == "\x1b" else None
        if m:
            arg, cmd = m.groups()
            if cmd == "A":
                row = max(0, row - int(arg or 1))
            elif cmd == "K":
                lines[row] = "" if arg == "2" else lines[row][:col] if arg in ("", "0") else lines[row][col:]
            i = m.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif ch != "\x1b":
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


# --------------------------------------------------------------------------- when progress is shown


def test_shown_only_on_a_terminal_without_ci_or_opt_out(monkeypatch):
    for name in PROGRESS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress.enabled(_TTY())
    assert not progress.enabled(object())  # no isatty: not a terminal
    for name, value in (("CI", "true"), ("CI", "1"), ("CREDITGOV_NO_PROGRESS", "1"), ("CREDITGOV_NO_PROGRESS", "yes"),
                        ("TERM", "dumb")):
        with monkeypatch.context() as mp:
            mp.setenv(name, value)
            assert not progress.enabled(_TTY()), f"{name}={value}"
    for name in ("CI", "CREDITGOV_NO_PROGRESS"):  # set but empty, or to a word for off: not set
        for value in ("", "0", "false", "no", "off"):
            with monkeypatch.context() as mp:
                mp.setenv(name, value)
                assert progress.enabled(_TTY()), f"{name}={value!r}"


def test_a_disabled_task_does_nothing_but_still_checks_step_names(monkeypatch):
    monkeypatch.setenv("CREDITGOV_NO_PROGRESS", "1")
    with progress.task("Work", total=3, unit="rows") as p:
        p.advance(2)
        p.note("half")
        assert list(p.track("ab")) == ["a", "b"]
    with progress.task("Training", steps=["fit", "register"]) as p:
        p.step("fit")
        with pytest.raises(ValueError, match="'evaluate': not one of"):
            p.step("evaluate")
    progress.OFF.step("anything")  # the default of functions given no task: any name


_PROBE = """
import sys
from creditgov import progress
with progress.task("Probe", total=2, unit="rows") as p:
    p.advance(2)
print("rich imported:", "rich" in sys.modules)
"""


@pytest.mark.parametrize("setting", [{"CI": "true"}, {"CREDITGOV_NO_PROGRESS": "1"}, {"TERM": "dumb"}])
def test_disabled_on_a_terminal_by_ci_opt_out_or_dumb_terminal_without_importing_rich(tmp_path, setting):
    code, seen = _run([sys.executable, "-c", _PROBE], _env(**setting), tmp_path)
    assert code == 0, seen
    assert "rich imported: False" in seen
    assert ESC not in seen and "Probe" not in seen


def test_disabled_when_stderr_is_not_a_terminal_without_importing_rich(tmp_path):
    err = tmp_path / "err"
    code, seen = _run([sys.executable, "-c", _PROBE], _env(), tmp_path, stderr=err)
    assert code == 0, seen
    assert "rich imported: False" in seen
    assert err.read_text() == ""


def test_shown_on_a_terminal(tmp_path):
    code, seen = _run([sys.executable, "-c", _PROBE], _env(), tmp_path)
    assert code == 0, seen
    assert "rich imported: True" in seen and "Probe" in seen and "/2 rows" in seen
    assert _screen(seen) == ["rich imported: True"]  # the bar is gone once the work is done


# --------------------------------------------------------------------------- a real command


SIM_ARGS = ("simulate", "--accounts", "300", "--months", "14", "--seed", "7")


@pytest.fixture(scope="module")
def sim_runs(tmp_path_factory):
    """`creditgov simulate` of a small book four times into the same folder (it is deterministic): without a
    terminal (stdout and stderr to files), on a terminal with CREDITGOV_NO_PROGRESS, on a terminal, and
    with only stderr on a terminal (stdout to a file)."""
    root = tmp_path_factory.mktemp("progress")
    argv = creditgov_argv(*SIM_ARGS, "--scenario", str(REPO_ROOT / "pipelines/scenarios/default.yaml"),
                          "--out", str(root / "sim"))
    runs = {}
    code, _ = _run(argv, _env(), root, stdout=root / "plain.out", stderr=root / "plain.err")
    runs["plain"] = (code, (root / "plain.out").read_text(), (root / "plain.err").read_text())
    runs["terminal, no progress"] = _run(argv, _env(CREDITGOV_NO_PROGRESS="1"), root)
    runs["terminal"] = _run(argv, _env(), root)
    code, seen = _run(argv, _env(), root, stdout=root / "split.out")
    runs["stderr on the terminal"] = (code, (root / "split.out").read_text(), seen)
    return runs


def test_a_command_without_a_terminal_writes_no_progress(sim_runs):
    code, out, err = sim_runs["plain"]
    assert code == 0, err
    assert out.startswith("simulated default: 300 accounts x 14 months")
    assert ESC not in out + err and "Simulating" not in out + err


def test_a_command_on_a_terminal_shows_progress_and_leaves_its_own_output_as_it_was(sim_runs):
    _, out, _ = sim_runs["plain"]
    code, quiet = sim_runs["terminal, no progress"]
    assert code == 0, quiet
    assert ESC not in quiet and "Simulating" not in quiet
    code, seen = sim_runs["terminal"]
    assert code == 0, seen
    assert "Simulating" in seen and "38/38 months" in seen and ESC in seen  # 24 months of burn-in + 14
    # what stays on the screen is what the command shows without progress: its own lines
    assert _screen(seen) == _screen(quiet) == out.splitlines()


def test_progress_on_a_terminal_leaves_stdout_to_a_file_unchanged(sim_runs):
    _, out, _ = sim_runs["plain"]
    code, split_out, seen = sim_runs["stderr on the terminal"]
    assert code == 0, seen
    assert split_out == out  # byte for byte: the bars and the lines above them never reach stdout
    assert "Simulating" in seen and _screen(seen) == []  # on the terminal: only the bars, erased at the end


def test_ctrl_c_during_a_bar_leaves_the_bar_erased_and_one_interruption_line(tmp_path):
    """Ctrl-C while a bar is drawn: the bar is erased and "creditgov: interrupted" follows the command's own
    lines directly, with no blank line left where the bar was."""
    argv = creditgov_argv("simulate", "--accounts", "60000", "--months", "24", "--seed", "7", "--scenario",
                          str(REPO_ROOT / "pipelines/scenarios/default.yaml"), "--out", str(tmp_path / "sim"))
    code, seen = _run(argv, _env(), tmp_path, interrupt_on="Simulating")
    assert code == 130, seen
    assert "Simulating" in seen
    assert _screen(seen) == ["creditgov: interrupted"], seen[-500:]
