"""Figures shared by the notebooks (static matplotlib, so they render in HTML).

Brain maps are drawn on nilearn's glass brain in MNI152 space: every dipole
is a marker at its position, which shows cortical and deep sources alike.
"""

import io

import matplotlib.pyplot as plt
import numpy as np

from .headmodel import STRUCTURES, fsaverage_to_mni152

#: One colour per deep structure (left and right share it).
STRUCTURE_COLORS = dict(zip(STRUCTURES, plt.get_cmap("tab10").colors))

#: Colours of the two compartments in every figure, keyed as ``HeadModel.compartment``.
COMPARTMENT_COLORS = {"cortex": "0.4", "subcortical": "tab:purple"}

#: The book's figure style, set by :func:`set_style` at the top of every notebook.
STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False}


def set_style():
    """Apply the book's matplotlib style (:data:`STYLE`) to the running session."""
    plt.rcParams.update(STYLE)


def method_color(method):
    """Colour of a method in figures: the LSTM red, the references grey, solvers blue."""
    if method == "LSTM":
        return "tab:red"
    if method in ("Random", "Perfect"):
        return "0.6"
    return "tab:blue"


def _glass(figure, axes, title=None, display_mode="lzr"):
    from nilearn import plotting

    return plotting.plot_glass_brain(None, display_mode=display_mode, figure=figure,
                                     axes=axes, black_bg=False, annotate=False, title=title)


def glass_brain_map(head, values, *, truth=None, figure=None, axes=None, title=None,
                    threshold=0.5, cmap="hot_r", display_mode="lzr", marker_size=6):
    """Activation map on a glass brain; the true region, if given, as blue dots on top.

    Parameters
    ----------
    head : HeadModel
    values : ndarray, shape (N,)
        Activation in [0, 1]; dipoles below ``threshold * max`` are not drawn.
    truth : ndarray, shape (N,) | None
        Spatial coefficients c; region dipoles are drawn as small blue dots.
    figure, axes : optional
        Where to draw.
    title : str | None
    threshold : float
    cmap : str
    display_mode : str
        nilearn's projection codes (``"lzr"``: left, top, right).
    marker_size : float

    Returns
    -------
    display : nilearn display
    """
    display = _glass(figure, axes, title, display_mode)
    mni = fsaverage_to_mni152(head.positions)
    values = np.asarray(values, float)
    vmax = values.max() if values.max() > 0 else 1.0
    shown = np.flatnonzero(values >= threshold * vmax)
    shown = shown[np.argsort(values[shown])]  # strongest drawn last, on top
    colors = plt.get_cmap(cmap)(values[shown] / vmax)
    display.add_markers(mni[shown], marker_color=colors, marker_size=marker_size)
    if truth is not None:
        region = np.flatnonzero(truth > 0)
        display.add_markers(mni[region], marker_color="tab:blue", marker_size=1.2, alpha=0.8)
    return display


def reconstruction_figure(head, maps, truth, *, titles=None, threshold=0.5):
    """Rows of glass brains, one per method, with the true region as blue dots.

    Parameters
    ----------
    head : HeadModel
    maps : dict of str -> ndarray (N,)
    truth : ndarray (N,)
    titles : dict of str -> str | None
    threshold : float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    fig = plt.figure(figsize=(11, 3.0 * len(maps)))
    for i, (name, values) in enumerate(maps.items()):
        ax = fig.add_axes([0.0, 1 - (i + 1) / len(maps), 0.92, 1 / len(maps) * 0.92])
        title = (titles or {}).get(name, name)
        glass_brain_map(head, values, truth=truth, figure=fig, axes=ax, title=title,
                        threshold=threshold)
    cax = fig.add_axes([0.93, 0.15, 0.015, 0.7])
    fig.colorbar(plt.cm.ScalarMappable(cmap="hot_r", norm=plt.Normalize(threshold, 1)),
                 cax=cax, label="activation (fraction of the map's maximum)")
    return fig


def source_space_figure(head):
    """The mixed source space: cortex in grey, deep structures coloured."""
    fig = plt.figure(figsize=(11, 3.6))
    ax = fig.add_axes([0, 0, 0.82, 1])
    display = _glass(fig, ax)
    mni = fsaverage_to_mni152(head.positions)
    display.add_markers(mni[head.is_cortical], marker_color="0.6", marker_size=1)
    handles = []
    for struct, color in STRUCTURE_COLORS.items():
        members = np.char.endswith(head.structure.astype(str), struct)
        display.add_markers(mni[members], marker_color=[color], marker_size=4)
        handles.append(plt.Line2D([], [], ls="", marker="o", color=color,
                                  label=f"{struct} ({members.sum()})"))
    handles.insert(0, plt.Line2D([], [], ls="", marker="o", color="0.6",
                                 label=f"cortex ({head.is_cortical.sum()})"))
    fig.legend(handles=handles, loc="center right", frameon=False, fontsize=9)
    return fig


def surface_slice(surface, axis, value):
    """Segments where a triangulated surface crosses the plane ``x[axis] = value``.

    Returns
    -------
    segments : ndarray, shape (n, 2, 3)
    """
    rr, tris = surface["rr"], surface["tris"]
    side = rr[:, axis] - value
    segments = []
    for tri in tris:
        s = side[tri]
        if s.min() >= 0 or s.max() <= 0:
            continue
        points = []
        for a, b in ((0, 1), (1, 2), (2, 0)):
            if (s[a] > 0) != (s[b] > 0):
                t = s[a] / (s[a] - s[b])
                points.append(rr[tri[a]] + t * (rr[tri[b]] - rr[tri[a]]))
        if len(points) == 2:
            segments.append(points)
    return np.array(segments)


def bem_figure(surfaces, positions=None):
    """Coronal and sagittal cuts through the three BEM surfaces (mm)."""
    from matplotlib.collections import LineCollection

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    names = ("inner skull", "outer skull", "scalp")
    colors = ("tab:red", "tab:orange", "tab:brown")
    for ax, (axis, value, dims, label) in zip(
        axes, ((1, -0.02, (0, 2), "coronal cut, y = -20 mm"),
               (0, -0.02, (1, 2), "sagittal cut, x = -20 mm"))):
        for surf, name, color in zip(surfaces, names, colors):
            seg = surface_slice(surf, axis, value)[:, :, dims] * 1000
            ax.add_collection(LineCollection(seg, colors=color, label=name, lw=1.5))
        if positions is not None:
            near = np.abs(positions[:, axis] - value) < 0.003
            ax.plot(*(positions[near][:, dims].T * 1000), ".", ms=2, color="0.4",
                    label="dipoles within 3 mm of the cut")
        ax.set(aspect="equal", title=label, xlabel=("x", "y", "z")[dims[0]] + " (mm)",
               ylabel=("x", "y", "z")[dims[1]] + " (mm)")
        ax.autoscale()
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def binned_median(x, y, bins):
    """Median of ``y`` in bins of ``x`` (NaN where a bin is empty).

    Returns
    -------
    centers, medians : ndarray
    """
    idx = np.digitize(x, bins) - 1
    med = np.array([np.median(y[idx == i]) if np.any(idx == i) else np.nan
                    for i in range(len(bins) - 1)])
    return 0.5 * (bins[1:] + bins[:-1]), med


def glue_figure(name, fig, dpi=110):
    """Store a figure as PNG for a ``{glue:figure}`` directive, and close it.

    The PNG is rendered here rather than by the notebook's display hooks, so the
    page shows it whatever matplotlib backend the kernel runs with.
    """
    from IPython.display import Image
    from myst_nb import glue

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    glue(name, Image(data=buffer.getvalue(), format="png"), display=False)
