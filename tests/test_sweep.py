"""The sweep on Dask: same numbers as a serial run, resumable, failures reported by name."""

import numpy as np
import pandas as pd
import pytest

from srclib import config, network, sampler, sweep


def test_random_regions_are_stratified_by_compartment_and_depth(head):
    regions = sweep.random_regions(head, 20, seed=1)
    assert list(regions["compartment"]).count("cortex") == 10
    assert regions["region"].is_unique and (regions["radius_mm"].between(10, 60)).all()
    for compartment in ("cortex", "subcortical"):
        depths = regions.loc[regions["compartment"] == compartment, "depth_mm"].to_numpy()
        pool = 1000 * head.depth[head.compartment == compartment]
        # One centre per depth stratum: they span the compartment's depths in order.
        assert np.all(np.diff(depths) >= 0)
        assert depths[0] <= np.quantile(pool, 0.1) and depths[-1] >= np.quantile(pool, 0.9)
    again = sweep.random_regions(head, 20, seed=1)
    pd.testing.assert_frame_equal(regions, again)


def test_random_regions_never_follow_the_training_stream(head):
    # Drawn from the training set's own seed, the sweep's regions still differ
    # from the training set's first centres: another stream of the generator.
    seed = config.get_params("quick", "simulation")["train_seed"]
    regions = sweep.random_regions(head, 40, seed=seed)
    meta = sampler.draw_simulation_parameters(head, 40, np.random.default_rng(seed))
    assert len(set(regions["center"]) & set(meta["center"][:40])) < 10
    assert not np.isin(regions["radius_mm"], meta["radius_mm"]).any()


def test_bad_sweep_inputs_name_the_parameter(head):
    with pytest.raises(ValueError, match="n must be an integer"):
        sweep.random_regions(head, 1, seed=0)
    with pytest.raises(ValueError, match="radius_mm must be a finite number"):
        sweep.random_regions(head, 4, seed=0, radius_range_mm=(0, 10))
    with pytest.raises(ValueError, match="scheduler must be None"):
        sweep.run_sweep([], "quick", scheduler=3)


@pytest.fixture(scope="module")
def tasks(head):
    network.train_models("quick", head, progress=False)
    regions = sweep.random_regions(head, 2, seed=3)
    return sweep.make_tasks(regions, snrs_db=[0.0, 10.0], seeds=[5], duration_s=1.0)


@pytest.mark.slow
def test_local_cluster_gives_the_serial_numbers_and_a_finished_sweep_is_reused(
        tasks, tmp_path, monkeypatch):
    quick = config.profile_dir("quick")
    serial, failures = sweep.run_sweep(tasks, "quick", scheduler="serial", progress=False)
    assert failures == {} and len(serial) == len(tasks) * 12  # 12 methods per task
    folder = quick / "sweep"
    files = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.csv")}
    # The same tasks again: read back, nothing recomputed.
    again, _ = sweep.run_sweep(tasks, "quick", scheduler="serial", progress=False)
    pd.testing.assert_frame_equal(again, serial)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.csv")} == files
    # On a LocalCluster of two workers, from nothing: the same numbers.
    for path in folder.glob("*.csv"):
        path.unlink()
    clustered, failures = sweep.run_sweep(tasks, "quick", n_workers=2, progress=False)
    assert failures == {}
    numbers = list(serial.select_dtypes("number").columns)
    np.testing.assert_allclose(clustered[numbers].to_numpy(), serial[numbers].to_numpy(),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_and_a_failing_task_does_not_stop_the_others(tasks):
    folder = config.profile_dir("quick") / "sweep"
    for path in folder.glob("*.csv"):
        path.unlink()
    # Interrupted after its first task: only that one is stored.
    first, _ = sweep.run_sweep(tasks[:1], "quick", scheduler="serial", progress=False)
    stored = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.csv")}
    bad = dict(tasks[1], region="broken", radius_mm=-5.0)
    scores, failures = sweep.run_sweep(tasks + [bad], "quick", scheduler="serial",
                                       progress=False)
    assert len(failures) == 1
    (name, message), = failures.items()
    assert name.startswith("broken_") and "radius_mm must be a finite number" in message
    assert len(scores) == len(tasks) * 12  # every good task finished
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.csv")
            if p.name in stored} == stored  # the first task was not recomputed
    pd.testing.assert_frame_equal(scores.iloc[:12].reset_index(drop=True), first)
