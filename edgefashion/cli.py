"""The `edgefashion` command. Each command imports its backend inside the function, so `--help` and the
runtime commands never import torch."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Callable

import click

from . import __version__
from .meta import LOCATE_MARGIN
from .names import CLOTHING_SMALL, DATASETS, EVAL_SPLITS, FASHION_MNIST, TEST

TRAIN_EXTRA_HINT = 'this command needs the training extra: pip install "edgefashion[train]"'


def _need_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.ClickException(TRAIN_EXTRA_HINT) from None


def _user_errors():
    """Errors that are the user's input, not our bug: shown as one line, exit status 1."""
    from .data import DataError
    from .meta import MetaError
    errors: tuple = (DataError, MetaError, FileNotFoundError)
    return errors


def _runtime_errors():
    from .meta import MetaError
    from .runtime.classifier import ModelError
    from .runtime.sources import SourceError
    return (ModelError, MetaError, SourceError, ValueError, *_user_errors())


def _training_errors():
    from .training.train import TrainingError
    return (TrainingError, ValueError, *_user_errors())


def _export_errors():
    from .runtime.classifier import ModelError
    from .training.export import ExportError
    from .training.quantize import QuantizeError
    return (ExportError, QuantizeError, ModelError, *_training_errors())


def _emulation_errors():
    from .runtime.emulate import ArmError
    return (ArmError,)


def _fails_with_message(errors: Callable[[], tuple], *, interrupt: bool = False):
    """A command's error handling: an exception of `errors()` ends it with its one-line message and exit
    status 1 (no traceback: the user's input, not our bug). The classes are looked up only when something
    is raised, so a runtime command never imports the training half. With `interrupt`, Ctrl-C exits 130
    (SIGTERM in training 143) quietly: what the work had saved stays (a run's last.pt says how to resume)."""
    def decorate(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt as e:
                if interrupt:
                    # 130 for Ctrl-C; training's SIGTERM carries its own (143), read off the instance so
                    # that the runtime never imports the training half.
                    sys.exit(getattr(e, "exit_code", 130))
                raise
            except click.ClickException:
                raise  # a message already, e.g. that torch is missing, which errors() may need to import
            except Exception as e:
                if isinstance(e, errors()):
                    raise click.ClickException(str(e)) from None
                raise
        return run
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgefashion")
def cli():
    """edgefashion: train clothing classifiers, export them to INT8 ONNX, run them on a camera.

    Data sets are read from --data-dir, else $EDGEFASHION_DATA, else ~/.cache/edgefashion.
    """


@cli.command()
@click.option("--domain", type=click.Choice(["fashion-mnist", "photo"]), default=None, help="Only this family.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@_fails_with_message(_user_errors)
def zoo(domain, as_json):
    """List the model zoo: name, params, MFLOPs at the default input, default input, source."""
    _need_torch()
    from .training.zoo import count_params, create_model, get_entry, list_models, model_mflops

    rows = []
    for name in list_models(domain):
        e = get_entry(name)
        # 10 classes, as both bundled data sets have.
        m = create_model(name, num_classes=10)
        params, mflops = count_params(m), model_mflops(m, e.in_chans, e.img_size)
        rows.append({"name": name, "params": params, "mflops": round(mflops, 2),
                     "input": f"{e.in_chans}x{e.img_size}x{e.img_size}", "domain": e.domain, "source": e.source})
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    click.echo(f"{'name':<18}{'params':>12}{'MFLOPs':>10}  {'input':<12}source")
    for r in rows:
        click.echo(f"{r['name']:<18}{r['params']:>12,}{r['mflops']:>10.2f}  {r['input']:<12}{r['source']}")


@cli.command()
@click.option("--model", "-m", default="cnn4", show_default=True, help="Zoo model name (see `edgefashion zoo`).")
@click.option("--data", "-d", default=FASHION_MNIST, show_default=True,
              help="fashion-mnist, clothing-small, or a folder with one sub-folder per class (split or not).")
@click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else ~/.cache/edgefashion].")
@click.option("--epochs", type=int, default=None, help="Maximum epochs [default: the model's recipe].")
@click.option("--batch-size", "-b", type=int, default=None, help="[default: the model's recipe]")
@click.option("--lr", type=float, default=None, help="Learning rate [default: the model's recipe].")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]), default=None)
@click.option("--momentum", type=float, default=None)
@click.option("--weight-decay", type=float, default=None)
@click.option("--scheduler", type=click.Choice(["plateau", "cosine", "none"]), default=None,
              help="plateau: x0.3 after 3 epochs without val gain (the seeds'); cosine: per-step cosine decay.")
@click.option("--warmup-epochs", type=int, default=None)
@click.option("--early-stopping/--no-early-stopping", default=None, help="Stop after --patience epochs without val gain, keeping the best weights.")
@click.option("--patience", type=int, default=None, help="Early-stopping patience [default: 5].")
@click.option("--augment", type=click.Choice(["none", "carousell", "resnet", "strong", "camera"]), default=None,
              help="carousell: flip/rotate/zoom/shear/shift as the Carousell report; resnet: pad-crop/flip/erase; "
                   "strong: scale/aspect/colour jitter + erase; camera: strong + garments cut out and composited "
                   "onto real backgrounds with camera lighting, blur, noise and JPEG (photo models).")
@click.option("--label-smoothing", type=float, default=None)
@click.option("--mixup", type=float, default=None, help="Mixup Beta alpha, 0 = off [default: the model's recipe].")
@click.option("--cutmix", type=float, default=None,
              help="CutMix Beta alpha, 0 = off; with --mixup too, each batch takes one of them at random.")
@click.option("--empty-frames", type=float, default=None,
              help="With --augment camera: the share of each batch made garment-free scenes, trained to be "
                   "'uncertain' (outlier exposure) [default: 0.1 with camera, else 0].")
@click.option("--empty-weight", type=float, default=0.5, show_default=True,
              help="The weight of an empty frame's loss (its distance from the uniform distribution) against a "
                   "garment's: higher rejects empty scenes more firmly, at some cost in garment confidence.")
@click.option("--empty-loss", type=click.Choice(["uniform", "energy"]), default="uniform", show_default=True,
              help="What empty frames are trained towards: uniform, the uniform distribution (outlier exposure); "
                   "energy, P(garment) = sigmoid(logsumexp(logits)) by binary cross-entropy on every row, the "
                   "score the camera's --background-logit rule thresholds.")
