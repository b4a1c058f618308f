"""Rebuild the offline demo set that ships inside the package (edgefashion/demo/clothing-small/): 5 photos per
class drawn (seeded) from clothing-small's TEST split, so that `edgefashion camera --source demo` needs no data
folder and no download, and its live accuracy is measured on photos no model trained on. clothing-small is CC0;
its licence file is copied beside the photos.

    EDGEFASHION_DATA=../shared/data python benchmarks/camera/make_demo_set.py
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edgefashion import data as efdata  # noqa: E402
from edgefashion.runtime.sources import DEMO_DIR  # noqa: E402

PER_CLASS = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA].")
    ap.add_argument("--per-class", type=int, default=PER_CLASS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    _, path = efdata.resolve_dataset("clothing-small", efdata.resolve_data_root(args.data_dir), download=False)
    ds = efdata.load_folder_dataset(path)
    paths, y = ds.splits["test"]
    rng = np.random.default_rng(args.seed)
    out = DEMO_DIR / "clothing-small"
    if out.exists():
        shutil.rmtree(out)
    for c, label in enumerate(ds.labels):
        idx = np.flatnonzero(y == c)
        for i in sorted(rng.choice(idx, size=min(args.per_class, len(idx)), replace=False)):
            dst = out / label / Path(paths[i]).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths[i], dst)
    shutil.copyfile(path / "LICENSE", out / "LICENSE")
    print(f"{out}: {sum(1 for _ in out.glob('*/*.jpg'))} photos of {len(ds.labels)} classes")


if __name__ == "__main__":
    main()
