"""Shared input checks.

Every public function of srclib validates its arguments with these helpers,
so that a bad value stops at once with a ``ValueError`` (or ``TypeError``)
that names the parameter, what is allowed and what was given, instead of
failing deep inside numpy or running silently on a meaningless value. They
follow the manner of ``mne/utils/check.py``: small, one concern each, and
each returns the value in its canonical type.
"""

from numbers import Integral, Real

import numpy as np

#: Largest accepted region radius (mm); larger would cover the whole brain.
MAX_RADIUS_MM = 200.0

#: Accepted sensor SNR range (dB).
SNR_RANGE_DB = (-40.0, 60.0)


def check_int(name, value, minimum=None, maximum=None):
    """Return ``value`` as an int, refusing booleans, floats, text and out-of-range values.

    Parameters
    ----------
    name : str
        Parameter name used in the message.
    value : object
    minimum, maximum : int | None
        Inclusive bounds.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)):
        raise ValueError(f"{name} must be an integer{_bounds(minimum, maximum)}, "
                         f"got {value!r} ({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer{_bounds(minimum, maximum)}, got {value}")
    return value


def check_number(name, value, minimum=None, maximum=None, *, open_minimum=False):
    """Return ``value`` as a finite float within bounds; text, booleans and NaN are refused.

    Parameters
    ----------
    name : str
    value : object
    minimum, maximum : float | None
        Bounds (inclusive unless ``open_minimum``).
    open_minimum : bool
        Exclude ``minimum`` itself.
    """
    allowed = f"a finite number{_bounds(minimum, maximum, open_minimum)}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.floating,
                                                                     np.integer)):
        raise ValueError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    value = float(value)
    too_low = minimum is not None and (value <= minimum if open_minimum else value < minimum)
    too_high = maximum is not None and value > maximum
    if not np.isfinite(value) or too_low or too_high:
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_option(name, value, allowed):
    """Return ``value`` if it is one of ``allowed``, else raise ValueError naming them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def check_center(head, center):
    """Return a dipole index of ``head`` as an int."""
    return check_int("center", center, 0, head.n_dipoles - 1)


def check_radius(radius_mm):
    """Return a region radius in millimetres, in (0, :data:`MAX_RADIUS_MM`]."""
    return check_number("radius_mm", radius_mm, 0.0, MAX_RADIUS_MM, open_minimum=True)


def check_snr(snr_db):
    """Return a sensor SNR in dB within :data:`SNR_RANGE_DB`."""
    return check_number("snr_db", snr_db, *SNR_RANGE_DB)


def check_seed(seed):
    """Return a seed as a non-negative int (booleans and floats are refused)."""
    return check_int("seed", seed, 0, 2**63 - 1)


def check_order(order, n_times=None):
    """Return an AR order; with ``n_times``, also check that a series can hold it."""
    order = check_int("order", order, 1)
    if n_times is not None and n_times <= order:
        raise ValueError(
            f"n_times must exceed the AR order ({order}) to hold a series, got {n_times}"
        )
    return order


def check_n_times(n_times):
    """Return a number of samples as a positive int."""
    return check_int("n_times", n_times, 1)


def _bounds(minimum, maximum, open_minimum=False):
    if minimum is None and maximum is None:
        return ""
    if maximum is None:
        return f" > {minimum:g}" if open_minimum else f" >= {minimum:g}"
    if minimum is None:
        return f" <= {maximum:g}"
    return f" in {'(' if open_minimum else '['}{minimum:g}, {maximum:g}]"