@click.option("--logit-adjust", type=float, default=0.0, show_default=True,
              help="Logit-adjusted loss (Menon et al. 2021): tau of the training classes' log-prior added to the "
                   "logits in the labels' cross-entropy, so the model learns the class-balanced answer (1: fully; "
                   "0: off). For cameras, where every class is as likely as any other.")
@click.option("--img-size", type=int, default=None, help="Square input size [default: the model's].")
@click.option("--in-chans", type=click.Choice(["1", "3"]), default=None, help="[default: 1 for Fashion-MNIST, 3 for photos]")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of train held out for validation when the set ships no validation split.")
@click.option("--limit", type=int, default=None, help="At most N images per split (stratified): quick runs.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Initialisation, batch order and augmentation; also the split's seed unless --split-seed.")
@click.option("--split-seed", type=int, default=None,
              help="Seed of the validation (and test) split carved from train [default: --seed]: runs with other "
                   "--seed but one --split-seed hold out the same images, so `edgefashion ensemble` can join them.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps.")
@click.option("--no-amp", is_flag=True, help="Full precision on CUDA (mixed precision is the default there).")
@click.option("--bf16", "cpu_bf16", is_flag=True,
              help="bfloat16 autocast on a CPU that has it natively (AVX512-BF16 or AMX): about 1.6x faster training "
                   "measured here; scores are still taken in float32. An error on other CPUs.")
@click.option("--pretrained", is_flag=True, help="Start from timm's pretrained weights (timm-backed models; downloads).")
@click.option("--init-weights", type=click.Path(dir_okay=False), default=None,
              help="Start from a checkpoint or state-dict file (tensors of other shapes are left fresh).")
@click.option("--qat", is_flag=True,
              help="Quantization-aware training: fine-tune the --init-weights model with fake quantization "
                   "(a few epochs at a low --lr); `export` then writes its INT8 file from it instead of calibrating.")
@click.option("--teacher", type=click.Path(exists=True), default=None,
              help="Knowledge distillation: a trained checkpoint or run folder (an `edgefashion ensemble` one too) "
                   "whose answers on each augmented batch the model learns, so that one model of its own size "
                   "carries most of a larger teacher's accuracy.")
@click.option("--distill-weight", type=float, default=1.0, show_default=True,
              help="With --teacher: the teacher's share of the loss against the labels' (1: its answers alone).")
@click.option("--distill-temperature", type=float, default=1.0, show_default=True,
              help="With --teacher: the softmax temperature of both models' answers in the distillation loss.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/<model>-<data>, numbered if it exists].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--nproc", type=int, default=None,
              help="Launch N DDP processes on this machine through torchrun (one per GPU; gloo on CPU). "
                   "--batch-size is per process.")
@_fails_with_message(_training_errors, interrupt=True)
def train(model, data, data_dir, epochs, batch_size, lr, optimizer, momentum, weight_decay, scheduler,
          warmup_epochs, early_stopping, patience, augment, label_smoothing, mixup, cutmix, empty_frames, empty_weight, empty_loss, logit_adjust,
          img_size, in_chans, val_fraction, limit, seed, split_seed, device, no_amp, cpu_bf16, pretrained, init_weights, qat, teacher,
          distill_weight, distill_temperature, out, resume, quiet, nproc):
    """Train a zoo model; writes a run folder with config.json, metrics.csv, best.pt, last.pt, results.json,
    curves.png and confusion_matrix.png.

    \b
    edgefashion train --model cnn4 --data fashion-mnist --epochs 3
    edgefashion train --model seq5 --data clothing-small --img-size 96 --epochs 2
    edgefashion train --resume --out runs/cnn4-fashion-mnist
    edgefashion train --model resnet10 --data clothing-small --teacher runs/ens --out runs/resnet10-distilled
    edgefashion train --model mobilenetv3-small --data clothing-small --img-size 64 --qat \\
        --init-weights runs/mobilenetv3-small-clothing-small/best.pt --epochs 4 --lr 1e-4
    torchrun --nproc_per_node 4 -m edgefashion train --model resnet18 --data clothing-small
    """
    _need_torch()
    if nproc is not None and nproc > 1:
        _relaunch_with_torchrun(nproc)
    from .training.train import TrainConfig, fit

    cfg = TrainConfig(model=model, data=data, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, scheduler=scheduler,
                      warmup_epochs=warmup_epochs, early_stopping=early_stopping, patience=patience,
                      augment=augment, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, empty_frames=empty_frames,
                      empty_weight=empty_weight, empty_loss=empty_loss, logit_adjust=logit_adjust, img_size=img_size, in_chans=int(in_chans) if in_chans else None, val_fraction=val_fraction, limit=limit,
                      seed=seed, split_seed=split_seed, device=device, amp=not no_amp, cpu_bf16=cpu_bf16, pretrained=pretrained, init_weights=init_weights,
                      qat=qat, teacher=teacher, distill_weight=distill_weight, distill_temperature=distill_temperature)
    fit(cfg, out, resume=resume, progress=not quiet)


@cli.command("ensemble")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Folder for the ensemble's best.pt and results.json (`edgefashion export` takes it).")
@click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else ~/.cache/edgefashion].")
@click.option("--soup", is_flag=True,
              help="Average the members' weights instead of their logits (a model soup): one model at one model's "
                   "cost. For fine-tunes of one starting point only (same zoo model and arguments).")
@click.option("--flip", is_flag=True,
              help="Also average each member's logits over the image mirrored left to right (test-time "
                   "augmentation inside the graph: twice the compute). One checkpoint is enough.")
@_fails_with_message(_training_errors)  # EnsembleError is a ValueError
def ensemble_cmd(checkpoints, out, data_dir, soup, flip):
    """Join trained checkpoints of one task (same labels, preprocessing, data and splits) into one model: the
    mean of their logits, scored on validation and test, exported like any run (one ONNX file, one INT8 file).

    \b
    edgefashion ensemble runs/a/best.pt runs/b/best.pt runs/c --out runs/ens
    edgefashion export runs/ens --out export/ens
    edgefashion ensemble --soup runs/ft1/last.pt runs/ft2/last.pt --out runs/soup   # fine-tunes of one model
    edgefashion ensemble --flip runs/soup --out runs/soup-flip   # and its mirrored view, in one file
    """
    _need_torch()
    from .training.ensemble import write
    write(checkpoints, out, data_dir=data_dir, soup=soup, flip=flip, log=lambda m: click.echo(m, err=True))


@cli.command("locate")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Folder for the located model's best.pt (`edgefashion export` takes it).")
@click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else ~/.cache/edgefashion].")
@click.option("--frames", type=click.IntRange(min=64), default=8000, show_default=True,
              help="Camera-like training frames (training photos over the training scenes).")
