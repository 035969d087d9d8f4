"""Customer notices and decision pages read as a customer and a reviewer would (issue 14).

The decision logs here are made by the real policy (apply_policy) on rows chosen to reach every kind of
decision, with reasons from the real reason builder (decide._reason_lists) on chosen attributions; the model
is left out (its attributions are given), so every notice kind is reached in milliseconds. Pages are built by
the real report (pages.build) and read as text.
"""
from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from creditgov.decision import collections, decide
from creditgov.decision.decide import INPUT_PREFIX, SHAP_PREFIX
from creditgov.decision.policy import apply_policy
from creditgov.report import pages, wording
from creditgov.spec import Channel, Party, Reason
from helpers import names_leaked, notice_body

STAMP = {"decision_time": "2026-11-01T00:00:00Z", "model_version": "3", "policy_version": "2026.11-1",
         "spec_hash": "5" * 64, "input_hash": "9" * 64, "input_source": "batch.parquet",
         "pseudonym_key": "development"}

BEHAVIOUR_BASE = {"age": 40, "employment": "salaried", "income": 8000, "tenure_months": 24, "prior_bad_records": 0,
                  "inquiries_6m": 1, "credit_limit": 10000, "txn_count": 5, "spend_amount": 1200,
                  "instalment_share": 0.2, "spend_change_3m": 1.1, "utilisation": 0.3, "payment_ratio": 1.5,
                  "days_past_due": 0, "max_dpd_6m": 0, "months_overdue_12m": 0, "cum_overdue_days_12m": 0,
                  "clean_months": 12, "shared_device_count": 1, "previous_pd": 0.05, "fraud_signal": 0,
                  "suspended": 0, "months_since_limit_change": 12}
# (changes to the base row, PD): one row per kind of on-book decision
BEHAVIOUR_CASES = [
    ({"fraud_signal": 1}, 0.05),                                           # suspend_fraud
    ({"days_past_due": 45, "cum_overdue_days_12m": 45, "clean_months": 0}, 0.2),  # suspend_overdue
    ({"days_past_due": 10, "cum_overdue_days_12m": 95}, 0.1),              # suspend_cumulative_overdue
    ({"previous_pd": 0.05}, 0.2),                                          # suspend_risk_rise
    ({"suspended": 1, "clean_months": 1}, 0.1),                            # remain_suspended
    ({"suspended": 1, "clean_months": 4}, 0.05),                           # restore
    ({"previous_pd": 0.15}, 0.2),                                          # cut
    ({"previous_pd": 0.2}, 0.3),                                           # review
    ({"previous_pd": 0.004, "clean_months": 30}, 0.004),                   # raise
    ({}, 0.05),                                                            # keep
    ({"inquiries_6m": 8}, 0.05),                                           # watch_reminder (one early warning)
    ({"inquiries_6m": 8, "payment_ratio": 1.05}, 0.05),                    # watch_freeze (two)
    ({"previous_pd": 0.02}, 0.06),                                         # reprice (low tier to medium)
]
APPLICATION_BASE = {"Seniority": 3, "Home": "rent", "Time": 48, "Age": 33, "Marital": "married", "Records": "yes",
                    "Job": "fixed", "Expenses": 60, "Income": 500.0, "Assets": 0.0, "Debt": 0.0, "Amount": 1400,
                    "Price": 1600}
APPLICATION_CASES = [({}, 0.6), ({}, 0.45), ({"Income": np.nan}, 0.1), ({}, 0.1)]


def _cf(spec, row: dict, action: str) -> str | None:
    """A found counterfactual moving the first actionable numeric feature (units shown in the notice)."""
    if action not in ("decline", "cut", "suspend"):
        return None
    feats = [f for f in spec.model_inputs if f.actionable and f.type == "numeric"]
    f = feats[-1] if spec.name == "credit-application" else next(x for x in feats if x.name == "utilisation")
    old = float(row[f.name])
    return json.dumps({"found": True, "cost": 0.1, "action_after": "approve", "pd_after": 0.2,
                       "changes": [{"feature": f.name, "from": old, "to": old * 0.875}]}, sort_keys=True)


