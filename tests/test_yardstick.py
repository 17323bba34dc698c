"""The scanning yardstick of benchmarks/scan_yardstick.py finds a region that is alone."""

from pathlib import Path
import sys

import numpy as np

from srclib import simulation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import scan_yardstick as yardstick  # noqa: E402  (a script beside network_grid.py)


def test_scan_finds_a_lone_region_in_each_compartment(head):
    """Without background, a region's window lies on its own pattern: the scan's best candidate."""
    radii = (10.0, 20.0)
    coefficients, centres = yardstick.candidate_regions(head, radii)
    whitener = np.eye(64)
    cortical, deep = yardstick.whitened_patterns(head, coefficients, centres, whitener)
    rng = np.random.default_rng(3)
    picks = [int(rng.choice(np.flatnonzero(head.is_cortical))),
             int(rng.choice(np.flatnonzero(~head.is_cortical)))]
    orientation = simulation.random_orientation(rng)
    gains = simulation.dipole_gains(head, orientation)
    windows = []
    for centre in picks:
        c = simulation.grow_region(head, centre, radii[1])
        series = rng.standard_normal(50)
        x = simulation.average_reference(np.outer(gains @ c, series))
        windows.append(x + 1e-6 * np.abs(x).max() * rng.standard_normal(x.shape))
    best, stat = yardstick.scan(np.array(windows), cortical, deep, whitener)
    deep_centre = ~head.is_cortical[centres]
    assert centres[~deep_centre][best["cortex"][0]] == picks[0]
    assert centres[deep_centre][best["deep"][1]] == picks[1]
    # The right compartment wins, and the statistic is the window's whole energy.
    assert stat["cortex"][0] > stat["deep"][0] * (1 - 1e-6)
    assert stat["deep"][1] > stat["cortex"][1]
    assert np.isclose(stat["deep"][1], (windows[1] ** 2).sum(), rtol=1e-4)
