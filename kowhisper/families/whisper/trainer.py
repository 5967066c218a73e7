"""Training Whisper: the model with its LoRA (or every weight trainable, finetune=full), the Seq2SeqTrainer that
scores dev by generating, and what a run records beside its final model.

Under LoRA, CUDA loads the base in INT8 through bitsandbytes (prepare_model_for_kbit_training); the CPU keeps it in
fp32 (kowhisper.train.precision.choose_precision decides). Full fine-tuning always trains fp32 weights. The encoder takes
windows fitted to each batch when encoder_window=fit (kowhisper.families.whisper.encoder_window), and a share of labels
carries timestamps (kowhisper.families.whisper.features.TimestampedLabels).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from peft import prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, Seq2SeqTrainer, Seq2SeqTrainingArguments, WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from kowhisper.common.files import atomic_write_json
from kowhisper.common.workspace import model_dir
from kowhisper.config import Config, ModelGroup
from kowhisper.families.base import FINAL_ADAPTER_DIR, FINAL_FULL_DIR
from kowhisper.families.whisper.encoder_window import WINDOW_FILE, EncoderWindow, allow_fitted_window
from kowhisper.families.whisper.engines import Decoding
from kowhisper.families.whisper.features import LogMel, SpeechBatchCollator, TimestampedLabels
from kowhisper.families.whisper.frames import FRAME_SECONDS
from kowhisper.families.whisper.loading import load_processor
from kowhisper.families.whisper.longform import LOOP_COMPRESSION_RATIO, LOOP_FALLBACK_NGRAM, compression_ratio
from kowhisper.families.whisper.options import WhisperOptions
from kowhisper.train.arguments import TrainingSetupError
from kowhisper.train.augment import AugmentEpochCallback, WaveformAugmenter
from kowhisper.train.dev_scoring import DEV_UTTERANCES_DIR, dev_metrics_summary
from kowhisper.train.trainer import KowhisperTrainerMixin, apply_lora

# peft matches a string as a regex against full module names; Whisper's encoder modules are model.encoder.*.
ENCODER_MODULES = r".*\.encoder\..*"
# learning_rate unset under finetune=full: every weight moves, so a tenth of the LoRA rate. 1e-5 is the rate of Hugging
# Face's Whisper fine-tuning guide, which Korean full fine-tunes of whisper-base and -small commonly keep. Not yet
# measured here on real speech (issue 16's learning curves are to choose it).
FULL_FINETUNE_LEARNING_RATE = 1e-5


def training_processor(workspace: Path, config: WhisperOptions):
    """The workspace's processor, its tokenizer writing the labels' language/task prefix."""
    processor = load_processor(model_dir(workspace))
    processor.tokenizer.set_prefix_tokens(language=config.language, task=config.task, predict_timestamps=False)
    return processor


def trains_full(config: ModelGroup) -> bool:
    """finetune=full; unset means LoRA for Whisper."""
    return config.finetune == "full"


def load_trainable_model(workspace: Path, config: Config, precision):
    """The workspace's Whisper, INT8 or full precision per `precision`, with LoRA adapters from config; or, with
    finetune=full, the fp32 model itself with every weight trainable (the encoder's frozen with freeze_encoder)."""
    path = model_dir(workspace)
    if precision.int8:
        device = int(os.environ.get("LOCAL_RANK", "0")) if precision.device == "cuda" else "cpu"
        model = WhisperForConditionalGeneration.from_pretrained(
            path, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": device}, local_files_only=True
        )
        # Freezes the base and keeps norms and the output head in fp32, so int8 training stays stable.
        # Checkpointing is left to TrainingArguments so both precisions enable it the same way.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32, local_files_only=True)

    if EncoderWindow.from_config(config).is_fit:
        allow_fitted_window(model)
    # Whisper applies these only in training mode, and only inside each clip (the collator's attention mask).
    model.config.apply_spec_augment = config.spec_augment
    model.config.mask_time_prob = config.mask_time_prob
    model.config.mask_feature_prob = config.mask_feature_prob

    # Labels start <|ko|><|transcribe|><|notimestamps|>; generation must start the same way.
    # forced_decoder_ids is the deprecated spelling of the same thing and conflicts with language/task.
    model.generation_config.language = config.language_abbr
    model.generation_config.task = config.task
    model.generation_config.forced_decoder_ids = None
    if trains_full(config):
        # Whisper's encoder positions are fixed sinusoids (OpenAI's model keeps them as a buffer; transformers PR 26032
        # freezes them in WhisperEncoder.__init__), but from_pretrained in transformers 5 hands them back trainable.
        model.model.encoder.embed_positions.requires_grad_(False)
        if config.freeze_encoder:
            model.freeze_encoder()  # transformers' own: requires_grad off for every encoder weight
        return model
    # freeze_encoder: no LoRA in the encoder at all, so no step computes its gradients.
    return apply_lora(model, config, exclude_modules=ENCODER_MODULES if config.freeze_encoder else None)


def training_arguments(config: WhisperOptions, arguments: dict):
    return Seq2SeqTrainingArguments(**arguments, predict_with_generate=True, generation_max_length=config.generation_max_length)


def prediction_texts(tokenizer):
    """(references, hypotheses) from Seq2SeqTrainer's generated ids and labels."""

    def texts(prediction) -> tuple[list[str], list[str]]:
        # The Trainer pads both across batches with -100, which is no token id.
        predictions = np.where(prediction.predictions == -100, tokenizer.pad_token_id, prediction.predictions)
        labels = np.where(prediction.label_ids == -100, tokenizer.pad_token_id, prediction.label_ids)
        return tokenizer.batch_decode(labels, skip_special_tokens=True), tokenizer.batch_decode(predictions, skip_special_tokens=True)

    return texts


def _whisper_trainer_class():
    class WhisperTrainer(KowhisperTrainerMixin, Seq2SeqTrainer):
        """Seq2SeqTrainer that evaluates the way inference.py decodes.

        - Dev batches come from their own collator (`eval_data_collator`): training batches may carry timestamped
          labels and augmented clips, dev batches never do. The zero-shot evaluation (`evaluate_base_model`) runs the
          base as it runs everywhere, at Whisper's full window (`base_model_collator`), whatever window the run trains with.
        - It encodes evaluation batches itself and hands generate() the encoder output: Whisper's generate()
          pads input features to 3000 frames with zeros, which would undo a fitted window (and zeros are not
          what silence looks like in Whisper's log-mel). The one encoder pass also serves the dev loss.
        - It caps new tokens by the batch's audio length (Decoding.tokens_for), so a repetition loop, common
          zero-shot, stops where inference.py would stop it instead of running to generation_max_length.
        - It generates under the training precision's autocast (bf16 on CPUs that do it natively).
        """

        def __init__(self, *args, decoding: Decoding, base_model_collator, **kwargs):
            super().__init__(*args, **kwargs)
            self.decoding = decoding
            self.base_model_collator = base_model_collator

        def evaluate_base_model(self) -> dict:
            windowed, self.eval_data_collator = self.eval_data_collator, self.base_model_collator
            try:
                return super().evaluate_base_model()
            finally:
                self.eval_data_collator = windowed

        def dev_metrics_at_full_window(self) -> dict:
            """Dev metrics (eval_-prefixed, as evaluate() gives them) with every clip in Whisper's full 30 s window,
            through predict(): no log record, no callbacks, since it is a second look at the final model and not
            an evaluation of a step."""
            training_collator, self.data_collator = self.data_collator, self.base_model_collator
            try:
                return self.predict(self.eval_dataset, metric_key_prefix="eval").metrics
            finally:
                self.data_collator = training_collator

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            if self.args.predict_with_generate and not prediction_loss_only and "input_features" in inputs:
                inputs = self._prepare_inputs(inputs)
                encoder = self.accelerator.unwrap_model(model).get_encoder()
                with torch.no_grad(), self.autocast_smart_context_manager():
                    encoded = encoder(inputs["input_features"]).last_hidden_state
                longest_seconds = float(inputs["attention_mask"].sum(-1).max()) * FRAME_SECONDS
                gen_kwargs = {key: value for key, value in (gen_kwargs or self._gen_kwargs).items() if key != "max_length"}
                gen_kwargs["max_new_tokens"] = self.decoding.tokens_for(longest_seconds)
                inputs = {key: value for key, value in inputs.items() if key != "input_features"}
                inputs["encoder_outputs"] = BaseModelOutput(last_hidden_state=encoded)
            with self.autocast_smart_context_manager():
                loss, generated, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys,
                                                                  **gen_kwargs)
            if generated is None or "encoder_outputs" not in inputs:
                return loss, generated, labels
            return loss, self.without_loops(model, inputs, generated, gen_kwargs), labels

        def without_loops(self, model, inputs: dict, generated: torch.Tensor, gen_kwargs: dict) -> torch.Tensor:
            """The rows whose text looks like a repetition loop generated again with repeated 4-grams forbidden, each
            kept if it loops less: what inference.py and evaluate_model.py do (longform.generate_without_loops). Without
            it, three looping dev clips of 151 doubled a call-audio checkpoint's dev CER (24.5% where evaluate_model.py
            measured it near 11%), and the run kept the base as its best model."""
            tokenizer = self.processing_class.tokenizer
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
            looping = [row for row, text in enumerate(texts) if compression_ratio(text) > LOOP_COMPRESSION_RATIO]
            if not looping:
                return generated
            # One row at a time: given encoder outputs for several rows, transformers' Whisper generate() can take its
            # long-form path and fail cutting finished rows from input_features it does not have (5.23). Loops are rare.
            retried = []
            for row in looping:
                retry_inputs = {key: value[row : row + 1] for key, value in inputs.items()  # no labels: no second loss
                                if isinstance(value, torch.Tensor) and key != "labels"}
                encoded = inputs["encoder_outputs"].last_hidden_state[row : row + 1]
                retry_inputs["encoder_outputs"] = BaseModelOutput(last_hidden_state=encoded)
                with self.autocast_smart_context_manager():
                    _, ids, _ = Seq2SeqTrainer.prediction_step(self, model, retry_inputs, False, **gen_kwargs,
                                                               no_repeat_ngram_size=LOOP_FALLBACK_NGRAM)
                retried.append(ids[0])
            retried = torch.nn.utils.rnn.pad_sequence(retried, batch_first=True, padding_value=tokenizer.pad_token_id)
            width = max(generated.shape[1], retried.shape[1])
            merged = torch.nn.functional.pad(generated, (0, width - generated.shape[1]), value=tokenizer.pad_token_id)
            retried = torch.nn.functional.pad(retried, (0, width - retried.shape[1]), value=tokenizer.pad_token_id)
            for position, row in enumerate(looping):
                if compression_ratio(tokenizer.decode(retried[position], skip_special_tokens=True)) < compression_ratio(texts[row]):
                    merged[row] = retried[position]
            return merged

    return WhisperTrainer


