"""How well a deep region's centre can be found when everything else is known.

The project's deep target (a median localisation error of at most 8 mm for
subcortical regions of radius 20 mm or more, 10 dB) asks whether the network
is as good as the data allow. This script scores, on the same windows as the
networks, estimators that know the simulator: for every deep dipole as a
candidate centre they grow the region as the simulator grows it and compute
the generalised likelihood-ratio statistic of the window (the energy of the
spatially whitened window along the candidate's scalp patterns, the waveform
unknown). Two kinds read these statistics:

* the *likelihood peak* keeps the best candidate, as ``scan_yardstick.py``
  does: with the radius guessed from the yardstick's nine radii or from
  every whole mm from 20 to 60; told the window's radius (to the nearest
  0.5 mm); told the radius and the deep orientation (one pattern per
  candidate), which is the maximum-likelihood centre;
* the *posterior median* weighs every candidate by exp(t * statistic / 2)
  and picks the one with the least posterior mean distance to the others,
  the choice a median error rewards: told the radius (t = 1), or summing over every
  whole radius from 5 to 60 mm (the training windows' range), with t = 1
  (the whitened samples as independent Gaussian ones) and t = 0.5 (as half
  as many, since the series are smooth in time).

None of these is a bound; they estimate what the windows hold for an
estimator that is told the radius and for one that, like the networks, is
not.

The book's networks are scored on the same windows: the standard networks
through :func:`srclib.network.load_models`, and any folder given with
``--model`` (a stored network whose settings are no longer the profile's,
such as the recorded long build, read from its files).

Windows are drawn by the sampler with every centre deep and radii uniform
in [20, 60] mm (seed 737373, never used for training), at each ``--snr-db``;
the whitening is fitted per SNR on sampler windows of another seed at that
SNR (:func:`srclib.network.fit_whitener`).

Example::

    python benchmarks/deep_oracle.py --profile paper --n 600 --snr-db 10 20 40
"""

import argparse
import json
from pathlib import Path
import time

import numpy as np
from tqdm.auto import tqdm

from network_grid import centre_errors_mm
from scan_yardstick import RADII_MM, deep_patterns, glr_orientation_free, regions_at
from srclib import config, network, sampler, simulation
from srclib.headmodel import load_head_model

WINDOW_SEED = 737373
WHITENER_SEED = 616161
RADIUS_STEP_MM = 0.5
FINE_RADII_MM = tuple(float(r) for r in range(20, 61))
PRIOR_RADII_MM = tuple(float(r) for r in range(5, 61))
TEMPERATURES = (1.0, 0.5)
OUT = Path(__file__).with_name("deep_oracle_cpu.jsonl")


def deep_regions(head, radius_mm):
    """Coefficients of every deep dipole's region at one radius: sparse (N, n_deep)."""
    return regions_at(head, np.flatnonzero(~head.is_cortical), radius_mm)


def glr_oriented(y, patterns, orientation):
    """Statistic along one pattern per candidate, for a known orientation."""
    p = patterns @ orientation  # (K, 64)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return np.sum((p @ y) ** 2, axis=1)


def deep_windows(head, n, snr_db, seed):
    """``n`` sampler windows with deep centres and radii in [20, 60] mm at one SNR."""
    X, _, meta = sampler.training_set(
        head, n, np.random.default_rng(seed), fraction_subcortical=1.0,
        radius_range_mm=(20.0, 60.0), snr_range_db=(snr_db, snr_db), progress=False,
        return_meta=True)
    return X, meta


def whitened_windows(X, whitener):
    """Average-referenced windows scaled to unit standard deviation, then whitened.

    The scaling is the one :func:`srclib.network.fit_whitener` fits on, so
    that the whitened background has about unit variance per channel and
    sample, the scale the likelihood of :func:`posterior_median` assumes.
    """
    x = simulation.average_reference(np.asarray(X, np.float64))
    return whitener @ (x / x.std(axis=(1, 2), keepdims=True))


def posterior_median(log_weight, distance):
    """The candidate nearest, on average, to the posterior: argmin_k sum_j p_j d_jk.

    Parameters
    ----------
    log_weight : ndarray, shape (n, K)
        Log posterior of each window's candidates, up to a constant.
    distance : ndarray, shape (K, K)
        Distances between the candidates' centres.
    """
    p = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True) @ distance).argmin(axis=1)


