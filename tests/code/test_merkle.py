"""Decision records as RFC 9162 leaves: the encoding (pinned bytes) and the tree (against the RFC's
recursive definition), and inclusion proofs for every leaf of small trees."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from creditgov.governance import merkle


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, literally: split at the largest power of two smaller than n."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _leaves(n: int) -> np.ndarray:
    return np.frombuffer(b"".join(hashlib.sha256(b"\x00" + str(i).encode()).digest() for i in range(n)),
                         dtype=np.uint8).reshape(n, 32)


@pytest.mark.parametrize("n", list(range(0, 18)) + [31, 32, 33, 100])
def test_root_is_the_rfc_9162_merkle_tree_hash(n):
    lv = _leaves(n)
    assert merkle.root(lv) == _mth([bytes(x) for x in lv])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 32, 33])
def test_every_leaf_has_a_proof_and_a_wrong_leaf_or_index_fails(n):
    lv = _leaves(n)
    tree = merkle.levels(lv)
    root = merkle.root(lv)
    for i in range(n):
        path = merkle.inclusion_path(tree, i)
        assert merkle.verify_inclusion(bytes(lv[i]), i, n, path, root)
        assert not merkle.verify_inclusion(hashlib.sha256(b"x").digest(), i, n, path, root)
        if n > 1:
            assert not merkle.verify_inclusion(bytes(lv[i]), (i + 1) % n, n, path, root)
    assert not merkle.verify_inclusion(bytes(lv[0]), n, n, [], root)


@pytest.mark.parametrize("sizes", [[], [1], [4], [3], [4, 4], [4, 1], [4, 4, 3], [8, 8, 8, 8, 5], [4, 3, 4], [3, 3],
                                   [6, 6, 2], [5, 0, 11, 16, 1, 7], [1] * 19, [13, 64, 64, 3, 29]])
def test_frontier_root_is_the_root_of_all_leaves_however_they_are_chunked(sizes):
    """The append's root, from chunks of any sizes (row groups, a chunk size set by hand): always the RFC 9162
    root of all the leaves, however the chunks fall."""
    lv = _leaves(sum(sizes))
    f, at = merkle.Frontier(), 0
    for k in sizes:
        f.add(lv[at:at + k])
        at += k
    assert f.size == len(lv) and f.root() == _mth([bytes(x) for x in lv])
    assert len(f.stack) == bin(len(lv)).count("1")  # O(log n): one subtree per 1-bit of the count


TABLE = pa.table({
    "decision_id": ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"],
    "pd": [0.1, float("nan")],
    "limit": [1e-05, 2500.0],
    "n": pa.array([3, None], pa.int64()),
    "ok": [True, None],
    "tier": ["A", None],
    "reasons_zh": [["收入低", 'say "no"'], []],
    "attr": [[None, 0.25], None],
    "nothing": pa.array([None, None], pa.null()),
    "escaped": ["a\\b\nc", "tab\there"],
})
PINNED = [
    '{"attr":[null,0.25],"decision_id":"0123456789abcdef0123456789abcdef","escaped":"a\\\\b\\nc",'
    '"limit":0.00001,"n":3,"nothing":null,"ok":true,"pd":0.1,"reasons_zh":["收入低","say \\"no\\""],"tier":"A"}',
    '{"attr":null,"decision_id":"fedcba9876543210fedcba9876543210","escaped":"tab\\there","limit":2500.0,'
    '"n":null,"nothing":null,"ok":null,"pd":null,"reasons_zh":[],"tier":null}',
]


def test_record_bytes_are_pinned():
    """The leaf encoding must never drift (a library upgrade changing a float's text would make every
    old batch fail verification): these exact bytes are creditgov-record-json-1, the format of the
    batches sealed before format 2 (verify and prove still read them)."""
    assert merkle.FORMAT_JSON == "creditgov-record-json-1"
    assert merkle.records(TABLE) == PINNED
    assert merkle.record_bytes(TABLE, merkle.FORMAT_JSON) == [r.encode() for r in PINNED]
    lv = merkle.leaf_hashes(TABLE)
    assert [bytes(x) for x in lv] == [merkle.leaf_hash(r) for r in PINNED]


def test_records_are_standard_json_that_reads_back_to_the_row():
    rows = TABLE.to_pylist()
    for text, row in zip(merkle.records(TABLE), rows):
        back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
        assert list(back) == sorted(row)
        for k, v in row.items():
            if isinstance(v, float) and math.isnan(v):
                assert back[k] is None
            else:
                assert back[k] == v, k


def test_float_texts_round_trip_exactly():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-300, 300, 2000),
                             [0.0, -0.0, 5e-324, 1.7976931348623157e308, 1 / 3, 123456789.123]])
    texts = merkle.records(pa.table({"x": values}))
    assert [json.loads(t)["x"] for t in texts] == values.tolist()


def test_sliced_and_chunked_tables_encode_like_whole_ones():
    big = pa.concat_tables([TABLE] * 50)
    whole = merkle.records(big.combine_chunks())
    assert merkle.records(big) == whole
    assert merkle.records(big.slice(37, 20)) == whole[37:57]
    assert [bytes(x) for x in merkle.leaf_hashes(big, threads=2)] == [merkle.leaf_hash(r) for r in whole]
    many = pa.concat_tables([TABLE] * 12_000)  # past the size where two threads hash
    assert np.array_equal(merkle.leaf_hashes(many, threads=2), merkle.leaf_hashes(many, threads=1))


def test_native_and_hashlib_paths_give_the_same_leaves_and_roots(monkeypatch):
    """The numba kernels call OpenSSL's SHA256 directly; where libcrypto cannot be bound, hashlib
    hashes the same record bytes. Both paths must give the same tree, byte for byte."""
    many = pa.concat_tables([TABLE] * 3_000)
    merkle._kernel("rows")
    if merkle._kernels["leaves"] is None:
        pytest.skip("OpenSSL's SHA256 could not be bound on this machine: only the hashlib path runs")
    native = merkle.leaf_hashes(many)
    native_tree = merkle.levels(native)
    monkeypatch.setitem(merkle._kernels, "leaves", None)
    monkeypatch.setitem(merkle._kernels, "parents", None)
    assert np.array_equal(merkle.leaf_hashes(many, threads=2), native)
    assert all(np.array_equal(a, b) for a, b in zip(merkle.levels(native), native_tree))
    assert merkle.root(native) == _mth([bytes(x) for x in native])


# --------------------------------------------------------------------------- leaf format 2 (binary)

PINNED_BIN = [  # TABLE's rows as creditgov-record-bin-2 (columns: attr decision_id escaped limit n nothing ok pd
    # reasons_zh tier): list [null, 0.25]; text; text with escapes kept raw; 1e-05; 3; null; true; 0.1; list; "A"
    "05020000000003000000000000d03f042000000030313233343536373839616263646566303132333435363738396162636465660405"
    "000000615c620a6303f168e388b5f8e43e020300000000000000000101039a9999999999b93f05020000000409000000e694b6e585a5"
    "e4bd8e040800000073617920226e6f22040100000041",
    "00042000000066656463626139383736353433323130666564636261393837363534333231300408000000746162096865726503000000"
    "000088a34000000000050000000000",
]


def _spec_record(row: dict) -> bytes:
    """creditgov-record-bin-2 written from its definition (merkle.py), one value at a time."""
    import struct

    def enc(v) -> bytes:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return b"\x00"
        if isinstance(v, bool):
            return b"\x01" + bytes([v])
        if isinstance(v, int):
            return b"\x02" + struct.pack("<q", v)
        if isinstance(v, float):
            return b"\x03" + struct.pack("<d", v)
        if isinstance(v, str):
            return b"\x04" + struct.pack("<I", len(v.encode())) + v.encode()
        if isinstance(v, list):
            return b"\x05" + struct.pack("<I", len(v)) + b"".join(map(enc, v))
        text = json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str).encode()
        return b"\x06" + struct.pack("<I", len(text)) + text

    return b"".join(enc(row[k]) for k in sorted(row))


def test_binary_records_are_pinned_and_follow_their_definition():
    assert merkle.LEAF_FORMAT == merkle.FORMAT_BIN == "creditgov-record-bin-2"
    got = merkle.record_bytes(TABLE, merkle.FORMAT_BIN)
    assert [r.hex() for r in got] == PINNED_BIN
    assert got == [_spec_record(r) for r in TABLE.to_pylist()]
    lv = merkle.leaf_hashes_for(TABLE, merkle.FORMAT_BIN)
    assert [bytes(x) for x in lv] == [hashlib.sha256(b"\x00" + r).digest() for r in got]


def test_binary_records_decode_back_to_the_row():
    names = sorted(TABLE.column_names)
    for rec, row in zip(merkle.record_bytes(TABLE, merkle.FORMAT_BIN), TABLE.to_pylist()):
        back = merkle.decode(rec, names)
        assert list(back) == names
        for k, v in row.items():
            assert back[k] == (None if isinstance(v, float) and math.isnan(v) else v), k
    with pytest.raises(ValueError, match="bytes after"):
        merkle.decode(merkle.record_bytes(TABLE, merkle.FORMAT_BIN)[0] + b"\x00", names)


def _typed_table(n: int = 300) -> pa.Table:
    """Every column type, nulls in each, non-finite floats, nested and empty lists, dictionaries, other types."""
    import datetime as dt

    rng = np.random.default_rng(3)
    f = rng.normal(size=n)
    f[::7] = np.nan
    f[::11] = np.inf
    words = ["", "a", "é", "收入", 'q"\\', "x" * 40]
    t = pa.table({
        "f": pa.array(f, mask=np.arange(n) % 13 == 0),
        "f32": pa.array(rng.normal(size=n).astype(np.float32)),
        "i8": pa.array(rng.integers(-100, 100, n).astype(np.int8)),
        "u64": pa.array(rng.integers(0, 2 ** 62, n).astype(np.uint64)),
        "i": pa.array(rng.integers(-2 ** 62, 2 ** 62, n), mask=np.arange(n) % 5 == 0),
        "b": pa.array(rng.integers(0, 2, n).astype(bool), mask=np.arange(n) % 4 == 0),
        "s": pa.array([words[j] for j in rng.integers(0, 6, n)], mask=np.arange(n) % 6 == 0),
        "ls": pa.array([[words[j] for j in rng.integers(0, 6, k)] if k % 3 else None
                        for k in rng.integers(0, 5, n)]),
        "lf": pa.array([[None if j % 3 == 0 else float(j) for j in range(k)] for k in rng.integers(0, 4, n)]),
        "ll": pa.array([[[1, 2], [], None] if k % 2 else [] for k in range(n)]),
        "d": pa.array([words[j % 6] for j in range(n)]).dictionary_encode(),
        "dn": pa.array([words[j % 6] if j % 7 else None for j in range(n)]).dictionary_encode(),
        "ld": pa.ListArray.from_arrays(np.arange(0, 2 * n + 1, 2, dtype=np.int32),
                                       pa.array([words[j % 5] if j % 9 else None for j in range(2 * n)])
                                       .dictionary_encode(), mask=pa.array(np.arange(n) % 10 == 0)),
        "day": pa.array([dt.date(2026, 1, 1 + j % 28) for j in range(n)]),
        "nil": pa.array([None] * n, pa.null()),
    })
    return t


def test_binary_records_of_every_column_type_match_the_definition():
    """Types, nulls in each, non-finite floats, nested and empty lists, dictionaries, other types (as
    JSON text), sliced and chunked tables: the kernels give the definition's bytes, natively and
    through hashlib."""
    t = _typed_table()
    want = [_spec_record(r) for r in t.to_pylist()]
    assert merkle.record_bytes(t, merkle.FORMAT_BIN) == want
    lv = merkle.leaf_hashes_for(t, merkle.FORMAT_BIN)
    assert [bytes(x) for x in lv] == [hashlib.sha256(b"\x00" + r).digest() for r in want]
    assert merkle.record_bytes(t.slice(17, 50), merkle.FORMAT_BIN) == want[17:67]
    chunked = pa.concat_tables([t.slice(0, 100), t.slice(100)])
    assert np.array_equal(merkle.leaf_hashes_for(chunked, merkle.FORMAT_BIN), lv)
    for r, row in zip(want, t.to_pylist()):
        back = merkle.decode(r, sorted(t.column_names))
        assert back["s"] == row["s"] and back["ls"] == row["ls"] and back["day"] == str(row["day"])


def test_binary_leaves_native_and_hashlib_agree(monkeypatch):
    many = pa.concat_tables([TABLE] * 3_000)
    native = merkle.leaf_hashes_for(many, merkle.FORMAT_BIN)
    merkle._bin_kernel("bin_rows")
    monkeypatch.setitem(merkle._kernels, "bin_leaves", None)
    assert np.array_equal(merkle.leaf_hashes_for(many, merkle.FORMAT_BIN), native)
    assert [bytes(x) for x in native[:2]] == [hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in PINNED_BIN]


def test_two_threads_binding_the_kernels_at_once_both_get_them(monkeypatch):
    """The audit append binds the kernels in its hasher thread while its main thread encodes: a thread
    arriving while the other binds waits for the whole set (it found a half-filled one: KeyError 'leaves')."""
    import threading
    import time

    real, inside = merkle._sha_kernel, threading.Event()

    def slow():  # the first thread holds the set half bound while the second arrives
        inside.set()
        time.sleep(0.3)
        return real()

    monkeypatch.setattr(merkle, "_sha_kernel", slow)
    monkeypatch.setattr(merkle, "_kernels", {})
    errors = []

    def bind(name, second):
        if second:
            inside.wait(30)
        try:
            merkle._bin_kernel(name) if name.startswith("bin") else merkle._kernel(name)
        except Exception as exc:  # noqa: BLE001 (the failure is the subject)
            errors.append(repr(exc))

    threads = [threading.Thread(target=bind, args=a) for a in (("leaves", False), ("bin_leaves", True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert {"leaves", "parents", "bin_rows", "bin_leaves"} <= set(merkle._kernels)


def test_a_few_rows_encoded_in_python_give_the_kernels_leaves():
    """prepare_for's branch for a few rows (a served request's records, from their Python values) gives the leaves
    the kernels give for the same table: every column type, nulls, NaN and infinities, nested, empty and null
    lists, dictionaries, sliced and chunked tables; a type it does not encode (uint64, dates) takes the kernels."""
    full = _typed_table(64)
    mine = full.drop_columns(["u64", "day"])
    for t in (mine.slice(0, 1), mine.slice(5, 16), pa.concat_tables([mine.slice(20, 3), mine.slice(40, 4)]),
              mine.slice(0, 0), full.slice(2, 3)):
        small = merkle.prepare_for(t, merkle.FORMAT_BIN)
        assert isinstance(small[1], list) == ("day" not in t.column_names)
        want = merkle.hash_prepared_for((merkle.FORMAT_BIN, merkle.prepare_bin(t)))
        assert np.array_equal(merkle.hash_prepared_for(small), want)
        assert [bytes(x) for x in want] == [hashlib.sha256(b"\x00" + _spec_record(r)).digest() for r in t.to_pylist()]
    assert not isinstance(merkle.prepare_for(mine.slice(0, merkle.SMALL_ROWS + 1), merkle.FORMAT_BIN)[1], list)
