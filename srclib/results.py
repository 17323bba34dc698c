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
instead of recomputing them (the key is stored in ``region_<X>.json``).
"""

import json
import re
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import cache, config, metrics, regions, solvers
from .check import (check_duration, check_option, check_radius, check_region_name, check_seed,
                    check_snr)

#: Every row of a region table, in the paper's order.
METHODS = ("Random", "Perfect", "LSTM") + solvers.SOLVERS

_CACHE_VERSION = 1


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


def windows_of(eeg, window=config.WINDOW):
    """Cut (64, T) EEG into (T // window, 64, window) non-overlapping windows."""
    n = eeg.shape[1] // window
    return eeg[:, : n * window].reshape(eeg.shape[0], n, window).transpose(1, 0, 2)


def method_maps(head, model, eeg, c, method, rng):
    """Activation maps (n_windows, N) of one method on a recording."""
    n_windows = eeg.shape[1] // config.WINDOW
    if method == "Random":
        return metrics.random_prediction(n_windows, head.n_dipoles, rng)
    if method == "Perfect":
        return metrics.perfect_prediction(c, n_windows)
    if method == "LSTM":
        from .network import predict

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
    head, model : optional
        Already loaded head model and network.
    progress : bool
    **kwargs
        ``center_mni``, ``radius_mm``, ``compartment``, ``snr_db``, ``seed``,
        ``duration_s`` (see :func:`region_parameters`).

    Returns
    -------
    result : dict
        ``spec`` (the resolved region), ``params``, ``table`` (medians),
        ``per_window``, ``examples`` (maps), ``c``, ``seconds``.
    """
    from .headmodel import load_head_model
    from .network import load_model, model_key

    params = region_parameters(profile, region, **kwargs)
    head = head if head is not None else load_head_model(profile, progress=progress)
    spec = regions.resolve_region(head, region, center_mni=params["center_mni"],
                                     radius_mm=params["radius_mm"],
                                     compartment=params["compartment"])
    folder = config.profile_dir(profile) / "results"
    name = result_name(params)
    key = cache.params_key(dict(params=params, spec=spec, head=head.provenance["key"],
                                model=model_key(profile, head), version=_CACHE_VERSION))
    products = [folder / f"{name}{suffix}" for suffix in (".csv", "_windows.csv", "_maps.npz")]
    stored = cache.read_json(folder / f"{name}.json") or {}
    if stored.get("key") != key or not all(p.exists() for p in products):
        t0 = time.perf_counter()
        if model is None:  # only needed when the results are (re)computed
            model = load_model(profile, head=head, progress=progress)
        eeg, c, center = regions.region_recording(
            head, region, params["duration_s"], params["snr_db"], params["seed"],
            order=params["order"], center_mni=params["center_mni"],
            radius_mm=params["radius_mm"], compartment=params["compartment"],
        )
        per_window, examples, seconds = evaluate_recording(
            head, model, eeg, c, center, seed=params["seed"], progress=progress)
        table = metrics.summarize(per_window)
        _save(folder, name, key, params, spec, per_window, table, examples, c, seconds,
              time.perf_counter() - t0)
    return load_region(profile, name)


def _save(folder, name, key, params, spec, per_window, table, examples, c, seconds, total):
    folder.mkdir(parents=True, exist_ok=True)
    cache.atomic_save(folder / f"{name}_windows.csv",
                      lambda p: per_window.to_csv(p, index=False, float_format="%.6g"))
    cache.atomic_save(folder / f"{name}.csv",
                      lambda p: table.to_csv(p, index_label="method", float_format="%.6g"))
    cache.atomic_save(folder / f"{name}_maps.npz", lambda p: np.savez_compressed(
        p, c=c.astype(np.float32), methods=np.array(list(examples)),
        windows=np.array([e["window"] for e in examples.values()]),
        maps=np.stack([e["map"] for e in examples.values()])))
    # Written last: the marker that the three files above belong together.
    cache.atomic_write_json(folder / f"{name}.json", dict(
        key=key, params=params, spec=spec, seconds=dict(seconds, total=total),
        n_windows=int(per_window["window"].max() + 1)))


def load_region(profile, region):
    """Read a region's stored results (see :func:`run_region`).

    Parameters
    ----------
    profile : str
    region : str
        ``"A"``-``"D"``, or the stem of a re-run's files (``"region_D_snr0"``).
    """
    folder = config.profile_dir(profile) / "results"
    name = _check_stem(region if str(region).startswith("region_") else f"region_{region}")
    with open(folder / f"{name}.json") as fid:
        meta = json.load(fid)
    with np.load(folder / f"{name}_maps.npz") as f:
        examples = {str(m): dict(window=int(w), map=f["maps"][i])
                    for i, (m, w) in enumerate(zip(f["methods"], f["windows"]))}
        c = f["c"].astype(float)
    return dict(
        name=name, spec=meta["spec"], params=meta["params"], seconds=meta["seconds"],
        n_windows=meta["n_windows"], c=c, examples=examples,
        table=pd.read_csv(folder / f"{name}.csv", index_col="method"),
        per_window=pd.read_csv(folder / f"{name}_windows.csv"),
    )


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
