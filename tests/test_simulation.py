"""Simulator (paper II.B): spatial module, AR series, synchronisation, projection, data sets."""

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from srclib import regions, sampler
from srclib import simulation as sim


# --- spatial module --------------------------------------------------------


@pytest.mark.parametrize("compartment", ["cortex", "subcortical"])
def test_region_coefficients(head, rng, compartment):
    pool = np.flatnonzero(head.compartment == compartment)
    for center in rng.choice(pool, 5, replace=False):
        radius_mm = 30.0
        c = sim.grow_region(head, int(center), radius_mm)
        dist = np.linalg.norm(head.positions - head.positions[center], axis=1) * 1000
        region = np.flatnonzero(c)
        assert c[center] == 1.0
        assert np.all((c >= 0) & (c <= 1))
        assert np.all(c[dist > radius_mm] == 0)
        assert np.all(head.compartment[region] == compartment)
        # Decreasing with distance: the order of c is the reverse order of distance.
        order = np.argsort(dist[region])
        assert np.all(np.diff(c[region][order]) <= 1e-12)
        # The profile's shape (the profile setting's, for this compartment),
        # at each member's distance.
        shape = sim.compartment_shape(sim.default_profile_shape(head), compartment == "cortex")
        assert np.allclose(c[region], sim.profile_coefficients(dist[region], radius_mm, shape))
        # Connected over the source-space adjacency.
        sub = head.adjacency[region][:, region]
        assert connected_components(sub, directed=False)[0] == 1


def test_region_is_the_connected_component_of_the_ball(head):
    center = int(np.flatnonzero(head.is_cortical)[0])
    c = sim.grow_region(head, center, 200.0)
    # With a huge radius the region is the centre's whole hemisphere (cortex is two meshes).
    hemi = head.structure[center]
    assert set(head.structure[c > 0]) == {hemi}
    assert (c > 0).sum() == (head.structure == hemi).sum()


def test_default_profile_shape_is_the_profile_setting(head):
    from srclib import config

    assert sim.default_profile_shape(head) == config.get_params("quick", "simulation")[
        "profile_shape"]
    assert sim.check_profile_shape(sim.default_profile_shape(head)) is not None


def test_a_profile_per_compartment(head):
    """"cortex/deep": cortical regions take the first shape, subcortical ones the second."""
    for compartment, shape in (("cortex", "flat"), ("subcortical", "linear")):
        center = int(np.flatnonzero(head.compartment == compartment)[10])
        c = sim.grow_region(head, center, 25.0, "flat/linear")
        assert np.array_equal(c, sim.grow_region(head, center, 25.0, shape))
    assert sim.compartment_shape("gaussian", True) == sim.compartment_shape("gaussian", False)


@pytest.mark.parametrize("shape", ["box", "flat/", "flat/linear/gaussian", 3, "Flat"])
def test_bad_profile_shape_names_the_choices(head, shape):
    with pytest.raises(ValueError, match="shape must be one of.*joined by '/'"):
        sim.grow_region(head, 0, 20.0, shape=shape)


def test_profile_shapes_values():
    u = np.array([0.0, 0.5, 1.0])
    r = 0.03
    d = u * r
    assert np.allclose(sim.profile_coefficients(d, r, "gaussian"), np.exp(-2 * u**2))
    assert np.allclose(sim.profile_coefficients(d, r, "gaussian_r"), np.exp(-u**2 / 2))
    assert np.allclose(sim.profile_coefficients(d, r, "gaussian_2r"), np.exp(-u**2 / 8))
    assert np.allclose(sim.profile_coefficients(d, r, "linear"), [1.0, 0.5, 0.0])
    assert np.allclose(sim.profile_coefficients(d, r, "flat"), 1.0)


