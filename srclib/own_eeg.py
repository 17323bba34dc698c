"""A recording on disk, as a researcher would bring it, and the network's estimate of it.

The book's page "Applying the network to your own recording" simulates a
region (:func:`srclib.regions.region_recording`), turns the simulation into
an ``mne.io.Raw`` with the blemishes of real data (:func:`to_raw`,
:func:`corrupt_channel`, :func:`add_bad_span`), writes it in EEG file formats
(:func:`write_recording`), reads it back with MNE, and applies
:func:`srclib.network.predict`. The estimate is saved in MNE's ``.stc``
format (:func:`save_estimate`, :func:`read_estimate`) and scored against the
simulated centre (:func:`peak_distance_mm`).

Units: the simulator works in arbitrary units (unit-variance sources);
:func:`to_raw` scales the recording to a typical scalp amplitude in volts, as
MNE and the file formats expect. The network does not see the scale (it
divides each window by its standard deviation).
"""

from pathlib import Path

import mne
from mne.utils import verbose
import numpy as np
import pandas as pd

from . import config
from .check import check_number, check_option

#: Root-mean-square amplitude given to a simulated recording (V), typical of scalp EEG.
RMS_V = 20e-6

#: Mains frequency used for a corrupted channel's hum (Hz).
MAINS_HZ = 50.0

#: File formats :func:`write_recording` writes, with their file-name endings.
FORMATS = {"FIF": "_raw.fif", "EDF": ".edf"}


@verbose
def to_raw(head, eeg, *, verbose=None):
    """A continuous recording at 250 Hz with the montage's names and electrode positions.

    Parameters
    ----------
    head : HeadModel
        Gives the channel names and positions (``head.info``).
    eeg : ndarray, shape (64, n_times)
        Simulated EEG in the simulator's units, sampled at 250 Hz.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    raw : mne.io.RawArray
        Scaled to an RMS of :data:`RMS_V` volts, without projectors.
    """
    eeg = np.asarray(eeg, float)
    if eeg.ndim != 2 or eeg.shape[0] != len(head.info["ch_names"]):
        raise ValueError(f"eeg must have shape ({len(head.info['ch_names'])}, n_times), "
                         f"got {eeg.shape}")
    rms = np.sqrt(np.mean(eeg ** 2))
    if not np.isfinite(rms) or rms == 0:
        raise ValueError(f"eeg must be finite and not all zero, got RMS {rms}")
    raw = mne.io.RawArray(eeg * (RMS_V / rms), head.info.copy())
    raw.del_proj()
    return raw


def corrupt_channel(raw, ch_name, rng):
    """Replace one channel by a slow drift and mains hum, and mark it bad (in place).

    The artefact is ten times the channel's RMS: a loose electrode that,
    left in, would dominate every window the network sees.

    Parameters
    ----------
    raw : mne.io.Raw
        Preloaded.
    ch_name : str
        One of ``raw.ch_names``.
    rng : numpy.random.Generator
        Phase of the hum and shape of the drift.

    Returns
    -------
    raw : mne.io.Raw
    """
    ch_name = check_option("ch_name", ch_name, raw.ch_names)
    t = raw.times
    amplitude = 10 * np.sqrt(np.mean(raw.get_data(picks=[ch_name]) ** 2))
    drift = np.cumsum(rng.standard_normal(len(t)))
    drift = (drift - drift.mean()) / (np.abs(drift).max() + 1e-30)
    hum = np.sin(2 * np.pi * MAINS_HZ * t + rng.uniform(0, 2 * np.pi))
    raw[ch_name, :] = amplitude * (hum + drift)
    raw.info["bads"] = sorted(set(raw.info["bads"]) | {ch_name})
    return raw


def add_bad_span(raw, onset_s, duration_s, rng, description="BAD_movement"):
    """Add a large movement-like artefact on every channel and annotate it (in place).

    Parameters
    ----------
    raw : mne.io.Raw
        Preloaded.
    onset_s, duration_s : float
        The span, in seconds from the recording's first sample.
    rng : numpy.random.Generator
        Spatial pattern of the artefact.
    description : str
        Annotation text; MNE rejects spans whose description starts with ``BAD``.

    Returns
    -------
    raw : mne.io.Raw
    """
    onset_s = check_number("onset_s", onset_s, 0.0, raw.times[-1])
    duration_s = check_number("duration_s", duration_s, 0.0, raw.times[-1] - onset_s,
                              open_minimum=True)
    span = (raw.times >= onset_s) & (raw.times < onset_s + duration_s)
    phase = (raw.times[span] - onset_s) / duration_s
    swing = np.sin(np.pi * phase) ** 2  # one slow swing over the span
    pattern = rng.standard_normal(len(raw.ch_names))
    start, stop = np.flatnonzero(span)[[0, -1]]
    raw[:, start : stop + 1] = (raw.get_data(start=start, stop=stop + 1)
                                + 20 * RMS_V * pattern[:, None] * swing[None, :])
    raw.annotations.append(raw.first_time + onset_s, duration_s, description)
    return raw


