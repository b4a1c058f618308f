"""edgefashion's own runtime on other CPU families, by user-mode emulation: `cpu-check` and `arm-check`.

onnxruntime's INT8 kernels differ between CPU families (x86 with VNNI, x86 without it, ARM64), so an INT8 model
can answer differently on a user's laptop or Pi than on the machine that exported it. The answers a user gets
have to be measured with that family's kernels:
- x86 without VNNI: the host's own Python under `qemu-x86_64-static -cpu Haswell` (AVX2) or `-cpu Nehalem`
  (SSE4.2, no AVX), whose CPUID onnxruntime reads to pick its kernels.
- x86 with VNNI: natively where the host has it. qemu's TCG has no VNNI or AVX-512, so elsewhere the reference
  is the host with `session.x64quantprecision=1`: onnxruntime then runs u8 x u8 kernels that never saturate
  and compute the same 32-bit sums VNNI does (it reproduces, image for image, the accuracy this project's files
  recorded on AVX-512 VNNI machines).
- ARM64: a Raspberry Pi, below.

For ARM, this module, which runs on the x86 host and needs only the standard library, builds an aarch64 Python 3.11 (Debian's packages, unpacked into a sysroot) with
the runtime's aarch64 wheels (numpy, onnxruntime, opencv-python-headless, click) in a cache folder, then runs
`edgefashion eval --predictions` under qemu-aarch64 and on the host on the same fixed test subset, and compares
them image by image.

How the emulated process is made a Pi:
- `qemu-aarch64-static -cpu cortex-a72` (Pi 4) or `cortex-a76` (Pi 5): the instructions and the HWCAP bits
  that onnxruntime's CPU detection reads are that core's. qemu's default ("max") advertises dot-product and
  i8mm, which would pick INT8 kernels a Pi 4 never runs.
- onnxruntime also parses /proc/cpuinfo, and crashes on the host's x86 text: the process runs in a private
  mount namespace (`unshare -m`) with the board's /proc/cpuinfo bind-mounted over the real one.
- No binfmt registration: qemu is called explicitly with `-L SYSROOT`.
Everything under emulation is slow and its timings say nothing about a Pi's speed: none are reported as such.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..names import FP32_FILE, INT8_FILE, INT8_SUFFIX, TEST

PACKAGE_DIR = Path(__file__).resolve().parents[1]
FP32_NAME, INT8_NAME = FP32_FILE, INT8_FILE
MIN_FP32_AGREEMENT = 0.999
DEFAULT_SUBSET = 2000
DEFAULT_MAX_DROP = 0.5  # percentage points, as `edgefashion export --max-drop`

# Debian bookworm arm64: Python 3.11 and the C/C++ libraries the wheels link against (manylinux wheels bring
# their other libraries with them). A fixed list rather than apt's dependency closure, which drags in perl.
DEBS = ("libc6", "libgcc-s1", "libstdc++6", "gcc-12-base", "zlib1g", "libexpat1", "libffi8", "libbz2-1.0",
        "liblzma5", "libssl3", "libsqlite3-0", "libuuid1", "libncursesw6", "libtinfo6", "libreadline8",
        "libcrypt1", "libdb5.3", "libgdbm6", "media-types",
        "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
# The runtime's own dependencies (pyproject), OpenCV headless as a Pi server would use.
WHEELS = ("numpy", "onnxruntime", "opencv-python-headless", "click")
PY_TAG = ("3.11", "cp311")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
DEBIAN_SOURCES = ("deb http://deb.debian.org/debian bookworm main\n"
                  "deb http://deb.debian.org/debian bookworm-updates main\n"
                  "deb http://deb.debian.org/debian-security bookworm-security main\n")


class ArmError(RuntimeError):
    """A set-up or emulation step that failed; the message is one line saying what to do."""


# --- the emulated boards ---------------------------------------------------------------------------------------

BOARDS: Dict[str, dict] = {
    "pi4": {"name": "Raspberry Pi 4 Model B", "soc": "BCM2711", "core": "Cortex-A72", "qemu_cpu": "cortex-a72",
            "part": "0xd08", "variant": "0x0", "revision": "3", "bogomips": "108.00", "board_revision": "c03111",
            "features": "fp asimd evtstrm crc32 cpuid"},
    "pi5": {"name": "Raspberry Pi 5 Model B", "soc": "BCM2712", "core": "Cortex-A76", "qemu_cpu": "cortex-a76",
            "part": "0xd0b", "variant": "0x4", "revision": "1", "bogomips": "108.00", "board_revision": "d04170",
            "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                        "dcpop asimddp"},
}


def cpuinfo_text(board: str = "pi4") -> str:
    """/proc/cpuinfo as the board's 64-bit Raspberry Pi OS kernel writes it (4 cores)."""
    b = _board(board)
    cores = "".join(
        f"processor\t: {i}\nBogoMIPS\t: {b['bogomips']}\nFeatures\t: {b['features']}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {b['variant']}\nCPU part\t: {b['part']}\n"
        f"CPU revision\t: {b['revision']}\n\n" for i in range(4))
    return (cores + f"Hardware\t: {b['soc']}\nRevision\t: {b['board_revision']}\n"
            f"Serial\t\t: 100000000000000a\nModel\t\t: {b['name']} Rev 1.1\n")


