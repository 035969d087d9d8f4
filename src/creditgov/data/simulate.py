"""A seeded generative model of a buy-now-pay-later credit line, month by month.

Public credit data is application data: no monthly account history. This simulator
makes the account history that limit reviews, suspensions, collections and drift need,
calibrated to magnitudes published for revolving consumer credit and BNPL.

Calibration (sources cited from published series, as approximate bands; the simulator's own
figures, asserted by tests/code/test_simulate*.py over several seeds, follow each one):

* 30+ days past due share of accounts. The Federal Reserve's delinquency rate on credit card loans
  at all commercial banks (FRB release "Charge-Off and Delinquency Rates on Loans and Leases at
  Commercial Banks", seasonally adjusted) was approximately 2.1-3.2% between 2012 and 2024;
  the NY Fed's Quarterly Report on Household Debt and Credit shows, for card balances, annualised
  flows of approximately 7-9% into 30+ delinquency and 4-7% into 90+ delinquency in 2023-24
  (the simulated 12-month rate of reaching 90+ days, the behaviour model's target, is about 5%
  before the shock, asserted within 3-9%). Simulated calm months: 30+ DPD
  share 1.5-4.5% of the active book in every month (stated band; no trend: the mean of months
  19-24 is within 1 percentage point of the mean of months 1-6 without a shock; observed about
  1.6-2.8% with the book's collections treatments below); 1+ DPD share 4-10%.
* Charge-off. FFIEC's Uniform Retail Credit Classification and Account Management Policy (2000):
  open-end retail credit is charged off at 180 days past due. The Federal Reserve's charge-off
  rate on credit card loans was approximately 1.5-4.7% a year (annualised, 2012-2024; lowest in
  2021, about 3-3.7% in 2014-2019);
  the CFPB's "Buy Now, Pay Later: Market trends and consumer impacts" (September 2022) reports
  BNPL charge-offs rising from approximately 1.1% (2020) to 2.4% (2021) of loan originations.
  Simulated: an account whose delinquency reaches 180 days is charged off that month and leaves
  the active book; the annualised charge-off rate of accounts in calm months is 1.5-6%.
  Recoveries: card issuers recover approximately 10-20% of gross charge-offs; simulated, each
  charged-off balance recovers a Beta(2, 12) share (mean about 14%), spread over the 12 months
  after charge-off (`ledger.parquet`).
* Roll and cure rates. Monthly transitions between delinquency buckets (current, 1-29, 30-59,
  60-89, 90-179, charge-off) follow the shape of card roll-rate tables (industry convention and
  regulators' loss-forecasting guidance, e.g. the OCC's Comptroller's Handbook "Credit Card
  Lending"): a small entry rate from current (approximately 2-6% of current accounts a month),
  most early delinquencies cure (roll 1-29 -> 30-59 approximately 20-40%), later buckets roll
  more (30-59 -> 60-89 approximately 35-55%, 60-89 -> 90-119 approximately 55-75%) and accounts
  90+ days past due rarely cure (roll approximately 80-95% a month). The simulated bands,
  asserted in tests: entry 1.5-6%, 1-29 roll 15-45%, 30-59 roll 30-60%, 60-89 roll 50-80%,
  90-179 roll 75-97%; a cure is a payment of everything overdue, back to current.
* Utilisation. Aggregate revolving utilisation of US card lines was approximately 20-30% in the
  NY Fed's report (balances over limits), with a bimodal account distribution (transactors near 0).
  Simulated: mean utilisation of open accounts 0.15-0.40, about 40% of customers transactors.
* Spending responds to the limit. Gross and Souleles (2002, QJE) find debt rising by
  approximately 10-14% of a limit increase within a year. Simulated: desired spending scales
  with (limit / opening limit) ** 0.5 and is capped by the open-to-buy, so a raise increases
  spending less than in proportion (utilisation falls a little) and a tight limit caps it.
  The book's own limit management (the lender's practice before creditgov's policy) raises a
  limit by 20% at its semiannual review (every 6 months since the last change) for current accounts
  with 12+ clean months and a low risk seen by the lender, with probability `limit_raise_rate`
  (0 turns it off); `months_since_limit_change` counts from opening or the last change.
* Collections (the book's own, "the lender's operations"). At each month-end review a delinquent account
  gets one treatment that acts in the next month (snapshot column `collection_treatment`): a reminder (SMS)
  at 1-29 days, a call at 1-29 days for a high-risk account and at 30-89 days, a third-party collection
  agency acting for the lender at 90+ days (the approval it needs is taken as given in the simulated book),
  and, instead of those, a hardship instalment plan (`collections.plan_months`, 3 months as in seed 003's
  case) for an account 1-59 days past due that declared a capacity shock (`hardship_declared`: a customer whose
  stress jumped this month tells the lender so with probability `collections.declare_rate`) and missed no
  payment in the 12 months before this episode. An account on a plan gets no other collection contact. Contacts
  made in a month (`collection_contacts_30d`): 2 messages for a reminder, 1 for a plan, 2 calls plus Poisson(3)
  unanswered attempts for a call or the agency; a treatment whose contacts would take the month's total above
  `collections.max_contacts_30_days` is stepped down (call to reminder to none).
  Effects, as shifts of the log-odds of missing again (rolling on) in the month after the treatment, a stated
  modelling assumption in the direction the field evidence finds, not a measured effect: the roll and cure
  rates above are those of books that already send reminders (the calibration's baseline: reminder 0); a call
  `collections.call_effect` (-0.3: personal contact raises repayment over automated messages, Laudenbach and
  Siegel, "Personal Communication in an Automated World: Evidence from Loan Repayments"; SMS reminders alone
  cut late payments by about as much as a 25% interest rebate in Cadena and Schoar, NBER w17020, 2011); the
  agency `collections.agency_effect` (-0.2); a hardship plan `collections.hardship_effect` (-0.8) in each of its
  months. The evidence on plans is mixed (Dobbie and Song, AER 2020: for distressed card borrowers, debt
  write-downs reduced default while lower minimum payments alone did not), so the plan effect is a scenario
  parameter: set it to what a lender measured. The risk report's cure rates per treatment are computed from
  these columns (`creditgov risk-report`).
* Shock. From `shock.month`, a stress of `shock.size` (half-life `shock.half_life`) scaled by the
  employment sensitivity (salaried 0.3, student 0.5, freelance 1.0, temporary 1.0, the pandemic
  case of the seeds). With the default scenario's size (3.5, a severe stress: about the
  pandemic's effect on gig and temporary workers' repayments), the 30+ DPD share of freelance and
  temporary workers in months 17-19 is 4-8 times its level in months 13-15, salaried workers'
  less than 2.5 times and at most 1/2.5 of the hit segments' multiple (asserted in tests; observed
  about 6-7 and 1.9). Monitoring is meant to catch it: the hit segments' score PSI passes 0.25
  in the shock month.

The model (all draws from one numpy Generator seeded by the scenario, in a fixed order):

* Customers. Employment type (salaried, freelance, temporary, student) drawn from the
  scenario's mix, which may shift for accounts opened from a given month; age, monthly
  income (log-normal by employment), prior bad records elsewhere (Poisson), a base rate of
  credit inquiries elsewhere and a transactor trait, all tied to a latent creditworthiness z
  (higher = riskier). A share of the book (`existing_share`) is open at month 1; the rest open
  uniformly later. Synthetic personal data (name, phone) is generated so privacy controls can
  be tested; it never carries signal.
* Financial stress. s[t] = 0.85 s[t-1] + 0.35 e[t] + 0.15 sensitivity[employment] macro[t], where
  macro[t] is an AR(1) business cycle (noise sd 0.05) shared by everyone; the stress a customer
  acts on is s[t] + sensitivity[employment] shock[t].
* Spending. Transactions ~ Poisson (more with income, more and smaller for impulsive,
  riskier customers), amounts ~ gamma, scaled by the limit response above; a share are
  instalment purchases; spending cannot exceed the open-to-buy.
* Delinquency. An account is in cycle k = 0 (current) to 6 (150-179 days past due). Each month it
  rolls to k + 1 with probability sigmoid(A[k] + B[k] r), where r = 1.1 z + 0.9 stress
  + 1.2 utilisation - 0.4 log(income / 6000), or cures to current by paying what is overdue.
  Days past due at the month-end snapshot are (k - 1) * 30 + d, where d in 1..29 is the day
  within the month the first missed due date fell on. Reaching cycle 7 (180 days) is charge-off.
  Days past due, its 6-month maximum, months overdue in 12 months, cumulative overdue days in
  12 months and the run of clean months (capped at 24) are recorded. A two-year burn-in before
  month 1 brings the existing book to its steady state (its charge-offs never appear).
* Fraud. A share of accounts (`fraud.rate`, which may change from `fraud.change_month`) are
  bust-out frauds: from a start month they run the balance up to the limit in two months,
  then never pay (they roll to charge-off). Frauds come in rings of 3 to 6 accounts sharing one
  device; the observable `fraud_signal` fires on a spending spike near the limit or on a device
  shared with an account already 60+ days past due.
* The lender's operations. Accounts are suspended at 30+ days past due or on a fraud signal
  and restored after 3 clean months (the on-book policy decides on top of this state). A policy
  replay (`creditgov replay`, simulate(review=...)) hands the suspensions and limits to a policy
  from a given month instead: the book then responds to that policy's decisions.

Target: 90+ days past due within the next 12 months, for snapshots not already 90+ days past
due; unobserved (null) for the latest 12 months, as in a real book. Output: one Parquet
partition per month, `month=NN/snapshot.parquet` (the active book at month end: charged-off
accounts are gone), plus `month=NN/labels.parquet` written once the outcome window is known,
and `ledger.parquet` (one row per month: active accounts and balances, charge-offs, recoveries);
generation is streamed month by month, so memory is bounded by the accounts, not by the months.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import Field, ValidationError

from creditgov import progress
from creditgov.atomic import temp_beside
from creditgov.errors import SpecError
from creditgov.spec import StrictModel  # one strict-config base for every YAML model

EMPLOYMENT = ("salaried", "freelance", "temporary", "student")
SENSITIVITY = np.array([0.3, 1.0, 1.0, 0.5])
INCOME_MEDIAN = np.array([8000.0, 7000.0, 4500.0, 1800.0])
AGE_MEAN = np.array([38.0, 35.0, 30.0, 21.0])
TARGET = "bad_12m"
HORIZON = 12
BURN_IN = 24
# delinquency cycles: 0 current, 1 (1-29 days), 2 (30-59), 3 (60-89), 4-6 (90-179); 7 is charge-off at 180 days
CHARGE_OFF_CYCLE = 7
ROLL_INTERCEPT = np.array([-4.6, -1.7, -1.1, 0.0, 1.9, 1.9, 1.9])
ROLL_SLOPE = np.array([1.0, 0.55, 0.45, 0.35, 0.25, 0.25, 0.25])
BUCKETS = ("current", "1-29", "30-59", "60-89", "90-179")
BUCKET_OF_CYCLE = np.array([0, 1, 2, 3, 4, 4, 4])
SPEND_LIMIT_ELASTICITY = 0.5
RECOVERY_MONTHS = 12
# the book's collections treatments (snapshot column collection_treatment), in this order of codes
TREATMENTS = ("none", "reminder", "call", "hardship_plan", "agency")
NONE, REMINDER, CALL, HARDSHIP, AGENCY = range(len(TREATMENTS))
TREATMENT_CONTACTS = np.array([0, 2, 2, 1, 2])  # contacts a treatment plans in its month (calls: + attempts)
GENERATOR = "creditgov.simulate/3"  # written to scenario.json; a book from another generator is made again


class Shock(StrictModel):
    month: int = Field(ge=1)
    size: float = Field(ge=0)
    half_life: float = Field(gt=0)


class MixShift(StrictModel):
    month: int = Field(ge=1)
    employment_mix: dict[str, float]


class FraudSpec(StrictModel):
    rate: float = Field(ge=0, le=0.2)
    change_month: int | None = None
    rate_after: float | None = Field(default=None, ge=0, le=0.2)


class CollectionsScenario(StrictModel):
    """The book's own collections (module documentation): effects are log-odds shifts of missing again."""

    call_effect: float = -0.3
    agency_effect: float = -0.2
    hardship_effect: float = -0.8
    plan_months: int = Field(default=3, ge=1, le=12)
    declare_rate: float = Field(default=0.6, ge=0, le=1)
    max_contacts_30_days: int = Field(default=10, ge=0)


