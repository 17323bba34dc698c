"""The whole chain at the quick scale: papermill runs every notebook, Jupyter Book renders them.

This is the slowest test (minutes on two cores the first time, since it builds
the quick profile's head model, training set and network in data/quick/; later
runs reuse them). The book is built in a temporary root so that the
repository's own book/generated and _build are left alone.
"""

import html as html_text
import json
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
    lines = stdout.strip().splitlines()
    n = len(book.PAGES)
    assert lines[-3].startswith(f"[{n}/{n}] {book.PAGES[-1].name} ... executed in")
    assert lines[-1] == f"The book is at {root / '_build' / 'html' / 'index.html'}"
    # one line per page and for the HTML, not papermill's log of every cell
    assert len(lines) <= len(book.PAGES) + 2, stdout
    assert "Executing" not in stdout


def test_pages_show_their_settings_once(built_book):
    root, _ = built_book
    page = json.loads((root / "book/generated/06_region_B.ipynb").read_text())
    hidden = [c for c in page["cells"] if {"parameters", "injected-parameters"}
              & set(c["metadata"].get("tags", []))]
    assert len(hidden) == 2
    assert all("remove-cell" in c["metadata"]["tags"] for c in hidden)
    html = (root / "_build/html/book/generated/06_region_B.html").read_text()
    assert html.count("Settings of this page:") == 1
    text = html_text.unescape(re.sub(r"<[^>]+>", "", html))
    assert "region = 'B'" in text and "profile = 'quick'" in text
    assert 'region = "A"' not in text and 'region = "B"' not in text


