"""CPU of one served single-row decision, in process: what `creditgov serve` runs for a request that arrives
alone (Decider.decide_many of one body, its JSON records, and what the audit writer does before the answer),
repeated over credit_data rows with fresh identifiers.

--log parquet (the default; --merge-delay 0): the Parquet bytes of its decision log (the SQL append is not
included). --log journal (the default --merge-delay 1): what a request pays before its answer with the decision
journal: the log frame as an Arrow table (_arrow_table), its record hashes (Merkle leaves), the IPC frame, and
one write + fdatasync to a journal segment in a temporary folder of the project (its disk, not a tmpfs); the
Parquet log and the SQL append are the sealer's, later, for many requests at once. --log none: the decision
and its records only.

Run from a trained project (after `creditgov train --spec pipelines/application.yaml --promote ...`):
    PYTHONPATH=src python benchmarks/profile_serve_row.py [--rows 500] [--profile] [--log parquet|journal|none]
Prints CPU ms per decision (process time, three repetitions), the wall ms per decision (the fdatasync of the
journal is wall time, not CPU) and the load average; --profile prints the cProfile listing (cumulative, then
tottime) instead; --by-action times each decision (thread time, best of three passes) and summarises them by
the decision's action (approve, review, decline: a decline also runs the counterfactual search)."""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np

from creditgov.data import inputs
from creditgov.governance import journal, merkle
from creditgov.jobs import serve
from creditgov.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="pipelines/application.yaml")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-parquet", action="store_true", help="the same as --log none")
    ap.add_argument("--log", choices=("parquet", "journal", "none"), default="parquet")
    ap.add_argument("--by-action", action="store_true", help="CPU ms of each decision (thread time, best of three "
                    "passes), summarised by the decision's action: mean, p50, p90, p99, max")
    args = ap.parse_args()
    mode = "none" if args.no_parquet else args.log
    tmp = tempfile.TemporaryDirectory(dir=".")  # the project's disk, where decisions/served is (not a tmpfs)
    segment = journal.Segment.create(tmp.name, "profile") if mode == "journal" else None
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
        one.action = out[0].records[0]["action"]
        if mode == "parquet":
            serve._parquet_bytes(frames[0])
        elif mode == "journal":  # as AuditWriter._journal_append does for a micro-batch of one request
            table = serve._arrow_table(frames[0])
            merkle.hash_prepared_for(merkle.prepare_for(table, merkle.LEAF_FORMAT))
            segment.append([journal.frame_bytes(table)], len(frames[0]), frames[0]["decision_id"].tolist())

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
    if args.by_action:
        each, actions = np.full((3, len(bodies)), np.inf), []
        for rep in range(3):
            for i, b in enumerate(bodies):
                t0 = time.thread_time()
                one(b)
                each[rep, i] = (time.thread_time() - t0) * 1000
                if rep == 0:
                    actions.append(one.action)
        best, actions = each.min(axis=0), np.array(actions, dtype=object)
        summary = {}
        for a in [*sorted(set(actions.tolist())), "all"]:
            v = best if a == "all" else best[actions == a]
            summary[a] = {"rows": int(len(v)), "mean": round(float(v.mean()), 2),
                          **{f"p{q}": round(float(np.percentile(v, q)), 2) for q in (50, 90, 99)},
                          "max": round(float(v.max()), 2)}
        print(json.dumps({"cpu_ms_by_action": summary, "log": mode,
                          "load_average": [round(x, 2) for x in os.getloadavg()]}))
        return
    reps, walls = [], []
    for _ in range(3):
        t0, w0 = time.process_time(), time.perf_counter()
        for b in bodies:
            one(b)
        reps.append((time.process_time() - t0) / len(bodies) * 1000)
        walls.append((time.perf_counter() - w0) / len(bodies) * 1000)
    if segment is not None:
        segment.delete()
    print(json.dumps({"cpu_ms_per_row": [round(x, 2) for x in reps], "min": round(min(reps), 2),
                      "wall_ms_per_row_min": round(min(walls), 2), "log": mode,
                      "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
