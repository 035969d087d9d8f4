"""End to end for the behaviour model: simulate -> train -> promote -> decide on book -> monitor -> recalibrate.

One small default-scenario book (15,000 accounts, 24 months) in a module-scoped temporary
project root (the working directory, MLflow on its default sqlite:///<cwd>/mlflow.db with
MLFLOW_TRACKING_URI unset); the behaviour model is trained once on its months 1-3 with 60
boosting rounds and promoted. The null case simulates no_shock books with other seeds and
calls monitor.run_monitor directly (no Great Expectations, no MLflow) for speed.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import in_project, quiet, train_and_promote

pytestmark = pytest.mark.e2e

SPEC_PATH = "pipelines/behaviour.yaml"
BOOK = "data/simulated/small"
ACCOUNTS = 15_000
SHOCK_MONTH = 16
MONITOR_MONTHS = [14, 15, 16, 17, 18]
NULL_SEEDS = list(range(1, 11))
NULL_ACCOUNTS = 6000
NULL_MONTHS = list(range(13, 25))  # every month with a matured basis (m - 12)
SUSPEND_TRIGGERS = ("rule:suspend_fraud", "rule:suspend_overdue", "rule:suspend_cumulative_overdue",
                    "rule:suspend_risk_rise")
WORSE_THAN_WATCH = ("recalibrate", "rebuild")


@pytest.fixture(scope="module")
def book(e2e_root):
    """The simulated book, the spec pointing at it, and the trained and promoted behaviour model."""
    from creditgov.data import simulate
    from creditgov.spec import load_spec

    with in_project(e2e_root, drop=("CREDITGOV_PSEUDONYM_KEY", "CREDITGOV_DECISION_LOG", "CREDITGOV_SPEC",
                                    "CREDITGOV_AUDIT_URL")):
        scn = simulate.load_scenario("pipelines/scenarios/default.yaml", accounts=ACCOUNTS)
        assert scn.shock is not None and scn.shock.month == SHOCK_MONTH
        sim = simulate.simulate(scn, BOOK, log=quiet)
        spec = load_spec(SPEC_PATH)
        spec = spec.model_copy(update={"source": spec.source.model_copy(update={"path": BOOK})})
        t = train_and_promote(spec, SPEC_PATH, 60, "tester")
        assert t.version == t.trained.version and all(g.passed for g in t.gates)
        yield SimpleNamespace(root=e2e_root, spec=spec, scenario=scn, sim=sim, trained=t.trained, version=t.version)


def _snapshot(month: int) -> str:
    return f"{BOOK}/month={month:02d}/snapshot.parquet"


# ------------------------------------------------------------------------ (a) the model's evidence


def test_behaviour_model_beats_the_model_without_account_history(book, client):
    m = client.get_run(book.trained.run_id).data.metrics
    for k in ("test_auc", "test_auc_ci_low", "test_auc_ci_high", "test_without_auc", "test_without_auc_ci_low",
              "test_without_auc_ci_high"):
        assert k in m, k
    assert m["test_auc_ci_low"] <= m["test_auc"] <= m["test_auc_ci_high"]
    assert m["test_without_auc_ci_low"] <= m["test_without_auc"] <= m["test_without_auc_ci_high"]
    assert m["test_auc"] > m["test_without_auc"]
    assert m["test_auc_ci_low"] > m["test_without_auc_ci_high"], m  # the CIs are disjoint
    assert m["test_auc"] >= book.spec.gates.min_auc
    print(f"behaviour test AUC {m['test_auc']:.4f} [{m['test_auc_ci_low']:.4f}, {m['test_auc_ci_high']:.4f}] vs "
          f"without history {m['test_without_auc']:.4f} [{m['test_without_auc_ci_low']:.4f}, "
          f"{m['test_without_auc_ci_high']:.4f}]")


def test_the_reference_profile_is_stored_with_the_version(book):
    from creditgov.monitor import drift

    profile, sample, _ = drift.load_reference(book.spec.registry.model_name, book.version)
    assert set(profile["features"]) == {f.name for f in book.spec.model_inputs}
    assert "employment" in profile["segments"]
    assert profile["development_metrics"]["test_auc"] == pytest.approx(book.trained.metrics["test_auc"])
    assert sample is not None and not ({"customer_name", "phone"} & set(sample.columns))


# ---------------------------------------------------------------------------- (b) decide on book


@pytest.fixture(scope="module")
def decided(book):
    from creditgov.decision import decide

    month = 17
    res = decide.decide(book.spec, data_path=_snapshot(month), previous=_snapshot(month - 1),
                        as_of="2025-05-01", log=quiet)
    return SimpleNamespace(res=res, log=decide.read_log(res.path), bytes=res.path.read_bytes(),
                           source=pd.read_parquet(_snapshot(month)), previous=pd.read_parquet(_snapshot(month - 1)))


def test_decide_rows_in_equal_decided_plus_quarantined(decided):
    r, log = decided.res, decided.log
    assert r.rows_in == len(decided.source) == len(log)
    assert r.rows_in == r.rows_decided + r.rows_quarantined
    assert (log["status"] == "decided").sum() == r.rows_decided
    assert (log["status"] == "quarantined").sum() == r.rows_quarantined
    assert sorted(log["row_number"]) == list(range(1, r.rows_in + 1))


def test_decide_makes_every_kind_of_on_book_decision(decided):
    log = decided.log[decided.log["status"] == "decided"]
    actions = set(log["action"])
    assert {"cut", "suspend", "restore", "review"} <= actions, actions
    present = set(log.loc[log["action"] == "suspend", "decided_by"])
    missing = [t for t in SUSPEND_TRIGGERS if t not in present]
    assert missing == [], f"suspension triggers absent at {ACCOUNTS} accounts: {missing}"
    assert log["review_queue"].sum() > 0
    assert (log.loc[log["review_queue"], "action"] == "review").all()
    counts = log["decided_by"].value_counts().to_dict()
    print(f"month 17 decisions: {log['action'].value_counts().to_dict()}; decided_by {counts}")


def test_each_decision_kind_has_reasons(decided):
    log = decided.log[decided.log["status"] == "decided"]
    for action in ("cut", "suspend", "restore", "review"):
        rows = log[log["action"] == action]
        assert len(rows) > 0, action
        assert rows["reason_codes"].map(len).gt(0).all(), action
        assert rows["reasons_en"].map(len).gt(0).all() and rows["reasons_zh"].map(len).gt(0).all(), action
        assert (rows["reason_codes"].map(len) == rows["reasons_en"].map(len)).all()


def test_on_book_notices_say_what_happened_in_the_customers_words(decided, book):
    """Real on-book decisions in notices: each kind its own words, no column name, what restores the line."""
    from creditgov.report import pages
    from helpers import names_leaked, notice_body

    spec = book.spec
    log = pages.select_sample(decided.log, 40).set_index("decision_id", drop=False)  # the report's sample
    assert set(SUSPEND_TRIGGERS) <= set(log["decided_by"])
    stamp = {"generated_at": "2026-11-30T00:00:00+00:00"}
    for did, row in log.iterrows():
        ctx = pages._decision_context(row, spec, {}, stamp)  # as pages.build renders them, without the charts
        texts = {lang: notice_body(pages.render("notice.html", n=n, **ctx)) for lang, n in ctx["notices"].items()}
        for lang, body in texts.items():
            assert names_leaked(body, spec, lang) == [], (did, lang, names_leaked(body, spec, lang))
            assert getattr(spec.lender.name, lang) in body
        en = " ".join(texts["en"].split())
        assert "your application" not in en.lower(), did
        if row["decided_by"] == "rule:remain_suspended":
            assert "remains suspended" in en and "has been suspended" not in en
        elif row["action"] == "suspend" and row["decided_by"] != "rule:suspend_fraud":
            assert f"at least {spec.policy.on_book.restore_clean_months} months in a row" in en
        assert "credit_limit" not in row["reason_codes"]


def test_cuts_lower_the_limit_and_suspensions_zero_it(decided, book):
    log = decided.log[decided.log["status"] == "decided"]
    cut = log[log["action"] == "cut"]
    floor = book.spec.policy.limit.minimum
    assert (cut["limit"] <= cut["previous_limit"]).all()
    above = cut["previous_limit"] > floor  # a limit already at the policy minimum cannot go lower
    assert above.mean() > 0.9
    assert (cut.loc[above, "limit"] < cut.loc[above, "previous_limit"]).all()
    assert (cut["tier"] == "high").all()
    assert (log.loc[log["action"] == "suspend", "limit"] == 0).all()


def test_rule_decided_suspensions_name_the_rule_first(decided):
    log = decided.log
    sus = log[(log["action"] == "suspend") & log["decided_by"].str.startswith("rule:")]
    assert len(sus) > 0
    first = sus["reason_codes"].map(lambda c: c[0])
    assert (first == sus["decided_by"]).all()
    assert (sus["rules_triggered"].map(lambda r: "rule:" + r[0]) == sus["decided_by"]).all()


def test_risk_rise_suspensions_doubled_their_pd(decided, book):
    ob = book.spec.policy.on_book
    rr = decided.log[decided.log["decided_by"] == "rule:suspend_risk_rise"]
    assert len(rr) > 0
    assert (rr["pd"] >= ob.suspend_pd_rise_factor * rr["previous_pd"] - 1e-12).all()
    assert (rr["pd"] >= ob.suspend_pd_rise_min_pd).all()
    assert rr["changed_features"].map(len).gt(0).all()


def test_suspensions_of_known_accounts_say_what_changed(decided):
    log = decided.log
    sus = log[(log["action"] == "suspend") & log["previous_pd"].notna()]
    assert len(sus) > 1000
    n_changed = sus["changed_features"].map(len)
    assert (n_changed == sus["changed_attribution_deltas"].map(len)).all()
    assert (n_changed == sus["changed_en"].map(len)).all() and (n_changed == sus["changed_zh"].map(len)).all()
    assert n_changed.le(3).all()
    assert sus["changed_attribution_deltas"].map(lambda d: all(x > 0 for x in d)).all()
    # attributions add up to the log-odds: when the PD rose, some feature's attribution rose
    rose = sus["pd"] > sus["previous_pd"] + 1e-9
    assert n_changed[rose].gt(0).all()
    empty = sus[n_changed == 0]
    assert (empty["pd"] <= empty["previous_pd"] + 1e-9).all()
    assert len(empty) / len(sus) < 0.05
    print(f"suspensions with a previous review: {len(sus)}, without any rising feature: {len(empty)}")
    # only adverse decisions get a "what changed"
    keep = log[log["action"].isin(["keep", "raise", "restore"])]
    assert keep["changed_features"].map(len).eq(0).all()


def test_the_decision_log_holds_no_personal_values(decided):
    names = set(decided.source["customer_name"].dropna().astype(str))
    phones = set(decided.source["phone"].dropna().astype(str))
    assert len(phones) == len(decided.source) and all(len(n) == 3 for n in names)
    log = decided.log
    assert not any(c in log.columns for c in ("customer_name", "phone", "input__customer_name", "input__phone"))
    values: set[str] = set()
    for col in log.columns:
        for v in log[col]:
            if isinstance(v, (list, tuple, np.ndarray)):
                values.update(str(x) for x in v)
            elif v is not None:
                values.add(str(v))
    assert not (values & names) and not (values & phones)
    # nor inside any text: every 11-digit run and every 3-character window of the distinct strings
    digits = {m for v in values for m in re.findall(r"\d{11}", v)}
    windows = {v[i:i + 3] for v in values if not v.isascii() for i in range(len(v) - 2)}
    assert not (digits & phones) and not (windows & names)
    # nor in the file's bytes (the log is zstd-compressed, so this mainly guards an uncompressed writer)
    raw = decided.bytes
    assert not ({m.decode() for m in re.findall(rb"\d{11}", raw)} & phones)
    # the account is named by its pseudonym, not its id
    ids = set(decided.source["account_id"].astype(str))
    assert not (set(log["account_key"]) & ids)


# ---------------------------------------------------------------------------------- (c) monitor


@pytest.fixture(scope="module")
def monitored(book, decided):
    """The monitoring job over months 14-18 (after `decided`, which needs the @champion untouched)."""
    from creditgov.jobs import monitoring

    batches = monitoring.simulator_batches(book.spec, BOOK, MONITOR_MONTHS, observed=False)
    return monitoring.monitor(book.spec, batches, evidently=False, log=quiet)


def test_monitor_catches_the_shock_within_two_months(monitored):
    from creditgov.monitor.drift import VERDICTS

    by_month = {int(r.label.split("-")[1]): r for r in monitored.results}
    assert sorted(by_month) == MONITOR_MONTHS
    level = {v: i for i, v in enumerate(VERDICTS)}
    alarm = [m for m in MONITOR_MONTHS if level[by_month[m].verdict] >= level["recalibrate"]]
    assert alarm, {m: r.verdict for m, r in by_month.items()}
    first = alarm[0]
    assert SHOCK_MONTH <= first <= SHOCK_MONTH + 2, {m: r.verdict for m, r in by_month.items()}
    reasons = by_month[first].reasons
    assert any(("employment=freelance" in t or "employment=temporary" in t or "key feature" in t) for t in reasons), \
        reasons
    print(f"verdicts {[(m, by_month[m].verdict) for m in MONITOR_MONTHS]}; first alarm month {first} "
          f"({first - SHOCK_MONTH} months after the shock): {reasons[0]}")


def test_monitor_raises_no_alarm_before_the_shock(monitored):
    for r in monitored.results:
        if int(r.label.split("-")[1]) < SHOCK_MONTH:
            assert r.verdict in ("stable", "watch"), (r.label, r.reasons)


def test_monitoring_runs_and_the_model_version_carry_the_verdict(monitored, book, client):
    assert monitored.model_version == book.version
    assert len(monitored.run_ids) == len(MONITOR_MONTHS)
    for r, run_id in zip(monitored.results, monitored.run_ids):
        run = client.get_run(run_id)
        assert run.data.tags["verdict"] == r.verdict
        assert run.data.tags["batch"] == r.label
        assert run.data.tags["model_version"] == book.version
        assert run.data.metrics["score_psi"] == pytest.approx(r.score_psi)
    exp = client.get_experiment_by_name(f"{book.spec.registry.experiment}-monitoring")
    assert exp is not None
    found = client.search_runs([exp.experiment_id])
    assert {run.info.run_id for run in found} >= set(monitored.run_ids)
    tags = client.get_model_version(book.spec.registry.model_name, book.version).tags
    assert tags["monitor.last_verdict"] == monitored.results[-1].verdict
    assert tags["monitor.last_batch"] == f"month-{MONITOR_MONTHS[-1]:02d}"
    assert tags["monitor.last_run"] == monitored.run_ids[-1]
    # each batch's verdict is kept, in the order monitored (issue 13 point 7: the history, not only the last)
    from creditgov.governance import registry
    kept = registry.verdict_history(tags)[-len(MONITOR_MONTHS):]
    assert [(v.verdict, v.batch, v.run_id) for v in kept] == [
        (r.verdict, r.label, run_id) for r, run_id in zip(monitored.results, monitored.run_ids)]
    page = (monitored.report_dir / "index.html").read_text(encoding="utf-8")
    history = page[page.index("Verdict history of"):]  # the version's whole history on the monitoring index
    assert all(history.count(run_id) == 1 for run_id in monitored.run_ids)


def test_the_monitor_folder_without_evidently_is_small_and_names_each_batch(monitored):
    """Evidently's pages are opt-in (megabytes each): the monitoring run's own folder stays under 1 MB, and
    each drift page names its batch's source, content hash and the matured month its estimates rest on."""
    from creditgov.data import simulate
    from creditgov.data.inputs import content_hash

    files = [p for p in monitored.report_dir.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"monitor folder without Evidently: {size:,} bytes in {len(files)} files "
          f"(largest {max(files, key=lambda p: p.stat().st_size).name})")
    assert not [p.name for p in files if p.name.startswith("evidently-")]
    assert size < 1_000_000, size
    for r in monitored.results:
        m = int(r.label.split("-")[1])
        assert r.source == _snapshot(m)
        assert r.batch_hash == content_hash(simulate.load_months(BOOK, [m], labelled=False))
        assert r.basis_label == f"month-{m - 12:02d}" and r.basis_source == _snapshot(m - 12)
        page = (monitored.report_dir / f"drift-{r.label}.html").read_text(encoding="utf-8")
        assert r.source in page and r.batch_hash[:16] in page and r.basis_label in page


