"""Build the book: papermill runs every notebook, then Jupyter Book renders them.

``python -m srclib.book --profile paper`` (what ``make book`` calls):

1. each Jupytext notebook in ``notebooks/`` is read and executed by papermill
   with its parameters (the profile, and the region for the four region
   pages) into ``book/generated/``; the parameters cells are then hidden and
   replaced on the page by one sentence that states the page's settings;
2. ``jupyter-book build`` renders the executed notebooks and the prose pages
   into ``_build/html`` with warnings and broken references as errors,
   executing nothing; MathJax is copied from its installed package next to the
   pages, so the book renders its equations offline.

``python -m srclib.book --region D --snr-db 0`` (what ``make region`` calls)
runs one notebook with other parameters instead, outside the book's source
tree: the executed notebook goes to ``data/<profile>/runs/``. Parameter names
are checked against the notebook's ``parameters`` cell first; an unknown name
is refused. ``--prepare-only`` writes every page as a parameterised,
unexecuted notebook headed by a note on its profile (Binder's ``postBuild``).

A page is not re-executed when its executed notebook carries the same build
key (the hash of the notebook's source, its parameters, srclib's source code
and the results it reads) and the files it wrote are still as it left them.
Heavy intermediate results (head model, training set, network, region
results) are cached separately by srclib, so even a re-executed notebook
reuses them.

Builds survive kills and each other: papermill's working notebooks live in a
private temporary folder outside the book's source tree, an executed page
replaces the previous one atomically, and each page runs under a lock of the
book root and of the profile (a second build waits, says so, and then finds
the pages the first one executed). What a killed build left behind is
removed by the next one.
"""

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, field
import hashlib
import json
import logging
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile
import time

import jupytext
import mathjax
import nbformat
import papermill
from papermill.translators import papermill_translators

from . import cache, config
from .regions import REGIONS, load_regions

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: What a book root needs besides the executed notebooks.
BOOK_FILES = ("_config.yml", "_toc.yml", "book/intro.md", "book/discussion.md",
              "book/rerunning.md", "book/bibliography.md", "book/references.bib",
              "_static/custom.css")
#: Arguments of the kernels that run the pages: the kernel's own start-up log stays quiet.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]
#: Output type of Jupyter widgets.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: The MathJax files the pages load (from the ``mathjax`` package's ``es5`` folder).
MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output", "ui", "a11y", "adaptors")
#: Where the build copies MathJax, relative to the book root (Sphinx's ``html_extra_path``).
MATHJAX_DIR = "_build/.mathjax"
_REGION_TEXT = load_regions()


@dataclass
class Page:
    """One page of the book made from a notebook."""
    name: str
    source: str
    parameters: dict = field(default_factory=dict)
    reads_results: bool = False
    title: str = None  # replaces the notebook's first heading (one template, many pages)
    products: tuple = ()  # files it writes, "<folder>/<name>" (config.training_folder), checked before skipping it


PAGES = [
    Page("01_head_model", "01_head_model.md"),
    Page("02_simulator", "02_simulator.md"),
    Page("03_network", "03_network.md"),
    Page("04_classical_solvers", "04_classical_solvers.md"),
    Page("05_metrics", "05_metrics.md"),
    *[Page(f"06_region_{r}", "06_region.md", {"region": r},
           title=f"Region {r}: {_REGION_TEXT[r]['description']}",
           products=(f"results/region_{r}.csv", f"results/region_{r}_windows.csv"))
      for r in REGIONS],
    Page("07_summary", "07_summary.md", reads_results=True),
    Page("09_generalisation", "09_generalisation.md"),
    Page("08_own_eeg", "08_own_eeg.md",
         products=("own_eeg/recording_raw.fif", "own_eeg/recording.edf",
                   "own_eeg/estimate-lh.stc", "own_eeg/estimate-rh.stc",
                   "own_eeg/estimate-vl.stc")),
]


def _srclib_hash():
    digest = hashlib.sha256()
    for path in sorted((ROOT / "srclib").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _files_hash(paths):
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.exists() else b"missing")
    return digest.hexdigest()


def _results_hash(profile):
    folder = config.training_folder(profile, "results")
    return _files_hash([folder / f"region_{r}.csv" for r in REGIONS])


def _products_hash(page, profile):
    return _files_hash([config.training_folder(profile, folder) / name
                        for folder, name in (p.split("/", 1) for p in page.products)])


