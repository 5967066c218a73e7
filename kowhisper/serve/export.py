"""Shipping a model: base + LoRA merged into one safetensors model (any family; a fully fine-tuned model needs no
merge). The folder rules every export follows are kowhisper.families.export_folders; the Whisper family's CTranslate2 export
is kowhisper.families.whisper.ct2_export.

The merge loads the base in float32 whatever it was trained in: merging a LoRA update into an 8-bit base is a
known failure (the update is rounded away or the layers cannot be merged at all).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kowhisper.families.base import ModelError, ModelSource
from kowhisper.families.export_folders import adapter_home, save_full_model
from kowhisper.families.registry import family_of_source

log = logging.getLogger("kowhisper")


def default_merged_dir(source: ModelSource) -> Path:
    if source.kind != "adapter":
        raise ModelError(f"nothing to merge: {source.label} has no LoRA adapter (give adapter=RUN_OR_ADAPTER)")
    return adapter_home(source) / "merged"


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
    settings it was trained with."""
    family = family_of_source(source)
    model, processor = family.load_merged(source)
    save_full_model(source, out_dir, model, processor, lambda folder: family.copy_run_settings(source, folder))
