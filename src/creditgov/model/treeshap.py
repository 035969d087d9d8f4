"""Fast exact TreeSHAP for XGBoost tree models (path-dependent, as ``pred_contribs`` computes it).

``booster.predict(..., pred_contribs=True)`` runs the classic recursive TreeSHAP per row, which
is the main cost of explaining a portfolio. This module computes the same numbers faster, in the
style of Fast TreeSHAP v2:

For a leaf ``l`` let ``D_l`` be the distinct features on its root path (``d = |D_l|``), and for
``j`` in ``D_l`` let ``a_j(x)`` be 1 when ``x`` follows every edge of the path that splits on ``j``
(missing values take the default direction) and ``b_j`` the product of ``cover(child)/cover(parent)``
over those edges. The tree's game is ``v(S) = sum_l v_l prod_{j in D_l} (a_j if j in S else b_j)``
and its Shapley values depend on ``x`` only through the bit pattern ``A`` of ``a`` over ``D_l``.
With ``G(B) = sum_{S subset of B} |S|!(d-|S|-1)!/d! prod_{j in B minus S} b_j`` and
``P(A) = prod_{j not in A} b_j``::

    phi_k = v_l P(A) (1 - b_k) G(A minus {k})    if k in A
    phi_k = -v_l P(A) G(A)                        otherwise

Per model, a table ``T_l[A, k]`` (``2^d x d``) is precomputed for every leaf. Going one step
further, each small bottom subtree (height <= ``unit_height``, default 2) is merged into one
"unit" whose table is indexed by the pattern bits at the subtree root plus one decision bit per
split inside it, and holds the summed attributions of all its leaves. Explaining a row is then:
evaluate every split once, propagate the pattern bits through the nodes above the units, and do
one table look-up per unit (``|features of the unit|`` additions). If the tables would exceed a
memory budget (deep trees) the unit height is lowered, down to single leaves, and leaves past the
budget are evaluated on the fly in ``O(d^2)`` from the same formula. The per-row work is compiled
with numba, branch-free and vectorised over blocks of rows, in parallel over blocks.

The margin (:meth:`FastTreeShap.margin`) is computed from the same parsed trees: the base margin plus
the float64 sum of the leaf values each row reaches. Leaf values are taken as the float32 numbers the
booster stores (not the shortest decimal its JSON prints), so attributions and margin describe one
model and ``bias + sum(attributions)`` equals the margin to float64 rounding (about 1e-13), where
xgboost's own ``predict`` and ``pred_contribs`` accumulate in float32 and agree only to about 1e-5.

The model is read from the booster's own JSON (``save_raw("json")``) and checked, at construction,
against ``predict`` and ``pred_contribs`` on probe rows built from its split points (``verify=True``), so a
convention this module got wrong surfaces as :class:`UnsupportedModel` rather than as wrong
attributions. :func:`contributions` falls back to ``pred_contribs`` (with a
:class:`FastShapFallbackWarning`) whenever the model is not supported.

Supported: single-output ``gbtree`` boosters (any number of parallel trees), numeric and native
categorical splits, missing values, depth <= 12. Not supported: ``gblinear``, ``dart``,
multi-class / multi-target models, vector-leaf trees, deeper trees.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_DEPTH = 12
# bias + sum(attributions) equals margin() within this (times max(1, |margin|)); checked at construction
ADDITIVITY_ATOL = 1e-9
# entries (float64) of all per-leaf tables together: 2**24 entries = 128 MiB
DEFAULT_TABLE_BUDGET = 1 << 24
_BLOCK = 128  # rows per parallel work item: one tree's nodes and tables stay in cache across a block
_CACHE_SIZE = 8
_VERIFY_ROWS = 48
# bottom subtrees of this height become one table look-up ("unit"), as long as the table index
# (pattern bits at the subtree root + one bit per split inside) has at most _UNIT_BITS bits
DEFAULT_UNIT_HEIGHT = 2
_UNIT_BITS = 10

# margin offset = link(base_score): base_score is stored in the objective's output space
# (binary:logitraw stores it as a margin already); verified against predict() by the self-check
_LOGIT_OBJECTIVES = {"binary:logistic", "reg:logistic"}
_LOG_OBJECTIVES = {"count:poisson", "reg:gamma", "reg:tweedie", "survival:cox", "survival:aft"}
_IDENTITY_OBJECTIVES = {
    "reg:squarederror", "reg:linear", "reg:squaredlogerror", "reg:pseudohubererror",
    "reg:absoluteerror", "reg:quantileerror", "binary:hinge", "binary:logitraw",
    "rank:pairwise", "rank:ndcg", "rank:map",
}


class UnsupportedModel(ValueError):
    """The booster cannot be explained by FastTreeShap (the message says why)."""


class FastShapFallbackWarning(UserWarning):
    """contributions() fell back to xgboost's pred_contribs."""


# --------------------------------------------------------------------------------------------
# numba kernels (cache=True: compiled once per machine into __pycache__, as merkle.py's are; a cold
# process would otherwise spend seconds compiling before its first score)
# --------------------------------------------------------------------------------------------

prange = range  # numba.prange once _jit() has run (numba resolves a kernel's globals when it compiles it)
_jit_lock = threading.Lock()
_jitted = False


def _jit() -> None:
    """Turn the kernels below into numba functions, on first use: numba is heavy to import, and holding
    a model (creditgov.model.credit_model imports this module) must not load it. Helpers are bound before
    the kernels that call them."""
    global prange, _cat_left, _build_leaf_tables, _build_unit_tables, _shap_kernel, _margin_kernel, _jitted
    with _jit_lock:
        if _jitted:
            return
        import numba  # heavy: only when a model is explained

        prange = numba.prange
        _cat_left = numba.njit(cache=True)(_cat_left)
        _build_leaf_tables = numba.njit(cache=True)(_build_leaf_tables)
        _build_unit_tables = numba.njit(cache=True)(_build_unit_tables)
        _shap_kernel = numba.njit(parallel=True, cache=True)(_shap_kernel)
        _margin_kernel = numba.njit(parallel=True, cache=True)(_margin_kernel)
        _jitted = True


def _shapley_weights(max_d: int) -> np.ndarray:
    """W[d, k] = k! (d-k-1)! / d! for 0 <= k < d (zero elsewhere)."""
    w = np.zeros((max_d + 1, max_d + 2))
    for d in range(1, max_d + 1):
        for k in range(d):
            w[d, k] = math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d)
    return w


