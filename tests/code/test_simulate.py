"""The portfolio simulator (creditgov.simulate) on small books written to temporary directories.

Documented range asserted here: the 12-month 90+ DPD bad rate of the early (pre-shock)
months 1-3 of the default and no_shock scenarios lies in [EARLY_BAD_RATE_LOW,
EARLY_BAD_RATE_HIGH] = [0.03, 0.09] (observed about 0.05 at 8,000 accounts). The calibration bands of the
book itself (delinquency, roll rates, charge-off, utilisation, the shock's multiple) are in test_simulate_book.py.

Everything writes under pytest's tmp dirs; one module-scoped set of books (8,000 accounts,
the scenarios' 24 months) serves every test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from creditgov.data import simulate
from creditgov.errors import SpecError
from creditgov.model.metrics import auc
from creditgov.spec import load_spec
from helpers import quiet

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "pipelines" / "scenarios"
ACCOUNTS = 8000
OTHER_SEED = 777
EARLY_BAD_RATE_LOW, EARLY_BAD_RATE_HIGH = 0.03, 0.09
SHOCK_MONTH = 16
SHOCK_BAD_RATE_RISE = 0.05  # observed about 0.09-0.13 for freelance and temporary at 8,000 accounts
PRE = [1, 2, 3]  # outcome windows (m+1..m+12) close before the shock
POST = [7, 8, 9]  # outcome windows contain the shock and the months after it


def _scenario(name: str, **overrides) -> simulate.Scenario:
    return simulate.load_scenario(SCENARIOS / f"{name}.yaml", accounts=ACCOUNTS, **overrides)


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """default (twice, same seed), default with another seed, no_shock with the default's seed."""
    root = tmp_path_factory.mktemp("simulated")
    out = {}
    for key, name, over in (("a", "default", {}), ("b", "default", {}), ("other", "default", {"seed": OTHER_SEED}),
                            ("no_shock", "no_shock", {})):
        res = simulate.simulate(_scenario(name, **over), root / key, log=quiet)
        out[key] = res
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _bad_rate(directory: Path, months: list[int], by: str | None = None):
    f = simulate.load_months(directory, months)
    y = (f[simulate.TARGET] == "bad").astype(float)
    return y.groupby(f[by]).mean() if by else float(y.mean())


# ------------------------------------------------------------------------------------ layout


def test_one_snapshot_and_labels_partition_per_month(books):
    res = books["a"]
    scn = _scenario("default")
    assert res.months == scn.months == 24 and res.accounts == ACCOUNTS
    dirs = sorted(p.name for p in res.directory.iterdir() if p.is_dir())
    assert dirs == [f"month={m:02d}" for m in range(1, scn.months + 1)]
    rows = 0
    for m in range(1, scn.months + 1):
        d = res.directory / f"month={m:02d}"
        assert sorted(p.name for p in d.iterdir()) == ["labels.parquet", "snapshot.parquet"]
        snap = pd.read_parquet(d / "snapshot.parquet")
        lab = pd.read_parquet(d / "labels.parquet")
        assert snap["account_id"].is_unique
        assert set(snap["month_index"]) == {m}
        assert set(snap["snapshot_month"]) == {simulate.month_label(scn, m - 1)}
        # one label row per snapshot row, same accounts
        assert sorted(lab["account_id"]) == sorted(snap["account_id"])
        rows += len(snap)
    assert rows == res.snapshot_rows
    assert (res.directory / "scenario.json").is_file()
    # new accounts outnumber charge-offs: the active book grows
    sizes = [len(pd.read_parquet(res.directory / f"month={m:02d}" / "snapshot.parquet", columns=["account_id"]))
             for m in (1, 12, 24)]
    assert sizes[0] < sizes[1] < sizes[2] <= ACCOUNTS


def test_month_labels_run_from_the_scenario_start():
    scn = _scenario("default")
    assert simulate.month_label(scn, 0) == "2024-01"
    assert simulate.month_label(scn, 11) == "2024-12"
    assert simulate.month_label(scn, 12) == "2025-01"
    assert simulate.month_label(scn, 23) == "2025-12"