def build_trainer(model, processor, args, data, config: Config, callbacks: list, stages, compute_metrics):
    window = EncoderWindow.from_config(config)
    share = config.timestamped_label_share
    augmenter = WaveformAugmenter.from_config(config)
    if augmenter is not None:
        augmenter.require_audio(data.train, "Whisper")
    # Training batches may be augmented and carry timestamped labels; dev batches never are.
    training_collator = SpeechBatchCollator(window, TimestampedLabels(processor.tokenizer, share) if share > 0 else None,
                                            augmenter=augmenter, log_mel=LogMel(processor.feature_extractor) if augmenter else None)
    if augmenter is not None:
        callbacks = [*callbacks, AugmentEpochCallback(training_collator)]
    return _whisper_trainer_class()(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.dev,
        # The zero-shot evaluation pads to the base model's full window.
        data_collator=training_collator,
        eval_data_collator=SpeechBatchCollator(window),
        base_model_collator=SpeechBatchCollator(EncoderWindow()),
        processing_class=processor,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        decoding=Decoding.from_config(config),
        stages=stages,
    )


def start_run(config: WhisperOptions, run_dir: Path, resuming: bool) -> list[str]:
    """Write the run's encoder window into the run folder, where its checkpoints find it. A run resumed with
    another window would leave checkpoints that claim a window they were not trained with, so it is refused."""
    window = EncoderWindow.from_config(config)
    recorded = EncoderWindow.of_model(Path(run_dir)) if (Path(run_dir) / WINDOW_FILE).is_file() else None
    if resuming and recorded is not None and recorded != window:
        raise TrainingSetupError(
            f"{run_dir} was trained with encoder window {recorded.describe()}, but this command asks for {window.describe()}. "
            f"Resume with encoder_window={recorded.mode} encoder_window_tail_frames={recorded.tail_frames} "
            f"encoder_window_round_frames={recorded.round_frames}, or start over with overwrite_output_dir=true or another run_name."
        )
    window.save(run_dir)
    return [f"Encoder window: {window.describe()}"]


