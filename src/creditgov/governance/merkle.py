"""Decision records as leaves of a Merkle tree (the Certificate Transparency construction, RFC 9162).

A decision record is one row of a decision log written as canonical JSON: the row's columns in
sorted order, compact separators, UTF-8, numbers as the shortest text that reads back to the
same float (orjson's), NaN and infinities as null. Its leaf hash is SHA-256(0x00 || record) and
an inner node is SHA-256(0x01 || left || right), exactly as RFC 9162 section 2.1.1 defines the
Merkle Tree Hash; an inclusion proof is the audit path of section 2.1.3.

The encoding is column-wise (orjson for numbers, Arrow buffers for strings, a numba kernel that
lays the rows out) because the audit trail hashes every decision of every batch, twice (on
append and on verify): a row-by-row json.dumps would be the slowest step of a 10M-row decide.
`LEAF_FORMAT` names this encoding in every batch entry; tests pin its bytes on known values so
that a library upgrade cannot silently change what old batches hash to.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

LEAF_FORMAT = "creditgov-record-json-1"
RAW, STR = 0, 1  # a column's text is JSON already / raw UTF-8 to be quoted
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def _njit(f, parallel=False):
    from numba import njit  # heavy import: only when records are hashed

    return njit(cache=True, nogil=True, parallel=parallel)(f)


prange = range  # replaced by numba.prange when the kernels are compiled (numba resolves it then)
_sizes = _row = _sha256 = None  # the compiled helpers and OpenSSL's SHA256, bound by _kernel() the same way


_kernels: dict = {}


def _libcrypto() -> str | None:
    """The OpenSSL libcrypto this Python's hashlib is linked to (already mapped in the process)."""
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1]
            if "/libcrypto" in path and Path(path).exists():
                return path
    except OSError:
        pass

    return ctypes.util.find_library("crypto")


def _sha_kernel() -> bool:
    """Bind OpenSSL's one-shot SHA256() for the numba kernels; False where it cannot be found (the
    leaves are then hashed by hashlib from the records' buffer, more slowly, to the same bytes)."""
    path = _libcrypto()
    try:
        ctypes.CDLL(path).SHA256  # noqa: B018  (present in OpenSSL 1.1 and 3)
    except (OSError, AttributeError, TypeError):
        return False
    import llvmlite.binding as llvm  # heavy (numba's compiler): only when the kernels are compiled
    from numba.core import types  # heavy: only when the kernels are compiled

    llvm.load_library_permanently(path)
    # SHA256(const unsigned char *d, size_t n, unsigned char *md): pointers passed as addresses
    globals()["_sha256"] = types.ExternalFunction("SHA256", types.uintp(types.uintp, types.uintp, types.uintp))
    return True


def _kernel(name):
    if not _kernels:
        from numba import prange as numba_prange  # heavy: only when records are hashed

        globals()["prange"] = numba_prange
        globals()["_sizes"] = _njit(_sizes_py)
        globals()["_row"] = _njit(_row_py)
        _kernels["rows"] = _njit(_rows_py, parallel=True)
        _kernels["lists"] = _njit(_lists_py)
        _kernels["gather"] = _njit(_gather_py)
        _kernels["escape"] = _njit(_any_escape_py)
        native = _sha_kernel()
        _kernels["leaves"] = _njit(_leaves_py, parallel=True) if native else None
        _kernels["parents"] = _njit(_parents_py, parallel=True) if native else None
    return _kernels[name]


def _sizes_py(n, kinds, starts, ends, valid, lit_offs):
    """Bytes of each row's record (0x00 included): the literals plus each value's text, quoted or null."""
    k = kinds.shape[0]
    sizes = np.full(n, lit_offs[k + 1] - lit_offs[0], dtype=np.int64)
    for c in range(k):
        q = 2 if kinds[c] == STR else 0
        for i in range(n):
            if valid[c, i]:
                sizes[i] += ends[c, i] - starts[c, i] + q
            else:
                sizes[i] += 4
    return sizes


def _row_py(i, out, p, kinds, starts, ends, valid, data, lit_offs, lits):
    """Lay row i out at out[p:]: 0x00 lit[0] v[0][i] lit[1] v[1][i] ... lit[k]; a STR value is quoted,
    an invalid one is null. Byte loops, not slices: the spans are short."""
    k = kinds.shape[0]
    for c in range(k + 1):
        for j in range(lit_offs[c], lit_offs[c + 1]):
            out[p] = lits[j]
            p += 1
        if c == k:
            break
        if not valid[c, i]:
            out[p] = 110
            out[p + 1] = 117
            out[p + 2] = 108
            out[p + 3] = 108
            p += 4
            continue
        if kinds[c] == STR:
            out[p] = 34
            p += 1
        for j in range(starts[c, i], ends[c, i]):
            out[p] = data[j]
            p += 1
        if kinds[c] == STR:
            out[p] = 34
            p += 1
    return p


