"""The Whisper family: OpenAI Whisper of any size, fine-tuned with LoRA (the default) or in full, served by
transformers or CTranslate2.

Its parts: frames (Whisper's time grid), features (log-mel storage, labels, batches), encoder_window (training and
decoding without 30 s of padding), loading (a model folder's processor, weights and window), engines (greedy decoding
in transformers and CTranslate2), recognizer (evaluation rows and long audio with timestamps), trainer (the LoRA or
fully trainable model and its Seq2SeqTrainer), ct2_import / ct2_export (faster-whisper models in and out).
"""

from __future__ import annotations

from pathlib import Path

from kowhisper.families.base import ModelFamily, ModelSource, Recognizer


class WhisperFamily(ModelFamily):
    name = "whisper"
    title = "Whisper"
    # Prompt tokens, the encoder window, timestamped labels, the decoder's token limits and the CTranslate2 engine: a CTC
    # model has none of them.
    own_config_keys = ("language", "task", "max_label_tokens", "freeze_encoder", "encoder_window", "encoder_window_tail_frames",
                       "encoder_window_round_frames", "timestamped_label_share", "generation_max_length", "ct2_dir",
                       "ct2_quantization")

    def accepts(self, model_type: str) -> bool:
        return model_type == "whisper"

    def claims_source(self, source: str) -> bool:
        from kowhisper.families.whisper.storage import is_whisper_source

        return is_whisper_source(source)

    def claims_model(self, source: ModelSource) -> bool:
        return source.kind == "ct2"  # CTranslate2 exports are made from Whisper models only

    def save_base_model(self, source: str, out: Path, config) -> None:
        from kowhisper.families.whisper.storage import save_base_model

        save_base_model(source, out, config)

    def clip_encoder(self, model_folder: Path, config, train_texts):
        from kowhisper.families.whisper.loading import load_processor
        from kowhisper.families.whisper.storage import WhisperClipEncoder

        return WhisperClipEncoder(load_processor(model_folder), config)

    def recognizer(self, source: ModelSource, config, *, one_clip_at_a_time: bool = False) -> Recognizer:
        from kowhisper.families.whisper.engines import Decoding, load_engine
        from kowhisper.families.whisper.recognizer import WhisperRecognizer

        engine = load_engine(source, Decoding.from_config(config), config.backend, config.ct2_quantization, config.ct2_dir,
                             parallel_clips=not one_clip_at_a_time)
        return WhisperRecognizer(engine)

    def load_merged(self, source: ModelSource):
        import torch

        from kowhisper.families.whisper.loading import load_hf_model

        return load_hf_model(source, torch.device("cpu"), torch.float32)

    def copy_run_settings(self, source: ModelSource, folder: Path) -> None:
        from kowhisper.families.whisper.loading import trained_window

        trained_window(source).save(folder)

    def export_ct2(self, source: ModelSource, quantization: str, out_dir: Path | None) -> Path:
        from kowhisper.families.whisper.ct2_export import export_ct2

        return export_ct2(source, quantization, out_dir)

    # ---- training ----

    def load_processor(self, workspace: Path, config):
        from kowhisper.families.whisper.trainer import training_processor

        return training_processor(workspace, config)

    def load_trainable_model(self, workspace: Path, config, precision):
        from kowhisper.families.whisper.trainer import load_trainable_model

        return load_trainable_model(workspace, config, precision)

    def training_arguments(self, config, arguments: dict):
        from kowhisper.families.whisper.trainer import training_arguments

        return training_arguments(config, arguments)

    def prediction_texts(self, processor):
        from kowhisper.families.whisper.trainer import prediction_texts

        return prediction_texts(processor.tokenizer)

    def build_trainer(self, model, processor, args, data, config, callbacks: list, stages=None, compute_metrics=None):
        from kowhisper.families.whisper.trainer import build_trainer

        return build_trainer(model, processor, args, data, config, callbacks, stages, compute_metrics)

    def save_trained(self, model, processor, run_dir: Path, config) -> Path:
        from kowhisper.families.whisper.trainer import save_trained

        return save_trained(model, processor, run_dir, config)

    def base_run_config(self, config):
        import dataclasses

        # The base always runs at Whisper's own 30 s window: a base model cut to a fitted window loops.
        return dataclasses.replace(config, encoder_window="full")

    def choose_run_config(self, trainer, config, dev: dict, dev_step: int, metric: str, report=print):
        from kowhisper.families.whisper.trainer import choose_encoder_window

        return choose_encoder_window(trainer, config, dev, dev_step, metric, report)

    def start_run(self, config, run_dir: Path, resuming: bool) -> list[str]:
        from kowhisper.families.whisper.trainer import start_run

        return start_run(config, run_dir, resuming)

    def training_warnings(self, train, processor, config) -> list[str]:
        from kowhisper.families.whisper.trainer import stale_label_warning

        warning = stale_label_warning(train, processor.tokenizer)
        return [warning] if warning else []

    def default_learning_rate(self, finetune: str) -> float:
        from kowhisper.families.whisper.trainer import FULL_FINETUNE_LEARNING_RATE

        return FULL_FINETUNE_LEARNING_RATE if finetune == "full" else super().default_learning_rate(finetune)

    def model_card_intro(self, run_name: str, base_model: str, train_clips, config) -> list[str]:
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

    def run_summary(self, config) -> dict:
        from kowhisper.families.whisper.encoder_window import EncoderWindow

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
