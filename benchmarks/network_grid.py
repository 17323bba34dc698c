"""Train a grid of network configurations and score each on fresh held-out windows.

The configurations of :data:`GRIDS` run in their listed order (most telling
first) until a time budget is spent; each finished one appends a JSON line to
``--out`` (configuration, device, seconds per step, kept epoch, validation
medians by epoch, held-out medians). Training windows come from the sampler
(seed 1, all radii and SNRs), held-out windows from the same sampler with
another seed (424242) at 10 dB; smaller training sets are the first windows of
the largest one, so the learning curve changes only the number of distinct
windows. Nothing here reads or writes the profile caches.

Where the profile's head model cannot be built (a GPU machine without the
build tools), ``--head`` reads one saved with :mod:`pickle` instead.

Example::

    python benchmarks/network_grid.py --grid ablation --budget-s 480 --out grid.jsonl
"""

import argparse
import json
import os
import pickle
import time

import numpy as np
import pandas as pd
import torch

from srclib import config, network, sampler
from srclib.headmodel import load_head_model

TRAIN_SEED = 1
HELDOUT_SEED = 424242

BOOK = dict(embed_dim=64, hidden_dim=128, fc_dims=[256, 512, 1024])
LARGE = dict(embed_dim=128, hidden_dim=256, fc_dims=[512, 1024, 2048])
#: The book network as two CPU cores train it: the output layer through 256
#: units, batches of 128 (the profile's standard configuration).
CPU_BOOK = dict(BOOK, out_rank=256, batch_size=128)

