"""The decision journal of `creditgov serve`: durable promises before the audit trail's seal.

Certificate Transparency (RFC 6962 / 9162) answers a certificate with a signed timestamp at once and puts
it in the Merkle tree within a Maximum Merge Delay. The service does the same with decisions: a micro-batch's
decision-log rows are appended to the current journal segment and fdatasynced, and only then answered (the
answer names the segment, the frame's sequence number and each decision's record hash: the leaf the audit
index will hold); within the merge delay a sealer turns the segment into decision logs in the trail
(`creditgov.jobs.serve`) and deletes it.

A segment is one file, `journal-<UTC time>-<ns>-<random>-<spec name>.journal`, in the service's output folder: a sequence of
frames, each `MAGIC | length (8 bytes, little endian) | CRC-32 of the payload (4 bytes) | payload`, the
payload an Arrow IPC stream (schema, one record batch, end) of one decision-log frame. A frame that is not
whole (a kill -9 or a power loss during its write) ends the segment for every reader: its write was never
fdatasynced, so none of its requests was answered, and its rows are not sealed.

The server that writes a segment holds an exclusive `fcntl.flock` on it until the segment is sealed and
deleted; a segment nobody holds was abandoned by a server that is gone (`creditgov serve` seals such
segments before its port opens; `creditgov audit verify` names them). With worker processes a worker hands a
rotated segment's descriptor to the parent, which seals it (`Journal.hand_over`): flock belongs to the open
file description, which the descriptor passed over a Unix socket shares, so the lock moves with no gap. This
module is the one reader of the format, for the service (jobs room) and for verify (governance room)."""
from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

SUFFIX = ".journal"
MAGIC = b"CGJ1"
_HEAD = struct.Struct("<4sQI")  # magic, payload length, CRC-32 of the payload


