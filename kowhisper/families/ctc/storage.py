"""What the CTC family keeps in the workspace: the base model with its feature extractor and character vocabulary,
and each clip as 16 kHz audio.

A clip is stored as int16 samples (2 bytes a sample, half of float32, and lossless for audio decoded from 16-bit
sources), its length in samples (`input_length`, the column group_by_length sorts on) and its character labels.
Features are not stored: what a model reads depends on its extractor (raw samples normalised per utterance for
wav2vec2, XLS-R, HuBERT, WavLM and MMS; log-mel filter banks for w2v-BERT), so the collator runs the extractor on
each batch.

A clip too short to make one output frame (shorter than the model's receptive field, 400 samples for a wav2vec2
feature encoder) is dropped as too_short; one whose labels need more frames than the audio gives (CTC needs a
frame per character and a blank between repeated ones) as labels_too_long.
"""

from __future__ import annotations

import filecmp
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Features, Sequence, Value
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoProcessor, Wav2Vec2CTCTokenizer

from kowhisper.common.audio import SAMPLING_RATE, to_int16
from kowhisper.common.files import partial_path
from kowhisper.common.workspace import model_dir
from kowhisper.config import Config
from kowhisper.families.base import ModelError, StorageError
from kowhisper.families.ctc.vocabulary import MAX_UNKNOWN_SHARE, CharacterRules, build_vocabulary, coverage, make_tokenizer

log = logging.getLogger("kowhisper")

# Written beside the vocabulary: where it came from. "model": the base model's own (kept on every run);
# "training text": built by the data step (rebuilt when the training text or the character rules change).
ORIGIN_FILE = "ctc_vocabulary.json"


@dataclass(frozen=True)
class FrameGeometry:
    """How many output frames a number of samples gives, from the model's config (no weights needed)."""

    kind: str  # "conv": a wav2vec2-style convolutional feature encoder; "fbank": w2v-BERT's 10 ms filter banks
    kernels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    adapter_layers: int = 0
    adapter_kernel: int = 1
    adapter_stride: int = 1
    fbank_stride: int = 2

    @classmethod
    def from_config(cls, config) -> FrameGeometry:
        adapter = (config.num_adapter_layers if getattr(config, "add_adapter", False) else 0, getattr(config, "adapter_stride", 1))
        if getattr(config, "conv_kernel", None) and getattr(config, "conv_stride", None):
            return cls("conv", tuple(config.conv_kernel), tuple(config.conv_stride), adapter[0], 1, adapter[1])
        if config.model_type == "wav2vec2-bert":
            return cls("fbank", adapter_layers=adapter[0], adapter_kernel=getattr(config, "adapter_kernel_size", 3),
                       adapter_stride=adapter[1])
        raise StorageError(
            f"{config.model_type} is a CTC model, but not one this toolkit can train: it has neither a wav2vec2-style "
            "convolutional feature encoder (conv_kernel, conv_stride) nor w2v-BERT's filter-bank input. Supported: "
            "wav2vec2, XLS-R, MMS, HuBERT, WavLM, data2vec-audio, SEW, UniSpeech, wav2vec2-conformer, w2v-BERT 2.0."
        )

    def output_frames(self, samples: int) -> int:
        length = samples
        if self.kind == "conv":
            for kernel, stride in zip(self.kernels, self.strides):
                length = (length - kernel) // stride + 1 if length >= kernel else 0
            pad = 0
        else:
            frames = (length - 400) // 160 + 1 if length >= 400 else 0  # 25 ms windows every 10 ms
            length = frames // self.fbank_stride
            pad = self.adapter_kernel // 2
        for _ in range(self.adapter_layers):
            length = (length + 2 * pad - self.adapter_kernel) // self.adapter_stride + 1 if length > 0 else 0
        return max(length, 0)

    @property
    def receptive_field(self) -> int:
        """The fewest samples that give one output frame."""
        low, high = 1, 1
        while self.output_frames(high) < 1:
            high *= 2
        while low < high:
            middle = (low + high) // 2
            low, high = (middle + 1, high) if self.output_frames(middle) < 1 else (low, middle)
        return low

    @property
    def samples_per_frame(self) -> int:
        base = math.prod(self.strides) if self.kind == "conv" else 160 * self.fbank_stride
        return base * self.adapter_stride ** self.adapter_layers