def _rows_py(n, kinds, starts, ends, valid, data, lit_offs, lits):
    """Every row's record in one buffer (what a proof prints). starts, ends, valid are (k, n): one row
    of them per column, filled without strided writes. Rows are laid out in parallel (prange)."""
    sizes = _sizes(n, kinds, starts, ends, valid, lit_offs)
    out_offs = np.empty(n + 1, dtype=np.int64)
    out_offs[0] = 0
    for i in range(n):
        out_offs[i + 1] = out_offs[i] + sizes[i]
    out = np.empty(out_offs[n], dtype=np.uint8)
    for i in prange(n):
        _row(i, out, out_offs[i], kinds, starts, ends, valid, data, lit_offs, lits)
    return out_offs, out


_BLOCK = 2048


def _leaves_py(n, kinds, starts, ends, valid, data, lit_offs, lits, out):
    """out[i] = SHA-256 of row i's record, laid out in a per-block scratch buffer that stays in cache:
    the records of a batch (2 KB each) are never all in memory, and OpenSSL hashes them without the GIL."""
    sizes = _sizes(n, kinds, starts, ends, valid, lit_offs)
    base = out.ctypes.data
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        m = 1
        for i in range(lo, hi):
            m = max(m, sizes[i])
        scratch = np.empty(m, dtype=np.uint8)
        for i in range(lo, hi):
            _row(i, scratch, 0, kinds, starts, ends, valid, data, lit_offs, lits)
            _sha256(scratch.ctypes.data, sizes[i], base + 32 * i)


def _any_escape_py(data):
    """Any byte JSON must escape (control, quote, backslash)? Branch-free within 64 KiB blocks, which
    the compiler vectorises; a string column is scanned whole, so this runs over every text byte."""
    n = data.shape[0]
    for lo in range(0, n, 65536):
        hit = 0
        for j in range(lo, min(n, lo + 65536)):
            x = data[j]
            hit |= (x < 32) | (x == 34) | (x == 92)
        if hit:
            return True
    return False


def _lists_py(n, list_offs, list_valid, kind, starts, ends, valid, data):
    """Each list as [a,b,...] from its elements' texts; a null list is null."""
    out_offs = np.empty(n + 1, dtype=np.int64)
    out_offs[0] = 0
    for i in range(n):
        if not list_valid[i]:
            size = 4
        else:
            size = 2
            for e in range(list_offs[i], list_offs[i + 1]):
                if e > list_offs[i]:
                    size += 1
                if valid[e]:
                    size += ends[e] - starts[e] + (2 if kind == STR else 0)
                else:
                    size += 4
        out_offs[i + 1] = out_offs[i] + size
    out = np.empty(out_offs[n], dtype=np.uint8)
    for i in range(n):
        p = out_offs[i]
        if not list_valid[i]:
            out[p] = 110
            out[p + 1] = 117
            out[p + 2] = 108
            out[p + 3] = 108
            continue
        out[p] = 91  # [
        p += 1
        for e in range(list_offs[i], list_offs[i + 1]):
            if e > list_offs[i]:
                out[p] = 44  # ,
                p += 1
            if not valid[e]:
                out[p] = 110
                out[p + 1] = 117
                out[p + 2] = 108
                out[p + 3] = 108
                p += 4
                continue
            if kind == STR:
                out[p] = 34
                p += 1
            for j in range(starts[e], ends[e]):
                out[p] = data[j]
                p += 1
            if kind == STR:
                out[p] = 34
                p += 1
        out[p] = 93  # ]
    return out_offs, out


def _gather_py(codes, lut_offs, lut):
    """Texts of categorical values: row i gets lut text codes[i]."""
    n = codes.shape[0]
    out_offs = np.empty(n + 1, dtype=np.int64)
    out_offs[0] = 0
    for i in range(n):
        c = codes[i]
        out_offs[i + 1] = out_offs[i] + lut_offs[c + 1] - lut_offs[c]
    out = np.empty(out_offs[n], dtype=np.uint8)
    for i in range(n):
        c = codes[i]
        p = out_offs[i]
        for j in range(lut_offs[c], lut_offs[c + 1]):
            out[p] = lut[j]
            p += 1
    return out_offs, out


