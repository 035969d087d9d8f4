"""End to end: train -> promote -> decide -> report -> CLI -> reviewer notebook, in a temporary project.

The session's application model (tests/e2e/conftest.py: 40 boosting rounds, promoted), copied into a
temporary project root of the module's own: the code resolves expectations/, quarantine/, decisions/,
reports/ and the default MLflow store sqlite:///<cwd>/mlflow.db against the working directory, so the
module chdirs there with MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI unset.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import REPO_ROOT, copy_trained_project, in_project, quiet

pytestmark = pytest.mark.e2e

SPEC_PATH = "pipelines/application.yaml"
AS_OF = "2026-11-01"
N_ROWS = 4454  # modeldata credit_data
SHAP = "shap__"
BAD_ROW = 100  # 1-based row number of the row made invalid in the CSV batch


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_application):
    from creditgov.governance import registry
    from creditgov.spec import load_spec

    assert trained_application.version == trained_application.trained.version
    assert all(g.passed for g in trained_application.gates)
    root = copy_trained_project(trained_application.root, tmp_path_factory.mktemp("decide_project"))
    with in_project(root, drop=("CREDITGOV_DECISION_LOG", "CREDITGOV_SPEC")):
        assert (root / "mlflow.db").is_file()  # the default store, in the temporary project
        assert registry.tracking_uri() == registry.default_uri(root)
        yield SimpleNamespace(root=root, spec=load_spec(SPEC_PATH), version=trained_application.version)


@pytest.fixture(scope="module")
def decided(project):
    from creditgov.decision import decide

    res = decide.decide(project.spec, as_of=AS_OF, log=quiet)
    return SimpleNamespace(res=res, log=decide.read_log(res.path), bytes=res.path.read_bytes())


@pytest.fixture(scope="module")
def source(project):
    from creditgov.data import inputs

    return inputs.load(project.spec).frame


def _decided_rows(log: pd.DataFrame) -> pd.DataFrame:
    return log[log["status"] == "decided"]


# --------------------------------------------------------------------------- the decision log


def test_one_log_row_per_input_row(decided, source, project):
    res, log = decided.res, decided.log
    assert len(source) == N_ROWS
    assert res.rows_in == N_ROWS == len(log) == len(res.log)
    assert res.rows_in == res.rows_decided + res.rows_quarantined
    assert (log["status"] == "decided").sum() == res.rows_decided
    assert (log["status"] == "quarantined").sum() == res.rows_quarantined
    assert list(log["row_number"]) == list(range(1, N_ROWS + 1))
    assert res.path.parent.resolve() == project.root.resolve() / "decisions"
    assert res.path.name == f"{project.spec.name}-{AS_OF}-v{project.version}-{res.input_hash[:12]}.parquet"


def test_log_stamps_model_policy_and_time(decided, project):
    log, spec = decided.log, project.spec
    assert (log["model_version"] == project.version).all()
    assert (log["model_name"] == spec.registry.model_name).all()
    assert (log["policy_hash"] == spec.policy.content_hash).all()
    assert (log["policy_version"] == spec.policy.version).all()
    assert (log["spec_hash"] == spec.content_hash).all()
    assert (log["decision_time"] == f"{AS_OF}T00:00:00Z").all()
    assert (log["input_hash"] == decided.res.input_hash).all()


def test_every_decision_is_additive(decided):
    d = _decided_rows(decided.log)
    assert len(d) > 0
    assert (d["additivity_error"] <= 1e-4).all()
    phi = d[[c for c in d.columns if c.startswith(SHAP)]].to_numpy()
    assert phi.shape[1] == 17  # 13 catalogue columns, Age and Marital protected, and 6 derived features
    gap = np.abs(d["shap_base"].to_numpy() + phi.sum(axis=1) - d["log_odds"].to_numpy())
    assert gap.max() <= 1e-4
    np.testing.assert_allclose(d["pd"], 1 / (1 + np.exp(-d["log_odds"])), rtol=1e-12)


def test_reason_codes_name_only_risk_raising_features(decided, project):
    spec = project.spec
    catalogue = {f.name: f.reason for f in spec.features}
    n_codes = 0
    for _, row in _decided_rows(decided.log).iterrows():
        codes = list(row["reason_codes"])
        assert len(codes) <= spec.policy.max_reasons == 4
        assert len(row["reasons_en"]) == len(codes) == len(row["reasons_zh"]) == len(row["reason_attributions"])
        for code, en, zh, attr in zip(codes, row["reasons_en"], row["reasons_zh"], row["reason_attributions"]):
            if code.startswith("rule:"):
                continue
            n_codes += 1
            assert row[SHAP + code] > 0, (row["decision_id"], code)
            assert attr == pytest.approx(row[SHAP + code], abs=1e-12)
            assert (en, zh) == (catalogue[code].en, catalogue[code].zh)
        feats = [c for c in codes if not c.startswith("rule:")]
        vals = [row[SHAP + c] for c in feats]
        assert vals == sorted(vals, reverse=True)
    assert n_codes > N_ROWS


def test_rule_decided_rows_list_the_rule_first(decided, project):
    rules = {r.name: r for r in project.spec.policy.rules}
    d = _decided_rows(decided.log)
    by_rule = d[d["decided_by"].str.startswith("rule:")]
    assert len(by_rule) > 0, "some applicants without a stated income are approved by the model"
    for _, row in by_rule.iterrows():
        name = row["decided_by"][len("rule:"):]
        assert list(row["rules_triggered"])[0] == name
        assert list(row["reason_codes"])[0] == row["decided_by"]
        assert row["reasons_en"][0] == rules[name].reason.en
        assert row["reasons_zh"][0] == rules[name].reason.zh
        assert row["reason_attributions"][0] is None or np.isnan(row["reason_attributions"][0])
        assert row["action"] == "review" and bool(row["review_queue"])


def test_actions_limits_and_counterfactuals_agree(decided, project):
    d = _decided_rows(decided.log)
    pol = project.spec.policy
    assert set(d["action"]) <= {"approve", "decline", "review"}
    assert (d.loc[d["action"] == "decline", "limit"] == 0).all()
    assert (d.loc[d["action"] == "decline", "pd"] >= pol.decline_at_pd).all()
    assert (d["review_queue"] == (d["action"] == "review")).all()
    ok = d["action"] != "decline"
    assert d.loc[ok, "limit"].between(pol.limit.minimum, pol.limit.maximum).all()
    adverse = d["action"] == "decline"
    assert d.loc[adverse, "counterfactual"].map(lambda s: isinstance(s, str)).all()
    assert d.loc[~adverse, "counterfactual"].isna().all()
    cfs = [json.loads(s) for s in d.loc[adverse, "counterfactual"]]
    assert any(c["found"] for c in cfs)
    for c in cfs:
        if c["found"]:
            assert c["action_after"] == "approve"
            assert {ch["feature"] for ch in c["changes"]} <= {"Time", "Debt", "Amount"}
        else:
            assert "Time, Debt, Amount" in c["note"]


def test_decision_ids_unique_and_accounts_pseudonymised(decided, source):
    from creditgov.data import privacy

    log = decided.log
    assert log["decision_id"].is_unique
    assert log["decision_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    raw = source["rownames"].astype(str).to_numpy()
    keys = log["account_key"].to_numpy()
    assert not np.any(keys == raw)
    assert not set(keys) & set(raw)
    assert log["account_key"].is_unique
    np.testing.assert_array_equal(keys, privacy.pseudonymise(source["rownames"]).to_numpy())
    assert (log["pseudonym_key"] == privacy.key_source()).all()
    # the raw identifier is nowhere in the log
    assert not any(c for c in log.columns if "rownames" in c)


def test_second_decide_is_byte_identical(decided, project):
    from creditgov.decision import decide

    again = decide.decide(project.spec, as_of=AS_OF, out_dir="decisions-again", log=quiet)
    assert again.path.name == decided.res.path.name
    assert again.path.read_bytes() == decided.bytes


def test_row_hash_independent_of_integer_dtype():
    from creditgov.decision.decide import row_hashes

    plain = pd.DataFrame({"id": ["a", "b"], "n": [9, 10], "x": [1.5, np.nan]})
    nullable = plain.astype({"n": "Int64"})
    assert row_hashes(plain, ["id", "n", "x"]) == row_hashes(nullable, ["id", "n", "x"])


# --------------------------------------------------------------------------- a CSV batch with a bad row


@pytest.fixture(scope="module")
def csv_decided(project, source):
    from creditgov.decision import decide

    batch = source.drop(columns=[project.spec.target.column]).copy()
    batch.loc[BAD_ROW - 1, "Age"] = -5
    path = project.root / "batch.csv"
    batch.to_csv(path, index=False)
    res = decide.decide(project.spec, data_path=str(path), as_of=AS_OF, out_dir="decisions-csv", log=quiet)
    return res


def test_csv_batch_quarantines_the_bad_row_and_decides_the_rest(csv_decided):
    res = csv_decided
    log = res.log
    assert res.rows_in == N_ROWS == len(log)
    assert res.rows_in == res.rows_decided + res.rows_quarantined
    assert res.rows_quarantined == 1 and res.rows_decided == N_ROWS - 1
    bad = log[log["row_number"] == BAD_ROW].iloc[0]
    assert bad["status"] == "quarantined" and bad["action"] == "quarantined"
    assert "Age" in bad["quarantine_rules"] and "within [18, 100]" in bad["quarantine_rules"]
    assert np.isnan(bad["pd"])
    assert list(bad["reason_codes"]) == []
    assert (log.loc[log["row_number"] != BAD_ROW, "status"] == "decided").all()
    assert log["decision_id"].is_unique
    assert res.path.name.startswith("credit-application-2026-11-01-v")


def test_csv_batch_decides_the_same_as_the_source(csv_decided, decided):
    a = decided.log.set_index("row_number")
    b = csv_decided.log.set_index("row_number").drop(index=BAD_ROW)
    a = a.loc[b.index]
    np.testing.assert_allclose(b["pd"].to_numpy(dtype=float), a["pd"].to_numpy(dtype=float), rtol=0, atol=1e-12)
    assert (b["action"] == a["action"]).all()
    assert (b["account_key"] == a["account_key"]).all()


# --------------------------------------------------------------------------- report


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href"]


@pytest.fixture(scope="module")
def reported(decided, project):
    from creditgov.report import pages as report

    return report.make_report(project.spec, decided.res.path, "reports", sample=12)


def test_report_writes_index_decisions_notices_portfolio_and_card(reported, decided, project):
    res = reported
    assert res.directory.parent.resolve() == project.root.resolve() / "reports"
    assert res.index == res.directory / "index.html" and res.index.is_file()
    parser = _Links()
    parser.feed(res.index.read_text(encoding="utf-8"))
    hrefs = parser.hrefs
    assert "portfolio.html" in hrefs and "model_card.html" in hrefs
    for h in hrefs:
        assert (res.directory / h).is_file(), h
    linked = [re.fullmatch(r"decisions/([0-9a-f]{32})\.html", h).group(1) for h in hrefs if h.startswith("decisions/")]
    assert sorted(linked) == sorted(res.decisions)
    actions = decided.log.set_index("decision_id").loc[linked, "action"]
    assert set(actions) <= {"decline", "review"}
    assert (actions == "decline").sum() == 12
    for did in linked:
        assert f"notices/{did}.en.html" in hrefs and f"notices/{did}.zh.html" in hrefs
        assert (res.directory / "notices" / f"{did}.en.html").is_file()
        assert (res.directory / "notices" / f"{did}.zh.html").is_file()
    card = (res.directory / "model_card.html").read_text(encoding="utf-8")
    assert f"version {project.version}" in card


def test_report_pages_are_inert_and_stamped(reported, decided, project):
    pol_hash = project.spec.policy.content_hash[:16]
    pages = [reported.index, reported.directory / "portfolio.html"]
    pages += [reported.directory / "decisions" / f"{d}.html" for d in reported.decisions]
    for page in pages + list((reported.directory / "notices").glob("*.html")):
        html = page.read_text(encoding="utf-8")
        assert "<script" not in html.lower() and "<img" not in html.lower(), page.name
        assert "default-src 'none'" in html, page.name
        assert f"v{project.version}" in html or f"version {project.version}" in html, page.name
    for page in pages:
        assert pol_hash in page.read_text(encoding="utf-8"), page.name
    zh = (reported.directory / "notices" / f"{reported.decisions[0]}.zh.html").read_text(encoding="utf-8")
    row = decided.log.set_index("decision_id").loc[reported.decisions[0]]
    for s in row["reasons_zh"]:
        assert s in zh


def test_real_notices_speak_the_customers_language(reported, project):
    """Notices of real decisions: no column name or identifier, the lender and its contact, both dates."""
    from helpers import names_leaked, notice_body

    spec = project.spec
    for did in reported.decisions:
        for lang in ("en", "zh"):
            html = (reported.directory / "notices" / f"{did}.{lang}.html").read_text(encoding="utf-8")
            body = notice_body(html)
            assert names_leaked(body, spec, lang) == [], (did, lang, names_leaked(body, spec, lang))
            assert getattr(spec.lender.name, lang) in body and spec.lender.contact[0].text(lang) in body
            assert ("决定日期" if lang == "zh" else "Date of the decision") in body


def _pdf_pages(path: Path) -> list[str]:
    """Each page's text as pdftotext (poppler-utils, installed by .ci/run) reads it (pages end with a form
    feed), or pypdf where pdftotext is absent."""
    import shutil

    if shutil.which("pdftotext"):
        out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.decode("utf-8").split("\f")
    from pypdf import PdfReader

    return [p.extract_text() for p in PdfReader(path).pages]


def _compact(text: str) -> str:
    return "".join(text.split())  # an id broken over two lines (break-all) reads whole again


def _no_chromium() -> bool:
    from creditgov.report.pdf import find_chromium

    return find_chromium() is None


@pytest.mark.skipif(_no_chromium(), reason="no Chromium installed: the regulator pack is printed by headless Chromium")
def test_regulator_pack_prints_the_run_to_one_pdf(reported, project):
    """creditgov report --pdf: index, portfolio, model card, the sampled decisions, then their notices, behind a
    contents page whose page numbers point at each document; the decision ids are in the PDF's text."""
    from pypdf import PdfReader

    from creditgov.report import pdf

    pack = pdf.write_pack(reported.directory)
    assert pack.path == reported.directory / "regulator-pack.pdf"
    reader = PdfReader(pack.path)
    assert len(reader.pages) == pack.pages
    titles = [doc.title for doc, _ in pack.contents]
    ids = reported.decisions
    assert titles[:3] == ["Decision report: index", "Portfolio report", "Model card"]
    assert titles[3:3 + len(ids)] == [f"Decision {d}" for d in ids]
    assert titles[3 + len(ids):] == [f"Notice {d} ({lang})" for d in ids for lang in ("English", "Chinese")]
    starts = [page for _, page in pack.contents]
    assert starts == sorted(starts) and starts[0] >= 2 and starts[-1] <= pack.pages  # after the cover and contents
    pages = [_compact(t) for t in _pdf_pages(pack.path)]
    text = "".join(pages)
    assert "Regulatorpack" in pages[0] and "Contents" in pages[0]
    for did in ids:
        assert did in text
    for (doc, page) in pack.contents[3:3 + len(ids)]:  # the contents page points at each decision's page
        assert doc.title.split()[-1] in pages[page - 1], doc.title
    (doc, page), = [c for c in pack.contents if c[0].title == f"Notice {ids[0]} (Chinese)"]
    assert _compact(project.spec.lender.name.zh) in pages[page - 1]
    assert all("/Annots" not in p for p in reader.pages)  # no link to a file of the machine that printed it
    assert f"version{project.version}" in pages[starts[2] - 1]  # the model card
    # linked where a reader looks for it: the run's index, reports/index.html, and named in run.json
    assert 'href="regulator-pack.pdf"' in (reported.directory / "index.html").read_text(encoding="utf-8")
    root = (reported.directory.parent / "index.html").read_text(encoding="utf-8")
    assert f'href="{reported.directory.name}/regulator-pack.pdf"' in root
    assert json.loads((reported.directory / "run.json").read_text(encoding="utf-8"))["pack"]["pages"] == pack.pages


# --------------------------------------------------------------------------- the command line


def test_cli_decide_twice_is_byte_identical(project, decided):
    exe = Path(sys.executable).with_name("creditgov")
    assert exe.is_file()
    written = []
    for out in ("cli-1", "cli-2"):
        proc = subprocess.run([str(exe), "decide", "--spec", SPEC_PATH, "--as-of", AS_OF, "--out", out],
                              cwd=project.root, env=dict(os.environ), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"{N_ROWS} rows in" in proc.stdout
        files = list((project.root / out).glob("*.parquet"))
        assert len(files) == 1
        written.append(files[0])
    assert written[0].name == written[1].name == decided.res.path.name
    assert written[0].read_bytes() == written[1].read_bytes()
    # the command line and the library make the same log
    assert written[0].read_bytes() == decided.bytes


# --------------------------------------------------------------------------- the reviewer notebook


def test_reviewer_notebook_runs(project, decided):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO_ROOT / "notebooks" / "reviewer.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(project.root)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if o.output_type == "stream")
    assert f"{N_ROWS} rows by v{project.version}" in printed
    assert "reason codes naming a risk-lowering feature: 0" in printed
