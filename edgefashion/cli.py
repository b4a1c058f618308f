"""The `edgefashion` command. Each command imports its backend inside the function, so `--help` and the
runtime commands never import torch."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgefashion")
def cli():
    """edgefashion: train clothing classifiers, export them to INT8 ONNX, run them on a camera.

    Data sets are read from --data-dir, else $EDGEFASHION_DATA, else ~/.cache/edgefashion.
    """


@cli.command()
@click.option("--domain", type=click.Choice(["fashion-mnist", "photo"]), default=None, help="Only this family.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
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
@click.option("--data", "-d", default="fashion-mnist", show_default=True,
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
@click.option("--augment", type=click.Choice(["none", "carousell", "resnet", "strong"]), default=None,
              help="carousell: flip/rotate/zoom/shear/shift as the Carousell report; resnet: pad-crop/flip/erase; "
                   "strong: scale/aspect/colour jitter + erase.")
@click.option("--label-smoothing", type=float, default=None)
@click.option("--img-size", type=int, default=None, help="Square input size [default: the model's].")
@click.option("--in-chans", type=click.Choice(["1", "3"]), default=None, help="[default: 1 for Fashion-MNIST, 3 for photos]")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of train held out for validation when the set ships no validation split.")
@click.option("--limit", type=int, default=None, help="At most N images per split (stratified): quick runs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps.")
@click.option("--no-amp", is_flag=True, help="Full precision on CUDA (mixed precision is the default there).")
@click.option("--pretrained", is_flag=True, help="Start from timm's pretrained weights (timm-backed models; downloads).")
@click.option("--init-weights", type=click.Path(dir_okay=False), default=None,
              help="Start from a checkpoint or state-dict file (tensors of other shapes are left fresh).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/<model>-<data>, numbered if it exists].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--nproc", type=int, default=None,
              help="Launch N DDP processes on this machine through torchrun (one per GPU; gloo on CPU). "
                   "--batch-size is per process.")
def train(model, data, data_dir, epochs, batch_size, lr, optimizer, momentum, weight_decay, scheduler,
          warmup_epochs, early_stopping, patience, augment, label_smoothing, img_size, in_chans, val_fraction,
          limit, seed, device, no_amp, pretrained, init_weights, out, resume, quiet, nproc):
    """Train a zoo model; writes a run folder with config.json, metrics.csv, best.pt, last.pt, results.json,
    curves.png and confusion_matrix.png.

    \b
    edgefashion train --model cnn4 --data fashion-mnist --epochs 3
    edgefashion train --model seq5 --data clothing-small --img-size 96 --epochs 2
    edgefashion train --resume --out runs/cnn4-fashion-mnist
    torchrun --nproc_per_node 4 -m edgefashion train --model resnet18 --data clothing-small
    """
    _need_torch()
    if nproc is not None and nproc > 1:
        _relaunch_with_torchrun(nproc)
    from .training.train import TrainConfig, TrainingError, fit

    cfg = TrainConfig(model=model, data=data, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, scheduler=scheduler,
                      warmup_epochs=warmup_epochs, early_stopping=early_stopping, patience=patience,
                      augment=augment, label_smoothing=label_smoothing, img_size=img_size,
                      in_chans=int(in_chans) if in_chans else None, val_fraction=val_fraction, limit=limit,
                      seed=seed, device=device, amp=not no_amp, pretrained=pretrained, init_weights=init_weights)
    try:
        fit(cfg, out, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        sys.exit(130)
    except (TrainingError, ValueError, *_user_errors()) as e:
        raise click.ClickException(str(e)) from None


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
@click.argument("name", type=click.Choice(["fashion-mnist", "clothing-small"]))
@click.option("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA, else ~/.cache/edgefashion].")
def data_download(name, data_dir):
    """Download a data set into the data root (verified, atomic); does nothing if it is there."""
    from . import data as efdata
    root = efdata.resolve_data_root(data_dir)
    try:
        if name == "fashion-mnist":
            efdata.load_fashion_mnist(root, download=True)
            click.echo(f"fashion-mnist ready in {root / 'fashion-mnist'}")
        else:
            click.echo(f"clothing-small ready in {efdata.ensure_clothing_small(root, download=True)}")
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None


@data.command("info")
@click.argument("name_or_path")
@click.option("--data-dir", default=None)
@click.option("--json", "as_json", is_flag=True)
def data_info(name_or_path, data_dir, as_json):
    """Classes and images per split of a data set (nothing is downloaded)."""
    import numpy as np

    from . import data as efdata
    root = efdata.resolve_data_root(data_dir)
    try:
        kind, path = efdata.resolve_dataset(name_or_path, root, download=False)
        if kind == "fashion-mnist":
            raw = efdata.load_fashion_mnist(path.parent if path.name == "fashion-mnist" else path, download=False)
            labels = list(efdata.FASHION_MNIST_LABELS)
            counts = {s: np.bincount(y, minlength=10).tolist() for s, (_, y) in raw.items()}
        else:
            ds = efdata.load_folder_dataset(path)
            labels = list(ds.labels)
            counts = {s: np.bincount(y, minlength=len(labels)).tolist() for s, (_, y) in ds.splits.items()}
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
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


def main():
    cli(prog_name="edgefashion")


if __name__ == "__main__":
    main()