def _build_leaf_tables(leaf_d, leaf_foff, leaf_b, leaf_v, leaf_toff, W, table):  # pragma: no cover - numba
    """table[toff + A*d + k] = attribution of the leaf to its k-th path feature under pattern A."""
    max_d = W.shape[0] - 1
    nmax = 1 << max_d
    poly = np.zeros((nmax, max_d + 2))  # poly[B] = prod_{j in B} (z + b_j)
    G = np.zeros(nmax)
    Pin = np.zeros(nmax)  # prod_{j in B} b_j
    for l in range(leaf_d.shape[0]):
        to = leaf_toff[l]
        d = leaf_d[l]
        if to < 0 or d == 0:
            continue
        fo = leaf_foff[l]
        v = leaf_v[l]
        n = 1 << d
        full = n - 1
        poly[0, 0] = 1.0
        Pin[0] = 1.0
        G[0] = W[d, 0]
        for B in range(1, n):
            low = B & (-B)
            k = 0
            while (low >> k) != 1:
                k += 1
            prev = B ^ low
            m = 0
            t = prev
            while t:
                m += t & 1
                t >>= 1
            bk = leaf_b[fo + k]
            poly[B, m + 1] = poly[prev, m]
            for i in range(m, 0, -1):
                poly[B, i] = poly[prev, i - 1] + bk * poly[prev, i]
            poly[B, 0] = bk * poly[prev, 0]
            Pin[B] = Pin[prev] * bk
            g = 0.0
            for i in range(m + 2):
                g += W[d, i] * poly[B, i]
            G[B] = g
        for A in range(n):
            pa = v * Pin[full ^ A]  # v * prod of b over the features not in A
            base = to + A * d
            for k in range(d):
                bit = 1 << k
                if A & bit:
                    table[base + k] = pa * (1.0 - leaf_b[fo + k]) * G[A ^ bit]
                else:
                    table[base + k] = -pa * G[A]


def _build_unit_tables(u_bits, u_nint, u_d, u_toff, u_leaf, ul_start, ul_leaf, ul_poff, ul_plen, ul_q, ul_dir,
                       ul_pos, ul_soff, ul_slot, leaf_d, ltab_off, ltab, table):  # pragma: no cover - numba
    """Sum the leaf tables of each multi-leaf unit over (pattern at the unit root, decisions inside)."""
    for u in range(u_bits.shape[0]):
        to = u_toff[u]
        d = u_d[u]
        if to < 0 or d == 0 or u_leaf[u] >= 0:
            continue
        bits = u_bits[u]
        nint = u_nint[u]
        hi = ~((np.int64(1) << bits) - 1)  # features first split inside the unit start as followed
        dmask = (np.int64(1) << nint) - 1
        for code in range(np.int64(1) << (bits + nint)):
            p = (code >> nint) | hi
            dv = code & dmask
            row = to + code * d
            for li in range(ul_start[u], ul_start[u + 1]):
                lf = ul_leaf[li]
                dl = leaf_d[lf]
                if dl == 0:
                    continue
                A = p
                po = ul_poff[li]
                for e in range(ul_plen[li]):
                    if ((dv >> ul_q[po + e]) & 1) != ul_dir[po + e]:
                        A &= ~(np.int64(1) << ul_pos[po + e])
                A &= (np.int64(1) << dl) - 1
                lt = ltab_off[lf] + A * dl
                so = ul_soff[li]
                for k in range(dl):
                    table[row + ul_slot[so + k]] += ltab[lt + k]


def _cat_left(x, default_left, ci, cat_off, cat_nw, cat_words):  # pragma: no cover - numba
    """xgboost's categorical decision: categories in the split's set go right, anything else left."""
    if x != x:
        return default_left
    if x < 0.0:
        return True
    cat = np.int64(x)
    w = cat >> 6
    if w >= cat_nw[ci]:
        return True
    return ((cat_words[cat_off[ci] + w] >> np.uint64(cat & 63)) & np.uint64(1)) == 0


def _shap_kernel(XT, tree_start, top_start, top_nodes, unit_start, n_feat, n_thr, n_left, n_right, n_defl, n_cat,
                 n_pos, cat_off, cat_nw, cat_words, u_slot, u_bits, u_nint, u_node_off, unit_nodes, u_d, u_foff,
                 u_feats, u_toff, u_leaf, leaf_b, leaf_v, leaf_foff, table, W, bias, max_nodes,
                 out):  # pragma: no cover - numba
    n_rows = XT.shape[1]
    n_trees = tree_start.shape[0] - 1
    n_out = out.shape[1]
    max_d = W.shape[0] - 1
    n_blocks = (n_rows + _BLOCK - 1) // _BLOCK
    for blk in prange(n_blocks):
        r0 = blk * _BLOCK
        nb = min(n_rows, r0 + _BLOCK) - r0
        pat = np.empty((max_nodes, _BLOCK), dtype=np.int64)
        idx = np.empty(_BLOCK, dtype=np.int64)
        acc = np.zeros((n_out, _BLOCK))
        c = np.zeros(max_d + 2)
        for t in range(n_trees):
            s = tree_start[t]
            p0 = pat[0]
            for r in range(nb):
                p0[r] = -1  # every bit set: features are followed until an edge says otherwise
            # nodes above the units: evaluate once per row, propagate the pattern to both children
            for j in range(top_start[t], top_start[t + 1]):
                nd = top_nodes[j]
                xs = XT[n_feat[nd], r0:r0 + nb]
                nbit = ~(np.int64(1) << n_pos[nd])
                pp = pat[nd - s]
                pL = pat[n_left[nd] - s]
                pR = pat[n_right[nd] - s]
                dl = n_defl[nd] != 0
                ci = n_cat[nd]
                if ci < 0:
                    thr = n_thr[nd]
                    for r in range(nb):
                        x = xs[r]
                        m = -np.int64((x < thr) | ((x != x) & dl))
                        p = pp[r]
                        pL[r] = p & (nbit | m)
                        pR[r] = p & (nbit | ~m)
                else:
                    for r in range(nb):
                        m = -np.int64(_cat_left(xs[r], dl, ci, cat_off, cat_nw, cat_words))
                        p = pp[r]
                        pL[r] = p & (nbit | m)
                        pR[r] = p & (nbit | ~m)
            # units: index = (pattern at the unit root, decision bits inside the unit)
            for u in range(unit_start[t], unit_start[t + 1]):
                d = u_d[u]
                if d == 0:
                    continue
                nint = u_nint[u]
                mask = (np.int64(1) << u_bits[u]) - 1
                pu = pat[u_slot[u]]
                for r in range(nb):
                    idx[r] = (pu[r] & mask) << nint
                for q in range(nint):
                    nd = unit_nodes[u_node_off[u] + q]
                    xs = XT[n_feat[nd], r0:r0 + nb]
                    dl = n_defl[nd] != 0
                    ci = n_cat[nd]
                    if ci < 0:
                        thr = n_thr[nd]
                        for r in range(nb):
                            x = xs[r]
                            idx[r] |= np.int64((x < thr) | ((x != x) & dl)) << q
                    else:
                        for r in range(nb):
                            idx[r] |= np.int64(_cat_left(xs[r], dl, ci, cat_off, cat_nw, cat_words)) << q
                to = u_toff[u]
                fo = u_foff[u]
                if to >= 0:
                    for k in range(d):
                        a = acc[u_feats[fo + k]]
                        tb = to + k
                        for r in range(nb):
                            a[r] += table[tb + idx[r] * d]
                else:
                    # a single leaf without a table (memory budget): O(d^2) from the same formula
                    lf = u_leaf[u]
                    v = leaf_v[lf]
                    lo = leaf_foff[lf]
                    for r in range(nb):
                        A = idx[r]
                        m = 0
                        c[0] = 1.0
                        P = 1.0
                        for k in range(d):
                            bk = leaf_b[lo + k]
                            if (A >> k) & 1:
                                c[m + 1] = c[m]
                                for i in range(m, 0, -1):
                                    c[i] = c[i - 1] + bk * c[i]
                                c[0] = bk * c[0]
                                m += 1
                            else:
                                P *= bk
                        gA = 0.0
                        for i in range(m + 1):
                            gA += W[d, i] * c[i]
                        for k in range(d):
                            bk = leaf_b[lo + k]
                            if (A >> k) & 1:
                                qh = c[m]
                                sm = W[d, m - 1] * qh
                                for i in range(m - 1, 0, -1):
                                    qh = c[i] - bk * qh
                                    sm += W[d, i - 1] * qh
                                acc[u_feats[fo + k], r] += v * P * (1.0 - bk) * sm
                            else:
                                acc[u_feats[fo + k], r] -= v * P * gA
        for r in range(nb):
            for f in range(n_out - 1):
                out[r0 + r, f] = acc[f, r]
            out[r0 + r, n_out - 1] = bias


