"""Worker processes that die with the process that started them.

Two stages of the book run side by side in fresh Python processes: the
unseen head models' forward operators (:func:`srclib.headmodel.build_unseen_forwards`)
and the networks' trainings (:func:`srclib.network.train_models`). A worker
must never outlive the build that started it, or an interrupted build would
leave it writing into a folder nobody will use; this module starts workers
that end with their parent, even one killed with SIGKILL, and runs a list of
jobs through them a few at a time.

The standard library's process pools are not used for this: their workers
are forked (which is unsafe once PyTorch or a multi-threaded BLAS has started
threads) or re-import the parent's ``__main__`` (a notebook kernel has none to
import), and they survive a parent killed with SIGKILL.
:func:`die_with_parent` also ends the forked workers of the sampler's own
pool (:mod:`srclib.sampler`), which share the parent's head model.
"""

from concurrent.futures import ThreadPoolExecutor, wait, FIRST_COMPLETED
import ctypes
import ctypes.util
import importlib
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time


def start_worker(function, *args):
    """Run ``function(*args)`` in a fresh Python process that dies with this one.

    The worker ends as soon as this process does, even when this one is
    killed with SIGKILL (see :func:`die_with_parent`), so that it never goes
    on writing into a folder nobody will use.

    Parameters
    ----------
    function : str
        Dotted name of a module-level function, e.g.
        ``"srclib.headmodel._forward_to_file"``.
    *args
        JSON-serialisable arguments (paths are passed as text).

    Returns
    -------
    worker : subprocess.Popen
        Text pipes; the last line of its standard output is ``function(*args)``.
    """
    code = "import sys; from srclib.workers import _worker_main; _worker_main(*sys.argv[1:])"
    args = json.dumps([str(a) if isinstance(a, Path) else a for a in args])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid()), function, args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _worker_main(parent_pid, function, args):
    """Body of a :func:`start_worker` process."""
    die_with_parent(int(parent_pid))
    module, _, name = function.rpartition(".")
    print(getattr(importlib.import_module(module), name)(*json.loads(args)))


def run_in_workers(function, jobs, n_jobs, on_done=None, poll=None, poll_every=5.0):
    """Run ``function(*job)`` for every job in :func:`start_worker` processes, n_jobs at a time.

    A job that fails raises, naming it with the end of its error output, and
    the workers still running are stopped; so they are when this process is
    interrupted.

    Parameters
    ----------
    function : str
        Dotted name of a module-level function (see :func:`start_worker`).
    jobs : list of tuple
        The arguments of each call.
    n_jobs : int
        Workers at a time.
    on_done : callable | None
        Called with each job as it finishes (for example to advance a
        progress bar).
    poll : callable | None
        Called every ``poll_every`` seconds while jobs run (for example to
        read the workers' progress from the files they write).
    poll_every : float
        Seconds between calls of ``poll``.
    """
    workers = []

    def run(job):
        worker = start_worker(function, *job)
        workers.append(worker)
        _, err = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"{function}{tuple(job)} failed:\n{err[-3000:]}")
        return job

    pool = ThreadPoolExecutor(n_jobs)
    try:
        pending = {pool.submit(run, job) for job in jobs}
        while pending:
            done, pending = wait(pending, timeout=poll_every, return_when=FIRST_COMPLETED)
            for future in done:
                job = future.result()
                if on_done is not None:
                    on_done(job)
            if poll is not None:
                poll()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def die_with_parent(parent_pid):
    """Make this process end when its parent, ``parent_pid``, ends.

    On Linux the kernel sends SIGKILL to this process when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``); a parent that already died before that
    call is caught by checking ``os.getppid()`` right after it. Elsewhere, or
    when ``prctl`` is unavailable, a daemon thread polls ``os.getppid()``
    every half second and exits when the process has been re-parented.

    Returns
    -------
    how : ``"prctl"`` | ``"watchdog"``
    """
    if _set_parent_death_signal():
        if os.getppid() != parent_pid:
            os._exit(1)
        return "prctl"
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    return "watchdog"


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _set_parent_death_signal():
    """Ask Linux to SIGKILL this process when its parent dies; False if not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid, interval=0.5):
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)
