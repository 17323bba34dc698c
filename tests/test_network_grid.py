"""benchmarks/network_grid.py records one line per run and resumes a file it wrote."""

import json
from pathlib import Path
import sys

import numpy as np

from srclib import config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import network_grid as grid  # noqa: E402  (a script, not a module of srclib)


def test_a_grid_records_its_runs_and_a_resumed_grid_adds_none(head, tmp_path, capsys):
    out = tmp_path / "grid.jsonl"
    argv = ["--profile", "quick", "--grid", "smoke", "--n-train", "200", "--n-heldout", "40",
            "--n-jobs", "1", "--out", str(out)]
    grid.main(argv)
    lines = out.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["name"] for r in rows] == [c["name"] for c in grid.GRIDS["smoke"]]
    params = config.get_params("quick", "network")
    for row, cfg in zip(rows, grid.GRIDS["smoke"]):
        assert row["steps"] == cfg["n_steps"]
        assert row["n_train"] == cfg["n_train"]
        assert row["learning_rate"] == params["learning_rate"]
        assert row["seed"] == params["seed"] and row["prior_bias"] is True
        assert len(row["val_by_epoch"]) == row["epochs"] >= row["best_epoch"] >= 1
        for key in ("heldout_cortex_r20_mm", "heldout_deep_all_mm"):
            assert np.isfinite(row[key]) and row[key] >= 0
    grid.main(argv + ["--resume"])
    assert out.read_text().splitlines() == lines
    assert capsys.readouterr().out.count("resume: ") == len(lines)
