"""The nine classical inverse solvers (paper section II.D).

Every solver here is linear: it is a kernel ``K`` (3 components per dipole by
64 channels) that turns one sample of average-referenced EEG into a current
estimate at every dipole, computed on the *inverse* forward operator
(OpenMEEG), never on the one that simulated the data.

* ``MNE``, ``dSPM``, ``sLORETA``, ``eLORETA`` come from MNE-Python's
  :mod:`mne.minimum_norm` with free orientations (``loose=1``) and no depth
  weighting (Hamalainen & Ilmoniemi 1994; Dale et al. 2000; Pascual-Marqui
  2002, 2007).
* ``MNE_depthw``, ``dSPM_depthw``, ``sLORETA_depthw`` are the same with an
  orientation prior (``loose=0.2`` on the cortex, deep dipoles free) and
  depth weighting (exponent 0.8) (Lin et al. 2006).
* ``LORETA`` and ``LAURA`` are weighted minimum-norm solutions with a spatial
  weight matrix written here (no maintained, permissively licensed Python
  library provides them): LORETA penalises the discrete Laplacian of the
  column-normalised current (Pascual-Marqui et al. 1994), LAURA its departure
  from a local, inverse-square-distance weighted average of the neighbours
  (Grave de Peralta Menendez et al. 2001, 2004). See :func:`weight_operator`.

All use the same noise covariance (white, the simulator's sensor noise) and
the same regularisation ``lambda2 = 1/9`` relative to the whitened data.

Post-processing (:func:`activation_maps`), as in the paper: the norm of the
three components per dipole and sample, a mild spatial smoothing (each
dipole averaged half-and-half with the mean of its neighbours), each sample
scaled to [0, 1] by its maximum, and the mean over each 50-sample window.
"""

import mne
import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from . import config
from .check import check_lambda2

#: The nine solvers, named as in the paper's tables.
SOLVERS = (
    "MNE", "dSPM", "sLORETA", "MNE_depthw", "dSPM_depthw", "sLORETA_depthw",
    "eLORETA", "LORETA", "LAURA",
)

#: Regularisation (MNE-Python's convention: 1 / SNR^2 with SNR = 3).
LAMBDA2 = 1.0 / 9.0

#: Relative ridge that makes the LORETA and LAURA operators invertible.
RIDGE = 1e-2

_MNE_METHODS = {
    "MNE": ("MNE", 1.0, None), "dSPM": ("dSPM", 1.0, None),
    "eLORETA": ("eLORETA", 1.0, None),
    "MNE_depthw": ("MNE", 0.2, 0.8), "dSPM_depthw": ("dSPM", 0.2, 0.8),
}
_SLORETA = {"sLORETA": (1.0, None), "sLORETA_depthw": (0.2, 0.8)}


def _check_method(method):
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {list(SOLVERS)}, got {method!r}")
    return method


def noise_covariance(info, noise_var=1.0):
    """White sensor-noise covariance (the simulator's noise model).

    Parameters
    ----------
    info : mne.Info
    noise_var : float
        Per-channel variance. Every kernel below is invariant to it (MNE
        scales the regularisation with the whitened data), so the default
        serves whenever the noise is white.

    Returns
    -------
    cov : mne.Covariance
    """
    if not noise_var > 0:
        raise ValueError(f"noise_var must be positive, got {noise_var}")
    names = info["ch_names"]
    return mne.Covariance(np.eye(len(names)) * noise_var, names, bads=[], projs=[], nfree=1)


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------


