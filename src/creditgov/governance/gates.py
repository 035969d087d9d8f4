"""Registration gates: typed thresholds from the spec checked against a version's evidence."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from creditgov.spec import Gates

# The run metrics a gate reads; `promote` fetches them from the model version's run.
EVIDENCE_KEYS = ("test_auc", "monotonicity_violations", "test_hl_pvalue", "scorecard_test_auc")
# A recalibrated version inherits its parent's scorecard comparison (same trees, same ranking),
# measured on the parent's test rows, because the scorecard is not refitted with it.
OPTIONAL_KEYS = ("scorecard_auc_shortfall",)
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
    return out


def all_pass(results: list[GateResult]) -> bool:
    return all(r.passed for r in results)
