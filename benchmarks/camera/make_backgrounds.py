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
  wallpapers, photographs and a few rendered abstracts, under LGPL-3 or CC-BY-SA-4.0 (each one's metadata.json);
- Debian's opencv-doc 4.6.0+dfsg-12, /usr/share/doc/opencv-doc/examples/data/: OpenCV's sample images (rooms,
  desks, streets, fruit, a circuit board), under OpenCV's licence as Debian's copyright file states for its
  source tree (Apache-2.0 / BSD-3-Clause; Debian removed the non-free ones). Images with people in them are left
  out: a frame with a shirt in it is not an empty frame. From a video (tree.avi), its first frame;
- Debian's lomiri-wallpapers-16.04 and -20.04 20.04.0-2, /usr/share/backgrounds/: Ubuntu's wallpaper contest
  photographs (a living room, landscapes, plants, animals) under CC-BY-4.0, CC-BY-SA-4.0 or CC0 (each file's
  author and licence in the package's copyright file);
- Debian's ukui-wallpapers 20.04.3-1.1, /usr/share/backgrounds/: rendered abstracts, CC-BY-SA-3.0.

Each is stored as a JPEG (quality 90) whose longer side is at most 800 px: a 640x480 camera view is cut from it
at 50-100% of its size, so more would add bytes, not detail.

    python benchmarks/camera/make_backgrounds.py [--work /tmp/edgefashion-bg]
"""
from __future__ import annotations

import argparse
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
OPENCV = "opencv-doc=4.6.0+dfsg-12"
LOMIRI16 = "lomiri-wallpapers-16.04=20.04.0-2"
LOMIRI20 = "lomiri-wallpapers-20.04=20.04.0-2"
UKUI = "ukui-wallpapers=20.04.3-1.1"
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
    # More scenes for training only (the calib/ and heldout/ sets stay as they were, so figures stay comparable):
    # a model that has seen few scenes is sure of itself in front of one it has not seen.
    *[("opencv", n, "train") for n in (
        "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "box_in_scene.png", "building.jpg",
        "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "left.jpg", "leuvenA.jpg",
        "licenseplate_motion.jpg", "orange.jpg", "pca_test1.jpg", "rubberwhale1.png", "smarties.png",
        "squirrel_cls.jpg", "starry_night.jpg", "stuff.jpg", "text_defocus.jpg", "Blender_Suzanne1.jpg")],
    *[("lomiri16", n, "train") for n in (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg", "umang_by_Abhishek_Mudgal.jpg")],
    *[("lomiri20", n, "train") for n in (
        "Fossa_by_Jasper_Roks.jpg", "Infinite-Sea_by_Aury88.jpg", "Kleiber_by_Lukas_Baubkus.jpg",
        "Painting-Colors_by__herobrine7gamer.jpg")],
    *[("ukui", n, "train") for n in ("calla.png", "city.png", "goldfish.png", "rhythm.jpg")],
    # More calibration scenes, all photographs (2026-12-07): the five above are three photographs of open
    # landscapes and two renders, while a camera sees close, textured, cluttered things. A garment-vs-scene
    # threshold calibrated on open landscapes rejects fewer empty frames of a cluttered scene than it promised
    # (the training scenes' cross-validation: fur, paper and clutter are the scenes it rejects least).
    ("opencv", "chicky_512.png", "calib"), ("opencv", "sudoku.png", "calib"),
    ("opencv", "tree.avi", "calib"),  # its first frame: a tree through a window, a real webcam-grade capture
    ("skimage", "hubble_deep_field.jpg", "calib"),
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
            "plasma": _deb(work, PLASMA, "plasma") / "usr" / "share" / "wallpapers",
            "opencv": _deb(work, OPENCV, "opencv") / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data",
            "lomiri16": _deb(work, LOMIRI16, "lomiri16") / "usr" / "share" / "backgrounds",
            "lomiri20": _deb(work, LOMIRI20, "lomiri20") / "usr" / "share" / "backgrounds",
            "ukui": _deb(work, UKUI, "ukui") / "usr" / "share" / "backgrounds"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/edgefashion-bg", help="Download and unpack folder.")
    args = ap.parse_args()
    roots = fetch(Path(args.work))
    for sub in SETS:
        shutil.rmtree(OUT / sub, ignore_errors=True)
        (OUT / sub).mkdir(parents=True)
    for src, name, sub in FILES:
        if name.endswith(".avi"):
            ok, img = cv2.VideoCapture(str(roots[src] / name)).read()
            img = img if ok else None
        else:
            img = cv2.imread(str(roots[src] / name), cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"{roots[src] / name}: not readable")
        s = LONG_SIDE / max(img.shape[:2])
        if s < 1:
            img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        stem = Path(name).parts[0] if src == "plasma" else Path(name).stem.split("_by_")[0]
        prefix = "lomiri" if src.startswith("lomiri") else src
        out = OUT / sub / f"{prefix}-{stem.lower()}.jpg"
        cv2.imwrite(str(out), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        print(f"{out.relative_to(REPO)}  {img.shape[1]}x{img.shape[0]}")


if __name__ == "__main__":
    main()
