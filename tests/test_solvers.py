"""Classical solvers (paper II.D): kernels, zero-error properties, post-processing."""

import numpy as np
import pytest
from scipy import sparse

from srclib import simulation as sim
from srclib import regions, solvers


@pytest.fixture(scope="module")
def kernels(head):
    return {m: solvers.inverse_kernel(head, m) for m in solvers.METHODS}


def test_solver_names_as_in_the_paper():
    assert solvers.SOLVERS == (
        "MNE", "dSPM", "sLORETA", "MNE_depthw", "dSPM_depthw", "sLORETA_depthw",
        "eLORETA", "LORETA", "LAURA",
    )
    assert not set(solvers.EXTRA_SOLVERS) & set(solvers.SOLVERS)
    assert solvers.METHODS == solvers.SOLVERS + solvers.EXTRA_SOLVERS


def _sample(head, n, rng):
    return rng.choice(head.n_dipoles, n, replace=False), rng


def _peak_errors_mm(head, kernel, dipoles, rng):
    """Localisation error of the raw kernel (norm, no smoothing) for noiseless dipoles."""
    gain = head.leadfield("inverse")
    errors = []
    for i in dipoles:
        o = head.normals[i] if head.is_cortical[i] else sim.random_orientation(rng)
        x = gain[:, i, :] @ o
        x = x - x.mean()
        power = np.linalg.norm(kernel @ x, axis=1)
        errors.append(1000 * np.linalg.norm(head.positions[power.argmax()] - head.positions[i]))
    return np.array(errors)


@pytest.mark.parametrize("method", ["sLORETA_3x3", "sLORETA_depthw_3x3", "eLORETA"])
def test_zero_localisation_error(head, kernels, method):
    rng = np.random.default_rng(0)
    dipoles = rng.choice(head.n_dipoles, 60, replace=False)
    assert np.all(_peak_errors_mm(head, kernels[method], dipoles, rng) == 0)


@pytest.mark.parametrize("method", ["sLORETA", "sLORETA_depthw"])
def test_scalar_sloreta_recovers_a_known_dipole(head, kernels, method):
    """MNE-Python's scalar standardisation: not exact for free orientations, but close.

    The quick source space's spacing is about 7-10 mm; MNE's median error on the
    same dipoles is about 30 mm.
    """
    errors, mne_errors = (
        _peak_errors_mm(head, kernels[m], *_sample(head, 60, np.random.default_rng(0)))
        for m in (method, "MNE"))
    assert np.mean(errors == 0) >= 0.4
    assert np.median(errors) <= 10 < np.median(mne_errors)
    assert np.percentile(errors, 90) <= 25


def test_scalar_sloreta_divides_by_the_root_trace_of_the_variance(head, kernels):
    """MNE's sLORETA = MNE kernel / sqrt(trace V_i), V_i the 3 x 3 model variance."""
    mne_kernel = kernels["MNE"]
    gain = head.fwd_inverse["sol"]["data"].reshape(64, head.n_dipoles, 3)
    resolution = np.einsum("nkc,cnl->nkl", mne_kernel, gain)  # (K G)_ii, prior = identity
    trace = np.einsum("nkk->n", resolution)
    expected = mne_kernel / np.sqrt(trace)[:, None, None]
    ratio = kernels["sLORETA"] / expected
    finite = np.abs(expected) > 1e-6 * np.abs(expected).max()
    assert np.allclose(ratio[finite], np.median(ratio[finite]), rtol=1e-6)


@pytest.mark.parametrize("forward", ["inverse", "simulation"])
def test_single_dipole_experiment(head, kernels, forward):
    """The table: one row per dipole, half per compartment, zero error where exact."""
    table = solvers.single_dipole_experiment(
        head, ["eLORETA"], n_dipoles=40, data=forward, forward=forward,
        kernels={"MNE": kernels["MNE"]})
    assert len(table) == 40
    assert (table["compartment"] == "cortex").sum() == 20
    assert list(table.columns) == ["dipole", "compartment", "depth_mm", "eLORETA", "MNE"]
    assert table["dipole"].is_unique
    # On its own forward (the inverse crime) eLORETA localises every dipole exactly.
    assert np.all(table["eLORETA"] == 0)
    # MNE pulls deep dipoles towards the surface.
    deep = table["compartment"] == "subcortical"
    assert table.loc[deep, "MNE"].median() > 10


