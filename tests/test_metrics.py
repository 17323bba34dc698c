"""Tests of the localisation metrics (srclib.metrics)."""

import numpy as np
import pandas as pd
import pytest

from srclib import metrics
from srclib.metrics import METRICS


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

N_BALL = 2000


@pytest.fixture(scope="module")
def ball():
    """Dipoles uniform in a 70 mm ball (metres), and a centre dipole near the middle."""
    rng = np.random.default_rng(7)
    direction = rng.normal(size=(N_BALL, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    positions = 0.07 * rng.random((N_BALL, 1)) ** (1 / 3) * direction
    center = int(np.argmin(np.linalg.norm(positions - [0.01, 0.0, 0.0], axis=1)))
    return positions, center


def gaussian_region(positions, center, radius):
    """Coefficients falling from 1 at the centre, 0 beyond ``radius`` (metres)."""
    d = np.linalg.norm(positions - positions[center], axis=1)
    return np.where(d <= radius, np.exp(-0.5 * (d / (radius / 2)) ** 2), 0.0)


@pytest.fixture(scope="module")
def small_region(ball):
    positions, center = ball
    c = gaussian_region(positions, center, 0.012)
    assert 2 <= (c > 0).sum() < metrics._top_count(N_BALL)  # smaller than the top 5 %
    return c


@pytest.fixture(scope="module")
def large_region(ball):
    positions, center = ball
    c = gaussian_region(positions, center, 0.035)
    assert (c > 0).sum() > 2 * metrics._top_count(N_BALL)  # larger than the top 5 %
    return c


def line(n=10, spacing=0.01):
    """``n`` dipoles on the x axis, ``spacing`` metres apart."""
    positions = np.zeros((n, 3))
    positions[:, 0] = spacing * np.arange(n)
    return positions


# A hand-checkable case on 10 points 1 cm apart: region {3, 4, 5}, centre 4.
LINE_C = np.array([0, 0, 0, 0.5, 1, 0.5, 0, 0, 0, 0], dtype=float)
LINE_CENTER = 4


# --------------------------------------------------------------------------
# Reference predictions
# --------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["small_region", "large_region"])
def test_perfect_prediction_scores_perfectly(ball, region, request):
    positions, center = ball
    c = request.getfixturevalue(region)
    y = metrics.perfect_prediction(c, n_windows=3)
    assert y.shape == (3, N_BALL)
    out = metrics.evaluate(y, c, center, positions)
    np.testing.assert_array_equal(out["MLE_mm"], 0.0)
    np.testing.assert_array_equal(out["AUC_close"], 1.0)
    np.testing.assert_array_equal(out["AUC_far"], 1.0)
    np.testing.assert_array_equal(out["DistRank"], 0.0)
    np.testing.assert_array_equal(out["FractionActive"], 1.0)
    # PAS of the truth: the weighted spread of its inner part c >= 0.8.
    inner = c >= 0.8
    w, p = c[inner], positions[inner]
    centroid = w @ p / w.sum()
    expected = 1000 * np.sqrt(w @ ((p - centroid) ** 2).sum(axis=1) / w.sum())
    np.testing.assert_allclose(out["PAS_mm"], expected, rtol=1e-9, atol=1e-9)


def test_inverted_truth_has_zero_auc(ball, large_region):
    positions, center = ball
    y = 1.0 - large_region  # every region dipole below every non-region dipole
    out = metrics.evaluate(y, large_region, center, positions)
    assert out["AUC_close"] == 0.0 and out["AUC_far"] == 0.0
    assert out["FractionActive"] == 0.0


def test_random_prediction_is_chance_level(ball, large_region):
    positions, center = ball
    c = large_region
    y = metrics.random_prediction(400, N_BALL, np.random.default_rng(0))
    assert y.shape == (400, N_BALL) and y.min() >= 0 and y.max() <= 1
    out = metrics.evaluate(y, c, center, positions)
    assert abs(np.median(out["AUC_close"]) - 0.5) < 0.03
    assert abs(np.median(out["AUC_far"]) - 0.5) < 0.03
    # top5 is a uniformly random subset of m dipoles, so |top5 ∩ R| is
    # hypergeometric with mean m |R| / N; as |R| >= m the denominator is m and
    # the expected FractionActive is |R| / N (sd over windows ~0.04 here).
    expected = (c > 0).sum() / N_BALL
    assert abs(np.mean(out["FractionActive"]) - expected) < 0.01
    assert abs(np.median(out["FractionActive"]) - expected) < 0.03
    # The top set of noise is spread over the whole ball: the peak lands far.
    assert np.median(out["MLE_mm"]) > 20


def test_random_dist_rank_is_uniform():
    # y_center is uniform, so #{y_i > y_center} is uniform on {0, ..., N-1}
    # and DistRank is uniform on [0, 1]: median 0.5, quartiles 0.25 and 0.75.
    y = metrics.random_prediction(4000, 200, np.random.default_rng(1))
    dr = metrics.dist_rank(y, 17)
    assert abs(np.median(dr) - 0.5) < 0.03
    np.testing.assert_allclose(np.quantile(dr, [0.25, 0.75]), [0.25, 0.75], atol=0.03)


def test_perfect_prediction_repeats_c():
    y = metrics.perfect_prediction(LINE_C)
    assert y.shape == (1, 10)
    np.testing.assert_array_equal(y[0], LINE_C)
    y[0, 0] = 0.3  # a copy: c is untouched
    assert LINE_C[0] == 0


# --------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------


# Distance ties are ties in floating point: positions 1 cm apart give
# 0.05 - 0.04 != 0.03 - 0.02, so the tie-breaking tests use a spacing that is
# a power of two (2**-7 m = 7.8125 mm), for which the differences are exact.
EXACT = 2.0**-7


def test_negative_sets_on_a_line():
    # Non-region distances (steps): 0:3, 1:2, 2:1, 6:1, 7:2, 8:3, 9:4.
    close, far = metrics.negative_sets(LINE_C, line(spacing=EXACT))
    assert close.tolist() == [2, 6]  # round(10 / 5) = 2 nearest
    assert far.tolist() == [9, 0, 8, 1, 7]  # round(10 / 2) = 5 farthest, ties by index


def test_negative_sets_break_distance_ties_by_index():
    # 15 points, region {7}: distances 6, 8 -> 1 step; 5, 9 -> 2 steps; ...
    c = np.zeros(15)
    c[7] = 1
    close, far = metrics.negative_sets(c, line(15, spacing=EXACT))
    assert close.tolist() == [6, 8, 5]  # round(15 / 5) = 3; 5 beats 9 by index
    # round(15 / 2) = 8 (halves up): 0, 14 (7 steps), 1, 13, 2, 12, 3, 11.
    assert far.tolist() == [0, 14, 1, 13, 2, 12, 3, 11]


def test_negative_sets_use_all_when_too_few():
    c = np.ones(10)
    c[[0, 9]] = 0  # only two non-region dipoles, five requested for "far"
    close, far = metrics.negative_sets(c, line())
    assert sorted(close.tolist()) == [0, 9] and sorted(far.tolist()) == [0, 9]


def test_auc_by_hand():
    y = np.array([0.1, 0.2, 0.6, 0.5, 0.9, 0.3, 0.5, 0.0, 0.3, 0.1])
    # Positives (region 3, 4, 5): 0.5, 0.9, 0.3.
    # Close negatives (2, 6): 0.6, 0.5.
    #   0.5 vs 0.6: 0, vs 0.5: 1/2; 0.9: 1 + 1; 0.3: 0 + 0  ->  2.5 / 6.
    # Far negatives (9, 0, 8, 1, 7): 0.1, 0.1, 0.3, 0.2, 0.0.
    #   0.5: 5; 0.9: 5; 0.3: 4 wins + one tie  ->  14.5 / 15.
    auc_close, auc_far = metrics.auc_close_far(y, LINE_C, line())
    assert auc_close == pytest.approx(2.5 / 6, abs=1e-15)
    assert auc_far == pytest.approx(14.5 / 15, abs=1e-15)
    out = metrics.evaluate(y, LINE_C, LINE_CENTER, line())
    assert out["AUC_close"] == auc_close and out["AUC_far"] == auc_far


def test_mle_by_hand():
    y = np.array([0.1, 0.2, 0.3, 0.5, 0.6, 0.3, 0.5, 0.9, 0.3, 0.1])
    # Peak at dipole 7 (7 cm), centre at 4 cm: 30 mm.
    assert metrics.localization_error_mm(y, LINE_CENTER, line()) == pytest.approx(30.0)
    # Ties: maxima at 2 and 6, the first (2) counts: 20 mm.
    y = np.array([0.1, 0.2, 0.9, 0.5, 0.6, 0.3, 0.9, 0.0, 0.3, 0.1])
    assert metrics.localization_error_mm(y, LINE_CENTER, line()) == pytest.approx(20.0)
    # In three dimensions, metres to millimetres: |(0.003, 0.004, 0)| = 5 mm.
    positions = np.array([[0.0, 0.0, 0.0], [0.003, 0.004, 0.0]])
    assert metrics.localization_error_mm([0.2, 0.7], 0, positions) == pytest.approx(5.0)


def test_dist_rank_by_hand():
    y = np.array([0.1, 0.7, 0.5, 0.5, 0.5, 0.9, 0.2, 0.5, 0.0, 0.3])
    # Above y[4] = 0.5: 0.7 and 0.9; the three other 0.5s are ties, not counted.
    assert metrics.dist_rank(y, LINE_CENTER) == pytest.approx(2 / 9)
    # A centre tied with the maximum ranks first.
    y = np.array([0.9, 0.1, 0.9])
    assert metrics.dist_rank(y, 2) == 0.0
    # The lowest of all: every other dipole is above.
    assert metrics.dist_rank(np.array([0.3, 0.2, 0.1]), 2) == 1.0


def test_pas_by_hand():
    positions = line()
    # Peak set {0, 3} (0.8 >= 0.8 * 1.0 is included), weights 1 and 0.8.
    # Two points d apart with weights a, b: PAS = sqrt(a b) / (a + b) * d.
    y = np.array([1.0, 0.79, 0.5, 0.8, 0.1, 0.0, 0.0, 0.79, 0.0, 0.0])
    expected = np.sqrt(1.0 * 0.8) / 1.8 * 30.0
    assert metrics.peak_activity_spread_mm(y, positions) == pytest.approx(expected, rel=1e-12)
    # A lone peak has no spread.
    y = np.array([0.0, 0.1, 0.2, 0.3, 1.0, 0.3, 0.2, 0.1, 0.0, 0.0])
    assert metrics.peak_activity_spread_mm(y, positions) == pytest.approx(0.0, abs=1e-9)
    # Two equal peaks 40 mm apart: 20 mm.
    y = np.array([0.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    assert metrics.peak_activity_spread_mm(y, positions) == pytest.approx(20.0)
    # All zero: every dipole, equal weights; RMS of 0..9 cm is sqrt(99/12) cm.
    expected = 10.0 * np.sqrt(99 / 12)
    assert metrics.peak_activity_spread_mm(np.zeros(10), positions) == pytest.approx(expected)


def test_pas_is_translation_invariant(ball):
    positions, _ = ball
    y = np.random.default_rng(3).random((5, N_BALL))
    a = metrics.peak_activity_spread_mm(y, positions)
    b = metrics.peak_activity_spread_mm(y, positions + [0.3, -0.2, 1.0])
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_fraction_active_by_hand():
    n = 100  # top set: ceil(0.05 * 100) = 5 dipoles
    c = np.zeros(n)
    c[[10, 11]] = [1.0, 0.5]  # region of 2 < 5
    y = np.full(n, 0.1)
    y[[50, 51, 52, 53]] = 0.95
    y[10] = 0.9  # top5 = {50, 51, 52, 53, 10}: one hit of min(5, 2) = 2
    assert metrics.fraction_active(y, c) == 0.5
    y[11] = 0.9  # ties at the 5th place: 10 is taken (lower index), 11 is not
    assert metrics.fraction_active(y, c) == 0.5
    y[53] = 0.0  # now both fit
    assert metrics.fraction_active(y, c) == 1.0


def test_fraction_active_breaks_ties_by_index():
    n = 100
    y = np.zeros(n)
    y[50] = 1.0  # top5 = {50, 0, 1, 2, 3}
    c = np.zeros(n)
    c[[2, 90]] = [1.0, 0.5]
    assert metrics.fraction_active(y, c) == 0.5
    c = np.zeros(n)
    c[[4, 90]] = [1.0, 0.5]
    assert metrics.fraction_active(y, c) == 0.0


@pytest.mark.parametrize("n, m", [(1, 1), (20, 1), (21, 2), (100, 5), (9751, 488)])
def test_top_count_is_ceil_of_five_percent(n, m):
    assert metrics._top_count(n) == m


def test_top_mask_matches_stable_argsort():
    rng = np.random.default_rng(4)
    y = np.round(rng.random((50, 203)), 1)  # many ties
    m = metrics._top_count(203)
    order = np.argsort(-y, axis=1, kind="stable")[:, :m]
    expected = np.zeros_like(y, dtype=bool)
    np.put_along_axis(expected, order, True, axis=1)
    np.testing.assert_array_equal(metrics._top_mask(y, m), expected)


# --------------------------------------------------------------------------
# Exactness and vectorisation
# --------------------------------------------------------------------------


def brute_force_auc(y, positives, negatives):
    diff = y[positives][:, None] - y[negatives][None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0))


def test_mann_whitney_auc_equals_pairwise_count():
    rng = np.random.default_rng(5)
    y = np.round(rng.random((30, 300)), 1)  # 11 distinct values: many ties
    positives = rng.choice(300, 40, replace=False)
    negatives = np.setdiff1d(np.arange(300), positives)[:150]
    got = metrics.roc_auc(y, positives, negatives)
    expected = [brute_force_auc(row, positives, negatives) for row in y]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)
    assert metrics.roc_auc(y[0], positives, negatives) == pytest.approx(expected[0], abs=1e-14)


def test_vectorised_equals_per_window(ball, small_region):
    positions, center = ball
    rng = np.random.default_rng(6)
    y = np.round(rng.random((12, N_BALL)) ** 3, 2)  # ties everywhere
    y[3] = 0.0  # an all-zero window
    y[4] = small_region  # a perfect one
    together = metrics.evaluate(y, small_region, center, positions)
    for name in METRICS:
        assert together[name].shape == (12,)
    for i, row in enumerate(y):
        alone = metrics.evaluate(row, small_region, center, positions)
        for name in METRICS:
            assert isinstance(alone[name], float)
            assert alone[name] == pytest.approx(together[name][i], rel=1e-12, abs=1e-12)


def test_pieces_agree_with_evaluate(ball, large_region):
    positions, center = ball
    y = np.random.default_rng(8).random((4, N_BALL))
    out = metrics.evaluate(y, large_region, center, positions)
    negatives = metrics.negative_sets(large_region, positions)
    close, far = metrics.auc_close_far(y, large_region, positions, negatives=negatives)
    np.testing.assert_array_equal(out["AUC_close"], close)
    np.testing.assert_array_equal(out["AUC_far"], far)
    np.testing.assert_array_equal(out["MLE_mm"], metrics.localization_error_mm(y, center, positions))
    np.testing.assert_array_equal(out["DistRank"], metrics.dist_rank(y, center))
    np.testing.assert_array_equal(out["PAS_mm"], metrics.peak_activity_spread_mm(y, positions))
    np.testing.assert_array_equal(out["FractionActive"], metrics.fraction_active(y, large_region))


def test_float32_input_gives_same_result():
    y = np.array([0.1, 0.2, 0.6, 0.5, 0.9, 0.3, 0.5, 0.0, 0.3, 0.1], dtype=np.float32)
    a = metrics.evaluate(y, LINE_C, LINE_CENTER, line())
    b = metrics.evaluate(y.astype(np.float64), LINE_C, LINE_CENTER, line())
    assert a == b


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def test_evaluate_windows_table(ball, small_region):
    positions, center = ball
    y = metrics.random_prediction(7, N_BALL, np.random.default_rng(9))
    table = metrics.evaluate_windows(y, small_region, center, positions)
    assert list(table.columns) == list(METRICS)
    assert len(table) == 7
    out = metrics.evaluate(y, small_region, center, positions)
    for name in METRICS:
        np.testing.assert_array_equal(table[name].to_numpy(), out[name])
    single = metrics.evaluate_windows(y[0], small_region, center, positions)
    assert len(single) == 1


def test_summarize_long_table_keeps_method_order():
    rows = []
    for method, base in (("sLORETA", 3.0), ("CNN", 1.0), ("eLORETA", 2.0)):
        for w in range(5):
            rows.append({"method": method, **{name: base + w for name in METRICS}})
    rows.append({"method": "CNN", **{name: 100.0 for name in METRICS}})  # pulls the mean, not the median much
    summary = metrics.summarize(pd.DataFrame(rows))
    assert summary.index.tolist() == ["sLORETA", "CNN", "eLORETA"]
    assert summary.index.name == "method"
    assert list(summary.columns) == list(METRICS)
    assert summary.loc["sLORETA", "MLE_mm"] == 5.0
    assert summary.loc["CNN", "AUC_far"] == 3.5  # median of 1, 2, 3, 4, 5, 100


def test_summarize_dict_of_results(ball, small_region):
    positions, center = ball
    rng = np.random.default_rng(10)
    per_method = {
        "random": metrics.evaluate_windows(
            metrics.random_prediction(5, N_BALL, rng), small_region, center, positions
        ),
        "perfect": metrics.evaluate(
            metrics.perfect_prediction(small_region, 5), small_region, center, positions
        ),
        "one window": metrics.evaluate(small_region, small_region, center, positions),
    }
    summary = metrics.summarize(per_method)
    assert summary.index.tolist() == ["random", "perfect", "one window"]
    assert summary.loc["perfect", "AUC_close"] == 1.0
    assert summary.loc["one window", "MLE_mm"] == 0.0
    assert summary.loc["random", "DistRank"] == np.median(per_method["random"]["DistRank"])


def test_summarize_rejects_missing_columns():
    with pytest.raises(ValueError, match="per_window lacks"):
        metrics.summarize(pd.DataFrame({"method": ["a"], "MLE_mm": [1.0]}))
    with pytest.raises(ValueError, match="per_window must"):
        metrics.summarize([1, 2, 3])


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------

GOOD_Y = np.linspace(0, 1, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": np.full(10, np.nan)}, "y must be finite"),
        ({"y": np.r_[np.inf, np.zeros(9)]}, "y must be finite"),
        ({"y": np.r_[1.5, np.zeros(9)]}, r"y must lie in \[0, 1\]"),
        ({"y": np.r_[-0.1, np.zeros(9)]}, r"y must lie in \[0, 1\]"),
        ({"y": np.zeros(9)}, "y must have 10 dipoles"),
        ({"y": np.zeros((2, 3, 10))}, r"y must have shape \(N,\) or \(n_windows, N\)"),
        ({"y": np.zeros((0, 10))}, "y must hold at least one window"),
        ({"y": ["a"] * 10}, "y must be a numeric array"),
        ({"c": np.r_[LINE_C[:-1], 2.0]}, r"c must lie in \[0, 1\]"),
        ({"c": np.r_[LINE_C[:-1], np.nan]}, "c must be finite"),
        ({"c": np.zeros(10)}, "c must have at least one positive entry"),
        ({"c": np.ones(10)}, "c must leave at least one dipole outside"),
        ({"c": LINE_C[:9]}, r"c must have shape \(10,\)"),
        ({"c": np.tile(LINE_C, (2, 1))}, r"c must have shape \(N,\)"),
        ({"center": 10}, r"center must lie in \[0, 9\]"),
        ({"center": -1}, r"center must lie in \[0, 9\]"),
        ({"center": 2.0}, "center must be an integer"),
        ({"center": True}, "center must be an integer"),
        ({"center": 3}, "center must have the largest coefficient"),
        ({"center": 0}, r"center must lie in the region"),
        ({"positions": line()[:, :2]}, r"positions must have shape \(N, 3\)"),
        ({"positions": line().ravel()}, r"positions must have shape \(N, 3\)"),
        ({"positions": np.r_[line()[:9], [[np.nan, 0, 0]]]}, "positions must be finite"),
    ],
)
def test_evaluate_rejects_bad_input(kwargs, match):
    args = {"y": GOOD_Y, "c": LINE_C, "center": LINE_CENTER, "positions": line()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        metrics.evaluate(**args)


def test_pieces_reject_bad_input():
    with pytest.raises(ValueError, match="positions must have shape"):
        metrics.negative_sets(LINE_C, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="center must lie"):
        metrics.dist_rank(GOOD_Y, 10)
    with pytest.raises(ValueError, match="threshold must lie"):
        metrics.peak_activity_spread_mm(GOOD_Y, line(), threshold=0.0)
    with pytest.raises(ValueError, match="c must lie"):
        metrics.fraction_active(GOOD_Y, -LINE_C)
    with pytest.raises(ValueError, match="negatives must be a non-empty"):
        metrics.roc_auc(GOOD_Y, [1, 2], [])
    with pytest.raises(ValueError, match="positives must index"):
        metrics.roc_auc(GOOD_Y, [1, 20], [0])
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        metrics.random_prediction(2, 10, 0)
    with pytest.raises(ValueError, match="n_windows must be >= 1"):
        metrics.random_prediction(0, 10, np.random.default_rng())
    with pytest.raises(ValueError, match="n_dipoles must be an integer"):
        metrics.random_prediction(2, 10.0, np.random.default_rng())
    with pytest.raises(ValueError, match="n_windows must be >= 1"):
        metrics.perfect_prediction(LINE_C, 0)