def _margin_kernel(XT, tree_start, tree_depth, m_meta, m_thr, m_right, node_v, cat_off, cat_nw, cat_words, offset,
                   out):  # pragma: no cover - numba
    """out[r] = offset + the float64 sum over trees of the leaf value row r reaches (feature-major XT).

    A block of rows descends each tree one level at a time, the child chosen arithmetically (see
    _margin_layout): the rows of a level are independent, so their loads overlap instead of forming one
    row's chain of dependent, mispredicted steps (2x faster than a per-row walk)."""
    n_rows = XT.shape[1]
    n_trees = tree_start.shape[0] - 1
    n_blocks = (n_rows + _BLOCK - 1) // _BLOCK
    for blk in prange(n_blocks):
        r0 = blk * _BLOCK
        nb = min(n_rows, r0 + _BLOCK) - r0
        acc = np.zeros(nb)
        cur = np.empty(nb, dtype=np.int64)
        for t in range(n_trees):
            root = tree_start[t]
            for i in range(nb):
                cur[i] = root
            for _ in range(tree_depth[t]):
                for i in range(nb):
                    nd = cur[i]
                    m = m_meta[nd]
                    x = XT[m & 0xFFFFF, r0 + i]
                    dl = (m >> 20) & 1
                    ci = (m >> 21) - 1
                    if ci < 0:
                        left = np.int64(x < m_thr[nd]) | (np.int64(x != x) & dl)
                    else:
                        left = np.int64(_cat_left(x, dl != 0, ci, cat_off, cat_nw, cat_words))
                    r = m_right[nd]
                    cur[i] = r + left * (nd + 1 - r)
            for i in range(nb):
                acc[i] += node_v[cur[i]]
        for i in range(nb):
            out[r0 + i] = offset + acc[i]  # per row, trees in order: the same sum in any block or thread


# --------------------------------------------------------------------------------------------
# model parsing
# --------------------------------------------------------------------------------------------


@dataclass
class _Compiled:
    """A booster flattened into numpy arrays (each tree's nodes in preorder, trees concatenated)."""

    n_features: int
    feature_names: list | None
    feature_types: list | None
    categories: list  # per feature: None, list[bytes] (string categories) or list[float]
    objective: str
    base_score: float
    base_margin: float | None
    tree_bias: float  # sum over trees of the cover-weighted mean leaf value
    max_depth: int
    n_trees: int
    unit_height: int
    arrays: dict
    split_values: list  # per feature: sorted split thresholds / categories (for probe rows)

    @property
    def bias(self) -> float:
        return self.tree_bias + (self.base_margin or 0.0)


_KERNEL_ARGS = ("tree_start", "top_start", "top_nodes", "unit_start", "n_feat", "n_thr", "n_left", "n_right",
                "n_defl", "n_cat", "n_pos", "cat_off", "cat_nw", "cat_words", "u_slot", "u_bits", "u_nint",
                "u_node_off", "unit_nodes", "u_d", "u_foff", "u_feats", "u_toff", "u_leaf", "leaf_b", "leaf_v",
                "leaf_foff", "table", "W")


_MARGIN_ARGS = ("tree_start", "tree_depth", "m_meta", "m_thr", "m_right", "node_v", "cat_off", "cat_nw",
                "cat_words")


def _floats(text) -> list[float]:
    """base_score is '5E-1' (xgboost < 3) or '[5E-1]' (a vector, xgboost >= 3)."""
    if isinstance(text, (int, float)):
        return [float(text)]
    s = str(text).strip().strip("[]")
    return [float(p) for p in s.split(",") if p.strip()]


def _link(objective: str, base_score: float) -> float | None:
    if objective in _LOGIT_OBJECTIVES:
        if not 0.0 < base_score < 1.0:
            raise UnsupportedModel(f"base_score {base_score} is not a probability for {objective}")
        return math.log(base_score / (1.0 - base_score))
    if objective in _LOG_OBJECTIVES:
        if not base_score > 0.0:
            raise UnsupportedModel(f"base_score {base_score} must be > 0 for {objective}")
        return math.log(base_score)
    if objective in _IDENTITY_OBJECTIVES:
        return base_score
    return None  # unknown: measured from predict(output_margin=True) when verifying