def test_equations_use_the_bundled_mathjax(built_book):
    root, _ = built_book
    html_root = root / "_build/html"
    page = (html_root / "book/generated/05_metrics.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"?]*tex-mml-chtml\.js)[^"]*"', page)
    assert scripts and all("://" not in s for s in scripts), scripts
    assert (html_root / "book/generated" / scripts[0]).resolve().is_file()
    assert "cdn.jsdelivr" not in page


def test_pages_print_no_absolute_paths(built_book):
    root, _ = built_book
    for path in (root / "book/generated").glob("*.ipynb"):
        assert str(config.REPO_DATA.parent) not in path.read_text(), path.name


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
    # Every median carries its interval: "12 [9, 15]".
    cells = re.findall(r"<td>([^<]*)</td>", ours)
    assert cells and all(re.fullmatch(r"-?[\d.]+ \[-?[\d.]+, -?[\d.]+\]", c) for c in cells)
    assert "LSTM, training 1" in html  # the spread over trainings
    assert len(tables) >= 3  # ours, the trainings and the paper's
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
    verdict_words = re.findall(r"<td>(wins|loses|within the intervals)</td>", summary)
    # this build's verdicts, then those of the recorded build with the configuration long
    assert len(verdict_words) == 2 * len(REGIONS) * 6
    assert "With the long training configuration" in summary
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
def test_result_files_keep_the_contract(built_book, region, head):
    folder = config.profile_dir("quick") / "results"
    table = pd.read_csv(folder / f"region_{region}.csv")
    assert list(table.columns) == ["method", *metrics.METRICS]
    assert list(table["method"]) == list(results.METHODS)
    windows = pd.read_csv(folder / f"region_{region}_windows.csv")
    assert list(windows.columns) == ["method", "recording", "training", "window",
                                     *metrics.METRICS, "peak"]
    # The peak is a dipole; the Perfect map peaks at the centre, in every window.
    assert windows["peak"].between(0, head.n_dipoles - 1).all()
    assert windows.loc[windows["method"] == "Perfect", "peak"].nunique() == 1
    sim = config.get_params("quick", "simulation")
    n_windows = int(round(sim["region_duration_s"] * config.SFREQ / config.WINDOW))
    n_networks = config.get_params("quick", "network")["n_networks"]
    rows_per_window = len(results.METHODS) - 1 + n_networks  # one LSTM row per network
    assert len(windows) == n_windows * sim["region_recordings"] * rows_per_window
    assert set(windows.loc[windows["method"] == "LSTM", "training"]) == set(range(n_networks))
    assert set(windows.loc[windows["method"] != "LSTM", "training"]) == {-1}
    medians = windows.groupby("method", sort=False)[list(metrics.METRICS)].median()
    assert medians.loc[table["method"]].to_numpy() == pytest.approx(
        table[list(metrics.METRICS)].to_numpy(), rel=1e-5)
    intervals = pd.read_csv(folder / f"region_{region}_intervals.csv")
    assert list(intervals.columns) == ["method", "metric", "median", "low", "high"]
    assert len(intervals) == len(results.METHODS) * len(metrics.METRICS)
    assert (intervals["low"] <= intervals["median"] + 1e-9).all()
    assert (intervals["median"] <= intervals["high"] + 1e-9).all()
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


def test_help_notebook_describes_every_parameter(tmp_path):
    import jupytext
    import nbformat

    src = tmp_path / "06_region.ipynb"
    nbformat.write(jupytext.read(book.NOTEBOOKS / "06_region.md"), src)
    proc = subprocess.run([str(Path(sys.executable).with_name("papermill")), "--help-notebook",
                           str(src)], capture_output=True, text=True, check=True)
    out = proc.stdout
    for expected in ('profile: str (default "paper")', '"quick"', 'region: str (default "A")',
                     '"B", "C", "D"', "radius_mm: Optional[float] (default None)", "200",
                     "compartment: Optional[str] (default None)", '"subcortical"',
                     "snr_db: Optional[float]", "-40 to 60", "seed: Optional[int]",
                     "center_mni: Optional[list[float]]", "duration_s: Optional[float]"):
        assert expected in out, expected


@pytest.mark.parametrize("page", sorted({p.source for p in book.PAGES}))
def test_every_parameter_is_typed_and_explained(page):
    declared = book.notebook_parameters(page)
    assert "profile" in declared
    for name, p in declared.items():
        assert p["inferred_type_name"] not in ("", "None"), name
        assert len(p["help"]) > 15, name


def test_unknown_parameter_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        book.main(["--profile", "quick", "--region", "D", "-p", "radius", "20"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'radius'" in err
    assert "allowed: profile, region, center_mni, radius_mm" in err
    with pytest.raises(ValueError, match="unknown parameter 'regoin'"):
        book.check_parameters("07_summary.md", {"profile": "quick", "regoin": "A"})
    with pytest.raises(SystemExit):
        book.main(["--run", "99_nothing"])
    assert "notebook must be one of" in capsys.readouterr().err


def test_run_names_are_plain_file_names():
    assert book.run_name("06_region", {"profile": "quick", "region": "D", "snr_db": 0}) \
        == "06_region_region-D_snr_db-0.ipynb"
    name = book.run_name("06_region", {"region": "../../etc", "center_mni": "[1, 2, 3]"})
    assert "/" not in name and not name.startswith(".")
    assert len(book.run_name("06_region", {"region": "x" * 500})) <= 127
    assert book.parse_value("0") == 0 and book.parse_value("2.5") == 2.5
    assert book.parse_value("None") is None and book.parse_value("cortex") == "cortex"


def test_pages_prepared_for_binder_run_the_quick_profile(tmp_path):
    book.main(["--prepare-only", "--root", str(tmp_path), "--only", "06_region_B"])
    page = json.loads((tmp_path / "book/generated/06_region_B.ipynb").read_text())
    cells = page["cells"]
    assert "".join(cells[0]["source"]).startswith("# Region B")
    note = "".join(cells[1]["source"])
    assert "quick" in note and "differ from the book's" in note
    injected = next(c for c in cells if "injected-parameters" in c["metadata"].get("tags", []))
    assert 'profile = "quick"' in "".join(injected["source"])
    assert not any(c["outputs"] for c in cells if c["cell_type"] == "code")


@pytest.mark.slow
def test_one_region_run_with_other_settings(capsys):
    book.main(["--profile", "quick", "--region", "D", "--snr-db", "0", "--duration-s", "2"])
    out = capsys.readouterr().out
    path = re.search(r"the executed notebook is (\S+)", out).group(1)
    runs = config.profile_dir("quick") / "runs"
    executed = runs / "06_region_region-D_snr_db-0.0_duration_s-2.0.ipynb"
    assert path == config.shown_path(executed) and executed.exists()
    cells = json.loads(executed.read_text())["cells"]
    injected = next(c for c in cells if "injected-parameters" in c["metadata"].get("tags", []))
    assert "snr_db = 0.0" in "".join(injected["source"])
    assert "Traceback" not in executed.read_text()
    files = "".join("".join(o.get("data", {}).get("text/markdown", ""))
                    for c in cells if c["cell_type"] == "code" for o in c["outputs"])
    name = re.search(r"results/(region_D_\S+?)\.csv", files).group(1)
    assert name != "region_D"  # never the book's own file
    table = pd.read_csv(config.profile_dir("quick") / "results" / f"{name}.csv")
    assert list(table["method"]) == list(results.METHODS)


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
        if line.startswith(f"[2/{len(book.PAGES)}] 02_simulator ..."):
            break
    else:
        pytest.fail("the build never reached its second page")
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
        statuses = sorted(
            re.search(rf"\] {page} \.\.\. (?:waiting for another [^\n]*\n)*(\w+) in \d+ s",
                      out).group(1)
            for out in outputs)
        assert statuses == ["cached", "executed"], page
        assert book._stored(tmp_path / "book" / "generated" / f"{page}.ipynb")["build_key"]
    assert _hidden(tmp_path) == []
