"""The cache's guarantees: recorded contents, results keyed by their network, locks,
leftovers of killed runs, the user's umask, and workers that die with their parent."""

import copy
import json
import os
from pathlib import Path
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from srclib import cache, config, results, workers

ROOT = Path(__file__).resolve().parent.parent


def _python(code, **kwargs):
    """Start ``python -c code`` with srclib importable (text pipes)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _dead_pid():
    """The pid of a process that has finished."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _gone(pid):
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


def _build(folder, files, key="k1"):
    with cache.ArtifactFolder(folder, key, dict(note="test")) as art:
        for name, data in files.items():
            (art.tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (art.tmp / name).write_bytes(data)
    return folder


# --------------------------------------------------------------------------
# Recorded contents
# --------------------------------------------------------------------------


def test_artifact_records_every_file(tmp_path):
    files = {"a.bin": bytes(range(200)), "sub/b.txt": b"hello"}
    folder = _build(tmp_path / "art", files)
    prov = cache.read_provenance(folder)
    assert prov["key"] == "k1" and prov["note"] == "test"
    assert set(prov["files"]) == {"a.bin", "sub/b.txt"}
    for name, data in files.items():
        assert prov["files"][name]["size"] == len(data)
        assert prov["files"][name]["sha256"] == cache.sha256_file(folder / name)
    assert cache.is_valid(folder, "k1")
    assert not cache.is_valid(folder, "other")


@pytest.mark.parametrize("tamper,words", [
    (lambda p: p.write_bytes(p.read_bytes()[:120]), "has 120 bytes, 200 were written"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"\x00"), "SHA-256 differs"),
    (lambda p: p.unlink(), "is missing"),
])
def test_altered_artifact_is_rebuilt_not_trusted(tmp_path, tamper, words):
    folder = _build(tmp_path / "art", {"a.bin": bytes(range(200))})
    tamper(folder / "a.bin")
    reason = cache.validate(folder, "k1")
    assert reason is not None and words in reason and "a.bin" in reason
    with pytest.warns(cache.CacheWarning, match="rebuilding"):
        assert not cache.is_valid(folder, "k1")


def test_large_files_are_rehashed_only_when_touched(tmp_path, monkeypatch):
    folder = _build(tmp_path / "art", {"big.bin": b"x" * 100, "small.txt": b"s"})
    monkeypatch.setattr(cache, "HASH_ON_READ_BYTES", 10)
    hashed = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p, *a: hashed.append(Path(p).name) or real(p))
    assert cache.check_files(folder, cache.read_provenance(folder)["files"]) == []
    assert hashed == ["small.txt"]  # the large unchanged file is trusted on size and mtime
    big = folder / "big.bin"
    big.write_bytes(b"y" * 100)  # same size, new modification time
    problems = cache.check_files(folder, cache.read_provenance(folder)["files"])
    assert len(problems) == 1 and "big.bin" in problems[0] and "SHA-256" in problems[0]


def _fake_results(name="region_A", **overrides):
    """Hand-made results of one region (2 methods x 3 windows), saved as run_region does."""
    per_window = pd.DataFrame(dict(method=["LSTM"] * 3 + ["MNE"] * 3, recording=0,
                                   training=[0] * 3 + [-1] * 3, window=[0, 1, 2] * 2,
                                   **{m: np.arange(6.0) for m in results.metrics.METRICS}))
    table = per_window.groupby("method")[list(results.metrics.METRICS)].median()
    intervals = results.bootstrap_intervals(per_window, n_boot=10)
    examples = {m: dict(window=1, map=np.zeros(4, np.float32)) for m in ("LSTM", "MNE")}
    params = results.region_parameters("quick", name.removeprefix("region_").split("_")[0],
                                       **overrides)
    folder = config.profile_dir("quick") / "results"
    results._save(folder, name, dict(key="k", params=params, spec={}, model=dict(trained=True)),
                  per_window, table, intervals, examples, np.zeros(4), dict(total=0.0))
    return folder