class Scenario(StrictModel):
    name: str
    seed: int
    accounts: int = Field(gt=0)
    months: int = Field(ge=2, le=240)
    start: str = "2024-01"
    existing_share: float = Field(default=0.7, gt=0, le=1)
    employment_mix: dict[str, float]
    shock: Shock | None = None
    mix_shift: MixShift | None = None
    fraud: FraudSpec
    # the book's own limit management: probability a month that an eligible account gets a 20% raise
    limit_raise_rate: float = Field(default=0.3, ge=0, le=1)
    collections: CollectionsScenario = CollectionsScenario()
    chunk_accounts: int = Field(default=250_000, gt=0)


def load_scenario(path: str | Path, **overrides) -> Scenario:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: scenario file not found") from None
    except yaml.YAMLError:
        raise SpecError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: scenario must be a YAML mapping")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        scn = Scenario.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise SpecError(f"{path}: {loc}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}") from None
    mixes = [("employment_mix", scn.employment_mix)]
    if scn.mix_shift:
        mixes.append(("mix_shift.employment_mix", scn.mix_shift.employment_mix))
    for key, mix in mixes:
        if set(mix) != set(EMPLOYMENT) or abs(sum(mix.values()) - 1) > 1e-9:
            raise SpecError(f"{path}: {key} needs exactly {list(EMPLOYMENT)} summing to 1")
    return scn


