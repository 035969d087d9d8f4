"""The periodic risk report of the book (`creditgov risk-report`): what investors and regulators read.

Computed from the monthly snapshots and the ledger of a simulated book (`creditgov simulate`), for a range
of months, as CSV files and one self-contained HTML page (inline CSS and SVG charts, no network):

* delinquency bucket distribution by month (current, 1-29, 30-59, 60-89, 90-179 days past due);
* roll-rate matrix: where the accounts of each bucket are one month later (a bucket, or charged off: an
  account leaves the active book only by charge-off at 180 days), pooled over the months;
* vintage curves: cumulative share of an origination quarter's accounts ever 30+ and ever 90+ days past due,
  by months on book (accounts opened within the range; the book open at month 1 has no origination month);
* charge-off and net loss rates by month, annualised (x 12): charged-off accounts over active accounts, and
  charged-off balances less recoveries over active balances (the ledger).

* collections treatment outcomes (`treatment_outcomes`): for each treatment the book's collections gave at a
  month-end review (snapshot column `collection_treatment`, simulate's documentation), by the bucket the account
  was in, the share cured (current, 0 days past due) one month later and within 3 months (current at any of the
  next 3 month-ends), and the share charged off within 3 months; and each month's hardship plans with the
  share cured within the plan, current at its end, and charged off. A treatment counts only where the months
  after it are in the range. Treatments are not randomised: a bucket's cure rates compare treatments given to
  different customers (a plan goes to customers who declared a shock), not the effect of a treatment.

* early-warning lift and pricing by tier, when a behaviour model is given (creditgov.report.early_warning).

* limit changes by month: accounts whose limit rose or fell since the month before (accounts on the book both
  months), the amounts, and the mean limit of the active book (`limit_changes`);
* the behaviour model's monitoring verdicts: the `monitor.verdict.NNNN` tags `creditgov monitor` keeps on the
  model version in the registry, oldest first (`model_verdicts`), when a spec is given.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from creditgov.atomic import build_dir
from creditgov.data import simulate
from creditgov.errors import DataError
from creditgov.report import early_warning
from creditgov.governance import registry
from creditgov.report import charts
from creditgov.report.pages import render, write_root_index, write_run_summary
from creditgov.spec import months_text

CHARGED_OFF = "charged_off"
STATES = (*simulate.BUCKETS, CHARGED_OFF)


@dataclass(frozen=True)
class RiskFigures:
    months: list[int]
    buckets: pd.DataFrame      # month_index, snapshot_month, accounts, share_<bucket> ...
    roll_counts: pd.DataFrame  # index from-bucket, columns STATES: account counts
    roll_rates: pd.DataFrame   # the same as shares of each row
    vintages: pd.DataFrame     # vintage, accounts, months_on_book, ever_30, ever_90
    losses: pd.DataFrame       # month_index, ..., charge_off_rate_accounts, charge_off_rate_balance, net_loss_rate
    treatments: pd.DataFrame | None = None  # treatment, bucket, treated, cured_1m, cure_rate_1m, ... (OUTCOME_COLUMNS)
    plans: pd.DataFrame | None = None       # hardship plans by month offered (PLAN_COLUMNS)


def _snapshots(directory: Path, months: list[int]) -> dict[int, pd.DataFrame]:
    out = {}
    for m in months:
        path = simulate.partition_dir(directory, m - 1) / "snapshot.parquet"
        if not path.exists():
            raise DataError(f"{path}: no snapshot for month {m} (run creditgov simulate)")
        f = pd.read_parquet(path, columns=["account_id", "snapshot_month", "month_index", "tenure_months",
                                           "days_past_due"])
        f["bucket"] = pd.cut(f["days_past_due"], [-1, 0, 29, 59, 89, 179], labels=list(simulate.BUCKETS)).astype(str)
        out[m] = f
    return out


def book_figures(directory: str | Path, months: list[int]) -> RiskFigures:
    directory = Path(directory)
    if not (directory / "scenario.json").exists():
        raise DataError(f"{directory}: no simulated book here (run creditgov simulate --out {directory})")
    if not (directory / "ledger.parquet").exists():
        raise DataError(f"{directory}: no ledger.parquet (a book from an earlier simulator; run creditgov simulate)")
    snaps = _snapshots(directory, months)

    rows = []
    for m, f in snaps.items():
        share = f["bucket"].value_counts(normalize=True).reindex(simulate.BUCKETS, fill_value=0.0)
        rows.append({"month_index": m, "snapshot_month": f["snapshot_month"].iloc[0], "accounts": len(f),
                     **{f"share_{b}": float(share[b]) for b in simulate.BUCKETS},
                     "share_30_plus": float((f["days_past_due"] >= 30).mean())})
    buckets = pd.DataFrame(rows)

    pairs = []
    for m in months:
        if m - 1 in snaps and m in snaps:
            j = snaps[m - 1][["account_id", "bucket"]].merge(
                snaps[m][["account_id", "bucket"]].rename(columns={"bucket": "next"}), on="account_id", how="left")
            pairs.append(j.fillna({"next": CHARGED_OFF}))
    if pairs:
        p = pd.concat(pairs, ignore_index=True)
        counts = pd.crosstab(p["bucket"], p["next"]).reindex(index=list(simulate.BUCKETS), columns=list(STATES),
                                                             fill_value=0)
    else:
        counts = pd.DataFrame(0, index=list(simulate.BUCKETS), columns=list(STATES))
    counts.index.name, counts.columns.name = "from", None
    rates = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0)

    # vintages: accounts opened within the months (first seen with tenure 0), by origination quarter
    allrows = pd.concat(snaps.values(), ignore_index=True)
    allrows["origin"] = allrows["month_index"] - allrows["tenure_months"].astype(int)
    new = allrows[allrows["origin"] >= months[0]].copy()
    vint = []
    if len(new):
        new["vintage"] = "Q" + ((new["origin"] - 1) // 3 + 1).astype(str)
        new["mob"] = new["month_index"] - new["origin"]
        for v, g in new.groupby("vintage", sort=False):
            size = g.loc[g["mob"] == 0, "account_id"].nunique()
            first30 = g[g["days_past_due"] >= 30].groupby("account_id")["mob"].min()
            first90 = g[g["days_past_due"] >= 90].groupby("account_id")["mob"].min()
            # a month on book counts only while every account of the vintage could have reached it
            horizon = int(months[-1] - g["origin"].max())
            for k in range(0, horizon + 1):
                vint.append({"vintage": v, "accounts": int(size), "months_on_book": k,
                             "ever_30": float((first30 <= k).sum() / size), "ever_90": float((first90 <= k).sum() / size)})
    vintages = pd.DataFrame(vint, columns=["vintage", "accounts", "months_on_book", "ever_30", "ever_90"])
    vintages = vintages.sort_values(["vintage", "months_on_book"], key=lambda s: s.str[1:].astype(int)
                                    if s.name == "vintage" else s).reset_index(drop=True)

    led = pd.read_parquet(directory / "ledger.parquet")
    led = led[led["month_index"].isin(months)].reset_index(drop=True)
    bal = led["active_balance"].replace(0, np.nan)
    led["charge_off_rate_accounts"] = led["charged_off_accounts"] / led["active_accounts"].replace(0, np.nan) * 12
    led["charge_off_rate_balance"] = led["charged_off_balance"] / bal * 12
    led["net_loss_rate"] = (led["charged_off_balance"] - led["recoveries"]) / bal * 12
    treatments, plans = treatment_outcomes(directory, months)
    return RiskFigures(list(months), buckets, counts, rates, vintages, led, treatments, plans)


# ------------------------------------------------------------------------------------------------ collections

OUTCOME_WINDOW = 3  # months: "cured within 3 months", the hardship plan's length in the default scenario
OUTCOME_COLUMNS = ["treatment", "bucket", "treated", "cured_1m", "cure_rate_1m", "treated_3m", "cured_3m",
                   "cure_rate_3m", "charged_off_3m", "charge_off_rate_3m"]
PLAN_COLUMNS = ["month_index", "plans", "cure_rate_1m", "cure_rate_3m", "current_at_end_3m", "charge_off_rate_3m"]


def treatment_outcomes(directory: str | Path, months: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cure rates per collections treatment and bucket, with the bucket "all"; hardship plans by month
    offered), from the snapshots' collection_treatment and days past due (module documentation)."""
    directory = Path(directory)
    dpd: dict[int, pd.Series] = {}
    treated = []
    for m in months:
        path = simulate.partition_dir(directory, m - 1) / "snapshot.parquet"
        if not path.exists():
            raise DataError(f"{path}: no snapshot for month {m} (run creditgov simulate)")
        f = pd.read_parquet(path)  # all columns: a book from an earlier simulator lacks the treatment
        if "collection_treatment" not in f.columns:
            raise DataError(f"{path}: no collection_treatment column (a book from an earlier simulator; run "
                            "creditgov simulate)")
        dpd[m] = f.set_index("account_id")["days_past_due"]
        t = f.loc[f["collection_treatment"] != "none", ["account_id", "collection_treatment", "days_past_due"]]
        treated.append(t.assign(month_index=m))
    t = pd.concat(treated, ignore_index=True).rename(columns={"collection_treatment": "treatment"})
    t["bucket"] = pd.cut(t["days_past_due"], [-1, 0, 29, 59, 89, 179], labels=list(simulate.BUCKETS)).astype(str)
    later = np.full((len(t), OUTCOME_WINDOW), np.nan)  # days past due k months later; NaN: off the book
    seen = np.zeros((len(t), OUTCOME_WINDOW), dtype=bool)  # month m + k is in the range
    for m, idx in t.groupby("month_index").groups.items():
        ids = t.loc[idx, "account_id"]
        for k in range(OUTCOME_WINDOW):
            if m + 1 + k in dpd:
                seen[t.index.get_indexer(idx), k] = True
                later[t.index.get_indexer(idx), k] = ids.map(dpd[m + 1 + k]).to_numpy(dtype="float64")
    t["has_1m"], t["has_3m"] = seen[:, 0], seen.all(axis=1)
    t["cured_1m"] = later[:, 0] == 0
    t["cured_3m"] = (later == 0).any(axis=1)
    t["current_at_end"] = later[:, -1] == 0
    t["charged_off_3m"] = np.isnan(later).any(axis=1) & t["has_3m"]  # an account leaves the book by charge-off

    rows = []
    order = [x for x in simulate.TREATMENTS if x != "none"]
    for name in order:
        g = t[t["treatment"] == name]
        for bucket in ("all", *simulate.BUCKETS[1:]):
            b = g if bucket == "all" else g[g["bucket"] == bucket]
            one, three = b[b["has_1m"]], b[b["has_3m"]]
            if not len(one) and bucket != "all":
                continue
            rows.append({"treatment": name, "bucket": bucket, "treated": len(one), "cured_1m": int(one["cured_1m"].sum()),
                         "cure_rate_1m": one["cured_1m"].mean() if len(one) else np.nan,
                         "treated_3m": len(three), "cured_3m": int(three["cured_3m"].sum()),
                         "cure_rate_3m": three["cured_3m"].mean() if len(three) else np.nan,
                         "charged_off_3m": int(three["charged_off_3m"].sum()),
                         "charge_off_rate_3m": three["charged_off_3m"].mean() if len(three) else np.nan})
    outcomes = pd.DataFrame(rows, columns=OUTCOME_COLUMNS)
    p = t[(t["treatment"] == "hardship_plan") & t["has_3m"]]
    plans = (p.groupby("month_index").agg(plans=("account_id", "size"), cure_rate_1m=("cured_1m", "mean"),
                                          cure_rate_3m=("cured_3m", "mean"), current_at_end_3m=("current_at_end", "mean"),
                                          charge_off_rate_3m=("charged_off_3m", "mean"))
             .reset_index().reindex(columns=PLAN_COLUMNS))
    return outcomes, plans