@click.option("--val-frames", type=click.IntRange(min=16), default=400, show_default=True,
              help="Validation frames (validation photos over the calibration scenes) for the printed report.")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--garment/--no-garment", default=True, show_default=True,
              help="Also learn a garment-or-empty head (output `garment`), which the camera's 'uncertain' then "
                   "reads instead of the logits' energy.")
@click.option("--empty-frames", type=click.IntRange(min=16), default=None,
              help="Garment-free training scenes for the garment head [default: a quarter of --frames].")
@click.option("--camera-margin", type=click.FloatRange(min=1.0), default=LOCATE_MARGIN, show_default=True,
              help="The located square's margin the camera will use (roi auto:M), for the garment head's "
                   "cross-validated threshold [default: auto's own].")
@_fails_with_message(_training_errors, interrupt=True)
def locate_cmd(checkpoint, out, data_dir, frames, val_frames, epochs, lr, seed, garment, empty_frames,
               camera_margin):
    """Teach a trained photo model where the garment is in a camera frame: a small box head on its frozen
    feature map (the classifier is unchanged). The exported file has a second output, `box`, and the camera's
    `--roi auto` classifies the whole frame and the square around the garment, and averages them. With
    --garment (the default) a third output, `garment`, scores whether there is a garment at all: the camera's
    background logit is then compared with it.

    \b
    edgefashion locate runs/soup-flip --out runs/soup-flip-locate
    edgefashion export runs/soup-flip-locate --camera-roi auto
    """
    _need_torch()
    from .training.locate import fit_locator
    fit_locator(checkpoint, out, frames=frames, val_frames=val_frames, epochs=epochs, lr=lr, seed=seed,
                data_dir=data_dir, garment=garment, empty_frames=empty_frames,
                camera_margin=camera_margin,
                log=lambda m: click.echo(m, err=True))


def _relaunch_with_torchrun(nproc: int) -> None:
    """`--nproc N`: the same command under PyTorch's own launcher, on this machine only. Clusters call torchrun
    (or their scheduler's wrapper of it) directly."""
    import subprocess

    from .training.distributed import launched_by_torchrun
    if launched_by_torchrun():
        return
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "edgefashion", *args]
    click.echo(f"launching: {' '.join(cmd[1:])}", err=True)
    sys.exit(subprocess.call(cmd))


@cli.group()
def data():
    """Fetch and inspect data sets."""


@data.command("download")
@click.argument("name", type=click.Choice(DATASETS))
@click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else ~/.cache/edgefashion].")
@_fails_with_message(_user_errors)
def data_download(name, data_dir):
    """Download a data set into the data root (verified, atomic); does nothing if it is there."""
    from . import data as efdata
    root = efdata.resolve_data_root(data_dir)
    if name == FASHION_MNIST:
        efdata.load_fashion_mnist(root, download=True)
        click.echo(f"{FASHION_MNIST} ready in {root / efdata.FASHION_MNIST_DIR}")
    else:
        click.echo(f"{CLOTHING_SMALL} ready in {efdata.ensure_clothing_small(root, download=True)}")


@data.command("info")
@click.argument("name_or_path")
@click.option("--data-dir", default=None)
@click.option("--json", "as_json", is_flag=True)
@_fails_with_message(_user_errors)
def data_info(name_or_path, data_dir, as_json):
    """Classes and images per split of a data set (nothing is downloaded)."""
    import numpy as np

    from . import data as efdata
    root = efdata.resolve_data_root(data_dir)
    kind, path = efdata.resolve_dataset(name_or_path, root, download=False)
    if kind == FASHION_MNIST:
        raw = efdata.load_fashion_mnist(path.parent if path.name == efdata.FASHION_MNIST_DIR else path, download=False)
        labels = list(efdata.FASHION_MNIST_LABELS)
        counts = {s: np.bincount(y, minlength=10).tolist() for s, (_, y) in raw.items()}
    else:
        ds = efdata.load_folder_dataset(path)
        labels = list(ds.labels)
        counts = {s: np.bincount(y, minlength=len(labels)).tolist() for s, (_, y) in ds.splits.items()}
    info = {"data": name_or_path, "kind": kind, "path": str(path), "labels": labels, "counts": counts}
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{name_or_path} ({kind}) at {path}")
    splits = list(counts)
    click.echo(f"{'class':<16}" + "".join(f"{s:>8}" for s in splits))
    for i, lab in enumerate(labels):
        click.echo(f"{lab:<16}" + "".join(f"{counts[s][i]:>8}" for s in splits))
    click.echo(f"{'total':<16}" + "".join(f"{sum(counts[s]):>8}" for s in splits))


@cli.command()
@click.option("--suite", type=click.Choice([FASHION_MNIST, "photos"]), required=True)
@click.option("--epochs-scale", type=float, default=1.0, show_default=True,
              help="Multiply every recipe's epoch budget (e.g. 0.1 for a quick pass).")
@click.option("--device", default="auto", show_default=True)
@click.option("--models", default=None, help="Comma-separated subset of the suite's models.")
@click.option("--data-dir", default=None)
@click.option("--limit", type=int, default=None, help="At most N images per split (quick runs).")
@click.option("--img-size", type=int, default=None,
              help="Input size for every model of the photo suite (a model that cannot take it runs at its "
                   "smallest input) [default: each model's].")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Run folders [default: runs/reproduce-<suite>].")
@click.option("--table-dir", type=click.Path(file_okay=False), default="benchmarks", show_default=True,
              help="Where the table goes (reproduce-<suite>.md and .json).")
@click.option("--qat/--no-qat", default=True, show_default=True,
              help="Fine-tune with quantization-aware training (train --qat, 4 epochs) every model whose static "
                   "INT8 file loses more than --qat-above points, and report that INT8 file.")
@click.option("--qat-above", type=float, default=0.5, show_default=True, metavar="PP",
              help="The static INT8 accuracy loss, in points, above which --qat fine-tunes a model.")