@pytest.mark.parametrize("shape", sim.PROFILE_SHAPES)
def test_every_shape_grows_the_same_region(head, shape):
    center = int(np.flatnonzero(~head.is_cortical)[20])
    reference = sim.grow_region(head, center, 25.0, "flat")
    c = sim.grow_region(head, center, 25.0, shape)
    assert c[center] == 1.0
    assert np.all((c >= 0) & (c <= 1))
    # Same members (the linear profile is 0 exactly at the rim only).
    assert np.all((c > 0) <= (reference > 0))
    dist = np.linalg.norm(head.positions - head.positions[center], axis=1)
    assert np.all((reference > 0) & ~(c > 0) <= np.isclose(dist, 0.025))


class _Chain:
    """A hand-made source space: 2m + 1 cortical dipoles on a line, spacing h."""

    profile = None

    def __init__(self, m, h):
        x = h * np.arange(-m, m + 1)
        self.positions = np.c_[x, np.zeros_like(x), np.zeros_like(x)]
        self.n_dipoles = len(x)
        self.compartment = np.full(self.n_dipoles, "cortex")
        self.is_cortical = np.ones(self.n_dipoles, bool)
        rows = np.arange(self.n_dipoles - 1)
        self.edges = (rows, rows + 1)


@pytest.mark.parametrize("m_inside", [1, 4, 10])
def test_perfect_spread_of_a_flat_region_is_analytic(m_inside):
    """Flat profile on a line: the peak set is the whole region, x = -k h ... k h.

    Its root-mean-square distance to the centroid (0) is
    ``h sqrt(sum_{j=-k}^{k} j^2 / (2k + 1)) = h sqrt(k (k + 1) / 3)``.
    """
    h, k = 0.002, m_inside
    chain = _Chain(30, h)
    center = 30
    radius_mm = 1000 * h * (k + 0.5)
    pas = sim.perfect_spread_mm(chain, center, radius_mm, ["flat"])["flat"]
    assert np.isclose(pas, 1000 * h * np.sqrt(k * (k + 1) / 3))


def test_perfect_spread_of_a_gaussian_region_is_analytic():
    """Gaussian profile (sigma = r / 2) on a line: the peak set is c >= 0.8.

    ``c = exp(-2 (x / r)^2) >= 0.8`` for ``|x| <= r sqrt(ln(1.25) / 2) = 0.334 r``;
    with r = 10 h that keeps x = -3h ... 3h, weighted by c, centroid 0.
    """
    h = 0.002
    chain = _Chain(30, h)
    pas = sim.perfect_spread_mm(chain, 30, 1000 * 10 * h, ["gaussian"])["gaussian"]
    j = np.arange(-3, 4)
    w = np.exp(-2 * (j / 10) ** 2)
    assert np.isclose(pas, 1000 * h * np.sqrt((w * j**2).sum() / w.sum()))


def test_flatter_profiles_spread_more(head):
    center = int(np.flatnonzero(head.is_cortical)[40])
    pas = sim.perfect_spread_mm(head, center, 40.0)
    assert pas["linear"] <= pas["gaussian"] <= pas["gaussian_r"] <= pas["gaussian_2r"]
    assert pas["gaussian_2r"] <= pas["flat"] + 1e-9


def test_membership_centre_on_a_line():
    from types import SimpleNamespace

    head = SimpleNamespace(positions=np.c_[np.arange(7.0), np.zeros(7), np.zeros(7)] / 1000)
    c = np.array([0, 0.9, 1.0, 0.9, 0.8, 0.7, 0])  # members 1-5: the middle one is 3
    assert sim.membership_centre(head, c) == 3
    with pytest.raises(ValueError, match="positive coefficient"):
        sim.membership_centre(head, np.zeros(7))


@pytest.mark.parametrize("compartment", ["cortex", "subcortical"])
def test_membership_centre_is_the_chebyshev_centre(head, rng, compartment):
    pool = np.flatnonzero(head.compartment == compartment)
    for center in rng.choice(pool, 5, replace=False):
        c = sim.grow_region(head, int(center), 30.0)
        members = np.flatnonzero(c)
        reach = np.array([np.linalg.norm(head.positions[members] - head.positions[m], axis=1).max()
                          for m in members])
        chosen = sim.membership_centre(head, c)
        assert chosen in members and np.isclose(reach[members == chosen][0], reach.min())
        assert reach.min() <= reach[members == center][0] <= 0.030 + 1e-9