def _log(spec, base: dict, cases: list) -> pd.DataFrame:
    frame = pd.DataFrame([{**base, **c} for c, _ in cases])
    p = np.array([pd_ for _, pd_ in cases])
    decided = apply_policy(frame, p, spec.policy)
    feats = [f.name for f in spec.model_inputs]
    rng = np.random.default_rng(7)
    phi = rng.normal(0, 0.1, (len(frame), len(feats)))
    # the largest pushes: a policy-set value, a rule's own feature, a bureau feature
    for name, v in (("txn_count", 0.9), ("days_past_due", 0.8), ("Income", 0.8), ("inquiries_6m", 0.5),
                    ("Records", 0.5), ("Amount", 0.4)):
        if name in feats:
            phi[:, feats.index(name)] = v
    first_row_bureau = [feats.index(f.name) for f in spec.features if f.bureau and f.name in feats]
    phi[0, first_row_bureau] = -0.5  # the first decision has no reason from the bureau's report
    codes, en, zh, attr = decide._reason_lists(phi, feats, decided["decided_by"].to_numpy(), spec)
    log = pd.DataFrame({
        "decision_id": [f"{i + 1:032x}" for i in range(len(frame))], "row_number": np.arange(1, len(frame) + 1),
        "status": "decided", "quarantine_rules": None, "pd": p, "log_odds": np.log(p / (1 - p)),
        "tier": decided["tier"], "action": decided["action"], "decided_by": decided["decided_by"],
        "limit": decided["limit"], "previous_limit": decided["previous_limit"],
        "review_queue": decided["review_queue"], "rules_triggered": list(decided["rules_triggered"]),
        "reason_codes": codes, "reasons_en": en, "reasons_zh": zh, "reason_attributions": attr,
        "counterfactual": [_cf(spec, r, a) for r, a in zip(frame.to_dict("records"), decided["action"])],
        "shap_base": np.log(p / (1 - p)) - phi.sum(axis=1), "additivity_error": 0.0,
        "changed_features": [[] for _ in p], "changed_en": [[] for _ in p], "changed_zh": [[] for _ in p],
        "changed_attribution_deltas": [[] for _ in p],
        "previous_pd": frame["previous_pd"] if "previous_pd" in frame else np.nan,
    })
    for c in ("watchlist", "warning_signals", "apr", "previous_apr"):  # early warning and pricing, when set
        if c in decided:
            log[c] = list(decided[c]) if c == "warning_signals" else decided[c].to_numpy()
    for j, f in enumerate(feats):
        log[SHAP_PREFIX + f] = phi[:, j]
        if f in frame:  # a derived feature is not logged: computed from the logged inputs
            log[INPUT_PREFIX + f] = frame[f].astype(object)
    log["input_row_hash"] = "0" * 64
    log["account_key"] = "k" * 24
    for k, v in {**STAMP, "model_name": spec.registry.model_name, "policy_name": spec.policy.name,
                 "policy_hash": spec.policy.content_hash}.items():
        log[k] = v
    return log


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.rights, self._skip, self._right = [], [], False, None

    def handle_starttag(self, tag, attrs):
        self._skip = tag == "style"
        a = dict(attrs)
        if "data-right" in a:
            self._right = [a["data-right"], ""]
            self.rights.append(self._right)

    def handle_endtag(self, tag):
        self._skip = False
        if tag == "li":
            self._right = None

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)
            if self._right is not None:
                self._right[1] += data


def _read(html: str) -> _Text:
    t = _Text()
    t.feed(html)
    return t


def _notices(spec, log) -> dict:
    """{(decision id, kind): {lang: parsed notice}} for every decision of the log, rendered as the report does."""
    stamp = {"generated_at": "2026-11-30T08:00:00+00:00", "model": "m", "policy": "p", "data": "d", "log": "l",
             "decision_time": STAMP["decision_time"]}
    out = {}
    for _, row in log.iterrows():
        ctx = pages._decision_context(row, spec, {}, stamp)
        out[(row["decision_id"], ctx["notices"]["en"]["kind"])] = {
            lang: _read(pages.render("notice.html", n=n, **ctx)) for lang, n in ctx["notices"].items()}
    return out


