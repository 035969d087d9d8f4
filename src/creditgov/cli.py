"""`creditgov` command line. Every failure is one line on stderr and a documented exit code."""
from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from creditgov import env
from creditgov.errors import CreditGovError

DEFAULT_SPEC = "pipelines/application.yaml"

app = typer.Typer(help="Governance toolkit for credit-decision models.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)

SpecOpt = typer.Option(DEFAULT_SPEC, "--spec", "-s", help="Pipeline spec (YAML).")
DataOpt = typer.Option(None, "--data", "-d", help="Score this CSV/Parquet file instead of the spec's source.")
EngineOpt = typer.Option("local", "--engine", help="local (one process) or dask (a Dask cluster; same outputs).")
SchedulerOpt = typer.Option(None, "--scheduler", help="With --engine dask: scheduler address, e.g. "
                            "tcp://host:8786 (default: a LocalCluster on this machine).")
PartitionsOpt = typer.Option(None, "--partitions", help="With --engine dask: split a file into N partitions "
                             "(default: one per worker thread; a directory of Parquet files: one per file).")


def _engine(name: str) -> str:
    from creditgov.errors import SpecError

    if name not in ("local", "dask"):
        raise SpecError(f"--engine '{name}': use local or dask")
    return name


def _spec(path: str):
    from creditgov.spec import load_spec

    return load_spec(path)


def _say(msg: str) -> None:
    typer.echo(msg)


@app.command()
def validate(spec: str = SpecOpt, data: Optional[str] = DataOpt):
    """Validate input data with the spec's Great Expectations suite; quarantine bad rows."""
    from creditgov.pipeline import validate_input

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
          rounds: Optional[int] = typer.Option(None, help="Cap on boosting rounds (tests use few)."),
          promote: bool = typer.Option(False, "--promote", help="Then promote to @champion if the gates pass."),
          approver: Optional[str] = typer.Option(None, help="Who approves the promotion (with --promote).")):
    """Validate, train the XGBoost PD model and the scorecard challenger, evaluate, register in MLflow."""
    from creditgov.pipeline import run_training

    s = _spec(spec)
    result = run_training(s, spec, data, rounds, log=_say)
    for g in result.gates:
        _say(f"  gate {g.name:13s} {'pass' if g.passed else 'FAIL'}  {g.value}  ({g.rule})")
    if promote:
        _promote(s, approver or _default_approver(), result.version, strict=False)


def _default_approver() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user} (automated gate)"


def _promote(s, approver: str, version: Optional[str], strict: bool) -> None:
    from creditgov.errors import PromotionRefused
    from creditgov.promote import promote as do_promote

    try:
        v, _ = do_promote(s, approver, version)
    except PromotionRefused as exc:
        if strict:
            raise
        _say(f"promotion refused: {exc} (the version stays @challenger)")
        return
    _say(f"{s.registry.model_name} version {v} is now @champion (approved by {approver})")


@app.command()
def promote(spec: str = SpecOpt,
            version: Optional[str] = typer.Option(None, help="Model version (default: the @challenger)."),
            approver: str = typer.Option(..., help="Who approves: recorded on the model version.")):
    """Move @champion to a version only if its registration gates pass."""
    _promote(_spec(spec), approver, version, strict=True)


