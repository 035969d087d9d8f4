"""Pseudonymisation of identifiers and personal data: a keyed hash (HMAC-SHA256).

The key comes from CREDITGOV_PSEUDONYM_KEY and is never logged. Without it a fixed
development key is used and every output says so (`pseudonym_key: development`),
so keys made that way are not mistaken for production pseudonyms.

A value is pseudonymised once, where it first leaves the raw input (validation for the
quarantine, the decision log for decided rows): a pseudonym is never keyed again.
"""
from __future__ import annotations

import hashlib
import hmac
import os

import numpy as np
import pandas as pd

from creditgov.data.inputs import numbers

KEY_ENV = "CREDITGOV_PSEUDONYM_KEY"
_DEV_KEY = b"creditgov-development-key-not-for-production"


def key_source() -> str:
    return "environment" if os.environ.get(KEY_ENV) else "development"


def _key() -> bytes:
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else _DEV_KEY


def key_fingerprint() -> str:
    """Which key is in use, without revealing it: a keyed hash of a fixed label (for cache keys)."""
    return hmac.new(_key(), b"creditgov key fingerprint", hashlib.sha256).hexdigest()[:16]


def pseudonymise(values: pd.Series) -> pd.Series:
    """The keyed hash (24 hex digits) of each value's text, None where missing; same index, object dtype.
    One prepared HMAC state is copied per value: millions of identifiers per batch."""
    base = hmac.new(_key(), digestmod=hashlib.sha256)
    out = []
    raw = values.to_numpy(dtype=object)  # (missing as the Series says it: pd.isna of these same values)
    for v, missing in zip(raw.tolist(), pd.isna(raw).tolist()):
        if missing:
            out.append(None)
        else:
            h = base.copy()
            h.update(str(v).encode())
            out.append(h.hexdigest()[:24])
    return pd.Series(np.array(out + [None], dtype=object)[:-1], index=values.index, dtype=object,
                     name=values.name)


GROUP_PREFIX = "group__"  # decision-log columns of the protected features' group labels
MISSING_GROUP = "(missing)"


def band_labels(edges: list[float]) -> list[str]:
    """The labels of the bands `edges` cut a number line into: "<25", "25-39", "40-61", "62+"."""
    def between(a: float, b: float) -> str:
        return f"{a:g}-{b - 1:g}" if float(a).is_integer() and float(b).is_integer() else f"{a:g}-<{b:g}"

    return [f"<{edges[0]:g}"] + [between(a, b) for a, b in zip(edges[:-1], edges[1:])] + [f"{edges[-1]:g}+"]


def group_labels(feature, values: pd.Series) -> pd.Series:
    """A protected feature's values as the group labels the fairness analysis needs, and nothing finer: the
    category, or for a number the band of the catalogue's `group_bands` it falls in (an age of 37 is "25-39");
    "(missing)" where absent. Same index, object dtype."""
    if feature.type == "numeric":
        edges = list(feature.group_bands)
        labels = np.array(band_labels(edges), dtype=object)
        num = numbers(values)
        out = labels[np.searchsorted(np.asarray(edges, dtype="float64"), num, side="right")]
        out[np.isnan(num)] = MISSING_GROUP
        return pd.Series(out, index=values.index, dtype=object, name=values.name)
    raw = values.to_numpy(dtype=object)
    texts = raw.tolist()
    missing = pd.isna(raw).tolist()
    if all(m or type(v) is str for v, m in zip(texts, missing)):  # text categories (the usual case): no Series ops
        out = np.array([MISSING_GROUP if m else v for v, m in zip(texts, missing)] + [None], dtype=object)[:-1]
        return pd.Series(out, index=values.index, dtype=object, name=values.name)
    out = values.astype(object).where(values.notna(), MISSING_GROUP).astype(str).astype(object)
    return out.rename(values.name)
