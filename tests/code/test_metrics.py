import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from creditgov.model import metrics
from creditgov.model.metrics import (
    auc,
    bootstrap_auc_ci,
    brier,
    calibration_table,
    decile_edges,
    evaluate,
    gini,
    hosmer_lemeshow,
    ks,
    psi,
    psi_from_shares,
    weighted_ks,
)


def _sample(n, seed=0, shift=2.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p = 1.0 / (1.0 + np.exp(-(x - shift)))
    y = rng.binomial(1, p)
    return y, p


# ------------------------------------------------------------------------------ AUC


def test_auc_matches_sklearn_on_random_data_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=700)
    p = np.round(rng.uniform(size=700) * 0.5 + 0.3 * y, 2)  # rounding creates ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_accepts_scores_outside_unit_interval():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=200)
    s = rng.normal(size=200) * 100 + 50 * y
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_gini():
    assert gini(0.75) == pytest.approx(0.5)
    assert gini(0.5) == 0.0
    with pytest.raises(ValueError, match="auc_value"):
        gini(1.2)


# ------------------------------------------------------------------------ bootstrap


def _naive_replicates(y, p, n_boot, seed):
    """Loop-based stratified bootstrap drawing exactly the documented rng stream."""
    y = np.asarray(y)
    bad, good = p[y == 1], p[y == 0]
    n1, n0 = bad.size, good.size
    high = np.concatenate([np.full(n1, n1), np.full(n0, n0)])
    labels = np.concatenate([np.ones(n1), np.zeros(n0)])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, high)
        scores = np.concatenate([bad[idx[:n1]], good[idx[n1:]]])
        out.append(roc_auc_score(labels, scores))
    return np.array(out)


def test_bootstrap_matches_naive_loop_exactly_including_ties():
    y, p = _sample(300, seed=3, shift=1.0)
    p = np.round(p, 2)  # ties between and within classes
    fast = metrics._bootstrap_auc_replicates(y, p, n_boot=300, seed=11)
    naive = _naive_replicates(y, p, n_boot=300, seed=11)
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-12)
    lo, hi = bootstrap_auc_ci(y, p, n_boot=300, level=0.9, seed=11)
    assert lo == pytest.approx(np.quantile(naive, 0.05), abs=1e-12)
    assert hi == pytest.approx(np.quantile(naive, 0.95), abs=1e-12)


def test_bootstrap_independent_of_chunk_size(monkeypatch):
    y, p = _sample(400, seed=4)
    full = metrics._bootstrap_auc_replicates(y, p, n_boot=50, seed=5)
    monkeypatch.setattr(metrics, "_BOOT_CELLS_PER_CHUNK", 1000)  # 2 replicates per chunk
    chunked = metrics._bootstrap_auc_replicates(y, p, n_boot=50, seed=5)
    np.testing.assert_array_equal(full, chunked)


def test_bootstrap_every_replicate_has_both_classes_even_with_one_bad():
    y = np.array([1] + [0] * 50)
    p = np.linspace(0, 1, 51)
    reps = metrics._bootstrap_auc_replicates(y, p, n_boot=100, seed=0)
    assert np.all(np.isfinite(reps))


def test_bootstrap_ci_contains_point_and_is_seeded():
    y, p = _sample(2000, seed=6)
    point = auc(y, p)
    lo, hi = bootstrap_auc_ci(y, p, n_boot=500, seed=1)
    assert lo < point < hi
    assert bootstrap_auc_ci(y, p, n_boot=500, seed=1) == (lo, hi)
    assert bootstrap_auc_ci(y, p, n_boot=500, seed=2) != (lo, hi)


def test_bootstrap_ci_narrows_with_more_data():
    y_small, p_small = _sample(500, seed=7)
    y_big, p_big = _sample(20000, seed=7)
    lo_s, hi_s = bootstrap_auc_ci(y_small, p_small, n_boot=300)
    lo_b, hi_b = bootstrap_auc_ci(y_big, p_big, n_boot=300)
    assert (hi_b - lo_b) < 0.5 * (hi_s - lo_s)