def test_the_risk_report_shows_the_versions_monitoring_verdicts(monitored, book, tmp_path):
    """creditgov.report.risk reads the verdict history off the @champion (issue 15 point 6) and shows it."""
    from creditgov.report import risk

    got = risk.model_verdicts(book.spec.registry.model_name)
    assert got.version == book.version
    assert [(v.verdict, v.batch, v.run_id) for v in got.verdicts[-len(MONITOR_MONTHS):]] == [
        (r.verdict, r.label, run_id) for r, run_id in zip(monitored.results, monitored.run_ids)]
    assert risk.model_verdicts("no-such-model").version is None
    out = risk.write_report(BOOK, [1, 2, 3], tmp_path / "reports", verdicts=got)
    csv = pd.read_csv(out / "monitoring_verdicts.csv")
    assert csv["verdict"].tolist() == [v.verdict for v in got.verdicts]
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["verdict"] == monitored.results[-1].verdict
    assert run["model"] == f"{book.spec.registry.model_name} v{book.version}"
    html = (out / "index.html").read_text(encoding="utf-8")
    last = monitored.results[-1]
    assert f"<td>{last.verdict}</td><td>{last.label}</td>" in html

def test_the_stored_monitoring_result_reloads_as_the_typed_result(monitored, client, tmp_path):
    import json

    from creditgov.monitor.drift import MonitorResult

    for r, run_id in zip(monitored.results, monitored.run_ids):
        local = client.download_artifacts(run_id, "monitor/result.json", str(tmp_path))
        stored = MonitorResult.from_dict(json.loads(open(local, encoding="utf-8").read()))
        assert stored == r
        assert stored.estimated is not None and stored.calibration_basis is not None  # months 14-18 have a basis