def _stored_categories(model: dict, n_features: int) -> list:
    """Category names xgboost >= 3 keeps per feature (it re-codes input frames by these names)."""
    out: list = [None] * n_features
    cats = model.get("cats")
    if not cats:
        return out
    for i, enc in enumerate(cats.get("enc", [])[:n_features]):
        values = enc.get("values") or []
        if not values:
            continue
        if "offsets" in enc:
            raw = bytes(int(v) & 0xFF for v in values)
            offs = enc["offsets"]
            out[i] = [raw[offs[k]:offs[k + 1]] for k in range(len(offs) - 1)]
        else:
            out[i] = [float(v) for v in values]
    return out


@dataclass
class _Node:
    feats: tuple  # distinct features on the root path above this node, in order of appearance
    bs: tuple  # b_j per feature in feats
    weight: float  # product of cover ratios from the root
    depth: int
    leaf: int = -1  # leaf id, or -1 for a split
    f: int = -1
    pos: int = -1
    left: int = -1  # local preorder index of the children
    right: int = -1
    height: int = 0
    nint: int = 0  # internal nodes in the subtree


def _parse_trees(trees: list, n_features: int):
    """Nodes of every tree in preorder (local indices) plus the flat node and leaf arrays."""
    n_feat, n_thr, n_left, n_right, n_defl, n_cat, n_pos, n_leaf = ([] for _ in range(8))
    tree_depth = []
    cat_off, cat_nw, cat_words = [], [], []
    leaf_d, leaf_foff, leaf_feats, leaf_b, leaf_v = [], [], [], [], []
    tree_start, tree_nodes = [0], []
    tree_bias, max_depth, max_nodes = 0.0, 0, 1
    split_values: list = [set() for _ in range(n_features)]
    for ti, tree in enumerate(trees):
        tp = tree.get("tree_param", {})
        if int(tp.get("size_leaf_vector", "1")) > 1:
            raise UnsupportedModel("vector-leaf (multi-target) trees")
        left, right = tree["left_children"], tree["right_children"]
        sidx, cond, defl = tree["split_indices"], tree["split_conditions"], tree["default_left"]
        cover = tree["sum_hessian"]
        stype = tree.get("split_type") or [0] * len(left)
        cats, segs = tree.get("categories", []), tree.get("categories_segments", [])
        sizes = tree.get("categories_sizes", [])
        node_cats = {int(nid): cats[int(segs[k]):int(segs[k]) + int(sizes[k])]
                     for k, nid in enumerate(tree.get("categories_nodes", []))}
        order, stack = [], [0]
        while stack:
            nid = stack.pop()
            order.append(nid)
            if left[nid] != -1:
                stack.append(right[nid])
                stack.append(left[nid])
        local = {old: k for k, old in enumerate(order)}
        start = len(n_feat)
        depth = 0
        nodes: list[_Node] = [None] * len(order)  # type: ignore[list-item]
        nodes[0] = _Node((), (), 1.0, 0)
        for k, old in enumerate(order):
            nd = nodes[k]
            if left[old] == -1:  # a leaf: split_conditions holds the leaf value
                v = float(np.float32(cond[old]))  # the float32 xgboost holds, not the decimal its JSON prints
                nd.leaf = len(leaf_d)
                leaf_d.append(len(nd.feats))
                leaf_foff.append(len(leaf_feats))
                leaf_feats.extend(nd.feats)
                leaf_b.extend(nd.bs)
                leaf_v.append(v)
                tree_bias += v * nd.weight
                depth = max(depth, nd.depth)
                for a in (n_feat, n_pos, n_defl):
                    a.append(0)
                n_thr.append(0.0)
                n_left.append(-1)
                n_right.append(-1)
                n_cat.append(-1)
                n_leaf.append(nd.leaf)
                continue
            f = int(sidx[old])
            if not 0 <= f < n_features:
                raise UnsupportedModel(f"tree {ti} splits on feature index {f} of {n_features}")
            c_parent = float(cover[old])
            if not c_parent > 0.0:
                raise UnsupportedModel(f"tree {ti} node {old} has cover {c_parent}")
            pos = nd.feats.index(f) if f in nd.feats else len(nd.feats)
            nd.f, nd.pos = f, pos
            nd.left, nd.right = local[left[old]], local[right[old]]
            n_feat.append(f)
            n_leaf.append(-1)
            n_pos.append(pos)
            n_defl.append(int(bool(defl[old])))
            n_left.append(start + nd.left)
            n_right.append(start + nd.right)
            if int(stype[old]) == 1:
                members = [int(c) for c in node_cats.get(old, [])]
                if any(c < 0 for c in members):
                    raise UnsupportedModel(f"tree {ti} node {old} has a negative category")
                nw = (max(members) // 64 + 1) if members else 0
                words = np.zeros(nw, dtype=np.uint64)
                for cc in members:
                    words[cc >> 6] |= np.uint64(1) << np.uint64(cc & 63)
                n_cat.append(len(cat_off))
                cat_off.append(len(cat_words))
                cat_nw.append(nw)
                cat_words.extend(int(w) for w in words)
                n_thr.append(0.0)
                split_values[f].update(members)
            elif int(stype[old]) == 0:
                thr = np.float32(cond[old])
                n_cat.append(-1)
                n_thr.append(thr)
                split_values[f].add(float(thr))
            else:
                raise UnsupportedModel(f"tree {ti} node {old} has split type {stype[old]}")
            if nd.depth + 1 > MAX_DEPTH:
                raise UnsupportedModel(f"tree {ti} is deeper than {MAX_DEPTH}")
            for child in (left[old], right[old]):
                r = float(cover[child]) / c_parent
                if pos < len(nd.feats):
                    cf, cb = nd.feats, nd.bs[:pos] + (nd.bs[pos] * r,) + nd.bs[pos + 1:]
                else:
                    cf, cb = nd.feats + (f,), nd.bs + (r,)
                nodes[local[child]] = _Node(cf, cb, nd.weight * r, nd.depth + 1)
        for nd in reversed(nodes):
            if nd.leaf < 0:
                a, b = nodes[nd.left], nodes[nd.right]
                nd.height = 1 + max(a.height, b.height)
                nd.nint = 1 + a.nint + b.nint
        tree_nodes.append(nodes)
        max_nodes = max(max_nodes, len(order))
        tree_start.append(len(n_feat))
        tree_depth.append(depth)
        max_depth = max(max_depth, depth)
    arrays = {
        "tree_start": np.asarray(tree_start, dtype=np.int64),
        "tree_depth": np.asarray(tree_depth, dtype=np.int64),
        "n_feat": np.asarray(n_feat, dtype=np.int64),
        "n_thr": np.asarray(n_thr, dtype=np.float32),
        "n_left": np.asarray(n_left, dtype=np.int64),
        "n_right": np.asarray(n_right, dtype=np.int64),
        "n_defl": np.asarray(n_defl, dtype=np.uint8),
        "n_cat": np.asarray(n_cat, dtype=np.int64),
        "n_pos": np.asarray(n_pos, dtype=np.int64),
        "n_leaf": np.asarray(n_leaf, dtype=np.int64),  # leaf id of a leaf node, -1 for a split
        "cat_off": np.asarray(cat_off, dtype=np.int64),
        "cat_nw": np.asarray(cat_nw, dtype=np.int64),
        "cat_words": np.asarray(cat_words, dtype=np.uint64),
        "leaf_d": np.asarray(leaf_d, dtype=np.int64),
        "leaf_foff": np.asarray(leaf_foff, dtype=np.int64),
        "leaf_feats": np.asarray(leaf_feats, dtype=np.int64),
        "leaf_b": np.asarray(leaf_b, dtype=np.float64),
        "leaf_v": np.asarray(leaf_v, dtype=np.float64),
    }
    arrays.update(_margin_layout(arrays, n_features))
    return tree_nodes, arrays, tree_bias, max_depth, max_nodes, [sorted(s) for s in split_values]


def _margin_layout(arrays: dict, n_features: int) -> dict:
    """The nodes packed for _margin_kernel: one int64 per node (feature | default-left << 20 | (categorical
    split + 1) << 21), the threshold, the right child; a left child is the next node (preorder). A leaf
    sends every row "right" to itself (threshold -inf, no default), and node_v holds its value."""
    if n_features >= 1 << 20:
        raise UnsupportedModel(f"{n_features} features (at most {1 << 20})")
    leaf = arrays["n_leaf"] >= 0
    internal = np.nonzero(~leaf)[0]
    if not np.array_equal(arrays["n_left"][internal], internal + 1):  # pragma: no cover - preorder by construction
        raise UnsupportedModel("internal error: nodes are not in preorder")
    meta = arrays["n_feat"] | (arrays["n_defl"].astype(np.int64) << 20) | ((arrays["n_cat"] + 1) << 21)
    return {
        "m_meta": np.where(leaf, 0, meta).astype(np.int64),
        "m_thr": np.where(leaf, np.float32(-np.inf), arrays["n_thr"]).astype(np.float32),
        "m_right": np.where(leaf, np.arange(len(leaf), dtype=np.int64), arrays["n_right"]).astype(np.int64),
        "node_v": np.where(leaf, arrays["leaf_v"][np.maximum(arrays["n_leaf"], 0)], 0.0),
    }


def _plan_units(tree_nodes: list, height: int, leaf_d: np.ndarray) -> dict:
    """Split every tree into top nodes (pattern propagation) and units (one table look-up each).

    A unit is a subtree of height <= `height` whose table index (the pattern bits at its root plus
    one decision bit per split inside) has at most _UNIT_BITS bits; a leaf is always a unit.
    """
    top_start, top_nodes, unit_start = [0], [], [0]
    u = {k: [] for k in ("slot", "bits", "nint", "node_off", "d", "foff", "leaf", "size")}
    unit_nodes, u_feats = [], []
    ul = {k: [] for k in ("start", "leaf", "poff", "plen", "soff")}  # start: per unit, into the unit-leaf list
    ul_q, ul_dir, ul_pos, ul_slot = [], [], [], []
    inner_leaves = []
    start = 0
    for nodes in tree_nodes:
        stack = [0]
        tops, units = [], []
        while stack:
            k = stack.pop()
            nd = nodes[k]
            bits = len(nd.feats)
            if nd.leaf >= 0 or (nd.height <= height and bits + nd.nint <= _UNIT_BITS):
                units.append(k)
            else:
                tops.append(k)
                stack.append(nd.right)
                stack.append(nd.left)
        top_nodes.extend(start + k for k in tops)  # preorder: parents before children
        top_start.append(len(top_nodes))
        for k in units:
            nd = nodes[k]
            bits = len(nd.feats)
            ul["start"].append(len(ul["leaf"]))
            u["slot"].append(k)
            u["bits"].append(bits)
            if nd.leaf >= 0:
                u["nint"].append(0)
                u["node_off"].append(len(unit_nodes))
                u["d"].append(bits)
                u["foff"].append(len(u_feats))
                u_feats.extend(nd.feats)
                u["leaf"].append(nd.leaf)
                u["size"].append(bits << bits)
                continue
            # walk the unit's subtree: internal nodes get local decision indices q (preorder)
            internal, leaves = [], []  # leaves: (leaf node, [(q, went_left, pos), ...])
            walk = [(k, [])]
            while walk:
                kk, path = walk.pop()
                n2 = nodes[kk]
                if n2.leaf >= 0:
                    leaves.append((n2, path))
                    continue
                q = len(internal)
                internal.append(start + kk)
                walk.append((n2.right, path + [(q, 0, n2.pos)]))
                walk.append((n2.left, path + [(q, 1, n2.pos)]))
            feats = list(nd.feats)
            for n2, _ in leaves:
                for f in n2.feats:
                    if f not in feats:
                        feats.append(f)
            slot_of = {f: i for i, f in enumerate(feats)}
            u["nint"].append(len(internal))
            u["node_off"].append(len(unit_nodes))
            unit_nodes.extend(internal)
            u["d"].append(len(feats))
            u["foff"].append(len(u_feats))
            u_feats.extend(feats)
            u["leaf"].append(-1)
            u["size"].append(len(feats) << (bits + len(internal)))
            for n2, path in leaves:
                ul["leaf"].append(n2.leaf)
                inner_leaves.append(n2.leaf)
                ul["poff"].append(len(ul_q))
                ul["plen"].append(len(path))
                for q, went_left, pos in path:
                    ul_q.append(q)
                    ul_dir.append(went_left)
                    ul_pos.append(pos)
                ul["soff"].append(len(ul_slot))
                ul_slot.extend(slot_of[f] for f in n2.feats)
        unit_start.append(len(u["slot"]))
        start += len(nodes)
    ul_start = np.asarray(ul["start"] + [len(ul["leaf"])], dtype=np.int64)  # leaf units: empty ranges
    sizes = np.asarray(u["size"], dtype=np.int64)
    inner = np.asarray(inner_leaves, dtype=np.int64)
    inner_size = int((leaf_d[inner] << leaf_d[inner]).sum()) if len(inner) else 0
    i64 = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    return {
        "top_start": i64(top_start), "top_nodes": i64(top_nodes), "unit_start": i64(unit_start),
        "u_slot": i64(u["slot"]), "u_bits": i64(u["bits"]), "u_nint": i64(u["nint"]),
        "u_node_off": i64(u["node_off"]), "unit_nodes": i64(unit_nodes), "u_d": i64(u["d"]),
        "u_foff": i64(u["foff"]), "u_feats": i64(u_feats), "u_leaf": i64(u["leaf"]), "u_size": sizes,
        "ul_start": ul_start, "ul_leaf": i64(ul["leaf"]), "ul_poff": i64(ul["poff"]), "ul_plen": i64(ul["plen"]),
        "ul_q": i64(ul_q), "ul_dir": i64(ul_dir), "ul_pos": i64(ul_pos), "ul_soff": i64(ul["soff"]),
        "ul_slot": i64(ul_slot), "inner_leaves": inner, "memory": int(sizes.sum()) + inner_size,
    }


def _flatten(j: dict, table_budget: int, unit_height: int) -> _Compiled:
    learner = j.get("learner", {})
    gb = learner.get("gradient_booster", {})
    name = gb.get("name")
    if name != "gbtree":
        raise UnsupportedModel(f"booster type '{name}' is not supported (gbtree only)")
    lmp = learner.get("learner_model_param", {})
    num_class = int(lmp.get("num_class", "0"))
    num_target = int(lmp.get("num_target", "1"))
    if num_class > 1 or num_target > 1:
        raise UnsupportedModel(f"multi-output model (num_class={num_class}, num_target={num_target})")
    base = [float(np.float32(b)) for b in _floats(lmp.get("base_score", "0.5"))]  # held as float32, like the leaves
    if len(base) != 1:
        raise UnsupportedModel(f"base_score has {len(base)} entries (multi-output)")
    objective = learner.get("objective", {}).get("name", "")
    n_features = int(lmp.get("num_feature", "0"))
    model = gb.get("model", {})
    trees = model.get("trees", [])
    if any(int(g) != 0 for g in model.get("tree_info", [])):
        raise UnsupportedModel("trees belong to more than one output group")

    tree_nodes, arrays, tree_bias, max_depth, max_nodes, split_values = _parse_trees(trees, n_features)
    leaf_d = arrays["leaf_d"]
    plan = None
    for h in range(max(0, unit_height), 0, -1):
        plan = _plan_units(tree_nodes, h, leaf_d)
        if plan["memory"] <= table_budget:
            used_height = h
            break
        plan = None
    if plan is None:  # units are single leaves; tables for the leaves with the fewest features
        used_height = 0
        plan = _plan_units(tree_nodes, 0, leaf_d)
    sizes = plan.pop("u_size")
    u_toff = np.full(len(sizes), -1, dtype=np.int64)
    if used_height == 0:
        u_dd = plan["u_d"]
        total = 0
        for d in range(MAX_DEPTH + 1):
            sel = np.nonzero(u_dd == d)[0]
            need = int(sizes[sel].sum())
            if total + need > table_budget:
                break
            u_toff[sel] = total + np.concatenate([[0], np.cumsum(sizes[sel])[:-1]]).astype(np.int64)
            total += need
    else:
        u_toff[:] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sizes.sum())
    W = _shapley_weights(MAX_DEPTH)
    table = np.zeros(max(total, 1), dtype=np.float64)
    # leaf units: their leaf table is the unit table
    leaf_toff = np.full(len(leaf_d), -1, dtype=np.int64)
    lu = plan["u_leaf"] >= 0
    leaf_toff[plan["u_leaf"][lu]] = u_toff[lu]
    _jit()
    _build_leaf_tables(leaf_d, arrays["leaf_foff"], arrays["leaf_b"], arrays["leaf_v"], leaf_toff, W, table)
    inner = plan.pop("inner_leaves")
    plan.pop("memory")
    if len(inner):
        ltab_off = np.full(len(leaf_d), -1, dtype=np.int64)
        sz = leaf_d[inner] << leaf_d[inner]
        ltab_off[inner] = np.concatenate([[0], np.cumsum(sz)[:-1]]).astype(np.int64)
        ltab = np.zeros(max(int(sz.sum()), 1))
        _build_leaf_tables(leaf_d, arrays["leaf_foff"], arrays["leaf_b"], arrays["leaf_v"], ltab_off, W, ltab)
        _build_unit_tables(plan["u_bits"], plan["u_nint"], plan["u_d"], u_toff, plan["u_leaf"], plan["ul_start"],
                           plan["ul_leaf"], plan["ul_poff"], plan["ul_plen"], plan["ul_q"], plan["ul_dir"],
                           plan["ul_pos"], plan["ul_soff"], plan["ul_slot"], leaf_d, ltab_off, ltab, table)
    for k in [k for k in plan if k.startswith("ul_")]:
        plan.pop(k)
    arrays.update(plan)
    arrays.update({"u_toff": u_toff, "table": table, "W": W, "max_nodes": max_nodes})
    return _Compiled(
        n_features=n_features,
        feature_names=learner.get("feature_names") or None,
        feature_types=learner.get("feature_types") or None,
        categories=_stored_categories(model, n_features),
        objective=objective,
        base_score=base[0],
        base_margin=_link(objective, base[0]),
        tree_bias=tree_bias,
        max_depth=max_depth,
        n_trees=len(trees),
        unit_height=used_height,
        arrays=arrays,
        split_values=split_values,
    )


