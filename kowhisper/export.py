"""Shipping a model: base + LoRA merged into one safetensors model, and a CTranslate2 export for faster-whisper.

The merge loads the base in float32 whatever it was trained in: merging a LoRA update into an 8-bit base is a
known failure (the update is rounded away or the layers cannot be merged at all). The CTranslate2 export is
ctranslate2's own TransformersConverter run on a merged folder, plus the processor files, so the folder
works both with `inference.py adapter=DIR` and with `faster_whisper.WhisperModel(DIR)`.

Every folder written here carries a small `kowhisper_export.json` naming its source; a later export may
replace such a folder, but never a folder it did not write.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from kowhisper.ct2_import import is_ct2_model_dir
from kowhisper.modeling import ADAPTER_WEIGHTS, ModelError, ModelSource, load_hf_model, load_processor
from utils import atomic_write_json, sha256_file

log = logging.getLogger("kowhisper")

EXPORT_MARKER = "kowhisper_export.json"
CT2_QUANTIZATIONS = ("int8", "int8_float16", "int8_float32", "int8_bfloat16", "float16", "bfloat16", "float32")
# What a CTranslate2 folder needs beside model.bin: transformers' processor files for inference.py, and
# preprocessor_config.json, which faster-whisper reads for the mel count (128 for large-v3).
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def _adapter_home(source: ModelSource) -> Path:
    # A run's final adapter lives in <run>/adapter, so its exports go to <run>/; a checkpoint keeps its own.
    return source.path.parent if source.path.name == "adapter" else source.path


def default_merged_dir(source: ModelSource) -> Path:
    if source.kind != "adapter":
        raise ModelError(f"nothing to merge: {source.label} has no LoRA adapter (give adapter=RUN_OR_ADAPTER)")
    return _adapter_home(source) / "merged"


def default_ct2_dir(source: ModelSource, quantization: str) -> Path:
    if source.kind == "adapter":
        return _adapter_home(source) / f"ct2-{quantization}"
    if source.kind == "base":
        # <workspace>/model is vouched for by the manifest, so nothing is written inside it.
        return source.path.parent / "exports" / f"base-ct2-{quantization}"
    return source.path.parent / f"{source.path.name}-ct2-{quantization}"


def source_fingerprint(source: ModelSource, quantization: str | None = None) -> dict:
    """What an export was made from: adapter weights by hash (a few MB), base weights by size and time
    (hashing a GB on every start would cost more than the export saves)."""
    import ctranslate2

    weights_dir = source.base_dir if source.kind == "adapter" else source.path
    fingerprint = {
        "kind": source.kind,
        "source": str(source.path),
        "base_weights": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(weights_dir.glob("*.safetensors"))},
        "quantization": quantization,
        "ctranslate2": ctranslate2.__version__ if quantization else None,
        "encoder_window": asdict(source.window),
    }
    if source.kind == "adapter":
        fingerprint["adapter_sha256"] = sha256_file(source.path / ADAPTER_WEIGHTS)
    return fingerprint


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _replace_folder(staged: Path, out_dir: Path) -> None:
    """Move a finished folder into place; an old folder is replaced only if an earlier export wrote it."""
    if out_dir.exists():
        if _read_marker(out_dir) is None:
            raise ModelError(f"{out_dir} exists and was not written by this toolkit; choose another folder or remove it")
        shutil.rmtree(out_dir)
    staged.replace(out_dir)


def _staging_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def merge_adapter(source: ModelSource, out_dir: Path | None = None) -> Path:
    """Base + LoRA -> one float32 safetensors model with its processor. Returns the folder."""
    import torch

    out_dir = Path(out_dir) if out_dir else default_merged_dir(source)
    if source.kind != "adapter":
        raise ModelError(f"nothing to merge: {source.label} has no LoRA adapter")
    model, processor = load_hf_model(source, torch.device("cpu"), torch.float32)
    staged = _staging_dir(out_dir)
    try:
        model.save_pretrained(staged)  # safetensors: transformers 5 writes nothing else
        processor.save_pretrained(staged)
        processor.feature_extractor.save_pretrained(staged)
        source.window.save(staged)  # the merged model runs at the window its adapter was trained with
        atomic_write_json(staged / EXPORT_MARKER, source_fingerprint(source))
        _replace_folder(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("merged %s into %s", source.label, out_dir)
    return out_dir


def export_ct2(source: ModelSource, quantization: str = "int8", out_dir: Path | None = None) -> Path:
    """CTranslate2 export of a base, adapter (merged first, in a scratch folder) or merged model."""
    from ctranslate2.converters import TransformersConverter

    if quantization not in CT2_QUANTIZATIONS:
        raise ModelError(f"ct2_quantization={quantization!r} is not one of {', '.join(CT2_QUANTIZATIONS)}")
    if source.kind == "ct2":
        raise ModelError(f"{source.path} is already a CTranslate2 export")
    out_dir = Path(out_dir) if out_dir else default_ct2_dir(source, quantization)
    staged = _staging_dir(out_dir)
    try:
        model_dir = source.path
        if source.kind == "adapter":
            model_dir = merge_adapter(source, staged / "merged")
        converted = staged / "ct2"
        copy_files = [name for name in PROCESSOR_FILES if (model_dir / name).is_file()]
        TransformersConverter(str(model_dir), copy_files=copy_files).convert(str(converted), quantization=quantization)
        if not (converted / "preprocessor_config.json").is_file():
            # transformers 5 keeps the mel settings inside processor_config.json; faster-whisper reads this file.
            load_processor(model_dir).feature_extractor.save_pretrained(converted)
        source.window.save(converted)
        atomic_write_json(converted / EXPORT_MARKER, source_fingerprint(source, quantization))
        _replace_folder(converted, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("exported %s to CTranslate2 %s in %s", source.label, quantization, out_dir)
    return out_dir


def ensure_ct2_export(source: ModelSource, quantization: str = "int8", out_dir: Path | None = None) -> Path:
    """The CTranslate2 export of `source`, made now only if missing or made from other weights."""
    out_dir = Path(out_dir) if out_dir else default_ct2_dir(source, quantization)
    if is_ct2_model_dir(out_dir) and _read_marker(out_dir) == source_fingerprint(source, quantization):
        return out_dir
    log.info("exporting %s to CTranslate2 %s once, in %s (backend=hf skips this)", source.label, quantization, out_dir)
    return export_ct2(source, quantization, out_dir)
