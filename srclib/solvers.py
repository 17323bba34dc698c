"""The nine classical inverse solvers (paper section II.D).

Every solver here is linear: it is a kernel ``K`` (3 components per dipole by
64 channels) that turns one sample of average-referenced EEG into a current
estimate at every dipole, computed on the *inverse* forward operator
(OpenMEEG), never on the one that simulated the data.

* ``MNE``, ``dSPM``, ``sLORETA``, ``eLORETA`` come from MNE-Python's
  :mod:`mne.minimum_norm` with free orientations (``loose=1``) and no depth
  weighting (Hamalainen & Ilmoniemi 1994; Dale et al. 2000; Pascual-Marqui
  2002, 2007). sLORETA is MNE-Python's, whose standardisation divides the
  three components of a dipole by one number; the exact 3 x 3 block
  standardisation of Pascual-Marqui (2002) is available as the extra methods
  ``sLORETA_3x3`` and ``sLORETA_depthw_3x3`` (:data:`EXTRA_SOLVERS`), which
  are not among the paper's nine.
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
The kernels are normally computed on the inverse forward; ``forward=
"simulation"`` computes them on the forward that made the data (the "inverse
crime", a control for what a perfect head model would give).

Solver choices are made on simulations other than the test regions:
:func:`single_dipole_experiment` (noiseless single dipoles) and
:func:`random_patch_experiment` (random simulated regions).

Post-processing (:func:`activation_maps`), as in the paper: the norm of the
three components per dipole and sample, a mild spatial smoothing (each
dipole averaged half-and-half with the mean of its neighbours), each sample
scaled to [0, 1] by its maximum, and the mean over each 50-sample window.
"""

import mne
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh, splu

from . import config, metrics, simulation
from .check import check_int, check_lambda2, check_number, check_option, check_radius, check_snr

#: The nine solvers, named as in the paper's tables.
SOLVERS = (
    "MNE", "dSPM", "sLORETA", "MNE_depthw", "dSPM_depthw", "sLORETA_depthw",
    "eLORETA", "LORETA", "LAURA",
)

#: sLORETA with the exact 3 x 3 standardisation: shown beside the tables' sLORETA, not in them.
EXTRA_SOLVERS = ("sLORETA_3x3", "sLORETA_depthw_3x3")

#: Every method name :func:`inverse_kernel` and :func:`activation_maps` accept.
METHODS = SOLVERS + EXTRA_SOLVERS

#: Forward operators a kernel can be computed on.
FORWARDS = ("inverse", "simulation")

#: Regularisation (MNE-Python's convention: 1 / SNR^2 with SNR = 3).
LAMBDA2 = 1.0 / 9.0

#: Ridge of the LORETA and LAURA penalties, as a fraction of the smallest
#: non-zero eigenvalue of ``B^T B`` (see :func:`ridge_value`). At 1, no
#: non-constant current's prior variance drops by more than half, and constant
#: currents (free under the penalty) get the variance of the smoothest
#: non-constant one. Chosen on single-dipole and random-patch simulations
#: among the ridges that keep the prior (at most 1); see the notebook on the
#: classical solvers.
RIDGE = 1.0

_MNE_METHODS = {
    "MNE": ("MNE", 1.0, None), "dSPM": ("dSPM", 1.0, None),
    "sLORETA": ("sLORETA", 1.0, None), "eLORETA": ("eLORETA", 1.0, None),
    "MNE_depthw": ("MNE", 0.2, 0.8), "dSPM_depthw": ("dSPM", 0.2, 0.8),
    "sLORETA_depthw": ("sLORETA", 0.2, 0.8),
}
_SLORETA_3X3 = {"sLORETA_3x3": (1.0, None), "sLORETA_depthw_3x3": (0.2, 0.8)}


def _check_method(method):
    return check_option("method", method, METHODS)


def _forward(head, forward):
    """The forward operator (mne.Forward) named ``forward``."""
    check_option("forward", forward, FORWARDS)
    return head.fwd_inverse if forward == "inverse" else head.fwd_simulation


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


