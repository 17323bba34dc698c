"""The LSTM (paper section II.C): architecture, training and inference.

The network maps one window of EEG (50 samples x 64 channels, 0.2 s at
250 Hz) to an activation coefficient in [0, 1] for every dipole:

1. each window is average-referenced and divided by its standard deviation
   (so the network sees the spatial-temporal pattern, not the amplitude);
2. a linear layer embeds the 64 channels of each time step;
3. a unidirectional LSTM reads the 50 embedded samples in order;
4. its last hidden state passes three fully connected ReLU layers of
   increasing width (with dropout during training);
5. a linear layer and a sigmoid give one coefficient per dipole.

Training minimises the binary cross-entropy between the sigmoid outputs and
the simulator's coefficients c (soft targets), with AdamW (Adam with
decoupled weight decay) and a learning rate defined per optimiser step
(linear warm-up, then cosine decay to zero). The output bias starts at the
logit of each dipole's mean target, and the weights kept are those of the
epoch with the lowest validation localisation error (mean of the cortical
and subcortical medians). Each epoch writes a checkpoint, so an interrupted
training resumes where it stopped.
"""

import json
import os
import platform
import shutil
import time

import mne
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import cache, config
from .check import check_int, check_number, check_option
from .headmodel import N_CHANNELS

_CACHE_VERSION = 3  # 3: schedule in steps, prior-logit bias, selection on localisation


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
    """

    def __init__(self, n_dipoles, embed_dim=128, hidden_dim=256, fc_dims=(512, 1024, 2048),
                 n_channels=N_CHANNELS, dropout=0.0):
        super().__init__()
        self.architecture = dict(
            n_dipoles=int(n_dipoles), embed_dim=int(embed_dim), hidden_dim=int(hidden_dim),
            fc_dims=[int(d) for d in fc_dims], n_channels=int(n_channels), dropout=float(dropout),
        )
        self.embed = nn.Linear(n_channels, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        layers, width = [], hidden_dim
        for dim in fc_dims:
            layers += [nn.Linear(width, dim), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = dim
        self.fc = nn.Sequential(*layers)
        self.out = nn.Linear(width, n_dipoles)
        self.vertices = None  # source-space vertices, set by load_model (for MNE output)

    def forward(self, x):
        """Logits, shape (batch, N), of EEG windows ``x`` of shape (batch, 64, n_times)."""
        x = x - x.mean(dim=1, keepdim=True)
        x = x / x.flatten(1).std(dim=1).clamp_min(1e-30)[:, None, None]
        h = self.embed(x.transpose(1, 2))
        _, (last, _) = self.lstm(h)
        return self.out(self.fc(last[-1]))

    @property
    def n_parameters(self):
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


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
    if x.shape[1] != N_CHANNELS:
        raise ValueError(f"windows must have {N_CHANNELS} channels on axis 1, got {x.shape[1]}")
    if x.shape[2] != n_times:
        raise ValueError(f"windows must have {n_times} samples on axis 2, got {x.shape[2]}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ValueError("windows must be finite numbers (found NaN or inf)")
    return x.astype(np.float32, copy=False)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def split_train_validation(n, fraction, seed):
    """Seeded permutation split of ``n`` windows into training and validation indices."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


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
    centre = np.asarray(Y).argmax(1)
    peak = np.asarray(y).argmax(1)
    error = 1000.0 * np.linalg.norm(positions[peak] - positions[centre], axis=1)
    medians = {}
    for name, mask in (("cortex", is_cortical[centre]), ("subcortical", ~is_cortical[centre])):
        if mask.any():
            medians[name] = float(np.median(error[mask]))
    return float(np.mean(list(medians.values()))), medians


def _validate(model, X, Y, index, batch_size, device, positions, is_cortical):
    """Mean BCE and the localisation criterion of the model on ``X[index]`` (no gradient)."""
    model.eval()
    total, peaks = 0.0, []
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            b = index[start : start + batch_size]
            logits = model(X[b].to(device))
            total += nn.functional.binary_cross_entropy_with_logits(
                logits, Y[b].to(device), reduction="sum").item()
            peaks.append(logits.argmax(1).cpu().numpy())
    out = dict(val_loss=total / (len(index) * Y.shape[1]))
    if positions is not None:
        one_hot = np.zeros((len(index), Y.shape[1]), np.float32)
        one_hot[np.arange(len(index)), np.concatenate(peaks)] = 1.0
        out["val_mle_mm"], medians = localization_criterion(
            one_hot, Y[index].numpy(), positions, is_cortical)
        out.update({f"val_mle_{k}_mm": v for k, v in medians.items()})
    return out