def _us(spec):
    lender = spec.lender.model_copy(update={
        "jurisdiction": "US", "currency": "USD",
        "regulator": Party(name=Reason(en="Consumer Financial Protection Bureau", zh="消费者金融保护局"),
                           contact=[Channel(kind="post", value="1700 G Street NW, Washington DC 20552")]),
        "bureau": Party(name=Reason(en="Example Credit Bureau Inc.", zh="示例征信公司"),
                        contact=[Channel(kind="phone", value="1-800-000-0000")])})
    return spec.model_copy(update={"lender": lender})


@pytest.fixture(scope="module")
def cases(spec, behaviour_spec):
    out = {}
    for name, s, base, rows in (("application", spec, APPLICATION_BASE, APPLICATION_CASES),
                                ("behaviour", behaviour_spec, BEHAVIOUR_BASE, BEHAVIOUR_CASES)):
        for juris, sp in (("CN", s), ("US", _us(s))):
            log = _log(sp, base, rows)
            out[(name, juris)] = (sp, log, _notices(sp, log))
    return out


def test_every_kind_of_notice_is_reached(cases):
    kinds = {k for (_, j), (_, _, n) in cases.items() if j == "CN" for _, k in n}
    assert kinds == {"decline", "review_application", "approve", "suspend", "remain_suspended", "restore", "cut",
                     "review_account", "raise", "keep", "watch_reminder", "watch_freeze", "reprice"}


def test_no_column_name_or_identifier_reaches_a_notice(cases):
    for (name, juris), (spec, _, notices) in cases.items():
        for key, by_lang in notices.items():
            for lang, t in by_lang.items():
                body = "".join(t.parts).split("credit-")[0]  # the footer names the model and the policy hash
                assert not names_leaked(body, spec, lang), (name, juris, key, lang, names_leaked(body, spec, lang))


def test_every_notice_names_the_lender_and_every_contact_channel(cases):
    for (_, _), (spec, _, notices) in cases.items():
        for key, by_lang in notices.items():
            for lang, t in by_lang.items():
                text = "".join(t.parts)
                assert getattr(spec.lender.name, lang) in text, (key, lang)
                for ch in spec.lender.contact + spec.lender.complaints:
                    assert ch.text(lang) in text, (key, lang, ch)
                assert "2026-11-01" in text and "2026-11-30" in text  # decision date and notice date, both named


_CN_DIGIT = {c: i for i, c in enumerate("零一二三四五六七八九")}


def _cn_article(m: re.Match) -> str:
    """第二十四条 -> 24 (a Chinese citation writes article numbers in Chinese numerals)."""
    s = m.group(1)
    tens, _, ones = s.rpartition("十")
    n = (_CN_DIGIT.get(tens, 1) * 10 if "十" in s else 0) + (_CN_DIGIT[ones] if ones else 0)
    return str(n)


def _facts(text: str) -> list[str]:
    text = re.sub(r"第([零一二三四五六七八九十]+)条", _cn_article, text)
    return sorted(re.findall(r"\d+(?:[.,-]\d+)*", text))


