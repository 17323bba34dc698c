"""The whole chain at the quick scale: papermill runs every notebook, Jupyter Book renders them.

This is the slowest test (minutes on two cores the first time, since it builds
the quick profile's head model, training set and network in data/quick/; later
runs reuse them). The book is built in a temporary root so that the
repository's own book/generated and _build are left alone.
"""

import re
import subprocess
import sys

import pandas as pd
import pytest

from srclib import book, config, metrics, results

from srclib.regions import REGIONS

pytestmark = pytest.mark.slow


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
    n = len(book.PAGES)
    assert f"[{n}/{n}] {book.PAGES[-1].name}" in stdout
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
                 "book/generated/01_head_model", "book/generated/07_summary",
                 "book/generated/08_own_eeg"):
        assert (html / f"{page}.html").exists(), page
    summary = (html / "book/generated/07_summary.html").read_text()
    assert "Verdict" in summary
    assert summary.count("<table") >= 5


def test_own_eeg_page_reports_the_distance_and_its_files(built_book):
    root, _ = built_book
    html = (root / "_build/html/book/generated/08_own_eeg.html").read_text()
    assert "Traceback" not in html
    assert re.search(r"peaks <strong>(<[^>]+>)*\d+(</[^>]+>)* mm</strong>", html)
    for name in ("recording_raw.fif", "recording.edf", "estimate-vl.stc"):
        assert f"data/quick/own_eeg/{name}" in html  # printed relative to the repository
        assert (config.profile_dir("quick") / "own_eeg" / name).exists()
    assert str(config.REPO_DATA.parent) not in html


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
