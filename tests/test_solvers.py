"""Classical solvers (paper II.D): kernels, zero-error properties, post-processing."""

import numpy as np
import pytest
from scipy import sparse

from srclib import simulation as sim
from srclib import regions, solvers


@pytest.fixture(scope="module")
def kernels(head):
    return {m: solvers.inverse_kernel(head, m) for m in solvers.SOLVERS}


def test_solver_names_as_in_the_paper():
    assert solvers.SOLVERS == (
        "MNE", "dSPM", "sLORETA", "MNE_depthw", "dSPM_depthw", "sLORETA_depthw",
        "eLORETA", "LORETA", "LAURA",
    )


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


@pytest.mark.parametrize("method", ["sLORETA", "sLORETA_depthw", "eLORETA"])
def test_zero_localisation_error(head, kernels, method):
    rng = np.random.default_rng(0)
    dipoles = rng.choice(head.n_dipoles, 60, replace=False)
    assert np.all(_peak_errors_mm(head, kernels[method], dipoles, rng) == 0)


def _superficial(head, n=40, seed=1):
    rng = np.random.default_rng(seed)
    cortex = np.flatnonzero(head.is_cortical)
    superficial = cortex[head.depth[cortex] <= np.percentile(head.depth[cortex], 25)]
    return rng.choice(superficial, n, replace=False), rng


@pytest.mark.parametrize("method", ["MNE", "MNE_depthw", "LORETA", "LAURA"])
def test_superficial_dipoles_found(head, kernels, method):
    """The 25% most superficial cortical dipoles: median peak error at most 25 mm."""
    dipoles, rng = _superficial(head)
    assert np.median(_peak_errors_mm(head, kernels[method], dipoles, rng)) <= 25


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
    w = np.diag(omega) @ (btb + solvers.RIDGE * np.mean(np.diag(btb)) * np.eye(n)) @ np.diag(omega)
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

    lap = solvers.laplacian_operator(Tiny).toarray()
    assert np.allclose(lap.sum(1), 0)
    assert np.allclose(lap[1], [-1 / 3, 1, -1 / 3, -1 / 3])
    laura = solvers.laura_operator(Tiny).toarray()
    assert np.allclose(laura.sum(1), 0)
    # Dipole 1: neighbours at distances 1, 1, 2 -> weights 1, 1, 1/4 normalised; N_max/N_1 = 1.
    assert np.allclose(laura[1], [-1 / 2.25, 1, -1 / 2.25, -0.25 / 2.25])
    # Dipole 0 has one neighbour: factor N_max / N_0 = 3.
    assert np.allclose(laura[0], [3, -3, 0, 0])


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
