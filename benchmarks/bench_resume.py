"""What resuming a killed partitioned decide saves: `creditgov decide --engine dask` on a batch split
into Parquet files, run once uninterrupted, then killed (SIGKILL to its process group) after K
partitions were checkpointed and run again. Prints the wall times, the resumed / uninterrupted
ratio, and whether the resumed log is byte-identical; writes benchmarks/results/resume.json.

Needs a registered champion for the spec (make train) and, by default, the simulator's month 17
(make train simulates it). Each run is the whole CLI command: start-up, LocalCluster, model
download, batch hash, pair search, assembly and the audit append (into a temporary audit store).

    .venv/bin/python benchmarks/bench_resume.py [--spec pipelines/behaviour.yaml]
        [--data data/simulated/default/month=17/snapshot.parquet] [--parts 8] [--kill-after 4 7]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(ROOT / ".venv/bin/creditgov")] if (ROOT / ".venv/bin/creditgov").exists() else [
    sys.executable, "-m", "creditgov"]


def _done(out: Path) -> int:
    return sum(1 for p in out.glob(".partial/*/part-*") if p.is_dir() and ".tmp" not in p.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="pipelines/behaviour.yaml")
    ap.add_argument("--data", default="data/simulated/default/month=17/snapshot.parquet")
    ap.add_argument("--as-of", default="2025-05-01")
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--kill-after", type=int, nargs="+", default=[4, 7])
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="creditgov-bench-resume-"))
    frame = pd.read_parquet(ROOT / args.data)
    parts = tmp / "parts"
    parts.mkdir()
    n = len(frame)
    for i in range(args.parts):
        frame.iloc[i * n // args.parts:(i + 1) * n // args.parts].to_parquet(parts / f"part-{i:03d}.parquet",
                                                                             index=False)
    env = {**os.environ, "CREDITGOV_AUDIT_URL": f"sqlite:///{tmp / 'audit.db'}"}

    def cmd(out: Path) -> list[str]:
        return [*CLI, "decide", "--spec", args.spec, "--engine", "dask", "--data", str(parts),
                "--as-of", args.as_of, "--out", str(out)]

    def run(out: Path) -> tuple[float, str]:
        t = time.perf_counter()
        r = subprocess.run(cmd(out), cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"decide failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        return time.perf_counter() - t, r.stdout

    full_s, _ = run(tmp / "full")
    reference = next((tmp / "full").glob("*.parquet")).read_bytes()
    print(f"{n} rows in {args.parts} partitions; uninterrupted run: {full_s:.1f} s")
    results = {"rows": n, "partitions": args.parts, "uninterrupted_s": round(full_s, 2), "resumed": []}
    for k in args.kill_after:
        out = tmp / f"killed-{k}"
        t = time.perf_counter()
        p = subprocess.Popen(cmd(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        while p.poll() is None and _done(out) < k:
            time.sleep(0.02)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        killed_at, done = time.perf_counter() - t, _done(out)
        resumed_s, stdout = run(out)
        identical = next(out.glob("*.parquet")).read_bytes() == reference
        line = next((ln for ln in stdout.splitlines() if "resuming from" in ln), "")
        row = {"killed_after_partitions": done, "killed_at_s": round(killed_at, 2),
               "resumed_s": round(resumed_s, 2), "resumed_over_uninterrupted": round(resumed_s / full_s, 3),
               "said": line.split(": ")[-1], "byte_identical": identical,
               "checkpoints_removed": not (out / ".partial").exists()}
        results["resumed"].append(row)
        print(f"killed after {done} of {args.parts} partitions ({killed_at:.1f} s in): resumed run {resumed_s:.1f} s "
              f"= {resumed_s / full_s:.2f}x the uninterrupted run; byte-identical log: {identical}")
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    dest = ROOT / "benchmarks/results/resume.json"
    dest.write_text(json.dumps(results, indent=1) + "\n")
    print(f"-> {dest}")


if __name__ == "__main__":
    main()
