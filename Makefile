# One-command entry points. Each target creates .venv and installs the project
# into it when missing (or when pyproject.toml or constraints.txt changed), every
# package held to the versions of constraints.txt.
PROFILE ?= paper
# TRAINING=long (any target): the networks' training configuration (srclib.config.TRAININGS)
ifdef TRAINING
export SRCLIB_TRAINING := $(TRAINING)
endif
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: book region sweep test bench clean clean-data

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## make book [PROFILE=paper|quick] [TRAINING=standard|long]: run every notebook with
## papermill, then build the HTML (TRAINING=long: 4x the optimiser steps on 2.5x the windows, for a GPU)
book: $(VENV)/.installed
	$(PY) -m srclib.book --profile $(PROFILE)

## make region REGION=D [SNR_DB=0] [SEED=3] [RADIUS_MM=20] [DURATION_S=60] [PROFILE=quick]:
## run the region page once with other settings; the executed notebook goes to data/<profile>/runs/
REGION_ARGS = $(if $(SNR_DB),--snr-db $(SNR_DB)) $(if $(SEED),--seed $(SEED)) \
	$(if $(RADIUS_MM),--radius-mm $(RADIUS_MM)) $(if $(DURATION_S),--duration-s $(DURATION_S)) \
	$(if $(COMPARTMENT),--compartment $(COMPARTMENT)) $(if $(CENTER_MNI),--center-mni "$(CENTER_MNI)")
region: $(VENV)/.installed
	@test -n "$(REGION)" || { echo "usage: make region REGION=D [SNR_DB=0] [SEED=3] ..."; exit 2; }
	$(PY) -m srclib.book --profile $(PROFILE) --region "$(REGION)" $(REGION_ARGS)

## make sweep [PROFILE=quick] [N_REGIONS=20] [SCHEDULER=tcp://host:8786]: random regions
## scored with dask.distributed (a LocalCluster by default); resumes where it stopped
N_REGIONS ?= 20
sweep: $(VENV)/.installed
	$(PY) -m srclib.sweep --profile $(PROFILE) --n-regions $(N_REGIONS) \
		$(if $(SCHEDULER),--scheduler $(SCHEDULER))

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
