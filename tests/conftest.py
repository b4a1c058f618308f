import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("EDGEFASHION_DATA") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not (root / "fashion-mnist").is_dir() or not (root / "clothing-small").is_dir():
        pytest.skip(f"real data not found in {root}: set EDGEFASHION_DATA")
    return root


def sigint_as_in_a_terminal() -> None:
    """Popen preexec_fn for a child that a test stops with SIGINT, as Ctrl-C would: a shell started in the
    background (`cmd &`, nohup) hands its children SIGINT ignored, and Python then never raises
    KeyboardInterrupt; a terminal's foreground process has the default disposition, which this restores."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load_script(path: Path, name: str):
    """A benchmark script (not a package module) imported by path, so tests call its functions."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_cli(*args, cwd=None, env=None, check=True, timeout=600):
    """Run `python -m edgefashion ARGS` as a user would, in a fresh process."""
    e = dict(os.environ)
    e["EDGEFASHION_DATA"] = str(data_root())
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "edgefashion", *map(str, args)], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"edgefashion {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(autouse=True, scope="session")
def _data_root_for_in_process_commands():
    """Commands run in-process (click's CliRunner) read $EDGEFASHION_DATA like a user's shell would."""
    os.environ.setdefault("EDGEFASHION_DATA", str(data_root()))
