"""Every bad input is refused at once, by name (issue 14, section 4).

One table: each row is (callable, parameter, bad value, words the message
must contain). The callable gets the quick head model and the one bad
parameter; everything else it passes is valid, so the row fails only if that
parameter's check is missing or its message does not say what is allowed and
what was given.
"""

import string

import numpy as np
import pytest

from srclib import headmodel, metrics, regions, results, solvers


def region_parameters(head, **bad):
    return results.region_parameters(**dict(dict(profile="quick", region="A"), **bad))


def region_recording(head, **bad):
    return regions.region_recording(head, **dict(dict(region="A", duration_s=0.4), **bad))


def resolve_region(head, **bad):
    return regions.resolve_region(head, **dict(dict(region="A"), **bad))


def resolve_custom(head, **bad):
    """A custom region, valid apart from ``bad``."""
    spec = dict(region="mine", center_mni=[30, -20, 50], radius_mm=20, compartment="cortex")
    return regions.resolve_region(head, **dict(spec, **bad))


def resolve_custom_deep(head, **bad):
    """A custom subcortical region, valid apart from ``bad``."""
    spec = dict(region="mine", center_mni=[-25, 0, 0], radius_mm=20, compartment="subcortical")
    return regions.resolve_region(head, **dict(spec, **bad))


def resolve_d(head, **bad):
    return regions.resolve_region(head, **dict(dict(region="D"), **bad))


def resolve_b(head, **bad):
    return regions.resolve_region(head, **dict(dict(region="B"), **bad))


def activation_maps(head, **bad):
    eeg = np.random.default_rng(0).standard_normal((64, 100))
    return solvers.activation_maps(head, **dict(dict(eeg=eeg, method="MNE"), **bad))


def inverse_kernel(head, **bad):
    return solvers.inverse_kernel(head, **dict(dict(method="MNE"), **bad))


def evaluate(head, **bad):
    """The six metrics of a perfect map on the head's own positions."""
    c = np.zeros(head.n_dipoles)
    c[:5] = [1.0, 0.5, 0.5, 0.2, 0.1]
    kwargs = dict(y=c, c=c, center=0, positions=head.positions)
    return metrics.evaluate(**dict(kwargs, **bad))


def build_unseen_forwards(head, **bad):
    return headmodel.build_unseen_forwards("quick", head, **dict(dict(progress=False), **bad))


def load_region(head, **bad):
    return results.load_region("quick", **bad)


class FromHead:
    """A bad value made from the head model when the row runs."""

    def __init__(self, label, make):
        self.label, self.make = label, make

    def __repr__(self):
        return self.label


MM = "millimetres"
NAME_WORDS = ["letters, digits", "no path separator"]

