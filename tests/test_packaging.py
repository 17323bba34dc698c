"""The pins of pyproject.toml, environment.yml (Binder) and constraints.txt (the lock) agree."""

from pathlib import Path
import re
import tomllib

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement):
    return re.split(r"[=<>!~\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pins(lines):
    """``name -> version`` for every ``name==version`` line (other lines are returned apart)."""
    pins, other = {}, []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[_name(match.group(1))] = match.group(3)
        else:
            other.append(line)
    return pins, other


def _pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def _lock():
    return (ROOT / "constraints.txt").read_text().splitlines()


def test_every_direct_dependency_is_pinned_exactly():
    pins, other = _pins(_pyproject())
    assert other == [], f"unpinned in pyproject.toml: {other}"
    env_pins, env_other = _pins(_environment())
    assert all(line.startswith("--") for line in env_other), \
        f"unpinned in environment.yml: {env_other}"
    for name in ("torch", "jupyterlab", "ipywidgets", "jupyter-book", "django-static-mathjax"):
        assert name in pins and name in env_pins, name


def test_pyproject_environment_and_lock_pin_the_same_versions():
    pins, _ = _pins(_pyproject())
    env_pins, _ = _pins(_environment())
    lock, lock_other = _pins(_lock())
    assert lock_other == [], f"lines of constraints.txt that are not pins: {lock_other}"
    assert env_pins == pins, {k: (pins.get(k), env_pins.get(k))
                              for k in set(pins) | set(env_pins)
                              if pins.get(k) != env_pins.get(k)}
    mismatched = {k: (v, lock.get(k)) for k, v in pins.items() if lock.get(k) != v}
    assert mismatched == {}, f"pyproject.toml vs constraints.txt: {mismatched}"
    assert "srclib" not in lock


def test_make_and_binder_install_with_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e \"\.\[test\]\"", makefile)
    assert "-c constraints.txt" in (ROOT / "postBuild").read_text()


def test_license_and_citation():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("BSD 3-Clause License") and "The srclib authors" in licence
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] \
        == "BSD-3-Clause"
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "BSD-3-Clause"
    paper = citation["preferred-citation"]
    assert paper["title"] == "A Deep Learning Approach to EEG Subcortical Source Localization"
    bib = (ROOT / "book" / "references.bib").read_text()
    bib_authors = re.search(r"@\w+\{buda2025,.*?author = \{(.*?)\}", bib, re.S).group(1)
    assert [a["family-names"] for a in paper["authors"]] == \
        [a.split(",")[0].strip() for a in bib_authors.split(" and ")]
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert citation["repository-code"] == config["repository"]["url"]