def choose_encoder_window(trainer, config: Config, dev: dict, dev_step: int, metric: str, report=print):
    """A model trained on fitted windows is scored on dev at the full 30 s window too, and runs at the window that
    scored better on `metric`: (config with that window, its dev metrics).

    The weights learn before they learn the shorter window. On real speech (bench/curves.py, whisper-base, batch 8),
    the same weights after 25 steps scored 12.04% dev CER at the fitted window and 11.33% at the full one (zero-shot
    12.18%); from 50 steps on the fitted window was as good. So a short run runs at the full window and keeps what
    it learned, and a longer one keeps the fitted window's speed."""
    if not EncoderWindow.from_config(config).is_fit or metric not in dev:
        return config, dev
    full = dev_metrics_summary(trainer.dev_metrics_at_full_window())
    full_wins = full.get(metric, float("inf")) < dev[metric]
    if full_wins and trainer.is_world_process_zero():
        # The chosen step's per-clip counts are now the full window's: the verdict pairs them with zero-shot's.
        scorer = trainer.compute_metrics
        atomic_write_json(Path(trainer.args.output_dir) / DEV_UTTERANCES_DIR / f"step-{dev_step}.json",
                          {"step": dev_step, "sources": scorer.dev_sources, "counts": scorer.last_counts})
    fitted_text, full_text = f"{100 * dev[metric]:.2f}%", f"{100 * full[metric]:.2f}%"
    if not full_wins:
        report(f"Dev {metric} at the fitted encoder window {fitted_text}, at the full 30 s window {full_text}: the final "
               "model runs at the fitted window")
        return config, dev
    report(f"Dev {metric} at the fitted encoder window {fitted_text}, at the full 30 s window {full_text}: the final "
           "model runs at the full window (it has not yet learned the shorter one; a longer run usually does)")
    return dataclasses.replace(config, encoder_window="full"), full


def save_trained(model, processor, run_dir: Path, config: Config) -> Path:
    """The final model with its processor and the encoder window it was trained with: the LoRA adapter in
    <run>/adapter (PeftModel.from_pretrained), or full weights in <run>/model (WhisperForConditionalGeneration.
    from_pretrained, and what the CTranslate2 converter and other runtimes read, preprocessor_config.json included)."""
    folder = Path(run_dir) / (FINAL_FULL_DIR if trains_full(config) else FINAL_ADAPTER_DIR)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if trains_full(config):
        # transformers 5 keeps the feature settings inside processor_config.json; other runtimes read this file.
        processor.feature_extractor.save_pretrained(folder)
    EncoderWindow.from_config(config).save(folder)
    return folder

