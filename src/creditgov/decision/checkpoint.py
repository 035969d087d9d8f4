"""Per-partition checkpoints of a partitioned decide: a killed run resumes where it stopped.

A run keeps its finished partitions in a work directory beside the log,
`<out_dir>/.partial/<log name>-<key>/`, where the key hashes everything a partition's
decisions depend on (the whole batch's content hash, the partition layout, the model's
files and version, the spec and policy, the decision date, the counterfactual cap and a
fingerprint of the pseudonymisation key). A rerun with the same key reuses the
partitions found there; anything else gets a fresh directory, so a stale checkpoint can
never leak into another batch's log.

Each partition is written to a temporary directory and renamed into place (atomic on
one filesystem): after a kill a partition is either complete or absent. Frames are
Parquet (no pickle) and come back with the pandas types they were written with, which
keeps the assembled log byte-identical to an uninterrupted run. The work directory is
removed once the log is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PARTIAL = ".partial"
_TMP = ".tmp-"


def work_key(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


class WorkDir:
    """The checkpoints of one partitioned decide (see the module docstring)."""

    def __init__(self, log_path: Path, facts: dict):
        self.key = work_key(facts)
        self.facts = facts
        self.path = log_path.parent / PARTIAL / f"{log_path.stem}-{self.key[:16]}"

    def done(self) -> set[int]:
        """The partitions already saved (none when the directory does not exist)."""
        if not self.path.is_dir():
            return set()
        return {int(p.name.split("-")[1]) for p in self.path.glob("part-*") if p.is_dir() and _TMP not in p.name}

    def open(self) -> None:
        """Create the directory if needed, clearing the temporaries of a killed run."""
        self.path.mkdir(parents=True, exist_ok=True)
        for p in self.path.iterdir():
            if _TMP in p.name:  # a write the kill interrupted
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        manifest = self.path / "manifest.json"
        if not manifest.exists():
            _write_atomic(manifest, json.dumps({"key": self.key, **self.facts}, indent=1, sort_keys=True,
                                               default=str).encode())

    def save(self, k: int, frames: dict[str, pd.DataFrame], meta: dict | None = None) -> None:
        """Partition k's frames (and a JSON summary), all or nothing."""
        final = self._part(k)
        tmp = final.with_name(f"{final.name}{_TMP}{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, frame in frames.items():
            write_frame(frame, tmp / f"{name}.parquet")
            _fsync(tmp / f"{name}.parquet")
        if meta is not None:
            _write_atomic(tmp / "meta.json", json.dumps(meta, sort_keys=True).encode())
        _fsync(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp)  # another run with the same key got there first: the same content
        _fsync(self.path)

    def load(self, k: int, name: str) -> pd.DataFrame:
        return read_frame(self._part(k) / f"{name}.parquet")

    def load_meta(self, k: int) -> dict:
        return json.loads((self._part(k) / "meta.json").read_text())

    def save_json(self, name: str, value) -> None:
        _write_atomic(self.path / name, json.dumps(value, sort_keys=True).encode())

    def load_json(self, name: str):
        p = self.path / name
        return json.loads(p.read_text()) if p.exists() else None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.path.parent.rmdir()  # .partial, when no other run left checkpoints there
        except OSError:
            pass

    def _part(self, k: int) -> Path:
        return self.path / f"part-{k:06d}"


# --------------------------------------------------------------------------- frames that come back as they went


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    dtypes = {c: str(frame[c].dtype) for c in frame.columns}
    meta = dict(table.schema.metadata or {})
    meta[b"creditgov.dtypes"] = json.dumps(dtypes).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def read_frame(path: Path) -> pd.DataFrame:
    """The frame as written: object columns stay object (Parquet reads whole numbers back as int64) and
    list cells come back as lists (Parquet gives arrays), so writing it again gives the same bytes."""
    table = pq.read_table(path)
    dtypes = json.loads(table.schema.metadata[b"creditgov.dtypes"])
    # whole numbers with a missing value stay whole numbers (pandas would make them floats: 5 -> 5.0)
    frame = table.to_pandas(integer_object_nulls=True)
    for col, dtype in dtypes.items():
        if dtype != "object":
            continue
        s = frame[col]
        if s.dtype != object:
            frame[col] = s.astype(object)
        elif len(s):
            values = s.to_numpy()
            if any(isinstance(v, np.ndarray) for v in values):
                frame[col] = pd.Series([_as_list(v) for v in values], dtype=object, index=s.index)
    return frame


def _as_list(v):
    if isinstance(v, np.ndarray):
        return [_as_list(x) for x in v.tolist()] if v.dtype == object else v.tolist()
    return v


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}{_TMP}{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk (a kill alone would not need it; a power cut does)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- frames that come back exactly, index included

_INDEX = "__creditgov_index__"
_NAN = "__creditgov_nan__:"


def write_exact(frame: pd.DataFrame, path: Path) -> None:
    """Like write_frame, and keeps what Parquet alone would lose: the index (an int64 column) and, in object
    columns, which missing values were NaN rather than None. Raises (pyarrow's error) for object columns
    Parquet cannot hold, such as a mix of numbers and text."""
    cols = {c: frame[c] for c in frame.columns}
    if _INDEX in cols or any(str(c).startswith(_NAN) for c in cols):
        raise ValueError("reserved column name")
    data = {_INDEX: pd.Series(frame.index.to_numpy(dtype="int64"), dtype="int64")}
    for c, s in cols.items():
        data[c] = s.reset_index(drop=True)
        if s.dtype == object:
            values = s.to_numpy()
            nan = np.fromiter((isinstance(v, float) and v != v for v in values), dtype=bool, count=len(values))
            if nan.any():
                data[_NAN + c] = pd.Series(nan)
    out = pd.DataFrame(data)
    table = pa.Table.from_pandas(out, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"creditgov.dtypes"] = json.dumps({c: str(s.dtype) for c, s in out.items()}).encode()
    meta[b"creditgov.index_name"] = json.dumps(frame.index.name).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def read_exact(path: Path) -> pd.DataFrame:
    """The frame write_exact wrote: same columns, dtypes, values (NaN or None), lists and index."""
    frame = read_frame(path)
    meta = pq.read_schema(path).metadata
    index = pd.Index(frame.pop(_INDEX).to_numpy(dtype="int64"), name=json.loads(meta[b"creditgov.index_name"]))
    for c in [c for c in frame.columns if str(c).startswith(_NAN)]:
        mask = frame.pop(c).to_numpy(dtype=bool)
        col = c[len(_NAN):]
        values = frame[col].to_numpy(dtype=object).copy()
        values[mask] = np.nan
        frame[col] = pd.Series(values, dtype=object)
    frame.index = index
    return frame
