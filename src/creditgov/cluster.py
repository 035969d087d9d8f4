"""Dask clusters for both engines (decision and monitoring): the client, and row ranges of a batch."""
from __future__ import annotations

import os

import numpy as np

from creditgov.errors import SpecError


def client_for(scheduler: str | None = None, workers: int | None = None, processes: bool = True):
    """A dask.distributed Client: on `scheduler` (an address) or on a new LocalCluster."""
    try:
        from distributed import Client, LocalCluster  # heavy: only for --engine dask
    except ImportError:  # pragma: no cover - a dependency of creditgov
        raise SpecError("--engine dask needs dask[distributed] (pip install 'dask[distributed]')") from None
    if scheduler:
        return Client(scheduler)
    n = workers or os.cpu_count() or 1
    # no dashboard; the scheduler's HTTP endpoints (health, metrics) would still bind port 8787 on every
    # interface: a random port of the loopback instead (no clash between two runs, nothing reachable outside)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=None,
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    return Client(cluster)


def row_ranges(n: int, k: int) -> list[tuple[int, int]]:
    k = max(1, min(k, n or 1))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def close_client(client) -> None:
    """Close a client and, when it runs on a LocalCluster made for it, that cluster too."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
