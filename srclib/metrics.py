"""Localisation metrics (paper section II.E).

A prediction ``y`` gives every dipole a value in [0, 1]: how likely the
method thinks the dipole belongs to the active region. It is scored against
the simulated truth, the spatial coefficients ``c`` of the region (the region
is ``R = {c > 0}``, its centre dipole ``k`` has the largest coefficient) and
the dipole positions. Six numbers are computed per window of data:

``MLE_mm``
    Localisation error (the paper's "mean localisation error", MLE, once
    summarised over windows): the distance from the dipole the method ranks
    highest to the true centre.
``AUC_close``, ``AUC_far``
    Area under the ROC curve of ``y`` as a detector of region dipoles. The
    positives are the region; the negatives are the non-region dipoles
    *nearest* to the region (``AUC_close``, which asks for a sharp boundary)
    or *farthest* from it (``AUC_far``, which asks for no remote false
    activity).
``DistRank``
    Where the true centre falls in the ranking of ``y``: the fraction of the
    other dipoles that the method ranks strictly above it.
``PAS_mm``
    Peak activity spread: how wide the set of dipoles near the maximum of
    ``y`` is, as a weighted root-mean-square distance to its weighted centre.
``FractionActive``
    How many of the top 5 % of dipoles lie in the region, relative to the
    largest number that could.

Lower is better for ``MLE_mm``, ``DistRank`` and ``PAS_mm``; higher is better
for the other three (1 is perfect). A method that outputs the truth itself,
``y = c`` (:func:`perfect_prediction`), scores ``MLE_mm = 0``, both AUCs
``= 1``, ``DistRank = 0`` and ``FractionActive = 1``; its ``PAS_mm`` is the
size of the inner part of the region where ``c >= 0.8``. A method that outputs
uniform noise (:func:`random_prediction`) scores AUCs and ``DistRank`` of about
0.5, and ``FractionActive`` of about ``|R| / N`` when the region is at least
as large as the top-5 % set.

Exact definitions
-----------------
The paper describes the metrics in words; the definitions below are the ones
implemented, and they settle what the words leave open. ``N`` is the number of
dipoles and ``p`` their positions (metres; distances are *reported* in
millimetres).

* ``MLE_mm = 1000 |p[argmax y] - p[k]|``. When several dipoles share the
  maximum of ``y``, the first of them (lowest index, as :func:`numpy.argmax`)
  is the predicted peak.
* Negative sets (:func:`negative_sets`). The distance of a non-region dipole
  to the region is its Euclidean distance to the nearest region dipole. The
  *close* set is the ``round(N / 5)`` non-region dipoles of smallest distance,
  the *far* set the ``round(N / 2)`` of largest distance, rounding halves up
  (``round(N / 2) = (N + 1) // 2``; ``N / 5`` never ends in a half). Equal
  distances (equal as floating-point numbers) are ordered by dipole index (a
  stable sort), so the sets are deterministic. When fewer non-region dipoles exist than requested, all of
  them are used. The paper draws negatives at random from such pools; we use
  the whole pools, which is the expectation of the random draws and needs no
  random numbers.
* The AUC is computed exactly through the Mann-Whitney statistic,
  ``AUC = P(y_pos > y_neg) + 0.5 P(y_pos == y_neg)`` over all (positive,
  negative) pairs, from average ranks: a tie counts one half.
* ``DistRank = #{i : y_i > y_k} / (N - 1)``. Dipoles tied with the centre are
  not counted, so ``DistRank = 0`` whenever the centre attains the maximum of
  ``y``, even when shared.
* ``PAS_mm``. ``T = {i : y_i >= 0.8 max(y)}`` with weights ``w_i = y_i``;
  ``PAS = 1000 sqrt(sum_T w_i |p_i - p_bar|^2 / sum_T w_i)`` with the weighted
  centroid ``p_bar = sum_T w_i p_i / sum_T w_i``. The paper speaks of the
  spread of "peak activity" without fixing the weighting; this is a weighted
  standard distance. If ``y`` is zero everywhere, ``T`` is every dipole, with
  equal weights.
* ``FractionActive = |top5 ∩ R| / min(|top5|, |R|)``. ``top5`` is the
  ``ceil(0.05 N)`` dipoles of largest ``y``; equal values are taken in
  increasing index order (the order of ``np.argsort(-y, kind="stable")``).
  Dividing by ``min(|top5|, |R|)`` rather than ``|top5|`` keeps the perfect
  score at 1 for regions smaller than the top-5 % set.

Input checks
------------
``c`` must lie in [0, 1] with at least one positive and one zero entry (the
AUCs need non-region dipoles); the centre must be a valid index whose
coefficient is the (positive) maximum of ``c``. ``y`` must lie in [0, 1]. All
arrays must be finite. Positions are in metres: positions spanning more than
1 m along an axis (:data:`MAX_EXTENT_M`; millimetres would) are refused. Bad
input raises :class:`ValueError` naming the parameter.
"""

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