def inverse_kernel(head, method, *, forward="inverse", noise_cov=None, lambda2=LAMBDA2,
                   ridge=RIDGE):
    """Linear inverse kernel of one solver.

    Parameters
    ----------
    head : HeadModel
    method : str
        One of :data:`METHODS` (the nine :data:`SOLVERS` or an extra one).
    forward : ``"inverse"`` | ``"simulation"``
        Forward operator the kernel is computed on: the inverse one (always,
        in the Results) or the one that simulated the data (a control).
    noise_cov : mne.Covariance | None
        Defaults to :func:`noise_covariance` (white).
    lambda2 : float
        Regularisation, > 0 (see :func:`~srclib.check.check_lambda2`).
    ridge : float
        LORETA and LAURA only: ridge as a fraction of the penalty's smallest
        non-zero eigenvalue (:func:`ridge_value`).

    Returns
    -------
    kernel : ndarray, shape (N, 3, 64)
        Current estimate (3 components) at every dipole per unit of each
        channel; it includes the average reference.
    """
    method = _check_method(method)
    fwd = _forward(head, forward)
    lambda2 = check_lambda2(lambda2)
    noise_cov = noise_cov if noise_cov is not None else noise_covariance(head.info)
    if method in _MNE_METHODS:
        return _mne_kernel(head.info, fwd, noise_cov, lambda2, *_MNE_METHODS[method])[0]
    if method in _SLORETA_3X3:
        return sloreta_kernel(head, noise_cov, lambda2, *_SLORETA_3X3[method], forward=forward)
    return weighted_minimum_norm_kernel(head, weight_operator(head, method), noise_cov, lambda2,
                                        forward=forward, ridge=ridge)


def _mne_kernel(info, fwd, noise_cov, lambda2, method, loose, depth):
    """MNE-Python's kernel, read off by applying the operator to unit vectors.

    Returns the kernel (N, 3, 64), components along the head x, y, z axes,
    and the inverse operator.
    """
    loose_arg = 1.0 if loose == 1.0 else dict(surface=loose, discrete=1.0)
    inv = mne.minimum_norm.make_inverse_operator(
        info, fwd, noise_cov, loose=loose_arg, depth=depth, verbose="error"
    )
    n_ch = len(info["ch_names"])
    probe = mne.EvokedArray(np.eye(n_ch), info, tmin=0.0, nave=1, verbose="error")
    stc = mne.minimum_norm.apply_inverse(probe, inv, lambda2, method, pick_ori="vector",
                                         verbose="error")
    return np.asarray(stc.data), inv  # (N, 3, 64)


def sloreta_kernel(head, noise_cov, lambda2=LAMBDA2, loose=1.0, depth=None, *,
                   forward="inverse"):
    """sLORETA with the 3 x 3 standardisation of Pascual-Marqui (2002).

    The minimum-norm estimate ``j_i = K_i x`` at each dipole is standardised
    by its variance under the model, ``V_i = (K G)_ii R_i`` (``R_i`` the 3 x 3
    source prior, which carries the depth weighting and the orientation
    prior), giving ``V_i^-1/2 K_i``. This block form localises a single
    noiseless dipole exactly, for any regularisation and prior. MNE-Python's
    sLORETA (the methods ``sLORETA`` and ``sLORETA_depthw`` of
    :data:`SOLVERS`) divides the three components by one number per dipole,
    the square root of the trace of ``V_i``, which keeps that property
    exactly only for fixed orientations.

    Parameters
    ----------
    head : HeadModel
    noise_cov : mne.Covariance
    lambda2 : float
    loose : float
        Orientation prior on the cortex (1 = free).
    depth : float | None
        Depth-weighting exponent.
    forward : ``"inverse"`` | ``"simulation"``

    Returns
    -------
    kernel : ndarray, shape (N, 3, 64)
    """
    fwd = _forward(head, forward)
    kernel, inv = _mne_kernel(head.info, fwd, noise_cov, lambda2, "MNE", loose, depth)
    n = kernel.shape[0]
    gain = fwd["sol"]["data"].reshape(-1, n, 3)  # head x, y, z
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


def neighbour_factor(head):
    """LAURA's factor ``N_max / N_i``, with ``N_max`` taken per compartment.

    In the original LAURA on a regular grid (Grave de Peralta Menendez et al.
    2001, 2004), ``N_i`` is the number of neighbours of point ``i`` and
    ``N_max`` the full neighbourhood of the grid: the factor lifts points at
    the edge of the solution space, whose local average rests on fewer
    neighbours. A mixed source space holds two lattices with different full
    neighbourhoods (a cortical triangle mesh, about 6 neighbours; the deep
    26-neighbour grid), so ``N_max`` is each compartment's own largest
    neighbourhood: the factor compares a dipole with the full neighbourhood of
    its own lattice, and an interior dipole has factor 1 in either
    compartment. (One ``N_max`` over the whole space would weight every
    cortical row about four times as much as a deep one, a bias by mesh type
    that LAURA does not contain.)

    Returns
    -------
    factor : ndarray, shape (N,)
        At least 1.
    """
    degree = np.diff(head.adjacency.tocsr().indptr)
    if np.any(degree == 0):
        raise ValueError(f"adjacency must give every dipole a neighbour; "
                         f"{int((degree == 0).sum())} have none")
    compartment = np.asarray(head.compartment)
    n_max = np.empty(len(degree))
    for name in np.unique(compartment):
        inside = compartment == name
        n_max[inside] = degree[inside].max()
    return n_max / degree


