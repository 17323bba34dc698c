"""The LSTM (paper section II.C): architecture, training and inference.

The network maps one window of EEG (50 samples x 64 channels, 0.2 s at
250 Hz) to an activation coefficient in [0, 1] for every dipole:

1. each window is average-referenced and divided by its standard deviation
   (so the network sees the spatial-temporal pattern, not the amplitude);
2. a linear layer embeds the 64 channels of each time step;
3. a unidirectional LSTM reads the 50 embedded samples in order;
4. its last hidden state passes three fully connected ReLU layers of
   increasing width (with dropout during training);
5. a linear layer and a sigmoid give one coefficient per dipole (the
   layer's weight matrix factored through ``out_rank`` units where set).

Training minimises the binary cross-entropy between the sigmoid outputs and
the simulator's coefficients c (soft targets), with AdamW (Adam with
decoupled weight decay) and a learning rate defined per optimiser step
(linear warm-up, then cosine decay to zero). The output bias may start at
the logit of each dipole's mean target (``prior_bias``; the profiles keep
the layer's default start, which localised better), and the weights kept
are those of the epoch with the lowest validation localisation error (mean
of the cortical and subcortical medians). Each epoch writes a checkpoint, so
an interrupted training resumes where it stopped.

Training is always an explicit step (:func:`train_model`, which ``make book``
runs through the network page); :func:`load_model` only loads, and raises
:class:`ModelNotFoundError` when no network for the current settings exists.
:func:`predict` applies the network to arrays of windows or to MNE data
(a recording read from disk: see :func:`windows_from_mne`).

Training and inference run on :func:`choose_threads` threads, whose OpenMP
workers sleep rather than spin while they wait, so that a machine shared with
another busy process slows them by about that process's share of the CPU.
:func:`train_models` trains a profile's several networks side by side on the
CPU, each in a worker process on its share of the cores.
"""

import functools
import json
import os
from pathlib import Path
import platform
import shutil
import time

import mne
from mne.utils import logger, verbose
import numpy as np
from scipy import sparse
import torch
from torch import nn
from tqdm import tqdm

from . import cache, config, workers
from .check import check_int, check_number, check_option
from .headmodel import N_CHANNELS, channel_names, head_for, stored_head_model
from .sampler import build_training_set, load_training_set, training_set_key

_CACHE_VERSION = 3  # 3: schedule in steps, prior-logit bias, selection on localisation

#: True when PyTorch's OpenMP threads sleep, rather than spin, while they wait
#: (``OMP_WAIT_POLICY=PASSIVE``, which importing srclib before torch sets).
PASSIVE_WAIT = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