def test_single_dipole_experiment_matches_the_direct_loop(head, kernels):
    table = solvers.single_dipole_experiment(head, [], n_dipoles=20, seed=3,
                                             kernels={"LAURA": kernels["LAURA"]})
    rng = np.random.default_rng(3)
    half = 10
    dipoles = np.concatenate([rng.choice(np.flatnonzero(head.is_cortical), half, replace=False),
                              rng.choice(np.flatnonzero(~head.is_cortical), half, replace=False)])
    assert np.array_equal(table["dipole"], dipoles)
    assert np.allclose(table["LAURA"], _peak_errors_mm(head, kernels["LAURA"], dipoles, rng))


def test_the_inverse_crime_control_inverts_the_simulation_forward(head):
    """forward='simulation': exact localisation of dipoles simulated with that forward."""
    table = solvers.single_dipole_experiment(head, ["sLORETA_3x3"], n_dipoles=30,
                                             data="simulation", forward="simulation")
    assert np.all(table["sLORETA_3x3"] == 0)
    k_sim = solvers.inverse_kernel(head, "MNE", forward="simulation")
    k_inv = solvers.inverse_kernel(head, "MNE", forward="inverse")
    assert not np.allclose(k_sim, k_inv)
    rng = np.random.default_rng(4)
    eeg = sim.average_reference(rng.standard_normal((64, 100)))
    maps = solvers.activation_maps(head, eeg, "MNE", forward="simulation")
    expected = solvers.maps_from_kernel(k_sim, eeg, solvers.smoothing_matrix(head))
    assert np.allclose(maps, expected)


def test_random_patch_experiment(head):
    scores = solvers.random_patch_experiment(head, ["MNE", "sLORETA"], n_patches=6, seed=5)
    assert len(scores) == 12
    assert set(scores["method"]) == {"MNE", "sLORETA"}
    assert (scores.groupby("compartment")["patch"].nunique() == 3).all()
    assert scores["radius_mm"].between(20, 60).all()
    assert scores["AUC_close"].between(0, 1).all() and scores["FractionActive"].between(0, 1).all()
    again = solvers.random_patch_experiment(head, ["MNE", "sLORETA"], n_patches=6, seed=5)
    assert again.equals(scores)
    other = solvers.random_patch_experiment(head, ["MNE"], n_patches=6, seed=6)
    assert not np.allclose(other["MLE_mm"], scores.loc[scores["method"] == "MNE", "MLE_mm"])


def _superficial(head, n=40, seed=1):
    rng = np.random.default_rng(seed)
    cortex = np.flatnonzero(head.is_cortical)
    superficial = cortex[head.depth[cortex] <= np.percentile(head.depth[cortex], 25)]
    return rng.choice(superficial, n, replace=False), rng


@pytest.mark.parametrize("method", ["MNE", "MNE_depthw"])
def test_superficial_dipoles_found(head, kernels, method):
    """The 25% most superficial cortical dipoles: median peak error at most 25 mm."""
    dipoles, rng = _superficial(head)
    assert np.median(_peak_errors_mm(head, kernels[method], dipoles, rng)) <= 25