def laura_operator(head, exponent=2.0):
    """LAURA's local autoregressive-average operator.

    Row i is ``f_i (e_i - sum_k w_ik e_k)`` over the neighbours k of dipole
    i, with weights proportional to ``d_ik^-exponent`` (the decay of a dipolar
    field; exponent 2 as in the original) and normalised to sum to one, so
    that the operator vanishes exactly where the current is the local
    distance-weighted average of its neighbours. ``f_i = N_max / N_i`` is the
    original's edge factor with ``N_max`` taken per compartment
    (:func:`neighbour_factor`). (The original writes the unnormalised weights
    ``d_ik^-e`` on a regular grid in grid units; normalising keeps the
    averaging property on our irregular source space.)
    """
    adj = head.adjacency.tocoo()
    d = np.linalg.norm(head.positions[adj.row] - head.positions[adj.col], axis=1)
    w = sparse.csr_matrix((d ** -exponent, (adj.row, adj.col)), shape=adj.shape)
    w = sparse.diags(1.0 / np.asarray(w.sum(1)).ravel()) @ w
    scale = sparse.diags(neighbour_factor(head))
    return (scale @ (sparse.identity(head.n_dipoles) - w)).tocsc()


def weight_operator(head, method):
    """The sparse operator ``B`` whose penalty ``|B Omega j|^2`` defines the solver."""
    if method == "LORETA":
        return laplacian_operator(head)
    if method == "LAURA":
        return laura_operator(head)
    raise ValueError(f"method must be 'LORETA' or 'LAURA', got {method!r}")


def penalty_spectrum(operator, k=50):
    """The ``k`` smallest eigenvalues of ``B^T B`` (sparse shift-invert).

    ``B`` (LORETA's Laplacian, LAURA's operator) vanishes on currents that
    are constant over a connected part of the source space, so ``B^T B`` has
    one zero eigenvalue per connected component of the adjacency; the next
    ones belong to the smoothest non-constant currents.

    Parameters
    ----------
    operator : scipy.sparse matrix, shape (N, N)
    k : int
        Number of eigenvalues (fewer than N).

    Returns
    -------
    eigenvalues : ndarray, shape (k,)
        Increasing; the zero ones are returned as computed (about 1e-12 of
        the largest diagonal entry).
    """
    btb = (operator.T @ operator).tocsc()
    k = check_int("k", k, 1, btb.shape[0] - 2)
    shift = 1e-9 * btb.diagonal().max()
    vals = eigsh(btb, k=k, sigma=-shift, which="LM", return_eigenvectors=False)
    return np.sort(vals)


def ridge_value(operator, fraction=RIDGE):
    """Absolute ridge of a penalty: ``fraction`` times its smallest non-zero eigenvalue.

    ``B^T B`` is singular (constant currents cost nothing), so the solvers
    invert ``B^T B + ridge I``. A ridge well below the smallest non-zero
    eigenvalue keeps the prior of every non-constant current as the penalty
    defines it (its variance ``1 / (lambda + ridge)`` ordered and scaled as
    ``1 / lambda``) and only bounds the variance of the constant ones; a
    ridge above it flattens the prior of every smoother mode.

    Parameters
    ----------
    operator : scipy.sparse matrix, shape (N, N)
    fraction : float
        Positive.

    Returns
    -------
    ridge : float
    """
    fraction = check_number("ridge", fraction, 0.0, open_minimum=True)
    adj = (abs(operator) + abs(operator.T)) > 0
    n_zero = connected_components(adj, directed=False)[0]
    vals = penalty_spectrum(operator, n_zero + 1)
    return fraction * vals[n_zero]


def _referenced_leadfield(fwd, n_channels):
    """Leadfield (64, N, 3) of a forward, average-referenced, head coordinates."""
    gain = fwd["sol"]["data"].reshape(n_channels, -1, 3)
    return gain - gain.mean(0)