# ------------------------------------------------------------------------------------------------ charts


def _svg(fig) -> str:
    """Through the reports' one SVG writer (charts.to_svg: deterministic, inert under the page's CSP), titled by
    the figure's axes titles."""
    return charts.to_svg(fig, "; ".join(ax.get_title() for ax in fig.axes if ax.get_title()) or "chart")


def _charts(fig_: RiskFigures) -> dict[str, str]:
    import matplotlib  # heavy: only when a report is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: as above

    plt.rcParams.update({"svg.hashsalt": "creditgov", "svg.fonttype": "none", "font.size": 9})
    out = {}
    b = fig_.buckets
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    late = [x for x in simulate.BUCKETS if x != "current"]
    ax.stackplot(b["month_index"], *[100 * b[f"share_{x}"] for x in late], labels=[f"{x} days" for x in late])
    ax.set_xlabel("month"), ax.set_ylabel("% of active accounts"), ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Delinquent accounts by days past due")
    fig.tight_layout()
    out["buckets"] = _svg(fig)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.2), sharey=False)
    for ax, col, title in ((axes[0], "ever_30", "ever 30+ days past due"), (axes[1], "ever_90", "ever 90+ days past due")):
        for v, g in fig_.vintages.groupby("vintage", sort=False):
            ax.plot(g["months_on_book"], 100 * g[col], label=v)
        ax.set_title(f"Vintages: {title}"), ax.set_xlabel("months on book"), ax.set_ylabel("% of accounts opened")
    if len(fig_.vintages):
        axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out["vintages"] = _svg(fig)
    plt.close(fig)

    led = fig_.losses
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    ax.plot(led["month_index"], 100 * led["charge_off_rate_accounts"], label="charge-off rate (accounts)")
    ax.plot(led["month_index"], 100 * led["net_loss_rate"], label="net loss rate (balances)")
    ax.set_xlabel("month"), ax.set_ylabel("% a year (monthly x 12)"), ax.legend(fontsize=8)
    ax.set_title("Charge-offs and net losses, annualised")
    fig.tight_layout()
    out["losses"] = _svg(fig)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------ writing


