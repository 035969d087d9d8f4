"""Progress of long work (train, decide, the audit append, monitor, simulate, bench) on a terminal, and
nothing anywhere else.

    with progress.task("Deciding", total=n_rows, unit="rows") as p:
        for chunk in chunks:
            ...
            p.advance(len(chunk))

    with progress.task("Training", steps=TRAINING_STEPS) as p:
        p.step("fit")  # the steps before it are done; this one is shown as under way

Bars are shown only when stderr is a terminal and none of CI, CREDITGOV_NO_PROGRESS (set to anything
but empty, 0, false, no or off) or TERM=dumb is set. Otherwise (CI, a pipe, a file, the test suite)
every call here does nothing and rich is never imported. The bars go to stderr, so stdout stays the
command's own lines, and they are transient: when the work ends they are erased, and the terminal
shows what it would show without them. Tasks opened while another is running are shown as more bars
of the same display. While bars are on screen, whole lines written to sys.stderr, and to sys.stdout
when it is the terminal too (the commands' one-line messages, warnings, library logging that writes
to sys.stderr when it writes), are printed above the bars rather than through them.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_OFF_VALUES = {"", "0", "false", "no", "off"}
REFRESH_PER_SECOND = 4


def _set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in _OFF_VALUES


def enabled(stream=None) -> bool:
    """Whether progress is shown: `stream` (default sys.stderr) is a terminal, and neither CI nor
    CREDITGOV_NO_PROGRESS nor TERM=dumb is set."""
    if _set("CI") or _set("CREDITGOV_NO_PROGRESS") or os.environ.get("TERM", "").strip() == "dumb":
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Task:
    """One bar. Every method does nothing when progress is not shown (step names are checked all the
    same, so a misnamed step fails in CI as on a terminal)."""

    def __init__(self, display: _Display | None = None, task_id=None, steps: Sequence[str] | None = None):
        self._display, self._id = display, task_id
        self._steps = list(steps) if steps is not None else None

    def advance(self, amount: float = 1) -> None:
        """`amount` more units done."""
        if self._display is not None:
            self._display.progress.advance(self._id, amount)

    def note(self, text: str) -> None:
        """What the task is doing now, shown after the bar."""
        if self._display is not None:
            self._display.progress.update(self._id, note=text)

    def step(self, name: str) -> None:
        """Step `name` is under way: the steps before it (in the list given to `task`) are done."""
        if self._steps is not None and name not in self._steps:
            raise ValueError(f"progress step {name!r}: not one of {self._steps}")
        if self._display is not None:
            done = self._steps.index(name) if self._steps is not None else None
            self._display.progress.update(self._id, completed=done, note=name)

    def track(self, items: Iterable[T], size: Callable[[T], float] | None = None) -> Iterator[T]:
        """Yield each item; once the work on it is done (the next one is asked for), advance by
        `size(item)` (default 1)."""
        for item in items:
            yield item
            self.advance(size(item) if size is not None else 1)


OFF = Task()  # a task that shows nothing: the default of functions that report progress when given a task


@contextmanager
def task(description: str, total: float | None = None, unit: str = "", steps: Sequence[str] | None = None
         ) -> Iterator[Task]:
    """A progress bar for the work inside the `with`: `total` units of `unit` (None: not known), or the
    named `steps` in order (see Task.step). Erased when the block ends, however it ends."""
    if steps is not None:
        steps = list(steps)
        total, unit = len(steps), unit or "steps"
    if not enabled():
        yield Task(steps=steps)
        return
    display = _open()
    try:
        task_id = display.progress.add_task(description, total=total, unit=unit, note="")
        display.progress.refresh()  # shown at once, however short the work
        try:
            yield Task(display, task_id, steps)
        finally:
            display.progress.remove_task(task_id)
    finally:
        _close(display)


# ------------------------------------------------------------------------------------------ the display

_lock = threading.RLock()
_display: _Display | None = None


class _Display:
    """The bars of every open task, drawn by rich on the stderr of the moment it opened."""

    def __init__(self):
        # rich costs ~80 ms to import (console, live, progress): paid only when a terminal shows bars
        from rich import console as rich_console, progress as rich_progress, text as rich_text

        Text, ProgressColumn = rich_text.Text, rich_progress.ProgressColumn

        class Note(ProgressColumn):
            def render(self, task):
                return Text(task.fields.get("note", ""), style="progress.description")

        class Count(ProgressColumn):
            def render(self, task):
                unit = task.fields.get("unit", "")
                done = f"{int(task.completed):,}"
                text = f"{done}/{int(task.total):,}" if task.total is not None else done
                return Text(f"{text} {unit}".rstrip(), style="progress.download")

        class Left(ProgressColumn):
            def render(self, task):
                left = task.time_remaining
                if task.total is None or task.finished or task.fields.get("unit") == "steps" or left is None:
                    return Text("")
                m, s = divmod(int(left), 60)
                return Text(f"about {m}:{s:02d} left", style="progress.remaining")

        self.users = 0
        self.text = Text
        self.console = rich_console.Console(file=sys.stderr)
        self.progress = rich_progress.Progress(
            rich_progress.SpinnerColumn(), rich_progress.TextColumn("{task.description}"),
            rich_progress.BarColumn(bar_width=30), Count(), rich_progress.TimeElapsedColumn(), Left(), Note(),
            console=self.console, transient=True,
            # lines written meanwhile go above the bars through _AboveBars, which leaves a stdout that is
            # not the terminal alone (rich's own redirection would send it to stderr)
            redirect_stdout=False, redirect_stderr=False, refresh_per_second=REFRESH_PER_SECOND)
        self.live = False
        self.proxies: list[_AboveBars] = []

    def say(self, line: str) -> None:
        """One line above the bars, as written (no wrapping, markup or highlighting)."""
        self.progress.refresh()  # the bars redrawn under the line show the counts of now
        self.console.print(self.text.from_ansi(line) if "\x1b" in line else self.text(line), soft_wrap=True)

    def start(self) -> None:
        self.progress.start()
        self.live = True
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _AboveBars):
                proxy = _AboveBars(stream)
                setattr(sys, name, proxy)
                self.proxies.append(proxy)

    def stop(self) -> None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream in self.proxies:  # not replaced since (a command may have silenced stderr)
                setattr(sys, name, stream.raw)
        self.live = False
        try:
            self.progress.stop()
        finally:
            for proxy in self.proxies:
                proxy.release()
            self.proxies = []


def _open() -> _Display:
    global _display
    with _lock:
        if _display is None or _display.users == 0:
            _display = _Display()  # on the stderr of now
            _display.start()
        _display.users += 1
        return _display


def _close(display: _Display) -> None:
    with _lock:
        display.users -= 1
        if display.users == 0:
            display.stop()


class _AboveBars:
    """sys.stdout or sys.stderr while bars are on screen: whole lines go above the bars when the stream
    is a terminal; everything else, and everything once the bars are gone, goes to the stream itself.
    It stays usable after the bars are gone (a logging handler made meanwhile may hold it)."""

    def __init__(self, raw):
        self.raw = raw
        self._partial = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        display = _display
        if display is None or not display.live or not self._is_terminal():
            return self.raw.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        with _lock:
            if not display.live:  # the bars went away meanwhile
                return self.raw.write("".join(line + "\n" for line in lines) + self._take_partial())
            for line in lines:
                display.say(line)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.raw.flush()

    def release(self) -> None:
        """The bars are gone: a line begun above them is finished on the stream itself."""
        rest = self._take_partial()
        if rest:
            self.raw.write(rest)

    def _take_partial(self) -> str:
        rest, self._partial = self._partial, ""
        return rest

    def _is_terminal(self) -> bool:
        try:
            return bool(self.raw.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def isatty(self) -> bool:
        return self._is_terminal()

    def __getattr__(self, name):
        if name == "raw":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.raw, name)