def weighted_minimum_norm_kernel(head, operator, noise_cov, lambda2=LAMBDA2, *,
                                 forward="inverse", ridge=RIDGE):
    """Kernel of ``min |x - G j|^2_C + lambda |B Omega j|^2`` (LORETA, LAURA).

    With ``W = Omega (B^T B + r I) Omega`` applied to each of the three
    current components (``Omega`` the column norms of ``G``, the usual depth
    compensation, and ``r`` the ridge of :func:`ridge_value`), the solution
    is ``K = W^-1 G^T (G W^-1 G^T + lambda2' C)^+``. ``W^-1 G^T`` comes from
    one sparse LU factorisation of ``B^T B + r I`` (N x N) with 3 x 64
    right-hand sides: no dense N x N matrix is formed. The data are whitened
    by ``C`` (in the 63-dimensional average-referenced space) and
    ``lambda2' = lambda2 trace(G W^-1 G^T) / 63``, as MNE-Python scales its
    regularisation.

    Parameters
    ----------
    head : HeadModel
    operator : scipy.sparse matrix, shape (N, N)
    noise_cov : mne.Covariance
    lambda2 : float
    forward : ``"inverse"`` | ``"simulation"``
    ridge : float
        Fraction of the smallest non-zero eigenvalue of ``B^T B``.

    Returns
    -------
    kernel : ndarray, shape (N, 3, 64)
    """
    gain = _referenced_leadfield(_forward(head, forward), len(head.info["ch_names"]))
    n_ch, n = gain.shape[:2]
    whitener, _ = mne.cov.compute_whitener(noise_cov, head.info, verbose="error")
    g = (whitener @ gain.reshape(n_ch, -1)).reshape(-1, n, 3)
    omega = np.sqrt((g**2).sum(axis=(0, 2)))  # column norm per dipole
    btb = (operator.T @ operator).tocsc()
    lu = splu((btb + ridge_value(operator, ridge) * sparse.identity(n)).tocsc())
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


def maps_from_kernel(kernel, eeg, smoothing, window=config.WINDOW, block=4):
    """Post-process a kernel's source estimates into one map per window.

    Parameters
    ----------
    kernel : ndarray, shape (N, 3, 64)
    eeg : ndarray, shape (64, n_times)
        Trailing samples that do not fill a window are dropped.
    smoothing : scipy.sparse matrix, shape (N, N)
    window : int
    block : int
        Windows processed at a time. Small blocks keep the source estimates
        of a block in the processor's cache, which is faster than large ones
        (``make bench``, ``solver_maps``, times blocks of 4 and of 40).

    Returns
    -------
    maps : ndarray, shape (n_windows, N)
        In [0, 1].
    """
    return maps_from_kernels({"kernel": kernel}, eeg, smoothing, window, block)["kernel"]


def scaled_kernels(kernels, rtol=1e-4):
    """Find the kernels that are another kernel scaled per dipole.

    dSPM and sLORETA (the scalar standardisation) are MNE's kernel with
    every dipole's three rows divided by one number, so their source
    amplitudes are MNE's times a number per dipole, and so for their
    depth-weighted versions. :func:`maps_from_kernels` then computes the
    amplitudes once per group. The relation is checked on the kernels
    themselves, not assumed from their names.

    Parameters
    ----------
    kernels : dict of str to ndarray, shape (N, 3, C)
    rtol : float
        Largest relative difference, per dipole, between a kernel and its
        base scaled.

    Returns
    -------
    bases : dict of str to (str, ndarray of shape (N,))
        For each kernel, the kernel it is computed from (itself for a base)
        and the non-negative scale per dipole.
    """
    bases, norms = {}, {}
    for name, k in kernels.items():
        k = np.asarray(k)
        norms[name] = np.sqrt((k.reshape(len(k), -1) ** 2).sum(1))
        bases[name] = (name, np.ones(len(k)))
        for base, (of, _) in list(bases.items()):
            if of != base or base == name or np.shape(kernels[base]) != k.shape:
                continue
            scale = norms[name] / np.maximum(norms[base], np.finfo(float).tiny)
            # The first dipoles rule most pairs out; only then all of them.
            if all(_scaled(k[part], kernels[base][part], scale[part], norms[name][part], rtol)
                   for part in (slice(0, 64), slice(None))):
                bases[name] = (base, scale)
                break
    return bases


def _scaled(k, base, scale, norm, rtol):
    """Whether ``k`` is ``base`` times ``scale`` per dipole, to ``rtol``."""
    residual = np.sqrt(((k - scale[:, None, None] * base).reshape(len(k), -1) ** 2).sum(1))
    return bool(np.all(residual <= rtol * np.maximum(norm, np.finfo(float).tiny)))


