"""`creditgov` command line. Every failure is one line on stderr and a documented exit code.

Commands import what they run inside their own body: creditgov's modules pull in pandas, MLflow, Great
Expectations or Dask, and `creditgov --help` (or a usage error) must not wait seconds for them."""
from __future__ import annotations

import _thread
import atexit
import dataclasses
import getpass
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

INTERRUPTED_LINE = "creditgov: interrupted"
INTERRUPTED_EXIT = 130

try:
    import typer

    from creditgov import env
    from creditgov.errors import CreditGovError, UsageError
except KeyboardInterrupt:  # Ctrl-C while the command line itself is still loading
    print(INTERRUPTED_LINE, file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT)

DEFAULT_SPEC = "pipelines/application.yaml"
API_KEYS_ENV = "CREDITGOV_API_KEYS"  # creditgov serve's API keys, comma separated

app = typer.Typer(help="Governance toolkit for credit-decision models.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)

SpecOpt = typer.Option(DEFAULT_SPEC, "--spec", "-s", help="Pipeline spec (YAML).")
DataOpt = typer.Option(None, "--data", "-d", help="Score this CSV/Parquet file instead of the spec's source.")
EngineOpt = typer.Option("local", "--engine", help="local (one process) or dask (a Dask cluster; same outputs).")
SchedulerOpt = typer.Option(None, "--scheduler", help="With --engine dask: scheduler address, e.g. "
                            "tcp://host:8786 (default: a LocalCluster on this machine).")
PartitionsOpt = typer.Option(None, "--partitions", min=1,
                             help="With --engine dask: split a file into N partitions "
                             "(default: one per worker thread; a directory of Parquet files: one per file).")


def _engine(name: str) -> str:
    if name not in ("local", "dask"):
        raise UsageError(f"--engine '{name}': use local or dask")
    return name


def _check_version(s, version: Optional[str]) -> None:
    """A --version that names no registered version is a usage error, said before any data is read."""
    if version is None:
        return
    from creditgov.governance import registry as tracking

    tracking.check()
    with tracking.backend_errors(f"look up {s.registry.model_name} version {version}"):
        tracking.get_version(tracking.client(), s.registry.model_name, version)


def _sim_months(text: str, sim_dir: str, labelled: bool) -> list[int]:
    """The months of --months, checked against the simulator's output in `sim_dir` when it is there:
    months it does not hold, or (`labelled`) whose outcome window has not closed, are usage errors."""
    from creditgov.jobs.monitoring import parse_months

    months = parse_months(text)
    try:
        meta = json.loads((Path(sim_dir) / "scenario.json").read_text(encoding="utf-8"))
        held = int(meta["scenario"]["months"])
        matured = [int(m) for m in meta["labelled_months"]]
    except (OSError, ValueError, KeyError, TypeError):
        return months  # no simulator output there: reading the months says so
    beyond = [m for m in months if m > held]
    if beyond:
        raise UsageError(f"--months {text}: {sim_dir} holds months 1-{held}, not month {beyond[0]}")
    if labelled:
        open_ = [m for m in months if m not in matured]
        if open_:
            have = f"months 1-{max(matured)}" if matured else "no month yet"
            raise UsageError(f"--months {text}: month {open_[0]} of {sim_dir} has no matured outcomes "
                             f"(12-month window not closed); {have} have them")
    return months


def _spec(path: str):
    from creditgov.spec import load_spec

    return load_spec(path)


def _say(msg: str) -> None:
    typer.echo(msg)


@app.command()
def validate(spec: str = SpecOpt, data: Optional[str] = DataOpt):
    """Validate input data with the spec's Great Expectations suite; quarantine bad rows."""
    from creditgov.jobs.training import validate_input

    v = validate_input(_spec(spec), data)
    s = v.outcome.summary()
    _say(f"{v.label}: {s['rows_in']} rows in = {s['rows_clean']} clean + {s['rows_quarantined']} quarantined "
         f"({v.quarantine_path})")
    for rule, n in s["rows_by_rule"].items():
        _say(f"  {n:6d}  {rule}")
    if s["ignored_columns"]:
        _say(f"  columns not in the catalogue, ignored: {', '.join(s['ignored_columns'])}")


@app.command()
def train(spec: str = SpecOpt, data: Optional[str] = DataOpt,
          rounds: Optional[int] = typer.Option(None, min=1, help="Cap on boosting rounds (tests use few)."),
          promote: bool = typer.Option(False, "--promote", help="Then promote to @champion if the gates pass."),
          approver: Optional[str] = typer.Option(None, help="Who approves the promotion (with --promote; default: "
                                                 "the user running it, refused as the trainer unless the spec is "
                                                 "a development spec)."),
          trainer: Optional[str] = typer.Option(None, help="Who trains (default: the user running it); recorded, "
                                                "and refused as approver outside a development spec."),
          search: bool = typer.Option(False, "--search", help="First search for less discriminatory alternatives "
                                      "(the spec's `search` section) and register the candidate it chooses."),
          justification: Optional[str] = typer.Option(None, help="With --promote: a business-necessity "
                                                      "justification, needed while a less discriminatory "
                                                      "alternative exists; shown on the model card."),
          model: str = typer.Option("xgboost", "--model", help="The model registered: xgboost, or scorecard "
                                    "(the WOE scorecard, reasons by points below each characteristic's maximum); "
                                    "with --search the search chooses."),
          candidate: Optional[str] = typer.Option(None, "--candidate", help="With --search: register this "
                                                  "candidate instead of the search's choice (e.g. optuna-2); while "
                                                  "a less discriminatory alternative to it exists, promotion needs "
                                                  "--justification.")):
    """Validate, train the XGBoost PD model and the scorecard challenger, evaluate, register in MLflow."""
    from creditgov.jobs.training import run_training

    if candidate is not None and not search:
        raise UsageError("--candidate names a candidate of the search: use it with --search")
    s = _spec(spec)
    _or_tools_leaves_sigint_alone()
    result = run_training(s, spec, data, rounds, log=_say, trainer=trainer, search=search, model_kind=model,
                          candidate=candidate)
    for g in result.gates:
        _say(f"  gate {g.name:13s} {'pass' if g.passed else 'FAIL'}  {g.value}  ({g.rule})")
    if promote:
        _promote(s, approver or _default_approver(), result.version, strict=False, justification=justification)


def _or_tools_leaves_sigint_alone() -> None:
    """The scorecard's binning (optbinning) solves with OR-Tools CP-SAT, which by default catches SIGINT
    during a solve (the search just stops, as on a time limit) and then resets SIGINT to SIG_DFL, so a
    later Ctrl-C killed the process with nothing said. Its solvers are made to leave SIGINT to Python."""
    from ortools.sat.python import cp_model  # heavy: only for a command that trains

    if getattr(cp_model.CpSolver, "_creditgov_sigint", False):
        return
    init = cp_model.CpSolver.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.parameters.catch_sigint_signal = False

    cp_model.CpSolver.__init__ = __init__
    cp_model.CpSolver._creditgov_sigint = True


def _default_approver() -> str:
    """The user running the command: the trainer too, so outside a development spec the promotion is refused
    (separation of duties) and a second person promotes with `creditgov promote --approver`."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _promote(s, approver: str, version: Optional[str], strict: bool, justification: Optional[str] = None) -> None:
    from creditgov.errors import PromotionRefused
    from creditgov.governance.promote import promote as do_promote

    try:
        v, results = do_promote(s, approver, version, justification)
    except PromotionRefused as exc:
        if strict:
            raise
        _say(f"promotion refused: {exc} (the version stays @challenger)")
        return
    self_approved = any(g.name == "separation_of_duties" and g.value == "self-approved (development)" for g in results)
    _say(f"{s.registry.model_name} version {v} is now @champion (approved by {approver}"
         f"{': self-approved (development)' if self_approved else ''})")


@app.command()
def promote(spec: str = SpecOpt,
            version: Optional[str] = typer.Option(None, help="Model version (default: the @challenger)."),
            approver: str = typer.Option(..., help="Who approves: recorded on the model version."),
            justification: Optional[str] = typer.Option(None, help="A business-necessity justification: needed "
                                                        "while the version's search found a less discriminatory "
                                                        "alternative; recorded and shown on the model card.")):
    """Move @champion to a version only if its registration gates pass."""
    _promote(_spec(spec), approver, version, strict=True, justification=justification)


@app.command()
def decide(spec: str = SpecOpt, data: Optional[str] = DataOpt,
           version: Optional[str] = typer.Option(None, help="Model version (default: the @champion)."),
           as_of: Optional[str] = typer.Option(None, "--as-of", help="Decision date YYYY-MM-DD (default: today)."),
           out: str = typer.Option("decisions", help="Directory of decision logs."),
           previous: Optional[str] = typer.Option(None, help="The previous review's batch (on-book accounts): "
                                                  "gives the risk-rise trigger and the month-over-month reasons."),
           engine: str = EngineOpt, scheduler: Optional[str] = SchedulerOpt,
           partitions: Optional[int] = PartitionsOpt):
    """Score a batch with the champion, apply the policy, explain every decision, write the decision log and
    append it to the audit trail."""
    from creditgov.governance import registry as tracking

    dask = _engine(engine) == "dask"
    tracking.check()  # an unreachable backend is reported before minutes of validation
    if dask:
        from creditgov.decision.dask import decide as run_decide_dask

        r = run_decide_dask(_spec(spec), data, version, as_of, out, log=_say, previous=previous,
                            scheduler=scheduler, partitions=partitions)
    else:
        from creditgov.decision.decide import decide as run_decide

        r = run_decide(_spec(spec), data, version, as_of, out, log=_say, previous=previous)
    counts = r.action_counts  # counted as the log was written: a streamed log is not read back
    _say("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


@app.command()
def serve(spec: str = SpecOpt,
          host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback unless told otherwise)."),
          port: int = typer.Option(8000, min=0, max=65535, help="Port (0: any free port, printed at start)."),
          version: Optional[str] = typer.Option(None, help="Model version (default: the @champion, reloaded when "
                                                "the alias moves)."),
          as_of: Optional[str] = typer.Option(None, "--as-of", help="Decision date YYYY-MM-DD for every request "
                                              "that names none (default: the day of each request)."),
          out: str = typer.Option("decisions/served", help="Directory of the served decisions' logs."),
          insecure_dev: bool = typer.Option(False, "--insecure-dev", help="Start without API keys (development "
                                            "only; otherwise $CREDITGOV_API_KEYS must name at least one)."),
          max_body_bytes: int = typer.Option(1 << 20, min=1024, help="Largest request body (413 above it)."),
          reload_seconds: float = typer.Option(30.0, min=0, help="Poll @champion this often; 0: never reload."),
          audit_window_ms: float = typer.Option(0.0, min=0, help="How long the audit writer waits for more "
                                                "micro-batches to append with one decision log (0: none; those "
                                                "queued during an append form the next one)."),
          merge_delay: float = typer.Option(1.0, "--merge-delay", min=0, help="Answer once a decision is durably "
                                            "in the decision journal (decisions/served/journal-*.journal) and seal "
                                            "it into the audit trail within this many seconds (as Certificate "
                                            "Transparency's maximum merge delay); 0: answer only after the seal."),
          workers: int = typer.Option(1, min=1, max=64, help="Worker processes answering on the one port (each "
                                      "loads the model; the parent seals their journal segments). 1: one process "
                                      "that also seals its own journal.")):
    """Serve decisions over HTTP (FastAPI on uvicorn): POST /v1/decisions, GET /v1/decisions/{id}, /healthz,
    /readyz, /openapi.json. The same validation rules, decision path and audit trail as `creditgov decide`."""
    keys = tuple(k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip())
    if not keys and not insecure_dev:  # said before seconds of imports
        raise UsageError(f"no API key configured: set {API_KEYS_ENV}=key1[,key2...] "
                         "(or --insecure-dev on a development machine)")
    from creditgov.jobs import serve as service

    s = _spec(spec)
    if as_of is not None:
        from creditgov.decision.decide import check_as_of

        check_as_of(s, as_of)
    sock = service.bind(host, port)
    model = service.prepare(s, version)
    settings = service.Settings(spec=s, out_dir=Path(out), as_of=as_of, api_keys=keys, insecure_dev=insecure_dev,
                                max_body_bytes=max_body_bytes,
                                reload_seconds=0 if version is not None else reload_seconds,
                                audit_window=audit_window_ms / 1000, merge_delay=merge_delay)
    if workers == 1:
        service.run(settings, model, sock, say=_say)
        return
    from creditgov.jobs import workers as pool

    version = model.version  # every worker loads the version checked here (each then follows @champion itself)
    del model  # (the parent only seals: it needs no model)
    pool.run(settings, version, sock, workers, say=_say)


@app.command()
def report(spec: str = SpecOpt,
           log_path: Optional[str] = typer.Option(None, "--log", help="Decision log (default: the newest for the spec)."),
           out: str = typer.Option("reports", help="Reports root; each run gets reports/<run>/."),
           sample: int = typer.Option(20, help="How many decisions get their own report and notices."),
           group: Optional[list[str]] = typer.Option(None, "--group", help="Group column for adverse-impact ratios."),
           pdf: bool = typer.Option(False, "--pdf", help="Also print the run to one PDF, the regulator pack "
                                    "(<run>/regulator-pack.pdf), with headless Chromium.")):
    """Per-decision explanation reports, customer notices (zh/en) and the portfolio report, as HTML; with --pdf
    also the regulator pack: index, portfolio, model card, sampled decisions and notices in one PDF."""
    from creditgov.errors import DataError
    from creditgov.report.pages import latest_log, make_report

    s = _spec(spec)
    path = log_path or latest_log(s)
    if path is None:
        raise DataError(f"no decision log for '{s.name}' in decisions/: run creditgov decide first")
    if pdf:  # said before the report is made: printing needs a browser
        from creditgov.report.pdf import ChromiumError, CHROMIUM_ENV, find_chromium

        if find_chromium() is None:
            raise ChromiumError(f"--pdf: no Chromium to print with (install Debian's chromium package, or set "
                                f"{CHROMIUM_ENV} to a Chromium or Chrome binary)")
    r = make_report(s, path, out, sample, group or None)
    _say(f"report: {r.index} ({len(r.decisions)} decisions with their own page and notices)")
    if pdf:
        from creditgov.report.pdf import write_pack

        pack = write_pack(r.directory)
        _say(f"regulator pack: {pack.path} ({pack.pages} pages, {len(pack.contents)} documents)")


@app.command()
def monitor(spec: str = SpecOpt, data: Optional[list[str]] = typer.Option(None, "--data", "-d",
                                                                          help="Batch file(s) to monitor, in order."),
            matured: Optional[str] = typer.Option(None, help="A labelled batch whose outcomes have matured: "
                                                  "the calibration basis for estimated performance."),
            months: Optional[str] = typer.Option(None, help="Simulator months to monitor, e.g. 13-24."),
            sim_dir: str = typer.Option("data/simulated/default", help="Simulator output (with --months)."),
            observed: bool = typer.Option(False, help="With --months: use each month's own labels (retrospective)."),
            version: Optional[str] = typer.Option(None, help="Model version (default: the @champion)."),
            evidently: bool = typer.Option(False, help="Also write Evidently's DataDriftPreset page per batch "
                                           "(opt-in: about 1.3 MB each, plus its 3.5 MB script once per run)."),
            out: str = typer.Option("reports", help="Reports root."),
            engine: str = EngineOpt, scheduler: Optional[str] = SchedulerOpt,
            partitions: Optional[int] = PartitionsOpt):
    """Stability (PSI/CSI), performance (observed or estimated) and a verdict against the champion's reference."""
    from creditgov.data import inputs as data_mod
    from creditgov.jobs.monitoring import Batch, monitor as run_monitor, simulator_batches

    if bool(months) == bool(data):
        raise UsageError("monitor needs --data FILE or --months RANGE" + (", not both" if months else ""))
    if matured and not data:
        raise UsageError("--matured goes with --data (with --months each month's basis is the simulator's)")
    if observed and not months:
        raise UsageError("--observed goes with --months (a --data batch uses its own labels when it has them)")
    dask = _engine(engine) == "dask"
    s = _spec(spec)
    _check_version(s, version)
    if months:
        batches = simulator_batches(s, sim_dir, _sim_months(months, sim_dir, labelled=observed), observed)
    else:
        basis = data_mod.read_path(matured, s).frame if matured else None
        batches = [Batch(Path(d).stem, data_mod.read_path(d, s).frame, basis, d,
                         Path(matured).stem if matured else None, matured) for d in data]
    if dask:
        from creditgov.jobs.monitoring import monitor_on_dask as run_monitor_dask

        job = run_monitor_dask(s, batches, version, out, evidently, log=_say, scheduler=scheduler,
                               partitions=partitions)
    else:
        job = run_monitor(s, batches, version, out, evidently, log=_say)
    _say(f"monitoring report: {job.report_dir / 'index.html'}")


@app.command()
def recalibrate(spec: str = SpecOpt,
                data: Optional[str] = typer.Option(None, "--data", "-d", help="Matured, labelled batch (CSV/Parquet)."),
                months: Optional[str] = typer.Option(None, help="Or: matured simulator months, e.g. 5-8."),
                sim_dir: str = typer.Option("data/simulated/default", help="Simulator output (with --months)."),
                version: Optional[str] = typer.Option(None, help="Version to recalibrate (default: the @champion)."),
                monitoring_run: Optional[str] = typer.Option(None, help="The monitoring run that asked for it "
                                                              "(default: the version's monitor.last_run tag).")):
    """Refit the calibration layer on matured data; register the result as @challenger (promotion is gated)."""
    from creditgov.data import inputs as data_mod
    from creditgov.errors import DataError
    from creditgov.jobs.recalibrate import recalibrate as run
    from creditgov.data.validate import validate_batch

    if bool(months) == bool(data):
        raise UsageError("recalibrate needs --data FILE or --months RANGE of matured data"
                         + (", not both" if months else ""))
    s = _spec(spec)
    _check_version(s, version)
    if months:
        from creditgov.data.simulate import TARGET, load_months
        from creditgov.spec import months_text

        chosen = _sim_months(months, sim_dir, labelled=True)
        label = f"{sim_dir} {months_text(chosen)}"
        frame = load_months(sim_dir, chosen,
                            labelled=True).rename(columns={TARGET: s.target.column})
    else:
        label, frame = data, data_mod.read_path(data, s).frame
    if s.target.column not in frame.columns:
        raise DataError(f"{label}: no target column '{s.target.column}': recalibration needs matured outcomes")
    run(s, validate_batch(frame, s, label).clean, label, version, monitoring_run, log=_say)


audit_app = typer.Typer(help="The tamper-evident decision audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(scan: Optional[list[str]] = typer.Option(None, "--scan", help="Also check the decision logs "
                                                          "in this folder (decisions/ is always checked).")):
    """Check the chain, every recorded batch against its decision log, and the logs on disk (exit 8 if any problem),
    with `creditgov serve`'s journal segments: unsealed decisions of a server that is gone are a problem, those of a
    running server are printed as pending."""
    from creditgov.governance import audit, integrity
    from creditgov.governance.audit import AuditError

    r = audit.verify(scan=scan)
    for line in r.pending:  # a live server's journal: promised, sealed within its merge delay (no problem)
        _say(f"audit: pending: {line}")
    if integrity.registry_in_use() and audit.exists():
        # the registry against the promotions the trail records: an alias moved or a tag edited in the MLflow UI
        found = integrity.verify_registry()
        if found:
            r = dataclasses.replace(r, ok=False, problems=r.problems + found)
    if not r.ok:
        for line in r.problems[1:]:
            print(f"creditgov: audit: {line}", file=sys.stderr)
        raise AuditError(f"audit trail {audit.audit_url()}: {r.problems[0]}"
                         + (f" (and {len(r.problems) - 1} more problems, above)" if len(r.problems) > 1 else ""))
    _say(f"audit trail {audit.audit_url()}: {r.entries} entries, {r.batches} batches, {r.decisions} decisions "
         f"verified; head entry {r.head_seq} hash {r.head_hash}")


