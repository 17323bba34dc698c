"""The simulator (paper section II.B).

A simulation has four steps, each a function here:

1. *spatial module* (:func:`grow_region`): a region grows from a centre dipole
   over the source-space adjacency, within the centre's compartment and a
   radius; each member gets a coefficient ``c`` that falls from 1 at the
   centre with distance, following a profile shape (:data:`PROFILE_SHAPES`,
   one per compartment if the profile says so; the default is the profile
   setting ``simulation.profile_shape``), 0 beyond the radius;
2. *temporal module* (:func:`ar_series`): every dipole, active or not, carries
   its own stationary autoregressive (AR) series of unit variance;
3. *synchronisation* (:func:`synchronize`):
   ``s_i <- c_i s_center + (1 - c_i) s_i``;
4. *scalp projection* (:func:`simulate`): through the simulation forward
   operator, cortical dipoles along their normal, deep dipoles along one random
   direction drawn per simulation, average reference, and white Gaussian
   sensor noise at a requested SNR.

:func:`simulate` carries out these steps literally, one series per dipole.
The fast sampler of the training set lives in :mod:`srclib.sampler`, the
test regions A-D and their recordings in :mod:`srclib.regions`.
"""

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order
from scipy.spatial.distance import cdist

from . import config
from .check import (check_center, check_n_times, check_option, check_order, check_radius,
                    check_snr)
from .headmodel import N_CHANNELS
from .metrics import peak_activity_spread_mm

#: Pole moduli of the random AR filters (stable: strictly inside the unit circle).
POLE_MODULUS = (0.5, 0.95)

#: Peak frequencies of the complex pole pairs (Hz), the classical EEG range.
PEAK_FREQUENCY_HZ = (1.0, 45.0)


# --------------------------------------------------------------------------
# Spatial module
# --------------------------------------------------------------------------


#: Coefficient profiles of a region: ``c`` as a function of ``u = d / r``
#: (distance over radius, in [0, 1]). Each equals 1 at the centre.
PROFILE_SHAPES = {
    "gaussian": lambda u: np.exp(-0.5 * (u / 0.5) ** 2),  # sigma = r / 2
    "gaussian_r": lambda u: np.exp(-0.5 * u**2),  # sigma = r
    "gaussian_2r": lambda u: np.exp(-0.5 * (u / 2.0) ** 2),  # sigma = 2 r
    "linear": lambda u: 1.0 - u,
    "flat": lambda u: np.ones_like(u),
}


def check_profile_shape(shape, name="shape"):
    """Return ``shape`` if it names a coefficient profile, else raise ValueError.

    A profile is a key of :data:`PROFILE_SHAPES` (the same for every region),
    or two keys joined by ``"/"``: the shape of cortical regions, then that of
    subcortical ones (for example ``"gaussian_2r/gaussian"``).
    """
    parts = shape.split("/") if isinstance(shape, str) else [shape]
    if len(parts) > 2 or any(part not in PROFILE_SHAPES for part in parts):
        raise ValueError(
            f"{name} must be one of {list(PROFILE_SHAPES)}, or two of them joined by '/' "
            f"(cortical regions, then subcortical ones), got {shape!r}"
        )
    return shape


def compartment_shape(shape, cortical):
    """The shape (a key of :data:`PROFILE_SHAPES`) that ``shape`` gives one compartment.

    Parameters
    ----------
    shape : str
        A profile (:func:`check_profile_shape`).
    cortical : bool
        Whether the region's centre lies in the cortex.

    Returns
    -------
    name : str
    """
    parts = check_profile_shape(shape).split("/")
    return parts[0] if cortical else parts[-1]