@_fails_with_message(_export_errors, interrupt=True)
def reproduce(suite, epochs_scale, device, models, data_dir, limit, img_size, out, table_dir, qat, qat_above):
    """Train, export and quantize every zoo model of a suite with its seed recipe, and write one table with
    the seed report's figures beside ours. Resumable: finished models are not retrained; a run that a larger
    --epochs-scale asks more epochs of continues from its last epoch (plateau or constant schedules only, and
    not after early stopping), so a quick pass can grow into the full one.

    \b
    edgefashion reproduce --suite fashion-mnist
    edgefashion reproduce --suite photos --img-size 96 --epochs-scale 0.2
    edgefashion reproduce --suite photos --img-size 96 --epochs-scale 1    # continues those runs
    """
    _need_torch()
    from .training.reproduce import reproduce as run

    run(suite, out=out, table_dir=table_dir, epochs_scale=epochs_scale, device=device, data_dir=data_dir,
        models=[m.strip() for m in models.split(",")] if models else None, limit=limit, img_size=img_size,
        qat=qat, qat_above_pp=qat_above, command="edgefashion " + " ".join(sys.argv[1:]), log=click.echo)


# --- export / inspect (training half for export; inspect is torch-free) ---

def _camera_default_options(f):
    """export's --camera-roi, --camera-smooth, --camera-threshold and --camera-temperature: the camera's defaults
    written into the files (ModelMeta.roi, .smooth, .threshold, .temperature), chosen on a camera-like validation
    video."""
    for name, kind, what in (("temperature", float, "softmax temperature (probabilities = softmax(logits / T))"),
                             ("threshold", float, "'uncertain' threshold"),
                             ("smooth", float, "smoothing (EMA weight of the newest frame, 1 = none)"),
                             ("roi", str, "region of interest (full, center:F, X,Y,W,H, or auto for a located model)")):
        f = click.option(f"--camera-{name}", type=kind, default=None,
                         help=f"The camera's default {what} written into the files, chosen on a camera-like "
                              f"validation video (benchmarks/camera/run.py --calibrate) [default: the source's].")(f)
    return click.option("--camera-background-logit", default=None, metavar="B|none",
                        help="The camera's default 'nothing there' logit (camera --background-logit; none: the "
                             "top-probability rule) written into the files [default: the source's].")(f)


