"""Run the camera benchmark: `edgefashion camera --headless --json --threads 1` on the labelled video that
make_videos.py made, for each model and region of interest, and score what the camera showed.

Scores (a frame "shows" its top label when its confidence reaches the threshold, else 'uncertain', exactly
as the camera decides; the confidence is the smoothed top probability, or with a background logit the
probability that a garment is there, the camera's JSON "garment"):
- frame_accuracy: garment frames showing the right label;
- item_majority_accuracy: items whose most shown label over their frames ('uncertain' included) is right;
- frame_top1: garment frames whose top label is right, uncertain or not;
- garment_uncertain: garment frames showing 'uncertain';
- background_uncertain: background-only frames showing 'uncertain' (the right answer there);
- garment_auroc (per run, not per threshold): how well the confidence alone tells garment frames from
  background-only ones, at any threshold (the chance that a garment frame's confidence beats a background
  frame's; ties count half);
- fps: the camera's own frames per second (decode + preprocess + inference + JSON, 1 thread).
The camera's JSON carries the smoothed top-3, so other thresholds are scored from the same run (`sweep`).

    python benchmarks/camera/run.py [--model M.onnx ...] [--roi full,center:0.7] [--name NAME]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = REPO / "export" / "resnet10-clothing-small" / "model.int8.onnx"
DEFAULT_ROIS = "full,center:0.9,center:0.8,center:0.7,center:0.6,center:0.5"
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MODEL = "model"  # --roi/--threshold/--smooth/--temperature/--background-logit value: the model's own (its metadata)
# --calibrate: the camera's defaults for a model, chosen on the calibration video (validation photos over the
# CALIBRATION scenes, which neither training nor the benchmark uses): the (roi, smoothing, temperature, threshold)
# with the best
# item-majority accuracy among those that keep at least this share of background-only frames 'uncertain'.
# 0.1 ... 0.9 in steps of 0.005: above a temperature the top probabilities crowd together just above 1/classes.
CALIBRATION_THRESHOLDS = tuple(round(0.1 + 0.005 * i, 3) for i in range(161))
MIN_BACKGROUND_UNCERTAIN = 0.9
BOOTSTRAP_RESAMPLES = 2000


def run_camera(model: Path, video: Path, roi: str, threshold: str, smooth: str = MODEL, extra=(),
               temperature: str = MODEL, background: str = MODEL) -> tuple:
    """The camera's per-frame JSON and summary; `model` for roi, threshold, smooth, temperature or background
    logit leaves the model's own."""
    own = [[flag, v] for flag, v in (("--threshold", threshold), ("--smooth", smooth),
                                     ("--temperature", temperature), ("--background-logit", background))
           if v != MODEL]
    cmd = [sys.executable, "-m", "edgefashion", "camera", "--model", str(model), "--source", str(video),
           "--headless", "--json", "--threads", "1", "--roi", roi, *[x for pair in own for x in pair], *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)}\nexited {p.returncode}: {p.stderr.strip()[-500:]}")
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return [r for r in rows if "frame" in r], rows[-1]["summary"], cmd


def score(frames: list, labels: dict, threshold: float) -> dict:
    truth, item = labels["truth"], labels["item"]
    if len(frames) != len(truth):
        raise SystemExit(f"the camera classified {len(frames)} frames, the labels have {len(truth)}")
    shown = [f["top"][0]["label"] if confidence(f) >= threshold else "uncertain" for f in frames]
    top1 = [f["top"][0]["label"] for f in frames]
    g = [i for i, t in enumerate(truth) if t is not None]
    b = [i for i, t in enumerate(truth) if t is None]
    by_item: dict = {}
    for i in g:
        by_item.setdefault(item[i], []).append(i)
    majority = [Counter(shown[i] for i in idx).most_common(1)[0][0] == truth[idx[0]] for idx in by_item.values()]
    return {
        "threshold": threshold,
        "frame_accuracy": round(sum(shown[i] == truth[i] for i in g) / len(g), 4),
        "item_majority_accuracy": round(sum(majority) / len(majority), 4),
        "frame_top1": round(sum(top1[i] == truth[i] for i in g) / len(g), 4),
        "garment_uncertain": round(sum(shown[i] == "uncertain" for i in g) / len(g), 4),
        "background_uncertain": round(sum(shown[i] == "uncertain" for i in b) / len(b), 4) if b else None,
        "garment_frames": len(g), "background_frames": len(b), "items": len(majority),
    }


