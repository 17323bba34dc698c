"""Results for one test region (paper section III, Tables I-IV and Figures 1-2).

:func:`run_region` simulates the region's recordings (several independent
ones, each with its own deep orientation, AR filters and noise), cuts them
into 50-sample windows, asks every method for one activation map per window
(each of the profile's trained LSTMs, the nine classical solvers, and the
Random and Perfect references), scores every window with the six metrics,
and writes

* ``data/<profile>/results/region_<X>_windows.csv``: one row per method,
  recording, training and window, columns ``method``, ``recording`` (0, 1,
  ...), ``training`` (index of the network for the LSTM's rows, -1 for
  methods without one), ``window`` (within its recording) and the six metrics
  (``<X>`` gains tags for non-default settings, see :func:`result_name`);
* ``data/<profile>/results/region_<X>.csv``: the medians over all windows, one
  row per method (the paper's table layout; the LSTM's row pools its
  trainings);
* ``data/<profile>/results/region_<X>_intervals.csv``: for every method and
  metric the median and its 95% bootstrap interval (:func:`bootstrap_intervals`),
  columns ``method``, ``metric``, ``median``, ``low``, ``high``;
* ``data/<profile>/results/region_<X>_maps.npz``: for each method the map of
  its median-error window of the first recording (what the reconstruction
  figure shows; the first network's for the LSTM), with the truth.

A rerun with the same parameters, head model and network reads these files
instead of recomputing them. ``region_<X>.json``, written last, stores the
key (the hash of the parameters, the head model and the network's weights)
and the size and SHA-256 of the three files; a file that no longer matches
is recomputed by :func:`run_region` and refused by :func:`load_region`.

Results are keyed by the network that produced them: a network passed to
:func:`run_region` that is not the profile's trained one (other weights)
writes files tagged ``_model<hash>``, and never those the book shows. The
networks of another training configuration write to ``results_long/`` and
so on instead of ``results/`` (:func:`srclib.config.training_folder`).
"""

import hashlib
import json
import re
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats
import torch
from tqdm import tqdm

from . import cache, config, metrics, regions, simulation, solvers
from .headmodel import head_for
from .network import load_models, output_bias_start, predict, windows_of
from .check import (check_duration, check_int, check_option, check_radius, check_region_name,
                    check_seed, check_snr)

#: Every row of a region table, in the paper's order.
METHODS = ("Random", "Perfect", "LSTM") + solvers.SOLVERS

_CACHE_VERSION = 4  # 3: several recordings and trainings, intervals; 4: peak column

#: Bootstrap resamples and coverage of the intervals (:func:`bootstrap_intervals`).
N_BOOTSTRAP = 1000
LEVEL = 0.95


def region_parameters(profile, region="A", *, center_mni=None, radius_mm=None,
                      compartment=None, snr_db=None, seed=None, duration_s=None,
                      n_recordings=None):
    """Complete a region run's parameters from the profile's defaults.

    ``center_mni`` may be given as text (``"[30, -20, 50]"``, as a papermill
    ``-p`` option passes it); it is parsed here, so that results are named and
    keyed by the coordinates, not by how they were typed. Every value is
    checked here, the region name first, before anything is loaded or
    computed.
    """
    region = check_region_name(region)
    center_mni = regions.parse_center_mni(center_mni)
    sim_params = config.get_params(profile, "simulation")
    return dict(
        profile=profile, region=region, center_mni=center_mni,
        radius_mm=None if radius_mm is None else check_radius(radius_mm),
        compartment=(None if compartment is None
                     else check_option("compartment", compartment, ("cortex", "subcortical"))),
        snr_db=check_snr(sim_params["region_snr_db"] if snr_db is None else snr_db),
        seed=check_seed(regions.default_seed(region) if seed is None else seed),
        duration_s=check_duration(sim_params["region_duration_s"] if duration_s is None
                                  else duration_s),
        n_recordings=check_int("n_recordings", sim_params["region_recordings"]
                               if n_recordings is None else n_recordings, 1, 1000),
        order=sim_params["ar_order"],
    )


