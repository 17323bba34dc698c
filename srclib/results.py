"""Results for one test region (paper section III, Tables I-IV and Figures 1-2).

:func:`run_region` simulates the region's 2-minute recording, cuts it into
50-sample windows, asks every method for one activation map per window (the
LSTM, the nine classical solvers, and the Random and Perfect references),
scores every window with the six metrics, and writes

* ``data/<profile>/results/region_<X>_windows.csv``: one row per method and
  window (``<X>`` gains tags for non-default settings, see :func:`result_name`);
* ``data/<profile>/results/region_<X>.csv``: the medians over windows, one row
  per method (the paper's table layout);
* ``data/<profile>/results/region_<X>_maps.npz``: for each method the map of
  its median-error window (what the reconstruction figure shows), with the
  truth.

A rerun with the same parameters, head model and network reads these files
instead of recomputing them. ``region_<X>.json``, written last, stores the
key (the hash of the parameters, the head model and the network's weights)
and the size and SHA-256 of the three files; a file that no longer matches
is recomputed by :func:`run_region` and refused by :func:`load_region`.

Results are keyed by the network that produced them: a network passed to
:func:`run_region` that is not the profile's trained one (other weights)
writes files tagged ``_model<hash>``, and never those the book shows.
"""

import hashlib
import json
import re
import time
import warnings

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import cache, config, metrics, regions, solvers
from .headmodel import head_for
from .network import load_model, predict, windows_of
from .check import (check_duration, check_option, check_radius, check_region_name, check_seed,
                    check_snr)

#: Every row of a region table, in the paper's order.
METHODS = ("Random", "Perfect", "LSTM") + solvers.SOLVERS

_CACHE_VERSION = 2  # 2: keyed by the network's weights


def region_parameters(profile, region="A", *, center_mni=None, radius_mm=None,
                      compartment=None, snr_db=None, seed=None, duration_s=None):
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
                       ("snr_db", "snr"), ("seed", "seed"), ("duration_s", "dur")):
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
    """Activation maps (n_windows, N) of one method on a recording."""
    n_windows = eeg.shape[1] // config.WINDOW
    if method == "Random":
        return metrics.random_prediction(n_windows, head.n_dipoles, rng)
    if method == "Perfect":
        return metrics.perfect_prediction(c, n_windows)
    if method == "LSTM":
        return predict(model, windows_of(eeg))
    return solvers.activation_maps(head, eeg, method)


def evaluate_recording(head, model, eeg, c, center, *, methods=METHODS, seed=0, progress=True):
    """Score every method on every window of a recording.

    Returns
    -------
    per_window : pandas.DataFrame
        Columns ``method``, ``window`` and the six metrics.
    examples : dict
        For each method, the map of its median-MLE window and that window's index.
    seconds : dict
        Time each method took to produce its maps.
    """
    rng = np.random.default_rng(seed)
    rows, examples, seconds = [], {}, {}
    for method in tqdm(methods, desc="methods", disable=not progress):
        t0 = time.perf_counter()
        maps = method_maps(head, model, eeg, c, method, rng)
        seconds[method] = time.perf_counter() - t0
        table = metrics.evaluate_windows(maps, c, center, head.positions)
        table.insert(0, "window", np.arange(len(table)))
        table.insert(0, "method", method)
        rows.append(table)
        order = np.argsort(table["MLE_mm"].to_numpy(), kind="stable")
        median_window = int(order[len(order) // 2])
        examples[method] = dict(window=median_window, map=maps[median_window].astype(np.float32))
    return pd.concat(rows, ignore_index=True), examples, seconds


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
    model : SourceLSTM | None
        The network to evaluate; None means the profile's trained network
        (trained first if needed). Results are keyed by the network's weights
        (:func:`model_identity`): a network other than the profile's trained
        one writes files tagged ``_model<hash>`` and never reads or replaces
        the book's.
    progress : bool
    **kwargs
        ``center_mni``, ``radius_mm``, ``compartment``, ``snr_db``, ``seed``,
        ``duration_s`` (see :func:`region_parameters`).

    Returns
    -------
    result : dict
        ``spec`` (the resolved region), ``params``, ``table`` (medians),
        ``per_window``, ``examples`` (maps), ``c``, ``seconds``, ``model``
        (the network's identity, and whether it is the profile's trained one).

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
    folder = config.profile_dir(profile) / "results"
    name = result_name(params) + ("" if network["trained"] else f"_model{network['identity'][:12]}")
    key = cache.params_key(dict(params=params, spec=spec, head=head.provenance["key"],
                                model=network["identity"], version=_CACHE_VERSION))
    with cache.locked(folder / f".{name}.lock", f"run of {name} (profile {profile})"):
        if not _stored_results_match(folder, name, key):
            t0 = time.perf_counter()
            eeg, c, center = regions.region_recording(
                head, spec, params["duration_s"], params["snr_db"], params["seed"],
                order=params["order"])
            per_window, examples, seconds = evaluate_recording(
                head, model, eeg, c, center, seed=params["seed"], progress=progress)
            table = metrics.summarize(per_window)
            _save(folder, name, dict(key=key, params=params, spec=spec, model=network),
                  per_window, table, examples, c, dict(seconds, total=time.perf_counter() - t0))
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
    """The network a region run evaluates, and its identity.

    Returns
    -------
    model : SourceLSTM
    network : dict
        ``identity`` (:func:`model_identity`) and ``trained``: whether it is
        the profile's trained network (same weights).
    """
    if model is None:
        model = load_model(profile, head=head, progress=progress)
        return model, dict(identity=model_identity(model), trained=True)
    identity = model_identity(model)
    try:
        trained = load_model(profile, head=head, progress=progress)
    except FileNotFoundError:  # no trained network yet: the one passed cannot be it
        trained = None
    is_trained = trained is not None and model_identity(trained) == identity
    return model, dict(identity=identity, trained=is_trained)


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
    return [f"{name}.csv", f"{name}_windows.csv", f"{name}_maps.npz"]


def _save(folder, name, meta, per_window, table, examples, c, seconds):
    folder.mkdir(parents=True, exist_ok=True)
    cache.remove_stale(folder)
    cache.atomic_save(folder / f"{name}_windows.csv",
                      lambda p: per_window.to_csv(p, index=False, float_format="%.6g"))
    cache.atomic_save(folder / f"{name}.csv",
                      lambda p: table.to_csv(p, index_label="method", float_format="%.6g"))
    cache.atomic_save(folder / f"{name}_maps.npz", lambda p: np.savez_compressed(
        p, c=c.astype(np.float32), methods=np.array(list(examples)),
        windows=np.array([e["window"] for e in examples.values()]),
        maps=np.stack([e["map"] for e in examples.values()])))
    # Written last: the marker that the three files above belong together, with
    # what each must contain.
    cache.atomic_write_json(folder / f"{name}.json", dict(
        meta, seconds=seconds, n_windows=int(per_window["window"].max() + 1),
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
    folder = config.profile_dir(profile) / "results"
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
        n_windows=meta["n_windows"], c=c, examples=examples, model=meta.get("model"),
        table=pd.read_csv(folder / f"{name}.csv", index_col="method"),
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
