"""The wheel carries the bundled models, where an installed package looks for them."""
import json
import subprocess
import sys
import zipfile

from conftest import REPO
from edgefashion.runtime import models as rtmodels


def test_wheel_carries_bundled_models(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("edgefashion-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    defaults = json.loads((REPO / "export" / "default.json").read_text())
    assert "edgefashion/models/default.json" in names
    for rel in defaults.values():
        assert f"edgefashion/models/{rel}" in names
        assert f"edgefashion/models/{rel.rsplit('/', 1)[0]}/report.json" in names
    assert not [n for n in names if n.startswith("edgefashion/models/") and n.endswith((".pt", ".tmp"))]
    # An installed package's models folder is the one models.py searches after the checkout's export/.
    assert rtmodels.model_dirs()[1].parts[-2:] == ("edgefashion", "models")