# ------------------------------------------------------------------------------ (d) the null case


def test_null_case_rarely_escalates_beyond_watch(book, tmp_path_factory):
    """no_shock books with other seeds, months 13-24 each with its matured basis (m - 12), as the job does."""
    from creditgov.monitor import drift
    from creditgov.data import simulate
    from creditgov.governance import registry

    registry.configure()
    model, version, _ = registry.load_registered(book.spec.registry.model_name, book.version)
    profile, _, _ = drift.load_reference(book.spec.registry.model_name, version)
    root = tmp_path_factory.mktemp("null")
    verdicts = Counter()
    alarms = []
    for seed in NULL_SEEDS:
        scn = simulate.load_scenario("pipelines/scenarios/no_shock.yaml", accounts=NULL_ACCOUNTS, seed=seed)
        assert scn.shock is None
        out = root / f"seed{seed}"
        simulate.simulate(scn, out, log=quiet)
        for m in NULL_MONTHS:
            frame = simulate.load_months(out, [m], labelled=False)
            basis = simulate.load_months(out, [m - simulate.HORIZON], labelled=True)
            r = drift.run_monitor(book.spec, model, profile, frame, f"seed{seed}-month-{m:02d}", matured_frame=basis)
            verdicts[r.verdict] += 1
            if r.verdict in WORSE_THAN_WATCH:
                alarms.append((r.label, r.reasons[0]))
    total = sum(verdicts.values())
    assert total == len(NULL_SEEDS) * len(NULL_MONTHS)
    share = sum(verdicts[v] for v in WORSE_THAN_WATCH) / total
    print(f"null case: {dict(verdicts)} over {total} batches; worse than watch {share:.3f}: {alarms}")
    assert share < 0.05, (dict(verdicts), alarms)
    assert verdicts["rebuild"] == 0, alarms