def frames_needed(labels: list[int]) -> int:
    """CTC emits one frame per label and needs a blank between two equal labels in a row."""
    return len(labels) + sum(1 for a, b in zip(labels, labels[1:]) if a == b)


class CTCClipEncoder:
    """Labels and stored audio of one clip. Built once, pickled into every preparation worker."""

    def __init__(self, tokenizer, feature_extractor, geometry: FrameGeometry, rules: CharacterRules):
        self.tokenizer = tokenizer
        self.geometry = geometry
        self.rules = rules
        self.identity = {
            "vocabulary": sorted(tokenizer.get_vocab().items()),
            "feature_extractor": feature_extractor.to_dict(),
            "geometry": geometry.__dict__,
            "rules": rules.__dict__,
        }

    def features(self):
        return Features({
            "id": Value("string"),
            "text": Value("string"),
            "duration": Value("float32"),
            "audio": Sequence(Value("int16")),
            "input_length": Value("int32"),
            "labels": Sequence(Value("int32")),
        })

    def encode_text(self, text: str):
        label_text = self.rules.label_text(text)
        if not label_text:
            return None, "empty_text", f"nothing left for CTC labels once dropped characters are removed from {text!r}"
        return self.tokenizer(label_text).input_ids, None, None

    def encode_audio(self, waveform, labels: list[int]):
        samples = len(waveform)
        if samples < self.geometry.receptive_field:
            return None, "too_short", (f"{samples} samples ({samples / SAMPLING_RATE * 1000:.0f} ms) < the model's receptive field "
                                       f"of {self.geometry.receptive_field} samples")
        frames, needed = self.geometry.output_frames(samples), frames_needed(labels)
        if needed > frames:
            return None, "labels_too_long", f"{len(labels)} label characters need {needed} CTC frames, the audio gives {frames}"
        return {"audio": to_int16(waveform), "input_length": samples, "labels": labels}, None, None


def load_processor(folder: Path):
    """The model folder's feature extractor and CTC tokenizer as one processor (Wav2Vec2Processor or its kin)."""
    processor = AutoProcessor.from_pretrained(str(folder))
    if not hasattr(processor, "tokenizer") or not (Path(folder) / "vocab.json").is_file():
        raise ModelError(f"{folder} has no CTC vocabulary (vocab.json): the online setup's data step builds it; "
                         "re-run run_online_setup.py")
    return processor


def vocabulary_origin(folder: Path) -> str | None:
    path = Path(folder) / ORIGIN_FILE
    return json.loads(path.read_text(encoding="utf-8"))["origin"] if path.is_file() else None