# ------------------------------------------------------------------------------------------------ limit changes


def limit_changes(directory: str | Path, months: list[int]) -> pd.DataFrame:
    """Per month: accounts on the book at the end of the month before and of the month whose limit rose or fell,
    their share of those accounts, the amounts raised and cut, and the mean limit of the active book. The first
    month of the range has no month before within it: its changes are counted against the month before when
    that snapshot exists, else left out."""
    directory = Path(directory)
    rows = []
    prev = None
    for m in ([months[0] - 1] if months[0] > 1 else []) + list(months):
        path = simulate.partition_dir(directory, m - 1) / "snapshot.parquet"
        if not path.exists():
            if m in months:
                raise DataError(f"{path}: no snapshot for month {m} (run creditgov simulate)")
            continue
        f = pd.read_parquet(path, columns=["account_id", "snapshot_month", "credit_limit"])
        if prev is not None and m in months:
            j = prev.merge(f, on="account_id", suffixes=("_before", ""), validate="one_to_one")
            delta = j["credit_limit"] - j["credit_limit_before"]
            up, down = delta > 0, delta < 0
            rows.append({"month_index": m, "snapshot_month": f["snapshot_month"].iloc[0], "accounts_both": len(j),
                         "raised": int(up.sum()), "cut": int(down.sum()),
                         "raised_share": float(up.mean()) if len(j) else float("nan"),
                         "cut_share": float(down.mean()) if len(j) else float("nan"),
                         "raised_amount": float(delta[up].sum()), "cut_amount": float((-delta[down]).sum()),
                         "mean_limit": float(f["credit_limit"].mean())})
        prev = f[["account_id", "credit_limit"]]
    return pd.DataFrame(rows, columns=["month_index", "snapshot_month", "accounts_both", "raised", "cut",
                                       "raised_share", "cut_share", "raised_amount", "cut_amount", "mean_limit"])


