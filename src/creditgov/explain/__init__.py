"""Explanation room: why the model says what it says.

reasons (per-decision reason codes from SHAP attributions, grouped by feature and worded in Chinese
and English from the catalogue), importance (global feature importance for the model card).
Counterfactuals explain a decision against the policy, so they live with it in decision/.
"""
