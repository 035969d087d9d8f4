"""Decision records as leaves of a Merkle tree (the Certificate Transparency construction, RFC 9162).

A decision record is one row of a decision log as bytes; its leaf hash is SHA-256(0x00 || record)
and an inner node is SHA-256(0x01 || left || right), exactly as RFC 9162 section 2.1.1 defines the
Merkle Tree Hash; an inclusion proof is the audit path of section 2.1.3. Two record formats, named
in every batch entry ("leaf_format"):

* creditgov-record-bin-2 (new batches): the row's values in sorted column order, each a tag byte and
  fixed-width little-endian numbers or length-prefixed UTF-8 (see `decode`); the column names are in
  the batch entry once. Built column by column from Arrow buffers and laid out and hashed in row
  blocks by numba kernels that call OpenSSL's SHA256 without the GIL: no per-value text formatting.
* creditgov-record-json-1 (batches sealed before): the row's canonical JSON text, the columns in
  sorted order, compact separators, UTF-8, numbers as the shortest text that reads back to the same
  float (orjson's), NaN and infinities as null. Still verified and proved; also what the golden
  decision tests compare.

The audit trail hashes every decision of every batch, on append and on verify: a row-by-row
encoding would be the slowest step of a 10M-row decide. Tests pin both formats' bytes on known
values so that a library upgrade cannot silently change what old batches hash to.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

FORMAT_JSON = "creditgov-record-json-1"  # a record is the row's canonical JSON text (batches before format 2)
FORMAT_BIN = "creditgov-record-bin-2"  # a record is the row's values in a binary layout (see below)
FORMATS = (FORMAT_JSON, FORMAT_BIN)
LEAF_FORMAT = FORMAT_BIN  # what new batches are sealed with; verify and prove read both
RAW, STR = 0, 1  # a column's text is JSON already / raw UTF-8 to be quoted
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def _njit(f, parallel=False):
    from numba import njit  # heavy import: only when records are hashed

    return njit(cache=True, nogil=True, parallel=parallel)(f)


prange = range  # replaced by numba.prange when the kernels are compiled (numba resolves it then)
_sizes = _row = _sha256 = None  # the compiled helpers and OpenSSL's SHA256, bound by _kernel() the same way
_sha_one = _sha_init = _sha_update = _sha_final = None  # OpenSSL's functions, bound by _sha_kernel()


_kernels: dict = {}
# two threads may ask for the kernels at once (the audit append loads them in its hasher thread while the
# main thread encodes): one binds them, the other waits; a set is published by its last entry
_binding = threading.RLock()


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


def _sha_low_py(ctx, d, n, md):
    """SHA-256 of n bytes at d into md, through a context the caller allocates once (ctx: 256 bytes)."""
    _sha_init(ctx)
    _sha_update(ctx, d, n)
    _sha_final(md, ctx)


def _sha_one_py(ctx, d, n, md):
    _sha_one(d, n, md)


def _sha_kernel() -> bool:
    """Bind OpenSSL's SHA-256 for the numba kernels; False where it cannot be found (the leaves are then
    hashed by hashlib from the records' buffer, more slowly, to the same bytes). SHA256_Init, _Update and
    _Final where the library still exports them: OpenSSL 3's one-shot SHA256() looks the algorithm up on
    every call, which costs 6x the hash of an inner node (65 bytes)."""
    path = _libcrypto()
    try:
        lib = ctypes.CDLL(path)
        lib.SHA256  # noqa: B018  (present in OpenSSL 1.1 and 3)
    except (OSError, AttributeError, TypeError):
        return False
    low = all(hasattr(lib, f) for f in ("SHA256_Init", "SHA256_Update", "SHA256_Final"))
    import llvmlite.binding as llvm  # heavy (numba's compiler): only when the kernels are compiled
    from numba.core import types  # heavy: only when the kernels are compiled

    llvm.load_library_permanently(path)
    u = types.uintp  # pointers are passed as addresses
    globals()["_sha_one"] = types.ExternalFunction("SHA256", u(u, u, u))  # (data, n, md) -> md
    if low:
        globals()["_sha_init"] = types.ExternalFunction("SHA256_Init", types.intc(u))  # (ctx)
        globals()["_sha_update"] = types.ExternalFunction("SHA256_Update", types.intc(u, u, u))  # (ctx, data, n)
        globals()["_sha_final"] = types.ExternalFunction("SHA256_Final", types.intc(u, u))  # (md, ctx)
    globals()["_sha256"] = _njit(_sha_low_py if low else _sha_one_py)
    return True


def _kernel(name):
    if "parents" not in _kernels:
        with _binding:
            if "parents" not in _kernels:
                _bind_kernels()
    return _kernels[name]


def _bind_kernels() -> None:
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
        ctx = np.empty(256, dtype=np.uint8)
        for i in range(lo, hi):
            _row(i, scratch, 0, kinds, starts, ends, valid, data, lit_offs, lits)
            _sha256(ctx.ctypes.data, scratch.ctypes.data, sizes[i], base + 32 * i)


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


def _arrow_offsets(arr: pa.Array, copy: bool = True) -> np.ndarray:
    """The n + 1 offsets of a string or list array (int64; copy=False: Arrow's own, int32 or int64)."""
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_list(arr.type) else np.int32
    offs = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset: arr.offset + len(arr) + 1]
    return offs.astype(np.int64) if copy else offs


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
        ctx = np.empty(256, dtype=np.uint8)
        msg[0] = 1
        for j in range(b * _BLOCK, min(pairs, (b + 1) * _BLOCK)):
            for t in range(32):
                msg[1 + t] = nodes[2 * j, t]
                msg[33 + t] = nodes[2 * j + 1, t]
            _sha256(ctx.ctypes.data, msg.ctypes.data, 65, base + 32 * j)


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


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The root of a tree whose leaves arrive in order, chunk by chunk, in O(log n) memory: the roots of the
    perfect subtrees the leaves so far fill (one per 1-bit of the count, largest first: a Certificate
    Transparency log's compact range). RFC 9162 splits a tree at the largest power of two below its size,
    so the tree of n leaves is these subtrees, joined from the right; root() is that fold."""

    def __init__(self):
        self.size = 0
        self.stack: list[tuple[int, bytes]] = []  # (leaves, subtree root), sizes strictly decreasing

    def add(self, leaves: np.ndarray) -> None:
        """Leaves `size`.. of the tree, hashed into the largest subtrees that start where each one does."""
        m, i = len(leaves), 0
        while i < m:
            low = self.size & -self.size or 1 << 62  # a subtree starting here holds at most this many leaves
            k = 1 << (min(low, m - i).bit_length() - 1)
            self._push(k, root(leaves[i:i + k]))
            i += k

    def _push(self, k: int, node: bytes) -> None:
        self.stack.append((k, node))
        self.size += k
        while len(self.stack) > 1 and self.stack[-1][0] == self.stack[-2][0]:
            (k2, right), (k1, left) = self.stack.pop(), self.stack.pop()
            self.stack.append((k1 + k2, _node(left, right)))

    def root(self) -> bytes:
        if not self.stack:
            return hashlib.sha256(b"").digest()
        node = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            node = _node(left, node)
        return node


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


# --------------------------------------------------------------------------- leaf format 2: binary records
# A record of LEAF_FORMAT creditgov-record-bin-2 is the row's values in sorted column order, each as a
# tag byte and its bytes; the column names are written once, in the batch's chain entry ("columns"):
#   0 null (also NaN and infinities) | 1 bool: 1 byte | 2 integer: int64 little-endian |
#   3 float: float64 little-endian | 4 text: uint32 LE byte length + UTF-8 |
#   5 list: uint32 LE count + each element so encoded | 6 other (dates, decimals, structs): as 4, JSON text.
# Built column by column with numpy (no per-value text formatting), laid out and hashed in row blocks.

_NULL, _BOOL, _INT, _FLOAT, _TEXT, _LIST, _OTHER = range(7)


_FIXED, _SPAN, _ENC = 0, 1, 2  # how a column's values sit in the data buffer (see _Columns)


def _bin_block_py(lo, hi, kinds, tags, widths, bases, slots, vslots, starts, ends, valid, rel):
    """Rows lo..hi-1 laid out as 0x00 || record in one buffer, column by column (each column's values are
    read in order; the writes stay in a cache-sized block); rel gets each row's offsets in it. The
    loops run column by column, a value written by _value (inlined by the compiler): this is the hot loop."""
    k = kinds.shape[0]
    m = hi - lo
    fixed = 1  # bytes every row takes whatever its values: the 0x00 and the null-free fixed columns
    for c in range(k):
        if kinds[c] == _FIXED and vslots[c] < 0:
            fixed += 1 + widths[c]
    rel[0] = 0
    for i in range(m):
        rel[i + 1] = fixed
    for c in range(k):
        v = vslots[c]
        if kinds[c] == _FIXED and v < 0:
            continue
        head = 1 if kinds[c] == _FIXED else (5 if kinds[c] == _SPAN else 0)
        w = widths[c]
        sl = slots[c]
        for i in range(m):
            if v >= 0 and not valid[v, lo + i]:
                rel[i + 1] += 1
            elif sl < 0:
                rel[i + 1] += head + w
            else:
                rel[i + 1] += head + ends[sl, lo + i] - starts[sl, lo + i]
    for i in range(m):
        rel[i + 1] += rel[i]
    out = np.empty(rel[m], dtype=np.uint8)
    cur = np.empty(m, dtype=np.int64)
    for i in range(m):
        out[rel[i]] = 0
        cur[i] = rel[i] + 1
    dst = out.ctypes.data
    for c in range(k):
        v, sl, w, kind, tag, src = vslots[c], slots[c], widths[c], kinds[c], tags[c], bases[c]
        for i in range(m):
            p = cur[i]
            if v >= 0 and not valid[v, lo + i]:
                out[p] = 0
                cur[i] = p + 1
            elif sl < 0:
                cur[i] = _value(out, p, kind, tag, src + (lo + i) * w, w, dst)
            else:
                a = starts[sl, lo + i]
                cur[i] = _value(out, p, kind, tag, src + a, ends[sl, lo + i] - a, dst)
    return out


def _bin_leaves_py(n, kinds, tags, widths, bases, slots, vslots, starts, ends, valid, out):
    base = out.ctypes.data
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        rel = np.empty(hi - lo + 1, dtype=np.int64)
        buf = _bin_block(lo, hi, kinds, tags, widths, bases, slots, vslots, starts, ends, valid, rel)
        ctx = np.empty(256, dtype=np.uint8)
        for i in range(hi - lo):
            _sha256(ctx.ctypes.data, buf.ctypes.data + rel[i], rel[i + 1] - rel[i], base + 32 * (lo + i))


def _bin_rows_py(n, kinds, tags, widths, bases, slots, vslots, starts, ends, valid):
    """Every row's 0x00 || record in one buffer: (offsets, bytes)."""
    rel = np.empty(n + 1, dtype=np.int64)
    buf = _bin_block(0, n, kinds, tags, widths, bases, slots, vslots, starts, ends, valid, rel)
    return rel, buf


def _bin_lists_py(list_offs, list_valid, kinds, tags, widths, bases, slots, vslots, starts, ends, valid):
    """Each list as tag 5, uint32 LE count, its elements (the one column described); a null list is 0.
    Inline like _bin_block: no call per element."""
    n = list_offs.shape[0] - 1
    v = vslots[0]
    kind = kinds[0]
    tag = tags[0]
    w = widths[0]
    sl = slots[0]
    head = 1 if kind == _FIXED else (5 if kind == _SPAN else 0)
    out_offs = np.empty(n + 1, dtype=np.int64)
    out_offs[0] = 0
    for i in range(n):
        size = 1
        if list_valid[i]:
            size = 5
            for e in range(list_offs[i], list_offs[i + 1]):
                if v >= 0 and not valid[v, e]:
                    size += 1
                elif sl < 0:
                    size += head + w
                else:
                    size += head + ends[sl, e] - starts[sl, e]
        out_offs[i + 1] = out_offs[i] + size
    out = np.empty(out_offs[n], dtype=np.uint8)
    dst = out.ctypes.data
    src = bases[0]
    for i in range(n):
        p = out_offs[i]
        if not list_valid[i]:
            out[p] = 0
            continue
        p = _head(out, p, _LIST, list_offs[i + 1] - list_offs[i])
        for e in range(list_offs[i], list_offs[i + 1]):
            if v >= 0 and not valid[v, e]:
                out[p] = 0
                p += 1
            elif sl < 0:
                p = _value(out, p, kind, tag, src + e * w, w, dst)
            else:
                p = _value(out, p, kind, tag, src + starts[sl, e], ends[sl, e] - starts[sl, e], dst)
    return out_offs, out


def _dict_spans_py(doffs, codes, starts, ends):
    """starts[i], ends[i] = the span of dictionary entry codes[i] (doffs: the dictionary's offsets)."""
    for i in range(codes.shape[0]):
        c = codes[i]
        starts[i] = doffs[c]
        ends[i] = doffs[c + 1]


def _head_py(out, p, tag, count):
    """A tag byte and a uint32 little-endian count (a text's bytes, a list's elements) at out[p:]; the next p."""
    out[p] = tag
    out[p + 1] = count & 255
    out[p + 2] = (count >> 8) & 255
    out[p + 3] = (count >> 16) & 255
    out[p + 4] = (count >> 24) & 255
    return p + 5


def _value_py(out, p, kind, tag, a, size, dst):
    """One non-null value at out[p:] from the size bytes at address a (in its column's buffer): a _FIXED
    value after its tag, a _SPAN value after its tag and length, an _ENC value as it is (encoded whole
    already); the next p. dst: the address of out (a long span is one memcpy, a short one a byte loop)."""
    if kind == _FIXED:
        out[p] = tag
        p += 1
    elif kind == _SPAN:
        p = _head(out, p, tag, size)
    if size <= 16:
        for j in range(size):
            out[p + j] = _load(a + j)
    else:
        _memcpy(dst + p, a, size)
    return p + size


_bin_block = _memcpy = _head = _value = _load = None  # compiled and bound by _bin_kernel()


def _byte_loader():
    """A numba intrinsic: the byte at an address (the columns' buffers are read where Arrow and numpy hold
    them, by address, instead of being copied into one buffer per chunk)."""
    from llvmlite import ir  # heavy: only when the kernels are compiled
    from numba.core import types  # heavy: only when the kernels are compiled
    from numba.extending import intrinsic  # heavy: only when the kernels are compiled

    @intrinsic
    def load(typingctx, addr):
        def codegen(context, builder, signature, args):
            return builder.load(builder.inttoptr(args[0], ir.IntType(8).as_pointer()))

        return types.uint8(types.intp), codegen

    return load


def _bin_kernel(name):
    if "bin_leaves" not in _kernels:
        with _binding:
            if "bin_leaves" not in _kernels:
                _bind_bin_kernels()
    return _kernels[name]


def _bind_bin_kernels() -> None:
    _kernel("rows")
    import llvmlite.binding as llvm  # heavy (numba's compiler): only when the kernels are compiled
    from numba.core import types  # heavy: only when the kernels are compiled

    llvm.load_library_permanently(ctypes.util.find_library("c"))
    globals()["_memcpy"] = types.ExternalFunction("memcpy", types.uintp(types.uintp, types.uintp, types.uintp))
    globals()["_load"] = _byte_loader()
    globals()["_head"] = _njit(_head_py)
    globals()["_value"] = _njit(_value_py)
    globals()["_bin_block"] = _njit(_bin_block_py)
    _kernels["bin_rows"] = _njit(_bin_rows_py)
    _kernels["bin_lists"] = _njit(_bin_lists_py)
    _kernels["dict_spans"] = _njit(_dict_spans_py)
    _kernels["bin_leaves"] = _njit(_bin_leaves_py, parallel=True) if _kernels["leaves"] is not None else None


def _spans(offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return offs[:-1], offs[1:]


def _column(arr: pa.Array):
    """(kind, tag, width, data, (starts, ends) or None, valid or None) of a column for the format-2 kernels:
    a _FIXED column's value i is data[i*width:(i+1)*width]; a _SPAN or _ENC column's is
    data[starts[i]:ends[i]]; valid is None when no value is null. A dictionary of texts (a log column
    read as one, `audit`) is read where it is: value i is its dictionary's text codes[i], not decoded."""
    t = arr.type
    n = len(arr)
    if pa.types.is_dictionary(t):
        d = arr.dictionary
        if (pa.types.is_string(d.type) or pa.types.is_large_string(d.type)) and len(d) and d.null_count == 0:
            valid = _valid(arr) if arr.null_count else None
            codes = arr.indices.fill_null(0) if arr.null_count else arr.indices
            codes = codes.to_numpy(zero_copy_only=False)
            doffs = _arrow_offsets(d, copy=False)
            buf = d.buffers()[2]
            data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
            return _SPAN, _TEXT, 0, data, (None, doffs, codes), valid  # spans filled by _Columns
        return _column(arr.dictionary_decode())
    if pa.types.is_null(t):
        return _FIXED, _NULL, 0, np.zeros(0, np.uint8), None, None
    valid = _valid(arr) if arr.null_count else None
    if arr.null_count and not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_list(t)
                               or pa.types.is_large_list(t)):
        arr = arr.fill_null(False if pa.types.is_boolean(t) else 0)
    if pa.types.is_boolean(t):
        return _FIXED, _BOOL, 1, arr.to_numpy(zero_copy_only=False).astype(np.uint8), None, valid
    big = t == pa.uint64() and (pc.max(arr).as_py() or 0) >= 2 ** 63
    if pa.types.is_integer(t) and not big:
        values = np.ascontiguousarray(arr.to_numpy(zero_copy_only=False).astype("<i8", copy=False))
        return _FIXED, _INT, 8, values.view(np.uint8), None, valid
    if pa.types.is_floating(t):
        values = np.ascontiguousarray(arr.to_numpy(zero_copy_only=False).astype("<f8", copy=False))
        finite = np.isfinite(values)
        if not finite.all():
            valid = finite.astype(np.uint8) if valid is None else valid & finite
        return _FIXED, _FLOAT, 8, values.view(np.uint8), None, valid
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        buf = arr.buffers()[2]
        data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
        return _SPAN, _TEXT, 0, data, _spans(_arrow_offsets(arr, copy=False)), valid
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        child = _Columns([arr.values])
        list_valid = valid if valid is not None else np.ones(n, np.uint8)
        offs, data = _bin_kernel("bin_lists")(_arrow_offsets(arr), list_valid, *child.args())
        return _ENC, _LIST, 0, data, _spans(offs), None  # a null list is encoded as one zero byte already
    # anything else (dates, decimals, structs, binary): its JSON text, value by value (slow, exact)
    texts = [json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str).encode()
             for v in arr.to_pylist()]
    offs, data = _from_texts(texts)
    return _SPAN, _OTHER, 0, data, _spans(offs), valid