#: Metric names, in the order of the paper's tables.
METRICS = ("MLE_mm", "AUC_close", "AUC_far", "DistRank", "PAS_mm", "FractionActive")

#: The metrics for which a lower value is better (the others: higher is better).
LOWER_IS_BETTER = frozenset({"MLE_mm", "DistRank", "PAS_mm"})

#: The close negative set is ``round(N / CLOSE_DIVISOR)`` dipoles.
CLOSE_DIVISOR = 5

#: The far negative set is ``round(N / FAR_DIVISOR)`` dipoles.
FAR_DIVISOR = 2

#: Fraction of the maximum of ``y`` above which a dipole is "peak activity".
PEAK_THRESHOLD = 0.8

#: The top set of :func:`fraction_active` is ``ceil(N / TOP_DIVISOR)`` dipoles (5 %).
TOP_DIVISOR = 20

_M_TO_MM = 1000.0

#: Largest extent (m) accepted for dipole positions along any axis. A head is
#: less than 0.3 m across; positions spanning more than 1 m were given in
#: another unit (millimetres give an extent of about 150).
MAX_EXTENT_M = 1.0


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


def _as_float_array(x, name):
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def _check_positions(positions):
    positions = _as_float_array(positions, "positions")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    if positions.shape[0] < 2:
        raise ValueError(f"positions must hold at least 2 dipoles, got {positions.shape[0]}")
    extent = float(np.ptp(positions, axis=0).max())
    if extent > MAX_EXTENT_M:
        raise ValueError(
            f"positions must be in metres (a head spans < 0.3 m; at most {MAX_EXTENT_M:g} is "
            f"accepted), got positions spanning {extent:.4g}: millimetres? pass metres "
            "(positions / 1000)"
        )
    return positions


def _check_unit_interval(arr, name):
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1], got values in [{arr.min():g}, {arr.max():g}]"
        )


def _check_y(y, n_dipoles=None):
    """Return ``y`` as a float array of shape (n_windows, N) and whether it was 1-D."""
    y = _as_float_array(y, "y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (N,) or (n_windows, N), got {y.shape}")
    single = y.ndim == 1
    y2 = y[None, :] if single else y
    if n_dipoles is not None and y2.shape[1] != n_dipoles:
        raise ValueError(
            f"y must have {n_dipoles} dipoles in its last axis (as positions/c), "
            f"got shape {y.shape}"
        )
    if y2.shape[0] == 0:
        raise ValueError("y must hold at least one window, got 0")
    if y2.shape[1] < 2:
        raise ValueError(f"y must hold at least 2 dipoles, got {y2.shape[1]}")
    _check_unit_interval(y2, "y")
    return y2, single


def _check_c(c, n_dipoles=None):
    c = _as_float_array(c, "c")
    if c.ndim != 1:
        raise ValueError(f"c must have shape (N,), got {c.shape}")
    if n_dipoles is not None and c.shape[0] != n_dipoles:
        raise ValueError(f"c must have shape ({n_dipoles},) to match, got {c.shape}")
    _check_unit_interval(c, "c")
    if not np.any(c > 0):
        raise ValueError("c must have at least one positive entry (the region)")
    return c


