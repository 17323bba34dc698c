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
    # A task given twice (a region in two of a page's task lists) comes back once.
    twice, _ = sweep.run_sweep(tasks + tasks[:1], "quick", scheduler="serial", progress=False)
    pd.testing.assert_frame_equal(twice, serial)
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


def _scores(rows):
    """A sweep result table from (task, compartment, method, MLE) rows."""
    return pd.DataFrame(rows, columns=["task", "compartment", "method", "MLE_mm"])


def test_win_rates_against_the_compartments_best_classical_solver():
    rows = []
    # Cortex: dSPM is best over regions (median 10) though MNE wins one region.
    for t, (lstm, dspm, mne) in enumerate([(5, 10, 30), (12, 10, 30), (8, 9, 1), (20, 11, 30)]):
        rows += [(f"c{t}", "cortex", "LSTM", lstm), (f"c{t}", "cortex", "dSPM", dspm),
                 (f"c{t}", "cortex", "MNE", mne)]
    for t, (lstm, eloreta) in enumerate([(1, 2), (3, 2)]):
        rows += [(f"d{t}", "subcortical", "LSTM", lstm),
                 (f"d{t}", "subcortical", "eLORETA", eloreta),
                 (f"d{t}", "subcortical", "Perfect", 0.0)]  # references are not solvers
    scores = _scores(rows)
    assert sweep.best_classical(scores).to_dict() == {"cortex": "dSPM", "subcortical": "eLORETA"}
    table = sweep.win_rates(scores, ["compartment"])
    assert table.loc["cortex", "wins"] == 2 and table.loc["cortex", "regions"] == 4
    assert table.loc["subcortical", "wins"] == 1 and table.loc["subcortical", "win rate"] == 0.5
    # Wilson 95 % interval of 2 of 4: (0.150, 0.850).
    assert np.allclose(table.loc["cortex", ["low", "high"]].astype(float), [0.150, 0.850],
                       atol=1e-3)


def test_inverse_crime_tasks_are_named_apart_and_checked(head):
    regions = sweep.random_regions(head, 2, seed=3)
    usual = sweep.make_tasks(regions, [10.0], [5], 1.0)
    crime = sweep.make_tasks(regions, [10.0], [5], 1.0, forward="simulation")
    context = dict(profile="quick")
    old = {k: v for k, v in usual[0].items() if k != "forward"}  # stored before the control
    assert sweep.task_id(usual[0], context) == sweep.task_id(old, context)
    assert "_simfwd_" in sweep.task_id(crime[0], context)
    unseen = sweep.make_tasks(regions, [10.0], [5], 1.0, test_head="skull+electrodes")
    context["unseen"] = {"skull+electrodes": "model-1"}
    assert "_skull_electrodes_" in sweep.task_id(unseen[0], context)
    # Another unseen model of the same name: another task; the usual tasks keep their names.
    other = dict(context, unseen={"skull+electrodes": "model-2"})
    assert sweep.task_id(unseen[0], other) != sweep.task_id(unseen[0], context)
    assert sweep.task_id(usual[0], other) == sweep.task_id(usual[0], context) \
        == sweep.task_id(usual[0], dict(profile="quick"))
    assert sweep.task_id(crime[0], context) != sweep.task_id(usual[0], context)
    with pytest.raises(ValueError, match="forward must be one of"):
        sweep.make_tasks(regions, [10.0], [5], 1.0, forward="perfect")


@pytest.mark.slow
def test_inverse_crime_changes_the_solvers_not_the_lstm(tasks):
    usual = dict(tasks[1], task="usual")
    crime = dict(usual, task="crime", forward="simulation")
    a, b = sweep.run_task(usual, "quick"), sweep.run_task(crime, "quick")
    assert set(a["forward"]) == {"inverse"} and set(b["forward"]) == {"simulation"}
    a, b = a.set_index("method"), b.set_index("method")
    for reference in ("LSTM", "Random", "Perfect"):
        assert a.loc[reference, "MLE_mm"] == b.loc[reference, "MLE_mm"]
    assert (a.loc["MNE", ["MLE_mm", "AUC_close", "PAS_mm"]]
            != b.loc["MNE", ["MLE_mm", "AUC_close", "PAS_mm"]]).any()
    # Another head model simulates another recording: every method sees other data.
    for variant in ("skull", "sources"):
        unseen = sweep.run_task(dict(usual, task="unseen", test_head=variant), "quick")
        assert set(unseen["test_head"]) == {variant}
        unseen = unseen.set_index("method")
        for method in ("LSTM", "MNE"):
            assert (unseen.loc[method, ["AUC_close", "AUC_far", "PAS_mm"]]
                    != a.loc[method, ["AUC_close", "AUC_far", "PAS_mm"]]).any()
        # The references are scored against the region on the book's grid.
        assert unseen.loc["Perfect", "MLE_mm"] == a.loc["Perfect", "MLE_mm"]


