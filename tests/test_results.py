"""Region runs (paper III): result naming and the parameters of a run."""

import numpy as np
import pandas as pd
import pytest

from srclib import regions, results


@pytest.mark.parametrize("overrides,name", [
    ({}, "region_D"),
    (dict(snr_db=0), "region_D_snr0"),
    (dict(snr_db=10.0), "region_D"),  # the default, written out
    (dict(seed=3, duration_s=60), "region_D_seed3_dur60"),
    (dict(center_mni=[38, -22, 56], radius_mm=20, compartment="cortex"),
     "region_D_at38_-22_56_r20_cortex"),
    (dict(center_mni="[38, -22, 56]"), "region_D_at38_-22_56"),  # as papermill -p passes it
])
def test_result_names_never_collide_with_the_books(overrides, name):
    params = results.region_parameters("paper", "D", **overrides)
    assert results.result_name(params) == name


def test_unparsable_centre_names_the_parameter():
    with pytest.raises(ValueError, match="center_mni"):
        results.region_parameters("paper", "x", center_mni="[1, 2")


def test_default_parameters_come_from_the_profile():
    params = results.region_parameters("quick", "B")
    assert params["duration_s"] == 6.0 and params["snr_db"] == 10.0
    assert params["n_recordings"] == 3
    assert params["seed"] == regions.default_seed("B") != regions.default_seed("A")


def test_paper_table_and_its_errors():
    table = results.paper_table("B")
    assert list(table.index) == list(results.METHODS)
    assert table.loc["LSTM", "MLE_mm"] == 3
    with pytest.raises(ValueError, match="the paper reports regions"):
        results.paper_table("E")


def _table(lstm, best_solver, others=50.0):
    """A region table in which every metric has the LSTM at ``lstm`` and the best solver at
    ``best_solver`` (the other solvers at ``others``, worse for lower-is-better metrics)."""
    import pandas as pd

    from srclib import metrics, solvers

    rows = {m: dict.fromkeys(metrics.METRICS, others) for m in solvers.SOLVERS}
    rows[solvers.SOLVERS[3]] = dict.fromkeys(metrics.METRICS, best_solver)
    rows["LSTM"] = dict.fromkeys(metrics.METRICS, lstm)
    return pd.DataFrame(rows).T


def test_verdict_follows_the_direction_of_each_metric():
    from srclib import metrics

    table = _table(lstm=5.0, best_solver=10.0)  # lowest everywhere
    verdict = results.verdicts({"X": table}).loc["X"]
    for metric in metrics.METRICS:
        assert verdict[metric] == (metric in metrics.LOWER_IS_BETTER), metric


def test_verdict_needs_a_strict_win_over_the_best_solver():
    high = _table(lstm=0.9, best_solver=0.8, others=0.1)  # highest: wins where higher is better
    assert results.lstm_beats_all(high, "AUC_close")
    assert not results.lstm_beats_all(high, "MLE_mm")
    tie = _table(lstm=0.8, best_solver=0.8, others=0.1)
    assert not results.lstm_beats_all(tie, "AUC_close")
    with pytest.raises(ValueError, match="metric must be one of"):
        results.lstm_beats_all(tie, "accuracy")


# --------------------------------------------------------------------------
# Repeated recordings, bootstrap intervals and the verdict with uncertainty
# --------------------------------------------------------------------------


def _per_window(rng, n_recordings=10, n_windows=60, shift=0.0, spread=1.0, trainings=(-1,),
                method="M"):
    """Synthetic per-window scores: each recording (and training) shifts its windows."""
    import numpy as np
    import pandas as pd

    rows = []
    for r in range(n_recordings):
        offset = shift + spread * rng.standard_normal()
        for t in trainings:
            values = offset + rng.standard_normal(n_windows)
            rows.append(pd.DataFrame(dict(method=method, recording=r, training=t,
                                          window=np.arange(n_windows), MLE_mm=values)))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.slow
def test_bootstrap_interval_covers_the_true_median_at_about_the_stated_rate():
    # The recordings are the independent units: the true median of the pooled
    # windows is the shift (0). 200 data sets pin the rate to about +-3 %; a
    # plain percentile interval covered 0.89 here, the expanded one ~0.95.
    import numpy as np

    rng = np.random.default_rng(0)
    hits = []
    for k in range(200):
        pw = _per_window(rng)
        iv = results.bootstrap_intervals(pw, n_boot=300, seed=k, metric_names=["MLE_mm"])
        low, high = iv.loc[("M", "MLE_mm"), ["low", "high"]]
        hits.append(low <= 0.0 <= high)
    coverage = np.mean(hits)
    assert 0.91 <= coverage <= 0.99, coverage


def test_bootstrap_resamples_recordings_not_windows():
    # Windows of one recording are not independent: an interval that
    # resampled windows would shrink with more windows per recording; one over
    # recordings keeps its width.
    import numpy as np

    widths = []
    for n_windows in (20, 400):
        pw = _per_window(np.random.default_rng(1), n_windows=n_windows)
        iv = results.bootstrap_intervals(pw, n_boot=500, metric_names=["MLE_mm"])
        widths.append(float(iv.loc[("M", "MLE_mm"), "high"] - iv.loc[("M", "MLE_mm"), "low"]))
    assert widths[1] > 0.6 * widths[0] and widths[1] > 0.5


