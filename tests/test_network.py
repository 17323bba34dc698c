"""The LSTM (paper II.C): shapes, learning, resumable deterministic training, inference."""

import shutil

import numpy as np
import pytest
import torch

from srclib import config, network, sampler


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


def test_low_rank_output_is_one_linear_map_of_limited_rank():
    torch.manual_seed(0)
    model = network.SourceLSTM(30, 16, 32, (32, 64, 96), out_rank=4)
    assert model.architecture["out_rank"] == 4
    assert "out_rank" not in _model().architecture  # full networks keep their identity
    full = _model()
    assert model.n_parameters == full.n_parameters - (96 * 30) + (96 * 4 + 4 * 30)
    # The two matrices act as one weight of rank 4 with the output bias.
    X, Y = _data(n=6)
    network.train(model, X, Y, n_steps=2, batch_size=4, validation_fraction=0.25,
                  progress=False)
    weight = model.out.weight @ model.bottleneck.weight  # (30, 96)
    assert torch.linalg.matrix_rank(weight) == 4
    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(X[:3])
        x = x - x.mean(dim=1, keepdim=True)
        x = x / x.flatten(1).std(dim=1)[:, None, None]
        _, (last, _) = model.lstm(model.embed(x.transpose(1, 2)))
        logits = model.fc(last[-1]) @ weight.T + model.out.bias
        assert torch.allclose(model(torch.as_tensor(X[:3])), logits, atol=1e-5)
    # Rebuilt from its architecture (as load_model does), it predicts the same.
    again = network.SourceLSTM(**model.architecture)
    again.load_state_dict(model.state_dict())
    assert np.allclose(network.predict(again, X), network.predict(model, X))
    with pytest.raises(ValueError, match="out_rank"):
        network.SourceLSTM(30, 16, 32, (32, 64, 96), out_rank=0)


def test_windows_of_cuts_consecutive_windows_in_time_order():
    eeg = np.arange(3 * 130).reshape(3, 130)
    windows = network.windows_of(eeg, window=50)
    assert windows.shape == (2, 3, 50)  # the last 30 samples are left out
    assert np.array_equal(windows[1], eeg[:, 50:100])
    segments = np.stack([eeg, -eeg])
    both = network.windows_of(segments, window=50)
    assert both.shape == (4, 3, 50)
    assert np.array_equal(both[2], -eeg[:, :50]) and np.array_equal(both[1], eeg[:, 50:100])
    with pytest.raises(ValueError, match="eeg must have shape"):
        network.windows_of(eeg[0])


def test_whitener_decorrelates_the_background():
    # Windows whose channels share a strong common pattern: after the average
    # reference and the whitener, the mean channel covariance is the identity
    # on the average-reference subspace.
    rng = np.random.default_rng(1)
    mixing = rng.standard_normal((64, 64)) * np.linspace(0.1, 3.0, 64)
    X = np.einsum("cd,ndt->nct", mixing, rng.standard_normal((400, 64, 50))).astype(np.float32)
    W = network.fit_whitener(X).numpy().astype(float)
    x = X - X.mean(axis=1, keepdims=True)
    x = x / x.reshape(len(x), -1).std(axis=1)[:, None, None]
    white = np.einsum("cd,ndt->nct", W, x)
    cov = np.einsum("nct,ndt->cd", white, white) / (len(x) * 50)
    reference = np.eye(64) - 1.0 / 64  # projector onto the average-referenced channels
    assert np.allclose(cov, reference, atol=1e-3)
    assert np.allclose(W, W.T, atol=1e-5)