# ------------------------------------------------------------------------------ determinism


def test_same_seed_gives_byte_identical_files(books):
    a, b = _files(books["a"].directory), _files(books["b"].directory)
    assert sorted(a) == sorted(b)
    assert sum(k.endswith(".parquet") for k in a) == 49  # 24 snapshots, 24 labels, the ledger
    differing = [k for k in a if a[k] != b[k]]
    assert differing == []
    assert books["a"].bad_rate_dev == books["b"].bad_rate_dev


def test_another_seed_gives_other_data(books):
    a, c = _files(books["a"].directory), _files(books["other"].directory)
    snaps = [k for k in a if k.endswith("snapshot.parquet")]
    assert all(a[k] != c[k] for k in snaps)
    s_a = pd.read_parquet(books["a"].directory / "month=01" / "snapshot.parquet")
    s_c = pd.read_parquet(books["other"].directory / "month=01" / "snapshot.parquet")
    assert not s_a["income"].reset_index(drop=True).equals(s_c["income"].reset_index(drop=True))
    assert set(s_a["account_id"]).isdisjoint(s_c["account_id"])  # the id prefix carries the seed


# ----------------------------------------------------------------------------------- labels


def test_labels_are_censored_for_the_last_12_months(books):
    d = books["a"].directory
    for m in range(1, 25):
        lab = pd.read_parquet(d / f"month={m:02d}" / "labels.parquet")
        if m <= 12:
            assert lab["matured"].all(), m
            assert lab.loc[~lab["in_default"], simulate.TARGET].notna().all(), m
        else:
            assert not lab["matured"].any(), m
            assert lab[simulate.TARGET].isna().all(), m
    with pytest.raises(SpecError, match="month 13 has no labels"):
        simulate.load_months(d, [13])


def test_labels_are_null_for_accounts_in_default(books):
    d = books["a"].directory
    seen_default = 0
    for m in (6, 12, 20):
        part = d / f"month={m:02d}"
        snap = pd.read_parquet(part / "snapshot.parquet", columns=["account_id", "days_past_due"])
        lab = pd.read_parquet(part / "labels.parquet")
        j = snap.merge(lab, on="account_id", validate="one_to_one")
        assert (j["in_default"] == (j["days_past_due"] >= 90)).all()
        assert j.loc[j["in_default"], simulate.TARGET].isna().all()
        seen_default += int(j["in_default"].sum())
    assert seen_default > 0  # the check above was not vacuous
    # the development population excludes them
    assert (simulate.load_months(d, [6])["days_past_due"] < 90).all()


def test_the_book_starts_in_its_steady_state_and_never_shows_180_days(books):
    """The burn-in brings month 1 to the steady state: every bucket is populated; 180 days is charge-off, so no
    snapshot shows it."""
    for m in (1, 12, 24):
        snap = pd.read_parquet(books["a"].directory / f"month={m:02d}" / "snapshot.parquet")
        assert set(snap["delinquency_bucket"]) == set(simulate.BUCKETS), m
        assert snap["days_past_due"].max() <= 179, m
        assert snap["days_past_due"].between(1, 29).any() and (snap["days_past_due"] >= 150).any(), m


@pytest.mark.parametrize("month", [1, 12])
def test_target_is_90_dpd_within_the_next_12_snapshots(books, month):
    """Independent recomputation of the target from the snapshots' own days past due."""
    d = books["a"].directory
    lab = pd.read_parquet(d / f"month={month:02d}" / "labels.parquet").set_index("account_id")
    future = pd.concat([pd.read_parquet(d / f"month={k:02d}" / "snapshot.parquet", columns=["account_id", "days_past_due"])
                        for k in range(month + 1, month + 13)])
    worst = future.groupby("account_id")["days_past_due"].max()
    ok = lab[~lab["in_default"]]
    expected = (worst.reindex(ok.index) >= 90).astype(float)
    assert ok[simulate.TARGET].to_numpy().tolist() == expected.to_numpy().tolist()


