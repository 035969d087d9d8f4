"""What a person reads: catalogue labels and units instead of column names, one number format, counterfactuals
and rule remedies in plain words, and the customer notice of each kind of decision with the lender and the
rights of its jurisdiction.

Every customer sentence is built here in both languages from the same facts (the same numbers, the same named
bodies), so the English and the Chinese notice say the same thing. Values are formatted by the catalogue's
`unit`: currency in the lender's currency, a share held as a fraction as a percentage, days, months, years,
counts and multiples with their unit words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from creditgov.decision.decide import INPUT_PREFIX
from creditgov.decision.policy import ADVERSE_ACTIONS, REPRICE_RULE, WARN_PREFIX
from creditgov.spec import Feature, Lender, PipelineSpec

LANGS = ("en", "zh")
CURRENCY_SIGN = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "HKD": "HK$"}
CHANNEL = {"phone": ("phone", "电话"), "email": ("email", "电子邮件"), "web": ("website", "网站"),
           "app": ("app", "手机应用"), "post": ("post", "邮寄地址")}


def missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def number(v: float, decimals: int = 2) -> str:
    """The one number format: thousands separated; whole numbers without decimals, others with up to
    `decimals` (trailing zeros dropped)."""
    v = float(v)
    if v == round(v):
        return f"{v:,.0f}"
    text = f"{v:,.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def money(v: float, currency: str) -> str:
    v = float(v)
    sign = CURRENCY_SIGN.get(currency, currency + " ")
    body = f"{abs(v):,.0f}" if v == round(v) else f"{abs(v):,.2f}"
    return f"{'-' if v < 0 else ''}{sign}{body}"


def _plural(n: float, one: str, many: str) -> str:
    return one if float(n) == 1 else many


def value(f: Feature | None, v, lang: str, currency: str = "CNY") -> str:
    """A feature's value as a person reads it, in its unit."""
    if missing(v):
        return "未提供" if lang == "zh" else "not stated"
    if f is None or f.type != "numeric" or isinstance(v, str):
        return str(v)
    v = float(v)
    unit = f.unit or "number"
    n = number(v)
    if unit == "currency":
        return money(v, currency)
    if unit == "percent":
        return f"{number(round(100 * v, 1), 1)}%"
    if unit in ("months", "days", "years"):
        zh = {"months": "个月", "days": "天", "years": "年"}[unit]
        return f"{n}{zh}" if lang == "zh" else f"{n} {_plural(v, unit[:-1], unit)}"
    if unit == "multiple":
        return f"{n}倍" if lang == "zh" else f"{n} {_plural(v, 'time', 'times')}"
    return n


def label(f: Feature, lang: str) -> str:
    """A feature's name as a person reads it: its catalogue label (its description when it has none)."""
    if f.label is not None:
        return getattr(f.label, lang)
    return f.description or f.name


def pd_text(p: float) -> str:
    return "–" if missing(p) else f"{float(p):.4f}"


# --------------------------------------------------------------------------- counterfactuals


def counterfactual_changes(cf: dict, spec: PipelineSpec, lang: str, currency: str) -> list[dict]:
    """The changes of a found counterfactual as (label, from, to) in the reader's language and units."""
    out = []
    for c in cf.get("changes", []):
        f = spec.feature(c["feature"])
        out.append({"label": label(f, lang), "from": value(f, c["from"], lang, currency),
                    "to": value(f, c["to"], lang, currency)})
    return out


def counterfactual_sentence(cf: dict | None, spec: PipelineSpec, lang: str, currency: str) -> str | None:
    """'... if the loan amount had been ¥1,225 instead of ¥1,400.' / '如果申请金额由¥1,400调整为¥1,225，…'"""
    if not cf or not cf.get("found"):
        return None
    parts = counterfactual_changes(cf, spec, lang, currency)
    if lang == "zh":
        what = "，并且".join(f"{p['label']}由{p['from']}调整为{p['to']}" for p in parts)
        return f"根据同一模型和同一政策，如果{what}，结果将会不同。"
    what = " and ".join(f"the {p['label']} had been {p['to']} instead of {p['from']}" for p in parts)
    return f"Under the same assessment, the outcome would have been different if {what}."


