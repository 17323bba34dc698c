"""Sweeps of many independent region runs, on Dask (beyond the paper).

The paper scores four hand-picked regions at one SNR. A sweep scores many
regions, SNRs and seeds: each combination is one *task* (:func:`make_tasks`),
independent of the others, run by :func:`run_task` and stored on its own
under ``data/<profile>/sweep/`` (one CSV per task, written atomically, named
by the hash of everything the task depends on). :func:`run_sweep` runs the
tasks that are not stored yet with ``dask.distributed``: on a
:class:`~distributed.LocalCluster` that needs no set-up, on an existing
cluster given its scheduler address (for example one started by
dask-jobqueue on Slurm), or serially in this process. An interrupted sweep
therefore resumes where it stopped, a finished one is not recomputed, and a
task that fails is reported by name with its error while the others finish.

Each worker process loads the head model, the profile's networks, the
classical solvers' inverse kernels of each forward operator and each unseen
head model once (:func:`worker_state`), not once per task. Tasks run on one
thread each (PyTorch and BLAS), in the workers and in the serial path alike,
so a cluster gives the same numbers as a serial run.

We use Dask rather than a process pool of our own because the same code then
runs unchanged from two cores to a cluster, with its dashboard, its handling
of lost workers and its recipes for batch schedulers.
"""

import argparse
import hashlib
import json
import time

import dask
from distributed import Client, LocalCluster, as_completed
import numpy as np
import pandas as pd
from scipy.stats import binomtest
from threadpoolctl import threadpool_limits
import torch
from tqdm.auto import tqdm

from . import cache, config, metrics, network, results, solvers
from .check import check_duration, check_int, check_option, check_radius, check_seed, check_snr
from .headmodel import UNSEEN_VARIANTS, load_head_model, unseen_head, unseen_key
from .simulation import default_profile_shape, displaced_region, grow_region, simulate

#: Mixed into the seed of :func:`random_regions`, so that its draws never
#: follow the stream of a training set drawn from the same seed.
REGION_STREAM = 0x5EED5

#: Columns that describe a task, in the order of the result tables.
TASK_COLUMNS = ("task", "region", "compartment", "center", "radius_mm", "depth_mm", "snr_db",
                "seed", "duration_s", "forward", "test_head")

#: Head models a task's recording can be simulated with: the book's simulation
#: forward, or one of the unseen head models (:data:`srclib.headmodel.UNSEEN_VARIANTS`).
TEST_HEADS = ("simulation",) + UNSEEN_VARIANTS

#: Task settings whose default is left out of the task's name and hash, so
#: that results stored before the setting existed keep their names.
_DEFAULTS = dict(forward="inverse", test_head="simulation")

#: Forward operators the classical solvers can invert: the book's inverse
#: forward, or the simulation forward itself (the inverse-crime control).
FORWARDS = ("inverse", "simulation")

_CACHE_VERSION = 1


