"""The served decision's shortcuts (issue 16: CPU per single-row decision) compute what the routes they skip
compute: the trees read encode's columns as they read the encoded frame, bit for bit; the counterfactual
search's actions-only policy gives apply_policy's actions; an empty quarantine built once per frame layout is
the quarantine the full steps build; encode's plain numpy columns are the values its Series would give."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from creditgov.data import inputs, validate
from creditgov.decision.policy import apply_policy, policy_actions
from creditgov.model import credit_model
from creditgov.model.treeshap import FastTreeShap


@pytest.fixture(scope="module")
def raw(spec, credit_data) -> pd.DataFrame:
    """Real rows with missing values in numeric and categorical columns, ints and floats, 60 rows."""
    rows = credit_data.drop(columns=[spec.target.column]).iloc[:60].reset_index(drop=True)
    rows.loc[3, "Income"] = np.nan
    rows.loc[4, "Home"] = None
    rows.loc[5, "Price"] = 0  # a zero divisor in a derived feature
    return rows


def test_trees_read_encoded_columns_bit_for_bit_as_the_encoded_frame(tiny_model, raw):
    frame_route = FastTreeShap(tiny_model.booster_).matrix(credit_model.encode(raw, tiny_model.encodings))
    column_route = tiny_model.matrix(raw)  # encoded_columns -> FastTreeShap.matrix_of
    assert column_route.dtype == frame_route.dtype == np.float32
    assert np.isnan(frame_route).any(), "the rows must exercise missing values"
    assert np.array_equal(column_route.view(np.uint32), frame_route.view(np.uint32))
    log_odds, phi, base = tiny_model.explain(raw)
    np.testing.assert_array_equal(log_odds, tiny_model.calibrate(tiny_model.margin_matrix(frame_route)))
    # the frame route of FastTreeShap itself (a DataFrame in): the same attributions
    ref = FastTreeShap(tiny_model.booster_).shap_values(credit_model.encode(raw, tiny_model.encodings))
    np.testing.assert_array_equal(phi, ref[:, :-1] * tiny_model.calib_a_)


def test_plain_columns_are_the_values_a_series_gives(raw):
    odd = raw.assign(flag=[True, False] * 30, when=pd.Timestamp("2026-01-01"), n=pd.array(range(60), "Int64"))
    plain = inputs.plain_columns(odd)
    assert {"Income", "Home", "Seniority", "flag"} <= set(plain) and not {"when", "n"} & set(plain)
    for c, a in plain.items():
        s = odd[c]
        assert a.dtype == s.dtype
        np.testing.assert_array_equal(a, s.to_numpy())
        mine, theirs = np.array(a, dtype=object, copy=True).tolist(), s.to_numpy(dtype=object, copy=True).tolist()
        assert [type(v) for v in mine] == [type(v) for v in theirs]
        assert [v if v == v else "NaN" for v in mine] == [v if v == v else "NaN" for v in theirs]
    assert inputs.plain_columns(pd.concat([odd[["Income"]], odd[["Income"]]], axis=1)) == {}


def test_policy_actions_are_apply_policys_actions(spec, raw):
    rng = np.random.default_rng(16)
    p = np.concatenate([rng.uniform(0, 1, 50), [0.0, 1.0, spec.policy.decline_at_pd, *spec.policy.review_band,
                                                 np.nextafter(spec.policy.decline_at_pd, 0), 0.5, 0.2, 0.1, 0.05]])
    frame = raw.copy()
    frame.loc[7, spec.policy.limit.capacity_feature] = np.nan
    want = apply_policy(frame, p, spec.policy)["action"].to_numpy()
    got = policy_actions(frame, p, spec.policy)
    assert got.dtype == object and got.tolist() == want.tolist()
    assert len(set(want.tolist())) >= 3, "approve, review and decline must all occur"


@pytest.mark.parametrize("index", ["range", "offset", "gaps"])
def test_an_empty_quarantine_from_the_cache_is_the_one_the_steps_build(spec, raw, index):
    frame = raw.copy()
    if index == "offset":
        frame.index = pd.RangeIndex(1000, 1000 + len(frame))
    elif index == "gaps":
        frame.index = pd.Index(np.arange(len(frame)) * 3)
    want = validate._quarantine_rows(frame, {}, spec)
    validate._EMPTY_QUARANTINE.clear()
    for _ in range(2):  # built, then from the cache
        got = validate.quarantine_frame(frame, {}, spec)
        pd.testing.assert_frame_equal(got, want, check_exact=True, check_index_type=True, check_column_type=True)
        assert type(got.index) is type(want.index) and got.columns.tolist()[0] == "row_number"
    got.drop(columns=["rules"], inplace=True)  # a copy: the cached one is untouched
    assert "rules" in validate.quarantine_frame(frame, {}, spec).columns
    first = frame.index[0]
    some = validate.quarantine_frame(frame, {first: ["Income: a rule"]}, spec)
    assert some["rules"].tolist() == ["Income: a rule"] and some["row_number"].tolist() == [first + 1]


def test_reason_lists_of_a_few_rows_are_those_of_the_batch_route(spec):
    """decide._reason_lists groups a served request's rows by dicts, a batch's by pd.factorize and np.unique:
    the same codes, statements and attributions for every row (ties, rules, all-negative rows included)."""
    from creditgov.decision import decide

    features = [f.name for f in spec.model_inputs]
    rng = np.random.default_rng(7)
    phi = rng.normal(size=(40, len(features)))
    phi[3] = -np.abs(phi[3])  # nothing raised the risk
    phi[4, :3] = 0.25  # ties
    phi[5] = phi[4]
    rules = ["rule:" + r.name for r in spec.policy.rules]
    assert rules, "the application policy has rules"
    decided_by = np.array([rules[i % len(rules)] if i % 3 == 0 else "model" for i in range(40)], dtype=object)
    for rows in (slice(0, 1), slice(0, 6), slice(0, 40)):
        small = decide._reason_lists(phi[rows], features, decided_by[rows], spec, small=True)
        batch = decide._reason_lists(phi[rows], features, decided_by[rows], spec, small=False)
        assert small == batch
    assert small[0][3] == [decided_by[3]]  # a rule decided; no feature raised the risk
    assert small[0][1] and not small[0][1][0].startswith("rule:")


def _same_frame(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_index_type=True, check_column_type=True)
    assert got.dtypes.tolist() == want.dtypes.tolist()
    for c in want.columns:  # (assert_frame_equal takes None for NaN in an object column)
        assert repr(got[c].tolist()) == repr(want[c].tolist()), c


def _same_log(got: pd.DataFrame, want: pd.DataFrame) -> None:
    import pyarrow as pa

    _same_frame(got, want)
    assert pa.Table.from_pandas(got, preserve_index=False).equals(pa.Table.from_pandas(want, preserve_index=False))


def test_a_few_rows_log_frame_is_the_constructors(spec, stored_suite, tiny_model, raw, monkeypatch):
    """inputs.frame_of_columns hands a few rows' log columns to pandas as the arrays its constructor makes: the
    same frame (values, dtypes, Arrow types) as pd.DataFrame of the columns, for single rows and small batches
    (as a request's rows are validated) with missing values, categories, declines (counterfactuals) and a refused
    row."""
    from creditgov.data import expectations
    from creditgov.decision import decide

    model = decide.DecisionModel(tiny_model, "1")
    suite = validate.CompiledSuite(expectations.for_scoring(stored_suite, spec, []))
    rows = raw.drop(columns=[spec.target.column], errors="ignore")
    batches = [rows.iloc[[i]].reset_index(drop=True) for i in (0, 3, 4)] + [rows.iloc[6:22], rows.iloc[:16]]

    def logs():
        return [decide.decide_rows(validate.validate_rows(b.reset_index(drop=True), spec, suite, "rows"), model,
                                   spec, "2026-11-30").log for b in batches]

    fast = logs()
    assert any(log["counterfactual"].notna().any() for log in fast), "a decline must be searched"
    assert (fast[-1]["status"] == "quarantined").sum() == 1  # row 5: a zero price
    monkeypatch.setattr(inputs, "SMALL_FRAME_ROWS", 0)  # the constructor for every log
    for got, want in zip(fast, logs()):
        _same_log(got, want)


def _layout(frame: pd.DataFrame) -> list:
    return [(str(b.dtype), b.mgr_locs.as_array.tolist(), b.values.shape) for b in frame._mgr.blocks]


@pytest.mark.parametrize("n", [1, 3, 16])
def test_a_few_rows_frame_has_the_constructors_blocks(n):
    """frame_of_columns fills one block per dtype itself (inputs._consolidated_frame): the frame, its column index
    and its block layout (dtype, columns, shape of each block, in order) are pd.DataFrame's, dtypes interleaved
    with the column order, on a range index and on a given one."""
    rng = np.random.default_rng(n)
    makers = [lambda: rng.normal(size=n), lambda: rng.integers(0, 9, n), lambda: rng.random(n) < 0.5,
              lambda: rng.integers(0, 9, n).astype(np.int32), lambda: np.array(["a", None, 3, 1.5] * 4)[:n]]
    cols = {f"c{j}": makers[(j * 7) % 5]() for j in range(23)}
    cols["none"], cols["text"], cols["lists"] = None, "x", [["r"]] * n
    for index in (None, pd.Index(np.arange(n) * 2 + 5)):
        got = inputs.frame_of_columns(cols, n, index)
        want = pd.DataFrame(cols, index=index)
        pd.testing.assert_frame_equal(got, want)
        assert got.columns.dtype == want.columns.dtype and _layout(got) == _layout(want)
        assert got._mgr.is_consolidated()


@pytest.mark.parametrize("index", ["range", "gaps"])
def test_a_few_rows_policy_frame_is_the_constructors(spec, raw, index, monkeypatch):
    """apply_policy's frame of a few rows (inputs.frame_of_columns) is pd.DataFrame's, also on the index of rows
    left after a quarantine, with and without the rules-triggered lists."""
    frame = raw.iloc[:9].copy()
    if index == "gaps":
        frame.index = pd.Index([0, 1, 3, 4, 7, 8, 10, 11, 15])
    p = np.array([0.01, 0.9, spec.policy.review_band[0], 0.3, 0.05, 0.5, 0.02, 0.2, 0.07])
    fast = [apply_policy(frame.iloc[:k], p[:k], spec.policy, rules_triggered=r) for k in (1, 9) for r in (True, False)]
    monkeypatch.setattr(inputs, "SMALL_FRAME_ROWS", 0)
    slow = [apply_policy(frame.iloc[:k], p[:k], spec.policy, rules_triggered=r) for k in (1, 9) for r in (True, False)]
    for got, want in zip(fast, slow):
        _same_log(got, want)
        assert got.index.equals(frame.index[:len(got)])


def test_dtypes_from_the_blocks_are_the_dtypes_series(raw):
    odd = raw.assign(flag=[True, False] * 30, when=pd.Timestamp("2026-01-01"), n=pd.array(range(60), "Int64"),
                     kind=pd.Categorical(["a", "b"] * 30))
    odd.insert(2, "Income2", odd["Income"])  # blocks interleaved with the column order
    twice = pd.concat([odd[["Income", "Home"]], odd[["Income"]]], axis=1)
    for f in (odd, odd.iloc[:1], twice, odd.iloc[:, :0], odd[["kind", "Income", "n"]]):
        assert inputs.dtypes_of(f) == f.dtypes.tolist()


def test_a_few_json_rows_frame_is_from_records(spec, credit_data, monkeypatch):
    """inputs.frame_of_records types a request's JSON rows as DataFrame.from_records does: real rows with null and
    absent values, texts among numbers, None-only columns, whole and fractional numbers, large integers, bools."""
    import json

    real = json.loads(credit_data.iloc[:40].to_json(orient="records"))
    rng = np.random.default_rng(16)
    pool = [None, "x", "", 0, 7, -3, 2 ** 53 - 1, 2 ** 53, 2 ** 62, 1.5, float("nan"), float("inf"), True, [1]]
    cases = [real[:1], real[3:4], real[:16], [dict(real[0], Income=None, Home=None)],
             [{k: v for k, v in r.items() if k not in ("Income", "Job")} if i % 2 else r for i, r in enumerate(real[:6])]]
    for _ in range(300):
        n = int(rng.integers(1, 5))
        cases.append([{k: pool[j] for k in "abc" if (j := int(rng.integers(-2, len(pool)))) >= 0} for _ in range(n)])
    want = [pd.DataFrame.from_records(rows) if any(rows) else None for rows in cases]
    for rows, w in zip(cases, want):
        if w is not None:
            _same_frame(inputs.frame_of_records(rows), w)
    monkeypatch.setattr(pd.DataFrame, "from_records", None)  # real rows never need it
    for rows, w in zip(cases[:5], want):
        _same_frame(inputs.frame_of_records(rows), w)


def test_a_few_rows_counterfactuals_answered_from_their_grids_are_the_sequential_searchs(
        spec, credit_data, tiny_model):
    """counterfactual's search of a few rows (a served request) evaluates the screening and every grid point in one
    call first and answers from them (memo): the same changes, costs, actions and PDs as the search calling the
    evaluator step by step, row by row and for a batch, with the model's candidate evaluator, on declined rows with
    missing actionable values and with integral grids on and off; pairs too."""
    from creditgov.decision import counterfactual, decide

    rows = credit_data.drop(columns=[spec.target.column]).iloc[:400].reset_index(drop=True)
    actions = apply_policy(rows, tiny_model.predict_pd(rows), spec.policy)["action"].to_numpy()
    rows = rows[actions == "decline"].iloc[:14].reset_index(drop=True)
    assert len(rows) >= 10, "the tiny model should decline a fair number of applicants"
    feats = [f.name for f in counterfactual.actionable(spec)]
    for k, f in enumerate(feats):  # a missing value in each actionable feature (then the others are searched)
        rows.loc[k, f] = np.nan
    mono = [f.name for f in counterfactual.actionable(spec) if counterfactual.monotone_for_search(f, spec, False)]
    rows.loc[[len(feats), len(feats) + 1, len(feats) + 2], mono] = np.nan  # only the grid-scanned ones left
    adverse = np.array(["decline"] * len(rows), dtype=object)

    def both(sub, adv, integral=None):
        out = []
        for memo in (True, False):
            ev = decide.candidate_evaluator(tiny_model, sub, spec)
            out.append(counterfactual.single_changes(sub, adv, spec, evaluate=ev, integral=integral, memo=memo))
        return out

    found = 0
    for i in range(len(rows)):
        fast, slow = both(rows.iloc[[i]].reset_index(drop=True), adverse[[i]])
        assert fast == slow
        found += fast[0] is not None
    assert 0 < found < len(rows), "rows with and without a one-feature change"
    pending = rows.iloc[[i for i in range(len(rows)) if both(rows.iloc[[i]], adverse[[i]])[0][0] is None]]
    pending = pending.reset_index(drop=True)
    fast, slow = [counterfactual.pair_changes(pending, adverse[:len(pending)], spec, memo=t,
                                              evaluate=decide.candidate_evaluator(tiny_model, pending, spec))
                  for t in (True, False)]
    assert fast == slow
    for integral in (None, {f: False for f in feats}):
        fast, slow = both(rows, adverse, integral)
        assert fast == slow
    # an outcome (approve / decline) that the grid-scanned feature can change too, both ways: Time far from 60,
    # or less Debt, or a smaller Amount (monotone, as the catalogue's directions say)
    syn = pd.DataFrame({"Time": [60.0, 24.0, 90.0, 60.0, 36.0, np.nan, 60.0, 60.0],
                        "Debt": [5000.0, 9000.0, 3000.0, np.nan, 800.0, 4000.0, 200.0, 9e7],
                        "Amount": [2000.0, 900.0, 700.0, 5000.0, np.nan, 650.0, 3000.0, 9e5],
                        "Income": [200.0, np.nan, 120.0, 80.0, 300.0, 150.0, 90.0, 100.0]})

    def outcome(f):
        ok = ((f["Time"] >= 100) | (f["Time"] <= 15) | (f["Debt"] <= 150) | (f["Amount"] <= 600)).to_numpy()
        return np.where(ok, "approve", "decline").astype(object), np.where(ok, 0.1, 0.9)

    adverse = np.array(["decline"] * len(syn), dtype=object)
    fast, slow = [counterfactual.single_changes(syn, adverse, spec, outcome, memo=t) for t in (True, False)]
    assert fast == slow
    by = [r["changes"][0]["feature"] if r else None for r in fast]
    assert "Time" in by and {"Debt", "Amount"} & set(by), by
    for i in range(len(syn)):
        one = syn.iloc[[i]].reset_index(drop=True)
        assert [counterfactual.single_changes(one, adverse[:1], spec, outcome, memo=t) for t in (True, False)] \
            == [fast[i:i + 1]] * 2

    def two(f):  # no one change of these rows suffices: two of them, Time far from 60 with less Debt or Amount
        far = ((f["Time"] >= 90) | (f["Time"] <= 30)).to_numpy()
        ok = (far & ((f["Debt"] <= 2000) | (f["Amount"] <= 1500)).to_numpy()) | \
            ((f["Debt"] <= 1000) & (f["Amount"] <= 1200)).to_numpy()
        return np.where(ok, "approve", "decline").astype(object), np.where(ok, 0.1, 0.9)

    pairs = [counterfactual.pair_changes(syn, adverse, spec, two, memo=t) for t in (True, False)]
    assert pairs[0] == pairs[1]
    assert len({tuple(c["feature"] for c in r["changes"]) for r in pairs[0] if r}) >= 2, pairs[0]


def test_the_pair_stage_on_the_first_stages_evaluator_is_the_pair_stage_on_its_own(spec, stored_suite, tiny_rows,
                                                                                     credit_data):
    """decide_rows hands the pair stage the first stage's candidate evaluator (its rows already encoded), read
    through the pending rows' places among the adverse ones: the same two-feature changes as an evaluator built
    over the pending rows, with and without the cap."""
    from creditgov.data import expectations
    from creditgov.decision import counterfactual, decide
    from creditgov.model import train

    model = train.fit_model(*tiny_rows, spec, n_estimators=60)  # (the tiny model's few rounds flip no pending row)
    suite = validate.CompiledSuite(expectations.for_scoring(stored_suite, spec, []))
    rows = credit_data.drop(columns=[spec.target.column]).reset_index(drop=True)
    part = decide.decide_part(model, validate.validate_rows(rows, spec, suite, "rows").clean, spec)
    _, pending, shared = decide.first_counterfactuals(model, part, spec,
                                                      counterfactual.integral_flags(part.clean, spec))
    assert shared is not None and 3 <= len(pending) < part.adverse.sum(), "pending rows are not the first adverse"
    for cap in (decide.MAX_PAIR_ROWS, 2):
        own = decide.pair_counterfactuals(model, [pending], spec, max_pair_rows=cap)
        assert decide.pair_counterfactuals(model, [pending], spec, max_pair_rows=cap, evaluate=shared) == own
        assert len(own[0]) == min(cap, len(pending))
        if cap == decide.MAX_PAIR_ROWS:
            assert any(r is not None for r in own[0]), [r is None for r in own[0]]


def test_the_searchs_matrix_from_the_explanation_is_the_adverse_rows_own(spec, stored_suite, tiny_model, raw):
    """decide_part keeps the explanation's matrix rows of the adverse rows for the search (instead of encoding
    them again): bit for bit model.matrix of adverse_rows, and the first stage answers as it does without it
    (missing values, a zero divisor and a missing category among the rows; slices of one and of all rows)."""
    import dataclasses

    from creditgov.data import expectations
    from creditgov.decision import counterfactual, decide

    suite = validate.CompiledSuite(expectations.for_scoring(stored_suite, spec, []))
    for rows in [raw] + [raw.iloc[[k]].reset_index(drop=True) for k in range(6)]:
        part = decide.decide_part(tiny_model, validate.validate_rows(rows, spec, suite, "rows").clean, spec)
        if not part.adverse.any():
            continue
        own = tiny_model.matrix(decide.adverse_rows(part, spec))
        assert part.adverse_matrix is not None and part.adverse_matrix.shape == own.shape
        assert np.array_equal(part.adverse_matrix.view(np.uint32), own.view(np.uint32))
        flags = counterfactual.integral_flags(part.clean, spec)
        with_it = decide.first_counterfactuals(tiny_model, part, spec, flags)
        without = decide.first_counterfactuals(tiny_model, dataclasses.replace(part, adverse_matrix=None), spec,
                                               flags)
        assert with_it[0] == without[0]
        pd.testing.assert_frame_equal(with_it[1], without[1])
    assert decide.decide_part(tiny_model, validate.validate_rows(raw, spec, suite, "rows").clean,
                              spec).adverse.sum() >= 3, "the rows must include adverse ones"


def test_a_few_rows_searched_values_are_to_numerics(spec, raw, monkeypatch):
    """The counterfactual search reads a few rows' actionable values from their arrays (ints, floats with NaN,
    numbers as text in an object column): what pd.to_numeric gives, so the same grids and rounding flags."""
    from creditgov.decision import counterfactual

    feats = [f.name for f in counterfactual.actionable(spec)]
    rows = raw.iloc[:6].copy()
    rows[feats[0]] = rows[feats[0]].astype(object).where(rows.index != 2, "12.5")  # text: the Series route
    rows.loc[1, feats[-1]] = np.nan
    rows.loc[3, feats[1:]] = rows.loc[3, feats[1:]].astype(float) + 0.25  # not whole: no rounding
    frames = [rows.iloc[[k]].reset_index(drop=True) for k in range(6)] + [rows]
    fast = [(counterfactual.integral_flags(f, spec),
             counterfactual.single_changes(f, np.array(["decline"] * len(f), dtype=object), spec,
                                           lambda t: (np.where(t[feats[-1]] < 100, "approve", "decline")
                                                      .astype(object), np.full(len(t), 0.5)))) for f in frames]
    monkeypatch.setattr(inputs, "SMALL_FRAME_ROWS", 0)
    slow = [(counterfactual.integral_flags(f, spec),
             counterfactual.single_changes(f, np.array(["decline"] * len(f), dtype=object), spec,
                                           lambda t: (np.where(t[feats[-1]] < 100, "approve", "decline")
                                                      .astype(object), np.full(len(t), 0.5)))) for f in frames]
    assert fast == slow
    assert fast[2][0][feats[0]] is False and fast[0][0][feats[0]] is True  # 12.5 read as a number, not NaN
    assert fast[3][0][feats[1]] is False and fast[-1][0][feats[1]] is False


def test_column_values_are_the_series_values():
    """inputs.column_values reads a column's array from the blocks: the array frame[name] holds (numbers, text,
    booleans, an extension dtype, a categorical), a KeyError for a missing column, the Series route when names
    repeat; policy conditions read through it mark the rows the Series route marks."""
    from creditgov.decision.policy import condition_mask
    from creditgov.spec import Condition

    frame = pd.DataFrame({"f": [1.5, np.nan, 3.0], "i": [1, 2, 3], "t": ["a", None, "b"], "b": [True, False, True],
                          "n": pd.array([1, None, 3], dtype="Int64"), "c": pd.Categorical(["x", "y", "x"]),
                          "s": pd.array(["a", None, "b"], dtype="string")})
    for name in frame.columns:
        got, want = inputs.column_values(frame, name), frame[name]._values
        assert type(got) is type(want) and got.dtype == want.dtype
        assert pd.Series(got).equals(pd.Series(want))
    with pytest.raises(KeyError):
        inputs.column_values(frame, "absent")
    texts = frame.assign(t=pd.Series(["1.5", None, "x"], dtype=object))
    for name in texts.columns.drop("c"):  # numbers_of: numbers() of the Series, read from the array
        assert np.array_equal(inputs.numbers_of(texts, name), inputs.numbers(texts[name]), equal_nan=True)
    twice = pd.concat([frame[["f"]], frame[["f"]]], axis=1)
    assert np.array_equal(inputs.column_values(twice, "f"), twice["f"]._values, equal_nan=True)  # (frame[name])
    for cond, want in [(Condition(feature="t", op="in", value=["a"]), [True, False, False]),
                       (Condition(feature="f", op="missing"), [False, True, False]),
                       (Condition(feature="f", op="ge", value=2), [False, False, True]),
                       (Condition(feature="c", op="in", value=["x"]), [True, False, True]),
                       (Condition(feature="n", op="lt", value=2), [True, False, False]),
                       (Condition(feature="n", op="missing"), [False, True, False]),
                       (Condition(feature="s", op="in", value=["b"]), [False, False, True])]:
        assert condition_mask(frame, cond).tolist() == want