def _limit_chart(lim: pd.DataFrame) -> str:
    return charts.lines([str(m) for m in lim["month_index"]],
                        {"limits raised (% of accounts)": list(100 * lim["raised_share"]),
                         "limits cut (% of accounts)": list(100 * lim["cut_share"])},
                        "Limit changes by month", ylabel="% of accounts")


# ------------------------------------------------------------------------------------------------ monitoring verdicts


@dataclass(frozen=True)
class ModelVerdicts:
    model_name: str
    version: str | None          # None: no such registered model (or no @champion)
    verdicts: list               # registry.Verdict, oldest first


def model_verdicts(model_name: str, version: str | None = None) -> ModelVerdicts:
    """The monitoring verdicts kept on a registered model version (default: the @champion), oldest first."""
    from mlflow.exceptions import MlflowException  # heavy: only when the registry is read

    registry.configure()
    c = registry.client()
    with registry.backend_errors(f"read the monitoring verdicts of {model_name}"):
        try:
            mv = (c.get_model_version(model_name, str(version)) if version is not None
                  else c.get_model_version_by_alias(model_name, "champion"))
        except MlflowException as exc:
            if not registry.is_not_found(exc):
                raise
            return ModelVerdicts(model_name, None, [])
    return ModelVerdicts(model_name, str(mv.version), registry.verdict_history(mv.tags))


