"""Registration gates: typed thresholds from the spec checked against a version's evidence."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from creditgov.spec import Gates

# The run metrics a gate reads; `promote` fetches them from the model version's run.
EVIDENCE_KEYS = ("test_auc", "monotonicity_violations", "test_hl_pvalue", "scorecard_test_auc")
# A recalibrated version inherits its parent's scorecard comparison (same trees, same ranking),
# measured on the parent's test rows, because the scorecard is not refitted with it.
# legal_basis_violations: the numeric check of a protected feature's legal basis (spec.LEGAL_BASES), measured
# only when the spec records one; fair_min_air: the lowest adverse impact ratio of any protected group.
OPTIONAL_KEYS = ("scorecard_auc_shortfall", "legal_basis_violations", "fair_min_air")
_EPS = 1e-12  # thresholds are compared with the displayed values, not float noise (0.85 - 0.83 > 0.02)


@dataclass(frozen=True)
class GateResult:
    name: str
    rule: str
    value: str
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_gates(gates: Gates, evidence: dict) -> list[GateResult]:
    """One result per gate, in a fixed order; `evidence` holds the EVIDENCE_KEYS metrics."""
    missing = [k for k in EVIDENCE_KEYS if k not in evidence]
    if missing:
        return [GateResult("evidence", "run has the gate metrics", f"missing {missing}", False)]
    auc, sc_auc = float(evidence["test_auc"]), float(evidence["scorecard_test_auc"])
    violations = int(evidence["monotonicity_violations"])
    hl_p = float(evidence["test_hl_pvalue"])
    shortfall = float(evidence.get("scorecard_auc_shortfall", sc_auc - auc))
    out = [
        GateResult("min_auc", f"test AUC >= {gates.min_auc}", f"{auc:.4f}", auc >= gates.min_auc - _EPS),
        GateResult("monotonicity", "no wrong-way steps in the numerical check" if gates.require_monotone
                   else "not required", str(violations), violations == 0 or not gates.require_monotone),
        GateResult("calibration", f"Hosmer-Lemeshow p >= {gates.min_calibration_pvalue}", f"{hl_p:.4f}",
                   hl_p >= gates.min_calibration_pvalue - _EPS),
        GateResult("vs_scorecard", f"scorecard AUC - model AUC <= {gates.max_auc_shortfall_vs_scorecard}",
                   f"{shortfall:+.4f}", shortfall <= gates.max_auc_shortfall_vs_scorecard + _EPS),
    ]
    if "legal_basis_violations" in evidence:
        n = int(evidence["legal_basis_violations"])
        out.append(GateResult("legal_basis", "a protected input's legal basis holds numerically (Reg B "
                              "1002.6(b)(2): no applicant aged 62+ scored worse for their age)", str(n), n == 0))
    if gates.min_air is not None:
        air = evidence.get("fair_min_air")
        out.append(GateResult("min_air", f"lowest adverse impact ratio of a protected group >= {gates.min_air}",
                              "not measured" if air is None else f"{float(air):.4f}",
                              air is not None and float(air) >= gates.min_air - _EPS))
    return out


def separation_of_duties(trainer: str | None, approver: str, development: bool) -> GateResult:
    """The maker-checker gate: who approves a version is not who trained it, unless the spec is a development
    spec (then the approval passes as "self-approved (development)")."""
    rule = "approver is not the trainer" + (" (waived: development spec)" if development else "")
    if trainer is None:
        return GateResult("separation_of_duties", rule, "trainer not recorded", development)
    same = trainer.strip().casefold() == approver.strip().casefold()
    value = "self-approved (development)" if same and development else (
        f"trained by {trainer}, approved by {approver}")
    return GateResult("separation_of_duties", rule, value, not same or development)


def less_discriminatory(alternatives: list[str] | None, justification: str | None,
                        auc_tolerance: float | None = None, air_margin: float | None = None) -> GateResult | None:
    """The search gate (spec `search`, `creditgov train --search`): refused while a candidate measured on the same
    folds is within `auc_tolerance` of the version's CV AUC and has a lowest AIR higher by `air_margin` or more
    (`alternatives`: their names, as recorded at training), unless the approver records a business-necessity
    justification. None when the version was not searched."""
    if alternatives is None:
        return None
    rule = (f"no candidate within {auc_tolerance:g} CV AUC with a lowest AIR higher by {air_margin:g} or more"
            if auc_tolerance is not None and air_margin is not None else "no less discriminatory alternative") + \
        ", or a business-necessity justification recorded"
    text = (justification or "").strip()
    if not alternatives:
        return GateResult("less_discriminatory_alternative", rule, "none found", True)
    value = f"{len(alternatives)} found ({', '.join(alternatives)})"
    if text:
        return GateResult("less_discriminatory_alternative", rule, f"{value}; business necessity: {text}", True)
    return GateResult("less_discriminatory_alternative", rule, f"{value}; no business-necessity justification", False)


def all_pass(results: list[GateResult]) -> bool:
    return all(r.passed for r in results)