def test_displaced_region_keeps_members_and_profile(head):
    from dataclasses import replace

    center = int(np.flatnonzero(head.is_cortical)[10])
    c = sim.grow_region(head, center, 30.0, shape="linear")
    # Every dipole moved 2 mm along x: the region is the same, each distance
    # from the (moved) centre as well.
    moved = replace(head, positions=head.positions + [0.002, 0.0, 0.0], _leadfields={})
    assert np.allclose(sim.displaced_region(moved, c, center, 30.0, shape="linear"), c)
    # Moving the centre alone: members keep their membership where within the
    # radius, and take the profile at their new distance.
    positions = head.positions.copy()
    positions[center] += [0.004, 0.0, 0.0]
    moved = replace(head, positions=positions, _leadfields={})
    c_moved = sim.displaced_region(moved, c, center, 30.0, shape="linear")
    assert c_moved[center] == 1.0 and np.all(c_moved[c == 0] == 0)
    dist = 1000 * np.linalg.norm(positions - positions[center], axis=1)
    inside = (c > 0) & (dist <= 30.0)
    assert np.allclose(c_moved[inside], 1 - dist[inside] / 30.0)
    assert np.all(c_moved[(c > 0) & ~inside] == 0) and (~inside & (c > 0)).any()
    with pytest.raises(ValueError, match="equal 1 at the centre"):
        sim.displaced_region(moved, c, center + 1, 30.0)


def test_region_hemispheres(head):
    left_ctx = int(np.flatnonzero(head.structure == "ctx-lh")[0])
    c = sim.grow_region(head, left_ctx, 200.0)
    assert sim.region_hemispheres(head, c) == {"left": int((c > 0).sum()), "right": 0}
    deep = ~head.is_cortical
    center = int(np.flatnonzero(head.structure == "Left-Putamen")[0])
    c = sim.grow_region(head, center, 200.0)  # the whole deep grid, both sides
    sides = sim.region_hemispheres(head, c)
    assert sides["left"] > 0 and sides["right"] > 0
    assert sides["left"] + sides["right"] == (c > 0).sum() == deep.sum()
    with pytest.raises(ValueError, match="c must have shape"):
        sim.region_hemispheres(head, c[:-1])


def test_bad_profile_shape(head):
    with pytest.raises(ValueError, match="shape must be one of"):
        sim.grow_region(head, 0, 10.0, "cosine")


@pytest.mark.parametrize("radius", [0, -5, 250, np.nan])
def test_bad_radius(head, radius):
    with pytest.raises(ValueError, match="radius_mm"):
        sim.grow_region(head, 0, radius)


@pytest.mark.parametrize("center", [-1, 10**6, 2.5, "3"])
def test_bad_center(head, center):
    with pytest.raises(ValueError, match="center"):
        sim.grow_region(head, center, 10)


# --- temporal module -------------------------------------------------------


def test_ar_coefficients_are_stable(rng):
    coefs = sim.ar_coefficients(200, rng, order=5)
    for a in coefs:
        roots = np.roots(np.r_[1.0, -a])
        assert np.all(np.abs(roots) < 1)


def test_ar_series_unit_variance_and_not_white(rng):
    s = sim.ar_series(300, 20000, rng, order=5)
    var = s.var(axis=1)
    assert abs(var.mean() - 1) < 0.05
    assert np.all(np.abs(var - 1) < 0.3)
    lag1 = np.mean(s[:, 1:] * s[:, :-1], axis=1) / var
    # White noise would give |lag-1 autocorrelation| ~ 1/sqrt(20000) ~ 0.007.
    assert np.median(np.abs(lag1)) > 0.2


def test_ar_series_stationary_from_the_first_sample(rng):
    coefs = np.tile(sim.ar_coefficients(1, rng), (4000, 1))
    s = sim.ar_series(4000, 60, rng, coefs=coefs)
    var_t = s.var(axis=0)  # across realisations, per sample
    assert np.all(np.abs(var_t - 1) < 0.12)