@cli.command("export")
@click.argument("src", metavar="RUN_DIR_OR_CHECKPOINT_OR_FP32_ONNX", type=click.Path(exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Export folder [default: export/<model>-<dataset>]; replaced only when every check passes.")
@click.option("--quantize", type=click.Choice(["int8", "dynamic", "none", "auto"]), default="int8",
              show_default=True, help="int8: static QDQ, calibration chosen on val; dynamic: for MLPs; "
                                      "auto: int8 kept only if faster here at accuracy within --max-drop.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or newer).")
@click.option("--calib-size", type=int, default=300, show_default=True, help="Training images for calibration.")
@click.option("--max-drop", type=float, default=0.5, show_default=True,
              help="Largest INT8 test-accuracy loss, in percentage points, before the export fails.")
@click.option("--allow-drop", is_flag=True, help="Keep the export (with a warning) when INT8 loses more.")
@click.option("--data-dir", default=None, help="Data root [default: the run's, else $EDGEFASHION_DATA].")
@click.option("--parity-images", type=int, default=256, show_default=True,
              help="Validation images for the PyTorch vs onnxruntime parity check.")
@click.option("--calib-methods", default="minmax,entropy,percentile", show_default=True,
              help="Calibration methods to try (comma-separated).")
@click.option("--latency-runs", type=int, default=200, show_default=True, help="Timed runs for latency (median).")
@click.option("--check-arm", is_flag=True,
              help="Also score both files under an emulated Raspberry Pi 4 (qemu-aarch64; see arm-check) on "
                   "--arm-subset test images: report.json's \"arm\", and the accuracy guard applies to it.")
@click.option("--arm-subset", type=int, default=2000, show_default=True, help="Test images for --check-arm.")
@click.option("--target", type=click.Choice(["portable", "x86-vnni", "x86-avx2", "arm64", "native"]),
              default="portable", show_default=True,
              help="The CPUs whose INT8 answers must equal this machine's. portable: x86 with and without VNNI "
                   "and ARM64 (7-bit weights, no saturation anywhere); x86-vnni: full 8-bit weights, only for "
                   "VNNI CPUs; x86-avx2; arm64 (S8S8); native: whatever suits this machine.")
@click.option("--cpu-check/--no-cpu-check", default=True, show_default=True,
              help="Run the INT8 file on each CPU family the target claims (qemu-user emulation; see cpu-check) "
                   "and refuse it if any answer differs from this machine's.")
@click.option("--cpu-check-subset", type=int, default=2000, show_default=True,
              help="Test images for the cross-CPU check.")
@click.option("--allow-disagreement", is_flag=True,
              help="Keep an INT8 file that answers differently on a claimed CPU family; its metadata says so.")
@_camera_default_options
@click.option("--photo-roi", default=None,
              help="predict's and eval's default view of a photo written into the files (full, flip: the image "
                   "and its mirror image averaged, ...), chosen on the validation photos; the export also "
                   "records its test accuracy [default: the source's; full].")
@_fails_with_message(_export_errors, interrupt=True)
def export_cmd(src, out, quantize, opset, calib_size, max_drop, allow_drop, data_dir, parity_images,
               calib_methods, latency_runs, check_arm, arm_subset, target, cpu_check, cpu_check_subset,
               allow_disagreement, camera_roi, camera_smooth, camera_threshold, camera_temperature,
               camera_background_logit, photo_roi):
    """Export a trained run to ONNX (model.onnx) and INT8 (model.int8.onnx), verified, with report.json and
    report.md. SRC may also be an exported model.onnx (or its folder): it is quantized again, e.g. for
    another --target, and the folder is replaced only when every check passes.

    \b
    edgefashion export runs/cnn4-fashion-mnist
    edgefashion export runs/mlp2-fashion-mnist --quantize dynamic --out export/mlp2
    edgefashion export export/resnet20-fashion-mnist --target portable
    """
    _need_torch()
    from .training.export import export_checkpoint

    methods = tuple(m.strip().lower() for m in calib_methods.split(",") if m.strip())
    r = export_checkpoint(src, out, quantize=quantize, opset=opset, calib_size=calib_size, max_drop=max_drop,
                          allow_drop=allow_drop, data_dir=data_dir, parity_images=parity_images,
                          calib_methods=methods, latency_runs=latency_runs, log=click.echo,
                          check_arm=check_arm, arm_subset=arm_subset, target=target, cpu_check=cpu_check,
                          cpu_check_subset=cpu_check_subset, allow_disagreement=allow_disagreement,
                          camera_roi=camera_roi, camera_smooth=camera_smooth, camera_threshold=camera_threshold,
                          camera_temperature=camera_temperature, camera_background_logit=camera_background_logit,
                          photo_roi=photo_roi)
    f, i = r.fp32, r.int8
    click.echo(f"\n{'':<8}{'size':>12}{'test acc':>10}{'val acc':>10}{'b1 t1 ms':>10}")
    for name, d in (("fp32", f), ("int8", i)):
        if d:
            click.echo(f"{name:<8}{d['size_bytes'] / 1024:>10.1f}KB{d['test_accuracy']:>10.4f}"
                       f"{d['val_accuracy']:>10.4f}{d['latency_ms_b1_t1']:>10.3f}")
    p = r.parity
    if "top1_agreement" in p:
        click.echo(f"parity: {p['top1_agreement']:.2%} top-1 agreement on {p['images']} images, "
                   f"max |logit diff| {p['max_abs_logit_diff']:.2e}"
                   + (" (recorded when the FP32 file was exported)" if p.get("recorded_at_fp32_export") else ""))
    if i:
        click.echo(f"int8: target {r.target}, {i['method']} per_channel={i['per_channel']} "
                   f"reduce_range={i['reduce_range']}; size {r.size_ratio:.1%} of fp32; "
                   f"drop {r.accuracy_drop_pp:+.2f} pp")
        cc = r.cross_cpu or {}
        if cc.get("families"):
            click.echo("cross-CPU: " + ", ".join(f"{x['cpu']} {x['agreement']:.2%}" for runs in
                                                 cc["families"].values() for x in runs) + " agreement with native")
    if r.auto:
        click.echo(f"auto: kept {r.auto['kept']} ({r.auto['reason']})")
    click.echo(f"-> {r.out_dir}")


@cli.command("inspect")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The metadata as JSON.")
@_fails_with_message(_runtime_errors)
def inspect_cmd(model_path, as_json):
    """Show an exported model's metadata: labels, input, preprocessing, provenance (no torch needed)."""
    from .runtime.classifier import Classifier
    clf = Classifier(model_path, threads=1)
    m = clf.meta
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    click.echo(f"{model_path}: {m.model}, {m.num_classes} classes, input {m.in_chans}x{m.input_size}x{m.input_size}")
    click.echo(f"labels: {', '.join(m.labels)}")
    if clf.locates:
        click.echo("outputs: logits, box (a garment locator: --roi auto classifies the frame and the square around "
                   "the garment)" + (", garment (whether a garment is there: the camera's 'uncertain' reads it)"
                                     if clf.garment_name else ""))
    click.echo(f"preprocessing: domain {m.domain}, resize {m.resize} ({m.interpolation}), colour {m.color}, "
               f"mean {list(m.mean)}, std {list(m.std)}")
    rule = ("the top probability" if m.background_logit is None
            else f"P(garment) against background logit {m.background_logit:g}")
    click.echo(f"camera: roi {m.roi}, smoothing {m.smooth:g}, temperature {m.temperature:g}, 'uncertain' when "
               f"{rule} is below {m.threshold:g} (the camera's defaults)")
    click.echo(f"photos: roi {m.photo_roi} (predict's and eval's default)")
    if m.split:
        from .data.splits import SplitSpec
        click.echo(f"split: {SplitSpec.from_meta(m)} (how training carved the splits a data set does not ship; "
                   f"eval uses it)")
    qz, cc = m.extra.get("quantization") or {}, m.extra.get("cross_cpu") or {}
    if qz.get("target"):
        click.echo(f"int8 target: {qz['target']} ({qz.get('activation_type')}/{qz.get('weight_type')}, reduce_range "
                   f"{qz.get('reduce_range')}): {qz.get('reason')}")
    if cc.get("families"):
        state = "verified" if cc.get("verified") else ("DISAGREES, kept with --allow-disagreement"
                                                       if cc.get("accepted_disagreement") else "not verified")
        click.echo(f"cross-CPU ({state}, exported on {cc.get('host_family')}): " + "; ".join(
            f"{fam}: {x['cpu']} [{x['how']}] {x['agreement']:.2%} of {x['images']} agree"
            for fam, runs in cc["families"].items() for x in runs))
    elif cc:
        click.echo(f"cross-CPU: {cc.get('reason', 'not verified')}")
    for k, v in m.extra.items():
        click.echo(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")


# --- predict / eval / camera: the torch-free runtime ---
# torch-free: these commands import only edgefashion.runtime, .data and .meta (tests/test_architecture.py).

_SERVE_HELP = ("Also serve the view over HTTP: / (a page with the live overlay and stats), /stream.mjpg, /status "
               "(JSON), /snapshot.jpg. HOST defaults to 127.0.0.1, this machine only; to watch from another machine "
               "give a host explicitly, e.g. 0.0.0.0:8080 (every network interface), and set --serve-token on a "
               "shared network.")
_THREADS_HELP = "onnxruntime intra-op threads [default: onnxruntime's choice, one per physical core]."
_ROI_HELP = ("Region of interest classified: full, center:F (a centred square, F of the shorter side, e.g. "
             "center:0.7), X,Y,W,H (pixels; fractions when written with a decimal point), auto (models with a "
             "garment locator: the whole image and the mirrored square around the garment found in it), flip (the "
             "whole image and its mirror image, averaged), or model (the model's camera default, from its "
             "metadata).")


def _roi(spec, clf):
    """--roi value -> what the runtime takes: `model` means the file's own camera default (ModelMeta.roi); no
    value (predict, eval), its photo default (ModelMeta.photo_roi): the whole image unless its export chose
    another view on the validation photos (the bundled photo model: flip)."""
    from .meta import Roi
    if spec is None:
        return Roi.parse(clf.meta.photo_roi)
    return Roi.parse(clf.meta.roi if spec == "model" else spec)


def _classifier(model, kind, threads, spin=False, ort_config=None):
    from .runtime.classifier import Classifier
    from .runtime.models import resolve_model
    return Classifier(resolve_model(model, kind), threads=threads, spin=spin, ort_config=ort_config)


def _ort_config(entries) -> dict:
    out = {}
    for e in entries:
        key, sep, value = e.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{e!r}: expected KEY=VALUE", param_hint="--ort-config")
        out[key.strip()] = value.strip()
    return out


@cli.command("predict")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--model", "-m", default=None, help="Exported .onnx [default: the bundled photo model, see export/].")
@click.option("--top-k", "-k", type=int, default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help='JSON lines: {"image", "label", "prob", "top"} or {"image", "error"}.')
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per onnxruntime call.")
@click.option("--roi", default=None, help=_ROI_HELP + " [default: the model's photo default, photo_roi in its metadata: full unless its export chose another]")
@_fails_with_message(_runtime_errors)
def predict_cmd(images, model, top_k, as_json, threads, batch_size, roi):
    """Classify image files: one line (or JSON object) per image, in the order given. An unreadable image is
    an error for that file alone (on stderr; an "error" key with --json); the exit status is 1 if any failed.
    """
    from .data import DataError, read_image
    clf = _classifier(model, "photo", threads)
    if top_k < 1 or batch_size < 1:
        raise ValueError("--top-k and --batch-size must be positive")
    roi = _roi(roi, clf)
    failed = 0
    for s in range(0, len(images), batch_size):
        chunk = images[s:s + batch_size]
        decoded, errors = {}, {}
        for p in chunk:
            try:
                decoded[p] = read_image(p)
            except DataError as e:
                errors[p] = str(e)
        # A ValueError here is a pixel ROI that misses a small image.
        preds = dict(zip(decoded, clf.predict_images(list(decoded.values()), top_k=top_k, roi=roi)))
        for p in chunk:
            if p in errors:
                failed += 1
                click.echo(f"edgefashion: error: {errors[p]}", err=True)
                if as_json:
                    click.echo(json.dumps({"image": p, "error": errors[p]}))
                continue
            r = preds[p]
            if as_json:
                click.echo(json.dumps({"image": p, "label": r.label, "prob": round(r.prob, 5),
                                       "top": [{"label": lab, "prob": round(pr, 5)}
                                               for lab, pr in zip(r.labels, r.probs)]}))
            else:
                click.echo(f"{p}: " + ", ".join(f"{lab} {pr:.3f}" for lab, pr in zip(r.labels, r.probs)))
    if failed:
        sys.exit(1)


@cli.command("eval")
@click.option("--model", "-m", default=None,
              help="Exported .onnx [default: the bundled model for the data's kind, see export/].")
@click.option("--data", "-d", required=True, help="fashion-mnist, clothing-small, or a folder of class folders.")
@click.option("--split", type=click.Choice(EVAL_SPLITS), default=TEST, show_default=True,
              help="all: every image of the data set (a folder's splits together, or the whole unsplit folder).")
@click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else ~/.cache/edgefashion].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: accuracy (a fraction), per_class_accuracy, "
                                                      "confusion_matrix, images_per_s, ...")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the confusion matrix as a PNG.")
@click.option("--limit", type=int, default=None, help="At most N images (stratified, seeded).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
@click.option("--predictions", type=click.Path(dir_okay=False), default=None,
              help='Write each image\'s predicted and true label index, in evaluation order, as JSON '
                   '({"labels", "predicted", "truth", "files"}; files: the image files of a class folder, else '
                   'null): to compare machines (edgefashion arm-check).')
@click.option("--roi", default=None, help=_ROI_HELP + " [default: the model's photo default, photo_roi in its metadata: full unless its export chose another]")
@click.option("--ort-config", multiple=True, metavar="KEY=VALUE",
              help="An onnxruntime session config entry, e.g. session.x64quantprecision=1 (u8u8 kernels on x86 "
                   "without VNNI: what `cpu-check --cpu vnni` uses as VNNI's exact reference). Repeatable.")
@_fails_with_message(_runtime_errors)
def eval_cmd(model, data, split, data_dir, as_json, plot, limit, batch_size, threads, predictions, roi, ort_config):
    """Accuracy, per-class accuracy, confusion matrix and images/s of an exported model on Fashion-MNIST or a
    folder with one sub-folder per class. Classes are matched to the model's labels by name.
    """
    from .runtime.evaluate import evaluate, format_report
    from .runtime.plots import save_confusion_png
    clf = _classifier(model, FASHION_MNIST if data == FASHION_MNIST else "photo", threads,
                      ort_config=_ort_config(ort_config))
    r = evaluate(clf, data, split, data_dir=data_dir, limit=limit, batch_size=batch_size, roi=_roi(roi, clf))
    if plot:
        save_confusion_png(r.confusion, r.labels, plot,
                           title=f"{clf.meta.model} on {data} ({split}): accuracy {r.accuracy:.4f}")
    if predictions:
        Path(predictions).write_text(json.dumps({
            "model": str(clf.path), "data": str(data), "split": split, "limit": limit, "labels": list(r.labels),
            "predicted": r.predicted.tolist(), "truth": r.truth.tolist(), "files": r.files}) + "\n")
    click.echo(json.dumps(r.to_dict()) if as_json else format_report(r))


@cli.command("camera")
@click.option("--model", "-m", default=None, help="Exported .onnx [default: the bundled photo model, see export/].")
@click.option("--source", "-s", default="0", show_default=True,
              help="Webcam index (0), rtsp:// or http:// URL, video file, image or folder of images, or demo "
                   "(a simulated camera of the model's labelled test images; shows live accuracy).")
@click.option("--threads", type=int, default=None, help=_THREADS_HELP)
@click.option("--spin/--no-spin", default=False, show_default=True,
              help="Let onnxruntime's idle threads spin-wait (session.intra_op.allow_spinning). Off by default: "
                   "spinning burns a core between frames (heat and throttling on a Raspberry Pi) for little gain.")
@click.option("--headless", is_flag=True, help="No window (no display needed).")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per frame on stdout ({"frame", "top", "label", "uncertain", "latency_ms"}), '
                   'then {"summary": {...}}.')
@click.option("--max-frames", type=int, default=None, help="Stop after N frames.")
@click.option("--record", type=click.Path(dir_okay=False), default=None, help="Write the overlaid frames to an .mp4.")
@click.option("--realtime", is_flag=True, help="Pace files, folders and demo at their frame rate "
                                               "[default: as fast as the loop runs].")
@click.option("--top-k", "-k", type=int, default=3, show_default=True)
@click.option("--smooth", type=float, default=None,
              help="EMA weight of the newest frame's probabilities (1 = no smoothing; image folders are never "
                   "smoothed) [default: the model's own, calibrated at export, else 0.5].")
@click.option("--threshold", type=float, default=None,
              help="Below this smoothed top probability a frame says 'uncertain' instead of guessing [default: "
                   "the model's own, calibrated at export (inspect shows it), else 0.5].")
@click.option("--temperature", type=float, default=None,
              help="Softmax temperature: probabilities are softmax(logits / T), before smoothing and the "
                   "threshold [default: the model's own, calibrated at export, else 1].")
@click.option("--background-logit", default="model", show_default=True, metavar="B|none|model",
              help="A 'nothing there' logit: probabilities become softmax([logits / T, B]) and a frame says "
                   "'uncertain' when the garment classes together are below --threshold (the energy score); "
                   "none: when the top class is. model: the file's own, calibrated at export.")
@click.option("--retries", type=int, default=None,
              help="Reconnect attempts when a live source drops [default: $EDGEFASHION_CAMERA_RETRIES, else 5].")
@click.option("--retry-delay", type=float, default=None,
              help="Seconds before the first reconnect, doubling up to 8 [default: "
                   "$EDGEFASHION_CAMERA_RETRY_DELAY, else 0.5].")
@click.option("--data-dir", default=None, help="Data root for --source demo.")
@click.option("--roi", default="model", show_default=True,
              help=_ROI_HELP + " Drawn on the window as a 'hold the garment here' box.")
@click.option("--serve", default=None, metavar="[HOST:]PORT", help=_SERVE_HELP)
@click.option("--serve-fps", type=float, default=15.0, show_default=True,
              help="Most frames a second sent to viewers, whatever the loop's rate.")
@click.option("--serve-quality", type=int, default=80, show_default=True, help="JPEG quality of served frames (1-100).")
@click.option("--serve-max-clients", type=int, default=4, show_default=True,
              help="Most viewers streaming at once; more get 503.")
@click.option("--serve-token", default=None, envvar="EDGEFASHION_SERVE_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Every request must carry it, as ?token=TOKEN or 'Authorization: Bearer TOKEN', else 401 "
                   "(the environment variable keeps it out of the process list).")
@_fails_with_message(_runtime_errors)
def camera_cmd(model, source, threads, spin, headless, as_json, max_frames, record, realtime, top_k, smooth,
               threshold, temperature, background_logit, retries, retry_delay, data_dir, roi, serve, serve_fps, serve_quality, serve_max_clients,
               serve_token):
    """Classify frames live with an overlay of the top-3 labels, probabilities, FPS and latency.

    Live sources are read on a capture thread that keeps only the newest frame; files are read in order.
    q, Esc, Ctrl-C or the end of the stream stops with a summary: frames, mean FPS, latency p50/p95 per
    stage, peak memory, and accuracy for labelled sources (demo, class folders).

    onnxruntime spin policy: idle intra-op threads do NOT spin-wait unless --spin is given.

    \b
    edgefashion camera --source demo
    edgefashion camera --model export/cnn4-fashion-mnist/model.int8.onnx --source clip.mp4 --headless --json
    edgefashion camera --headless --serve 0.0.0.0:8080 --serve-token SECRET   # then http://HOST:8080/?token=SECRET
    """
    from .runtime.camera import CameraOptions, run_camera
    from .runtime.models import resolve_model
    opt = CameraOptions(model=resolve_model(model, "photo"), source=source, threads=threads, spin=spin,
                        headless=headless, json=as_json, max_frames=max_frames,
                        record=Path(record) if record else None, realtime=realtime, top_k=top_k,
                        smooth=smooth, threshold=threshold, temperature=temperature,
                        background_logit=_background_logit(background_logit), retries=retries, retry_delay=retry_delay,
                        data_dir=data_dir, roi=None if roi == "model" else roi, serve=serve, serve_fps=serve_fps,
                        serve_quality=serve_quality, serve_max_clients=serve_max_clients, serve_token=serve_token)
    run_camera(opt)


def _background_logit(spec: str):
    """--background-logit: 'model', 'none' or a number."""
    if spec in ("model", "none"):
        return None if spec == "none" else spec
    try:
        return float(spec)
    except ValueError:
        raise click.BadParameter(f"a number, none or model, got {spec!r}", param_hint="--background-logit") from None


@cli.command("bench")
@click.option("--model", "-m", "models", multiple=True, type=click.Path(dir_okay=False),
              help="Exported .onnx file; repeat for several [default: every model.onnx and model.int8.onnx in export/].")
@click.option("--threads", default="1", show_default=True, help="onnxruntime intra-op thread counts, e.g. 1,2.")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, e.g. 1,32.")
@click.option("--warmup", type=int, default=20, show_default=True, help="Untimed runs before timing.")
@click.option("--runs", type=int, default=200, show_default=True, help="Timed runs per setting (median, p90, p99).")
@click.option("--block", type=int, default=10, show_default=True,
              help="Runs in a row per file (and baseline) in each interleaved round; 1 = strict ABAB.")
@click.option("--spin/--no-spin", default=False, show_default=True,
              help="Let onnxruntime's idle threads spin-wait (as camera --spin).")
@click.option("--baseline", type=click.Choice(["torch"]), default=None,
              help="Also time the source checkpoint in PyTorch eager FP32 (needs torch), interleaved; adds "
                   "speedup_vs_torch.")
@click.option("--accuracy", is_flag=True, help="Measure each file's test accuracy [default: the export's figure "
                                               "from the file's metadata].")
@click.option("--data", default=None, help="Data set for --accuracy [default: each model's own, from its metadata].")
@click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else ~/.cache/edgefashion].")
@click.option("--limit", type=int, default=None, help="At most N test images for --accuracy (stratified).")
@click.option("--tolerance", type=float, default=0.3, show_default=True,
              help="Accuracies within this many points count as equal when recommending a precision.")