# --------------------------------------------------------------------------- column texts
# A column's texts are (kind, starts, ends, data, valid): value i is data[starts[i]:ends[i]].


def _from_texts(texts: list[bytes]):
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offs = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    return offs, np.frombuffer(b"".join(texts), dtype=np.uint8)


def _numbers(values: np.ndarray):
    """orjson's texts of a numeric array (shortest round-trip floats, NaN and inf as null), in place
    in orjson's output: the commas stay in the buffer, between the values' spans."""
    n = len(values)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    body = np.frombuffer(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY), dtype=np.uint8)[1:-1]
    commas = np.flatnonzero(body == 44)
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    starts[0], ends[n - 1] = 0, len(body)
    starts[1:] = commas + 1
    ends[:-1] = commas
    return starts, ends, body


def _categorical(codes: np.ndarray, texts: list[bytes]):
    lut_offs, lut = _from_texts(texts)
    codes = codes.astype(np.int64, copy=False)
    return lut_offs[codes], lut_offs[codes + 1], lut


def _arrow_offsets(arr: pa.Array) -> np.ndarray:
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_list(arr.type) else np.int32
    return np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)


def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=np.uint8)
    return pc.is_valid(arr).to_numpy(zero_copy_only=False).astype(np.uint8)


def _needs_escape(data: np.ndarray) -> bool:
    return bool(len(data)) and bool(_kernel("escape")(data))


def column_texts(arr: pa.Array):
    """(kind, starts, ends, data, valid) of a column: the JSON text of each value (STR: still to be quoted)."""
    t = arr.type
    n = len(arr)
    if pa.types.is_dictionary(t):
        return column_texts(arr.dictionary_decode())
    if pa.types.is_null(t):
        z = np.zeros(n, np.int64)
        return RAW, z, z, np.zeros(0, np.uint8), np.zeros(n, np.uint8)
    valid = _valid(arr)
    if pa.types.is_boolean(t):
        codes = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(np.int64)
        return (RAW, *_categorical(codes, [b"false", b"true"]), valid)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if arr.null_count:
            arr = arr.fill_null(0)
        dtype = np.int64 if pa.types.is_integer(t) else np.float64
        values = arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        return (RAW, *_numbers(np.ascontiguousarray(values)), valid)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        offs = _arrow_offsets(arr)
        buf = arr.buffers()[2]
        data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
        if _needs_escape(data[offs[0]:offs[-1]]):  # rare: quotes, backslashes or control characters
            enc = pc.dictionary_encode(arr)
            codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False)
            texts = [json.dumps(v, ensure_ascii=False).encode() for v in enc.dictionary.to_pylist()] or [b""]
            return (RAW, *_categorical(codes, texts), valid)
        return STR, offs[:-1], offs[1:], data, valid
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        list_offs = _arrow_offsets(arr)
        kind, starts, ends, data, cvalid = column_texts(arr.values)
        out_offs, out = _kernel("lists")(n, list_offs, valid, kind, starts, ends, cvalid, data)
        return RAW, out_offs[:-1], out_offs[1:], out, np.ones(n, np.uint8)
    # anything else (dates, decimals, structs): exact but slow, value by value
    texts = [json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str).encode()
             for v in arr.to_pylist()]
    offs, data = _from_texts(texts)
    return RAW, offs[:-1], offs[1:], data, np.ones(n, np.uint8)


