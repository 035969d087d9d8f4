"""Governance room: the registry, the gates, the approver and the audit trail.

registry (MLflow: models, versions, aliases, backend errors), gates (the recorded promotion gates),
promote (champion only through passed gates and an independent approver), modelcard, audit (the
chained, Merkle-committed trail of every decision and oversight event), merkle (RFC 9162 leaves,
roots and inclusion proofs).
"""
