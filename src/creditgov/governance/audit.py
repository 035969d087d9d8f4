"""The audit trail: every decision provably logged once, and every oversight event chained.

Design (the README's "Audit trail" section says it for a regulator's technician):

* The decision content lives in the decision logs (Parquet, one row per decision). The trail
  commits to each log compactly, as Certificate Transparency (RFC 9162) commits to certificates:
  each decision record (a log row as canonical JSON, `creditgov.governance.merkle`) is a leaf, and one chain
  entry per batch holds the log file's SHA-256 and the Merkle root over its records.
* `audit_entries` is a hash chain: hash[n] = SHA-256 of "seq, kind, record_id, recorded_at,
  SHA-256(payload), hash[n-1]" joined by 0x1f. Batches, reviews, contests, promotions and prunes
  are entries; `audit_chain_head` keeps the last (seq, hash), which `creditgov audit verify` prints so
  it can be published elsewhere.
* The index is two tables. `audit_decisions` is positional: (batch, position) -> decision id (16 bytes),
  leaf hash (32 bytes), appended in position order. `audit_ids` is the id index: decision id -> batch,
  position, its PRIMARY KEY the UNIQUE key on the decision id, so the store itself refuses a second copy
  of a decision: two processes appending the same batch at the same moment insert each decision once.
  A positional row whose id the key refused (another batch, or an earlier position, holds it) is deleted
  in the same transaction: every positional row has exactly one id row naming it, which verify checks.
  An append's id rows go in in key order, one sweep over the id index's pages per transaction.
* `audit_batches` tracks a batch from `open` (index rows being inserted, chunk by chunk) to
  `sealed` (its chain entry written). A kill leaves an open batch, which verify names as
  incomplete and which the same command completes when run again.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import queue
import sqlite3
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg2 import Binary

from creditgov import progress
from creditgov.errors import CreditGovError
from creditgov.governance import journal, merkle

URL_ENV = "CREDITGOV_AUDIT_URL"
GENESIS = "0" * 64
CHUNK_ROWS = 65_536  # decisions hashed and indexed per transaction: bounded memory, steady progress
IN_FLIGHT = 3  # chunks read and encoded but not yet hashed (the append's memory is about this many chunks)
HASHED_WAITING = 16  # hashed chunks (their ids and leaves, 48 bytes a decision) waiting for the index writer
INDEX_ROWS = 524_288  # decisions indexed per transaction: each commit rewrites (WAL) every page of the
# unique index its random keys touch, so fewer, larger commits write the index a few times, not once per chunk
MAX_NAMED = 20  # problems named one by one before they are counted


class AuditError(CreditGovError):
    exit_code = 8


def audit_url() -> str:
    return os.environ.get(URL_ENV) or f"sqlite:///{(Path.cwd() / 'audit.db').resolve()}"


def exists(url: str | None = None) -> bool:
    """False for a default SQLite store that was never written (reading must not create one)."""
    url = url or audit_url()
    return not url.startswith("sqlite:///") or Path(url[len("sqlite:///"):]).exists()


# the id index: each decision id once (its PRIMARY KEY is the store's unique key), with the batch and position
# of the one positional row (audit_decisions) that holds it
_IDS_DDL = {
    "sqlite": "CREATE TABLE {} audit_ids (decision_id BLOB PRIMARY KEY, batch INTEGER NOT NULL, "
              "position INTEGER NOT NULL) WITHOUT ROWID",
    "postgresql": "CREATE TABLE {} audit_ids (decision_id BYTEA PRIMARY KEY, batch BIGINT NOT NULL, "
                  "position BIGINT NOT NULL)",
}
_DDL = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS audit_entries (seq INTEGER PRIMARY KEY, kind VARCHAR(16) NOT NULL, "
        "record_id VARCHAR(96) NOT NULL, recorded_at VARCHAR(32) NOT NULL, payload TEXT NOT NULL, "
        "prev_hash CHAR(64) NOT NULL, hash CHAR(64) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, "
        "hash CHAR(64) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_batches (batch INTEGER PRIMARY KEY, log_sha256 CHAR(64) NOT NULL UNIQUE, "
        "log_name TEXT NOT NULL, log_path TEXT NOT NULL, tree_size INTEGER NOT NULL, status VARCHAR(8) NOT NULL, "
        "merkle_root CHAR(64), entry_seq INTEGER, opened_at VARCHAR(32) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_decisions (batch INTEGER NOT NULL, position INTEGER NOT NULL, "
        "decision_id BLOB NOT NULL, leaf BLOB NOT NULL, PRIMARY KEY (batch, position)) WITHOUT ROWID",
        _IDS_DDL["sqlite"].format("IF NOT EXISTS"),
    ],
    "postgresql": [
        "CREATE TABLE IF NOT EXISTS audit_entries (seq BIGINT PRIMARY KEY, kind VARCHAR(16) NOT NULL, "
        "record_id VARCHAR(96) NOT NULL, recorded_at VARCHAR(32) NOT NULL, payload TEXT NOT NULL, "
        "prev_hash CHAR(64) NOT NULL, hash CHAR(64) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, "
        "hash CHAR(64) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_batches (batch BIGSERIAL PRIMARY KEY, log_sha256 CHAR(64) NOT NULL UNIQUE, "
        "log_name TEXT NOT NULL, log_path TEXT NOT NULL, tree_size BIGINT NOT NULL, status VARCHAR(8) NOT NULL, "
        "merkle_root CHAR(64), entry_seq BIGINT, opened_at VARCHAR(32) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_decisions (batch BIGINT NOT NULL, position BIGINT NOT NULL, "
        "decision_id BYTEA NOT NULL, leaf BYTEA NOT NULL, PRIMARY KEY (batch, position))",
        _IDS_DDL["postgresql"].format("IF NOT EXISTS"),
    ],
}
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS audit_entries_record ON audit_entries (record_id)",
]
_OLD_ID_INDEX = "audit_decisions_id"  # the earlier layout's unique index on audit_decisions (_migrate drops it)
_engines: dict = {}
# SQLite's page cache per connection, KiB: 256 MiB for a bulk append (the unique index takes random inserts);
# a service appending a few decisions at a time sets less (set_cache_kib), or its memory grows with the store
_cache_kib = 262144


def set_cache_kib(kib: int) -> None:
    """The SQLite page cache of the store's connections opened from now on (KiB)."""
    global _cache_kib
    _cache_kib = int(kib)


def _engine(url: str | None = None):
    from sqlalchemy import create_engine, event, text  # heavy: only once the store is opened

    url = url or audit_url()
    if url in _engines:
        return _engines[url]
    driver_url = url
    for plain in ("postgresql://", "postgres://"):  # the bulk insert uses psycopg2's execute_values
        if url.startswith(plain):
            driver_url = "postgresql+psycopg2://" + url[len(plain):]
    eng = create_engine(driver_url, future=True)
    dialect = eng.dialect.name
    if dialect not in _DDL:
        raise AuditError(f"audit store {url}: unsupported database '{dialect}' (use SQLite or PostgreSQL)")
    if dialect == "sqlite":
        @event.listens_for(eng, "connect")
        def _pragmas(conn, _):  # durable appends; readers wait instead of failing on a busy file
            # a new store gets 32 KiB pages (an existing one keeps its own): the unique index takes random
            # inserts, a quarter faster on large pages than on the default 4 KiB ones
            conn.execute("PRAGMA page_size=32768")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute(f"PRAGMA cache_size=-{_cache_kib}")

    for attempt in range(10):
        try:
            with eng.begin() as c:
                if _migrating(c, dialect):
                    _migrate(c, dialect)
                for stmt in _DDL[dialect] + _INDEXES:
                    c.execute(text(stmt))
            break
        except Exception as exc:  # two processes creating the schema at once: one wins, retry sees it
            if attempt == 9:
                raise AuditError(f"audit store {url}: {str(exc).splitlines()[0][:200]}") from None
            time.sleep(0.1 * (attempt + 1))
    _engines[url] = eng
    return eng