@click.option("--json", "as_json", is_flag=True, help="Print the results JSON instead of the table.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write accuracy against latency (one point per model file) as a PNG.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="benchmarks/results", show_default=True,
              help="Folder for <date>-<host>.json and .md.")
@_fails_with_message(_runtime_errors)
def bench_cmd(models, threads, batch, warmup, runs, block, spin, baseline, accuracy, data, data_dir, limit, tolerance,
              as_json, plot, out):
    """Latency (median, p90, p99, images/s), size, MFLOPs, memory and accuracy of exported models on this
    machine, with the CPU, its instruction sets and onnxruntime's version; recommends INT8 or FP32 per model.

    \b
    edgefashion bench                                   # every model in export/, batch 1, 1 thread
    edgefashion bench -m export/cnn4-fashion-mnist/model.int8.onnx --threads 1,2 --batch 1,32
    edgefashion bench --baseline torch --accuracy --plot bench.png
    """
    from .runtime import bench as b
    factory = None
    if baseline == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise click.ClickException('--baseline torch needs PyTorch: pip install "edgefashion[train]"') from None
        from .training.bench_torch import torch_runner
        factory = torch_runner
    paths = [Path(p) for p in models] or b.find_models()
    r = b.bench(paths, batches=b.parse_int_list(batch, "batch"), threads=b.parse_int_list(threads, "threads"),
                warmup=warmup, runs=runs, block=block, spin=spin, baseline=factory, accuracy=accuracy, data=data,
                data_dir=data_dir, limit=limit, tolerance_pp=tolerance, log=lambda s: click.echo(s, err=True))
    if plot:
        b.save_plot(r, Path(plot))
    jp, mp = b.write_results(r, Path(out))
    if as_json:
        click.echo(json.dumps(r.to_dict()))
        return
    click.echo(b.markdown(r))
    click.echo(f"-> {jp}, {mp}" + (f", {plot}" if plot else ""))



