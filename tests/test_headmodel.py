"""Head model (paper II.A): source space, BEM surfaces, montage, forward operators, cache."""

import json

import numpy as np
import pytest

from srclib import cache, config, headmodel
from srclib.headmodel import STRUCTURES


def test_paper_source_space_counts(tmp_path):
    """The paper profile's source space: 8196 cortical dipoles and ~1557 deep ones."""
    params = config.get_params("paper", "headmodel")
    headmodel.write_fsaverage_subject(tmp_path)
    src, structure = headmodel.mixed_source_space(
        tmp_path, params["cortex_spacing"], params["subcortical_spacing_mm"]
    )
    assert [s["nuse"] for s in src[:2]] == [4098, 4098]
    n_deep = src[2]["nuse"]
    assert abs(n_deep - 1557) <= 0.1 * 1557
    assert len(structure) == 8196 + n_deep
    deep = structure[8196:]
    expected = {f"{side}-{s}" for side in ("Left", "Right") for s in STRUCTURES}
    assert set(deep) == expected
    # Plausible sizes: thalamus and putamen are the largest, accumbens the smallest.
    counts = {s: int((deep == s).sum()) for s in expected}
    assert counts["Left-Thalamus"] > counts["Left-Hippocampus"] > counts["Left-Accumbens"]
    assert all(c >= 10 for c in counts.values())


def test_quick_counts_and_labels(head):
    params = config.get_params("quick", "headmodel")
    n_ctx = int(head.is_cortical.sum())
    assert n_ctx == 2 * 258  # oct4
    rr, structure = headmodel.subcortical_grid(params["subcortical_spacing_mm"])
    assert head.n_dipoles == n_ctx + len(rr)
    assert set(head.compartment) == {"cortex", "subcortical"}
    assert np.all(np.char.startswith(head.structure[head.is_cortical], "ctx-"))
    assert np.array_equal(head.structure[~head.is_cortical], structure)
    assert head.positions.shape == (head.n_dipoles, 3)
    # Cortical normals are unit vectors; deep dipoles have none.
    assert np.allclose(np.linalg.norm(head.normals[head.is_cortical], axis=1), 1, atol=1e-6)
    assert np.all(head.normals[~head.is_cortical] == 0)


def test_deep_dipoles_lie_in_their_hemisphere(head):
    deep = ~head.is_cortical
    left = np.char.startswith(head.structure.astype(str), "Left")
    assert np.all(head.positions[deep & left, 0] < 0.005)
    assert np.all(head.positions[deep & ~left, 0] > -0.005)


@pytest.mark.parametrize("grade", [2, 3])
def test_bem_surfaces_nested_with_margin(grade):
    surfaces = headmodel.bem_surfaces(grade)
    assert [len(s["tris"]) for s in surfaces] == [20 * 4**grade] * 3
    margins = headmodel.nesting_margins(surfaces)
    assert min(margins) >= 0.002
    for inner, outer in zip(surfaces[:-1], surfaces[1:]):
        assert headmodel.points_inside(outer, inner["rr"]).all()
        assert not headmodel.points_inside(inner, outer["rr"]).any()


def test_every_dipole_inside_the_inner_skull(head):
    params = config.get_params("quick", "headmodel")
    for grade in (params["bem_ico_inverse"], params["bem_ico_simulation"]):
        inner = headmodel.bem_surfaces(grade)[0]
        assert headmodel.points_inside(inner, head.positions).all()


def test_montage_on_the_scalp(head):
    import mne
    from scipy.spatial import cKDTree

    assert len(head.info["ch_names"]) == 64
    assert len(set(head.info["ch_names"])) == 64
    assert any(p["desc"] == "Average EEG reference" for p in head.info["projs"])
    pos = np.array([ch["loc"][:3] for ch in head.info["chs"]])
    pos_mri = mne.transforms.apply_trans(headmodel.head_mri_trans(), pos)
    scalp = headmodel.bem_surfaces(3)[2]
    dist = cKDTree(scalp["rr"]).query(pos_mri)[0]
    assert dist.max() < 0.010


