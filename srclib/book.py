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
"""

import argparse
from dataclasses import dataclass, field
import hashlib
import json
import logging
from pathlib import Path
import shutil
import subprocess
import sys
import time

from . import config
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

    The executed notebook is written to ``root/book/generated/<name>.ipynb``.

    Returns
    -------
    status : str
        ``"cached"``, ``"executed"`` or ``"prepared"``.
    """
    import jupytext
    import nbformat
    import papermill

    generated = Path(root) / "book" / "generated"
    out = generated / f"{page.name}.ipynb"
    key = build_key(page, profile)
    stored = _stored(out)
    unchanged = (stored.get("build_key") == key
                 and stored.get("products") == _products_hash(page, profile))
    if unchanged and not force and not prepare_only:
        return "cached"
    generated.mkdir(parents=True, exist_ok=True)
    notebook = jupytext.read(NOTEBOOKS / page.source)
    if page.title:
        _set_title(notebook, page.title)
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                                "language": "python"})
    src = generated / f".{page.name}.input.ipynb"
    tmp = generated / f".{page.name}.output.ipynb"
    nbformat.write(notebook, src)
    try:
        papermill.execute_notebook(
            str(src), str(tmp), parameters=dict(page.parameters, profile=profile),
            kernel_name="python3", cwd=str(NOTEBOOKS), prepare_only=prepare_only,
            log_output=not prepare_only, progress_bar=False,
        )
        executed = nbformat.read(tmp, as_version=4)
        if not prepare_only:
            executed.metadata["srclib"] = dict(build_key=key, profile=profile,
                                               products=_products_hash(page, profile))
        nbformat.write(executed, tmp)
        tmp.replace(out)
    finally:
        src.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return "prepared" if prepare_only else "executed"


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
    """Render the book with Jupyter Book, warnings as errors, nothing executed."""
    # --all: a full rebuild, so that warnings of unchanged pages are reported too.
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "--all",
           "--builder", "html", "-W", "--keep-going"]
    subprocess.run(cmd, check=True)
    return Path(root) / "_build" / "html" / "index.html"


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