class SourceLSTM(nn.Module):
    """LSTM from a 64-channel EEG window to per-dipole activation logits.

    Parameters
    ----------
    n_dipoles : int
        Output size N.
    embed_dim : int
        Width of the per-time-step linear embedding.
    hidden_dim : int
        LSTM hidden size.
    fc_dims : sequence of int
        Widths of the fully connected ReLU layers (increasing in the paper).
    n_channels : int
        EEG channels (64).
    dropout : float
        Dropout probability after each fully connected ReLU layer (training only).
    whiten : bool
        Multiply each average-referenced window by a fixed spatial whitening
        matrix (the buffer ``whitener``, learnt from the training windows by
        :func:`fit_whitener` when training starts) before the embedding.
    out_rank : int | None
        Parametrise the output layer's weight matrix (N x last width) as the
        product of two matrices through ``out_rank`` linear units (no bias,
        no nonlinearity between them): the same linear map from the last
        hidden layer to the N logits, limited to rank ``out_rank``. In the
        paper profile (9751 dipoles, ``out_rank=256``) the whole network then
        has a third of the parameters (3.6 M instead of 10.8 M), and an
        optimiser step on two CPU cores costs about a third as much
        (benchmarks/network_runs.md). None: one full matrix.
    """

    def __init__(self, n_dipoles, embed_dim=128, hidden_dim=256, fc_dims=(512, 1024, 2048),
                 n_channels=N_CHANNELS, dropout=0.0, whiten=False, out_rank=None):
        super().__init__()
        self.architecture = dict(
            n_dipoles=int(n_dipoles), embed_dim=int(embed_dim), hidden_dim=int(hidden_dim),
            fc_dims=[int(d) for d in fc_dims], n_channels=int(n_channels), dropout=float(dropout),
            whiten=bool(whiten),
        )
        if out_rank is not None:
            # Recorded only when used, so that the identity (results.model_digest)
            # of a network with a full output matrix is what it was before.
            self.architecture["out_rank"] = check_int("out_rank", out_rank, 1)
        if whiten:
            self.register_buffer("whitener", torch.eye(n_channels))
        self.embed = nn.Linear(n_channels, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        layers, width = [], hidden_dim
        for dim in fc_dims:
            layers += [nn.Linear(width, dim), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = dim
        self.fc = nn.Sequential(*layers)
        self.bottleneck = None
        if out_rank is not None:
            self.bottleneck = nn.Linear(width, out_rank, bias=False)
            width = out_rank
        self.out = nn.Linear(width, n_dipoles)
        self.vertices = None  # source-space vertices, set by load_model (for MNE output)

    @classmethod
    def from_params(cls, n_dipoles, params):
        """The network that a profile's parameters (``config.get_params(profile, "network")``) describe."""
        return cls(n_dipoles, params["embed_dim"], params["hidden_dim"], params["fc_dims"],
                   dropout=params["dropout"], whiten=params["whiten"],
                   out_rank=params.get("out_rank"))

    def forward(self, x):
        """Logits, shape (batch, N), of EEG windows ``x`` of shape (batch, 64, n_times)."""
        x = x - x.mean(dim=1, keepdim=True)
        if self.architecture["whiten"]:
            x = torch.matmul(self.whitener, x)
        x = x / x.flatten(1).std(dim=1).clamp_min(1e-30)[:, None, None]
        h = self.embed(x.transpose(1, 2))
        _, (last, _) = self.lstm(h)
        h = self.fc(last[-1])
        if self.bottleneck is not None:
            h = self.bottleneck(h)
        return self.out(h)

    @property
    def n_parameters(self):
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def choose_threads():
    """Number of PyTorch intra-op threads for training and inference, now.

    On a machine where another process keeps a core busy, OpenMP threads that
    spin while they wait for each other make training many times slower: each
    of the many small parallel steps of an LSTM waits for the thread that
    shares its core with the other process, while the waiting thread burns
    the CPU time that thread needs. Threads that sleep while they wait
    (``OMP_WAIT_POLICY=PASSIVE``, which importing :mod:`srclib` before torch
    sets) cost only the busy process's share. With them the count stays
    PyTorch's own (or the one the user set with ``torch.set_num_threads``),
    bounded by the cores this process may run on, so results do not depend on
    the load. If torch was loaded first, with spinning threads, the count
    drops to the cores that are free now (at least one), which avoids the
    collapse; results may then differ between runs by float rounding.

    Returns
    -------
    n_threads : int
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_threads = min(torch.get_num_threads(), cores or 1)
    if not PASSIVE_WAIT:
        n_threads = min(n_threads, (cores or 1) - _busy_cores())
    return max(1, n_threads)


def _busy_cores():
    """Runnable threads of other processes now (median of a few samples on Linux)."""
    try:
        samples = []
        for _ in range(5):
            with open("/proc/loadavg") as fid:  # 4th field: runnable/total, this thread included
                samples.append(int(fid.read().split()[3].split("/")[0]) - 1)
            time.sleep(0.01)
        return int(np.median(samples))
    except (OSError, ValueError, IndexError):
        return int(round(os.getloadavg()[0])) if hasattr(os, "getloadavg") else 0


def _with_chosen_threads(func):
    """Run ``func`` with :func:`choose_threads` intra-op threads, then restore the count."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(choose_threads())
        try:
            return func(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


def device_for_training():
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_windows(windows, n_times=config.WINDOW):
    """Validate an array of EEG windows and return it as float32."""
    x = np.asarray(windows)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"windows must have shape (n, 64, {n_times}), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"windows must hold at least one window, got shape {x.shape}")
    if x.shape[1] != N_CHANNELS:
        raise ValueError(f"windows must have {N_CHANNELS} channels on axis 1, got {x.shape[1]}")
    if x.shape[2] != n_times:
        raise ValueError(f"windows must have {n_times} samples on axis 2, got {x.shape[2]}")
    if np.iscomplexobj(x):
        raise ValueError(f"windows must be real-valued EEG, got complex data ({x.dtype})")
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"windows must be real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError("windows must be finite numbers (found NaN or inf)")
    return x.astype(np.float32, copy=False)


#: A window whose average-referenced spread is below this fraction of its
#: largest absolute value is treated as flat (constant, all zero, or a signal
#: common to every channel, which the average reference removes).
FLAT_TOLERANCE = 1e-6


def flat_windows(windows, chunk=1024):
    """Indices of the windows that carry no information for the network.

    The network average-references each window and divides it by its
    standard deviation; a window that is constant, all zero, or the same on
    every channel has nothing left after the reference, and the network would
    return its bias (a plausible-looking but meaningless map).

    Parameters
    ----------
    windows : ndarray, shape (n, 64, n_times)
    chunk : int
        Windows checked at a time (in float64).

    Returns
    -------
    index : ndarray of int
    """
    flat = []
    for start in range(0, len(windows), chunk):
        x = np.asarray(windows[start : start + chunk], np.float64)
        spread = (x - x.mean(axis=1, keepdims=True)).reshape(len(x), -1).std(axis=1)
        scale = np.abs(x).reshape(len(x), -1).max(axis=1)
        flat.extend(start + np.flatnonzero(spread <= FLAT_TOLERANCE * scale))
    return np.asarray(flat, int)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def fit_whitener(X, rcond=1e-6, chunk=4096):
    """Spatial whitening matrix of EEG windows (symmetric, average-reference aware).

    The background activity of every simulated window has nearly the same
    channel covariance, so one fixed matrix learnt from the training windows
    decorrelates the channels of any window. Each window is average-referenced
    and scaled to unit standard deviation first (as the network does), so
    that loud windows do not dominate; the matrix is ``C^(-1/2)`` of the mean
    channel covariance ``C`` on its range (the average reference removes one
    dimension, which stays zero).

    Parameters
    ----------
    X : ndarray, shape (n, 64, n_times)
    rcond : float
        Eigenvalues below ``rcond`` times the largest are treated as zero.
    chunk : int
        Windows processed at a time.

    Returns
    -------
    whitener : torch.Tensor, shape (64, 64), float32
    """
    X = _check_windows(X)
    cov = np.zeros((X.shape[1], X.shape[1]))
    for start in range(0, len(X), chunk):
        x = np.asarray(X[start : start + chunk], np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        x /= np.maximum(x.reshape(len(x), -1).std(axis=1), 1e-30)[:, None, None]
        cov += np.einsum("nct,ndt->cd", x, x)
    cov /= len(X) * X.shape[2]
    values, vectors = np.linalg.eigh(cov)
    keep = values > rcond * values.max()
    inv_sqrt = np.zeros_like(values)
    inv_sqrt[keep] = 1.0 / np.sqrt(values[keep])
    return torch.as_tensor((vectors * inv_sqrt) @ vectors.T, dtype=torch.float32)


def split_train_validation(n, fraction, seed):
    """Seeded permutation split of ``n`` windows into training and validation indices."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epochs_for(n_windows, batch_size, n_steps):
    """Epochs a training of ``n_steps`` takes over ``n_windows`` (the last one may be cut)."""
    return -(-n_steps // -(-n_windows // batch_size))


def learning_rate_at(step, n_steps, peak, warmup_steps, schedule="cosine"):
    """The learning rate of optimiser step ``step``: linear warm-up, then cosine decay.

    Rises linearly from ``peak / warmup_steps`` at step 0 to ``peak`` at step
    ``warmup_steps - 1``, then falls along half a cosine to 0 at step
    ``n_steps`` (``schedule="cosine"``) or stays at ``peak``
    (``"constant"``, for comparison).

    Parameters
    ----------
    step : int
        Optimiser step, counted from 0.
    n_steps : int
        Total optimiser steps of the training.
    peak : float
        Largest learning rate.
    warmup_steps : int
        Steps of the linear warm-up (0 for none).
    schedule : ``"cosine"`` | ``"constant"``

    Returns
    -------
    lr : float
    """
    n_steps = check_int("n_steps", n_steps, 1)
    warmup_steps = check_int("warmup_steps", warmup_steps, 0, n_steps - 1)
    step = check_int("step", step, 0)
    check_option("schedule", schedule, ("cosine", "constant"))
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = min(1.0, (step - warmup_steps) / (n_steps - warmup_steps))
    return float(peak * 0.5 * (1.0 + np.cos(np.pi * progress)))


def localization_criterion(y, Y, positions, is_cortical):
    """Validation criterion: mean over compartments of the median localisation error.

    Parameters
    ----------
    y : ndarray, shape (n, N)
        Network outputs (probabilities or logits: only the peak matters).
    Y : ndarray, shape (n, N)
        Target coefficients; each window's centre is its coefficient 1 (its maximum).
    positions : ndarray, shape (N, 3)
        Dipole positions in metres.
    is_cortical : ndarray of bool, shape (N,)

    Returns
    -------
    criterion : float
        Mean of the cortical and subcortical medians (mm), over the
        compartments present.
    medians : dict
        ``{"cortex": mm, "subcortical": mm}`` for the compartments present.
    """
    return _criterion_of_peaks(np.asarray(y).argmax(1), np.asarray(Y).argmax(1),
                               positions, is_cortical)


def _criterion_of_peaks(peak, centre, positions, is_cortical):
    """:func:`localization_criterion` from the peak and centre dipole of each window."""
    error = 1000.0 * np.linalg.norm(positions[peak] - positions[centre], axis=1)
    medians = {}
    for name, mask in (("cortex", is_cortical[centre]), ("subcortical", ~is_cortical[centre])):
        if mask.any():
            medians[name] = float(np.median(error[mask]))
    return float(np.mean(list(medians.values()))), medians


def _validate(model, X, Y, index, batch_size, device, positions, is_cortical):
    """Mean BCE and the localisation criterion of the model on ``X[index]`` (no gradient)."""
    model.eval()
    total, peaks, centres = 0.0, [], []
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            b = index[start : start + batch_size]
            logits = model(X[b].to(device))
            target = _target_rows(Y, b).to(device)
            total += nn.functional.binary_cross_entropy_with_logits(
                logits, target, reduction="sum").item()
            peaks.append(logits.argmax(1).cpu().numpy())
            centres.append(target.argmax(1).cpu().numpy())
    out = dict(val_loss=total / (len(index) * Y.shape[1]))
    if positions is not None:
        out["val_mle_mm"], medians = _criterion_of_peaks(
            np.concatenate(peaks), np.concatenate(centres), positions, is_cortical)
        out.update({f"val_mle_{k}_mm": v for k, v in medians.items()})
    return out


def prior_logit(Y):
    """Logit of each dipole's mean target, the output bias at the start of training.

    With zero output weights the network then predicts the prior (the mean
    coefficient of every dipole over the training windows) whatever the EEG,
    instead of 0.5 everywhere, so the first steps learn the EEG, not the
    base rate. Means are clipped to [1e-4, 1 - 1e-4].
    """
    mean = Y.mean(0) if sparse.issparse(Y) else np.asarray(Y, np.float32).mean(0)
    p = torch.as_tensor(np.asarray(mean, np.float32).ravel()).clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


def output_bias_start(prior_bias=True):
    """How a training started its output bias, in words, for the book's text.

    ``prior_bias`` is a stored card's setting; cards written before it was
    a setting lack it, and those trainings started at the prior's logit,
    hence the default.
    """
    return "the prior's logit" if prior_bias else "the layer's default start"


def _targets(Y, n_dipoles, n_windows):
    """Validate the training targets; a float32 tensor, or a float32 CSR matrix if sparse."""
    if sparse.issparse(Y):
        Y = sparse.csr_matrix(Y, dtype=np.float32)
        values = Y.data
    else:
        Y = torch.as_tensor(np.asarray(Y, np.float32))
        values = Y.numpy()
    if Y.shape != (n_windows, n_dipoles):
        raise ValueError(f"Y must have shape {(n_windows, n_dipoles)}, got {tuple(Y.shape)}")
    if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
        raise ValueError("Y must hold finite coefficients in [0, 1]")
    return Y


def _target_rows(Y, index):
    """Rows ``index`` of the targets (tensor or CSR matrix) as a dense float32 tensor.

    Sparse targets are densified one batch at a time: a training set of
    100,000 windows holds 3.9 GB of dense coefficients but 0.5 GB of non-zero
    ones (values and column indices).
    """
    if sparse.issparse(Y):
        return torch.from_numpy(Y[np.asarray(index)].toarray())
    return Y[index]


@_with_chosen_threads
def train(model, X, Y, *, n_steps=1000, batch_size=256, learning_rate=1e-3,
          warmup_fraction=0.05, schedule="cosine", weight_decay=1e-5, patience=None,
          validation_fraction=0.1, seed=0, prior_bias=True, positions=None, is_cortical=None,
          checkpoint_dir=None, device=None, until_epoch=None, progress=True):
    """Train the network; resume from a checkpoint if one exists.

    Parameters
    ----------
    model : SourceLSTM
    X : ndarray, shape (n, 64, 50)
    Y : ndarray | scipy sparse matrix, shape (n, N)
        Target coefficients in [0, 1]. A sparse matrix stays sparse and is
        densified one batch at a time (same training, far less memory).
    n_steps : int
        Optimiser steps of the whole training: epochs over the training
        windows until that many steps are done (the last epoch may be cut).
    batch_size : int
    learning_rate : float
        Peak AdamW learning rate of the schedule (:func:`learning_rate_at`).
    warmup_fraction : float
        Share of ``n_steps`` spent in the linear warm-up.
    schedule : ``"cosine"`` | ``"constant"``
        Learning rate after the warm-up (see :func:`learning_rate_at`).
    weight_decay : float
        AdamW decoupled weight decay.
    patience : int | None
        Stop after this many epochs without a better validation criterion;
        None never stops early (the cosine schedule decides).
    validation_fraction : float
        Share of the windows held out (seeded split).
    seed : int
        Seeds the split, and each epoch's shuffle and dropout masks (reseeded
        at the start of every epoch, so that a resumed training continues
        exactly as an uninterrupted one). The initial weights are the model's
        as passed in, except the output bias with ``prior_bias``. On the CPU
        two runs with the same seed give the same weights.
    prior_bias : bool
        Start the output bias at :func:`prior_logit` of the training windows.
    positions, is_cortical : ndarray | None
        Dipole positions (metres) and compartments. With them the weights kept
        are those of the epoch with the lowest validation localisation
        criterion (:func:`localization_criterion`); without them, the lowest
        validation BCE.
    checkpoint_dir : path-like | None
        Where ``checkpoint.pt`` is written after every epoch and read on
        start, with ``progress.json`` (epochs done, epochs in all, the
        epoch's validation criterion) for whoever watches the training.
    device : torch.device | None
        Defaults to :func:`device_for_training`. Batches are moved to it one
        at a time; the windows stay in host memory.
    until_epoch : int | None
        Stop after this epoch as if interrupted (the schedule still spans
        ``n_steps``); for tests of resuming.
    progress : bool

    Returns
    -------
    result : dict
        ``history`` (one dict per epoch), ``best_epoch``, ``best_criterion``,
        ``best_val_loss`` (BCE of the kept epoch), ``criterion`` (its name),
        ``best_state`` (state dict of the kept epoch), ``seconds``, ``steps``.
    """
    X = torch.as_tensor(_check_windows(X))
    Y = _targets(Y, model.architecture["n_dipoles"], X.shape[0])
    n_steps = check_int("n_steps", n_steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    check_number("warmup_fraction", warmup_fraction, 0.0, 1.0)
    if (positions is None) != (is_cortical is None):
        raise ValueError("positions and is_cortical must be given together")
    criterion = "val_loss" if positions is None else "val_mle_mm"
    device = device or device_for_training()
    train_idx, val_idx = split_train_validation(len(X), validation_fraction, seed)
    warmup = min(int(round(warmup_fraction * n_steps)), n_steps - 1)
    check_option("schedule", schedule, ("cosine", "constant"))
    if prior_bias:
        with torch.no_grad():
            model.out.bias.copy_(prior_logit(Y[train_idx]))
    if model.architecture.get("whiten"):
        model.whitener.copy_(fit_whitener(X[train_idx].numpy()))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate,
                                  weight_decay=weight_decay, fused=True)
    state = dict(epoch=0, step=0, history=[], best_criterion=float("inf"), best_epoch=0,
                 best_val_loss=float("inf"), criterion=criterion,
                 best_state=_cpu_state(model), seconds=0.0)
    ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, "checkpoint.pt")
    if ckpt is not None and os.path.exists(ckpt):
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        if progress:
            print(f"network: resuming after epoch {state['epoch']}")
    n_epochs = epochs_for(len(train_idx), batch_size, n_steps)
    last = n_epochs if until_epoch is None else min(n_epochs, until_epoch)
    bar = tqdm(range(state["epoch"], last), desc="training", unit="epoch",
               initial=state["epoch"], total=n_epochs, disable=not progress)
    for epoch in bar:
        if patience is not None and epoch - state["best_epoch"] >= patience and epoch > 0:
            break
        t0 = time.perf_counter()
        train_loss = _train_epoch(model, optimizer, X, Y, train_idx, epoch, state, dict(
            n_steps=n_steps, batch_size=batch_size, peak=learning_rate, warmup=warmup,
            schedule=schedule, seed=seed, device=device))
        scores = _validate(model, X, Y, val_idx, batch_size, device, positions, is_cortical)
        seconds = time.perf_counter() - t0
        state["seconds"] += seconds
        state["history"].append(dict(epoch=epoch + 1, step=state["step"], train_loss=train_loss,
                                     lr=optimizer.param_groups[0]["lr"], seconds=seconds,
                                     **scores))
        state["epoch"] = epoch + 1
        if scores[criterion] < state["best_criterion"]:
            state.update(best_criterion=scores[criterion], best_val_loss=scores["val_loss"],
                         best_epoch=epoch + 1, best_state=_cpu_state(model))
        bar.set_postfix(train=f"{train_loss:.5f}", **{criterion: f"{scores[criterion]:.4g}"})
        if ckpt is not None:
            checkpoint = dict(model=_cpu_state(model), optimizer=optimizer.state_dict(),
                              state=state)
            cache.atomic_save(ckpt, lambda path: torch.save(checkpoint, path))
            cache.atomic_write_json(os.path.join(checkpoint_dir, "progress.json"),
                                    dict(epoch=epoch + 1, epochs=n_epochs,
                                         criterion=scores[criterion]))
    model.load_state_dict(state["best_state"])
    model.to("cpu")
    state["steps"] = state["step"]
    return state


def _train_epoch(model, optimizer, X, Y, train_idx, epoch, state, opts):
    """One epoch of optimiser steps (at most up to ``n_steps``); mean training BCE."""
    model.train()
    torch.manual_seed(opts["seed"] * 1000 + epoch)  # dropout masks of this epoch
    shuffle = torch.Generator().manual_seed(opts["seed"] * 1000 + epoch)
    order = torch.as_tensor(train_idx)[torch.randperm(len(train_idx), generator=shuffle)]
    total, seen = 0.0, 0
    for start in range(0, len(order), opts["batch_size"]):
        if state["step"] >= opts["n_steps"]:
            break
        b = order[start : start + opts["batch_size"]]
        lr = learning_rate_at(state["step"], opts["n_steps"], opts["peak"], opts["warmup"],
                              opts["schedule"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(
            model(X[b].to(opts["device"])), _target_rows(Y, b).to(opts["device"]))
        loss.backward()
        optimizer.step()
        state["step"] += 1
        total += loss.item() * len(b)
        seen += len(b)
    return total / max(seen, 1)


def _cpu_state(model):
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------
# The profile's trained model
# --------------------------------------------------------------------------


def model_key(profile, head, training=0):
    """Hash of the network settings, the training's index and the data it learns from."""
    params = config.get_params(profile, "network")
    params.pop("n_networks")  # how many are trained changes none of them
    index = {} if training == 0 else dict(training=training)
    return cache.params_key(dict(
        network=params, data=training_set_key(profile, head), version=_CACHE_VERSION, **index,
    ))


def n_networks(profile):
    """How many networks a profile trains (``n_networks`` of its network settings)."""
    return check_int("n_networks", config.get_params(profile, "network")["n_networks"], 1)


def model_folder(profile, training=0):
    """Where training ``training`` is stored: ``model/``, then ``model_1/``, ``model_2/`` ...

    A training configuration other than ``standard`` (:func:`srclib.config.training_name`)
    keeps its networks apart, in ``model_long/``, ``model_long_1/`` ..., so that
    switching between configurations retrains nothing already trained.
    """
    training = check_int("training", training, 0, n_networks(profile) - 1)
    folder = config.training_folder(profile, "model")
    return folder if training == 0 else folder.with_name(f"{folder.name}_{training}")


def train_models(profile="paper", head=None, *, n_jobs=None, progress=True):
    """Train the profile's networks that are not trained yet, side by side; return all.

    On the CPU the trainings run ``n_jobs`` at a time, each in a worker
    process of its own (:func:`srclib.workers.run_in_workers`) on its share
    of the cores. An LSTM's many small operations use two threads poorly: on
    two cores a step of the paper's network took 0.125 s with both threads
    and 0.155 s with one, so two trainings side by side, one core each, did
    their steps about 1.6 times faster than one training after the other on
    both (``make bench`` measures it). The plan (:func:`training_threads`)
    fixes each training's thread count from its index and the machine alone,
    so an interrupted build that resumes trains every network with the same
    threads, and the same weights, as an uninterrupted one. On a GPU, or
    with ``n_jobs=1``, the networks are trained one after the other in this
    process (:func:`train_model`).

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
    n_jobs : int | None
        Trainings at a time on the CPU; None: as many as there are cores, at
        most ``n_networks``.
    progress : bool
        One progress bar over the epochs of all the trainings.

    Returns
    -------
    models : list of SourceLSTM
    """
    head = head_for(profile, head, progress=progress)
    n = n_networks(profile)
    todo = [k for k in range(n)
            if not cache.is_valid(model_folder(profile, k), model_key(profile, head, k))]
    plan = training_threads(n, n_jobs)
    if todo and device_for_training().type == "cpu" and len(plan[0]) > 1:
        build_training_set(profile, head, progress=progress)  # once, before the workers
        _train_in_workers(profile, head, todo, plan, progress)
    return [train_model(profile, head, training=k, progress=progress) for k in range(n)]


def training_threads(n, n_jobs=None, cores=None):
    """Plan ``n`` trainings in rounds of ``n_jobs`` and the PyTorch threads of each.

    Parameters
    ----------
    n : int
        Trainings.
    n_jobs : int | None
        Trainings at a time; None: ``min(n, cores)``.
    cores : int | None
        Cores to share; None: :func:`choose_threads`.

    Returns
    -------
    plan : list of dict
        One dict per round, ``{training: threads}``; a round of ``m``
        trainings gives each ``cores // m`` threads (at least one).
    """
    n = check_int("n", n, 1)
    cores = check_int("cores", cores if cores is not None else choose_threads(), 1)
    n_jobs = check_int("n_jobs", n_jobs if n_jobs is not None else min(n, cores), 1)
    rounds = [range(start, min(start + n_jobs, n)) for start in range(0, n, n_jobs)]
    return [{k: max(1, cores // len(r)) for k in r} for r in rounds]


def _train_in_workers(profile, head, todo, plan, progress):
    """Train the trainings of ``todo``, round by round of ``plan``, in worker processes."""
    partial = {k: config.profile_dir(profile) / f"model-{model_key(profile, head, k)}.partial"
               for k in todo}
    params = config.get_params(profile, "network")
    n_train = config.get_params(profile, "simulation")["n_train"]
    n_fit = len(split_train_validation(n_train, params["validation_fraction"], 0)[0])
    epochs = epochs_for(n_fit, params["batch_size"], params["n_steps"])
    finished = set()
    bar = tqdm(total=epochs * len(todo), desc=f"training {len(todo)} networks",
               unit="epoch", disable=not progress)

    def poll():  # each worker's training writes progress.json after every epoch
        bar.n = max(bar.n, epochs * len(finished) + sum(
            cache.read_json(partial[k] / "progress.json")["epoch"]
            for k in todo if k not in finished and (partial[k] / "progress.json").exists()))
        bar.refresh()

    with bar:
        for threads in plan:
            jobs = [(profile, k, threads[k], head.provenance["key"]) for k in threads
                    if k in todo]
            workers.run_in_workers("srclib.network._train_job", jobs, len(jobs),
                                   on_done=lambda job: finished.add(job[1]), poll=poll)
            poll()


def _train_job(profile, training, n_threads, head_key):
    """One training in a worker process, on ``n_threads`` PyTorch threads."""
    torch.set_num_threads(n_threads)
    head = stored_head_model(profile, head_key, "the networks")
    train_model(profile, head, training=training, progress=False)
    return training


def train_model(profile="paper", head=None, *, training=0, progress=True):
    """Train one of the profile's networks on its training set (resumable) and save it.

    Training ``k`` differs from training 0 only in its seed (``seed + k``):
    its initial weights, its training/validation split, its shuffles and its
    dropout masks. Artifacts in :func:`model_folder` (``data/<profile>/model/``
    for training 0): ``model.pt`` (state dict, loadable with
    ``weights_only=True``) and ``model_card.json``. While training, the
    per-epoch checkpoint lives in ``data/<profile>/model-<key>.partial/``; a
    rerun with the same settings resumes from it.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
    training : int
        Index of the training, from 0 to ``n_networks - 1``.
    progress : bool

    Returns
    -------
    model : SourceLSTM
    """
    params = config.get_params(profile, "network")
    params["seed"] += check_int("training", training, 0, n_networks(profile) - 1)
    head = head_for(profile, head, progress=progress)
    key = model_key(profile, head, training)
    folder = model_folder(profile, training)
    if not cache.is_valid(folder, key):
        with cache.build_lock(folder):
            if not cache.is_valid(folder, key):  # else trained by the process we waited for
                _train_and_save(profile, head, training, params, key, folder, progress)
    return load_model(profile, head=head, training=training, progress=progress)


def _train_and_save(profile, head, training, params, key, folder, progress):
    """Train one network (resuming from its checkpoint) and store it in ``folder``."""
    X, Y, _ = load_training_set(profile, head, sparse_targets=True, progress=progress)
    if progress and n_networks(profile) > 1:
        print(f"network {training + 1} of {n_networks(profile)} (seed {params['seed']})")
    torch.manual_seed(params["seed"])
    model = SourceLSTM.from_params(head.n_dipoles, params)
    partial = config.profile_dir(profile) / f"model-{key}.partial"
    partial.mkdir(exist_ok=True)
    device = device_for_training()
    result = train(
        model, X, Y, n_steps=params["n_steps"], batch_size=params["batch_size"],
        learning_rate=params["learning_rate"], warmup_fraction=params["warmup_fraction"],
        weight_decay=params["weight_decay"], patience=params["patience"],
        validation_fraction=params["validation_fraction"], seed=params["seed"],
        prior_bias=params["prior_bias"], positions=head.positions,
        is_cortical=head.is_cortical, checkpoint_dir=partial, device=device, progress=progress,
    )
    card = dict(
        architecture=model.architecture, n_parameters=model.n_parameters,
        training=dict(params, n_windows=len(X),
                      data_key=training_set_key(profile, head),
                      epochs=len(result["history"]), steps=result["steps"],
                      best_epoch=result["best_epoch"], criterion=result["criterion"],
                      best_criterion=result["best_criterion"],
                      best_val_loss=result["best_val_loss"],
                      seconds=round(result["seconds"], 1), history=result["history"]),
        hardware=dict(device=str(device), cpus=os.cpu_count(),
                      torch_threads=torch.get_num_threads(), platform=platform.platform(),
                      cuda=torch.cuda.get_device_name(0) if device.type == "cuda" else None),
        torch=torch.__version__,
    )
    with cache.ArtifactFolder(folder, key, dict(card=card)) as art:
        torch.save(_cpu_state(model), art.tmp / "model.pt")
        cache.atomic_write_json(art.tmp / "model_card.json", card)
    shutil.rmtree(partial, ignore_errors=True)
    if progress:
        print(f"network: trained in {card['training']['seconds']} s -> "
              f"{config.shown_path(folder)}")


class ModelNotFoundError(FileNotFoundError):
    """No trained network exists for a profile's current settings.

    Raised by :func:`load_model`, which never trains; its message names the
    commands that build the network.
    """


def build_commands(profile):
    """The ways to train a profile's network, as one line of text for messages."""
    make = "make book" if profile == "paper" else f"make book PROFILE={profile}"
    return (f"`{make}` (the whole book), "
            f"`python -m srclib.book --profile {profile} --only 03_network --no-html` "
            f"(the network page only), or `srclib.network.train_models({profile!r})` in Python")


def load_models(profile="paper", *, head=None, progress=True):
    """All of the profile's trained networks (:func:`load_model` for each), in order."""
    return [load_model(profile, head=head, training=k, progress=progress)
            for k in range(n_networks(profile))]


def load_model(profile="paper", *, head=None, training=0, progress=True):
    """One of the profile's trained networks, from :func:`model_folder`.

    Loading never trains: training is the explicit step :func:`train_model`
    (``make book`` runs it).

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
        Its source space gives the vertices of MNE source estimates.
    training : int
        Which of the ``n_networks`` trainings (0: the first).
    progress : bool
        Show progress if the head model has to be built.

    Returns
    -------
    model : SourceLSTM
        In evaluation mode, on the CPU, with ``model.card`` (the model card).

    Raises
    ------
    ModelNotFoundError
        A ``FileNotFoundError``: no network trained with the profile's current
        settings and training data exists; the message says how to build it.
    """
    head = head_for(profile, head, progress=progress)
    folder = model_folder(profile, training)
    if not cache.is_valid(folder, model_key(profile, head, training)):
        raise ModelNotFoundError(
            f"no trained network for profile {profile!r} (training {training} of "
            f"{n_networks(profile)}) and its current settings in "
            f"{config.shown_path(folder)} (loading never trains). "
            f"Build it with {build_commands(profile)}."
        )
    model = read_model(folder)
    model.vertices = [s["vertno"] for s in head.src]
    return model


def read_model(folder):
    """A stored network read from its folder, whatever settings made it.

    :func:`load_model` is the checked way in: it reads a network only if the
    profile's current settings and training data made it. This reads any
    folder it wrote (``model.pt`` and ``model_card.json``), for instance a
    network of an earlier configuration kept to compare against.

    Parameters
    ----------
    folder : path-like

    Returns
    -------
    model : SourceLSTM
        In evaluation mode, on the CPU, with ``model.card``.
    """
    folder = Path(folder)
    with open(folder / "model_card.json") as fid:
        card = json.load(fid)
    model = SourceLSTM(**card["architecture"])
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    model.card = card
    return model


# --------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------

_MNE_TYPES = (mne.io.BaseRaw, mne.BaseEpochs, mne.Evoked)


@_with_chosen_threads
@verbose
def predict(model, windows, *, batch_size=512, verbose=None):
    """Activation coefficients of EEG windows, or a source estimate of MNE data.

    Parameters
    ----------
    model : SourceLSTM
    windows : ndarray, shape (n, 64, 50) | mne.io.Raw | mne.Epochs | mne.Evoked
        Real-valued EEG windows, average-referenced or not (the network
        re-references each window and scales it by its standard deviation).
        A window that is flat after the average reference (constant, all
        zero, or one signal on every channel) is refused: it carries nothing
        the network could localise. MNE objects are turned into windows by
        :func:`windows_from_mne` (montage channels matched by name ignoring
        letter case, bad channels interpolated, windows overlapping ``BAD_``
        annotations left out, resampled to 250 Hz).
    batch_size : int
        Windows per forward pass, at least 1.
    verbose : bool | str | int | None
        MNE's logging level for this call (``None``: MNE's current level).

    Returns
    -------
    y : ndarray, shape (n, N)
        For an array input: coefficients in [0, 1].
    stc : mne.MixedSourceEstimate
        For an MNE input: one time point per window kept, ``tstep`` = 0.2 s,
        ``tmin`` = the start of the first kept window. The time axis is the
        recording's clock only when no window was left out: windows dropped
        for a ``BAD_`` annotation are skipped, not kept as gaps, so the
        estimate's k-th time point is the k-th kept window. The true start of
        every window is returned by :func:`windows_from_mne`.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    if isinstance(windows, _MNE_TYPES):
        return _predict_mne(model, windows, batch_size)
    x = _check_windows(windows)
    flat = flat_windows(x)
    if len(flat):
        raise ValueError(
            f"windows must vary across channels after the average reference; "
            f"{len(flat)} of {len(x)} window(s) are flat (constant, all zero or the same on "
            f"every channel), first indices {flat[:10].tolist()}: they carry no information "
            f"for the network"
        )
    x = torch.as_tensor(x)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(torch.sigmoid(model(x[start : start + batch_size])).numpy())
    return np.concatenate(out)


def windows_of(eeg, window=config.WINDOW):
    """Cut EEG into consecutive non-overlapping windows, the network's input.

    The samples after the last full window are left out. This is the one
    place where arrays are cut into windows (the region recordings, and the
    epochs and evoked data of :func:`windows_from_mne`; continuous ``Raw``
    data go through MNE's fixed-length epochs to honour ``BAD_`` annotations).

    Parameters
    ----------
    eeg : ndarray, shape (n_channels, n_times) | (n_segments, n_channels, n_times)
        One recording, or several segments (epochs) each cut on its own.
    window : int
        Samples per window.

    Returns
    -------
    windows : ndarray, shape (n_windows, n_channels, window)
        Segment by segment, in time order within each.
    """
    window = check_int("window", window, 1)
    eeg = np.asarray(eeg)
    if eeg.ndim not in (2, 3):
        raise ValueError(f"eeg must have shape (n_channels, n_times) or "
                         f"(n_segments, n_channels, n_times), got {eeg.shape}")
    segments = eeg[None] if eeg.ndim == 2 else eeg
    n = segments.shape[2] // window
    return (segments[:, :, : n * window]
            .reshape(len(segments), segments.shape[1], n, window)
            .transpose(0, 2, 1, 3).reshape(-1, segments.shape[1], window))


@verbose
def windows_from_mne(inst, ch_names=None, *, verbose=None):
    """Cut MNE data into (n, 64, 50) windows of the montage's channels at 250 Hz.

    What a recording read from disk needs before the network sees it:

    1. **Channels by name, ignoring letter case.** The montage's channels
       (``FP1`` matches ``Fp1``) are picked in the montage's order; other
       channels are ignored. A montage channel the data lack is an error that
       names every missing one (the network needs all 64).
    2. **Bad channels are interpolated.** A montage channel listed in
       ``info['bads']`` is replaced by MNE's spherical-spline interpolation
       from the good ones (``interpolate_bads``), which needs electrode
       positions: without them (no montage set) the call stops and names the
       bad channels. Without digitised head points the sphere is centred at
       (0, 0, 40) mm in head coordinates.
    3. **Resampled to 250 Hz** (MNE's ``resample``) when recorded at another rate.
    4. **Cut into consecutive, non-overlapping 50-sample windows** (0.2 s)
       from the first sample; the samples after the last full window are
       unused. For ``Raw``, windows that overlap an annotation whose
       description starts with ``BAD`` (MNE's convention, any letter case)
       are left out (``reject_by_annotation``). ``Epochs`` are cut epoch by
       epoch, ``Evoked`` as one segment.

    Parameters
    ----------
    inst : mne.io.Raw | mne.Epochs | mne.Evoked
    ch_names : list of str | None
        The montage's channel names, in the network's order (default: the
        head model's 64 names).
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    windows : ndarray, shape (n, 64, 50)
    starts : ndarray, shape (n,)
        Time (s) of each window's first sample: on the recording's clock
        (0 at its first sample) for ``Raw``, on the epoch's own time axis for
        ``Epochs``, on the evoked time axis for ``Evoked``.
    """
    if not isinstance(inst, _MNE_TYPES):
        raise ValueError(f"inst must be an mne.io.Raw, mne.Epochs or mne.Evoked, "
                         f"got {type(inst).__name__}")
    ch_names = channel_names() if ch_names is None else list(ch_names)
    _check_duration(inst)
    inst = _montage_channels(inst, ch_names)
    inst = _interpolate_bads(inst)
    if inst.info["sfreq"] != config.SFREQ:
        inst.resample(config.SFREQ)
    if isinstance(inst, mne.io.BaseRaw):
        return _raw_windows(inst)
    segments = inst.get_data() if isinstance(inst, mne.BaseEpochs) else inst.data[None]
    n = segments.shape[2] // config.WINDOW
    windows = windows_of(segments)
    starts = np.tile(inst.times[0] + np.arange(n) * config.WINDOW / config.SFREQ, len(segments))
    return windows, starts


def _check_duration(inst):
    """Refuse data too short for one window at 250 Hz."""
    sfreq = inst.info["sfreq"]
    n_times = len(inst.times)
    n_resampled = int(np.floor(n_times * config.SFREQ / sfreq + 1e-9))
    if n_resampled < config.WINDOW:
        what = "each epoch" if isinstance(inst, mne.BaseEpochs) else "the recording"
        raise ValueError(
            f"{what} is too short for one window: {n_times} samples at {sfreq:g} Hz "
            f"({n_times / sfreq:.3g} s) give {n_resampled} samples at {config.SFREQ:g} Hz; "
            f"the network needs {config.WINDOW} ({config.WINDOW / config.SFREQ:g} s)"
        )


def _montage_channels(inst, ch_names):
    """A copy of ``inst`` with only the montage channels, named and ordered as the montage."""
    by_key = {}
    for name in inst.ch_names:
        by_key.setdefault(name.casefold(), []).append(name)
    missing = [ch for ch in ch_names if ch.casefold() not in by_key]
    if missing:
        raise ValueError(
            f"the data lack {len(missing)} of the {len(ch_names)} montage channels the "
            f"network needs (names matched ignoring letter case): {missing}"
        )
    clashes = [by_key[ch.casefold()] for ch in ch_names if len(by_key[ch.casefold()]) > 1]
    if clashes:
        raise ValueError(f"channel names must be unique ignoring letter case, got {clashes}")
    found = [by_key[ch.casefold()][0] for ch in ch_names]
    inst = inst.copy().pick(found).reorder_channels(found)
    if not isinstance(inst, mne.Evoked):
        inst.load_data()
    inst.rename_channels({old: new for old, new in zip(found, ch_names) if old != new})
    return inst


def _interpolate_bads(inst):
    """Interpolate the montage channels marked bad (in place); refuse without positions."""
    bads = [ch for ch in inst.info["bads"] if ch in inst.ch_names]
    if not bads:
        return inst
    positions = np.array([ch["loc"][:3] for ch in inst.info["chs"]])
    unplaced = [name for name, pos in zip(inst.ch_names, positions)
                if not np.isfinite(pos).all() or not pos.any()]
    if unplaced:
        raise ValueError(
            f"info['bads'] marks montage channel(s) {bads} as bad, and they can only be "
            f"interpolated from electrode positions, which the data lack for "
            f"{len(unplaced)} channel(s) (first {unplaced[:5]}): set a montage first (for "
            f"example MNE's template: raw.set_montage('fsaverage_1005', match_case=False)), "
            f"or remove them from info['bads'] to use them as recorded"
        )
    has_head_points = any(d["kind"] != mne.io.constants.FIFF.FIFFV_POINT_CARDINAL
                          for d in (inst.info["dig"] or []))
    logger.info(f"Interpolating bad montage channel(s) {bads}")
    inst.interpolate_bads(reset_bads=True, origin="auto" if has_head_points else (0, 0, 0.04))
    return inst


def _raw_windows(raw):
    """Consecutive windows of a 250 Hz recording, without those overlapping BAD annotations."""
    events = mne.make_fixed_length_events(raw, duration=config.WINDOW / config.SFREQ)
    epochs = mne.Epochs(raw, events, tmin=0.0, tmax=(config.WINDOW - 1) / config.SFREQ,
                        baseline=None, proj=False, reject_by_annotation=True, preload=True)
    n_total = len(events)
    if len(epochs) == 0:
        raise ValueError(f"every one of the recording's {n_total} windows overlaps a BAD "
                         f"annotation: nothing is left to localise")
    if len(epochs) < n_total:
        logger.info(f"{n_total - len(epochs)} of {n_total} windows overlap BAD annotations "
                    f"and were left out")
    starts = (epochs.events[:, 0] - raw.first_samp) / config.SFREQ
    return epochs.get_data(), starts


def _predict_mne(model, inst, batch_size):
    if model.vertices is None:
        raise ValueError("the model has no source space; load it with load_model()")
    windows, starts = windows_from_mne(inst)
    y = predict(model, windows, batch_size=batch_size)
    return mne.MixedSourceEstimate(y.T, model.vertices, tmin=float(starts[0]),
                                   tstep=config.WINDOW / config.SFREQ, subject="fsaverage")