@audit_app.command("prove")
def audit_prove(decision_id: str = typer.Argument(..., help="The decision to prove."),
                out: Optional[str] = typer.Option(None, help="Write the proof to this JSON file (default: stdout).")):
    """Print an inclusion proof of a decision: its record, Merkle path, batch entry and chain to the head."""
    from creditgov.governance import audit

    proof = json.dumps(audit.prove(decision_id), indent=1, ensure_ascii=False)
    if out:
        Path(out).write_text(proof + "\n", encoding="utf-8")
        _say(f"proof of decision {decision_id} written to {out}")
    else:
        _say(proof)


@audit_app.command("append")
def audit_append(log_path: str = typer.Argument(..., help="A decision log (Parquet) to put in the trail.")):
    """Record a decision log in the trail (what decide does after writing it; completes an interrupted append)."""
    from creditgov.governance import audit
    from creditgov.errors import DataError

    if not Path(log_path).is_file():
        raise DataError(f"{log_path}: no such decision log")
    a = audit.record_log(log_path, log=_say)
    _say(f"{log_path}: batch {a.batch}, {a.tree_size} decisions, {a.inserted} appended now; "
         f"Merkle root {a.merkle_root}")


@audit_app.command("prune")
def audit_prune(spec: str = SpecOpt):
    """Delete decision records older than the spec's audit.retention_months; the prune is itself recorded."""
    from creditgov.governance import audit

    s = _spec(spec)
    n = audit.prune(s.audit.retention_months)
    _say(f"pruned {n} records older than {s.audit.retention_months} months from {audit.audit_url()}")