# --------------------------------------------------------------------------- rules in plain words

_OP = {"en": {"missing": "is not stated", "eq": "is {v}", "ne": "is not {v}", "lt": "is below {v}",
              "le": "is {v} or less", "gt": "is above {v}", "ge": "is {v} or more", "in": "is one of {v}"},
       "zh": {"missing": "未提供", "eq": "等于{v}", "ne": "不等于{v}", "lt": "低于{v}", "le": "不超过{v}",
              "gt": "高于{v}", "ge": "达到或超过{v}", "in": "属于{v}"}}


def condition_text(spec: PipelineSpec, rule_name: str, lang: str, currency: str, article: str = "the ") -> str:
    """A spec rule's condition in words: 'the monthly income is not stated' (English: `article` first)."""
    rule = next(r for r in spec.policy.rules if r.name == rule_name)
    return condition_text_of(spec, rule.when, lang, currency, article)


def condition_text_of(spec: PipelineSpec, cond, lang: str, currency: str = "CNY", article: str = "the ") -> str:
    """A policy condition in words, in the catalogue's labels and units."""
    f = spec.feature(cond.feature)
    v = cond.value
    shown = ", ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else value(f, v, lang, currency))
    op = _OP[lang][cond.op].format(v=shown)
    return f"{label(f, lang)}{op}" if lang == "zh" else f"{article}{label(f, lang)} {op}"


def _inp(row: pd.Series, col: str):
    return row.get(INPUT_PREFIX + col)


def restore_text(spec: PipelineSpec, row: pd.Series, lang: str) -> str:
    """When a suspended line comes back, in the policy's numbers, with the account's own count of months."""
    ob = spec.policy.on_book
    clean = _inp(row, ob.fields.clean_months)
    have = "" if missing(clean) else number(clean)
    if lang == "zh":
        now = f"（您目前已连续按时还款{have}个月）" if have else ""
        return (f"在每月的账户评估中，如果没有逾期达到{ob.suspend_days_past_due}天的还款、近12个月累计逾期少于"
                f"{ob.suspend_cumulative_overdue_days}天，并且已连续按时还款至少{ob.restore_clean_months}个月"
                f"{now}，额度将恢复使用。")
    now = f" (you have {have} {_plural(float(clean), 'month', 'months')} now)" if have else ""
    return (f"Your credit line is restored at a monthly review once no repayment is {ob.suspend_days_past_due} "
            f"days or more overdue, the overdue days of the last 12 months add up to less than "
            f"{ob.suspend_cumulative_overdue_days}, and you have repaid on time for at least "
            f"{ob.restore_clean_months} months in a row{now}.")


def remedy(spec: PipelineSpec, row: pd.Series, lang: str, currency: str) -> list[str]:
    """For an outcome a policy rule made: what resolves the rule, in plain words and the policy's numbers."""
    by = str(row.get("decided_by") or "")
    name = by[5:] if by.startswith("rule:") else None
    if name is None:
        return []
    if any(r.name == name for r in spec.policy.rules):
        cond = condition_text(spec, name, lang, currency)
        if lang == "zh":
            return [f"此结果由政策规则作出，因为{cond}。如情况有变，请联系我们并提供最新信息。"]
        return [f"This outcome follows a policy rule that applies because {cond}. If that has changed, "
                "contact us with the up-to-date information."]
    ob = spec.policy.on_book
    if ob is None:
        return []
    f = ob.fields
    if name.startswith(WARN_PREFIX) or name == REPRICE_RULE:
        return early_warning_remedy(spec, row, name, lang)
    if name == "suspend_fraud":  # nothing that tips off: verification, then the usual restoration
        return (["核实完成后，我们会通知您额度能否恢复使用。"] if lang == "zh" else
                ["Once the verification is complete, we will tell you whether the credit line can be used again."])
    out = []
    if name == "suspend_overdue":
        dpd = _inp(row, f.days_past_due)
        yours = "" if missing(dpd) else number(dpd)
        out.append(f"当前有一笔还款已逾期{yours}天（暂停标准：逾期达到{ob.suspend_days_past_due}天）。请尽快归还逾期款项。"
                   if lang == "zh" else
                   f"A repayment is {yours} days overdue (the line is suspended at {ob.suspend_days_past_due} days "
                   "or more). Please repay the overdue amount as soon as you can.")
    elif name == "suspend_cumulative_overdue":
        cum = _inp(row, f.cumulative_overdue_days)
        yours = "" if missing(cum) else number(cum)
        out.append(f"近12个月累计逾期{yours}天（暂停标准：达到{ob.suspend_cumulative_overdue_days}天）。请按时还款。"
                   if lang == "zh" else
                   f"Your overdue days in the last 12 months add up to {yours} (the line is suspended at "
                   f"{ob.suspend_cumulative_overdue_days} or more). Please repay on time from now on.")
    elif name == "suspend_risk_rise":
        out.append("自上次评估以来，我们对您还款能力的评估明显下降。" if lang == "zh" else
                   "Since your previous review, our assessment of your ability to repay has clearly worsened.")
    if name in ("suspend_overdue", "suspend_cumulative_overdue", "suspend_risk_rise", "remain_suspended"):
        out.append(restore_text(spec, row, lang))
    return out