def _board(board: str) -> dict:
    if board not in BOARDS:
        raise ArmError(f"--board {board!r}: choose from {', '.join(BOARDS)}")
    return BOARDS[board]


# --- set-up: sysroot + wheels, cached ----------------------------------------------------------------------------

def default_cache() -> Path:
    return Path(os.environ.get("EDGEFASHION_ARM_CACHE") or Path.home() / ".cache" / "edgefashion" / "arm")


def host_versions() -> Dict[str, Optional[str]]:
    """The host's versions of the runtime's dependencies: the emulated side gets the same numpy and onnxruntime,
    so a difference comes from the CPU, not from another release."""
    from importlib import metadata
    out = {}
    for name in WHEELS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def wheel_specs(versions: Dict[str, Optional[str]]) -> List[str]:
    pinned = ("numpy", "onnxruntime")
    return [f"{n}=={versions[n]}" if n in pinned and versions.get(n) else n for n in WHEELS]


def setup_key(specs: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([list(DEBS), list(specs), PY_TAG, WHEEL_PLATFORM]).encode()).hexdigest()[:16]


def which(tool: str, hint: str) -> str:
    p = shutil.which(tool)
    if not p:
        raise ArmError(f"{tool} not found: {hint}")
    return p


def check_tools() -> Dict[str, str]:
    return {"qemu": which("qemu-aarch64-static", "apt-get install qemu-user-static"),
            "unshare": which("unshare", "apt-get install util-linux"),
            "apt-get": which("apt-get", "arm-check fetches Debian's arm64 packages with apt-get (Debian/Ubuntu host)"),
            "dpkg": which("dpkg", "arm-check unpacks Debian's arm64 packages with dpkg -x (Debian/Ubuntu host)")}


def _run(cmd: Sequence[str], what: str, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kw)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()
        raise ArmError(f"{what} failed (exit {p.returncode}): {tail[-1] if tail else ''}")
    return p