def test_whitening_model_fits_its_whitener_and_saves_it():
    X, Y = _data()
    torch.manual_seed(0)
    model = network.SourceLSTM(30, 16, 32, (32, 64, 96), whiten=True)
    network.train(model, X, Y, n_steps=2, batch_size=16, validation_fraction=0.25, progress=False)
    assert not torch.allclose(model.whitener, torch.eye(64))
    again = network.SourceLSTM(**model.architecture)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.whitener, model.whitener)
    assert np.allclose(network.predict(again, X[:4]), network.predict(model, X[:4]))


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
    result = network.train(model, X, Y, n_steps=450, batch_size=10, learning_rate=3e-3,
                           warmup_fraction=0.0, weight_decay=0.0, validation_fraction=0.1,
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
    positions = np.random.default_rng(0).standard_normal((30, 3)) * 0.05
    kw = dict(n_steps=18, batch_size=8, learning_rate=1e-3, warmup_fraction=0.2, seed=3,
              positions=positions, is_cortical=np.arange(30) < 15, progress=False)
    whole = _model(seed=1, dropout=dropout)
    network.train(whole, X, Y, **kw)
    part = _model(seed=1, dropout=dropout)
    network.train(part, X, Y, checkpoint_dir=tmp_path, until_epoch=2, **kw)
    torch.manual_seed(12345)  # a fresh process: the global RNG is wherever it is
    resumed = _model(seed=99, dropout=dropout)  # weights are replaced by the checkpoint
    result = network.train(resumed, X, Y, checkpoint_dir=tmp_path, **kw)
    assert len(result["history"]) == 4  # 36 windows, 5 steps per epoch, the last epoch cut
    assert result["steps"] == 18 and result["history"][-1]["step"] == 18
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_sparse_targets_train_the_same_network_as_dense_ones():
    """Targets kept sparse and densified per batch give the dense training, within float error."""
    from scipy import sparse

    X, Y = _data(n=40)
    Y = np.maximum(Y, 0.5 * np.roll(Y, 1, axis=1))  # soft targets: a neighbour at 0.5
    positions = np.random.default_rng(0).standard_normal((30, 3)) * 0.05
    kw = dict(n_steps=12, batch_size=8, seed=5, positions=positions,
              is_cortical=np.arange(30) < 15, progress=False)
    dense, kept_sparse = _model(seed=3, dropout=0.3), _model(seed=3, dropout=0.3)
    a = network.train(dense, X, Y, **kw)
    b = network.train(kept_sparse, X, sparse.csr_matrix(Y), **kw)
    assert a["best_epoch"] == b["best_epoch"]
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["val_mle_mm"] == pytest.approx(hb["val_mle_mm"])
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-5)
    for (k, p), q in zip(dense.state_dict().items(), kept_sparse.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-5), k
    with pytest.raises(ValueError, match="Y must hold finite coefficients"):
        network.train(_model(), X, sparse.csr_matrix(Y * 2), n_steps=1, progress=False)
    with pytest.raises(ValueError, match="Y must have shape"):
        network.train(_model(), X, sparse.csr_matrix(Y[:, :29]), n_steps=1, progress=False)