def test_bootstrap_ci_level_widens_interval():
    y, p = _sample(1000, seed=8)
    lo90, hi90 = bootstrap_auc_ci(y, p, n_boot=400, level=0.90)
    lo99, hi99 = bootstrap_auc_ci(y, p, n_boot=400, level=0.99)
    assert lo99 <= lo90 and hi99 >= hi90


# ------------------------------------------------------------------------------ KS


def test_ks_matches_scipy_with_ties():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, size=1000)
    p = np.round(rng.beta(2, 5, size=1000) + 0.1 * y, 2)
    expected = stats.ks_2samp(p[y == 1], p[y == 0]).statistic
    assert ks(y, p) == pytest.approx(expected, abs=1e-12)


def test_ks_perfect_separation_and_all_tied():
    y = np.array([0, 0, 0, 1, 1])
    assert ks(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    # A single tied score block cannot separate anything: KS must be 0, not > 0.
    assert ks(y, [0.5] * 5) == 0.0


def test_ks_reads_a_tied_block_only_at_its_end():
    # bads first within the tied block at 0.9: a row-by-row sweep would see all bads before any good (KS 1)
    y = np.array([1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1])
    assert ks(y, p) == pytest.approx(0.5, abs=1e-12)
    assert ks(y, p) == pytest.approx(stats.ks_2samp(p[y == 1], p[y == 0]).statistic, abs=1e-12)


def test_weighted_ks_with_label_weights_is_ks():
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, size=2000)
    p = np.round(rng.beta(2, 5, size=2000) + 0.1 * y, 2)
    assert weighted_ks(p, y, 1 - y) == ks(y, p)


def test_weighted_ks_with_counts_is_ks_on_the_repeated_rows():
    # integer weights are frequencies: the same as scipy's KS on each row repeated that many times
    rng = np.random.default_rng(13)
    p = np.round(rng.uniform(size=300), 1)  # heavy ties
    n_bad, n_good = rng.integers(0, 4, size=300), rng.integers(0, 4, size=300)
    expected = stats.ks_2samp(np.repeat(p, n_bad), np.repeat(p, n_good)).statistic
    assert weighted_ks(p, n_bad, n_good) == pytest.approx(expected, abs=1e-12)


def test_weighted_ks_expected_from_calibrated_pds_is_a_threshold_sweep():
    p = np.array([0.2, 0.7, 0.2, 0.7, 0.4, 0.05, 0.2])
    sweep = [abs(p[p <= t].sum() / p.sum() - (1 - p[p <= t]).sum() / (1 - p).sum()) for t in np.unique(p)]
    assert weighted_ks(p, p, 1 - p) == pytest.approx(max(sweep), abs=1e-12)


@pytest.mark.parametrize("bad, good, name", [([1.0, -1.0, 1.0], [1.0, 1.0, 1.0], "bad_weight"),
                                             ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], "good_weight"),
                                             ([1.0, 1.0], [1.0, 1.0, 1.0], "bad_weight")])