@pytest.mark.parametrize("method", ["LORETA", "LAURA"])
def test_smoothness_prior_is_kept(head, kernels, method):
    """LORETA and LAURA estimates are far smoother, in their own penalty, than MNE's.

    For single dipoles, the penalty ``|B Omega j|^2 / |Omega j|^2`` of the
    estimate (per component) is small compared with the minimum norm's: the
    prior shapes the solution. On the quick source space the ratio is about
    0.001-0.002 with the ridge used; a ridge ten times larger gives about
    0.007, the earlier one (1 % of the mean diagonal of ``B^T B``) about 0.025,
    and one that swamps the penalty about 0.2.
    """
    op = solvers.weight_operator(head, method)
    gain = head.leadfield("inverse")
    omega = np.sqrt(((gain - gain.mean(0)) ** 2).sum(axis=(0, 2)))
    dipoles, rng = _superficial(head, 20)
    x = np.stack([gain[:, i, :] @ head.normals[i] for i in dipoles], 1)
    x -= x.mean(0)

    def roughness(kernel):
        u = omega[:, None, None] * np.einsum("nkc,ct->nkt", kernel, x)  # (N, 3, n)
        bu = np.stack([op @ u[:, k, :] for k in range(3)], 1)
        return (bu**2).sum(axis=(0, 1)) / (u**2).sum(axis=(0, 1))

    assert np.median(roughness(kernels[method]) / roughness(kernels["MNE"])) < 0.005


@pytest.mark.parametrize("method", ["dSPM", "dSPM_depthw"])
def test_dspm_pushes_superficial_dipoles_deeper(head, kernels, method):
    """dSPM's noise normalisation over-corrects: superficial sources peak deeper."""
    dipoles, rng = _superficial(head)
    gain = head.leadfield("inverse")
    peaks = []
    for i in dipoles:
        x = gain[:, i, :] @ head.normals[i]
        peaks.append(np.linalg.norm(kernels[method] @ (x - x.mean()), axis=1).argmax())
    assert np.median(head.depth[peaks]) > np.median(head.depth[dipoles]) + 0.01


def test_kernels_ignore_the_common_mode(head, kernels):
    for method, kernel in kernels.items():
        assert kernel.shape == (head.n_dipoles, 3, 64)
        assert np.isfinite(kernel).all()
        rel = np.abs(kernel.sum(-1)).max() / np.abs(kernel).max()
        assert rel < 1e-10, method


@pytest.mark.parametrize("method", ["LORETA", "LAURA"])
def test_weighted_minimum_norm_matches_dense_algebra(head, method):
    """The sparse kernel equals the textbook dense formula on the quick source space."""
    import mne

    noise_cov = solvers.noise_covariance(head.info)
    kernel = solvers.inverse_kernel(head, method, noise_cov=noise_cov)
    n = head.n_dipoles
    gain = head.fwd_inverse["sol"]["data"]
    gain = gain - gain.mean(0)
    whitener, _ = mne.cov.compute_whitener(noise_cov, head.info, verbose="error")
    g = whitener @ gain  # (W, 3N)
    omega = np.sqrt((g.reshape(len(g), n, 3) ** 2).sum(axis=(0, 2)))
    b = solvers.weight_operator(head, method).toarray()
    btb = b.T @ b
    # The ridge: RIDGE times the smallest non-zero eigenvalue of B^T B (dense here).
    evals = np.linalg.eigvalsh(btb)
    gap = evals[evals > 1e-9 * evals.max()].min()
    w = np.diag(omega) @ (btb + solvers.RIDGE * gap * np.eye(n)) @ np.diag(omega)
    w_inv = np.kron(np.linalg.inv(w), np.eye(3))  # dense 3N x 3N
    gram = g @ w_inv @ g.T
    rank = np.linalg.matrix_rank(whitener)
    reg = solvers.LAMBDA2 * np.trace(gram) / rank
    dense = w_inv @ g.T @ np.linalg.pinv(gram + reg * np.eye(len(g)), rcond=1e-10,
                                         hermitian=True)
    # pinv on the full space adds reg on the null direction; project it out.
    dense = dense @ whitener
    assert np.allclose(kernel.reshape(3 * n, -1), dense, rtol=1e-6,
                       atol=1e-8 * np.abs(dense).max())


