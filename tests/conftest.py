"""Shared fixtures: the quick profile's head model, built once and cached in data/quick."""

import os

import numpy as np
import pytest

import srclib  # noqa: F401  (before any test module loads torch: see srclib.network.choose_threads)

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def head():
    """The quick-profile head model (built on first use, then read from data/quick)."""
    from srclib.headmodel import load_head_model

    return load_head_model("quick", progress=False)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
