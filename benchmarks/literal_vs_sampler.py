"""Does the trained network score the same on literal and on sampler windows?

The training windows come from the batched sampler (:mod:`srclib.sampler`);
the test recordings from the literal simulator (:func:`srclib.simulation.simulate`).
This benchmark draws windows with the sampler at 10 dB, then simulates the
same centres, radii, deep orientations and SNRs once more with the literal
simulator (one window per call, fresh AR filters and series), and compares
the network's median localisation error on the two sets by compartment. A
faithful sampler gives the same medians within sampling noise (1-2 mm).

Example::

    python benchmarks/literal_vs_sampler.py --profile paper --n 600
"""

import argparse
import json
import time

import numpy as np

from srclib import config, metrics, network, sampler, simulation
from srclib.headmodel import load_head_model

SEED = 31337  # used by no training, validation or held-out set


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper", choices=sorted(config.PROFILES))
    p.add_argument("--n", type=int, default=600, help="windows in each set")
    p.add_argument("--training", type=int, default=0, help="which of the profile's networks")
    args = p.parse_args(argv)
    head = load_head_model(args.profile, progress=False)
    model = network.load_model(args.profile, head=head, training=args.training, progress=False)
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    X_s, _, meta = sampler.training_set(head, args.n, rng, snr_range_db=(10.0, 10.0),
                                        progress=False, return_meta=True)
    sampler_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    X_l = np.empty_like(X_s)
    for i in range(args.n):
        center = int(meta["center"][i])
        c = simulation.grow_region(head, center, meta["radius_mm"][i])
        X_l[i] = simulation.simulate(head, c, center, config.WINDOW, meta["snr_db"][i], rng,
                                     orientation=meta["orientation"][i])
    literal_s = time.perf_counter() - t0
    report = dict(profile=args.profile, n=args.n, training=args.training,
                  sampler_s=round(sampler_s, 1), literal_s=round(literal_s, 1))
    for name, X in (("sampler", X_s), ("literal", X_l)):
        y = network.predict(model, X)
        mle = np.array([metrics.localization_error_mm(y[i], int(meta["center"][i]),
                                                      head.positions) for i in range(args.n)])
        for comp, deep in (("cortex", False), ("subcortical", True)):
            sel = meta["subcortical"] == deep
            report[f"{name}_{comp}_all_mm"] = round(float(np.median(mle[sel])), 1)
            report[f"{name}_{comp}_r20_mm"] = round(
                float(np.median(mle[sel & (meta["radius_mm"] >= 20)])), 1)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