def test_laplacian_rows():
    class Tiny:
        n_dipoles = 4
        adjacency = sparse.csr_matrix(np.array(
            [[0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0]], float))
        positions = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [1, 2, 0]], float)
        compartment = np.full(4, "cortex")

    lap = solvers.laplacian_operator(Tiny).toarray()
    assert np.allclose(lap.sum(1), 0)
    assert np.allclose(lap[1], [-1 / 3, 1, -1 / 3, -1 / 3])
    laura = solvers.laura_operator(Tiny).toarray()
    assert np.allclose(laura.sum(1), 0)
    # Dipole 1: neighbours at distances 1, 1, 2 -> weights 1, 1, 1/4 normalised; N_max/N_1 = 1.
    assert np.allclose(laura[1], [-1 / 2.25, 1, -1 / 2.25, -0.25 / 2.25])
    # Dipole 0 has one neighbour: factor N_max / N_0 = 3.
    assert np.allclose(laura[0], [3, -3, 0, 0])


def _mixed_space(grid_neighbours):
    """A hand-made mixed source space.

    Cortex: a ring of 8 dipoles (2 neighbours each, no edge). Deep: a line of
    20 dipoles, each joined to all within ``grid_neighbours // 2`` steps, so
    interior dipoles have ``grid_neighbours`` neighbours and the ends half as
    many, as at the edge of a grid. The two compartments are not connected.
    """
    class Mixed:
        pass

    n_ctx, n_deep, k = 8, 20, grid_neighbours // 2
    angles = 2 * np.pi * np.arange(n_ctx) / n_ctx
    ctx = np.c_[np.cos(angles), np.sin(angles), np.zeros(n_ctx)]
    deep = np.c_[0.3 * np.arange(n_deep), np.zeros(n_deep), np.full(n_deep, 3.0)]
    pairs = [(i, (i + 1) % n_ctx) for i in range(n_ctx)]
    pairs += [(n_ctx + i, n_ctx + i + j) for i in range(n_deep) for j in range(1, k + 1)
              if i + j < n_deep]
    n = n_ctx + n_deep
    rows, cols = np.array(pairs).T
    adj = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    space = Mixed()
    space.adjacency = ((adj + adj.T) > 0).astype(float).tocsr()
    space.positions = np.r_[ctx, deep]
    space.compartment = np.array(["cortex"] * n_ctx + ["subcortical"] * n_deep)
    space.n_dipoles = n
    return space


@pytest.mark.parametrize("grid_neighbours", [4, 6, 10])
def test_laura_weights_do_not_depend_on_the_compartments_neighbour_count(grid_neighbours):
    space = _mixed_space(grid_neighbours)
    laura = solvers.laura_operator(space).toarray()
    factor = solvers.neighbour_factor(space)
    ctx = space.compartment == "cortex"
    # Every cortical row is the same whatever the deep lattice: factor 1, unit diagonal.
    assert np.allclose(factor[ctx], 1.0)
    assert np.allclose(np.diag(laura)[ctx], 1.0)
    reference = solvers.laura_operator(_mixed_space(2)).toarray()
    assert np.allclose(laura[:8, :8], reference[:8, :8])
    # Interior deep dipoles (the full neighbourhood of their own lattice) get factor 1
    # too, whatever that neighbourhood; the rows still average (they sum to zero).
    degree = np.diff(space.adjacency.indptr)
    interior = ~ctx & (degree == grid_neighbours)
    assert interior.sum() == 20 - grid_neighbours
    assert np.allclose(factor[interior], 1.0)
    assert np.allclose(np.diag(laura)[interior], 1.0)
    assert np.allclose(laura.sum(1), 0)
    # The ends of the line have half the neighbours: factor 2, as at a grid's edge.
    assert np.isclose(factor[8], 2.0) and np.isclose(factor[-1], 2.0)


def test_penalty_spectrum_and_ridge(head):
    op = solvers.weight_operator(head, "LORETA")
    dense = np.linalg.eigvalsh((op.T @ op).toarray())
    assert np.allclose(solvers.penalty_spectrum(op, 8), dense[:8], atol=1e-10 * dense.max())
    n_zero = int((dense < 1e-9 * dense.max()).sum())
    assert n_zero == 3  # two cortical meshes and the deep grid
    assert np.isclose(solvers.ridge_value(op, 0.5), 0.5 * dense[n_zero])
    with pytest.raises(ValueError, match="ridge"):
        solvers.ridge_value(op, 0.0)


