"""Speed and memory benchmarks (``make bench``): each prints its numbers.

Every benchmark runs in a fresh Python process; its wall time is measured
inside it and its peak memory from outside, as the largest sum of resident
memory over the process and its children (sampled every 50 ms; memory that
forked workers share with their parent is counted once per process, so the
figure is an upper bound).

Usage::

    python benchmarks/run.py [--profile paper] [--only NAME ...] [--list]

Benchmarks that build artifacts (the head model, the training) do it in a
temporary data folder, so they measure a build from nothing and leave the
book's caches alone; the others read the profile's cached artifacts and build
them first if needed.
"""

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil

ROOT = Path(__file__).resolve().parent.parent

BENCHMARKS = {}


def benchmark(name, target, fresh_data=False, inputs=()):
    """Register a benchmark: ``code`` prints one JSON line of results.

    With ``fresh_data`` it runs on an empty data folder, into which the
    profile's cached ``inputs`` (folder names such as ``"headmodel"``) are
    linked, so that only what the benchmark measures is built.
    """

    def wrap(code):
        BENCHMARKS[name] = dict(code=textwrap.dedent(code), target=target, fresh_data=fresh_data,
                                inputs=inputs)
        return code

    return wrap


benchmark("headmodel_build", "<= 180 s", fresh_data=True)("""
    import time
    from srclib.headmodel import load_head_model
    t0 = time.perf_counter()
    head = load_head_model(PROFILE, progress=False)
    out(seconds=time.perf_counter() - t0, n_dipoles=head.n_dipoles,
        n_cortical=int(head.is_cortical.sum()), n_subcortical=int((~head.is_cortical).sum()),
        openmeeg_s=head.provenance["inverse"]["seconds"],
        mne_bem_s=head.provenance["simulation"]["seconds"])
""")

benchmark("headmodel_load", "<= 5 s")("""
    import time
    from srclib.headmodel import load_head_model
    load_head_model(PROFILE, progress=False)  # build first if needed (not timed)
    t0 = time.perf_counter()
    head = load_head_model(PROFILE, progress=False)
    head.leadfield("simulation"), head.leadfield("inverse")
    out(seconds=time.perf_counter() - t0)
""")

benchmark("training_set", ">= 500 windows/s, <= 4 GB")("""
    import time
    import numpy as np
    from srclib import config, sampler, simulation
    from srclib.headmodel import load_head_model
    head = load_head_model(PROFILE, progress=False)
    p = config.get_params(PROFILE, "simulation")
    t0 = time.perf_counter()
    X, Y = sampler.training_set(head, p["n_train"], np.random.default_rng(0),
                                batch=p["windows_per_batch"], progress=False)
    seconds = time.perf_counter() - t0
    # The cost of the scalp projection alone, for the same number of windows,
    # if every dipole's series were projected (64 x N by N x 50 per window).
    g = simulation.dipole_gains(head, [0, 0, 1.0]).astype(np.float32)
    s = np.random.default_rng(1).standard_normal((head.n_dipoles, 50 * 100), np.float32)
    t1 = time.perf_counter()
    for _ in range(len(X) // 100):
        g @ s
    projection = time.perf_counter() - t1
    c = simulation.grow_region(head, 0, 30.0)
    rng = np.random.default_rng(2)
    t2 = time.perf_counter()
    for _ in range(20):
        simulation.simulate(head, c, 0, 50, 10.0, rng)
    literal = (time.perf_counter() - t2) / 20
    out(windows=len(X), seconds=seconds, windows_per_s=len(X) / seconds,
        projection_only_s=projection, literal_simulate_s_per_window=literal)
""")

benchmark("region_recording", "<= 30 s")("""
    import time
    from srclib.headmodel import load_head_model
    from srclib import config, regions
    head = load_head_model(PROFILE, progress=False)
    duration = config.get_params(PROFILE, "simulation")["region_duration_s"]
    t0 = time.perf_counter()
    eeg, c, center = regions.region_recording(head, "D", duration_s=duration, seed=1)
    out(seconds=time.perf_counter() - t0, samples=eeg.shape[1])
""")