# --- arm-check: the runtime on a Raspberry Pi's CPU, emulated; host side is stdlib + subprocess ---

def _model_data_options(f):
    """--data and --data-dir of the emulated checks: each model's own data set unless given."""
    f = click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else "
                     "~/.cache/edgefashion].")(f)
    return click.option("--data", "-d", default=None, help="Data set [default: the one in each model's metadata].")(f)


@cli.command("arm-check")
@click.option("--model", "-m", "models", multiple=True,
              help="An export folder (its model.onnx and model.int8.onnx) or an .onnx file; repeatable "
                   "[default: every export/*/ holding a model.onnx].")
@click.option("--subset", type=int, default=2000, show_default=True,
              help="Test images per model (eval --limit: stratified, seeded, the same on both machines).")
@click.option("--board", type=click.Choice(["pi4", "pi5"]), default="pi4", show_default=True,
              help="pi4: Cortex-A72 (no dot product); pi5: Cortex-A76 (dot product): qemu -cpu and /proc/cpuinfo.")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Downloads and the aarch64 sysroot [default: $EDGEFASHION_ARM_CACHE, else ~/.cache/edgefashion/arm].")
@_model_data_options
@click.option("--max-drop", type=float, default=0.5, show_default=True,
              help="Largest INT8 accuracy loss on ARM against FP32 on ARM, in percentage points (export's guard).")
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime threads on both machines.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON to this file (- for stdout instead of the table).")
@click.option("--setup-only", is_flag=True, help="Only build the cached aarch64 Python + wheels, and probe them.")
@_fails_with_message(_emulation_errors)
def arm_check_cmd(models, subset, board, cache, data, data_dir, max_drop, threads, json_path, setup_only):
    """Run edgefashion's own eval under aarch64 emulation (qemu-user, a Raspberry Pi's core and /proc/cpuinfo)
    and on this machine, on the same test subset: accuracy of each file on both, top-1 agreement.

    Exit status 1 if an FP32 file agrees with x86 on fewer than 99.9% of the images, or an INT8 file's ARM
    accuracy is more than --max-drop points below its FP32 twin's. Needs qemu-user-static, unshare, apt-get
    and dpkg (Debian/Ubuntu); downloads about 90 MB once. Timings under emulation are not a Pi's speed.

    \b
    edgefashion arm-check --model /tmp/export_cnn4 --subset 2000 --json arm.json
    """
    from .runtime import emulate as arm
    log = (lambda m: click.echo(m, err=True))
    if setup_only:
        env = arm.setup(cache, log=log)
        click.echo(json.dumps({**env, "emulated": arm.probe(env, board)}, indent=2))
        return
    r = arm.check(list(models) or arm.default_models(), subset=subset, cache=cache, board=board, data=data,
                  data_dir=data_dir, max_drop=max_drop, threads=threads, log=log)
    _emit_check(r, json_path, arm.format_table)


