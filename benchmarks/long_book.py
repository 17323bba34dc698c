"""Record what a whole ``make book TRAINING=long`` build found on regions A-D.

Run it after that build, on the same machine. It reads the long
configuration's stored region results (``data/<profile>/results_long/``) and
its networks (``model_long*/``), scores each network on the same 2000 fresh
held-out windows at 10 dB as ``network_grid.py``, and appends one JSON line
to ``--out``:

* ``regions``: for each region, the 95 % bootstrap interval of every method
  and metric (over recordings, and over trainings for the LSTM, as the
  region pages compute them), each training's median of every metric, and
  the number of recordings and windows;
* ``networks``: for each training, its card (steps, seconds, kept epoch,
  validation criterion, device, threads) and its held-out medians.

The network chapter rebuilds the verdicts from these intervals with
:func:`srclib.results.interval_verdicts`, the function the summary page
applies to the build's own results. Nothing is trained or simulated here
except the held-out windows; a missing result raises the error that names
the command that builds it.

Example::

    make book TRAINING=long
    python benchmarks/long_book.py --out benchmarks/long_book_cpu.jsonl
"""

import datetime
import json

import long_regions
import network_grid
from srclib import network, regions, results
from srclib.headmodel import load_head_model


def region_record(profile, region):
    """Intervals, per-training medians and sizes of one region's stored results."""
    run = results.load_region(profile, region)
    return dict(intervals=run["intervals"].reset_index().to_dict("records"),
                training_medians=results.training_medians(run["per_window"])
                .reset_index().to_dict("records"),
                n_recordings=run["n_recordings"], n_windows=run["n_windows"])


def network_record(model, held, meta, positions):
    """A network's training card (without its per-epoch history) and held-out medians."""
    card = {k: v for k, v in model.card["training"].items() if k != "history"}
    return dict(training=card, device=model.card["hardware"]["device"],
                torch_threads=model.card["hardware"]["torch_threads"],
                **network_grid.heldout_medians(model, held, meta, positions))


def main(argv=None):
    args = long_regions.long_arguments(argv, __doc__.splitlines()[0], "long_book.jsonl")
    head = load_head_model(args.profile, progress=False)
    report = dict(profile=args.profile, date=datetime.date.today().isoformat(),
                  regions={r: region_record(args.profile, r) for r in regions.REGIONS})
    held, meta = network_grid.heldout_set(head)
    report["networks"] = [network_record(m, held, meta, head.positions)
                          for m in network.load_models(args.profile, head=head, progress=False)]
    for k, net in enumerate(report["networks"]):
        print(k, json.dumps({key: v for key, v in net.items() if key != "training"}), flush=True)
    with open(args.out, "a") as fid:
        fid.write(json.dumps(report, default=str) + "\n")


if __name__ == "__main__":
    main()