def test_truncated_book_results_are_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    folder = _fake_results("region_A")
    assert len(results.load_region("quick", "A")["per_window"]) == 6
    windows = folder / "region_A_windows.csv"
    lines = windows.read_text().splitlines(keepends=True)
    windows.write_text("".join(lines[:4]))  # 3 of 6 rows, as a killed copy would leave
    with pytest.raises(cache.ArtifactError) as error:
        results.load_region("quick", "A")
    message = str(error.value)
    assert str(windows) in message
    assert "python -m srclib.book --profile quick" in message


def test_results_without_a_record_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    folder = _fake_results("region_B_snr0", snr_db=0)
    marker = folder / "region_B_snr0.json"
    meta = json.loads(marker.read_text())
    del meta["files"]  # as written by an older version
    marker.write_text(json.dumps(meta))
    with pytest.raises(cache.ArtifactError, match=r"region_B_snr0.json has no record of its files.*"
                       r"run_region\('quick', 'B', snr_db=0.0\)"):
        results.load_region("quick", "region_B_snr0")


@pytest.mark.slow
def test_truncated_results_are_recomputed_by_run_region(head):
    kw = dict(head=head, duration_s=2, progress=False)
    first = results.run_region("quick", "A", **kw)
    folder = config.profile_dir("quick") / "results"
    windows = folder / f"{first['name']}_windows.csv"
    lines = windows.read_text().splitlines(keepends=True)
    rows_per_window = len(results.METHODS) - 1 + first["model"]["n_networks"]
    assert len(lines) == 1 + 10 * first["n_recordings"] * rows_per_window
    windows.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(cache.ArtifactError, match="run_region\\('quick', 'A', duration_s=2.0\\)"):
        results.load_region("quick", first["name"])
    with pytest.warns(cache.CacheWarning, match="recomputing"):
        again = results.run_region("quick", "A", **kw)
    pd.testing.assert_frame_equal(again["per_window"], first["per_window"])
    assert len(windows.read_text().splitlines()) == len(lines)


# --------------------------------------------------------------------------
# Results keyed by the network that produced them
# --------------------------------------------------------------------------


def test_model_identity_follows_the_weights():
    import torch
    from srclib.network import SourceLSTM

    torch.manual_seed(0)
    model = SourceLSTM(20, embed_dim=4, hidden_dim=4, fc_dims=(8,))
    identity = results.model_identity(model)
    assert results.model_identity(copy.deepcopy(model)) == identity
    with torch.no_grad():
        model.out.bias[3] += 1e-6
    assert results.model_identity(model) != identity
    other = SourceLSTM(20, embed_dim=4, hidden_dim=4, fc_dims=(8,))
    assert results.model_identity(other) != identity


@pytest.mark.slow
def test_a_passed_network_never_touches_the_trained_networks_results(head):
    import torch
    from srclib.network import SourceLSTM, load_model, load_models

    kw = dict(head=head, duration_s=2, progress=False)
    trained = results.run_region("quick", "D", **kw)  # what the book's page calls
    folder = config.profile_dir("quick") / "results"
    book_files = {p: cache.file_record(folder / p)
                  for p in (f"{trained['name']}{s}" for s in (".json", ".csv", "_windows.csv"))}
    assert trained["model"]["trained"] and trained["name"] == "region_D_dur2"

    card = load_model("quick", head=head).card
    torch.manual_seed(1)
    untrained = SourceLSTM(**card["architecture"])
    other = results.run_region("quick", "D", model=untrained, **kw)
    identity = results.model_identity(untrained)
    assert other["name"] == f"region_D_dur2_model{identity[:12]}"
    assert not other["model"]["trained"] and other["model"]["identity"] == identity
    # Computed afresh with the untrained network, not read from the trained one's files.
    assert other["table"].loc["LSTM", "MLE_mm"] != trained["table"].loc["LSTM", "MLE_mm"]
    pd.testing.assert_frame_equal(other["table"].drop("LSTM"), trained["table"].drop("LSTM"))
    # The trained network's files are untouched, and a plain call (the page) still reads them.
    assert {p: cache.file_record(folder / p) for p in book_files} == book_files
    again = results.run_region("quick", "D", **kw)
    pd.testing.assert_frame_equal(again["table"], trained["table"])
    assert {p: cache.file_record(folder / p) for p in book_files} == book_files
    # The trained networks passed explicitly (a copy) share the book's results.
    same = results.run_region("quick", "D", **kw,
                              model=copy.deepcopy(load_models("quick", head=head)))
    assert same["name"] == "region_D_dur2" and same["model"]["trained"]


