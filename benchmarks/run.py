"""creditgov's benchmark suite: each step timed beside a peer doing the same work, in one run.

    .venv/bin/python benchmarks/run.py [--quick] [--workdir DIR]      (make bench / make bench-quick)

Steps (N = 1,000,000 rows, or 100,000 with --quick):

* simulator   `simulate` of N accounts x 24 months in a child process: time and its peak RSS
* training    run_training of the behaviour spec (the `make train` job) on the default scenario: rows/s
* explanation CreditModel.contributions (fastshap) on N rows vs xgboost pred_contribs and
              shap.TreeExplainer on a subsample (extrapolated as rows/s); max |difference|
* decide      decide + explain + log of the N-row month-24 snapshot, in a fresh process (imports and
              compilation included); and the same with --engine dask on a LocalCluster, byte-compared
* audit       the decide step's log into the audit trail (append) and `audit verify`, beside one chained
              JSON row per decision (benchmarks/bench_audit.py); bytes per decision
* drift       what `creditgov monitor` does (reference profile, PSI/CSI on the full batch, Evidently on
              capped samples) vs Evidently's DataDriftPreset on the full N vs N batches
* validation  the GX suite on the N-row batch vs the same row rules in plain pandas

The behaviour model is the registry's @champion of the project this runs from (what `make train`
made) when there is one, else the model the training step registers (explanation: a 300-tree
depth-5 model then). Everything else happens in a scratch project (--workdir, default a new
temporary directory). Prints a table and writes benchmarks/results/bench[-quick].json.
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
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
AS_OF = "2026-11-01"
BEHAVIOUR = "pipelines/behaviour.yaml"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child(code: str, env: dict | None = None, cwd: Path | None = None) -> tuple[float, dict]:
    """Run python code in a fresh process; (wall seconds, the JSON it printed last)."""
    t0 = time.perf_counter()
    proc = subprocess.run([PY, "-c", code], cwd=cwd, env=env or dict(os.environ), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return wall, (json.loads(lines[-1]) if lines else {})


def row(step, ours_rate, peer_rate=None, peer=None, note="", target=None, met=None, **extra) -> dict:
    return {"step": step, "ours_rows_per_s": None if ours_rate is None else round(ours_rate),
            "peer": peer, "peer_rows_per_s": None if peer_rate is None else round(peer_rate),
            "ratio": None if not (ours_rate and peer_rate) else round(ours_rate / peer_rate, 1),
            "target": target, "met": met, "note": note, **extra}


# --------------------------------------------------------------------------- steps


def bench_simulator(work: Path, n: int) -> tuple[dict, Path]:
    out = work / "data" / "sim"
    code = f"""
