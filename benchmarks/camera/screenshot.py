"""The README's camera screenshot (docs/camera-demo.png): two real frames of `edgefashion camera --source demo`
as the camera draws them (guide box when the ROI is not the whole frame, top-3, FPS, the truth), the first one
it got right beside the first one it did not (a wrong label, or 'uncertain' on a garment), so the picture
shows the truth about the model too.

    python benchmarks/camera/screenshot.py [--model M.onnx] [--frames 300] [--out docs/camera-demo.png]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "export" / "resnet10-clothing-small" / "model.int8.onnx"))
    ap.add_argument("--frames", type=int, default=300, help="Demo frames to run before picking.")
    ap.add_argument("--out", default=str(REPO / "docs" / "camera-demo.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "demo.mp4"
        cmd = [sys.executable, "-m", "edgefashion", "camera", "--model", args.model, "--source", "demo",
               "--headless", "--json", "--threads", "1", "--max-frames", str(args.frames), "--record", str(video)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-400:]}")
        rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith('{"frame"')]
        right = next((r for r in rows if r["truth"] and r["label"] == r["truth"]), None)
        wrong = next((r for r in rows if r["truth"] and r["label"] != r["truth"]), None)
        if right is None or wrong is None:
            sys.exit(f"no {'right' if right is None else 'wrong'} frame in {len(rows)} demo frames")
        cap = cv2.VideoCapture(str(video))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
    if len(frames) != len(rows):
        sys.exit(f"the recording has {len(frames)} frames, the camera classified {len(rows)}")
    first = rows[0]["frame"]  # the recording holds every classified frame, in order
    pick = [frames[r["frame"] - first] for r in (right, wrong)]
    gap = np.full((pick[0].shape[0], 8, 3), 255, np.uint8)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.hstack([pick[0], gap, pick[1]])):
        sys.exit(f"could not write {out}")
    print(f"wrote {out}: frame {right['frame']} (truth {right['truth']}, shown {right['label']}) beside frame "
          f"{wrong['frame']} (truth {wrong['truth']}, shown {wrong['label']})")


if __name__ == "__main__":
    main()