def apt_options(apt_dir: Path) -> List[str]:
    """A private apt configuration with arm64 as its only architecture: no `dpkg --add-architecture`, nothing
    written under /etc or /var, no root needed to download."""
    return ["-o", f"Dir::State::Lists={apt_dir / 'lists'}", "-o", f"Dir::Cache={apt_dir / 'cache'}",
            "-o", "Dir::State::status=/dev/null", "-o", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent", "-o", "APT::Architecture=arm64",
            "-o", "APT::Architectures::=arm64", "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]


def ready(cache: Optional[Path] = None) -> Optional[Path]:
    """The finished set-up folder for the host's current versions, or None (nothing is downloaded)."""
    root = Path(cache or default_cache()).expanduser() / f"py311-{setup_key(wheel_specs(host_versions()))}"
    return root if (root / "ready.json").is_file() else None


def setup(cache: Optional[Path] = None, *, log: Callable[[str], None] = print) -> dict:
    """Build (once) the aarch64 sysroot and the unpacked wheels under `cache`; returns the paths. Idempotent:
    a finished set-up is marked by a stamp naming its packages, and is rebuilt only when they change."""
    cache = Path(cache or default_cache()).expanduser().resolve()
    tools = check_tools()
    versions = host_versions()
    specs = wheel_specs(versions)
    key = setup_key(specs)
    root = cache / f"py311-{key}"
    env = {"root": str(root), "sysroot": str(root / "sysroot"), "site": str(root / "site"), "key": key,
           "wheels": specs, "qemu": tools["qemu"], "unshare": tools["unshare"],
           "python": str(root / "sysroot" / "usr" / "bin" / "python3.11")}
    stamp = root / "ready.json"
    if stamp.exists():
        return {**json.loads(stamp.read_text()), **env}
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Built in a sibling folder and renamed when complete: an interrupted set-up never looks finished.
    work = Path(tempfile.mkdtemp(prefix=f".py311-{key}-", dir=cache))
    try:
        apt_dir = cache / "apt"
        for d in ("lists/partial", "cache/archives/partial"):
            (apt_dir / d).mkdir(parents=True, exist_ok=True)
        (apt_dir / "sources.list").write_text(DEBIAN_SOURCES)
        opts = apt_options(apt_dir)
        log("arm: apt-get update (arm64, private lists under the cache)")
        _run(["apt-get", *opts, "update"], "apt-get update for arm64")
        debs = cache / "debs"
        debs.mkdir(exist_ok=True)
        log(f"arm: apt-get download {len(DEBS)} arm64 packages")
        _run(["apt-get", *opts, "download", *DEBS], "apt-get download of the arm64 packages", cwd=debs)
        sysroot = work / "sysroot"
        for name in DEBS:
            # apt-get download keeps older versions beside newer: unpack the newest file of each package.
            files = sorted(debs.glob(f"{name}_*_arm64.deb")) + sorted(debs.glob(f"{name}_*_all.deb"))
            if not files:
                raise ArmError(f"{name}: no .deb in {debs} after apt-get download")
            _run(["dpkg", "-x", max(files, key=lambda f: f.stat().st_mtime), sysroot], f"dpkg -x {name}")
        # Shadow the host's site-packages folders, which qemu -L would otherwise fall through to (x86 modules).
        for d in ("usr/lib/python3/dist-packages", "usr/local/lib/python3.11/dist-packages"):
            (sysroot / d).mkdir(parents=True, exist_ok=True)
        wheels = cache / "wheels"
        log(f"arm: pip download {' '.join(specs)} ({WHEEL_PLATFORM}, cp311)")
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--platform", WHEEL_PLATFORM,
              "--python-version", PY_TAG[0], "--implementation", "cp", "--abi", PY_TAG[1], "-d", wheels, *specs],
             "pip download of the aarch64 wheels")
        site = work / "site"
        names = _resolved_wheels(wheels, specs)
        for w in names:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
        _restore_modes(site)
        for b in BOARDS:
            (work / f"cpuinfo-{b}").write_text(cpuinfo_text(b))
        info = {"debs": sorted(p.name for p in debs.glob("*.deb")), "wheel_files": [w.name for w in names],
                "setup_seconds": round(time.perf_counter() - t0, 1)}
        (work / "ready.json").write_text(json.dumps(info, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(work, root)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log(f"arm: set up in {info['setup_seconds']} s -> {root}")
    return {**info, **env}


def _resolved_wheels(wheels: Path, specs: Sequence[str]) -> List[Path]:
    """The wheel files pip chose for `specs` (and their dependencies): the newest file of each project."""
    by_project: Dict[str, Path] = {}
    for w in sorted(wheels.glob("*.whl"), key=lambda f: f.stat().st_mtime):
        if "aarch64" in w.name or w.name.endswith("-none-any.whl"):
            by_project[w.name.split("-")[0].lower()] = w
    missing = [s for s in specs if s.split("==")[0].replace("-", "_").lower() not in by_project]
    if missing:
        raise ArmError(f"no aarch64 wheel for {', '.join(missing)} in {wheels}")
    return sorted(by_project.values())


def _restore_modes(site: Path) -> None:
    # zipfile drops the executable bit; shared objects load without it, but keep helper binaries runnable.
    for p in site.rglob("*.so*"):
        p.chmod(0o755)


# --- running under emulation ---------------------------------------------------------------------------------------

def _package_path(env: dict) -> Path:
    """A folder holding only the `edgefashion` package (a link to this one): on PYTHONPATH it gives the
    emulated Python this checkout's code and nothing else of the host's site-packages (x86 numpy...)."""
    d = Path(env["root"]) / "pkg"
    d.mkdir(exist_ok=True)
    link = d / "edgefashion"
    if not (link.is_symlink() and link.resolve() == PACKAGE_DIR):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(PACKAGE_DIR)
    return d


def emulated_command(env: dict, args: Sequence[str], board: str = "pi4") -> List[str]:
    """argv running `python3.11 ARGS` as aarch64 on `board`'s core, with its /proc/cpuinfo."""
    b = _board(board)
    cpuinfo = Path(env["root"]) / f"cpuinfo-{board}"
    # Root: a private mount namespace. Otherwise a user namespace too (-r), where the bind mount is allowed.
    ns = [env.get("unshare", "unshare"), "-m"] if os.geteuid() == 0 else [env.get("unshare", "unshare"), "-r", "-m"]
    inner = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
    return [*ns, "sh", "-c", inner, str(cpuinfo), env["qemu"], "-cpu", b["qemu_cpu"], "-L", env["sysroot"],
            env["python"], "-s", *map(str, args)]


def emulated_env(env: dict, extra: Optional[dict] = None) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    e["PYTHONPATH"] = os.pathsep.join([env["site"], str(_package_path(env))])
    e["PYTHONDONTWRITEBYTECODE"] = "1"  # keep aarch64 .pyc files out of the checkout
    e.update(extra or {})
    return e


PROBE = r"""
import ctypes, json, platform, onnxruntime as ort, numpy, cv2
libc = ctypes.CDLL(None); libc.getauxval.restype = ctypes.c_ulong; libc.getauxval.argtypes = [ctypes.c_ulong]
hw = libc.getauxval(16)
bits = {"asimd": 1, "aes": 3, "crc32": 7, "atomics": 8, "asimdhp": 10, "asimddp": 20, "sve": 22}
hw2 = libc.getauxval(26)
cpu = open("/proc/cpuinfo").read()
line = lambda k: next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith(k)), None)
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
    "cpuinfo_model": line("Model"), "cpuinfo_part": line("CPU part"), "cpuinfo_features": line("Features"),
    "hwcap": sorted(k for k, b in bits.items() if hw >> b & 1) + (["i8mm"] if hw2 >> 13 & 1 else []),
    "onnxruntime": ort.__version__, "onnxruntime_device": ort.get_device(),
    "onnxruntime_providers": ort.get_available_providers(), "numpy": numpy.__version__, "opencv": cv2.__version__}))
"""


def probe(env: dict, board: str = "pi4") -> dict:
    """What the emulated process sees: machine, cpuinfo, HWCAP (what onnxruntime's CPU detection reads),
    onnxruntime's version, device and providers."""
    p = _run(emulated_command(env, ["-c", PROBE], board), "the emulated aarch64 Python", env=emulated_env(env))
    return json.loads(p.stdout.strip().splitlines()[-1])


def eval_args(model: Path, data: str, subset: int, predictions: Path, *, data_dir: Optional[str] = None,
              threads: int = 1, roi: Optional[str] = None) -> List[str]:
    """`edgefashion eval` on the first `subset` images of the stratified, seeded test subset (the same on
    every machine: eval --limit is deterministic); `roi` as eval's --roi (None: its default, the file's photo
    roi)."""
    a = ["-m", "edgefashion", "eval", "--model", str(model), "--data", data, "--split", TEST,
         "--limit", str(subset), "--json", "--predictions", str(predictions), "--threads", str(threads)]
    return a + (["--data-dir", data_dir] if data_dir else []) + (["--roi", roi] if roi else [])


def run_eval(model: Path, data: str, subset: int, out: Path, *, arm: Optional[dict], board: str = "pi4",
             data_dir: Optional[str] = None, threads: int = 1) -> dict:
    """edgefashion's own eval of `model` on the host (arm=None) or under aarch64 emulation on `board`."""
    runner = cpu_runner("native") if arm is None else {
        "cpu": board, "how": "emulated", "prefix": emulated_command(arm, [], board), "env": emulated_env(arm),
        "eval": []}
    return eval_on(runner, model, data, subset, out, data_dir=data_dir, threads=threads)


# --- comparison and guard ------------------------------------------------------------------------------------------

def compare(x86: dict, arm: dict) -> dict:
    """Top-1 agreement and accuracies of the same file on the two machines, image by image."""
    a, b = x86["predicted"], arm["predicted"]
    if len(a) != len(b) or x86["truth"] != arm["truth"]:
        raise ArmError(f"the host and the emulated eval scored different images ({len(a)} vs {len(b)})")
    agree = sum(p == q for p, q in zip(a, b))
    return {"images": len(a), "x86_accuracy": x86["accuracy"], "arm_accuracy": arm["accuracy"],
            "agreement": agree / max(1, len(a)), "disagreements": len(a) - agree}


def guard(rows: Sequence[dict], max_drop: float = DEFAULT_MAX_DROP,
          min_agreement: float = MIN_FP32_AGREEMENT) -> List[str]:
    """The failures of the check, one line each: an FP32 file whose ARM predictions agree with x86 on fewer
    than `min_agreement` of the images (FP32 must not depend on the CPU), or an INT8 file whose ARM accuracy
    is more than `max_drop` points below its FP32 twin's on ARM (the figure a Pi user gets)."""
    fails = []
    fp32 = {r["folder"]: r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        if r["precision"] == "fp32" and r["agreement"] < min_agreement:
            fails.append(f"{r['file']}: FP32 top-1 agreement x86 vs ARM {r['agreement']:.2%} < "
                         f"{min_agreement:.1%}")
        if r["precision"] == "int8" and r["folder"] in fp32:
            drop = (fp32[r["folder"]]["arm_accuracy"] - r["arm_accuracy"]) * 100
            r["arm_drop_pp"] = round(drop, 4)
            if drop > max_drop:
                fails.append(f"{r['file']}: INT8 accuracy on ARM {r['arm_accuracy']:.4f} is {drop:.2f} pp below "
                             f"FP32 {fp32[r['folder']]['arm_accuracy']:.4f} (limit {max_drop} pp)")
    return fails


def model_files(paths: Sequence[str]) -> List[Path]:
    """Each path as .onnx files: an export folder gives its model.onnx and model.int8.onnx (those present)."""
    out: List[Path] = []
    for s in paths:
        p = Path(s).expanduser()
        if p.is_dir():
            found = [p / n for n in (FP32_NAME, INT8_NAME) if (p / n).is_file()]
            if not found:
                raise ArmError(f"{p}: no {FP32_NAME} or {INT8_NAME} in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ArmError(f"{p}: no such model file or export folder")
    return [p.resolve() for p in out]


def default_models(export_dir: Path = PACKAGE_DIR.parent / "export") -> List[str]:
    """The bundled models: every folder of export/ holding a model.onnx."""
    return sorted(str(d) for d in export_dir.glob("*") if (d / FP32_NAME).is_file())


def precision_of(path: Path) -> str:
    return "int8" if path.name.endswith(INT8_SUFFIX) or ".int8" in path.suffixes else "fp32"


def model_dataset(path: Path) -> str:
    """The data set the file was trained on, from its metadata (edgefashion inspect, on the host)."""
    p = _run([sys.executable, "-m", "edgefashion", "inspect", "--json", str(path)], f"edgefashion inspect {path}",
             env={**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)})
    ds = json.loads(p.stdout).get("dataset")
    if not ds:
        raise ArmError(f"{path}: its metadata names no data set: pass --data")
    return ds


def check(models: Sequence[str], *, subset: int = DEFAULT_SUBSET, cache: Optional[Path] = None, board: str = "pi4",
          data: Optional[str] = None, data_dir: Optional[str] = None, max_drop: float = DEFAULT_MAX_DROP,
          threads: int = 1, log: Callable[[str], None] = print) -> dict:
    """Set up (cached), then score every model file on the host and under emulation; returns the report with
    "rows", "failures" and "ok"."""
    if subset < 1:
        raise ArmError(f"--subset must be positive, got {subset}")
    _board(board)
    files = model_files(models)
    if not files:
        raise ArmError("no models: pass --model FILE_OR_EXPORT_FOLDER (nothing is bundled in export/ yet)")
    t0 = time.perf_counter()
    env = setup(cache, log=log)
    setup_s = time.perf_counter() - t0
    emu = probe(env, board)
    log(f"arm: emulating {BOARDS[board]['name']} ({emu['cpuinfo_part']} = {BOARDS[board]['core']}, "
        f"qemu -cpu {BOARDS[board]['qemu_cpu']}); the emulated onnxruntime {emu['onnxruntime']} sees "
        f"{emu['machine']}, HWCAP {' '.join(emu['hwcap'])}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgefashion-arm-") as tmp:
        for i, f in enumerate(files):
            ds = data or model_dataset(f)
            log(f"arm: [{i + 1}/{len(files)}] {f} on up to {subset} {ds} test images: host, then aarch64")
            x = run_eval(f, ds, subset, Path(tmp) / f"x86-{i}.json", arm=None, data_dir=data_dir, threads=threads)
            a = run_eval(f, ds, subset, Path(tmp) / f"arm-{i}.json", arm=env, board=board, data_dir=data_dir,
                         threads=threads)
            rows.append({"file": str(f), "folder": str(f.parent), "precision": precision_of(f), "data": ds,
                         **compare(x, a), "x86_wall_s": x["wall_s"], "emulated_wall_s": a["wall_s"]})
    fails = guard(rows, max_drop)
    return {"board": board, "emulated_cpu": {**BOARDS[board], "features": None, **emu},
            "host": {"python": sys.version.split()[0], "machine": os.uname().machine, **host_versions()},
            "subset": subset, "split": TEST, "max_drop_pp": max_drop, "min_fp32_agreement": MIN_FP32_AGREEMENT,
            "rows": rows, "failures": fails, "ok": not fails, "setup_wall_s": round(setup_s, 1),
            "cache": env["root"], "wall_s": round(time.perf_counter() - t0, 1),
            "note": "wall times under emulation are qemu's, not a Raspberry Pi's speed"}


def _drop(key: str):
    return lambda row: f"{row[key]:+.2f}pp" if key in row else "-"


def format_table(r: dict) -> str:
    c = r["emulated_cpu"]
    head = [f"emulated CPU: {c['name']} ({c['core']}, /proc/cpuinfo part {c['cpuinfo_part']}, qemu -cpu "
            f"{c['qemu_cpu']}); onnxruntime {c['onnxruntime']} under emulation sees {c['machine']} with HWCAP "
            f"{' '.join(c['hwcap'])}, device {c['onnxruntime_device']}"]
    columns = [("prec", 5, "precision", "s"), ("images", 7, "images", "d"), ("x86 acc", 9, "x86_accuracy", ".4f"),
               ("ARM acc", 9, "arm_accuracy", ".4f"), ("agree", 9, "agreement", ".2%"),
               ("differ", 7, "disagreements", "d"), ("ARM drop", 10, _drop("arm_drop_pp"), "s")]
    return _table(r, head, 44, columns, f"set-up {r['setup_wall_s']} s, whole check {r['wall_s']} s wall "
                  f"({r['note']})", f"ok: FP32 agreement >= {r['min_fp32_agreement']:.1%}, INT8 on ARM within "
                  f"{r['max_drop_pp']} pp of FP32")


def _row_name(row: dict, width: int) -> str:
    name = str(Path(row["folder"]).name + "/" + Path(row["file"]).name)[-(width - 1):]
    return f"{name:<{width}}"


def _table(r: dict, head: List[str], name_width: int, columns: list, timing: str, ok: str) -> str:
    """A check's text table: `head` lines, the subset, a row per file with `columns` (title, width, row key or
    function, format), then the timing and the failures (or `ok`)."""
    lines = [*head, f"subset: up to {r['subset']} images of each model's test split (eval --limit, stratified, "
                    f"seeded)", "", f"{'file':<{name_width}}" + "".join(f"{t:>{w}}" for t, w, _, _ in columns)]
    for row in r["rows"]:
        cells = [(key(row) if callable(key) else row[key], w, fmt) for _, w, key, fmt in columns]
        lines.append(_row_name(row, name_width) + "".join(f"{v:>{w}{fmt}}" for v, w, fmt in cells))
    lines += ["", timing]
    lines += [f"FAIL: {f}" for f in r["failures"]] or [ok]
    return "\n".join(lines)


# --- for `edgefashion export --check-arm` ----------------------------------------------------------------------------

def export_check(fp32: Path, int8: Optional[Path], data: str, *, subset: int = DEFAULT_SUBSET,
                 data_dir: Optional[str] = None, cache: Optional[Path] = None, board: str = "pi4",
                 log: Callable[[str], None] = print) -> dict:
    """The emulated-ARM accuracy of an export's files on the test subset, with their x86 agreement: the
    report's "arm" entry. `int8_drop_pp` is INT8's loss against FP32, both on ARM."""
    models = [str(fp32)] + ([str(int8)] if int8 else [])
    r = check(models, subset=subset, cache=cache, board=board, data=data, data_dir=data_dir, max_drop=1e9, log=log)
    by = {row["precision"]: row for row in r["rows"]}
    out = {"board": board, "cpu": f"{BOARDS[board]['name']} ({BOARDS[board]['core']}, emulated by qemu-aarch64)",
           "onnxruntime": r["emulated_cpu"]["onnxruntime"], "hwcap": r["emulated_cpu"]["hwcap"],
           "subset": subset, "split": TEST}
    for k, row in by.items():
        out[k] = {key: row[key] for key in ("arm_accuracy", "x86_accuracy", "agreement", "images")}
    if "int8" in by:
        out["int8_drop_pp"] = round((by["fp32"]["arm_accuracy"] - by["int8"]["arm_accuracy"]) * 100, 4)
    out["fp32_agreement_ok"] = by["fp32"]["agreement"] >= MIN_FP32_AGREEMENT
    out["note"] = "accuracy only: timings under emulation are not a Raspberry Pi's speed"
    return out


# --- cpu-check: one model on several CPU families, image by image ----------------------------------------------------

X86_QEMU = "qemu-x86_64-static"
# onnxruntime's option for x86 without VNNI: u8 x u8 kernels instead of the saturating u8 x s8 ones.
EXACT_X86 = ("session.x64quantprecision", "1")
# What each --cpu runs as. "family" names the INT8 kernel family (training.quantize.FAMILIES).
CPUS: Dict[str, dict] = {
    "native": {"kind": "host", "name": "this machine"},
    "haswell": {"kind": "x86", "qemu_cpu": "Haswell", "family": "x86-avx2",
                "name": "Intel Haswell (AVX2, FMA, no VNNI), qemu-x86_64"},
    "nehalem": {"kind": "x86", "qemu_cpu": "Nehalem", "family": "x86-avx2",
                "name": "Intel Nehalem (SSE4.2, no AVX), qemu-x86_64"},
    "vnni": {"kind": "vnni", "family": "x86-vnni", "name": "x86 with VNNI"},
    "pi4": {"kind": "arm", "board": "pi4", "family": "arm64", "name": "Raspberry Pi 4 (Cortex-A72), qemu-aarch64"},
    "pi5": {"kind": "arm", "board": "pi5", "family": "arm64", "name": "Raspberry Pi 5 (Cortex-A76), qemu-aarch64"},
}
CPU_SETS = {"all": ("haswell", "nehalem", "vnni", "pi4"), "families": ("haswell", "vnni", "pi4")}
FAMILY_CPU = {"x86-avx2": "haswell", "x86-vnni": "vnni", "arm64": "pi4"}


def host_family() -> str:
    from .cpu import detect_cpu
    c = detect_cpu()
    if c.get("arm"):
        return "arm64"
    return "x86-vnni" if c.get("avx512_vnni") or c.get("avx_vnni") else "x86-avx2"


def parse_cpus(spec: str) -> List[str]:
    """--cpu haswell,pi4 | all | families -> CPU names (native is always run: it is what the others match)."""
    names: List[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        for n in CPU_SETS.get(part, (part,)):
            if n not in CPUS:
                raise ArmError(f"--cpu {part!r}: choose from {', '.join([*CPUS, *CPU_SETS])}")
            if n not in names and n != "native":
                names.append(n)
    return names


def cpu_runner(name: str, arm_env: Optional[dict] = None) -> dict:
    """How `name` is run on this host: the argv prefix before `-m edgefashion ...`, its environment, extra
    eval options, and a description that says whether it is emulated, native or the exact reference."""
    spec = CPUS[name]
    host_env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    native = host_family()
    if spec["kind"] == "host" or (spec["kind"] == "vnni" and native == "x86-vnni"):
        return {"cpu": name, "family": native, "how": "native", "prefix": [sys.executable], "env": host_env,
                "eval": [], "name": f"{spec['name']} ({native}, native)" if name == "vnni" else f"this machine ({native})"}
    if spec["kind"] == "vnni":
        if native == "arm64":
            raise ArmError("--cpu vnni needs an x86-64 host (natively with VNNI, else its exact u8u8 kernels)")
        return {"cpu": name, "family": "x86-vnni", "how": "exact reference", "prefix": [sys.executable],
                "env": host_env, "eval": ["--ort-config", "=".join(EXACT_X86)],
                "name": "x86 with VNNI, exact reference: this host's u8u8 kernels (session.x64quantprecision=1), "
                        "which compute VNNI's 32-bit sums; qemu has no VNNI"}
    if spec["kind"] == "x86":
        if os.uname().machine != "x86_64":
            raise ArmError(f"--cpu {name} emulates x86-64 with the host's Python: it needs an x86-64 host")
        qemu = which(X86_QEMU, "apt-get install qemu-user-static")
        return {"cpu": name, "family": spec["family"], "how": "emulated", "env": host_env, "eval": [],
                "prefix": [qemu, "-cpu", spec["qemu_cpu"], sys.executable], "name": spec["name"]}
    if arm_env is None:
        raise ArmError(f"--cpu {name}: the aarch64 set-up is missing")
    return {"cpu": name, "family": "arm64", "how": "emulated", "env": emulated_env(arm_env), "eval": [],
            "prefix": emulated_command(arm_env, [], spec["board"]), "name": spec["name"]}


def eval_on(runner: dict, model: Path, data: str, subset: int, out: Path, *, data_dir: Optional[str] = None,
            threads: int = 1, roi: Optional[str] = None) -> dict:
    """edgefashion's own `eval --predictions` of `model` as `runner` runs it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*runner["prefix"], *eval_args(model, data, subset, out, data_dir=data_dir, threads=threads, roi=roi),
           *runner["eval"]]
    t0 = time.perf_counter()
    p = _run(cmd, f"edgefashion eval of {model} on {runner['cpu']} ({runner['how']})", env=runner["env"])
    wall = time.perf_counter() - t0
    r = json.loads(p.stdout.strip().splitlines()[-1])
    preds = json.loads(out.read_text())
    return {"accuracy": r["accuracy"], "images": r["images"], "predicted": preds["predicted"],
            "truth": preds["truth"], "wall_s": round(wall, 1)}


def claimed_families(path: Path) -> List[str]:
    """The CPU families an INT8 file says its answers hold on (its quantization target), from its metadata."""
    from .classifier import read_meta
    q = read_meta(path).extra.get("quantization") or {}
    if q.get("target_families"):
        return list(q["target_families"])
    isa = str(q.get("isa", ""))
    # Files from before export targets: the family of the CPU that chose their settings.
    if "arm" in isa:
        return ["arm64"]
    return ["x86-vnni"] if "vnni" in isa and "no-vnni" not in isa else ["x86-avx2"]


def cpu_check(models: Sequence[str], cpus: Sequence[str], *, subset: int = DEFAULT_SUBSET,
              data: Optional[str] = None, data_dir: Optional[str] = None, threads: int = 1,
              max_drop: float = DEFAULT_MAX_DROP, cache: Optional[Path] = None,
              log: Callable[[str], None] = print, roi: Optional[str] = None) -> dict:
    """Score every model file natively and on each of `cpus`; compare each with native image by image. `roi`:
    eval's --roi (e.g. `model`, a located file's camera path: its box decides the second view's crop), else
    eval's default.

    Failures: an FP32 file whose predictions agree with native on fewer than MIN_FP32_AGREEMENT of the images;
    an INT8 file that disagrees on any image on a CPU of a family it claims (its quantization target); an INT8
    file more than `max_drop` points below its FP32 twin on the same CPU."""
    if subset < 1:
        raise ArmError(f"--subset must be positive, got {subset}")
    files = model_files(models)
    if not files:
        raise ArmError("no models: pass --model FILE_OR_EXPORT_FOLDER")
    t0 = time.perf_counter()
    arm_env = setup(cache, log=log) if any(CPUS[c]["kind"] == "arm" for c in cpus) else None
    runners = [cpu_runner("native")] + [cpu_runner(c, arm_env) for c in cpus]
    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgefashion-cpu-") as tmp:
        for i, f in enumerate(files):
            ds = data or model_dataset(f)
            prec = precision_of(f)
            claims = claimed_families(f) if prec == "int8" else []
            base = None
            for r in runners:
                log(f"cpu-check: {f.parent.name}/{f.name} on {r['cpu']} ({r['how']}), up to {subset} {ds} images")
                res = eval_on(r, f, ds, subset, Path(tmp) / f"{i}-{r['cpu']}.json", data_dir=data_dir,
                              threads=threads, roi=roi)
                base = base or res
                c = compare(base, res)
                rows.append({"file": str(f), "folder": str(f.parent), "precision": prec, "data": ds,
                             "cpu": r["cpu"], "family": r["family"], "how": r["how"], "cpu_name": r["name"],
                             "images": c["images"], "accuracy": res["accuracy"],
                             "native_accuracy": base["accuracy"], "agreement": c["agreement"],
                             "disagreements": c["disagreements"], "claimed": r["family"] in claims,
                             "wall_s": res["wall_s"]})
    fails = cpu_guard(rows, max_drop)
    return {"host": {"python": sys.version.split()[0], "machine": os.uname().machine, "family": host_family(),
                     **host_versions()},
            "cpus": {r["cpu"]: {"family": r["family"], "how": r["how"], "name": r["name"]} for r in runners},
            "subset": subset, "split": TEST, "roi": roi or "eval's default", "max_drop_pp": max_drop,
            "min_fp32_agreement": MIN_FP32_AGREEMENT, "rows": rows, "failures": fails, "ok": not fails, "wall_s": round(time.perf_counter() - t0, 1),
            "note": "accuracy and agreement only: timings under emulation are qemu's, not the emulated CPU's speed"}


def cpu_guard(rows: Sequence[dict], max_drop: float = DEFAULT_MAX_DROP) -> List[str]:
    fails = []
    fp32 = {(r["folder"], r["cpu"]): r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        name = f"{Path(r['folder']).name}/{Path(r['file']).name} on {r['cpu']}"
        if r["precision"] == "fp32" and r["agreement"] < MIN_FP32_AGREEMENT:
            fails.append(f"{name}: FP32 top-1 agreement with native {r['agreement']:.2%} < {MIN_FP32_AGREEMENT:.1%}")
        if r["precision"] != "int8":
            continue
        if r["claimed"] and r["disagreements"]:
            fails.append(f"{name}: {r['disagreements']} of {r['images']} predictions differ from native on "
                         f"{r['family']}, a CPU family this file's quantization target claims")
        twin = fp32.get((r["folder"], r["cpu"]))
        if twin is not None:
            r["drop_pp"] = round((twin["accuracy"] - r["accuracy"]) * 100, 4)
            if r["drop_pp"] > max_drop:
                fails.append(f"{name}: INT8 accuracy {r['accuracy']:.4f} is {r['drop_pp']:.2f} pp below FP32 "
                             f"{twin['accuracy']:.4f} (limit {max_drop} pp)")
    return fails


def format_cpu_table(r: dict) -> str:
    head = [f"host: {r['host']['machine']} ({r['host']['family']}), onnxruntime {r['host'].get('onnxruntime')}",
            *[f"  {k}: {v['name']} [{v['how']}]" for k, v in r["cpus"].items()]]
    columns = [("prec", 5, "precision", "s"), ("cpu", 9, "cpu", "s"), ("family", 10, "family", "s"),
               ("images", 7, "images", "d"), ("acc", 9, "accuracy", ".4f"), ("agree", 9, "agreement", ".2%"),
               ("differ", 7, "disagreements", "d"), ("claimed", 8, lambda row: "yes" if row["claimed"] else "-", "s"),
               ("drop", 9, _drop("drop_pp"), "s")]
    return _table(r, head, 40, columns, f"whole check {r['wall_s']} s wall ({r['note']})",
                  "ok: INT8 files give native's answers on every family they claim; FP32 agreement >= "
                  f"{r['min_fp32_agreement']:.1%}; INT8 within {r['max_drop_pp']} pp of FP32 on each CPU")
