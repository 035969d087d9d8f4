"""A private PostgreSQL server for the test session (used by the `postgres` fixture in conftest.py).

Debian's `postgresql` package provides the binaries (`.ci/run` installs it); nothing here touches
the system cluster. `PostgresServer.start()` runs initdb on a data directory in a fresh temporary
directory, then `pg_ctl start` on a free TCP port of 127.0.0.1 only, with its unix socket in the
same temporary directory, trust authentication (loopback and the private socket only) and
fsync off. PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
`postgres` system user the Debian package creates (through `runuser`, or `setpriv`), and the
temporary directory is given to that user. `stop()` is `pg_ctl stop -m fast` and removes the
directory. Anything that prevents the server from starting raises `PostgresUnavailable` naming
why, which the fixture turns into a skip with that reason.
"""
from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

SUPERUSER = "postgres"  # the database superuser initdb creates (-U); trust auth, no password
SYSTEM_USER = "postgres"  # the OS user the server runs as when the tests run as root
START_TIMEOUT_S = 60
_DBNAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """The server cannot be started here; the message says why."""


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin with initdb and pg_ctl (else initdb on PATH)."""
    def major(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return -1.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(on_path)
    for initdb in candidates:
        bindir = Path(initdb).parent
        if os.access(bindir / "initdb", os.X_OK) and os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    raise PostgresUnavailable("no initdb and pg_ctl in /usr/lib/postgresql/*/bin or on PATH "
                              "(install Debian's postgresql package: .ci/run does)")


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)[:500] or "no output"


class PostgresServer:
    """A throw-away PostgreSQL server on 127.0.0.1. Use `url(dbname)` for a fresh database."""

    def __init__(self, base_dir: str | os.PathLike | None = None):
        self._base_parent = base_dir
        self.base: Path | None = None
        self.bindir: Path | None = None
        self.port: int | None = None
        self.host = "127.0.0.1"
        self.user = SUPERUSER
        self.version = ""
        self.start_seconds: float | None = None
        self._prefix: list[str] = []  # runs a command as the server's OS user
        self._running = False
        self._created: set[str] = set()
        self._counter = 0

    # ------------------------------------------------------------------ life cycle
    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    def _run(self, *cmd: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        return subprocess.run([*self._prefix, *cmd], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=self.base, stdin=subprocess.DEVNULL)

    def _as_server_user(self) -> None:
        """Root cannot run postgres: run it as the `postgres` system user and give it the directory."""
        if os.geteuid() != 0:
            return
        import pwd

        try:
            pw = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PostgresUnavailable(f"running as root and there is no '{SYSTEM_USER}' system user "
                                      "to run the server as (Debian's postgresql package creates it)") from None
        if shutil.which("runuser"):
            self._prefix = ["runuser", "-u", SYSTEM_USER, "--"]
        elif shutil.which("setpriv"):
            self._prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]
        else:
            raise PostgresUnavailable("running as root and neither runuser nor setpriv is available "
                                      f"to run the server as '{SYSTEM_USER}'")
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        # every parent directory must be searchable by that user
        probe = self._run("test", "-w", str(self.base), timeout=30)
        if probe.returncode != 0:
            raise PostgresUnavailable(f"user '{SYSTEM_USER}' cannot write to {self.base} "
                                      "(a parent directory is not searchable; set TMPDIR)")

    def start(self) -> "PostgresServer":
        t0 = time.monotonic()
        self.bindir = find_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="creditgov-pg-", dir=self._base_parent))
        try:
            self._as_server_user()
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)  # a session that dies before fixture teardown still stops it
        self.start_seconds = time.monotonic() - t0
        return self

    def _initdb(self) -> None:
        try:
            r = self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                          "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        except subprocess.TimeoutExpired:
            raise PostgresUnavailable(f"initdb did not finish in {START_TIMEOUT_S} s") from None
        if r.returncode != 0:
            raise PostgresUnavailable(f"initdb failed (exit {r.returncode}): {_tail(r.stderr or r.stdout)}")
        v = subprocess.run([str(self.bindir / "pg_ctl"), "--version"], capture_output=True, text=True, timeout=30)
        m = re.search(r"\(PostgreSQL\)\s+(\S+)", v.stdout)
        self.version = m.group(1) if m else ""
        # only loopback TCP and the private socket, both without a password
        (self.datadir / "pg_hba.conf").write_text(
            "# creditgov test server: trust on the private socket and loopback only\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n", encoding="utf-8")

    def _configure(self, port: int) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            # a throw-away server: durability off for speed
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "200",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        conf = "\n".join(f"{k} = {v}" for k, v in settings.items())
        (self.datadir / "postgresql.auto.conf").write_text(
            "# written by tests/pg_server.py\n" + conf + "\n", encoding="utf-8")

    def _start_server(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self._prefix:
            shutil.chown(self.socket_dir, SYSTEM_USER, SYSTEM_USER)
        last = ""
        for _attempt in range(3):  # a free port can be taken between choosing it and binding it
            port = free_port()
            self._configure(port)
            try:
                r = self._run(str(self.bindir / "pg_ctl"), "start", "-D", str(self.datadir),
                              "-l", str(self.logfile), "-w", "-t", str(START_TIMEOUT_S), "-s",
                              timeout=START_TIMEOUT_S + 10)
            except subprocess.TimeoutExpired:
                raise PostgresUnavailable(f"pg_ctl start did not finish in {START_TIMEOUT_S} s") from None
            if r.returncode == 0:
                self.port = port
                self._running = True
                return
            last = self._server_log() or r.stderr or r.stdout
            if "could not bind" not in last and "already in use" not in last:
                break
        raise PostgresUnavailable(f"pg_ctl start failed: {_tail(last)}")

    def _server_log(self) -> str:
        try:
            return self.logfile.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """pg_ctl stop -m fast, then remove the data directory. Safe to call twice."""
        if self._running:
            self._running = False
            try:
                self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast",
                          "-w", "-t", "30", "-s", timeout=40)
            except subprocess.TimeoutExpired:
                self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "immediate",
                          "-s", timeout=20)
        if self.base is not None and self.base.exists():
            shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ databases
    def connect(self, dbname: str = "postgres"):
        """A psycopg2 connection to `dbname` as the superuser (autocommit; close it yourself)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=dbname,
                                connect_timeout=10)
        conn.autocommit = True
        return conn

    def create_database(self, dbname: str | None = None) -> str:
        """A new, empty database (a generated name when none is given); an existing name is an error."""
        if not self._running:
            raise RuntimeError("the PostgreSQL test server is not running")
        if dbname is None:
            self._counter += 1
            dbname = f"auto_{self._counter}"
        if not _DBNAME.match(dbname):
            raise ValueError(f"database name {dbname!r}: use lower-case letters, digits and _ only")
        from psycopg2 import errors, sql

        with closing(self.connect("postgres")) as conn, conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'")
                            .format(sql.Identifier(dbname)))
            except errors.DuplicateDatabase:
                raise ValueError(f"database {dbname!r} already exists on the test server: "
                                 "use a new name for each fresh database") from None
        self._created.add(dbname)
        return dbname

    def url(self, dbname: str | None = None) -> str:
        """Create a fresh database and return its SQLAlchemy / MLflow URL."""
        name = self.create_database(dbname)
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{name}"

    def __repr__(self) -> str:
        state = f"127.0.0.1:{self.port}" if self._running else "stopped"
        return f"<PostgresServer {self.version or '?'} {state}>"
