"""`creditgov serve --workers N`: N worker processes answering on one listening socket; the parent seals the
decision journal.

One process spends ~10 CPU-ms a request under one GIL (deciding, the journal append, the event loop and the
sealer's bursts of Parquet, hashing and SQLite): at 100 requests/s one core is busy and requests queue. Here the
parent does what one process does before its port opens (`prepare`, the socket bound once, interrupted work
completed), then starts N workers with multiprocessing's spawn (a fresh interpreter each: no fork after XGBoost,
numba and threads exist), each loading the version the parent loaded, warming up and running uvicorn on the
same socket, as uvicorn's own supervisor does (`Server.run(sockets=[sock])` per worker; the kernel gives each
connection to one accepting process).

The journal: a worker journals and rotates its segments as one process does but seals none; a rotated
segment's descriptor goes to the parent over the worker's Unix socket (SCM_RIGHTS) and its flock with it, with
no gap (journal.Journal.hand_over), so `audit verify` always finds a live segment locked. The parent seals it at
once (within the merge delay plus the seal) and deletes it. Seal on demand (GET /v1/decisions/{id}, reviews,
contests): the worker hands its segment over and waits for the file to go; a decision it did not answer is in
another worker's segment: the parent is asked to have every worker hand its segments over (SIGUSR1) and the
worker waits for the segments that were not empty. The parent also seals, after a worker's death and every
merge delay (at most 1 s), the segments no process holds (journal.claim: those of a worker that is gone).
--merge-delay 0: no journal; each worker seals its own appends before answering.

Micro-batching makes one process cheaper per request as its load grows (queued requests are decided together);
workers split the load, so their batches are smaller and a request costs more CPU (~10 against ~7-8 CPU-ms at
100 requests/s here): they answer faster only when there are idle cores for them (hence --workers 1 by
default).

Lifecycle: workers die with the parent (PR_SET_PDEATHSIG), so a kill -9 of the parent leaves none holding the
port. SIGTERM or SIGINT to the parent is forwarded: each worker drains its requests and hands over its last
segment, the parent seals what is left and completes what a dead worker left, says one summary line and exits
0. A worker that dies after it was ready is replaced (its segment sealed first); one that fails before it was
ready stops the service with its one-line error (a new one would fail the same way)."""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing import connection, reduction
from pathlib import Path

from creditgov.decision import decide as engine
from creditgov.errors import CreditGovError
from creditgov.governance import audit, journal
from creditgov.jobs import serve

SPAWN = multiprocessing.get_context("spawn")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
STARTUP_FAILURE = 3  # a worker's exit code when it could not start (as uvicorn's)
SEAL_NICE = 10  # the parent's sealing thread yields the cores to the workers' requests (merge delay: 1 s)

log = logging.getLogger("creditgov.serve")


