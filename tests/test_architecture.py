"""The two halves' rule: the runtime never imports torch, torchvision or timm."""
import subprocess
import sys

from conftest import REPO, data_root

HEAVY = ("torch", "torchvision", "timm")

# Refuses heavy imports outright, then runs what a Raspberry Pi user runs.
BLOCK = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ImportError('blocked heavy import: ' + name)
sys.meta_path.insert(0, Block())
"""


def _run(code):
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=REPO,
                          env={"EDGEFASHION_DATA": str(data_root()), "PATH": "/usr/bin:/bin"})


def test_runtime_modules_import_without_torch():
    p = _run("import edgefashion, edgefashion.cli, edgefashion.meta, edgefashion.data, "
             "edgefashion.runtime.preprocess, edgefashion.runtime.plots, edgefashion.runtime.serve\n"
             f"assert not [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]")
    assert p.returncode == 0, p.stderr


def test_cli_help_and_data_info_run_without_torch(shared_data):
    p = _run("import sys; from edgefashion.cli import cli\n"
             "for args in (['--help'], ['data', 'info', 'clothing-small']):\n"
             "    try:\n        cli(args, prog_name='edgefashion')\n"
             "    except SystemExit as e:\n        assert e.code in (0, None), (args, e.code)\n"
             f"assert not [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]")
    assert p.returncode == 0, p.stderr
    assert "train" in p.stdout and "t-shirt" in p.stdout


def test_training_command_without_torch_names_the_extra():
    p = _run("from edgefashion.cli import cli\ncli(['train', '--model', 'cnn4'], prog_name='edgefashion')")
    assert p.returncode == 1
    assert 'pip install "edgefashion[train]"' in p.stderr


def test_python_dash_m_works():
    p = subprocess.run([sys.executable, "-m", "edgefashion", "--help"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "train" in p.stdout and "zoo" in p.stdout


def test_runtime_commands_run_without_torch(tmp_path, shared_data):
    """predict, eval and camera (on a video) with torch, torchvision and timm blocked."""
    from test_runtime_torchfree import commands, tiny_runtime_files
    model, video, photos = tiny_runtime_files(tmp_path)
    for args in commands(model, video, photos):
        p = _run("import sys; from edgefashion.cli import cli\n"
                 "try:\n"
                 f"    cli({args!r}, prog_name='edgefashion')\n"
                 "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
                 f"assert not [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]")
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout.strip(), args
