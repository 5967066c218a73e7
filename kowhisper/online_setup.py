"""The online phase as one call: model, data, wheelhouse, a copy of this toolkit, and the manifest.

The model comes first because the data step tokenizes labels with the model's own processor.
"""

from __future__ import annotations

import filecmp
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from config import PROJECT_ROOT, config_to_dict
from kowhisper.workspace import WORKSPACE_FORMAT_VERSION, wheelhouse_dir, write_manifest
from utils import human_size

log = logging.getLogger(__name__)
TOOLKIT_DIR_NAME = "toolkit"
# What the offline box needs to run the scripts; tests, benchmarks and sample audio stay behind.
TOOLKIT_FILES = ("*.py", "kowhisper/**/*.py", "requirements.txt", "README.md", "pyproject.toml")


class WheelhouseError(RuntimeError):
    """pip could not download the wheels; the message carries pip's own words."""


def build_workspace(config) -> dict:
    """Run every online step into config.workspace and return the manifest written last."""
    from kowhisper.model_store import prepare_model
    from kowhisper.prepare import prepare_data

    workspace = config.workspace_dir
    workspace.mkdir(parents=True, exist_ok=True)
    prepare_model(config)
    prepared = prepare_data(config)
    if config.wheelhouse:
        build_wheelhouse(config)
    copy_toolkit(workspace / TOOLKIT_DIR_NAME)
    # The manifest is written last: its presence means every step above finished. The folder is meant to
    # move, so its own path on this machine is not recorded.
    recorded_config = {**config_to_dict(config), "workspace": "."}
    return write_manifest(
        workspace,
        config=recorded_config,
        splits=prepared.totals,
        sources=[source.manifest_entry() for source in prepared.sources],
        extra={"created_with": "run_online_setup.py", "leakage": prepared.leakage},
        left_out=tuple(prepared.left_alone),
    )


def build_wheelhouse(config) -> Path:
    """pip download of the requirements for the offline box's Python and platform. pip skips wheels it
    already has, so a re-run only fetches what is missing."""
    target = wheelhouse_dir(config.workspace_dir)
    target.mkdir(parents=True, exist_ok=True)
    requirements = Path(config.wheelhouse_requirements)
    if not requirements.is_file():
        raise WheelhouseError(f"wheelhouse_requirements file not found: {requirements}")
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
               "-r", str(requirements), "-d", str(target), "--only-binary=:all:"]
    if config.wheelhouse_python_version:
        command += ["--python-version", config.wheelhouse_python_version]
    if config.wheelhouse_platform:
        command += ["--platform", config.wheelhouse_platform]
    log.info("wheelhouse: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise WheelhouseError(f"pip download failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}")
    shutil.copyfile(requirements, target / "requirements.txt")
    return target


def copy_toolkit(target: Path) -> Path:
    """A copy of this code inside the workspace, so the copied folder alone can train. Unchanged files are
    left alone, so a second setup run rewrites nothing."""
    wanted = {source.relative_to(PROJECT_ROOT): source for pattern in TOOLKIT_FILES for source in PROJECT_ROOT.glob(pattern)}
    for stale in [path for path in target.rglob("*") if path.is_file() and path.relative_to(target) not in wanted]:
        stale.unlink()
    for relative, source in sorted(wanted.items()):
        destination = target / relative
        if destination.is_file() and filecmp.cmp(source, destination, shallow=False):
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


def summary_text(manifest: dict, workspace: Path) -> str:
    from kowhisper.leakage import format_leakage
    from kowhisper.prepare import format_summary

    lines = [f"Workspace {workspace} (format {WORKSPACE_FORMAT_VERSION})", "", format_summary(manifest["sources"]),
             "", format_leakage(manifest["leakage"])]
    sizes: dict[str, int] = {}
    for name, entry in manifest["files"].items():
        top = name.split("/", 1)[0] if "/" in name else "(top)"
        sizes[top] = sizes.get(top, 0) + entry["size"]
    lines.append("")
    lines.append("sizes: " + ", ".join(f"{top} {human_size(size)}" for top, size in sorted(sizes.items()))
                 + f"; total {human_size(sum(sizes.values()))} in {len(manifest['files'])} files")
    if "wheelhouse" in sizes:
        install = ["  pip install --no-index --find-links ../wheelhouse -r requirements.txt"]
    else:
        install = [
            "  # no wheelhouse was built (wheelhouse=false): install requirements.txt there from your own package",
            "  # mirror, or re-run this setup with wheelhouse=true to carry the wheels in the folder",
        ]
    lines += [
        "",
        "Copy the whole folder to the offline box, then there:",
        f"  cd {workspace.name}/{TOOLKIT_DIR_NAME}",
        *install,
        "  python run_online_setup.py --verify workspace=..",
        "  python train_offline.py workspace=..",
    ]
    return "\n".join(lines)