@app.command()
def decide(spec: str = SpecOpt, data: Optional[str] = DataOpt,
           version: Optional[str] = typer.Option(None, help="Model version (default: the @champion)."),
           as_of: Optional[str] = typer.Option(None, "--as-of", help="Decision date YYYY-MM-DD (default: today)."),
           out: str = typer.Option("decisions", help="Directory of decision logs."),
           previous: Optional[str] = typer.Option(None, help="The previous review's batch (on-book accounts): "
                                                  "gives the risk-rise trigger and the month-over-month reasons."),
           engine: str = EngineOpt, scheduler: Optional[str] = SchedulerOpt,
           partitions: Optional[int] = PartitionsOpt):
    """Score a batch with the champion, apply the policy, explain every decision, write the decision log."""
    from creditgov import tracking

    dask = _engine(engine) == "dask"
    tracking.check()  # an unreachable backend is reported before minutes of validation
    if dask:
        from creditgov.engine import decide as run_decide_dask

        r = run_decide_dask(_spec(spec), data, version, as_of, out, log=_say, previous=previous,
                            scheduler=scheduler, partitions=partitions)
    else:
        from creditgov.decide import decide as run_decide

        r = run_decide(_spec(spec), data, version, as_of, out, log=_say, previous=previous)
    from creditgov import audit

    n = audit.append_decisions(r.log)
    _say(f"  {n} decision records appended to the audit log {audit.audit_url()}")
    counts = r.log["action"].value_counts().to_dict()
    _say("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


@app.command()
def report(spec: str = SpecOpt,
           log_path: Optional[str] = typer.Option(None, "--log", help="Decision log (default: the newest for the spec)."),
           out: str = typer.Option("reports", help="Reports root; each run gets reports/<run>/."),
           sample: int = typer.Option(20, help="How many decisions get their own report and notices."),
           group: Optional[list[str]] = typer.Option(None, "--group", help="Group column for adverse-impact ratios.")):
    """Per-decision explanation reports, customer notices (zh/en) and the portfolio report, as HTML."""
    from creditgov.errors import DataError
    from creditgov.report import latest_log, make_report

    s = _spec(spec)
    path = log_path or latest_log(s)
    if path is None:
        raise DataError(f"no decision log for '{s.name}' in decisions/: run creditgov decide first")
    r = make_report(s, path, out, sample, group or None)
    _say(f"report: {r.index} ({len(r.decisions)} decisions with their own page and notices)")


@app.command()
def monitor(spec: str = SpecOpt, data: Optional[list[str]] = typer.Option(None, "--data", "-d",
                                                                          help="Batch file(s) to monitor, in order."),
            matured: Optional[str] = typer.Option(None, help="A labelled batch whose outcomes have matured: "
                                                  "the calibration basis for estimated performance."),
            months: Optional[str] = typer.Option(None, help="Simulator months to monitor, e.g. 13-24."),
            sim_dir: str = typer.Option("data/simulated/default", help="Simulator output (with --months)."),
            observed: bool = typer.Option(False, help="With --months: use each month's own labels (retrospective)."),
            version: Optional[str] = typer.Option(None, help="Model version (default: the @champion)."),
            evidently: bool = typer.Option(True, help="Also write the Evidently DataDriftPreset report."),
            out: str = typer.Option("reports", help="Reports root."),
            engine: str = EngineOpt, scheduler: Optional[str] = SchedulerOpt,
            partitions: Optional[int] = PartitionsOpt):
    """Stability (PSI/CSI), performance (observed or estimated) and a verdict against the champion's reference."""
    from creditgov import data as data_mod
    from creditgov.errors import SpecError
    from creditgov.monitor_job import monitor as run_monitor, parse_months, simulator_batches

    s = _spec(spec)
    if months:
        batches = simulator_batches(s, sim_dir, parse_months(months), observed)
    elif data:
        basis = data_mod.read_path(matured, s).frame if matured else None
        batches = [(Path(d).stem, data_mod.read_path(d, s).frame, basis) for d in data]
    else:
        raise SpecError("monitor needs --data FILE or --months RANGE")
    if _engine(engine) == "dask":
        from creditgov.engine import monitor as run_monitor_dask

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
    from creditgov import data as data_mod
    from creditgov.errors import SpecError
    from creditgov.monitor_job import _validated, parse_months
    from creditgov.recalibrate import recalibrate as run

    s = _spec(spec)
    if months:
        from creditgov.simulate import TARGET, load_months

        label = f"{sim_dir} months {months}"
        frame = load_months(sim_dir, parse_months(months), labelled=True).rename(columns={TARGET: s.target.column})
    elif data:
        label, frame = data, data_mod.read_path(data, s).frame
    else:
        raise SpecError("recalibrate needs --data FILE or --months RANGE of matured data")
    if s.target.column not in frame.columns:
        raise SpecError(f"{label}: no target column '{s.target.column}': recalibration needs matured outcomes")
    run(s, _validated(s, frame, label), label, version, monitoring_run, log=_say)


audit_app = typer.Typer(help="The tamper-evident decision audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify():
    """Recompute the hash chain; name any record altered, inserted or deleted (exit 8 if any)."""
    from creditgov import audit
    from creditgov.audit import AuditError

    r = audit.verify()
    if not r.ok:
        raise AuditError(f"audit log {audit.audit_url()}: {r.problems[0]}"
                         + (f" (and {len(r.problems) - 1} more problems)" if len(r.problems) > 1 else ""))
    _say(f"audit log {audit.audit_url()}: {r.records} records verified; head record {r.head_seq} hash {r.head_hash}")


@audit_app.command("prune")
def audit_prune(spec: str = SpecOpt):
    """Delete decision records older than the spec's audit.retention_months; the prune is itself recorded."""
    from creditgov import audit

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
    from creditgov.oversight import review as do_review

    e = do_review(decision_id, approve, override, reviewer, reason, limit)
    _say(f"decision {decision_id}: {e['resolution']} by {reviewer}: {e['original_action']} -> {e['final_action']}")


@app.command()
def contest(decision_id: str = typer.Argument(..., help="The decision contested."),
            spec: str = SpecOpt,
            data: str = typer.Option(..., "--data", "-d", help="The corrected input row (CSV/Parquet)."),
            reason: str = typer.Option("customer contest with corrected data", help="Why.")):
    """Re-decide with corrected inputs under the same model version and policy; link new to old."""
    from creditgov.oversight import contest as do_contest

    e = do_contest(_spec(spec), decision_id, data, reason, log=_say)
    _say(f"decision {decision_id} contested: {e['original_action']} -> {e['new_action']} "
         f"(new decision {e['new_decision_id']})")


@app.command()
def simulate(scenario: str = typer.Option("pipelines/scenarios/default.yaml", help="Scenario YAML."),
             out: Optional[str] = typer.Option(None, help="Output directory (default: data/simulated/<name>)."),
             accounts: Optional[int] = typer.Option(None, help="Override the number of accounts."),
             months: Optional[int] = typer.Option(None, help="Override the number of months."),
             seed: Optional[int] = typer.Option(None, help="Override the seed.")):
    """Generate monthly snapshot partitions of a simulated credit-line portfolio (seeded, deterministic)."""
    from creditgov.simulate import load_scenario, simulate as run

    scn = load_scenario(scenario, accounts=accounts, months=months, seed=seed)
    run(scn, out or f"data/simulated/{scn.name}", log=_say)


@app.command()
def expectations(spec: str = SpecOpt,
                 write: bool = typer.Option(False, "--write", help="Rewrite the suite from the catalogue.")):
    """Check (or --write) the expectation suite against the spec's feature catalogue."""
    from creditgov.errors import SpecError
    from creditgov import expectations as ex

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
    from creditgov import tracking

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


def main() -> None:
    env.apply()
    try:
        app(standalone_mode=False)
    except KeyboardInterrupt:
        print("creditgov: interrupted", file=sys.stderr)
        sys.exit(130)
    except CreditGovError as exc:
        print(f"creditgov: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except MemoryError:
        print("creditgov: error: out of memory", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        kind = _click_kind(exc)
        if kind == "exit":
            sys.exit(exc.exit_code)
        if kind == "usage":
            print(f"creditgov: usage error: {' '.join(exc.format_message().split())} (see creditgov --help)",
                  file=sys.stderr)
            sys.exit(exc.exit_code)
        if kind == "abort":
            print("creditgov: interrupted", file=sys.stderr)
            sys.exit(130)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"creditgov: internal error: {type(exc).__name__}: {first} (set CREDITGOV_DEBUG=1 for details)",
              file=sys.stderr)
        if os.environ.get("CREDITGOV_DEBUG"):
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
