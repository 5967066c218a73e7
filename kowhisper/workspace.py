"""The workspace folder: its layout, its manifest and the check that a copied folder is whole.

    workspace/
      manifest.json        files (sha256, size), split counts, config, package versions
      data/<split>/        datasets save_to_disk: input_features, labels, text, id, duration
      data/report.json     kept and dropped rows per split, with the reason for every drop
      model/               base Whisper: safetensors, processor, generation config
      wheelhouse/          pip wheels for the offline box
      runs/<run_name>/     training output (written offline, not part of the manifest)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from utils import atomic_write_json, package_versions, sha256_file

# Bump when the stored data or model layout changes in a way older code cannot read.
WORKSPACE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "dev", "test")
# Training runs are made on the offline box and .cache holds extracted downloads: neither is what the online
# phase vouches for, and the manifest cannot list itself.
UNMANIFESTED_TOP_LEVEL = ("runs", ".cache", MANIFEST_NAME)


def data_dir(workspace: Path) -> Path:
    return Path(workspace) / "data"


def split_dir(workspace: Path, split: str) -> Path:
    return data_dir(workspace) / split


def report_path(workspace: Path) -> Path:
    return data_dir(workspace) / "report.json"


def model_dir(workspace: Path) -> Path:
    return Path(workspace) / "model"


def wheelhouse_dir(workspace: Path) -> Path:
    return Path(workspace) / "wheelhouse"


def runs_dir(workspace: Path) -> Path:
    return Path(workspace) / "runs"


def list_runs(workspace: Path) -> list[Path]:
    """The run folders under <workspace>/runs, by name; dot-folders there are caches, not runs."""
    folder = runs_dir(workspace)
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")) if folder.is_dir() else []


def manifest_path(workspace: Path) -> Path:
    return Path(workspace) / MANIFEST_NAME


class WorkspaceError(RuntimeError):
    """The workspace cannot be used as it is; the message names what is wrong and what to do."""


def _manifested_files(workspace: Path):
    for path in sorted(Path(workspace).rglob("*")):
        relative = path.relative_to(workspace)
        if relative.parts[0] in UNMANIFESTED_TOP_LEVEL or not path.is_file():
            continue
        # Temporary files of an interrupted atomic write are not content.
        if path.name.startswith(".") and ".tmp" in path.name:
            continue
        yield relative.as_posix(), path


def write_manifest(workspace: Path, config: dict, splits: dict, extra: dict | None = None) -> dict:
    workspace = Path(workspace)
    files = {name: {"sha256": sha256_file(path), "size": path.stat().st_size} for name, path in _manifested_files(workspace)}
    manifest = {
        "format_version": WORKSPACE_FORMAT_VERSION,
        "files": files,
        "splits": splits,
        "config": config,
        "packages": package_versions(),
        **(extra or {}),
    }
    # Rewriting an identical manifest would make a no-op re-run look like a change to file-watching copies.
    if not manifest_path(workspace).is_file() or json.loads(manifest_path(workspace).read_text(encoding="utf-8")) != manifest:
        atomic_write_json(manifest_path(workspace), manifest)
    return manifest


@dataclass
class VerifyResult:
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered)

    def describe(self) -> str:
        lines = [f"{len(self.missing)} missing, {len(self.altered)} altered of {self.checked} files"]
        lines += [f"  missing: {name}" for name in self.missing]
        lines += [f"  altered: {name}" for name in self.altered]
        lines += [f"  not in manifest (ignored): {name}" for name in self.unexpected]
        return "\n".join(lines)


def load_manifest(workspace: Path) -> dict:
    path = manifest_path(workspace)
    if not path.is_file():
        raise WorkspaceError(
            f"no {MANIFEST_NAME} in {Path(workspace).resolve()}: this is not a finished workspace. "
            "Run `python run_online_setup.py` on the online machine and copy the whole folder."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise WorkspaceError(f"{path} is not valid JSON ({error}); the copy is probably incomplete") from None
    version = manifest.get("format_version")
    if version != WORKSPACE_FORMAT_VERSION:
        raise WorkspaceError(
            f"workspace format {version} in {path}, but this code reads format {WORKSPACE_FORMAT_VERSION}. "
            "Re-run the online setup with this version of the toolkit."
        )
    return manifest


def verify_workspace(workspace: Path, manifest: dict | None = None, only: tuple[str, ...] | None = None) -> VerifyResult:
    """Compare the folder with its manifest: size first (cheap), then sha256. `only` limits the check to
    these top-level folders (the offline scripts skip hashing the multi-GB wheelhouse they do not read)."""
    workspace = Path(workspace)
    manifest = manifest or load_manifest(workspace)
    expected_files = {
        name: entry for name, entry in manifest["files"].items() if only is None or name.split("/", 1)[0] in only
    }
    result = VerifyResult(checked=len(expected_files))
    for name, expected in expected_files.items():
        path = workspace / name
        if not path.is_file():
            result.missing.append(name)
        elif path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
            result.altered.append(name)
    present = {name for name, _ in _manifested_files(workspace) if only is None or name.split("/", 1)[0] in only}
    result.unexpected = sorted(present - set(expected_files))
    return result


def require_verified_workspace(workspace: Path, only: tuple[str, ...] = ("data", "model")) -> dict:
    """For the offline scripts: refuse to start on a half-copied or altered workspace."""
    manifest = load_manifest(workspace)
    result = verify_workspace(workspace, manifest, only)
    if not result.ok:
        raise WorkspaceError(
            f"workspace {Path(workspace).resolve()} does not match its manifest: {result.describe()}\n"
            "Copy the folder again from the online machine (or re-run run_online_setup.py there)."
        )
    return manifest
