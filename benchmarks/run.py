#!/usr/bin/env python3
"""Reproduce the README's benchmark table from the models in export/, in one command.

    python benchmarks/run.py              # every export/*/model{,.int8}.onnx: batch 1 and 32, 1 and 2 threads,
                                          # PyTorch eager baseline when torch is installed
    python benchmarks/run.py --pi         # the Raspberry Pi profile: INT8 files only, batch 1, 1 thread
    python benchmarks/run.py --export-dir /tmp/export --accuracy    # other models; re-measure test accuracy
    python benchmarks/run.py --export-dir export --export-dir runs/reproduce-fashion-mnist \
        --export-dir runs/reproduce-photos   # the bundled models and every model `edgefashion reproduce` trained

Anything after `--` goes to `edgefashion bench` unchanged (e.g. `-- --runs 1000`). Results land in
benchmarks/results/<date>-<host>.json and .md, and the plot in benchmarks/results/<date>-<host>.png (--pi: benchmarks/results/pi/).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def model_files(export_dir: Path, int8_only: bool) -> list[Path]:
    """export/NAME/model*.onnx, and RUN/export/model*.onnx as `edgefashion reproduce` leaves them."""
    names = ("model.int8.onnx",) if int8_only else ("model.onnx", "model.int8.onnx")
    found = {p for n in names for pattern in (f"*/{n}", f"*/export/{n}") for p in export_dir.glob(pattern)}
    return sorted(found, key=lambda p: (str(p.parent), p.name != "model.onnx"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export-dir", type=Path, action="append", default=None,
                    help="folder of exported models, repeatable [export/]")
    ap.add_argument("--pi", action="store_true", help="Raspberry Pi profile: INT8 only, batch 1, 1 thread")
    ap.add_argument("--accuracy", action="store_true", help="measure test accuracy (each model's own data set)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline even if torch is here")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)

    if a.pi:
        a.out = a.out / "pi"  # its own folder: bench names results by date and host only
    dirs = a.export_dir or [REPO / "export"]
    files = [f for d in dirs for f in model_files(d, a.pi)]
    if not files:
        print(f"no exported models in {', '.join(map(str, dirs))}: export some with "
              f"`edgefashion export RUN --out export/NAME`, or pass --export-dir", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "edgefashion", "bench", "--runs", str(a.runs), "--out", str(a.out)]
    for f in files:
        cmd += ["--model", str(f)]
    if a.pi:
        cmd += ["--batch", "1", "--threads", "1"]
    else:
        cmd += ["--batch", "1,32", "--threads", "1,2"]
        if not a.no_baseline and importlib.util.find_spec("torch") is not None:
            cmd += ["--baseline", "torch"]
    if a.accuracy:
        cmd += ["--accuracy"]
    stem = f"{datetime.date.today().isoformat()}-{socket.gethostname()}"
    cmd += ["--plot", str(a.out / f"{stem}.png")]
    print("+ " + " ".join(cmd[1:]), file=sys.stderr)
    return subprocess.call(cmd + extra)


if __name__ == "__main__":
    sys.exit(main())
