"""The workspace folder: its layout, its manifest and the check that a copied folder is whole.

    workspace/
      manifest.json                 files (sha256, size), sources with their weights and split counts, leakage
                                    between sources, config, package versions
      data/<source>/<split>/        one source's split, in datasets' save_to_disk layout: input_features, labels,
                                    text, id, duration; dropped.jsonl lists its dropped rows with their reasons
      data/<source>/report.json     that source's kept and dropped rows per split
      model/                        base model (Whisper or CTC): safetensors, processor (and vocabulary or
                                    generation config, as its family keeps them)
      wheelhouse/                   pip wheels for the offline box
      runs/<run_name>/              training output (written offline, not part of the manifest); its final model in
                                    adapter/ (LoRA) or model/ (full weights)

Offline code finds the splits through `workspace_sources`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kowhisper.common.files import PARTIAL_SUFFIX, atomic_write_json, human_size, sha256_file
from kowhisper.common.runtime import package_versions

# Bump when the stored data or model layout changes in a way older code cannot read.
WORKSPACE_FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "dev", "test")
# Training runs are made on the offline box: they are not what the online phase vouches for, and the manifest cannot
# list itself.
UNMANIFESTED_TOP_LEVEL = ("runs", MANIFEST_NAME)
# Where a run keeps its final model: a LoRA adapter in <run>/adapter, fully fine-tuned weights in <run>/model.
FINAL_ADAPTER_DIR = "adapter"
FINAL_FULL_DIR = "model"


def data_dir(workspace: Path) -> Path:
    return Path(workspace) / "data"


def source_dir(workspace: Path, name: str) -> Path:
    """Where a new workspace keeps source `name`: data/<name>, holding train/, dev/, test/ and report.json."""
    return data_dir(workspace) / name


def source_report_path(workspace: Path, name: str) -> Path:
    return source_dir(workspace, name) / "report.json"


def model_dir(workspace: Path) -> Path:
    return Path(workspace) / "model"


def wheelhouse_dir(workspace: Path) -> Path:
    return Path(workspace) / "wheelhouse"


# A training run's settings, as train_offline.py records them and evaluation compares runs by.
RUN_CONFIG_NAME = "config.yaml"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def runs_dir(workspace: Path) -> Path:
    return Path(workspace) / "runs"


def list_runs(workspace: Path) -> list[Path]:
    """The run folders under <workspace>/runs, by name; dot-folders there are caches, not runs."""
    folder = runs_dir(workspace)
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")) if folder.is_dir() else []


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders of a run, oldest step first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [path for path in run_dir.iterdir() if path.is_dir() and checkpoint_step(path) is not None]
    return sorted(found, key=checkpoint_step)


def manifest_path(workspace: Path) -> Path:
    return Path(workspace) / MANIFEST_NAME


class WorkspaceError(RuntimeError):
    """The workspace cannot be used as it is; the message names what is wrong and what to do."""


def is_temporary(name: str) -> bool:
    """Whether a workspace-relative path is, or lies inside, something a setup was still writing (PARTIAL_SUFFIX)."""
    return any(part.endswith(PARTIAL_SUFFIX) for part in PurePosixPath(name).parts)


def _files_on_disk(workspace: Path):
    """(relative name, path) of every file of the workspace but the training runs and the manifest itself."""
    for path in sorted(Path(workspace).rglob("*")):
        relative = path.relative_to(workspace)
        if relative.parts[0] not in UNMANIFESTED_TOP_LEVEL and path.is_file():
            yield relative.as_posix(), path


def _manifested_files(workspace: Path, left_out: tuple[str, ...] = ()):
    for name, path in _files_on_disk(workspace):
        if is_temporary(name) or any(name == folder or name.startswith(folder + "/") for folder in left_out):
            continue
        yield name, path


def remove_leftovers(workspace: Path, under: str = "") -> list[str]:
    """Delete what an interrupted setup left half-written in the workspace (or in its folder `under`), and say so.
    Such files are never trusted: the step that wrote them starts over. Training runs are not touched."""
    workspace = Path(workspace)
    removed = []
    for path in sorted((workspace / under).rglob("*")):
        relative = path.relative_to(workspace).as_posix()
        # An earlier removal may have taken the path with its folder.
        if relative.split("/", 1)[0] != "runs" and is_temporary(path.name) and path.exists():
            removed.append(remove_leftover(path, relative))
    return removed


def remove_leftover(path: Path, shown: str) -> str:
    """Delete one file or folder an interrupted setup left, saying so; `shown` is how the message names it."""
    path = Path(path)
    if path.is_dir():
        size = sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
        shutil.rmtree(path)
        shown += "/"
    else:
        size = path.stat().st_size
        path.unlink()
    print(f"removed {shown} ({human_size(size)}), left by an interrupted setup")
    return shown


def write_manifest(workspace: Path, config: dict, splits: dict, sources: list[dict], extra: dict | None = None,
                   left_out: tuple[str, ...] = ()) -> dict:
    """Hash every file and record it with the split totals, the sources and the config. `sources` holds one entry
    per source: {"name", "weight", "dir" (relative, data/<name>), "config" (its data keys), "splits"}. Paths in
    `left_out` (relative, e.g. data/<a source no longer configured>) stay on disk but are not vouched for."""
    workspace = Path(workspace)
    files = {name: {"sha256": sha256_file(path), "size": path.stat().st_size} for name, path in _manifested_files(workspace, left_out)}
    manifest = {
        "format_version": WORKSPACE_FORMAT_VERSION,
        "files": files,
        "splits": splits,
        "sources": sources,
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
        lines += [f"  not part of the bundle: {name}" for name in self.unexpected]
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
    if not manifest.get("sources"):
        raise WorkspaceError(f"{path} (format {version}) lists no data sources; re-run the online setup")
    return manifest


@dataclass(frozen=True)
class WorkspaceSource:
    """One prepared source of a workspace, as the offline side sees it."""

    name: str
    weight: float  # share of training samples (normalised over the sources); 0: held out, evaluated only
    dir: Path  # absolute; holds train/, dev/, test/

    def split_dir(self, split: str) -> Path:
        return self.dir / split


def workspace_sources(workspace: Path, manifest: dict | None = None) -> list[WorkspaceSource]:
    """The workspace's sources in manifest order."""
    workspace = Path(workspace).resolve()
    manifest = manifest or load_manifest(workspace)
    return [WorkspaceSource(entry["name"], float(entry["weight"]), workspace / entry["dir"]) for entry in manifest["sources"]]


def source_origins(manifest: dict) -> dict[str, str]:
    """Where each source's clips came from, as the online setup described it, by source name."""
    return {entry["name"]: entry.get("description") or f"{entry['config'].get('data_source')} {entry['config'].get('data_path')}"
            for entry in manifest["sources"]}


def split_dir(workspace: Path, split: str) -> Path:
    """The folder of `split` in a workspace of one source. With several sources there is no one
    folder: use `workspace_sources` and each source's `split_dir`."""
    sources = workspace_sources(workspace)
    if len(sources) != 1:
        raise WorkspaceError(
            f"{Path(workspace).resolve()} holds {len(sources)} sources ({', '.join(source.name for source in sources)}), "
            f"so its {split} split is one per source; this step reads a single source"
        )
    return sources[0].split_dir(split)


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
    # Reported, not failed: a file the manifest does not list is not read by the offline scripts, but the user should
    # know that it is in the folder and that nothing vouches for it.
    present = {name for name, _ in _files_on_disk(workspace) if only is None or name.split("/", 1)[0] in only}
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
