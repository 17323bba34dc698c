"""Region runs (paper III): result naming and the parameters of a run."""

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
    assert params["duration_s"] == 12.0 and params["snr_db"] == 10.0
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