@app.command()
def review(decision_id: str = typer.Argument(..., help="The decision to resolve."),
           approve: bool = typer.Option(False, "--approve", help="Confirm the proposed decision."),
           override: Optional[str] = typer.Option(None, "--override", help="Replace it with this action."),
           limit: Optional[float] = typer.Option(None, help="The credit limit granted (with --override)."),
           reviewer: str = typer.Option(..., help="Who reviewed."),
           reason: str = typer.Option(..., help="Why: recorded with the decision.")):
    """Resolve a review-queue decision (human oversight); recorded in the audit trail."""
    from creditgov.decision.oversight import review as do_review

    e = do_review(decision_id, approve, override, reviewer, reason, limit)
    _say(f"decision {decision_id}: {e['resolution']} by {reviewer}: {e['original_action']} -> {e['final_action']}")


@app.command(name="approve-treatment")
def approve_treatment(decision_id: str = typer.Argument(..., help="The decision whose collections step waits for approval."),
                      reviewer: str = typer.Option(..., help="Who approved."),
                      reason: str = typer.Option(..., help="Why: recorded with the decision.")):
    """Approve a collections agency or legal step (pending approval); recorded in the audit trail."""
    from creditgov.decision.oversight import approve_treatment as do_approve

    e = do_approve(decision_id, reviewer, reason)
    _say(f"decision {decision_id}: {e['treatment']} step approved by {reviewer}")


