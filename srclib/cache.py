"""Parameter-keyed caching with atomic writes, recorded contents and locks.

Every expensive step of the pipeline (head model, training set, trained
network, region results) writes its artifacts into a folder of
``data/<profile>/`` together with a ``provenance.json`` that records the
parameters it was built from and their hash (the *key*). A later run reuses
the folder only when the stored key equals the key of the parameters it asks
for; anything else rebuilds it.

What is guaranteed
------------------
*Atomic writes.* An artifact is built in a temporary sibling folder and
renamed into place only once complete, and ``provenance.json``, the marker a
reader trusts, is the last file written. A run killed at any moment leaves
either the previous complete folder or nothing a later run would use.

*Recorded contents.* The marker lists every file of the artifact with its
size in bytes, its SHA-256 (computed once, at write time) and its
modification time. Before a folder is reused, each file is checked against
this record (:func:`check_files`):

* the size is always compared (a truncated or extended file is caught at no
  cost);
* files up to :data:`HASH_ON_READ_BYTES` (16 MiB: every region result, model
  card, dipole table, and the quick profile's whole cache) are hashed again
  on every check (milliseconds);
* larger files (the paper profile's training set, network weights and
  forward operators) are hashed again only when their modification time
  differs from the recorded one, so that an unchanged 2 GB training set is
  not read twice on every load, while any edit through the file system (which
  sets the modification time) is caught. Copying the data folder without
  keeping times (``cp -r`` instead of ``cp -a``) costs one full hash per load.
  An edit that restores the original size and modification time on purpose
  is not detected.

A folder whose files do not match, or that has no record of its files (built
by an older version), is never trusted: a function that builds the artifact
(``load_head_model``, ``load_training_set``, ``load_model``,
``results.run_region``) warns and rebuilds it; a function that only reads
(``results.load_region``) raises :class:`ArtifactError`, naming the file and
the command that rebuilds it.

*Concurrent runs.* :func:`locked` takes an exclusive ``fcntl.flock`` lock on
a file; a second process waits for the first and says so ("waiting for
another ... (pid N)"). The book builder locks the book root and the profile
while it executes or renders a page, and a region run locks its result name,
so two builds started together run one after the other, and the second reuses
what the first finished. The final rename of an artifact folder is locked
too, so two library calls that build the same artifact at once both succeed
(the work is then done twice; the last complete copy stays). Locks need
``fcntl`` (POSIX); elsewhere they are skipped.

*Kills.* Temporaries are named ``.<name>.tmp-<pid>...`` and replaced folders
``.<name>.old-<pid>``, after the process that made them. When a later run
writes into the same folder, it removes those whose process is no longer
alive (:func:`remove_stale`); those of a live process are left alone.

*Permissions.* Files and folders are created with the user's umask
(``tempfile`` creates them private, 0600/0700; they are given the umask's
defaults before the rename), so a group can share one data folder.
"""

from contextlib import contextmanager
import hashlib
import json
import os
from pathlib import Path
import re
import shutil
import sys
import tempfile
import threading
import warnings

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

#: Files up to this size are hashed on every check; larger ones when their mtime changed.
HASH_ON_READ_BYTES = 16 * 2**20

#: Name of the marker file of an artifact folder.
PROVENANCE = "provenance.json"

# ``.<name>.tmp-<pid>[-random][.suffixes]`` and ``.<name>.old-<pid>``.
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-(\d+)(?:[-.].*)?$")


class ArtifactError(RuntimeError):
    """A cached file does not match what its provenance records."""


class CacheWarning(UserWarning):
    """A cached artifact was found invalid and is being rebuilt."""


def params_key(params):
    """Hash a JSON-serialisable parameter dictionary.

    Parameters
    ----------
    params : dict
        Parameters; keys are sorted before hashing, so order does not matter.

    Returns
    -------
    key : str
        The first 16 hexadecimal digits of the SHA-256 of the canonical JSON.
    """
    text = json.dumps(params, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(obj):
    """Turn numpy scalars and arrays into plain JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} for hashing")


def read_json(path):
    """Return the content of a JSON file, or None if it is absent or corrupt."""
    try:
        with open(path) as fid:
            return json.load(fid)
    except (OSError, json.JSONDecodeError):
        return None


def read_provenance(folder):
    """Return the provenance dictionary of ``folder``, or None if absent/corrupt."""
    return read_json(Path(folder) / PROVENANCE)


# --------------------------------------------------------------------------
# Recorded contents
# --------------------------------------------------------------------------


def sha256_file(path, chunk=2**20):
    """SHA-256 (hexadecimal) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fid:
        for block in iter(lambda: fid.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path):
    """What a file must be: ``size`` (bytes), ``sha256`` and ``mtime_ns``."""
    stat = os.stat(path)
    return dict(size=stat.st_size, sha256=sha256_file(path), mtime_ns=stat.st_mtime_ns)


def record_files(folder, names=None):
    """Records (:func:`file_record`) of files in ``folder``.

    Parameters
    ----------
    folder : path-like
    names : iterable of str | None
        Paths relative to ``folder``; None means every file below it except
        ``provenance.json``.

    Returns
    -------
    records : dict
        Relative path (with ``/``) -> record.
    """
    folder = Path(folder)
    if names is None:
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and p.relative_to(folder).as_posix() != PROVENANCE)
    return {name: file_record(folder / name) for name in names}


