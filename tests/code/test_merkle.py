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
    old batch fail verification): these exact bytes are LEAF_FORMAT creditgov-record-json-1."""
    assert merkle.LEAF_FORMAT == "creditgov-record-json-1"
    assert merkle.records(TABLE) == PINNED
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
