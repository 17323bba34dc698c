"""The fast training-set sampler and the cached training set (paper section II.B).

The paper trains on 10,000 simulations. Simulating each one literally
(:func:`srclib.simulation.simulate`: an AR series for each of the 9751
dipoles) costs about a second; this module draws the same distribution of
scalp EEG directly in sensor space (:class:`FilterGroups`,
:func:`sensor_background`), so that a training set takes seconds, and caches
it under ``data/<profile>/training/`` (:func:`load_training_set`).
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
import time

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import cache, config
from .check import check_n_times, check_order, check_radius
from .headmodel import N_CHANNELS
from .simulation import (_ar_filter_time_major, _stationary_start, add_sensor_noise,
                         ar_coefficients, ar_series, average_reference, grow_region)

_CACHE_VERSION = 1

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
    check_radius(lo), check_radius(hi)
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
    own seed drawn from ``rng``, and every batch does its linear algebra on
    one BLAS thread (in the workers and in this process alike, see
    :class:`_worker_pool`): on one machine the result is bitwise the same for
    every ``n_jobs``. On another processor it is equal to float32 rounding.

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
    check_order(order, check_n_times(n_times))
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
    processes use ``n_jobs`` cores. The serial path (``n_jobs=1``) runs its
    jobs on one BLAS thread too: a multi-threaded BLAS splits its sums in
    another order, which changes the last bits, so the same thread count in
    both paths is what makes the result independent of ``n_jobs``.
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
            return _map_single_blas_thread
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
    threadpool_limits(1)


def _map_single_blas_thread(func, jobs):
    """``map`` in this process, each call on one BLAS thread (as in the workers)."""
    for job in jobs:
        with threadpool_limits(1):
            result = func(job)
        yield result


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
    from .headmodel import head_for

    params = config.get_params(profile, "simulation")
    head = head_for(profile, head, progress=progress)
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
            print(f"training set: {len(X)} windows in {seconds:.1f} s -> "
                  f"{config.shown_path(folder)}")
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