def test_weighted_ks_rejects_bad_weights_naming_them(bad, good, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        weighted_ks([0.1, 0.2, 0.3], bad, good)


# --------------------------------------------------------------------- calibration


def test_brier_small_example():
    assert brier([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.3]) == pytest.approx(0.075, abs=1e-15)


def test_calibration_table_sums_and_order():
    y, p = _sample(1003, seed=10)
    t = calibration_table(y, p)
    assert list(t.columns) == [
        "bin", "n", "p_min", "p_max", "mean_pd", "expected_bad", "observed_bad", "observed_rate",
    ]
    assert list(t["bin"]) == list(range(1, 11))
    assert t["n"].sum() == len(y)
    assert t["n"].max() - t["n"].min() <= 1
    assert t["observed_bad"].sum() == y.sum()
    assert t["expected_bad"].sum() == pytest.approx(p.sum())
    assert np.all(t["p_max"].to_numpy()[:-1] <= t["p_min"].to_numpy()[1:])
    np.testing.assert_allclose(t["observed_rate"], t["observed_bad"] / t["n"])


def test_calibration_table_ties_do_not_empty_bins():
    y = np.array([0, 1] * 50)
    p = np.full(100, 0.3)
    t = calibration_table(y, p)
    assert (t["n"] == 10).all()
    np.testing.assert_allclose(t["mean_pd"], 0.3, rtol=1e-12)


def test_hosmer_lemeshow_calibrated_vs_miscalibrated():
    rng = np.random.default_rng(12)
    p = rng.uniform(0.02, 0.4, size=5000)
    y = rng.binomial(1, p)
    good = hosmer_lemeshow(y, p)
    assert good["dof"] == 8
    assert good["pvalue"] > 0.05
    halved = hosmer_lemeshow(y, p / 2)
    doubled = hosmer_lemeshow(y, np.minimum(2 * p, 1.0))
    assert halved["pvalue"] < 1e-6 and doubled["pvalue"] < 1e-6
    assert set(good) == {"statistic", "dof", "pvalue"}


def test_hosmer_lemeshow_zero_variance_groups():
    p = np.concatenate([np.zeros(100), np.linspace(0.1, 0.5, 900)])
    rng = np.random.default_rng(13)
    y = np.concatenate([np.zeros(100, dtype=int), rng.binomial(1, p[100:])])
    res = hosmer_lemeshow(y, p)
    assert math.isfinite(res["statistic"])
    y[0] = 1  # a bad where the model said PD = 0
    res = hosmer_lemeshow(y, p)
    assert res["statistic"] == math.inf and res["pvalue"] == 0.0


# ---------------------------------------------------------------------------- PSI


def test_psi_zero_for_identical_samples():
    x = np.random.default_rng(14).normal(size=1000)
    assert psi(x, x) == 0.0
    assert psi(x, x[::-1]) == 0.0


def test_psi_hand_computation():
    ref = np.arange(1.0, 11.0)  # deciles at 1.9, 2.8, ..., 9.1: one value per bin
    cur = np.array([1, 1, 1, 1, 1, 2, 2, 3, 10, 10], dtype=float)
    eps = 1e-4
    expected = (
        (0.5 - 0.1) * math.log(0.5 / 0.1)
        + (0.2 - 0.1) * math.log(0.2 / 0.1)
        + 0.0
        + 6 * (eps - 0.1) * math.log(eps / 0.1)
        + (0.2 - 0.1) * math.log(0.2 / 0.1)
    )
    assert psi(ref, cur) == pytest.approx(expected, abs=1e-12)


def test_psi_value_on_edge_goes_to_upper_bin():
    ref = np.arange(11.0)  # inner edges exactly 1, 2, ..., 9
    np.testing.assert_array_equal(decile_edges(ref), np.arange(1.0, 10.0))
    ref_share = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 2]) / 11
    cur = np.array([1.0, 1.0])  # equal to the first edge -> bin 2, not bin 1
    cur_share = np.zeros(10)
    cur_share[1] = 1.0
    assert psi(ref, cur) == pytest.approx(psi_from_shares(ref_share, cur_share), abs=1e-15)


def test_psi_shift():
    rng = np.random.default_rng(15)
    a = rng.normal(size=5000)
    b = rng.normal(loc=1.0, size=5000)
    fwd, back = psi(a, b), psi(b, a)
    assert fwd > 0.25 and back > 0.25
    assert 0.5 < fwd / back < 2.0
    small = psi(a, rng.normal(loc=0.1, size=5000))
    assert 0 < small < 0.1 < fwd


def test_psi_heavy_ties_merge_edges():
    ref = np.array([0.0] * 80 + list(range(1, 21)), dtype=float)
    edges = decile_edges(ref)
    assert len(edges) == len(np.unique(edges)) < 9
    assert psi(ref, ref) == 0.0


