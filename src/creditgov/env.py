"""Process settings every command applies before importing a heavy library.

Telemetry off everywhere (these machines have no network, and a blocked call must
never stall a run), progress bars off, and bounded MLflow HTTP retries so a down
tracking server fails fast instead of hanging.
"""
from __future__ import annotations

import os
import sys

_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "GX_ANALYTICS_ENABLED": "False",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "TQDM_DISABLE": "1",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    # numba's parallel kernels (TreeSHAP, the audit's hashing) run on OpenMP, whose idle threads otherwise spin
    # after every parallel region: on a shared 2-core machine that burnt 10x the CPU of the Merkle root itself
    # (1.8 against 0.17 CPU-s per million decisions) and took it from the other processes
    "OMP_WAIT_POLICY": "PASSIVE",
}


# Optional imports that nothing in creditgov uses and that cost more than a second each at start-up.
# rfc3987_syntax (pulled in by jupyter-events' jsonschema[format-nongpl]) compiles an Earley grammar when
# jsonschema is imported, which Great Expectations and altair do: 1.2-1.4 s of every command. jsonschema then
# skips the "iri" format checks, which no schema creditgov validates uses.
_UNUSED_OPTIONAL = ("rfc3987_syntax",)


def apply() -> None:
    """Set the defaults without overriding anything the user set; skip unused optional imports."""
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in _UNUSED_OPTIONAL:
        sys.modules.setdefault(name, None)  # `import name` now raises ImportError, as if not installed
