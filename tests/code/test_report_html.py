"""HTML reports (creditgov.report) from a synthetic decision log that plants hostile strings.

The log has the columns creditgov.decision.decide writes; its values are chosen here. Pages are
written under tmp_path only. The last tests render pages in real headless Chromium.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creditgov.report import pages as report
from creditgov.decision.decide import INPUT_PREFIX, SHAP_PREFIX
from creditgov.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
FORMULA = '=HYPERLINK("http://evil")'
GENERATED_AT = "2026-11-02T09:30:00+00:00"
POLICY_HASH = "ab12cd34ef56ab78cd90ef12ab34cd56ef78ab90cd12ef34ab56cd78ef90ab12"
MODEL_VERSION = "17"


class _FixedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 11, 2, 9, 30, 0, tzinfo=timezone.utc)


def _row(spec, i: int, action: str, *, home="owner", job="fixed", codes=(), en=(), zh=(), attr=(),
         cf=None, decided_by="model", tier=None, rules=(), income=500.0) -> dict:
    feats = [f.name for f in spec.model_inputs]
    rng = np.random.default_rng(i)
    phi = rng.normal(0, 0.3, len(feats))
    for code, a in zip(codes, attr):  # the named reasons carry their attribution
        if a is not None:
            phi[feats.index(code)] = a
    base = -1.1
    log_odds = base + phi.sum()
    p = 1 / (1 + np.exp(-log_odds))
    tier = tier or ("low" if p <= 0.15 else "medium" if p <= 0.35 else "high")
    row = {
        "decision_id": f"{i:032x}", "row_number": i, "status": "decided", "quarantine_rules": None,
        "pd": p, "log_odds": log_odds, "tier": tier, "action": action, "decided_by": decided_by,
        "limit": 0.0 if action == "decline" else 600.0, "previous_limit": np.nan,
        "review_queue": action == "review", "rules_triggered": list(rules),
        "reason_codes": list(codes), "reasons_en": list(en), "reasons_zh": list(zh),
        "reason_attributions": list(attr), "counterfactual": cf, "shap_base": base,
        "additivity_error": 1e-9,
    }
    for f, v in zip(feats, phi):
        row[SHAP_PREFIX + f] = float(v)
    inputs = {"Seniority": 3, "Home": home, "Time": 48, "Age": 33, "Marital": "married", "Records": "no",
              "Job": job, "Expenses": 60, "Income": income, "Assets": 0.0, "Debt": 0.0, "Amount": 1000, "Price": 1300}
    for f in spec.model_columns:  # the log keeps the row's own values, not derived ones
        row[INPUT_PREFIX + f] = inputs[f]
    row.update({"group__Age": "25-39" if i % 3 else "<25", "group__Marital": "married"})  # protected: labels only
    row.update({"input_row_hash": f"{i:064x}", "account_key": f"acct{i:020d}"})
    return row


def _quarantined(spec, i: int, rules: str) -> dict:
    row = {"decision_id": f"{i:032x}", "row_number": i, "status": "quarantined", "quarantine_rules": rules,
           "action": "quarantined", "review_queue": False, "rules_triggered": [], "reason_codes": [],
           "reasons_en": [], "reasons_zh": [], "reason_attributions": [],
           "input_row_hash": f"{i:064x}", "account_key": f"acct{i:020d}"}
    return row


@pytest.fixture(scope="module")
def log(spec) -> pd.DataFrame:
    cf_found = json.dumps({"found": True, "cost": 0.5, "action_after": "approve", "pd_after": 0.31,
                           "changes": [{"feature": "Amount", "from": 1000.0, "to": 500.0}]}, sort_keys=True)
    cf_none = json.dumps({"found": False, "note": "no change of the actionable features (Time, Debt, Amount) "
                                                  "within their catalogue ranges changes this outcome"})
    rows = [
        _row(spec, 1, "decline", home=SCRIPT, codes=["Home", "Assets"], en=[IMG, "Few assets"],
             zh=[FORMULA, "资产较少"], attr=[0.9, 0.4], cf=cf_found, rules=["pd_at_or_above_decline"]),
        _row(spec, 2, "decline", home="rent", codes=["Records", "Amount", "Time"],
             en=["Bad records with other lenders", "Requested amount is high", "Requested repayment term"],
             zh=["在其他机构存在不良信用记录", "申请额度较高", "申请的还款期限"], attr=[0.8, 0.5, 0.2], cf=cf_none,
             rules=["pd_at_or_above_decline"]),
        _row(spec, 3, "review", codes=["rule:income_not_stated", "Income"],
             en=["Income was not stated, so a person must review the credit limit", "Income is low or not stated"],
             zh=["未申报收入，授信额度需人工审核", "收入水平偏低或未申报"], attr=[None, 0.3],
             decided_by="rule:income_not_stated", rules=["income_not_stated"], income=np.nan),
        _quarantined(spec, 4, "Age: within [18, 100]; " + SCRIPT),
    ]
    rows += [_row(spec, i, "approve", home=SCRIPT if i % 2 else "owner", codes=["Time"],
                  en=["Requested repayment term"], zh=["申请的还款期限"], attr=[0.05])
             for i in range(5, 45)]
    frame = pd.DataFrame(rows)
    stamp = {"decision_time": "2026-11-01T00:00:00Z", "model_name": "credit-application-pd",
             "model_version": MODEL_VERSION, "policy_name": "application-credit-line", "policy_version": "2026.11-1",
             "policy_hash": POLICY_HASH, "spec_hash": "5" * 64, "input_hash": "9" * 64,
             "input_source": "applications.csv", "pseudonym_key": "development"}
    for k, v in stamp.items():
        frame[k] = v
    return frame


# minimal: a card with only its lineage (no "model" section: the portfolio says no card was found)
CARD = {"lineage": {"train_data_hash": "feedbeef" * 8}}


@pytest.fixture(scope="module")
def built(spec, log, tmp_path_factory):
    out_root = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "datetime", _FixedDatetime)
        res = report.build(spec, log, out_root / "decisions-x.parquet", CARD, None, out_root, sample=20)
    return res


def _pages(res) -> dict[str, Path]:
    d = res.directory
    pages = {"index": d / "index.html", "portfolio": d / "portfolio.html"}
    for did in res.decisions:
        pages[f"decision:{did}"] = d / "decisions" / f"{did}.html"
        for lang in ("en", "zh"):
            pages[f"notice.{lang}:{did}"] = d / "notices" / f"{did}.{lang}.html"
    return pages


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.styles: list[str] = []
        self._in_style = False
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.metas: list[dict] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag == "meta":
            self.metas.append(dict(attrs))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:  # raw text: the browser reads it as CSS, character references and all
            self.styles.append(data)
        else:
            self.text.append(data)


def _parse(html: str) -> _Dom:
    p = _Dom()
    p.feed(html)
    p.close()
    return p


def _text(html: str) -> str:
    return "".join(_parse(html).text)


# --------------------------------------------------------------------------- what is written


def test_build_writes_every_page(built, log):
    d = built.directory
    assert d.name == "credit-application-2026-11-01-v17-99999999"
    assert (d / "index.html").is_file() and (d / "portfolio.html").is_file()
    assert not (d / "model_card.html").exists()  # no card HTML given
    adverse_and_review = log.loc[log["action"].isin(["decline", "review"]), "decision_id"]
    assert sorted(built.decisions) == sorted(adverse_and_review)
    for did in built.decisions:
        assert (d / "decisions" / f"{did}.html").is_file()
        assert (d / "notices" / f"{did}.en.html").is_file()
        assert (d / "notices" / f"{did}.zh.html").is_file()
    assert not list(d.parent.glob(".*.tmp"))  # the temporary directory was renamed away


def test_index_links_resolve(built):
    html = built.index.read_text(encoding="utf-8")
    hrefs = [v for tag, k, v in _parse(html).attrs if tag == "a" and k == "href"]
    assert "portfolio.html" in hrefs
    for did in built.decisions:
        for target in (f"decisions/{did}.html", f"notices/{did}.en.html", f"notices/{did}.zh.html"):
            assert target in hrefs
    for h in hrefs:
        assert (built.directory / h).is_file(), h


# --------------------------------------------------------------------------- hostile strings


FORBIDDEN = ("<script", "<img", "<link", "@import", "url(", "<iframe", "<object", "<embed", "javascript:")
REMOTE_ATTR = re.compile(r"""\b(?:src|href|action|srcset|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def test_no_page_carries_active_or_remote_content(built):
    pages = _pages(built)
    assert len(pages) == 2 + 3 * len(built.decisions)
    for name, path in pages.items():
        html = path.read_text(encoding="utf-8")
        low = html.lower()
        for bad in FORBIDDEN:
            assert bad not in low, f"{name}: {bad}"
        assert not REMOTE_ATTR.search(html), name
        dom = _parse(html)
        assert not {"script", "img", "link", "iframe", "object", "embed", "base", "form"} & set(dom.tags), name
        assert not [a for _, a, _ in dom.attrs if a.lower().startswith("on")], name  # no event handlers
        for tag, attr, val in dom.attrs:
            if attr in ("href", "src"):
                assert not re.match(r"\s*[a-z][a-z0-9+.-]*:", val or "", re.I), f"{name}: {tag} {attr}={val}"


def test_hostile_strings_are_shown_as_text(built, log):
    did = log["decision_id"].iloc[0]
    page = (built.directory / "decisions" / f"{did}.html").read_text(encoding="utf-8")
    text = _text(page)
    assert SCRIPT in text            # the category value, in the inputs table
    assert IMG in text               # the reason text
    assert FORMULA in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    portfolio = _text((built.directory / "portfolio.html").read_text(encoding="utf-8"))
    assert SCRIPT in portfolio       # as a group of the adverse-impact table and in a quarantine rule
    index = _text(built.index.read_text(encoding="utf-8"))
    assert IMG in index              # the principal reason of the first decision


def test_every_page_has_a_strict_content_security_policy(built):
    for name, path in _pages(built).items():
        dom = _parse(path.read_text(encoding="utf-8"))
        csp = [m.get("content", "") for m in dom.metas if (m.get("http-equiv") or "").lower() == "content-security-policy"]
        assert len(csp) == 1, name
        directives = [d.strip() for d in csp[0].split(";")]
        assert "default-src 'none'" in directives, name
        assert not any("script-src" in d for d in directives), name


def _stamp_params():
    return [
        pytest.param("index"),
        pytest.param("portfolio"),
        pytest.param("decision"),
        pytest.param("notice.en"),
        pytest.param("notice.zh"),
    ]


@pytest.mark.parametrize("kind", _stamp_params())
def test_every_page_states_model_version_policy_hash_and_generation_time(built, kind):
    pages = {k: p for k, p in _pages(built).items() if k.split(":")[0] == kind}
    assert pages
    for name, path in pages.items():
        text = _text(path.read_text(encoding="utf-8"))
        assert f"v{MODEL_VERSION}" in text or f"version {MODEL_VERSION}" in text, name
        assert GENERATED_AT in text, name
        assert POLICY_HASH[:12] in text, name


def test_inline_css_is_the_stylesheet_verbatim(built):
    from importlib import resources

    css = resources.files("creditgov").joinpath("templates", "base.css").read_text(encoding="utf-8")
    assert '"' in css  # the stylesheet quotes a font name: what autoescaping would mangle
    for name, path in _pages(built).items():
        dom = _parse(path.read_text(encoding="utf-8"))
        assert dom.styles == [css], name


# --------------------------------------------------------------------------- notices


def test_notices_speak_their_language(built, log):
    for _, row in log[log["decision_id"].isin(built.decisions)].iterrows():
        did = row["decision_id"]
        en = (built.directory / "notices" / f"{did}.en.html").read_text(encoding="utf-8")
        zh = (built.directory / "notices" / f"{did}.zh.html").read_text(encoding="utf-8")
        assert '<html lang="en">' in en and '<html lang="zh">' in zh
        en_text, zh_text = _text(en), _text(zh)
        assert re.search(r"[\u4e00-\u9fff]{4}", zh_text)
        assert "授信决定通知" in zh_text
        assert not re.search(r"[\u4e00-\u9fff]", en_text.replace("中文", ""))
        for s in row["reasons_zh"]:
            assert s in zh_text
        for s in row["reasons_en"]:
            assert s in en_text
            assert s not in zh_text
        assert did in en_text and did in zh_text
        assert "2026-11-01" in en_text and "2026-11-01" in zh_text


def test_notice_carries_the_counterfactual(built, log):
    did = log["decision_id"].iloc[0]
    en = _text((built.directory / "notices" / f"{did}.en.html").read_text(encoding="utf-8"))
    zh = _text((built.directory / "notices" / f"{did}.zh.html").read_text(encoding="utf-8"))
    assert "the loan amount had been ¥500 instead of ¥1,000" in en
    assert "申请金额由¥1,000调整为¥500" in zh
    assert "We are unable to approve" in en


def test_decision_page_content(built, log):
    row = log.iloc[2]  # the review decided by the income rule
    page = _text((built.directory / "decisions" / f"{row['decision_id']}.html").read_text(encoding="utf-8"))
    assert "rule:income_not_stated" in page
    assert "(policy rule)" in page
    assert "human-review queue" in page
    assert "Not an adverse decision" in page
    assert POLICY_HASH in page
    assert CARD["lineage"]["train_data_hash"] in page
    assert "unknown" in page  # no model run in the card


def test_portfolio_without_a_model_section_in_the_card(built):
    text = _text((built.directory / "portfolio.html").read_text(encoding="utf-8"))
    assert "No model card was found" in text
    assert "44 rows in = 43 decided + 1 quarantined" in " ".join(text.split())


# --------------------------------------------------------------------------- waterfall


_SVG = "{http://www.w3.org/2000/svg}"


def _svg_texts(svg: str) -> list[str]:
    return ["".join(t.itertext()).strip() for t in ET.fromstring(svg).iter(_SVG + "text")]


def _pct(texts: list[str]) -> list[float]:
    return [float(t[:-1]) for t in texts if re.fullmatch(r"\d+\.\d%", t)]


def _pts(texts: list[str]) -> list[float]:
    return [float(t[:-4].replace("−", "-")) for t in texts if re.fullmatch(r"[+−]\d+\.\d pts", t)]


def test_waterfall_on_the_pd_scale_adds_up_and_names_are_escaped():
    contribs = [("<b>bold</b>", 0.5123), ("A&B", -0.2501), ('q"uote', 0.1234), ("plain $5 and $6", -0.0456)]
    base = -1.2345
    final = base + sum(v for _, v in contribs)
    svg = report.charts.waterfall(base, contribs, final, [("decline at", 0.5), ("human review from", 0.4)])
    texts = _svg_texts(svg)  # well-formed: every name was escaped
    start, end = _pct(texts)
    sig = lambda x: 100 / (1 + np.exp(-x))  # noqa: E731
    assert start == pytest.approx(sig(base), abs=0.05) and end == pytest.approx(sig(final), abs=0.05)
    steps = _pts(texts)
    assert len(steps) == len(contribs)
    assert [s > 0 for s in steps] == [v > 0 for _, v in contribs]
    assert start + sum(steps) == pytest.approx(end, abs=0.05 * (len(steps) + 2))
    assert "&lt;b&gt;bold&lt;/b&gt;" in svg and "<b>" not in svg
    for name in ("<b>bold</b>", "A&B", 'q"uote', "plain $5 and $6"):
        assert name in texts, name
    assert "decline at (50.0%)" in texts and "human review from (40.0%)" in texts  # the legend names the lines
    assert "raises the PD" in texts and "lowers the PD" in texts
    assert "<style" not in svg and "url(" not in svg  # inert for the pages' policy


def test_waterfall_in_decision_page_adds_up(built, log, spec):
    for _, row in log[log["decision_id"].isin(built.decisions)].iterrows():
        page = (built.directory / "decisions" / f"{row['decision_id']}.html").read_text(encoding="utf-8")
        texts = _svg_texts(page[page.index("<svg"): page.index("</svg>") + 6])
        start, end = _pct(texts)
        assert end == pytest.approx(100 * row["pd"], abs=0.05)
        # the ten largest features and the rest together (17 model inputs: 11 columns, Age and Marital protected,
        # and 6 derived features)
        assert len(_pts(texts)) == 11
        assert f"{len(spec.model_inputs) - 10} features with smaller effects" in texts
        assert not any(f.name + " =" in t for t in texts for f in spec.features)  # labels, not column names
        # labelled values, a derived feature's computed from the logged inputs (1000 / 1300); each shown in the
        # waterfall when among the ten largest, in the inputs table always
        for shown in ("loan amount = ¥1,000", "loan amount compared with the purchase price = 76.9%"):
            label, value = shown.split(" = ")
            assert shown in texts or (label in page and value in page), shown


def test_charts_are_deterministic():
    items = [("a", 3.0), ("b", 1.0)]
    assert report.charts.bars(items, "t") == report.charts.bars(items, "t")


# --------------------------------------------------------------------------- adverse impact


def _impact_log(groups: dict[str | None, tuple[int, int]], quarantined_group: str = "fixed") -> pd.DataFrame:
    rows = []
    for g, (n, approved) in groups.items():
        rows += [{"status": "decided", "action": "approve" if k < approved else ("review" if k % 2 else "decline"),
                  INPUT_PREFIX + "Job": g} for k in range(n)]
    rows += [{"status": "quarantined", "action": "quarantined", INPUT_PREFIX + "Job": quarantined_group}] * 50
    return pd.DataFrame(rows)


def test_adverse_impact_four_fifths_on_crafted_counts():
    log = _impact_log({"fixed": (100, 80), "freelance": (50, 30), "tiny": (2, 2), "partime": (40, 0),
                       None: (30, 24)})
    t = report.adverse_impact(log, "Job", min_group_size=30).set_index("group")
    assert t.loc["fixed", "n"] == 100  # quarantined rows are not decisions
    assert t.loc["freelance", "approval_rate"] == pytest.approx(0.6)
    assert t.loc["tiny", "approval_rate"] == 1.0
    # the 2-person 100% group is neither the reference nor given a ratio
    assert np.isnan(t.loc["tiny", "adverse_impact_ratio"])
    assert t.loc["fixed", "adverse_impact_ratio"] == pytest.approx(1.0)
    assert t.loc["freelance", "adverse_impact_ratio"] == pytest.approx(0.75)
    assert t.loc["partime", "adverse_impact_ratio"] == pytest.approx(0.0)
    assert t.loc["(missing)", "adverse_impact_ratio"] == pytest.approx(1.0)
    assert (t.loc[["freelance", "partime"], "adverse_impact_ratio"] < 0.8).all()


def test_adverse_impact_small_groups_count_when_allowed():
    log = _impact_log({"fixed": (100, 80), "freelance": (50, 30), "tiny": (2, 2)})
    t = report.adverse_impact(log, "Job", min_group_size=1).set_index("group")
    assert t.loc["tiny", "adverse_impact_ratio"] == pytest.approx(1.0)
    assert t.loc["fixed", "adverse_impact_ratio"] == pytest.approx(0.8)
    assert t.loc["freelance", "adverse_impact_ratio"] == pytest.approx(0.6)


def test_adverse_impact_no_group_big_enough():
    t = report.adverse_impact(_impact_log({"a": (3, 3), "b": (4, 1)}), "Job", min_group_size=30)
    assert t["adverse_impact_ratio"].isna().all()


def test_adverse_impact_no_approvals_at_all():
    t = report.adverse_impact(_impact_log({"a": (40, 0), "b": (40, 0)}), "Job", min_group_size=30)
    assert t["adverse_impact_ratio"].isna().all()  # no reference rate to divide by


def test_portfolio_shows_unassessed_small_groups(built):
    text = _text((built.directory / "portfolio.html").read_text(encoding="utf-8"))
    assert "not assessed" in text  # our 3 odd groups have fewer than 30 decisions


# --------------------------------------------------------------------------- monitoring pages


def _monitor_results():
    from creditgov.monitor.drift import CalibrationBasis, EstimatedPerformance, MonitorResult, ObservedPerformance, \
        TierCalibration

    failed = TierCalibration(tier="high", n=900, observed_bad=540, observed_rate=0.6, predicted_rate=0.3,
                             jeffreys_low=0.557, jeffreys_high=0.642, assessed=True, passed=False)
    small = TierCalibration(tier=SCRIPT, n=40, observed_bad=9, observed_rate=0.225, predicted_rate=0.05,
                            jeffreys_low=0.1, jeffreys_high=0.38, assessed=False, passed=True)
    observed = ObservedPerformance(auc=0.8123, auc_ci_low=0.8011, auc_ci_high=0.8234, ks=0.4567, ks_ci_low=0.44,
                                   ks_ci_high=0.47, dev_auc=0.9, dev_auc_ci_low=0.89, dev_ks=0.6, bad_rate=0.1234,
                                   predicted_rate=0.1111, calibration=(failed, small), calibration_passed=False,
                                   n=5000)
    estimated = EstimatedPerformance(auc=0.8765, ks=0.5, expected_bad_rate=0.0987, trusted=True,
                                     basis="calibration on the last matured data passes")
    basis = CalibrationBasis(passed=True, calibration=(), n=4321, dev_auc=0.9)
    early = MonitorResult("month-14", 6000, 0.0512, {"days_past_due": 0.02, IMG: 0.3}, {"employment": {SCRIPT: 0.4}},
                          {"all": 0.05}, None, estimated, basis, verdict="watch", reasons=(f"CSI 0.300 of {IMG}",),
                          source="data/simulated/default/month=14/snapshot.parquet", batch_hash="ab12" * 16,
                          basis_label="month-02", basis_source="data/simulated/default/month=02/snapshot.parquet",
                          basis_hash="cd34" * 16)
    late = MonitorResult("month-15", 6100, 0.31, {"days_past_due": 0.41}, {}, {"all": 0.3}, observed, None, None,
                         verdict="rebuild",
                         reasons=("observed AUC 0.812 is more than 0.05 below development 0.900", SCRIPT),
                         evidently_html="/somewhere/evidently-month-15.html",
                         unseen_segments={"employment": {"freelance": 1234, IMG: 3}})
    return early, late


@pytest.fixture(scope="module")
def monitor_pages(tmp_path_factory):
    from creditgov.report import monitoring

    spec = load_spec(REPO / "pipelines" / "behaviour.yaml")
    out = tmp_path_factory.mktemp("monitor")
    results = _monitor_results()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(monitoring, "datetime", _FixedDatetime)
        pages = [monitoring.write_batch_page(out, spec, r, MODEL_VERSION, "stamp") for r in results]
        index = monitoring.write_index(out, spec, list(results), MODEL_VERSION, "stamp", history=VERDICTS_KEPT,
                                       run_ids=["run-14", "run-15"])
    return {"index": index, **{p.stem: p for p in pages}}


def _verdicts_kept():
    from creditgov.governance.registry import Verdict

    # an earlier run's verdict, then this run's two (registry.verdict_history of the version's tags)
    return [Verdict(1, "stable", "month-13", "run-13"), Verdict(2, "watch", "month-14", "run-14"),
            Verdict(3, "rebuild", "month-15", "run-15")]


VERDICTS_KEPT = _verdicts_kept()


def test_monitoring_pages_are_self_contained_stamped_and_inert(monitor_pages):
    from importlib import resources

    css = resources.files("creditgov").joinpath("templates", "base.css").read_text(encoding="utf-8")
    assert set(monitor_pages) == {"index", "drift-month-14", "drift-month-15"}
    for name, path in monitor_pages.items():
        html = path.read_text(encoding="utf-8")
        dom = _parse(html)
        assert dom.styles == [css], name
        csp = [m.get("content", "") for m in dom.metas
               if (m.get("http-equiv") or "").lower() == "content-security-policy"]
        assert len(csp) == 1 and "default-src 'none'" in csp[0], name
        assert not {"script", "img", "iframe", "object", "embed"} & set(dom.tags), name
        text = _text(html)
        assert GENERATED_AT in text and f"version {MODEL_VERSION}" in text, name


def test_monitoring_index_shows_the_version_verdict_history_earlier_runs_too(monitor_pages):
    import re

    spec = load_spec(REPO / "pipelines" / "behaviour.yaml")
    page = monitor_pages["index"].read_text(encoding="utf-8")
    history = page[page.index("Verdict history of"):page.index("<h2>Trend")]
    text = " ".join(_text(history).split())
    assert f"{spec.registry.model_name} version {MODEL_VERSION}" in text
    assert "Model status now: rebuild (month-15)" in text and "made and flagged" in text
    rows = [" ".join(" ".join(_text(c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S))
            for r in re.findall(r"<tr>(.*?)</tr>", history, re.S)[1:]]
    assert rows == ["1 month-13 stable run-13", "2 month-14 (this run) watch run-14",
                    "3 month-15 (this run) rebuild run-15"]  # every verdict kept; only this run's marked


def test_drift_page_shows_the_typed_figures(monitor_pages):
    late = _text(monitor_pages["drift-month-15"].read_text(encoding="utf-8"))
    assert "Verdict: rebuild" in late
    assert "0.3100" in late and "0.4100" in late  # score PSI, CSI
    assert "AUC 0.8123 [0.8011, 0.8234]" in late and "KS 0.4567 [0.4400, 0.4700]" in late
    assert "development AUC 0.9000" in late and "5000 rows, bad rate 0.1234, predicted 0.1111" in late
    assert "0.6000" in late and "0.5570 – 0.6420" in late and "FAIL" in late  # the failed tier
    assert "too few rows" in late and SCRIPT in late  # the unassessed tier, its name shown as text
    assert "Evidently data-drift report" in late
    hrefs = [v for tag, k, v in _parse(monitor_pages["drift-month-15"].read_text(encoding="utf-8")).attrs
             if tag == "a" and k == "href"]
    assert "evidently-month-15.html" in hrefs  # a sibling file, not the absolute path it was written to
    early = _text(monitor_pages["drift-month-14"].read_text(encoding="utf-8"))
    assert "CBPE): AUC 0.8765, KS 0.5000, expected bad rate 0.0987" in early
    assert "Calibration on the last matured data (4321 rows)" in early
    assert IMG in early and SCRIPT in early  # a feature and a segment value, as text
    assert "+5.0%" in early


def test_drift_page_names_the_batch_its_hash_the_matured_data_and_explains_psi(monitor_pages):
    early = _text(monitor_pages["drift-month-14"].read_text(encoding="utf-8"))
    assert "data/simulated/default/month=14/snapshot.parquet" in early and "ab12" * 4 in early
    assert "not matured" in early  # this batch's own labels
    assert "month-02" in early and "data/simulated/default/month=02/snapshot.parquet" in early
    assert "cd34" * 4 in early and "4321 rows" in early  # the matured data the estimates rest on
    assert "population stability index" in early and "characteristic stability index" in early
    late = _text(monitor_pages["drift-month-15"].read_text(encoding="utf-8"))
    assert "matured: its outcomes are known" in late
    assert "none: no batch whose outcome window has closed" in late


def test_drift_page_names_segments_absent_from_the_reference(monitor_pages):
    """Job = freelance against a reference that has no freelance: not an empty table, a named reason."""
    html = monitor_pages["drift-month-15"].read_text(encoding="utf-8")
    text = _text(html)
    assert "Score PSI by type of employment" in text  # the catalogue's label, the column name beside it
    assert "absent from the development reference" in text
    assert "employment = freelance (1,234 rows)" in text and f"employment = {IMG} (3 rows)" in text
    assert "<img" not in html  # the segment value is shown as text


def test_evidently_page_gets_the_creditgov_frame_and_shares_its_bundle(tmp_path):
    """A page in Evidently's layout (head style, data script, `global` shim, bundle, drawDashboard call): the
    frame adds the CSP, header, back links and the sentence on its scores; the bundle moves to one shared file."""
    from creditgov.report import monitoring

    spec = load_spec(REPO / "pipelines" / "behaviour.yaml")
    _, late = _monitor_results()
    bundle = "var bundle = '" + "x" * 5000 + "'; window.drawDashboard = function () {};"
    raw = ('<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8"><style>body{}</style>'
           '<script>var metric_1 = {"name": "Report"};</script></head><body><div id="root_metric_1"></div>'
           f'<script>var global = globalThis</script>\n<script>{bundle}</script>\n<script>\n'
           'window.drawDashboard(metric_1, new Map(), "root_metric_1");</script></body></html>')
    pages = []
    for label in ("month-15", "month-16"):
        page = tmp_path / f"evidently-{label}.html"
        page.write_text(raw, encoding="utf-8")
        pages.append(monitoring.dress_evidently(page, spec, dataclasses.replace(late, label=label), MODEL_VERSION))
    shared = sorted(tmp_path.glob("evidently-*.js"))
    assert len(shared) == 1 and shared[0].read_text(encoding="utf-8") == bundle  # one bundle for the run
    html = pages[0].read_text(encoding="utf-8")
    dom = _parse(html)
    csp = [m.get("content", "") for m in dom.metas if (m.get("http-equiv") or "").lower() == "content-security-policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0] and "connect-src 'none'" in csp[0]
    hrefs = [v for tag, k, v in dom.attrs if tag == "a" and k == "href"]
    assert hrefs[:2] == ["drift-month-15.html", "index.html"]
    srcs = [v for tag, k, v in dom.attrs if tag == "script" and k == "src"]
    assert srcs == [shared[0].name] and bundle not in html
    text = _text(html)
    assert "creditgov" in text and f"version {MODEL_VERSION}" in text
    assert "Why its scores differ from the drift page" in text and "Wasserstein" in text
    assert len(html) < len(raw) + 3000


def test_monitoring_index_links_every_batch_page(monitor_pages):
    html = monitor_pages["index"].read_text(encoding="utf-8")
    hrefs = [v for tag, k, v in _parse(html).attrs if tag == "a" and k == "href"]
    assert hrefs == ["drift-month-14.html", "drift-month-15.html"]
    for h in hrefs:
        assert (monitor_pages["index"].parent / h).is_file()
    text = _text(html)
    assert "0.8765" in text and "0.8123" in text  # estimated AUC of one batch, observed of the other
    assert "ab12ab12ab" in text and "month-02" in text  # the batch's content hash, the matured data's month
    assert "Observed AUC for month-15 (matured labels)" in text
    assert f"CSI 0.300 of {IMG}" in text
    assert html.count("<svg") == 3
    # the trend chart's series and the drivers named by the catalogue's label, not by column name
    assert "CSI time your repayment has been overdue" in html and "CSI days_past_due" not in html
    assert "estimated AUC (CBPE)" in html


def test_monitoring_pages_name_features_by_their_catalogue_label(monitor_pages):
    from creditgov.report import monitoring

    spec = load_spec(REPO / "pipelines" / "behaviour.yaml")
    assert (monitoring.readable_reason(spec, "CSI 0.412 of key feature days_past_due >= 0.25")
            == "CSI 0.412 of key feature time your repayment has been overdue (days_past_due) >= 0.25")
    assert (monitoring.readable_reason(spec, "score PSI 0.300 in segment employment=freelance >= 0.25")
            == "score PSI 0.300 in segment type of employment (employment) = freelance >= 0.25")
    assert monitoring.readable_reason(spec, f"CSI 0.300 of {IMG} >= 0.1") == f"CSI 0.300 of {IMG} >= 0.1"
    late = _text(monitor_pages["drift-month-15"].read_text(encoding="utf-8"))
    rows = [ln for ln in late.splitlines() if "0.4100" in ln]
    assert rows and "time your repayment has been overdue" in rows[0]  # the CSI table's feature column
    assert "key features time your repayment has been overdue," in late.replace("\n", " ")


def test_render_is_strict_and_inlines_the_stylesheet():
    import jinja2

    page = report.render("root_index.html", rows=[], generated_at=GENERATED_AT)
    assert _parse(page).styles == [report.stylesheet()]
    with pytest.raises(jinja2.UndefinedError):
        report.render("root_index.html", rows=[])  # a missing value is an error, not a blank


# --------------------------------------------------------------------------- real browser


def _dump_dom(page: Path, profile: Path) -> str:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--dump-dom", page.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed: no real-browser rendering")
@pytest.mark.parametrize("which", ["decision", "portfolio"])
def test_real_browser_renders_hostile_strings_inertly(built, log, which, tmp_path):
    did = log["decision_id"].iloc[0]
    page = built.directory / ("decisions" if which == "decision" else "") / (
        f"{did}.html" if which == "decision" else "portfolio.html")
    dom_html = _dump_dom(page, tmp_path / "profile")
    dom = _parse(dom_html)
    assert "script" not in dom.tags
    assert "img" not in dom.tags
    assert "<script" not in dom_html.lower()
    text = "".join(dom.text)
    assert SCRIPT in text
    if which == "decision":
        assert IMG in text and FORMULA in text
        assert "svg" in dom.tags
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_the_trend_plots_the_features_behind_the_verdicts():
    """Every feature whose CSI reached watch in some batch (key features first, then by CSI), not only keys:
    the non-key feature at CSI 0.3 made month-14's watch verdict."""
    import dataclasses

    from creditgov.report import monitoring

    spec = load_spec(REPO / "pipelines" / "behaviour.yaml")
    early, late = _monitor_results()
    late = dataclasses.replace(late, csi={"inquiries_6m": 0.4, "utilisation": 0.12, "days_past_due": 0.01})
    assert IMG not in spec.monitoring.key_features
    assert monitoring.drivers([early, late], spec) == ["inquiries_6m", "utilisation", IMG]
    quiet = dataclasses.replace(late, csi={"days_past_due": 0.01})
    assert monitoring.drivers([quiet], spec) == spec.monitoring.key_features[:3]


def test_the_root_index_lists_each_run_with_its_model_policy_rows_and_verdict(built, log, spec, monitor_pages,
                                                                              tmp_path):
    """reports/index.html names, per run, what an examiner looks for first: model version, policy, rows, what
    was decided (adverse counts) and the monitoring verdict; a run made before run.json is listed by kind."""
    root = tmp_path / "reports"
    shutil.copytree(built.directory, root / built.directory.name)
    shutil.copytree(monitor_pages["index"].parent, root / "credit-behaviour-monitor-x")
    (root / "old-run").mkdir()
    (root / "old-run" / "index.html").write_text("<html></html>", encoding="utf-8")
    text = _text(report.write_root_index(root).read_text(encoding="utf-8"))
    decided = log[log["status"] == "decided"]
    adverse = int(decided["action"].isin(["decline", "cut", "suspend"]).sum())
    first = log.iloc[0]
    assert f"{first['model_name']} v{first['model_version']}" in text
    assert f"{spec.policy.name} {spec.policy.version}" in text
    assert f"{len(decided):,} decided, {adverse:,} adverse, {len(log) - len(decided):,} quarantined" in text
    assert f"{MODEL_VERSION}" in text and "2 batches (month-14 to month-15), worst verdict" in text
    assert "old-run" in text and "decisions" in text


def test_the_regulator_pack_lists_the_run_in_reading_order(built, tmp_path, monkeypatch):
    """What `creditgov report --pdf` prints, in order: index, portfolio, (model card), the sampled decisions as
    the index lists them, then their notices in English and Chinese; a folder that is no report run, or no
    Chromium to print with, is a one-line error."""
    from creditgov.errors import CreditGovError
    from creditgov.report import pdf

    docs = pdf.pack_documents(built.directory)
    ids = built.decisions
    assert [d.title for d in docs] == (["Decision report: index", "Portfolio report"]
                                       + [f"Decision {i}" for i in ids]
                                       + [f"Notice {i} ({lang})" for i in ids for lang in ("English", "Chinese")])
    assert all(d.path.is_file() and built.directory in d.path.parents for d in docs)
    with pytest.raises(CreditGovError, match="no index.html"):
        pdf.pack_documents(tmp_path)
    monkeypatch.setenv(pdf.CHROMIUM_ENV, str(tmp_path / "no-such-browser"))
    assert pdf.find_chromium() is None
    with pytest.raises(pdf.ChromiumError, match="no Chromium to print the pack with"):
        pdf.write_pack(built.directory)