@verbose
def write_recording(raw, folder, stem="recording", formats=tuple(FORMATS), *, verbose=None):
    """Write a recording in EEG file formats that MNE reads back with ``mne.io.read_raw``.

    FIF (MNE's own format) keeps everything: channel names, positions,
    ``info['bads']`` and annotations. EDF (European Data Format, written by
    MNE's ``export_raw`` through the ``edfio`` package) keeps channel names and
    annotations, but neither electrode positions nor bad channels: after
    reading an EDF file, set the montage and ``info['bads']`` again. EDF
    stores 16-bit integers; each channel gets its own physical range, so a
    corrupted channel does not coarsen the quantisation of the others.

    Parameters
    ----------
    raw : mne.io.Raw
    folder : path-like
        Created if needed.
    stem : str
        File name without its ending.
    formats : sequence of str
        Keys of :data:`FORMATS`.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    paths : dict of str -> pathlib.Path
        One file per format.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        check_option("formats", fmt, FORMATS)
        path = folder / f"{stem}{FORMATS[fmt]}"
        if fmt == "FIF":
            raw.save(path, overwrite=True)
        else:
            mne.export.export_raw(path, raw, fmt="edf", physical_range="channelwise",
                                  overwrite=True)
        paths[fmt] = path
    return paths


def _check_vertices(stc, head):
    expected = [s["vertno"] for s in head.src]
    if len(stc.vertices) != len(expected) or not all(
            np.array_equal(a, b) for a, b in zip(stc.vertices, expected)):
        raise ValueError("stc must be defined on the head model's source space "
                         "(the vertices of head.src)")


def peak_dipole(stc, head):
    """Index (into ``head.positions``) of the dipole with the largest time-averaged value."""
    _check_vertices(stc, head)
    return int(np.argmax(stc.data.mean(axis=1)))


def peak_distance_mm(stc, head, center):
    """Distance (mm) from the estimate's time-averaged peak to a dipole ``center``.

    Parameters
    ----------
    stc : mne.MixedSourceEstimate
        On the head model's source space (as :func:`srclib.network.predict` returns).
    head : HeadModel
    center : int
        Dipole index of the simulated centre.

    Returns
    -------
    distance : float
    """
    peak = peak_dipole(stc, head)
    return float(1000 * np.linalg.norm(head.positions[peak] - head.positions[int(center)]))


@verbose
def save_estimate(stc, stem, *, verbose=None):
    """Save a mixed source estimate as MNE ``.stc`` files.

    The ``.stc`` format is MNE's own binary format for source estimates, read
    by ``mne.read_source_estimate`` (and by MNE-C) with no package beyond MNE.
    It holds one source space type per file, so the cortical part goes to
    ``<stem>-lh.stc`` and ``<stem>-rh.stc`` and the deep part to
    ``<stem>-vl.stc``; values and times are stored as 32-bit floats (times in
    milliseconds). MNE's single-file HDF5 format for mixed estimates would
    need the ``h5io`` package, which is not among the book's dependencies.

    Parameters
    ----------
    stc : mne.MixedSourceEstimate
        Two surface source spaces and one volume (or discrete) source space.
    stem : path-like
        Path without the ending.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    paths : list of pathlib.Path
        The three files.
    """
    if not isinstance(stc, mne.MixedSourceEstimate) or len(stc.vertices) != 3:
        raise ValueError("stc must be an mne.MixedSourceEstimate with two hemispheres and "
                         f"one volume source space, got {stc!r}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stc.surface().save(stem, ftype="stc", overwrite=True)
    stc.volume().save(stem, ftype="stc", overwrite=True)
    return [stem.with_name(f"{stem.name}-{part}.stc") for part in ("lh", "rh", "vl")]


@verbose
def read_estimate(stem, *, verbose=None):
    """Read back a mixed source estimate written by :func:`save_estimate`.

    Parameters
    ----------
    stem : path-like
        The path given to :func:`save_estimate`.
    verbose : bool | str | int | None
        MNE's logging level for this call.

    Returns
    -------
    stc : mne.MixedSourceEstimate
    """
    stem = Path(stem)
    surface = mne.read_source_estimate(stem, subject="fsaverage")
    volume = mne.read_source_estimate(stem.with_name(f"{stem.name}-vl.stc"), subject="fsaverage")
    if not np.allclose([surface.tmin, surface.tstep], [volume.tmin, volume.tstep]):
        raise ValueError(f"the cortical and deep files of {stem} have different time axes")
    return mne.MixedSourceEstimate(
        np.concatenate([surface.data, volume.data]), surface.vertices + volume.vertices,
        tmin=surface.tmin, tstep=surface.tstep, subject="fsaverage")


def output_folder(profile):
    """``data/<profile>/own_eeg/``, where the page writes its files (created if needed).

    ``own_eeg_long/`` and so on for another training configuration
    (:func:`srclib.config.training_folder`).
    """
    folder = config.training_folder(profile, "own_eeg")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compare_estimates(estimates, head, center):
    """One row per estimate: windows used, peak distance, agreement with the first one.

    Parameters
    ----------
    estimates : dict of str -> mne.MixedSourceEstimate
        The first one is the reference.
    head : HeadModel
    center : int
        Dipole index of the simulated centre.

    Returns
    -------
    table : pandas.DataFrame
        ``windows``, ``peak_distance_mm`` (of the time-averaged map) and
        ``correlation`` (Pearson, between time-averaged maps, with the first).
    """
    rows, reference = [], None
    for name, stc in estimates.items():
        mean = stc.data.mean(axis=1)
        reference = mean if reference is None else reference
        rows.append(dict(estimate=name, windows=stc.data.shape[1],
                         peak_distance_mm=peak_distance_mm(stc, head, center),
                         correlation=float(np.corrcoef(mean, reference)[0, 1])))
    return pd.DataFrame(rows).set_index("estimate")
