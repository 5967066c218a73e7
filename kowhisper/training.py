"""Everything train_offline.py needs between the verified workspace and `trainer.train()`.

Device and precision are decided once, in `choose_precision`:
  CUDA  -> base in INT8 through bitsandbytes (prepare_model_for_kbit_training), bf16 or fp16 mixed precision.
  CPU   -> base in fp32; bf16 autocast only where the CPU does bf16 in hardware (AMX / AVX512-BF16), because
           emulated bf16 is slower than fp32. INT8 only when int8=true is asked for: on a CPU bitsandbytes'
           INT8 layers are a little slower than fp32, not faster (bench/RESULTS.md).
LoRA comes from peft on top of either. The Trainer is HF's Seq2SeqTrainer with generate-based CER/WER on dev.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from kowhisper.checkpoints import CheckpointCompletionCallback, checkpoint_step
from kowhisper.encoder_window import WINDOW_FILE, EncoderWindow, allow_fitted_window
from kowhisper.run_report import TrainingLogCallback
from kowhisper.text import format_percent
from kowhisper.workspace import model_dir, split_dir
from utils import atomic_write_json, cpu_has_native_bf16, read_json

# quick_test (seed 003): enough steps to cross an evaluation and a checkpoint twice, on few clips.
QUICK_TEST_MAX_STEPS = 10
QUICK_TEST_EVAL_EVERY = 5
QUICK_TEST_EVAL_SAMPLES = 16
ZERO_SHOT_FILE = "zero_shot.json"
ZERO_SHOT_CACHE = ".zero_shot"


class TrainingSetupError(RuntimeError):
    """Training cannot start (or go on) as configured; the message says why and what to change."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def apply_quick_test(config):
    """The config with quick_test's caps applied, and a line per changed value; unchanged if quick_test is off."""
    if not config.quick_test:
        return config, []
    max_steps = QUICK_TEST_MAX_STEPS if config.max_steps <= 0 else min(config.max_steps, QUICK_TEST_MAX_STEPS)
    eval_every = min(QUICK_TEST_EVAL_EVERY, max_steps)
    caps = {
        "max_steps": max_steps,
        "eval_steps": eval_every,
        "save_steps": eval_every,
        "logging_steps": 1,
        "warmup_steps": min(config.warmup_steps, max_steps // 5),
        "max_eval_samples": min(config.max_eval_samples or QUICK_TEST_EVAL_SAMPLES, QUICK_TEST_EVAL_SAMPLES),
    }
    changed = {key: value for key, value in caps.items() if getattr(config, key) != value}
    notes = [f"quick_test: {key}={getattr(config, key)} -> {value}" for key, value in changed.items()]
    return dataclasses.replace(config, **changed), notes


def quick_test_train_rows(config) -> int:
    """quick_test trains on exactly the clips its capped steps consume, so one epoch is the whole test."""
    return config.max_steps * config.per_device_train_batch_size * config.gradient_accumulation_steps * world_size()


# ---- device and precision -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    device: str  # "cuda" or "cpu"
    int8: bool
    fp16: bool
    bf16: bool
    reason: str

    @property
    def summary(self) -> str:
        base = "INT8 base (bitsandbytes) + LoRA" if self.int8 else "fp32 base + LoRA"
        mixed = "bf16 autocast" if self.bf16 else "fp16 mixed precision" if self.fp16 else "fp32 compute"
        return f"{self.device.upper()}, {base}, {mixed}"

    def notice(self) -> str:
        return f"Precision: {self.summary} ({self.reason})"


def choose_precision(config) -> Precision:
    import torch

    if torch.cuda.is_available():
        if world_size() > torch.cuda.device_count():
            raise TrainingSetupError(
                f"{world_size()} processes were launched but only {torch.cuda.device_count()} GPU(s) are visible "
                f"(cuda_visible_devices={config.cuda_visible_devices}); list one GPU per process, "
                "e.g. cuda_visible_devices=0,1 for --nproc_per_node 2"
            )
        int8 = True if config.int8 is None else config.int8
        if int8:
            check_int8_support("cuda")
        bf16 = torch.cuda.is_bf16_supported() if config.bf16 is None else config.bf16
        fp16 = (not bf16) if config.fp16 is None else config.fp16
        return Precision("cuda", int8, fp16, bf16, f"GPU {torch.cuda.get_device_name()}")

    if config.fp16:
        raise TrainingSetupError(
            "fp16=true needs a CUDA GPU and none is visible; on CPU leave fp16 unset "
            "(bf16 autocast is used where the CPU does bf16 natively, fp32 elsewhere)"
        )
    native_bf16 = cpu_has_native_bf16()
    bf16 = native_bf16 if config.bf16 is None else config.bf16
    if config.int8:
        check_int8_support("cpu")
        reason = "int8=true asked for; on CPU it is a little slower than fp32"
    elif bf16 and not native_bf16:
        reason = "bf16=true asked for, but this CPU emulates bf16 (no AMX/AVX512-BF16): expect it slower than fp32"
    elif bf16:
        reason = "this CPU does bf16 natively (AMX/AVX512-BF16)"
    else:
        reason = "no native bf16 on this CPU (no AMX/AVX512-BF16), so fp32 is the fast choice"
    return Precision("cpu", bool(config.int8), False, bf16, reason)


def check_int8_support(device: str) -> None:
    """Raise a clear error if bitsandbytes cannot run INT8 layers on `device`."""
    fallback = "set int8=false to train the LoRA on a full-precision base instead"
    try:
        import bitsandbytes
    except Exception as error:  # ImportError, or a RuntimeError from a native library that fails to load
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise TrainingSetupError(
            f"int8=true needs bitsandbytes, which does not load here ({type(error).__name__}: {first_line}). "
            f"Install it from the workspace wheelhouse, or {fallback}."
        ) from None
    supported = getattr(bitsandbytes, "supported_torch_devices", set())
    if device not in supported:
        raise TrainingSetupError(
            f"int8=true: the installed bitsandbytes {getattr(bitsandbytes, '__version__', '?')} has no {device} "
            f"backend (it supports: {', '.join(sorted(supported)) or 'none'}); {fallback}."
        )


# ---- data -----------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    train: object
    dev: object | None  # the evaluated part of dev (capped by max_eval_samples); None without a dev split
    counts: dict


def load_splits(workspace: Path, config) -> TrainingData:
    from datasets import load_from_disk

    train = _load_split(workspace, "train", load_from_disk)
    if train is None or len(train) == 0:
        where = split_dir(workspace, "train")
        state = "is missing" if train is None else "has no rows"
        raise TrainingSetupError(
            f"the training split {where} {state}. The online setup writes it: check data/report.json for why rows "
            "were dropped, and re-run run_online_setup.py with data that has a train split."
        )
    if config.quick_test:
        train = train.select(range(min(len(train), quick_test_train_rows(config))))

    dev = _load_split(workspace, "dev", load_from_disk)
    test = _load_split(workspace, "test", load_from_disk)
    has_dev = dev is not None and len(dev) > 0
    if config.eval_strategy != "no" and not has_dev:
        raise TrainingSetupError(
            f"eval_strategy={config.eval_strategy} evaluates on the dev split, but {split_dir(workspace, 'dev')} "
            "is missing or empty; set eval_strategy=no to train without evaluation"
        )
    if config.max_eval_samples is not None and config.max_eval_samples < 1:
        raise TrainingSetupError("max_eval_samples must be at least 1 or unset; set eval_strategy=no to skip evaluation")
    # Kept even with eval_strategy=no: the final evaluation runs after the adapter is safely saved.
    evaluated = dev.select(range(min(len(dev), config.max_eval_samples or len(dev)))) if has_dev else None
    if evaluated is not None:
        # Longest first, so each evaluation batch holds clips of similar length and pads them least.
        durations = evaluated["duration"]
        evaluated = evaluated.select(sorted(range(len(evaluated)), key=lambda i: durations[i], reverse=True))

    counts = {
        "train": len(train),
        "train_hours": round(sum(train["duration"]) / 3600, 3),
        "dev": 0 if dev is None else len(dev),
        "dev_evaluated": 0 if evaluated is None else len(evaluated),
        "test": 0 if test is None else len(test),
    }
    # numpy rows: the collator pads arrays; python lists of 80-float frames would be built and thrown away.
    return TrainingData(train.with_format("numpy"), None if evaluated is None else evaluated.with_format("numpy"), counts)


def _load_split(workspace: Path, name: str, load_from_disk):
    """The split, None if it is missing, or a 0-row dataset if it was saved empty."""
    from datasets import Dataset

    path = split_dir(workspace, name)
    if not path.is_dir():
        return None
    # A split saved with no rows has no data files, and load_from_disk fails on it with an IndexError.
    state = path / "state.json"
    if state.is_file() and not read_json(state).get("_data_files"):
        return Dataset.from_dict({})
    return load_from_disk(str(path))


# ---- model ------------------------------------------------------------------------------------------------------


def load_processor(workspace: Path):
    from kowhisper.modeling import load_processor as load_processor_from

    return load_processor_from(model_dir(workspace))


def load_model(workspace: Path, config, precision: Precision):
    """The workspace's Whisper, INT8 or full precision per `precision`, with LoRA adapters from config."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, WhisperForConditionalGeneration, set_seed

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

    # Labels start <|ko|><|transcribe|><|notimestamps|>; generation must start the same way.
    # forced_decoder_ids is the deprecated spelling of the same thing and conflicts with language/task.
    model.generation_config.language = config.language_abbr
    model.generation_config.task = config.task
    model.generation_config.forced_decoder_ids = None

    set_seed(config.seed)  # LoRA's A matrices are drawn at random
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,  # a list of names or one regex string, as peft takes either
        bias="none",
    )
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` alias; the warning is about peft's code.
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as error:
        raise TrainingSetupError(f"LoRA target_modules={list(config.target_modules)}: {error}") from None


# ---- trainer ----------------------------------------------------------------------------------------------------


def build_training_arguments(config, precision: Precision, run_dir: Path):
    from transformers import Seq2SeqTrainingArguments

    evaluating = config.eval_strategy != "no"
    if config.early_stopping_patience > 0 and not evaluating:
        raise TrainingSetupError("early_stopping_patience needs evaluation; set eval_strategy=steps or patience 0")
    if not 0 <= config.warmup_ratio < 1:
        raise TrainingSetupError(f"warmup_ratio is a fraction of the total steps in [0, 1), got {config.warmup_ratio}")
    try:
        return Seq2SeqTrainingArguments(
            output_dir=str(run_dir),
            run_name=config.run_name,
            per_device_train_batch_size=config.per_device_train_batch_size,
            per_device_eval_batch_size=config.per_device_eval_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            num_train_epochs=config.num_train_epochs,
            max_steps=config.max_steps,
            # transformers 5 merged warmup_ratio into warmup_steps: values below 1 are a ratio.
            warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
            lr_scheduler_type=config.lr_scheduler_type,
            optim=config.optim,
            train_sampling_strategy="group_by_length" if config.group_by_length else "random",
            length_column_name="duration",  # every prepared split has it; features are stored trimmed
            # transformers 5 name for gradient checkpointing. Non-reentrant checkpointing lets gradients reach
            # the LoRA weights although the inputs and the frozen base do not require grad.
            activation_checkpointing=config.gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
            eval_strategy=config.eval_strategy,
            eval_steps=config.eval_steps,
            save_strategy="epoch" if config.eval_strategy == "epoch" else "steps",
            save_steps=config.save_steps,
            logging_steps=config.logging_steps,
            save_total_limit=config.save_total_limit,
            dataloader_num_workers=config.dataloader_num_workers,
            seed=config.seed,
            data_seed=config.data_seed,
            report_to=list(config.report_to) or "none",
            metric_for_best_model=config.metric_for_best_model if evaluating else None,
            greater_is_better=False,  # cer, wer, cer_nospace and loss are all errors
            load_best_model_at_end=config.load_best_model_at_end and evaluating,
            predict_with_generate=True,
            generation_max_length=config.generation_max_length,
            fp16=precision.fp16,
            bf16=precision.bf16,
            use_cpu=precision.device == "cpu",
            ddp_backend="gloo" if precision.device == "cpu" and world_size() > 1 else None,
            ddp_find_unused_parameters=False,
            # PeftModel.forward takes **kwargs, so the Trainer cannot tell which columns or labels it uses.
            remove_unused_columns=False,
            label_names=["labels"],
        )
    except ValueError as error:
        raise TrainingSetupError(f"invalid training settings: {error}") from None


@dataclass(frozen=True)
class TrainingPlan:
    train_rows: int
    effective_batch: int
    steps_per_epoch: int
    total_steps: int
    epochs: float

    def describe(self) -> str:
        return (
            f"Training plan: {self.train_rows} clips, effective batch {self.effective_batch}, "
            f"{self.steps_per_epoch} steps per epoch, {self.total_steps} optimizer steps (~{self.epochs:.2f} epochs)"
        )


def training_plan(train_rows: int, args) -> TrainingPlan:
    """The Trainer's own step arithmetic, printed before it starts: batches are sharded across processes,
    and a partial accumulation at the end of an epoch still makes an optimizer step."""
    batches_per_process = math.ceil(math.ceil(train_rows / args.per_device_train_batch_size) / args.world_size)
    steps_per_epoch = max(math.ceil(batches_per_process / args.gradient_accumulation_steps), 1)
    if args.max_steps > 0:
        total_steps = args.max_steps
    else:
        total_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
    effective_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return TrainingPlan(train_rows, effective_batch, steps_per_epoch, total_steps, total_steps / steps_per_epoch)


def make_compute_metrics(tokenizer):
    """compute_metrics for Seq2SeqTrainer: decode generated ids and labels, score with kowhisper.text."""
    import numpy as np

    from kowhisper.text import error_rates

    def compute_metrics(prediction) -> dict[str, float]:
        # The Trainer pads both across batches with -100, which is no token id.
        predictions = np.where(prediction.predictions == -100, tokenizer.pad_token_id, prediction.predictions)
        labels = np.where(prediction.label_ids == -100, tokenizer.pad_token_id, prediction.label_ids)
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = error_rates(references, hypotheses)
        return {name: scores[name] for name in ("cer", "wer", "cer_nospace")}

    return compute_metrics


def _speech_trainer_class():
    import torch
    from transformers import Seq2SeqTrainer

    from kowhisper.features import FRAME_SECONDS

    class SpeechSeq2SeqTrainer(Seq2SeqTrainer):
        """Seq2SeqTrainer that evaluates the way inference.py decodes.

        - It encodes evaluation batches itself and hands generate() the encoder output: Whisper's generate()
          pads input features to 3000 frames with zeros, which would undo a fitted window (and zeros are not
          what silence looks like in Whisper's log-mel). The one encoder pass also serves the dev loss.
        - It caps new tokens by the batch's audio length (Decoding.tokens_for), so a repetition loop, common
          zero-shot, stops where inference.py would stop it instead of running to generation_max_length.
        - It generates under the training precision's autocast (bf16 on CPUs that do it natively).
        """

        def __init__(self, *args, decoding, eval_data_collator=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.decoding = decoding
            # Training batches may carry timestamped labels; dev batches never do, and the zero-shot evaluation
            # pads to the base model's full window.
            self.eval_data_collator = eval_data_collator or self.data_collator

        def get_eval_dataloader(self, eval_dataset=None):
            training_collator = self.data_collator
            self.data_collator = self.eval_data_collator  # read once, when the DataLoader is built
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.data_collator = training_collator

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            if self.args.predict_with_generate and not prediction_loss_only and "input_features" in inputs:
                from transformers.modeling_outputs import BaseModelOutput

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
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    return SpeechSeq2SeqTrainer


def build_trainer(model, processor, args, data: TrainingData, config, report=print):
    from transformers import EarlyStoppingCallback

    from kowhisper.features import SpeechBatchCollator, TimestampedLabels
    from kowhisper.modeling import Decoding

    if "tensorboard" in args.report_to:
        # A fixed folder instead of one per start, so a resumed run continues the same TensorBoard curves.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(args.output_dir) / "tensorboard"))
    callbacks = [CheckpointCompletionCallback(), TrainingLogCallback(args.output_dir, report)]
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
    window = EncoderWindow.from_config(config)
    timestamps = TimestampedLabels(processor.tokenizer, config.timestamped_label_share) if config.timestamped_label_share > 0 else None
    return _speech_trainer_class()(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.dev,
        data_collator=SpeechBatchCollator(window, timestamps),
        eval_data_collator=SpeechBatchCollator(window),
        processing_class=processor,
        compute_metrics=make_compute_metrics(processor.tokenizer) if data.dev is not None else None,
        callbacks=callbacks,
        decoding=Decoding.from_config(config),
    )


def out_of_memory_advice(config) -> str:
    """What seed 001's troubleshooting says to do about CUDA OOM, with this run's numbers filled in."""
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    lines = [f"CUDA ran out of memory with per_device_train_batch_size={batch}, gradient_accumulation_steps={accumulation}."]
    if batch > 1:
        lines.append(
            f"Rerun with per_device_train_batch_size={batch // 2} gradient_accumulation_steps={accumulation * 2}: "
            f"the effective batch stays {batch * accumulation} and training resumes from the last checkpoint."
        )
    if not config.gradient_checkpointing:
        lines.append("gradient_checkpointing=true saves more memory at about 30% more time per step.")
    lines.append(
        f"If it fails while evaluating, lower per_device_eval_batch_size (now {config.per_device_eval_batch_size}) "
        "or set eval_strategy=no."
    )
    return "\n".join(lines)


def restore_finished_run(trainer, checkpoint: Path) -> None:
    """Put a run whose last checkpoint is already its final step back in the trainer, without training.

    trainer.train() cannot do this: resumed at max_steps, transformers 5 still runs one more step.
    The weights are the best checkpoint's when load_best_model_at_end, as train() would have left them.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    weights_from = Path(best) if trainer.args.load_best_model_at_end and best and Path(best).is_dir() else Path(checkpoint)
    set_peft_model_state_dict(trainer.model, load_file(weights_from / "adapter_model.safetensors"))


# ---- outputs ----------------------------------------------------------------------------------------------------


def record_encoder_window(config, run_dir: Path, resuming: bool) -> EncoderWindow:
    """Write the run's encoder window into the run folder, where its checkpoints find it. A run resumed with
    another window would leave checkpoints that claim a window they were not trained with, so it is refused."""
    window = EncoderWindow.from_config(config)
    recorded = EncoderWindow.of_model(Path(run_dir) / "adapter") if (Path(run_dir) / WINDOW_FILE).is_file() else None
    if resuming and recorded is not None and recorded != window:
        raise TrainingSetupError(
            f"{run_dir} was trained with encoder window {recorded.describe()}, but this command asks for {window.describe()}. "
            f"Resume with encoder_window={recorded.mode} encoder_window_tail_frames={recorded.tail_frames} "
            f"encoder_window_round_frames={recorded.round_frames}, or start over with overwrite_output_dir=true or another run_name."
        )
    window.save(run_dir)
    return window


def save_adapter(model, processor, run_dir: Path, window: EncoderWindow) -> Path:
    """The final LoRA adapter, the processor and the encoder window it was trained with, in <run>/adapter,
    loadable with PeftModel.from_pretrained."""
    adapter_dir = Path(run_dir) / "adapter"
    model.save_pretrained(adapter_dir)
    processor.save_pretrained(adapter_dir)
    window.save(adapter_dir)
    return adapter_dir


def final_dev_metrics(trainer) -> tuple[dict, int]:
    """(dev metrics, step) of the weights the model holds now: the last step's, or the best checkpoint's with
    load_best_model_at_end. If that step was already evaluated during training, its logged result is reused
    (same dev rows, greedy decoding, so a rerun gives the same numbers) instead of generating it again."""
    best = trainer.state.best_model_checkpoint
    step = checkpoint_step(Path(best)) if trainer.args.load_best_model_at_end and best else trainer.state.global_step
    logged = [entry for entry in trainer.state.log_history if entry.get("step") == step and "eval_cer" in entry]
    return dev_metrics_summary(logged[-1] if logged else trainer.evaluate()), step


def zero_shot_dev_metrics(trainer, run_dir: Path, dev, settings: dict, report=print) -> dict:
    """Dev metrics of the base model, measured before the first step, at Whisper's full window (the base
    always runs that way), so the log and the curves start from what fine-tuning has to beat.

    LoRA starts as a no-op (its B matrices are zero), so the model before training is the base. The result goes
    to <run>/zero_shot.json and to a cache under <workspace>/runs/.zero_shot, keyed by `settings` (base weights,
    precision, generation length, batch size) and the dev clips, so the next run of the same workspace, or
    this one resumed, does not generate it again.
    """
    from kowhisper.features import SpeechBatchCollator

    key = hashlib.sha256(json.dumps({"settings": settings, "dev": list(map(str, dev["id"]))}, sort_keys=True).encode()).hexdigest()
    cached = Path(run_dir).parent / ZERO_SHOT_CACHE / f"{key}.json"
    if cached.is_file():
        metrics = read_json(cached)["metrics"]
        report("Zero-shot dev metrics of the base model reused from an earlier run with the same base, dev clips and settings")
    else:
        report("Evaluating the base model on dev before training (zero-shot, full window)")
        windowed, trainer.eval_data_collator = trainer.eval_data_collator, SpeechBatchCollator(EncoderWindow())
        try:
            metrics = dev_metrics_summary(trainer.evaluate())
        finally:
            trainer.eval_data_collator = windowed
    if trainer.is_world_process_zero():
        record = {"key": key, "settings": settings, "metrics": metrics}
        atomic_write_json(cached, record)
        atomic_write_json(Path(run_dir) / ZERO_SHOT_FILE, record)
    return metrics


@dataclass(frozen=True)
class Verdict:
    """Did fine-tuning beat the base on dev? `line` says it in one sentence, with advice when it did not."""

    improved: bool
    line: str


def judge_against_zero_shot(zero_shot: dict, final: dict, step: int, metric: str, config) -> Verdict:
    name = metric.upper().replace("_NOSPACE", " no-space") if metric != "loss" else "loss"
    shown = (lambda value: f"{value:.4f}") if metric == "loss" else format_percent
    before, after = zero_shot.get(metric), final.get(metric)
    if before is None or after is None:
        return Verdict(True, f"dev {name}: no zero-shot figure to compare with")
    line = f"dev {name} {shown(before)} (zero-shot) -> {shown(after)} (best, step {step})"
    if after < before:
        return Verdict(True, line)
    return Verdict(False, (
        f"{line}: fine-tuning did NOT beat the base model on dev, so the base is the better model. Try a lower "
        f"learning_rate (now {config.learning_rate:g}), fewer steps or early stopping (early_stopping_patience), "
        "LoRA on fewer modules, or more training data."
    ))


def dev_metrics_summary(eval_metrics: dict) -> dict:
    """trainer.evaluate()'s eval_cer, eval_wer, ... as cer, wer, ..., without the timing entries."""
    wanted = ("cer", "wer", "cer_nospace", "loss")
    return {name: eval_metrics[f"eval_{name}"] for name in wanted if f"eval_{name}" in eval_metrics}