@app.command()
def contest(decision_id: str = typer.Argument(..., help="The decision contested."),
            spec: str = SpecOpt,
            data: str = typer.Option(..., "--data", "-d", help="The corrected input row (CSV/Parquet)."),
            reason: str = typer.Option("customer contest with corrected data", help="Why.")):
    """Re-decide with corrected inputs under the same model version and policy; link new to old."""
    from creditgov.decision.oversight import contest as do_contest

    e = do_contest(_spec(spec), decision_id, data, reason, log=_say)
    _say(f"decision {decision_id} contested: {e['original_action']} -> {e['new_action']} "
         f"(new decision {e['new_decision_id']})")


@app.command()
def simulate(scenario: str = typer.Option("pipelines/scenarios/default.yaml", help="Scenario YAML."),
             out: Optional[str] = typer.Option(None, help="Output directory (default: data/simulated/<name>)."),
             accounts: Optional[int] = typer.Option(None, min=1, help="Override the number of accounts."),
             months: Optional[int] = typer.Option(None, min=2, max=240, help="Override the number of months."),
             seed: Optional[int] = typer.Option(None, help="Override the seed.")):
    """Generate monthly snapshot partitions of a simulated credit-line portfolio (seeded, deterministic)."""
    from creditgov.data.simulate import load_scenario, simulate as run

    scn = load_scenario(scenario, accounts=accounts, months=months, seed=seed)
    run(scn, out or f"data/simulated/{scn.name}", log=_say)