def background_stretches(labels: dict) -> list:
    """The background-only stretches (runs of consecutive frames with no garment), each a list of frame indices:
    each is one view of one scene, so they, not frames, are what a video's empty-frame rejection varies over."""
    out, run = [], []
    for i, t in enumerate(labels["truth"]):
        if t is None:
            run.append(i)
        elif run:
            out, run = out + [run], []
    return out + [run] if run else out


def rejection_confidence(frames: list, labels: dict, threshold: float, seed: int = 0) -> "float | None":
    """How sure a threshold is to keep MIN_BACKGROUND_UNCERTAIN of background frames 'uncertain' on other scenes:
    the share of bootstrap resamples of the background stretches (as many as the video has, drawn with
    replacement; BOOTSTRAP_RESAMPLES of them, a fixed seed) whose pooled rejection reaches it. Why: rejection
    varies a lot from scene to scene, so a threshold that rejects exactly 90% of one video's empty frames rejects
    under 90% of another's about half the time (benchmarks/camera/README.md, "A garment detector")."""
    st = background_stretches(labels)
    if not st:
        return None
    rejected = np.array([sum(confidence(frames[i]) < threshold for i in s) for s in st], np.float64)
    sizes = np.array([len(s) for s in st], np.float64)
    pick = np.random.default_rng(seed).integers(len(st), size=(BOOTSTRAP_RESAMPLES, len(st)))
    rate = rejected[pick].sum(1) / sizes[pick].sum(1)
    return round(float((rate >= MIN_BACKGROUND_UNCERTAIN - 1e-9).mean()), 4)


def background_by_scene(frames: list, labels: dict, threshold: float) -> "dict | None":
    """Per scene, the share of its background-only frames that show 'uncertain' (videos whose labels record each
    stretch's scene, `stretches`): empty-frame rejection varies most from scene to scene."""
    names, st = labels.get("backgrounds"), labels.get("stretches")
    if not names or not st:
        return None
    out: dict = {}
    for s in st:
        out.setdefault(names[s["background"]], []).extend(
            confidence(frames[i]) < threshold for i in range(s["first"], s["first"] + s["frames"]))
    return {n: round(sum(v) / len(v), 4) for n, v in sorted(out.items())}


def auroc(pos: list, neg: list) -> "float | None":
    """P(a positive's score > a negative's), ties counting half (the Mann-Whitney statistic)."""
    if not pos or not neg:
        return None
    neg = sorted(neg)
    wins = sum(bisect_left(neg, v) + (bisect_right(neg, v) - bisect_left(neg, v)) / 2 for v in pos)
    return round(wins / (len(pos) * len(neg)), 4)


def separation(frames: list, labels: dict) -> "float | None":
    """garment_auroc of one run: its garment frames' confidences against its background-only frames'."""
    truth = labels["truth"]
    return auroc([confidence(f) for f, t in zip(frames, truth) if t is not None],
                 [confidence(f) for f, t in zip(frames, truth) if t is None])


def confidence(frame: dict) -> float:
    """What the camera compares with its threshold: P(garment) with a background logit, else the top probability."""
    return frame["garment"] if "garment" in frame else frame["top"][0]["prob"]