def test_ar_series_matches_scipy_lfilter(rng):
    from scipy.signal import lfilter

    coefs = sim.ar_coefficients(3, rng)
    e = rng.standard_normal((3, 200))
    y, _ = sim.ar_filter(e, coefs)
    for i in range(3):
        assert np.allclose(y[i], lfilter([1.0], np.r_[1.0, -coefs[i]], e[i]))


def test_ar_filter_state_continues_the_recursion(rng):
    coefs = sim.ar_coefficients(4, rng)
    e = rng.standard_normal((4, 300))
    whole, _ = sim.ar_filter(e, coefs)
    first, state = sim.ar_filter(e[:, :120], coefs)
    second, _ = sim.ar_filter(e[:, 120:], coefs, state)
    assert np.allclose(np.c_[first, second], whole)


def test_ar_autocovariance_matches_impulse_response(rng):
    from scipy.signal import lfilter

    coefs = sim.ar_coefficients(2, rng)
    gamma = sim.ar_autocovariance(coefs, 8)
    for i in range(2):
        h = lfilter([1.0], np.r_[1.0, -coefs[i]], np.r_[1.0, np.zeros(5000)])
        ref = [h[: len(h) - k] @ h[k:] for k in range(8)]
        assert np.allclose(gamma[i], ref, rtol=1e-8)


@pytest.mark.parametrize("order,n_times", [(5, 5), (5, 3), (0, 50), (2.5, 50)])
def test_ar_series_bad_input(rng, order, n_times):
    with pytest.raises(ValueError, match="order|n_times"):
        sim.ar_series(3, n_times, rng, order=order)


# --- synchronisation ---------------------------------------------------------


def test_synchronisation_correlation_follows_c(head, rng):
    center = int(np.flatnonzero(head.is_cortical)[10])
    c = sim.grow_region(head, center, 40.0)
    series = sim.ar_series(head.n_dipoles, 20000, rng)
    out = sim.synchronize(series, c, center)
    region = np.flatnonzero((c > 0) & (np.arange(head.n_dipoles) != center))
    s_c = out[center]
    corr = np.array([np.corrcoef(out[i], s_c)[0, 1] for i in region])
    # Unequal AR spectra make the blend's correlation slightly lower than for
    # white series; the bound c / sqrt(c^2 + (1-c)^2) holds up to that and noise.
    expected = c[region] / np.sqrt(c[region] ** 2 + (1 - c[region]) ** 2)
    assert np.median(np.abs(corr - expected)) < 0.05
    assert np.corrcoef(corr, expected)[0, 1] > 0.95
    outside = c == 0
    assert np.array_equal(out[outside], series[outside])
    assert np.array_equal(out[center], series[center])


def test_synchronisation_exact_for_identical_spectra(rng):
    n = 6
    c = np.array([1.0, 0.8, 0.5, 0.3, 0.1, 0.0])
    coefs = np.tile(sim.ar_coefficients(1, rng), (n, 1))
    s = sim.ar_series(n, 200000, rng, coefs=coefs)
    out = sim.synchronize(s, c, 0)
    corr = [np.corrcoef(out[i], out[0])[0, 1] for i in range(1, n)]
    expected = c[1:] / np.sqrt(c[1:] ** 2 + (1 - c[1:]) ** 2)
    assert np.allclose(corr, expected, atol=0.02)


def test_synchronize_bad_input(rng):
    s = rng.standard_normal((4, 10))
    with pytest.raises(ValueError, match="c must lie"):
        sim.synchronize(s, np.array([1, 2, 0, 0.0]), 0)
    with pytest.raises(ValueError, match="series must be"):
        sim.synchronize(s, np.ones(3), 0)


