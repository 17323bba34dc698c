"""What the data allow: a scanning estimator that knows the simulator's spatial model.

A yardstick for the network, not a tenth solver. For every candidate region
(each dipole as a centre, a grid of radii, the book's coefficient profile,
grown as the simulator grows it) the estimator computes the generalised
likelihood-ratio statistic of a window: the energy of the spatially whitened
window along the region's scalp pattern. A cortical centre has one pattern
(its dipoles point along their normals); a subcortical centre has three, one
per component of the deep orientation the simulator draws, and its
statistic is the largest over orientations (the top eigenvalue of a 3 x 3
matrix). The centre of the best candidate is the estimate.

It knows the simulation forward operator, the region shapes and the profile,
which the network has to learn from examples; it does not know the window's
centre, radius, orientation or SNR. With ``compartment known`` it is told
the compartment too, and scans that compartment's candidates only (three
free orientation components favour subcortical candidates when it must
choose). The whitening is the network's (:func:`srclib.network.fit_whitener`
on windows of another seed). It is scored on the learning curve's fresh
windows (``benchmarks/network_grid.py``: seed 424242, 10 dB) with that
script's medians, beside the book's networks on the same windows.

Example::

    python benchmarks/scan_yardstick.py --profile paper --n 2000
"""

import argparse
import json
from pathlib import Path
import time

import numpy as np
from scipy import sparse
from tqdm.auto import tqdm

from network_grid import HELDOUT_SEED, compartment_medians
from srclib import config, network, sampler, simulation
from srclib.headmodel import load_head_model

WHITENER_SEED = 515151
RADII_MM = (6.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0)
OUT = Path(__file__).with_name("scan_yardstick_cpu.jsonl")


def regions_at(head, centres, radius_mm):
    """The regions grown from some centres at one radius: sparse coefficients (N, len(centres))."""
    columns = [sparse.csc_matrix(simulation.grow_region(head, j, radius_mm)[:, None])
               for j in tqdm(centres, desc=f"regions of {radius_mm:g} mm", leave=False)]
    return sparse.hstack(columns).tocsc()


def candidate_regions(head, radii_mm=RADII_MM):
    """Every dipole as a centre at every radius: sparse coefficients (N, n_candidates)."""
    every = np.arange(head.n_dipoles)
    coefficients = sparse.hstack([regions_at(head, every, r) for r in radii_mm]).tocsc()
    return coefficients, np.tile(every, len(radii_mm))


def deep_patterns(head, coefficients, whitener):
    """Whitened, average-referenced scalp patterns of subcortical regions, one per axis.

    Parameters
    ----------
    head : HeadModel
    coefficients : sparse matrix, shape (N, K)
        The regions' coefficients.
    whitener : ndarray, shape (64, 64)

    Returns
    -------
    patterns : ndarray, shape (K, 64, 3)
        The scalp pattern of each region with every member pointing along x,
        y and z; a deep orientation ``o`` gives ``patterns @ o``.
    """
    lf = head.leadfield("simulation")  # (64, N, 3)
    return np.stack([whitener @ simulation.average_reference(
        np.asarray(coefficients.T @ lf[:, :, k].T).T) for k in range(3)], axis=-1
    ).transpose(1, 0, 2)


def glr_orientation_free(y, basis, block=50):
    """Largest likelihood-ratio statistic over the deep orientations, per window and candidate.

    Parameters
    ----------
    y : ndarray, shape (n, 64, T)
        Whitened, average-referenced windows.
    basis : ndarray, shape (K, 64, 3)
        An orthonormal basis of each candidate's patterns (QR of
        :func:`deep_patterns`).
    block : int
        Windows processed together.

    Returns
    -------
    stat : ndarray, shape (n, K)
        The top eigenvalue of each candidate's 3 x 3 matrix of projected energies.
    """
    out = np.empty((len(y), len(basis)))
    for w0 in range(0, len(y), block):
        proj = np.einsum("nct,kcj->nktj", y[w0 : w0 + block], basis, optimize=True)
        gram = np.einsum("nkti,nktj->nkij", proj, proj, optimize=True)
        out[w0 : w0 + block] = np.linalg.eigvalsh(gram)[..., -1]
    return out