def clip_encoder(model_folder: Path, config: Config, train_texts) -> CTCClipEncoder:
    """The encoder for the workspace's clips. The vocabulary is the model's own if it came with one, else built from
    `train_texts` and saved beside the model (only into the workspace's model folder, never into a source folder)."""
    model_folder = Path(model_folder)
    rules = CharacterRules.from_config(config)
    texts = list(train_texts)
    if vocabulary_origin(model_folder) == "model":
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(model_folder))
        log.info("vocabulary: the model's own, %d tokens", len(tokenizer))
    else:
        if model_folder.resolve() != model_dir(config.workspace_dir).resolve():
            raise StorageError(f"the CTC vocabulary is saved beside the workspace's model, and {model_dir(config.workspace_dir)} "
                               "has none yet: run download_model.py (or run_online_setup.py) first")
        tokenizer = save_vocabulary(build_vocabulary(texts, rules), model_folder, rules)
        log.info("vocabulary: %d tokens built from %d training transcripts", len(tokenizer), len(texts))
    report = coverage(texts, tokenizer.get_vocab(), rules)
    print(f"CTC vocabulary ({len(tokenizer)} tokens): {report.describe()}")
    if report.unknown_share > MAX_UNKNOWN_SHARE:
        raise StorageError(
            f"{report.describe()}. That is more than {100 * MAX_UNKNOWN_SHARE:.0f}%: the model would learn to write {tokenizer.unk_token} "
            "for them. Use a base model without a vocabulary of its own (it then gets one built from the text), or "
            "ctc_latin_digits=keep / ctc_punctuation=keep if those characters matter."
        )
    extractor = AutoFeatureExtractor.from_pretrained(str(model_folder))
    return CTCClipEncoder(tokenizer, extractor, FrameGeometry.from_config(AutoConfig.from_pretrained(str(model_folder))), rules)


def save_vocabulary(vocabulary: dict[str, int], folder: Path, rules: CharacterRules):
    """The tokenizer files in `folder`, rewritten only where they change, so a repeated setup leaves them untouched.
    They are written in a staging folder beside them and each renamed into place, so none is ever half written; a
    staging folder a killed setup left is removed with the other leftovers (kowhisper.common.workspace.remove_leftovers)."""
    folder = Path(folder)
    staging = partial_path(folder / "vocabulary")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokenizer = make_tokenizer(vocabulary, staging / "build")
        tokenizer.save_pretrained(str(staging / "saved"))
        (staging / "saved" / ORIGIN_FILE).write_text(json.dumps({"origin": "training text", "rules": rules.__dict__}), encoding="utf-8")
        for path in sorted((staging / "saved").iterdir()):
            target = folder / path.name
            if not (target.is_file() and filecmp.cmp(path, target, shallow=False)):
                os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Wav2Vec2CTCTokenizer.from_pretrained(str(folder))


def save_base_model(source: str, out: Path, config: Config) -> None:
    """The CTC model named `source` (Hub id or local folder) with its feature extractor, as safetensors in `out`; its
    CTC vocabulary too when it has a trained head and one (a fine-tune), else the data step builds one from text."""
    try:
        # safetensors only and no remote code: a pickled .bin or a repository's Python could run anything.
        model, info = AutoModelForCTC.from_pretrained(source, dtype=torch.float32, use_safetensors=True, output_loading_info=True)
        extractor = AutoFeatureExtractor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise StorageError(
            f"cannot load the CTC model {source!r}: {str(error).splitlines()[0]}\n"
            "Give a Hub id (online) or a local transformers folder with model.safetensors and preprocessor_config.json."
        ) from None
    FrameGeometry.from_config(model.config)  # refuses a CTC architecture the stored clips could not serve
    if getattr(extractor, "sampling_rate", SAMPLING_RATE) != SAMPLING_RATE:
        raise StorageError(f"{source} reads {extractor.sampling_rate} Hz audio; the workspace stores {SAMPLING_RATE} Hz")
    trained_head = not any(key.startswith("lm_head") for key in info.get("missing_keys", []))
    tokenizer = None
    if trained_head:
        try:
            tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(source)
        except (OSError, ValueError, TypeError):
            log.info("model: %s has a CTC head but no vocabulary; one is built from the training text", source)
    model.config.dtype = torch.float32
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    extractor.save_pretrained(out)
    if tokenizer is not None and len(tokenizer) <= model.config.vocab_size:
        tokenizer.save_pretrained(str(out))
        (out / ORIGIN_FILE).write_text(json.dumps({"origin": "model"}), encoding="utf-8")
        log.info("model: keeping %s's own CTC vocabulary (%d tokens)", source, len(tokenizer))
    AutoModelForCTC.from_pretrained(out, local_files_only=True, use_safetensors=True)
    AutoFeatureExtractor.from_pretrained(out, local_files_only=True)