def maps_from_kernels(kernels, eeg, smoothing, window=config.WINDOW, block=4, bases=None):
    """:func:`maps_from_kernel` for several kernels at once.

    Kernels that are another scaled per dipole (:func:`scaled_kernels`)
    share its source estimates: the kernel-by-data product, most of the
    cost, is done once per group. The maps are those of
    :func:`maps_from_kernel` up to rounding.

    Parameters
    ----------
    kernels : dict of str to ndarray, shape (N, 3, 64)
    eeg, smoothing, window, block
        As for :func:`maps_from_kernel`.
    bases : dict | None
        :func:`scaled_kernels` of ``kernels``, for callers that pass the
        same kernels many times; found here if None.

    Returns
    -------
    maps : dict of str to ndarray, shape (n_windows, N)
    """
    if not kernels:
        return {}
    bases = scaled_kernels(kernels) if bases is None else bases
    n = next(iter(kernels.values())).shape[0]
    flat = {b: np.ascontiguousarray(np.reshape(kernels[b], (-1, np.shape(kernels[b])[-1])),
                                    np.float32)
            for b in {of for of, _ in bases.values()}}
    # A method's scale per dipole folded into its smoothing: S (s * a) = (S diag(s)) a.
    smoothers = {m: (smoothing @ sparse.diags(scale)).astype(np.float32).tocsr()
                 for m, (_, scale) in bases.items()}
    n_windows = eeg.shape[1] // window
    maps = {m: np.empty((n_windows, n)) for m in kernels}
    for w0 in range(0, n_windows, block):
        w1 = min(w0 + block, n_windows)
        x = np.asarray(eeg[:, w0 * window : w1 * window], np.float32)
        for base, k in flat.items():
            current = (k @ x).reshape(n, 3, -1)
            amplitude = np.sqrt(np.einsum("nkt,nkt->nt", current, current))
            for m, (of, _) in bases.items():
                if of == base:
                    power = smoothers[m] @ amplitude  # float32 sparse product
                    # Each sample divided by its peak, then averaged over its
                    # window: one matrix-vector product per window.
                    weight = 1.0 / np.maximum(power.max(0), np.finfo(np.float32).tiny)
                    for w in range(w1 - w0):
                        t = slice(w * window, (w + 1) * window)
                        maps[m][w0 + w] = power[:, t] @ weight[t] / window
    return maps