#: Named grids: each configuration is a name and the settings it changes.
GRIDS = {
    "ablation": [
        dict(name="book, 1600 steps", **BOOK, n_steps=1600),
        dict(name="book, 6400 steps", **BOOK, n_steps=6400),
        dict(name="book, 6400 steps, gaussian r/2 profile", **BOOK, n_steps=6400,
             shape="gaussian"),
        dict(name="large, 6400 steps", **LARGE, n_steps=6400),
        dict(name="book, 6400 steps, 4,000 windows", **BOOK, n_steps=6400, n_train=4000),
        dict(name="book, 6400 steps, 400 windows", **BOOK, n_steps=6400, n_train=400),
        dict(name="book, 6400 steps, output bias 0", **BOOK, n_steps=6400, prior_bias=False),
        dict(name="book, 1600 steps, gaussian r/2 profile", **BOOK, n_steps=1600,
             shape="gaussian"),
        dict(name="large, 12800 steps", **LARGE, n_steps=12800),
    ],
    "steps": [
        dict(name="book, 3200 steps", **BOOK, n_steps=3200),
        dict(name="book, 6400 steps, batch 128", **BOOK, n_steps=6400, batch_size=128),
        dict(name="book, narrow 128-256-512, 6400 steps", embed_dim=64, hidden_dim=128,
             fc_dims=[128, 256, 512], n_steps=6400),
        dict(name="book, 6400 steps, 400 windows", **BOOK, n_steps=6400, n_train=400),
        dict(name="book, 12800 steps", **BOOK, n_steps=12800),
        dict(name="book, 6400 steps, output bias 0", **BOOK, n_steps=6400, prior_bias=False),
    ],
    # Two CPU cores: the output layer through 256 linear units (three times
    # cheaper steps), trained on the paper profile's own training set
    # (--windows book); the stored network of the book is scored beside them.
    "cpu": [
        dict(name="book, rank-256 output, batch 128, 6400 steps", **CPU_BOOK, n_steps=6400),
        dict(name="the book's first network, as stored at the time", stored=True),
        dict(name="book, rank-256 output, 1600 steps", **BOOK, out_rank=256, n_steps=1600),
    ],
    # The learning curve in the CPU configuration: the same steps on a tenth
    # and a hundredth of the training set (the first "cpu" row is the full set).
    "curve": [
        dict(name="book, rank-256 output, batch 128, 6400 steps, 4,000 windows", **CPU_BOOK,
             n_steps=6400, n_train=4000),
        dict(name="book, rank-256 output, batch 128, 6400 steps, 400 windows", **CPU_BOOK,
             n_steps=6400, n_train=400),
    ],
    # The learning curve with the profile the book trains on now (one shape per
    # compartment): the paper profile's first network as stored (the whole
    # training set), then the same 6400 steps on its first tenth and hundredth.
    "curve_now": [
        dict(name="curve: the book's first network, 40,000 windows", stored=True),
        dict(name="curve: 400 windows", **CPU_BOOK, n_steps=6400,
             n_train=400),
        dict(name="curve: 4,000 windows", **CPU_BOOK, n_steps=6400, n_train=4000),
    ],
    # One more point of the learning curve, beyond the stored set: 100,000
    # windows fresh from the sampler (--windows sampler, seed 1; not a
    # superset of the book's windows), the same configuration and steps.
    "curve_more": [
        dict(name="curve: 100,000 windows", **CPU_BOOK, n_steps=6400, n_train=100_000),
    ],
    # The training configuration `long` (four times the steps, meant for a
    # GPU) on the book's stored windows (--windows book), on two CPU cores,
    # after the book's first network as stored (the standard 6400 steps on
    # the same windows with the same seed).
    "long": [
        dict(name="steps: the book's first network, 6400 steps", stored=True),
        dict(name="long: 25,600 steps, the book's 40,000 windows", **CPU_BOOK, n_steps=25_600),
    ],
    # The long schedule on more distinct windows (--windows sampler --n-train
    # 100000): the run that the "long" row's early validation minimum asks for.
    "long_more": [
        dict(name="long: 25,600 steps, 100,000 fresh windows", **CPU_BOOK,
              n_steps=25_600, n_train=100_000),
    ],
    # The optimiser's choices at the standard configuration's steps, on the
    # book's stored windows (--windows book): the book's three networks as
    # stored then (learning rate 1e-3, output bias at the prior's logit;
    # seeds 7, 8, 9), then one choice changed at a time, with the first
    # network's seed and, for the learning rate, the second's too.
    "optim": [
        dict(name="optim: the book's first network (learning rate 1e-3)", stored=True),
        dict(name="optim: learning rate 2e-3", **CPU_BOOK, n_steps=6400, learning_rate=2e-3),
        dict(name="optim: output bias 0", **CPU_BOOK, n_steps=6400, prior_bias=False),
        dict(name="optim: learning rate 2e-3, seed 8", **CPU_BOOK,
             n_steps=6400, learning_rate=2e-3, seed=8),
        dict(name="optim: learning rate 2e-3, output bias 0", **CPU_BOOK,
              n_steps=6400, learning_rate=2e-3, prior_bias=False),
        dict(name="optim: learning rate 4e-3", **CPU_BOOK, n_steps=6400, learning_rate=4e-3),
        dict(name="optim: the book's second network (learning rate 1e-3)", stored=True,
             training=1),
        dict(name="optim: the book's third network (learning rate 1e-3)", stored=True,
             training=2),
        # Added later: the rate between 2e-3 and 4e-3, and second and third
        # seeds for the output bias's two starts at the rate the book uses.
        dict(name="optim: learning rate 3e-3", **CPU_BOOK, n_steps=6400, learning_rate=3e-3),
        dict(name="optim: learning rate 2e-3, output bias 0, seed 8", **CPU_BOOK,
              n_steps=6400, learning_rate=2e-3, prior_bias=False, seed=8),
        dict(name="optim: learning rate 2e-3, seed 9", **CPU_BOOK,
             n_steps=6400, learning_rate=2e-3, seed=9),
        dict(name="optim: learning rate 2e-3, output bias 0, seed 9", **CPU_BOOK,
              n_steps=6400, learning_rate=2e-3, prior_bias=False, seed=9),
    ],
    # The long configuration at the optimiser's current peak learning rate
    # (2e-3): its first training (seed 7) on the long training set
    # (SRCLIB_TRAINING=long, --windows book --n-train 100000), to set beside
    # the recorded long build at 1e-3 (benchmarks/long_book_cpu.jsonl).
    "long_optim": [
        dict(name="long_optim: 25,600 steps, learning rate 2e-3, the long training set",
             **CPU_BOOK, n_steps=25_600, learning_rate=2e-3),
        # The output bias at the layer's default start, as the profiles now train.
        dict(name="long_optim: 25,600 steps, learning rate 2e-3, default output bias",
             **CPU_BOOK, n_steps=25_600, learning_rate=2e-3, prior_bias=False),
    ],
    "smoke": [
        dict(name="tiny", embed_dim=8, hidden_dim=8, fc_dims=[16, 16, 16], n_steps=4,
             n_train=200),
        dict(name="tiny, gaussian r/2", embed_dim=8, hidden_dim=8, fc_dims=[16, 16, 16],
             n_steps=4, n_train=100, shape="gaussian"),
        dict(name="tiny, rank-4 output", embed_dim=8, hidden_dim=8, fc_dims=[16, 16, 16],
             out_rank=4, n_steps=4, n_train=100),
    ],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper", choices=sorted(config.PROFILES))
    p.add_argument("--grid", default="ablation", choices=sorted(GRIDS))
    p.add_argument("--n-train", type=int, default=40_000,
                   help="distinct training windows of a configuration that names none")
    p.add_argument("--n-heldout", type=int, default=2000)
    p.add_argument("--windows", default="sampler", choices=["sampler", "book"],
                   help="training windows: fresh from the sampler (seed 1), or the "
                        "profile's stored training set (its own seed and size)")
    p.add_argument("--budget-s", type=float, default=float("inf"),
                   help="start no configuration expected to end after this many seconds")
    p.add_argument("--n-jobs", type=int, default=None, help="sampler processes")
    p.add_argument("--head", default=None, help="a pickled HeadModel to use")
    p.add_argument("--out", default="network_grid.jsonl")
    p.add_argument("--resume", action="store_true",
                   help="skip the configurations whose name --out already holds")
    return p.parse_args(argv)


def heldout_medians(model, X, meta, positions):
    """Median localisation error (mm) by compartment, radius >= 20 mm and all radii."""
    peak = network.predict(model, X).argmax(1)
    return compartment_medians(peak, meta, positions, prefix="heldout_")


def centre_errors_mm(estimate, meta, positions):
    """Distance (mm) from each estimated centre (dipole index) to the true one."""
    return 1000.0 * np.linalg.norm(positions[estimate] - positions[meta["center"]], axis=1)


def compartment_medians(estimate, meta, positions, prefix=""):
    """Median distance (mm) from estimated to true centres, by compartment and radius.

    Keys ``<prefix><cortex|deep>_<r20|all>_mm``: regions of 20 mm or more,
    and all radii.
    """
    error = centre_errors_mm(estimate, meta, positions)
    out = {}
    for name, deep in (("cortex", False), ("deep", True)):
        comp = meta["subcortical"] == deep
        out[f"{prefix}{name}_r20_mm"] = round(float(np.median(
            error[comp & (meta["radius_mm"] >= 20)])), 1)
        out[f"{prefix}{name}_all_mm"] = round(float(np.median(error[comp])), 1)
    return out


def heldout_set(head, n=2000, **kwargs):
    """The fresh held-out windows at 10 dB every network run is scored on: (X, meta).

    ``kwargs`` go to :func:`srclib.sampler.training_set` (``profile_shape``, ``n_jobs``).
    """
    X, _, meta = sampler.training_set(
        head, n, np.random.default_rng(HELDOUT_SEED), snr_range_db=(10.0, 10.0),
        progress=False, return_meta=True, **kwargs)
    return X, meta


class Data:
    """Training and held-out windows per profile shape, simulated once each."""

    def __init__(self, head, shape_default, n_train, n_heldout, n_jobs, book=None):
        self.head, self.default = head, shape_default
        self.n_train, self.n_heldout, self.n_jobs = n_train, n_heldout, n_jobs
        self.book = book  # profile whose stored training set replaces the sampler's
        self.sets, self.seconds = {}, {}

    def get(self, shape):
        if shape not in self.sets:
            t0 = time.perf_counter()
            if self.book is not None:
                if shape != self.default:
                    raise ValueError("--windows book holds the profile's shape only")
                X, Y, _ = sampler.load_training_set(self.book, self.head, progress=False)
                train = X[: self.n_train], Y[: self.n_train]
            else:
                train = sampler.training_set(
                    self.head, self.n_train, np.random.default_rng(TRAIN_SEED),
                    profile_shape=shape, n_jobs=self.n_jobs, progress=False)
            held = heldout_set(self.head, self.n_heldout, profile_shape=shape,
                               n_jobs=self.n_jobs)
            self.sets[shape] = train, held
            self.seconds[shape] = round(time.perf_counter() - t0, 1)
        return self.sets[shape]


def kept_validation(history, best_epoch):
    """The validation medians (mm) of the kept epoch: ``val_cortex_mm``, ``val_deep_mm``."""
    kept = history[best_epoch - 1]
    return dict(val_cortex_mm=round(kept.get("val_mle_cortex_mm", np.nan), 1),
                val_deep_mm=round(kept.get("val_mle_subcortical_mm", np.nan), 1))


def run_one(cfg, data, params, device):
    """Train one configuration; return its report."""
    shape = cfg.get("shape", data.default)
    (X, Y), (Xh, meta) = data.get(shape)
    if cfg.get("stored"):
        model = network.load_model(data.book or "paper", head=data.head,
                                   training=cfg.get("training", 0), progress=False)
        trained = model.card["training"]
        return dict(cfg, **model.architecture, shape=shape, n_parameters=model.n_parameters,
                    learning_rate=trained["learning_rate"], seed=trained["seed"],
                    prior_bias=trained.get("prior_bias", True),
                    **kept_validation(trained["history"], trained["best_epoch"]),
                    n_train=trained["n_windows"], batch_size=trained["batch_size"],
                    n_steps=trained["n_steps"], steps=trained["steps"],
                    best_epoch=trained["best_epoch"], epochs=trained["epochs"],
                    training_s=trained["seconds"],
                    s_per_step=round(trained["seconds"] / max(trained["steps"], 1), 4),
                    device_name=model.card["hardware"]["device"],
                    **heldout_medians(model, Xh, meta, data.head.positions))
    n = min(cfg.get("n_train", data.n_train), len(X))
    seed = cfg.get("seed", params["seed"])
    learning_rate = cfg.get("learning_rate", params["learning_rate"])
    prior_bias = cfg.get("prior_bias", True)  # the grids were set out with the prior's logit
    torch.manual_seed(seed)
    model = network.SourceLSTM(data.head.n_dipoles, cfg["embed_dim"], cfg["hidden_dim"],
                               cfg["fc_dims"], dropout=params["dropout"],
                               out_rank=cfg.get("out_rank"))
    result = network.train(
        model, X[:n], Y[:n], n_steps=cfg["n_steps"],
        batch_size=cfg.get("batch_size", params["batch_size"]),
        learning_rate=learning_rate, warmup_fraction=params["warmup_fraction"],
        weight_decay=params["weight_decay"], validation_fraction=params["validation_fraction"],
        seed=seed, prior_bias=prior_bias,
        positions=data.head.positions, is_cortical=data.head.is_cortical, device=device,
        progress=False)
    return dict(
        cfg, shape=shape, n_train=n, device=str(device),
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else "cpu, %d threads" % torch.get_num_threads()),
        n_parameters=model.n_parameters, steps=result["steps"],
        learning_rate=learning_rate, seed=seed, prior_bias=prior_bias,
        training_s=round(result["seconds"], 1),
        s_per_step=round(result["seconds"] / max(result["steps"], 1), 4),
        best_epoch=result["best_epoch"], epochs=len(result["history"]),
        **kept_validation(result["history"], result["best_epoch"]),
        val_by_epoch=[[round(h.get("val_mle_cortex_mm", np.nan), 1),
                       round(h.get("val_mle_subcortical_mm", np.nan), 1)]
                      for h in result["history"]],
        sampling_s=data.seconds[shape],
        **heldout_medians(model, Xh, meta, data.head.positions),
    )


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.head:
        with open(args.head, "rb") as fid:
            head = pickle.load(fid)
    else:
        head = load_head_model(args.profile, progress=False)
    params = config.get_params(args.profile, "network")
    shape = config.get_params(args.profile, "simulation")["profile_shape"]
    data = Data(head, shape, args.n_train, args.n_heldout, args.n_jobs or os.cpu_count(),
                book=args.profile if args.windows == "book" else None)
    device = network.device_for_training()
    per_step = {}  # measured seconds per step, by network size
    done = set()
    if args.resume and os.path.exists(args.out):
        done = set(pd.read_json(args.out, lines=True)["name"])
    for cfg in GRIDS[args.grid]:
        if cfg["name"] in done:
            print(f"resume: {cfg['name']!r} is in {args.out}", flush=True)
            continue
        size = (cfg.get("embed_dim"), cfg.get("hidden_dim"), tuple(cfg.get("fc_dims", ())),
                cfg.get("batch_size"), cfg.get("out_rank"))
        expected = per_step.get(size, 0.0) * cfg.get("n_steps", 0)
        if time.perf_counter() - t_start + expected > args.budget_s:
            print(f"budget: skipping {cfg['name']!r} (about {expected:.0f} s)", flush=True)
            continue
        report = run_one(cfg, data, params, device)
        per_step[size] = report.get("s_per_step", 0.0)
        with open(args.out, "a") as fid:
            fid.write(json.dumps(report) + "\n")
        print(json.dumps({k: v for k, v in report.items() if k != "val_by_epoch"}), flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