def test_early_bad_rate_is_in_the_documented_range(books):
    for key in ("a", "no_shock"):
        rate = _bad_rate(books[key].directory, PRE)
        assert EARLY_BAD_RATE_LOW <= rate <= EARLY_BAD_RATE_HIGH, (key, rate)
        # the figure simulate() reports is the same quantity
        assert books[key].bad_rate_dev == pytest.approx(rate, abs=1e-12)


# ------------------------------------------------------------------------------------ shock


def test_shock_hits_freelance_and_temporary_harder_than_salaried_over_time(books):
    d = books["a"].directory
    before, after = _bad_rate(d, PRE, "employment"), _bad_rate(d, POST, "employment")
    rise = after - before
    # the shock multiplies the hit segments' 30+ DPD share by about 4-8 (module doc of simulate); on a base 12-month
    # bad rate of about 5% that is a rise of about 10 points, not the old simulator's +40 points
    for seg in ("freelance", "temporary"):
        assert rise[seg] > SHOCK_BAD_RATE_RISE, rise.to_dict()
        assert rise[seg] > 2.5 * max(rise["salaried"], 0.01), rise.to_dict()


def test_shock_hits_freelance_and_temporary_harder_than_salaried_vs_no_shock(books):
    shocked = _bad_rate(books["a"].directory, POST, "employment")
    calm = _bad_rate(books["no_shock"].directory, POST, "employment")
    excess = shocked - calm
    for seg in ("freelance", "temporary"):
        assert excess[seg] > SHOCK_BAD_RATE_RISE, excess.to_dict()
        assert excess[seg] > 2.5 * max(excess["salaried"], 0.01), excess.to_dict()
    # before the shock the two books are alike (same seed, same macro path)
    pre_gap = abs(_bad_rate(books["a"].directory, PRE) - _bad_rate(books["no_shock"].directory, PRE))
    assert pre_gap < 0.01


# ------------------------------------------------------------------------------- personal data


def test_personal_columns_exist_and_are_unique_ish(books):
    snap = pd.read_parquet(books["a"].directory / "month=24" / "snapshot.parquet")
    n = len(snap)
    assert snap["customer_name"].notna().all() and snap["phone"].notna().all()
    assert snap["phone"].nunique() / n > 0.99
    assert snap["customer_name"].nunique() / n > 0.5
    assert snap["phone"].str.fullmatch(r"1\d{10}").all()
    # stable per account across months
    early = pd.read_parquet(books["a"].directory / "month=01" / "snapshot.parquet",
                            columns=["account_id", "customer_name", "phone"])
    j = early.merge(snap[["account_id", "customer_name", "phone"]], on="account_id", suffixes=("_1", "_24"))
    assert (j["customer_name_1"] == j["customer_name_24"]).all() and (j["phone_1"] == j["phone_24"]).all()


def test_personal_columns_carry_no_signal(books):
    from scipy.stats import chi2_contingency

    f = simulate.load_months(books["a"].directory, [1])
    y = (f[simulate.TARGET] == "bad").astype(int).to_numpy()
    assert 200 < y.sum() < len(y) - 200
    # power check: a real signal is detected on the same rows
    assert auc(y, f["months_overdue_12m"].to_numpy(dtype=float)) > 0.65
    phone = f["phone"].astype("int64").to_numpy(dtype=float)
    assert abs(auc(y, phone) - 0.5) < 0.06
    for key in (f["phone"].str[-1], f["phone"].str[3], f["customer_name"].str[0], f["customer_name"].str[1]):
        table = pd.crosstab(key, y)
        assert chi2_contingency(table)[1] > 0.001, key.name


# ------------------------------------------------------------------------------------ fraud


