"""Policy replay before deployment: a candidate policy version against the current one on the same simulated months.

Both policies decide through the one decision path (`decide.decide_rows`), with the same model, on the same
months of the simulated book. The book responds to the policy: a suspension stops spending, a limit change
moves spending and utilisation (simulate.py: spending scales with the limit, utilisation drives the roll to
delinquency), so each policy is replayed by resimulating the book from the same seed with the policy deciding
every month from the first replayed month on (`simulate.simulate(review=...)`). Before that month the two
books are the same book (the lender's own operations); from it, each policy's suspensions and limits replace
them, and the customers, their stresses, the shock and every random draw stay the same (common random numbers:
the review consumes no draw), so the difference between the two books is the policies' doing, not noise.

Each policy's run gives, month by month: its decisions (action counts, newly suspended accounts, limits cut
and raised, credit open to customers) and the book's outcome under it (30+ days past due share, charge-offs,
recoveries, net loss, spending). Customer impact: distinct customers given an adverse action (a notice each),
and of those the ones who never went 30+ days past due in the replayed months (adverse actions on customers
who kept paying). The decisions of a replay are not real decisions: no log is published and nothing enters
the audit trail.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from creditgov.data import simulate
from creditgov.data import validate
from creditgov.decision.decide import (SHAP_PREFIX, DecisionModel, PreviousReview, decide_rows, explain_batch)
from creditgov.decision.policy import ADVERSE_ACTIONS
from creditgov.errors import SpecError, UsageError
from creditgov.spec import PipelineSpec, Policy

FAVOURABLE = ("keep", "raise", "restore")


@dataclass
class PolicyRun:
    """One policy replayed: per month, its decisions and the book's outcome; per account, what it was given."""

    policy: Policy
    months: pd.DataFrame                    # one row per replayed month (see _month_row)
    actions: pd.DataFrame                   # month_index x action: decision counts
    adverse_accounts: set = field(default_factory=set)
    ever_30: set = field(default_factory=set)   # accounts 30+ days past due in a replayed month (after the review)


@dataclass
class Replay:
    current: PolicyRun
    candidate: PolicyRun
    months: list[int]
    scenario: dict
    model_version: str
    summary: pd.DataFrame                   # metric, current, candidate, difference
    books: dict[str, Path] | None = None    # the resimulated books, when kept (replay(keep=True))