def build_key(page, profile):
    """Hash of everything an executed page depends on."""
    parts = dict(
        source=(NOTEBOOKS / page.source).read_text(),
        parameters=dict(page.parameters, profile=profile), title=page.title,
        training=config.training_name(),
        srclib=_srclib_hash(),
        results=_results_hash(profile) if page.reads_results else None,
    )
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _stored(path):
    """The builder's record in an executed notebook's metadata (empty if none)."""
    try:
        with open(path) as fid:
            return json.load(fid)["metadata"].get("srclib", {})
    except (OSError, ValueError, KeyError):
        return {}


def run_page(page, profile, prepare_only=False, force=False, root=ROOT):
    """Execute one page with papermill unless its build key is unchanged.

    The executed notebook is written to ``root/book/generated/<name>.ipynb``
    (atomically: a killed run leaves the previous page or none). Papermill's
    input and output notebooks live in a private temporary folder outside
    the book's source tree, removed afterwards (or, after a kill, by the next
    run). The page runs under the locks of the book root and of the profile
    (:func:`build_lock`): a concurrent build waits, then finds the page
    executed.

    Returns
    -------
    status : str
        ``"cached"``, ``"executed"`` or ``"prepared"``.
    """
    with build_lock(root, profile):
        remove_leftovers(root)
        generated = Path(root) / "book" / "generated"
        out = generated / f"{page.name}.ipynb"
        key = build_key(page, profile)
        stored = _stored(out)
        unchanged = (stored.get("build_key") == key
                     and stored.get("products") == _products_hash(page, profile))
        if unchanged and not force and not prepare_only:
            return "cached"
        generated.mkdir(parents=True, exist_ok=True)
        with _scratch_folder() as scratch:
            executed = _execute(page, profile, scratch, prepare_only)
        if not prepare_only:
            executed.metadata["srclib"] = dict(build_key=key, profile=profile,
                                               products=_products_hash(page, profile))
        _write_notebook(executed, out)
    return "prepared" if prepare_only else "executed"


def _execute(page, profile, scratch, prepare_only):
    """Run a page's notebook with papermill in ``scratch``; return the executed notebook."""
    notebook = jupytext.read(NOTEBOOKS / page.source)
    if page.title:
        _set_title(notebook, page.title)
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                                "language": "python"})
    src = Path(scratch) / f"{page.name}.input.ipynb"
    tmp = Path(scratch) / f"{page.name}.output.ipynb"
    nbformat.write(notebook, src)
    papermill.execute_notebook(
        str(src), str(tmp), parameters=dict(page.parameters, profile=profile),
        kernel_name="python3", cwd=str(NOTEBOOKS), prepare_only=prepare_only,
        log_output=not prepare_only, progress_bar=False, extra_arguments=KERNEL_ARGS,
        # Every cell has run and its output is in when the kernel is stopped:
        # stopped at once, not asked to exit (which takes about a second a page).
        shutdown_kernel="immediate",
    )
    return nbformat.read(tmp, as_version=4)


