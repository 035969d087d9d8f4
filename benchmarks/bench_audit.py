"""The audit trail's figures beside its peer, in one run (issue 11).

    .venv/bin/python benchmarks/bench_audit.py [--rows N] [--log FILE]       (make bench-audit)

Ours: `audit.record_log` (leaf hashes of every decision record, the unique-keyed index, the sealed
batch entry) and `audit.verify` (every leaf recomputed from the log and compared with the index and
the root), each in a fresh process, with its peak RSS; the store's bytes per decision. The peer is
the design it replaced, the usual way to chain records: one store row per decision holding its full
JSON, each hashed with the previous one (json.dumps + SHA-256 + insert), measured on the same rows
(capped at 300,000: its rate is flat in N).

The log is --log, or a log of N decisions made from the credit_data decisions of the application
@champion of the project this runs from (`make train`): that log tiled to N rows with fresh decision
ids. Writes benchmarks/results/audit.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
PEER_CAP = 300_000


def say(msg: str) -> None:
    print(f"[bench-audit {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _child(code: str, cwd: Path, env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = subprocess.run([PY, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return wall, json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])


def make_log(n: int, work: Path) -> Path:
    """credit_data decided by the application @champion, tiled to n rows with fresh decision ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{REPO / 'mlflow.db'}")
    out = work / "seed"
    r = subprocess.run([PY, "-m", "creditgov", "decide", "--spec", str(REPO / "pipelines/application.yaml"),
                        "--as-of", "2026-01-01", "--out", str(out)], cwd=REPO, env=dict(
                            env, CREDITGOV_AUDIT_URL=f"sqlite:///{work / 'seed-audit.db'}"),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench-audit needs the application @champion (make train): {r.stderr.strip()}")
    seed = pq.read_table(next(out.glob("*.parquet")))
    path = work / "decisions" / f"bench-{n}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    done = 0
    while done < n:  # a row group at a time: the tiled log never sits in memory whole
        m = min(1_048_576, n - done)
        reps = -(-m // seed.num_rows)
        t = pa.concat_tables([seed] * reps).slice(0, m)
        ids = [hashlib.sha256(str(done + i).encode()).hexdigest()[:32] for i in range(m)]
        t = t.set_column(t.column_names.index("decision_id"), "decision_id", pa.array(ids))
        t = t.set_column(t.column_names.index("row_number"), "row_number",
                         pa.array(range(done + 1, done + m + 1), pa.int64()))
        writer = writer or pq.ParquetWriter(path, t.schema, compression="zstd")
        writer.write_table(t)
        done += m
    writer.close()
    return path


def peer(log: Path, work: Path, cap: int) -> dict:
    """One store row per decision with its full JSON, chained (the design this replaced)."""
    import pyarrow.parquet as pq

    db = work / "peer.db"
    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, record_id TEXT, payload TEXT, prev TEXT, hash TEXT)")
    con.execute("CREATE INDEX records_id ON records (record_id)")
    t0 = time.perf_counter()
    c0 = time.process_time()
    seq, prev, n = 0, "0" * 64, 0
    for batch in pq.ParquetFile(log).iter_batches(batch_size=65_536):
        rows = []
        for rec in batch.to_pylist():
            if n >= cap:
                break
            seq += 1
            body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
            h = hashlib.sha256(f"{seq}\x1f{rec['decision_id']}\x1f{body}\x1f{prev}".encode()).hexdigest()
            rows.append((seq, rec["decision_id"], body, prev, h))
            prev, n = h, n + 1
        con.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
        con.commit()
        if n >= cap:
            break
    append_s = time.perf_counter() - t0
    append_cpu = time.process_time() - c0
    t0 = time.perf_counter()
    prev = "0" * 64
    for s, rid, body, p, h in con.execute("SELECT * FROM records ORDER BY seq"):
        ok = p == prev and hashlib.sha256(f"{s}\x1f{rid}\x1f{body}\x1f{p}".encode()).hexdigest() == h
        json.loads(body)
        prev = h
        assert ok
    verify_s = time.perf_counter() - t0
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return {"rows": n, "append_per_s": n / append_s, "append_cpu_seconds_per_million": append_cpu * 1e6 / n,
            "verify_per_s": n / verify_s,
            "bytes_per_decision": db.stat().st_size / n}


def ours(log: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CREDITGOV_AUDIT_URL"}
    store = work / "ours"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir()
    code = f"""
import json, time, resource
from creditgov import env; env.apply()
from creditgov.governance import audit
c = resource.getrusage(resource.RUSAGE_SELF); c = c.ru_utime + c.ru_stime
t = time.perf_counter(); a = audit.record_log({str(log)!r}); s = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": s, "n": a.tree_size, "inserted": a.inserted, "cpu": u.ru_utime + u.ru_stime - c,
                  "rss_mb": u.ru_maxrss / 1024}}))
"""
    _, app = _child(code, store, env)
    # the same append in a process that has loaded its hashing kernels first (numba's cached machine code and
    # OpenSSL, ~0.5 s once per process), as a running service or a decide run has: the steady rate
    warm_store = work / "ours-warm"
    shutil.rmtree(warm_store, ignore_errors=True)
    warm_store.mkdir()
    warm = code.replace("c = resource.getrusage", "import pyarrow.parquet as pq\nfrom creditgov.governance import "
                        "merkle\nmerkle.leaf_hashes_for(pq.ParquetFile(" + repr(str(log)) + ").read_row_group(0)"
                        ".slice(0, 100), merkle.FORMAT_BIN)\nc = resource.getrusage", 1)
    _, app_warm = _child(warm, warm_store, env)
    shutil.rmtree(warm_store, ignore_errors=True)
    code = f"""
import json, time, resource
from creditgov import env; env.apply()
from creditgov.governance import audit
c = resource.getrusage(resource.RUSAGE_SELF); c = c.ru_utime + c.ru_stime
t = time.perf_counter(); r = audit.verify(scan=[]); s = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": s, "ok": r.ok, "decisions": r.decisions, "problems": r.problems[:3],
                  "cpu": u.ru_utime + u.ru_stime - c, "rss_mb": u.ru_maxrss / 1024}}))
"""
    _, ver = _child(code, store, env)
    con = sqlite3.connect(store / "audit.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    size = sum(p.stat().st_size for p in store.glob("audit.db*"))
    assert ver["ok"] and ver["decisions"] == app["n"] == app["inserted"], ver
    return {"rows": app["n"], "append_per_s": app["n"] / app["seconds"], "append_seconds": app["seconds"],
            "append_warm_per_s": app_warm["n"] / app_warm["seconds"], "append_warm_seconds": app_warm["seconds"],
            "append_warm_cpu_seconds": app_warm["cpu"],
            "append_cpu_seconds": app["cpu"], "append_rss_mb": app["rss_mb"],
            "verify_per_s": ver["decisions"] / ver["seconds"], "verify_seconds": ver["seconds"],
            "verify_cpu_seconds": ver["cpu"], "verify_rss_mb": ver["rss_mb"], "bytes_per_decision": size / app["n"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--log", help="an existing decision log (default: credit_data decisions tiled to --rows)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "audit.json"))
    args = ap.parse_args()
    from creditgov import env

    env.apply()
    work = Path(tempfile.mkdtemp(prefix="creditgov-bench-audit-"))
    try:
        log = Path(args.log) if args.log else make_log(args.rows, work)
        say(f"log {log.name}: {log.stat().st_size / 1e6:,.0f} MB")
        o = ours(log, work)
        say(f"ours: append {o['append_per_s']:,.0f}/s (kernels loaded first: {o['append_warm_per_s']:,.0f}/s), verify {o['verify_per_s']:,.0f}/s, "
            f"{o['bytes_per_decision']:.0f} B/decision")
        p = peer(log, work, PEER_CAP)
        say(f"peer: append {p['append_per_s']:,.0f}/s, verify {p['verify_per_s']:,.0f}/s, "
            f"{p['bytes_per_decision']:.0f} B/decision on {p['rows']:,} rows")
        res = {"rows": o["rows"], "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
               "ours": o, "peer": {"design": "one chained JSON row per decision (creditgov's first audit store)", **p},
               "ratios": {"append": round(o["append_per_s"] / p["append_per_s"], 1),
                          "verify": round(o["verify_per_s"] / p["verify_per_s"], 1),
                          "bytes": round(p["bytes_per_decision"] / o["bytes_per_decision"], 1)},
               "append_cpu_seconds_per_million": {"ours": round(o["append_cpu_seconds"] * 1e6 / o["rows"], 2),
                                                  "peer": round(p["append_cpu_seconds_per_million"], 2)},
               "targets": {"bytes_per_decision <= 200": o["bytes_per_decision"] <= 200,
                           "append >= 200k/s": o["append_per_s"] >= 200_000,
                           "append >= 200k/s, kernels loaded first": o["append_warm_per_s"] >= 200_000,
                           "verify >= 200k/s": o["verify_per_s"] >= 200_000}}
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(res, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
