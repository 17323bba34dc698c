"""Build the book: papermill runs every notebook, then Jupyter Book renders them.

``python -m srclib.book --profile paper`` (what ``make book`` calls):

1. each Jupytext notebook in ``notebooks/`` is read and executed by papermill
   with its parameters (the profile, and the region for the four region
   pages) into ``book/generated/``;
2. ``jupyter-book build`` renders the executed notebooks and the prose pages
   into ``_build/html`` with warnings as errors, executing nothing.

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
import shutil
import subprocess
import sys
import tempfile
import time

from . import cache, config
from .regions import REGIONS, load_regions

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: What a book root needs besides the executed notebooks.
BOOK_FILES = ("_config.yml", "_toc.yml", "book/intro.md", "book/discussion.md",
              "book/rerunning.md", "book/bibliography.md", "book/references.bib")
_REGION_TEXT = load_regions()


@dataclass
class Page:
    """One page of the book made from a notebook."""

    name: str
    source: str
    parameters: dict = field(default_factory=dict)
    reads_results: bool = False
    title: str = None  # replaces the notebook's first heading (one template, many pages)
    products: tuple = ()  # files it writes under data/<profile>/, checked before skipping it


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
    folder = config.profile_dir(profile) / "results"
    return _files_hash([folder / f"region_{r}.csv" for r in REGIONS])


def _products_hash(page, profile):
    return _files_hash([config.profile_dir(profile) / p for p in page.products])


def build_key(page, profile):
    """Hash of everything an executed page depends on."""
    parts = dict(
        source=(NOTEBOOKS / page.source).read_text(),
        parameters=dict(page.parameters, profile=profile), title=page.title,
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
    import jupytext
    import nbformat
    import papermill

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
        log_output=not prepare_only, progress_bar=False,
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
    import nbformat

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


def prepare_root(root):
    """Copy the book's prose and configuration into another book root."""
    for name in BOOK_FILES:
        dest = Path(root) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, dest)


def build_html(root=ROOT):
    """Render the book with Jupyter Book, warnings as errors, nothing executed.

    Runs under the book root's lock (a concurrent page execution or render
    of the same root waits), after removing what killed builds left among
    the pages.
    """
    # --all: a full rebuild, so that warnings of unchanged pages are reported too.
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "--all",
           "--builder", "html", "-W", "--keep-going"]
    root = Path(root).absolute()
    with cache.locked(root / "book" / "generated" / ".build.lock", f"build of the book in {root}"):
        remove_leftovers(root)
        subprocess.run(cmd, check=True)
    return root / "_build" / "html" / "index.html"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper", choices=sorted(config.PROFILES))
    parser.add_argument("--only", nargs="*", help="page names to run (default: all)")
    parser.add_argument("--force", action="store_true", help="re-execute even if unchanged")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write parameterised, unexecuted notebooks (for Binder)")
    parser.add_argument("--no-html", action="store_true", help="skip the Jupyter Book build")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="book root to build in (default: the repository itself)")
    args = parser.parse_args(argv)
    if args.root.resolve() != ROOT:
        prepare_root(args.root)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    pages = [p for p in PAGES if not args.only or p.name in args.only]
    t_all = time.perf_counter()
    for i, page in enumerate(pages, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(pages)}] {page.name} ...", flush=True)
        status = run_page(page, args.profile, args.prepare_only, args.force, args.root)
        print(f"[{i}/{len(pages)}] {page.name}: {status} in {time.perf_counter() - t0:.0f} s",
              flush=True)
    if args.prepare_only or args.no_html:
        return
    t0 = time.perf_counter()
    print("[html] jupyter-book build ...", flush=True)
    index = build_html(args.root)
    print(f"[html] built in {time.perf_counter() - t0:.0f} s; "
          f"whole book in {time.perf_counter() - t_all:.0f} s")
    print(f"The book is at {index}")


if __name__ == "__main__":
    main()
