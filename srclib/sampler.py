"""The fast training-set sampler and the cached training set (paper section II.B).

The training windows are literal simulations (:func:`srclib.simulation.simulate`:
an AR series with its own filter for each of the 9751 dipoles), carried out
for a batch of windows at once (:class:`DipoleGains`, :func:`literal_batch`)
so that a window costs milliseconds instead of the literal function's tens of
milliseconds, in worker processes. The profile's training set is cached
under ``data/<profile>/training/`` (:func:`load_training_set`).
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
from .headmodel import N_CHANNELS, head_for
from .simulation import (_ar_filter_time_major, _stationary_start, add_sensor_noise,
                         ar_coefficients, ar_series, average_reference, check_profile_shape,
                         grow_region)
from .workers import die_with_parent

_CACHE_VERSION = 2  # 2: one AR filter per dipole (literal_batch)

# --------------------------------------------------------------------------
# Fast sampler for the training set
# --------------------------------------------------------------------------


class DipoleGains:
    """Scalp gains of every dipole, arranged for simulating many windows at once.

    The literal simulator (:func:`srclib.simulation.simulate`) projects one
    window at a time; here the cortical gains (along the surface normals) and
    the three gain columns of every deep dipole are kept as dense float32
    matrices, so that the scalp projection of a whole batch of windows is one
    matrix product per compartment, and a deep orientation drawn per window is
    applied afterwards.

    Parameters
    ----------
    head : HeadModel
    """

    def __init__(self, head):
        lf = head.leadfield("simulation")
        ctx = head.is_cortical
        self.n_dipoles = head.n_dipoles
        self.is_cortical = ctx
        self.cortex_index = np.flatnonzero(ctx)
        self.deep_index = np.flatnonzero(~ctx)
        # Per-dipole gains, one row per dipole: fast to gather for a region.
        self.gain_rows = np.zeros((head.n_dipoles, N_CHANNELS))
        self.gain_rows[ctx] = np.einsum("cnk,nk->nc", lf[:, ctx], head.normals[ctx])
        self.deep_rows = np.zeros((head.n_dipoles, 3, N_CHANNELS))
        self.deep_rows[~ctx] = np.transpose(lf[:, ~ctx], (1, 2, 0))
        # Matrices of the batched projection: (64, N_cortex) and (3 * 64, N_deep).
        self.cortex = np.ascontiguousarray(self.gain_rows[ctx].T, np.float32)
        self.deep = np.ascontiguousarray(
            np.transpose(self.deep_rows[~ctx], (1, 2, 0)).reshape(3 * N_CHANNELS, -1),
            np.float32)

    def gains(self, index, orientation):
        """Scalp gains, shape (len(index), 64), of some dipoles for a deep orientation."""
        index = np.asarray(index)
        out = self.gain_rows[index]
        deep = ~self.is_cortical[index]
        out[deep] = np.einsum("a,nac->nc", orientation, self.deep_rows[index[deep]])
        return out

    def project(self, series, orientation):
        """Scalp projection of every dipole's series, for a batch of windows.

        Parameters
        ----------
        series : ndarray, shape (n_times, N, n)
            One series per dipole and window, time-major.
        orientation : ndarray, shape (n, 3)
            Deep-dipole direction of each window.

        Returns
        -------
        eeg : ndarray, shape (n, 64, n_times)
            ``sum_i g_i s_i`` over all dipoles, not re-referenced.
        """
        cortex = np.matmul(self.cortex, series[:, self.cortex_index])  # (T, 64, n)
        deep = np.matmul(self.deep, series[:, self.deep_index])  # (T, 3 * 64, n)
        deep = deep.reshape(len(series), 3, N_CHANNELS, -1)
        eeg = cortex + np.einsum("tacn,na->tcn", deep, orientation.astype(np.float32))
        return np.ascontiguousarray(np.transpose(eeg, (2, 1, 0)), dtype=float)


def literal_batch(gains, c, orientation, n_times, rng, order=5, coefs=None):
    """Noiseless scalp EEG of a batch of windows, one AR filter per dipole.

    This is :func:`srclib.simulation.simulate` carried out for several windows
    at once: every dipole has its own stable AR series (its own coefficients),
    the region is synchronised with the centre's series, and the sum is
    projected through the simulation forward. The per-dipole coefficients of
    the background are drawn once for the batch (each window's background is
    a fresh draw of the literal simulator; windows of one batch share those
    filters, not their series). The centre's coefficients are drawn for each
    window on their own, independently of every background filter, as the
    literal simulator draws one filter per dipole.

    Parameters
    ----------
    gains : DipoleGains
    c : list of ndarray, shape (N,)
        Spatial coefficients of each window (:func:`srclib.simulation.grow_region`,
        1 at the centre).
    orientation : ndarray, shape (n, 3)
        Deep-dipole direction of each window.
    n_times : int
    rng : numpy.random.Generator
    order : int
        AR order.
    coefs : ndarray, shape (N, order) | None
        The background's per-dipole AR coefficients; drawn at random
        (:func:`srclib.simulation.ar_coefficients`) if None.

    Returns
    -------
    clean : ndarray, shape (n, 64, n_times)
        Not re-referenced.
    centre_coefs : ndarray, shape (n, order)
        The centre's AR coefficients of each window.
    """
    n = len(c)
    bank = ar_coefficients(gains.n_dipoles, rng, order) if coefs is None else coefs
    if bank.shape != (gains.n_dipoles, order):
        raise ValueError(f"coefs must have shape ({gains.n_dipoles}, {order}), got {bank.shape}")
    initial, scale = _stationary_start(bank, rng, n_copies=n)  # (N, n, p), (N,)
    innovations = rng.standard_normal((n_times, gains.n_dipoles, n))
    series, _ = _ar_filter_time_major(innovations, bank.T[:, :, None],
                                      np.moveaxis(initial, -1, 0))
    series /= scale[:, None]
    series = series.astype(np.float32)
    clean = gains.project(series, orientation)
    centre_coefs = ar_coefficients(n, rng, order)
    centre = ar_series(n, n_times, rng, order, centre_coefs)
    for j in range(n):
        # Synchronisation: a region dipole carries c_i s_center + (1 - c_i) s_i,
        # so c_i g_i s_i leaves the sum (the centre's own term entirely) and
        # (sum_i c_i g_i) s_center joins it.
        region = np.flatnonzero(c[j])
        weighted = c[j][region, None] * gains.gains(region, orientation[j])  # (|R|, 64)
        clean[j] -= weighted.T @ series[:, region, j].T
        clean[j] += np.outer(weighted.sum(0), centre[j])
    return clean, centre_coefs


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


def training_set(head, n, rng, *, n_times=config.WINDOW, order=5, fraction_subcortical=0.5,
                 radius_range_mm=(5.0, 60.0), snr_range_db=(0.0, 20.0), batch=32,
                 profile_shape=None, n_jobs=None, progress=True, return_meta=False):
    """Simulate ``n`` training windows and their target coefficients.

    Every window has one region (centre in the cortex or the deep grey matter,
    radius uniform in ``radius_range_mm``), every dipole carrying its own AR
    series with its own coefficients (:func:`literal_batch`; the centre's
    coefficients drawn on their own), a random deep-dipole orientation and an
    SNR uniform in ``snr_range_db``.

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
    order, fraction_subcortical, radius_range_mm, snr_range_db
        Simulator settings (see above).
    batch : int
        Windows simulated together; they share one draw of the background's
        per-dipole AR coefficients (see :func:`literal_batch`).
    profile_shape : str | None
        Coefficient profile of the regions
        (:func:`srclib.simulation.check_profile_shape`); None takes the head
        model's profile setting.
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
    if profile_shape is not None:
        check_profile_shape(profile_shape, "profile_shape")
    meta = draw_simulation_parameters(
        head, n, rng, fraction_subcortical, radius_range_mm, snr_range_db
    )
    gains = DipoleGains(head)
    starts = range(0, n, batch)
    jobs = [(np.arange(s, min(s + batch, n)), seed)
            for s, seed in zip(starts, rng.integers(0, 2**63, len(starts)))]
    X = np.empty((n, N_CHANNELS, n_times), np.float32)
    Y = np.zeros((n, head.n_dipoles), np.float32)
    _WORKER_STATE.update(head=head, gains=gains, meta=meta, order=order, n_times=n_times,
                         shape=profile_shape)
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
    head, gains, meta, order, n_times = (
        st["head"], st["gains"], st["meta"], st["order"], st["n_times"]
    )
    rng = np.random.default_rng(seed)
    c = [grow_region(head, int(meta["center"][i]), meta["radius_mm"][i], st["shape"])
         for i in idx]
    clean, _ = literal_batch(gains, c, meta["orientation"][idx], n_times, rng, order)
    x, _ = add_sensor_noise(average_reference(clean), meta["snr_db"][idx], rng)
    rows, cols = np.nonzero(np.asarray(c))
    vals = np.asarray(c)[rows, cols].astype(np.float32)
    return idx, x.astype(np.float32), rows, cols, vals