def candidate_thresholds(frames: list, labels: dict) -> list:
    """CALIBRATION_THRESHOLDS, and where the background-only frames' own confidences lie (their 80th to 100th
    percentiles): P(garment) against a background logit of 0 crowds near 1, where a fixed grid is too coarse."""
    bg = sorted(confidence(f) for f, t in zip(frames, labels["truth"]) if t is None)
    near = {round(bg[min(len(bg) - 1, int(q / 400 * len(bg)))] + 1e-6, 6) for q in range(320, 401)} if bg else set()
    return sorted(set(CALIBRATION_THRESHOLDS) | near)


def fold(point: dict) -> dict:
    """An operating point with a background logit b and threshold t, unsmoothed: P(garment) >= t is
    logsumexp(logits / T) >= b + logit(t), so the same decisions read b' = b + logit(t) at threshold 0.5 ('uncertain'
    when 'nothing there' is the likelier). Smoothed points stay as found (the EMA is not that simple)."""
    b, t = point.get("background_logit"), point["threshold"]
    if b is None or point["smooth"] != 1.0 or not 0 < t < 1:
        return point
    return {**point, "background_logit": round(b + math.log(t / (1 - t)), 4), "threshold": 0.5, "found_at":
            {"background_logit": b, "threshold": t}}


def machine() -> dict:
    """The CPU the figures were taken on. It matters beyond speed: the videos and the demo's scenes are drawn by
    OpenCV, whose IPP and SIMD kernels (warps, blurs, resizes) round differently on different CPUs, so another
    CPU sees slightly different frames (measured: the demo's live accuracy 0.752 on an Intel AVX-512 VNNI machine,
    0.740 on an AMD EPYC with AVX2, the same files and packages)."""
    from edgefashion.runtime.cpu import cpu_info
    c = cpu_info()
    return {"cpu": c["model"], "isa": c["isa"], "machine": c["machine"], "cores": c["cores"]}


def machine_text(results: dict) -> str:
    m = results.get("machine")
    if not isinstance(m, dict):  # results recorded before the CPU was
        return str(m)
    v = results.get("versions") or {}
    return (f"{m['cpu']} ({', '.join(m['isa']) or m['machine']}, {m['cores']} cores)"
            + (f", OpenCV {v['opencv']}, numpy {v['numpy']}, onnxruntime {v['onnxruntime']}" if v else ""))


