"""Profiles: every tunable number of the pipeline, in one place.

Two profiles exist. ``paper`` reproduces the paper's counts (9753 dipoles,
10,000 training simulations, 2-minute region recordings) and is the default.
``quick`` keeps the same code path at a coarse scale so that the whole book
builds in minutes; it is what the test suite and continuous integration run.

Each notebook receives the profile name as a papermill parameter and asks
this module for its numbers, so a profile is changed here and nowhere else.
"""

from copy import deepcopy
import os
from pathlib import Path

#: Sampling frequency of every simulated recording (Hz), as in the paper.
SFREQ = 250.0

#: Samples per window fed to the network and scored by the metrics (0.2 s).
WINDOW = 50

_PAPER = {
    "headmodel": {
        # Cortex: fsaverage5 white surface, octahedron-based subsampling.
        "cortex_spacing": "oct6",
        # Deep grey matter: regular grid spacing in millimetres (1555 points; the paper has 1557).
        "subcortical_spacing_mm": 3.56,
        # Remeshing of the three BEM surfaces: icosahedron subdivision level.
        "bem_ico_inverse": 3,
        "bem_ico_simulation": 4,
        # Conductivities (brain, skull, scalp) in S/m.
        "conductivity_inverse": [0.3, 0.006, 0.3],
        "conductivity_simulation": [0.33, 0.0050, 0.33],
        # Outer skull: this fraction of the inner-skull-to-scalp gap, at most max mm.
        "skull_fraction": 0.5,
        "skull_max_mm": 7.0,
    },
    "simulation": {
        # Distinct training windows: one fixed set, simulated once and cached
        # (the reading of the paper's "10,000 simulations" is explained in
        # notebooks/03_network.md). The literal sampler makes about 35
        # windows/s per core (measured on one idle core of the paper head
        # model), so 40,000 windows take about 10 min on two cores once;
        # 2.1 GB in memory (the coefficients as a dense float32 array).
        "n_train": 40_000,
        "train_seed": 2025,
        "fraction_subcortical": 0.5,
        "radius_range_mm": [5.0, 60.0],
        # Coefficient profile of a region (srclib.simulation.check_profile_shape):
        # cortical regions nearly flat (sigma = 2r), subcortical ones peaked
        # (sigma = r/2), calibrated on the paper's Perfect PAS (the simulator
        # chapter).
        "profile_shape": "gaussian_2r/gaussian",
        "snr_range_db": [0.0, 20.0],
        "ar_order": 5,
        # Windows simulated together, sharing one draw of the background's
        # per-dipole AR coefficients (srclib.sampler.literal_batch).
        "windows_per_batch": 32,
        # Each region is scored on this many independent recordings (own deep
        # orientation, own AR filters, own noise), each this long: 10 x 24 s
        # = 1200 windows. (The paper scores one 2-minute recording; windows of
        # one recording share its draw, so independent recordings are what
        # the intervals need.)
        "region_recordings": 10,
        "region_duration_s": 24.0,
        "region_snr_db": 10.0,
    },
    "network": {
        # Sized so that three trainings fit the book's budget on two CPU
        # cores. At equal optimiser steps (400 on 20,000 windows) the former
        # sizes (128 / 256 / 512-1024-2048, 23 M parameters, 1.1 s per step on
        # two idle cores; that run with input whitening) reached a validation
        # median of 37.9 / 21.7 mm (cortex / deep) against 45.0 / 21.7 mm for
        # these (about half the time per step); see benchmarks/network_runs.md.
        "embed_dim": 64,
        "hidden_dim": 128,
        "fc_dims": [256, 512, 1024],
        # The output layer through 256 linear units (SourceLSTM's out_rank):
        # 3.6 M parameters instead of 10.8 M, and with batches of 128 a step
        # costs 0.14 s on two idle cores instead of 0.43 s (0.27 s for the
        # full layer at 128), so that 6400 steps fit where 1600 did. On
        # 2000 fresh windows at 10 dB (radius >= 20 mm) this training reached
        # 14.1 / 14.2 mm (cortex / deep) against 22.8 / 19.2 mm for the
        # former 1600 steps of 256 with the full layer
        # (benchmarks/network_grid_cpu.jsonl).
        "out_rank": 256,
        "dropout": 0.3,
        # Fixed spatial whitening of the input (fit_whitener): off, as it did
        # not lower the validation error (45.7 / 23.1 mm with it, 45.0 / 21.7
        # without, same 400 steps; benchmarks/network_runs.md).
        "whiten": False,
        # Optimiser steps of the whole training (linear warm-up over
        # warmup_fraction of them, then cosine decay to zero).
        "n_steps": 6400,
        "warmup_fraction": 0.05,
        "batch_size": 128,
        # Peak learning rate, chosen on the validation localisation error
        # (benchmarks/network_optim_cpu.jsonl, the network chapter): at the
        # standard configuration's steps 2e-3 gave a criterion (mean of the
        # cortical and deep validation medians) of 15.4 mm with two seeds,
        # against 16.4-17.25 mm for the three trainings at 1e-3 and 15.95 mm
        # at 4e-3; fresh windows at 10 dB, radius >= 20 mm: 12.4-12.7 / 11.8
        # mm (cortex / deep) against 13.9-14.9 / 12.8 mm at 1e-3.
        "learning_rate": 2e-3,
        # Start the output bias at the logit of each dipole's mean target
        # (network.prior_logit) or leave the layer's default start (uniform
        # within +-1/16, about 0). At 2e-3 the default start gave a lower
        # criterion with each of three paired seeds (15.20 / 14.80 / 15.05
        # mm against 15.40 / 15.40 / 15.55 mm; at 1e-3, 16.20 against 17.25
        # mm), so the book leaves the default (benchmarks/network_optim_cpu.jsonl).
        "prior_bias": False,
        "weight_decay": 1e-4,
        # Epochs without a better validation localisation error before
        # stopping; None lets the schedule run to its end.
        "patience": None,
        "validation_fraction": 0.1,
        "seed": 7,
        # Networks trained from seeds seed, seed + 1, ...: the LSTM's rows
        # pool their windows, and its intervals resample the trainings too.
        "n_networks": 3,
    },
    "generalisation": {
        # Random held-out regions of the generalisation chapter
        # (srclib.sweep.random_regions: half cortical, half subcortical,
        # stratified by depth), drawn from their own seed stream; each scored on
        # one recording of duration_s (60 windows) at snr_db. The SNR sweep
        # scores a subset of n_snr_regions of them (evenly spread over the
        # table) and regions A-D at every SNR of snrs_db, on shorter recordings
        # of snr_duration_s, and the subset again for the inverse-crime control
        # and on the five unseen head models (srclib.headmodel.UNSEEN_VARIANTS).
        # Timings: the README.
        "n_regions": 100,
        "region_seed": 2026,
        "radius_range_mm": [10.0, 60.0],
        "recording_seed": 1,
        "duration_s": 12.0,
        "snr_db": 10.0,
        "snrs_db": [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0],
        "n_snr_regions": 16,
        "snr_duration_s": 4.0,
    },
}

