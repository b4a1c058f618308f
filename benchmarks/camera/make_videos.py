"""Make the camera benchmark's labelled video: clothing-small TEST photos held up in front of real scenes.

Reproducible (seeded): the same command gives the same frames. Every test photo is one item of `--hold` frames
(10): its garment, cut out of the product shot (edgefashion.data.scene.garment_mask), at 40-100% of the frame's
height (mostly 50-90%), near the centre (off by up to 10% of the width, 8% of the height), in front of a view of
one of the HELD-OUT background photographs (edgefashion/backgrounds/heldout/, never used in training), with
per-item exposure gain/offset, colour cast, sensor noise and sometimes defocus, and per-frame hand shake (a
drifting offset, a small rotation and scale change) and motion blur on about a quarter of the frames. After every
`--bg-every` items comes a stretch of `--hold` background-only frames (no garment: the right answer is
'uncertain').

Writes VIDEO.mp4 (640x480, 30 fps, mp4v) and VIDEO.labels.json: per frame the true label (null on background
frames) and the item index (-1 on background frames), each background stretch's first frame and scene
(`stretches`, indices into `backgrounds`), plus the generation parameters.

    python benchmarks/camera/make_videos.py [--out benchmarks/camera/videos/bench.mp4] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edgefashion import data as efdata  # noqa: E402
from edgefashion.data import scene  # noqa: E402

W, H = 640, 480


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "camera" / "videos" / "bench.mp4"))
    ap.add_argument("--data-dir", default=None, help="Data root [default: $EDGEFASHION_DATA].")
    ap.add_argument("--hold", type=int, default=10, help="Frames per item.")
    ap.add_argument("--bg-every", type=int, default=5, help="A background-only stretch after every N items.")
    ap.add_argument("--limit", type=int, default=None, help="At most N items (quick runs).")
    ap.add_argument("--seed", type=int, default=16)
    # The benchmark is test photos over held-out scenes. A calibration video for choosing the camera's defaults
    # (ROI, smoothing, threshold) without looking at the benchmark: --split val --backgrounds calib (scenes the
    # model never trained on: defaults chosen on training scenes promise a rejection that new scenes do not give).
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--backgrounds", choices=scene.BACKGROUND_SETS, default="heldout")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    root = efdata.resolve_data_root(args.data_dir)
    _, path = efdata.resolve_dataset("clothing-small", root, download=False)
    ds = efdata.load_folder_dataset(path)
    paths, y = ds.splits[args.split]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(paths))[:args.limit]
    bgs = scene.backgrounds(args.backgrounds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    if not writer.isOpened():
        sys.exit(f"{out}: cannot write an mp4v video there")
    truth, items, meta_items, stretches = [], [], [], []

    def emit(frame: np.ndarray, label, item: int) -> None:
        writer.write(frame)
        truth.append(label)
        items.append(item)

    def shaky_frames(bg_view, garment, alpha, label, item, look, height, cx, cy):
        # Hand shake: a slow drift plus jitter of position, rotation and scale, different for every item.
        phase = rng.uniform(0, 2 * np.pi, 3)
        amp = rng.uniform(3, 14)
        for k in range(args.hold):
            frame = bg_view.copy()
            if garment is not None:
                dx = amp * np.sin(0.7 * k + phase[0]) + rng.normal(0, 2)
                dy = 0.6 * amp * np.sin(0.9 * k + phase[1]) + rng.normal(0, 2)
                ang = 2.5 * np.sin(0.5 * k + phase[2]) + rng.normal(0, 0.5)
                sc = 1 + 0.03 * np.sin(0.4 * k + phase[0])
                scene.paste(frame, garment, alpha, cx + dx, cy + dy, height * H * sc, ang)
            blur = (int(rng.integers(5, 16)), float(rng.uniform(0, 180))) if rng.random() < 0.25 else None
            emit(scene.finish(frame, look, rng, blur), label, item)

    for n, i in enumerate(order):
        img = efdata.read_image(paths[i])
        alpha = scene.garment_mask(img, seed=int(i))
        label = ds.labels[int(y[i])]
        look = scene.Look.random(rng)
        height = scene.garment_height(rng)
        cx = W / 2 + rng.uniform(-0.1, 0.1) * W
        cy = H / 2 + rng.uniform(-0.08, 0.08) * H
        b = int(rng.integers(len(bgs)))
        shaky_frames(scene.view_of(bgs[b], rng, W, H), img, alpha, label, n, look, height, cx, cy)
        meta_items.append({"item": n, "photo": str(Path(paths[i]).relative_to(path)), "label": label,
                           "height": round(height, 3), "background": b, "cut_out": bool(alpha.min() < 0.5)})
        if (n + 1) % args.bg_every == 0:
            b = int(rng.integers(len(bgs)))
            stretches.append({"first": len(truth), "frames": args.hold, "background": b})
            shaky_frames(scene.view_of(bgs[b], rng, W, H), None, None, None, -1, scene.Look.random(rng), 0, 0, 0)
    writer.release()
    labels_file = out.with_suffix(".labels.json")
    labels_file.write_text(json.dumps({
        "video": out.name, "width": W, "height": H, "fps": 30, "hold": args.hold, "bg_every": args.bg_every,
        "seed": args.seed, "data": f"clothing-small/{args.split}", "background_set": args.backgrounds,
        "backgrounds": [p.name for p in scene.background_paths(args.backgrounds)],
        "frames": len(truth), "items": len(meta_items), "truth": truth, "item": items, "item_info": meta_items,
        "stretches": stretches,
    }) + "\n")
    print(f"{out}: {len(truth)} frames, {len(meta_items)} items, "
          f"{sum(t is None for t in truth)} background-only frames, {time.perf_counter() - t0:.0f} s; "
          f"labels in {labels_file}")


if __name__ == "__main__":
    main()