ROWS = [
    # seed: booleans and fractions no longer become 1; text is refused.
    (region_parameters, "seed", 1.5, ["an integer in [0, 9223372036854775807]", "1.5"]),
    (region_parameters, "seed", True, ["an integer in [0, 9223372036854775807]", "True"]),
    (region_parameters, "seed", "abc", ["an integer in [0, 9223372036854775807]", "'abc'"]),
    (region_parameters, "seed", -3, ["an integer in [0, 9223372036854775807]", "-3"]),
    (region_recording, "seed", 1.5, ["an integer in [0, 9223372036854775807]", "1.5"]),
    (region_recording, "seed", True, ["an integer in [0, 9223372036854775807]", "True"]),
    (region_recording, "seed", "abc", ["an integer in [0, 9223372036854775807]", "'abc'"]),
    # numbers given as text
    (region_parameters, "radius_mm", "20", ["finite number in (0, 200]", "'20'"]),
    (region_parameters, "snr_db", "10", ["finite number in [-40, 60]", "'10'"]),
    (region_parameters, "duration_s", "60", ["finite number in [0.2, 3600]", "'60'"]),
    (region_recording, "snr_db", "10", ["finite number in [-40, 60]", "'10'"]),
    (region_recording, "duration_s", "1", ["finite number in [0.2, 3600]", "'1'"]),
    (resolve_region, "radius_mm", "60", ["finite number in (0, 200]", "'60'"]),
    # out of range, NaN, absurdly long (refused before allocating anything)
    (region_parameters, "radius_mm", 0, ["finite number in (0, 200]", "0"]),
    (region_parameters, "radius_mm", 500, ["finite number in (0, 200]", "500"]),
    (region_parameters, "snr_db", np.nan, ["finite number in [-40, 60]", "nan"]),
    (region_parameters, "duration_s", np.nan, ["finite number in [0.2, 3600]", "nan"]),
    (region_parameters, "duration_s", 0, ["finite number in [0.2, 3600]", "0"]),
    (region_parameters, "duration_s", -5, ["finite number in [0.2, 3600]", "-5"]),
    (region_parameters, "duration_s", 1e9, ["finite number in [0.2, 3600]", "1000000000.0"]),
    (region_recording, "duration_s", np.nan, ["finite number in [0.2, 3600]", "nan"]),
    (region_recording, "duration_s", 1e9, ["finite number in [0.2, 3600]", "1000000000.0"]),
    (region_recording, "duration_s", 0.1, ["finite number in [0.2, 3600]", "0.1"]),
    (region_recording, "order", 0, ["an integer >= 1", "0"]),
    # centres that do not parse: one line, no YAML traceback
    (region_parameters, "center_mni", "[1, 2,", ["3 finite MNI152 coordinates", "'[1, 2,'"]),
    (region_parameters, "center_mni", "[1, 2]", ["3 finite MNI152 coordinates", "'[1, 2]'"]),
    (region_parameters, "center_mni", [1, 2, np.nan], ["3 finite MNI152", "nan"]),
    (region_parameters, "center_mni", [True, 0, 0], ["3 finite MNI152", "True"]),
    (region_parameters, "center_mni", ["1", "2", "3"], ["3 finite MNI152", "'1'"]),
    (region_parameters, "center_mni", "abc", ["3 finite MNI152", "'abc'"]),
    (region_parameters, "compartment", "skull", ["'cortex', 'subcortical'", "'skull'"]),
    (region_parameters, "profile", "huge", ["one of", "'quick'", "'huge'"]),
    # region names become file names: checked first
    (region_parameters, "region", "../outside", NAME_WORDS + ["'../outside'"]),
    (region_parameters, "region", "a/b", NAME_WORDS + ["'a/b'"]),
    (region_parameters, "region", "..", NAME_WORDS + ["'..'"]),
    (region_parameters, "region", "x" * 300, NAME_WORDS + ["300 characters"]),
    (region_parameters, "region", "", NAME_WORDS + ["''"]),
    (region_parameters, "region", "-p", NAME_WORDS + ["'-p'"]),
    (region_parameters, "region", 3, NAME_WORDS + ["3 (int)"]),
    (region_recording, "region", "../outside", NAME_WORDS + ["'../outside'"]),
    (resolve_region, "region", "a\\b", NAME_WORDS + ["'a\\\\b'"]),
    (resolve_region, "region", "Z", ["one of ['A', 'B', 'C', 'D']", "'Z'"]),
    (load_region, "region", "../../outside", ["results stem", "no path separator",
                                              "'region_../../outside'"]),
    (load_region, "region", "region_D/../../x", ["results stem", "'region_D/../../x'"]),
    # centres far from the compartment, and named regions that would contradict their text
    (resolve_custom, "center_mni", [0, 0, 500], ["within 20 mm of a cortex dipole",
                                                 "[0, 0, 500]", "mm from the nearest"]),
    (resolve_custom, "center_mni", [0, 0, -200], ["within 20 mm of a cortex dipole",
                                                  "[0, 0, -200]"]),
    (resolve_custom_deep, "center_mni", [-40, -55, 50], ["within 20 mm of a subcortical",
                                                         "[-40, -55, 50]"]),
    (resolve_region, "center_mni", [300, 300, 300], ["within 20 mm of a cortex dipole",
                                                     "[300, 300, 300]"]),
    (resolve_region, "center_mni", [55, -25, 10], ["region A", "left lateral cortex",
                                                   "within 15 mm of its own centre",
                                                   "[-55, -25, 10]", "[55, -25, 10]"]),
    (resolve_region, "compartment", "subcortical", ["region A", "must be 'cortex' or None",
                                                    "'subcortical'"]),
    (resolve_region, "compartment", "skull", ["must be 'cortex' or None", "'skull'"]),
    (resolve_d, "center_mni", [-25, 0, 0], ["region D", "within 15 mm", "[-25, 0, 0]"]),
    (resolve_d, "center_mni", [-25, -8, -11], ["region D", "must fall in Left-Hippocampus",
                                               "Left-Amygdala"]),
    (resolve_b, "center_mni", [-16, 0, -1], ["region B", "must fall in Left-Putamen",
                                             "Left-Pallidum"]),
    (resolve_b, "compartment", "cortex", ["region B", "'subcortical' or None", "'cortex'"]),
    # classical solvers: lambda2 must regularise
    (activation_maps, "lambda2", np.nan, ["finite number > 0", "nan"]),
    (activation_maps, "lambda2", -1.0, ["finite number > 0", "-1"]),
    (activation_maps, "lambda2", 0.0, ["finite number > 0", "0"]),
    (activation_maps, "lambda2", "0.1", ["finite number > 0", "'0.1'"]),
    (activation_maps, "method", "LCMV", ["one of", "'MNE'", "'LCMV'"]),
    (activation_maps, "eeg", np.zeros((32, 100)), ["(64, n_times)", "(32, 100)"]),
    (activation_maps, "eeg", np.zeros((64, 10)), ["at least one window of 50", "10"]),
    (inverse_kernel, "lambda2", -1.0, ["finite number > 0", "-1"]),
    (build_unseen_forwards, "n_jobs", 0, ["an integer >= 1", "0"]),
    (build_unseen_forwards, "n_jobs", 1.5, ["an integer >= 1", "1.5"]),
    # metrics: positions in metres
    (evaluate, "positions", FromHead("positions in mm", lambda head: head.positions * 1000),
     ["metres", MM, "positions / 1000", "spanning 1"]),
    (evaluate, "y", FromHead("y = 1.5", lambda head: np.full(head.n_dipoles, 1.5)),
     ["[0, 1]", "1.5"]),
    (evaluate, "center", 2.0, ["integer dipole index", "2.0"]),
    (evaluate, "center", 3, ["largest coefficient", "c[3]"]),
]