def random_regions(head, n, seed, radius_range_mm=(10.0, 60.0)):
    """Draw ``n`` regions stratified by compartment and by depth.

    Half of the regions (rounded down) are cortical, the rest subcortical.
    Within a compartment the dipoles are sorted by depth (distance to the
    inner skull) and split into as many strata of equal size as regions are
    drawn there; one centre is drawn in each stratum, so the centres span the
    compartment's depths. Radii are uniform in ``radius_range_mm``.

    Parameters
    ----------
    head : HeadModel
    n : int
        Number of regions, at least 2.
    seed : int
        Seeds the draw, mixed with :data:`REGION_STREAM`.
    radius_range_mm : (float, float)

    Returns
    -------
    regions : pandas.DataFrame
        One row per region: ``region`` (``R000``, ...), ``compartment``,
        ``center`` (dipole index), ``radius_mm``, ``depth_mm``.
    """
    n = check_int("n", n, 2)
    low, high = (check_radius(r) for r in radius_range_mm)
    if low > high:
        raise ValueError(f"radius_range_mm must be increasing, got {radius_range_mm!r}")
    rng = np.random.default_rng([REGION_STREAM, check_seed(seed)])
    rows = []
    for compartment, count in (("cortex", n // 2), ("subcortical", n - n // 2)):
        pool = np.flatnonzero(head.compartment == compartment)
        pool = pool[np.argsort(head.depth[pool], kind="stable")]
        for stratum in np.array_split(pool, count):
            center = int(rng.choice(stratum))
            rows.append(dict(compartment=compartment, center=center,
                             radius_mm=float(rng.uniform(low, high)),
                             depth_mm=float(1000 * head.depth[center])))
    table = pd.DataFrame(rows)
    table.insert(0, "region", [f"R{i:03d}" for i in range(len(table))])
    return table


def make_tasks(regions, snrs_db, seeds, duration_s, forward="inverse", test_head="simulation"):
    """Every combination of region, SNR and seed, as a list of task dictionaries.

    Parameters
    ----------
    regions : pandas.DataFrame
        :func:`random_regions` (or any table with its columns).
    snrs_db : sequence of float
    seeds : sequence of int
        Seeds of the recordings (each task's recording and Random reference).
    duration_s : float
        Length of each task's recording.
    forward : ``"inverse"`` | ``"simulation"``
        The forward operator the classical solvers invert (:data:`FORWARDS`);
        ``"simulation"`` is the inverse-crime control. The LSTM is the same.
    test_head : str
        The head model that simulates the recording (:data:`TEST_HEADS`):
        ``"simulation"``, the book's, or an unseen one.

    Returns
    -------
    tasks : list of dict
        Keys :data:`TASK_COLUMNS` but ``task``, which :func:`task_id` adds.
    """
    duration_s = check_duration(duration_s)
    check_option("forward", forward, FORWARDS)
    check_option("test_head", test_head, TEST_HEADS)
    tasks = []
    for row in regions.itertuples(index=False):
        for snr in snrs_db:
            for seed in seeds:
                tasks.append(dict(region=str(row.region), compartment=str(row.compartment),
                                  center=int(row.center), radius_mm=float(row.radius_mm),
                                  depth_mm=float(row.depth_mm), snr_db=float(snr),
                                  seed=int(seed), duration_s=duration_s, forward=forward,
                                  test_head=test_head))
    return tasks


def task_id(task, context):
    """Name of a task's result: its settings and ``context`` (head model, networks), hashed.

    A task simulated with an unseen head model also hashes that model's
    identity (``context["unseen"][test_head]``, :func:`srclib.headmodel.unseen_key`),
    so that changing the model never lets a stored result be read back.
    """
    settings = {k: task[k] for k in TASK_COLUMNS[1:] if k in task}
    for name, default in _DEFAULTS.items():
        if settings.get(name, default) == default:
            settings.pop(name, None)
    context = dict(context)
    unseen = context.pop("unseen", {})
    if "test_head" in settings:
        settings["test_head_key"] = unseen[settings["test_head"]]
    text = json.dumps(dict(task=settings, context=context, version=_CACHE_VERSION),
                      sort_keys=True)
    crime = "_simfwd" if settings.get("forward") == "simulation" else ""
    unseen = f"_{settings['test_head'].replace('+', '_')}" if "test_head" in settings else ""
    return f"{task['region']}_snr{task['snr_db']:g}_seed{task['seed']}{crime}{unseen}_" \
           f"{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def sweep_context(profile, head=None):
    """What every task's result depends on besides its settings (keys of the inputs)."""
    head = load_head_model(profile, progress=False) if head is None else head
    return dict(profile=profile, head=head.provenance["key"],
                profile_shape=default_profile_shape(head),
                networks=[network.model_key(profile, head, k)
                          for k in range(network.n_networks(profile))],
                unseen={variant: unseen_key(profile, variant, head)
                        for variant in UNSEEN_VARIANTS})


_STATE = {}


def worker_state(profile):
    """The head model, networks and solver kernels of a profile, loaded once per process.

    The kernels of a forward operator, with their scaled groups
    (:func:`srclib.solvers.scaled_kernels`), are computed the first time a
    task asks for them (``state["kernels"][forward]``), once per process.
    """
    if _STATE.get("profile") != profile:
        _STATE.clear()
        head = load_head_model(profile, progress=False)
        _STATE.update(profile=profile, head=head, kernels={},
                      models=network.load_models(profile, head=head, progress=False))
    return _STATE


def _test_head(state, test_head):
    """The head model that simulates a task's recording, loaded once per process."""
    if test_head == "simulation":
        return state["head"]
    heads = state.setdefault("test_heads", {})
    if test_head not in heads:
        heads[test_head] = unseen_head(state["profile"], test_head, state["head"],
                                       progress=False)
    return heads[test_head]


def _kernels_for(state, forward):
    """The solver kernels of one forward operator and their scaled groups, once per process."""
    if forward not in state["kernels"]:
        with threadpool_limits(1):
            kernels = results.solver_kernels(state["head"], forward=forward)
            state["kernels"][forward] = kernels, solvers.scaled_kernels(kernels)
    return state["kernels"][forward]


def run_task(task, profile):
    """Simulate one task's recording and score every method on it.

    Runs on one thread (PyTorch and BLAS), in a worker or in this process.

    Returns
    -------
    scores : pandas.DataFrame
        One row per method: the task's columns, ``method`` and the medians
        over the recording's windows of the six metrics (the LSTM's row pools
        the profile's trainings).
    """
    state = worker_state(profile)
    head = state["head"]
    center = int(task["center"])
    check_option("compartment", task["compartment"], (str(head.compartment[center]),))
    snr_db, seed = check_snr(task["snr_db"]), check_seed(task["seed"])
    forward = check_option("forward", task.get("forward", _DEFAULTS["forward"]), FORWARDS)
    test_head = check_option("test_head", task.get("test_head", _DEFAULTS["test_head"]),
                             TEST_HEADS)
    n_times = int(round(check_duration(task["duration_s"]) * config.SFREQ))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            c = grow_region(head, center, task["radius_mm"])
            simulated = _test_head(state, test_head)
            # Off the grid the same region is simulated at the moved dipoles;
            # the methods are scored against the region on the book's grid.
            c_simulated = (displaced_region(simulated, c, center, task["radius_mm"])
                           if "sources" in test_head else c)
            eeg = simulate(simulated, c_simulated, center, n_times, snr_db,
                           np.random.default_rng(seed))
            kernels, bases = _kernels_for(state, forward)
            per_window, _, _ = results.evaluate_recording(
                head, state["models"], eeg, c, center, kernels=kernels, bases=bases, seed=seed,
                progress=False)
    finally:
        torch.set_num_threads(threads)
    scores = metrics.summarize(per_window).reset_index()
    for k, column in enumerate(TASK_COLUMNS):
        scores.insert(k, column, task.get(column, _DEFAULTS.get(column)))
    return scores


def _run_and_store(task, profile, folder):
    """Run a task and write its scores atomically; return the file name."""
    scores = run_task(task, profile)
    path = folder / f"{task['task']}.csv"
    cache.atomic_save(path, lambda p: scores.to_csv(p, index=False, float_format="%.9g"))
    return path.name


def run_sweep(tasks, profile, *, scheduler=None, n_workers=2, progress=True):
    """Run the tasks not stored yet, store each result, and gather all of them.

    Parameters
    ----------
    tasks : list of dict
        From :func:`make_tasks`.
    profile : ``"paper"`` | ``"quick"``
    scheduler : str | None
        None: a new :class:`~distributed.LocalCluster` of ``n_workers``
        single-threaded worker processes; ``"serial"``: no Dask, one task
        after the other in this process; otherwise the address of a running
        Dask scheduler (``"tcp://host:8786"``), whose workers must have srclib
        installed and see the same ``data/`` folder.
    n_workers : int
        Workers of the LocalCluster.
    progress : bool
        A bar over tasks; the dashboard's address is printed when a cluster
        is used.

    Returns
    -------
    scores : pandas.DataFrame
        The rows of every task that succeeded (see :func:`run_task`), in the
        order of ``tasks``; a task given more than once (the same settings)
        is run and returned once.
    failures : dict
        ``task name -> error message`` of the tasks that failed.
    """
    config.check_profile(profile)
    if scheduler is not None and not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be None, 'serial' or a scheduler address, "
                         f"got {scheduler!r}")
    context = sweep_context(profile)
    tasks = list({t["task"]: t for t in (dict(t, task=task_id(t, context))
                                          for t in tasks)}.values())
    folder = config.training_folder(profile, "sweep")
    folder.mkdir(parents=True, exist_ok=True)
    cache.remove_stale(folder)
    todo = [t for t in tasks if not (folder / f"{t['task']}.csv").exists()]
    failures = {}
    t0 = time.perf_counter()
    if todo and scheduler == "serial":
        for task in tqdm(todo, desc="sweep", unit="task", disable=not progress):
            try:
                _run_and_store(task, profile, folder)
            except Exception as err:  # reported by name; the others go on
                failures[task["task"]] = f"{type(err).__name__}: {err}"
    elif todo:
        failures = _run_on_dask(todo, profile, folder, scheduler, n_workers, progress)
    if progress:
        print(f"sweep: {len(tasks) - len(todo)} of {len(tasks)} tasks stored before, "
              f"{len(todo) - len(failures)} run in {time.perf_counter() - t0:.0f} s, "
              f"{len(failures)} failed -> {config.shown_path(folder)}")
    parts = [_read_task(folder / f"{t['task']}.csv") for t in tasks
             if (folder / f"{t['task']}.csv").exists()]
    scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return scores, failures


def _read_task(path):
    """One stored task's rows; settings added later take their defaults (:data:`_DEFAULTS`)."""
    scores = pd.read_csv(path)
    for name, default in _DEFAULTS.items():
        if name not in scores:
            scores.insert(TASK_COLUMNS.index(name), name, default)
    return scores


def worker_environment():
    """Dask's environment for new worker processes, without its malloc trim threshold.

    Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which keeps
    the memory a worker reports low, but also makes glibc hand every
    temporary array of more than 128 kB back to the system when it is freed
    and fault it in afresh the next time. A task makes a few gigabytes of
    such temporaries (the solvers' source estimates, block by block): with
    the setting, 30 % of a worker's time went to page faults (23 million of
    them in its first 50 or so paper-scale tasks). Without it the workers use
    glibc's defaults, as a serial run does. Workers of a cluster started
    elsewhere keep the environment they were started with;
    ``MALLOC_MMAP_THRESHOLD_=33554432`` in it has the same effect (the book's
    "Re-running" page).

    Returns
    -------
    environ : dict
    """
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def _run_on_dask(tasks, profile, folder, scheduler, n_workers, progress):
    """Run tasks on a Dask cluster; return the failures by task name."""
    cluster = None
    if scheduler is None:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment()}):
            cluster = LocalCluster(n_workers=check_int("n_workers", n_workers, 1),
                                   threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
    else:
        client = Client(scheduler)
    failures = {}
    try:
        if progress:
            print(f"sweep: Dask dashboard at {client.dashboard_link}")
        futures = {client.submit(_run_and_store, t, profile, folder, key=f"sweep-{t['task']}",
                                 pure=False): t["task"] for t in tasks}
        for future in tqdm(as_completed(futures), total=len(futures), desc="sweep",
                           unit="task", disable=not progress):
            if future.status == "error":
                err = future.exception()
                failures[futures[future]] = f"{type(err).__name__}: {err}"
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return failures


def best_classical(scores, metric="MLE_mm"):
    """The classical solver with the lowest median ``metric`` over regions, per compartment.

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`run_sweep`'s rows (one per task and method).
    metric : str
        A column of ``scores`` where lower is better.

    Returns
    -------
    best : pandas.Series
        Compartment -> solver name.
    """
    classical = scores[scores["method"].isin(solvers.SOLVERS)]
    medians = classical.groupby(["compartment", "method"])[metric].median()
    return medians.groupby(level="compartment").idxmin().map(lambda pair: pair[1])


def win_rates(scores, by, metric="MLE_mm", confidence=0.95):
    """How often the LSTM beats each compartment's best classical solver, region by region.

    For every task the LSTM *wins* when its median ``metric`` over the
    recording's windows is lower than that of its compartment's best
    classical solver (:func:`best_classical`, chosen once over all regions,
    not per region). Intervals are Wilson score intervals of the proportion.

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`run_sweep`'s rows.
    by : list of str
        Columns of ``scores`` to group the tasks by (for example
        ``["compartment", "radius band"]``).
    metric : str
    confidence : float

    Returns
    -------
    table : pandas.DataFrame
        Indexed by ``by``: ``solver``, ``regions``, ``wins``, ``win rate``,
        ``low`` and ``high``.
    """
    best = best_classical(scores, metric)
    wide = scores.pivot_table(index="task", columns="method", values=metric)
    tasks = scores.drop_duplicates("task").set_index("task")
    tasks["solver"] = tasks["compartment"].map(best)
    theirs = np.array([wide.at[t, m] for t, m in tasks["solver"].items()])
    tasks["win"] = wide.loc[tasks.index, "LSTM"].to_numpy() < theirs
    rows = []
    for key, group in tasks.groupby(by, observed=True):
        k, n = int(group["win"].sum()), len(group)
        ci = binomtest(k, n).proportion_ci(confidence, method="wilson")
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)),
                         solver=", ".join(sorted(set(group["solver"]))), regions=n, wins=k,
                         **{"win rate": k / n, "low": ci.low, "high": ci.high}))
    return pd.DataFrame(rows).set_index(by)