def activation_maps(head, eeg, method, window=config.WINDOW, *, forward="inverse",
                    noise_cov=None, lambda2=LAMBDA2):
    """One activation map per window of a recording, for one solver.

    Parameters
    ----------
    head : HeadModel
    eeg : ndarray, shape (64, n_times)
        Average-referenced EEG (channel order of ``head.info``).
    method : str
        One of :data:`METHODS` (the nine :data:`SOLVERS` or an extra one).
    window : int
        Samples per window (50).
    forward : ``"inverse"`` | ``"simulation"``
        Forward operator the solver inverts: the inverse one, as in the
        paper, or the one that simulated the data (the inverse crime: what
        the solver would do with a perfect head model).
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
    kernel = inverse_kernel(head, method, forward=forward, noise_cov=noise_cov, lambda2=lambda2)
    return maps_from_kernel(kernel, eeg, smoothing_matrix(head), window)


# --------------------------------------------------------------------------
# Experiments on which the solver choices are made
# --------------------------------------------------------------------------


def _kernels(head, methods, kernels, forward):
    """Named kernels: those of ``methods`` on ``forward``, then the given ones."""
    if isinstance(methods, str):
        raise ValueError(f"methods must be a list of method names, got {methods!r}")
    out = {m: inverse_kernel(head, m, forward=forward) for m in methods}
    out.update(kernels or {})
    if not out:
        raise ValueError("methods and kernels must name at least one method, got none")
    return out


def _test_dipoles(head, n_dipoles, rng):
    """Half cortical, half deep dipoles drawn without replacement."""
    half = check_int("n_dipoles", n_dipoles, 2) // 2
    pools = (np.flatnonzero(head.is_cortical), np.flatnonzero(~head.is_cortical))
    return np.concatenate([rng.choice(p, min(half, len(p)), replace=False) for p in pools])


def single_dipole_experiment(head, methods=SOLVERS, *, n_dipoles=200, seed=11,
                             data="inverse", forward="inverse", kernels=None):
    """Peak localisation error of each method for single noiseless dipoles.

    Each test dipole (half cortical along the surface normal, half deep in
    a random direction) makes one average-referenced scalp pattern through
    the ``data`` forward; each kernel turns it into a current estimate, and
    the error is the distance from the dipole of largest current norm to the
    test dipole (no smoothing or scaling: the kernel alone).

    Parameters
    ----------
    head : HeadModel
    methods : sequence of str
        Names from :data:`METHODS`, computed on the ``forward`` operator.
    n_dipoles : int
        Test dipoles (half per compartment, capped by the compartment's size).
    seed : int
    data : ``"inverse"`` | ``"simulation"``
        Forward that makes the scalp patterns. ``data == forward`` is the
        inverse crime (the most favourable case for every solver).
    forward : ``"inverse"`` | ``"simulation"``
        Forward the kernels of ``methods`` are computed on.
    kernels : dict of str to ndarray (N, 3, 64) | None
        Further kernels to test under their own names (e.g. another ridge).

    Returns
    -------
    errors : pandas.DataFrame
        One row per test dipole: ``dipole``, ``compartment`` (``"cortex"`` |
        ``"subcortical"``), ``depth_mm`` and one column of peak errors (mm)
        per method.
    """
    check_option("data", data, FORWARDS)
    kernels = _kernels(head, methods, kernels, forward)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    test = _test_dipoles(head, n_dipoles, rng)
    orient = np.array([head.normals[i] if head.is_cortical[i] else simulation.random_orientation(rng)
                       for i in test])
    x = np.einsum("cnk,nk->cn", head.leadfield(data, reference="average")[:, test], orient)
    table = pd.DataFrame({"dipole": test, "compartment": head.compartment[test],
                          "depth_mm": 1000 * head.depth[test]})
    for name, kernel in kernels.items():
        power = np.linalg.norm(np.einsum("nkc,ct->nkt", kernel, x), axis=1)
        table[name] = 1000 * np.linalg.norm(head.positions[power.argmax(0)]
                                            - head.positions[test], axis=1)
    return table


def random_patch_experiment(head, methods=SOLVERS, *, n_patches=40, seed=12,
                            radius_range_mm=(20.0, 60.0), snr_db=10.0, forward="inverse",
                            kernels=None):
    """The six metrics of each method on random simulated regions.

    Each patch has a random centre (half cortical, half deep), a radius
    uniform in ``radius_range_mm`` and the profile's coefficient shape, and
    is simulated literally (:func:`srclib.simulation.simulate`: AR series in
    every dipole, synchronisation, the simulation forward, sensor noise at
    ``snr_db``) for one 50-sample window; each method's map is post-processed
    as in the Results (:func:`maps_from_kernel`) and scored with
    :func:`srclib.metrics.evaluate`. None of it depends on the test regions
    A-D.

    Parameters
    ----------
    head : HeadModel
    methods : sequence of str
        Names from :data:`METHODS`, computed on the ``forward`` operator.
    n_patches : int
    seed : int
    radius_range_mm : (float, float)
    snr_db : float
    forward : ``"inverse"`` | ``"simulation"``
    kernels : dict of str to ndarray (N, 3, 64) | None
        Further kernels under their own names.

    Returns
    -------
    scores : pandas.DataFrame
        One row per patch and method: ``patch``, ``compartment``,
        ``radius_mm``, ``method`` and the six metrics.
    """
    low, high = (check_radius(r) for r in radius_range_mm)
    if low > high:
        raise ValueError(f"radius_range_mm must be increasing, got {radius_range_mm!r}")
    snr_db = check_snr(snr_db)
    kernels = _kernels(head, methods, kernels, forward)
    bases = scaled_kernels(kernels)
    smoothing = smoothing_matrix(head)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    centres = _test_dipoles(head, n_patches, rng)
    rows = []
    for patch, center in enumerate(centres):
        radius = rng.uniform(low, high)
        c = simulation.grow_region(head, int(center), radius)
        eeg = simulation.simulate(head, c, int(center), config.WINDOW, snr_db, rng)
        found = maps_from_kernels(kernels, eeg, smoothing, bases=bases)
        maps = np.stack([found[m][0] for m in kernels])
        scores = metrics.evaluate_windows(maps, c, int(center), head.positions)
        scores.insert(0, "method", list(kernels))
        scores.insert(0, "radius_mm", radius)
        scores.insert(0, "compartment", head.compartment[center])
        scores.insert(0, "patch", patch)
        rows.append(scores)
    return pd.concat(rows, ignore_index=True)