def test_psi_from_shares_floor():
    assert psi_from_shares([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0
    v = psi_from_shares([0.5, 0.5, 0.0], [0.5, 0.4, 0.1], eps=1e-4)
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert v == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------ evaluate


def test_evaluate_is_flat_json_with_python_types():
    y, p = _sample(1500, seed=16)
    res = evaluate(y, p, n_boot=200, seed=3)
    assert set(res) == {
        "auc", "auc_ci_low", "auc_ci_high", "gini", "ks", "brier",
        "hl_statistic", "hl_dof", "hl_pvalue", "n", "n_bad", "bad_rate",
    }
    for key in ("n", "n_bad", "hl_dof"):
        assert type(res[key]) is int
    for key in set(res) - {"n", "n_bad", "hl_dof"}:
        assert type(res[key]) is float
    json.dumps(res, allow_nan=False)
    assert res["n"] == 1500 and res["n_bad"] == int(y.sum())
    assert res["auc"] == pytest.approx(roc_auc_score(y, p))
    assert res["gini"] == pytest.approx(2 * res["auc"] - 1)
    assert res["auc_ci_low"] < res["auc"] < res["auc_ci_high"]


def test_accepts_pandas_series():
    y, p = _sample(300, seed=17)
    assert auc(pd.Series(y), pd.Series(p)) == pytest.approx(auc(y, p))


# ------------------------------------------------------------------ invalid inputs


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: auc([0, 1, 2], [0.1, 0.2, 0.3]), "y"),
        (lambda: auc([0, 1, 1], [0.1, 0.2]), "p"),
        (lambda: auc([1, 1, 1], [0.1, 0.2, 0.3]), "y"),
        (lambda: ks([0, 0], [0.1, 0.2]), "y"),
        (lambda: ks([0, 1], [0.1, np.nan]), "p"),
        (lambda: brier([0, 1], [0.1, 1.5]), "p"),
        (lambda: brier([0, 1], [-0.1, 0.5]), "p"),
        (lambda: brier([], []), "y"),
        (lambda: bootstrap_auc_ci([0, 1], [0.1, 0.9], n_boot=0), "n_boot"),
        (lambda: bootstrap_auc_ci([0, 1], [0.1, 0.9], level=1.5), "level"),
        (lambda: calibration_table([0, 1, 0], [0.1, 0.2, 0.3], n_bins=10), "n_bins"),
        (lambda: calibration_table([[0, 1]], [[0.1, 0.2]]), "y"),
        (lambda: hosmer_lemeshow([0] * 20, [0.1] * 20), "y"),
        (lambda: hosmer_lemeshow([0, 1] * 10, [0.1] * 20, n_bins=2), "n_bins"),
        (lambda: psi([1.0, np.nan, 2.0], [1.0, 2.0]), "reference"),
        (lambda: psi([1.0, 2.0, 3.0], [1.0, np.nan]), "current"),
        (lambda: psi([1.0, 2.0], ["a", "b"]), "current"),
        (lambda: psi([1.0, 2.0, 3.0], [1.0, 2.0], n_bins=1), "n_bins"),
        (lambda: psi_from_shares([10, 20], [0.5, 0.5]), "ref_share"),
        (lambda: psi_from_shares([0.5, 0.5], [0.5, 0.3, 0.2]), "cur_share"),
        (lambda: psi_from_shares([0.5, 0.5], [1.5, -0.5]), "cur_share"),
        (lambda: evaluate([0, 1] * 10, [0.5] * 19 + [2.0]), "p"),
    ],
)
def test_invalid_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_error_message_shows_rule_and_value():
    with pytest.raises(ValueError, match=r"p must be within \[0, 1\].*1\.5"):
        brier([0, 1], [0.1, 1.5])
    with pytest.raises(ValueError, match=r"y must contain only 0 and 1.*2"):
        auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"len\(y\)=3, len\(p\)=2"):
        auc([0, 1, 1], [0.1, 0.2])