def check_files(folder, records, marker=None):
    """List how the files of ``folder`` differ from their records.

    Sizes are always compared; hashes of files up to :data:`HASH_ON_READ_BYTES`
    always, of larger ones only when the modification time changed (see the
    module docstring).

    Parameters
    ----------
    folder : path-like
    records : dict | None
        As returned by :func:`record_files`; None (no record) is a problem.
    marker : path-like | None
        The file the records come from, named when they are missing
        (default: ``folder/provenance.json``).

    Returns
    -------
    problems : list of str
        Empty when every file matches.
    """
    if not isinstance(records, dict):
        marker = marker or Path(folder) / PROVENANCE
        return [f"{marker} has no record of its files (written by an older version)"]
    problems = []
    for name, rec in sorted(records.items()):
        path = Path(folder) / name
        try:
            stat = os.stat(path)
        except OSError:
            problems.append(f"{path} is missing")
            continue
        if stat.st_size != rec["size"]:
            problems.append(f"{path} has {stat.st_size} bytes, {rec['size']} were written")
        elif ((stat.st_size <= HASH_ON_READ_BYTES or stat.st_mtime_ns != rec["mtime_ns"])
              and sha256_file(path) != rec["sha256"]):
            problems.append(f"{path} was changed since it was written (SHA-256 differs)")
    return problems


def validate(folder, key):
    """Why ``folder`` cannot be used as the artifact built with ``key`` (None if it can).

    Returns
    -------
    reason : str | None
        None when the provenance holds ``key`` and every recorded file
        matches; otherwise a sentence saying what is wrong.
    """
    prov = read_provenance(folder)
    if prov is None:
        return f"{folder} holds no complete artifact"
    if prov.get("key") != key:
        return f"{folder} was built with other parameters"
    problems = check_files(folder, prov.get("files"))
    if problems:
        return f"{folder} does not match its record: " + "; ".join(problems)
    return None


def is_valid(folder, key):
    """True when ``folder`` holds a complete, unaltered artifact built with ``key``.

    A folder built with ``key`` whose files do not match their record gives a
    :class:`CacheWarning` (the caller rebuilds it).
    """
    reason = validate(folder, key)
    prov = read_provenance(folder)
    if reason is not None and prov is not None and prov.get("key") == key:
        warnings.warn(f"{reason}; rebuilding it", CacheWarning, stacklevel=2)
    return reason is None


def require_files(folder, records, rebuild, marker=None):
    """Raise :class:`ArtifactError` unless the files of ``folder`` match ``records``.

    Parameters
    ----------
    folder : path-like
    records : dict | None
        As returned by :func:`record_files`.
    rebuild : str
        The command that rebuilds the files, quoted in the message.
    marker : path-like | None
        See :func:`check_files`.
    """
    problems = check_files(folder, records, marker)
    if problems:
        raise ArtifactError("; ".join(problems) + f". Refusing to read it: rebuild with {rebuild}")


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