benchmark("solvers", "<= 60 s, <= 6 GB")("""
    import time
    from srclib.headmodel import load_head_model
    from srclib import config, regions, solvers
    head = load_head_model(PROFILE, progress=False)
    duration = config.get_params(PROFILE, "simulation")["region_duration_s"]
    eeg, c, center = regions.region_recording(head, "B", duration_s=duration, seed=1)
    times = {}
    t0 = time.perf_counter()
    for method in solvers.SOLVERS:
        t = time.perf_counter()
        solvers.activation_maps(head, eeg, method)
        times[method] = round(time.perf_counter() - t, 2)
    out(seconds=time.perf_counter() - t0, samples=eeg.shape[1], per_solver_s=times)
""")

benchmark("solver_maps", "shared <= 0.6 x one by one")("""
    # The nine solvers' maps of one 12 s recording (a sweep task) on one
    # thread: one kernel at a time in blocks of 40 windows (the former way),
    # then together, kernels that are another scaled per dipole sharing its
    # source estimates, in blocks of 4 windows (and of 40, for the block size
    # alone).
    import time
    import numpy as np
    from threadpoolctl import threadpool_limits
    from srclib import results, simulation, solvers
    from srclib.headmodel import load_head_model
    head = load_head_model(PROFILE, progress=False)
    kernels = results.solver_kernels(head, solvers.SOLVERS)
    smoothing = solvers.smoothing_matrix(head)
    center = int(np.flatnonzero(~head.is_cortical)[0])
    c = simulation.grow_region(head, center, 30.0)
    eeg = simulation.simulate(head, c, center, 3000, 10.0, np.random.default_rng(0))
    with threadpool_limits(1):
        t0 = time.perf_counter()
        apart = {m: solvers.maps_from_kernel(k, eeg, smoothing, block=40)
                 for m, k in kernels.items()}
        t1 = time.perf_counter()
        together = solvers.maps_from_kernels(kernels, eeg, smoothing)
        t2 = time.perf_counter()
        solvers.maps_from_kernels(kernels, eeg, smoothing, block=40)
        t3 = time.perf_counter()
    groups = sorted({of for of, _ in solvers.scaled_kernels(kernels).values()})
    out(one_by_one_s=t1 - t0, shared_s=t2 - t1, ratio=(t2 - t1) / (t1 - t0),
        shared_blocks_of_40_s=t3 - t2,
        products=len(groups), max_abs_difference=max(
            float(np.abs(apart[m] - together[m]).max()) for m in kernels))
""")

benchmark("unseen_forwards", "<= 4 min", fresh_data=True, inputs=("headmodel",))("""
    # The generalisation chapter's five unseen head models from the cached
    # head model, built as the book builds them: two at a time, each in a
    # process of its own, the two BEM solutions (one per skull conductivity)
    # side by side. Each build's own time is read from its provenance.
    import time
    from srclib import cache, config, headmodel
    t0 = time.perf_counter()
    headmodel.build_unseen_forwards(PROFILE, n_jobs=2, progress=False)
    seconds = time.perf_counter() - t0
    each = {folder.name: cache.read_provenance(folder)["build_seconds"]
            for folder in sorted((config.profile_dir(PROFILE) / "unseen").iterdir())
            if folder.is_dir()}
    out(seconds=seconds, build_s=each)
""")

benchmark("network_inference", "<= 2 ms per window")("""
    import time
    import numpy as np
    from srclib import network
    model = network.train_model(PROFILE, progress=False)  # loads it; trains only if missing
    x = np.random.default_rng(0).standard_normal((2048, 64, 50)).astype(np.float32)
    network.predict(model, x[:64])
    t0 = time.perf_counter()
    network.predict(model, x)
    out(ms_per_window=1000 * (time.perf_counter() - t0) / len(x),
        parameters=model.n_parameters)
""")

