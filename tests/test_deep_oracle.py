"""benchmarks/deep_oracle.py: the likelihood-ratio scan finds the deep region that made a window."""

from pathlib import Path
import sys

import numpy as np

from srclib import sampler, simulation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import deep_oracle as oracle  # noqa: E402  (a script, not a module of srclib)


def test_deep_regions_are_the_simulators(head):
    deep = np.flatnonzero(~head.is_cortical)
    regions = oracle.deep_regions(head, 20.0)
    assert regions.shape == (head.n_dipoles, len(deep))
    for j in (0, len(deep) // 2, len(deep) - 1):
        np.testing.assert_array_equal(regions[:, j].toarray().ravel(),
                                      simulation.grow_region(head, deep[j], 20.0))


def test_deep_patterns_are_the_simulators_scalp_projection(head):
    rng = np.random.default_rng(2)
    deep = np.flatnonzero(~head.is_cortical)
    regions = oracle.deep_regions(head, 30.0)
    whitener = rng.standard_normal((64, 64))
    patterns = oracle.deep_patterns(head, regions, whitener)
    gains = sampler.DipoleGains(head)
    for j in (1, len(deep) // 3):
        c = regions[:, j].toarray().ravel()
        members = np.flatnonzero(c)
        orientation = rng.standard_normal(3)
        scalp = c[members] @ gains.gains(members, orientation)  # the sampler's region term
        expected = whitener @ simulation.average_reference(scalp[:, None])[:, 0]
        np.testing.assert_allclose(patterns[j] @ orientation, expected, rtol=1e-8,
                                   atol=1e-8 * np.abs(expected).max())


def test_a_noiseless_deep_region_is_found_with_and_without_its_orientation(head):
    rng = np.random.default_rng(3)
    deep = np.flatnonzero(~head.is_cortical)
    patterns = oracle.deep_patterns(head, oracle.deep_regions(head, 25.0), np.eye(64))
    basis = np.linalg.qr(patterns)[0]
    truth = rng.choice(len(deep), 5, replace=False)
    windows, orientations = [], []
    for k in truth:
        orientation = rng.standard_normal(3)
        orientation /= np.linalg.norm(orientation)
        windows.append(np.outer(patterns[k] @ orientation, rng.standard_normal(50)))
        orientations.append(orientation)
    y = np.stack(windows)
    np.testing.assert_array_equal(oracle.glr_orientation_free(y, basis, block=2).argmax(1),
                                  truth)
    for window, orientation, k in zip(y, orientations, truth):
        stat = oracle.glr_oriented(window, patterns, orientation)
        assert stat.argmax() == k
        # Along its own unit pattern the window keeps all its energy.
        np.testing.assert_allclose(stat[k], np.sum(window**2), rtol=1e-10)


def test_errors_of_the_true_centres_and_of_a_far_guess(head):
    deep = np.flatnonzero(~head.is_cortical)
    meta = {"center": deep[:10]}
    assert oracle.errors(deep[:10], meta, head.positions) == dict(median_mm=0.0,
                                                                  within_8mm=1.0)
    far = np.full(10, np.flatnonzero(head.is_cortical)[0])
    distance = 1000 * np.linalg.norm(head.positions[far] - head.positions[deep[:10]], axis=1)
    result = oracle.errors(far, meta, head.positions)
    assert result["median_mm"] == round(float(np.median(distance)), 1)
    assert result["within_8mm"] == np.mean(distance <= 8.0)


def test_posterior_median_is_the_point_nearest_the_posterior_on_average():
    line = np.arange(5.0)
    distance = np.abs(line[:, None] - line[None])
    # Equal weight on 0, 1 and 4: the median of the three is 1.
    weight = np.log(np.array([[1.0, 1.0, 1e-300, 1e-300, 1.0]]))
    assert oracle.posterior_median(weight, distance)[0] == 1
    # A posterior concentrated on one candidate picks it, whatever the offset.
    sharp = np.array([[0.0, 0.0, 0.0, 200.0, 0.0]]) + 1e4
    assert oracle.posterior_median(sharp, distance)[0] == 3
