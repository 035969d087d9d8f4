"""Monitoring on a Dask cluster: each partition bins its rows on the reference bins, the client sums
the counts, so PSI and CSI come out the same as in one process (monitor.bin_counts, passed in as the
job's `binning`)."""
from __future__ import annotations

from functools import partial, reduce
from operator import add

import numpy as np
import pandas as pd

from creditgov.monitor import drift as mon
from creditgov.cluster import row_ranges
from creditgov.spec import PipelineSpec


def bin_counts(client, frame: pd.DataFrame, p: np.ndarray, profile: dict, partitions: int | None = None):
    """monitor.bin_counts on the cluster: each partition bins its rows on the reference bins and the client
    sums the counts, so PSI / CSI come out the same as in one process (a `monitor.Binning` once the
    client is bound)."""

    k = partitions or max(1, sum(client.nthreads().values()))
    cols = list(profile["features"]) + [c for c in profile.get("segments", {}) if c not in profile["features"]]
    p = np.asarray(p, dtype="float64")
    futs = [client.submit(mon.bin_counts, client.scatter(frame[cols].iloc[a:b]), p[a:b], profile, pure=False)
            for a, b in row_ranges(len(frame), k)]
    return reduce(add, client.gather(futs))


def stability(client, frame: pd.DataFrame, p: np.ndarray, profile: dict, spec: PipelineSpec,
              partitions: int | None = None):
    """monitor.stability with the batch binned on the cluster (see `bin_counts`)."""

    return mon.stability(frame, p, profile, spec, binning=partial(bin_counts, client, partitions=partitions))