# ---------------------------------------------------------------------------- (e) recalibration


def _tier_calibration(model, spec, month: int) -> list:
    from creditgov.monitor import drift
    from creditgov.data import simulate
    from creditgov.model import train
    from creditgov.decision.policy import tier_of

    f = simulate.load_months(BOOK, [month])
    y, p = train.target_vector(f, spec), model.predict_pd(f)
    return drift.calibration_by_tier(y, p, tier_of(p, spec.policy), spec.monitoring)


CHECK_MONTH = 12  # a later matured month whose outcome window holds the shock


@pytest.fixture(scope="module")
def recalibrated(book, monitored):
    """Recalibrate the champion on post-shock matured months; promote what the gates allow."""
    from creditgov.governance import promote
    from creditgov.jobs import recalibrate
    from creditgov.data import simulate
    from creditgov.governance import registry
    from creditgov.errors import PromotionRefused

    registry.configure()
    c = registry.client()
    name = book.spec.registry.model_name
    champion, _, _ = registry.load_registered(name, book.version)
    before = _tier_calibration(champion, book.spec, CHECK_MONTH)

    # three post-shock months: the Platt layer cannot undo a shock that hit two segments, and on ~10,000
    # hold-out rows the Hosmer-Lemeshow gate sees it. Months 7-9, whose outcome windows (8-21) hold the whole
    # shock: with the calibrated simulator's shock (hit segments' 30+ share x4-8, not the old x10+), months 6-8
    # gave p about 0.04, above the gate's 0.01; months 7-9 give about 3e-4
    wide = recalibrate.recalibrate(book.spec, simulate.load_months(BOOK, [7, 8, 9]), "months 7-9", log=quiet)
    wide_aliases = list(c.get_model_version(name, wide.version).aliases)
    with pytest.raises(PromotionRefused) as refused:
        promote.promote(book.spec, "tester")
    # one post-shock month (month 8: its window 9-20 holds the shock's first 90+ outcomes, which month 6's, 7-18,
    # barely sees now that an account needs four missed months to reach 90 days): the gates pass
    res = recalibrate.recalibrate(book.spec, simulate.load_months(BOOK, [8]), "month 8", log=quiet)
    tags_before = dict(c.get_model_version(name, res.version).tags)
    aliases_before = list(c.get_model_version(name, res.version).aliases)
    version, gates = promote.promote(book.spec, "tester")
    new_model, champ_version, _ = registry.load_registered(name)
    return SimpleNamespace(before=before, wide=wide, wide_aliases=wide_aliases, refused=str(refused.value), res=res,
                           tags=tags_before, aliases=aliases_before, promoted=version, gates=gates,
                           champion_version=champ_version, after=_tier_calibration(new_model, book.spec, CHECK_MONTH),
                           client=c, name=name)


