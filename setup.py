"""Only one job beyond pyproject.toml: put the bundled models of export/ into the wheel, as
edgefashion/models/, so `pip install edgefashion` gets the default models that a checkout finds in export/
(edgefashion/runtime/models.py looks in both places)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("default.json", "*/model.onnx", "*/model.int8.onnx", "*/report.json", "*/report.md", "*/COMMAND")


class build_py_with_models(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "export"
        dst = Path(self.build_lib) / "edgefashion" / "models"
        for pattern in BUNDLED:
            for f in sorted(src.glob(pattern)):
                target = dst / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)


setup(cmdclass={"build_py": build_py_with_models})
