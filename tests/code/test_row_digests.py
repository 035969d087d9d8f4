"""The served path's shortcuts give what the pandas / pyarrow calls they replace give, value for value and byte
for byte: inputs.row_digests of a few rows (column by column, see inputs._small_digests) against
pandas.util.hash_pandas_object, and serve's decision-log Parquet bytes (an Arrow table built column by column
with the pandas metadata cached per column types) against pa.Table.from_pandas + write_table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from creditgov.data import inputs
from creditgov.jobs import serve

NAN = float("nan")


def _pandas(frame: pd.DataFrame) -> bytes:
    return pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()


def _frames():
    """Small frames over what a request can hold: text with unicode and None / NaN, all missing, numbers,
    booleans, object columns of numbers or mixed values, categoricals, and the same value twice."""
    text = pd.Series(["a", "北京", None, "e\u0301", NAN, "", "a", "😀"], dtype=object)
    yield pd.DataFrame({"t": text, "n": np.arange(8, dtype=np.int64), "f": [1.5, NAN, 0.0, -0.0, 1e300, 2, 3, 4]})
    yield pd.DataFrame({"only_missing": pd.Series([None, NAN, None], dtype=object), "b": [True, False, True]})
    yield pd.DataFrame({"ints_as_objects": pd.Series([1, 2, 2], dtype=object),
                        "mixed": pd.Series(["1", 1, 1.0], dtype=object)})
    yield pd.DataFrame({"na": pd.Series(["x", pd.NA, np.float64("nan")], dtype=object),
                        "bools": pd.Series([True, None, False], dtype=object)})
    yield pd.DataFrame({"cat": pd.Categorical(["x", "y", None, "x"]), "s": ["p", "q", "r", "s"]})
    yield pd.DataFrame({"one": ["only"]})
    yield pd.DataFrame({"u": ["ü", "ü", "u"], "dup": ["ü", "ü", "u"]}).rename(columns={"dup": "u2"})
    yield pd.DataFrame({"t": ["a", "b"]}).iloc[:0]
    yield pd.DataFrame({"t": pd.Series([NAN, "z", None], dtype=object), "i": pd.array([1, None, 3], dtype="Int64")})
    yield pd.DataFrame({"f32": np.array([1.5, NAN], dtype=np.float32), "u8": np.array([1, 255], dtype=np.uint8),
                        "dt": pd.to_datetime(["2020-01-01", None])})


@pytest.mark.parametrize("k", range(10))
def test_row_digests_equal_hash_pandas_object(k):
    frame = list(_frames())[k]
    assert inputs.row_digests(frame) == _pandas(frame)
    for i in range(len(frame)):  # each row alone (a request of one row) and each prefix
        assert inputs.row_digests(frame.iloc[i:i + 1].reset_index(drop=True)) == _pandas(frame.iloc[i:i + 1])
        assert inputs.row_digests(frame.iloc[:i + 1]) == _pandas(frame.iloc[:i + 1])


def test_row_digests_of_a_random_text_frame_equal_hash_pandas_object():
    rng = np.random.default_rng(7)
    pool = np.array(["", "x", "Ω", "é", "ＡＢ", "a b", "0", "nan", "None", None, NAN], dtype=object)
    for _ in range(50):
        n = int(rng.integers(1, inputs.SMALL_HASH_ROWS + 1))
        frame = pd.DataFrame({c: pool[rng.integers(0, len(pool), n)] for c in "abc"})
        frame["x"] = rng.normal(size=n)
        assert inputs.row_digests(frame) == _pandas(frame)
        assert inputs.content_hash(frame) == inputs.content_hash(frame.copy())


def _log_frames():
    """Decision-log shaped frames: text, numbers with NaN, nulls only, lists (empty, of text, of numbers with
    None), booleans, int64 ids."""
    yield pd.DataFrame({
        "decision_id": ["d1"], "row_number": np.array([1], dtype=np.int64), "quarantine_rules": [None],
        "pd": [0.25], "limit": [NAN], "review_queue": [False], "rules_triggered": [[]],
        "reason_codes": [["a", "北"]], "reason_attributions": [[None, 0.5]], "counterfactual": [None],
        "input__x": pd.Series([3], dtype=object), "input__y": pd.Series([None], dtype=object)})
    yield pd.DataFrame({
        "decision_id": ["d1", "d2"], "row_number": np.array([1, 2], dtype=np.int64),
        "quarantine_rules": [None, "x: rule"], "pd": [0.25, NAN], "limit": [1000.0, NAN],
        "review_queue": [True, False], "rules_triggered": [["r"], []], "reason_codes": [[], []],
        "reason_attributions": [[0.1], []], "counterfactual": ['{"a": 1}', None],
        "input__x": pd.Series([3, 2.5], dtype=object), "input__y": pd.Series(["s", None], dtype=object)})


def test_decision_log_parquet_bytes_equal_the_pandas_conversion():
    for frame in list(_log_frames()) * 2:  # the second time from the cached metadata
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
        assert serve._parquet_bytes(frame) == sink.getvalue().to_pybytes()
    assert len(serve._PANDAS_META) >= 2  # (the second round was built from the cache)


def test_the_audit_indexes_what_reads_back_from_the_log_bytes():
    """A schema read back equal once hands its tables to the audit append: the Merkle leaves of the table handed
    over are those of the table read back from the bytes (what `audit verify` recomputes)."""
    from creditgov.governance import merkle

    for frame in _log_frames():
        serve._log_bytes(frame)  # the first log of the schema is read back
        data, table = serve._log_bytes(frame)
        assert table is not None and data == serve._parquet_bytes(frame)
        back = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
        for fmt in merkle.FORMATS:
            leaves = merkle.hash_prepared_for(merkle.prepare_for(table, fmt))
            assert leaves.shape[0] == len(frame)
            assert np.array_equal(leaves, merkle.hash_prepared_for(merkle.prepare_for(back, fmt)))


def test_object_column_types_are_pyarrows_inference():
    """serve._object_type gives an object column of a few rows the Arrow type pyarrow infers for it (from_pandas),
    or None where it leaves inference to pyarrow: random columns of None, NaN, texts, bools, whole numbers (to the
    int64 bounds and past them), floats, lists of those (nested, empty) and other objects; the array converted
    with the type is the inferred one."""
    rng = np.random.default_rng(20)
    plain = [None, NAN, "x", "", "北京", True, False, 0, -7, 2 ** 53, 2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 1.5, -0.0,
             float("inf")]
    odd = [2 ** 63, np.int64(3), np.float64(2.5), b"b", {"k": 1}, ("t",), pd.NA]
    lists = [[], ["a"], ["a", None], [1, 2], [1, 2.5], [0.5], [None], [True], [["n"]], [2 ** 64], [b"b"]]
    typed = 0
    for _ in range(3000):
        pool = [plain, plain + odd, lists + [None], lists + plain][rng.integers(4)]
        values = [pool[k] for k in rng.integers(len(pool), size=rng.integers(1, 5))]
        a = np.empty(len(values), dtype=object)
        a[:] = values
        try:
            want = pa.array(a, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            assert serve._object_type(a) is None, values
            continue
        t = serve._object_type(a)
        if t is not None:
            typed += 1
            assert t == want.type, values
            assert pa.array(a, type=t, from_pandas=True).equals(want), values
    assert typed > 700  # the shortcut covers a good share of these columns (1,061 of the 3,000)


def test_a_few_rows_arrow_table_round_trips_the_journal():
    """_arrow_table of a few rows takes the columns of one type from one conversion (slices): the journal frame
    reads back to pyarrow's own conversion of the frame, and so does a decision log's Parquet."""
    from creditgov.governance import journal, merkle

    for frame in list(_log_frames()) * 2:
        table = serve._arrow_table(frame)
        want = pa.Table.from_pandas(frame, preserve_index=False)
        assert table.equals(want) and table.schema.metadata == want.schema.metadata
        back = pa.ipc.open_stream(journal.frame_bytes(table)[journal._HEAD.size:]).read_all()
        assert back.equals(want) and back.schema.equals(want.schema)
        assert np.array_equal(merkle.leaf_hashes_for(table, merkle.LEAF_FORMAT),
                              merkle.hash_prepared_for((merkle.LEAF_FORMAT, merkle.prepare_bin(want))))