def _tables(c, dialect: str) -> set[str]:
    from sqlalchemy import text  # heavy: see _engine

    if dialect == "sqlite":
        return {r[0] for r in c.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
    return {r[0] for r in c.execute(text("SELECT table_name FROM information_schema.tables WHERE "
                                         "table_schema = current_schema()"))}


def _migrating(c, dialect: str) -> bool:
    """A store written before the id index had a table of its own: audit_decisions without audit_ids."""
    have = _tables(c, dialect)
    return "audit_decisions" in have and "audit_ids" not in have


def _migrate(c, dialect: str) -> None:
    """Move a store of the earlier layout (one table, its unique index on decision_id) to two tables, inside the
    caller's transaction (all or nothing): audit_ids is filled from audit_decisions in key order and the old
    index dropped. CREATE TABLE without IF NOT EXISTS: of two processes migrating at once, the second fails,
    and its retry finds the store migrated. A store whose old unique key had been dropped and that holds a
    decision twice keeps the first (batch, position) in audit_ids; verify names the other as duplicated."""
    from sqlalchemy import text  # heavy: see _engine

    c.execute(text(_IDS_DDL[dialect].format("")))
    c.execute(text("INSERT INTO audit_ids (decision_id, batch, position) SELECT decision_id, batch, position "
                   "FROM audit_decisions WHERE true ORDER BY decision_id ON CONFLICT DO NOTHING"))
    c.execute(text(f"DROP INDEX IF EXISTS {_OLD_ID_INDEX}"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _finite(v):
    """NaN and infinities are not JSON: they are recorded as null."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_finite(x) for x in v]
    if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
        return None
    return v


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    return str(v)


def canonical(payload: dict) -> str:
    return json.dumps(_finite(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_jsonable, allow_nan=False)


def entry_hash(seq: int, kind: str, record_id: str, recorded_at: str, payload_sha256: str, prev: str) -> str:
    """The chain link, as the README's proof-checking snippet computes it."""
    fields = [str(seq), kind, record_id, recorded_at, payload_sha256, prev]
    return hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest()


def payload_sha256(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- chain entries


def _retryable(url: str | None) -> tuple:
    """The errors a write transaction is tried again after (a concurrent writer took the seq or the lock)."""
    from sqlalchemy.exc import IntegrityError, OperationalError  # heavy: see _engine

    retry = (IntegrityError, OperationalError, sqlite3.OperationalError, sqlite3.IntegrityError)
    if _engine(url).dialect.name == "postgresql":  # raw-cursor statements raise the driver's own errors
        retry += (psycopg2.OperationalError, psycopg2.IntegrityError)
    return retry


def _retrying(url: str | None, fn):
    """Run a write transaction, again when a concurrent writer took the same seq or held the lock."""
    retry = _retryable(url)
    eng = _engine(url)
    for attempt in range(40):
        try:
            with eng.begin() as c:
                return fn(c)
        except retry as exc:
            if attempt == 39:
                raise AuditError(f"audit store {url or audit_url()}: append failed: "
                                 f"{str(exc).splitlines()[0][:200]}") from None
            time.sleep(0.02 * (attempt + 1))


def _chain(c, records: list[tuple[str, str, dict]]) -> list[int]:
    """Append entries after the current head inside transaction c; their seqs."""
    from sqlalchemy import text  # heavy: see _engine

    head = c.execute(text("SELECT seq, hash FROM audit_chain_head WHERE id = 1")).first()
    seq, prev = (int(head[0]), head[1]) if head else (0, GENESIS)
    rows, seqs = [], []
    for kind, rid, payload in records:
        seq += 1
        at = _now()
        body = payload if isinstance(payload, str) else canonical(payload)
        h = entry_hash(seq, kind, rid, at, payload_sha256(body), prev)
        rows.append({"seq": seq, "kind": kind, "record_id": rid, "recorded_at": at, "payload": body,
                     "prev_hash": prev, "hash": h})
        seqs.append(seq)
        prev = h
    if rows:
        c.execute(text("INSERT INTO audit_entries (seq, kind, record_id, recorded_at, payload, prev_hash, hash) "
                       "VALUES (:seq, :kind, :record_id, :recorded_at, :payload, :prev_hash, :hash)"), rows)
        if head is None:
            c.execute(text("INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, :seq, :hash)"), {"seq": seq, "hash": prev})
        else:  # conditional on the head we read: a concurrent append makes this update miss, and we retry
            n = c.execute(text("UPDATE audit_chain_head SET seq = :seq, hash = :hash WHERE id = 1 AND seq = :old"),
                          {"seq": seq, "hash": prev, "old": int(head[0])}).rowcount
            if n != 1:
                from sqlalchemy.exc import OperationalError  # heavy: see _engine

                raise OperationalError("audit_chain_head moved", None, Exception("concurrent append"))
    return seqs


def append(records: list[tuple[str, str, dict]], url: str | None = None) -> int:
    """Append (kind, record_id, payload) entries atomically, chained to the current head."""
    return len(_retrying(url, lambda c: _chain(c, records)))


# --------------------------------------------------------------------------- decision batches


@dataclass(frozen=True)
class LogAppend:
    batch: int
    log_sha256: str
    tree_size: int
    merkle_root: str
    inserted: int        # index rows this call inserted (another process or batch may hold the rest)
    already_sealed: bool  # the batch was in the trail before this call
    entry_seq: int | None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


DICT_BYTES_PER_VALUE = 2.0  # a text column stored in fewer bytes a value than this is a small dictionary


def _dictionary_columns(pf: pq.ParquetFile) -> list[str]:
    """The text columns (list elements included) stored as small dictionaries in every row group of a log:
    a model's name, a policy hash, a catalogue reason. They are read as Arrow dictionaries, so that their
    texts are not copied out once per row; the leaves are the same (merkle encodes values, not layouts)."""
    md = pf.metadata
    out = []
    for j in range(md.num_columns):
        col = pf.schema.column(j)
        if col.physical_type != "BYTE_ARRAY" or str(col.logical_type) != "String":
            continue
        chunks = [md.row_group(g).column(j) for g in range(md.num_row_groups)]
        if chunks and all(c.has_dictionary_page and c.total_uncompressed_size <= DICT_BYTES_PER_VALUE * max(c.num_values, 1)
                          for c in chunks):
            out.append(col.path)
    return out


def _log_chunks(path: Path, chunk_rows: int = CHUNK_ROWS):
    """(first position, table) of a decision log, a bounded number of rows at a time, never across two row
    groups (a list of dictionaries cannot be read across them: each has its own dictionary)."""
    pf = pq.ParquetFile(path)
    pf = pq.ParquetFile(path, read_dictionary=_dictionary_columns(pf))
    pos = 0
    for group in range(pf.metadata.num_row_groups):
        for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[group], use_threads=False):  # less CPU
            yield pos, pa.Table.from_batches([batch])  # than Arrow's pool
            pos += batch.num_rows


def _ids16(ids) -> list[bytes]:
    out = []
    for d in ids:
        s = str(d)
        try:
            b = bytes.fromhex(s)
        except ValueError:
            b = b""
        out.append(b if len(b) == 16 else hashlib.sha256(s.encode()).digest()[:16])
    return out


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _ids16_array(col) -> np.ndarray:
    """(n, 16) uint8 keys of a decision_id column, as _ids16 makes them, without a Python loop over the
    usual 32-hex-digit ids (any other id takes _ids16's path)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n and arr.null_count == 0 and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) \
            and pc.all(pc.equal(pc.binary_length(arr), 32)).as_py():
        width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        first = int(np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset])
        digits = _HEX[np.frombuffer(arr.buffers()[2], np.uint8)[first:first + 32 * n]].reshape(n, 32)
        if (digits != 255).all():
            return (digits[:, 0::2] << 4) | digits[:, 1::2]
    if n == 0:
        return np.zeros((0, 16), np.uint8)
    return np.frombuffer(b"".join(_ids16(arr.to_pylist())), np.uint8).reshape(n, 16)


def _id_text(b: bytes) -> str:
    return bytes(b).hex()


_PLACE = {  # a chunk's positional rows, one statement: the keys and leaves travel as two blobs, split by the
    # database (SQLite counts the rows from a per-connection temporary table of 0, 1, 2, ...: a recursive CTE
    # would cost a queue insert per row); a position already held (the same batch appended again) is skipped
    "sqlite": "INSERT INTO audit_decisions (batch, position, decision_id, leaf) SELECT ?, ? + i, "
              "substr(?, 16 * i + 1, 16), substr(?, 32 * i + 1, 32) FROM temp.audit_seq WHERE i < ? "
              "ON CONFLICT DO NOTHING",
    "postgresql": "INSERT INTO audit_decisions (batch, position, decision_id, leaf) SELECT %s, %s + i, "
                  "substring(%s from 16 * i + 1 for 16), substring(%s from 32 * i + 1 for 32) "
                  "FROM generate_series(0, %s - 1) AS i ON CONFLICT DO NOTHING",
}
_CLAIM = {  # the id rows of positions first, first+1, ...; a decision id already held is skipped (the unique key)
    "sqlite": "INSERT INTO audit_ids (decision_id, batch, position) SELECT substr(?, 16 * i + 1, 16), ?, ? + i "
              "FROM temp.audit_seq WHERE i < ? ON CONFLICT DO NOTHING",
    # the same rows in key order: row i is position first + the i-th fixed-width decimal of the offsets blob
    "sqlite-sorted": "INSERT INTO audit_ids (decision_id, batch, position) SELECT substr(?, 16 * i + 1, 16), ?, "
                     "? + CAST(substr(?, ? * i + 1, ?) AS INTEGER) FROM temp.audit_seq WHERE i < ? "
                     "ON CONFLICT DO NOTHING",
    "postgresql": "INSERT INTO audit_ids (decision_id, batch, position) SELECT substring(%s from 16 * i + 1 for 16), "
                  "%s, %s + i FROM generate_series(0, %s - 1) AS i ON CONFLICT DO NOTHING",
}
_UNCLAIMED = {  # positional rows of a range whose decision id another batch or position holds: not the trail's
    "sqlite": "DELETE FROM audit_decisions WHERE batch = ? AND position >= ? AND position < ? AND NOT EXISTS "
              "(SELECT 1 FROM audit_ids i WHERE i.decision_id = audit_decisions.decision_id AND "
              "i.batch = audit_decisions.batch AND i.position = audit_decisions.position)",
    "postgresql": "DELETE FROM audit_decisions d WHERE d.batch = %s AND d.position >= %s AND d.position < %s AND "
                  "NOT EXISTS (SELECT 1 FROM audit_ids i WHERE i.decision_id = d.decision_id AND i.batch = d.batch "
                  "AND i.position = d.position)",
}
# SQLite gets a transaction's id rows in key order once it has this many (fewer: the sort costs more than it
# saves): each random insert into the id index misses the CPU caches once the store is large, and the ordered
# sweep visits each of the index's pages once while it is hot; the positional rows go in position order
SORTED_ROWS = 4096


def _key_order(ids: np.ndarray) -> np.ndarray:
    """The permutation putting (n, 16) uint8 keys in the order SQLite compares blobs (bytewise)."""
    words = ids.view(">u8")  # two big-endian words a key: their order is the bytes' order
    return np.lexsort((words[:, 1], words[:, 0]))


def _decimals(values: np.ndarray) -> tuple[bytes, int]:
    """Non-negative integers as fixed-width ASCII decimals in one blob (SQLite reads the i-th with substr, by
    byte offset, and CAST: no JSON to parse; a text would be counted in characters from its start); the width."""
    width = len(str(int(values.max()))) if len(values) else 1
    digits = (values.astype(np.int64)[:, None] // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)) % 10
    return (digits.astype(np.uint8) + 48).tobytes(), width


def _seq(cur, n: int) -> None:
    """SQLite's per-connection temporary table of 0, 1, ..., at least n - 1."""
    cur.execute("CREATE TEMP TABLE IF NOT EXISTS audit_seq (i INTEGER PRIMARY KEY)")
    have = cur.execute("SELECT COALESCE(MAX(i), -1) FROM temp.audit_seq").fetchone()[0]
    if have < n - 1:
        cur.execute("INSERT INTO temp.audit_seq (i) WITH RECURSIVE k(i) AS (SELECT ? UNION ALL SELECT i + 1 "
                    "FROM k WHERE i + 1 < ?) SELECT i FROM k", (have + 1, n))


def _cursor(c, dialect: str, n: int):
    """The driver's cursor of connection c, for a statement over n rows (SQLite: temp.audit_seq counts to n)."""
    cur = c.connection.driver_connection.cursor()
    if dialect == "sqlite":
        _seq(cur, n)
    return cur


def _place(c, dialect: str, batch: int, first: int, ids: np.ndarray, leaves: np.ndarray) -> int:
    """The positional rows (batch, position, decision id, leaf) of decisions first, first+1, ... of a batch, in
    position order; a position already held is skipped. Returns the rows inserted."""
    n = len(ids)
    if n == 0:
        return 0
    cur = _cursor(c, dialect, n)
    if dialect == "sqlite":
        cur.execute(_PLACE["sqlite"], (batch, first, ids.tobytes(), leaves.tobytes(), n))
        return cur.execute("SELECT changes()").fetchone()[0]  # rowcount is -1 for a statement led by WITH
    cur.execute(_PLACE["postgresql"], (batch, first, Binary(ids.tobytes()), Binary(leaves.tobytes()), n))
    return cur.rowcount


def _claim(c, dialect: str, batch: int, first: int, ids: np.ndarray, placed: int) -> int:
    """The id rows of decisions first, first+1, ... of a batch whose positional rows `_place` put in (`placed`
    of them new): each decision id is inserted once, the unique key deciding (so two processes inserting the
    same rows at once insert each once); SQLite, from SORTED_ROWS rows on, in key order. Where the key refused a
    decision (another batch, or an earlier position, holds it), its positional row of this range goes too: a
    decision is in the trail once, under the batch that indexed it first. Returns the id rows inserted."""
    n = len(ids)
    if n == 0:
        return 0
    cur = _cursor(c, dialect, n)
    if dialect == "sqlite":
        if n >= SORTED_ROWS:
            order = _key_order(ids)
            offsets, width = _decimals(order)
            cur.execute(_CLAIM["sqlite-sorted"], (ids[order].tobytes(), batch, first, offsets, width, width, n))
        else:
            cur.execute(_CLAIM["sqlite"], (ids.tobytes(), batch, first, n))
        claimed = cur.execute("SELECT changes()").fetchone()[0]
    else:
        cur.execute(_CLAIM["postgresql"], (Binary(ids.tobytes()), batch, first, n))
        claimed = cur.rowcount
    if claimed != placed:  # an id refused for a row placed now: keep only the owned rows (a row placed before
        # was committed with its id row; a range appended again, by a rerun or a concurrent writer, places none)
        cur.execute(_UNCLAIMED[dialect], (batch, first, first + n))
    return claimed


def _insert_index(c, dialect: str, batch: int, first: int, ids: np.ndarray, leaves: np.ndarray) -> int:
    """Index decisions first, first+1, ... of a batch in one go (`_place`, then `_claim`); the id rows inserted."""
    return _claim(c, dialect, batch, first, ids, _place(c, dialect, batch, first, ids, leaves))


_END, _ABORT = object(), object()  # what the append's reader sends its index writer last


def _feed(feed: queue.Queue, item, written) -> None:
    """Hand the index writer an item, waiting while it is HASHED_WAITING chunks behind; its error if it failed."""
    while True:
        try:
            feed.put(item, timeout=0.1)
            return
        except queue.Full:
            if written.done():
                written.result()
                return


def _write_index(url: str | None, dialect: str, batch: int, feed: queue.Queue, index_rows: int) -> int:
    """The append's index writer (a thread of its own): each hashed chunk from `feed` goes into an open
    transaction committed every index_rows decisions and at _END; the database releases the GIL while it
    inserts. A chunk's positional rows go in when it comes (position order: appended at the end of
    audit_decisions); the transaction's id rows go in together at its commit (`_claim`: in key order, one sweep
    over the id index's pages; few, large commits write those pages a few times). A conflict with a concurrent
    writer rolls the transaction back and inserts its chunks again; _ABORT (the reader failed or was
    interrupted) rolls back. Returns the id rows inserted."""
    retry = _retryable(url)
    conn = _engine(url).connect()
    held: list = []  # (first position, ids, leaves) of the chunks in the open transaction
    trans, counted, inserted, rows, held_in, placed = None, 0, 0, 0, 0, 0

    def step(commit: bool) -> None:
        nonlocal trans, counted, inserted, held_in, placed
        for attempt in range(40):
            try:
                if trans is None:  # a new transaction, or the same one again from its first chunk
                    trans, counted, held_in, placed = conn.begin(), 0, 0, 0
                for first, ids, lv in held[held_in:]:  # the chunks not yet in this transaction, now
                    placed += _place(conn, dialect, batch, first, ids, lv)
                held_in = len(held)
                if commit:
                    ids = held[0][1] if len(held) == 1 else np.concatenate([h[1] for h in held])
                    counted = _claim(conn, dialect, batch, held[0][0], ids, placed)
                    trans.commit()
                    trans, inserted = None, inserted + counted
                return
            except retry as exc:
                if attempt == 39:
                    raise AuditError(f"audit store {url or audit_url()}: append failed: "
                                     f"{str(exc).splitlines()[0][:200]}") from None
                if trans is not None:
                    try:
                        trans.rollback()
                    except Exception:  # the connection's own error: the next begin() shows it
                        pass
                trans = None
                time.sleep(0.02 * (attempt + 1))

    try:
        while True:
            item = feed.get()
            if item is _ABORT:
                return inserted
            if item is not _END:
                hashed, ids, first = item
                held.append((first, ids, hashed.result()))
                rows += len(ids)
                step(False)
            if held and (item is _END or rows >= index_rows):
                step(True)
                held.clear()
                rows = 0
            if item is _END:
                return inserted
    finally:
        if trans is not None:
            try:
                trans.rollback()
            except Exception:  # closing the connection discards the transaction anyway
                pass
        conn.close()


def _resumed_format(batch: int, path: Path, url: str | None) -> str:
    """The leaf format of a batch being completed: the one its first indexed leaf was hashed in (a batch
    opened by an earlier version in the JSON format is completed in it), else the current one."""
    from sqlalchemy import text  # heavy: see _engine

    with _engine(url).connect() as c:
        row = c.execute(text("SELECT position, leaf FROM audit_decisions WHERE batch = :b ORDER BY position "
                             "LIMIT 1"), {"b": batch}).first()
    if row is None:
        return merkle.LEAF_FORMAT
    table = _log_rows(path, [int(row[0])])[int(row[0])]
    for fmt in (merkle.LEAF_FORMAT, *merkle.FORMATS):
        if merkle.leaf_hashes_for(table, fmt)[0].tobytes() == bytes(row[1]):
            return fmt
    return merkle.LEAF_FORMAT


def record_log(path: str | Path, url: str | None = None, chunk_rows: int | None = None, log=None) -> LogAppend:
    """Put a decision log in the trail: index its decisions chunk by chunk, then seal the batch with one
    chain entry (log SHA-256, Merkle root). Idempotent and safe to run concurrently on the same log."""
    chunk_rows = chunk_rows or int(os.environ.get("CREDITGOV_AUDIT_CHUNK_ROWS") or CHUNK_ROWS)
    # (a chunk size set by hand, for tests or small machines, is also the index transaction size)

    path = Path(path).resolve()
    # the hashing kernels load (numba's cache, ~0.5 s once per process) in the hasher thread while this one
    # hashes the file and opens the store: much of both waits outside the GIL (LLVM, OpenSSL, SQLite, disk)
    hasher = ThreadPoolExecutor(1)
    hasher.submit(_load_kernels, path)
    try:
        return _record_log(path, url, chunk_rows, log, hasher)
    finally:  # (a log already sealed returns at once: its head start is not waited for)
        hasher.shutdown(wait=False, cancel_futures=True)


def _load_kernels(path: Path) -> None:
    """Hash the log's first rows as the append will (their dictionary columns, a parallel batch and a root):
    the kernels that takes are loaded before the append needs them. Only a head start: the leaves are
    discarded, and so is an error (the append reads these rows itself and reports a log it cannot read)."""
    pf = pq.ParquetFile(path)
    rows = merkle.SERIAL_ROWS
    if pf.metadata.num_rows < rows:
        return  # a small log is hashed serially, with kernels that load in a moment
    pf = pq.ParquetFile(path, read_dictionary=_dictionary_columns(pf))
    batch = next(pf.iter_batches(batch_size=rows, row_groups=[0], use_threads=False))
    merkle.root(merkle.leaf_hashes_for(pa.Table.from_batches([batch]), merkle.FORMAT_BIN))


def _record_log(path: Path, url: str | None, chunk_rows: int, log, hasher: ThreadPoolExecutor) -> LogAppend:
    from sqlalchemy import text  # heavy: see _engine

    index_rows = INDEX_ROWS if chunk_rows == CHUNK_ROWS else chunk_rows
    sha = file_sha256(path)
    meta = pq.ParquetFile(path).metadata
    n = meta.num_rows
    eng = _engine(url)
    dialect = eng.dialect.name

    def _open(c):
        c.execute(text("INSERT INTO audit_batches (log_sha256, log_name, log_path, tree_size, status, opened_at) "
                       "VALUES (:s, :name, :path, :n, 'open', :at) ON CONFLICT DO NOTHING"),
                  {"s": sha, "name": path.name, "path": str(path), "n": n, "at": _now()})
        return c.execute(text("SELECT batch, status, merkle_root, entry_seq FROM audit_batches "
                              "WHERE log_sha256 = :s"), {"s": sha}).first()

    batch, status, root_hex, entry_seq = _retrying(url, _open)
    if status == "sealed":
        return LogAppend(int(batch), sha, n, root_hex, 0, True, entry_seq)
    fmt = _resumed_format(batch, path, url)

    inserted = 0
    first_row = None
    actions: dict[str, int] = {}
    frontier = merkle.Frontier()  # the root in O(log n) memory: a chunk's leaves are dropped once indexed
    in_flight: collections.deque = collections.deque()

    def _hash(prepared):  # numba, without the GIL; one hasher thread, so the chunks reach the frontier in order
        lv = merkle.hash_prepared_for(prepared)
        frontier.add(lv)
        return lv

    # three stages at once: the main thread reads and encodes chunk k + 2 while a worker hashes chunk
    # k + 1 (numba, without the GIL) and another inserts the index rows of the chunks hashed before it as
    # they come, INDEX_ROWS per transaction; at most IN_FLIGHT encoded chunks in memory
    feed: queue.Queue = queue.Queue(HASHED_WAITING)
    with ThreadPoolExecutor(1) as writer, progress.task("Audit trail", total=n, unit="decisions") as bar:
        written = writer.submit(_write_index, url, dialect, int(batch), feed, index_rows)
        end = _ABORT
        try:
            for pos, table in _log_chunks(path, chunk_rows):
                prepared = merkle.prepare_for(table, fmt)
                ids = _ids16_array(table.column("decision_id"))
                if first_row is None and table.num_rows:
                    first_row = table.slice(0, 1).to_pylist()[0]
                if "action" in table.column_names:
                    for kv in table.column("action").value_counts().to_pylist():
                        actions[str(kv["values"])] = actions.get(str(kv["values"]), 0) + int(kv["counts"])
                del table
                hashed = hasher.submit(_hash, prepared)
                in_flight.append(hashed)
                _feed(feed, (hashed, ids, pos), written)
                if len(in_flight) > IN_FLIGHT:  # at most IN_FLIGHT encoded chunks waiting for the hasher
                    in_flight.popleft().result()
                bar.advance(len(ids))
                if log is not None:
                    log(f"  audit: {pos + len(ids):,} of {n:,} decisions indexed")
            end = _END
        finally:
            _feed(feed, end, written)
        inserted = written.result()
    for h in in_flight:
        h.result()
    root = frontier.root().hex()
    stamp = {k: first_row.get(k) for k in ("model_name", "model_version", "policy_name", "policy_version",
                                              "policy_hash", "spec_hash", "decision_time", "input_hash",
                                              "input_source")} if first_row else {}
    payload = {"log_name": path.name, "log_sha256": sha, "merkle_root": root, "tree_size": n,
               "leaf_format": fmt, "actions": dict(sorted(actions.items())), **stamp}
    if fmt == merkle.FORMAT_BIN:  # the record holds values only: their names, once, in the chain entry
        payload["columns"] = sorted(pq.read_schema(path).names)

    def _seal(c):  # PostgreSQL: the batch row locked first, or two sealing processes both read 'open' (its
        # READ COMMITTED lets a second reader through; SQLite's writer lock does not)
        lock = " FOR UPDATE" if dialect == "postgresql" else ""
        row = c.execute(text(f"SELECT status, entry_seq FROM audit_batches WHERE batch = :b{lock}"),
                        {"b": batch}).first()
        if row[0] == "sealed":  # another process sealed it while we indexed
            return None
        seq = _chain(c, [("batch", sha, payload)])[0]
        c.execute(text("UPDATE audit_batches SET status = 'sealed', merkle_root = :r, entry_seq = :q "
                       "WHERE batch = :b"), {"r": root, "q": seq, "b": batch})
        return seq

    seq = _retrying(url, _seal)
    return LogAppend(int(batch), sha, n, root, inserted, seq is None, seq)


def record_log_bytes(path: str | Path, data: bytes, url: str | None = None, table=None) -> LogAppend | None:
    """A small decision log put in the trail in ONE transaction (one commit): `data` is the Parquet file as
    written at `path`; its batch is opened, indexed and sealed together, with the same index rows, leaf hashes,
    Merkle root and chain entry as `record_log` makes from the file (record_log takes three transactions and a
    chunk pipeline, for logs of any size). For a service's micro-batches, whose answers wait for this commit.
    A crash before the commit leaves the log written and nothing of it in the trail (record_log on the path
    then appends it). None when the trail already has an interrupted append of this log open: complete it
    with record_log. `table`: the Arrow table `data` was written from, given by a caller that has read a log of
    that schema back from its bytes and found it equal (column types, values, metadata), so that these bytes are
    not parsed again; by default `data` is read back here."""
    from sqlalchemy import text  # heavy: see _engine

    path = Path(path).resolve()
    sha = hashlib.sha256(data).hexdigest()
    # what verify reads back from the file (ParquetFile.read: the same table as read_table without the dataset
    # layer, ~2 ms less for a one-row log)
    if table is None:
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    n = table.num_rows
    eng = _engine(url)
    dialect = eng.dialect.name
    fmt = merkle.LEAF_FORMAT
    leaves = merkle.hash_prepared_for(merkle.prepare_for(table, fmt))
    root = merkle.root(leaves).hex()
    ids = _ids16_array(table.column("decision_id"))
    actions: dict[str, int] = {}
    if "action" in table.column_names:
        for kv in table.column("action").value_counts().to_pylist():
            actions[str(kv["values"])] = int(kv["counts"])
    first_row = table.slice(0, 1).to_pylist()[0] if n else None
    stamp = {k: first_row.get(k) for k in ("model_name", "model_version", "policy_name", "policy_version",
                                              "policy_hash", "spec_hash", "decision_time", "input_hash",
                                              "input_source")} if first_row else {}
    payload = {"log_name": path.name, "log_sha256": sha, "merkle_root": root, "tree_size": n,
               "leaf_format": fmt, "actions": dict(sorted(actions.items())), **stamp}
    if fmt == merkle.FORMAT_BIN:
        payload["columns"] = sorted(table.schema.names)

    def _all(c):
        opened = c.execute(text("INSERT INTO audit_batches (log_sha256, log_name, log_path, tree_size, status, "
                                "opened_at) VALUES (:s, :name, :path, :n, 'open', :at) ON CONFLICT DO NOTHING"),
                           {"s": sha, "name": path.name, "path": str(path), "n": n, "at": _now()}).rowcount
        batch, status, root_hex, entry_seq = c.execute(text(
            "SELECT batch, status, merkle_root, entry_seq FROM audit_batches WHERE log_sha256 = :s"),
            {"s": sha}).first()
        if status == "sealed":
            return LogAppend(int(batch), sha, n, root_hex, 0, True, entry_seq)
        if opened != 1:  # an interrupted record_log of this log: record_log completes it in its own format
            return None
        inserted = _insert_index(c, dialect, int(batch), 0, ids, leaves)
        seq = _chain(c, [("batch", sha, payload)])[0]
        c.execute(text("UPDATE audit_batches SET status = 'sealed', merkle_root = :r, entry_seq = :q "
                       "WHERE batch = :b"), {"r": root, "q": seq, "b": batch})
        return LogAppend(int(batch), sha, n, root, inserted, False, seq)

    return _retrying(url, _all)


# --------------------------------------------------------------------------- reading


def _entries(c):
    from sqlalchemy import text  # heavy: see _engine

    return c.execute(text("SELECT seq, kind, record_id, recorded_at, payload, prev_hash, hash "
                          "FROM audit_entries ORDER BY seq")).all()


def _locate(c, decision_id: str):
    from sqlalchemy import text  # heavy: see _engine

    row = c.execute(text("SELECT d.batch, d.position, d.leaf, b.log_path, b.status, b.merkle_root, b.tree_size, "
                         "b.entry_seq, b.log_sha256, e.payload FROM audit_ids i JOIN audit_decisions d "
                         "ON d.batch = i.batch AND d.position = i.position AND d.decision_id = i.decision_id "
                         "JOIN audit_batches b ON b.batch = d.batch LEFT JOIN audit_entries e ON e.seq = b.entry_seq "
                         "WHERE i.decision_id = :d"), {"d": _ids16([decision_id])[0]}).first()
    return row


def _format_of(payload) -> str:
    """A batch's leaf format, from its chain entry (batches sealed before format 2 say json-1)."""
    try:
        return json.loads(payload).get("leaf_format", merkle.FORMAT_JSON) if payload else merkle.LEAF_FORMAT
    except ValueError:
        return merkle.LEAF_FORMAT


def _log_rows(path: Path, positions: list[int]):
    """The given rows of a decision log as Arrow tables of one row each, reading only their row groups."""
    pf = pq.ParquetFile(path)
    starts, acc = [], 0
    for i in range(pf.metadata.num_row_groups):
        starts.append(acc)
        acc += pf.metadata.row_group(i).num_rows
    out = {}
    for p in positions:
        g = max(i for i, s in enumerate(starts) if s <= p)
        out[p] = pf.read_row_group(g).slice(p - starts[g], 1)
    return out


def _checked_row(decision_id: str, row, where: str):
    """The decision's log row (a one-row Arrow table), checked against the trail's leaf hash."""
    if row is None:
        raise AuditError(f"decision {decision_id} is not in the audit trail at {where}")
    batch, pos, leaf, log_path, *_, payload = row
    path = Path(log_path)
    if not path.exists():
        raise AuditError(f"decision {decision_id}: its decision log {path} is missing (audit trail {where})")
    table = _log_rows(path, [int(pos)])[int(pos)]
    fmt = _format_of(payload)
    if fmt not in merkle.FORMATS or merkle.leaf_hashes_for(table, fmt)[0].tobytes() != bytes(leaf):
        raise AuditError(f"decision {decision_id}: row {int(pos) + 1} of {path.name} does not match the record "
                         "in the audit trail (altered)")
    if str(table.column("decision_id")[0].as_py()) != decision_id:
        raise AuditError(f"decision {decision_id}: row {int(pos) + 1} of {path.name} is another decision (altered)")
    return table


def log_status(url: str | None = None) -> dict[str, str]:
    """Each decision log the trail knows, by the path it was appended from: its batch's status ('open': the
    append was interrupted and `record_log` on the same path completes it; 'sealed'; 'pruned')."""
    from sqlalchemy import text  # heavy: see _engine

    with _engine(url).connect() as c:
        return {p: s for p, s in c.execute(text("SELECT log_path, status FROM audit_batches ORDER BY batch")).all()}


def recorded(decision_ids: list[str], url: str | None = None) -> set[str]:
    """Which of these decisions the trail already holds (opens, and creates, the store: a service checks it
    at start-up with no ids)."""
    from sqlalchemy import bindparam, text  # heavy: see _engine

    eng = _engine(url)
    if not decision_ids:
        return set()
    keys = _ids16(decision_ids)
    q = text("SELECT decision_id FROM audit_ids WHERE decision_id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    found: set[bytes] = set()
    with eng.connect() as c:
        for i in range(0, len(keys), 5000):
            found.update(bytes(r[0]) for r in c.execute(q, {"ids": keys[i:i + 5000]}))
    return {d for d, k in zip(decision_ids, keys) if k in found}


def find_decision(decision_id: str, url: str | None = None) -> dict:
    """The decision's record, read from its log and checked against the trail's leaf hash."""
    with _engine(url).connect() as c:
        row = _locate(c, decision_id)
    return _checked_row(decision_id, row, audit_url() if url is None else url).to_pylist()[0]


def events_for(decision_id: str, url: str | None = None) -> list[dict]:
    """Review and contest entries about a decision, oldest first (for the per-decision report)."""
    from sqlalchemy import text  # heavy: see _engine

    eng = _engine(url)
    with eng.connect() as c:
        rows = c.execute(text("SELECT seq, kind, recorded_at, payload FROM audit_entries "
                              "WHERE kind IN ('review', 'contest') AND record_id = :rid ORDER BY seq"),
                         {"rid": decision_id}).all()
    return [{"seq": s, "kind": k, "recorded_at": at, **json.loads(p)} for s, k, at, p in rows]


def promotions(url: str | None = None) -> list[dict]:
    """Every promotion entry (promoted or refused), oldest first: its payload with `seq` and `recorded_at`."""
    from sqlalchemy import text  # heavy: see _engine

    eng = _engine(url)
    with eng.connect() as c:
        rows = c.execute(text("SELECT seq, recorded_at, payload FROM audit_entries WHERE kind = 'promotion' "
                              "ORDER BY seq")).all()
    out = []
    for seq, at, payload in rows:
        try:
            out.append({"seq": seq, "recorded_at": at, **json.loads(payload)})
        except ValueError:
            continue  # an altered payload: the chain check names it
    return out


def prove(decision_id: str, url: str | None = None) -> dict:
    """An inclusion proof a third party checks without the database (README: the proof-checking snippet)."""
    from sqlalchemy import text  # heavy: see _engine

    eng = _engine(url)
    with eng.connect() as c:
        row = _locate(c, decision_id)
        if row is None:
            raise AuditError(f"decision {decision_id} is not in the audit trail at {url or audit_url()}")
        batch, pos, leaf, log_path, status, root_hex, size, entry_seq, _, payload = row
        if status != "sealed":
            raise AuditError(f"decision {decision_id}: its batch is incomplete (not sealed): rerun the decide "
                             "command that made it to complete the trail")
        index = _index_arrays(c, int(batch), int(size))
        entries = c.execute(text("SELECT seq, kind, record_id, recorded_at, payload, prev_hash, hash "
                                 "FROM audit_entries WHERE seq >= :s ORDER BY seq"), {"s": entry_seq}).all()
        head = c.execute(text("SELECT seq, hash FROM audit_chain_head WHERE id = 1")).first()
    path = Path(log_path)
    fmt = _format_of(payload)
    record = merkle.record_bytes(_checked_row(decision_id, row, url or audit_url()), fmt)[0]
    if index is not None:
        leaves = index[1]
    else:  # some of this batch's decisions were indexed under an earlier batch: rehash the log
        leaves = np.concatenate([merkle.leaf_hashes_for(t, fmt) for _, t in _log_chunks(path)])
    tree = merkle.levels(leaves)
    path_hashes = merkle.inclusion_path(tree, int(pos))
    if bytes(tree[-1][0]).hex() != root_hex:
        raise AuditError(f"decision {decision_id}: the leaves of batch {batch} no longer hash to its recorded root")
    first = entries[0]
    shown = {"record": record.decode("utf-8")} if fmt == merkle.FORMAT_JSON else {
        "record": record.hex(), "fields": merkle.decode(record, json.loads(payload)["columns"])}
    return {
        "decision_id": decision_id, "leaf_format": fmt, **shown, "leaf_index": int(pos), "tree_size": int(size),
        "path": [h.hex() for h in path_hashes], "root": root_hex,
        "batch_entry": {"seq": first[0], "kind": first[1], "record_id": first[2], "recorded_at": first[3],
                        "payload": first[4], "prev_hash": first[5], "hash": first[6]},
        "chain": [{"seq": e[0], "kind": e[1], "record_id": e[2], "recorded_at": e[3],
                   "payload_sha256": payload_sha256(e[4]), "hash": e[6]} for e in entries[1:]],
        "head": {"seq": head[0], "hash": head[1]},
    }


# --------------------------------------------------------------------------- verification


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    batches: int
    decisions: int
    head_seq: int
    head_hash: str
    problems: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # live journal segments: promised, sealed within the delay

    @property
    def records(self) -> int:  # chain entries (the name the first version used)
        return self.entries


class _Findings:
    def __init__(self):
        self.lines: list[str] = []
        self.counts: dict[str, int] = {}

    def add(self, group: str, line: str) -> None:
        n = self.counts.get(group, 0) + 1
        self.counts[group] = n
        if n <= MAX_NAMED:
            self.lines.append(line)
        elif n == MAX_NAMED + 1:
            self.lines.append(f"... and more: {group} (counted below)")

    def result(self) -> list[str]:
        out = list(self.lines)
        for group, n in self.counts.items():
            if n > MAX_NAMED:
                out.append(f"{n} in all: {group}")
        return out


def _verify_chain(rows, head, f: _Findings) -> None:
    prev, expected = GENESIS, 1
    for seq, kind, rid, at, payload, prev_hash, h in rows:
        name = f"entry {seq} ({kind} {rid})"
        if seq != expected:
            f.add("chain", f"entries {expected} to {seq - 1} are missing before {name} (deleted)")
        elif prev_hash != prev:
            f.add("chain", f"{name}: does not link to the entry before it (inserted, reordered or altered)")
        if entry_hash(seq, kind, rid, at, payload_sha256(payload), prev_hash) != h:
            f.add("chain", f"{name}: content does not match its hash (altered)")
        else:
            try:
                json.loads(payload)
            except ValueError:
                f.add("chain", f"{name}: payload is not valid JSON (altered)")
        prev, expected = h, seq + 1
    if head is None:
        if rows:
            f.add("chain", "chain head is missing (audit_chain_head deleted)")
    else:
        last = (rows[-1][0], rows[-1][6]) if rows else (0, GENESIS)
        if (int(head[0]), head[1]) != (int(last[0]), last[1]):
            f.add("chain", f"chain head says entry {head[0]} but the last entry is {last[0]} "
                  "(entries appended or deleted at the end)")


_SPAN_ROWS = 1 << 20  # index rows verify reads per query: their ids and leaves as two blobs
_SPAN_SQL = {  # the ids and leaves of positions lo..hi-1, concatenated in position order by the database (no
    # Python object per row: that was three quarters of verify); SQLite 3.40 has no ORDER BY inside an
    # aggregate, so the rows come ordered from a subquery (another order would fail the root and the id check,
    # and send verify to the full recomputation, never to a wrong "intact")
    "sqlite": "SELECT COUNT(*), MIN(position), MAX(position), CAST(group_concat(decision_id, '') AS BLOB), "
              "CAST(group_concat(leaf, '') AS BLOB) FROM (SELECT position, decision_id, leaf FROM audit_decisions "
              "WHERE batch = ? AND position >= ? AND position < ? ORDER BY position)",
    "postgresql": "SELECT COUNT(*), MIN(position), MAX(position), string_agg(decision_id, ''::bytea ORDER BY "
                  "position), string_agg(leaf, ''::bytea ORDER BY position) FROM audit_decisions WHERE batch = %s "
                  "AND position >= %s AND position < %s",
}


def _index_arrays(c, batch: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids (size, 16), leaves (size, 32)) of a batch's index rows in position order when they are exactly
    positions 0..size-1 (the key (batch, position) is unique), else None."""
    cur = c.connection.driver_connection.cursor()
    dialect = c.dialect.name
    mark = "?" if dialect == "sqlite" else "%s"
    cur.execute(f"SELECT COUNT(*) FROM audit_decisions WHERE batch = {mark}", (batch,))
    if int(cur.fetchone()[0]) != size:
        return None
    ids, leaves = [], []
    for lo in range(0, size, _SPAN_ROWS):
        hi = min(size, lo + _SPAN_ROWS)
        cur.execute(_SPAN_SQL[dialect], (batch, lo, hi))
        n, first, last, d, lv = cur.fetchone()
        if n != hi - lo or first != lo or last != hi - 1 or len(d) != 16 * n or len(lv) != 32 * n:
            return None
        ids.append(bytes(d))
        leaves.append(bytes(lv))
    return (np.frombuffer(b"".join(ids), np.uint8).reshape(size, 16),
            np.frombuffer(b"".join(leaves), np.uint8).reshape(size, 32))


def _batch_intact(c, batch: int, size: int, root_hex: str, log_path: Path, known: dict | None = None) -> bool:
    """A batch whose log is byte-identical to the one sealed (its SHA-256 matched) is intact when its index
    rows are positions 0..size-1, carry the log's decision ids in order, and their leaves hash to the
    sealed root: the leaves were computed from exactly these bytes when the batch was sealed, so
    recomputing them would prove nothing more. Any difference sends verify to the full recomputation.
    known: receives the batch's positional ids (positions 0..size-1), for the id index's check."""
    index = _index_arrays(c, batch, size)
    if index is None:
        return False
    ids, leaves = index
    if known is not None:
        known[batch] = ids
    if merkle.root(leaves).hex() != root_hex:
        return False
    pf = pq.ParquetFile(log_path)
    at = 0
    for b in pf.iter_batches(batch_size=CHUNK_ROWS * 4, columns=["decision_id"]):
        got = _ids16_array(b.column(0))
        if at + len(got) > size or not np.array_equal(got, ids[at:at + len(got)]):
            return False
        at += len(got)
    return at == size


def _verify_batch(c, batch: int, payload: dict, log_path: Path, f: _Findings, formats: dict[int, str],
                  known: dict | None = None) -> int:
    """Recompute a sealed batch's leaves from its log and compare them with the index and the root.
    formats: each batch's leaf format (a decision indexed under another batch is compared in that one's).
    known: receives the batch's positional ids when they were read whole (`_batch_intact`)."""
    from sqlalchemy import text  # heavy: see _engine

    name = payload["log_name"]
    size = int(payload["tree_size"])
    fmt = payload.get("leaf_format", merkle.FORMAT_JSON)
    if fmt not in merkle.FORMATS:
        f.add("batches", f"batch {batch} ({name}): unknown leaf format {fmt!r} (altered)")
        return 0
    if not log_path.exists():
        f.add("logs", f"batch {batch} ({name}): its decision log is missing at {log_path}")
        return 0
    if file_sha256(log_path) != payload["log_sha256"]:
        f.add("logs", f"batch {batch} ({name}): the decision log at {log_path} was changed after it was recorded")
    elif _batch_intact(c, batch, size, payload["merkle_root"], log_path, known):
        return size
    # the log or the index differs from what was sealed: recompute every leaf to name each difference
    if fmt == merkle.FORMAT_BIN and sorted(pq.read_schema(log_path).names) != payload.get("columns"):
        f.add("logs", f"batch {batch} ({name}): the decision log's columns differ from the ones recorded (altered)")
    others = sorted(set(formats.values()) - {fmt})
    leaves, seen, n = [], set(), 0
    q = text("SELECT position, decision_id, leaf FROM audit_decisions WHERE batch = :b AND position >= :lo "
             "AND position < :hi ORDER BY position")
    elsewhere = []
    for pos, table in _log_chunks(log_path):
        lv = merkle.leaf_hashes_for(table, fmt)
        leaves.append(lv)
        away = []
        ids = table.column("decision_id").to_pylist()
        ids16 = _ids16(ids)
        got = {int(p): (bytes(d), bytes(l)) for p, d, l in c.execute(q, {"b": batch, "lo": pos,
                                                                        "hi": pos + table.num_rows})}
        for i, did in enumerate(ids):
            p = pos + i
            if ids16[i] in seen:
                f.add("decisions", f"decision {did}: duplicated in {name} (row {p + 1})")
            seen.add(ids16[i])
            rec = got.pop(p, None)
            if rec is None:
                away.append(i)
            elif rec[0] != ids16[i]:
                f.add("decisions", f"decision {did}: row {p + 1} of {name} is recorded as decision "
                      f"{_id_text(rec[0])} in the trail (inserted or replaced)")
            elif rec[1] != lv[i].tobytes():
                f.add("decisions", f"decision {did}: row {p + 1} of {name} does not match its record in the "
                      "trail (altered)")
        if away:  # their leaves in every format in use: the batch holding them may have another
            other = {o: merkle.leaf_hashes_for(table.take(away), o) for o in others}
            for j, i in enumerate(away):
                elsewhere.append((ids[i], ids16[i], {fmt: lv[i].tobytes(), **{o: x[j].tobytes()
                                                                               for o, x in other.items()}}, pos + i))
        n += table.num_rows
    if elsewhere:  # decisions the index holds under another batch (the same decision in two logs)
        owned = {}
        qi = text("SELECT i.decision_id, d.leaf, i.batch FROM audit_ids i JOIN audit_decisions d ON "
                  "d.batch = i.batch AND d.position = i.position AND d.decision_id = i.decision_id "
                  "WHERE i.decision_id IN :ids")
        from sqlalchemy import bindparam  # heavy: see _engine

        qi = qi.bindparams(bindparam("ids", expanding=True))
        for i in range(0, len(elsewhere), 5000):
            part = [e[1] for e in elsewhere[i:i + 5000]]
            owned.update({bytes(d): (bytes(l), b) for d, l, b in c.execute(qi, {"ids": part})})
        for did, d16, leaf, p in elsewhere:
            k = owned.get(d16)
            if k is None:
                f.add("decisions", f"decision {did}: row {p + 1} of {name} is not in the trail (missing)")
            elif k[0] != leaf.get(formats.get(int(k[1]), fmt)):
                f.add("decisions", f"decision {did}: row {p + 1} of {name} differs from its record under batch "
                      f"{k[1]} (altered)")
    extra = c.execute(text("SELECT position, decision_id FROM audit_decisions WHERE batch = :b AND "
                           "(position >= :n OR position < 0)"), {"b": batch, "n": n}).all()
    for p, d in extra:
        f.add("decisions", f"decision {_id_text(d)}: in the trail as row {int(p) + 1} of {name}, which has "
              f"{n} rows (inserted)")
    if n != size:
        f.add("logs", f"batch {batch} ({name}): the log has {n} decisions, the trail recorded {size}")
    all_leaves = np.concatenate(leaves) if leaves else np.zeros((0, 32), np.uint8)
    if merkle.root(all_leaves).hex() != payload["merkle_root"]:
        f.add("logs", f"batch {batch} ({name}): its decisions do not hash to the recorded Merkle root")
    return n


def _logs_on_disk(dirs: list[Path], pattern: str = "*.parquet") -> list[Path]:
    """Decision-log files (or other files matching `pattern`) under these folders, each folder walked once (the
    batches' folders repeat: a service writes thousands of logs into one)."""
    out = []
    for d in dict.fromkeys(d.resolve() for d in dirs):
        if d.is_dir():
            out += [p for p in d.rglob(pattern) if not any(part.startswith(".") for part in p.relative_to(d).parts)]
    return sorted(set(p.resolve() for p in out))


def _not_indexed(c, ids16: list[bytes]) -> int:
    """How many of these (distinct, 16-byte) decision ids the trail's index does not hold."""
    from sqlalchemy import bindparam, text  # heavy: see _engine

    qi = text("SELECT COUNT(*) FROM audit_ids WHERE decision_id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    return sum(len(part) - int(c.execute(qi, {"ids": part}).scalar())
               for part in (ids16[i:i + 5000] for i in range(0, len(ids16), 5000)))


def _journal_segments(c, dirs: list[Path], f: _Findings) -> list[str]:
    """`creditgov serve`'s journal segments under these folders (governance.journal) whose decisions the trail
    does not hold: answered with the journal's promise and not yet sealed. A segment its server still holds
    (locked) is pending: it is sealed within the server's merge delay, and is no finding. A segment nobody
    holds was left by a server that is gone: a finding naming the file, the number of decisions and the fix.
    Returns the pending lines."""
    pending = []
    for p in _logs_on_disk(dirs, f"journal-*{journal.SUFFIX}"):
        try:
            contents = journal.read_segment(p)
        except FileNotFoundError:  # sealed and deleted meanwhile
            continue
        missing = _not_indexed(c, _ids16(list(dict.fromkeys(contents.decision_ids))))
        torn = (f" ({contents.torn_bytes} bytes after them are a torn final write: never answered, never sealed)"
                if contents.torn_bytes else "")
        if journal.is_live(p):
            if missing:
                pending.append(f"journal segment {p}: {missing} decisions answered and not yet sealed: its server "
                               f"is running and seals them within its merge delay{torn}")
        elif missing and p.exists():  # (a segment sealed and deleted while it was read is gone now)
            f.add("journal", f"journal segment {p}: {missing} answered decisions are not sealed in the audit trail "
                  f"(its server is gone){torn}; start `creditgov serve` again, which seals it before its port opens")
    return pending


def _is_decision_log(path: Path) -> bool:
    try:
        names = set(pq.read_schema(path).names)
    except Exception:
        return False
    return {"decision_id", "policy_hash", "status"} <= names


def _has_unique_key(c, dialect: str) -> bool:
    """Whether audit_ids has its unique key on decision_id alone (its PRIMARY KEY)."""
    from sqlalchemy import text  # heavy: see _engine

    if dialect == "sqlite":
        for row in c.execute(text("PRAGMA index_list('audit_ids')")).all():
            if row[2] and [r[2] for r in c.execute(text(f"PRAGMA index_info('{row[1]}')"))] == ["decision_id"]:
                return True
        return False
    return c.execute(text("SELECT COUNT(*) FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid AND "
                          "a.attnum = x.indkey[0] WHERE x.indrelid = to_regclass('audit_ids') AND x.indisunique "
                          "AND x.indnatts = 1 AND a.attname = 'decision_id'")).scalar() >= 1


CLASSIFIED = 100_000  # positional rows no id row names, each looked up by id (beyond, they are counted)
_PAGE_ROWS = 1 << 20  # rows of the id index (or of a batch's positional rows) read per query, keyset-paged
_PAGE_SQL = {  # a page of rows after a key, in key order, as a few concatenations (no Python object per row)
    # (the page's last key is the ids' last 16 bytes: MAX() would copy every key of an ascending page; its one
    # batch is MIN(batch) when MAX(batch) is the same, without a text of them)
    "sqlite-ids": "SELECT COUNT(*), MIN(batch), MAX(batch), CAST(group_concat(decision_id, '') AS BLOB), "
                  "group_concat(position, ',') FROM (SELECT decision_id, batch, position FROM audit_ids WHERE {} "
                  "ORDER BY decision_id LIMIT ?)",
    "postgresql-ids": "SELECT COUNT(*), MIN(batch), MAX(batch), string_agg(decision_id, ''::bytea ORDER BY "
                      "decision_id), string_agg(position::text, ',' ORDER BY decision_id) FROM (SELECT decision_id, "
                      "batch, position FROM audit_ids WHERE {} ORDER BY decision_id LIMIT %s) AS page",
    "sqlite-batches": "SELECT group_concat(batch, ',') FROM (SELECT decision_id, batch FROM audit_ids WHERE {} "
                      "ORDER BY decision_id LIMIT ?)",
    "postgresql-batches": "SELECT string_agg(batch::text, ',' ORDER BY decision_id) FROM (SELECT decision_id, batch "
                          "FROM audit_ids WHERE {} ORDER BY decision_id LIMIT %s) AS page",
    "sqlite-last": "SELECT MAX(decision_id) FROM (SELECT decision_id FROM audit_ids WHERE {} ORDER BY decision_id "
                   "LIMIT ?)",
    "postgresql-last": "SELECT (array_agg(decision_id ORDER BY decision_id DESC))[1] FROM (SELECT decision_id FROM "
                       "audit_ids WHERE {} ORDER BY decision_id LIMIT %s) AS page",
    "sqlite-rows": "SELECT COUNT(*), MAX(position), CAST(group_concat(decision_id, '') AS BLOB), "
                   "group_concat(position, ',') FROM (SELECT position, decision_id FROM audit_decisions "
                   "WHERE batch = ? AND {} ORDER BY position LIMIT ?)",
    "postgresql-rows": "SELECT COUNT(*), MAX(position), string_agg(decision_id, ''::bytea ORDER BY position), "
                       "string_agg(position::text, ',' ORDER BY position) FROM (SELECT position, decision_id FROM "
                       "audit_decisions WHERE batch = %s AND {} ORDER BY position LIMIT %s) AS page",
}


def _ints(textual, n: int) -> np.ndarray | None:
    """n integers from a comma-separated text; None when it holds anything else (an altered row)."""
    if n == 0:
        return np.zeros(0, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns of text it cannot read to its end: the length says it
        out = np.fromstring(str(textual or ""), dtype=np.int64, sep=",")
    return out if len(out) == n else None


def _ids_blob(blob, n: int) -> np.ndarray | None:
    b = bytes(blob or b"")
    return np.frombuffer(b, np.uint8).reshape(n, 16) if len(b) == 16 * n else None


def _id_pages(c, dialect: str):
    """The id index in key order, a page at a time: (ids (n, 16), batches, positions); None for a page holding a
    row that is not a 16-byte id with integer batch and position (altered)."""
    cur = c.connection.driver_connection.cursor()
    mark = "?" if dialect == "sqlite" else "%s"
    after = None
    while True:
        cond, args = ("true", (_PAGE_ROWS,)) if after is None else (f"decision_id > {mark}", (after, _PAGE_ROWS))
        cur.execute(_PAGE_SQL[f"{dialect}-ids"].format(cond), args)
        n, low, high, ids, positions = cur.fetchone()
        n = int(n)
        if n == 0:
            return
        if low == high:
            batches = np.full(n, int(low), np.int64)
        else:
            cur.execute(_PAGE_SQL[f"{dialect}-batches"].format(cond), args)
            batches = _ints(cur.fetchone()[0], n)
        page = (_ids_blob(ids, n), batches, _ints(positions, n))
        yield None if any(x is None for x in page) else page
        if n < _PAGE_ROWS:
            return
        if page[0] is not None:
            after = page[0][-1].tobytes()
        else:
            cur.execute(_PAGE_SQL[f"{dialect}-last"].format(cond), args)
            after = cur.fetchone()[0]


def _positional_rows(c, dialect: str, batch: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A batch's positional rows in position order: (positions, ids (n, 16)); None if a row is not a 16-byte id."""
    cur = c.connection.driver_connection.cursor()
    mark = "?" if dialect == "sqlite" else "%s"
    positions, ids, after = [], [], None
    while True:
        if after is None:
            cur.execute(_PAGE_SQL[f"{dialect}-rows"].format("true"), (batch, _PAGE_ROWS))
        else:
            cur.execute(_PAGE_SQL[f"{dialect}-rows"].format(f"position > {mark}"), (batch, after, _PAGE_ROWS))
        n, last, d, p = cur.fetchone()
        n = int(n)
        if n:
            got = _ids_blob(d, n), _ints(p, n)
            if got[0] is None or got[1] is None:
                return None
            ids.append(got[0])
            positions.append(got[1])
        if n < _PAGE_ROWS:
            break
        after = last
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, 16), np.uint8)
    return np.concatenate(positions), np.concatenate(ids)


def _indexed_batches(c, dialect: str) -> list[int]:
    """The batches audit_decisions holds rows of: a skip scan over its key (one index lookup a batch)."""
    cur = c.connection.driver_connection.cursor()
    mark = "?" if dialect == "sqlite" else "%s"
    out: list[int] = []
    while True:
        if out:
            cur.execute(f"SELECT MIN(batch) FROM audit_decisions WHERE batch > {mark}", (out[-1],))
        else:
            cur.execute("SELECT MIN(batch) FROM audit_decisions")
        b = cur.fetchone()[0]
        if b is None:
            return out
        out.append(int(b))


class _HeldIds:
    """The id index's keys in memory, in key order (two big-endian words a key: their order is the bytes'), for
    membership tests in numpy: the decisions of a log on disk looked up without a query per decision."""

    def __init__(self, words: list[np.ndarray]):  # pages of (n, 2) uint64 words (`words`)
        both = np.concatenate(words) if words else np.zeros((0, 2), np.uint64)
        self.hi, self.lo = both[:, 0].copy(), both[:, 1].copy()

    @staticmethod
    def words(ids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(ids).view(">u8").astype(np.uint64)

    def missing(self, ids: np.ndarray) -> int:
        """How many of these (n, 16) keys the index does not hold."""
        if len(ids) == 0:
            return 0
        words = self.words(ids)
        qh, ql = words[:, 0], words[:, 1]
        order = np.argsort(qh, kind="stable")  # queries in key order: the lookups walk the index forwards
        qh, ql = qh[order], ql[order]
        at = np.minimum(np.searchsorted(self.hi, qh), max(len(self.hi) - 1, 0))
        if len(self.hi) == 0:
            return len(ids)
        same = self.hi[at] == qh
        held = same & (self.lo[at] == ql)
        for j in np.flatnonzero(same & ~held):  # another key with the same first word (rare): the next ones
            k = at[j] + 1
            while k < len(self.hi) and self.hi[k] == qh[j] and not held[j]:
                held[j] = self.lo[k] == ql[j]
                k += 1
        return int(len(ids) - held.sum())


def _check_id_index(c, dialect: str, f: _Findings, names: dict[int, str],
                    known: dict[int, np.ndarray]) -> _HeldIds | None:
    """The two index tables agree: every row of audit_ids (decision id -> batch, position) names a positional
    row of audit_decisions with the same id, and every positional row is named by one. Each difference is named:
    an id row whose positional row is gone or holds another id, a positional row no id row names (its id held
    elsewhere: a decision in the trail twice; or not at all: inserted, or its id row deleted), and positional
    rows of no batch. Order-independent and in O(rows): the id index is read in key order, a page at a time, and
    each of its rows is looked up by position in its batch's positional ids (held in memory: 16 bytes a
    decision; `known` holds the batches verify read whole already). Returns the id index's keys (_HeldIds), or
    None when a row of it was not read as a key (altered)."""
    from sqlalchemy import bindparam, text  # heavy: see _engine

    def where(b: int, p: int) -> str:
        return f"row {p + 1} of {names[b]}" if b in names else f"row {p + 1} of batch {b}"

    rows: dict[int, tuple[np.ndarray | None, np.ndarray]] = {}  # batch -> (positions, or None: 0..n-1; ids)
    orphans = 0
    for b in _indexed_batches(c, dialect):
        if b in known:
            rows[b] = (None, known[b])
            continue
        got = _positional_rows(c, dialect, b)
        if got is None:
            f.add("index", f"batch {b}: a positional index row holds no 16-byte decision id (altered)")
            continue
        pos, ids = got
        dense = len(pos) == 0 or (pos[0] == 0 and pos[-1] == len(pos) - 1)  # (the key makes positions unique)
        rows[b] = (None if dense else pos, ids)
        if b not in names:
            orphans += len(ids)
    if orphans:
        f.add("decisions", f"{orphans} decisions in the index belong to no batch (inserted)")
    matched = {b: np.zeros(len(ids), bool) for b, (_, ids) in rows.items()}

    def held_at(b: int, at: int) -> bytes | None:  # the id of batch b's positional row at `at`
        if b not in rows:
            return None
        pos, pids = rows[b]
        j = at if pos is None else int(np.searchsorted(pos, at))
        if pos is None and not 0 <= at < len(pids) or pos is not None and (j >= len(pos) or pos[j] != at):
            return None
        return pids[j].tobytes()

    astray: set[bytes] = set()  # ids whose id row names no positional row like it
    words: list[np.ndarray] | None = []  # the id index's keys, page by page (_HeldIds)
    for page in _id_pages(c, dialect):
        if page is None:
            f.add("index", "the id index (audit_ids) holds rows that are not a 16-byte decision id with a batch and a "
                  "position (altered)")
            words = None
            continue
        ids, batches, positions = page
        if words is not None:
            words.append(_HeldIds.words(ids))
        order = np.argsort(batches, kind="stable")
        cuts = np.flatnonzero(np.diff(batches[order])) + 1
        for sel in np.split(order, cuts):
            b = int(batches[sel[0]])
            ok = np.zeros(len(sel), bool)
            if b in rows:
                pos, pids = rows[b]
                p = positions[sel]
                if pos is None:
                    inside = (p >= 0) & (p < len(pids))
                    idx = np.where(inside, p, 0)
                else:
                    idx = np.minimum(np.searchsorted(pos, p), max(len(pos) - 1, 0))
                    inside = (pos[idx] == p) if len(pos) else np.zeros(len(p), bool)
                if len(pids):
                    ok = inside & (pids[idx] == ids[sel]).all(axis=1)
                    matched[b][idx[ok]] = True
            for i in sel[~ok]:
                did, at = ids[i].tobytes(), int(positions[i])
                astray.add(did)
                other = held_at(b, at)
                f.add("index", f"decision {_id_text(did)}: the id index places it at {where(b, at)}, which the "
                      + ("positional index does not hold" if other is None else
                         f"positional index holds as decision {_id_text(other)}") + " (the index tables disagree)")
    unnamed: list[tuple[int, int]] = []  # (batch, index into its positional rows)
    for b, m in matched.items():  # (at most CLASSIFIED of them looked up one by one; the rest counted)
        unnamed += [(b, int(i)) for i in np.flatnonzero(~m)[:max(CLASSIFIED - len(unnamed), 0)]]
    rest = sum(int((~m).sum()) for m in matched.values()) - len(unnamed)
    if rest:
        f.add("index", f"{rest} more positional index rows that no id row names (inserted, or their id rows deleted)")
    if unnamed:  # positional rows no id row names: is their id held elsewhere (a second copy) or not at all?
        qi = text("SELECT decision_id FROM audit_ids WHERE decision_id IN :ids").bindparams(
            bindparam("ids", expanding=True))
        keys = [rows[b][1][i].tobytes() for b, i in unnamed]
        distinct = list(dict.fromkeys(keys))
        held = set()
        for k in range(0, len(distinct), 5000):
            held.update(bytes(r[0]) for r in c.execute(qi, {"ids": distinct[k:k + 5000]}))
        copies = collections.Counter(keys)
        for (b, i), key in zip(unnamed, keys):
            pos = rows[b][0]
            at = where(b, i if pos is None else int(pos[i]))
            if key not in held:
                f.add("index", f"decision {_id_text(key)}: {at} is in the positional index but not in the id index "
                      "(inserted, or its id row deleted)")
            elif key in astray:  # (its id row, named above, points at another row)
                f.add("index", f"decision {_id_text(key)}: {at} is in the positional index, and the id index places "
                      "it elsewhere (the index tables disagree)")
            elif key in copies:  # named once: its copies no id row names, and the one it names
                f.add("decisions", f"decision {_id_text(key)}: in the trail {copies.pop(key) + 1} times (duplicated)")
    return None if words is None else _HeldIds(words)


def verify(url: str | None = None, scan: list[str | Path] | None = None) -> VerifyResult:
    """Check the chain, every sealed batch against its log and the index, the decision logs on disk and the
    service's journal segments (`_journal_segments`: abandoned ones are problems, live ones `pending`)."""
    from sqlalchemy import text  # heavy: see _engine

    eng = _engine(url)
    f = _Findings()
    decisions = 0
    with eng.connect() as c:
        if eng.dialect.name == "sqlite":
            check = c.execute(text("PRAGMA quick_check")).scalar()
            if check != "ok":
                f.add("store", f"SQLite integrity check failed: {check}")
        from sqlalchemy import inspect  # heavy: see _engine

        if "audit_records" in inspect(c).get_table_names():  # the first trail format (one row per decision)
            legacy = c.execute(text("SELECT COUNT(*) FROM audit_records")).scalar()
            if legacy:
                f.add("store", f"{legacy} records in the first trail format (table audit_records) are not "
                      "covered by this trail: record their decision logs with `creditgov audit append LOG`, "
                      "then archive and drop that table")
        rows = _entries(c)
        head = c.execute(text("SELECT seq, hash FROM audit_chain_head WHERE id = 1")).first()
        _verify_chain(rows, head, f)
        batches = {int(b): (s, st, root, size, seq, Path(lp), name) for b, s, st, root, size, seq, lp, name in c.execute(
            text("SELECT batch, log_sha256, status, merkle_root, tree_size, entry_seq, log_path, log_name "
                 "FROM audit_batches"))}
        by_sha = {v[0]: b for b, v in batches.items()}
        sealed_entries = set()
        pruned_batches = set()
        known: dict[int, np.ndarray] = {}  # positional ids of the batches read whole (_check_id_index)
        formats = {}
        for seq, kind, rid, _, payload, _, _ in rows:
            if kind == "batch" and rid in by_sha:
                try:
                    formats[by_sha[rid]] = json.loads(payload).get("leaf_format", merkle.FORMAT_JSON)
                except (ValueError, AttributeError):
                    pass
        for seq, kind, rid, _, payload, _, _ in rows:
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            if kind == "prune":
                pruned_batches.update(body.get("batches", []))
            if kind != "batch":
                continue
            b = by_sha.get(rid)
            if b is None:
                f.add("batches", f"entry {seq} (batch {body.get('log_name')}): its batch row is gone (deleted)")
                continue
            sha, status, root, size, entry_seq, log_path, _ = batches[b]
            sealed_entries.add(b)
            if status == "pruned":
                continue
            if status != "sealed" or int(entry_seq or -1) != seq or root != body.get("merkle_root") \
                    or int(size) != int(body.get("tree_size", -1)):
                f.add("batches", f"batch {b} ({body.get('log_name')}): its row disagrees with chain entry {seq} "
                      "(altered)")
                continue
            decisions += _verify_batch(c, b, body, log_path, f, formats, known)
        for b, (sha, status, root, size, entry_seq, log_path, name) in batches.items():
            if status == "open":
                f.add("incomplete", f"batch {b} ({name}): incomplete: its append was interrupted before the batch "
                      "was sealed; rerun the same decide command (or `creditgov audit append LOG`) to complete it")
            elif b not in sealed_entries:
                f.add("batches", f"batch {b} ({name}): marked {status} but no chain entry records it (inserted)")
        if not _has_unique_key(c, eng.dialect.name):
            f.add("store", "the unique key on decision ids (the primary key of audit_ids) is missing (dropped)")
            dupes = c.execute(text("SELECT decision_id, COUNT(*) FROM audit_ids GROUP BY decision_id "
                                   "HAVING COUNT(*) > 1")).all()
            for d, k in dupes:
                f.add("decisions", f"decision {_id_text(d)}: in the trail {k} times (duplicated)")
        held = _check_id_index(c, eng.dialect.name, f, {b: v[6] for b, v in batches.items()}, known)
        known.clear()

        # decision logs on disk that the trail does not hold
        dirs = [Path(s) for s in (scan or [])] + [Path.cwd() / "decisions"]
        dirs += [v[5].parent for v in batches.values()]
        recorded = {v[5].resolve() for v in batches.values()}
        for p in _logs_on_disk(dirs):
            if p in recorded or not _is_decision_log(p):
                continue
            if file_sha256(p) in by_sha:
                continue  # a copy of a recorded log
            missing = total = 0
            for _, table in _log_chunks(p):
                if held is not None:  # the id index's keys, read by _check_id_index: no query per decision
                    ids16 = _ids16_array(table.column("decision_id"))
                    total += len(ids16)
                    missing += held.missing(ids16)
                    continue
                ids = _ids16(table.column("decision_id").to_pylist())
                total += len(ids)
                missing += _not_indexed(c, ids)
            if missing:
                f.add("logs", f"decision log {p}: {missing} of {total} decisions are not in the audit trail")
        pending = _journal_segments(c, dirs, f)
    problems = f.result()
    return VerifyResult(not problems, len(rows), len(batches), decisions, int(head[0]) if head else 0,
                        head[1] if head else GENESIS, problems, pending)


# --------------------------------------------------------------------------- retention


def prune(retention_months: int, url: str | None = None, now: datetime | None = None) -> int:
    """Forget the decisions of batches recorded before the retention period: their index rows and their
    log files go; the chain keeps each batch's entry and records the prune. Returns decisions pruned."""
    from sqlalchemy import text  # heavy: see _engine

    now = now or datetime.now(timezone.utc)
    cutoff = (now - timedelta(days=round(30.4375 * retention_months))).isoformat(timespec="microseconds")
    eng = _engine(url)
    with eng.connect() as c:
        old = c.execute(text("SELECT b.batch, b.log_path, b.log_sha256, b.tree_size FROM audit_batches b JOIN "
                             "audit_entries e ON e.seq = b.entry_seq WHERE b.status = 'sealed' AND "
                             "e.recorded_at < :cut ORDER BY b.batch"), {"cut": cutoff}).all()
    if not old:
        return 0
    ids = [int(b) for b, *_ in old]
    total = sum(int(n) for *_, n in old)

    def _do(c):
        for b in ids:  # the id rows first: found by the ids of the batch's positional rows
            c.execute(text("DELETE FROM audit_ids WHERE batch = :b AND decision_id IN (SELECT decision_id FROM "
                           "audit_decisions WHERE batch = :b)"), {"b": b})
            c.execute(text("DELETE FROM audit_decisions WHERE batch = :b"), {"b": b})
            c.execute(text("UPDATE audit_batches SET status = 'pruned' WHERE batch = :b"), {"b": b})
        _chain(c, [("prune", f"prune-{ids[0]}-{ids[-1]}", {
            "batches": ids, "logs": [Path(p).name for _, p, _, _ in old], "log_sha256": [s for _, _, s, _ in old],
            "decisions": total, "retention_months": retention_months, "cutoff": cutoff})])

    _retrying(url, _do)
    for _, p, _, _ in old:  # the retention period is over: the decision content goes too
        Path(p).unlink(missing_ok=True)
    return total