_QUICK = deepcopy(_PAPER)
_QUICK["headmodel"].update(
    cortex_spacing="oct4", subcortical_spacing_mm=7.0, bem_ico_inverse=2, bem_ico_simulation=3
)
_QUICK["simulation"].update(n_train=1000, region_recordings=3, region_duration_s=6.0)
_QUICK["generalisation"].update(n_regions=16, n_snr_regions=4, duration_s=6.0,
                                snr_duration_s=3.0)
_QUICK["network"].update(
    embed_dim=32, hidden_dim=64, fc_dims=[128, 256, 512], out_rank=128, n_steps=120,
    batch_size=64, n_networks=2,
)

PROFILES = {"paper": _PAPER, "quick": _QUICK}

#: Named training configurations: how many times the profile's optimiser
#: steps (``network.n_steps``) and distinct training windows
#: (``simulation.n_train``) each one uses; nothing else changes. ``standard``
#: is sized so that the paper profile's three trainings fit the book's budget
#: on two CPU cores; ``long`` is meant for a GPU. On two CPU cores (one
#: training of the paper network, held-out windows at 10 dB, radius >= 20 mm,
#: cortex / deep; benchmarks/network_runs.md), at the former peak learning
#: rate of 1e-3, the standard configuration reached 14.8 / 12.8 mm, four
#: times the steps on the same 40,000 windows 12.7 / 11.3 mm, and four times
#: the steps on 100,000 windows 11.2 / 10.7 mm (30 to 65 min of training
#: there, depending on the machine); at 2e-3 the standard configuration
#: reaches 12.4-12.7 / 11.8 mm (10.5-11.3 / 11.8 mm in the book's build,
#: with the default output bias), and one ``long`` training 11.1 / 10.7 mm
#: (11.4 / 10.7 mm with the default output bias, 30 min on two idle cores;
#: benchmarks/network_long_optim_cpu.jsonl). A whole book with ``long`` at 1e-3 (three
#: networks) won regions B, C and D on localisation error with separated
#: intervals (benchmarks/long_book_cpu.jsonl); the standard networks at 2e-3
#: win A, B and C and are within the intervals in D (at 1e-3 they lost D
#: to sLORETA). Chosen with ``SRCLIB_TRAINING``
#: (``make book TRAINING=long``); the network chapter says which one built
#: the book.
TRAININGS = {
    "standard": {"steps": 1, "windows": 1.0},
    "long": {"steps": 4, "windows": 2.5},
}


