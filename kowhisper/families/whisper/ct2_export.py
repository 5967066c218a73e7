"""The Whisper family's CTranslate2 export, for faster-whisper and for inference.py's default CPU engine.

ctranslate2's own TransformersConverter runs on a merged folder, plus the processor files, so the folder works
both with `inference.py adapter=DIR` and with `faster_whisper.WhisperModel(DIR)`. The encoder window the model
was trained with goes along: CTranslate2 takes windows shorter than 30 s as they are.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import ctranslate2
import torch
from ctranslate2.converters import TransformersConverter

from kowhisper.common.files import atomic_write_json
from kowhisper.families.base import FINAL_FULL_DIR, ModelError, ModelSource, is_ct2_model_dir
from kowhisper.families.export_folders import (
    EXPORT_MARKER,
    adapter_home,
    read_marker,
    replace_folder,
    save_full_model,
    source_fingerprint,
    staging_dir,
)
from kowhisper.families.whisper.loading import load_hf_model, load_processor, trained_window

log = logging.getLogger("kowhisper")

CT2_QUANTIZATIONS = ("int8", "int8_float16", "int8_float32", "int8_bfloat16", "float16", "bfloat16", "float32")
# What a CTranslate2 folder needs beside model.bin: transformers' processor files for inference.py, and
# preprocessor_config.json, which faster-whisper reads for the mel count (128 for large-v3).
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def default_ct2_dir(source: ModelSource, quantization: str) -> Path:
    if source.kind == "adapter":
        return adapter_home(source) / f"ct2-{quantization}"
    if source.kind == "base":
        # <workspace>/model is vouched for by the manifest, so nothing is written inside it.
        return source.path.parent / "exports" / f"base-ct2-{quantization}"
    if source.path.name == FINAL_FULL_DIR and source.run_dir is not None:
        return source.run_dir / f"ct2-{quantization}"  # a fully fine-tuned run's, beside its model/ as an adapter run's
    return source.path.parent / f"{source.path.name}-ct2-{quantization}"


def ct2_fingerprint(source: ModelSource, quantization: str) -> dict:
    return source_fingerprint(source, quantization=quantization, ctranslate2=ctranslate2.__version__,
                              encoder_window=asdict(trained_window(source)))


def export_ct2(source: ModelSource, quantization: str = "int8", out_dir: Path | None = None) -> Path:
    """CTranslate2 export of a base, adapter (merged first, in a scratch folder) or full-weights model (merged or
    fully fine-tuned, converted as it is)."""
    if quantization not in CT2_QUANTIZATIONS:
        raise ModelError(f"ct2_quantization={quantization!r} is not one of {', '.join(CT2_QUANTIZATIONS)}")
    if source.kind == "ct2":
        raise ModelError(f"{source.path} is already a CTranslate2 export")
    out_dir = Path(out_dir) if out_dir else default_ct2_dir(source, quantization)
    staged = staging_dir(out_dir)
    try:
        model_dir = source.path
        if source.kind == "adapter":
            # Merged as kowhisper.serve.export merges (base in float32 on the CPU), into the scratch folder.
            model_dir = staged / "merged"
            save_full_model(source, model_dir, *load_hf_model(source, torch.device("cpu"), torch.float32), trained_window(source).save)
            log.info("merged %s into %s", source.label, model_dir)
        converted = staged / "ct2"
        copy_files = [name for name in PROCESSOR_FILES if (model_dir / name).is_file()]
        TransformersConverter(str(model_dir), copy_files=copy_files).convert(str(converted), quantization=quantization)
        if not (converted / "preprocessor_config.json").is_file():
            # transformers 5 keeps the mel settings inside processor_config.json; faster-whisper reads this file.
            load_processor(model_dir).feature_extractor.save_pretrained(converted)
        trained_window(source).save(converted)
        atomic_write_json(converted / EXPORT_MARKER, ct2_fingerprint(source, quantization))
        replace_folder(converted, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("exported %s to CTranslate2 %s in %s", source.label, quantization, out_dir)
    return out_dir


def ensure_ct2_export(source: ModelSource, quantization: str = "int8", out_dir: Path | None = None) -> Path:
    """The CTranslate2 export of `source`, made now only if missing or made from other weights."""
    out_dir = Path(out_dir) if out_dir else default_ct2_dir(source, quantization)
    if is_ct2_model_dir(out_dir) and read_marker(out_dir) == ct2_fingerprint(source, quantization):
        return out_dir
    log.info("exporting %s to CTranslate2 %s once, in %s (backend=hf skips this)", source.label, quantization, out_dir)
    return export_ct2(source, quantization, out_dir)
