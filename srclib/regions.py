"""The test regions A-D and their recordings (paper section III).

The four regions are committed in ``data/regions.yaml``; :func:`resolve_region`
turns a region name, or a custom centre, radius and compartment, into a centre
dipole of a head model, and :func:`region_recording` simulates the continuous
recording that a region's tables are computed from.
"""

from numbers import Real
from pathlib import Path
import zlib

import numpy as np
import yaml

from . import config
from .check import (check_duration, check_option, check_radius, check_region_name, check_seed,
                    check_snr)
from .headmodel import fsaverage_to_mni152, mni152_to_fsaverage
from .simulation import grow_region, simulate


def load_regions(path=None):
    """Read the test regions A-D from ``data/regions.yaml``."""
    path = Path(path) if path is not None else config.REPO_DATA / "regions.yaml"
    with open(path) as fid:
        return yaml.safe_load(fid)


#: The paper's test regions, in order (the keys of ``data/regions.yaml``).
REGIONS = tuple(load_regions())

def paper_table_number(region):
    """The paper's table (roman numeral) that reports a named region: A is Table I."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {list(REGIONS)}, got {region!r}")
    return ("I", "II", "III", "IV", "V", "VI")[REGIONS.index(region)]


#: Farthest a requested centre may lie from the nearest dipole of its
#: compartment (mm). Twice the coarsest cortical dipole spacing (10 mm in the
#: quick profile), so any point of grey matter passes in every profile; the
#: scalp lies 18 mm (thinnest) to 30 mm (typical) from the cortical dipoles,
#: so a centre outside the head, or a cortical point asked for in the deep
#: compartment, is refused instead of snapping to a dipole far away.
MAX_CENTER_DISTANCE_MM = 20.0

#: Farthest a named region's centre may be moved from its own (mm): half the
#: smallest named radius (30 mm), so the moved region still contains the
#: centre its description names. A structure-defined region's centre must
#: also stay in its structure.
MAX_NAMED_SHIFT_MM = 15.0


def default_seed(region):
    """A fixed seed per region name, so that regions get independent recordings."""
    return zlib.crc32(str(region).encode()) % (2**31)


def parse_center_mni(center_mni):
    """Return an MNI152 centre as a list of 3 floats (mm), or None.

    Accepts a sequence of 3 numbers or the same as text (``"[30, -20, 50]"``,
    as a papermill ``-p`` option passes it). This is the one place where a
    centre typed as text is parsed.
    """
    if center_mni is None:
        return None
    message = f"center_mni must be 3 finite MNI152 coordinates (mm), got {center_mni!r}"
    if isinstance(center_mni, str):
        try:
            center_mni = yaml.safe_load(center_mni)
        except yaml.YAMLError:
            raise ValueError(message) from None
    if not isinstance(center_mni, (list, tuple, np.ndarray)) or len(center_mni) != 3:
        raise ValueError(message)
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (Real, np.number))
           for v in center_mni):
        raise ValueError(message)
    mni = np.asarray(center_mni, float)
    if not np.isfinite(mni).all():
        raise ValueError(message)
    return mni.tolist()


def resolve_region(head, region="A", *, center_mni=None, radius_mm=None, compartment=None):
    """Turn a region name or a custom specification into a centre dipole.

    Parameters
    ----------
    head : HeadModel
    region : str
        ``"A"``-``"D"`` (from ``data/regions.yaml``), or any other name for a
        custom region, which then needs ``center_mni``, ``radius_mm`` and
        ``compartment``. Names are checked first
        (:func:`~srclib.check.check_region_name`): they become file names.
    center_mni : sequence of 3 float | None
        MNI152 coordinate (mm) of the centre. It must lie within
        :data:`MAX_CENTER_DISTANCE_MM` of a dipole of the compartment. For a
        named region it moves the centre by at most :data:`MAX_NAMED_SHIFT_MM`
        (and, for B and D, within their structure), so that the region stays
        what its description says; another centre needs a custom name.
    radius_mm : float | None
        Radius; overrides the named region's.
    compartment : ``"cortex"`` | ``"subcortical"`` | None
        Compartment of the centre dipole; a named region only takes its own.

    Returns
    -------
    spec : dict
        ``name``, ``center`` (dipole index), ``radius_mm``, ``compartment``,
        ``center_mni`` (of the chosen dipole), ``structure``, ``description``.
    """
    region = check_region_name(region)
    regions = load_regions()
    if region in regions:
        spec = dict(regions[region])
        _check_named_compartment(region, spec, compartment)
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
    check_option("compartment", spec["compartment"], ("cortex", "subcortical"))
    radius = check_radius(spec["radius_mm"])
    if spec.get("structure"):
        point = _structure_centroid(head, spec["structure"])
    else:
        mni = parse_center_mni(spec.get("center_mni"))
        if mni is None:
            raise ValueError(f"center_mni is required for custom region {region!r}")
        point = mni152_to_fsaverage(np.asarray(mni))
    center = head.nearest_dipole(point, spec["compartment"])
    _check_center_distance(head, point, center, spec["compartment"])
    if region in regions and center_mni is not None:
        _check_named_center(head, region, regions[region], point, center)
    return dict(
        name=region, center=center, radius_mm=radius, compartment=spec["compartment"],
        center_mni=np.round(fsaverage_to_mni152(head.positions[center]), 1).tolist(),
        structure=str(head.structure[center]), description=spec.get("description", ""),
    )


def _structure_centroid(head, structure):
    """Mean position (m) of a deep structure's dipoles."""
    members = head.structure == structure
    if not members.any():
        raise ValueError(f"structure {structure!r} has no dipoles in this head model")
    return head.positions[members].mean(0)