def atomic_write_json(path, obj):
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "w") as fid:
            json.dump(obj, fid, indent=2, sort_keys=True, default=_jsonable)
            fid.flush()
            os.fsync(fid.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_save(path, save):
    """Save a file through ``save(tmp_path)`` then rename it to ``path``.

    Parameters
    ----------
    path : path-like
        Final location. Its suffix is kept on the temporary name because some
        writers (numpy, MNE) check or append suffixes.
    save : callable
        Called with the temporary path; must write the whole file there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{''.join(path.suffixes)}")
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


class ArtifactFolder:
    """Build a cached folder atomically.

    Use as a context manager. Inside the ``with`` block, write files into
    ``.tmp``; on a clean exit every file is recorded (:func:`record_files`)
    in the provenance, which is written last, and the folder replaces any
    previous version of ``path``; on an exception the temporary folder is
    removed and ``path`` is left as it was. Entering removes temporaries
    that dead processes left beside ``path`` (:func:`remove_stale`).

    Parameters
    ----------
    path : path-like
        Final folder.
    key : str
        Parameter hash stored in ``provenance.json``.
    provenance : dict
        Extra provenance (parameters, timings, versions) to store.
    """

    def __init__(self, path, key, provenance=None):
        self.path = Path(path)
        self.key = key
        self.provenance = dict(provenance or {})

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.path.parent)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent,
                                         prefix=f".{self.path.name}.tmp-{os.getpid()}-"))
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            self.provenance["key"] = self.key
            self.provenance["files"] = record_files(self.tmp)
            atomic_write_json(self.tmp / PROVENANCE, self.provenance)
            apply_umask(self.tmp)
            with locked(self.path.with_name(f".{self.path.name}.lock"),
                        f"the writer of {self.path}"):
                self._replace()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return False

    def _replace(self):
        """Rename the temporary folder to ``path``, moving any older version aside."""
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------
# Permissions
# --------------------------------------------------------------------------


def current_umask():
    """The process's umask (read without changing it where the system allows)."""
    try:
        with open("/proc/self/status") as fid:
            for line in fid:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def apply_umask(path):
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (0666/0777 less the umask)."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~current_umask())


# --------------------------------------------------------------------------
# Leftovers of killed runs
# --------------------------------------------------------------------------


def temporary_owner(name):
    """Process id in a temporary's name (``.<name>.tmp-<pid>...``), or None."""
    match = _TEMPORARY.match(name)
    return int(match.group(1)) if match else None


def pid_alive(pid):
    """True when a process ``pid`` exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(folder, prefix=""):
    """Remove temporaries in ``folder`` whose owning process has died.

    Parameters
    ----------
    folder : path-like
    prefix : str
        Only names starting with ``"." + prefix`` are considered.

    Returns
    -------
    removed : list of Path
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        pid = temporary_owner(entry.name)
        if pid is None or not entry.name.startswith("." + prefix) or pid_alive(pid):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _remove(path)
        removed.append(path)
    return removed


# --------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------


_HELD = {}  # lock path -> [threading.RLock, depth, file object]
_HELD_GUARD = threading.Lock()


def build_lock(folder):
    """Lock held while an artifact is built, so that two processes never build it twice.

    Callers check :func:`is_valid` again once they hold it: the artifact may
    have been built by the process they waited for.
    """
    folder = Path(folder)
    return locked(folder.with_name(f".{folder.name}.build.lock"), f"build of {folder.name}")


@contextmanager
def locked(path, what, log=None):
    """Hold an exclusive lock on the file ``path`` (created if needed).

    Another process holding it makes this one wait, after printing
    ``waiting for another <what> (pid N)``. Re-entrant within one thread;
    other threads of the same process wait as other processes do.

    Parameters
    ----------
    path : path-like
        The lock file (left in place: removing it would race with waiters).
    what : str
        Who holds the lock, for the message (e.g. ``"build of profile quick"``).
    log : callable | None
        Where the message goes (default: print to standard output, flushed).
    """
    path = Path(os.path.abspath(path))
    with _HELD_GUARD:
        slot = _HELD.setdefault(str(path), [threading.RLock(), 0, None])
    with slot[0]:
        if slot[1] == 0:
            slot[2] = _acquire(path, what, log)
        slot[1] += 1
        try:
            yield
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                slot[2].close()  # closing the file releases the lock
                slot[2] = None


def _acquire(path, what, log):
    """Open ``path`` and lock it, waiting for another holder; return the open file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fid = open(path, "a+")
    except PermissionError:  # another user's lock file in a shared folder: lock it read-only
        fid = open(path)
    if fcntl is None:
        return fid
    try:
        try:
            fcntl.flock(fid, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fid.seek(0)
            holder = fid.read().strip() or "unknown"
            message = f"waiting for another {what} (pid {holder}) to finish ..."
            (log or (lambda m: print(m, file=sys.stdout, flush=True)))(message)
            fcntl.flock(fid, fcntl.LOCK_EX)
        if fid.writable():
            fid.seek(0)
            fid.truncate()
            fid.write(f"{os.getpid()}\n")
            fid.flush()
    except BaseException:
        fid.close()
        raise
    return fid


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
