"""Shared input checks.

Every public function of srclib validates its arguments with these helpers,
so that a bad value stops at once with a ``ValueError`` (or ``TypeError``)
that names the parameter, what is allowed and what was given, instead of
failing deep inside numpy or running silently on a meaningless value. They
follow the manner of ``mne/utils/check.py``: small, one concern each, and
each returns the value in its canonical type.
"""

from numbers import Integral, Real
import re

import numpy as np

from . import config

#: Largest accepted region radius (mm); larger would cover the whole brain.
MAX_RADIUS_MM = 200.0

#: Accepted sensor SNR range (dB).
SNR_RANGE_DB = (-40.0, 60.0)

#: Longest accepted recording (s): one hour. A recording of T seconds holds
#: several (64, 250 T) float64 arrays (0.13 MB per second each) and, for each
#: method, its (5 T, N) maps (0.39 MB per second at the paper's 9751 dipoles),
#: so one hour already needs a few GB; 1e9 s would ask for terabytes.
MAX_DURATION_S = 3600.0

#: Longest region name: with its tags and suffix it stays a valid file name.
MAX_NAME_LENGTH = 64

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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


def check_duration(duration_s):
    """Return a recording length in seconds: at least one window, at most :data:`MAX_DURATION_S`."""
    return check_number("duration_s", duration_s, config.WINDOW / config.SFREQ, MAX_DURATION_S)


def check_region_name(region):
    """Return a region name that is safe inside a file name.

    Allowed: 1 to :data:`MAX_NAME_LENGTH` ASCII letters, digits, ``_`` and
    ``-``, starting with a letter or a digit (so no path separator, no ``..``
    and no option-like leading ``-``).
    """
    allowed = (f"a name of 1 to {MAX_NAME_LENGTH} letters, digits, '_' or '-' "
               "starting with a letter or digit (no path separator, no '..')")
    if not isinstance(region, str):
        raise ValueError(f"region must be {allowed}, got {region!r} ({type(region).__name__})")
    if len(region) > MAX_NAME_LENGTH or not _NAME.fullmatch(region):
        shown = region if len(region) <= 80 else f"{region[:40]}...{region[-20:]}"
        raise ValueError(f"region must be {allowed}, got {shown!r} ({len(region)} characters)")
    return region


def check_lambda2(lambda2):
    """Return a regularisation parameter: a finite number > 0.

    Every solver of :mod:`srclib.solvers` is a regularised minimum-norm
    estimate; ``lambda2 = 0`` would invert the ill-conditioned leadfield
    without regularisation and a negative or NaN value has no meaning.
    """
    return check_number("lambda2", lambda2, 0.0, open_minimum=True)


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
        return f" > {_text(minimum)}" if open_minimum else f" >= {_text(minimum)}"
    if minimum is None:
        return f" <= {_text(maximum)}"
    return f" in {'(' if open_minimum else '['}{_text(minimum)}, {_text(maximum)}]"


def _text(bound):
    """A bound as written in a message: integers exactly, floats briefly."""
    return str(bound) if isinstance(bound, (Integral, np.integer)) else f"{bound:g}"