def load_candidate(path: str | Path, spec: PipelineSpec) -> PipelineSpec:
    """The spec with the candidate policy: a YAML file holding a policy (a `policy:` mapping, as in a spec, or
    the policy's mapping itself). One-line SpecError naming the file and key on a bad policy."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: candidate policy file not found") from None
    except yaml.YAMLError:
        raise SpecError(f"{path}: not valid YAML") from None
    if isinstance(raw, dict) and isinstance(raw.get("policy"), dict):
        raw = raw["policy"]
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a candidate policy is a YAML mapping (or a `policy:` mapping)")
    try:
        Policy.model_validate(raw)
        out = PipelineSpec.model_validate({**spec.model_dump(mode="python"), "policy": raw})
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"] if p != "policy")
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        raise SpecError(f"{path}: policy.{loc}: {what}" if loc else f"{path}: {what}") from None
    if out.policy.on_book is None:
        raise SpecError(f"{path}: policy.on_book: a replay on the simulated book needs an on-book policy")
    if out.policy.content_hash == spec.policy.content_hash:
        raise UsageError(f"{path}: the candidate policy is the current one (same content hash)")
    if out.policy.version == spec.policy.version:
        raise SpecError(f"{path}: policy.version: the candidate needs its own version (the current one is "
                        f"{spec.policy.version})")
    return out


class _Reviewer:
    """The policy's monthly review of the simulated book, through decide_rows; collects what it decided."""

    def __init__(self, spec: PipelineSpec, model: DecisionModel, months: list[int], scn: simulate.Scenario):
        self.spec, self.model, self.months, self.scn = spec, model, months, scn
        self.previous: PreviousReview | None = None
        self.rows: list[dict] = []
        self.actions: dict[int, dict[str, int]] = {}
        self.adverse: set = set()
        self.ever_30: set = set()
        self.ids = spec.source.id_column
        self.compiled: validate.CompiledSuite | None = None

    def _validated(self, frame: pd.DataFrame, month: int) -> validate.Validated:
        # the suite compiled once (the service's validation, held to GX's verdicts by
        # tests/data/test_fast_validation.py): GX costs seconds a month, and a replay validates every month twice
        if self.compiled is None:
            self.compiled = validate.CompiledSuite(validate.suite_for(self.spec, frame.columns))
        label = f"replay month {month}"
        rows = validate.validate_rows(frame, self.spec, self.compiled, label)
        validate.enforce_quarantine_share(rows.outcome, self.spec, label)
        return rows

    def __call__(self, frame: pd.DataFrame, month: int):
        if month == self.months[0] - 1:  # the month before: its PDs are the first review's previous PDs
            clean = self._validated(frame, month).clean
            e = explain_batch(self.model.model, clean, self.spec)
            ids = clean[self.ids].astype(str).to_numpy()
            self.previous = PreviousReview(pd.Series(e.pd, index=ids),
                                           pd.DataFrame(e.phi, index=ids, columns=e.features))
            return None
        if month not in self.months:
            return None
        f = self.spec.policy.on_book.fields
        rows = self._validated(frame, month)
        as_of = f"{simulate.month_label(self.scn, month - 1)}-01"
        log = decide_rows(rows, self.model, self.spec, as_of, previous=self.previous).log
        pos = log["row_number"].to_numpy() - 1  # frame row of each log row (rows are numbered by position)
        action = log["action"].to_numpy(dtype=object)
        was_suspended = frame[f.suspended].to_numpy(dtype=bool)
        current = frame[f.current_limit].to_numpy(dtype="float64")
        suspended = was_suspended.copy()
        limit = current.copy()
        suspended[pos[action == "suspend"]] = True
        suspended[pos[action == "restore"]] = False
        moved = np.isin(action, ("cut", "raise"))
        limit[pos[moved]] = log["limit"].to_numpy(dtype="float64")[moved]

        ids = frame[self.ids].astype(str).to_numpy()
        adverse = np.isin(action, ADVERSE_ACTIONS)
        self.adverse.update(ids[pos[adverse]].tolist())
        self.ever_30.update(ids[frame[f.days_past_due].to_numpy(dtype="float64") >= 30].tolist())
        decided = log["status"].to_numpy() == "decided"
        self.previous = PreviousReview(
            pd.Series(log["pd"].to_numpy(dtype="float64")[decided], index=ids[pos[decided]]),
            pd.DataFrame(log.loc[decided, [c for c in log.columns if c.startswith(SHAP_PREFIX)]].to_numpy(
                dtype="float64"), index=ids[pos[decided]],
                columns=[c[len(SHAP_PREFIX):] for c in log.columns if c.startswith(SHAP_PREFIX)]))
        self.actions[month] = {str(k): int(v) for k, v in pd.Series(action).value_counts().items()}
        cut, up = action == "cut", action == "raise"
        self.rows.append({
            "month_index": month, "accounts_reviewed": int(len(log)),
            "adverse_actions": int(adverse.sum()),
            "newly_suspended": int((action == "suspend")[~was_suspended[pos]].sum()),
            "suspended_after_review": int(suspended.sum()),
            "limits_cut": int(cut.sum()), "limit_cut_amount": float((current[pos[cut]] - limit[pos[cut]]).sum()),
            "limits_raised": int(up.sum()), "limit_raise_amount": float((limit[pos[up]] - current[pos[up]]).sum()),
            "credit_open": float(limit[~suspended].sum()),
            "mean_pd": float(np.nanmean(log["pd"].to_numpy(dtype="float64"))),
        })
        return suspended, limit


def _run(spec: PipelineSpec, model: DecisionModel, scn: simulate.Scenario, months: list[int], out: Path) -> PolicyRun:
    reviewer = _Reviewer(spec, model, months, scn)
    simulate.simulate(scn, out, log=lambda *_: None, review=reviewer)
    led = pd.read_parquet(out / "ledger.parquet").set_index("month_index")
    rows = []
    for r in reviewer.rows:
        m = r["month_index"]
        snap = pd.read_parquet(simulate.partition_dir(out, m - 1) / "snapshot.parquet",
                               columns=["days_past_due", "spend_amount", "balance"])
        lm = led.loc[m]
        rows.append({**r, "snapshot_month": lm["snapshot_month"], "active_accounts": int(lm["active_accounts"]),
                     "active_balance": float(lm["active_balance"]),
                     "share_30_plus": float((snap["days_past_due"] >= 30).mean()),
                     "spending": float(snap["spend_amount"].sum()),
                     "charged_off_accounts": int(lm["charged_off_accounts"]),
                     "charged_off_balance": float(lm["charged_off_balance"]),
                     "recoveries": float(lm["recoveries"]),
                     "net_loss": float(lm["charged_off_balance"] - lm["recoveries"])})
    frame = pd.DataFrame(rows)
    actions = pd.DataFrame(reviewer.actions).T.fillna(0).astype(int).sort_index()
    actions.index.name = "month_index"
    return PolicyRun(spec.policy, frame, actions, reviewer.adverse, reviewer.ever_30)