# --------------------------------------------------------------------------- the notice


@dataclass(frozen=True)
class Right:
    key: str
    en: str
    zh: str


def channels(chs, lang: str) -> str:
    sep = "；" if lang == "zh" else "; "
    return sep.join(f"{CHANNEL[c.kind][1 if lang == 'zh' else 0]}{'：' if lang == 'zh' else ': '}{c.text(lang)}"
                    for c in chs)


def rights(spec: PipelineSpec, codes: list[str], adverse: bool) -> list[Right]:
    """The rights block of a notice, by the lender's jurisdiction; each right in both languages from the
    same facts. A US notice carries the FCRA disclosure when a reason comes from the bureau's report."""
    lender = spec.lender
    days = lender.respond_within_days
    contact = {lg: channels(lender.contact, lg) for lg in LANGS}
    complaints = {lg: channels(lender.complaints, lg) for lg in LANGS}
    reg = lender.regulator
    reg_c = {lg: channels(reg.contact, lg) for lg in LANGS}
    bureau = lender.bureau
    bureau_c = {lg: channels(bureau.contact, lg) for lg in LANGS} if bureau else {}
    out: list[Right] = []
    if lender.jurisdiction == "CN":
        out.append(Right(
            "pipl_24",
            "Under article 24 of the Personal Information Protection Law you may ask us to explain this decision, "
            "and you may refuse a decision made solely by automated means: a member of our staff will then review it.",
            "根据《个人信息保护法》第二十四条，您有权要求我们对本决定作出说明，并有权拒绝仅通过自动化决策方式作出的决定，"
            "届时将由工作人员人工复核。"))
        if bureau is not None:
            out.append(Right(
                "credit_report_objection",
                f"If you believe your credit report at the {bureau.name.en} is wrong or incomplete, you may raise "
                f"a credit-report objection with the {bureau.name.en} ({bureau_c['en']}) or with us; under article 25 "
                "of the Regulation on the Administration of the Credit Reporting Industry it must be checked and "
                "answered in writing within 20 days.",
                f"如您认为{bureau.name.zh}的信用报告中的信息存在错误或遗漏，可以向{bureau.name.zh}（{bureau_c['zh']}）"
                "或向我们提出征信异议；根据《征信业管理条例》第二十五条，异议应当自收到之日起20日内核查处理并书面答复。"))
    else:
        out.append(Right(
            "ecoa_notice",
            "The federal Equal Credit Opportunity Act prohibits creditors from discriminating against credit "
            "applicants on the basis of race, color, religion, national origin, sex, marital status, or age "
            "(provided the applicant has the capacity to enter into a binding contract); because all or part of "
            "the applicant's income derives from any public assistance program; or because the applicant has in "
            "good faith exercised any right under the Consumer Credit Protection Act. The federal agency that "
            f"administers compliance with this law concerning this creditor is the {reg.name.en} ({reg_c['en']}).",
            "联邦《平等信贷机会法》禁止债权人因种族、肤色、宗教、国籍、性别、婚姻状况或年龄（前提是申请人具有订立具有约束力合同的"
            "行为能力），因申请人的全部或部分收入来自任何公共援助计划，或因申请人善意行使《消费者信贷保护法》规定的任何权利，"
            f"而歧视信贷申请人。负责监督本债权人遵守该法的联邦机构是{reg.name.zh}（{reg_c['zh']}）。"))
        if adverse:
            out.append(Right(
                "reg_b_reasons",
                "The reasons listed above are the principal reasons for this decision (Regulation B, 12 CFR 1002.9).",
                "上文所列原因即本决定的主要原因（B条例，12 CFR 1002.9）。"))
        bureau_features = {f.name for f in spec.features if f.bureau}
        if bureau is not None and bureau_features & set(codes):
            out.append(Right(
                "fcra_disclosure",
                "Our decision was based in whole or in part on information obtained in a report from the consumer "
                f"reporting agency {bureau.name.en} ({bureau_c['en']}). The reporting agency played no part in our "
                "decision and is unable to supply specific reasons for it. Under the Fair Credit Reporting Act you "
                "have the right to know the information in your credit file at the agency, to a free copy of your "
                "report if you ask for it within 60 days of receiving this notice, and to dispute with the agency "
                "any information in it that is inaccurate or incomplete.",
                f"我们的决定全部或部分基于消费者报告机构{bureau.name.zh}（{bureau_c['zh']}）提供的报告中的信息。该报告机构"
                "未参与本决定，也无法说明作出本决定的具体原因。根据《公平信用报告法》，您有权了解该机构信用档案中关于您的信息；"
                "如在收到本通知后60日内提出申请，可免费获得一份报告；如发现报告中的信息不准确或不完整，有权向该机构提出异议。"))
    out.append(Right(
        "correct_information",
        "If any information we used is wrong, you may send us the correct information and we will decide again.",
        "如您认为我们所依据的信息有误，可向我们提供更正后的信息，我们将重新作出决定。"))
    out.append(Right(
        "contact",
        f"To ask for an explanation or a review by a person, contact us within {days} days quoting the reference "
        f"above: {contact['en']}.",
        f"如需说明或人工复核，请在{days}日内联系我们并提供上述参考编号：{contact['zh']}。"))
    out.append(Right(
        "complaints",
        f"If you are not satisfied with our answer, you may complain to us ({complaints['en']}) or to the "
        f"{reg.name.en} ({reg_c['en']}).",
        f"如您对我们的答复不满意，可以向我们投诉（{complaints['zh']}），或向{reg.name.zh}投诉（{reg_c['zh']}）。"))
    return out


