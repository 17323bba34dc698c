"""The simulator (paper section II.B).

A simulation has four steps, each a function here:

1. *spatial module* (:func:`grow_region`): a region grows from a centre dipole
   over the source-space adjacency, within the centre's compartment and a
   radius; each member gets a coefficient ``c`` that falls from 1 at the
   centre with distance (Gaussian, sigma = radius / 2, 0 beyond the radius);
2. *temporal module* (:func:`ar_series`): every dipole, active or not, carries
   its own stationary autoregressive (AR) series of unit variance;
3. *synchronisation* (:func:`synchronize`):
   ``s_i <- c_i s_center + (1 - c_i) s_i``;
4. *scalp projection* (:func:`simulate`): through the simulation forward
   operator, cortical dipoles along their normal, deep dipoles along one random
   direction drawn per simulation, average reference, and white Gaussian
   sensor noise at a requested SNR.

:func:`simulate` carries out these steps literally, one series per dipole.
:func:`training_set` draws the same EEG distribution without materialising
the 9751 background series of every window (see :func:`sensor_background`),
which is what makes 10,000 simulations take seconds rather than minutes.
"""

from concurrent.futures import ProcessPoolExecutor
import multiprocessing
import os
from pathlib import Path
import time

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order
from tqdm.auto import tqdm
import yaml

from . import cache, config
from .headmodel import N_CHANNELS, mni152_to_fsaverage

#: Largest accepted region radius (mm); larger would cover the whole brain.
MAX_RADIUS_MM = 200.0

#: Pole moduli of the random AR filters (stable: strictly inside the unit circle).
POLE_MODULUS = (0.5, 0.95)

#: Peak frequencies of the complex pole pairs (Hz), the classical EEG range.
PEAK_FREQUENCY_HZ = (1.0, 45.0)

_CACHE_VERSION = 1


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


def _check_center(head, center):
    if isinstance(center, (bool, np.bool_)) or not isinstance(center, (int, np.integer)):
        raise ValueError(f"center must be an integer dipole index, got {center!r}")
    if not 0 <= center < head.n_dipoles:
        raise ValueError(f"center must lie in [0, {head.n_dipoles - 1}], got {center}")
    return int(center)


def _check_radius(radius_mm):
    radius_mm = float(radius_mm)
    if not 0 < radius_mm <= MAX_RADIUS_MM:
        raise ValueError(f"radius_mm must be in (0, {MAX_RADIUS_MM:g}] mm, got {radius_mm}")
    return radius_mm


def _check_snr(snr_db):
    snr_db = float(snr_db)
    if not np.isfinite(snr_db) or not -40 <= snr_db <= 60:
        raise ValueError(f"snr_db must be a finite number in [-40, 60] dB, got {snr_db}")
    return snr_db


def _check_order(order, n_times=None):
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    if n_times is not None and n_times <= order:
        raise ValueError(
            f"n_times must exceed the AR order ({order}) to hold a series, got {n_times}"
        )


def _check_n_times(n_times):
    if isinstance(n_times, bool) or not isinstance(n_times, (int, np.integer)) or n_times < 1:
        raise ValueError(f"n_times must be a positive integer, got {n_times!r}")
    return int(n_times)


# --------------------------------------------------------------------------
# Spatial module
# --------------------------------------------------------------------------


def grow_region(head, center, radius_mm):
    """Grow an active region from a centre dipole (the spatial module).

    The region is the set of dipoles reached from ``center`` over the
    source-space adjacency without leaving the centre's compartment or the
    ball of radius ``radius_mm``: a connected cloud, as in the paper.

    Parameters
    ----------
    head : HeadModel
    center : int
        Index of the centre dipole.
    radius_mm : float
        Region radius in millimetres, in (0, 200].

    Returns
    -------
    c : ndarray, shape (N,)
        Spatial coefficients: ``exp(-d**2 / (2 sigma**2))`` with
        ``sigma = radius / 2`` inside the region (1 at the centre), 0 elsewhere.
    """
    center = _check_center(head, center)
    radius = _check_radius(radius_mm) / 1000.0
    diff = head.positions - head.positions[center]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    inside = (dist <= radius) & (head.is_cortical == head.is_cortical[center])
    region = _reachable(head, inside, center)
    c = np.zeros(head.n_dipoles)
    c[region] = np.exp(-0.5 * (dist[region] / (radius / 2.0)) ** 2)
    return c


def _reachable(head, allowed, start):
    """Dipoles reachable from ``start`` through ``allowed`` dipoles only (BFS)."""
    rows, cols = head.edges  # row-sorted, so the kept edges are too
    keep = allowed[rows] & allowed[cols]
    n = len(allowed)
    indptr = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=n))]
    sub = sparse.csr_matrix((np.ones(keep.sum(), np.int8), cols[keep], indptr), shape=(n, n))
    return breadth_first_order(sub, int(start), directed=False, return_predecessors=False)