_CPUS_HELP = ("Comma-separated: haswell (x86 AVX2 without VNNI, qemu-x86_64), nehalem (x86 SSE4.2, no AVX), vnni "
              "(x86 with VNNI: native where the host has it, else the exact u8u8 reference), pi4, pi5 (ARM64, "
              "qemu-aarch64); families = haswell,vnni,pi4; all = every x86 level, vnni and pi4. The native run is "
              "always made: every other CPU is compared with it.")


@cli.command("cpu-check")
@click.argument("models", nargs=-1, metavar="MODEL...")
@click.option("--cpu", "cpus", default="families", show_default=True, help=_CPUS_HELP)
@click.option("--subset", type=int, default=2000, show_default=True,
              help="Test images per model (eval --limit: stratified, seeded, the same on every CPU).")
@_model_data_options
@click.option("--max-drop", type=float, default=0.5, show_default=True,
              help="Largest INT8 accuracy loss against FP32 on the same CPU, in percentage points.")
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime threads on every CPU.")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="The aarch64 set-up for pi4/pi5 [default: $EDGEFASHION_ARM_CACHE, else ~/.cache/edgefashion/arm].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON to this file (- for stdout instead of the table).")
@click.option("--roi", default=None,
              help="eval's --roi on every CPU, e.g. model: a located file's camera path, whose box decides the "
                   "second view's crop [default: eval's, the file's photo roi].")
@_fails_with_message(_emulation_errors)
def cpu_check_cmd(models, cpus, subset, data, data_dir, max_drop, threads, cache, json_path, roi):
    """Run edgefashion's own eval of each MODEL (an .onnx file or an export folder; default: every bundled
    export/*/) natively and on other CPU families, and compare the answers image by image.

    Exit status 1 if an INT8 file answers differently on a family its quantization target claims (see
    `export --target`), an FP32 file agrees with native on fewer than 99.9% of the images, or INT8 loses more
    than --max-drop points to FP32 on some CPU. Needs qemu-user-static. Timings under emulation mean nothing
    and are not reported as speeds.

    \b
    edgefashion cpu-check export/resnet20-fashion-mnist --cpu all --subset 2000 --json cpu.json
    """
    from .runtime import emulate
    log = (lambda m: click.echo(m, err=True))
    r = emulate.cpu_check(list(models) or emulate.default_models(), emulate.parse_cpus(cpus), subset=subset,
                          data=data, data_dir=data_dir, threads=threads, max_drop=max_drop, cache=cache, log=log,
                          roi=roi)
    _emit_check(r, json_path, emulate.format_cpu_table)


def _emit_check(r: dict, json_path, table) -> None:
    """An emulation check's report: JSON to a file (or to stdout for -), else the table; exit 1 on failures."""
    if json_path and json_path != "-":
        Path(json_path).write_text(json.dumps(r, indent=2) + "\n")
    click.echo(json.dumps(r, indent=2) if json_path == "-" else table(r))
    if not r["ok"]:
        sys.exit(1)


def main():
    cli(prog_name="edgefashion")


if __name__ == "__main__":
    main()