def test_champion_calibration_fails_after_the_shock(recalibrated):
    assert not all(c.passed for c in recalibrated.before), recalibrated.before
    worst = max(recalibrated.before, key=lambda c: c.observed_rate / max(c.predicted_rate, 1e-9))
    assert worst.observed_rate > 2 * worst.predicted_rate


def test_recalibration_on_three_shocked_months_is_refused_by_the_calibration_gate(recalibrated, book):
    assert "challenger" in recalibrated.wide_aliases
    assert "gate calibration failed" in recalibrated.refused
    tags = recalibrated.client.get_model_version(recalibrated.name, recalibrated.wide.version).tags
    assert tags["promotion.refused_for"] == "tester"
    assert tags["gate.calibration"].startswith("fail")


def test_recalibrated_version_is_a_challenger_with_its_lineage(recalibrated, book, monitored):
    res = recalibrated.res
    assert res.parent_version == book.version
    assert int(res.version) > int(recalibrated.wide.version) > int(book.version)
    assert "challenger" in recalibrated.aliases and "champion" not in recalibrated.aliases
    assert recalibrated.tags["parent_version"] == book.version
    # the monitoring run that asked for it: the version's monitor.last_run tag by default
    assert recalibrated.tags["monitoring_run"] == monitored.run_ids[-1]
    # its change log: against the refused recalibration before it (the previous version), on other data
    assert recalibrated.tags["changelog.previous_version"] == recalibrated.wide.version
    assert recalibrated.tags["changelog.data"].startswith("changed") and recalibrated.tags["changelog.spec"] == "unchanged"
    assert recalibrated.tags["inventory.risk_tier"] == book.spec.inventory.risk_tier
    run = recalibrated.client.get_run(res.run_id)
    assert run.data.tags["parent_version"] == book.version
    assert run.data.tags["monitoring_run"] == monitored.run_ids[-1]
    assert res.after["auc"] == pytest.approx(res.before["auc"], abs=1e-12)  # the ranking is kept
    assert res.after["brier"] < res.before["brier"]


