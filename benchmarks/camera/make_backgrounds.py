"""Rebuild edgefashion/backgrounds/ (the camera-domain backgrounds) from the installable packages they come from.

Every photograph is a real scene or surface whose licence allows redistribution (edgefashion/backgrounds/README.md
lists each file's source and licence). They are split by photograph into three disjoint sets:

- train/    used by `edgefashion train --augment camera` (with crops of the training photos' borders);
- calib/    never used in training nor in the benchmark: the calibration video that chooses a model's camera
            defaults (roi, smoothing, threshold), so that they are chosen on scenes the model has not seen;
- heldout/  never used in training nor in calibration: the camera benchmark (benchmarks/camera/) and the demo.

Sources, pinned so the files are reproducible:
- scikit-image 0.26.0's wheel (PyPI), skimage/data/: CC0 or public-domain photographs;
- Debian's mate-backgrounds 1.26.0-1 (`apt-get download mate-backgrounds`), /usr/share/backgrounds/mate/nature/:
  photographs under GPL-2+;
- Debian's plasma-workspace-wallpapers 4:5.27.5-2, /usr/share/wallpapers/<name>/contents/images/: KDE's
  wallpapers, photographs and a few rendered abstracts, under LGPL-3 or CC-BY-SA-4.0 (each one's metadata.json).

Each is stored as a JPEG (quality 90) whose longer side is at most 800 px: a 640x480 camera view is cut from it
at 50-100% of its size, so more would add bytes, not detail.

    python benchmarks/camera/make_backgrounds.py [--work /tmp/edgefashion-bg]
"""
from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "edgefashion" / "backgrounds"
LONG_SIDE = 800

SKIMAGE = "scikit-image==0.26.0"
MATE = "mate-backgrounds=1.26.0-1"
PLASMA = "plasma-workspace-wallpapers=4:5.27.5-2"
# (source, file in the package, set). Split by photograph: no scene is in both sets.
FILES = [
    ("skimage", "astronaut.png", "train"), ("skimage", "brick.png", "train"), ("skimage", "camera.png", "train"),
    ("skimage", "clock_motion.png", "train"), ("skimage", "coffee.png", "train"), ("skimage", "grass.png", "train"),
    ("skimage", "gravel.png", "train"), ("skimage", "text.png", "train"), ("skimage", "coins.png", "train"),
    ("mate", "Aqua.jpg", "train"), ("mate", "Dune.jpg", "train"), ("mate", "FreshFlower.jpg", "train"),
    ("mate", "GreenMeadow.jpg", "train"), ("mate", "LadyBird.jpg", "train"), ("mate", "Storm.jpg", "train"),
    ("skimage", "chelsea.png", "heldout"), ("skimage", "rocket.jpg", "heldout"),
    ("mate", "Blinds.jpg", "heldout"), ("mate", "Garden.jpg", "heldout"), ("mate", "RainDrops.jpg", "heldout"),
    ("mate", "TwoWings.jpg", "heldout"), ("mate", "Wood.jpg", "heldout"), ("mate", "YellowFlower.jpg", "heldout"),
    # KDE: photographs, then rendered abstracts (a poster or a screen behind the garment)
    ("plasma", "BytheWater/contents/images/1920x1080.jpg", "train"),
    ("plasma", "ColorfulCups/contents/images/2560x1600.jpg", "train"),
    ("plasma", "DarkestHour/contents/images/1920x1080.jpg", "train"),
    ("plasma", "FallenLeaf/contents/images/1920x1080.jpg", "train"),
    ("plasma", "Grey/contents/images/1920x1080.jpg", "train"),
    ("plasma", "OneStandsOut/contents/images/1920x1080.jpg", "train"),
    ("plasma", "Volna/contents/images/5120x2880.jpg", "train"),
    ("plasma", "summer_1am/contents/images/1920x1080.jpg", "train"),
    ("plasma", "Altai/contents/images/5120x2880.png", "train"),
    ("plasma", "Autumn/contents/images/1920x1080.jpg", "train"),
    ("plasma", "Cascade/contents/images/3840x2160.png", "train"),
    ("plasma", "Honeywave/contents/images/5120x2880.jpg", "train"),
    ("plasma", "Kokkini/contents/images/3840x2160.png", "train"),
    ("plasma", "ColdRipple/contents/images/1920x1080.jpg", "calib"),
    ("plasma", "EveningGlow/contents/images/1920x1080.jpg", "calib"),
    ("plasma", "Kite/contents/images/1920x1080.jpg", "calib"),
    ("plasma", "Path/contents/images/1920x1080.jpg", "calib"),
    ("plasma", "Cluster/contents/images/3840x2160.png", "calib"),
]
SETS = ("train", "calib", "heldout")


def _deb(work: Path, spec: str, name: str) -> Path:
    """apt-get download + dpkg-deb -x, once: the unpacked root."""
    root = work / name
    if not root.is_dir():
        subprocess.run(["apt-get", "download", spec], cwd=work, check=True)
        deb = sorted(work.glob(f"{spec.split('=')[0]}_*.deb"))[0]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def fetch(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    sk = work / "skimage"
    if not sk.is_dir():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), SKIMAGE],
                       check=True)
        wheel = sorted(work.glob("scikit_image-0.26.0-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            for n in z.namelist():
                if n.startswith("skimage/data/"):
                    z.extract(n, sk)
    return {"skimage": sk / "skimage" / "data",
            "mate": _deb(work, MATE, "mate") / "usr" / "share" / "backgrounds" / "mate" / "nature",
            "plasma": _deb(work, PLASMA, "plasma") / "usr" / "share" / "wallpapers"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/edgefashion-bg", help="Download and unpack folder.")
    args = ap.parse_args()
    roots = fetch(Path(args.work))
    for sub in SETS:
        shutil.rmtree(OUT / sub, ignore_errors=True)
        (OUT / sub).mkdir(parents=True)
    for src, name, sub in FILES:
        img = cv2.imread(str(roots[src] / name), cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"{roots[src] / name}: not readable")
        s = LONG_SIDE / max(img.shape[:2])
        if s < 1:
            img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        stem = Path(name).parts[0] if src == "plasma" else Path(name).stem
        out = OUT / sub / f"{src}-{stem.lower()}.jpg"
        cv2.imwrite(str(out), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        print(f"{out.relative_to(REPO)}  {img.shape[1]}x{img.shape[0]}")


if __name__ == "__main__":
    main()
