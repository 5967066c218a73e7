"""Training a CTC model: the model with its (new) character head, batches run through the feature extractor, and
a Trainer that scores dev by greedy CTC decoding.

Full fine-tuning is the default, as seed 000 trained; finetune=lora puts LoRA on target_modules and trains
the output head in full (it is new whenever the vocabulary was built from text). The convolutional feature encoder
stays frozen by default (ctc_freeze_feature_encoder), as in wav2vec2's own fine-tuning recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from peft import prepare_model_for_kbit_training
from transformers import AutoConfig, AutoModelForCTC, BitsAndBytesConfig, Trainer, TrainingArguments

from kowhisper.common.audio import AUDIO_COLUMN, SAMPLING_RATE, from_int16
from kowhisper.common.workspace import model_dir
from kowhisper.config import Config
from kowhisper.families.base import FINAL_ADAPTER_DIR, FINAL_FULL_DIR
from kowhisper.families.ctc.storage import FrameGeometry, load_processor
from kowhisper.families.ctc.vocabulary import decode_ids
from kowhisper.train.augment import AugmentEpochCallback, WaveformAugmenter
from kowhisper.train.trainer import KowhisperTrainerMixin, apply_lora

# The collator's output lengths in frames, which the Trainer takes out before the model sees the batch.
FRAMES_KEY = "output_frames"
HEAD = "lm_head"


class CTCBatchCollator:
    """Stored int16 audio -> the extractor's model input (normalised per clip where the extractor does that), labels
    padded with -100, and each clip's output length in frames. With an augmenter (kowhisper.train.augment; training
    batches only), the audio as this epoch changes it."""

    def __init__(self, feature_extractor, geometry: FrameGeometry, augmenter: WaveformAugmenter | None = None):
        self.feature_extractor = feature_extractor
        self.geometry = geometry
        self.augmenter = augmenter
        self.epoch = 0  # set by AugmentEpochCallback

    def waveform(self, row: dict) -> np.ndarray:
        changed = self.augmenter.apply(row[AUDIO_COLUMN], row["id"], self.epoch) if self.augmenter is not None else None
        return from_int16(row[AUDIO_COLUMN]) if changed is None else changed

    def __call__(self, rows: list[dict]) -> dict:
        audio = [self.waveform(row) for row in rows]
        # The extractor's own return_attention_mask: models with group-norm feature encoders must not get a mask.
        batch = dict(self.feature_extractor(audio, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt"))
        labels = [np.asarray(row["labels"], dtype=np.int64) for row in rows]
        padded = np.full((len(labels), max(len(label) for label in labels)), -100, dtype=np.int64)
        for index, label in enumerate(labels):
            padded[index, : len(label)] = label
        batch["labels"] = torch.from_numpy(padded)
        batch[FRAMES_KEY] = torch.tensor([self.geometry.output_frames(len(samples)) for samples in audio])
        return batch


def load_trainable_model(workspace: Path, config: Config, precision, lora: bool):
    folder = model_dir(workspace)
    tokenizer = load_processor(folder).tokenizer
    settings = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, ctc_loss_reduction="mean",
                    ctc_zero_infinity=True, apply_spec_augment=config.spec_augment, mask_time_prob=config.mask_time_prob,
                    mask_feature_prob=config.mask_feature_prob)
    # A head sized for another vocabulary (a pretraining checkpoint's placeholder) is replaced by a new one.
    common = dict(ignore_mismatched_sizes=True, local_files_only=True, use_safetensors=True, **settings)
    if precision.int8:
        device = int(os.environ.get("LOCAL_RANK", "0")) if precision.device == "cuda" else "cpu"
        quantization = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=[HEAD])  # the new head trains in full
        model = AutoModelForCTC.from_pretrained(folder, quantization_config=quantization, device_map={"": device}, **common)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCTC.from_pretrained(folder, dtype=torch.float32, **common)
    if config.ctc_freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    if lora:
        return apply_lora(model, config, modules_to_save=[HEAD])
    return model


def training_arguments(config: Config, arguments: dict):
    # The exact length in samples; duration would sort the same, but this is what the audio column holds.
    arguments = {**arguments, "length_column_name": "input_length"}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # LayerDrop skips whole transformer layers at random, which DDP would otherwise take for an error.
        arguments["ddp_find_unused_parameters"] = True
    return TrainingArguments(**arguments)


def prediction_texts(tokenizer):
    """(references, hypotheses) from the CTCTrainer's greedy ids and the labels (decoded without grouping)."""

    def texts(prediction) -> tuple[list[str], list[str]]:
        predictions = np.where(prediction.predictions == -100, tokenizer.pad_token_id, prediction.predictions)
        labels = np.where(prediction.label_ids == -100, tokenizer.pad_token_id, prediction.label_ids)
        return [decode_ids(tokenizer, row, group=False) for row in labels], [decode_ids(tokenizer, row, group=True) for row in predictions]

    return texts


def _ctc_trainer_class():
    class CTCTrainer(KowhisperTrainerMixin, Trainer):
        """Trainer that returns greedy CTC ids (argmax per frame, frames past each clip's end blanked) instead of
        logits, so dev predictions are a few KB per clip, not frames x vocabulary floats."""

        def __init__(self, *args, pad_token_id: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.pad_token_id = pad_token_id
            # CTC forward() takes **kwargs, so the Trainer would assume the loss is already a sum over the
            # accumulated batches and stop dividing it by gradient_accumulation_steps; it is a per-batch mean.
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {key: value for key, value in inputs.items() if key != FRAMES_KEY}
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            frames = inputs.get(FRAMES_KEY)
            inputs = {key: value for key, value in inputs.items() if key != FRAMES_KEY}
            with self.autocast_smart_context_manager():
                loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
            if logits is None:
                return loss, None, labels
            ids = logits.argmax(-1)
            beyond = torch.arange(ids.shape[1], device=ids.device)[None, :] >= frames.to(ids.device)[:, None]
            return loss, ids.masked_fill(beyond, self.pad_token_id), labels

    return CTCTrainer


def build_trainer(model, processor, args, data, config: Config, callbacks: list, stages, compute_metrics):
    geometry = FrameGeometry.from_config(AutoConfig.from_pretrained(str(model_dir(config.workspace_dir))))
    augmenter = WaveformAugmenter.from_config(config)
    training_collator = CTCBatchCollator(processor.feature_extractor, geometry, augmenter)
    if augmenter is not None:
        callbacks = [*callbacks, AugmentEpochCallback(training_collator)]
    return _ctc_trainer_class()(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.dev,
        data_collator=training_collator,
        eval_data_collator=CTCBatchCollator(processor.feature_extractor, geometry),
        processing_class=processor,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        stages=stages,
        pad_token_id=processor.tokenizer.pad_token_id,
    )


def save_trained(model, processor, run_dir: Path, lora: bool) -> Path:
    """LoRA: the adapter (with the trained head) in <run>/adapter. Full: the whole model in <run>/model. Either way
    with the processor, so the folder transcribes on its own (a full model) or on the workspace's base (an adapter)."""
    folder = Path(run_dir) / (FINAL_ADAPTER_DIR if lora else FINAL_FULL_DIR)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