def _threaded(kernel, n_rows: int, n_threads: int | None, *args) -> None:
    import numba  # heavy: loaded by _jit(), which every caller has run

    # one block of rows: waking the other threads costs more than the work itself
    threads = 1 if n_rows <= _BLOCK else n_threads
    previous = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(previous)


def _run(comp: _Compiled, X32: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    out = np.empty((X32.shape[0], comp.n_features + 1), dtype=np.float64)
    if X32.shape[0] == 0:
        return out
    a = comp.arrays
    XT = np.ascontiguousarray(X32.T)  # feature-major: one split reads a contiguous run of rows
    _jit()
    _threaded(_shap_kernel, X32.shape[0], n_threads, XT, *(a[k] for k in _KERNEL_ARGS), float(comp.bias),
              a["max_nodes"], out)
    return out


def _run_margin(comp: _Compiled, X32: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    out = np.empty(X32.shape[0], dtype=np.float64)
    if X32.shape[0] == 0:
        return out
    a = comp.arrays
    XT = np.ascontiguousarray(X32.T)  # feature-major, as for _shap_kernel
    _jit()
    _threaded(_margin_kernel, X32.shape[0], n_threads, XT, *(a[k] for k in _MARGIN_ARGS),
              float(comp.base_margin or 0.0), out)
    return out


# --------------------------------------------------------------------------------------------
# self-check against xgboost
# --------------------------------------------------------------------------------------------


def _probe_rows(comp: _Compiled, n: int) -> np.ndarray:
    """Rows that hit split points exactly, just below them, missing values and odd categories."""
    rng = np.random.default_rng(20240607)
    X = np.zeros((n, comp.n_features), dtype=np.float32)
    types = comp.feature_types or ["float"] * comp.n_features
    for f in range(comp.n_features):
        vals = comp.split_values[f]
        is_cat = types[f] == "c"
        for i in range(n):
            u = rng.random()
            if u < 0.15 or not vals:
                X[i, f] = np.nan if (u < 0.15 or rng.random() < 0.5) else 0.0
            elif is_cat:
                pool = list(vals) + [max(vals) + 1, 0]
                X[i, f] = pool[rng.integers(len(pool))]
            else:
                t = np.float32(vals[rng.integers(len(vals))])
                r = rng.random()
                if r < 0.4:
                    X[i, f] = t
                elif r < 0.8:
                    X[i, f] = np.nextafter(t, np.float32(-np.inf))
                else:
                    X[i, f] = np.nextafter(t, np.float32(np.inf))
    return X


def _verify(comp: _Compiled, booster) -> None:
    import xgboost as xgb  # heavy, and loaded already by whoever made the booster

    X = _probe_rows(comp, _VERIFY_ROWS)
    dm = xgb.DMatrix(X, feature_names=comp.feature_names, feature_types=comp.feature_types,
                     enable_categorical=True, missing=np.nan)
    margin = booster.predict(dm, output_margin=True).astype(np.float64)
    ours = _run(comp, X)
    total = ours.sum(axis=1)
    if comp.base_margin is None:
        gap = margin - total
        if float(gap.max() - gap.min()) > 1e-4:
            raise UnsupportedModel(f"objective '{comp.objective}': the margin offset is not constant")
        comp.base_margin = float(np.median(gap))
        ours[:, -1] += comp.base_margin
        total = ours.sum(axis=1)
    scale = max(1.0, float(np.abs(margin).max()))
    err_margin = float(np.abs(total - margin).max())
    if err_margin > 1e-4 * scale:
        raise UnsupportedModel(f"self-check failed: margins differ from predict() by {err_margin:.3g}")
    own = _run_margin(comp, X)
    err_own = float(np.abs(own - margin).max())
    if err_own > 1e-4 * scale:
        raise UnsupportedModel(f"self-check failed: leaf sums differ from predict() by {err_own:.3g}")
    err_add = float(np.abs(total - own).max())
    if err_add > ADDITIVITY_ATOL * scale:  # the tables must add up to the leaf sum, not just to predict()
        raise UnsupportedModel(f"self-check failed: attributions add up to the leaf sums only within {err_add:.3g}")
    ref = booster.predict(dm, pred_contribs=True).astype(np.float64)
    if ref.shape != ours.shape:
        raise UnsupportedModel(f"self-check failed: pred_contribs has shape {ref.shape}, ours {ours.shape}")
    err = float(np.abs(ref - ours).max())
    if err > 1e-4 * scale:
        raise UnsupportedModel(f"self-check failed: attributions differ from pred_contribs by {err:.3g}")


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

_cache: "OrderedDict[tuple, _Compiled | UnsupportedModel]" = OrderedDict()
_cache_lock = threading.Lock()


def _compile(booster, verify: bool, table_budget: int, unit_height: int) -> _Compiled:
    # keyed by the model's content (UBJSON is ~4x cheaper to produce than JSON); JSON only on a miss
    key = (hashlib.sha256(bytes(booster.save_raw("ubj"))).hexdigest(), bool(verify), int(table_budget),
           int(unit_height))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        try:
            try:
                j = json.loads(bytes(booster.save_raw("json")))
            except ValueError as e:  # pragma: no cover - xgboost writes valid JSON
                raise UnsupportedModel(f"cannot parse the booster's JSON: {e}") from e
            hit = _flatten(j, table_budget, unit_height)
            if verify:
                _verify(hit, booster)
            elif hit.base_margin is None:
                raise UnsupportedModel(f"objective '{hit.objective}' has an unknown link (use verify=True)")
        except UnsupportedModel as e:
            hit = e
        with _cache_lock:
            _cache[key] = hit
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(hit, UnsupportedModel):
        raise UnsupportedModel(str(hit))
    return hit


def _xgb_keys(categories) -> list:
    """Category keys as xgboost >= 3 stores them (string offsets count characters, not bytes)."""
    vals = list(categories)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in vals):
        return [float(v) for v in vals]
    strs = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in vals]
    joined = "".join(strs).encode("utf-8")[: sum(len(s) for s in strs)]
    out, o = [], 0
    for s in strs:
        out.append(joined[o:o + len(s)])
        o += len(s)
    return out


