"""CV and test AUC of the application model with its protected features as inputs (before) and protected (after): README, "Protected attributes". Usage: PYTHONPATH=src python benchmarks/protected_auc_cost.py [SPEC]"""
import sys
from creditgov.spec import load_spec
from creditgov.jobs.training import validate_input, evaluate_models
spec_path = sys.argv[1] if len(sys.argv) > 1 else "pipelines/application.yaml"
after = load_spec(spec_path)
feats = [f.model_copy(update={"protected": False, "group_bands": None}) if f.protected else f for f in after.features]
before = after.model_copy(update={"features": feats})
for name, spec in (("before (protected features as inputs)", before), ("after (protected)", after)):
    ev = evaluate_models(validate_input(spec), None)
    fl = ev.flat_metrics()
    print(f"{name}: test AUC {fl['test_auc']:.4f} [{fl['test_auc_ci_low']:.4f}, {fl['test_auc_ci_high']:.4f}], "
          f"{spec.evaluation.cv_folds}-fold CV AUC {fl['cv_auc_mean']:.4f} ± {fl['cv_auc_sd']:.4f}; "
          f"scorecard CV {fl['scorecard_cv_auc_mean']:.4f}", flush=True)