def _mix(m: dict[str, float]) -> np.ndarray:
    return np.array([m[e] for e in EMPLOYMENT])


def month_label(scn: Scenario, t: int) -> str:
    """Calendar month of 0-based month index t."""
    y, m = map(int, scn.start.split("-"))
    k = (m - 1) + t
    return f"{y + k // 12:04d}-{k % 12 + 1:02d}"


def partition_dir(out: Path, t: int) -> Path:
    return out / f"month={t + 1:02d}"


@dataclass(frozen=True)
class SimResult:
    directory: Path
    months: int
    accounts: int
    snapshot_rows: int
    bad_rate_dev: float


_SURNAMES = np.array(list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"))
_GIVEN = np.array(list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"))


def _customers(scn: Scenario, rng: np.random.Generator) -> dict:
    n, T = scn.accounts, scn.months
    existing = rng.random(n) < scn.existing_share
    open_month = np.where(existing, 0, rng.integers(1, T, n))
    u = rng.random(n)
    cdf_base = np.cumsum(_mix(scn.employment_mix))
    emp = np.searchsorted(cdf_base, u, side="right").clip(0, 3)
    if scn.mix_shift:
        cdf_new = np.cumsum(_mix(scn.mix_shift.employment_mix))
        shifted = open_month >= scn.mix_shift.month - 1
        emp = np.where(shifted, np.searchsorted(cdf_new, u, side="right").clip(0, 3), emp)
    z = rng.normal(0, 1, n) + 0.25 * (emp == 2) + 0.15 * (emp == 1) + 0.2 * (emp == 3)
    age = np.clip(np.round(rng.normal(AGE_MEAN[emp], 8.0 - 4.0 * (emp == 3))), 18, 75)
    income = np.round(INCOME_MEDIAN[emp] * np.exp(rng.normal(0, 0.45, n) - 0.15 * z), -1)
    prior_bad = rng.poisson(0.12 * np.exp(0.9 * z))
    inq_rate = 0.35 * np.exp(0.45 * z)
    tenure0 = np.where(existing, rng.integers(1, 61, n), 0)
    limit = np.clip(np.round(income * 1.2 * np.exp(-0.35 * z) / 100) * 100, 500, 50_000)
    transactor = rng.random(n) < _sigmoid(-0.3 - 1.2 * z)  # pays the statement in full when it pays
    due_day = rng.integers(1, 30, n)  # days between the due date and the month-end snapshot

    f = scn.fraud
    rate = np.full(n, f.rate)
    if f.change_month is not None and f.rate_after is not None:
        rate = np.where(open_month >= f.change_month - 1, f.rate_after, f.rate)
    fraud = rng.random(n) < rate
    fraud_start = open_month + rng.integers(1, 6, n)
    # rings: consecutive fraud accounts share a device, 3 to 6 per ring
    device = np.arange(n, dtype=np.int64)
    idx = np.flatnonzero(fraud)
    pos = 0
    while pos < len(idx):
        size = int(rng.integers(3, 7))
        ring = idx[pos:pos + size]
        device[ring] = ring[0]
        fraud_start[ring] = fraud_start[ring[0]]
        pos += size
    household = rng.random(n) < 0.05  # some legitimate accounts share a device with a neighbour
    device = np.where(household & ~fraud, np.maximum(np.arange(n) - 1, 0), device)
    shared = np.bincount(device, minlength=n)[device]

    name = (_SURNAMES[rng.integers(0, len(_SURNAMES), n)].astype(object)
            + _GIVEN[rng.integers(0, len(_GIVEN), n)].astype(object)
            + _GIVEN[rng.integers(0, len(_GIVEN), n)].astype(object))
    phone = np.char.add("1", np.char.zfill(rng.integers(3_000_000_000, 9_999_999_999, n).astype(str), 10))
    return {"open_month": open_month, "emp": emp, "z": z, "age": age, "income": income, "prior_bad": prior_bad,
            "inq_rate": inq_rate, "tenure0": tenure0, "limit": limit, "fraud": fraud, "fraud_start": fraud_start,
            "device": device, "shared": shared, "name": name, "phone": phone,
            "transactor": transactor, "due_day": due_day}


def _macro(scn: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(business-cycle factor, shock): the cycle accumulates into stress, a shock hits it at once."""
    m = np.zeros(scn.months)
    e = rng.normal(0, 0.05, scn.months)
    for t in range(1, scn.months):
        m[t] = 0.8 * m[t - 1] + e[t]
    shock = np.zeros(scn.months)
    if scn.shock:
        t = np.arange(scn.months)
        k = scn.shock.month - 1
        shock = np.where(t >= k, scn.shock.size * 0.5 ** ((t - k) / scn.shock.half_life), 0.0)
    return m, shock


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# A policy driving the book (`review`, creditgov.decision.replay): called with each month's snapshot (its rows
# in the snapshot's order) and the 1-based month; returns None (the lender's own operations go on) or, per
# snapshot row, (suspended after the review, the limit after the review). From the first month it answers, the
# policy replaces the lender's own suspensions and limit raises; it consumes no random draw, so two policies
# run from the same seed see the same customers, stresses and shocks (common random numbers).
Review = Callable[[pd.DataFrame, int], "tuple[np.ndarray, np.ndarray] | None"]


def simulate(scn: Scenario, out: str | Path, log=print, review: Review | None = None) -> SimResult:
    """Generate all months; returns where they are and the development bad rate. `review`: a policy deciding
    each month's suspensions and limits in place of the lender's own operations (see Review)."""
    with progress.task("Simulating", total=BURN_IN + scn.months, unit="months") as months:
        return _simulate(scn, Path(out), log, months, review)


def _simulate(scn: Scenario, out: Path, log, months: progress.Task, review: Review | None = None) -> SimResult:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(scn.seed)
    macro, shock = _macro(scn, rng)  # drawn first: scenarios with the same seed share the macro path
    c = _customers(scn, rng)
    n, T = scn.accounts, scn.months
    ids = np.array([f"A{scn.seed % 1000:03d}{i:08d}" for i in range(n)], dtype=object)

    limit0 = c["limit"].copy()  # the opening limit: spending responds to the limit relative to it
    limit = c["limit"].copy()
    balance = limit * rng.uniform(0, 0.3, n)
    stress = rng.normal(0, 0.5, n)
    cycle = np.zeros(n, dtype=np.int16)
    dpd = np.zeros(n, dtype=np.int16)
    dpd_hist = np.zeros((T, n), dtype=np.int16)  # for the target: 2 bytes per account-month
    miss_ring = np.zeros((HORIZON, n), dtype=bool)
    overdue_ring = np.zeros((HORIZON, n), dtype=np.int16)
    dpd_ring = np.zeros((6, n), dtype=np.int16)
    inq_ring = np.zeros((6, n), dtype=np.int16)
    spend_ring = np.zeros((3, n))
    clean = np.minimum(c["tenure0"], 24).astype(np.int16)
    since_change = c["tenure0"].astype(np.int16)  # months since opening or the last limit change, uncapped
    suspended = np.zeros(n, dtype=bool)
    charged_off = np.full(n, np.iinfo(np.int32).max, dtype=np.int64)  # month index of charge-off
    # the book's collections: drawn from a generator of their own, so the other draws stay as they were
    col = scn.collections
    rng_c = np.random.default_rng([scn.seed, 3])
    effect = np.array([0.0, 0.0, col.call_effect, 0.0, col.agency_effect])
    treat = np.zeros(n, dtype=np.int8)  # given at the last month-end review, acting this month
    plan_left = np.zeros(n, dtype=np.int8)  # months left of a hardship plan
    shocked_prev = stress.copy()
    recovery_due = np.zeros(BURN_IN + T + RECOVERY_MONTHS + 1)  # by month index + BURN_IN
    ledger = []
    sens = SENSITIVITY[c["emp"]]
    rows = 0
    policy_driven = False  # set from the first month a review answers
    # a burn-in before month 1 brings the existing book to its steady state and fills its histories
    for t in months.track(range(-BURN_IN, T)):
        active = charged_off > t
        is_open = (c["open_month"] <= max(t, 0)) & active
        # the macro term is scaled by (1 - 0.85) so that a sustained macro level m shifts stress by sens * m
        stress = 0.85 * stress + 0.35 * rng.normal(0, 1, n) + 0.15 * sens * (macro[t] if t >= 0 else 0.0)
        shocked = stress + sens * (shock[t] if t >= 0 else 0.0)
        util_prev = np.clip(balance / limit, 0, 1)
        # the book's own limit management: a 20% raise for clean, low-risk current accounts
        lender_view = c["z"] + 0.5 * shocked + rng.normal(0, 0.5, n)
        eligible = is_open & (cycle == 0) & (clean >= 12) & (since_change >= 6) & (since_change % 6 == 0) & ~suspended & (lender_view < -0.3)
        raised = eligible & (rng.random(n) < scn.limit_raise_rate) & (not policy_driven)
        limit = np.where(raised, np.minimum(np.floor(limit * 1.2 / 100) * 100, 50_000), limit)
        since_change = np.where(raised, 0, since_change + is_open).astype(np.int16)
        # spending: impulsive (risky) customers make more, smaller purchases; more room, more spending
        lam = (2.0 + c["income"] / 4000.0) * np.exp(0.25 * c["z"] + 0.15 * shocked)
        txn = rng.poisson(lam)
        avg = 160.0 * np.exp(-0.15 * c["z"]) * (c["income"] / 6000.0) ** 0.5
        avg = avg * (limit / limit0) ** SPEND_LIMIT_ELASTICITY
        spend = rng.gamma(2.0, 1.0, n) * avg * txn / 2.0
        busting = c["fraud"] & (t >= c["fraud_start"])
        spend = np.where(busting & (t < c["fraud_start"] + 2), limit * 0.6, spend)
        spend = np.where(suspended | ~is_open | (cycle >= 2), 0.0, spend)
        spend = np.minimum(spend, np.maximum(limit - balance, 0))
        txn = np.where(spend > 0, np.maximum(txn, 1), 0)
        inst_share = np.clip(rng.beta(2, 5, n) + 0.08 * c["z"] + 0.05 * shocked, 0, 1)
        balance = balance + spend
        due = np.minimum(balance, np.maximum(0.05 * balance, 100.0))
        # delinquency: roll one cycle or pay what is overdue (cure)
        risk = 1.1 * c["z"] + 0.9 * shocked + 1.2 * util_prev - 0.4 * np.log(c["income"] / 6000.0)
        k = np.minimum(cycle, CHARGE_OFF_CYCLE - 1)
        shift = effect[treat] + col.hardship_effect * (plan_left > 0)  # the collections treatment in force
        miss = ((rng.random(n) < _sigmoid(ROLL_INTERCEPT[k] + ROLL_SLOPE[k] * risk + shift))
                | (busting & (t >= c["fraud_start"] + 1)))
        miss &= is_open & ((due > 0) | (cycle > 0))
        u_pay = rng.uniform(0, 1, n)
        paid = np.where(miss, due * 0.5 * u_pay,
                        np.where(c["transactor"], balance, due * (1 + cycle) * (1.0 + 2.0 * u_pay)))
        paid = np.minimum(paid, balance)
        pay_ratio = np.where(due > 0, paid / np.maximum(due, 1e-9), 1.0)
        balance = np.maximum(balance - paid, 0) * 1.01  # 1% monthly fee on the revolving balance
        cycle = np.where(miss, cycle + 1, 0).astype(np.int16)
        gone = is_open & (cycle >= CHARGE_OFF_CYCLE)  # 180 days past due: charged off, off the active book
        dpd = np.where(cycle > 0, (np.minimum(cycle, CHARGE_OFF_CYCLE) - 1) * 30 + c["due_day"], 0).astype(np.int16)
        dpd = np.where(gone, 180, dpd).astype(np.int16)
        co_balance = np.where(gone, balance, 0.0)
        charged_off = np.where(gone, t, charged_off)
        share = rng.beta(2.0, 12.0, n)  # the recovered share of a charged-off balance, over 12 months
        recovery_due[t + BURN_IN + 1:t + BURN_IN + 1 + RECOVERY_MONTHS] += float((co_balance * share).sum()) / RECOVERY_MONTHS
        if t >= 0:
            active_now = is_open & ~gone
            recovered = float(recovery_due[t + BURN_IN])
            ledger.append({"month_index": t + 1, "snapshot_month": month_label(scn, t),
                           "active_accounts": int(active_now.sum()),
                           "active_balance": round(float(balance[active_now].sum()), 2),
                           "new_accounts": int((c["open_month"] == t).sum() if t > 0 else 0),
                           "charged_off_accounts": int(gone.sum()),
                           "charged_off_balance": round(float(co_balance.sum()), 2),
                           "recoveries": round(recovered, 2)})
            dpd_hist[t] = np.where(charged_off <= t, 180, dpd)
        balance = np.where(gone, 0.0, balance)
        miss_ring[t % HORIZON] = miss
        overdue_ring[t % HORIZON] = np.where(cycle == 1, c["due_day"], np.where(cycle > 1, 30, 0))
        dpd_ring[t % 6] = dpd
        inq_ring[t % 6] = rng.poisson(c["inq_rate"] * np.exp(0.5 * np.maximum(shocked, 0)))
        spend_ring[t % 3] = spend
        clean = np.where(miss, 0, np.minimum(clean + 1, 24)).astype(np.int16)  # capped: "24 or more"
        # the book's collections: contacts made this month under the treatment in force, then the next treatment
        calls = (treat == CALL) | (treat == AGENCY)
        contacts = TREATMENT_CONTACTS[treat] + np.where(calls, rng_c.poisson(3.0, n), 0)
        plan_left = np.maximum(plan_left - 1, 0).astype(np.int8)
        declared = (cycle >= 1) & (shocked - shocked_prev > 0.7) & (rng_c.random(n) < col.declare_rate)
        shocked_prev = shocked
        prior_missed = miss_ring.sum(axis=0) - cycle  # missed months in 12 before this episode
        live = is_open & ~gone
        nxt = np.zeros(n, dtype=np.int8)
        nxt[cycle == 1] = REMINDER
        nxt[(cycle == 1) & (lender_view > 1.5)] = CALL
        nxt[(cycle == 2) | (cycle == 3)] = CALL
        nxt[cycle >= 4] = AGENCY
        offer = live & declared & (cycle <= 2) & (prior_missed <= 0) & (plan_left == 0)
        nxt[offer] = HARDSHIP
        nxt[(plan_left > 0) | ~live] = NONE  # on a plan: no other collection contact
        for _ in range(2):  # the contact limit: step a treatment down until its contacts fit the month's
            over = contacts + TREATMENT_CONTACTS[nxt] > col.max_contacts_30_days
            nxt = np.where(over & (nxt == CALL), REMINDER, np.where(over & (nxt == REMINDER), NONE, nxt)).astype(np.int8)
        plan_at_review = plan_left  # the snapshot shows the plan months left that this review starts from
        plan_left = np.where(nxt == HARDSHIP, col.plan_months, plan_left).astype(np.int8)
        treat = nxt
        spend_avg3 = spend_ring.mean(axis=0)
        util = np.clip(balance / limit, 0, 1.5)
        # observable fraud signal: a spend spike near the limit, or a device shared with an account 60+ overdue
        dev_bad = np.bincount(c["device"], weights=((dpd >= 60) & is_open).astype(float), minlength=n)[c["device"]]
        spike = (spend > 3 * np.maximum(spend_avg3 - spend / 3, 1)) & (util > 0.9)
        fraud_signal = (spike | ((dev_bad - (dpd >= 60)) > 0)) & (c["shared"] > 1) | (spike & (txn <= 2))
        at_review = suspended  # the snapshot shows the state the month's review starts from
        suspended = np.where(suspended, ~(clean >= 3), (dpd >= 30) | fraud_signal) & (dpd < 90)

        if t < 0:
            continue
        sel = np.flatnonzero(is_open & ~gone)
        frame = pd.DataFrame({
            "account_id": ids[sel], "snapshot_month": month_label(scn, t), "month_index": t + 1,
            "customer_name": c["name"][sel], "phone": c["phone"][sel],
            "age": c["age"][sel], "employment": np.array(EMPLOYMENT, dtype=object)[c["emp"][sel]],
            "income": c["income"][sel], "tenure_months": (c["tenure0"] + t - c["open_month"])[sel].astype(float),
            "prior_bad_records": c["prior_bad"][sel].astype(float),
            "inquiries_6m": inq_ring.sum(axis=0)[sel].astype(float),
            "credit_limit": limit[sel], "txn_count": txn[sel].astype(float),
            "spend_amount": np.round(spend[sel], 2), "instalment_share": np.round(inst_share[sel], 4),
            "spend_change_3m": np.round(spend[sel] / np.maximum(spend_avg3[sel], 1.0), 4),
            "utilisation": np.round(util[sel], 4), "payment_ratio": np.round(np.minimum(pay_ratio[sel], 10), 4),
            "days_past_due": dpd[sel].astype(float), "max_dpd_6m": dpd_ring.max(axis=0)[sel].astype(float),
            "months_overdue_12m": miss_ring.sum(axis=0)[sel].astype(float),
            "cum_overdue_days_12m": overdue_ring.sum(axis=0, dtype=np.int64)[sel].astype(float),
            "clean_months": clean[sel].astype(float), "shared_device_count": c["shared"][sel].astype(float),
            "fraud_signal": fraud_signal[sel], "suspended": at_review[sel],
            "balance": np.round(balance[sel], 2),
            "delinquency_bucket": np.array(BUCKETS, dtype=object)[BUCKET_OF_CYCLE[np.minimum(cycle[sel], 6)]],
            "months_since_limit_change": since_change[sel].astype(float),
            "hardship_declared": declared[sel], "hardship_plan_months_left": plan_at_review[sel].astype(float),
            "collection_contacts_30d": contacts[sel].astype(float),
            "collection_treatment": np.array(TREATMENTS, dtype=object)[treat[sel]],
        })
        _write(frame, partition_dir(out, t) / "snapshot.parquet")
        rows += len(frame)
        decided = review(frame, t + 1) if review is not None else None
        if decided is not None:  # the policy's review replaces the lender's suspensions and raises from here
            policy_driven = True
            now_suspended, new_limit = decided
            suspended = np.zeros(n, dtype=bool)
            suspended[sel] = np.asarray(now_suspended, dtype=bool)
            new_limit = np.asarray(new_limit, dtype="float64")
            moved = new_limit != limit[sel]
            limit[sel] = new_limit
            since_change[sel[moved]] = 0
        if t >= HORIZON:
            _write_labels(out, scn, t - HORIZON, ids, c, dpd_hist, charged_off, matured=True)
    for t in range(max(T - HORIZON, 0), T):  # censored months: who is 90+ days past due is known, the outcome is not
        _write_labels(out, scn, t, ids, c, dpd_hist, charged_off, matured=False)
    _write(pd.DataFrame(ledger), out / "ledger.parquet")
    meta = {"scenario": scn.model_dump(mode="json"), "generator": GENERATOR, "horizon": HORIZON,
            "labelled_months": list(range(1, max(T - HORIZON, 0) + 1))}
    (out / "scenario.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    bads = []
    dev = [m for m in meta["labelled_months"] if not scn.shock or m < scn.shock.month]
    for m in dev[:3]:
        lab = pd.read_parquet(partition_dir(out, m - 1) / "labels.parquet")
        bads.append(lab[TARGET].dropna().to_numpy())
    rate = float(np.concatenate(bads).mean()) if bads else float("nan")
    log(f"simulated {scn.name}: {n} accounts x {T} months = {rows} snapshot rows -> {out} "
        f"(12-month 90+ DPD rate in early months {rate:.3f})")
    return SimResult(out, T, n, rows, rate)


def is_current(directory: str | Path) -> bool:
    """True when `directory` holds a complete book made by this generator (of any scenario: a caller may have
    simulated it with overrides, e.g. fewer accounts)."""
    path = Path(directory) / "scenario.json"
    if not path.exists():
        return False
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return meta.get("generator") == GENERATOR


def _write_labels(out: Path, scn: Scenario, t: int, ids, c, dpd_hist, charged_off, matured: bool) -> None:
    """Target of month t: 90+ days past due in t+1..t+12, for accounts on the book and not 90+ at t.

    Null when the account is 90+ days past due at t, or when the window has not closed (matured False).
    The accounts are those of month t's snapshot: open, and not charged off by the end of t.
    """
    sel = np.flatnonzero((c["open_month"] <= t) & (charged_off > t))
    now = dpd_hist[t, sel]
    if matured:
        future = dpd_hist[t + 1:t + 1 + HORIZON, sel].max(axis=0)
        target = np.where(now >= 90, np.nan, (future >= 90).astype(float))
    else:
        target = np.full(len(sel), np.nan)
    frame = pd.DataFrame({"account_id": ids[sel], TARGET: target, "in_default": now >= 90,
                          "matured": matured, "is_fraud": c["fraud"][sel]})
    _write(frame, partition_dir(out, t) / "labels.parquet")


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")
    tmp.replace(path)


def load_months(directory: str | Path, months: list[int], labelled: bool = True) -> pd.DataFrame:
    """Snapshot rows of the given 1-based months, joined with their labels when `labelled`.

    With labels, rows already in default or not yet labelled (censored) are left out: the
    development population is accounts whose 12-month outcome is known.
    """
    directory = Path(directory)
    parts = []
    for m in months:
        d = partition_dir(directory, m - 1)
        if not (d / "snapshot.parquet").exists():
            raise SpecError(f"{d}: no snapshot for month {m} (run creditgov simulate)")
        snap = pd.read_parquet(d / "snapshot.parquet")
        lab = pd.read_parquet(d / "labels.parquet", columns=["account_id", TARGET, "in_default", "matured"])
        if labelled and not lab["matured"].all():
            raise SpecError(f"{d}: month {m} has no labels yet (its 12-month outcome window is not closed)")
        snap = snap.merge(lab, on="account_id", how="inner", validate="one_to_one")
        snap = snap[~snap["in_default"]]  # the population scored: accounts not already in default
        if labelled:
            snap = snap[snap[TARGET].notna()].copy()
            snap[TARGET] = np.where(snap[TARGET] > 0, "bad", "good")
        else:
            snap = snap.drop(columns=[TARGET])
        parts.append(snap.drop(columns=["in_default", "matured"]))
    return pd.concat(parts, ignore_index=True)
