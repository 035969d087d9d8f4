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
    for v, missing in zip(values.to_numpy(dtype=object).tolist(), pd.isna(values).to_numpy().tolist()):
        if missing:
            out.append(None)
        else:
            h = base.copy()
            h.update(str(v).encode())
            out.append(h.hexdigest()[:24])
    return pd.Series(np.array(out + [None], dtype=object)[:-1], index=values.index, dtype=object,
                     name=values.name)