@app.command(name="risk-report")
def risk_report(sim_dir: str = typer.Option("data/simulated/default", help="Simulated book (creditgov simulate)."),
                months: str = typer.Option("1-24", help="Months, e.g. 1-24."),
                out: str = typer.Option("reports", help="Reports folder."),
                spec: str = typer.Option("pipelines/behaviour.yaml", "--spec", "-s",
                                         help="Behaviour spec: its on-book policy and registered model measure the "
                                         "early warning, price the book and give the monitoring verdicts ('' for "
                                         "none)."),
                version: Optional[str] = typer.Option(None, help="Model version (default: @champion).")):
    """The periodic risk report of a simulated book: buckets, roll rates, vintages, losses, collections outcomes,
    early-warning lift, pricing by tier, limit changes and the model's monitoring verdicts (HTML and CSV)."""
    from creditgov.errors import CreditGovError
    from creditgov.governance import registry
    from creditgov.report import early_warning
    from creditgov.report.risk import model_verdicts, write_report

    ms = _sim_months(months, sim_dir, labelled=False)
    warning, note, verdicts = None, "no spec given (creditgov risk-report --spec)", None
    if spec and (spec != "pipelines/behaviour.yaml" or Path(spec).exists()):  # the default only where it is
        s = _spec(spec)
        note = ""
        try:
            registry.configure()
            model, got, _ = registry.load_registered(s.registry.model_name, version)
        except CreditGovError as err:  # no model yet: the book's own figures still stand
            note = f"no registered {s.registry.model_name} model ({err})"
        else:
            warning = early_warning.figures(sim_dir, ms, s, model)
            _say(f"early warning measured with {s.registry.model_name} version {got}: lift "
                 f"{warning.pooled['lift']:.2f}, warned share {warning.pooled['warned_share']:.1%}")
        verdicts = model_verdicts(s.registry.model_name, version)
    path = write_report(sim_dir, ms, out, warning, note, verdicts=verdicts)
    _say(f"risk report: {path / 'index.html'}")