def whitened_patterns(head, coefficients, centres, whitener):
    """Unit scalp patterns of the candidates, average-referenced and whitened.

    Returns
    -------
    cortical : ndarray, shape (64, n_cortical_candidates)
    deep : ndarray, shape (n_deep_candidates, 64, 3)
        An orthonormal basis of each subcortical candidate's patterns.
    """
    lf = head.leadfield("simulation")  # (64, N, 3)
    deep_centre = ~head.is_cortical[centres]
    normal_gains = np.einsum("cnk,nk->cn", lf, np.where(head.is_cortical[:, None],
                                                        head.normals, 0.0))
    cortical = whitener @ simulation.average_reference(
        np.asarray(coefficients[:, ~deep_centre].T @ normal_gains.T).T)
    cortical /= np.linalg.norm(cortical, axis=0, keepdims=True)
    deep, _ = np.linalg.qr(deep_patterns(head, coefficients[:, deep_centre], whitener))
    return cortical, deep  # deep: (K, 64, 3), orthonormal columns


def scan(X, cortical, deep, whitener, block=4):
    """Each window's best cortical and best subcortical candidate, and their statistics."""
    best = {k: np.empty(len(X), int) for k in ("cortex", "deep")}
    stat = {k: np.empty(len(X)) for k in ("cortex", "deep")}
    for w0 in tqdm(range(0, len(X), block), desc="windows", leave=False):
        x = np.asarray(X[w0 : w0 + block], np.float64)
        x = whitener @ simulation.average_reference(x)  # (b, 64, T)
        s_ctx = np.einsum("bct,ck->bkt", x, cortical, optimize=True)
        s_ctx = np.einsum("bkt,bkt->bk", s_ctx, s_ctx)
        s_deep = glr_orientation_free(x, deep, block=block)
        for name, s in (("cortex", s_ctx), ("deep", s_deep)):
            best[name][w0 : w0 + len(x)] = s.argmax(1)
            stat[name][w0 : w0 + len(x)] = s.max(1)
    return best, stat


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper", choices=sorted(config.PROFILES))
    p.add_argument("--n", type=int, default=2000, help="fresh windows")
    p.add_argument("--snr-db", type=float, default=10.0, help="their SNR")
    p.add_argument("--n-whitener", type=int, default=4000, help="windows the whitening is fit on")
    p.add_argument("--out", type=Path, default=OUT, help="JSON lines file the result is added to")
    args = p.parse_args(argv)
    head = load_head_model(args.profile, progress=False)
    t0 = time.perf_counter()
    coefficients, centres = candidate_regions(head)
    W_fit = sampler.training_set(head, args.n_whitener, np.random.default_rng(WHITENER_SEED),
                                 progress=False)[0]
    whitener = network.fit_whitener(W_fit).numpy().astype(np.float64)
    cortical, deep = whitened_patterns(head, coefficients, centres, whitener)
    t_setup = time.perf_counter() - t0
    X, _, meta = sampler.training_set(head, args.n, np.random.default_rng(HELDOUT_SEED),
                                      snr_range_db=(args.snr_db, args.snr_db), progress=False,
                                      return_meta=True)
    t0 = time.perf_counter()
    best, stat = scan(X, cortical, deep, whitener)
    t_scan = time.perf_counter() - t0
    deep_centre = ~head.is_cortical[centres]
    centre = {"cortex": centres[~deep_centre][best["cortex"]],
              "deep": centres[deep_centre][best["deep"]]}

    def medians(estimate):
        return compartment_medians(estimate, meta, head.positions)

    known = np.where(meta["subcortical"], centre["deep"], centre["cortex"])
    unknown = np.where(stat["deep"] > stat["cortex"], centre["deep"], centre["cortex"])
    networks = []
    for model in network.load_models(args.profile, head=head, progress=False):
        peaks = network.predict(model, X).argmax(1)  # the localisation error's peak
        networks.append(medians(peaks))
    report = dict(profile=args.profile, n=args.n, seed=HELDOUT_SEED, snr_db=args.snr_db,
                  radii_mm=list(RADII_MM), n_candidates=len(centres),
                  compartment_known=medians(known),
                  compartment_unknown=medians(unknown),
                  compartment_right=round(float(np.mean(
                      (stat["deep"] > stat["cortex"]) == meta["subcortical"])), 3),
                  networks=networks, setup_s=round(t_setup, 1), scan_s=round(t_scan, 1))
    print(json.dumps(report))
    with open(args.out, "a") as fid:
        fid.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
