"""Errors the command line turns into one line and an exit code, never a traceback.

Exit codes (documented in the README):
  1 internal error, 2 usage, 3 spec, 4 input data (critical expectation failed),
  5 quarantine over the spec's share, 6 promotion refused, 7 tracking backend, 8 audit trail
  verification failed or a decision is not in it, 9 model status refused (monitoring said rebuild).
"""
from __future__ import annotations


class CreditGovError(Exception):
    exit_code = 1

    def __init__(self, message: str):
        # one line, whatever the cause carried
        super().__init__(" ".join(str(message).split()))


class UsageError(CreditGovError):
    """A command-line argument that cannot be used (a bad date, an unknown option value)."""

    exit_code = 2


class SpecError(CreditGovError):
    exit_code = 3


class DataError(CreditGovError):
    exit_code = 4


class QuarantineError(CreditGovError):
    exit_code = 5


class PromotionRefused(CreditGovError):
    exit_code = 6


class TrackingError(CreditGovError):
    exit_code = 7


class ModelStatusRefused(CreditGovError):
    """The model version's latest monitoring verdict is `rebuild` and the spec says monitoring.on_rebuild: refuse."""

    exit_code = 9