class WorkerFailed(CreditGovError):
    """A worker's start-up error, said by the parent in one line with the worker's exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- a worker


class _Channel:
    """A worker's end of its Unix socket to the parent: messages, and segments with their descriptors (one
    sender at a time: a descriptor follows its message)."""

    def __init__(self, conn):
        self.conn, self.lock = conn, threading.Lock()

    def say(self, *message) -> None:
        with self.lock:
            self.conn.send(message)

    def segment(self, path: Path, fd: int) -> None:
        with self.lock:
            self.conn.send(("segment", str(path)))
            reduction.send_handle(self.conn, fd, os.getppid())

    def flush(self) -> None:
        """Every worker is asked to hand its segments over now (a seal on demand of another worker's decision)."""
        self.say("flush")


class _WorkerServer(serve.Server):
    """The service's uvicorn server, telling the parent once it accepts requests."""

    def __init__(self, config, on_started):
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()


def _die_with(parent: int) -> None:
    """SIGKILL when the parent ends (Linux: PR_SET_PDEATHSIG; elsewhere a thread watches), and at once if it
    ended before this was set."""
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker(settings: serve.Settings, version: str, sock: socket.socket, conn, parent: int) -> None:
    """A worker process: the model loaded and warmed up, then uvicorn on the parent's socket until SIGTERM."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM; uvicorn handles both once up
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # "hand your segments over": the audit writer's, while it runs
    channel = _Channel(conn)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    audit.set_cache_kib(serve.SERVE_SQLITE_CACHE_KIB)  # as `prepare` sets it in one process (--merge-delay 0 appends)
    code = 0
    try:
        model = engine.load_model(settings.spec, version)
        serve.warm_up(settings, model)
        app = serve.build_app(settings, model, sealer=channel)
        serve.freeze_start_up()
    except CreditGovError as exc:
        channel.say("failed", exc.exit_code, str(exc))
        code = STARTUP_FAILURE
    except Exception as exc:
        channel.say("failed", 1, f"internal error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}")
        code = STARTUP_FAILURE
    else:
        _WorkerServer(serve.server_config(app), lambda: channel.say("ready")).run(sockets=[sock])
        w = app.state.writer
        channel.say("stopped", app.state.counters["served"], w.appended, w.logs)
    # exit handlers (multiprocessing's finalisers unlink tqdm's semaphore, which MLflow's download made), then
    # not Python's finalisation: Arrow's thread pools, torn down with a worker alive, abort the process
    # (apache/arrow#34314) after it has stopped cleanly
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --------------------------------------------------------------------------- the parent


class _Worker:
    """The parent's handle on one worker: its process, its end of the socket, what it said."""

    def __init__(self, settings: serve.Settings, version: str, sock: socket.socket):
        self.conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=_worker, args=(settings, version, sock, child, os.getpid()),
                                  name="creditgov-serve-worker", daemon=True)
        self.proc.start()
        child.close()
        self.ready = self.eof = False
        self.failure: tuple[int, str] | None = None
        self.stats: tuple[int, int, int] | None = None  # (served, records appended, logs) said at its stop