def notice_kind(row: pd.Series, spec: PipelineSpec) -> str:
    """Which notice a decision gets: an application's, or an account's at its review on book."""
    on_book = spec.policy.on_book is not None and not missing(row.get("previous_limit"))
    action = str(row["action"])
    if action == "review":
        return "review_account" if on_book else "review_application"
    if action == "suspend" and row.get("decided_by") == "rule:remain_suspended":
        return "remain_suspended"
    return action


def _outcome(kind: str, row: pd.Series, lang: str, currency: str) -> str:
    lim = row.get("limit")
    prev = row.get("previous_limit")
    m = (lambda v: "–" if missing(v) else money(v, currency))  # noqa: E731
    en = {
        "decline": "We are unable to approve your application for a credit line at this time.",
        "approve": f"Your application for a credit line has been approved with a credit limit of {m(lim)}.",
        "review_application": "Your application is being reviewed by a member of our staff; we will tell you the "
                              "outcome.",
        "review_account": "At its regular review, your account has been passed to a member of our staff to "
                          f"review; until then your credit line continues with its limit of {m(prev)}.",
        "cut": f"Your credit limit has been reduced from {m(prev)} to {m(lim)}.",
        "raise": f"Your credit limit has been raised from {m(prev)} to {m(lim)}.",
        "keep": f"Your credit line continues unchanged with a limit of {m(lim)}.",
        "restore": f"Your credit line has been restored, with a limit of {m(lim)}.",
        "suspend": f"Use of your credit line (limit {m(prev)}) has been suspended.",
        "remain_suspended": "Your credit line remains suspended: the conditions to restore it are not met yet.",
        "watch_reminder": "This is a reminder about your credit line: we have noticed changes on your account that "
                          "can come before repayment difficulties. Nothing changes on your account: your limit "
                          f"stays {m(prev)}. Please check your next repayment date and amount.",
        "watch_freeze": f"New purchases on your credit line (limit {m(prev)}) are paused until your next monthly "
                        "review. Repayments and your existing instalments continue as before.",
        "reprice": "The interest rate of your credit line is changing.",
    }
    zh = {
        "decline": "很遗憾，我们目前无法批准您的授信申请。",
        "approve": f"您的授信申请已获批准，信用额度为{m(lim)}。",
        "review_application": "您的申请需要由工作人员人工审核，我们会尽快通知您结果。",
        "review_account": f"在本次定期评估中，您的账户已转交工作人员人工审核；审核期间您的信用额度保持{m(prev)}不变。",
        "cut": f"您的信用额度已由{m(prev)}调整为{m(lim)}。",
        "raise": f"您的信用额度已由{m(prev)}提高至{m(lim)}。",
        "keep": f"您的信用额度保持不变，为{m(lim)}。",
        "restore": f"您的信用额度已恢复使用，额度为{m(lim)}。",
        "suspend": f"您的信用额度（{m(prev)}）已暂停使用。",
        "remain_suspended": "您的信用额度继续暂停使用：恢复条件尚未满足。",
        "watch_reminder": f"温馨提示：我们注意到您的账户近期出现了一些可能预示还款困难的变化。您的账户不会因此发生任何变化，"
                          f"信用额度仍为{m(prev)}。请留意下一期的还款日期和金额。",
        "watch_freeze": f"在下一次月度评估之前，您的信用额度（{m(prev)}）暂停新增消费；还款和已有分期照常进行。",
        "reprice": "您的信用额度的利率将发生调整。",
    }
    return (zh if lang == "zh" else en)[kind]