# --- scalp projection --------------------------------------------------------


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 30.0])
def test_simulate_achieves_the_requested_snr(head, rng, snr_db):
    center = int(np.flatnonzero(~head.is_cortical)[3])
    c = sim.grow_region(head, center, 20.0)
    eeg, details = sim.simulate(head, c, center, 500, snr_db, rng, return_details=True)
    assert eeg.shape == (64, 500)
    assert np.allclose(eeg.mean(0), 0, atol=1e-9 * np.abs(eeg).max())  # average reference
    assert abs(sim.achieved_snr_db(details["clean"], eeg) - snr_db) < 0.5


def test_simulate_is_the_literal_chain(head, rng):
    """simulate() equals gains @ synchronize(ar_series) for the same random draws."""
    center = int(np.flatnonzero(head.is_cortical)[5])
    c = sim.grow_region(head, center, 25.0)
    coefs = sim.ar_coefficients(head.n_dipoles, rng)
    o = sim.random_orientation(rng)
    seed = 99
    eeg, details = sim.simulate(head, c, center, 300, 10.0, np.random.default_rng(seed),
                                coefs=coefs, orientation=o, chunk=70, return_details=True)
    r = np.random.default_rng(seed)
    series = sim.ar_series(head.n_dipoles, 300, r, coefs=coefs)
    literal = sim.average_reference(sim.dipole_gains(head, o) @ sim.synchronize(series, c, center))
    assert np.allclose(details["clean"], literal)


def test_same_seed_same_eeg_other_seed_other_eeg(head):
    c = sim.grow_region(head, 7, 15.0)
    a = sim.simulate(head, c, 7, 100, 5.0, np.random.default_rng(1))
    b = sim.simulate(head, c, 7, 100, 5.0, np.random.default_rng(1))
    d = sim.simulate(head, c, 7, 100, 5.0, np.random.default_rng(2))
    assert np.array_equal(a, b)
    assert not np.allclose(a, d)


@pytest.mark.parametrize("snr", [np.nan, np.inf, 100])
def test_bad_snr(head, rng, snr):
    c = sim.grow_region(head, 7, 15.0)
    with pytest.raises(ValueError, match="snr_db"):
        sim.simulate(head, c, 7, 100, snr, rng)


def test_too_few_samples_for_the_ar_order(head, rng):
    c = sim.grow_region(head, 7, 15.0)
    with pytest.raises(ValueError, match="n_times"):
        sim.simulate(head, c, 7, 4, 10.0, rng, order=5)


def _second_moments(x):
    """Channel covariances at lags 0 and 1, averaged over windows and samples."""
    lag0 = np.einsum("rct,rdt->cd", x, x) / (x.shape[0] * x.shape[2])
    lag1 = np.einsum("rct,rdt->cd", x[:, :, 1:], x[:, :, :-1]) / (x.shape[0] * (x.shape[2] - 1))
    return lag0, lag1


def _autocorrelation(x, lag):
    """Per-window lag autocorrelation of the scalp signal, pooled over channels."""
    x = x - x.mean(-1, keepdims=True)
    return np.einsum("rct,rct->r", x[..., lag:], x[..., :-lag]) / np.einsum("rct,rct->r", x, x)