benchmark("network_training", "<= 15 min", fresh_data=True, inputs=("headmodel", "training"))("""
    import time
    from srclib import network
    from srclib.headmodel import load_head_model
    from srclib.sampler import build_training_set
    head = load_head_model(PROFILE, progress=False)
    build_training_set(PROFILE, head, progress=False)
    t0 = time.perf_counter()
    model = network.train_model(PROFILE, head, progress=False)
    tr = model.card["training"]
    out(seconds=time.perf_counter() - t0, epochs=tr["epochs"], best_epoch=tr["best_epoch"],
        seconds_per_epoch=tr["seconds"] / tr["epochs"], best_val_loss=tr["best_val_loss"],
        device=model.card["hardware"]["device"])
""")

benchmark("training_memory", "<= 6 GB")("""
    # A training's memory: the profile's training set loaded as the book's
    # training loads it (sparse targets, densified per batch), the network,
    # AdamW's state and one validation pass over the held-out windows. 50
    # optimiser steps stand for the whole training, whose memory does not
    # grow with its steps. SRCLIB_TRAINING=long measures the long configuration.
    import time
    import torch
    from srclib import config, network
    from srclib.headmodel import load_head_model
    from srclib.sampler import load_training_set
    head = load_head_model(PROFILE, progress=False)
    X, Y, _ = load_training_set(PROFILE, head, sparse_targets=True, progress=False)
    p = config.get_params(PROFILE, "network")
    torch.manual_seed(p["seed"])
    model = network.SourceLSTM.from_params(head.n_dipoles, p)
    t0 = time.perf_counter()
    network.train(model, X, Y, n_steps=50, batch_size=p["batch_size"],
                  validation_fraction=p["validation_fraction"], seed=p["seed"],
                  positions=head.positions, is_cortical=head.is_cortical, progress=False)
    out(training=config.training_name(), windows=len(X), seconds=time.perf_counter() - t0)
""")

benchmark("training_contention", "beside a busy process <= 2x alone")("""
    # Two epochs of the quick profile's network on 1000 synthetic windows,
    # alone and beside a process that keeps one core busy, with srclib's
    # threading policy (network.choose_threads) and with PyTorch's defaults
    # (torch loaded first, so its OpenMP threads spin; train() undecorated).
    import os, subprocess, sys
    child = '''
    import json, subprocess, sys, time
    policy = sys.argv[1]
    if policy == "pytorch_default":
        import torch  # loaded before srclib: OpenMP's default (spinning) wait policy
    from srclib import config, network
    import numpy as np
    import torch
    train = network.train.__wrapped__ if policy == "pytorch_default" else network.train
    p = config.get_params("quick", "network")
    rng = np.random.default_rng(0)
    n_dipoles = 726
    X = rng.standard_normal((1000, 64, 50)).astype(np.float32)
    Y = rng.random((1000, n_dipoles)).astype(np.float32)
    def seconds(n=len(X), epochs=2):
        torch.manual_seed(0)
        model = network.SourceLSTM(n_dipoles, p["embed_dim"], p["hidden_dim"], p["fc_dims"],
                                   dropout=p["dropout"], out_rank=p.get("out_rank"))
        t0 = time.perf_counter()
        steps_per_epoch = -(-int(0.9 * n) // p["batch_size"])
        train(model, X[:n], Y[:n], n_steps=epochs * steps_per_epoch, batch_size=p["batch_size"],
              seed=0, progress=False)
        return time.perf_counter() - t0
    seconds(100, 1)  # warm-up: one-time initialisation is not timed
    alone = seconds()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        threads = network.choose_threads() if policy == "srclib" else torch.get_num_threads()
        beside = seconds()
    finally:
        busy.kill()
        busy.wait()
    print(json.dumps(dict(alone=alone, busy=beside, threads=threads)))
    '''
    result = dict(load_average=os.getloadavg()[0])
    for policy in ("srclib", "pytorch_default"):
        run = subprocess.run([sys.executable, "-c", child, policy], capture_output=True,
                             text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        result.update({f"{policy}_alone_s": r["alone"], f"{policy}_busy_s": r["busy"],
                       f"{policy}_slowdown": r["busy"] / r["alone"],
                       f"{policy}_threads": r["threads"]})
    out(**result)
""")