import json, resource, time
from creditgov import env; env.apply()
from creditgov.data.simulate import load_scenario, simulate
scn = load_scenario({str(REPO / 'pipelines/scenarios/default.yaml')!r}, accounts={n}, months=24)
t = time.perf_counter()
r = simulate(scn, {str(out)!r}, log=lambda m: None)
print(json.dumps({{"seconds": time.perf_counter() - t, "rows": r.snapshot_rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    wall, res = child(code)
    r = row("simulator", res["rows"] / res["seconds"], note=f"{n:,} accounts x 24 months = {res['rows']:,} "
            f"snapshot rows in {res['seconds']:.0f} s, peak RSS {res['peak_rss_mb']:.0f} MiB (streamed by month)",
            seconds=round(res["seconds"], 1), peak_rss_mb=round(res["peak_rss_mb"]), rows=res["rows"],
            target="bounded memory, minutes", met=res["seconds"] < 600)
    return r, out


def bench_training(work: Path, quick: bool) -> dict:
    from creditgov.jobs import training
    from creditgov.governance import promote
    from creditgov.data import simulate
    from creditgov.governance import registry
    from creditgov.spec import load_spec

    spec = load_spec(BEHAVIOUR)
    simulate.simulate(simulate.load_scenario(spec.source.scenario), spec.source.path, log=lambda m: None)
    rounds = 60 if quick else None
    t = time.perf_counter()
    res = training.run_training(spec, BEHAVIOUR, n_estimators=rounds, log=lambda m: None)
    secs = time.perf_counter() - t
    rows = int(res.card_json["data"]["rows_clean"])
    try:
        promote.promote(spec, "benchmark", res.version)
    except Exception:  # a gate refused: the benchmark still needs a champion to decide with
        registry.configure()
        registry.client().set_registered_model_alias(spec.registry.model_name, "champion", res.version)
    return row("training", rows / secs, note=f"run_training (validate, fit, CV, scorecard, evaluate, register) on "
               f"{rows:,} rows in {secs:.0f} s" + (" (60 rounds)" if quick else ""), seconds=round(secs, 1),
               rows=rows)


def _main_champion():
    """The behaviour @champion in the project's own registry (REPO/mlflow.db), or None."""
    from creditgov.governance import registry

    uri = f"sqlite:///{REPO / 'mlflow.db'}"
    if not (REPO / "mlflow.db").exists():
        return None, None
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        registry.configure()
        model, version, _ = registry.load_registered("credit-behaviour-pd")
        return model, uri
    except Exception:
        return None, None
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
        registry.configure()


def _model_300x5(spec, frame):
    import xgboost as xgb

    from creditgov.model import train
    from creditgov.model.credit_model import CreditModel, encode, encodings_from_spec

    encs = encodings_from_spec(spec)
    params = train._xgb_params(spec.model, [e.monotone for e in encs]) | {"max_depth": 5}
    y = train.target_vector(frame, spec)
    booster = xgb.train(params, xgb.DMatrix(encode(frame, encs), label=y, enable_categorical=True), 300)
    return CreditModel(booster, encs, 1.0, 0.0, {"nthread": 2})


def bench_explanation(model, batch: pd.DataFrame, quick: bool) -> dict:
    import shap
    import xgboost as xgb

    from creditgov.model.treeshap import contributions
    from creditgov.model.credit_model import encode

    X = encode(batch, model.encodings)
    contributions(model.booster_, X.iloc[:1000])  # compile and cache outside the timing
    t = time.perf_counter()
    phi, base = model.contributions(batch)
    ours = len(batch) / (time.perf_counter() - t)
    m = 2_000 if quick else 10_000
    sub = X.iloc[:m]
    dm = xgb.DMatrix(sub, enable_categorical=True, nthread=2)
    t = time.perf_counter()
    ref = model.booster_.predict(dm, pred_contribs=True).astype(np.float64)
    peer = m / (time.perf_counter() - t)
    diff = float(np.abs(contributions(model.booster_, sub) - ref).max())
    codes = sub.copy()
    for c in codes.columns:
        if isinstance(codes[c].dtype, pd.CategoricalDtype):
            codes[c] = codes[c].cat.codes.astype("float64").where(codes[c].notna())
    ms = min(m, 2_000)
    t = time.perf_counter()
    shap.TreeExplainer(model.booster_).shap_values(codes.iloc[:ms])
    shap_rate = ms / (time.perf_counter() - t)
    trees = model.booster_.num_boosted_rounds()
    ratio = ours / peer
    return row("explanation", ours, peer, "xgboost pred_contribs", target=">= 20x pred_contribs, |diff| <= 1e-5",
               met=bool(ratio >= 20 and diff <= 1e-5), max_abs_diff=diff, shap_tree_explainer_rows_per_s=round(shap_rate),
               ratio_vs_shap=round(ours / shap_rate, 1),
               note=f"{trees} trees; ours on {len(batch):,} rows, pred_contribs on {m:,}, shap on {ms:,}; "
                    f"max |ours - pred_contribs| {diff:.2g}; vs shap.TreeExplainer {ours / shap_rate:.0f}x")


def bench_decide(work: Path, batch_path: Path, n: int, env: dict, quick: bool) -> list[dict]:
    code = f"""
import json, time
t = time.perf_counter()
from creditgov import env; env.apply()
from creditgov.spec import load_spec
from creditgov.decision.decide import decide
r = decide(load_spec({BEHAVIOUR!r}), {str(batch_path)!r}, as_of={AS_OF!r}, out_dir="decisions-bench", log=lambda m: None)
decided = time.perf_counter() - t
a = r.audit  # decide appends its log to the audit trail itself
print(json.dumps({{"seconds": time.perf_counter() - t, "decide_seconds": decided, "path": str(r.path), "rows": r.rows_in,
                  "adverse": sum(v for k, v in r.action_counts.items() if k in ("cut", "suspend", "decline")),
                  "audited": a.inserted}}))
"""
    wall, res = child(code, env, work)
    out = [row("decide + explain + log + audit", res["rows"] / wall, target="1M accounts < 120 s",
               met=bool(n >= 1_000_000 and wall < 120) if not quick else None, seconds=round(wall, 1),
               decide_seconds=round(res["decide_seconds"], 1),
               note=f"{res['rows']:,} rows ({res['adverse']:,} adverse, each with a counterfactual) in {wall:.0f} s "
                    f"({res['audited']:,} decisions written to the log and appended to the audit trail by decide), "
                    "fresh process: imports, numba compilation, GX validation included")]
    code_dask = f"""
import json, time
t = time.perf_counter()
from creditgov import env; env.apply()
from creditgov.spec import load_spec
from creditgov.decision import dask as engine
r = engine.decide(load_spec({BEHAVIOUR!r}), {str(batch_path)!r}, as_of={AS_OF!r}, out_dir="decisions-dask",
                  log=lambda m: None)
print(json.dumps({{"seconds": time.perf_counter() - t, "path": str(r.path)}}))
"""
    wall_d, res_d = child(code_dask, env, work)
    same = (work / res["path"]).read_bytes() == (work / res_d["path"]).read_bytes()
    out.append(row("decide --engine dask", res["rows"] / wall_d, res["rows"] / wall, "single-process engine",
                   seconds=round(wall_d, 1), byte_identical=same,
                   note=f"LocalCluster 2 workers x 1 thread on this 2-core machine; log byte-identical: {same}"))
    return out


def bench_audit_step(work: Path) -> dict:
    """benchmarks/bench_audit.py on the decision log the decide step wrote: ours vs one chained JSON row
    per decision, append and verify rates, bytes per decision."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_audit

    log = next((work / "decisions-bench").glob("*.parquet"))
    o = bench_audit.ours(log, work)
    p = bench_audit.peer(log, work, bench_audit.PEER_CAP)
    return row("audit append", o["append_per_s"], p["append_per_s"], "one chained JSON row per decision",
               target=">= 200,000 decisions/s, <= 200 B/decision",
               met=bool(o["append_per_s"] >= 200_000 and o["bytes_per_decision"] <= 200),
               verify_per_s=round(o["verify_per_s"]), peer_verify_per_s=round(p["verify_per_s"]),
               bytes_per_decision=round(o["bytes_per_decision"]), peer_bytes_per_decision=round(p["bytes_per_decision"]),
               append_rss_mb=round(o["append_rss_mb"]), verify_rss_mb=round(o["verify_rss_mb"]),
               note=f"{o['rows']:,} decisions: append {o['append_seconds']:.0f} s, verify {o['verify_seconds']:.0f} s "
                    f"({o['verify_per_s']:,.0f}/s vs {p['verify_per_s']:,.0f}/s), {o['bytes_per_decision']:.0f} vs "
                    f"{p['bytes_per_decision']:,.0f} B/decision; peer on {p['rows']:,} rows")


def bench_drift(model, spec, ref: pd.DataFrame, cur: pd.DataFrame) -> dict:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from creditgov.monitor import drift
    from creditgov.monitor.reference import build_profile

    p_ref, p_cur = model.predict_pd(ref), model.predict_pd(cur)
    cfg = spec.monitoring
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        profile = build_profile(ref, p_ref, spec, {}, cfg.segment_by)
        drift.stability(cur, p_cur, profile, spec)
        drift.level_shift(cur, p_cur, profile, spec)
        feats = [f.name for f in spec.model_inputs]
        rs = ref[feats].assign(pd=p_ref).sample(min(cfg.evidently_sample, len(ref)), random_state=1)
        cs = cur[feats].assign(pd=p_cur).sample(min(cfg.evidently_sample, len(cur)), random_state=1)
        drift.evidently_report(rs, cs, spec, Path(tmp) / "ev.html")
        ours = time.perf_counter() - t
    num = [f.name for f in spec.model_inputs if f.type == "numeric"]
    cat = [f.name for f in spec.model_inputs if f.type == "categorical"]
    dd = DataDefinition(numerical_columns=num + ["pd"], categorical_columns=cat)
    cols = num + cat + ["pd"]
    t = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(cur[cols[:-1]].assign(pd=p_cur).reset_index(drop=True), data_definition=dd),
        reference_data=Dataset.from_pandas(ref[cols[:-1]].assign(pd=p_ref).reset_index(drop=True), data_definition=dd))
    snap.dict()
    peer = time.perf_counter() - t
    n = len(ref) + len(cur)
    return row("drift analysis", n / ours, n / peer, "Evidently DataDriftPreset (full batches)",
               target=">= 10x Evidently", met=bool(peer / ours >= 10), seconds=round(ours, 1),
               peer_seconds=round(peer, 1),
               note=f"{len(ref):,} vs {len(cur):,} rows: ours {ours:.1f} s (profile + PSI/CSI on all rows + Evidently "
                    f"on {cfg.evidently_sample:,}-row samples), Evidently on all rows {peer:.1f} s")


def _pandas_rules(frame: pd.DataFrame, suite: dict) -> int:
    bad = np.zeros(len(frame), dtype=bool)
    for e in suite["expectations"]:
        kw, kind = e["kwargs"], e["type"]
        col = kw.get("column")
        if col is not None and col not in frame.columns:
            continue
        if kind == "expect_column_values_to_be_between":
            v = frame[col]
            bad |= (v.notna() & ((v < kw["min_value"]) | (v > kw["max_value"]))).to_numpy()
        elif kind == "expect_column_values_to_be_in_set":
            bad |= (frame[col].notna() & ~frame[col].isin(kw["value_set"])).to_numpy()
        elif kind == "expect_column_values_to_not_be_null":
            bad |= frame[col].isna().to_numpy()
        elif kind == "expect_compound_columns_to_be_unique":
            bad |= frame.duplicated(kw["column_list"], keep=False).to_numpy()
        elif kind == "expect_column_values_to_be_unique":
            bad |= frame.duplicated([col], keep=False).to_numpy()
    return int(bad.sum())


def bench_validation(spec, batch: pd.DataFrame) -> dict:
    from creditgov.data import expectations
    from creditgov.data import validate

    suite = expectations.for_scoring(expectations.checked_suite(spec), spec, batch.columns)
    validate.validate(batch.iloc[:1000].reset_index(drop=True), spec, suite, "warm-up")
    t = time.perf_counter()
    out = validate.validate(batch, spec, suite, "bench")
    ours = time.perf_counter() - t
    t = time.perf_counter()
    n_bad = _pandas_rules(batch, suite)
    peer = time.perf_counter() - t
    n = len(batch)
    return row("validation", n / ours, n / peer, "the same row rules in plain pandas", seconds=round(ours, 1),
               target="~3 s for 1M rows", met=bool(ours <= 3.5 * n / 1_000_000),
               note=f"GX suite ({len(suite['expectations'])} expectations) on {n:,} rows in {ours:.1f} s, "
                    f"{len(out.quarantine)} quarantined (pandas: {n_bad})")


# --------------------------------------------------------------------------- main


def table(rows: list[dict]) -> str:
    head = f"{'step':26s} {'ours rows/s':>12s} {'peer rows/s':>12s} {'ratio':>7s}  {'target':36s} met  peer / note"
    lines = [head, "-" * len(head)]
    for r in rows:
        fmt = lambda v: "" if v is None else f"{v:,}"  # noqa: E731
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"{r['step']:26s} {fmt(r['ours_rows_per_s']):>12s} {fmt(r['peer_rows_per_s']):>12s} "
                     f"{'' if r['ratio'] is None else str(r['ratio']) + 'x':>7s}  {(r['target'] or ''):36s} {met:4s} "
                     f"{(r['peer'] + ': ') if r['peer'] else ''}{r['note']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    ap.add_argument("--workdir", help="scratch project (default: a new temporary directory, removed after)")
    ap.add_argument("--out", help="JSON result (default benchmarks/results/bench[-quick].json)")
    args = ap.parse_args()
    from creditgov import progress

    with progress.task("Benchmark", steps=STEPS) as steps:
        run(args, steps)


STEPS = ("simulator", "training", "explanation", "decide", "audit", "drift", "validation")


def run(args, steps) -> None:
    """The steps in order (`steps`: the progress bar over STEPS), the table and the JSON result."""
    n = 100_000 if args.quick else 1_000_000
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="creditgov-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for d in ("pipelines", "expectations"):
        if not (work / d).exists():
            shutil.copytree(REPO / d, work / d)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
    from creditgov import env

    env.apply()
    main_model, main_uri = _main_champion()
    os.chdir(work)
    started = time.perf_counter()
    results = []

    steps.step("simulator")
    say(f"simulator: {n:,} accounts x 24 months")
    r, sim = bench_simulator(work, n)
    results.append(r)
    say(r["note"])
    steps.step("training")
    say("training: run_training of the behaviour spec")
    r = bench_training(work, args.quick)
    results.append(r)
    say(r["note"])

    from creditgov.governance import registry
    from creditgov.spec import load_spec
    from creditgov.data.simulate import partition_dir

    spec = load_spec(BEHAVIOUR)
    batch_path = partition_dir(sim, 23) / "snapshot.parquet"
    batch = pd.read_parquet(batch_path)
    decide_env = dict(os.environ)
    if main_model is not None:
        model, model_source = main_model, f"@champion of {main_uri} (make train)"
        decide_env["MLFLOW_TRACKING_URI"] = main_uri
    else:
        registry.configure()
        champion, _, _ = registry.load_registered(spec.registry.model_name)
        say("no behaviour @champion in the project registry: explanation on a 300-tree depth-5 model")
        dev = pd.read_parquet(partition_dir(sim, 0) / "snapshot.parquet")
        lab = pd.read_parquet(partition_dir(sim, 0) / "labels.parquet")
        dev = dev.merge(lab[["account_id", "bad_12m"]], on="account_id")
        dev = dev[dev["bad_12m"].notna()].iloc[:200_000]
        dev["bad_12m"] = np.where(dev["bad_12m"] > 0, "bad", "good")
        model, model_source = _model_300x5(spec, dev), "300-tree depth-5 model trained here"
        del champion

    steps.step("explanation")
    say(f"explanation ({model_source})")
    r = bench_explanation(model, batch, args.quick)
    r["model"] = model_source
    results.append(r)
    say(r["note"])
    steps.step("decide")
    say("decide + explain + log")
    for r in bench_decide(work, batch_path, n, decide_env, args.quick):
        results.append(r)
        say(r["note"])
    steps.step("audit")
    say("audit trail (the decide step's log)")
    r = bench_audit_step(work)
    results.append(r)
    say(r["note"])
    steps.step("drift")
    say("drift analysis")
    ref = pd.read_parquet(partition_dir(sim, 22) / "snapshot.parquet")
    registry.configure()
    champion = main_model or registry.load_registered(spec.registry.model_name)[0]
    r = bench_drift(champion, spec, ref, batch)
    results.append(r)
    say(r["note"])
    steps.step("validation")
    say("validation")
    r = bench_validation(spec, batch)
    results.append(r)
    say(r["note"])

    import xgboost

    res = {"quick": args.quick, "rows": n, "total_seconds": round(time.perf_counter() - started),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "xgboost": xgboost.__version__,
                       "load_average_1min": round(os.getloadavg()[0], 2)},
           "steps": results}
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"bench{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(results))
    print(f"\n{n:,} rows; {res['total_seconds']} s in all; wrote {out}")
    if not args.workdir:
        os.chdir(REPO)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
