"""Training end to end on real data: the CLI, the run folder, self-describing checkpoints, resume after an
interruption, divergence, photo folders."""
import csv
import json
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import sigint_as_in_a_terminal, data_root, run_cli
from edgefashion.training.train import (TrainConfig, TrainingError, evaluate, fit, load_checkpoint,
                                        load_init_weights, model_from_checkpoint, resolve_config)
from edgefashion.training.datasets import load_data
from edgefashion.reports import TrainReport
from edgefashion.training.zoo import create_model

RUN_FILES = ["config.json", "metrics.csv", "best.pt", "last.pt", "results.json", "curves.png",
             "confusion_matrix.png"]


def test_cli_train_cnn4_fashion_mnist(shared_data, tmp_path):
    out = tmp_path / "run"
    p = run_cli("train", "--model", "cnn4", "--data", "fashion-mnist", "--epochs", "2", "--limit", "3000",
                "--out", out, "--quiet")
    assert "test accuracy" in p.stdout
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    res = TrainReport.read(out / "results.json")  # refuses a file without every key results.json must have
    assert 0.6 < res.test_accuracy <= 1.0  # 2 epochs on a 3,000-image subset of each split
    assert res.epochs_run == 2 and res.split_sizes == {"train": 3000, "val": 3000, "test": 3000}
    assert len(res.per_class_accuracy) == 10
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    again = run_cli("train", "--model", "cnn4", "--epochs", "1", "--out", out, check=False)
    assert again.returncode == 1 and "holds a run already" in again.stderr  # nothing is overwritten
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["optimizer"] == "adam" and cfg["lr"] == 1e-3 and cfg["patience"] == 5  # the seeds' recipe

    # The checkpoint rebuilds its model alone, and gives the reported test accuracy again.
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model"] == "cnn4" and ckpt["meta"]["labels"][0] == "T-shirt/top"
    model, meta = model_from_checkpoint(ckpt)
    bundle = load_data("fashion-mnist", shared_data, model="cnn4", img_size=28, in_chans=1, limit=3000)
    ev = evaluate(model, bundle.splits["test"], meta, device=torch.device("cpu"))
    assert ev["acc"] == pytest.approx(res.test_accuracy, abs=1e-9)


def _metrics(out: Path):
    return list(csv.DictReader((out / "metrics.csv").open())) if (out / "metrics.csv").exists() else []


# The child `edgefashion train`, holding still as epoch 2 begins (last.pt then holds epoch 1) until the test has
# sent its SIGINT: it blocks reading stdin, which a real Ctrl-C interrupts. Without the hold, on a loaded machine
# the whole 1-second run could end before the signal arrived (the child then exited 0).
_HOLD_AT_EPOCH_2 = """
import sys
from edgefashion.training import train
_epoch = train._train_epoch
def _held(state, epoch, progress):
    if epoch == 2:
        print("holding before epoch 2", file=sys.stderr, flush=True)
        sys.stdin.readline()
    return _epoch(state, epoch, progress)
train._train_epoch = _held
from edgefashion.cli import main
main()
"""