class _Columns:
    """Same-length arrays, in the given order, as the format-2 kernels take them: per column its kind,
    tag, width, the address of its data buffer (read in place: `datas` keeps the buffers alive while
    the object lives), row in the offsets matrix (var-width columns only) and row in the validity
    matrix (columns with nulls only)."""

    def __init__(self, arrays):
        self.n = n = len(arrays[0]) if arrays else 0
        k = len(arrays)
        self.kinds = np.empty(k, np.int64)
        self.tags = np.empty(k, np.uint8)
        self.widths = np.zeros(k, np.int64)
        self.bases = np.zeros(k, np.int64)
        self.slots = np.full(k, -1, np.int64)
        self.vslots = np.full(k, -1, np.int64)
        cols = [_column(a) for a in arrays]
        nv = sum(c[4] is not None for c in cols)
        self.starts = np.empty((max(nv, 1), n), np.int64)
        self.ends = np.empty((max(nv, 1), n), np.int64)
        self.valid = np.empty((max(sum(c[5] is not None for c in cols), 1), n), np.uint8)
        s = v = 0
        self.datas = []
        for i, (kind, tag, width, data, offs, valid) in enumerate(cols):
            data = np.ascontiguousarray(data, dtype=np.uint8)
            self.kinds[i], self.tags[i], self.widths[i], self.bases[i] = kind, tag, width, data.ctypes.data
            if offs is not None:
                if offs[0] is None:  # a dictionary's (offsets, codes): each row's span, gathered without the GIL
                    _bin_kernel("dict_spans")(offs[1], offs[2], self.starts[s], self.ends[s])
                else:
                    self.starts[s], self.ends[s] = offs
                self.slots[i], s = s, s + 1
            if valid is not None:
                self.valid[v] = valid
                self.vslots[i], v = v, v + 1
            self.datas.append(data)

    def args(self):
        return (self.kinds, self.tags, self.widths, self.bases, self.slots, self.vslots, self.starts, self.ends,
                self.valid)