def _verdict_frame(v: ModelVerdicts) -> pd.DataFrame:
    return pd.DataFrame([{"model": v.model_name, "version": v.version, "seq": x.seq, "verdict": x.verdict,
                          "batch": x.batch, "monitoring_run": x.run_id} for x in v.verdicts],
                        columns=["model", "version", "seq", "verdict", "batch", "monitoring_run"])


# ------------------------------------------------------------------------------------------------ writing


def write_report(directory: str | Path, months: list[int], out_root: str | Path = "reports",
                 warning: early_warning.EarlyWarningFigures | None = None, warning_note: str = "",
                 verdicts: ModelVerdicts | None = None) -> Path:
    """CSV files and index.html in <out_root>/risk-<book>-<months>/; returns the directory. `warning`: the early
    warning's lift and the pricing by tier (early_warning.figures), or `warning_note` saying why there are none;
    `verdicts`: the model's monitoring verdicts to show (model_verdicts), when a spec names the model."""
    directory = Path(directory)
    figs = book_figures(directory, months)
    limits = limit_changes(directory, months)
    try:
        meta = json.loads((directory / "scenario.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{directory}: no scenario.json (not a simulated book)") from None
    name = meta["scenario"]["name"]
    out = Path(out_root) / f"risk-{name}-{months[0]:02d}-{months[-1]:02d}"

    def fill(tmp: Path) -> None:
        figs.buckets.to_csv(tmp / "bucket_distribution.csv", index=False, float_format="%.6f")
        figs.roll_rates.reset_index().to_csv(tmp / "roll_rates.csv", index=False, float_format="%.6f")
        figs.roll_counts.reset_index().to_csv(tmp / "roll_counts.csv", index=False)
        figs.vintages.to_csv(tmp / "vintages.csv", index=False, float_format="%.6f")
        figs.losses.to_csv(tmp / "losses.csv", index=False, float_format="%.6f")
        figs.treatments.to_csv(tmp / "treatment_outcomes.csv", index=False, float_format="%.6f")
        figs.plans.to_csv(tmp / "hardship_plans.csv", index=False, float_format="%.6f")
        if warning is not None:
            early_warning.write_csv(warning, tmp)
        limits.to_csv(tmp / "limit_changes.csv", index=False, float_format="%.6f")
        if verdicts is not None:
            _verdict_frame(verdicts).to_csv(tmp / "monitoring_verdicts.csv", index=False)
        shock = meta["scenario"].get("shock")
        html = render("risk_report.html", book=str(directory), scenario=name, months=months,
                      generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      generator=meta.get("generator", ""), shock=shock, charts=_charts(figs),
                      buckets=figs.buckets.to_dict("records"), bucket_names=list(simulate.BUCKETS),
                      roll=[(b, [figs.roll_rates.loc[b, s] for s in STATES], int(figs.roll_counts.loc[b].sum()))
                            for b in simulate.BUCKETS], states=list(STATES),
                      losses=figs.losses.to_dict("records"),
                      vintage_table=_vintage_table(figs.vintages),
                      treatments=figs.treatments.to_dict("records"), plans=figs.plans.to_dict("records"),
                      outcome_window=OUTCOME_WINDOW, **early_warning.context(warning, warning_note),
                      limits=limits.to_dict("records"), limit_chart=_limit_chart(limits) if len(limits) else "",
                      verdicts=verdicts)
        (tmp / "index.html").write_text(html, encoding="utf-8")
        last = verdicts.verdicts[-1].verdict if verdicts is not None and verdicts.verdicts else None
        model = f"{verdicts.model_name} v{verdicts.version}" if verdicts is not None and verdicts.version else None
        write_run_summary(tmp, kind="risk", model=model, policy=None, rows=None,
                          detail=f"book {name}, {months_text(months)}", verdict=last)

    build_dir(out, fill)
    write_root_index(out_root)
    return out


def _vintage_table(v: pd.DataFrame) -> list[dict]:
    """Per vintage: size and the cumulative 30+ / 90+ shares at 3, 6 and 12 months on book (when reached)."""
    rows = []
    for name, g in v.groupby("vintage", sort=False):
        at = g.set_index("months_on_book")
        rows.append({"vintage": name, "accounts": int(g["accounts"].iloc[0]),
                     **{f"{c}_{k}": (float(at.loc[k, c]) if k in at.index else None)
                        for c in ("ever_30", "ever_90") for k in (3, 6, 12)}})
    return rows
