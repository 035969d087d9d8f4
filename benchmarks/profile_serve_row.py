"""CPU of one served single-row decision, in process: what `creditgov serve` runs for a request that arrives
alone (Decider.decide_many of one body, its JSON records, and the Parquet bytes of its decision log that the
audit writer appends), repeated over credit_data rows with fresh identifiers.

Run from a trained project (after `creditgov train --spec pipelines/application.yaml --promote ...`):
    PYTHONPATH=src python benchmarks/profile_serve_row.py [--rows 500] [--profile] [--no-parquet]
Prints CPU ms per decision (process time, three repetitions) and the load average; --profile prints the
cProfile listing (cumulative, then tottime) instead."""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from pathlib import Path

from creditgov.data import inputs
from creditgov.jobs import serve
from creditgov.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="pipelines/application.yaml")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-parquet", action="store_true")
    args = ap.parse_args()
    spec = load_spec(Path(args.spec))
    decider = serve.Decider(spec, serve.prepare(spec), "2026-11-30")
    frame = inputs.load(spec).frame.drop(columns=[spec.target.column])
    recs = json.loads(frame.to_json(orient="records"))
    bodies = []
    for i in range(args.rows):
        r = dict(recs[i % len(recs)])
        r[spec.source.id_column] = 1_000_000 + i
        bodies.append({"rows": [r]})

    def one(body):
        out, frames = decider.decide_many([body])
        if isinstance(out[0], Exception):
            raise out[0]
        if not args.no_parquet:
            serve._parquet_bytes(frames[0])

    for b in bodies[:30]:  # warm-up (numba kernels, caches)
        one(b)
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
        for b in bodies:
            one(b)
        pr.disable()
        st = pstats.Stats(pr)
        st.sort_stats("cumulative").print_stats(45)
        st.sort_stats("tottime").print_stats(35)
        return
    reps = []
    for _ in range(3):
        t0 = time.process_time()
        for b in bodies:
            one(b)
        reps.append((time.process_time() - t0) / len(bodies) * 1000)
    print(json.dumps({"cpu_ms_per_row": [round(x, 2) for x in reps], "min": round(min(reps), 2),
                      "parquet": not args.no_parquet, "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