def oracle_estimates(head, X, meta, whitener):
    """Estimated centres (dipole indices) of every estimator, by name.

    A candidate's log likelihood is taken as half its statistic times a
    temperature (1: the whitened samples as independent Gaussians; 0.5: as
    if half as many, since the series are smooth in time); the posterior
    over centres sums it over the prior's radii (uniform, every whole mm
    from 5 to 60, the training windows' range).
    """
    deep = np.flatnonzero(~head.is_cortical)
    distance = 1000.0 * np.linalg.norm(head.positions[deep][:, None]
                                       - head.positions[deep][None], axis=2)
    snapped = np.round(meta["radius_mm"] / RADIUS_STEP_MM) * RADIUS_STEP_MM
    y = whitened_windows(X, whitener)
    peaks = {"likelihood peak, radius unknown (nine radii)": set(RADII_MM),
             "likelihood peak, radius unknown (20-60 mm, every mm)": set(FINE_RADII_MM)}
    est = {k: np.zeros(len(X), int) for k in peaks}
    best = {k: np.full(len(X), -np.inf) for k in peaks}
    known = np.zeros((len(X), len(deep)))  # statistic at each window's own radius
    oriented = np.zeros(len(X), int)
    prior = np.zeros((len(X), len(PRIOR_RADII_MM), len(deep)), np.float32)
    radii = sorted(set(snapped) | set(RADII_MM) | set(FINE_RADII_MM) | set(PRIOR_RADII_MM))
    for radius in tqdm(radii, desc="radii", leave=False):
        patterns = deep_patterns(head, deep_regions(head, radius), whitener)
        basis = np.linalg.qr(patterns)[0]
        mine = np.flatnonzero(snapped == radius)
        if radius in PRIOR_RADII_MM or any(radius in g for g in peaks.values()):
            stat = glr_orientation_free(y, basis)
        else:
            stat = np.zeros((len(y), len(deep)))
            stat[mine] = glr_orientation_free(y[mine], basis)
        for name, grid in peaks.items():
            if radius in grid:
                better = stat.max(1) > best[name]
                best[name][better] = stat.max(1)[better]
                est[name][better] = deep[stat.argmax(1)[better]]
        if radius in PRIOR_RADII_MM:
            prior[:, PRIOR_RADII_MM.index(radius)] = stat
        known[mine] = stat[mine]
        for i in mine:
            oriented[i] = deep[glr_oriented(y[i], patterns, meta["orientation"][i]).argmax()]
    est["likelihood peak, radius known"] = deep[known.argmax(1)]
    est["likelihood peak, radius and orientation known"] = oriented
    est["posterior median, radius known"] = deep[posterior_median(known / 2, distance)]
    for tau in TEMPERATURES:
        log_weight = np.logaddexp.reduce(tau / 2 * prior.astype(np.float64), axis=1)
        est[f"posterior median, radius unknown (temperature {tau:g})"] = deep[
            posterior_median(log_weight, distance)]
    return est


def errors(estimate, meta, positions):
    """The median localisation error (mm) and the share of windows within 8 mm.

    Deep dipoles lie on a 3.56 mm grid, so errors take few distinct values
    and a median moves in steps; the share within the target's 8 mm says
    how far a median is from that target.
    """
    error = centre_errors_mm(estimate, meta, positions)
    return dict(median_mm=round(float(np.median(error)), 1),
                within_8mm=round(float(np.mean(error <= 8.0)), 3))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper", choices=sorted(config.PROFILES))
    p.add_argument("--n", type=int, default=600, help="deep windows per SNR")
    p.add_argument("--snr-db", type=float, nargs="+", default=[10.0, 20.0, 40.0])
    p.add_argument("--n-whitener", type=int, default=4000, help="windows the whitening is fit on")
    p.add_argument("--model", action="append", default=[], type=Path,
                   help="a stored network's folder, scored beside the book's (repeatable)")
    p.add_argument("--out", type=Path, default=OUT, help="JSON lines file the result is added to")
    args = p.parse_args(argv)
    head = load_head_model(args.profile, progress=False)
    models = {f"book network {k + 1}": m for k, m in enumerate(
        network.load_models(args.profile, head=head, progress=False))}
    models.update({f.name: network.read_model(f) for f in args.model})
    for snr in args.snr_db:
        t0 = time.perf_counter()
        fit = sampler.training_set(head, args.n_whitener, np.random.default_rng(WHITENER_SEED),
                                   snr_range_db=(snr, snr), progress=False)[0]
        whitener = network.fit_whitener(fit).numpy().astype(np.float64)
        X, meta = deep_windows(head, args.n, snr, WINDOW_SEED)
        est = oracle_estimates(head, X, meta, whitener)
        report = dict(profile=args.profile, n=args.n, seed=WINDOW_SEED, snr_db=snr,
                      radius_range_mm=[20.0, 60.0],
                      oracle={k: errors(v, meta, head.positions) for k, v in est.items()},
                      networks={
                          name: dict(errors(network.predict(m, X).argmax(1), meta,
                                            head.positions), **{
                              k: m.card["training"][k]
                              for k in ("learning_rate", "n_steps", "n_windows", "seed")},
                              # absent from the cards of networks trained before it was a setting
                              prior_bias=m.card["training"].get("prior_bias", True))
                          for name, m in models.items()},
                      seconds=round(time.perf_counter() - t0, 1))
        print(json.dumps(report), flush=True)
        with open(args.out, "a") as fid:
            fid.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