def inverse_kernel(head, method, *, noise_cov=None, lambda2=LAMBDA2):
    """Linear inverse kernel of one solver on the inverse forward operator.

    Parameters
    ----------
    head : HeadModel
    method : str
        One of :data:`SOLVERS`.
    noise_cov : mne.Covariance | None
        Defaults to :func:`noise_covariance` (white).
    lambda2 : float
        Regularisation, > 0 (see :func:`~srclib.check.check_lambda2`).

    Returns
    -------
    kernel : ndarray, shape (N, 3, 64)
        Current estimate (3 components) at every dipole per unit of each
        channel; it includes the average reference.
    """
    method = _check_method(method)
    lambda2 = check_lambda2(lambda2)
    noise_cov = noise_cov if noise_cov is not None else noise_covariance(head.info)
    if method in _MNE_METHODS:
        return _mne_kernel(head, noise_cov, lambda2, *_MNE_METHODS[method])[0]
    if method in _SLORETA:
        return sloreta_kernel(head, noise_cov, lambda2, *_SLORETA[method])
    return weighted_minimum_norm_kernel(head, weight_operator(head, method), noise_cov, lambda2)


def _mne_kernel(head, noise_cov, lambda2, method, loose, depth):
    """MNE-Python's kernel, read off by applying the operator to unit vectors.

    Returns the kernel (N, 3, 64), components along the head x, y, z axes,
    and the inverse operator.
    """
    loose_arg = 1.0 if loose == 1.0 else dict(surface=loose, discrete=1.0)
    inv = mne.minimum_norm.make_inverse_operator(
        head.info, head.fwd_inverse, noise_cov, loose=loose_arg, depth=depth, verbose="error"
    )
    n_ch = len(head.info["ch_names"])
    probe = mne.EvokedArray(np.eye(n_ch), head.info, tmin=0.0, nave=1, verbose="error")
    stc = mne.minimum_norm.apply_inverse(probe, inv, lambda2, method, pick_ori="vector",
                                         verbose="error")
    return np.asarray(stc.data), inv  # (N, 3, 64)


def sloreta_kernel(head, noise_cov, lambda2=LAMBDA2, loose=1.0, depth=None):
    """sLORETA with the 3 x 3 standardisation of Pascual-Marqui (2002).

    The minimum-norm estimate ``j_i = K_i x`` at each dipole is standardised
    by its variance under the model, ``V_i = (K G)_ii R_i`` (``R_i`` the 3 x 3
    source prior, which carries the depth weighting and the orientation
    prior), giving ``V_i^-1/2 K_i``. This block form localises a single
    noiseless dipole exactly, for any regularisation and prior. MNE-Python's
    own sLORETA divides the three components by one scalar per dipole, which
    keeps that property only for fixed orientations (the notebook on the
    classical solvers compares the two).

    Parameters
    ----------
    head : HeadModel
    noise_cov : mne.Covariance
    lambda2 : float
    loose : float
        Orientation prior on the cortex (1 = free).
    depth : float | None
        Depth-weighting exponent.

    Returns
    -------
    kernel : ndarray, shape (N, 3, 64)
    """
    kernel, inv = _mne_kernel(head, noise_cov, lambda2, "MNE", loose, depth)
    n = kernel.shape[0]
    gain = head.fwd_inverse["sol"]["data"].reshape(-1, n, 3)  # head x, y, z
    resolution = np.einsum("nkc,cnl->nkl", kernel, gain)  # (K G)_ii blocks
    # Source prior per dipole, rotated from the operator's source frame to x, y, z.
    nn = inv["source_nn"].reshape(n, 3, 3)
    prior = np.einsum("nak,na,nal->nkl", nn, inv["source_cov"]["data"].reshape(n, 3), nn)
    variance = resolution @ prior
    variance = 0.5 * (variance + np.transpose(variance, (0, 2, 1)))
    evals, evecs = np.linalg.eigh(variance)
    evals = np.maximum(evals, evals[:, -1:] * 1e-12)
    inv_sqrt = np.einsum("nak,nk,nbk->nab", evecs, evals ** -0.5, evecs)
    return np.einsum("nab,nbc->nac", inv_sqrt, kernel)