def _check_center(center, n_dipoles, c=None):
    if isinstance(center, (bool, np.bool_)) or not isinstance(center, (int, np.integer)):
        raise ValueError(f"center must be an integer dipole index, got {center!r}")
    if not 0 <= center < n_dipoles:
        raise ValueError(f"center must lie in [0, {n_dipoles - 1}], got {center}")
    center = int(center)
    if c is not None:
        if c[center] <= 0:
            raise ValueError(f"center must lie in the region (c[center] > 0), got c[{center}] = 0")
        if c[center] != c.max():
            raise ValueError(
                f"center must have the largest coefficient, got c[{center}] = "
                f"{c[center]:g} < max(c) = {c.max():g}"
            )
    return center


def _output(values, single):
    """A float for a single window, else the (n_windows,) array."""
    return float(values[0]) if single else values


# --------------------------------------------------------------------------
# Negative sets and AUC
# --------------------------------------------------------------------------


def _round_half_up(numerator, denominator):
    return (2 * numerator + denominator) // (2 * denominator)


def negative_sets(c, positions):
    """Select the close and far negative dipoles of a region.

    Parameters
    ----------
    c : array, shape (N,)
        Spatial coefficients in [0, 1]; the region is ``c > 0``.
    positions : array, shape (N, 3)
        Dipole positions in metres.

    Returns
    -------
    close : ndarray of int, shape (n_close,)
        The ``round(N / 5)`` non-region dipoles nearest to the region, nearest
        first (equal distances by increasing index).
    far : ndarray of int, shape (n_far,)
        The ``round(N / 2)`` non-region dipoles farthest from the region,
        farthest first (equal distances by increasing index).

    Notes
    -----
    The distance of a dipole to the region is its distance to the nearest
    region dipole. If fewer non-region dipoles exist than requested, a set
    holds all of them.
    """
    positions = _check_positions(positions)
    c = _check_c(c, positions.shape[0])
    return _negative_sets(c, positions)


def _negative_sets(c, positions):
    n = positions.shape[0]
    region = c > 0
    outside = np.flatnonzero(~region)
    if outside.size == 0:
        raise ValueError("c must leave at least one dipole outside the region (c == 0)")
    dist, _ = cKDTree(positions[region]).query(positions[outside], k=1)
    n_close = min(_round_half_up(n, CLOSE_DIVISOR), outside.size)
    n_far = min(_round_half_up(n, FAR_DIVISOR), outside.size)
    close = outside[np.argsort(dist, kind="stable")[:n_close]]
    far = outside[np.argsort(-dist, kind="stable")[:n_far]]
    return close, far


def _mann_whitney_auc(y, positives, negatives):
    """Exact AUC per row of ``y`` (n_windows, N) for index sets, ties = 1/2.

    Mann-Whitney's U counts, over the positives, the negatives below each one
    plus half of those equal to it. With each window's negatives sorted, two
    binary searches per positive give both counts: the same integers as
    ranking the union (:func:`scipy.stats.rankdata`), two to four times faster.
    """
    n_pos, n_neg = positives.size, negatives.size
    negative_scores = np.sort(y[:, negatives], axis=1)
    positive_scores = np.sort(y[:, positives], axis=1)  # sorted: faster searches
    twice_u = np.empty(y.shape[0])
    for w, (neg, pos) in enumerate(zip(negative_scores, positive_scores)):
        below = np.searchsorted(neg, pos, side="left").sum()
        below_or_equal = np.searchsorted(neg, pos, side="right").sum()
        twice_u[w] = below + below_or_equal  # exact: integers below 2**53
    return twice_u / (2.0 * n_pos * n_neg)