def test_promoted_recalibration_passes_the_calibration_check(recalibrated):
    assert recalibrated.promoted == recalibrated.res.version == recalibrated.champion_version
    assert all(g.passed for g in recalibrated.gates)
    assert all(c.passed for c in recalibrated.after), recalibrated.after
    tags = recalibrated.client.get_model_version(recalibrated.name, recalibrated.res.version).tags
    assert tags["approved_by"] == "tester"
    print("tier calibration at month 12, before -> after: " + "; ".join(
        f"{b.tier} {b.observed_rate:.3f}/{b.predicted_rate:.3f}" for b in recalibrated.before) + " -> "
        + "; ".join(f"{a.tier} {a.observed_rate:.3f}/{a.predicted_rate:.3f}" for a in recalibrated.after))


# ------------------------------------------------------------------- (f) the Dask monitor, same numbers


def test_dask_monitor_gets_its_binning_passed_and_matches_the_single_process_job(book, monitored, tmp_path):
    """Last in the module: it records one more monitoring run on the original version."""
    from creditgov import cluster
    from creditgov.monitor import drift
    from creditgov.jobs import monitoring

    single = (drift.stability, drift.bin_counts)
    seen = []  # checked while the job runs: nothing in creditgov.monitor.drift is swapped for the cluster's version

    def log(_msg: str) -> None:
        seen.append((drift.stability, drift.bin_counts) == single)

    month = 17
    client = cluster.client_for(workers=2, processes=False)
    try:
        job = monitoring.monitor_on_dask(book.spec, monitoring.simulator_batches(book.spec, BOOK, [month],
                                                                                   observed=False),
                                          version=book.version, out_root=tmp_path, evidently=False, log=log,
                                          client=client, partitions=3)
    finally:
        local = client.cluster
        client.close()
        local.close()
    assert seen == [True]
    (dist,) = job.results
    (one,) = [r for r in monitored.results if r.label == f"month-{month}"]
    assert dist.segment_psi["employment"]  # segment counts were summed over the partitions too
    assert (dist.score_psi, dist.csi, dist.segment_psi, dist.level) == (one.score_psi, one.csi, one.segment_psi,
                                                                        one.level)
    assert (dist.verdict, dist.reasons) == (one.verdict, one.reasons)
