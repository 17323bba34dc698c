"""Applying the network to a recording read from disk (the book's own-EEG page, step by step).

A simulated recording of the quick head model is written as FIF with channel
names in upper case, at 500 Hz, with a corrupted channel marked bad and a
``BAD_`` annotation; the tests check each thing ``windows_from_mne`` and
``predict`` must do with it, and the refusals of bad input.
"""

import mne
import numpy as np
import pytest
import torch

from srclib import config, network, own_eeg, regions
from srclib.headmodel import channel_names

SFREQ_FILE = 500.0
BAD_SPAN = (4.0, 2.1)  # onset and duration (s) of the BAD_ annotation


def _scaled(eeg):
    return eeg * own_eeg.RMS_V / np.sqrt(np.mean(eeg ** 2))


@pytest.fixture(scope="module")
def simulation(head):
    """Region B (large, deep) at 20 dB, the quick profile's recording length."""
    duration = 12.0  # room for a 4 s BAD stretch and enough windows around it
    eeg, c, center = regions.region_recording(head, "B", duration_s=duration, snr_db=20.0,
                                              seed=11)
    return _scaled(eeg), c, center


@pytest.fixture(scope="module")
def clean_raw(head, simulation):
    """The recording at 500 Hz with upper-case channel names, nothing bad."""
    raw = own_eeg.to_raw(head, simulation[0], verbose="error")
    raw.resample(SFREQ_FILE, verbose="error")
    raw.rename_channels(str.upper)
    return raw


@pytest.fixture(scope="module")
def bad_channel(simulation):
    """The montage channel with the most signal (named as in the montage)."""
    return channel_names()[int(np.argmax(simulation[0].std(axis=1)))]


@pytest.fixture(scope="module")
def fif_raw(clean_raw, bad_channel, tmp_path_factory):
    """The recording with a corrupted bad channel and a BAD_ span, written and read back."""
    raw = clean_raw.copy()
    rng = np.random.default_rng(5)
    own_eeg.corrupt_channel(raw, bad_channel.upper(), rng)
    own_eeg.add_bad_span(raw, *BAD_SPAN, rng)
    paths = own_eeg.write_recording(raw, tmp_path_factory.mktemp("own_eeg"), formats=["FIF"],
                                    verbose="error")
    return mne.io.read_raw(paths["FIF"], preload=True, verbose="error")


def _small_model(n_dipoles, vertices=None, seed=0):
    torch.manual_seed(seed)
    model = network.SourceLSTM(n_dipoles, embed_dim=16, hidden_dim=32, fc_dims=(32, 64, 96))
    model.vertices = vertices
    return model


def _relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------
# windows_from_mne
# --------------------------------------------------------------------------


def test_letter_case_and_resampling(clean_raw, simulation):
    assert clean_raw.ch_names[0] == "FP1" and clean_raw.info["sfreq"] == SFREQ_FILE
    windows, starts = network.windows_from_mne(clean_raw, verbose="error")
    truth = network.windows_of(simulation[0])
    assert windows.shape == truth.shape
    assert np.allclose(starts, np.arange(len(truth)) * 0.2)
    # 250 -> 500 -> 250 Hz is near exact away from the recording's two ends
    assert _relative_error(windows[1:-1], truth[1:-1]) < 5e-3  # measured 7.6e-4
    # the rows are the montage's channels in the montage's order
    shuffled = clean_raw.copy().reorder_channels(clean_raw.ch_names[::-1])
    assert np.array_equal(network.windows_from_mne(shuffled, verbose="error")[0], windows)
    lower = clean_raw.copy().rename_channels(str.lower)
    assert np.array_equal(network.windows_from_mne(lower, verbose="error")[0], windows)


def test_bad_channel_is_interpolated(fif_raw, simulation, bad_channel):
    assert fif_raw.info["bads"] == [bad_channel.upper()]
    k = channel_names().index(bad_channel)
    truth = network.windows_of(simulation[0])
    windows, starts = network.windows_from_mne(fif_raw, verbose="error")
    kept = np.round(starts / 0.2).astype(int)
    interpolated = windows[1:-1, k].ravel()
    true = truth[kept[1:-1], k].ravel()
    assert np.corrcoef(interpolated, true)[0, 1] > 0.9  # measured 0.997
    others = np.delete(np.arange(64), k)
    assert _relative_error(windows[1:-1][:, others], truth[kept[1:-1]][:, others]) < 5e-3
    # the same file with the bad mark removed feeds the corrupted channel to the network
    unmarked = fif_raw.copy()
    unmarked.info["bads"] = []
    used, _ = network.windows_from_mne(unmarked, verbose="error")
    assert abs(np.corrcoef(used[1:-1, k].ravel(), true)[0, 1]) < 0.5