class _worker_pool:
    """Map a function over jobs in order, serially or in forked workers.

    Workers are forked so that they share the parent's head model without
    pickling it; each is limited to one BLAS thread so that ``n_jobs``
    processes use ``n_jobs`` cores, and ends with its parent
    (:func:`srclib.workers.die_with_parent`): a forked worker waiting for
    jobs would otherwise outlive a parent killed with SIGKILL, since its
    siblings keep the job queue open. The serial path (``n_jobs=1``) runs its
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
            initializer=_start_worker, initargs=(os.getpid(),),
        )
        return self.pool.map

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        return False


def _start_worker(parent_pid):
    """Set up a forked worker: one BLAS thread, and an end with its parent."""
    die_with_parent(parent_pid)
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


def load_training_set(profile="paper", head=None, *, sparse_targets=False, progress=True):
    """The profile's training set, simulated on first use and cached.

    Stored in ``data/<profile>/training/`` (``training_long/`` and so on for
    another training configuration, which may ask for more windows:
    :data:`srclib.config.TRAININGS`): ``X.npy`` (n, 64, 50) float32,
    ``Y.npz`` (sparse coefficients), ``meta.npz`` (centres, radii, SNRs,
    orientations) and ``provenance.json`` with the parameter hash. A changed
    simulator parameter or head model gives another hash and a new set.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
        The profile's head model; loaded if None.
    sparse_targets : bool
        Return ``Y`` as a float32 CSR matrix (as stored) rather than dense:
        the dense coefficients of the long configuration's 100,000 windows
        take 3.9 GB, the non-zero ones 0.5 GB. :func:`srclib.network.train`
        takes either.
    progress : bool

    Returns
    -------
    X : ndarray, shape (n, 64, 50), float32
    Y : ndarray or scipy.sparse.csr_matrix, shape (n, N), float32
    meta : dict of ndarray
    """
    folder = build_training_set(profile, head, progress=progress)
    X = np.load(folder / "X.npy")
    Y = sparse.csr_matrix(sparse.load_npz(folder / "Y.npz"), dtype=np.float32)
    if not sparse_targets:
        Y = Y.toarray()
    with np.load(folder / "meta.npz") as f:
        meta = {k: f[k] for k in f.files}
    return X, Y, meta


def build_training_set(profile="paper", head=None, *, progress=True):
    """Simulate and store the profile's training set unless it is stored; return its folder.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
    progress : bool

    Returns
    -------
    folder : pathlib.Path
        ``data/<profile>/training/``, or that of the training configuration
        (see :func:`load_training_set`).
    """
    params = config.get_params(profile, "simulation")
    head = head_for(profile, head, progress=progress)
    folder = config.training_folder(profile, "training")
    key = training_set_key(profile, head)
    if not cache.is_valid(folder, key):
        with cache.build_lock(folder):
            if not cache.is_valid(folder, key):  # else built by the process we waited for
                _build_training_set(head, params, folder, key, progress)
    return folder


def _build_training_set(head, params, folder, key, progress):
    """Simulate the profile's training set and store it in ``folder``."""
    t0 = time.perf_counter()
    X, Y, meta = training_set(
        head, params["n_train"], np.random.default_rng(params["train_seed"]),
        order=params["ar_order"], batch=params["windows_per_batch"],
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


#: The simulation settings the training set depends on (the region
#: recordings' settings are not among them: changing those keeps the set).
TRAINING_SETTINGS = ("n_train", "train_seed", "fraction_subcortical", "radius_range_mm",
                     "profile_shape", "snr_range_db", "ar_order", "windows_per_batch")


def training_set_key(profile, head):
    """Hash of everything the training set depends on, and of nothing else."""
    params = config.get_params(profile, "simulation")
    return cache.params_key(dict(
        simulation={k: params[k] for k in TRAINING_SETTINGS},
        head=head.provenance["key"], window=config.WINDOW, version=_CACHE_VERSION,
    ))
