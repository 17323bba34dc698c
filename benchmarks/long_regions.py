"""Train the first network of the configuration ``long`` and score it on regions A-D.

Runs the book's own code path under ``SRCLIB_TRAINING=long``: the long
configuration's training set (:func:`srclib.sampler.build_training_set`,
stored in ``data/<profile>/training_long/``), its first training
(:func:`srclib.network.train_model`, stored in ``model_long/``), then the
same 2000 fresh held-out windows at 10 dB as ``network_grid.py`` and the
four test regions (:func:`srclib.results.run_region` with this one network:
its results are written under their own ``_model<hash>`` names and never
replace the book's). Appends one JSON line to ``--out``: the training card,
the held-out medians and, for each region and method, the median
localisation error with its 95 % bootstrap interval over recordings (mm).
Everything is cached: a second run only reads it back.

A whole ``make book TRAINING=long`` trains three such networks; this is the
affordable check, on two CPU cores, of what one of them does on the regions.

Example::

    python benchmarks/long_regions.py --out benchmarks/network_long_regions_cpu.jsonl
"""

import argparse
import json
import os

import numpy as np

import network_grid
from srclib import cache, network, results, sampler
from srclib.headmodel import load_head_model


def long_arguments(argv, description, out):
    """``--profile`` and ``--out`` (default ``out``) of a run; selects the configuration long."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--profile", default="paper")
    p.add_argument("--out", default=out)
    args = p.parse_args(argv)
    os.environ["SRCLIB_TRAINING"] = "long"
    return args


def main(argv=None):
    args = long_arguments(argv, __doc__.splitlines()[0], "network_long_regions.jsonl")
    head = load_head_model(args.profile, progress=False)
    folder = sampler.build_training_set(args.profile, head)
    model = network.train_model(args.profile, head, training=0)
    held, meta = network_grid.heldout_set(head)
    card = {k: v for k, v in model.card["training"].items() if k != "history"}
    card["val_by_epoch"] = [[round(h.get("val_mle_cortex_mm", np.nan), 1),
                             round(h.get("val_mle_subcortical_mm", np.nan), 1)]
                            for h in model.card["training"]["history"]]
    report = dict(profile=args.profile, training=card, device=model.card["hardware"]["device"],
                  torch_threads=model.card["hardware"]["torch_threads"],
                  sampling_s=cache.read_provenance(folder)["seconds"],
                  **network_grid.heldout_medians(model, held, meta, head.positions))
    print(json.dumps({k: v for k, v in report.items() if k != "training"}), flush=True)
    for region in "ABCD":
        run = results.run_region(args.profile, region, head=head, model=model, progress=False)
        mle = run["intervals"].xs("MLE_mm", level="metric")
        report[f"region_{region}_mle_mm"] = {
            method: [round(float(row[k]), 1) for k in ("median", "low", "high")]
            for method, row in mle.iterrows()}
        print(region, json.dumps(report[f"region_{region}_mle_mm"]), flush=True)
    with open(args.out, "a") as fid:
        fid.write(json.dumps(report, default=str) + "\n")


if __name__ == "__main__":
    main()
