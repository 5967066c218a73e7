"""The Whisper family: OpenAI Whisper of any size, fine-tuned with LoRA (the default) or in full, served by
transformers or CTranslate2.

Its parts: frames (Whisper's time grid), features (log-mel storage, labels, batches), encoder_window (training and
decoding without 30 s of padding), loading (a model folder's processor, weights and window), engines (greedy decoding
in transformers and CTranslate2), recognizer (evaluation rows and long audio with timestamps), trainer (the LoRA or
fully trainable model and its Seq2SeqTrainer), ct2_import / ct2_export (faster-whisper models in and out), ggml_export
(whisper.cpp).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from kowhisper.config import Config, ModelGroup
from kowhisper.families.base import ModelFamily, ModelSource, Recognizer
from kowhisper.families.whisper.ct2_export import export_ct2
from kowhisper.families.whisper.encoder_window import EncoderWindow
from kowhisper.families.whisper.engines import Decoding, load_engine
from kowhisper.families.whisper.ggml_export import export_ggml
from kowhisper.families.whisper.loading import load_hf_model, load_processor, trained_window
from kowhisper.families.whisper.options import WhisperOptions
from kowhisper.families.whisper.recognizer import WhisperRecognizer
from kowhisper.families.whisper.storage import WhisperClipEncoder, is_whisper_source, save_base_model


def _training():
    """kowhisper.families.whisper.trainer, which the training methods below hand their work to."""
    # Here, not at the top: it loads transformers' Trainer and peft (about 2 s), which inference.py and evaluate_model.py never use.
    from kowhisper.families.whisper import trainer

    return trainer


class WhisperFamily(ModelFamily):
    name = "whisper"
    title = "Whisper"
    # Prompt tokens, the encoder window, timestamped labels, the decoder's token limits and the CTranslate2 engine: a CTC
    # model has none of them.
    options = WhisperOptions

    def accepts(self, model_type: str) -> bool:
        return model_type == "whisper"

    def claims_source(self, source: str) -> bool:
        return is_whisper_source(source)

    def claims_model(self, source: ModelSource) -> bool:
        return source.kind == "ct2"  # CTranslate2 exports are made from Whisper models only

    def save_base_model(self, source: str, out: Path, config: Config) -> None:
        save_base_model(source, out, config)

    def clip_encoder(self, model_folder: Path, config: Config, train_texts):
        return WhisperClipEncoder(load_processor(model_folder), config)

    def recognizer(self, source: ModelSource, config: Config, *, one_clip_at_a_time: bool = False) -> Recognizer:
        engine = load_engine(source, Decoding.from_config(config), config.backend, config.ct2_quantization, config.ct2_dir,
                             parallel_clips=not one_clip_at_a_time)
        return WhisperRecognizer(engine)

    def load_merged(self, source: ModelSource):
        return load_hf_model(source, torch.device("cpu"), torch.float32)

    def copy_run_settings(self, source: ModelSource, folder: Path) -> None:
        trained_window(source).save(folder)

    def export_ct2(self, source: ModelSource, quantization: str, out_dir: Path | None) -> Path:
        return export_ct2(source, quantization, out_dir)

    def export_ggml(self, source: ModelSource, quantization: str, out_dir: Path | None) -> Path:
        return export_ggml(source, out_dir, quantization)

    def ggml_recognizer(self, model_file: Path, config: Config) -> Recognizer:
        from kowhisper.families.whisper.ggml_runner import WhisperCppRecognizer

        return WhisperCppRecognizer(model_file, Decoding.from_config(config).language)

    # ---- training ----

    def load_processor(self, workspace: Path, config: WhisperOptions):
        return _training().training_processor(workspace, config)

    def load_trainable_model(self, workspace: Path, config: Config, precision):
        return _training().load_trainable_model(workspace, config, precision)

    def training_arguments(self, config: WhisperOptions, arguments: dict):
        return _training().training_arguments(config, arguments)

    def prediction_texts(self, processor):
        return _training().prediction_texts(processor.tokenizer)

    def build_trainer(self, model, processor, args, data, config: Config, callbacks: list, stages=None, compute_metrics=None):
        return _training().build_trainer(model, processor, args, data, config, callbacks, stages, compute_metrics)

    def save_trained(self, model, processor, run_dir: Path, config: Config) -> Path:
        return _training().save_trained(model, processor, run_dir, config)

    def base_run_config(self, config: Config) -> Config:
        # The base always runs at Whisper's own 30 s window: a base model cut to a fitted window loops.
        return dataclasses.replace(config, encoder_window="full")

    def choose_run_config(self, trainer, config: Config, dev: dict, dev_step: int, metric: str, report=print):
        return _training().choose_encoder_window(trainer, config, dev, dev_step, metric, report)

    def start_run(self, config: WhisperOptions, run_dir: Path, resuming: bool) -> list[str]:
        return _training().start_run(config, run_dir, resuming)

    def default_learning_rate(self, finetune: str) -> float:
        return _training().FULL_FINETUNE_LEARNING_RATE if finetune == "full" else super().default_learning_rate(finetune)

    def model_card_intro(self, run_name: str, base_model: str, train_clips, config: ModelGroup) -> list[str]:
        if not self.trains_lora(config):
            return [
                "---",
                "library_name: transformers",
                f"base_model: {base_model}",
                "language: [ko]",
                "pipeline_tag: automatic-speech-recognition",
                "tags: [whisper, korean]",
                "---",
                "",
                f"# {run_name}: Whisper fully fine-tuned for Korean",
                "",
                f"Every weight of `{base_model}` fine-tuned (no LoRA), offline with `train_offline.py` on {train_clips} Korean "
                "clips. `model/` holds the full weights; no merge is needed.",
                "",
                "```python",
                "from transformers import WhisperForConditionalGeneration, WhisperProcessor",
                "",
                "model = WhisperForConditionalGeneration.from_pretrained('model')",
                "processor = WhisperProcessor.from_pretrained('model')",
                "```",
            ]
        return [
            "---",
            "library_name: peft",
            f"base_model: {base_model}",
            "language: [ko]",
            "pipeline_tag: automatic-speech-recognition",
            "tags: [whisper, lora, korean]",
            "---",
            "",
            f"# {run_name}: Whisper LoRA adapter for Korean",
            "",
            f"LoRA adapter for `{base_model}`, trained offline with `train_offline.py` on {train_clips} Korean clips.",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import WhisperForConditionalGeneration, WhisperProcessor",
            "",
            "base = WhisperForConditionalGeneration.from_pretrained('<workspace>/model')",
            "model = PeftModel.from_pretrained(base, 'adapter')",
            "processor = WhisperProcessor.from_pretrained('adapter')",
            "```",
        ]

    def run_summary(self, config: Config) -> dict:
        if self.trains_lora(config):
            targets = config.target_modules if isinstance(config.target_modules, str) else ", ".join(config.target_modules)
            mode = f"LoRA (r {config.lora_r}, alpha {config.lora_alpha} on {targets})"
        else:
            mode = "full (every weight)"
        if config.freeze_encoder:
            mode += ", encoder frozen"
        return {"fine-tuning": mode, "encoder window": EncoderWindow.from_config(config).describe()}

    stage_parts = ("encoder", "decoder")

    def part_of(self, parameter_name: str) -> str:
        return "encoder" if ".encoder." in parameter_name else "decoder"


WHISPER = WhisperFamily()
