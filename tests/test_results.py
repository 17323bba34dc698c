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