@app.command()
def replay(spec: str = typer.Option("pipelines/behaviour.yaml", "--spec", "-s", help="Pipeline spec (YAML) holding "
                                    "the current policy."),
           candidate: str = typer.Option(..., help="Candidate policy: a YAML file with a `policy:` mapping (a spec) "
                                         "or the policy mapping itself."),
           months: str = typer.Option("13-24", help="Simulated months to replay, e.g. 13-24."),
           version: Optional[str] = typer.Option(None, help="Model version (default: @champion)."),
           accounts: Optional[int] = typer.Option(None, min=50, help="Override the scenario's number of accounts."),
           seed: Optional[int] = typer.Option(None, help="Override the scenario's seed (the same for both policies)."),
           out: str = typer.Option("reports", help="Reports folder."),
           attach_to: str = typer.Option("policy_replays", "--attach-to",
                                         help="Where comparisons are attached to policy versions.")):
    """Replay a candidate policy and the current one on the same simulated months (the book resimulated from the
    same seed under each) and compare losses, approvals, suspensions, limits and customer impact side by side."""
    from creditgov.decision.decide import load_model
    from creditgov.decision.replay import attach, load_candidate, replay as run
    from creditgov.jobs.monitoring import parse_months
    from creditgov.report.replay import fmt_metric, write_replay

    s = _spec(spec)
    cand = load_candidate(candidate, s)
    ms = parse_months(months)
    _check_version(s, version)
    model = load_model(s, version)
    _say(f"replaying {cand.policy.name} {cand.policy.version} against {s.policy.version} on {len(ms)} months "
         f"with {s.registry.model_name} version {model.version}")
    r = run(s, cand, model, ms, accounts=accounts, seed=seed)
    attached = attach(r, s, attach_to)
    path = write_replay(r, s, cand, attached, out)
    for row in r.summary.itertuples():
        if row.metric in ("newly suspended", "customers given an adverse action", "net loss",
                          "mean 30+ DPD share", "approval rate"):
            _say(f"  {row.metric}: current {fmt_metric(row.metric, row.current)}, "
                 f"candidate {fmt_metric(row.metric, row.candidate)}")
    _say(f"attached to policy version {cand.policy.version}: {attached}")
    _say(f"replay report: {path / 'index.html'}")


@app.command()
def expectations(spec: str = SpecOpt,
                 write: bool = typer.Option(False, "--write", help="Rewrite the suite from the catalogue.")):
    """Check (or --write) the expectation suite against the spec's feature catalogue."""
    from creditgov.errors import SpecError
    from creditgov.data import expectations as ex

    s = _spec(spec)
    if write:
        _say(f"wrote {ex.write_suite(s)}")
        return
    diffs = ex.suite_differences(s, ex.read_suite(s.validation.suite))
    if diffs:
        raise SpecError(f"{s.validation.suite}: {len(diffs)} differences from the catalogue, first: {diffs[0]}")
    _say(f"{s.validation.suite} agrees with the catalogue of {spec}")


@app.command()
def ui(port: int = typer.Option(5000, help="Port."),
       host: str = typer.Option("127.0.0.1", help="Bind address (loopback unless you say otherwise).")):
    """Start the real `mlflow ui` against the same backend creditgov uses."""
    from creditgov.governance import registry as tracking

    uri = tracking.tracking_uri()
    _say(f"mlflow ui on http://{host}:{port} with backend {uri}")
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    os.execv(str(mlflow_bin), [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", host,
                               "--port", str(port)])


