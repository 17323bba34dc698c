"""srclib: the library behind the book reproducing "A Deep Learning Approach to
EEG Subcortical Source Localization" (Buda, Gambosi, Toschi, Astolfi).

One module per methods section of the paper:

* :mod:`srclib.headmodel` - head model, mixed source space, forward operators (II.A)
* :mod:`srclib.simulation` - the paper's simulator (II.B)
* :mod:`srclib.sampler` - the training set, simulated in batches and cached (II.B)
* :mod:`srclib.network` - the LSTM: training, windows, inference (II.C)
* :mod:`srclib.solvers` - the nine classical inverse solvers (II.D)
* :mod:`srclib.metrics` - the six metrics and the references (II.E)
* :mod:`srclib.regions` - the test regions A-D and their recordings (III)
* :mod:`srclib.results` - one region's tables, intervals and maps; the verdict (III)

and, beyond the paper, :mod:`srclib.sweep` (many regions on Dask) and
:mod:`srclib.own_eeg` (EEG files); :mod:`srclib.config` (profiles),
:mod:`srclib.check` (input checks), :mod:`srclib.cache` (parameter-keyed,
atomic caching), :mod:`srclib.workers` (worker processes that end with the
build), :mod:`srclib.viz` (figures), :mod:`srclib.book` (the builder).
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# PyTorch's OpenMP threads spin while they wait for each other unless told to
# sleep, and OpenMP reads the policy once, when torch loads: it is set here,
# on the first import of srclib, so that it holds whichever module loads torch
# (and in child processes, such as the notebooks the builder runs). A user's
# own OMP_WAIT_POLICY is kept. See srclib.network.choose_threads.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
