"""The whole chain at the quick scale: papermill runs every notebook, Jupyter Book renders them.

This is the slowest test (minutes on two cores the first time, since it builds
the quick profile's head model, training set and network in data/quick/; later
runs reuse them). The book is built in a temporary root so that the
repository's own book/generated and _build are left alone.
"""

import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import tempfile
import time

import pandas as pd
import psutil
import pytest

from srclib import book, cache, config, metrics, results

from srclib.regions import REGIONS


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    proc = subprocess.run(
        [sys.executable, "-m", "srclib.book", "--profile", "quick", "--root", str(root)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc.stdout


def test_build_reports_progress_and_location(built_book):
    root, stdout = built_book
    assert "[10/10] 07_summary" in stdout
    assert f"The book is at {root / '_build' / 'html' / 'index.html'}" in stdout


@pytest.mark.parametrize("region", REGIONS)
def test_region_page_shows_its_table_and_figures(built_book, region):
    root, _ = built_book
    html = (root / "_build/html/book/generated" / f"06_region_{region}.html").read_text()
    assert f"Region {region}:" in html  # the page title
    tables = re.findall(r"<table.*?</table>", html, flags=re.S)
    ours = tables[0]
    for method in results.METHODS:
        assert f">{method}<" in ours
    for header in ("MLE (mm)", "AUC_close", "AUC_far", "DistRank", "PAS (mm)", "FractionActive"):
        assert header in ours
    assert len(tables) >= 2  # ours and the paper's
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', html)
    assert len(images) >= 2  # box plots and the reconstruction figure
    for src in images:
        assert (root / "_build/html/book/generated" / src).exists()
    assert "Traceback" not in html


def test_every_page_rendered(built_book):
    root, _ = built_book
    html = root / "_build/html"
    for page in ("book/intro", "book/discussion", "book/rerunning", "book/bibliography",
                 "book/generated/01_head_model", "book/generated/07_summary"):
        assert (html / f"{page}.html").exists(), page
    summary = (html / "book/generated/07_summary.html").read_text()
    assert "Verdict" in summary
    assert summary.count("<table") >= 5


@pytest.mark.parametrize("region", REGIONS)
def test_result_files_keep_the_contract(built_book, region):
    folder = config.profile_dir("quick") / "results"
    table = pd.read_csv(folder / f"region_{region}.csv")
    assert list(table.columns) == ["method", *metrics.METRICS]
    assert list(table["method"]) == list(results.METHODS)
    windows = pd.read_csv(folder / f"region_{region}_windows.csv")
    assert list(windows.columns) == ["method", "window", *metrics.METRICS]
    n_windows = int(round(config.get_params("quick", "simulation")["region_duration_s"]
                          * config.SFREQ / config.WINDOW))
    assert len(windows) == n_windows * len(results.METHODS)
    medians = windows.groupby("method", sort=False)[list(metrics.METRICS)].median()
    assert medians.loc[table["method"]].to_numpy() == pytest.approx(
        table[list(metrics.METRICS)].to_numpy(), rel=1e-5)
    perfect = table.set_index("method").loc["Perfect"]
    assert perfect["MLE_mm"] == 0 and perfect["AUC_close"] == 1 and perfect["FractionActive"] == 1


@pytest.mark.parametrize("params,message", [
    (dict(region="Z"), "region must be one of"),
    (dict(region="A", radius_mm=-3), "radius_mm must be a finite number in"),
    (dict(region="x", center_mni="[1, 2]", radius_mm=10, compartment="cortex"), "center_mni"),
    (dict(region="A", profile="huge"), "profile must be one of"),
])
def test_region_notebook_stops_on_bad_parameters(tmp_path, params, message):
    import jupytext
    import nbformat
    import papermill

    nb = jupytext.read(config.REPO_DATA.parent / "notebooks" / "06_region.md")
    src = tmp_path / "region.ipynb"
    nbformat.write(nb, src)
    params = dict(dict(profile="quick"), **params)
    with pytest.raises(papermill.PapermillExecutionError, match=message):
        papermill.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters=params,
                                   kernel_name="python3", progress_bar=False)


def _hidden(root):
    """Hidden files among the pages, other than the build lock."""
    generated = root / "book" / "generated"
    return sorted(p.name for p in generated.iterdir()
                  if p.name.startswith(".") and p.name != ".build.lock")


def _all_end(processes, timeout):
    """Wait until every process has ended (or is a zombie nobody reaped)."""
    def running(proc):
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while any(running(p) for p in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _book_command(root, *options):
    return [sys.executable, "-m", "srclib.book", "--profile", "quick", "--root", str(root),
            *options]


def test_no_build_temporaries_among_the_pages(built_book):
    root, _ = built_book
    assert _hidden(root) == []


def test_leftovers_of_killed_builds_are_removed(tmp_path):
    generated = tmp_path / "book" / "generated"
    generated.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = [".06_region_B.input.ipynb", ".07_summary.output.ipynb",
             f".01_head_model.ipynb.tmp-{dead}"]
    kept = ["01_head_model.ipynb", f".02_simulator.ipynb.tmp-{os.getppid()}"]
    for name in stale + kept:
        (generated / name).write_text("{}")
    book.remove_leftovers(tmp_path)
    assert sorted(p.name for p in generated.iterdir()) == sorted(kept)


@pytest.mark.slow
def test_a_killed_forced_build_then_a_plain_build_succeeds(built_book):
    root, _ = built_book
    killed = subprocess.Popen(_book_command(root, "--force", "--no-html"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in killed.stdout:  # kill it while it executes the second page
        if line.startswith("[2/10] 02_simulator ..."):
            break
    time.sleep(8)
    helpers = psutil.Process(killed.pid).children(recursive=True)  # the page's kernel, ...
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL  # killed, not finished
    assert helpers
    assert _all_end(helpers, timeout=60), "helpers outlived the killed build"
    plain = subprocess.run(_book_command(root), capture_output=True, text=True)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    assert "The book is at" in plain.stdout
    assert _hidden(root) == []
    leftovers = [p for p in Path(tempfile.gettempdir()).glob(".srclib-book.tmp-*")
                 if cache.temporary_owner(p.name) == killed.pid]
    assert leftovers == []


@pytest.mark.slow
def test_two_builds_at_once_both_succeed(built_book, tmp_path):
    pages = ["01_head_model", "06_region_A", "07_summary"]
    command = _book_command(tmp_path, "--no-html", "--only", *pages)
    builds = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    outputs = [b.communicate(timeout=1800)[0] for b in builds]
    assert [b.returncode for b in builds] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert any(re.search(r"waiting for another build of .* \(pid \d+\)", out) for out in outputs)
    for page in pages:  # each page executed once, by one build; the other found it done
        statuses = sorted(re.search(rf"\] {page}: (\w+) in", out).group(1) for out in outputs)
        assert statuses == ["cached", "executed"], page
        assert book._stored(tmp_path / "book" / "generated" / f"{page}.ipynb")["build_key"]
    assert _hidden(tmp_path) == []