# --------------------------------------------------------------------------
# The user's umask
# --------------------------------------------------------------------------


@pytest.mark.parametrize("umask,folder_mode,file_mode", [
    (0o002, 0o775, 0o664), (0o077, 0o700, 0o600), (0o022, 0o755, 0o644)])
def test_cache_respects_the_umask(tmp_path, umask, folder_mode, file_mode):
    old = os.umask(umask)
    try:
        folder = _build(tmp_path / "art", {"a.bin": b"1"})
        cache.atomic_write_json(tmp_path / "marker.json", {"a": 1})
        cache.atomic_save(tmp_path / "x.txt", lambda p: Path(p).write_text("x"))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(folder) == folder_mode
    assert mode(folder / "provenance.json") == file_mode
    assert mode(folder / "a.bin") == file_mode
    assert mode(tmp_path / "marker.json") == file_mode
    assert mode(tmp_path / "x.txt") == file_mode


# --------------------------------------------------------------------------
# Leftovers of killed runs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name,pid", [
    (".headmodel.tmp-123-ab_c9", 123), (".headmodel.old-77", 77),
    (".region_A_snr0.5_windows.tmp-4242.csv", 4242), (".X.tmp-9.npy", 9),
    (".provenance.json.tmp-31-x1y2z3", 31), (".07_summary.ipynb.tmp-8", 8),
    (".headmodel.lock", None), (".region_A.lock", None), ("headmodel", None),
    ("notes.tmp-1", None), (".hidden", None),
])
def test_temporary_names_carry_their_owner(name, pid):
    assert cache.temporary_owner(name) == pid


def test_leftovers_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    leftovers = [tmp_path / f".headmodel.tmp-{dead}-abc", tmp_path / f".training.old-{dead}"]
    for path in leftovers:
        path.mkdir()
        (path / "half-written.fif").write_bytes(b"half")
    (tmp_path / f".X.tmp-{dead}.npy").write_bytes(b"half")
    kept = [tmp_path / f".headmodel.tmp-{alive}-def", tmp_path / ".headmodel.lock",
            tmp_path / ".hidden", tmp_path / "notes.tmp"]
    for path in kept:
        path.write_bytes(b"keep")
    _build(tmp_path / "model", {"model.pt": b"w"})
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {p.name for p in kept} | {"model", ".model.lock"}


# --------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------


def test_a_second_process_waits_for_the_lock_and_says_so(tmp_path):
    lock = tmp_path / ".build.lock"
    hold = _python(
        "import sys, time; from srclib import cache\n"
        f"with cache.locked({str(lock)!r}, 'build of x'):\n"
        "    print('held', flush=True); time.sleep(3); print(time.time(), flush=True)\n")
    assert hold.stdout.readline().strip() == "held"
    wait = _python(
        "import time; from srclib import cache\n"
        f"with cache.locked({str(lock)!r}, 'build of x'):\n"
        "    print('acquired', time.time(), flush=True)\n")
    out_wait, err_wait = wait.communicate(timeout=60)
    out_hold, _ = hold.communicate(timeout=60)
    assert wait.returncode == 0 and hold.returncode == 0, err_wait
    released = float(out_hold.split()[-1])
    assert f"waiting for another build of x (pid {hold.pid})" in out_wait
    acquired = float(out_wait.split("acquired")[1])
    assert acquired >= released


def test_lock_is_reentrant_in_one_thread(tmp_path):
    lock = tmp_path / ".lock"
    messages = []
    with cache.locked(lock, "x", log=messages.append):
        with cache.locked(lock, "x", log=messages.append):
            pass
    assert messages == []
    assert lock.read_text().strip() == str(os.getpid())


