# One-command entry points. Each target creates .venv and installs the project
# into it when missing (or when pyproject.toml changed).
PROFILE ?= paper
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: book test bench clean clean-data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## make book [PROFILE=paper|quick]: run every notebook with papermill, then build the HTML
book: $(VENV)/.installed
	$(PY) -m srclib.book --profile $(PROFILE)

## make test: the test suite (builds the quick profile's artifacts once, then reuses them)
test: $(VENV)/.installed
	$(PY) -m pytest

## make bench [PROFILE=paper|quick]: speed and memory benchmarks, printed as a table
bench: $(VENV)/.installed
	$(PY) benchmarks/run.py --profile $(PROFILE)

## make clean: remove the built book and executed notebooks (keeps cached data)
clean:
	rm -rf _build book/generated

## make clean-data: also remove every cached artifact (head models, training sets, models, results)
clean-data: clean
	rm -rf data/paper data/quick