def test_same_seed_same_weights():
    X, Y = _data(n=20)
    kw = dict(n_steps=8, batch_size=5, seed=4, progress=False)
    a, b = _model(seed=2), _model(seed=2)
    network.train(a, X, Y, **kw)
    network.train(b, X, Y, **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_learning_rate_schedule_at_given_steps():
    lr = network.learning_rate_at
    # 100 steps, 10 of warm-up, peak 1e-3.
    assert np.isclose(lr(0, 100, 1e-3, 10), 1e-4)
    assert np.isclose(lr(4, 100, 1e-3, 10), 5e-4)
    assert np.isclose(lr(9, 100, 1e-3, 10), 1e-3)
    assert np.isclose(lr(10, 100, 1e-3, 10), 1e-3)  # cosine starts at the peak
    assert np.isclose(lr(55, 100, 1e-3, 10), 0.5e-3)  # half-way through the decay
    assert np.isclose(lr(100, 100, 1e-3, 10), 0.0)
    assert np.isclose(lr(32, 100, 1e-3, 10), 1e-3 * 0.5 * (1 + np.cos(np.pi * 22 / 90)))
    assert np.isclose(lr(0, 100, 1e-3, 0), 1e-3)
    steps = [lr(s, 100, 1e-3, 10) for s in range(100)]
    assert np.all(np.diff(steps[10:]) < 0)
    with pytest.raises(ValueError, match="warmup_steps"):
        lr(0, 100, 1e-3, 100)


def test_training_follows_the_schedule_step_by_step():
    X, Y = _data(n=40)
    result = network.train(_model(), X, Y, n_steps=13, batch_size=8, learning_rate=2e-3,
                           warmup_fraction=0.25, progress=False)
    # 36 training windows: 5 steps per epoch; the lr logged is that of the epoch's last step.
    assert [h["step"] for h in result["history"]] == [5, 10, 13]
    for h in result["history"]:
        assert np.isclose(h["lr"], network.learning_rate_at(h["step"] - 1, 13, 2e-3, 3))


def test_output_bias_starts_at_the_prior_logit_or_is_left_as_it_was():
    X, Y = _data(n=40, n_dipoles=30)
    Y[:, 0] = 0.5
    logit = network.prior_logit(Y)
    p = Y.mean(0)
    assert np.allclose(torch.sigmoid(logit).numpy(), np.clip(p, 1e-4, 1 - 1e-4), atol=1e-6)
    model = _model()
    with torch.no_grad():  # zero output weights: the output is the bias
        model.out.weight.zero_()
    network.train(model, X, Y, n_steps=1, learning_rate=1e-12, batch_size=8, progress=False)
    train_idx, _ = network.split_train_validation(40, 0.1, 0)
    expected = torch.sigmoid(network.prior_logit(Y[train_idx])).numpy()
    assert np.allclose(network.predict(model, X[:3]), expected, atol=1e-4)
    # Without prior_bias (the profiles' setting) the layer's own start is left.
    model = _model()
    start = model.out.bias.detach().clone()
    network.train(model, X, Y, n_steps=1, learning_rate=1e-12, batch_size=8, prior_bias=False,
                  progress=False)
    assert torch.allclose(model.out.bias, start, atol=1e-6)
    assert not torch.allclose(start, network.prior_logit(Y[train_idx]), atol=0.1)


def test_localization_criterion_disagrees_with_bce_on_a_hand_made_case():
    """A peaked but badly calibrated map localises; a flat calibrated one does not.

    Four dipoles on a line (1 cm apart), dipoles 0-1 cortical, 2-3 deep; each
    window's region is its centre (c = 1) and a neighbour (c = 0.5).
    """
    positions = np.array([[0.0, 0, 0], [0.01, 0, 0], [0.02, 0, 0], [0.03, 0, 0]])
    is_cortical = np.array([True, True, False, False])
    Y = np.array([[1.0, 0.5, 0, 0], [0.5, 1.0, 0, 0], [0, 0, 1.0, 0.5], [0, 0, 0.5, 1.0]])
    peaked = np.where(Y == 1.0, 0.99, 0.9)  # right peak, everything else far too high
    flat = np.clip(Y * 0.5 + 0.2, 0, 1)
    flat[np.arange(4), [1, 0, 3, 2]] += 0.3  # close to c everywhere, peak on the neighbour

    def bce(y):
        return -np.mean(Y * np.log(y) + (1 - Y) * np.log(1 - y))

    assert bce(flat) < bce(peaked)
    crit_peaked, med_peaked = network.localization_criterion(peaked, Y, positions, is_cortical)
    crit_flat, med_flat = network.localization_criterion(flat, Y, positions, is_cortical)
    assert crit_peaked == 0.0 and med_peaked == {"cortex": 0.0, "subcortical": 0.0}
    assert np.isclose(crit_flat, 10.0) and np.isclose(med_flat["subcortical"], 10.0)


def test_checkpoint_is_chosen_on_localisation_not_bce():
    """The kept epoch is the one with the lowest localisation criterion."""
    X, Y = _data(n=60, n_dipoles=30)
    positions = np.random.default_rng(1).standard_normal((30, 3)) * 0.05
    model = _model(dropout=0.3)
    result = network.train(model, X, Y, n_steps=60, batch_size=6, learning_rate=3e-3,
                           positions=positions, is_cortical=np.arange(30) < 15, seed=1,
                           progress=False)
    crit = [h["val_mle_mm"] for h in result["history"]]
    assert result["criterion"] == "val_mle_mm"
    assert result["best_epoch"] == 1 + int(np.argmin(crit))
    assert result["best_criterion"] == min(crit)
    _, val_idx = network.split_train_validation(60, 0.1, 1)
    kept, _ = network.localization_criterion(network.predict(model, X[val_idx]), Y[val_idx],
                                             positions, np.arange(30) < 15)
    assert np.isclose(kept, min(crit))


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
        network.train(_model(), X, Y * 2, n_steps=1, progress=False)


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


def _without(params, name):
    return {k: v for k, v in params.items() if k != name}


def test_training_configuration(head, monkeypatch, tmp_path):
    standard = config.get_params("quick", "network")
    standard_sim = config.get_params("quick", "simulation")
    key, folder = network.model_key("quick", head), network.model_folder("quick", 1)
    data_key = sampler.training_set_key("quick", head)
    assert config.training_folder("quick", "training").name == "training"
    asked = config.get_params("quick", "network", training="long")  # without selecting it
    with pytest.raises(ValueError, match="training must be one of"):
        config.get_params("quick", "network", training="longer")
    monkeypatch.setenv("SRCLIB_TRAINING", "long")
    long, long_sim = config.get_params("quick", "network"), config.get_params("quick", "simulation")
    assert asked == long
    assert long["n_steps"] == config.TRAININGS["long"]["steps"] * standard["n_steps"]
    assert _without(long, "n_steps") == _without(standard, "n_steps")
    assert long_sim["n_train"] == round(config.TRAININGS["long"]["windows"]
                                        * standard_sim["n_train"]) > standard_sim["n_train"]
    assert _without(long_sim, "n_train") == _without(standard_sim, "n_train")
    # its own training set and networks, in their own folders
    assert sampler.training_set_key("quick", head) != data_key
    assert config.training_folder("quick", "training").name == "training_long"
    assert network.model_key("quick", head) != key
    assert network.model_folder("quick", 0).name == "model_long"
    assert network.model_folder("quick", 1).name == "model_long_1" != folder.name
    # and so does everything computed with those networks
    from srclib import own_eeg, results

    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    assert own_eeg.output_folder("quick") == tmp_path / "quick" / "own_eeg_long"
    with pytest.raises(FileNotFoundError, match="results_long"):
        results.load_region("quick", "A")
    monkeypatch.setenv("SRCLIB_TRAINING", "longer")
    with pytest.raises(ValueError, match="SRCLIB_TRAINING must be one of"):
        config.get_params("quick", "network")


def test_trainings_are_planned_in_rounds_that_share_the_cores():
    assert network.training_threads(3, cores=2) == [{0: 1, 1: 1}, {2: 2}]
    assert network.training_threads(3, cores=16) == [{0: 5, 1: 5, 2: 5}]
    assert network.training_threads(3, n_jobs=1, cores=2) == [{0: 2}, {1: 2}, {2: 2}]
    assert network.training_threads(2, n_jobs=4, cores=1) == [{0: 1, 1: 1}]
    with pytest.raises(ValueError, match="n_jobs must be"):
        network.training_threads(3, n_jobs=0, cores=2)


@pytest.mark.slow
def test_a_network_trained_in_a_worker_equals_one_trained_here(head, tmp_path, monkeypatch):
    # The quick profile's two networks trained side by side in worker
    # processes, then the second again in this process with the thread count
    # the plan gave it: on one machine the weights are the same.
    stored = config.profile_dir("quick") / "headmodel"
    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    config.profile_dir("quick")
    (tmp_path / "quick" / "headmodel").symlink_to(stored)
    sampler.build_training_set("quick", head, progress=False)
    plan = network.training_threads(2, n_jobs=2)
    network._train_in_workers("quick", head, [0, 1], plan, progress=False)
    side = [network.load_model("quick", head=head, training=k) for k in (0, 1)]
    assert [m.card["hardware"]["torch_threads"] for m in side] == [plan[0][0], plan[0][1]]
    # read_model reads the same network from its folder, without the checks.
    read = network.read_model(network.model_folder("quick", 0))
    assert read.card == side[0].card and not read.training
    for (k, a), b in zip(side[0].state_dict().items(), read.state_dict().values()):
        assert torch.equal(a, b), k
    folder = network.model_folder("quick", 1)
    shutil.rmtree(folder)
    before = torch.get_num_threads()
    torch.set_num_threads(plan[0][1])
    try:
        here = network.train_model("quick", head, training=1, progress=False)
    finally:
        torch.set_num_threads(before)
    for (k, a), b in zip(side[1].state_dict().items(), here.state_dict().values()):
        assert torch.equal(a, b), k