def roc_auc(y, positives, negatives):
    """Exact area under the ROC curve of ``y`` for given positive/negative dipoles.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values.
    positives, negatives : array of int
        Indices of the positive and negative dipoles (non-empty).

    Returns
    -------
    auc : float or ndarray, shape (n_windows,)
        ``P(y_pos > y_neg) + 0.5 P(y_pos == y_neg)`` over all pairs, computed
        from the Mann-Whitney U statistic.
    """
    y2, single = _check_y(y)
    n = y2.shape[1]
    idx = []
    for name, arr in (("positives", positives), ("negatives", negatives)):
        arr = np.asarray(arr)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be a non-empty 1-D array of integer indices")
        if arr.min() < -n or arr.max() >= n:
            raise ValueError(f"{name} must index the {n} dipoles of y")
        idx.append(arr)
    return _output(_mann_whitney_auc(y2, *idx), single)


def auc_close_far(y, c, positions, negatives=None):
    """AUC against the close and the far negative sets.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values in [0, 1].
    c : array, shape (N,)
        Spatial coefficients in [0, 1]; the region ``c > 0`` is the positives.
    positions : array, shape (N, 3)
        Dipole positions in metres.
    negatives : tuple of (close, far) index arrays | None
        The output of :func:`negative_sets`, to reuse across calls; computed
        from ``c`` and ``positions`` when None.

    Returns
    -------
    auc_close, auc_far : float or ndarray, shape (n_windows,)
        Exact AUCs (ties count one half).
    """
    positions = _check_positions(positions)
    n = positions.shape[0]
    c = _check_c(c, n)
    y2, single = _check_y(y, n)
    if negatives is None:
        negatives = _negative_sets(c, positions)
    close, far = negatives
    positives = np.flatnonzero(c > 0)
    auc_close = _mann_whitney_auc(y2, positives, np.asarray(close))
    auc_far = _mann_whitney_auc(y2, positives, np.asarray(far))
    return _output(auc_close, single), _output(auc_far, single)


# --------------------------------------------------------------------------
# Other metrics
# --------------------------------------------------------------------------


def _localization_error_mm(y, center, positions):
    peak = np.argmax(y, axis=1)
    diff = positions[peak] - positions[center]
    return _M_TO_MM * np.sqrt(np.einsum("ij,ij->i", diff, diff))


def localization_error_mm(y, center, positions):
    """Localisation error (the paper's MLE): peak of ``y`` to the true centre.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values in [0, 1].
    center : int
        Index of the true centre dipole.
    positions : array, shape (N, 3)
        Dipole positions in metres.

    Returns
    -------
    mle_mm : float or ndarray, shape (n_windows,)
        Euclidean distance in millimetres. With several maxima, the first
        (lowest index) is the peak.
    """
    positions = _check_positions(positions)
    y2, single = _check_y(y, positions.shape[0])
    center = _check_center(center, positions.shape[0])
    return _output(_localization_error_mm(y2, center, positions), single)


def _dist_rank(y, center):
    above = np.count_nonzero(y > y[:, center : center + 1], axis=1)
    return above / (y.shape[1] - 1)


def dist_rank(y, center):
    """Rank of the true centre in the prediction, as a fraction.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values in [0, 1].
    center : int
        Index of the true centre dipole.

    Returns
    -------
    dist_rank : float or ndarray, shape (n_windows,)
        ``#{i : y_i > y_center} / (N - 1)``, in [0, 1]; 0 when the centre
        attains the maximum (ties with the centre are not counted).
    """
    y2, single = _check_y(y)
    center = _check_center(center, y2.shape[1])
    return _output(_dist_rank(y2, center), single)


def _peak_activity_spread_mm(y, positions, threshold=PEAK_THRESHOLD):
    n_windows = y.shape[0]
    ymax = y.max(axis=1, keepdims=True)
    peak = y >= threshold * ymax  # all True on an all-zero row
    rows, cols = np.nonzero(peak)
    w = y[rows, cols]
    flat = (ymax[:, 0] == 0)[rows]
    w[flat] = 1.0  # all-zero window: every dipole, equal weights
    total = np.bincount(rows, weights=w, minlength=n_windows)
    pts = positions[cols]
    centroid = np.stack(
        [np.bincount(rows, weights=w * pts[:, d], minlength=n_windows) for d in range(3)],
        axis=1,
    ) / total[:, None]
    diff = pts - centroid[rows]
    sq = np.einsum("ij,ij->i", diff, diff)
    var = np.bincount(rows, weights=w * sq, minlength=n_windows) / total
    return _M_TO_MM * np.sqrt(var)