@contextmanager
def _scratch_folder():
    """A private temporary folder outside the book, named after this process, then removed."""
    path = tempfile.mkdtemp(prefix=f".{_SCRATCH}.tmp-{os.getpid()}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


_SCRATCH = "srclib-book"


def _write_notebook(notebook, out):
    """Write a notebook atomically, through a temporary name no Sphinx builder reads."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        nbformat.write(notebook, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_leftovers(root=ROOT):
    """Remove what killed builds left behind.

    In ``root/book/generated``: temporaries of dead processes
    (``.<page>.ipynb.tmp-<pid>``), and the hidden ``.<page>.input.ipynb`` /
    ``.<page>.output.ipynb`` of builders before this one (they kept them in
    the source tree, where Sphinx then found pages outside the table of
    contents). In the system's temporary folder: the scratch folders of dead
    builds. Call it holding :func:`build_lock`.
    """
    generated = Path(root) / "book" / "generated"
    removed = cache.remove_stale(generated) + cache.remove_stale(tempfile.gettempdir(),
                                                                prefix=_SCRATCH)
    for pattern in (".*.input.ipynb", ".*.output.ipynb"):
        for path in generated.glob(pattern):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def build_lock(root, profile):
    """Hold the locks of a book root and of a profile's data while building a page.

    A second build of the same root or profile waits here (and prints
    ``waiting for another build of ... (pid N)``); locks are taken in one
    order (root, then profile), so two builds never wait for each other.
    """
    root = Path(root).absolute()
    data = config.profile_dir(profile)
    with cache.locked(root / "book" / "generated" / ".build.lock", f"build of the book in {root}"), \
            cache.locked(data / ".build.lock", f"build of profile {profile!r} in {data}"):
        yield


def _set_title(notebook, title):
    """Replace the first level-1 heading of a notebook."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            _, _, rest = cell.source.partition("\n")
            cell.source = f"# {title}\n{rest}"
            return
    raise ValueError("the notebook has no level-1 heading to retitle")


def notebook_parameters(source):
    """The parameters a notebook declares, as papermill reads them.

    Parameters
    ----------
    source : str
        File name of a Jupytext notebook in ``notebooks/``.

    Returns
    -------
    parameters : dict
        ``name -> {"name", "inferred_type_name", "default", "help"}`` in the
        order of the notebook's ``parameters`` cell.
    """

    notebook = jupytext.read(NOTEBOOKS / source)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ValueError(f"notebook {source} has no cell tagged 'parameters'")
    translator = papermill_translators.find_translator("python3", "python")
    return {p.name: p._asdict() for p in translator.inspect(cells[0])}


def check_parameters(source, parameters):
    """Refuse parameter names that the notebook ``source`` does not declare.

    papermill only logs an unknown name and runs the notebook with its
    defaults; a misspelt ``-p radius 20`` would then silently run another
    computation than the one asked for.
    """
    allowed = notebook_parameters(source)
    unknown = [name for name in parameters if name not in allowed]
    if unknown:
        raise ValueError(
            f"unknown parameter {', '.join(map(repr, unknown))} for notebook {source}; "
            f"allowed: {', '.join(allowed)}")
    return parameters


def settings_markdown(source, parameters):
    """One sentence that states the settings a page was run with.

    The values set for this page are listed; the others are named as keeping
    the defaults of the notebook's ``parameters`` cell.
    """
    declared = notebook_parameters(source)
    shown = [f"`{name} = {parameters[name]!r}`" for name in declared if name in parameters]
    rest = [f"`{name}`" for name in declared if name not in parameters]
    text = "**Settings of this page:** " + ", ".join(shown)
    if rest:
        text += f"; at their defaults: {', '.join(rest)}"
    profile = parameters.get("profile")
    if profile == "quick":
        text += (". This is the small-scale `quick` profile: its numbers differ from the "
                 "paper-scale book's")
    return text + ". How to run it with other settings: {doc}`/book/rerunning`."


def _tags(cell):
    return cell.setdefault("metadata", {}).setdefault("tags", [])


def present_page(path, source, parameters):
    """Hide an executed notebook's parameters cells and state its settings once.

    The notebook's own defaults cell and papermill's injected cell get the
    ``remove-cell`` tag; a markdown cell with :func:`settings_markdown` takes
    their place on the page. Progress bars drawn as widgets (``tqdm.auto``
    with ipywidgets) are dropped: saved, they would show their first frame.
    The paths papermill records in the metadata become the repository's
    relative names. Running it again changes nothing.
    """
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    marked = [i for i, c in enumerate(notebook.cells)
              if {"parameters", "injected-parameters"} & set(_tags(c))]
    if not marked:
        raise ValueError(f"{path.name} has no parameters cell to present")
    for i in marked:
        if "remove-cell" not in _tags(notebook.cells[i]):
            _tags(notebook.cells[i]).append("remove-cell")
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not _is_widget(o)]
    # papermill records the absolute paths of the files it ran; keep the repository's names
    notebook.metadata.get("papermill", {}).update(input_path=f"notebooks/{source}",
                                                  output_path=config.shown_path(path))
    cell = nbformat.v4.new_markdown_cell(settings_markdown(source, parameters))
    cell.metadata["srclib"] = "settings"
    existing = [i for i, c in enumerate(notebook.cells) if c.metadata.get("srclib") == "settings"]
    if existing:
        notebook.cells[existing[0]] = cell
    else:
        notebook.cells.insert(marked[-1] + 1, cell)
    _write_atomic(notebook, path)


def _is_widget(output):
    """Whether a notebook output is a Jupyter widget (a progress bar, frozen once saved)."""
    return WIDGET_MIME in output.get("data", {})


def binder_note(profile):
    """The note that heads a page prepared for Binder."""
    if profile == "quick":
        return ("> **On Binder this page runs the small-scale `quick` profile**, which fits "
                "Binder's machines (about 2 GB of memory). Its numbers differ from the book's, "
                "which come from the full-scale `paper` profile. The quick profile's head model, "
                "training set, network and region results were prepared when this Binder image "
                "was built, so the cells run in seconds. Change the parameters in the cell "
                "tagged `parameters` below (not `profile`) to try other settings.")
    return ("> **This page runs the full-scale `paper` profile**: building its head model, "
            "training set and network takes about 20 minutes on two cores and more memory "
            "than Binder's machines have. Use `profile = \"quick\"` there.")