def check_profile(profile):
    """Return ``profile`` if it names a known profile, else raise ValueError."""
    if profile not in PROFILES:
        raise ValueError(
            f"profile must be one of {sorted(PROFILES)}, got {profile!r}"
        )
    return profile


def get_params(profile, section, training=None):
    """Return a copy of one section of a profile's parameters.

    Parameters
    ----------
    profile : str
        ``"paper"`` or ``"quick"``.
    section : str
        ``"headmodel"``, ``"simulation"``, ``"network"`` or ``"generalisation"``.
    training : str | None
        A key of :data:`TRAININGS`; None: the one in use (:func:`training_name`).

    Returns
    -------
    params : dict
        A deep copy, safe to modify. The network's ``n_steps`` and the
        simulation's ``n_train`` are scaled by the training configuration.
    """
    check_profile(profile)
    if section not in PROFILES[profile]:
        raise ValueError(
            f"section must be one of {sorted(PROFILES[profile])}, got {section!r}"
        )
    if training is not None and training not in TRAININGS:
        raise ValueError(f"training must be one of {sorted(TRAININGS)}, got {training!r}")
    params = deepcopy(PROFILES[profile][section])
    scale = TRAININGS[training or training_name()]
    if section == "network":
        params["n_steps"] *= scale["steps"]
    if section == "simulation":
        params["n_train"] = round(params["n_train"] * scale["windows"])
    return params


def training_name():
    """The training configuration in use: ``SRCLIB_TRAINING``, else ``"standard"``.

    Returns
    -------
    name : str
        A key of :data:`TRAININGS`.
    """
    name = os.environ.get("SRCLIB_TRAINING") or "standard"
    if name not in TRAININGS:
        raise ValueError(
            f"SRCLIB_TRAINING must be one of {sorted(TRAININGS)} (or unset), got {name!r}"
        )
    return name


#: Committed inputs (``regions.yaml``, the paper's tables).
REPO_DATA = Path(__file__).resolve().parent.parent / "data"


def training_folder(profile, name):
    """``data/<profile>/<name>``, suffixed by the training configuration unless standard.

    The training set, the networks and everything computed with them (region
    results, the generalisation sweep, the own-EEG page's files, ``make
    region`` runs) of a configuration other than ``standard`` live apart
    (``training_long/``, ``model_long/``, ``results_long/`` ...), so that
    switching between configurations rebuilds nothing already built.
    """
    training = training_name()
    return profile_dir(profile) / (name if training == "standard" else f"{name}_{training}")


def data_root():
    """Return the folder that holds the per-profile caches.

    ``SRCLIB_DATA_DIR`` overrides the default, the repository's ``data/``.
    """
    env = os.environ.get("SRCLIB_DATA_DIR")
    return Path(env) if env else REPO_DATA


def shown_path(path):
    """Return a path as printed to users: relative to the repository when inside it.

    Pages and logs never show the absolute paths of the machine that built them.
    """
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_DATA.parent).as_posix()
    except ValueError:
        return str(path)


def profile_dir(profile):
    """Return ``data/<profile>/``, creating it if needed."""
    path = data_root() / check_profile(profile)
    path.mkdir(parents=True, exist_ok=True)
    return path