def test_rights_blocks_match_in_substance_across_languages(cases):
    seen, fcra = set(), set()
    for (name, juris), (spec, log, notices) in cases.items():
        for key, by_lang in notices.items():
            en, zh = by_lang["en"].rights, by_lang["zh"].rights
            assert [k for k, _ in en] == [k for k, _ in zh], key
            for (k, e), (_, z) in zip(en, zh):
                assert _facts(e) == _facts(z), (k, _facts(e), _facts(z))  # article numbers, days, phone numbers
                for party in (spec.lender.regulator, spec.lender.bureau):
                    if party.name.en in e:
                        assert party.name.zh in z, (k, party.name.zh)
            keys = [k for k, _ in en]
            seen.update(keys)
            if juris == "CN":
                assert keys[:2] == ["pipl_24", "credit_report_objection"] and "ecoa_notice" not in keys
            else:
                assert keys[0] == "ecoa_notice" and "pipl_24" not in keys
                row = log.set_index("decision_id").loc[key[0]]
                bureau = {f.name for f in spec.features if f.bureau} & set(row["reason_codes"])
                assert ("fcra_disclosure" in keys) == bool(bureau), (key, row["reason_codes"])
                fcra.add(bool(bureau))
    assert {"pipl_24", "credit_report_objection", "ecoa_notice", "reg_b_reasons", "fcra_disclosure",
            "contact", "complaints"} <= seen
    assert fcra == {True, False}  # US notices with and without a reason from the bureau's report


def _by_kind(cases, name: str, kind: str, lang: str = "en", juris: str = "CN") -> str:
    _, _, notices = cases[(name, juris)]
    return "".join(next(v for (_, k), v in notices.items() if k == kind)[lang].parts)


def test_each_action_has_its_own_words(cases, behaviour_spec):
    ob = behaviour_spec.policy.on_book
    remain = _by_kind(cases, "behaviour", "remain_suspended")
    assert "remains suspended" in remain and "has been suspended" not in remain
    assert f"at least {ob.restore_clean_months} months in a row (you have 1 month now)" in remain
    review = _by_kind(cases, "behaviour", "review_account")
    assert "your application" not in review.lower() and "your account" in review
    assert "您的申请" not in _by_kind(cases, "behaviour", "review_account", "zh")
    assert "Your application is being reviewed" in _by_kind(cases, "application", "review_application")
    cut = _by_kind(cases, "behaviour", "cut")
    assert "reduced from ¥10,000 to ¥5,000" in cut
    assert "$10,000" in _by_kind(cases, "behaviour", "cut", juris="US")
    # what restores a suspended line, in the policy's numbers
    _, log, notices = cases[("behaviour", "CN")]
    suspended = [v for (_, k), v in notices.items() if k == "suspend"]
    assert len(suspended) == 4
    for v in suspended:
        text = "".join(v["en"].parts)
        zh = "".join(v["zh"].parts)
        if "verify" in text:
            continue
        assert (f"{ob.suspend_days_past_due} days or more overdue" in text
                and f"less than {ob.suspend_cumulative_overdue_days}" in text), text
        assert f"至少{ob.restore_clean_months}个月" in zh


def test_the_fraud_notice_tips_nothing_off(cases, behaviour_spec):
    wording_ = behaviour_spec.lender.customer_wording["suspend_fraud"]
    rule = behaviour_spec.policy.on_book.reasons["suspend_fraud"]
    _, log, notices = cases[("behaviour", "CN")]
    did = log.loc[log["decided_by"] == "rule:suspend_fraud", "decision_id"].iloc[0]
    by_lang = next(v for (d, _), v in notices.items() if d == did)
    for lang in ("en", "zh"):
        text = "".join(by_lang[lang].parts)
        assert getattr(wording_, lang) in text
        assert getattr(rule, lang) not in text
        assert "fraud" not in text.lower() and "欺诈" not in text
    assert "rule:suspend_fraud" in log["reason_codes"][log["decision_id"] == did].iloc[0]  # the log keeps the truth


def test_counterfactuals_are_plain_sentences_with_units(cases):
    en = _by_kind(cases, "application", "decline")
    zh = _by_kind(cases, "application", "decline", "zh")
    assert "if the loan amount had been ¥1,225 instead of ¥1,400" in en
    assert "如果申请金额由¥1,400调整为¥1,225" in zh
    cut = _by_kind(cases, "behaviour", "cut")
    assert "the share of your credit limit in use had been 26.2% instead of 30%" in cut
    rule = _by_kind(cases, "behaviour", "suspend")  # the first suspension: fraud, told as verification
    assert "Once the verification is complete" in rule