def test_activation_maps_follow_the_post_processing(head, kernels):
    rng = np.random.default_rng(2)
    eeg = sim.average_reference(rng.standard_normal((64, 175)))
    maps = solvers.activation_maps(head, eeg, "MNE")
    assert maps.shape == (3, head.n_dipoles)  # 175 samples -> 3 windows of 50
    # The definition, written out for the second window.
    current = np.einsum("nkc,ct->nkt", kernels["MNE"], eeg[:, 50:100])
    power = solvers.smoothing_matrix(head) @ np.linalg.norm(current, axis=1)
    expected = (power / power.max(0)).mean(1)
    assert np.allclose(maps[1], expected, rtol=1e-4, atol=1e-5)


def test_solvers_that_differ_by_a_scale_per_dipole_share_their_source_estimates(head, kernels):
    rng = np.random.default_rng(3)
    mne_k = kernels["MNE"]
    altered = mne_k * rng.uniform(0.5, 2.0, len(mne_k))[:, None, None]
    altered[-1, 0, :] += 1e-3 * np.abs(mne_k[-1]).max()  # the last dipole: not a scaling
    named = {m: kernels[m] for m in ("MNE", "dSPM", "sLORETA", "eLORETA", "MNE_depthw")}
    named["altered"] = altered
    bases = solvers.scaled_kernels(named)
    assert {m: of for m, (of, _) in bases.items()} == {
        "MNE": "MNE", "dSPM": "MNE", "sLORETA": "MNE", "eLORETA": "eLORETA",
        "MNE_depthw": "MNE_depthw", "altered": "altered"}
    norms = np.linalg.norm(kernels["dSPM"].reshape(len(mne_k), -1), axis=1)
    assert np.allclose(bases["dSPM"][1] * np.linalg.norm(mne_k.reshape(len(mne_k), -1), axis=1),
                       norms)
    eeg, c, center = regions.region_recording(head, "D", duration_s=2.0, seed=4)
    smoothing = solvers.smoothing_matrix(head)
    together = solvers.maps_from_kernels(named, eeg, smoothing)
    for m, k in named.items():
        alone = solvers.maps_from_kernel(k, eeg, smoothing, block=40)
        assert np.allclose(together[m], alone, rtol=0, atol=1e-6), m
        assert np.array_equal(together[m].argmax(1), alone.argmax(1)), m
    assert solvers.maps_from_kernels({}, eeg, smoothing) == {}


def test_activation_maps_range_for_every_solver(head):
    eeg, c, center = regions.region_recording(head, "C", duration_s=2.0, seed=1)
    for method in solvers.SOLVERS:
        maps = solvers.activation_maps(head, eeg, method)
        assert maps.shape == (10, head.n_dipoles)
        assert np.isfinite(maps).all()
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6


def test_smoothing_is_mild_and_preserves_constants(head):
    s = solvers.smoothing_matrix(head)
    assert np.allclose(s @ np.ones(head.n_dipoles), 1)
    assert np.allclose(s.diagonal(), 0.5)


@pytest.mark.parametrize("eeg,method,match", [
    (np.zeros((63, 100)), "MNE", "eeg must have shape"),
    (np.full((64, 100), np.nan), "MNE", "finite"),
    (np.zeros((64, 20)), "MNE", "at least one window"),
    (np.zeros((64, 100)), "LCMV", "method must be one of"),
])
def test_bad_input(head, eeg, method, match):
    with pytest.raises(ValueError, match=match):
        solvers.activation_maps(head, eeg, method)


def test_bad_forward(head):
    with pytest.raises(ValueError, match="forward must be one of"):
        solvers.activation_maps(head, np.zeros((64, 100)), "MNE", forward="openmeeg")
    with pytest.raises(ValueError, match="data must be one of"):
        solvers.single_dipole_experiment(head, ["MNE"], data="dune")
