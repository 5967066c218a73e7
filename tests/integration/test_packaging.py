"""`pip install -e .` in a fresh venv puts the six console commands on PATH, and each runs: the package is
self-contained, with no help from the top-level scripts or the project folder on sys.path."""

from __future__ import annotations

import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("download-data", "download-model", "online-setup", "train", "evaluate", "inference")


def test_editable_install_in_a_fresh_venv_gives_working_console_commands(tmp_path, python_executable):
    venv = tmp_path / "venv"
    subprocess.run([python_executable, "-m", "venv", str(venv)], check=True)
    # The fresh venv borrows the project venv's third-party packages (a .pth line), so nothing is downloaded: the
    # install is offline (--no-index, and the setuptools the venv bundles builds the editable wheel).
    dependencies = subprocess.run([python_executable, "-c", "import site; print(site.getsitepackages()[0])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "project-dependencies.pth").write_text(dependencies + "\n")
    # The setuptools an older venv bundles cannot build a wheel without the `wheel` package: build with the project's.
    subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-y", "-q", "setuptools"], check=True, capture_output=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "--no-index", "--no-build-isolation",
                              "--disable-pip-version-check", "-q", "-e", str(PROJECT_ROOT)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]
    for command in COMMANDS:
        # Run from an unrelated folder: the commands must not need the project folder as the working directory.
        result = subprocess.run([str(venv / "bin" / f"kowhisper-{command}"), "--help"], capture_output=True, text=True,
                                cwd=tmp_path, timeout=300)
        assert result.returncode == 0, f"kowhisper-{command}: {result.stderr[-3000:]}"
        assert result.stdout.startswith(f"usage: kowhisper-{command}"), result.stdout[:200]