def _summary(cur: PolicyRun, cand: PolicyRun) -> pd.DataFrame:
    def figures(run: PolicyRun) -> dict[str, float]:
        m, a = run.months, run.actions
        reviewed = float(m["accounts_reviewed"].sum())
        count = lambda name: float(a[name].sum()) if name in a.columns else 0.0  # noqa: E731
        kept_paying = run.adverse_accounts - run.ever_30
        return {
            "decisions": reviewed,
            "approvals (keep, raise, restore)": sum(count(x) for x in FAVOURABLE),
            "approval rate": sum(count(x) for x in FAVOURABLE) / reviewed if reviewed else float("nan"),
            **{f"action: {x}": count(x) for x in a.columns},
            "newly suspended": float(m["newly_suspended"].sum()),
            "limits cut": float(m["limits_cut"].sum()), "limit cut amount": float(m["limit_cut_amount"].sum()),
            "limits raised": float(m["limits_raised"].sum()),
            "limit raise amount": float(m["limit_raise_amount"].sum()),
            "customers given an adverse action": float(len(run.adverse_accounts)),
            "of whom never 30+ days past due": float(len(kept_paying)),
            "mean credit open to customers": float(m["credit_open"].mean()),
            "spending": float(m["spending"].sum()),
            "mean 30+ DPD share": float(m["share_30_plus"].mean()),
            "30+ DPD share, last month": float(m["share_30_plus"].iloc[-1]),
            "charged-off accounts": float(m["charged_off_accounts"].sum()),
            "charged-off balance": float(m["charged_off_balance"].sum()),
            "recoveries": float(m["recoveries"].sum()),
            "net loss": float(m["net_loss"].sum()),
            "net loss rate (annualised)": float(m["net_loss"].sum() / m["active_balance"].sum() * 12)
            if m["active_balance"].sum() else float("nan"),
        }

    a, b = figures(cur), figures(cand)
    names = list(dict.fromkeys([*a, *b]))
    rows = [{"metric": k, "current": a.get(k, 0.0), "candidate": b.get(k, 0.0)} for k in names]
    out = pd.DataFrame(rows)
    out["difference"] = out["candidate"] - out["current"]
    return out


def replay(spec: PipelineSpec, candidate: PipelineSpec, model: DecisionModel, months: list[int],
           accounts: int | None = None, work: str | Path | None = None, keep: bool = False,
           seed: int | None = None) -> Replay:
    """Replay the spec's current policy and the candidate's on `months` of the spec's simulated scenario
    (resimulated from its seed with each policy deciding; `accounts` and `seed` override the scenario's).
    The two books are made in a temporary folder under `work` (default: the system's), removed after unless
    `keep` (then Replay.books names them)."""
    if spec.source.kind != "snapshots" or spec.source.scenario is None:
        raise SpecError(f"spec '{spec.name}': source.kind snapshots with a scenario is needed for a replay")
    if spec.policy is None or spec.policy.on_book is None:
        raise SpecError(f"spec '{spec.name}': policy.on_book: a replay on the simulated book needs an on-book policy")
    months = sorted(set(months))
    if months != list(range(months[0], months[-1] + 1)) or months[0] < 2:
        raise UsageError(f"--months {months[0]}-{months[-1]}: a replay needs consecutive months from month 2 on")
    scn = simulate.load_scenario(spec.source.scenario, accounts=accounts, seed=seed)
    if months[-1] > scn.months:
        raise UsageError(f"--months: the scenario {scn.name} has {scn.months} months, not {months[-1]}")
    scn = scn.model_copy(update={"months": max(months[-1], 2)})
    tmp = Path(tempfile.mkdtemp(prefix="creditgov-replay-", dir=work))
    try:
        cur = _run(spec, model, scn, months, tmp / "current")
        cand = _run(candidate, model, scn, months, tmp / "candidate")
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return Replay(cur, cand, months, scn.model_dump(mode="json"), model.version, _summary(cur, cand),
                  {"current": tmp / "current", "candidate": tmp / "candidate"} if keep else None)


def comparison_json(r: Replay, spec: PipelineSpec) -> dict:
    """The comparison as attached to the candidate policy version (plain JSON, deterministic)."""
    def pol(p: Policy) -> dict:
        return {"name": p.name, "version": p.version, "content_hash": p.content_hash}

    return {"kind": "policy-replay", "candidate": pol(r.candidate.policy), "current": pol(r.current.policy),
            "model": {"name": spec.registry.model_name, "version": r.model_version},
            "scenario": {k: r.scenario[k] for k in ("name", "seed", "accounts", "months")},
            "months": r.months, "method": "resimulated from the same seed, each policy deciding every replayed month",
            "summary": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                        for row in r.summary.to_dict("records")]}


def attach(r: Replay, spec: PipelineSpec, root: str | Path = "policy_replays") -> Path:
    """The comparison attached to the candidate policy version: <root>/<policy name>/<version>-<hash 16>/
    replay-vs-<current version>-<current hash 12>-<scenario>-seed<seed>-<accounts>-months-<a>-<b>.json (one file
    per comparison: against which policy, on which book and months)."""
    c, p = r.candidate.policy, r.current.policy
    d = Path(root) / c.name / f"{c.version}-{c.content_hash[:16]}"
    d.mkdir(parents=True, exist_ok=True)
    book = f"{r.scenario['name']}-seed{r.scenario['seed']}-{r.scenario['accounts']}"
    path = d / (f"replay-vs-{p.version}-{p.content_hash[:12]}-{book}-months-{r.months[0]:02d}-{r.months[-1]:02d}"
                ".json")
    path.write_text(json.dumps(comparison_json(r, spec), indent=2, sort_keys=True, ensure_ascii=False),
                    encoding="utf-8")
    return path
