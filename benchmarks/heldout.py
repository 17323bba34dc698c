"""Train one network configuration and score it on fresh held-out simulations.

The held-out windows come from the training sampler with a seed never used
for training or validation, at a fixed 10 dB SNR; the score is the median
localisation error (mm) by compartment, for centres of radius 20 mm and more
and for all radii. Nothing here touches the cached profile artifacts.

Example (a short configuration on the paper head model)::

    python benchmarks/heldout.py --n-train 10000 --n-steps 400 --schedule cosine
"""

import argparse
import json
import time

import numpy as np
import torch

from srclib import config, metrics, network, sampler
from srclib.headmodel import load_head_model

HELDOUT_SEED = 424242
TRAIN_SEED = 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper", choices=sorted(config.PROFILES))
    p.add_argument("--n-train", type=int, default=10_000, help="distinct training windows")
    p.add_argument("--n-steps", type=int, default=400, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    p.add_argument("--warmup-fraction", type=float, default=None)
    p.add_argument("--prior-bias", choices=["yes", "no"], default=None,
                   help="start the output bias at the prior's logit (default: the profile's "
                        "setting, no)")
    p.add_argument("--select", default="localisation", choices=["localisation", "bce"],
                   help="checkpoint selection criterion")
    p.add_argument("--embed-dim", type=int, default=None)
    p.add_argument("--hidden-dim", type=int, default=None)
    p.add_argument("--fc-dims", type=lambda v: [int(d) for d in v.split(",")], default=None,
                   help="comma-separated widths, e.g. 256,512,1024")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--whiten", action="store_true", help="fixed spatial whitening of the input")
    p.add_argument("--cached", action="store_true",
                   help="train on the first n windows of the profile's cached training set")
    p.add_argument("--n-heldout", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    return p.parse_args(argv)


def heldout_scores(model, head, n, seed=HELDOUT_SEED):
    """Median MLE (mm) by compartment on ``n`` fresh windows at 10 dB."""
    X, Y, meta = sampler.training_set(head, n, np.random.default_rng(seed),
                                      snr_range_db=(10.0, 10.0), progress=False,
                                      return_meta=True)
    y = network.predict(model, X)
    mle = np.array([metrics.localization_error_mm(y[i], int(meta["center"][i]), head.positions)
                    for i in range(n)])
    out = {}
    for name, deep in (("cortex", False), ("subcortical", True)):
        comp = meta["subcortical"] == deep
        out[f"{name}_r20_mm"] = float(np.median(mle[comp & (meta["radius_mm"] >= 20)]))
        out[f"{name}_all_mm"] = float(np.median(mle[comp]))
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    head = load_head_model(args.profile, progress=False)
    params = config.get_params(args.profile, "network")
    t0 = time.perf_counter()
    if args.cached:
        X, Y, _ = sampler.load_training_set(args.profile, head, progress=False)
        if args.n_train > len(X):
            raise SystemExit(f"--n-train {args.n_train} exceeds the cached set ({len(X)})")
        X, Y = X[: args.n_train], Y[: args.n_train]
    else:
        X, Y = sampler.training_set(head, args.n_train, np.random.default_rng(TRAIN_SEED),
                                    progress=False)
    sampling_s = time.perf_counter() - t0
    for name in ("embed_dim", "hidden_dim", "fc_dims", "dropout"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    torch.manual_seed(params["seed"])
    model = network.SourceLSTM(head.n_dipoles, params["embed_dim"], params["hidden_dim"],
                               params["fc_dims"], dropout=params["dropout"], whiten=args.whiten,
                               out_rank=params.get("out_rank"))
    localise = args.select == "localisation"
    result = network.train(
        model, X, Y, n_steps=args.n_steps,
        batch_size=args.batch_size or params["batch_size"],
        learning_rate=args.learning_rate or params["learning_rate"],
        warmup_fraction=(params["warmup_fraction"] if args.warmup_fraction is None
                         else args.warmup_fraction),
        schedule=args.schedule, weight_decay=params["weight_decay"],
        validation_fraction=params["validation_fraction"], seed=params["seed"],
        prior_bias=(params["prior_bias"] if args.prior_bias is None
                    else args.prior_bias == "yes"),
        positions=head.positions if localise else None,
        is_cortical=head.is_cortical if localise else None, progress=False,
    )
    scores = heldout_scores(model, head, args.n_heldout)
    report = dict(vars(args), sampling_s=round(sampling_s, 1),
                  training_s=round(result["seconds"], 1), steps=result["steps"],
                  s_per_step=round(result["seconds"] / max(result["steps"], 1), 3),
                  best_epoch=result["best_epoch"], epochs=len(result["history"]),
                  **{k: round(v, 1) for k, v in result["history"][result["best_epoch"] - 1].items()
                     if k.startswith("val_mle")},
                  **{k: round(v, 1) for k, v in scores.items()})
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