def test_bootstrap_same_seed_same_interval_and_trainings_widen_it():
    import numpy as np

    pw = _per_window(np.random.default_rng(2), spread=0.0, trainings=(0, 1, 2))
    a = results.bootstrap_intervals(pw, n_boot=200, seed=5, metric_names=["MLE_mm"])
    b = results.bootstrap_intervals(pw, n_boot=200, seed=5, metric_names=["MLE_mm"])
    assert a.equals(b)
    # Trainings that differ by a lot: the interval spans them.
    rng = np.random.default_rng(3)
    parts = [_per_window(rng, spread=0.0, trainings=(t,), shift=10.0 * t) for t in range(3)]
    wide = results.bootstrap_intervals(__import__("pandas").concat(parts), n_boot=300,
                                       metric_names=["MLE_mm"])
    assert wide.loc[("M", "MLE_mm"), "high"] - wide.loc[("M", "MLE_mm"), "low"] > 5


def _intervals(lstm, best, others=(50.0, 60.0)):
    """Hand-made intervals: the LSTM's and one solver's given, the other solvers' ``others``."""
    import pandas as pd

    from srclib import metrics, solvers

    rows = []
    for m in ("LSTM",) + solvers.SOLVERS:
        low, high = lstm if m == "LSTM" else best if m == solvers.SOLVERS[2] else others
        for metric in metrics.METRICS:
            rows.append(dict(method=m, metric=metric, median=(low + high) / 2, low=low,
                             high=high))
    return pd.DataFrame(rows).set_index(["method", "metric"])


def test_interval_verdicts_on_separated_and_overlapping_intervals():
    separated = _intervals(lstm=(5.0, 8.0), best=(10.0, 14.0))
    assert results.interval_verdict(separated, "MLE_mm") == "wins"
    # Higher is better for AUC: the same numbers make the LSTM lose.
    assert results.interval_verdict(separated, "AUC_close") == "loses"
    overlapping = _intervals(lstm=(5.0, 11.0), best=(10.0, 14.0))
    assert results.interval_verdict(overlapping, "MLE_mm") == "within the intervals"
    behind = _intervals(lstm=(15.0, 20.0), best=(10.0, 14.0))
    assert results.interval_verdict(behind, "MLE_mm") == "loses"
    table = results.interval_verdicts({"X": separated, "Y": overlapping})
    assert table.loc["X", "MLE_mm"] == "wins" and table.loc["Y", "MLE_mm"] == "within the intervals"
    with pytest.raises(ValueError, match="metric must be one of"):
        results.interval_verdict(separated, "accuracy")


def test_a_recorded_build_gives_back_its_intervals_and_verdicts(tmp_path):
    import json

    def line(profile, lstm):
        iv = _intervals(lstm=lstm, best=(10.0, 14.0)).reset_index()
        iv["median"] = (iv["low"] + iv["high"]) / 2
        networks = [dict(training=dict(learning_rate=lr, **bias)) for lr, bias in (
            (1e-3, {}), (2e-3, dict(prior_bias=False)), (1e-3, dict(prior_bias=True)))]
        return json.dumps(dict(profile=profile, regions={"B": dict(
            intervals=iv.to_dict("records"))}, networks=networks))

    path = tmp_path / "builds.jsonl"
    path.write_text("\n".join([line("paper", (15.0, 20.0)), line("quick", (1.0, 2.0)),
                                line("paper", (5.0, 8.0))]) + "\n")
    record, intervals = results.recorded_build(path)  # the last line of the profile
    assert list(intervals) == ["B"] and record["profile"] == "paper"
    assert intervals["B"].loc[("LSTM", "MLE_mm"), "high"] == 8.0
    assert results.interval_verdicts(intervals).loc["B", "MLE_mm"] == "wins"
    # A card without the setting started at the prior's logit; values are distinct, sorted.
    assert results.recorded_settings(record) == dict(
        learning_rate="0.001 / 0.002",
        output_bias="the layer's default start / the prior's logit")
    with pytest.raises(ValueError, match="records no build of profile 'other'"):
        results.recorded_build(path, "other")


def test_recording_seeds_keep_the_first_and_never_repeat():
    seeds = results.recording_seeds(123, 10)
    assert seeds[0] == 123 and len(set(seeds)) == 10
    assert results.recording_seeds(123, 4) == seeds[:4]
    assert all(0 <= s < 2**63 for s in seeds)


def test_peak_column_is_the_dipole_the_localisation_error_reads(head):
    from srclib import simulation

    center = int(np.flatnonzero(head.is_cortical)[40])
    c = simulation.grow_region(head, center, 20.0)
    eeg = simulation.simulate(head, c, center, 4 * 50, 10.0, np.random.default_rng(3))
    per_window, _, _ = results.evaluate_recording(
        head, [], eeg, c, center, methods=("Random", "Perfect", "MNE"), progress=False)
    distance = 1000 * np.linalg.norm(
        head.positions[per_window["peak"].to_numpy(int)] - head.positions[center], axis=1)
    assert np.allclose(distance, per_window["MLE_mm"])
    assert (per_window.loc[per_window["method"] == "Perfect", "peak"] == center).all()


def test_peak_locations_on_a_hand_made_region():
    class Head:
        structure = np.array(["a", "a", "b", "c"])

    c = np.array([1.0, 0.5, 0.2, 0.0])
    per_window = pd.DataFrame(dict(method=["X"] * 4 + ["Y"] * 2, peak=[0, 1, 1, 3, 3, 2]))
    table = results.peak_locations(per_window, Head(), c, ["X", "Y"])
    assert table.loc["X"].tolist() == ["75", "a (75 %)", "0.50"]
    assert table.loc["Y", "in the region (%)"] == "50"
    assert table.loc["Y", "median c at the peak"] == "0.10"
