"""DistributedDataParallel through torchrun: 2 processes with gloo on this CPU."""
import json
import os
import subprocess
import sys

import torch

from conftest import data_root
from edgefashion.training.train import load_checkpoint, model_from_checkpoint
from edgefashion.training.distributed import Dist, shard


def test_shards_cover_every_index_once_per_epoch():
    idx = torch.randperm(11)
    parts = [shard(idx, Dist(rank=r, world=3), pad=True) for r in range(3)]
    assert {len(p) for p in parts} == {4}  # same number of steps on every rank
    assert set(torch.cat(parts).tolist()) == set(range(11))
    exact = [shard(idx, Dist(rank=r, world=3), pad=False) for r in range(3)]
    assert sorted(torch.cat(exact).tolist()) == list(range(11))  # evaluation: no repeats


def test_torchrun_two_processes_gloo(shared_data, tmp_path):
    env = dict(os.environ, EDGEFASHION_DATA=str(data_root()), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgefashion", "train", "--model", "cnn4", "--data", "fashion-mnist", "--epochs", "2",
           "--limit", "3000", "--quiet"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    # Only rank 0 writes: one run folder, one log.
    assert sorted(os.listdir(tmp_path / "runs")) == ["cnn4-fashion-mnist"]
    assert p.stdout.count("test accuracy") == 1
    run = tmp_path / "runs" / "cnn4-fashion-mnist"
    res = json.loads((run / "results.json").read_text())
    assert res["world_size"] == 2 and res["epochs_run"] == 2
    assert res["test_images"] == 3000  # reduced over both ranks: the whole test subset
    assert res["test_accuracy"] > 0.6
    # The checkpoint loads in a single process.
    model, meta = model_from_checkpoint(load_checkpoint(run / "best.pt"))
    assert meta.labels[1] == "Trouser"
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
