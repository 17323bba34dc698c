"""PyTorch's threads on a shared machine (issue 14, section 3): network.choose_threads."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from srclib import network


def _python(code, **env):
    """Run ``code`` in a fresh interpreter and return its last output line."""
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(environ, **env))
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_srclib_loads_torch_with_sleeping_threads():
    # The policy reaches OpenMP through the environment when torch loads.
    line = _python("import os; from srclib import network; "
                   "print(network.PASSIVE_WAIT, os.environ['OMP_WAIT_POLICY'])")
    assert line == "True PASSIVE"


@pytest.mark.slow
def test_a_users_own_wait_policy_is_kept():
    line = _python("import os; from srclib import network; "
                   "print(network.PASSIVE_WAIT, os.environ['OMP_WAIT_POLICY'])",
                   OMP_WAIT_POLICY="active")
    assert line == "False active"


@pytest.mark.slow
def test_torch_loaded_first_keeps_its_policy_and_counts_free_cores():
    line = _python(
        "import torch; from srclib import network\n"
        "network._busy_cores = lambda: 10**6\n"
        "low = network.choose_threads()\n"
        "network._busy_cores = lambda: 0\n"
        "print(network.PASSIVE_WAIT, low, network.choose_threads() == min(\n"
        "    torch.get_num_threads(), len(__import__('os').sched_getaffinity(0))))")
    assert line == "False 1 True"


def test_choose_threads_respects_the_users_count_and_the_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert network.choose_threads() == 1
        torch.set_num_threads(64)
        assert network.choose_threads() <= len(os.sched_getaffinity(0))
        monkeypatch.setattr(network, "PASSIVE_WAIT", False)
        monkeypatch.setattr(network, "_busy_cores", lambda: len(os.sched_getaffinity(0)))
        assert network.choose_threads() == 1  # never zero
    finally:
        torch.set_num_threads(before)


def test_busy_cores_is_a_count():
    busy = network._busy_cores()
    assert isinstance(busy, int) and busy >= 0


def _data(n=40, n_dipoles=20):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 64, 50)).astype(np.float32),
            rng.random((n, n_dipoles)).astype(np.float32))


def _model(n_dipoles=20):
    torch.manual_seed(0)
    return network.SourceLSTM(n_dipoles, 8, 16, (16, 32))


def test_train_and_predict_run_on_the_chosen_threads_and_restore_them(monkeypatch):
    X, Y = _data()
    model = _model()
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: (seen.append(torch.get_num_threads()),
                                                     forward(x))[1])
    monkeypatch.setattr(network, "choose_threads", lambda: 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        network.train(model, X, Y, n_steps=4, batch_size=16, progress=False)
        network.predict(model, X[:3])
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_thread_count_changes_training_by_rounding_only():
    X, Y = _data()
    weights = []
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            model = _model()
            network.train.__wrapped__(model, X, Y, n_steps=8, batch_size=16, progress=False)
            weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(weights[0], weights[1], rtol=1e-4, atol=1e-6)