def _start_training(args, out: Path, hold: bool = False):
    """`edgefashion train ARGS --out OUT` in a child process whose stderr lines arrive on a queue as they are
    written: stderr is a pipe, so training prints one plain line as each epoch starts. `hold`: the child waits
    as epoch 2 begins (see _HOLD_AT_EPOCH_2)."""
    env = dict(os.environ, EDGEFASHION_DATA=str(data_root()))
    head = ["-c", _HOLD_AT_EPOCH_2] if hold else ["-m", "edgefashion"]
    proc = subprocess.Popen([sys.executable, *head, *map(str, args), "--out", str(out)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    lines: "queue.Queue[str | None]" = queue.Queue()

    def pump():
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return proc, lines, reader


def _wait_for_line(lines, prefix: str, timeout: float = 600) -> list:
    """Every stderr line up to and including the first that starts with `prefix`; fails if the child ends
    or stays silent first. Blocking on the queue, not polling with sleeps: the test acts the moment the line
    is written."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"training ended before it printed {prefix!r}:\n{''.join(seen)}")
        seen.append(line)
        if line.startswith(prefix):
            return seen


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_then_resume_reaches_the_same_result(shared_data, tmp_path, sig, code):
    # SIGTERM is what `kill`, `timeout`, `docker stop` and a cluster's preemption send: the same resumable stop.
    args = ["train", "--model", "cnn1", "--data", "fashion-mnist", "--epochs", "3", "--limit", "2000",
            "--no-early-stopping"]
    full = tmp_path / "full"
    run_cli(*args, "--quiet", "--out", full)

    out = tmp_path / "interrupted"
    proc, lines, reader = _start_training(args, out, hold=True)
    try:
        # The child holds at the start of epoch 2, after last.pt holds epoch 1: the interrupt lands inside the
        # run, never after it, however loaded the machine.
        _wait_for_line(lines, "holding before epoch 2")
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    stdout = proc.stdout.read()
    assert proc.returncode == code, stdout + "".join(iter(lines.get_nowait, None))
    assert "--resume" in stdout  # tells the user how to continue
    done = load_checkpoint(out / "last.pt")["epoch"]
    assert 1 <= done < 3
    assert not (out / "results.json").exists()

    run_cli("train", "--resume", "--out", out, "--quiet")
    a, b = _metrics(full), _metrics(out)
    assert [r["val_acc"] for r in a] == [r["val_acc"] for r in b]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    ra = json.loads((full / "results.json").read_text())
    rb = json.loads((out / "results.json").read_text())
    assert ra["test_accuracy"] == rb["test_accuracy"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_one_plain_line_per_epoch_elsewhere(monkeypatch):
    from edgefashion.meta import fashion_mnist_meta
    from edgefashion.training.datasets import Split
    from edgefashion.training.train import train_one_epoch

    cfg = resolve_config(TrainConfig(model="mlp1", epochs=2, batch_size=8))
    meta = fashion_mnist_meta("mlp1", [str(i) for i in range(10)])
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8, generator=g),
                  torch.randint(0, 10, (200,), generator=g))
    model = create_model("mlp1", num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run_epochs(stream):
        monkeypatch.setattr(sys, "stderr", stream)
        for epoch in (1, 2):
            train_one_epoch(model, split, meta, opt, cfg, epoch, device=torch.device("cpu"), progress=True)
        return stream.getvalue()

    # A log file or pipe: no carriage returns, one line as each epoch starts.
    assert run_epochs(io.StringIO()) == "epoch 1/2: training on 200 images\nepoch 2/2: training on 200 images\n"
    # A terminal keeps tqdm's bar, redrawn in place with carriage returns.
    bar = run_epochs(_Terminal())
    assert "\r" in bar and "epoch 1/2" in bar and "training on" not in bar
    # --quiet: nothing either way.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    train_one_epoch(model, split, meta, opt, cfg, 1, device=torch.device("cpu"), progress=False)
    assert sys.stderr.getvalue() == ""


def test_divergence_stops_with_clear_error_and_keeps_last_good_checkpoint(shared_data, tmp_path):
    out = tmp_path / "nan"
    cfg = TrainConfig(model="mlp2", data="fashion-mnist", data_dir=str(shared_data), optimizer="sgd",
                      lr=1e12, epochs=2, limit=2000)
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*last\.pt keeps the last good epoch \(0\)"):
        fit(cfg, out, progress=False, log=lambda *a: None)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_cli_train_seq5_on_photo_folder(shared_data, tmp_path):
    out = tmp_path / "seq5"
    run_cli("train", "--model", "seq5", "--data", "clothing-small", "--img-size", "96", "--epochs", "2",
            "--limit", "200", "--out", out, "--quiet")
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    res = TrainReport.read(out / "results.json")
    assert res.img_size == 96 and res.in_chans == 3 and len(res.labels) == 10
    assert res.labels == sorted(res.labels)
    meta = load_checkpoint(out / "best.pt")["meta"]
    assert meta["domain"] == "photo" and meta["input_size"] == 96 and meta["dataset"] == "clothing-small"


def test_eval_val_split_holds_no_training_image_after_train_seed_1(shared_data, tmp_path):
    """`train --seed 1 --val-fraction 0.3` on an unsplit folder, export, then `eval --split val|test`: eval
    carves the folder as training did (the parameters travel in the model's metadata), so it scores only images
    the model never trained on."""
    import shutil

    from edgefashion.data import SplitSpec, load_folder_dataset

    folder = tmp_path / "clothes"  # one folder per class, no train/val/test folders: every split is carved
    for cls in ("dress", "hat", "shoes"):
        (folder / cls).mkdir(parents=True)
        for f in sorted((shared_data / "clothing-small" / "train" / cls).iterdir())[:15]:
            shutil.copy(f, folder / cls / f.name)
    run, exp = tmp_path / "run", tmp_path / "export"
    run_cli("train", "--model", "cnn1", "--data", folder, "--img-size", "32", "--epochs", "1", "--seed", "1",
            "--val-fraction", "0.3", "--out", run, "--quiet")
    run_cli("export", run, "--out", exp, "--quantize", "none", "--latency-runs", "3", "--parity-images", "8")
    recorded = {"val_fraction": 0.3, "test_fraction": 0.2, "seed": 1}
    assert load_checkpoint(run / "best.pt")["meta"]["split"] == recorded
    assert json.loads(run_cli("inspect", exp / "model.onnx", "--json").stdout)["split"] == recorded

    # What training trained on: the run's recorded config through the data loader training uses.
    cfg = json.loads((run / "config.json").read_text())
    spec = SplitSpec(val_fraction=cfg["val_fraction"], seed=cfg["seed"])
    trained = {p.resolve() for p in load_folder_dataset(folder, spec).splits["train"][0]}
    assert len(trained) == json.loads((run / "results.json").read_text())["split_sizes"]["train"]

    held_out = {}
    for split in ("val", "test"):
        preds = tmp_path / f"{split}.json"
        r = json.loads(run_cli("eval", "--model", exp / "model.onnx", "--data", folder, "--split", split,
                               "--predictions", preds, "--json").stdout)
        files = {Path(f).resolve() for f in json.loads(preds.read_text())["files"]}
        assert r["split_spec"] == recorded and r["images"] == len(files) > 0
        assert not files & trained, f"eval --split {split} scored images the model trained on"
        held_out[split] = files
    assert len(trained) + len(held_out["val"]) + len(held_out["test"]) == 45
    # The defaults eval used before the parameters were recorded carve another val split, one that holds
    # training images: the check above would have caught that.
    old_val = {p.resolve() for p in load_folder_dataset(folder, SplitSpec()).splits["val"][0]}
    assert old_val & trained


def test_recipes_come_from_the_seeds():
    assert resolve_config(TrainConfig(model="cnn2")).optimizer == "sgd"
    assert resolve_config(TrainConfig(model="cnn4")).optimizer == "adam"
    assert resolve_config(TrainConfig(model="mlp4")).early_stopping is True
    assert resolve_config(TrainConfig(model="mlp2")).early_stopping is False
    c = resolve_config(TrainConfig(model="cnn4", lr=0.01, epochs=3))
    assert (c.lr, c.epochs, c.patience, c.plateau_factor) == (0.01, 3, 5, 0.3)
    with pytest.raises(ValueError, match="unknown model"):
        resolve_config(TrainConfig(model="nope"))


def test_init_weights_from_local_file(tmp_path):
    src = create_model("resnet20", num_classes=7)
    path = tmp_path / "weights.pt"
    torch.save(src.state_dict(), path)
    dst = create_model("resnet20", num_classes=10)
    rep = load_init_weights(dst, path)
    # Everything but the 7-class head is taken over.
    assert rep["skipped"] == ["fc.weight", "fc.bias"] or set(rep["skipped"]) == {k for k in src.state_dict()
                                                                                 if k.startswith(("fc", "head", "classifier"))}
    same = [k for k, v in dst.state_dict().items() if k in src.state_dict() and v.shape == src.state_dict()[k].shape]
    assert all(torch.equal(dst.state_dict()[k], src.state_dict()[k]) for k in same)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="junk.pt"):
        load_init_weights(dst, tmp_path / "junk.pt")


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(TrainingError, match="best.pt: not a readable checkpoint"):
        load_checkpoint(bad)
    torch.save({"hello": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="not an edgefashion checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    p = run_cli("train", "--model", "cnn4", "--data", tmp_path / "no-such-folder", check=False)
    assert p.returncode == 1 and "no-such-folder" in p.stderr and "Traceback" not in p.stderr


# --- mixup / CutMix ----------------------------------------------------------------------------------------------

def test_mix_batch_mixup_cutmix_and_off():
    from edgefashion.training.train import mix_batch
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).contiguous()
    y = torch.tensor([0, 1, 2, 3])
    g = torch.Generator().manual_seed(0)
    same, y2, lam = mix_batch(x, y, 0.0, 0.0, g)
    assert same is x and y2 is None and lam == 1.0
    # mixup: every pixel of image i is lam * i + (1 - lam) * (3 - i); the second labels are the reverse
    mixed, y2, lam = mix_batch(x, y, 0.4, 0.0, torch.Generator().manual_seed(1))
    assert 0 <= lam <= 1 and y2.tolist() == [3, 2, 1, 0]
    torch.testing.assert_close(mixed[:, :, 0, 0], (lam * y + (1 - lam) * y.flip(0)).float()[:, None].expand(4, 3))
    # CutMix: a box of the reversed batch pasted in; lam is exactly the share of pixels kept
    for seed in range(5):
        cut, y2, lam = mix_batch(x, y, 0.0, 1.0, torch.Generator().manual_seed(seed))
        kept = (cut[0] == 0).float().mean().item()
        assert lam == pytest.approx(kept) and y2.tolist() == [3, 2, 1, 0]
        assert set(cut[0].unique().tolist()) <= {0.0, 3.0}
    # the same generator state gives the same mix: a resumed run mixes as the first did
    a = mix_batch(x, y, 0.2, 1.0, torch.Generator().manual_seed(7))
    b = mix_batch(x, y, 0.2, 1.0, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a[0], b[0]) and a[2] == b[2]


def test_cli_train_with_cutmix_and_mixup(shared_data, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--model", "cnn1", "--data", "fashion-mnist", "--epochs", "1", "--limit", "600",
                "--mixup", "0.2", "--cutmix", "1.0", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["mixup"], cfg["cutmix"]) == (0.2, 1.0)
    r = run_cli("train", "--model", "cnn1", "--epochs", "1", "--limit", "600", "--mixup", "-1",
                "--out", str(tmp_path / "bad"), "-q", check=False)
    assert r.returncode != 0 and "mixup must be >= 0" in r.stderr


def test_bf16_autocast_on_cpu_only_when_asked():
    from edgefashion.training.train import _autocast
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with _autocast(torch.device("cpu"), True):  # --amp means CUDA: the CPU stays float32 unless --bf16
        assert lin(x).dtype == torch.float32
    with _autocast(torch.device("cpu"), True, cpu_bf16=True):
        assert lin(x).dtype == torch.bfloat16


@pytest.mark.skipif(not __import__("edgefashion.training.train", fromlist=["x"]).cpu_has_native_bf16(),
                    reason="this CPU has no native bfloat16")
def test_cli_train_bf16_learns_and_scores_in_float32(shared_data, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--model", "cnn4", "--data", "fashion-mnist", "--epochs", "2", "--limit", "3000",
                "--bf16", "--out", str(out), "-q")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["cpu_bf16"] is True
    res = TrainReport.read(out / "results.json")
    assert res.test_accuracy > 0.6, r.stdout  # the same bar as the float32 run of the same size
    model, meta = model_from_checkpoint(load_checkpoint(out / "best.pt"))
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32: export is unchanged


def test_bf16_refused_where_the_cpu_lacks_it(monkeypatch):
    import edgefashion.training.train as train_mod
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bfloat16"):
        resolve_config(TrainConfig(model="cnn4", data="fashion-mnist", cpu_bf16=True))
    with pytest.raises(ValueError, match="--bf16 and --qat"):
        monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: True)
        resolve_config(TrainConfig(model="cnn4", data="fashion-mnist", cpu_bf16=True, qat=True,
                                   init_weights="x.pt"))