def laplacian_operator(head):
    """LORETA's discrete Laplacian on the source space: ``I - D^-1 A``.

    Each row is a dipole minus the mean of its neighbours (``A`` the
    source-space adjacency, ``D`` its degrees), the irregular-mesh analogue of
    the 6-neighbour Laplacian of LORETA's regular grid.
    """
    adj = head.adjacency.tocsr().astype(float)
    degree = np.asarray(adj.sum(1)).ravel()
    return (sparse.identity(head.n_dipoles) - sparse.diags(1.0 / degree) @ adj).tocsc()


def laura_operator(head, exponent=2.0):
    """LAURA's local autoregressive-average operator.

    Row i is ``(N_max / N_i) (e_i - sum_k w_ik e_k)`` over the ``N_i``
    neighbours k of dipole i, with weights proportional to ``d_ik^-exponent``
    (the decay of a dipolar field; exponent 2 as in the original) and
    normalised to sum to one, so that the operator vanishes exactly where the
    current is the local distance-weighted average of its neighbours. The
    factor ``N_max / N_i`` (``N_max`` the largest neighbourhood) gives dipoles
    with fewer neighbours, at the edges of the source space, their original
    extra weight. (The original writes the unnormalised weights
    ``d_ik^-e`` on a regular grid in grid units; normalising keeps the
    averaging property on our irregular source space.)
    """
    adj = head.adjacency.tocoo()
    d = np.linalg.norm(head.positions[adj.row] - head.positions[adj.col], axis=1)
    w = sparse.csr_matrix((d ** -exponent, (adj.row, adj.col)), shape=adj.shape)
    w = sparse.diags(1.0 / np.asarray(w.sum(1)).ravel()) @ w
    degree = np.diff(head.adjacency.tocsr().indptr)
    scale = sparse.diags(degree.max() / degree)
    return (scale @ (sparse.identity(head.n_dipoles) - w)).tocsc()


def weight_operator(head, method):
    """The sparse operator ``B`` whose penalty ``|B Omega j|^2`` defines the solver."""
    if method == "LORETA":
        return laplacian_operator(head)
    if method == "LAURA":
        return laura_operator(head)
    raise ValueError(f"method must be 'LORETA' or 'LAURA', got {method!r}")


def _referenced_leadfield(head):
    """Inverse leadfield (64, N, 3), average-referenced, head coordinates."""
    gain = head.fwd_inverse["sol"]["data"].reshape(len(head.info["ch_names"]), -1, 3)
    return gain - gain.mean(0)


def weighted_minimum_norm_kernel(head, operator, noise_cov, lambda2=LAMBDA2):
    """Kernel of ``min |x - G j|^2_C + lambda |B Omega j|^2`` (LORETA, LAURA).

    With ``W = Omega (B^T B + ridge I) Omega`` applied to each of the three
    current components (``Omega`` the column norms of ``G``, the usual depth
    compensation), the solution is ``K = W^-1 G^T (G W^-1 G^T + lambda2' C)^+``.
    ``W^-1 G^T`` comes from one sparse LU factorisation of
    ``B^T B + ridge I`` (N x N) with 3 x 64 right-hand sides: no dense N x N
    matrix is formed. The data are whitened by ``C`` (in the 63-dimensional
    average-referenced space) and ``lambda2' = lambda2 trace(G W^-1 G^T) / 63``,
    as MNE-Python scales its regularisation.

    Parameters
    ----------
    head : HeadModel
    operator : scipy.sparse matrix, shape (N, N)
    noise_cov : mne.Covariance
    lambda2 : float

    Returns
    -------
    kernel : ndarray, shape (N, 3, 64)
    """
    gain = _referenced_leadfield(head)  # (C, N, 3)
    n_ch, n = gain.shape[:2]
    whitener, _ = mne.cov.compute_whitener(noise_cov, head.info, verbose="error")
    g = (whitener @ gain.reshape(n_ch, -1)).reshape(-1, n, 3)
    omega = np.sqrt((g**2).sum(axis=(0, 2)))  # column norm per dipole
    btb = (operator.T @ operator).tocsc()
    ridge = RIDGE * btb.diagonal().mean()
    lu = splu((btb + ridge * sparse.identity(n)).tocsc())
    rhs = (g / omega[None, :, None]).transpose(1, 0, 2).reshape(n, -1)  # (N, W*3)
    wg = lu.solve(rhs).reshape(n, n_ch, 3) / omega[:, None, None]  # W^-1 G^T, (N, W, 3)
    gram = g.reshape(len(g), -1) @ wg.transpose(0, 2, 1).reshape(-1, wg.shape[1])
    rank = np.linalg.matrix_rank(whitener)
    evals, evecs = np.linalg.eigh(gram)
    keep = evals > evals.max() * 1e-10
    reg = lambda2 * evals[keep].sum() / rank
    inv = (evecs[:, keep] / (evals[keep] + reg)) @ evecs[:, keep].T
    product = wg.transpose(0, 2, 1).reshape(-1, wg.shape[1]) @ (inv @ whitener)
    return product.reshape(n, 3, -1)