@pytest.mark.slow
def test_unseen_head_models_share_one_bem_solution_per_skull(head, tmp_path, monkeypatch):
    """Five variants, two conductivities: two BEM solutions, each computed once."""
    from srclib import headmodel

    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    solved = []
    solve = headmodel.mne.make_bem_solution
    monkeypatch.setattr(headmodel.mne, "make_bem_solution",
                        lambda model, **kw: solved.append(model[1]["sigma"]) or solve(model, **kw))
    shared = {v: headmodel.unseen_forward("quick", v, head, progress=False)
              for v in headmodel.UNSEEN_VARIANTS}
    skull = headmodel.UNSEEN_SKULL_S_PER_M
    assert sorted(solved) == pytest.approx([0.005, skull])
    assert sorted(p.name for p in (tmp_path / "quick" / "unseen").glob("bem_*")) == [
        f"bem_{0.005:g}", f"bem_{skull:g}"]
    # The same operators as with a solution of their own.
    for variant in ("skull+electrodes", "sources"):
        monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path / variant))
        alone = headmodel.unseen_forward("quick", variant, head, progress=False)
        assert np.allclose(alone["sol"]["data"], shared[variant]["sol"]["data"], rtol=1e-5,
                           atol=1e-6 * np.abs(alone["sol"]["data"]).max())
    assert len(solved) == 4


@pytest.mark.slow
def test_unseen_head_models_built_two_at_a_time_match_those_built_one_by_one(head, tmp_path,
                                                                            monkeypatch):
    """Worker processes build the same operators, the new conductivities first, and only once."""
    from srclib import config, headmodel

    stored = config.profile_dir("quick") / "headmodel"
    built = {}
    for n_jobs in (1, 2):
        (tmp_path / str(n_jobs) / "quick").mkdir(parents=True)
        (tmp_path / str(n_jobs) / "quick" / "headmodel").symlink_to(stored)
        monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path / str(n_jobs)))
        order = headmodel.build_unseen_forwards("quick", head, n_jobs=n_jobs, progress=False)
        assert order[:2] == ["skull", "electrodes"]  # one per skull conductivity
        assert sorted(order) == sorted(headmodel.UNSEEN_VARIANTS)
        assert headmodel.build_unseen_forwards("quick", head, n_jobs=n_jobs, progress=False) == []
        built[n_jobs] = {v: headmodel.unseen_forward("quick", v, head, progress=False)["sol"]["data"]
                         for v in headmodel.UNSEEN_VARIANTS}
    for variant, one_by_one in built[1].items():
        assert np.allclose(built[2][variant], one_by_one, rtol=1e-6,
                           atol=1e-9 * np.abs(one_by_one).max()), variant


def test_unseen_head_models_differ_by_the_stated_amounts(head):
    from srclib import headmodel

    before = np.array([ch["loc"][:3] for ch in head.fwd_simulation["info"]["chs"]])
    gain = head.leadfield("simulation", reference="average")
    for variant in headmodel.UNSEEN_VARIANTS:
        fwd = headmodel.unseen_forward("quick", variant, head, progress=False)
        moved = np.array([ch["loc"][:3] for ch in fwd["info"]["chs"]])
        shift = 1000 * np.linalg.norm(moved - before, axis=1)
        expected = headmodel.UNSEEN_SHIFT_MM if "electrodes" in variant else 0.0
        assert np.allclose(shift, expected, atol=1e-6)
        bem = headmodel.cache.read_provenance(
            headmodel.config.profile_dir("quick") / "unseen" / variant.replace("+", "_"))
        skull = headmodel.UNSEEN_SKULL_S_PER_M if "skull" in variant else 0.0050
        assert bem["conductivity"] == [0.33, skull, 0.33]
        other = headmodel.unseen_head("quick", variant, head, progress=False)
        assert other.fwd_inverse is head.fwd_inverse  # the solvers' model is untouched
        # The forward is computed where the head's dipoles now are.
        computed = np.concatenate([s["rr"][s["vertno"]] for s in fwd["src"]])
        at = headmodel.mne.transforms.apply_trans(fwd["mri_head_t"]["trans"], other.positions)
        assert np.allclose(computed, at, atol=1e-6)
        moved = 1000 * np.linalg.norm(other.positions - head.positions, axis=1)
        if "sources" in variant:
            # Deep: to the centre of a grid cube; cortex: to a vertex the book does not use.
            spacing = head.provenance["params"]["subcortical_spacing_mm"]
            assert np.allclose(moved[~head.is_cortical], spacing * np.sqrt(3) / 2)
            assert moved[head.is_cortical].min() > 0.5 and np.median(moved) < spacing
            assert len(np.unique(other.positions, axis=0)) == head.n_dipoles  # none shared
            assert np.allclose(np.linalg.norm(other.normals[head.is_cortical], axis=1), 1)
        else:
            assert moved.max() == 0
        moved_gain = other.leadfield("simulation", reference="average")
        # Other topographies, not only another scale: they differ after the best scaling.
        scale = np.sum(gain * moved_gain) / np.sum(moved_gain**2)
        assert np.linalg.norm(gain - scale * moved_gain) > 0.01 * np.linalg.norm(gain)
    keys = {headmodel.unseen_key("quick", v, head) for v in headmodel.UNSEEN_VARIANTS}
    assert len(keys) == len(headmodel.UNSEEN_VARIANTS)
    with pytest.raises(ValueError, match="variant must be one of"):
        headmodel.unseen_forward("quick", "thicker skull", head)
    with pytest.raises(ValueError, match="test_head must be one of"):
        sweep.make_tasks(sweep.random_regions(head, 2, seed=3), [10.0], [5], 1.0,
                         test_head="unseen")


def test_local_workers_start_without_dasks_malloc_trim_threshold():
    """The trim threshold made a third of a worker's time page faults; the rest is kept."""
    import dask

    environ = sweep.worker_environment()
    assert "MALLOC_TRIM_THRESHOLD_" not in environ
    default = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert environ == {k: v for k, v in default.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    assert environ.get("OMP_NUM_THREADS") == 1