def peak_activity_spread_mm(y, positions, threshold=PEAK_THRESHOLD):
    """Peak activity spread (PAS): the width of the set near the maximum of ``y``.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values in [0, 1].
    positions : array, shape (N, 3)
        Dipole positions in metres.
    threshold : float
        Dipoles with ``y >= threshold * max(y)`` form the peak set; 0.8 in the
        paper. Must lie in (0, 1].

    Returns
    -------
    pas_mm : float or ndarray, shape (n_windows,)
        ``sqrt(sum w |p - p_bar|^2 / sum w)`` over the peak set with weights
        ``w = y`` and weighted centroid ``p_bar``, in millimetres. An all-zero
        window uses every dipole with equal weights.
    """
    positions = _check_positions(positions)
    y2, single = _check_y(y, positions.shape[0])
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}")
    return _output(_peak_activity_spread_mm(y2, positions, threshold), single)


def _top_count(n_dipoles):
    return -(-n_dipoles // TOP_DIVISOR)  # ceil(0.05 N) in integers


def _top_mask(y, m):
    """Mask of the ``m`` largest values per row; equal values by increasing index."""
    n = y.shape[1]
    # The m-th largest value of each row.
    kth = np.partition(y, n - m, axis=1)[:, n - m : n - m + 1]
    above = y > kth
    tied = y == kth
    room = m - np.count_nonzero(above, axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= room))


def _fraction_active(y, region):
    m = _top_count(y.shape[1])
    hits = np.count_nonzero(_top_mask(y, m) & region[None, :], axis=1)
    return hits / min(m, int(region.sum()))


def fraction_active(y, c):
    """Fraction of the top 5 % of dipoles that lie in the region.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values in [0, 1].
    c : array, shape (N,)
        Spatial coefficients in [0, 1]; the region is ``c > 0``.

    Returns
    -------
    fraction : float or ndarray, shape (n_windows,)
        ``|top5 ∩ R| / min(|top5|, |R|)`` in [0, 1], with ``top5`` the
        ``ceil(0.05 N)`` dipoles of largest ``y`` (equal values taken in
        increasing index order).
    """
    y2, single = _check_y(y)
    c = _check_c(c, y2.shape[1])
    return _output(_fraction_active(y2, c > 0), single)


# --------------------------------------------------------------------------
# All metrics
# --------------------------------------------------------------------------


def evaluate(y, c, center, positions, negatives=None):
    """Compute the six localisation metrics.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values in [0, 1], one row per window.
    c : array, shape (N,)
        True spatial coefficients in [0, 1]; the region is ``c > 0``.
    center : int
        Index of the true centre dipole; ``c[center]`` is the positive maximum
        of ``c``.
    positions : array, shape (N, 3)
        Dipole positions in metres.
    negatives : tuple of 2 arrays | None
        The region's close and far negative dipoles,
        :func:`negative_sets` of ``c`` and ``positions``, for callers that
        score many maps of one region; found here if None.

    Returns
    -------
    metrics : dict
        ``{name: value}`` for the names of :data:`METRICS`: floats for a
        single window ``y`` of shape (N,), arrays of shape (n_windows,)
        otherwise.
    """
    positions = _check_positions(positions)
    n = positions.shape[0]
    c = _check_c(c, n)
    center = _check_center(center, n, c)
    y2, single = _check_y(y, n)
    # Once, shared by all windows.
    close, far = _negative_sets(c, positions) if negatives is None else negatives
    region = c > 0
    positives = np.flatnonzero(region)
    values = {
        "MLE_mm": _localization_error_mm(y2, center, positions),
        "AUC_close": _mann_whitney_auc(y2, positives, close),
        "AUC_far": _mann_whitney_auc(y2, positives, far),
        "DistRank": _dist_rank(y2, center),
        "PAS_mm": _peak_activity_spread_mm(y2, positions),
        "FractionActive": _fraction_active(y2, region),
    }
    return {name: _output(values[name], single) for name in METRICS}