def frame_versions() -> dict:
    """The packages that draw and classify the frames: a different version draws different frames too."""
    import cv2
    import numpy
    import onnxruntime
    return {"opencv": cv2.__version__, "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__}


def _repo_relative(path: Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def best_operating_point(cands: list, confidence_level: float = 0.0) -> dict:
    """Of candidate operating points ({roi, smooth, temperature, threshold, scores}): the best item-majority
    accuracy (then frames right) among those keeping MIN_BACKGROUND_UNCERTAIN of background-only frames
    'uncertain' (and, with `confidence_level`, keeping it in at least that share of the background stretches'
    bootstrap resamples: scores' `background_confidence`); the strictest threshold if none does. The best of
    per-setting bests is the best overall, so a model's choice is taken from its settings' own."""
    ok = [c for c in cands if (c["scores"]["background_uncertain"] or 0) >= MIN_BACKGROUND_UNCERTAIN
          and (not confidence_level or (c["scores"].get("background_confidence") or 0) >= confidence_level)]
    best = max(ok or cands, key=lambda c: ((c["scores"]["item_majority_accuracy"], c["scores"]["frame_accuracy"])
                                           if ok else (c["scores"]["background_uncertain"] or 0, c["threshold"])))
    keep = ("roi", "smooth", "temperature", "background_logit", "threshold", "scores")
    return {**{k: best[k] for k in keep}, "met_background_target": bool(ok),
            "min_background_uncertain": MIN_BACKGROUND_UNCERTAIN,
            **({"confidence_level": confidence_level} if confidence_level else {})}


def calibrate(frames_by_setting: dict, labels: dict, confidence_level: float = 0.0) -> dict:
    """Over runs keyed by (roi, smooth, temperature, background logit): the best operating point at any of
    their candidate thresholds (with `confidence_level`: see best_operating_point)."""
    def scored(frames, t):
        s = score(frames, labels, t)
        if confidence_level:
            s["background_confidence"] = rejection_confidence(frames, labels, t)
        return s
    return best_operating_point([{"roi": roi, "smooth": smooth, "temperature": temperature, "background_logit": b,
                                  "threshold": t, "scores": scored(frames, t)}
                                 for (roi, smooth, temperature, b), frames in frames_by_setting.items()
                                 for t in candidate_thresholds(frames, labels)], confidence_level)


def _auroc(run: dict) -> str:
    v = run.get("garment_auroc")  # results recorded before it was scored lack it
    return "" if v is None else f"{v:.3f}"


def _b(d: dict) -> str:
    """The background-logit cell: '-' for the top-probability rule."""
    return "-" if d.get("background_logit") is None else f"{d['background_logit']:g}"


def write_md(results: dict, path: Path) -> None:
    lines = [f"# Camera benchmark: {results['video']}", "",
             f"{results['labels']['frames']} frames ({results['labels']['items']} items x {results['labels']['hold']} "
             f"frames, {results['runs'][0]['scores']['background_frames']} background-only frames), 640x480; "
             f"`edgefashion camera --headless --json --threads 1` with each row's roi, smoothing, temperature and threshold "
             f"('model': the file's own camera defaults). Made by `{results['command']}` on {machine_text(results)}.", "",
             "| model | roi | smooth | T | B | threshold | frames right | item majority right | top-1 (any confidence) | garment uncertain "
             "| background uncertain | garment vs background AUROC | FPS |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["runs"]:
        s = r["scores"]
        lines.append(f"| {r['name']} | {r['roi']} | {r['smooth']} | {r.get('temperature', 1.0)} | {_b(r)} | {s['threshold']} | {s['frame_accuracy']:.1%} | {s['item_majority_accuracy']:.1%} | "
                     f"{s['frame_top1']:.1%} | {s['garment_uncertain']:.1%} | {s['background_uncertain']:.1%} | "
                     f"{_auroc(r)} | {r['fps']} |")
    if results.get("demo"):
        lines += ["", "The demo (`edgefashion camera --source demo`: the package's 50 test photos over held-out scenes), "
                      "each model with its own camera defaults:", "",
                  "| model | frames | live accuracy ('uncertain' is not right) | top guess right | uncertain frames | roi | smooth | T | B | threshold | FPS |",
                  "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, d in results["demo"].items():
            lines.append(f"| {name} | {d['frames']} | {d['accuracy']:.1%} | {d['accuracy_top1']:.1%} | {d['uncertain_frames']} | {d['roi']} | "
                         f"{d['smooth']} | {d.get('temperature') or 1.0} | {_b(d)} | {d['threshold']} | {d['fps']} |")
    # The confidence level the calibration asked for (0: none), named wherever the 90% bar is.
    level = max([c.get("confidence_level", 0) for c in (results.get("calibration") or {}).values()] + [0])
    if results.get("calibration"):
        margin = (f", and reaching it in at least {level:.0%} of {BOOTSTRAP_RESAMPLES} bootstrap resamples of the "
                  f"video's background stretches" if level else "")
        lines += ["", f"Calibrated camera defaults (best item-majority accuracy with at least "
                      f"{MIN_BACKGROUND_UNCERTAIN:.0%} of background frames uncertain{margin}):", "",
                  "| model | roi | smooth | T | B | threshold | frames right | item majority right | background uncertain |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, c in results["calibration"].items():
            sc = c["scores"]
            lines.append(f"| {name} | {c['roi']} | {c['smooth']} | {c['temperature']} | {_b(c)} | {c['threshold']} | {sc['frame_accuracy']:.1%} | "
                         f"{sc['item_majority_accuracy']:.1%} | {sc['background_uncertain']:.1%} |")
    if any("at_target" in r for r in results["runs"]):
        lines += ["", f"Each setting at its own threshold (the best item majority keeping at least "
                      f"{MIN_BACKGROUND_UNCERTAIN:.0%} of background frames uncertain"
                      f"{f', in at least {level:.0%} of resamples' if level else ''}; * where no threshold does):", "",
                  "| model | roi | smooth | T | B | threshold | frames right | item majority right | background uncertain |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in results["runs"]:
            a = r.get("at_target")
            if a:
                sc = a["scores"]
                lines.append(f"| {r['name']} | {r['roi']} | {r['smooth']} | {r.get('temperature', 1.0)} | {_b(r)} | "
                             f"{a['threshold']}{'' if a['met_background_target'] else '*'} | {sc['frame_accuracy']:.1%} | "
                             f"{sc['item_majority_accuracy']:.1%} | {sc['background_uncertain']:.1%} |")
    by_scene = [r for r in results["runs"] if r.get("background_by_scene")]
    if by_scene:
        scenes = list(by_scene[0]["background_by_scene"])
        lines += ["", "Background-only frames 'uncertain', per scene (each row at the threshold it ran at):", "",
                  "| model | roi | B | " + " | ".join(scenes) + " |",
                  "| --- | --- | ---: | " + " | ".join("---:" for _ in scenes) + " |"]
        for r in by_scene:
            lines.append(f"| {r['name']} | {r['roi']} | {_b(r)} | "
                         + " | ".join(f"{r['background_by_scene'].get(n, 0):.0%}" for n in scenes) + " |")
    lines += ["", "Other thresholds, scored from the same runs (frames right / item majority / background "
                  "uncertain):", "",
              "| model | roi | smooth | T | B | " + " | ".join(f"t={t}" for t in SWEEP) + " |",
              "| --- | --- | ---: | ---: | ---: | " + " | ".join("---" for _ in SWEEP) + " |"]
    for r in results["runs"]:
        cells = [f"{s['frame_accuracy']:.0%} / {s['item_majority_accuracy']:.0%} / {s['background_uncertain']:.0%}"
                 for s in r["sweep"]]
        lines.append(f"| {r['name']} | {r['roi']} | {r['smooth']} | {r.get('temperature', 1.0)} | {_b(r)} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = results["runs"]
    names = sorted({r["name"] for r in runs}, key=[r["name"] for r in runs].index)
    metrics = [("frame_accuracy", "frames showing the right label"),
               ("item_majority_accuracy", "items: majority label right"),
               ("background_uncertain", "background-only frames 'uncertain'")]
    fig, axes = plt.subplots(1, len(names), figsize=(max(8.0, 6.5 * len(names)), 4.6), squeeze=False)
    calibrated = results.get("calibration") or {}
    for ax, name in zip(axes[0], names):
        rs = [r for r in runs if r["name"] == name]
        scores = [r["scores"] for r in rs]
        ticks = [r["roi"] + ("" if len({q["smooth"] for q in rs}) == 1 else f"\nsmooth {r['smooth']}")
                 + ("" if len({q.get("temperature") for q in rs}) == 1 else f"\nT {r.get('temperature')}") for r in rs]
        if name in calibrated:  # the operating point chosen, at its own threshold
            c = calibrated[name]
            scores.append(c["scores"])
            ticks.append(f"calibrated\n{c['roi']}, s {c['smooth']}, T {c['temperature']}, t {c['threshold']}")
        x = range(len(scores))
        w = 0.27
        for k, (key, lab) in enumerate(metrics):
            ax.bar([i + (k - 1) * w for i in x], [sc[key] for sc in scores], w, label=lab)
        ax.set_xticks(list(x), ticks, rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.axhline(0.8, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{name} (threshold {', '.join(sorted({str(r['scores']['threshold']) for r in rs}))}"
                     f"{', and calibrated' if name in calibrated else ''})", fontsize=10)
        ax.set_xlabel("--roi")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="upper left", fontsize=8)
    lab = results["labels"]
    what = {"test": "clothing-small test garments", "val": "clothing-small validation garments"}.get(
        lab.get("split"), "garments")
    scenes = {"heldout": "held-out scenes", "train": "training scenes"}.get(lab.get("background_set"), "scenes")
    fig.suptitle(f"edgefashion camera benchmark ({results['video']}): {what} over {scenes}, 640x480", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(HERE / "videos" / "bench.mp4"))
    ap.add_argument("--model", action="append", default=None, help="Model file (repeatable) [default: bundled].")
    ap.add_argument("--name", action="append", default=None, help="A name per --model for the table.")
    ap.add_argument("--roi", default=DEFAULT_ROIS, help="Comma-separated list; split on ';' for X,Y,W,H ROIs.")
    ap.add_argument("--threshold", default="0.5", help="A number, or model: the model's own (its metadata).")
    ap.add_argument("--smooth", default="0.5", help="Comma-separated EMA weights (1 = none), or model.")
    ap.add_argument("--temperature", default=MODEL,
                    help="Comma-separated softmax temperatures, or model [default: model].")
    ap.add_argument("--background-logit", default=MODEL,
                    help="Comma-separated 'nothing there' logits (camera --background-logit), none, or model "
                         "[default: model]. Calibrate with 0: the chosen threshold is folded into the logit.")
    ap.add_argument("--out", default=str(HERE / "results"), help="Writes OUT.json, OUT.md and OUT.png.")
    ap.add_argument("--calibrate", action="store_true",
                    help="Also choose each model's camera defaults (roi, smooth, temperature, threshold) from these runs: the best "
                         f"item-majority accuracy with >= {MIN_BACKGROUND_UNCERTAIN * 100:.0f}%% of background frames "
                         "uncertain. Run it on the calibration video (make_videos.py --split val --backgrounds "
                         "calib), never on the benchmark.")
    ap.add_argument("--confidence", type=float, default=0.0,
                    help="With --calibrate: also require the background rejection to reach its bar in at least this "
                         "share of bootstrap resamples of the video's background stretches (e.g. 0.8), a margin for "
                         "scene-to-scene variation [default: 0, the video's own rate only].")
    ap.add_argument("--demo-frames", type=int, default=0,
                    help="Also run `camera --source demo` (the package's demo set over held-out scenes) for N frames "
                         "on each model, and record its live accuracy and FPS: with the --roi, --threshold, --smooth, "
                         "--temperature and --background-logit given where each is one value, else the model's own.")
    args = ap.parse_args()
    if not 0 <= args.confidence < 1:
        ap.error(f"--confidence must be at least 0 and below 1 (a share of resamples), got {args.confidence}")
    if args.confidence and not args.calibrate:
        ap.error("--confidence only applies with --calibrate")
    video = Path(args.video)
    labels = json.loads(video.with_suffix(".labels.json").read_text())
    models = [Path(m) for m in (args.model or [DEFAULT_MODEL])]
    names = args.name or [m.parent.name for m in models]
    rois = args.roi.split(";") if ";" in args.roi else args.roi.split(",")
    smooths = args.smooth.split(",")
    temperatures = args.temperature.split(",")
    backgrounds = args.background_logit.split(",")
    runs, frames_of = [], {}
    for model, name in zip(models, names):
        for roi, smooth, temp, bgl in [(r, sm, tp, b) for r in rois for sm in smooths for tp in temperatures
                                       for b in backgrounds]:
            t = time.perf_counter()
            frames, summary, cmd = run_camera(model, video, roi, args.threshold, smooth, temperature=temp,
                                              background=bgl)
            # What the camera used (the model's own defaults where asked for them), as it reports them.
            roi, smooth, temp = summary["roi"], summary["smooth"], summary.get("temperature", 1.0)
            bgl = summary.get("background_logit")
            frames_of[(name, roi, smooth, temp, bgl)] = frames
            s = score(frames, labels, summary["threshold"])
            runs.append({"name": name, "model": str(model), "roi": roi, "smooth": smooth, "temperature": temp,
                         "background_logit": bgl, "scores": s, "garment_auroc": separation(frames, labels),
                         "background_by_scene": background_by_scene(frames, labels, summary["threshold"]),
                         "fps": summary["fps"],
                         "latency_ms": summary["latency_ms"], "sweep": [score(frames, labels, th) for th in SWEEP],
                         "command": " ".join(["edgefashion", *cmd[3:]])})
            print(f"{name} roi={roi} smooth={smooth} T={temp} B={bgl} threshold={summary['threshold']}: frames right {s['frame_accuracy']:.3f}, item majority "
                  f"{s['item_majority_accuracy']:.3f}, top-1 {s['frame_top1']:.3f}, background uncertain "
                  f"{s['background_uncertain']:.3f}, {summary['fps']} FPS ({time.perf_counter() - t:.0f} s)",
                  flush=True)
    results = {"video": video.name, "threshold": args.threshold, "machine": machine(),
               "versions": frame_versions(), "command": "python benchmarks/camera/run.py " +
               " ".join(sys.argv[1:]), "labels": {k: labels.get(k) for k in ("frames", "items", "hold", "seed",
                                                                          "backgrounds", "background_set")},
               "runs": runs}
    results["labels"]["split"] = str(labels.get("data", "")).rpartition("/")[2]
    if args.demo_frames:
        results["demo"] = {}
        # The demo runs once per model: at the setting the video ran at where it ran at one, so a candidate's
        # demo figure is taken at the operating point its benchmark row shows.
        one = {k: (v[0] if len(v) == 1 else MODEL) for k, v in
               (("roi", rois), ("smooth", smooths), ("temperature", temperatures), ("background", backgrounds))}
        for model, name in zip(models, names):
            _, summary, cmd = run_camera(model, Path("demo"), one["roi"], args.threshold, one["smooth"],
                                         temperature=one["temperature"], background=one["background"],
                                         extra=("--max-frames", str(args.demo_frames)))
            results["demo"][name] = {"model": _repo_relative(model), "command": " ".join(["edgefashion", *cmd[3:]]),
                                     **{k: summary.get(k) for k in ("frames", "accuracy", "accuracy_top1", "accuracy_unsmoothed",
                                                                    "uncertain_frames", "fps", "roi", "smooth", "temperature",
                                                                    "background_logit", "threshold")}}
            d = results["demo"][name]
            print(f"{name} demo: live accuracy {d['accuracy']}, {d['uncertain_frames']} of {d['frames']} frames "
                  f"uncertain, {d['fps']} FPS", flush=True)
    if args.calibrate:
        own = {}
        for r in runs:
            # Each setting at its own operating point, so settings compare at equal empty-frame rejection
            # (the run's --threshold suits one temperature only).
            key = (r["roi"], r["smooth"], r["temperature"], r["background_logit"])
            own[(r["name"], *key)] = calibrate({key: frames_of[(r["name"], *key)]}, labels, args.confidence)
            r["at_target"] = {k: own[(r["name"], *key)][k] for k in ("threshold", "scores", "met_background_target")}
        results["calibration"] = {name: fold(best_operating_point([c for k, c in own.items() if k[0] == name],
                                                                  args.confidence))
                                  for name in names}
        for name, c in results["calibration"].items():
            print(f"{name}: calibrated camera defaults roi {c['roi']}, smooth {c['smooth']}, temperature "
                  f"{c['temperature']}, background logit {c['background_logit']}, threshold {c['threshold']} "
                  f"(item majority {c['scores']['item_majority_accuracy']:.3f}, frames right "
                  f"{c['scores']['frame_accuracy']:.3f}, background uncertain "
                  f"{c['scores']['background_uncertain']:.3f}): export --camera-roi {c['roi']} --camera-smooth {c['smooth']} "
                  f"--camera-temperature {c['temperature']} "
                  f"--camera-background-logit {'none' if c['background_logit'] is None else c['background_logit']} "
                  f"--camera-threshold {c['threshold']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    write_md(results, out.with_suffix(".md"))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}, .md, .png")


if __name__ == "__main__":
    main()