def prior_logit(Y):
    """Logit of each dipole's mean target, the output bias at the start of training.

    With zero output weights the network then predicts the prior (the mean
    coefficient of every dipole over the training windows) whatever the EEG,
    instead of 0.5 everywhere, so the first steps learn the EEG, not the
    base rate. Means are clipped to [1e-4, 1 - 1e-4].
    """
    p = torch.as_tensor(np.asarray(Y, np.float32)).mean(0).clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


def train(model, X, Y, *, n_steps=1000, batch_size=256, learning_rate=1e-3,
          warmup_fraction=0.05, schedule="cosine", weight_decay=1e-5, patience=None,
          validation_fraction=0.1, seed=0, prior_bias=True, positions=None, is_cortical=None,
          checkpoint_dir=None, device=None, until_epoch=None, progress=True):
    """Train the network; resume from a checkpoint if one exists.

    Parameters
    ----------
    model : SourceLSTM
    X : ndarray, shape (n, 64, 50)
    Y : ndarray, shape (n, N)
        Target coefficients in [0, 1].
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
        Where ``checkpoint.pt`` is written after every epoch and read on start.
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
    Y = torch.as_tensor(np.asarray(Y, np.float32))
    if Y.shape != (X.shape[0], model.architecture["n_dipoles"]):
        raise ValueError(f"Y must have shape {(X.shape[0], model.architecture['n_dipoles'])}, got {tuple(Y.shape)}")
    if not torch.isfinite(Y).all() or Y.min() < 0 or Y.max() > 1:
        raise ValueError("Y must hold finite coefficients in [0, 1]")
    n_steps = check_int("n_steps", n_steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    check_number("warmup_fraction", warmup_fraction, 0.0, 1.0)
    if (positions is None) != (is_cortical is None):
        raise ValueError("positions and is_cortical must be given together")
    criterion = "val_loss" if positions is None else "val_mle_mm"
    device = device or device_for_training()
    train_idx, val_idx = split_train_validation(len(X), validation_fraction, seed)
    steps_per_epoch = -(-len(train_idx) // batch_size)
    warmup = min(int(round(warmup_fraction * n_steps)), n_steps - 1)
    check_option("schedule", schedule, ("cosine", "constant"))
    if prior_bias:
        with torch.no_grad():
            model.out.bias.copy_(prior_logit(Y[train_idx]))
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
    n_epochs = -(-n_steps // steps_per_epoch)
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
            model(X[b].to(opts["device"])), Y[b].to(opts["device"]))
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


def model_key(profile, head):
    """Hash of the network settings and the training data they learn from."""
    from .sampler import training_set_key

    return cache.params_key(dict(
        network=config.get_params(profile, "network"),
        data=training_set_key(profile, head), version=_CACHE_VERSION,
    ))


def train_model(profile="paper", head=None, *, progress=True):
    """Train the profile's network on its training set (resumable) and save it.

    Artifacts in ``data/<profile>/model/``: ``model.pt`` (state dict, loadable
    with ``weights_only=True``) and ``model_card.json``. While training, the
    per-epoch checkpoint lives in ``data/<profile>/model-<key>.partial/``; a
    rerun with the same settings resumes from it.

    Returns
    -------
    model : SourceLSTM
    """
    from .headmodel import load_head_model
    from .sampler import load_training_set, training_set_key

    params = config.get_params(profile, "network")
    head = head if head is not None else load_head_model(profile, progress=progress)
    key = model_key(profile, head)
    folder = config.profile_dir(profile) / "model"
    if not cache.is_valid(folder, key):
        X, Y, _ = load_training_set(profile, head, progress=progress)
        torch.manual_seed(params["seed"])
        model = SourceLSTM(head.n_dipoles, params["embed_dim"], params["hidden_dim"],
                           params["fc_dims"], dropout=params["dropout"])
        partial = config.profile_dir(profile) / f"model-{key}.partial"
        partial.mkdir(exist_ok=True)
        device = device_for_training()
        result = train(
            model, X, Y, n_steps=params["n_steps"], batch_size=params["batch_size"],
            learning_rate=params["learning_rate"], warmup_fraction=params["warmup_fraction"],
            weight_decay=params["weight_decay"], patience=params["patience"],
            validation_fraction=params["validation_fraction"], seed=params["seed"],
            positions=head.positions, is_cortical=head.is_cortical,
            checkpoint_dir=partial, device=device, progress=progress,
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
            print(f"network: trained in {card['training']['seconds']} s -> {folder}")
    return load_model(profile, head=head, train_if_missing=False)


def load_model(profile="paper", *, head=None, train_if_missing=True, progress=True):
    """The profile's trained network, from ``data/<profile>/model/``.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
        Its source space gives the vertices of MNE source estimates.
    train_if_missing : bool
        Train (or resume training) when no model for the current settings exists.

    Returns
    -------
    model : SourceLSTM
        In evaluation mode, on the CPU, with ``model.card`` (the model card).
    """
    from .headmodel import load_head_model

    head = head if head is not None else load_head_model(profile, progress=progress)
    folder = config.profile_dir(profile) / "model"
    if not cache.is_valid(folder, model_key(profile, head)):
        if not train_if_missing:
            raise FileNotFoundError(f"no trained model for the current settings in {folder}")
        return train_model(profile, head, progress=progress)
    with open(folder / "model_card.json") as fid:
        card = json.load(fid)
    model = SourceLSTM(**card["architecture"])
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    model.card = card
    model.vertices = [s["vertno"] for s in head.src]
    return model


# --------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------


def predict(model, windows, *, batch_size=512):
    """Activation coefficients of EEG windows, or a source estimate of MNE data.

    Parameters
    ----------
    model : SourceLSTM
    windows : ndarray, shape (n, 64, 50) | mne.io.Raw | mne.Epochs | mne.Evoked
        Average-referenced (or not: the network re-references) EEG windows.
        MNE objects must hold the montage's 64 EEG channels (picked and
        ordered by name); they are resampled to 250 Hz when needed and cut
        into consecutive, non-overlapping 50-sample windows (per epoch for
        ``Epochs``; the time axis of the result is then epochs x windows).

    Returns
    -------
    y : ndarray, shape (n, N)
        For an array input: coefficients in [0, 1].
    stc : mne.MixedSourceEstimate
        For an MNE input: one time point per window (``tstep`` = 0.2 s).
    """
    if isinstance(windows, (mne.io.BaseRaw, mne.BaseEpochs, mne.Evoked)):
        return _predict_mne(model, windows, batch_size)
    x = torch.as_tensor(_check_windows(windows))
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(torch.sigmoid(model(x[start : start + batch_size])).numpy())
    return np.concatenate(out)


def windows_from_mne(inst, ch_names):
    """Cut MNE data into (n, 64, 50) windows of the montage's channels at 250 Hz.

    Returns
    -------
    windows : ndarray, shape (n, 64, 50)
    tmin : float
        Time of the first window's first sample.
    """
    missing = [ch for ch in ch_names if ch not in inst.ch_names]
    if missing:
        raise ValueError(f"the data lack {len(missing)} montage channel(s): {missing}")
    inst = inst.copy().pick(ch_names)
    if inst.info["sfreq"] != config.SFREQ:
        inst.resample(config.SFREQ, verbose="error")
    data = inst.get_data()
    if isinstance(inst, mne.BaseEpochs):
        segments = list(data)
    else:
        segments = [data]
    windows = []
    for seg in segments:
        n = seg.shape[1] // config.WINDOW
        if n == 0:
            raise ValueError(f"each segment needs at least {config.WINDOW} samples at 250 Hz")
        windows.append(seg[:, : n * config.WINDOW].reshape(len(ch_names), n, config.WINDOW)
                       .transpose(1, 0, 2))
    return np.concatenate(windows), float(inst.times[0])


def _predict_mne(model, inst, batch_size):
    from .headmodel import channel_names

    if model.vertices is None:
        raise ValueError("the model has no source space; load it with load_model()")
    windows, tmin = windows_from_mne(inst, channel_names())
    y = predict(model, windows, batch_size=batch_size)
    return mne.MixedSourceEstimate(y.T, model.vertices, tmin=tmin,
                                   tstep=config.WINDOW / config.SFREQ, subject="fsaverage")