def test_bad_channel_without_positions_is_refused_by_name(clean_raw, bad_channel):
    info = mne.create_info(clean_raw.ch_names, SFREQ_FILE, "eeg")  # names, no positions
    raw = mne.io.RawArray(clean_raw.get_data(), info, verbose="error")
    raw.info["bads"] = [bad_channel.upper()]
    with pytest.raises(ValueError, match=rf"info\['bads'\].*{bad_channel}.*set a montage"):
        network.windows_from_mne(raw)
    raw.set_montage("fsaverage_1005", match_case=False, verbose="error")
    windows, _ = network.windows_from_mne(raw, verbose="error")
    assert np.isfinite(windows).all()


def test_bad_annotation_drops_exactly_the_overlapping_windows(fif_raw, simulation):
    onset, duration = BAD_SPAN
    windows, starts = network.windows_from_mne(fif_raw, verbose="error")
    n = simulation[0].shape[1] // config.WINDOW
    grid = np.arange(n) * 0.2
    overlaps = (grid + (config.WINDOW - 1) / config.SFREQ >= onset) & (grid <= onset + duration)
    assert overlaps.sum() == 11  # 4.0-6.1 s touches the windows starting at 4.0, ..., 6.0
    assert np.allclose(starts, grid[~overlaps])
    assert len(windows) == n - 11


def test_bad_annotation_defines_the_time_axis_of_the_estimate(fif_raw, head, caplog):
    model = _small_model(head.n_dipoles, [s["vertno"] for s in head.src])
    _, starts = network.windows_from_mne(fif_raw, verbose="error")
    with caplog.at_level("INFO", logger="mne"):
        stc = network.predict(model, fif_raw, verbose="info")
    assert "11 of 60 windows overlap BAD annotations" in caplog.text
    assert isinstance(stc, mne.MixedSourceEstimate)
    assert stc.data.shape == (head.n_dipoles, len(starts))
    assert stc.tmin == starts[0] and np.isclose(stc.tstep, 0.2)
    caplog.clear()
    with caplog.at_level("INFO", logger="mne"):
        network.predict(model, fif_raw, verbose="error")
    assert "overlap BAD annotations" not in caplog.text


def test_a_recording_of_only_bad_spans_is_refused(clean_raw):
    raw = clean_raw.copy().set_annotations(mne.Annotations([0.0], [clean_raw.times[-1]],
                                                           ["BAD_all"]))
    with pytest.raises(ValueError, match="every one of the recording's 60 windows overlaps"):
        network.windows_from_mne(raw, verbose="error")


def test_too_short(clean_raw):
    exactly_one = clean_raw.copy().crop(0, 99 / SFREQ_FILE)  # 100 samples = 0.2 s
    windows, _ = network.windows_from_mne(exactly_one, verbose="error")
    assert windows.shape == (1, 64, 50)
    short = clean_raw.copy().crop(0, 97 / SFREQ_FILE)  # 98 samples = 49 at 250 Hz
    with pytest.raises(ValueError, match=r"too short for one window.*98 samples at 500 Hz.*"
                                         r"needs 50"):
        network.windows_from_mne(short)
    info = clean_raw.info
    epochs = mne.EpochsArray(np.zeros((2, 64, 60)), info, verbose="error")
    with pytest.raises(ValueError, match="each epoch is too short"):
        network.windows_from_mne(epochs)


def test_epochs_and_evoked_are_cut_per_segment(clean_raw):
    data = clean_raw.get_data()[:, :400].reshape(64, 2, 200).transpose(1, 0, 2)
    epochs = mne.EpochsArray(data, clean_raw.info, tmin=-0.1, verbose="error")
    windows, starts = network.windows_from_mne(epochs, verbose="error")
    assert windows.shape == (4, 64, 50)
    assert np.allclose(starts, [-0.1, 0.1, -0.1, 0.1])
    evoked = epochs.average()
    windows, starts = network.windows_from_mne(evoked, verbose="error")
    assert windows.shape == (2, 64, 50) and np.allclose(starts, [-0.1, 0.1])


def test_too_few_channels_names_the_missing_ones(clean_raw):
    raw = clean_raw.copy().drop_channels(["CZ", "FP1", "O2"])
    with pytest.raises(ValueError, match=r"lack 3 of the 64 montage channels.*"
                                         r"\['Fp1', 'Cz', 'O2'\]"):
        network.windows_from_mne(raw)


def test_channel_names_equal_ignoring_case_are_refused(clean_raw):
    extra = mne.io.RawArray(clean_raw.get_data(picks=["CZ"]),
                            mne.create_info(["cz"], SFREQ_FILE, "eeg"), verbose="error")
    raw = clean_raw.copy().add_channels([extra], force_update_info=True)
    with pytest.raises(ValueError, match="unique ignoring letter case.*'CZ', 'cz'"):
        network.windows_from_mne(raw)