def _mni_text(point):
    """An fsaverage point (m) as rounded MNI152 millimetres, for messages."""
    return str([round(float(v)) for v in fsaverage_to_mni152(point)])


def _check_center_distance(head, point, center, compartment):
    """Refuse a centre farther than :data:`MAX_CENTER_DISTANCE_MM` from its compartment."""
    distance_mm = 1000.0 * float(np.linalg.norm(head.positions[center] - point))
    if distance_mm > MAX_CENTER_DISTANCE_MM:
        raise ValueError(
            f"center_mni must lie within {MAX_CENTER_DISTANCE_MM:g} mm of a {compartment} "
            f"dipole of the head model, got MNI {_mni_text(point)} mm, {distance_mm:.0f} mm "
            f"from the nearest {compartment} dipole"
        )


def _check_named_compartment(region, own, compartment):
    """A named region keeps the compartment its description names."""
    if compartment is not None and compartment != own["compartment"]:
        raise ValueError(
            f"compartment of region {region} ({own['description']}) must be "
            f"{own['compartment']!r} or None, got {compartment!r}; use another region "
            "name for a custom region"
        )


def _check_named_center(head, region, own, point, center):
    """A named region's centre may move, but not out of what its description names."""
    if own.get("structure"):
        own_point = _structure_centroid(head, own["structure"])
    else:
        own_point = mni152_to_fsaverage(np.asarray(own["center_mni"], float))
    shift_mm = float(np.linalg.norm(fsaverage_to_mni152(point) - fsaverage_to_mni152(own_point)))
    where = f"region {region} ({own['description']})"
    if shift_mm > MAX_NAMED_SHIFT_MM:
        raise ValueError(
            f"center_mni of {where} must lie within {MAX_NAMED_SHIFT_MM:g} mm of its own "
            f"centre MNI {_mni_text(own_point)} mm, got MNI {_mni_text(point)} mm, "
            f"{shift_mm:.0f} mm away; use another region name for a custom region"
        )
    if own.get("structure") and head.structure[center] != own["structure"]:
        raise ValueError(
            f"center_mni of {where} must fall in {own['structure']}, got MNI "
            f"{_mni_text(point)} mm, nearest to a dipole of {head.structure[center]}; "
            "use another region name for a custom region"
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
    region : str | dict
        ``"A"``-``"D"`` or a custom name (resolved here with ``**custom``, see
        :func:`resolve_region`), or a region already resolved by
        :func:`resolve_region` (then without ``**custom``), so that a caller
        that needs the resolved region resolves it once.
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
    if isinstance(region, dict):
        if custom:
            raise ValueError(f"a resolved region takes no other settings, got {sorted(custom)}")
        spec = region
    else:
        check_region_name(region)
    duration_s = check_duration(duration_s)
    n_times = int(round(duration_s * config.SFREQ))
    seed = check_seed(seed)
    snr_db = check_snr(snr_db)
    if not isinstance(region, dict):
        spec = resolve_region(head, region, **custom)
    rng = np.random.default_rng(seed)
    c = grow_region(head, spec["center"], spec["radius_mm"])
    eeg, details = simulate(head, c, spec["center"], n_times, snr_db, rng, order=order,
                            return_details=True)
    if return_details:
        details = dict(spec=spec, noise_var=details["noise_var"], orientation=details["orientation"])
        return eeg, c, spec["center"], details
    return eeg, c, spec["center"]
