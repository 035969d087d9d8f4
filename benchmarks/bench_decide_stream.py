"""Peak memory and wall time of `decide` on large application batches, streamed in chunks.

    .venv/bin/python benchmarks/bench_decide_stream.py [--rows 1000000 10000000] [--chunk N]
        [--whole] [--workdir DIR] [--keep]

Each batch is a CSV of N application rows resampled (seeded) from modeldata's credit_data, with fresh
unique ids and a few invalid rows spread through it (they are quarantined), written in pieces so the
generator itself stays small. Each run is `creditgov.decision.decide.decide`, what `creditgov decide` runs, in a fresh child process
(imports, reading, validation, scoring, explanations, counterfactuals, the Parquet write and the audit
append to a fresh SQLite trail, end to end): wall seconds, the child's CPU seconds (user + system, all
threads) and peak RSS (getrusage of the children, in MiB), and the 1-minute load average before and after
(the machine may be shared: wall time stretches with the load, CPU seconds much less). `--whole` also runs the batch in one piece (the pre-streaming path: chunk size above
the row count) for comparison; mind the memory it takes (about 13 GB per million rows).

The model is the application spec's @champion of this repository's MLflow store (`make train`), used
read-only from a scratch project (--workdir, default a new temporary directory). Writes
benchmarks/results/decide_stream.json (the runs of this invocation are merged into it by rows and mode).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
AS_OF = "2026-11-01"
SPEC = "pipelines/application.yaml"
RESULTS = REPO / "benchmarks" / "results" / "decide_stream.json"


def say(msg: str) -> None:
    print(f"[bench-stream {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_batch(path: Path, n: int, seed: int = 7, piece: int = 500_000) -> Path:
    """n resampled credit_data rows with unique ids; every 50,000th row made invalid (Age -5)."""
    from creditgov import env
    from creditgov.data import inputs
    from creditgov.spec import load_spec

    env.apply()
    base = inputs.load(load_spec(REPO / SPEC)).frame
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for start in range(0, n, piece):
            k = min(piece, n - start)
            frame = base.iloc[rng.integers(0, len(base), k)].reset_index(drop=True)
            frame["rownames"] = [f"a{start + i}" for i in range(k)]
            bad = np.arange((-start) % 50_000, k, 50_000)
            frame.loc[bad, "Age"] = -5
            frame.to_csv(fh, index=False, header=start == 0)
    return path


CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from creditgov import env; env.apply()
from creditgov.spec import load_spec
from creditgov.decision.decide import decide
r = decide(load_spec({spec!r}), {data!r}, as_of={as_of!r}, out_dir={out!r}, log=lambda m: None, chunk_rows={chunk})
print(json.dumps({{"seconds": time.perf_counter() - t, "rows": r.rows_in, "decided": r.rows_decided,
                  "quarantined": r.rows_quarantined, "chunks": r.chunks, "path": str(r.path),
                  "actions": r.action_counts}}))
"""


def run_child(work: Path, batch: Path, chunk: int, env: dict) -> dict:
    code = CHILD.format(spec=SPEC, data=str(batch), as_of=AS_OF, out=str(work / f"decisions-{chunk}"), chunk=chunk)
    store = work / f"audit-{chunk}.db"  # a fresh trail: the log is appended, not found already recorded
    for f in work.glob(f"audit-{chunk}.db*"):
        f.unlink()
    env = dict(env, CREDITGOV_AUDIT_URL=f"sqlite:///{store}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run([PY, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - (before.ru_utime + before.ru_stime)
    peak, before = after.ru_maxrss, before.ru_maxrss
    if proc.returncode != 0:
        raise RuntimeError(f"decide failed ({proc.returncode}): {proc.stderr[-3000:]}")
    if peak <= before:  # ru_maxrss of children is the largest child so far: run each in a fresh bench process
        say("warning: an earlier child had a larger peak; this run's peak is not known exactly")
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    out.update(wall_seconds=round(wall, 1), cpu_seconds=round(cpu, 1), peak_rss_mib=round(peak / 1024),
               chunk_rows=chunk, load_average_1min=[round(load, 1), round(os.getloadavg()[0], 1)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--chunk", type=int, default=None, help="rows per chunk (default: decide's default)")
    ap.add_argument("--whole", action="store_true", help="also decide each batch in one piece")
    ap.add_argument("--workdir", help="scratch project (default: a new temporary directory, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch project")
    args = ap.parse_args()

    from creditgov.data import inputs as cg_data
    from creditgov.governance import registry

    chunk = args.chunk or cg_data.chunk_rows()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="creditgov-bench-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    for d in ("pipelines", "expectations"):  # this repository's, fresh
        shutil.rmtree(work / d, ignore_errors=True)
        shutil.copytree(REPO / d, work / d)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_REGISTRY_URI", "CREDITGOV_CHUNK_ROWS")}
    env["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI") or registry.default_uri(REPO)
    env.setdefault("DO_NOT_TRACK", "1")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    runs = {(r["rows"], r["mode"]): r for r in results.get("runs", [])}
    try:
        for n in args.rows:
            batch = work / f"batch-{n}.csv"
            if not batch.exists():
                say(f"writing {n:,} rows to {batch}")
                make_batch(batch, n)
            modes = [("streamed", chunk)] + ([("whole", n + 1)] if args.whole else [])
            for mode, size in modes:
                say(f"decide {n:,} rows, {mode} (chunk {size:,})")
                # a fresh interpreter per run, so that ru_maxrss of the children is this run's own peak
                code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
                        f"import bench_decide_stream as b; from pathlib import Path; "
                        f"print(json.dumps(b.run_child(Path({str(work)!r}), Path({str(batch)!r}), {size}, "
                        f"{env!r})))")
                proc = subprocess.run([PY, "-c", code], capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-3000:])
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r.update(rows=n, mode=mode, mib_per_million_rows=round(r["peak_rss_mib"] / (n / 1e6)))
                r.pop("path", None)
                say(f"  {r['rows']:,} rows in {r['wall_seconds']} s ({r['cpu_seconds']} CPU-s, load "
                    f"{r['load_average_1min']}), peak RSS {r['peak_rss_mib']:,} MiB ({r['chunks']} chunks)")
                runs[(n, mode)] = r
                results = {"machine": f"{platform.machine()} {os.cpu_count()} cores, "
                                      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
                           "python": platform.python_version(),
                           "target": "10M rows: peak RSS <= 4 GB; 1M rows end to end < 120 s",
                           "runs": sorted(runs.values(), key=lambda r: (r["rows"], r["mode"]))}
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(results, indent=1) + "\n")
            for _, size in modes:
                shutil.rmtree(work / f"decisions-{size}", ignore_errors=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