def prepare_for_binder(path, profile):
    """Put :func:`binder_note` right under the title of a prepared notebook."""
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    cell = nbformat.v4.new_markdown_cell(binder_note(profile))
    cell.metadata["srclib"] = "binder-note"
    notebook.cells = [c for c in notebook.cells if c.metadata.get("srclib") != "binder-note"]
    title = next((i for i, c in enumerate(notebook.cells)
                  if c.cell_type == "markdown" and c.source.startswith("# ")), -1)
    notebook.cells.insert(title + 1, cell)
    _write_atomic(notebook, path)


def _write_atomic(notebook, path):
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    try:
        nbformat.write(notebook, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def run_name(notebook, parameters):
    """File name of a custom run: the notebook and its settings, file-system safe."""
    parts = [notebook] + [f"{k}-{v}" for k, v in parameters.items() if k != "profile"]
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(parts)).strip("_.")
    if len(name) > 120:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:100]}_{digest}"
    return name + ".ipynb"


def run_notebook(notebook, parameters, profile, progress=True):
    """Execute one notebook of ``notebooks/`` with other parameters, outside the book.

    Parameters
    ----------
    notebook : str
        Notebook name without extension, e.g. ``"06_region"``.
    parameters : dict
        Values for names of the notebook's ``parameters`` cell (checked first).
    profile : ``"paper"`` | ``"quick"``

    Returns
    -------
    path : Path
        The executed notebook, ``data/<profile>/runs/<name>.ipynb``.
    """
    source = f"{notebook}.md"
    if not (NOTEBOOKS / source).exists():
        names = sorted(p.stem for p in NOTEBOOKS.glob("*.md"))
        raise ValueError(f"notebook must be one of {names}, got {notebook!r}")
    parameters = check_parameters(source, dict(parameters, profile=config.check_profile(profile)))
    out = config.training_folder(profile, "runs") / run_name(notebook, parameters)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="srclib-run-") as tmp:
        src, executed = Path(tmp) / "input.ipynb", Path(tmp) / "output.ipynb"
        nbformat.write(jupytext.read(NOTEBOOKS / source), src)
        papermill.execute_notebook(str(src), str(executed), parameters=parameters,
                                   kernel_name="python3", cwd=str(NOTEBOOKS),
                                   log_output=False, progress_bar=progress,
                                   extra_arguments=KERNEL_ARGS)
        shutil.move(executed, out.with_name(f".{out.name}.tmp"))
        out.with_name(f".{out.name}.tmp").replace(out)
    present_page(out, source, parameters)
    return out


def parse_value(text):
    """A ``-p NAME VALUE`` value as papermill reads one: None, bool, int, float or text."""
    special = {"None": None, "True": True, "False": False}
    if text in special:
        return special[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def bundle_mathjax(root):
    """Copy MathJax from its installed package to where the pages load it from.

    The ``mathjax`` package (PyPI ``django-static-mathjax``) ships MathJax 3's
    browser files; only the TeX-to-HTML component and the parts it loads on
    demand are copied (about 6 MB), into ``MATHJAX_DIR``, which
    ``_config.yml`` names as Sphinx's ``html_extra_path``.
    """
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dest = Path(root) / MATHJAX_DIR / "mathjax"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for part in MATHJAX_PARTS:
        if (es5 / part).is_dir():
            shutil.copytree(es5 / part, dest / part)
        else:
            shutil.copy2(es5 / part, dest / part)
    shutil.copy2(es5.parent / "LICENSE", dest / "LICENSE")
    return dest


def prepare_root(root):
    """Copy the book's prose and configuration into another book root."""
    for name in BOOK_FILES:
        dest = Path(root) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, dest)


