"""The folder rules every export follows (a merged model, the Whisper family's CTranslate2 and whisper.cpp exports): where exports go,
what they were made from, and how a finished folder replaces an older one.

Every folder written here carries a small `kowhisper_export.json` naming its source; a later export may
replace such a folder, but never a folder it did not write. Below the families, which export through it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from kowhisper.common.files import atomic_write_json, sha256_file
from kowhisper.families.base import ADAPTER_WEIGHTS, FINAL_ADAPTER_DIR, ModelError, ModelSource

EXPORT_MARKER = "kowhisper_export.json"


def adapter_home(source: ModelSource) -> Path:
    """Where a model's exports go: a run's final adapter lives in <run>/adapter, so its exports go to <run>/;
    a checkpoint keeps its own."""
    return source.path.parent if source.path.name == FINAL_ADAPTER_DIR else source.path


def source_fingerprint(source: ModelSource, **extra) -> dict:
    """What an export was made from: adapter weights and its run settings by hash (a few KB to MB), base weights
    by size and time (hashing a GB on every start would cost more than the export saves)."""
    fingerprint = {
        "kind": source.kind,
        "source": str(source.path),
        "base_weights": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(source.weights_dir.glob("*.safetensors"))},
        **extra,
    }
    if source.kind == "adapter":
        fingerprint["adapter_sha256"] = sha256_file(source.path / ADAPTER_WEIGHTS)
    return fingerprint


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def check_replaceable(out_dir: Path) -> None:
    """Raise ModelError if `out_dir` holds something an export did not write: called before a long export, so it
    fails at once, and again by replace_folder, in case the folder appeared meanwhile."""
    if out_dir.exists() and read_marker(out_dir) is None:
        raise ModelError(f"{out_dir} exists and was not written by this toolkit; choose another folder or remove it")


def replace_folder(staged: Path, out_dir: Path) -> None:
    """Move a finished folder into place; an old folder is replaced only if an earlier export wrote it."""
    if out_dir.exists():
        check_replaceable(out_dir)
        shutil.rmtree(out_dir)
    staged.replace(out_dir)


def staging_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def save_full_model(source: ModelSource, out_dir: Path, model, processor, save_run_settings) -> None:
    """`model` (float32, any adapter already merged into it) with its processor and, through `save_run_settings(folder)`,
    what `source` was trained with, written to a scratch folder and moved into `out_dir` when complete."""
    staged = staging_dir(out_dir)
    try:
        model.save_pretrained(staged)  # safetensors: transformers 5 writes nothing else
        processor.save_pretrained(staged)
        # transformers 5 keeps the feature settings inside processor_config.json; other runtimes read this file.
        processor.feature_extractor.save_pretrained(staged)
        save_run_settings(staged)  # the saved model runs as it was trained
        atomic_write_json(staged / EXPORT_MARKER, source_fingerprint(source))
        replace_folder(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