def _click_kind(exc: BaseException) -> str | None:
    """'exit', 'usage' or 'abort' for click's exceptions, whichever copy of click raised them
    (typer bundles its own as typer._click, which the `click` package's classes do not match)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "Exit" in names and hasattr(exc, "exit_code"):
        return "exit"
    if "ClickException" in names and hasattr(exc, "show"):
        return "usage"
    if "Abort" in names:
        return "abort"
    return None


# ------------------------------------------------------------------------------------------ Ctrl-C
#
# SIGINT at any moment of any command exits 130 with the one line `creditgov: interrupted` on stderr.
# `except KeyboardInterrupt` alone does not give that:
# * typer in non-standalone mode turns a KeyboardInterrupt into a *returned* exit code (130), which
#   main() ignored: an early Ctrl-C exited 0 with nothing said;
# * OR-Tools CP-SAT, the scorecard's binning solver, catches SIGINT during a solve and resets it to
#   SIG_DFL afterwards, so a later Ctrl-C killed the process silently (see _or_tools_leaves_sigint_alone);
# * Python only prints ("Exception ignored in ...") a KeyboardInterrupt raised inside a finaliser or a
#   weakref callback, and the command goes on; libraries log errors, with tracebacks, while unwinding;
# * once the command is over, Python's finalisation puts SIG_DFL back: a late Ctrl-C killed the process.
# Registry consistency does not depend on where the KeyboardInterrupt lands: a version is given its
# `creditgov.registration: complete` tag before any alias (pipeline.finish_registration).

SIGINT_HOLD_S = 5.0
_sigint_seen = False
_sigint_held = False
_hold_until = 0.0
_redelivered = False
_hold_lock = threading.Lock()
_owns_process = False  # main() is the program (`creditgov`, `python -m creditgov`), not a caller's function
_line_stream = None  # the real stderr, once library output is silenced after an interruption
_reported = False
_exit_code = 1  # what the process exits with, for _end_at_exit


def _on_sigint(signum, frame) -> None:
    """SIGINT raises KeyboardInterrupt as Python's own handler does, and is remembered. While the main
    thread is inside a transaction of the MLflow store, it is held until the transaction ends (see
    tracking.in_transaction), for at most SIGINT_HOLD_S after the first Ctrl-C; a second Ctrl-C is
    never held."""
    global _sigint_seen, _sigint_held, _hold_until, _redelivered
    now = time.monotonic()
    if not _sigint_seen:
        _sigint_seen = True
        _hold_until = now + SIGINT_HOLD_S
        if _owns_process:
            _silence()
    elif not _redelivered:  # the user pressed Ctrl-C again
        _hold_until = 0.0
    _redelivered = False
    tracking = sys.modules.get("creditgov.governance.registry")
    if _owns_process and now < _hold_until and tracking is not None and tracking.in_transaction():
        if not _sigint_held:
            _sigint_held = True
            tracking.on_transaction_end = _deliver_held_sigint
            timer = threading.Timer(_hold_until - now, _deliver_held_sigint)
            timer.daemon = True
            timer.start()
        return
    _sigint_held = False
    raise KeyboardInterrupt


def _deliver_held_sigint() -> None:
    """Raise the held KeyboardInterrupt in the main thread (at the transaction's end, or on time)."""
    global _sigint_held
    with _hold_lock:
        if not _sigint_held:
            return
        _sigint_held = False
    _redeliver()


def _redeliver() -> None:
    """The SIGINT handler runs again in the main thread, as for a signal, without counting as a Ctrl-C."""
    global _redelivered
    _redelivered = True
    _thread.interrupt_main(signal.SIGINT)


_TRAILING_CONTROLS = re.compile(r"(?:\x1b\[[0-9;?]*[A-Za-z])+$")


class _LineTrackingStream:
    """sys.stderr as the libraries a command imports see it: every write passes through, and whether the
    last one ended its line is known, so the interruption line starts on a line of its own even when a
    library's message was cut short before its newline."""

    def __init__(self, stream):
        self._stream = stream
        self.at_line_start = True

    def write(self, text):
        # before writing: the write itself may be interrupted. A progress bar's redraw ends in a carriage
        # return and terminal controls (erase line, show cursor): that is a line start too, and a write of
        # controls alone moves nothing
        visible = _TRAILING_CONTROLS.sub("", text) if isinstance(text, str) else text
        if visible:
            self.at_line_start = visible.endswith(("\n", "\r"))
        return self._stream.write(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        if name == "_stream":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._stream, name)


def _silence() -> None:
    """After a Ctrl-C the interruption line is all that is said: library logging, warnings and the
    tracebacks Python prints for exceptions it ignores (finalisers, exit handlers) are dropped."""
    global _line_stream
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    if _line_stream is None:
        _line_stream = sys.stderr
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the rest of the process


def _report_interrupted() -> None:
    global _reported
    if not _reported:
        _reported = True
        stream = _line_stream or sys.stderr
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        fresh = getattr(stream, "at_line_start", True)
        print(("" if fresh else "\n") + INTERRUPTED_LINE, file=stream, flush=True)


def _sigint_after_command(signum, frame) -> None:
    """Ctrl-C once the outcome is known (exit handlers of MLflow, Dask... running): end at once."""
    _report_interrupted()
    os._exit(INTERRUPTED_EXIT)


def _unraisable(args) -> None:
    """A KeyboardInterrupt that a finaliser or weakref callback swallowed is delivered again, to the
    command's own code; anything else goes to Python's hook (silenced after an interruption)."""
    if isinstance(args.exc_value, KeyboardInterrupt) and _sigint_seen:
        timer = threading.Timer(0.05, _redeliver)  # not from inside the hook: it would be swallowed again
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(args)


def _end_at_exit() -> None:
    """The last exit handler (registered before any other, so every clean-up has run). What follows in
    Python's finalisation is garbage collection and module teardown, seconds after a training, with
    SIGINT back at SIG_DFL: a Ctrl-C there killed the process with nothing said. The process ends here."""
    _flush_and_exit(_exit_code)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr, _line_stream):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _finish(code: int) -> None:
    """End a process this CLI owns as Python's finalisation would begin (non-daemon threads joined, every exit
    handler run, MLflow's and Dask's included), then stop before the interpreter and C++ teardown: Arrow's
    thread pools, destroyed there with a worker alive, abort the process ("terminate called without an
    active exception", exit -6; apache/arrow#34314) after the command has succeeded."""
    threading._shutdown()  # what Py_FinalizeEx does first: wait for non-daemon threads
    atexit._run_exitfuncs()
    _flush_and_exit(code)


