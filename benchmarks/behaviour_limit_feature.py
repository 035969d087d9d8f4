"""The behaviour model with and without the current credit limit as an input (`make limit-auc`).

The limit is set by the on-book policy itself (and before it by the lender's own limit management), so a
model that reads it partly learns the policy's past judgement back, and a cut or raise would move the PD that
decides the next cut or raise. The behaviour spec therefore leaves it out of the model inputs (the policy still
reads it, through `policy.on_book.fields.current_limit`). This measures what that costs: the spec's model
(same split, same parameters, early stopping) fitted without and with `credit_limit`, test AUC with a
stratified bootstrap 95% CI on the same test rows. The figures go into the model card's limitations.

    PYTHONPATH=src python benchmarks/behaviour_limit_feature.py [--spec pipelines/behaviour.yaml]
"""
from __future__ import annotations

import argparse
import json

from creditgov.data import inputs
from creditgov.model import metrics, train
from creditgov.spec import Feature, Reason, load_spec

LIMIT = Feature(name="credit_limit", type="numeric", description="Current credit limit", range=[0, 1_000_000],
                missing_allowed=False, monotone="none", actionable=False, personal=False,
                reason=Reason(en="Size of the current credit limit", zh="当前授信额度"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="pipelines/behaviour.yaml")
    args = ap.parse_args()
    spec = load_spec(args.spec)
    if any(f.name == LIMIT.name for f in spec.features):
        raise SystemExit(f"{args.spec}: credit_limit is already a model input; this compares adding it")
    frame = inputs.load(spec).frame
    with_limit = spec.model_copy(update={"features": [*spec.features, LIMIT]})
    splits = train.split(frame, spec)
    y = train.target_vector(splits.test, spec)
    out = {}
    for label, s in (("without credit_limit (the spec)", spec), ("with credit_limit", with_limit)):
        model = train.fit_model(splits.train, splits.validation, s)
        p = model.predict_pd(splits.test)
        lo, hi = metrics.bootstrap_auc_ci(y, p, n_boot=500)
        out[label] = {"test_auc": round(metrics.auc(y, p), 4), "ci95": [round(lo, 4), round(hi, 4)],
                      "inputs": len(s.model_inputs)}
    out["test_rows"] = int(len(y))
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