def result_name(params):
    """File stem of a run's results: ``region_<X>``, tagged with any non-default setting.

    The book's pages use the defaults and write ``region_A`` ... ``region_D``;
    a re-run with other settings (``snr_db=0``, another centre, ...) writes
    its own files, e.g. ``region_D_snr0``, and never overwrites the book's.
    Numbers are written exactly (:func:`_number_tag`), so two settings that
    differ in any digit never share a file.
    """
    defaults = region_parameters(params["profile"], params["region"])
    tags = []
    for key, label in (("center_mni", "at"), ("radius_mm", "r"), ("compartment", ""),
                       ("snr_db", "snr"), ("seed", "seed"), ("duration_s", "dur"),
                       ("n_recordings", "rec")):
        value = params[key]
        if value is None or value == defaults[key]:
            continue
        if isinstance(value, (list, tuple)):
            value = "_".join(_number_tag(v) for v in value)
        elif not isinstance(value, str):
            value = _number_tag(value)
        tags.append(f"{label}{value}")
    return "_".join([f"region_{params['region']}", *tags])


def _number_tag(value):
    """A number as the shortest text that reads back as exactly the same float.

    ``repr`` of a float round-trips (``10.000001`` and ``10.0000011`` stay
    apart, where ``%g`` gave ``10`` for both); a trailing ``.0`` and the ``+``
    of an exponent are dropped (``0``, ``1e16``), which keeps the text unique
    and safe in a file name.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    text = repr(float(value)).replace("+", "")
    return text[:-2] if text.endswith(".0") else text


def method_maps(head, model, eeg, c, method, rng):
    """Activation maps (n_windows, N) of the LSTM or a reference on a recording.

    ``model`` is the network for ``"LSTM"``. The classical solvers' maps are
    made together, by :func:`srclib.solvers.maps_from_kernels`
    (:func:`evaluate_recording`).
    """
    n_windows = eeg.shape[1] // config.WINDOW
    if method == "Random":
        return metrics.random_prediction(n_windows, head.n_dipoles, rng)
    if method == "Perfect":
        return metrics.perfect_prediction(c, n_windows)
    if method == "LSTM":
        return predict(model, windows_of(eeg))
    check_option("method", method, METHODS + solvers.EXTRA_SOLVERS)
    raise ValueError(f"the maps of {method!r} come from solvers.maps_from_kernels")


def solver_kernels(head, methods=METHODS, forward="inverse"):
    """The inverse kernel of every classical solver among ``methods``, computed once.

    ``forward`` is the operator they invert: ``"inverse"`` (the book's) or
    ``"simulation"`` (the inverse-crime control).
    """
    return {m: solvers.inverse_kernel(head, m, forward=forward)
            for m in methods if m in solvers.METHODS}


def evaluate_recording(head, models, eeg, c, center, *, methods=METHODS, kernels=None,
                       bases=None, seed=0, progress=True):
    """Score every method on every window of a recording.

    Parameters
    ----------
    head : HeadModel
    models : SourceLSTM | list of SourceLSTM
        The network(s) behind the ``"LSTM"`` rows, one set of rows each.
    eeg : ndarray, shape (64, n_times)
    c : ndarray, shape (N,)
    center : int
    methods : sequence of str
    kernels : dict | None
        Solver kernels (:func:`solver_kernels`); None computes each solver's kernel here.
    bases : dict | None
        :func:`srclib.solvers.scaled_kernels` of the solvers' kernels among
        ``methods``, for callers that score many recordings; found here if
        None (or if it covers other solvers).
    seed : int
        Seeds the Random reference.
    progress : bool

    Returns
    -------
    per_window : pandas.DataFrame
        Columns ``method``, ``training`` (the network's index for the LSTM,
        -1 otherwise), ``window``, the six metrics and ``peak`` (the index of
        the dipole where the window's map peaks).
    examples : dict
        For each method, the map of its median-MLE window and that window's
        index (the first network's, for the LSTM).
    seconds : dict
        Time each method took to produce and score its maps; the classical
        solvers' maps are made together, under ``"solver maps"``.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    rng = np.random.default_rng(seed)
    rows, examples, seconds = [], {}, {}
    t0 = time.perf_counter()
    # The solvers' maps at once: kernels that are another scaled per dipole
    # share its source estimates (solvers.maps_from_kernels).
    given = kernels or {}
    kernels = {**solver_kernels(head, [m for m in methods if m not in given]), **given}
    used = {m: kernels[m] for m in methods if m in kernels}
    shared = solvers.maps_from_kernels(used, eeg, solvers.smoothing_matrix(head),
                                       bases=bases if bases and set(bases) == set(used) else None)
    seconds["solver maps"] = time.perf_counter() - t0
    negatives = metrics.negative_sets(c, head.positions)  # the region's, for every method
    for method in tqdm(methods, desc="methods", disable=not progress, leave=False):
        t0 = time.perf_counter()
        for training, model in enumerate(models if method == "LSTM" else [None]):
            maps = (shared.pop(method) if method in shared
                    else method_maps(head, model, eeg, c, method, rng))
            table = metrics.evaluate_windows(maps, c, center, head.positions, negatives)
            table["peak"] = np.argmax(maps, axis=1)  # as the localisation error reads it
            table.insert(0, "window", np.arange(len(table)))
            table.insert(0, "training", training if method == "LSTM" else -1)
            table.insert(0, "method", method)
            rows.append(table)
            if training == 0:
                order = np.argsort(table["MLE_mm"].to_numpy(), kind="stable")
                median_window = int(order[len(order) // 2])
                examples[method] = dict(window=median_window,
                                        map=maps[median_window].astype(np.float32))
        seconds[method] = time.perf_counter() - t0
    return pd.concat(rows, ignore_index=True), examples, seconds


def recording_seeds(seed, n_recordings):
    """Seeds of a region's independent recordings: ``seed`` itself, then derived ones.

    The first recording is the one the seed always gave; the others take
    seeds spawned from it (:class:`numpy.random.SeedSequence`), so a region's
    recordings never share a draw and adding recordings keeps the earlier ones.
    """
    seed = check_seed(seed)
    children = np.random.SeedSequence(seed).spawn(max(n_recordings - 1, 0))
    return [seed] + [int(ch.generate_state(1, np.uint64)[0] >> np.uint64(1)) for ch in children]


def evaluate_recordings(head, models, spec, params, *, methods=METHODS, progress=True):
    """Simulate a region's recordings and score every method on each.

    Returns
    -------
    per_window : pandas.DataFrame
        :func:`evaluate_recording`'s rows with a column ``recording`` after
        ``method``.
    examples : dict
        The first recording's examples.
    c : ndarray, shape (N,)
    seconds : dict
        Time per method over all recordings, and of the kernels.
    """
    t0 = time.perf_counter()
    kernels = solver_kernels(head, methods)
    bases = solvers.scaled_kernels(kernels)
    seconds = dict(kernels=time.perf_counter() - t0)
    parts, examples = [], None
    seeds = recording_seeds(params["seed"], params["n_recordings"])
    for k, seed in enumerate(tqdm(seeds, desc="recordings", disable=not progress)):
        eeg, c, center = regions.region_recording(head, spec, params["duration_s"],
                                                  params["snr_db"], seed, order=params["order"])
        part, found, took = evaluate_recording(head, models, eeg, c, center, methods=methods,
                                               kernels=kernels, bases=bases, seed=seed,
                                               progress=progress)
        part.insert(1, "recording", k)
        parts.append(part)
        examples = found if examples is None else examples
        for method, s in took.items():
            seconds[method] = seconds.get(method, 0.0) + s
    per_window = pd.concat(parts, ignore_index=True)
    order = {m: i for i, m in enumerate(methods)}
    per_window = per_window.sort_values(
        ["method", "recording", "training", "window"], key=lambda col: (
            col.map(order) if col.name == "method" else col), kind="stable",
    ).reset_index(drop=True)
    return per_window, examples, c, seconds


def bootstrap_intervals(per_window, *, n_boot=N_BOOTSTRAP, level=LEVEL, seed=0,
                        metric_names=metrics.METRICS):
    """Median of every metric per method, with a bootstrap interval over recordings.

    The windows of one recording share its draw (deep orientation, AR
    filters, noise), so they are not independent samples; the recordings
    are. Each resample draws the recordings with replacement (and, for a
    method with several trainings, the trainings with replacement,
    independently), pools the windows of what was drawn, and takes the
    median over them, as the table does. The interval is the *expanded*
    percentile interval of those medians (Hesterberg 2015): a plain
    percentile interval is too narrow with few independent units (it covered
    89% instead of 95% with 10 recordings in our test), so its tail
    probabilities are taken at ``Phi(-sqrt(R / (R - 1)) t_{R-1})`` instead of
    ``(1 - level) / 2``, with ``R`` recordings and ``t_{R-1}`` the Student
    quantile of the level. With one recording the interval is the plain
    percentile one over trainings (or empty, a point).

    Parameters
    ----------
    per_window : pandas.DataFrame
        Columns ``method``, ``recording``, ``training`` and the metrics.
    n_boot : int
        Resamples.
    level : float
        Coverage of the interval, in (0, 1).
    seed : int
        Seeds the resampling: the same seed gives the same intervals.
    metric_names : sequence of str

    Returns
    -------
    intervals : pandas.DataFrame
        Index (``method``, ``metric``), columns ``median`` (over all windows),
        ``low``, ``high``.
    """
    n_boot = check_int("n_boot", n_boot, 1)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    metric_names = list(metric_names)
    rng = np.random.default_rng(check_seed(seed))
    rows = []
    for method, part in per_window.groupby("method", sort=False):
        cells = part.groupby(["recording", "training"]).indices
        recordings = sorted({r for r, _ in cells})
        trainings = sorted({t for _, t in cells})
        values = part[metric_names].to_numpy(float)
        draw_r = rng.integers(0, len(recordings), (n_boot, len(recordings)))
        draw_t = rng.integers(0, len(trainings), (n_boot, len(trainings)))
        medians = np.empty((n_boot, len(metric_names)))
        for b in range(n_boot):
            index = np.concatenate([cells[(recordings[i], trainings[j])]
                                    for i in draw_r[b] for j in draw_t[b]])
            medians[b] = np.nanmedian(values[index], axis=0)
        tail = _expanded_tail(len(recordings), level)
        low, high = np.nanquantile(medians, [tail, 1 - tail], axis=0)
        for j, metric in enumerate(metric_names):
            rows.append(dict(method=method, metric=metric,
                             median=float(np.nanmedian(values[:, j])),
                             low=float(low[j]), high=float(high[j])))
    return pd.DataFrame(rows).set_index(["method", "metric"])


def run_region(profile="paper", region="A", *, head=None, model=None, progress=True, **kwargs):
    """Tables and maps of one region, computed once and cached.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    region : str
        ``"A"``-``"D"`` or a custom name (then pass ``center_mni``,
        ``radius_mm`` and ``compartment``).
    head : HeadModel | None
        Already loaded head model.
    model : SourceLSTM | list of SourceLSTM | None
        The network(s) to evaluate; None means the profile's trained networks
        (:func:`srclib.network.load_models`). Results are keyed by the
        networks' weights (:func:`model_identity`): networks other than the
        profile's trained ones write files tagged ``_model<hash>`` and never
        read or replace the book's.
    progress : bool
    **kwargs
        ``center_mni``, ``radius_mm``, ``compartment``, ``snr_db``, ``seed``,
        ``duration_s``, ``n_recordings`` (see :func:`region_parameters`).

    Returns
    -------
    result : dict
        ``spec`` (the resolved region), ``params``, ``table`` (medians),
        ``intervals`` (:func:`bootstrap_intervals`), ``per_window``,
        ``examples`` (maps), ``c``, ``seconds``, ``model`` (the networks'
        identity, how many, and whether they are the profile's trained ones).

    Raises
    ------
    srclib.network.ModelNotFoundError
        When the results must be computed, no ``model`` is passed and the
        profile's network has not been trained (this function never trains
        it; ``make book`` or :func:`srclib.network.train_model` does).
    """
    params = region_parameters(profile, region, **kwargs)
    head = head_for(profile, head, progress=progress)
    spec = regions.resolve_region(head, region, center_mni=params["center_mni"],
                                     radius_mm=params["radius_mm"],
                                     compartment=params["compartment"])
    model, network = _network_for(profile, head, model, progress)
    folder = config.training_folder(profile, "results")
    name = result_name(params) + ("" if network["trained"] else f"_model{network['identity'][:12]}")
    key = cache.params_key(dict(params=params, spec=spec, head=head.provenance["key"],
                                profile_shape=simulation.default_profile_shape(head),
                                model=network["identity"], version=_CACHE_VERSION))
    with cache.locked(folder / f".{name}.lock", f"run of {name} (profile {profile})"):
        if not _stored_results_match(folder, name, key):
            t0 = time.perf_counter()
            per_window, examples, c, seconds = evaluate_recordings(
                head, model, spec, params, progress=progress)
            table = metrics.summarize(per_window)
            intervals = bootstrap_intervals(per_window, seed=params["seed"])
            _save(folder, name, dict(key=key, params=params, spec=spec, model=network),
                  per_window, table, intervals, examples, c,
                  dict(seconds, total=time.perf_counter() - t0))
        return load_region(profile, name)


def model_identity(model):
    """SHA-256 of a network's architecture and weights: the identity its results are keyed by.

    Two networks with the same architecture and the same weights (bit for
    bit) have the same identity, whatever their history; any change of a
    weight changes it. It is computed afresh on every call (a fraction of a
    second for the paper's 23 million parameters), so a network trained
    further in place is never mistaken for its earlier self.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    identity : str
        64 hexadecimal digits.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(getattr(model, "architecture", None), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _network_for(profile, head, model, progress):
    """The networks a region run evaluates, and their identity.

    Returns
    -------
    models : list of SourceLSTM
    network : dict
        ``identity`` (:func:`models_identity`), ``n_networks`` and
        ``trained``: whether they are the profile's trained networks (same
        weights, same order).
    """
    if model is None:
        models = load_models(profile, head=head, progress=progress)
        return models, dict(identity=models_identity(models), n_networks=len(models),
                            trained=True)
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    identity = models_identity(models)
    try:
        trained = load_models(profile, head=head, progress=progress)
    except FileNotFoundError:  # not trained yet: the ones passed cannot be them
        trained = None
    is_trained = trained is not None and models_identity(trained) == identity
    return models, dict(identity=identity, n_networks=len(models), trained=is_trained)


def models_identity(models):
    """Identity of a list of networks: :func:`model_identity` of one, a hash of several."""
    identities = [model_identity(m) for m in models]
    if len(identities) == 1:
        return identities[0]
    return hashlib.sha256(":".join(identities).encode()).hexdigest()


def _stored_results_match(folder, name, key):
    """True when ``name``'s stored results were computed with ``key`` and are intact.

    Results computed with other settings are silently recomputed; results
    whose files were altered since they were written are recomputed with a
    :class:`srclib.cache.CacheWarning`.
    """
    meta = cache.read_json(folder / f"{name}.json")
    if meta is None or meta.get("key") != key:
        return False
    problems = cache.check_files(folder, meta.get("files"), folder / f"{name}.json")
    if problems:
        warnings.warn("; ".join(problems) + "; recomputing them",
                      cache.CacheWarning, stacklevel=3)
    return not problems


def _product_names(name):
    return [f"{name}.csv", f"{name}_windows.csv", f"{name}_intervals.csv", f"{name}_maps.npz"]


def _save(folder, name, meta, per_window, table, intervals, examples, c, seconds):
    folder.mkdir(parents=True, exist_ok=True)
    cache.remove_stale(folder)
    cache.atomic_save(folder / f"{name}_windows.csv",
                      lambda p: per_window.to_csv(p, index=False, float_format="%.6g"))
    cache.atomic_save(folder / f"{name}.csv",
                      lambda p: table.to_csv(p, index_label="method", float_format="%.6g"))
    cache.atomic_save(folder / f"{name}_intervals.csv",
                      lambda p: intervals.to_csv(p, float_format="%.6g"))
    cache.atomic_save(folder / f"{name}_maps.npz", lambda p: np.savez_compressed(
        p, c=c.astype(np.float32), methods=np.array(list(examples)),
        windows=np.array([e["window"] for e in examples.values()]),
        maps=np.stack([e["map"] for e in examples.values()])))
    # Written last: the marker that the four files above belong together, with
    # what each must contain.
    cache.atomic_write_json(folder / f"{name}.json", dict(
        meta, seconds=seconds,
        n_windows=int(len(per_window[["recording", "window"]].drop_duplicates())),
        n_recordings=int(per_window["recording"].nunique()),
        bootstrap=dict(n_boot=N_BOOTSTRAP, level=LEVEL),
        files=cache.record_files(folder, _product_names(name))))


def load_region(profile, region):
    """Read a region's stored results (see :func:`run_region`).

    Parameters
    ----------
    profile : str
    region : str
        ``"A"``-``"D"``, or the stem of a re-run's files (``"region_D_snr0"``).

    Raises
    ------
    FileNotFoundError
        No results of that name.
    srclib.cache.ArtifactError
        A file differs from what was written (truncated, edited); the message
        names it and the command that recomputes it.
    """
    folder = config.training_folder(profile, "results")
    name = _check_stem(region if str(region).startswith("region_") else f"region_{region}")
    meta = cache.read_json(folder / f"{name}.json")
    if meta is None:
        raise FileNotFoundError(f"no readable results {folder / name}.json: compute them with "
                                f"{_rebuild_command(profile, name, {})}")
    cache.require_files(folder, meta.get("files"), _rebuild_command(profile, name, meta),
                        marker=folder / f"{name}.json")
    with np.load(folder / f"{name}_maps.npz") as f:
        examples = {str(m): dict(window=int(w), map=f["maps"][i])
                    for i, (m, w) in enumerate(zip(f["methods"], f["windows"]))}
        c = f["c"].astype(float)
    return dict(
        name=name, spec=meta["spec"], params=meta["params"], seconds=meta["seconds"],
        n_windows=meta["n_windows"], n_recordings=meta["n_recordings"], c=c,
        examples=examples, model=meta.get("model"),
        table=pd.read_csv(folder / f"{name}.csv", index_col="method"),
        intervals=pd.read_csv(folder / f"{name}_intervals.csv", index_col=["method", "metric"]),
        per_window=pd.read_csv(folder / f"{name}_windows.csv"),
    )


def _rebuild_command(profile, name, meta):
    """The command that (re)computes the results ``name``, for error messages."""
    params = meta.get("params")
    if params is None:
        region = name.removeprefix("region_")
        if region in regions.REGIONS:
            return f"`python -m srclib.book --profile {profile}`"
        return f"`srclib.results.run_region({profile!r}, ...)` with the settings of {name}"
    defaults = region_parameters(profile, params["region"])
    options = "".join(f", {k}={v!r}" for k, v in params.items()
                      if k not in ("profile", "region", "order") and v is not None
                      and v != defaults.get(k))
    trained = (meta.get("model") or {}).get("trained", True)
    if trained and not options and params["region"] in regions.REGIONS:
        return f"`python -m srclib.book --profile {profile}` (it re-executes the page)"
    model = "" if trained else ", model=<the same network>"
    return f"`srclib.results.run_region({profile!r}, {params['region']!r}{options}{model})`"


def _check_stem(name):
    """Refuse a results file stem that could leave the results folder."""
    if (not isinstance(name, str) or len(name) > 200 or ".." in name
            or not re.fullmatch(r"region_[A-Za-z0-9][A-Za-z0-9_.-]*", name)):
        raise ValueError(
            "region must be a region name or a results stem 'region_<name>[_tags]' of "
            f"letters, digits, '_', '.' or '-' (no path separator, no '..'), got {name!r}"
        )
    return name


def paper_table(region):
    """The paper's published table for a region (``data/paper_tables.csv``)."""
    table = pd.read_csv(config.REPO_DATA / "paper_tables.csv")
    if region not in set(table["region"]):
        raise ValueError(f"the paper reports regions {sorted(set(table['region']))}, not {region!r}")
    return table[table["region"] == region].drop(columns="region").set_index("method")


def lstm_beats_all(table, metric, solver_names=solvers.SOLVERS):
    """Whether the LSTM's median is strictly better than every classical solver's.

    Parameters
    ----------
    table : pandas.DataFrame
        A region table: one row per method (``"LSTM"`` and the solvers),
        one column per metric.
    metric : str
        One of :data:`srclib.metrics.METRICS`; "better" is lower for those in
        :data:`srclib.metrics.LOWER_IS_BETTER`, higher for the others.
    solver_names : sequence of str
        The rows to compare with (the nine classical solvers).

    Returns
    -------
    beats : bool
    """
    if metric not in metrics.METRICS:
        raise ValueError(f"metric must be one of {list(metrics.METRICS)}, got {metric!r}")
    others = table.loc[list(solver_names), metric]
    lstm = table.loc["LSTM", metric]
    if metric in metrics.LOWER_IS_BETTER:
        return bool(lstm < others.min())
    return bool(lstm > others.max())


def verdicts(tables):
    """The central claim per region and metric: does the LSTM beat all nine solvers?

    Parameters
    ----------
    tables : dict of pandas.DataFrame
        Region name -> region table (see :func:`lstm_beats_all`).

    Returns
    -------
    verdict : pandas.DataFrame of bool
        One row per region, one column per metric.
    """
    return pd.DataFrame({r: {m: lstm_beats_all(t, m) for m in metrics.METRICS}
                         for r, t in tables.items()}).T


def _expanded_tail(n_units, level):
    """Tail probability of the expanded percentile interval for ``n_units`` units."""
    if n_units < 2:
        return (1 - level) / 2
    t = stats.t.ppf(1 - (1 - level) / 2, n_units - 1)
    return float(stats.norm.cdf(-np.sqrt(n_units / (n_units - 1)) * t))


#: The three answers of :func:`interval_verdict`.
VERDICTS = ("wins", "loses", "within the intervals")


def interval_verdict(intervals, metric, solver_names=solvers.SOLVERS):
    """The central claim for one region and metric, with its uncertainty.

    ``"wins"``: the LSTM's interval lies entirely on the better side of every
    classical solver's interval. ``"loses"``: some solver's interval lies
    entirely on the better side of the LSTM's. Otherwise ``"within the
    intervals"``: the data do not separate the LSTM from the best solvers.

    Parameters
    ----------
    intervals : pandas.DataFrame
        :func:`bootstrap_intervals` of a region: index (``method``,
        ``metric``), columns ``low`` and ``high``.
    metric : str
        One of :data:`srclib.metrics.METRICS` (better is lower for those in
        :data:`srclib.metrics.LOWER_IS_BETTER`).
    solver_names : sequence of str

    Returns
    -------
    verdict : str
        One of :data:`VERDICTS`.
    """
    if metric not in metrics.METRICS:
        raise ValueError(f"metric must be one of {list(metrics.METRICS)}, got {metric!r}")
    lower = metric in metrics.LOWER_IS_BETTER

    def better(a, b):  # a's whole interval better than b's whole interval
        return a["high"] < b["low"] if lower else a["low"] > b["high"]

    lstm = intervals.loc[("LSTM", metric)]
    others = [intervals.loc[(s, metric)] for s in solver_names]
    if all(better(lstm, o) for o in others):
        return "wins"
    if any(better(o, lstm) for o in others):
        return "loses"
    return "within the intervals"


def interval_verdicts(intervals_by_region, solver_names=solvers.SOLVERS):
    """:func:`interval_verdict` for every region and metric.

    Returns
    -------
    verdicts : pandas.DataFrame of str
        One row per region, one column per metric.
    """
    return pd.DataFrame({r: {m: interval_verdict(iv, m, solver_names) for m in metrics.METRICS}
                         for r, iv in intervals_by_region.items()}).T


def paper_inside(intervals, paper):
    """Whether each of the paper's values lies inside our interval.

    Parameters
    ----------
    intervals : pandas.DataFrame
        :func:`bootstrap_intervals` of a region.
    paper : pandas.DataFrame
        The paper's table of the region (:func:`paper_table`).

    Returns
    -------
    inside : pandas.DataFrame of bool
        Rows: the methods of both; columns: the metrics.
    """
    methods = [m for m in paper.index if m in intervals.index.get_level_values(0)]
    return pd.DataFrame({
        metric: {m: bool(intervals.loc[(m, metric), "low"] <= paper.loc[m, metric]
                         <= intervals.loc[(m, metric), "high"]) for m in methods}
        for metric in metrics.METRICS})


def format_table(table):
    """A region table formatted as in the paper (mm as integers, scores to 3 decimals)."""
    out = pd.DataFrame(index=table.index)
    for col in metrics.METRICS:
        if col.endswith("_mm"):
            out[col.replace("_mm", " (mm)")] = table[col].map(lambda v: f"{v:.0f}")
        else:
            out[col] = table[col].map(lambda v: f"{v:.3f}")
    out.index.name = "Method"
    return out


def format_intervals(intervals, table):
    """A region table with each median followed by its interval: ``12 [9, 15]``.

    Parameters
    ----------
    intervals : pandas.DataFrame
        :func:`bootstrap_intervals`.
    table : pandas.DataFrame
        The region's medians (its index gives the rows and their order).
    """
    out = pd.DataFrame(index=table.index)
    for col in metrics.METRICS:
        fmt = "{:.0f}" if col.endswith("_mm") else "{:.3f}"
        out[col.replace("_mm", " (mm)")] = [
            f"{fmt.format(table.loc[m, col])} [{fmt.format(intervals.loc[(m, col), 'low'])}, "
            f"{fmt.format(intervals.loc[(m, col), 'high'])}]" for m in table.index]
    out.index.name = "Method"
    return out


def recorded_build(path, profile="paper"):
    """The last build of ``profile`` that ``benchmarks/long_book.py`` recorded in ``path``.

    Parameters
    ----------
    path : path-like
        A JSON-lines file, one recorded build per line.
    profile : str

    Returns
    -------
    record : pandas.Series
        The line: ``regions`` (each region's intervals, per-training medians
        and sizes), ``networks`` (each training's card and held-out medians).
    intervals : dict of pandas.DataFrame
        Each region's intervals in the form of :func:`bootstrap_intervals`,
        ready for :func:`interval_verdicts`.
    """
    records = pd.read_json(path, lines=True)
    if not (records["profile"] == profile).any():
        raise ValueError(f"{path} records no build of profile {profile!r}")
    record = records[records["profile"] == profile].iloc[-1]
    intervals = {r: pd.DataFrame(v["intervals"]).set_index(["method", "metric"])
                 for r, v in record["regions"].items()}
    return record, intervals


def recorded_settings(record):
    """How a recorded build's networks were trained, in words, for the book's text.

    Parameters
    ----------
    record : pandas.Series
        A line of :func:`recorded_build`.

    Returns
    -------
    settings : dict
        ``learning_rate`` (the peak learning rates, as ``"0.001"``) and
        ``output_bias`` (:func:`srclib.network.output_bias_start`; cards
        written before the setting existed started at the prior's logit),
        each the distinct values joined by ``" / "``.
    """
    cards = [n["training"] for n in record["networks"]]

    def joined(values):
        return " / ".join(sorted(set(values)))

    return dict(learning_rate=joined(f"{t['learning_rate']:g}" for t in cards),
                output_bias=joined(output_bias_start(t.get("prior_bias", True)) for t in cards))


def training_medians(per_window, method="LSTM"):
    """Median of every metric for each training of a method (the spread over trainings).

    Returns
    -------
    medians : pandas.DataFrame
        One row per training, one column per metric.
    """
    rows = per_window[per_window["method"] == method]
    return rows.groupby("training")[list(metrics.METRICS)].median()


def peak_locations(per_window, head, c, methods=("LSTM",)):
    """Where each method's maps peak, relative to the true region.

    The localisation error measures the distance from the peak to the centre;
    this says where the peaks lie: inside the region or not, in which
    structure, and how central within the region (the true coefficient ``c``
    at the peak, 1 at the centre).

    Parameters
    ----------
    per_window : pandas.DataFrame
        :func:`evaluate_recordings`'s rows (with their ``peak`` column).
    head : HeadModel
    c : ndarray, shape (N,)
        The region's coefficients.
    methods : sequence of str

    Returns
    -------
    table : pandas.DataFrame
        One row per method: ``in the region (%)``, ``commonest structure``
        (with its share of the windows), ``median c at the peak``.
    """
    rows = {}
    for method in methods:
        peaks = per_window.loc[per_window["method"] == method, "peak"].to_numpy(int)
        share = pd.Series(head.structure[peaks]).value_counts(normalize=True)
        rows[method] = {
            "in the region (%)": f"{100 * np.mean(c[peaks] > 0):.0f}",
            "commonest structure": f"{share.index[0]} ({100 * share.iloc[0]:.0f} %)",
            "median c at the peak": f"{np.median(c[peaks]):.2f}",
        }
    table = pd.DataFrame(rows).T
    table.index.name = "Method"
    return table