def _ignore_sigint_at_exit() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Python's finalisation leaves SIG_IGN as it is


def _exit_interrupted() -> None:
    global _exit_code
    _exit_code = INTERRUPTED_EXIT
    _report_interrupted()
    if _owns_process:
        signal.signal(signal.SIGINT, _sigint_after_command)
    sys.exit(INTERRUPTED_EXIT)


def _failure(exc: BaseException) -> tuple[int, str | None]:
    """The exit code and the one stderr line of an exception out of a command."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT, INTERRUPTED_LINE
    if isinstance(exc, CreditGovError):
        return exc.exit_code, f"creditgov: error: {exc}"
    if isinstance(exc, MemoryError):
        return 1, "creditgov: error: out of memory"
    kind = _click_kind(exc)
    if kind == "exit":
        return exc.exit_code, None
    if kind == "usage":  # click's no-args-is-help error has no message: the help is printed above it
        what = " ".join(exc.format_message().split()) or "no command given"
        return exc.exit_code, f"creditgov: usage error: {what} (see creditgov --help)"
    if kind == "abort":
        return INTERRUPTED_EXIT, INTERRUPTED_LINE
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return 1, f"creditgov: internal error: {type(exc).__name__}: {first} (set CREDITGOV_DEBUG=1 for details)"


def main() -> None:
    global _sigint_seen, _sigint_held, _redelivered, _owns_process, _line_stream, _reported, _exit_code
    _sigint_seen, _sigint_held, _redelivered, _line_stream, _reported = False, False, False, None, False
    _exit_code = 1
    _owns_process = getattr(sys.modules.get("__main__"), "main", None) is main
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)  # before any library is imported by a command
    except ValueError:  # called outside the main thread: the caller's signal handling stays
        previous = None
    if _owns_process:
        # last to run only if registered first (an exit handler of a tool wrapping the process, such as
        # coverage, must not be skipped): otherwise Ctrl-C is only ignored from there on
        first = getattr(atexit, "_ncallbacks", lambda: 1)() == 0
        atexit.register(_end_at_exit if first else _ignore_sigint_at_exit)
        sys.unraisablehook = _unraisable
        if not isinstance(sys.stderr, _LineTrackingStream):
            sys.stderr = _LineTrackingStream(sys.stderr)
    try:
        env.apply()
        error: BaseException | None = None
        try:
            rv = app(standalone_mode=False)
            # non-standalone typer returns the code of a typer.Exit (130 for a KeyboardInterrupt it caught)
            code, line = (rv if isinstance(rv, int) and not isinstance(rv, bool) else 0), None
        except (KeyboardInterrupt, Exception) as exc:  # the last line of defence: one line, never a traceback
            error = exc
            code, line = _failure(exc)
        if _sigint_seen or code == INTERRUPTED_EXIT:
            _exit_interrupted()
        if _owns_process:
            signal.signal(signal.SIGINT, _sigint_after_command)
        if line:
            print(line, file=sys.stderr)
        if line and line.startswith("creditgov: internal error:") and os.environ.get("CREDITGOV_DEBUG"):
            raise error
        _exit_code = code
        sys.exit(code)
    except KeyboardInterrupt:  # SIGINT between the command's end and the exit
        _exit_interrupted()
    except SystemExit as exc:  # ours, or one from inside a command: its code is the process's
        if _owns_process and _sigint_seen:
            # a KeyboardInterrupt left pending by an interrupted import must not end the process by
            # SIGINT during finalisation (exit -2): the outcome is known, end here
            _report_interrupted()
            _flush_and_exit(INTERRUPTED_EXIT)
        _exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if _owns_process:
            if not isinstance(exc.code, (int, type(None))):  # sys.exit("message"): Python prints it
                print(exc.code, file=sys.stderr)
            _finish(_exit_code)
        raise
    finally:
        if not _owns_process and previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    main()