def test_one_reason_per_cause_and_no_policy_set_value(cases, spec, behaviour_spec):
    """txn_count (marked never a reason) carries the largest attribution of every row, yet is never a reason
    (credit_limit, which the policy sets, is not a model input at all); a rule that decided
    is the one line of its cause: the feature it reads does not follow it."""
    _, log, _ = cases[("behaviour", "CN")]
    for codes in log["reason_codes"]:
        assert "credit_limit" not in codes and "txn_count" not in codes
        assert len(codes) == len(set(codes)) and codes
    overdue = log.loc[log["decided_by"] == "rule:suspend_overdue", "reason_codes"].iloc[0]
    assert overdue[0] == "rule:suspend_overdue" and "days_past_due" not in overdue
    keep = log.loc[log["action"] == "keep", "reason_codes"].iloc[0]
    assert keep[0] == "days_past_due"  # not a rule's outcome: the feature is a reason of its own
    _, app, _ = cases[("application", "CN")]
    income = app.loc[app["decided_by"] == "rule:income_not_stated", "reason_codes"].iloc[0]
    assert income[0] == "rule:income_not_stated" and "Income" not in income


def test_every_rule_row_of_a_decision_page_shows_threshold_and_value(cases):
    stamp = {"generated_at": "2026-11-30T08:00:00+00:00", "model": "m", "policy": "p", "data": "d", "log": "l",
             "decision_time": STAMP["decision_time"]}
    for (name, juris), (spec, log, _) in cases.items():
        if juris != "CN":
            continue
        for _, row in log.iterrows():
            ctx = pages._decision_context(row, spec, {}, stamp)
            ctx["waterfall"] = lambda: ""  # the chart is tested in test_report_html; here the rule table
            page = "".join(_read(pages.render("decision.html", **ctx)).parts)
            rules = ctx["rules"]
            assert len(rules) >= 3
            for r in rules:
                assert r["threshold"].strip() and r["value"].strip(), (row["decision_id"], r)
                assert r["threshold"] in page and r["value"] in page
            if row["decided_by"] == "rule:suspend_overdue":
                assert "days past due ≥ 30" in page and "45 days" in page
            if row["decided_by"] == "rule:income_not_stated":
                assert "Monthly income is not stated" in page and "not stated" in page
            if row["action"] == "decline":
                assert "credit limitnone (declined)" in page
            if row["action"] == "suspend":
                assert "credit limitnone while suspended (was ¥10,000)" in page
            names = {r["name"]: r for r in rules}
            if row["action"] == "watch_freeze":  # the early warnings that froze it, each with its trigger
                assert names["warn_inquiries_spike"]["triggered"] and names["warn_payment_ratio_drop"]["triggered"]
                assert "in the last 6 months is 7 or more" in names["warn_inquiries_spike"]["threshold"]
                assert names["warn_inquiries_spike"]["value"] == "8"
            if row["action"] == "reprice":
                assert names["reprice_tier_rise"]["value"] == "12.00% → 18.00%"
            if name == "behaviour":  # the collections ladder's rules too, each with its days-past-due trigger
                assert names["collect_call"]["threshold"].startswith("days past due ≥ 30")
                assert names["collect_legal"]["value"].endswith(f"tier {row['tier']}")
                # an input only the ladder reads is not in the log: the page says so rather than "not stated"
                assert names["contact_limit_reached"]["value"].endswith("not kept in the decision log")


# one delinquent account per collections treatment (the real ladder chooses it): days past due and what it declared
TREATMENT_CASES = {"reminder": {"days_past_due": 10}, "call": {"days_past_due": 40},
                   "hardship_plan": {"days_past_due": 10, "hardship_declared": 1, "months_overdue_12m": 1},
                   "agency": {"days_past_due": 100, "months_overdue_12m": 4},
                   "legal": {"days_past_due": 160, "months_overdue_12m": 6}}


