"""The LSTM (paper II.C): shapes, learning, resumable deterministic training, inference."""

import numpy as np
import pytest
import torch

from srclib import network


def _data(n=48, n_dipoles=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 64, 50)).astype(np.float32)
    Y = np.zeros((n, n_dipoles), np.float32)
    # A learnable target: the active dipole is coded by which channel carries a sine.
    t = np.arange(50) / 250
    for i in range(n):
        k = i % n_dipoles
        X[i, k % 64] += 5 * np.sin(2 * np.pi * 10 * t)
        Y[i, k] = 1.0
    return X, Y


def _model(n_dipoles=30, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return network.SourceLSTM(n_dipoles, embed_dim=16, hidden_dim=32, fc_dims=(32, 64, 96),
                              dropout=dropout)


def test_shapes_range_and_parameter_count():
    model = _model()
    X, _ = _data(n=7)
    y = network.predict(model, X)
    assert y.shape == (7, 30)
    assert np.all((y > 0) & (y < 1))
    expected = (64 * 16 + 16) + 4 * (32 * (16 + 32) + 2 * 32) + (32 * 32 + 32) \
        + (32 * 64 + 64) + (64 * 96 + 96) + (96 * 30 + 30)
    assert model.n_parameters == expected


def test_input_is_scale_and_reference_invariant():
    model = _model()
    X, _ = _data(n=4)
    y = network.predict(model, X)
    common = np.random.default_rng(1).standard_normal((4, 1, 50)).astype(np.float32)
    assert np.allclose(network.predict(model, 1e-4 * (X + common)), y, atol=1e-5)


@pytest.mark.slow
def test_loss_falls_and_a_tiny_set_is_overfitted():
    X, Y = _data(n=30, n_dipoles=5)
    model = _model(n_dipoles=5)
    result = network.train(model, X, Y, max_epochs=150, batch_size=10, learning_rate=3e-3,
                           weight_decay=0.0, patience=1000, lr_patience=1000,
                           validation_fraction=0.1,
                           progress=False)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < 0.05 * losses[0]
    train_idx, _ = network.split_train_validation(30, 0.1, 0)
    y = network.predict(model, X[train_idx])
    assert np.mean(y.argmax(1) == Y[train_idx].argmax(1)) > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_equals_uninterrupted(tmp_path, dropout):
    X, Y = _data(n=40)
    kw = dict(batch_size=8, learning_rate=1e-3, patience=100, seed=3, progress=False)
    whole = _model(seed=1, dropout=dropout)
    network.train(whole, X, Y, max_epochs=4, **kw)
    part = _model(seed=1, dropout=dropout)
    network.train(part, X, Y, max_epochs=2, checkpoint_dir=tmp_path, **kw)
    torch.manual_seed(12345)  # a fresh process: the global RNG is wherever it is
    resumed = _model(seed=99, dropout=dropout)  # weights are replaced by the checkpoint
    result = network.train(resumed, X, Y, max_epochs=4, checkpoint_dir=tmp_path, **kw)
    assert len(result["history"]) == 4
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_same_seed_same_weights():
    X, Y = _data(n=20)
    kw = dict(max_epochs=2, batch_size=5, patience=10, seed=4, progress=False)
    a, b = _model(seed=2), _model(seed=2)
    network.train(a, X, Y, **kw)
    network.train(b, X, Y, **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_weights_load_with_weights_only(tmp_path):
    model = _model()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    other = _model(seed=5)
    other.load_state_dict(state)
    X, _ = _data(n=3)
    assert np.allclose(network.predict(model, X), network.predict(other, X))


@pytest.mark.parametrize("shape,match", [
    ((3, 63, 50), "64 channels"),
    ((3, 64, 49), "50 samples"),
    ((64,), "shape"),
])
def test_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        network.predict(_model(), np.zeros(shape))


def test_nan_input():
    X, _ = _data(n=2)
    X[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        network.predict(_model(), X)


def test_bad_targets():
    X, Y = _data(n=10)
    with pytest.raises(ValueError, match="Y must"):
        network.train(_model(), X, Y * 2, max_epochs=1, progress=False)


def test_mne_input_is_picked_by_name_and_resampled():
    import mne

    from srclib.headmodel import channel_names

    names = channel_names()
    rng = np.random.default_rng(0)
    model = _model(n_dipoles=30)
    model.vertices = [np.arange(10), np.arange(10), np.arange(10)]
    info = mne.create_info(names[::-1] + ["EOG1"], 500.0, ["eeg"] * 64 + ["eog"])
    raw = mne.io.RawArray(rng.standard_normal((65, 1000)), info, verbose="error")
    stc = network.predict(model, raw)
    assert isinstance(stc, mne.MixedSourceEstimate)
    assert stc.data.shape == (30, 10)  # 2 s at 250 Hz = 10 windows
    assert np.isclose(stc.tstep, 0.2)
    windows, _ = network.windows_from_mne(raw, names)
    picked = raw.copy().pick(names).resample(250.0, verbose="error").get_data()
    assert np.allclose(windows[0], picked[:, :50])
    with pytest.raises(ValueError, match=r"lack 1 of the 64 montage channels.*\[.Cz.\]"):
        network.predict(model, raw.copy().drop_channels(["Cz"]))