def main(argv=None):
    """Command line: ``python -m srclib.sweep --profile quick --n-regions 20 ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m srclib.sweep", description="Score random regions on Dask.")
    parser.add_argument("--profile", default="quick", choices=sorted(config.PROFILES))
    parser.add_argument("--n-regions", type=int, default=20)
    parser.add_argument("--region-seed", type=int, default=2026)
    parser.add_argument("--snr-db", type=float, nargs="+", default=[10.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--duration-s", type=float, default=12.0,
                        help="length of each task's recording (12 s = 60 windows)")
    parser.add_argument("--scheduler", default=None,
                        help="'serial', or a Dask scheduler address; default: a LocalCluster")
    parser.add_argument("--n-workers", type=int, default=2)
    args = parser.parse_args(argv)
    head = load_head_model(args.profile)
    regions = random_regions(head, args.n_regions, args.region_seed)
    tasks = make_tasks(regions, args.snr_db, args.seeds, args.duration_s)
    scores, failures = run_sweep(tasks, args.profile, scheduler=args.scheduler,
                                 n_workers=args.n_workers)
    for name, message in failures.items():
        print(f"failed: {name}: {message}")
    if len(scores):
        print(scores.groupby(["compartment", "method"])["MLE_mm"].median().unstack(0).round(1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