def test_not_mne_data_is_refused():
    with pytest.raises(ValueError, match="inst must be an mne.io.Raw"):
        network.windows_from_mne(np.zeros((64, 500)))


# --------------------------------------------------------------------------
# predict: refusals
# --------------------------------------------------------------------------


def _windows(n=3):
    return np.random.default_rng(0).standard_normal((n, 64, 50)).astype(np.float32)


def _flat(kind):
    x = _windows()
    x[1] = {"zero": 0.0, "constant": 1.0, "common": np.sin(np.arange(50))[None, :]}[kind]
    return x


@pytest.mark.parametrize("kwargs,words", [
    (dict(windows=np.zeros((0, 64, 50))), ["windows", "at least one window", "(0, 64, 50)"]),
    (dict(batch_size=0), ["batch_size", ">= 1", "0"]),
    (dict(batch_size=2.0), ["batch_size", "integer", "2.0"]),
    (dict(batch_size=True), ["batch_size", "integer", "True"]),
    (dict(batch_size="8"), ["batch_size", "integer", "'8'"]),
    (dict(windows=_windows().astype(np.complex64)), ["windows", "real-valued", "complex"]),
    (dict(windows=_flat("zero")), ["windows", "flat", "first indices [1]"]),
    (dict(windows=_flat("constant")), ["windows", "flat", "first indices [1]"]),
    (dict(windows=_flat("common")), ["windows", "flat", "first indices [1]"]),
    (dict(windows=_windows().astype(str)), ["windows", "real numbers", "<U"]),
])
def test_predict_refuses_bad_input(kwargs, words):
    kwargs = dict(dict(windows=_windows()), **kwargs)
    with pytest.raises(ValueError) as info:
        network.predict(_small_model(5), **kwargs)
    for word in words:
        assert word in str(info.value)


def test_an_informative_window_among_flat_ones_is_not_flat():
    x = _windows(4)
    x[2] *= 1e-9  # tiny, but not flat: the network is scale invariant
    assert network.flat_windows(x).size == 0
    x[3] = 7.0 + 1e-12 * x[3]  # constant up to rounding
    assert network.flat_windows(x).tolist() == [3]


# --------------------------------------------------------------------------
# The trained model: missing, and applied to the file
# --------------------------------------------------------------------------


def test_missing_model_is_an_error_that_says_how_to_build_it(head, tmp_path, monkeypatch):
    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    with pytest.raises(network.ModelNotFoundError) as info:
        network.load_model("quick", head=head)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for words in ("no trained network for profile 'quick'", "make book PROFILE=quick",
                  "python -m srclib.book --profile quick --only 03_network --no-html",
                  "srclib.network.train_models('quick')", "training 0 of 2"):
        assert words in message
    assert not (tmp_path / "quick" / "model").exists()  # nothing was trained
    assert not list((tmp_path / "quick").glob("model-*.partial"))


#: The quick network's time-averaged peak for region B at 20 dB lies 22 mm
#: from the centre (measured); the quick profile's network is small and
#: trained briefly, and its peak barely moves with the input, so this bound
#: checks the chain from file to source estimate, not the paper's accuracy.
QUICK_PEAK_MM = 30.0


def test_quick_network_localises_a_large_region_from_the_file(head, fif_raw, simulation):
    model = network.train_model("quick", head, progress=False)  # loads it when trained
    eeg, _, center = simulation
    stc = network.predict(model, fif_raw, verbose="error")
    assert own_eeg.peak_distance_mm(stc, head, center) < QUICK_PEAK_MM
    # the estimate from the file is the estimate of the clean windows it kept
    _, starts = network.windows_from_mne(fif_raw, verbose="error")
    kept = np.round(starts / 0.2).astype(int)
    reference = network.predict(model, network.windows_of(eeg))[kept]
    assert np.abs(stc.data.T - reference).max() < 0.02


def test_estimate_round_trip_through_stc_files(head, tmp_path):
    rng = np.random.default_rng(3)
    vertices = [s["vertno"] for s in head.src]
    stc = mne.MixedSourceEstimate(rng.random((head.n_dipoles, 4)).astype(np.float32), vertices,
                                  tmin=0.4, tstep=0.2, subject="fsaverage")
    paths = own_eeg.save_estimate(stc, tmp_path / "estimate", verbose="error")
    assert [p.name for p in paths] == ["estimate-lh.stc", "estimate-rh.stc", "estimate-vl.stc"]
    back = own_eeg.read_estimate(tmp_path / "estimate", verbose="error")
    assert isinstance(back, mne.MixedSourceEstimate)
    assert all(np.array_equal(a, b) for a, b in zip(back.vertices, vertices))
    assert np.allclose(back.data, stc.data, rtol=1e-6, atol=0)
    assert np.isclose(back.tmin, 0.4) and np.isclose(back.tstep, 0.2)
    assert own_eeg.peak_dipole(back, head) == own_eeg.peak_dipole(stc, head)