# --------------------------------------------------------------------------
# Workers die with their parent
# --------------------------------------------------------------------------


def test_worker_returns_its_result():
    worker = workers.start_worker("math.hypot", 3, 4)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert out.strip().splitlines()[-1] == "5.0"


def test_worker_dies_when_its_parent_is_killed():
    # The parent starts a worker that would sleep two minutes, then waits for it.
    parent = _python("from srclib import workers\n"
                     "w = workers.start_worker('time.sleep', 120)\n"
                     "print(w.pid, flush=True); w.wait()\n")
    worker_pid = int(parent.stdout.readline())
    time.sleep(1.0)
    assert not _gone(worker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_gone(worker_pid, timeout=60), "the worker outlived its killed parent"


def test_sampler_workers_end_with_their_killed_parent():
    # A forked pool worker waits on a job queue that its siblings keep open,
    # so without a parent-death signal it would wait forever.
    parent = _python("import math, time\n"
                     "from srclib import sampler\n"
                     "with sampler._worker_pool(2) as map_:\n"
                     "    print(list(map_(math.sqrt, [4.0, 9.0])), flush=True)\n"
                     "    time.sleep(120)\n")
    assert parent.stdout.readline().strip() == "[2.0, 3.0]"
    pids = [p.pid for p in psutil.Process(parent.pid).children()]
    assert len(pids) == 2 and not any(_gone(pid) for pid in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert all(_wait_gone(pid, timeout=60) for pid in pids), "a worker outlived its parent"


def test_without_prctl_a_watchdog_ends_the_orphan():
    child = ("import sys, time\n"
             "from srclib import workers\n"
             "workers._set_parent_death_signal = lambda: False\n"
             "print(workers.die_with_parent(int(sys.argv[1])), flush=True)\n"
             "time.sleep(120)\n")
    parent = _python("import os, subprocess, sys\n"
                     f"w = subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())],\n"
                     "                     stdout=subprocess.PIPE, text=True)\n"
                     "print(w.pid, flush=True); print(w.stdout.readline().strip(), flush=True)\n"
                     "w.wait()\n")
    worker_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "watchdog"
    assert not _gone(worker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_gone(worker_pid, timeout=30), "the orphan did not notice its parent's death"


def test_jobs_run_in_workers_report_as_they_finish_and_a_failure_names_its_job():
    done, polls = [], []
    workers.run_in_workers("math.hypot", [(3, 4), (5, 12)], 2, on_done=done.append,
                           poll=lambda: polls.append(1), poll_every=0.05)
    assert sorted(done) == [(3, 4), (5, 12)]
    assert polls  # called while the jobs ran
    with pytest.raises(RuntimeError, match=r"(?s)math\.sqrt\(-1,\) failed.*math domain error"):
        workers.run_in_workers("math.sqrt", [(4,), (-1,)], 2)


def test_two_processes_never_build_the_same_training_set_twice(head, tmp_path, monkeypatch):
    # Two callers at once (threads here; processes take the same file lock):
    # the second waits for the first and then reads what it built.
    import threading
    import time

    from srclib import sampler

    monkeypatch.setenv("SRCLIB_DATA_DIR", str(tmp_path))
    builds = []
    real = sampler._build_training_set

    def slow_build(*args):
        builds.append(threading.get_ident())
        time.sleep(1.0)
        return real(*args)

    monkeypatch.setattr(sampler, "_build_training_set", slow_build)
    monkeypatch.setitem(config.PROFILES["quick"]["simulation"], "n_train", 64)
    out = []
    threads = [threading.Thread(target=lambda: out.append(
        sampler.load_training_set("quick", head, progress=False)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(out) == 2
    assert np.array_equal(out[0], out[1])
    _, dense, _ = sampler.load_training_set("quick", head, progress=False)
    _, kept_sparse, _ = sampler.load_training_set("quick", head, sparse_targets=True,
                                                  progress=False)
    assert kept_sparse.format == "csr" and kept_sparse.dtype == np.float32
    assert np.array_equal(kept_sparse.toarray(), dense)
