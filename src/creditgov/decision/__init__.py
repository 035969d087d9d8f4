"""Decision room: probabilities of default turned into decisions, one path for every caller.

policy (the versioned rules: tiers, limits, prices, warnings, suspension, collections, review),
decide (the decision path: validated rows, a loaded model and the policy in, typed decision records
out, explained, logged and in the audit trail), counterfactual (the smallest actionable change that
would flip an adverse decision), dask (the same path over a Dask cluster), checkpoint (resumable
partitions), oversight (human review and contests).
"""