def build_html(root=ROOT, quiet=True):
    """Render the book with Jupyter Book, nothing executed.

    Warnings and unresolved references (Sphinx's nitpicky mode) are errors.
    With ``quiet``, Sphinx's own log is shown only when the build fails.
    Runs under the book root's lock (a concurrent page execution or render
    of the same root waits), after removing what killed builds left among
    the pages.
    """
    root = Path(root).absolute()
    # --all: a full rebuild, so that warnings of unchanged pages are reported too.
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "--all",
           "--builder", "html", "-W", "-n", "--keep-going"]
    with cache.locked(root / "book" / "generated" / ".build.lock", f"build of the book in {root}"):
        remove_leftovers(root)
        bundle_mathjax(root)
        proc = subprocess.run(cmd, capture_output=quiet, text=True)
    if proc.returncode != 0:
        if quiet:
            print(proc.stdout[-6000:], proc.stderr[-6000:], sep="\n", file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return root / "_build" / "html" / "index.html"


#: Options of a region run, as (option, parameter of the region notebook, type).
REGION_OPTIONS = (("--center-mni", "center_mni", str), ("--radius-mm", "radius_mm", float),
                  ("--compartment", "compartment", str), ("--snr-db", "snr_db", float),
                  ("--seed", "seed", int), ("--duration-s", "duration_s", float),
                  ("--n-recordings", "n_recordings", int))


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m srclib.book", description=__doc__.splitlines()[0],
        epilog="Examples: python -m srclib.book --profile quick | "
               "python -m srclib.book --profile quick --region D --snr-db 0 | "
               "python -m srclib.book --run 06_region -p region mine "
               "-p center_mni '[38, -22, 56]' -p radius_mm 20 -p compartment cortex")
    parser.add_argument("--profile", choices=sorted(config.PROFILES),
                        help="scale (default: paper; quick with --prepare-only)")
    parser.add_argument("--training", choices=sorted(config.TRAININGS),
                        help="training configuration of the networks (default: the "
                             "environment's SRCLIB_TRAINING, else standard)")
    parser.add_argument("--only", nargs="*", help="page names to run (default: all)")
    parser.add_argument("--force", action="store_true", help="re-execute even if unchanged")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write parameterised, unexecuted notebooks (for Binder)")
    parser.add_argument("--no-html", action="store_true", help="skip the Jupyter Book build")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="book root to build in (default: the repository itself)")
    run = parser.add_argument_group(
        "one run with other settings (written to data/<profile>/runs/, not to the book)")
    run.add_argument("--run", metavar="NOTEBOOK",
                     help="notebook of notebooks/ to run, e.g. 06_region or 03_network")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), help="a parameter of that notebook")
    run.add_argument("--region", help="run the region page (--run 06_region) for this region")
    for option, name, kind in REGION_OPTIONS:
        run.add_argument(option, dest=name, type=kind, help=f"the region page's {name}")
    return parser


def _run_parameters(args):
    """The notebook and parameters of a custom run, or None for a book build."""
    parameters = {name: parse_value(value) for name, value in args.parameter}
    if args.region is not None:
        parameters["region"] = args.region
    parameters.update({name: getattr(args, name) for _, name, _ in REGION_OPTIONS
                       if getattr(args, name) is not None})
    notebook = args.run or ("06_region" if parameters else None)
    return notebook, parameters


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    profile = args.profile or ("quick" if args.prepare_only else "paper")
    if args.training:  # the executed notebooks inherit it
        os.environ["SRCLIB_TRAINING"] = args.training
    try:
        config.training_name()
    except ValueError as err:
        parser.error(str(err))
    # papermill logs every cell's output; the build shows one line per page instead.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    notebook, parameters = _run_parameters(args)
    try:
        if notebook is not None:
            t0 = time.perf_counter()
            out = run_notebook(notebook, parameters, profile)
            print(f"{notebook}: executed in {time.perf_counter() - t0:.0f} s; "
                  f"the executed notebook is {config.shown_path(out)}")
            return
        for page in PAGES:
            check_parameters(page.source, page.parameters)
    except ValueError as err:
        parser.error(str(err))
    build_book(args, profile)


def build_book(args, profile):
    """Run (or prepare) the pages of the book, then build its HTML."""
    if args.root.resolve() != ROOT:
        prepare_root(args.root)
    pages = [p for p in PAGES if not args.only or p.name in args.only]
    generated = Path(args.root) / "book" / "generated"
    t_all = time.perf_counter()
    for i, page in enumerate(pages, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(pages)}] {page.name} ...", end=" ", flush=True)
        status = run_page(page, profile, args.prepare_only, args.force, args.root)
        out = generated / f"{page.name}.ipynb"
        if status == "prepared":
            prepare_for_binder(out, profile)
        elif status == "executed":
            present_page(out, page.source, dict(page.parameters, profile=profile))
        print(f"{status} in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.prepare_only or args.no_html:
        return
    t0 = time.perf_counter()
    print("[html] jupyter-book build ...", end=" ", flush=True)
    index = build_html(args.root)
    print(f"built in {time.perf_counter() - t0:.0f} s; "
          f"whole book in {time.perf_counter() - t_all:.0f} s")
    print(f"The book is at {config.shown_path(index)}")


if __name__ == "__main__":
    main()