def profile_coefficients(distance, radius, shape):
    """Coefficient ``c`` at distances from the centre, for one profile shape.

    Parameters
    ----------
    distance : ndarray
        Distances from the centre, within ``[0, radius]`` (any unit).
    radius : float
        Region radius, same unit, positive.
    shape : str
        A key of :data:`PROFILE_SHAPES`: ``"gaussian"`` (sigma = r / 2),
        ``"gaussian_r"`` (sigma = r), ``"gaussian_2r"`` (sigma = 2 r),
        ``"linear"`` (``1 - d / r``, 0 at the rim) or ``"flat"`` (1 in the
        whole region).

    Returns
    -------
    c : ndarray
        Same shape as ``distance``; 1 at the centre.
    """
    check_option("shape", shape, tuple(PROFILE_SHAPES))
    return PROFILE_SHAPES[shape](np.asarray(distance, float) / radius)


def default_profile_shape(head):
    """The profile shape of ``head``'s profile (setting ``simulation.profile_shape``)."""
    profile = getattr(head, "profile", None)
    profile = profile if profile in config.PROFILES else "paper"
    return config.get_params(profile, "simulation")["profile_shape"]


def grow_region(head, center, radius_mm, shape=None):
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
    shape : str | None
        Coefficient profile (:func:`check_profile_shape`): a key of
        :data:`PROFILE_SHAPES`, or a cortical and a subcortical one joined by
        ``"/"``; None takes the setting ``profile_shape`` of the head model's
        profile (:func:`default_profile_shape`).

    Returns
    -------
    c : ndarray, shape (N,)
        Spatial coefficients: the profile at each member's distance from the
        centre (1 at the centre), 0 elsewhere.
    """
    center = check_center(head, center)
    radius = check_radius(radius_mm) / 1000.0
    shape = default_profile_shape(head) if shape is None else shape
    shape = compartment_shape(shape, head.is_cortical[center])
    diff = head.positions - head.positions[center]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    inside = (dist <= radius) & (head.is_cortical == head.is_cortical[center])
    region = _reachable(head, inside, center)
    c = np.zeros(head.n_dipoles)
    c[region] = profile_coefficients(dist[region], radius, shape)
    return c


def _check_region(head, c, center):
    """``c`` as floats, if it has one coefficient per dipole and 1 at ``center``."""
    c = np.asarray(c, float)
    if c.shape != (head.n_dipoles,) or not np.isclose(c[center], 1.0):
        raise ValueError("c must have one coefficient per dipole and equal 1 at the centre")
    return c


def displaced_region(moved, c, center, radius_mm, shape=None):
    """A region's coefficients over moved dipoles (the off-grid test head).

    ``moved`` holds the book's dipoles one for one at other positions
    (:func:`srclib.headmodel.unseen_head` with displaced sources). The
    region keeps its members (the dipoles of ``c`` that are positive) where
    they still lie within the radius of the moved centre, and each member's
    coefficient is the profile at its new distance from it, so the centre
    keeps ``c = 1``.

    Parameters
    ----------
    moved : HeadModel
        Same dipoles as the head ``c`` was grown on, moved.
    c : ndarray, shape (N,)
        The region on the book's grid (:func:`grow_region`).
    center : int
        Its centre dipole.
    radius_mm : float
    shape : str | None
        As for :func:`grow_region`.

    Returns
    -------
    c_moved : ndarray, shape (N,)
    """
    center = check_center(moved, center)
    radius = check_radius(radius_mm) / 1000.0
    shape = default_profile_shape(moved) if shape is None else shape
    shape = compartment_shape(shape, moved.is_cortical[center])
    c = _check_region(moved, c, center)
    dist = np.linalg.norm(moved.positions - moved.positions[center], axis=1)
    keep = (c > 0) & (dist <= radius)
    out = np.zeros(moved.n_dipoles)
    out[keep] = profile_coefficients(dist[keep], radius, shape)
    return out


def membership_centre(head, c):
    """The member of a region whose farthest fellow member is nearest (Chebyshev centre).

    A reference read-out for the network chapter: an observer that knew
    exactly which dipoles are active, but not how strongly, could name this
    member as the centre. Where the ball of the region lies whole inside the
    centre's compartment it is the centre itself (for a cortical region,
    nearly always); where the compartment clips the ball, as the edges of the
    deep nuclei clip most large deep regions, it moves away from the centre,
    and its distance to the centre measures how much of the localisation the
    membership alone leaves open.

    Parameters
    ----------
    head : HeadModel
    c : ndarray, shape (N,)
        Spatial coefficients of one region (:func:`grow_region`).

    Returns
    -------
    index : int
        Index of the chosen member.
    """
    members = np.flatnonzero(np.asarray(c) > 0)
    if members.size == 0:
        raise ValueError("c must have at least one positive coefficient (a region)")
    pos = head.positions[members]
    return int(members[np.argmin(cdist(pos, pos).max(axis=1))])


def perfect_spread_mm(head, center, radius_mm, shapes=tuple(PROFILE_SHAPES)):
    """Peak activity spread of the Perfect prediction (``y = c``) for each profile shape.

    The Perfect row of the paper's tables scores the truth itself, so its
    PAS depends on the region and the coefficient profile only: no
    simulation is needed.

    Parameters
    ----------
    head : HeadModel
    center : int
    radius_mm : float
    shapes : sequence of str
        Profiles (:func:`check_profile_shape`).

    Returns
    -------
    pas_mm : dict
        ``{shape: PAS in mm}``.
    """
    return {shape: float(peak_activity_spread_mm(grow_region(head, center, radius_mm, shape),
                                                 head.positions))
            for shape in shapes}


def perfect_spread_table(head, regions=("A", "B", "C", "D"), shapes=tuple(PROFILE_SHAPES)):
    """The Perfect prediction's PAS for test regions and profile shapes, beside the paper's.

    Parameters
    ----------
    head : HeadModel
    regions : sequence of str
        Names of ``data/regions.yaml`` reported in the paper's tables.
    shapes : sequence of str
        Profiles (:func:`check_profile_shape`).

    Returns
    -------
    table : pandas.DataFrame
        One row per shape and one column per region (PAS in mm), a row
        ``"paper"`` with the paper's Perfect PAS, and a column
        ``"mean |error| (mm)"``: each shape's mean absolute difference from
        the paper over the regions (0 in the paper row).
    """
    # Imported here, not at the top: both modules import this one.
    from .regions import resolve_region
    from .results import paper_table

    columns = {}
    for region in regions:
        spec = resolve_region(head, region)
        columns[region] = perfect_spread_mm(head, spec["center"], spec["radius_mm"], shapes)
    table = pd.DataFrame(columns)
    paper = pd.Series({r: float(paper_table(r).loc["Perfect", "PAS_mm"]) for r in regions})
    table["mean |error| (mm)"] = (table[list(regions)] - paper).abs().mean(1)
    table.loc["paper"] = list(paper) + [0.0]
    table.index.name = "profile shape"
    return table


def region_hemispheres(head, c):
    """Number of region dipoles (``c > 0``) in each hemisphere.

    Parameters
    ----------
    head : HeadModel
    c : ndarray, shape (N,)

    Returns
    -------
    counts : dict
        ``{"left": int, "right": int}``, from each dipole's structure name
        (``ctx-lh`` and ``Left-*`` are left, ``ctx-rh`` and ``Right-*`` right).
    """
    c = np.asarray(c)
    if c.shape != (head.n_dipoles,):
        raise ValueError(f"c must have shape ({head.n_dipoles},), got {c.shape}")
    names = head.structure[c > 0]
    left = np.char.startswith(names.astype(str), "Left-") | (names == "ctx-lh")
    right = np.char.startswith(names.astype(str), "Right-") | (names == "ctx-rh")
    return {"left": int(left.sum()), "right": int(right.sum())}


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
    check_order(order)
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
    check_order(order, check_n_times(n_times))
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
    center = check_center(head, center)
    n_times = check_n_times(n_times)
    check_order(order, n_times)
    snr_db = check_snr(snr_db)
    c = _check_region(head, c, center)
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