def prepare(table: pa.Table | pa.RecordBatch):
    """The kernels' arguments for a table (built with the GIL held; hashing them releases it): its columns' texts in sorted name order and the literals between them."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    n = table.num_rows
    names = sorted(table.column_names)
    k = len(names)
    kinds, datas, lits = [], [], []
    starts = np.empty((k, n), dtype=np.int64)
    ends = np.empty((k, n), dtype=np.int64)
    valid = np.empty((k, n), dtype=np.uint8)
    base = 0
    for i, name in enumerate(names):
        col = table.column(name)
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        kind, st, en, d, v = column_texts(arr)
        kinds.append(kind)
        np.add(st, base, out=starts[i])
        np.add(en, base, out=ends[i])
        valid[i] = v
        datas.append(d)
        base += len(d)
        lits.append((("\x00{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":").encode())
    lits.append(b"}")
    if not names:
        lits = [b"\x00{}"]
    lit_offs, lit = _from_texts(lits)
    return (n, np.array(kinds, dtype=np.int64), starts, ends, valid,
            np.concatenate(datas) if datas else np.zeros(0, np.uint8), lit_offs, lit)


def record_buffer(table: pa.Table | pa.RecordBatch):
    """(offsets, bytes) of 0x00 + canonical JSON of each row: leaf i hashes bytes[offs[i]:offs[i+1]]."""
    return _kernel("rows")(*prepare(table))


def records(table) -> list[str]:
    """The canonical JSON text of each row (what a proof shows; its leaf hashes 0x00 + these bytes)."""
    offs, buf = record_buffer(table)
    return [bytes(buf[a + 1:b]).decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]


def _sha_spans(mv, o) -> bytes:
    sha = hashlib.sha256
    return b"".join([sha(mv[a:b]).digest() for a, b in zip(o, o[1:])])


def leaf_hashes(table, threads: int = 2) -> np.ndarray:
    """(n, 32) uint8: SHA-256(0x00 || record) of each row."""
    return hash_prepared(prepare(table), threads)


def hash_prepared(args, threads: int = 2) -> np.ndarray:
    """The leaf hashes of a prepared table (`prepare`); the numba kernel does not hold the GIL."""
    n = args[0]
    leaves = _kernel("leaves")
    if leaves is not None:
        out = np.empty((n, 32), dtype=np.uint8)
        if n:
            leaves(*args, out)
        return out
    offs, buf = _kernel("rows")(*args)
    mv = memoryview(buf)
    o = offs.tolist()
    if threads > 1 and n >= 20_000:  # hashlib releases the GIL on messages over 2 KiB
        cut = [n * t // threads for t in range(threads + 1)]
        with ThreadPoolExecutor(threads) as ex:
            parts = list(ex.map(lambda t: _sha_spans(mv, o[cut[t]:cut[t + 1] + 1]), range(threads)))
        digest = b"".join(parts)
    else:
        digest = _sha_spans(mv, o)
    return np.frombuffer(digest, dtype=np.uint8).reshape(n, 32)


def leaf_hash(record: str) -> bytes:
    return hashlib.sha256(b"\x00" + record.encode("utf-8")).digest()


# --------------------------------------------------------------------------- the tree


def _parents_py(nodes, out):
    """out[j] = SHA-256(0x01 || nodes[2j] || nodes[2j+1]), in parallel blocks."""
    pairs = out.shape[0]
    base = out.ctypes.data
    for b in prange((pairs + _BLOCK - 1) // _BLOCK):
        msg = np.empty(65, dtype=np.uint8)
        msg[0] = 1
        for j in range(b * _BLOCK, min(pairs, (b + 1) * _BLOCK)):
            for t in range(32):
                msg[1 + t] = nodes[2 * j, t]
                msg[33 + t] = nodes[2 * j + 1, t]
            _sha256(msg.ctypes.data, 65, base + 32 * j)


def _parent_level(nodes: np.ndarray) -> np.ndarray:
    m = len(nodes)
    pairs = m // 2
    kernel = _kernel("parents")
    if kernel is not None:
        up = np.empty((pairs, 32), dtype=np.uint8)
        if pairs:
            kernel(np.ascontiguousarray(nodes), up)
    else:
        msg = np.empty((pairs, 65), dtype=np.uint8)
        msg[:, 0] = 1
        msg[:, 1:33] = nodes[0:2 * pairs:2]
        msg[:, 33:] = nodes[1:2 * pairs:2]
        mv = memoryview(msg).cast("B")
        sha = hashlib.sha256
        up = np.frombuffer(b"".join([sha(mv[i:i + 65]).digest() for i in range(0, 65 * pairs, 65)]),
                           dtype=np.uint8).reshape(pairs, 32)
    # an unpaired last node moves up unchanged: the same tree as RFC 9162's split at the largest power of 2
    return np.vstack([up, nodes[-1:]]) if m % 2 else up


def levels(leaves: np.ndarray) -> list[np.ndarray]:
    out = [leaves]
    while len(out[-1]) > 1:
        out.append(_parent_level(out[-1]))
    return out


def root(leaves: np.ndarray) -> bytes:
    """Merkle Tree Hash of the leaves (RFC 9162 2.1.1); the hash of the empty string for no leaves."""
    if len(leaves) == 0:
        return hashlib.sha256(b"").digest()
    nodes = leaves
    while len(nodes) > 1:
        nodes = _parent_level(nodes)
    return bytes(nodes[0])


def inclusion_path(tree: list[np.ndarray], index: int) -> list[bytes]:
    """The audit path of leaf `index` (RFC 9162 2.1.3.1), from the tree's levels."""
    path = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(bytes(level[sibling]))
        index //= 2
    return path


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root_hash: bytes) -> bool:
    """RFC 9162 2.1.3.2, as the README's snippet does it."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn % 2 == 0 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_hash