def test_treatment_notices_name_the_lender_and_contact_and_no_column_in_either_language(cases):
    """The collections notices (templates/treatment_notice.html) as rendered, held to the same bar as the others:
    no column name or identifier, the lender and every contact and complaint channel named, both dates, and
    rights that match across languages; agency and legal once a person approved them."""
    stamp = {"generated_at": "2026-11-30T08:00:00+00:00"}
    for juris in ("CN", "US"):
        spec, log, _ = cases[("behaviour", juris)]
        f = spec.policy.collections.fields
        base = {**BEHAVIOUR_BASE, f.hardship_declared: 0, f.hardship_plan_months_left: 0, f.contacts_30d: 0}
        frame = pd.DataFrame([{**base, **c} for c in TREATMENT_CASES.values()])
        chosen = collections.treatments(frame, np.full(len(frame), 0.1), spec.policy)
        assert list(chosen["treatment"]) == list(TREATMENT_CASES)
        row0 = log.iloc[0]
        for k, t in enumerate(TREATMENT_CASES):
            row = pd.concat([row0, chosen.iloc[k]])
            row[INPUT_PREFIX + f.days_past_due] = float(frame[f.days_past_due].iloc[k])
            by_lang = {}
            for lang in ("en", "zh"):
                n = wording.treatment_notice(row, spec, lang, stamp["generated_at"], approved=True)
                html = pages.render("treatment_notice.html", n=n, row=row, stamp=stamp)
                text = unescape(notice_body(html))
                assert names_leaked(text, spec, lang) == [], (juris, t, lang, names_leaked(text, spec, lang))
                assert getattr(spec.lender.name, lang) in text, (t, lang)
                for ch in spec.lender.contact + spec.lender.complaints:
                    assert ch.text(lang) in text, (t, lang, ch)
                assert "2026-11-01" in text and "2026-11-30" in text
                by_lang[lang] = _read(html).rights
            assert [k for k, _ in by_lang["en"]] == [k for k, _ in by_lang["zh"]] == ["privacy", "complaints"]
            for (_, e), (_, z) in zip(by_lang["en"], by_lang["zh"]):
                assert _facts(e) == _facts(z), (t, _facts(e), _facts(z))
                assert (spec.lender.regulator.name.en in e) == (spec.lender.regulator.name.zh in z)


@pytest.mark.parametrize("unit,value,en,zh", [
    ("currency", 1225.0, "¥1,225", "¥1,225"), ("currency", 1225.5, "¥1,225.50", "¥1,225.50"),
    ("percent", 0.3147, "31.5%", "31.5%"), ("count", 3.0, "3", "3"), ("months", 1.0, "1 month", "1个月"),
    ("months", 36.0, "36 months", "36个月"), ("days", 60.0, "60 days", "60天"), ("years", 2.0, "2 years", "2年"),
    ("multiple", 1.5, "1.5 times", "1.5倍"), (None, 12345.678, "12,345.68", "12,345.68"),
    ("currency", float("nan"), "not stated", "未提供"),
])
def test_values_read_in_their_unit(behaviour_spec, unit, value, en, zh):
    f = behaviour_spec.feature("income").model_copy(update={"unit": unit})
    assert wording.value(f, value, "en", "CNY") == en
    assert wording.value(f, value, "zh", "CNY") == zh


def test_shipped_catalogues_label_every_model_input(spec, behaviour_spec):
    for s in (spec, behaviour_spec):
        for f in s.model_inputs:
            assert f.label is not None and f.label.en and f.label.zh, f.name
            assert f.type != "numeric" or f.unit is not None, f.name
        assert s.lender is not None


def test_the_leak_check_catches_what_the_issue_found(spec, behaviour_spec):
    assert names_leaked("if Amount had been 1,225 instead of 1,400", spec, "en") == ["Amount"]
    assert names_leaked("Time had been 36 instead of 60", spec, "en") == ["Time"]
    assert names_leaked("如果utilisation由 0.3147 调整为 0.236", behaviour_spec, "zh") == ["utilisation"]
    assert names_leaked("many inquiries_6m", behaviour_spec, "en") == ["inquiries_6m"] * 2
    assert names_leaked("your monthly income and your age", behaviour_spec, "en") == []