# --------------------------------------------------------------------------
# Temporal module
# --------------------------------------------------------------------------


def ar_coefficients(n, rng, order=5, sfreq=config.SFREQ):
    """Draw ``n`` random stable AR filters.

    Each filter is built from its poles: ``order // 2`` complex-conjugate
    pairs with moduli uniform in :data:`POLE_MODULUS` and peak frequencies
    uniform in :data:`PEAK_FREQUENCY_HZ`, plus one real pole in [0, 0.9]
    when the order is odd. Poles inside the unit circle make every filter
    stable by construction.

    Parameters
    ----------
    n : int
        Number of filters.
    rng : numpy.random.Generator
    order : int
        AR order p.
    sfreq : float
        Sampling frequency (Hz) that maps peak frequencies to pole angles.

    Returns
    -------
    coefs : ndarray, shape (n, order)
        ``a`` such that ``y[t] = a[0] y[t-1] + ... + a[p-1] y[t-p] + e[t]``.
    """
    _check_order(order)
    poly = np.ones((n, 1))
    for _ in range(order // 2):
        r = rng.uniform(*POLE_MODULUS, n)
        theta = 2 * np.pi * rng.uniform(*PEAK_FREQUENCY_HZ, n) / sfreq
        quad = np.stack([np.ones(n), -2 * r * np.cos(theta), r**2], 1)
        poly = _polymul_rows(poly, quad)
    if order % 2:
        lin = np.stack([np.ones(n), -rng.uniform(0.0, 0.9, n)], 1)
        poly = _polymul_rows(poly, lin)
    return -poly[:, 1:]


def _polymul_rows(a, b):
    """Multiply polynomials row by row (coefficients in increasing lag)."""
    out = np.zeros((a.shape[0], a.shape[1] + b.shape[1] - 1))
    for j in range(b.shape[1]):
        out[:, j : j + a.shape[1]] += a * b[:, j : j + 1]
    return out


def ar_filter(innovations, coefs, initial=None):
    """Run the AR recursion along the last axis, one filter per row.

    A plain loop over time, vectorised over rows: every row may have its own
    coefficients, which rules out :func:`scipy.signal.lfilter` (one filter
    per call).

    Parameters
    ----------
    innovations : ndarray, shape (..., n_times)
    coefs : ndarray, shape (..., p)
        Broadcastable against ``innovations[..., 0]``.
    initial : ndarray, shape (..., p) | None
        Past values ``[y[-1], ..., y[-p]]``; zeros if None.

    Returns
    -------
    series : ndarray, shape (..., n_times)
    state : ndarray, shape (..., p)
        The last ``p`` values, most recent first, to continue the recursion.
    """
    e = np.ascontiguousarray(np.moveaxis(np.asarray(innovations, float), -1, 0))
    init = None if initial is None else np.moveaxis(np.asarray(initial), -1, 0)
    series, state = _ar_filter_time_major(e, np.moveaxis(coefs, -1, 0), init)
    return np.moveaxis(series, 0, -1), np.moveaxis(state, 0, -1)


def _ar_filter_time_major(e, coefs, initial=None):
    """:func:`ar_filter` on time-major arrays: e (T, ...), coefs and initial (p, ...).

    The innovations array is overwritten by the series and returned.
    """
    p = coefs.shape[0]
    rows = e.shape[1:]
    a = np.ascontiguousarray(np.broadcast_to(coefs, (p,) + rows))
    past = np.zeros((p,) + rows) if initial is None else np.array(initial, float)
    tmp = np.empty(rows)
    for t in range(e.shape[0]):
        cur = e[t]
        for k in range(p):
            prev = e[t - 1 - k] if t - 1 - k >= 0 else past[k - t]
            np.multiply(a[k], prev, out=tmp)
            cur += tmp
    n = e.shape[0]
    state = np.stack([e[n - 1 - k] if n - 1 - k >= 0 else past[k - n] for k in range(p)])
    return e, state


def ar_autocovariance(coefs, n_lags):
    """Autocovariance of AR processes driven by unit-variance white noise.

    Solves the Yule-Walker equations
    ``gamma(k) = sum_j a_j gamma(|k - j|) + delta(k)`` for lags 0..p, then
    extends them with the AR recursion.

    Parameters
    ----------
    coefs : ndarray, shape (n, p)
    n_lags : int

    Returns
    -------
    gamma : ndarray, shape (n, n_lags)
        ``gamma[:, 0]`` is the stationary variance.
    """
    coefs = np.asarray(coefs, float)
    n, p = coefs.shape
    system = np.broadcast_to(np.eye(p + 1), (n, p + 1, p + 1)).copy()
    for k in range(p + 1):
        for j in range(1, p + 1):
            system[:, k, abs(k - j)] -= coefs[:, j - 1]
    rhs = np.zeros((n, p + 1, 1))
    rhs[:, 0] = 1.0
    gamma = list(np.moveaxis(np.linalg.solve(system, rhs)[..., 0], -1, 0))
    for k in range(p + 1, n_lags):
        gamma.append(sum(coefs[:, j - 1] * gamma[k - j] for j in range(1, p + 1)))
    return np.stack(gamma[:n_lags], 1)


def ar_series(n_sources, n_times, rng, order=5, coefs=None):
    """Independent stationary AR series of unit variance, one per source.

    The recursion starts from a past drawn from the stationary distribution
    (Toeplitz covariance of the autocovariance), so no burn-in is needed and
    the first sample is already stationary. Series are scaled by their
    theoretical standard deviation, so the variance is one in expectation and
    the sample variance of a long series approaches one.

    Parameters
    ----------
    n_sources : int
    n_times : int
        Must exceed ``order``.
    rng : numpy.random.Generator
    order : int
        AR order p (5 in the paper's simulator).
    coefs : ndarray, shape (n_sources, p) | None
        AR coefficients; random stable filters (:func:`ar_coefficients`) if None.

    Returns
    -------
    series : ndarray, shape (n_sources, n_times)
    """
    _check_order(order, _check_n_times(n_times))
    if coefs is None:
        coefs = ar_coefficients(n_sources, rng, order)
    coefs = np.asarray(coefs, float)
    if coefs.shape != (n_sources, order):
        raise ValueError(f"coefs must have shape ({n_sources}, {order}), got {coefs.shape}")
    initial, scale = _stationary_start(coefs, rng)
    # Innovations are drawn time-major, so a series drawn in consecutive
    # chunks (as simulate() does) equals one drawn at once.
    innovations = rng.standard_normal((n_times, n_sources))
    series, _ = _ar_filter_time_major(innovations, coefs.T, initial.T)
    return series.T / scale[:, None]


def _stationary_start(coefs, rng, n_copies=None):
    """Draw a stationary past for each filter; return it and the process std.

    With ``n_copies``, draw that many independent pasts per filter
    (shape (n, n_copies, p)).
    """
    p = coefs.shape[1]
    gamma = ar_autocovariance(coefs, p)
    lags = np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    chol = np.linalg.cholesky(gamma[:, lags])
    shape = (coefs.shape[0], p) if n_copies is None else (coefs.shape[0], n_copies, p)
    z = rng.standard_normal(shape)
    if n_copies is None:
        initial = np.einsum("nij,nj->ni", chol, z)
    else:
        initial = np.einsum("nij,ncj->nci", chol, z)
    return initial, np.sqrt(gamma[:, 0])


# --------------------------------------------------------------------------
# Synchronisation
# --------------------------------------------------------------------------


def synchronize(series, c, center):
    """Blend every dipole's series with the centre's (the synchronisation step).

    ``s_i <- c_i * s_center + (1 - c_i) * s_i``; dipoles with ``c_i = 0`` are
    untouched and the centre (``c = 1``) keeps its own series.

    Parameters
    ----------
    series : ndarray, shape (N, n_times)
    c : ndarray, shape (N,)
        Spatial coefficients in [0, 1].
    center : int

    Returns
    -------
    series : ndarray, shape (N, n_times)
        A new array.
    """
    series = np.asarray(series)
    c = np.asarray(c, float)
    if series.ndim != 2 or c.shape != (series.shape[0],):
        raise ValueError(
            f"series must be (N, n_times) and c (N,), got {series.shape} and {c.shape}"
        )
    if not (np.all(c >= 0) and np.all(c <= 1)):
        raise ValueError("c must lie in [0, 1]")
    if not 0 <= center < len(c):
        raise ValueError(f"center must lie in [0, {len(c) - 1}], got {center}")
    out = series * (1.0 - c)[:, None]
    out += c[:, None] * series[center][None, :]
    return out


# --------------------------------------------------------------------------
# Scalp projection
# --------------------------------------------------------------------------


def random_orientation(rng):
    """A unit vector drawn uniformly on the sphere (orientation of deep dipoles)."""
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def dipole_gains(head, orientation, which="simulation"):
    """Scalp pattern of a unit source at every dipole.

    Parameters
    ----------
    head : HeadModel
    orientation : array-like, shape (3,)
        Direction of all deep dipoles (fsaverage axes); cortical dipoles point
        along their surface normal.
    which : ``"simulation"`` | ``"inverse"``
        Forward operator.

    Returns
    -------
    gains : ndarray, shape (64, N)
        Not re-referenced.
    """
    lf = head.leadfield(which)
    o = np.asarray(orientation, float)
    orient = np.where(head.is_cortical[:, None], head.normals, o[None, :])
    return np.einsum("cnk,nk->cn", lf, orient)


def average_reference(eeg):
    """Subtract the mean over channels (axis -2) from every sample."""
    return eeg - eeg.mean(axis=-2, keepdims=True)


def add_sensor_noise(eeg, snr_db, rng):
    """Add average-referenced white Gaussian noise at an exact SNR.

    ``SNR_dB = 10 log10(P_signal / P_noise)`` with powers taken as mean
    squares over channels and samples of the (average-referenced) arrays.

    Parameters
    ----------
    eeg : ndarray, shape (..., 64, n_times)
        Noiseless, average-referenced EEG; the SNR holds per leading index.
    snr_db : float | ndarray
        Requested SNR, broadcastable to ``eeg.shape[:-2]``.
    rng : numpy.random.Generator

    Returns
    -------
    noisy : ndarray
    noise_var : ndarray
        Per-channel variance of the white noise before referencing, the
        diagonal of the sensor noise covariance the inverse solvers use.
    """
    snr = np.asarray(snr_db, float)
    noise = average_reference(rng.standard_normal(eeg.shape))
    p_signal = np.mean(eeg**2, axis=(-2, -1))
    p_noise = np.mean(noise**2, axis=(-2, -1))
    scale = np.sqrt(p_signal / 10 ** (snr / 10) / p_noise)
    n_ch = eeg.shape[-2]
    noise_var = p_signal / 10 ** (snr / 10) * n_ch / (n_ch - 1)
    return eeg + noise * scale[..., None, None], noise_var


def achieved_snr_db(clean, noisy):
    """SNR (dB) of ``noisy`` with respect to its noiseless version ``clean``."""
    noise = noisy - clean
    return 10 * np.log10(np.mean(clean**2, axis=(-2, -1)) / np.mean(noise**2, axis=(-2, -1)))


def simulate(head, c, center, n_times, snr_db, rng, *, order=5, coefs=None,
             orientation=None, chunk=2500, return_details=False):
    """Simulate EEG literally: one AR series per dipole, synchronised, projected.

    Parameters
    ----------
    head : HeadModel
    c : ndarray, shape (N,)
        Spatial coefficients from :func:`grow_region`.
    center : int
        Centre dipole (``c[center]`` must be 1).
    n_times : int
        Number of samples (250 Hz).
    snr_db : float
        Sensor SNR in dB.
    rng : numpy.random.Generator
    order : int
        AR order.
    coefs : ndarray, shape (N, order) | None
        Per-dipole AR coefficients; drawn at random if None.
    orientation : array-like, shape (3,) | None
        Deep-dipole direction; random if None.
    chunk : int
        Samples simulated at a time (bounds memory for long recordings).
    return_details : bool
        Also return a dict with the clean EEG, the noise variance and the
        orientation.

    Returns
    -------
    eeg : ndarray, shape (64, n_times)
        Average-referenced EEG with sensor noise.
    details : dict
        Only if ``return_details``.
    """
    center = _check_center(head, center)
    n_times = _check_n_times(n_times)
    _check_order(order, n_times)
    snr_db = _check_snr(snr_db)
    c = np.asarray(c, float)
    if c.shape != (head.n_dipoles,) or not np.isclose(c[center], 1.0):
        raise ValueError("c must have one coefficient per dipole and equal 1 at the centre")
    if orientation is None:
        orientation = random_orientation(rng)
    if coefs is None:
        coefs = ar_coefficients(head.n_dipoles, rng, order)
    gains = dipole_gains(head, orientation)
    # gains @ synchronize(series, c, center), written so that no synchronised
    # copy of the (N, chunk) series is needed:
    background_gains = gains * (1.0 - c)
    region_gain = gains @ c
    state, scale = _stationary_start(coefs, rng)
    clean = np.empty((N_CHANNELS, n_times))
    state = state.T
    for start in range(0, n_times, chunk):
        stop = min(start + chunk, n_times)
        innovations = rng.standard_normal((stop - start, head.n_dipoles))
        series, state = _ar_filter_time_major(innovations, coefs.T, state)
        series /= scale  # (chunk, N), time-major
        clean[:, start:stop] = background_gains @ series.T + np.outer(region_gain, series[:, center])
    clean = average_reference(clean)
    eeg, noise_var = add_sensor_noise(clean, snr_db, rng)
    if return_details:
        return eeg, dict(clean=clean, noise_var=float(noise_var), orientation=np.asarray(orientation))
    return eeg


# --------------------------------------------------------------------------
# Fast sampler for the training set
# --------------------------------------------------------------------------


class FilterGroups:
    """Fixed partition of the dipoles into groups that share AR coefficients.

    In the training set every dipole still has its own series and its own
    innovations, but the dipoles are split (at random, once per training set)
    into ``n_filters`` groups, and each group draws fresh AR coefficients in
    every simulation. Within a group the summed scalp contribution of many
    independent, identically filtered series is a Gaussian process whose
    spatial covariance is the sum of the dipoles' gain outer products; this
    class precomputes those sums so that a simulation costs a few 64 x 64
    matrix operations instead of 9751 series.

    Parameters
    ----------
    head : HeadModel
    n_filters : int
        Number of groups K.
    rng : numpy.random.Generator
    """

    def __init__(self, head, n_filters, rng):
        if not 1 <= n_filters <= head.n_dipoles:
            raise ValueError(f"n_filters must be in [1, {head.n_dipoles}], got {n_filters}")
        self.n_filters = int(n_filters)
        self.group = rng.permutation(np.arange(head.n_dipoles) % n_filters)
        lf = head.leadfield("simulation")
        ctx = head.is_cortical
        # Per-dipole gains, one row per dipole: fast to gather for a region.
        self.gain_rows = np.zeros((head.n_dipoles, N_CHANNELS))
        self.gain_rows[ctx] = np.einsum("cnk,nk->nc", lf[:, ctx], head.normals[ctx])
        self.deep_rows = np.zeros((head.n_dipoles, 3, N_CHANNELS))
        self.deep_rows[~ctx] = np.transpose(lf[:, ~ctx], (1, 2, 0))
        self.is_cortical = ctx
        cortex_cov = np.zeros((n_filters, N_CHANNELS, N_CHANNELS))
        deep_cov = np.zeros((3, 3, n_filters, N_CHANNELS, N_CHANNELS))
        for k in range(n_filters):
            gk = self.gain_rows[ctx & (self.group == k)]
            cortex_cov[k] = gk.T @ gk
            lk = self.deep_rows[~ctx & (self.group == k)]
            deep_cov[:, :, k] = np.einsum("nac,nbd->abcd", lk, lk)
        self.cortex_cov = cortex_cov
        self._deep_cov = deep_cov.reshape(9, -1)

    def gains(self, index, orientation):
        """Scalp gains, shape (len(index), 64), of some dipoles for a deep orientation."""
        index = np.asarray(index)
        out = self.gain_rows[index]
        deep = ~self.is_cortical[index]
        out[deep] = np.einsum("a,nac->nc", orientation, self.deep_rows[index[deep]])
        return out

    def covariances(self, c, orientation):
        """Per-group spatial covariances ``sum_i (1 - c_i)^2 g_i g_i^T``.

        Parameters
        ----------
        c : list of ndarray, shape (N,)
            Spatial coefficients of each simulation.
        orientation : ndarray, shape (n, 3)
            Deep-dipole direction of each simulation.

        Returns
        -------
        cov : ndarray, shape (n, K, 64, 64)
        region_gain : ndarray, shape (n, 64)
            ``sum_i c_i g_i``, the scalp pattern of the centre's series.
        """
        n = len(c)
        outer = np.einsum("na,nb->nab", orientation, orientation).reshape(n, 9)
        cov = (outer @ self._deep_cov).reshape(n, self.n_filters, N_CHANNELS, N_CHANNELS)
        cov += self.cortex_cov
        region_gain = np.empty((n, N_CHANNELS))
        for j in range(n):
            region = np.flatnonzero(c[j])
            region = region[np.argsort(self.group[region], kind="stable")]
            bounds = np.searchsorted(self.group[region], np.arange(self.n_filters + 1))
            g = self.gains(region, orientation[j])
            region_gain[j] = c[j][region] @ g
            g *= np.sqrt(1.0 - (1.0 - c[j][region]) ** 2)[:, None]
            for k in range(self.n_filters):
                gk = g[bounds[k] : bounds[k + 1]]
                if len(gk):
                    cov[j, k] -= gk.T @ gk
        return cov, region_gain


def sensor_background(cov, coefs, n_times, rng):
    """Scalp activity of all non-centre dipoles, drawn in sensor space.

    For group k, ``sum_i a_i s_i(t)`` over independent unit-variance AR series
    with the same filter has the distribution of ``L_k w(t)``, where
    ``L_k L_k^T = cov[k]`` and ``w`` holds 64 independent copies of that AR
    series. This identity is exact for Gaussian innovations; it is checked
    against the literal :func:`simulate` in the test suite.

    Parameters
    ----------
    cov : ndarray, shape (n, K, 64, 64)
    coefs : ndarray, shape (n, K, p)
    n_times : int
    rng : numpy.random.Generator

    Returns
    -------
    eeg : ndarray, shape (n, 64, n_times)
        Not re-referenced.
    """
    n, k, p = coefs.shape
    flat = coefs.reshape(-1, p)
    initial, scale = _stationary_start(flat, rng, n_copies=N_CHANNELS)
    w, _ = _ar_filter_time_major(
        rng.standard_normal((n_times, n * k, N_CHANNELS)), flat.T[:, :, None],
        np.moveaxis(initial, -1, 0),
    )
    w = np.moveaxis(w / scale[:, None], 0, -1)  # (n * k, 64, n_times)
    jitter = 1e-10 * np.trace(cov, axis1=-2, axis2=-1)[..., None, None] / N_CHANNELS
    chol = np.linalg.cholesky(cov + jitter * np.eye(N_CHANNELS))
    return np.matmul(chol, w.reshape(n, k, N_CHANNELS, n_times)).sum(1)


def draw_simulation_parameters(head, n, rng, fraction_subcortical=0.5,
                               radius_range_mm=(5.0, 60.0), snr_range_db=(0.0, 20.0)):
    """Draw centres, radii, SNRs and deep orientations for ``n`` simulations.

    Returns
    -------
    params : dict of ndarray
        ``center`` (n,), ``radius_mm`` (n,), ``snr_db`` (n,),
        ``orientation`` (n, 3), ``subcortical`` (n,) bool.
    """
    if not 0 <= fraction_subcortical <= 1:
        raise ValueError(f"fraction_subcortical must be in [0, 1], got {fraction_subcortical}")
    lo, hi = radius_range_mm
    _check_radius(lo), _check_radius(hi)
    deep = np.zeros(n, bool)
    deep[rng.permutation(n)[: int(round(fraction_subcortical * n))]] = True
    cortex_idx = np.flatnonzero(head.is_cortical)
    deep_idx = np.flatnonzero(~head.is_cortical)
    center = np.where(deep, rng.choice(deep_idx, n), rng.choice(cortex_idx, n))
    orientation = rng.standard_normal((n, 3))
    orientation /= np.linalg.norm(orientation, axis=1, keepdims=True)
    return dict(
        center=center, radius_mm=rng.uniform(lo, hi, n),
        snr_db=rng.uniform(*snr_range_db, n), orientation=orientation, subcortical=deep,
    )


def training_set(head, n, rng, *, n_times=config.WINDOW, order=5, n_filters=8,
                 fraction_subcortical=0.5, radius_range_mm=(5.0, 60.0),
                 snr_range_db=(0.0, 20.0), batch=250, n_jobs=None, progress=True,
                 return_meta=False):
    """Simulate ``n`` training windows and their target coefficients.

    Every window has one region (centre in the cortex or the deep grey matter,
    radius uniform in ``radius_range_mm``), all dipoles carrying AR activity
    (AR coefficients shared within ``n_filters`` random dipole groups and
    redrawn per window, see :class:`FilterGroups`), a random deep-dipole
    orientation and an SNR uniform in ``snr_range_db``.

    Batches are simulated in ``n_jobs`` worker processes, each batch from its
    own seed drawn from ``rng``: the result does not depend on ``n_jobs``.

    Parameters
    ----------
    head : HeadModel
    n : int
        Number of windows.
    rng : numpy.random.Generator
    n_times : int
        Samples per window (50 = 0.2 s at 250 Hz).
    order, n_filters, fraction_subcortical, radius_range_mm, snr_range_db
        Simulator settings (see above).
    batch : int
        Windows simulated together.
    n_jobs : int | None
        Worker processes; None uses every core (at most 8), 1 runs in this process.
    progress : bool
        Show a progress bar.
    return_meta : bool
        Also return the drawn parameters (:func:`draw_simulation_parameters`).

    Returns
    -------
    X : ndarray, shape (n, 64, n_times), float32
        Average-referenced noisy EEG.
    Y : ndarray, shape (n, N), float32
        Spatial coefficients c of each window.
    meta : dict
        Only if ``return_meta``.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    _check_order(order, _check_n_times(n_times))
    meta = draw_simulation_parameters(
        head, n, rng, fraction_subcortical, radius_range_mm, snr_range_db
    )
    groups = FilterGroups(head, n_filters, rng)
    starts = range(0, n, batch)
    jobs = [(np.arange(s, min(s + batch, n)), seed)
            for s, seed in zip(starts, rng.integers(0, 2**63, len(starts)))]
    X = np.empty((n, N_CHANNELS, n_times), np.float32)
    Y = np.zeros((n, head.n_dipoles), np.float32)
    _WORKER_STATE.update(head=head, groups=groups, meta=meta, order=order, n_times=n_times)
    try:
        with _worker_pool(n_jobs) as run:
            for idx, x, rows, cols, vals in tqdm(
                run(_training_batch, jobs), desc="training set", unit="batch",
                total=len(jobs), disable=not progress,
            ):
                X[idx] = x
                Y[idx[rows], cols] = vals
    finally:
        _WORKER_STATE.clear()
    if return_meta:
        return X, Y, meta
    return X, Y


_WORKER_STATE = {}


def _training_batch(job):
    """Simulate one batch of training windows (runs in a worker process)."""
    idx, seed = job
    st = _WORKER_STATE
    head, groups, meta, order, n_times = (
        st["head"], st["groups"], st["meta"], st["order"], st["n_times"]
    )
    rng = np.random.default_rng(seed)
    c = [grow_region(head, int(meta["center"][i]), meta["radius_mm"][i]) for i in idx]
    cov, region_gain = groups.covariances(c, meta["orientation"][idx])
    k = groups.n_filters
    coefs = ar_coefficients(len(idx) * k, rng, order).reshape(len(idx), k, order)
    clean = sensor_background(cov, coefs, n_times, rng)
    centre_coefs = coefs[np.arange(len(idx)), groups.group[meta["center"][idx]]]
    centre = ar_series(len(idx), n_times, rng, order, centre_coefs)
    clean += region_gain[:, :, None] * centre[:, None, :]
    x, _ = add_sensor_noise(average_reference(clean), meta["snr_db"][idx], rng)
    rows, cols = np.nonzero(np.asarray(c))
    vals = np.asarray(c)[rows, cols].astype(np.float32)
    return idx, x.astype(np.float32), rows, cols, vals


class _worker_pool:
    """Map a function over jobs in order, serially or in forked workers.

    Workers are forked so that they share the parent's head model without
    pickling it; each is limited to one BLAS thread so that ``n_jobs``
    processes use ``n_jobs`` cores.
    """

    def __init__(self, n_jobs):
        if n_jobs is None:
            n_jobs = min(os.cpu_count() or 1, 8)
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be a positive integer or None, got {n_jobs}")
        if "fork" not in multiprocessing.get_all_start_methods():
            n_jobs = 1
        self.n_jobs = n_jobs
        self.pool = None

    def __enter__(self):
        if self.n_jobs == 1:
            return map
        self.pool = ProcessPoolExecutor(
            self.n_jobs, mp_context=multiprocessing.get_context("fork"),
            initializer=_single_blas_thread,
        )
        return self.pool.map

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        return False


def _single_blas_thread():
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


# --------------------------------------------------------------------------
# Cached training set
# --------------------------------------------------------------------------


def load_training_set(profile="paper", head=None, *, progress=True):
    """The profile's training set, simulated on first use and cached.

    Stored in ``data/<profile>/training/``: ``X.npy`` (n, 64, 50) float32,
    ``Y.npz`` (sparse coefficients), ``meta.npz`` (centres, radii, SNRs,
    orientations) and ``provenance.json`` with the parameter hash. A changed
    simulator parameter or head model gives another hash and a new set.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
        The profile's head model; loaded if None.
    progress : bool

    Returns
    -------
    X : ndarray, shape (n, 64, 50), float32
    Y : ndarray, shape (n, N), float32
    meta : dict of ndarray
    """
    from .headmodel import load_head_model

    params = config.get_params(profile, "simulation")
    head = head if head is not None else load_head_model(profile, progress=progress)
    folder = config.profile_dir(profile) / "training"
    key = training_set_key(profile, head)
    if not cache.is_valid(folder, key):
        t0 = time.perf_counter()
        X, Y, meta = training_set(
            head, params["n_train"], np.random.default_rng(params["train_seed"]),
            order=params["ar_order"], n_filters=params["n_filters"],
            fraction_subcortical=params["fraction_subcortical"],
            radius_range_mm=params["radius_range_mm"], snr_range_db=params["snr_range_db"],
            progress=progress, return_meta=True,
        )
        seconds = time.perf_counter() - t0
        with cache.ArtifactFolder(folder, key, dict(params=params, seconds=round(seconds, 1),
                                                    n=len(X), n_dipoles=head.n_dipoles)) as art:
            np.save(art.tmp / "X.npy", X)
            sparse.save_npz(art.tmp / "Y.npz", sparse.csr_matrix(Y))
            np.savez(art.tmp / "meta.npz", **meta)
        if progress:
            print(f"training set: {len(X)} windows in {seconds:.1f} s -> {folder}")
    X = np.load(folder / "X.npy")
    Y = sparse.load_npz(folder / "Y.npz").toarray()
    with np.load(folder / "meta.npz") as f:
        meta = {k: f[k] for k in f.files}
    return X, Y, meta


def training_set_key(profile, head):
    """Hash of everything the training set depends on."""
    return cache.params_key(dict(
        simulation=config.get_params(profile, "simulation"),
        head=head.provenance["key"], window=config.WINDOW, version=_CACHE_VERSION,
    ))


# --------------------------------------------------------------------------
# Region recordings (paper section III)
# --------------------------------------------------------------------------


def load_regions(path=None):
    """Read the test regions A-D from ``data/regions.yaml``."""
    path = Path(path) if path is not None else config.REPO_DATA / "regions.yaml"
    with open(path) as fid:
        return yaml.safe_load(fid)


def resolve_region(head, region="A", *, center_mni=None, radius_mm=None, compartment=None):
    """Turn a region name or a custom specification into a centre dipole.

    Parameters
    ----------
    head : HeadModel
    region : str
        ``"A"``-``"D"`` (from ``data/regions.yaml``), or any other name for a
        custom region, which then needs ``center_mni``, ``radius_mm`` and
        ``compartment``.
    center_mni : sequence of 3 float | None
        MNI152 coordinate (mm) of the centre; overrides the named region's.
    radius_mm : float | None
        Radius; overrides the named region's.
    compartment : ``"cortex"`` | ``"subcortical"`` | None
        Compartment of the centre dipole; overrides the named region's.

    Returns
    -------
    spec : dict
        ``name``, ``center`` (dipole index), ``radius_mm``, ``compartment``,
        ``center_mni`` (of the chosen dipole), ``structure``, ``description``.
    """
    regions = load_regions()
    if not isinstance(region, str) or not region:
        raise ValueError(f"region must be a non-empty string, got {region!r}")
    if region in regions:
        spec = dict(regions[region])
    elif center_mni is None:
        raise ValueError(
            f"region must be one of {sorted(regions)}, or a custom name given with "
            f"center_mni, radius_mm and compartment; got {region!r} without center_mni"
        )
    else:
        spec = dict(description=f"custom region {region}")
    for name, value in (("center_mni", center_mni), ("radius_mm", radius_mm),
                        ("compartment", compartment)):
        if value is not None:
            spec[name] = value
            spec.pop("structure", None) if name == "center_mni" else None
    for name in ("radius_mm", "compartment"):
        if spec.get(name) is None:
            raise ValueError(f"{name} is required for custom region {region!r}")
    if spec["compartment"] not in ("cortex", "subcortical"):
        raise ValueError(
            f"compartment must be 'cortex' or 'subcortical', got {spec['compartment']!r}"
        )
    radius = _check_radius(spec["radius_mm"])
    if spec.get("structure"):
        members = head.structure == spec["structure"]
        if not members.any():
            raise ValueError(f"structure {spec['structure']!r} has no dipoles in this head model")
        point = head.positions[members].mean(0)
    else:
        mni = spec.get("center_mni")
        if isinstance(mni, str):  # e.g. "[30, -20, 50]" from a papermill -p option
            mni = yaml.safe_load(mni)
        message = f"center_mni must be 3 finite MNI152 coordinates (mm), got {spec.get('center_mni')!r}"
        try:
            mni = np.asarray(mni, float)
        except (TypeError, ValueError):
            raise ValueError(message) from None
        if mni.shape != (3,) or not np.isfinite(mni).all():
            raise ValueError(message)
        point = mni152_to_fsaverage(mni)
    center = head.nearest_dipole(point, spec["compartment"])
    from .headmodel import fsaverage_to_mni152

    return dict(
        name=region, center=center, radius_mm=radius, compartment=spec["compartment"],
        center_mni=np.round(fsaverage_to_mni152(head.positions[center]), 1).tolist(),
        structure=str(head.structure[center]), description=spec.get("description", ""),
    )


def region_recording(head, region, duration_s=120.0, snr_db=10.0, seed=0, *,
                     order=5, return_details=False, **custom):
    """Simulate a continuous recording of one fixed region (the paper's test data).

    Every dipole keeps one AR filter for the whole recording (its own
    coefficients, as in :func:`simulate`); the deep-dipole orientation is
    drawn once.

    Parameters
    ----------
    head : HeadModel
    region : str
        ``"A"``-``"D"`` or a custom name (see :func:`resolve_region`).
    duration_s : float
        Length in seconds (120 in the paper: 600 windows of 50 samples).
    snr_db : float
        Sensor SNR of the whole recording.
    seed : int
        Seed of the recording.
    order : int
        AR order.
    return_details : bool
        Also return the resolved region and the noise variance.
    **custom
        ``center_mni``, ``radius_mm``, ``compartment`` for :func:`resolve_region`.

    Returns
    -------
    eeg : ndarray, shape (64, n_times)
    c : ndarray, shape (N,)
    center : int
    details : dict
        Only if ``return_details``: ``spec``, ``noise_var``, ``orientation``.
    """
    duration_s = float(duration_s)
    n_times = int(round(duration_s * config.SFREQ))
    if not np.isfinite(duration_s) or n_times < config.WINDOW:
        raise ValueError(
            f"duration_s must give at least one {config.WINDOW}-sample window, got {duration_s}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    snr_db = _check_snr(snr_db)
    spec = resolve_region(head, region, **custom)
    rng = np.random.default_rng(seed)
    c = grow_region(head, spec["center"], spec["radius_mm"])
    eeg, details = simulate(head, c, spec["center"], n_times, snr_db, rng, order=order,
                            return_details=True)
    if return_details:
        details = dict(spec=spec, noise_var=details["noise_var"], orientation=details["orientation"])
        return eeg, c, spec["center"], details
    return eeg, c, spec["center"]
