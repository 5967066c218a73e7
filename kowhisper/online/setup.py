"""The online phase as one call: model, data, wheelhouse, a copy of this toolkit, and the manifest.

The model comes first because the data step tokenizes labels with the model's own processor.

Every step writes under a temporary name and renames into place (utils.PARTIAL_SUFFIX), so a setup killed at any
point leaves only whole files under their final names; the next run removes the temporaries first, and the manifest,
written last, lists only final files.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kowhisper.common.files import atomic_copy, human_size, partial_path
from kowhisper.common.workspace import (
    WORKSPACE_FORMAT_VERSION,
    remove_leftover,
    remove_leftovers,
    wheelhouse_dir,
    write_manifest,
)
from kowhisper.config import PROJECT_ROOT, Config, OnlineGroup, config_to_dict
from kowhisper.online.leakage import format_leakage
from kowhisper.online.model_store import check_model_source, prepare_model
from kowhisper.online.prepare import check_sources, format_summary, load_sources, prepare_data

log = logging.getLogger(__name__)
TOOLKIT_DIR_NAME = "toolkit"
# What the offline box needs to run the scripts; tests, benchmarks and sample audio stay behind.
TOOLKIT_FILES = ("*.py", "kowhisper/**/*.py", "requirements.txt", "README.md", "docs/*.md", "pyproject.toml")


class WheelhouseError(RuntimeError):
    """pip could not download the wheels; the message carries pip's own words."""


def build_workspace(config: Config) -> dict:
    """Run every online step into config.workspace and return the manifest written last.

    Whatever can be checked without the model is checked before the model is downloaded or converted (several GB for
    a large Whisper): the wheelhouse's requirements file, every source's input (paths, a tarball's first header, a
    local dataset's files), then that the model exists and is of a trained family (its config.json), and then every
    source is read (tarballs extracted in full, lists and columns checked)."""
    workspace = config.workspace_dir
    workspace.mkdir(parents=True, exist_ok=True)
    remove_leftovers(workspace)
    if config.wheelhouse:
        check_requirements_file(config)
    check_sources(config)
    check_model_source(config)
    loaded = load_sources(config)
    prepare_model(config)
    prepared = prepare_data(config, loaded)
    if config.wheelhouse:
        build_wheelhouse(config)
    copy_toolkit(workspace / TOOLKIT_DIR_NAME)
    # The manifest is written last: its presence means every step above finished. The folder is meant to
    # move, so its own path on this machine is not recorded, nor the cache folder, which decides nothing in it.
    recorded_config = {key: value for key, value in config_to_dict(config).items() if key != "cache_dir"} | {"workspace": "."}
    return write_manifest(
        workspace,
        config=recorded_config,
        splits=prepared.totals,
        sources=[source.manifest_entry() for source in prepared.sources],
        extra={"created_with": "run_online_setup.py", "leakage": prepared.leakage},
        left_out=tuple(prepared.left_alone),
    )


def build_wheelhouse(config: OnlineGroup) -> Path:
    """pip download of the requirements for the offline box's Python and platform, a re-run fetching only what is missing.

    pip copies each wheel straight into its download folder and later trusts any file of the right name there, so a
    wheel cut short by a kill would stay broken. It therefore downloads into a staging folder beside the wheelhouse,
    which starts with (hard links to) the wheels already there, and each new wheel is renamed into the wheelhouse only
    once pip has finished."""
    target = wheelhouse_dir(config.workspace_dir)
    requirements = check_requirements_file(config)
    staging = partial_path(target)
    if staging.exists():
        remove_leftover(staging, staging.name)
    target.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        for wheel in target.iterdir():
            if wheel.is_file() and wheel.name != "requirements.txt":
                _link_or_copy(wheel, staging / wheel.name)
        command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                   "-r", str(requirements), "-d", str(staging), "--only-binary=:all:"]
        if config.wheelhouse_python_version:
            command += ["--python-version", config.wheelhouse_python_version]
        if config.wheelhouse_platform:
            command += ["--platform", config.wheelhouse_platform]
        log.info("wheelhouse: %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise WheelhouseError(f"pip download failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}")
        for wheel in sorted(staging.iterdir()):
            kept = target / wheel.name
            if not (kept.is_file() and filecmp.cmp(wheel, kept)):  # a hard link, or a copy of an unchanged wheel
                os.replace(wheel, kept)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not ((target / "requirements.txt").is_file() and filecmp.cmp(requirements, target / "requirements.txt", shallow=False)):
        atomic_copy(requirements, target / "requirements.txt")
    return target


def check_requirements_file(config: OnlineGroup) -> Path:
    requirements = Path(config.wheelhouse_requirements)
    if not requirements.is_file():
        raise WheelhouseError(f"wheelhouse_requirements file not found: {requirements} (or set wheelhouse=false to build no wheelhouse)")
    return requirements


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links (FAT32, exFAT on a USB disk)
        shutil.copy2(source, target)


def copy_toolkit(target: Path) -> Path:
    """A copy of this code inside the workspace, so the copied folder alone can train. Unchanged files are
    left alone, so a second setup run rewrites nothing."""
    wanted = {source.relative_to(PROJECT_ROOT): source for pattern in TOOLKIT_FILES for source in PROJECT_ROOT.glob(pattern)}
    for stale in [path for path in target.rglob("*") if path.is_file() and path.relative_to(target) not in wanted]:
        stale.unlink()
    for relative, source in sorted(wanted.items()):
        destination = target / relative
        if not (destination.is_file() and filecmp.cmp(source, destination, shallow=False)):
            atomic_copy(source, destination)
    return target


def summary_text(manifest: dict, workspace: Path) -> str:
    lines = [f"Workspace {workspace} (format {WORKSPACE_FORMAT_VERSION})", "", format_summary(manifest["sources"]),
             "", format_leakage(manifest["leakage"])]
    sizes, files, total = disk_usage(workspace)
    lines.append("")
    lines.append("size on disk: " + ", ".join(f"{top} {human_size(size)}" for top, size in sorted(sizes.items()))
                 + f"; total {human_size(total)} on disk in {files} files")
    if "wheelhouse" in sizes:
        install = ["  pip install --no-index --find-links ../wheelhouse -r requirements.txt"]
    else:
        install = [
            "  # no wheelhouse was built (wheelhouse=false): install requirements.txt there from your own package",
            "  # mirror, or re-run this setup with wheelhouse=true to carry the wheels in the folder",
        ]
    lines += [
        "",
        f"Copy the whole folder ({human_size(total)}) to the offline box, e.g. onto a disk mounted at /media/usb:",
        f"  cp -r {workspace} /media/usb/",
        "then there:",
        f"  cd {workspace.name}/{TOOLKIT_DIR_NAME}",
        *install,
        "  python run_online_setup.py --verify workspace=..",
        "  python train_offline.py workspace=..",
    ]
    return "\n".join(lines)


def disk_usage(folder: Path) -> tuple[dict[str, int], int, int]:
    """What `du` says `folder` takes: (bytes on disk per top-level entry, number of files, total bytes on disk with the
    folders themselves). Allocated blocks, not file sizes, and a hard-linked file once, as du counts them."""
    folder = Path(folder)
    sizes: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    files = 0
    total = folder.lstat().st_blocks * 512
    for root, folders, names in os.walk(folder):
        for name in folders + names:
            path = Path(root, name)
            stat = path.lstat()
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            files += path.is_file() and not path.is_symlink()
            top = path.relative_to(folder).parts[0]
            sizes[top] = sizes.get(top, 0) + stat.st_blocks * 512
            total += stat.st_blocks * 512
    return sizes, files, total