def prepare_bin(table: pa.Table | pa.RecordBatch) -> _Columns:
    """The format-2 kernels' arguments for a table, its columns in sorted name order (`.n`, `.args()`)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    arrays = []
    for name in sorted(table.column_names):
        col = table.column(name)
        arrays.append(col.combine_chunks() if col.num_chunks != 1 else col.chunk(0))
    cols = _Columns(arrays)
    cols.n = table.num_rows
    return cols


SMALL_ROWS = 16  # up to this many rows, format-2 records are encoded from the values in Python (a request)
_PACK_F8, _PACK_I8 = struct.Struct("<Bd").pack, struct.Struct("<Bq").pack
_SMALL_INTS = {pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()}
_SMALL_FLOATS = {pa.float32(), pa.float64()}
_SMALL_TEXTS = {pa.string(), pa.large_string()}


@functools.lru_cache(maxsize=256)
def _small_encoder(t: pa.DataType):
    """value -> its format-2 bytes (as _column and the kernels lay it out) for the Arrow types a decision log
    holds; None for any other type (uint64, dates, ...: the general path)."""
    if t in _SMALL_FLOATS:
        return lambda v: b"\x00" if v is None or v - v != 0 else _PACK_F8(_FLOAT, v)  # null, NaN, inf: 0
    if t in _SMALL_INTS:
        return lambda v: b"\x00" if v is None else _PACK_I8(_INT, v)
    if t in _SMALL_TEXTS:
        def text(v):
            if v is None:
                return b"\x00"
            b = v.encode()
            return b"\x04" + len(b).to_bytes(4, "little") + b  # _TEXT
        return text
    if t == pa.bool_():
        return lambda v: b"\x00" if v is None else (b"\x01\x01" if v else b"\x01\x00")
    if t == pa.null():
        return lambda v: b"\x00"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        item = _small_encoder(t.value_type)
        if item is None:
            return None
        return lambda v: (b"\x00" if v is None else
                          b"\x05" + len(v).to_bytes(4, "little") + b"".join([item(x) for x in v]))  # _LIST
    if pa.types.is_dictionary(t):
        return _small_encoder(t.value_type)  # a dictionary's value is its entry, encoded as the entry's type
    return None


def _small_records(table) -> list[bytes] | None:
    """0x00 || format-2 record of each row of a table of at most SMALL_ROWS rows, from its Python values (the
    bytes prepare_bin's kernels lay out: held to them by tests/code/test_merkle.py); None when a column's type
    has no encoder here (or the names are not unique)."""
    if len(set(table.column_names)) != table.num_columns:
        return None
    cols = []
    for _, t, values in sorted(zip(table.column_names, table.schema.types, table.to_pydict().values()),
                               key=lambda c: c[0]):
        enc = _small_encoder(t)
        if enc is None:
            return None
        cols.append([enc(v) for v in values])
    return [b"\x00" + b"".join(vals) for vals in zip(*cols)] if cols else [b"\x00"] * table.num_rows


def prepare_for(table, fmt: str):
    """The hashing kernels' arguments for a table in a leaf format (built with the GIL held). A table of a few
    rows (a served request) in format 2: its records, encoded in Python (~0.3 ms a 70-column row; the
    kernels' arguments take ~0.8 ms to build)."""
    if fmt == FORMAT_BIN:
        if table.num_rows <= SMALL_ROWS:
            small = _small_records(table)
            if small is not None:
                return (FORMAT_BIN, small)
        return (FORMAT_BIN, prepare_bin(table))
    if fmt == FORMAT_JSON:
        return (FORMAT_JSON, prepare(table))
    raise ValueError(f"unknown leaf format {fmt!r} (known: {', '.join(FORMATS)})")


SERIAL_ROWS = 256  # fewer rows than this are hashed in one thread (the same leaves)


def hash_prepared_for(prepared, threads: int = 2) -> np.ndarray:
    """(n, 32) leaf hashes of `prepare_for`'s result; the kernels do not hold the GIL."""
    fmt, cols = prepared
    if fmt == FORMAT_JSON:
        return hash_prepared(cols, threads)
    if isinstance(cols, list):  # a few rows' records (prepare_for)
        sha = hashlib.sha256
        return np.frombuffer(b"".join([sha(r).digest() for r in cols]), dtype=np.uint8).reshape(len(cols), 32)
    n = cols.n
    kernel = _bin_kernel("bin_leaves")
    out = np.empty((n, 32), dtype=np.uint8)
    if not n:
        return out
    if kernel is not None and n >= SERIAL_ROWS:
        kernel(n, *cols.args(), out)
        return out
    # a few rows (a service's micro-batch): the records serially and hashlib, without waking numba's thread pool
    offs, buf = _bin_kernel("bin_rows")(n, *cols.args())
    out[:] = np.frombuffer(_sha_spans(memoryview(buf), offs.tolist()), dtype=np.uint8).reshape(n, 32)
    return out


def leaf_hashes_for(table, fmt: str, threads: int = 2) -> np.ndarray:
    return hash_prepared_for(prepare_for(table, fmt), threads)


def record_bytes(table, fmt: str) -> list[bytes]:
    """Each row's record in a leaf format (its leaf hashes 0x00 + these bytes): JSON text or binary."""
    if fmt == FORMAT_JSON:
        return [r.encode("utf-8") for r in records(table)]
    cols = prepare_bin(table)
    offs, buf = _bin_kernel("bin_rows")(cols.n, *cols.args())
    return [bytes(buf[a + 1:b]) for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]


def decode(record: bytes, columns: list[str]) -> dict:
    """The values of a format-2 record, by column name (the README's proof snippet does the same)."""
    def value(i):
        tag = record[i]
        i += 1
        if tag == _NULL:
            return None, i
        if tag == _BOOL:
            return bool(record[i]), i + 1
        if tag == _INT:
            return int.from_bytes(record[i:i + 8], "little", signed=True), i + 8
        if tag == _FLOAT:
            return float(np.frombuffer(record[i:i + 8], "<f8")[0]), i + 8
        count = int.from_bytes(record[i:i + 4], "little")
        i += 4
        if tag == _LIST:
            out = []
            for _ in range(count):
                v, i = value(i)
                out.append(v)
            return out, i
        if tag in (_TEXT, _OTHER):
            text = record[i:i + count].decode("utf-8")
            return (text if tag == _TEXT else json.loads(text)), i + count
        raise ValueError(f"record byte {i - 5}: unknown tag {tag}")

    out, i = {}, 0
    for name in columns:
        out[name], i = value(i)
    if i != len(record):
        raise ValueError(f"record has {len(record) - i} bytes after its {len(columns)} columns")
    return out
