"""srclib: the library behind the book reproducing "A Deep Learning Approach to
EEG Subcortical Source Localization" (Buda, Gambosi, Toschi, Astolfi).

One module per methods section of the paper:

* :mod:`srclib.headmodel` - head model, mixed source space, forward operators (II.A)
* :mod:`srclib.simulation` - the simulator and its data sets (II.B)
* :mod:`srclib.network` - the LSTM: training and inference (II.C)
* :mod:`srclib.solvers` - the nine classical inverse solvers (II.D)
* :mod:`srclib.metrics` - the six metrics and the references (II.E)
* :mod:`srclib.results` - the test regions A-D (III)

and :mod:`srclib.config` (profiles), :mod:`srclib.cache` (parameter-keyed,
atomic caching), :mod:`srclib.viz` (figures), :mod:`srclib.book` (the builder).
"""

__version__ = "0.1.0"
