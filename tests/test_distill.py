"""`train --teacher`: knowledge distillation from a trained checkpoint (an ensemble's too).

The loss (the teacher's answers replace the labels at weight 1, and a student that answers as its teacher has
nothing to learn), then the real CLI on Fashion-MNIST subsets: distilling, resuming, and the refusals."""
import json

import pytest
import torch

from conftest import run_cli
from edgefashion.meta import photo_meta
from edgefashion.training.distill import kd_loss
from edgefashion.training.train import TrainConfig, batch_loss, load_checkpoint, resolve_config, save_checkpoint


def test_kd_loss_is_zero_only_where_the_student_answers_as_its_teacher():
    torch.manual_seed(0)
    t = torch.randn(6, 10)
    assert kd_loss(t.clone(), t, 1.0).abs().max() < 1e-6
    assert (kd_loss(torch.randn(6, 10), t, 1.0) > 0).all()
    # T^2 scaling: at a high temperature the loss of a small logit gap does not vanish as 1/T^2 would.
    s = t + 0.1 * torch.randn(6, 10)
    assert kd_loss(s, t, 4.0).mean() > 0.3 * kd_loss(s, t, 1.0).mean()


def _batch(n=16):
    meta = photo_meta("x", [str(i) for i in range(10)], 16)
    xb = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return meta, xb, torch.arange(n) % 10


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))


@pytest.mark.parametrize("empty_frames", [0.0, 0.5])
def test_distill_weight_one_learns_the_teacher_not_the_labels(empty_frames):
    meta, xb, yb = _batch()
    cfg = TrainConfig(model="x", augment="camera" if empty_frames else "none", empty_frames=empty_frames,
                      empty_weight=0.5, mixup=0.0, cutmix=0.0, label_smoothing=0.0, distill_weight=1.0,
                      distill_temperature=2.0)
    student, teacher = _net(0), _net(1)

    def loss(model, labels, teach):
        return float(batch_loss(model, xb, labels, meta, cfg, torch.Generator().manual_seed(5), teacher=teach)[0].detach())
    wrong = (yb + 3) % 10
    # At weight 1 the labels do not enter the garment rows' loss at all.
    if not empty_frames:
        assert loss(student, yb, teacher) == pytest.approx(loss(student, wrong, teacher), rel=1e-6)
    else:
        # Empty rows keep their own loss (uniform target), so only they count for a student that is its teacher.
        cfg_no_empty_loss = TrainConfig(**{**cfg.__dict__, "empty_weight": 0.0})
        same = float(batch_loss(teacher, xb, yb, meta, cfg_no_empty_loss, torch.Generator().manual_seed(5),
                                teacher=teacher)[0].detach())
        assert abs(same) < 1e-5
    # A student identical to its teacher has nothing left to learn from it; another one has.
    if not empty_frames:
        assert abs(loss(teacher, yb, teacher)) < 1e-5
    assert loss(student, yb, teacher) > 0.05
    # Weight 0 is plain training: the teacher changes nothing.
    cfg0 = TrainConfig(**{**cfg.__dict__, "distill_weight": 0.0})
    plain = batch_loss(student, xb, yb, meta, cfg0, torch.Generator().manual_seed(5))[0]
    taught = batch_loss(student, xb, yb, meta, cfg0, torch.Generator().manual_seed(5), teacher=teacher)[0]
    assert float(plain.detach()) == pytest.approx(float(taught.detach()), rel=1e-6)


def test_distill_options_are_checked():
    for bad in ({"distill_weight": 1.5}, {"distill_weight": -0.1}, {"distill_temperature": 0.0}):
        with pytest.raises(ValueError, match="distill_"):
            resolve_config(TrainConfig(model="cnn4", **bad))


def test_train_teacher_cli_distils_resumes_and_refuses_what_cannot_teach(tmp_path, shared_data):
    common = ("--model", "cnn4", "--data", "fashion-mnist", "--data-dir", shared_data, "--limit", "900", "-q")
    teacher = tmp_path / "teacher"
    run_cli("train", *common, "--epochs", "2", "--out", teacher)
    student = tmp_path / "student"
    p = run_cli("train", *common, "--epochs", "1", "--seed", "1", "--teacher", teacher, "--distill-weight", "0.8",
                "--distill-temperature", "2", "--out", student)
    assert "distilling from" in p.stdout + p.stderr
    ckpt = load_checkpoint(student / "last.pt")
    assert ckpt["config"]["teacher"] == str(teacher) and ckpt["config"]["distill_weight"] == 0.8
    assert ckpt["teacher"]["file"].endswith("best.pt") and len(ckpt["teacher"]["sha256"]) == 64
    assert json.loads((student / "results.json").read_text())["test_accuracy"] > 0.5
    # Resumed, it learns from the same teacher for its remaining epochs.
    run_cli("train", "--resume", "--out", student, "--epochs", "2", "-q")
    assert load_checkpoint(student / "last.pt")["epoch"] == 2
    # Another file in the teacher's place: the rest of the run would learn from another model.
    changed = load_checkpoint(teacher / "best.pt")
    changed["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in changed["state_dict"].items()}
    save_checkpoint(teacher / "best.pt", changed)
    bad = run_cli("train", "--resume", "--out", student, "--epochs", "3", "-q", check=False)
    assert bad.returncode != 0 and "the file changed since this run started" in bad.stderr
    assert str(teacher / "best.pt") in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert load_checkpoint(student / "last.pt")["epoch"] == 2  # nothing written is lost
    # A teacher that reads another input is refused before anything trains.
    other = run_cli("train", *common, "--epochs", "1", "--img-size", "32", "--teacher", teacher,
                    "--out", tmp_path / "other", check=False)
    assert other.returncode != 0 and "input_size 28 differs from this run's 32" in other.stderr