class Supervisor:
    """N workers on one socket; the journal segments they hand over or leave behind sealed here."""

    def __init__(self, settings: serve.Settings, version: str, sock: socket.socket, workers: int, say=print):
        self.settings, self.version, self.sock, self.n, self.say = settings, version, sock, workers, say
        self.workers: list[_Worker] = []
        self.stopping = False
        self.failed: WorkerFailed | None = None
        self.served = self.appended = self.logs = self.replaced = 0
        self.tick = min(max(settings.merge_delay, 0.05), 1.0)  # sweep for abandoned segments this often
        # sealing (Parquet, hashing, SQL: ~0.9 CPU-ms a request, in bursts) in a thread of lower priority, so that
        # a burst does not take a core from a worker deciding a request; spawning stays at normal priority
        self.sealer = ThreadPoolExecutor(1, thread_name_prefix="seal", initializer=_lower_priority)
        self.sweeping: Future | None = None
        self.counting = threading.Lock()

    def run(self) -> None:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self._stop) for sig in handled}
        try:
            self.workers = [_Worker(self.settings, self.version, self.sock) for _ in range(self.n)]
            while not self.stopping and not all(w.ready for w in self.workers):
                self._step(1.0)
            if not self.stopping:
                self.say(serve.listening(self.settings, self.version, self.sock, f", {self.n} workers"))
            while self.workers:
                self._step(self.tick)
        finally:
            for w in self.workers:  # (only after an error here: a worker left is not drained)
                w.proc.kill()
            for sig, handler in original.items():
                signal.signal(sig, handler)
            self.sealer.shutdown(wait=True)
        self._sweep_now()  # what a worker that died left, and a segment whose hand-over was cut short
        serve.complete_interrupted(self.settings.out_dir)
        if self.failed is not None:
            raise self.failed
        self.say(f"creditgov serve: stopped; {self.served} decisions served by {self.n} workers"
                 f"{f' ({self.replaced} replaced)' if self.replaced else ''}, {self.appended} audit records "
                 f"appended in {self.logs} decision logs")

    def _stop(self, signum=None, frame=None) -> None:
        """Stop accepting: SIGTERM to every worker (each drains its requests and hands over its journal)."""
        self.stopping = True
        for w in self.workers:
            if w.proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):  # (it ended meanwhile)
                    os.kill(w.proc.pid, signal.SIGTERM)

    def _step(self, timeout: float) -> None:
        """Wait up to `timeout` for messages and ended workers; handle them; sweep."""
        waits = [w.conn for w in self.workers if not w.eof] + [w.proc.sentinel for w in self.workers]
        ready = set(connection.wait(waits, timeout))
        for w in list(self.workers):
            if w.conn in ready:
                self._messages(w)
            if w.proc.sentinel in ready:
                self._messages(w)  # what it said before it ended
                self._ended(w)
        if self.settings.merge_delay > 0:
            self._sweep()

    def _messages(self, w: _Worker) -> None:
        while not w.eof:
            try:
                if not w.conn.poll():
                    return
                message = w.conn.recv()
            except (EOFError, OSError):
                w.eof = True
                return
            kind = message[0]
            if kind == "segment":
                try:
                    fd = reduction.recv_handle(w.conn)
                except (EOFError, OSError, RuntimeError):  # the worker died between the two: the sweep seals it
                    w.eof = True
                    return
                self._seal(Path(message[1]), fd)
            elif kind == "flush":
                self._flush()
            elif kind == "ready":
                w.ready = True
            elif kind == "failed":
                w.failure = (message[1], message[2])
            elif kind == "stopped":
                w.stats = message[1:]

    def _flush(self) -> None:
        if self.stopping:  # (each worker hands its segments over as it stops)
            return
        for w in self.workers:
            if w.ready and w.proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signal.SIGUSR1)

    def _seal(self, path: Path, fd: int) -> None:
        self.sealer.submit(self._seal_now, path, fd)

    def _seal_now(self, path: Path, fd: int) -> None:
        """A handed-over segment (its lock held by `fd`) sealed and deleted; on a failure it is left to the sweep."""
        try:
            appended, logs = serve.seal_segment(path)
        except Exception as exc:
            log.error("sealing %s failed: %s; sealed at the next sweep", path.name,
                      (str(exc).splitlines() or [""])[0][:200])
        else:
            self._count(0, appended, logs)
        finally:
            journal.release(fd)

    def _sweep(self) -> None:
        if self.sweeping is None or self.sweeping.done():  # (one at a time: a slow one is not queued again)
            self.sweeping = self.sealer.submit(self._sweep_now)

    def _sweep_now(self) -> None:
        try:
            _, appended, logs = serve.seal_abandoned(self.settings.out_dir)
        except Exception as exc:  # the segments stay: sealed at the next sweep, or by the next start
            log.error("sealing abandoned journal segments failed: %s", (str(exc).splitlines() or [""])[0][:200])
            return
        self._count(0, appended, logs)

    def _count(self, served: int, appended: int, logs: int) -> None:
        with self.counting:  # (the sealing thread and this one)
            self.served, self.appended, self.logs = self.served + served, self.appended + appended, self.logs + logs

    def _ended(self, w: _Worker) -> None:
        w.proc.join()
        w.conn.close()
        self.workers.remove(w)
        if w.stats is not None:
            self._count(*w.stats)
        if self.stopping:
            return
        self._sweep()  # its current segment, unlocked by its death
        if not w.ready:  # it could not start: a new one would not either
            code, message = w.failure or (1, f"a worker exited with {w.proc.exitcode} before it was ready")
            self.failed = self.failed or WorkerFailed(message, code)
            self._stop()
            return
        log.error("worker %d died (exit code %s); its journal segments are sealed; a new worker replaces it",
                  w.proc.pid, w.proc.exitcode)
        self.replaced += 1
        self.workers.append(_Worker(self.settings, self.version, self.sock))
        if self.stopping:  # a SIGTERM while it started: it is stopped too
            self._stop()


def _lower_priority() -> None:
    with contextlib.suppress(OSError):  # (Linux: a thread's own nice value, by its thread id)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SEAL_NICE)


def run(settings: serve.Settings, version: str, sock: socket.socket, workers: int, say=print) -> None:
    """Serve with `workers` processes (see the module's docstring); returns once they are drained and every
    journal segment is sealed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    completed = serve.complete_interrupted(settings.out_dir)
    if completed:
        say(f"creditgov serve: completed {completed} interrupted audit append(s) and journal segment(s) of "
            f"{settings.out_dir}")
    Supervisor(settings, version, sock, workers, say).run()