@pytest.mark.slow
def test_sampler_matches_the_literal_simulator_with_one_filter_per_dipole(head):
    """Mean covariances and the window-to-window spread of the spectrum match.

    The spread is the test's teeth: sharing AR coefficients within a few dipole
    groups keeps the mean covariance but makes each window's background
    spectrum a mix of few random spectra, so it varies far more from window to
    window than with one filter per dipole. The negative control below (the
    literal simulator with coefficients shared in 8 groups) must fail it.
    """
    rng = np.random.default_rng(1)
    center = int(np.flatnonzero(head.is_cortical)[40])
    c = sim.grow_region(head, center, 30.0)
    o = sim.random_orientation(rng)
    n_times, n_rep, batch = 200, 80, 8

    def literal(coefs=None):
        return np.stack([
            sim.simulate(head, c, center, n_times, 10.0, rng, orientation=o,
                         coefs=None if coefs is None else coefs(), return_details=True)[1]["clean"]
            for _ in range(n_rep)
        ])

    reference = literal()
    group = rng.permutation(np.arange(head.n_dipoles) % 8)
    grouped = literal(lambda: sim.ar_coefficients(8, rng)[group])
    gains = sampler.DipoleGains(head)
    fast = np.concatenate([
        sim.average_reference(sampler.literal_batch(
            gains, [c] * batch, np.repeat(o[None], batch, 0), n_times, rng)[0])
        for _ in range(n_rep // batch)
    ])
    for a, b in zip(_second_moments(reference), _second_moments(fast)):
        assert np.abs(a - b).max() / np.abs(a).max() < 0.1
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    for lag in (1, 3):
        spread = _autocorrelation(reference, lag).std()
        assert 0.7 < _autocorrelation(fast, lag).std() / spread < 1.4
        assert abs(_autocorrelation(fast, lag).mean() - _autocorrelation(reference, lag).mean()) \
            < 3 * spread / np.sqrt(n_rep)
        assert _autocorrelation(grouped, lag).std() / spread > 1.8  # the control fails


def test_centre_coefficients_are_drawn_on_their_own(head):
    """The centre's AR filter is independent of the background's filters.

    With every background dipole on one fixed filter, the centre's coefficients
    still follow the prior of :func:`simulation.ar_coefficients` and differ
    between windows (a group's or the bank's coefficients would equal ``fixed``).
    """
    rng = np.random.default_rng(2)
    gains = sampler.DipoleGains(head)
    fixed = np.tile(sim.ar_coefficients(1, rng)[0], (head.n_dipoles, 1))
    center = int(np.flatnonzero(~head.is_cortical)[5])
    c = np.zeros(head.n_dipoles)
    c[center] = 1.0
    n = 400
    orientation = np.tile([0.0, 0.0, 1.0], (n, 1))
    _, centre = sampler.literal_batch(gains, [c] * n, orientation, 50, rng, coefs=fixed)
    prior = sim.ar_coefficients(20000, rng)
    assert not np.any(np.all(np.isclose(centre, fixed[0]), axis=1))
    assert len(np.unique(centre.round(8), axis=0)) == n
    assert np.all(np.abs(centre.mean(0) - prior.mean(0)) < 4 * prior.std(0) / np.sqrt(n))
    assert np.all(np.abs(centre.std(0) / prior.std(0) - 1) < 0.2)


def test_literal_batch_bad_coefficients(head, rng):
    gains = sampler.DipoleGains(head)
    c = sim.grow_region(head, 7, 15.0)
    with pytest.raises(ValueError, match="coefs must have shape"):
        sampler.literal_batch(gains, [c], np.ones((1, 3)), 50, rng, coefs=np.zeros((3, 5)))


# --- data sets ----------------------------------------------------------------


def test_training_set_shapes_and_content(head):
    X, Y, meta = sampler.training_set(head, 60, np.random.default_rng(0), batch=25,
                                  progress=False, return_meta=True, n_jobs=1)
    assert X.shape == (60, 64, 50) and X.dtype == np.float32
    assert Y.shape == (60, head.n_dipoles) and Y.dtype == np.float32
    assert meta["subcortical"].sum() == 30
    for i in range(60):
        assert Y[i, meta["center"][i]] == 1.0
        assert head.is_cortical[meta["center"][i]] != meta["subcortical"][i]
    assert np.all((meta["radius_mm"] >= 5) & (meta["radius_mm"] <= 60))
    assert np.allclose(X.mean(1), 0, atol=1e-3 * np.abs(X).max())


def test_training_set_profile_shape(head):
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    flat = sampler.training_set(head, 12, rng(), batch=6, profile_shape="flat", progress=False,
                                n_jobs=1, return_meta=True)
    default = sampler.training_set(head, 12, rng(), batch=6, progress=False, n_jobs=1)
    for i in range(12):  # the same regions, with the flat profile: every member at 1
        members = default[1][i] > 0
        assert np.array_equal(flat[1][i] > 0, members) and np.all(flat[1][i][members] == 1)
        assert flat[1][i][flat[2]["center"][i]] == 1
    with pytest.raises(ValueError, match="profile_shape"):
        sampler.training_set(head, 4, rng(), profile_shape="cone", progress=False)


def test_training_set_reproducible_and_independent_of_workers(head):
    """Same seed, any worker count, on one machine: bitwise the same training set.

    Holds whatever BLAS threading the calling process has, because every batch
    runs on one BLAS thread in the serial path as in the workers. Across
    machines only float32 rounding is promised (not testable here).
    """
    a = sampler.training_set(head, 40, np.random.default_rng(5), batch=10, progress=False, n_jobs=1)
    b = sampler.training_set(head, 40, np.random.default_rng(5), batch=10, progress=False, n_jobs=2)
    c = sampler.training_set(head, 40, np.random.default_rng(6), batch=10, progress=False, n_jobs=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_training_set_snr(head):
    """Windows carry their requested SNR: noise power relative to the clean part."""
    X, Y, meta = sampler.training_set(head, 40, np.random.default_rng(1), progress=False,
                                  return_meta=True, n_jobs=1, snr_range_db=(30.0, 30.0))
    X0, _ = sampler.training_set(head, 40, np.random.default_rng(1), progress=False, n_jobs=1,
                             snr_range_db=(60.0, 60.0))
    # Same seed: the same clean signal, only the noise scale differs.
    snr = sim.achieved_snr_db(X0.astype(float), X.astype(float))
    assert np.all(np.abs(snr - 30.0) < 0.5)


def test_region_recordings(head):
    eeg, c, center, details = regions.region_recording(head, "D", duration_s=4.0, seed=3,
                                                   return_details=True)
    assert eeg.shape == (64, 1000)
    assert details["spec"]["structure"] == "Left-Hippocampus"
    assert head.compartment[center] == "subcortical" and c[center] == 1
    again = regions.region_recording(head, "D", duration_s=4.0, seed=3)[0]
    assert np.array_equal(eeg, again)
    # A region resolved once gives the same recording as its name.
    resolved = regions.region_recording(head, details["spec"], duration_s=4.0, seed=3)[0]
    assert np.array_equal(eeg, resolved)
    with pytest.raises(ValueError, match="a resolved region takes no other settings"):
        regions.region_recording(head, details["spec"], duration_s=4.0, radius_mm=10)


def test_paper_table_numbers():
    assert [regions.paper_table_number(r) for r in regions.REGIONS] == ["I", "II", "III", "IV"]
    with pytest.raises(ValueError, match="region must be one of"):
        regions.paper_table_number("E")


def test_custom_region(head):
    eeg, c, center, details = regions.region_recording(
        head, "mine", duration_s=1.0, center_mni=[30, -20, 50], radius_mm=20,
        compartment="cortex", return_details=True,
    )
    assert head.structure[center] == "ctx-rh"
    assert details["spec"]["radius_mm"] == 20


@pytest.mark.parametrize("kwargs,match", [
    (dict(region="Z"), "region must be one of"),
    (dict(region="A", radius_mm=-1), "radius_mm"),
    (dict(region="A", compartment="skull"), "compartment"),
    (dict(region="A", snr_db=np.nan), "snr_db"),
    (dict(region="A", duration_s=0.1), "duration_s"),
    (dict(region="A", seed=-3), "seed"),
    (dict(region="x", center_mni=[1, 2], radius_mm=10, compartment="cortex"), "center_mni"),
])
def test_region_recording_bad_input(head, kwargs, match):
    with pytest.raises(ValueError, match=match):
        regions.region_recording(head, **kwargs)


def test_training_set_key_ignores_the_region_recordings(head, monkeypatch):
    from srclib import config

    before = sampler.training_set_key("quick", head)
    monkeypatch.setitem(config.PROFILES["quick"]["simulation"], "region_recordings", 99)
    monkeypatch.setitem(config.PROFILES["quick"]["simulation"], "region_duration_s", 1.0)
    assert sampler.training_set_key("quick", head) == before
    monkeypatch.setitem(config.PROFILES["quick"]["simulation"], "n_train", 7)
    assert sampler.training_set_key("quick", head) != before