# --------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------


def smoothing_matrix(head):
    """Mild spatial smoothing: half the dipole's own value, half its neighbours' mean."""
    adj = head.adjacency.tocsr().astype(float)
    mean = sparse.diags(1.0 / np.asarray(adj.sum(1)).ravel()) @ adj
    return (0.5 * sparse.identity(head.n_dipoles) + 0.5 * mean).tocsr()


def _check_eeg(eeg, window):
    x = np.asarray(eeg, float)
    if x.ndim != 2 or x.shape[0] != 64:
        raise ValueError(f"eeg must have shape (64, n_times), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("eeg must be finite (found NaN or inf)")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if x.shape[1] < window:
        raise ValueError(f"eeg needs at least one window of {window} samples, got {x.shape[1]}")
    return x


def maps_from_kernel(kernel, eeg, smoothing, window=config.WINDOW, block=40):
    """Post-process a kernel's source estimates into one map per window.

    Parameters
    ----------
    kernel : ndarray, shape (N, 3, 64)
    eeg : ndarray, shape (64, n_times)
        Trailing samples that do not fill a window are dropped.
    smoothing : scipy.sparse matrix, shape (N, N)
    window : int
    block : int
        Windows processed at a time (bounds memory).

    Returns
    -------
    maps : ndarray, shape (n_windows, N)
        In [0, 1].
    """
    n = kernel.shape[0]
    k = np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]), np.float32)
    smoothing = smoothing.astype(np.float32)
    n_windows = eeg.shape[1] // window
    maps = np.empty((n_windows, n))
    for w0 in range(0, n_windows, block):
        w1 = min(w0 + block, n_windows)
        x = np.asarray(eeg[:, w0 * window : w1 * window], np.float32)
        current = (k @ x).reshape(n, 3, -1)
        power = np.sqrt(np.einsum("nkt,nkt->nt", current, current))
        power = smoothing @ power  # float32 sparse product
        power /= np.maximum(power.max(0, keepdims=True), np.finfo(np.float32).tiny)
        maps[w0:w1] = power.reshape(n, w1 - w0, window).mean(2).T
    return maps


def activation_maps(head, eeg, method, window=config.WINDOW, *, noise_cov=None,
                    lambda2=LAMBDA2):
    """One activation map per window of a recording, for one solver.

    Parameters
    ----------
    head : HeadModel
    eeg : ndarray, shape (64, n_times)
        Average-referenced EEG (channel order of ``head.info``).
    method : str
        One of :data:`SOLVERS`.
    window : int
        Samples per window (50).
    noise_cov : mne.Covariance | None
        White by default (the simulator's noise).
    lambda2 : float
        Regularisation, > 0.

    Returns
    -------
    maps : ndarray, shape (n_windows, N)
        Final activation coefficients in [0, 1].
    """
    _check_method(method)
    check_lambda2(lambda2)
    eeg = _check_eeg(eeg, window)
    kernel = inverse_kernel(head, method, noise_cov=noise_cov, lambda2=lambda2)
    return maps_from_kernel(kernel, eeg, smoothing_matrix(head), window)
