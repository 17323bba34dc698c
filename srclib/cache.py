"""Parameter-keyed caching with atomic writes.

Every expensive step of the pipeline (head model, training set, trained
network, region results) writes its artifacts into a folder of
``data/<profile>/`` together with a ``provenance.json`` that records the
parameters it was built from and their hash (the *key*). A later run reuses
the folder only when the stored key equals the key of the parameters it asks
for; anything else rebuilds it.

Writes are atomic: an artifact is built in a temporary sibling folder and
renamed into place only once complete, and ``provenance.json``, the marker
a reader trusts, is the last file written. An interrupted run therefore
leaves either the previous complete folder or nothing a later run would use.
"""

import hashlib
import json
import os
from pathlib import Path
import shutil
import tempfile


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
    return read_json(Path(folder) / "provenance.json")


def is_valid(folder, key):
    """True when ``folder`` holds a complete artifact built with ``key``."""
    prov = read_provenance(folder)
    return prov is not None and prov.get("key") == key


def atomic_write_json(path, obj):
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fid:
            json.dump(obj, fid, indent=2, sort_keys=True, default=_jsonable)
            fid.flush()
            os.fsync(fid.fileno())
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
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{''.join(path.suffixes)}")
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


class ArtifactFolder:
    """Build a cached folder atomically.

    Use as a context manager. Inside the ``with`` block, write files into
    ``.tmp``; on a clean exit the provenance is written last and the folder
    replaces any previous version of ``path``; on an exception the temporary
    folder is removed and ``path`` is left as it was.

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
        self.tmp = Path(
            tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        )
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        self.provenance["key"] = self.key
        atomic_write_json(self.tmp / "provenance.json", self.provenance)
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