def test_leadfields_finite_distinct_and_related(head):
    g_inv = head.leadfield("inverse")
    g_sim = head.leadfield("simulation")
    assert g_inv.shape == g_sim.shape == (64, head.n_dipoles, 3)
    assert np.isfinite(g_inv).all() and np.isfinite(g_sim).all()
    # Compare average-referenced topographies dipole by dipole.
    a = (g_inv - g_inv.mean(0)).reshape(64, -1, 3).transpose(1, 0, 2).reshape(head.n_dipoles, -1)
    b = (g_sim - g_sim.mean(0)).reshape(64, -1, 3).transpose(1, 0, 2).reshape(head.n_dipoles, -1)
    a_c = a - a.mean(1, keepdims=True)
    b_c = b - b.mean(1, keepdims=True)
    corr = (a_c * b_c).sum(1) / np.sqrt((a_c**2).sum(1) * (b_c**2).sum(1))
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    assert np.median(corr) > 0.9
    assert np.median(rel) > 0.01


def test_deep_dipoles_weaker_than_cortical(head):
    for which in ("inverse", "simulation"):
        g = head.leadfield(which)
        g = g - g.mean(0)
        strength = np.linalg.norm(g, axis=(0, 2))
        assert strength[~head.is_cortical].mean() < strength[head.is_cortical].mean()


def test_adjacency_symmetric_and_within_compartments(head):
    adj = head.adjacency
    assert (adj != adj.T).nnz == 0
    rows, cols = adj.nonzero()
    assert np.all(head.is_cortical[rows] == head.is_cortical[cols])
    assert adj.diagonal().sum() == 0
    # Every dipole has a neighbour; cortical edges are short.
    assert np.all(np.asarray(adj.sum(1)).ravel() > 0)


def test_provenance_records_the_build(head):
    prov = head.provenance
    assert prov["n_dipoles"] == head.n_dipoles
    assert prov["inverse"]["solver"].startswith("OpenMEEG")
    assert prov["simulation"]["solver"].startswith("MNE")
    assert prov["inverse"]["conductivity"] != prov["simulation"]["conductivity"]
    assert prov["inverse"]["triangles_per_surface"] != prov["simulation"]["triangles_per_surface"]


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"profile must be one of \['paper', 'quick'\]"):
        headmodel.load_head_model("full")


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="unknown head-model parameter"):
        headmodel.load_head_model("quick", bem_ico=3)


@pytest.mark.slow
def test_cache_reused_and_rebuilt_on_changed_parameter(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    calls = []
    real_build = headmodel.build_head_model

    def counting_build(*args, **kwargs):
        calls.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(headmodel, "build_head_model", counting_build)
    kw = dict(progress=False, subcortical_spacing_mm=12.0, cortex_spacing="oct3")
    first = headmodel.load_head_model("quick", **kw)
    second = headmodel.load_head_model("quick", **kw)
    assert len(calls) == 1
    assert second.provenance["key"] == first.provenance["key"]
    third = headmodel.load_head_model("quick", **dict(kw, subcortical_spacing_mm=14.0))
    assert len(calls) == 2
    assert third.provenance["key"] != first.provenance["key"]
    assert third.n_dipoles < first.n_dipoles


def test_interrupted_build_leaves_nothing_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))

    def failing_build(folder, params, progress=True):
        (folder / "inverse-fwd.fif").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(headmodel, "build_head_model", failing_build)
    with pytest.raises(KeyboardInterrupt):
        headmodel.load_head_model("quick", progress=False)
    folder = tmp_path / "quick" / "headmodel"
    assert not folder.exists()
    left = [p.name for p in (tmp_path / "quick").iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_corrupt_provenance_is_not_trusted(tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "provenance.json").write_text("{ not json")
    assert not cache.is_valid(folder, "abc")
    cache.atomic_write_json(folder / "provenance.json", {"key": "abc", "files": {}})
    assert cache.is_valid(folder, "abc")
    assert json.loads((folder / "provenance.json").read_text()) == {"key": "abc", "files": {}}
    # Without a record of its files (an older version's folder), it is not trusted.
    cache.atomic_write_json(folder / "provenance.json", {"key": "abc"})
    assert not cache.is_valid(folder, "abc")


def test_average_referenced_leadfield(head):
    raw = head.leadfield("inverse")
    ref = head.leadfield("inverse", reference="average")
    assert np.allclose(ref.sum(0), 0, atol=1e-9 * np.abs(raw).max())
    assert np.allclose(ref, raw - raw.mean(0))
    with pytest.raises(ValueError, match="reference must be"):
        head.leadfield("inverse", reference="Cz")


def test_a_head_model_of_another_profile_is_refused(head):
    assert headmodel.head_for("quick", head) is head
    with pytest.raises(ValueError, match="'quick' profile's head model but profile='paper'"):
        headmodel.head_for("paper", head)
