"""The CTC family: wav2vec2-style models (wav2vec2, XLS-R, MMS, HuBERT, WavLM, data2vec-audio, SEW, UniSpeech,
wav2vec2-conformer, w2v-BERT 2.0) with a character head, fully fine-tuned by default, LoRA as an option.

Its parts: vocabulary (the Korean character vocabulary built from the training text), storage (the base model, 16 kHz
clips, frame geometry), trainer (model, batches, Trainer with greedy CTC decoding on dev) and recognizer
(evaluation rows, long audio in overlapping chunks, segment times from CTC frames).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

from kowhisper.common.workspace import model_dir
from kowhisper.config import Config, ModelGroup, ServeGroup, WorkspaceGroup
from kowhisper.families.base import ModelError, ModelFamily, ModelSource, Recognizer, pick_device
from kowhisper.families.ctc.options import CTCOptions
from kowhisper.families.ctc.recognizer import CTCRecognizer, load_model
from kowhisper.families.ctc.storage import clip_encoder, load_processor, save_base_model


def _ctc_model_types() -> frozenset[str]:
    return frozenset(MODEL_FOR_CTC_MAPPING_NAMES)


def _training():
    """kowhisper.families.ctc.trainer, which the training methods below hand their work to."""
    # Here, not at the top: it loads transformers' Trainer and peft (about 2 s), which inference.py and evaluate_model.py never use.
    from kowhisper.families.ctc import trainer

    return trainer


class CTCFamily(ModelFamily):
    name = "ctc"
    title = "CTC"
    options = CTCOptions

    def accepts(self, model_type: str) -> bool:
        return model_type in _ctc_model_types()

    def save_base_model(self, source: str, out: Path, config: Config) -> None:
        save_base_model(source, out, config)

    def clip_encoder(self, model_folder: Path, config: Config, train_texts):
        return clip_encoder(model_folder, config, train_texts)

    def recognizer(self, source: ModelSource, config: ServeGroup, *, one_clip_at_a_time: bool = False) -> Recognizer:
        if config.backend == "ct2":
            raise ModelError(f"backend=ct2: CTranslate2 runs Whisper models only, and {source.label} is a CTC model; use backend=hf")
        device = pick_device()
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model, processor, geometry = load_model(source, device, dtype)
        return CTCRecognizer(model, processor, geometry, device, dtype)

    def load_merged(self, source: ModelSource):
        model, processor, _ = load_model(source, torch.device("cpu"), torch.float32)
        return model, processor

    # ---- training ----

    def load_processor(self, workspace: Path, config: Config):
        return load_processor(model_dir(workspace))

    def load_trainable_model(self, workspace: Path, config: Config, precision):
        return _training().load_trainable_model(workspace, config, precision, lora=self.trains_lora(config))

    def training_arguments(self, config: Config, arguments: dict):
        return _training().training_arguments(config, arguments)

    def prediction_texts(self, processor):
        return _training().prediction_texts(processor.tokenizer)

    def build_trainer(self, model, processor, args, data, config: WorkspaceGroup, callbacks: list, stages=None, compute_metrics=None):
        return _training().build_trainer(model, processor, args, data, config, callbacks, stages, compute_metrics)

    def save_trained(self, model, processor, run_dir: Path, config: ModelGroup) -> Path:
        return _training().save_trained(model, processor, run_dir, lora=self.trains_lora(config))

    default_finetune = "full"

    def model_card_intro(self, run_name: str, base_model: str, train_clips, config: ModelGroup) -> list[str]:
        lora = self.trains_lora(config)
        load = (["from peft import PeftModel", "from transformers import AutoModelForCTC, AutoProcessor", "",
                 "processor = AutoProcessor.from_pretrained('adapter')",
                 "base = AutoModelForCTC.from_pretrained('<workspace>/model', vocab_size=len(processor.tokenizer), "
                 "ignore_mismatched_sizes=True)",
                 "model = PeftModel.from_pretrained(base, 'adapter').merge_and_unload()"] if lora else
                ["from transformers import AutoModelForCTC, AutoProcessor", "",
                 "model = AutoModelForCTC.from_pretrained('model')", "processor = AutoProcessor.from_pretrained('model')"])
        what = "LoRA adapter (with a fully trained CTC head)" if lora else "Fully fine-tuned CTC model"
        return [
            "---",
            *(["library_name: peft"] if lora else ["library_name: transformers"]),
            f"base_model: {base_model}",
            "language: [ko]",
            "pipeline_tag: automatic-speech-recognition",
            f"tags: [ctc, {'lora, ' if lora else ''}korean]",
            "---",
            "",
            f"# {run_name}: Korean CTC speech recognition",
            "",
            f"{what} from `{base_model}`, trained offline with `train_offline.py` on {train_clips} Korean clips. "
            "Its output is Korean characters, decoded greedily (no language model).",
            "",
            "```python",
            *load,
            "```",
        ]

    def run_summary(self, config: Config) -> dict:
        return {
            "fine-tuning": "LoRA, CTC head trained in full" if self.trains_lora(config) else "full",
            "feature encoder": "frozen" if config.ctc_freeze_feature_encoder else "trained",
            "vocabulary": f"Hangul syllables, Latin and digits {config.ctc_latin_digits}, punctuation {config.ctc_punctuation}",
        }


CTC = CTCFamily()