TITLE = {"application": ("Notice of your credit decision", "授信决定通知"),
         "account": ("Notice about your credit line", "信用额度通知")}


def customer_reasons(row: pd.Series, spec: PipelineSpec, lang: str) -> list[str]:
    """The reasons as the customer reads them: a rule the lender words otherwise (fraud) in that wording."""
    wording = spec.lender.customer_wording if spec.lender else {}
    out = []
    for code, text in zip(row["reason_codes"], row["reasons_" + lang]):
        name = code[5:] if isinstance(code, str) and code.startswith("rule:") else None
        out.append(getattr(wording[name], lang) if name in wording else str(text))
    return out


def changed_lines(row) -> list[dict]:
    """What changed most since the previous review, as a decision record holds it: one dict per feature."""
    return [{"feature": f, "en": e, "zh": z, "delta": d} for f, e, z, d in
            zip(*(row.get(k, []) if row.get(k) is not None else [] for k in
                  ("changed_features", "changed_en", "changed_zh", "changed_attribution_deltas")))]


def rate_text(row: pd.Series, lang: str) -> str | None:
    """The annual interest rate of the line, and its change, in plain words; None when the policy sets no rate."""
    apr, prev = row.get("apr"), row.get("previous_apr")
    if missing(apr):
        return None
    pct = lambda v: f"{number(round(100 * float(v), 2))}%"  # noqa: E731
    if missing(prev) or float(prev) == float(apr):
        return f"年利率为{pct(apr)}。" if lang == "zh" else f"The annual interest rate is {pct(apr)}."
    if lang == "zh":
        return f"年利率由{pct(prev)}调整为{pct(apr)}，自下一个账单周期起生效。"
    return f"The annual interest rate changes from {pct(prev)} to {pct(apr)} from your next statement."