benchmark("training_side_by_side", "side by side >= 1.3x the steps/s of one alone")("""
    # Optimiser steps of the profile's network on synthetic windows: one
    # training on every core, then as many trainings side by side as
    # network.training_threads plans (each on its share of the cores), the
    # way network.train_models runs them on a CPU.
    import json, subprocess, sys
    from srclib import config, network
    from srclib.headmodel import load_head_model
    n_dipoles = load_head_model(PROFILE, progress=False).n_dipoles
    child = '''
    import json, sys, time
    import srclib
    import torch
    from srclib import config, network
    profile, n_dipoles, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    p = config.get_params(profile, "network")
    torch.manual_seed(0)
    model = network.SourceLSTM(n_dipoles, p["embed_dim"], p["hidden_dim"], p["fc_dims"],
                               dropout=p["dropout"], out_rank=p.get("out_rank"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    X = torch.randn(p["batch_size"], 64, 50)
    Y = torch.rand(p["batch_size"], n_dipoles)
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(model(X), Y).backward()
        opt.step()
    for _ in range(5):
        step()
    t0, n = time.perf_counter(), 40
    for _ in range(n):
        step()
    print(json.dumps(dict(s_per_step=(time.perf_counter() - t0) / n)))
    '''
    def start(threads):
        return subprocess.Popen([sys.executable, "-c", child, PROFILE, str(n_dipoles),
                                 str(threads)], stdout=subprocess.PIPE, text=True)
    def seconds(proc):
        text, _ = proc.communicate()
        return json.loads(text.strip().splitlines()[-1])["s_per_step"]
    cores = network.choose_threads()
    plan = network.training_threads(config.get_params(PROFILE, "network")["n_networks"])
    alone = seconds(start(cores))
    each = [seconds(p) for p in [start(t) for t in plan[0].values()]]
    out(cores=cores, alone_s_per_step=alone, side_by_side=len(each),
        side_by_side_s_per_step=max(each), throughput_gain=len(each) * alone / max(each))
""")

_PRELUDE = """
import json, sys
PROFILE = sys.argv[1]
def out(**kw):
    print("BENCH " + json.dumps(kw), flush=True)
"""


def run(name, profile):
    """Run one benchmark in a fresh process; return its results and peak memory."""
    spec = BENCHMARKS[name]
    env = dict(os.environ)
    tmp = None
    if spec["fresh_data"]:
        tmp = tempfile.TemporaryDirectory(prefix="bench-")
        env["SRCLIB_DATA_DIR"] = tmp.name
        dest = Path(tmp.name) / profile
        dest.mkdir(parents=True)
        for part in spec["inputs"]:  # build only what is measured, on the cached inputs
            if (ROOT / "data" / profile / part).exists():
                os.symlink(ROOT / "data" / profile / part, dest / part)
    proc = subprocess.Popen([sys.executable, "-c", _PRELUDE + spec["code"], profile],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [ps] + ps.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    stdout = proc.stdout.read()
    if tmp is not None:
        tmp.cleanup()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        return dict(error=f"exit code {proc.returncode}")
    result = json.loads(lines[-1][6:])
    result["peak_memory_gb"] = peak / 1e9
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description="srclib benchmarks")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for name, spec in BENCHMARKS.items():
            print(f"{name:20s} target {spec['target']}")
        return
    names = args.only or [n for n in BENCHMARKS if n not in args.skip]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {list(BENCHMARKS)}")
    print(f"profile {args.profile}, {os.cpu_count()} CPU(s)")
    for name in names:
        print(f"\n== {name} (target {BENCHMARKS[name]['target']})", flush=True)
        result = run(name, args.profile)
        for key, value in result.items():
            if isinstance(value, float):
                value = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
            print(f"   {key:32s} {value}")


if __name__ == "__main__":
    main()
