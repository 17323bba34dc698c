"""The test regions A-D and their recordings (paper section III).

The four regions are committed in ``data/regions.yaml``; :func:`resolve_region`
turns a region name, or a custom centre, radius and compartment, into a centre
dipole of a head model, and :func:`region_recording` simulates the continuous
recording that a region's tables are computed from.
"""

from pathlib import Path
import zlib

import numpy as np
import yaml

from . import config
from .check import check_radius, check_seed, check_snr
from .headmodel import fsaverage_to_mni152, mni152_to_fsaverage
from .simulation import grow_region, simulate


def load_regions(path=None):
    """Read the test regions A-D from ``data/regions.yaml``."""
    path = Path(path) if path is not None else config.REPO_DATA / "regions.yaml"
    with open(path) as fid:
        return yaml.safe_load(fid)


#: The paper's test regions, in order (the keys of ``data/regions.yaml``).
REGIONS = tuple(load_regions())


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
    try:
        mni = np.asarray(center_mni, float)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if mni.shape != (3,) or not np.isfinite(mni).all():
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
    radius = check_radius(spec["radius_mm"])
    if spec.get("structure"):
        members = head.structure == spec["structure"]
        if not members.any():
            raise ValueError(f"structure {spec['structure']!r} has no dipoles in this head model")
        point = head.positions[members].mean(0)
    else:
        mni = parse_center_mni(spec.get("center_mni"))
        if mni is None:
            raise ValueError(f"center_mni is required for custom region {region!r}")
        point = mni152_to_fsaverage(np.asarray(mni))
    center = head.nearest_dipole(point, spec["compartment"])
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
    seed = check_seed(seed)
    snr_db = check_snr(snr_db)
    spec = resolve_region(head, region, **custom)
    rng = np.random.default_rng(seed)
    c = grow_region(head, spec["center"], spec["radius_mm"])
    eeg, details = simulate(head, c, spec["center"], n_times, snr_db, rng, order=order,
                            return_details=True)
    if return_details:
        details = dict(spec=spec, noise_var=details["noise_var"], orientation=details["orientation"])
        return eeg, c, spec["center"], details
    return eeg, c, spec["center"]