class FastTreeShap:
    """Exact path-dependent TreeSHAP of a single-output XGBoost gbtree model.

    ``shap_values(X)`` equals ``booster.predict(DMatrix(X, enable_categorical=True),
    pred_contribs=True)`` (up to float32 rounding in xgboost), in float64; ``margin(X)`` equals
    ``predict(..., output_margin=True)`` the same way, and the row sums of ``shap_values(X)`` equal
    ``margin(X)`` to float64 rounding (within ``ADDITIVITY_ATOL``). The precomputation is cached per
    model content, so constructing this again for the same booster is cheap (one ``save_raw``).
    """

    def __init__(self, booster, *, verify: bool = True, table_budget: int = DEFAULT_TABLE_BUDGET,
                 unit_height: int = DEFAULT_UNIT_HEIGHT):
        self._c = _compile(booster, verify, table_budget, unit_height)
        self._split_points: dict[int, np.ndarray | None] = {}  # split_points per column, once (read-only)

    @property
    def n_features(self) -> int:
        return self._c.n_features

    @property
    def feature_names(self) -> list | None:
        return list(self._c.feature_names) if self._c.feature_names else None

    @property
    def expected_value(self) -> float:
        """The bias column: base margin plus each tree's cover-weighted mean leaf value."""
        return float(self._c.bias)

    def matrix(self, X) -> np.ndarray:
        """The float32 feature matrix xgboost would see for X.

        Columns are matched to the model's feature names (and reordered if needed). pandas
        Categorical columns become their codes (code -1 = missing), re-coded by category name to
        the categories stored in the model, as xgboost >= 3 does. Float columns and numpy input are
        taken as they are, with xgboost's semantics: NaN is missing, and in a categorical feature
        any value not in a split's category set (negative, unseen, out of range) goes left.
        """
        c = self._c
        if isinstance(X, np.ndarray):
            if X.ndim != 2 or X.shape[1] != c.n_features:
                raise ValueError(f"expected a 2-d array with {c.n_features} columns, got shape {X.shape}")
            return np.ascontiguousarray(X, dtype=np.float32)
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a pandas DataFrame or a numpy array, got {type(X).__name__}")
        names = c.feature_names
        if names is not None and list(map(str, X.columns)) != list(names):
            missing = [n for n in names if n not in X.columns]
            if missing:
                raise ValueError(f"X lacks the model's features {missing[:5]}")
            X = X[list(names)]
        if X.shape[1] != c.n_features:
            raise ValueError(f"X has {X.shape[1]} columns, the model {c.n_features}")
        return self._filled(list(X.items()))

    def matrix_of(self, columns: dict) -> np.ndarray:
        """matrix(pd.DataFrame(columns)) of already encoded columns (name -> float64 array or pandas
        Categorical, in the model's order), without building the frame: the same conversion per column."""
        c = self._c
        names = c.feature_names
        if (names is not None and list(columns) != list(names)) or len(columns) != c.n_features:
            return self.matrix(pd.DataFrame(columns))  # the frame route names what does not match
        return self._filled(list(columns.items()))

    def _filled(self, items: list) -> np.ndarray:
        """The float32 matrix of (name, column) pairs in the model's order: a column is a Series, a pandas
        Categorical or a float array (what a Series' to_numpy(float32, na_value=nan) converts: np.asarray)."""
        c = self._c
        n = len(items[0][1]) if items else 0
        M = np.empty((n, c.n_features), dtype=np.float32)
        for f, (name, s) in enumerate(items):  # column f
            if isinstance(s.dtype, pd.CategoricalDtype):
                cat = s.array if isinstance(s, pd.Series) else s
                codes = np.asarray(cat.codes).astype(np.int64)
                stored = c.categories[f]
                if stored is not None:
                    keys = _xgb_keys(cat.categories)
                    if keys != stored[: len(keys)]:
                        index = {k: i for i, k in enumerate(stored)}
                        unknown = [cat.categories[i] for i, k in enumerate(keys) if k not in index]
                        if unknown:
                            raise ValueError(f"column '{name}' has categories {unknown[:3]} "
                                             "not in the training set")
                        remap = np.asarray([index[k] for k in keys] + [-1], dtype=np.int64)
                        codes = remap[codes]  # code -1 stays -1 (remap[-1])
                col = codes.astype(np.float32)
                col[codes < 0] = np.nan
                M[:, f] = col
            else:
                try:
                    if isinstance(s, pd.Series):
                        M[:, f] = s.to_numpy(dtype=np.float32, na_value=np.nan)
                    elif s.dtype.kind == "f":  # what to_numpy does for a float column: no fill, asarray
                        M[:, f] = np.asarray(s, dtype=np.float32)
                    else:
                        M[:, f] = pd.Series(s).to_numpy(dtype=np.float32, na_value=np.nan)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"column '{name}' is not numeric or categorical: {e}") from e
        return M

    def shap_values(self, X, n_threads: int | None = None) -> np.ndarray:
        """Attributions of the margin, shape (n, n_features + 1), last column the bias.

        Laid out like pred_contribs: column j is the model's feature j. `n_threads` defaults to
        numba's thread count (NUMBA_NUM_THREADS / numba.set_num_threads).
        """
        return _run(self._c, self.matrix(X), n_threads)

    def margin(self, X, n_threads: int | None = None) -> np.ndarray:
        """The margin (log-odds for binary:logistic), shape (n,): the base margin plus the float64 sum of
        the leaf values each row reaches. Same input handling as shap_values."""
        return _run_margin(self._c, self.matrix(X), n_threads)

    def split_points(self, j: int) -> np.ndarray | None:
        """The sorted distinct float32 thresholds of the splits on feature column j, or None when a split on it
        is categorical. Two values with as many thresholds <= them (np.searchsorted(..., side="right")), both
        not NaN, go the same way at every split on j (a split sends x left when x < threshold)."""
        if j in self._split_points:
            return self._split_points[j]
        a = self._c.arrays
        on_j = (a["n_leaf"] < 0) & (a["n_feat"] == j)
        points = None
        if not (a["n_cat"][on_j] >= 0).any():
            points = np.unique(a["m_thr"][on_j].astype(np.float32))
            points.flags.writeable = False
        self._split_points[j] = points
        return points


def contributions(booster, X, warn: bool = True) -> np.ndarray:
    """pred_contribs, computed by FastTreeShap when the model allows it (float64).

    Falls back to ``booster.predict(DMatrix(X, enable_categorical=True), pred_contribs=True)``
    with a :class:`FastShapFallbackWarning` naming the reason when the model is unsupported.
    """
    try:
        explainer = FastTreeShap(booster)
    except UnsupportedModel as e:
        import xgboost as xgb  # heavy, and loaded already by whoever made the booster

        if warn:
            warnings.warn(f"FastTreeShap does not support this model ({e}); using xgboost's pred_contribs",
                          FastShapFallbackWarning, stacklevel=2)
        return booster.predict(xgb.DMatrix(X, enable_categorical=True), pred_contribs=True).astype(np.float64)
    return explainer.shap_values(X)


__all__ = ["FastTreeShap", "UnsupportedModel", "FastShapFallbackWarning", "contributions", "MAX_DEPTH",
           "ADDITIVITY_ATOL"]