def _row_id(row):
    call, parameter, value, _ = row
    return f"{call.__name__}-{parameter}-{repr(value)[:24]}"


@pytest.mark.parametrize("call,parameter,value,words", ROWS, ids=[_row_id(r) for r in ROWS])
def test_bad_input_is_refused_by_name(head, call, parameter, value, words):
    if isinstance(value, FromHead):
        value = value.make(head)
    with pytest.raises(ValueError) as info:
        call(head, **{parameter: value})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{parameter} "), message
    for word in words:
        assert word in message, (word, message)


def test_every_row_is_valid_without_its_bad_value(head):
    """The rows' base calls succeed, so each refusal comes from the bad value alone."""
    region_parameters(head)
    region_recording(head)
    assert resolve_custom(head)["structure"] == "ctx-rh"
    assert resolve_custom_deep(head)["compartment"] == "subcortical"
    resolve_region(head)
    activation_maps(head)
    evaluate(head)


def test_named_regions_move_within_their_description(head):
    a = regions.resolve_region(head, "A")
    moved = regions.resolve_region(head, "A", center_mni=[-55, -30, 18])  # 9 mm away
    assert moved["structure"] == a["structure"] == "ctx-lh"
    d = regions.resolve_region(head, "D", center_mni=[-25, -30, -16])
    assert d["structure"] == "Left-Hippocampus" and d["description"].endswith("hippocampus")
    assert regions.resolve_region(head, "B", compartment="subcortical")["center"] == (
        regions.resolve_region(head, "B")["center"])


def test_a_bad_name_stops_before_any_computation(monkeypatch):
    def no_head(*args, **kwargs):
        raise AssertionError("the head model was loaded before the name was checked")

    monkeypatch.setattr("srclib.headmodel.load_head_model", no_head)
    with pytest.raises(ValueError, match="region must be"):
        results.run_region("quick", "../" + "x" * 100, center_mni=[0, 0, 0], radius_mm=10,
                           compartment="cortex", progress=False)
    with pytest.raises(ValueError, match="duration_s"):
        results.run_region("quick", "D", duration_s=1e9, progress=False)


@pytest.mark.parametrize("key,a,b", [
    ("snr_db", 10.000001, 10.0000011),  # differ in the 8th significant digit
    ("snr_db", 5.0, 5.000000000000001),  # one float apart
    ("duration_s", 60.0, 60.00001),
    ("radius_mm", 20.0, 20.0000001),
    ("center_mni", [38, -22, 56], [38, -22, 56.0000001]),
])
def test_result_names_are_exact(key, a, b):
    name_a = results.result_name(results.region_parameters("quick", "D", **{key: a}))
    name_b = results.result_name(results.region_parameters("quick", "D", **{key: b}))
    assert name_a != name_b
    label = dict(snr_db="snr", duration_s="dur", radius_mm="r", center_mni="at")[key]
    for name, value in ((name_a, a), (name_b, b)):
        assert set(name) <= set(string.ascii_letters + string.digits + "_.-")
        tag = name.removeprefix("region_D_")
        assert tag.startswith(label), name
        # The tag reads back as exactly the value.
        assert [float(v) for v in tag[len(label):].split("_")] == list(np.atleast_1d(value))


def test_result_names_stay_readable():
    params = results.region_parameters("quick", "D", snr_db=1e-7, duration_s=60, seed=3)
    assert results.result_name(params) == "region_D_snr1e-07_seed3_dur60"
    params = results.region_parameters("quick", "D", snr_db=-2.5)
    assert results.result_name(params) == "region_D_snr-2.5"


def test_millimetre_positions_are_refused_by_every_metric(head):
    c = np.zeros(head.n_dipoles)
    c[0] = 1
    mm = head.positions * 1000
    for call in (lambda: metrics.localization_error_mm(c, 0, mm),
                 lambda: metrics.peak_activity_spread_mm(c, mm),
                 lambda: metrics.negative_sets(c, mm)):
        with pytest.raises(ValueError, match="positions must be in metres"):
            call()
    # Metres, even far from the origin, are accepted.
    assert metrics.localization_error_mm(c, 0, head.positions + 2.0) == 0
