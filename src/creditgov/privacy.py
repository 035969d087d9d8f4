"""Pseudonymisation of identifiers and personal data: a keyed hash (HMAC-SHA256).

The key comes from CREDITGOV_PSEUDONYM_KEY and is never logged. Without it a fixed
development key is used and every output says so (`pseudonym_key: development`),
so keys made that way are not mistaken for production pseudonyms.
"""
from __future__ import annotations

import hashlib
import hmac
import os

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
    key = _key()
    return values.map(lambda v: None if pd.isna(v) else
                      hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()[:24])