def evaluate_windows(y, c, center, positions, negatives=None):
    """Compute the six metrics as a table, one row per window.

    Parameters
    ----------
    y : array, shape (N,) or (n_windows, N)
        Predicted values in [0, 1]; a single window gives a one-row table.
    c, center, positions, negatives
        As in :func:`evaluate`.

    Returns
    -------
    table : pandas.DataFrame, shape (n_windows, 6)
        Columns :data:`METRICS`, index the window number.
    """
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[None, :]
    values = evaluate(y, c, center, positions, negatives)
    table = pd.DataFrame({name: values[name] for name in METRICS})
    table.index.name = "window"
    return table


def summarize(per_window, by="method", metrics=METRICS):
    """Median of every metric per method.

    Parameters
    ----------
    per_window : pandas.DataFrame | dict
        Either a long table with a column ``by`` and one column per metric
        (one row per window, any number of recordings), or a dictionary
        ``{method: results}`` where ``results`` is a table from
        :func:`evaluate_windows` or a dictionary from :func:`evaluate`.
    by : str
        Name of the column that identifies the method.
    metrics : sequence of str
        Metric columns to summarise.

    Returns
    -------
    medians : pandas.DataFrame
        Index ``by`` (methods in the order they first appear), columns
        ``metrics``: the median over windows, ignoring NaN.
    """
    metrics = list(metrics)
    if isinstance(per_window, dict):
        parts = []
        for method, results in per_window.items():
            part = pd.DataFrame(
                {name: np.atleast_1d(np.asarray(col)) for name, col in dict(results).items()}
                if isinstance(results, dict)
                else results
            )
            part = part.reset_index(drop=True)
            part.insert(0, by, method)
            parts.append(part)
        if not parts:
            raise ValueError("per_window must hold at least one method")
        per_window = pd.concat(parts, ignore_index=True)
    if not isinstance(per_window, pd.DataFrame):
        raise ValueError(
            f"per_window must be a pandas DataFrame or a dict, got {type(per_window).__name__}"
        )
    missing = [col for col in [by, *metrics] if col not in per_window.columns]
    if missing:
        raise ValueError(f"per_window lacks the column(s) {missing}")
    medians = per_window.groupby(by, sort=False)[metrics].median()
    return medians


# --------------------------------------------------------------------------
# Reference predictions
# --------------------------------------------------------------------------


def random_prediction(n_windows, n_dipoles, rng):
    """Uniform noise: the chance-level reference.

    Parameters
    ----------
    n_windows : int
        Number of windows (>= 1).
    n_dipoles : int
        Number of dipoles (>= 2).
    rng : numpy.random.Generator
        Source of the random numbers.

    Returns
    -------
    y : ndarray, shape (n_windows, n_dipoles)
        Independent draws, uniform in [0, 1).
    """
    for name, value, low in (("n_windows", n_windows, 1), ("n_dipoles", n_dipoles, 2)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng.random((int(n_windows), int(n_dipoles)))


def perfect_prediction(c, n_windows=1):
    """The truth itself: the best-case reference.

    Parameters
    ----------
    c : array, shape (N,)
        Spatial coefficients in [0, 1].
    n_windows : int
        Number of (identical) windows (>= 1).

    Returns
    -------
    y : ndarray, shape (n_windows, N)
        ``c`` repeated on every row (always two-dimensional).
    """
    c = _check_c(c)
    if isinstance(n_windows, (bool, np.bool_)) or not isinstance(n_windows, (int, np.integer)):
        raise ValueError(f"n_windows must be an integer, got {n_windows!r}")
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    return np.tile(c, (int(n_windows), 1))