def early_warning_remedy(spec: PipelineSpec, row: pd.Series, name: str, lang: str) -> list[str]:
    """What a watchlist or a rate-rise notice tells the customer to do next, in the policy's terms."""
    zh = lang == "zh"
    if name == REPRICE_RULE:
        return (["利率随每次额度评估时的风险等级调整；如按时还款、风险等级下降，下一次额度评估时将适用较低的利率。"] if zh else
                ["The rate follows your risk tier at each limit review: if repayments stay on time and your tier "
                 "falls, the lower rate applies from the next limit review."])
    out = (["如果您预计还款有困难，请尽早联系我们：我们可以与您商量还款安排。"] if zh else
           ["If you expect difficulty repaying, contact us early: we can discuss a repayment arrangement with you."])
    if str(row.get("action")) == "watch_freeze":
        out.append("如果下一次月度评估时上述情况已消失，新增消费将自动恢复。" if zh else
                   "New purchases resume automatically at the next monthly review if these signs have gone.")
    return out


def notice(row: pd.Series, spec: PipelineSpec, lang: str, changed: list[dict], cf: dict | None,
           generated_at: str) -> dict:
    """Everything a notice says, in one language: the template lays it out."""
    lender = spec.lender
    cur = lender.currency
    kind = notice_kind(row, spec)
    codes = [str(c) for c in row["reason_codes"]]
    title = TITLE["account" if kind not in ("decline", "approve", "review_application") else "application"]
    return {
        "lang": lang, "kind": kind, "title": title[1 if lang == "zh" else 0],
        "lender": getattr(lender.name, lang), "contact": channels(lender.contact, lang),
        "outcome": _outcome(kind, row, lang, cur),
        "rate": None if kind in ("decline", "suspend", "remain_suspended") else rate_text(row, lang),
        "reasons": customer_reasons(row, spec, lang),
        "changed": [c[lang] for c in changed],
        "counterfactual": counterfactual_sentence(cf, spec, lang, cur),
        "remedy": remedy(spec, row, lang, cur),
        "rights": [(r.key, getattr(r, lang)) for r in rights(spec, codes, str(row["action"]) in ADVERSE_ACTIONS)],
        "decision_date": str(row["decision_time"])[:10], "generated_date": generated_at[:10],
    }


# ------------------------------------------------------------------------------------------------ collections

TREATMENT_TITLE = ("About your overdue repayment", "关于您的逾期还款")
APPROVED_STATUS = "approved"  # a pending agency or legal step once a person approved it (oversight)


def treatment_sent(row: pd.Series, approved: bool = False) -> bool:
    """True when the decision's collections treatment reaches the customer: sent, or approved by a person."""
    status = row.get("treatment_status")
    if missing(row.get("treatment")) or str(row.get("treatment")) == "none":
        return False
    return status == "sent" or (status == "pending_approval" and approved)


