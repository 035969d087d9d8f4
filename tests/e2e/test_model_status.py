"""Model status follows monitoring (issue 13, point 7): each monitoring verdict is kept on the model version
(one `monitor.verdict.NNNN` tag per batch, plus `monitor.last_*`), and the decision path reads the latest:
`monitoring.on_rebuild: refuse` stops a run with a `rebuild` version (exit code 9), `flag` (the default)
stamps each decision with the verdict (log column model_status) and warns on the decision page.

A real MLflow registry (SQLite, in a temporary project) holds two versions of the application model name;
the decisions are made with the code tier's tiny model through decide_rows (the one decision path)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpers import in_project

pytestmark = pytest.mark.e2e

AS_OF = "2026-11-01"


@pytest.fixture(scope="module")
def reg(tmp_path_factory, make_project):
    from creditgov.governance import registry
    from creditgov.spec import load_spec

    root = make_project(tmp_path_factory.mktemp("model_status"))
    with in_project(root, CREDITGOV_AUDIT_URL=f"sqlite:///{root / 'audit.db'}"):
        spec = load_spec("pipelines/application.yaml")
        name = spec.registry.model_name
        registry.configure()
        c = registry.client()
        c.create_registered_model(name)
        (root / "model").mkdir()
        monitored = str(c.create_model_version(name, str(root / "model")).version)
        never = str(c.create_model_version(name, str(root / "model")).version)
        registry.record_verdict(name, monitored, "month-13", "watch", "run-a", "score PSI 0.12 > 0.10")
        registry.record_verdict(name, monitored, "month-14 | shocked", "rebuild", "run-b", "AUC fell by 0.08")
        yield SimpleNamespace(root=root, spec=spec, name=name, c=c, monitored=monitored, never=never)


def test_every_verdict_is_kept_in_order_and_the_last_is_the_latest(reg):
    from creditgov.governance import registry

    tags = reg.c.get_model_version(reg.name, reg.monitored).tags
    assert tags["monitor.verdict.0001"] == "watch | month-13 | run-a"
    assert tags["monitor.verdict.0002"] == "rebuild | month-14 / shocked | run-b"  # the separator stays one
    assert tags["monitor.last_verdict"] == "rebuild" and tags["monitor.last_reason"] == "AUC fell by 0.08"
    history = registry.verdict_history(tags)
    assert [(v.verdict, v.batch, v.run_id) for v in history] == [("watch", "month-13", "run-a"),
                                                                 ("rebuild", "month-14 / shocked", "run-b")]
    assert registry.latest_verdict(reg.name, reg.monitored).verdict == "rebuild"
    assert registry.latest_verdict(reg.name, reg.never) is None


def test_refuse_stops_with_one_line_naming_the_version_and_its_verdict(reg):
    from creditgov.decision import decide
    from creditgov.errors import ModelStatusRefused

    spec = reg.spec.model_copy(update={"monitoring": reg.spec.monitoring.model_copy(update={"on_rebuild": "refuse"})})
    with pytest.raises(ModelStatusRefused) as e:
        decide.model_status(spec, reg.monitored)
    assert e.value.exit_code == 9
    msg = str(e.value)
    assert f"{reg.name} version {reg.monitored}" in msg and "verdict is rebuild" in msg and "month-14" in msg
    assert "\n" not in msg
    assert decide.model_status(spec, reg.monitored, on_rebuild="flag") == "rebuild"  # a contest is never refused
    assert decide.model_status(spec, reg.never) == ""
    assert decide.model_status(reg.spec, reg.monitored) == "rebuild"  # the default is flag
    # the setting counts in the spec hash only when set away from flag (the hash on earlier logs stands)
    assert spec.content_hash != reg.spec.content_hash


def test_flag_stamps_each_decision_and_the_page_warns(reg, tiny_model, credit_data, tmp_path):
    from creditgov.data import validate
    from creditgov.decision import decide
    from creditgov.report import pages

    spec = reg.spec
    with in_project(reg.root, CREDITGOV_AUDIT_URL=f"sqlite:///{reg.root / 'audit.db'}"):
        rows = validate.validate_batch(credit_data.drop(columns=[spec.target.column]).head(40), spec, "batch.csv")
        plain = decide.decide_rows(rows, decide.DecisionModel(tiny_model, reg.never), spec, AS_OF).log
        flagged = decide.decide_rows(rows, decide.DecisionModel(tiny_model, reg.never, status="rebuild"),
                                     spec, AS_OF).log
        assert "model_status" not in plain.columns  # never monitored: the log is as it always was
        assert (flagged["model_status"] == "rebuild").all()
        assert flagged.drop(columns="model_status").equals(plain)  # same decisions, same ids
        report = pages.build(spec, flagged, tmp_path / "log.parquet", {}, None, tmp_path / "reports", sample=2)
        pages_html = [p.read_text(encoding="utf-8") for p in (report.directory / "decisions").glob("*.html")]
        assert pages_html and all("latest monitoring verdict" in h and "<b>rebuild</b>" in h for h in pages_html)
        plain_report = pages.build(spec, plain, tmp_path / "plain.parquet", {}, None, tmp_path / "plain", sample=2)
        assert not any("monitoring verdict" in p.read_text(encoding="utf-8")
                       for p in (plain_report.directory / "decisions").glob("*.html"))
