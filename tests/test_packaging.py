"""Installing taskserver: the dashboard's page ships with the package, and setuptools has nothing to warn about."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .harness import PYTHON

ROOT = Path(__file__).resolve().parent.parent


def test_the_build_ships_the_dashboard_template_without_a_packaging_warning(tmp_path):
    # A copy of the project, so that the build leaves nothing in the checkout.
    for name in ("taskserver", "taskclient", "nvrsim"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    built = subprocess.run([PYTHON, "-W", "always", "-c", "import setuptools; setuptools.setup()", "build_py",
                            "--build-lib", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "out" / "taskserver" / "templates" / "dashboard.html").is_file()
    # setuptools warns when a folder of data is shipped without being declared ("would be ignored").
    assert "taskserver.templates" not in built.stdout + built.stderr