def test_fraud_accounts_share_devices(books):
    # a bust-out is charged off about 6 months after it starts, so one month holds only recent rings: every month's
    j = []
    for m in range(1, 25):
        d = books["a"].directory / f"month={m:02d}"
        snap = pd.read_parquet(d / "snapshot.parquet", columns=["account_id", "shared_device_count"])
        lab = pd.read_parquet(d / "labels.parquet", columns=["account_id", "is_fraud"])
        j.append(snap.merge(lab, on="account_id", validate="one_to_one"))
    j = pd.concat(j).drop_duplicates("account_id")
    assert j["is_fraud"].sum() >= 20
    shared = j["shared_device_count"] > 1
    fraud_share, legit_share = shared[j["is_fraud"]].mean(), shared[~j["is_fraud"]].mean()
    assert fraud_share > 0.9
    assert fraud_share > legit_share + 0.5
    assert j.loc[j["is_fraud"], "shared_device_count"].median() >= 3  # rings of 3 to 6


# --------------------------------------------------------------------------- what policy reads


def test_snapshot_has_every_field_the_behaviour_policy_and_model_read(books):
    spec = load_spec(REPO / "pipelines" / "behaviour.yaml")
    snap = pd.read_parquet(books["a"].directory / "month=05" / "snapshot.parquet")
    fields = spec.policy.on_book.fields.model_dump()
    needed = {v for k, v in fields.items() if k != "previous_pd" and v is not None}  # optional fields unset
    assert needed <= set(snap.columns), needed - set(snap.columns)
    assert fields["previous_pd"] not in snap.columns  # decide computes it from the previous review
    assert {f.name for f in spec.features} <= set(snap.columns)
    assert {spec.source.id_column, spec.source.date_column} <= set(snap.columns)
    assert snap[fields["fraud_signal"]].dtype == bool and snap[fields["suspended"]].dtype == bool
    assert snap[fields["fraud_signal"]].any() and snap[fields["suspended"]].any()


# ------------------------------------------------------------------------------ load_scenario


def _write_scenario(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((SCENARIOS / "default.yaml").read_text(encoding="utf-8"))
    for k, v in changes.items():
        raw[k] = v
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_load_scenario_applies_overrides():
    scn = simulate.load_scenario(SCENARIOS / "default.yaml", accounts=123, seed=None)
    assert scn.accounts == 123 and scn.seed == 20240101


def test_load_scenario_rejects_an_unknown_key(tmp_path):
    path = _write_scenario(tmp_path, shocks={"month": 3})
    with pytest.raises(SpecError, match=r"shocks: unknown key"):
        simulate.load_scenario(path)


def test_load_scenario_rejects_an_unknown_nested_key(tmp_path):
    path = _write_scenario(tmp_path, shock={"month": 16, "size": 1.0, "half_life": 3, "magnitude": 2})
    with pytest.raises(SpecError, match=r"shock\.magnitude: unknown key"):
        simulate.load_scenario(path)


def test_load_scenario_rejects_an_unknown_override():
    with pytest.raises(SpecError, match=r"acounts: unknown key"):
        simulate.load_scenario(SCENARIOS / "default.yaml", acounts=10)


def test_load_scenario_rejects_a_mix_not_summing_to_one(tmp_path):
    path = _write_scenario(tmp_path, employment_mix={"salaried": 0.6, "freelance": 0.2, "temporary": 0.15,
                                                     "student": 0.1})
    with pytest.raises(SpecError, match=r"employment_mix.*summing to 1"):
        simulate.load_scenario(path)


def test_load_scenario_rejects_a_mix_with_a_missing_category(tmp_path):
    path = _write_scenario(tmp_path, employment_mix={"salaried": 0.7, "freelance": 0.3})
    with pytest.raises(SpecError, match=r"employment_mix"):
        simulate.load_scenario(path)


def test_load_scenario_names_mix_shift_when_its_mix_is_bad(tmp_path):
    path = _write_scenario(tmp_path, mix_shift={"month": 13, "employment_mix": {
        "salaried": 0.5, "freelance": 0.22, "temporary": 0.2, "student": 0.13}})
    with pytest.raises(SpecError, match=r"mix_shift\.employment_mix"):
        simulate.load_scenario(path)