def _treatment_text(treatment: str, row: pd.Series, spec: PipelineSpec, lang: str) -> list[str]:
    """The notice's paragraphs for a treatment: plain words, the lender named, no column names, and nothing of
    why an account is watched beyond the overdue repayment (a notice never tips off)."""
    lender = getattr(spec.lender.name, lang)
    col = spec.policy.collections
    dpd = row.get(INPUT_PREFIX + col.fields.days_past_due)
    days = None if missing(dpd) else int(float(dpd))
    months = col.hardship_plan.plan_months
    overdue = {"en": (f"a repayment on your credit line is {days} days overdue" if days else
                      "a repayment on your credit line is overdue"),
               "zh": f"您的信用额度有一笔还款已逾期{days}天" if days else "您的信用额度有一笔还款已逾期"}[lang]
    offer = {"en": "If a change in your circumstances (such as a loss of income or illness) stops you repaying, tell "
                   "us: we can agree a plan to spread the repayment over several months.",
             "zh": "如因收入减少、疾病等情况变化暂时无法还款，请告诉我们，我们可以与您商定分期还款方案。"}[lang]
    en = {
        "reminder": [f"This is a reminder from {lender}: {overdue}. Please repay as soon as you can, in our app or "
                     "by your usual means of repayment.", offer],
        "call": [f"{overdue[0].upper() + overdue[1:]}, and we have not been able to agree a repayment with you yet. "
                 f"A member of {lender}'s staff will call you on the number you gave us, at a reasonable time of day, "
                 "to agree how you can repay.", offer],
        "hardship_plan": [f"{overdue[0].upper() + overdue[1:]}. {lender} offers you a hardship instalment plan: the "
                          f"overdue amount can be repaid in {months} monthly instalments, with no further charge for paying it this way.",
                          "To accept the plan, contact us through one of the channels below. While you keep to the "
                          "plan, we will not contact you about this overdue amount other than to confirm the plan."],
        "agency": [f"{overdue[0].upper() + overdue[1:]}. After a review by a member of our staff, {lender} has asked a "
                   "collection agency to contact you on our behalf about repaying it. The agency acts on our "
                   "instructions and follows the same rules as we do.", offer],
        "legal": [f"{overdue[0].upper() + overdue[1:]}, despite our contacts. After a review by a member of our staff, "
                  f"{lender} may start legal proceedings to recover the amount. You can still contact us to agree how "
                  "to repay it.", offer],
    }
    zh = {
        "reminder": [f"{lender}提醒您：{overdue}。请尽快通过我们的App或您常用的还款方式还款。", offer],
        "call": [f"{overdue}，我们尚未与您商定还款安排。{lender}的工作人员将在合理时间拨打您留存的电话号码，与您商定还款方式。", offer],
        "hardship_plan": [f"{overdue}。{lender}为您提供困难分期还款方案：逾期款项可分"
                          f"{months}个月偿还，以此方式还款不另收费用。",
                          "如接受此方案，请通过下方任一渠道联系我们。在您按方案还款期间，除确认方案外，我们不会就这笔逾期款项联系您。"],
        "agency": [f"{overdue}。经我们的工作人员审核，{lender}已委托一家催收机构代表我们与您联系还款事宜。该机构按我们的指示行事，"
                   "遵守与我们相同的规则。", offer],
        "legal": [f"经多次联系，{overdue}。经我们的工作人员审核，{lender}可能通过法律程序追回欠款。您仍可联系我们商定还款方式。",
                  offer],
    }
    return (zh if lang == "zh" else en)[treatment]


PRIVACY_PROMISE = ("We discuss your account only with you: we never contact your family, friends, employer or anyone "
                   "else about it.",
                   "我们只与您本人沟通您的账户情况，绝不会就此联系您的家人、朋友、工作单位或其他任何人。")


def treatment_notice(row: pd.Series, spec: PipelineSpec, lang: str, generated_at: str,
                     approved: bool = False) -> dict | None:
    """The customer notice of a collections treatment, in one language, laid out by notice.html; None when none
    is sent (no treatment, held by the contact limit, or a step still waiting for a person's approval)."""
    if spec.lender is None or spec.policy.collections is None or not treatment_sent(row, approved):
        return None
    lender = spec.lender
    zh = lang == "zh"
    treatment = str(row["treatment"])
    paragraphs = _treatment_text(treatment, row, spec, lang)
    complaints = channels(lender.complaints, lang)
    reg = lender.regulator
    right = (f"如您对我们的催收方式不满意，可以向我们投诉（{complaints}），或向{reg.name.zh}投诉（{channels(reg.contact, lang)}）。"
             if zh else f"If you are not satisfied with how we collect this repayment, you may complain to us "
                        f"({complaints}) or to the {reg.name.en} ({channels(reg.contact, lang)}).")
    return {
        "lang": lang, "kind": "collections_" + treatment, "title": TREATMENT_TITLE[1 if zh else 0],
        "lender": getattr(lender.name, lang), "contact": channels(lender.contact, lang),
        "treatment": treatment, "paragraphs": paragraphs,
        "reasons": [str(r) for code, r in zip(row.get("treatment_rules", []), row.get("treatment_reasons_" + lang, []))
                    if code not in ("pending_approval", "contact_limit_reached")],
        "rights": [("privacy", PRIVACY_PROMISE[1 if zh else 0]), ("complaints", right)],
        "decision_date": str(row["decision_time"])[:10], "generated_date": generated_at[:10],
    }
