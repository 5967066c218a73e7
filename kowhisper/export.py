"""Shipping a model: base + LoRA merged into one safetensors model (any family; a fully fine-tuned model needs no
merge), and the folder rules every export follows (the Whisper family's CTranslate2 export is
kowhisper.whisper.ct2_export).

The merge loads the base in float32 whatever it was trained in: merging a LoRA update into an 8-bit base is a
known failure (the update is rounded away or the layers cannot be merged at all).

Every folder written here carries a small `kowhisper_export.json` naming its source; a later export may
replace such a folder, but never a folder it did not write.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from kowhisper.modeling import ADAPTER_WEIGHTS, FINAL_ADAPTER_DIR, ModelError, ModelSource
from utils import atomic_write_json, sha256_file

log = logging.getLogger("kowhisper")

EXPORT_MARKER = "kowhisper_export.json"


def adapter_home(source: ModelSource) -> Path:
    """Where a model's exports go: a run's final adapter lives in <run>/adapter, so its exports go to <run>/;
    a checkpoint keeps its own."""
    return source.path.parent if source.path.name == FINAL_ADAPTER_DIR else source.path


def default_merged_dir(source: ModelSource) -> Path:
    if source.kind != "adapter":
        raise ModelError(f"nothing to merge: {source.label} has no LoRA adapter (give adapter=RUN_OR_ADAPTER)")
    return adapter_home(source) / "merged"


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


def replace_folder(staged: Path, out_dir: Path) -> None:
    """Move a finished folder into place; an old folder is replaced only if an earlier export wrote it."""
    if out_dir.exists():
        if read_marker(out_dir) is None:
            raise ModelError(f"{out_dir} exists and was not written by this toolkit; choose another folder or remove it")
        shutil.rmtree(out_dir)
    staged.replace(out_dir)


def staging_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def merge_adapter(source: ModelSource, out_dir: Path | None = None) -> Path:
    """Base + LoRA -> one float32 safetensors model with its processor and run settings. Returns the folder."""
    out_dir = Path(out_dir) if out_dir else default_merged_dir(source)
    if source.kind != "adapter":
        raise ModelError(f"nothing to merge: {source.label} has no LoRA adapter")
    _save_full_model(source, out_dir)
    log.info("merged %s into %s", source.label, out_dir)
    return out_dir


def merge_for_shipping(source: ModelSource, out_dir: Path | None = None) -> str:
    """What `inference.py --merge` does, as the line it prints. A LoRA adapter is merged into its base. A model that is
    full weights already (a fully fine-tuned run, a merged export) has nothing to merge: it is named where it is, or,
    when `out_dir` is given, saved there as the merge would save it (weights, processor, run settings; no optimizer
    state from a checkpoint)."""
    if source.kind != "merged":
        return f"merged model: {merge_adapter(source, out_dir)}"
    if out_dir is None or Path(out_dir).expanduser().resolve() == source.path:
        return f"{source.label} is already full weights (no LoRA adapter to merge); use it as it is: {source.path}"
    out_dir = Path(out_dir).expanduser()
    _save_full_model(source, out_dir)
    log.info("copied %s into %s", source.label, out_dir)
    return f"{source.label} is already full weights (no LoRA adapter to merge); saved a copy in {out_dir}"


def _save_full_model(source: ModelSource, out_dir: Path) -> None:
    """`source` as one float32 safetensors model (a LoRA adapter merged into its base) with its processor and the
    settings it was trained with, written to a scratch folder and moved into `out_dir` when complete."""
    family = source.family
    model, processor = family.load_merged(source)
    staged = staging_dir(out_dir)
    try:
        model.save_pretrained(staged)  # safetensors: transformers 5 writes nothing else
        processor.save_pretrained(staged)
        # transformers 5 keeps the feature settings inside processor_config.json; other runtimes read this file.
        processor.feature_extractor.save_pretrained(staged)
        family.copy_run_settings(source, staged)  # the saved model runs as it was trained
        atomic_write_json(staged / EXPORT_MARKER, source_fingerprint(source))
        replace_folder(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