def frame_bytes(table: pa.Table) -> bytes:
    """One journal frame holding `table` (an Arrow IPC stream behind the frame's header)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    payload = sink.getvalue().to_pybytes()
    return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass
class Contents:
    """What a segment holds: its whole frames (Arrow tables, in write order) and the bytes after them that are
    no whole frame (a torn final write, never answered)."""
    tables: list[pa.Table]
    torn_bytes: int = 0

    @property
    def decision_ids(self) -> list[str]:
        return [d for t in self.tables for d in t.column("decision_id").to_pylist()]


def read_segment(path: Path | str) -> Contents:
    """The whole frames of a segment, stopping at the first frame that is not whole (short, or its CRC-32 or
    its Arrow stream does not check): a torn final write, whose rows were never answered."""
    data = Path(path).read_bytes()
    tables, pos = [], 0
    while pos + _HEAD.size <= len(data):
        magic, n, crc = _HEAD.unpack_from(data, pos)
        payload = data[pos + _HEAD.size:pos + _HEAD.size + n]
        if magic != MAGIC or len(payload) != n or zlib.crc32(payload) != crc:
            # a torn final write (kill -9 or power loss during it): it was never fdatasynced, so none of its
            # requests was answered (an answer waits for the fdatasync); reading stops here, its rows are not sealed
            break
        try:
            tables.append(pa.ipc.open_stream(payload).read_all())
        except (pa.ArrowInvalid, OSError):
            break
        pos += _HEAD.size + n
    return Contents(tables, len(data) - pos)


def label_of(path: Path | str) -> str:
    """The label a segment was created with (the service's spec name, which its decision logs are named by)."""
    return Path(path).name[:-len(SUFFIX)].split("-", 4)[4]


def segments(folder: Path | str) -> list[Path]:
    """The journal segments in a folder, oldest first (their names begin with their creation time)."""
    folder = Path(folder)
    return sorted(folder.glob(f"journal-*{SUFFIX}")) if folder.is_dir() else []


def is_live(path: Path | str) -> bool:
    """Whether a running server holds the segment (its exclusive lock): it will seal it within its merge delay.
    A segment gone meanwhile (sealed and deleted) is not live."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (closing releases the shared lock taken)
    return False


def claim(path: Path | str) -> int | None:
    """An exclusive lock on an abandoned segment (its fd, to `release`), or None when a live server holds it."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release(fd: int) -> None:
    os.close(fd)


def discard(path: Path | str) -> None:
    """A sealed segment removed, its directory entry durably (call it while holding the segment's lock)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Segment:
    """A segment being written by this process: created, locked (exclusive flock, held until `delete` or
    `Journal.hand_over`) and its directory entry fsynced before its first frame."""
    path: Path
    fd: int
    frames: int = 0
    rows: int = 0
    decision_ids: set = field(default_factory=set)
    opened: float = field(default_factory=time.monotonic)

    @classmethod
    def create(cls, folder: Path | str, label: str) -> "Segment":
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"journal-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}-" \
               f"{uuid.uuid4().hex[:8]}-{label}{SUFFIX}"
        path = folder / name
        # locked under a name no reader lists, then renamed into place: a sealer sweeping the folder (journal
        # .claim) never finds it created and not yet locked
        new = folder / f".{name}.new"
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(new, path)
        _fsync_dir(folder)
        return cls(path, fd)

    def append(self, frames: list[bytes], rows: int, ids: list[str]) -> int:
        """Write these frames with one write and one fdatasync (group commit); the sequence number of the first."""
        first = self.frames
        data = b"".join(frames)
        view, done = memoryview(data), 0
        while done < len(data):
            done += os.write(self.fd, view[done:])
        os.fdatasync(self.fd)
        self.frames += len(frames)
        self.rows += rows
        self.decision_ids.update(ids)
        return first

    def delete(self) -> None:
        """Sealed: remove the file (the lock is held until then), and its directory entry durably."""
        discard(self.path)
        os.close(self.fd)


class Journal:
    """The segments a service holds: the current one, appended to by one thread, and those rotated out and not
    yet sealed. `rotate` swaps in a fresh segment (made outside the lock, so an append waits only for the swap);
    `sealed` deletes a rotated segment once its decisions are in the trail. A decision is in one of these
    segments from its append until its seal, without a gap (what `holds` answers)."""

    def __init__(self, folder: Path | str, label: str):
        self.folder, self.label = Path(folder), label
        self.lock = threading.Lock()
        self.current: Segment | None = None
        self.rotated: list[Segment] = []
        self.handed: list[Segment] = []  # rotated segments whose lock went to a sealer process: sealed once gone

    def append(self, frames: list[bytes], rows: int, ids: list[str]) -> tuple[Path, int]:
        with self.lock:
            if self.current is None:
                self.current = Segment.create(self.folder, self.label)
            seg = self.current
            return seg.path, seg.append(frames, rows, ids)

    def rotate(self, fresh: bool = True) -> None:
        """The current segment, if it holds frames, joins the rotated ones (a fresh one takes its place when
        `fresh`)."""
        with self.lock:
            if self.current is None or not self.current.frames:
                return
        new = Segment.create(self.folder, self.label) if fresh else None
        with self.lock:
            self.rotated.append(self.current)
            self.current = new

    def to_seal(self) -> list[Segment]:
        with self.lock:
            return list(self.rotated)

    def sealed(self, seg: Segment) -> None:
        seg.delete()
        with self.lock:
            self.rotated.remove(seg)

    def hand_over(self, seg: Segment, send) -> None:
        """A rotated segment's descriptor, and so its lock, given to the process that seals it (`send(path, fd)`
        shares the open file description); this process's descriptor is then closed. The segment counts as
        unsealed until the sealer deletes its file."""
        send(seg.path, seg.fd)
        os.close(seg.fd)
        with self.lock:
            self.rotated.remove(seg)
            self.handed.append(seg)

    def _unsealed(self) -> list[Segment]:
        with self.lock:
            self.handed = [s for s in self.handed if s.path.exists()]  # (a sealer deletes what it has sealed)
            return self.handed + self.rotated + ([self.current] if self.current is not None else [])

    def holding(self, decision_id: str) -> list[Path]:
        """The unsealed segments holding this decision (one, or none)."""
        return [s.path for s in self._unsealed() if decision_id in s.decision_ids]

    def holds(self, decision_id: str) -> bool:
        return bool(self.holding(decision_id))

    def unsealed_rows(self) -> int:
        return sum(s.rows for s in self._unsealed())

    def pending_rows(self) -> int:
        """Rows in the current segment."""
        with self.lock:
            return self.current.rows if self.current is not None else 0

    def close(self) -> None:
        """An empty current segment (nothing to seal) is deleted."""
        with self.lock:
            if self.current is not None and not self.current.frames:
                self.current.delete()
                self.current = None
