"""Everything train_offline.py needs between the verified workspace and `trainer.train()`, for any model family.

Device and precision are decided once, in `choose_precision`:
  CUDA  -> base in INT8 through bitsandbytes where the family uses LoRA, bf16 or fp16 mixed precision.
  CPU   -> base in fp32; bf16 autocast only where the CPU does bf16 in hardware (AMX / AVX512-BF16), because
           emulated bf16 is slower than fp32. INT8 only when int8=true is asked for: on a CPU bitsandbytes'
           INT8 layers are a little slower than fp32, not faster (bench/RESULTS.md).
The model, its batches and how dev is scored come from the model family (kowhisper.modeling); the rest is here:
data, TrainingArguments, the step plan, stages, the zero-shot baseline and the verdict against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from kowhisper.bootstrap import BootstrapSettings, Difference, compare_with_reference
from kowhisper.checkpoints import CheckpointCompletionCallback, checkpoint_step
from kowhisper.run_report import TrainingLogCallback
from kowhisper.stages import StageCallback, StagePlan
from kowhisper.text import RATES, format_percent, rates_by_source, utterance_counts
from kowhisper.workspace import workspace_sources
from utils import atomic_write_json, cpu_has_native_bf16, read_json

# quick_test (seed 003): enough steps to cross an evaluation and a checkpoint twice, on few clips.
QUICK_TEST_MAX_STEPS = 10
QUICK_TEST_EVAL_EVERY = 5
QUICK_TEST_EVAL_SAMPLES = 16
ZERO_SHOT_FILE = "zero_shot.json"
# The rates whose dev difference from zero-shot gets a paired-bootstrap interval in the run's verdict.
COMPARED_RATES = ("cer", "kocer_cer")
ZERO_SHOT_CACHE = ".zero_shot"
# <run>/dev_utterances/step-<N>.json: each dev clip's edit counts at every evaluation, for the paired comparison.
DEV_UTTERANCES_DIR = "dev_utterances"


class TrainingSetupError(RuntimeError):
    """Training cannot start (or go on) as configured; the message says why and what to change."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def apply_quick_test(config, explicit: frozenset[str] = frozenset()):
    """The config with quick_test's caps applied, and a line per value changed or kept; unchanged if quick_test is off.

    A key in `explicit` (set by the user: config.explicit_keys) keeps the user's value, and the line says so. A staged
    run keeps its stages, each shortened in proportion so that together they take at most QUICK_TEST_MAX_STEPS (at
    least one step each); its max_steps stays their sum. When the user set one of eval_steps and save_steps, the other
    follows it, so checkpoints still land on evaluations (load_best_model_at_end needs that)."""
    if not config.quick_test:
        return config, []
    kept = [key for key in ("max_steps", "eval_steps", "save_steps", "logging_steps", "warmup_steps", "max_eval_samples")
            if key in explicit and not (key == "max_steps" and (config.stages or config.max_steps <= 0))]
    caps, notes = {}, []
    if config.stages:
        total = sum(stage.max_steps for stage in config.stages)
        if total > QUICK_TEST_MAX_STEPS:
            caps["stages"] = [dataclasses.replace(stage, max_steps=max(1, stage.max_steps * QUICK_TEST_MAX_STEPS // total))
                              for stage in config.stages]
            notes.append("quick_test: stages " + ", ".join(f"{old.name} {old.max_steps} -> {new.max_steps} steps"
                                                           for old, new in zip(config.stages, caps["stages"])))
        steps = sum(stage.max_steps for stage in caps.get("stages", config.stages))
        if config.max_steps > 0:  # set to the stages' sum, which it must stay
            caps["max_steps"] = steps
    elif "max_steps" in kept:
        steps = config.max_steps
    else:
        steps = caps["max_steps"] = QUICK_TEST_MAX_STEPS if config.max_steps <= 0 else min(config.max_steps, QUICK_TEST_MAX_STEPS)
    cadence = next((getattr(config, key) for key in ("save_steps", "eval_steps") if key in kept), min(QUICK_TEST_EVAL_EVERY, steps))
    caps.update({
        "eval_steps": cadence,
        "save_steps": cadence,
        "logging_steps": 1,
        "warmup_steps": min(config.warmup_steps, steps // 5),
        "max_eval_samples": min(config.max_eval_samples or QUICK_TEST_EVAL_SAMPLES, QUICK_TEST_EVAL_SAMPLES),
    })
    changed = {key: value for key, value in caps.items() if key not in kept and getattr(config, key) != value}
    notes += [f"quick_test: {key}={getattr(config, key)} -> {value}" for key, value in changed.items() if key != "stages"]
    notes += [f"quick_test: keeps {key}={getattr(config, key)} (set explicitly)" for key in kept]
    return dataclasses.replace(config, **changed), notes


def resolve_run_defaults(config, family):
    """The config with what depends on the model family filled in: finetune (the family's default mode, or what the
    deprecated ctc_finetune says for a CTC model), learning_rate (that mode's default) and run_name (<family>-<finetune>),
    and a line per value filled in, for the log. The run records the resolved values in its config.yaml."""
    mode = family.finetune_mode(config)
    # ctc_finetune has been read into finetune where it applies; the run records only the current key.
    filled = {"finetune": mode, "ctc_finetune": None}
    notes = []
    if config.ctc_finetune is not None:
        notes.append(f"ctc_finetune is deprecated (finetune's old name, read for CTC models only): write finetune={config.ctc_finetune}")
    if config.finetune is None:
        notes.append(f"finetune unset: {mode}, the {family.name} family's default")
    if config.learning_rate is None:
        filled["learning_rate"] = family.default_learning_rate(mode)
        notes.append(f"learning_rate unset: {filled['learning_rate']:g}, the default for {family.name} with finetune={mode}")
    if config.run_name is None:
        filled["run_name"] = f"{family.name}-{mode}"
    return dataclasses.replace(config, **filled), notes


def check_run_folder_mode(run_dir: Path, checkpoint: Path | None, lora: bool) -> None:
    """Refuse to train LoRA into a run folder that holds full weights, or the other way round (a run folder reused with
    another finetune): resuming, the Trainer would fail to load the checkpoint or load it into the wrong model; and a
    final model of the other mode left beside the new one would be taken for it by evaluation and inference.
    `checkpoint` is the one training resumes from, if any."""
    from kowhisper.modeling import final_model_dir, is_adapter_dir

    held_by = checkpoint if checkpoint is not None else final_model_dir(run_dir)
    if held_by is None or is_adapter_dir(held_by) == lora:
        return
    held, asked = ("full weights", "lora") if lora else ("a LoRA adapter", "full")
    other = "full" if lora else "lora"
    advice = f"Resume with finetune={other}, or start" if checkpoint is not None else "Start"
    raise TrainingSetupError(
        f"{held_by} holds {held}, but this command asks for finetune={asked}. {advice} a new run with another run_name "
        "(or overwrite_output_dir=true to replace this one)."
    )


def planned_steps(config) -> int:
    """The optimizer steps the run is set to take, when it is set in steps: its stages' sum, else max_steps."""
    return sum(stage.max_steps for stage in config.stages) if config.stages else config.max_steps


def quick_test_train_rows(config) -> int:
    """quick_test trains on exactly the clips its capped steps consume, so one epoch is the whole test."""
    return planned_steps(config) * config.per_device_train_batch_size * config.gradient_accumulation_steps * world_size()


# ---- device and precision -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    device: str  # "cuda" or "cpu"
    int8: bool
    fp16: bool
    bf16: bool
    reason: str
    lora: bool = True

    @property
    def summary(self) -> str:
        if not self.lora:
            base = "fp32 weights, full fine-tuning"
        else:
            base = "INT8 base (bitsandbytes) + LoRA" if self.int8 else "fp32 base + LoRA"
        mixed = "bf16 autocast" if self.bf16 else "fp16 mixed precision" if self.fp16 else "fp32 compute"
        return f"{self.device.upper()}, {base}, {mixed}"

    def notice(self) -> str:
        return f"Precision: {self.summary} ({self.reason})"


def choose_precision(config, lora: bool = True) -> Precision:
    """`lora`: whether the family trains LoRA on a frozen base; only such a base may be INT8 (full fine-tuning
    updates every weight, and bitsandbytes' INT8 weights cannot be trained)."""
    import torch

    if config.int8 and not lora:
        raise TrainingSetupError("int8=true quantizes a frozen base under LoRA, but this run trains every weight "
                                 "(finetune=full, or a CTC model's default); leave int8 unset, or set finetune=lora")

    if torch.cuda.is_available():
        if world_size() > torch.cuda.device_count():
            raise TrainingSetupError(
                f"{world_size()} processes were launched but only {torch.cuda.device_count()} GPU(s) are visible "
                f"(cuda_visible_devices={config.cuda_visible_devices}); list one GPU per process, "
                "e.g. cuda_visible_devices=0,1 for --nproc_per_node 2"
            )
        int8 = lora if config.int8 is None else config.int8
        if int8:
            check_int8_support("cuda")
        bf16 = torch.cuda.is_bf16_supported() if config.bf16 is None else config.bf16
        fp16 = (not bf16) if config.fp16 is None else config.fp16
        return Precision("cuda", int8, fp16, bf16, f"GPU {torch.cuda.get_device_name()}", lora)

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
    return Precision("cpu", bool(config.int8), False, bf16, reason, lora)


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
    train: object  # the sources' train splits mixed by weight, each row tagged with its "source"
    dev: object | None  # the evaluated part of every source's dev split, tagged likewise; None without dev
    counts: dict

    @property
    def dev_sources(self) -> list[str]:
        """Each evaluated dev row's source, in the order the Trainer evaluates them."""
        return [] if self.dev is None else [str(name) for name in self.dev["source"]]


def load_splits(workspace: Path, config) -> TrainingData:
    """The workspace's training data: the train splits of its sources mixed by weight, and the dev splits of all of
    them (held-out sources, weight 0, included) for per-source dev metrics."""
    sources = workspace_sources(workspace)
    trained = [source for source in sources if source.weight > 0]
    if not trained:
        raise TrainingSetupError("every source in the workspace has weight 0 (held out): nothing to train on")
    train_parts = []
    for source in trained:
        train = _load_split(source.split_dir("train"))
        if train is None or len(train) == 0:
            state = "is missing" if train is None else "has no rows"
            raise TrainingSetupError(
                f"the training split {source.split_dir('train')} {state}. The online setup writes it: check "
                f"{source.dir / 'report.json'} for why rows were dropped, and re-run run_online_setup.py with data that has "
                "a train split (or give this source weight 0 to hold it out)."
            )
        train_parts.append(train.add_column("source", [source.name] * len(train)))
    seed = config.data_seed if config.data_seed is not None else config.seed
    train = mix_sources(train_parts, [source.weight for source in trained], seed)
    if config.quick_test:
        train = train.select(range(min(len(train), quick_test_train_rows(config))))

    if config.max_eval_samples is not None and config.max_eval_samples < 1:
        raise TrainingSetupError("max_eval_samples must be at least 1 or unset; set eval_strategy=no to skip evaluation")
    counts = {"sources": {}}
    dev_parts = []
    for source in sources:
        dev, test = _load_split(source.split_dir("dev")), _load_split(source.split_dir("test"))
        # Kept even with eval_strategy=no: the final evaluation runs after the adapter is safely saved.
        evaluated = dev.select(range(min(len(dev), config.max_eval_samples or len(dev)))) if dev is not None and len(dev) else None
        if evaluated is not None:
            dev_parts.append(evaluated.add_column("source", [source.name] * len(evaluated)))
        source_train = next((part for part, s in zip(train_parts, trained) if s is source), None)
        counts["sources"][source.name] = {
            "weight": source.weight,
            "train": 0 if source_train is None else len(source_train),
            "train_hours": 0.0 if source_train is None else round(sum(source_train["duration"]) / 3600, 3),
            "dev": 0 if dev is None else len(dev),
            "dev_evaluated": 0 if evaluated is None else len(evaluated),
            "test": 0 if test is None else len(test),
        }
    if config.eval_strategy != "no" and not dev_parts:
        raise TrainingSetupError(
            f"eval_strategy={config.eval_strategy} evaluates on the dev split, but no source has one "
            f"({', '.join(str(source.split_dir('dev')) for source in sources)}); set eval_strategy=no to train without evaluation"
        )
    evaluated = None
    if dev_parts:
        from datasets import concatenate_datasets

        evaluated = concatenate_datasets(dev_parts)
        # Longest first, so each evaluation batch holds clips of similar length and pads them least.
        durations = evaluated["duration"]
        evaluated = evaluated.select(sorted(range(len(evaluated)), key=lambda i: durations[i], reverse=True))

    per_source = counts["sources"].values()
    counts.update({
        "train": sum(entry["train"] for entry in per_source),
        "train_hours": round(sum(entry["train_hours"] for entry in per_source), 3),
        "train_per_epoch": len(train),  # after mixing: small sources are drawn again until every source is used up
        "dev": sum(entry["dev"] for entry in per_source),
        "dev_evaluated": 0 if evaluated is None else len(evaluated),
        "test": sum(entry["test"] for entry in per_source),
    })
    # numpy rows: the collator pads arrays; python lists of 80-float frames would be built and thrown away.
    return TrainingData(train.with_format("numpy"), None if evaluated is None else evaluated.with_format("numpy"), counts)


def mix_sources(parts: list, weights: list[float], seed: int):
    """One training set drawn from the sources' train splits: each row comes from source i with probability
    weight_i / sum(weights), until every source has been used up at least once (smaller sources repeat). This is
    datasets.interleave_datasets, seeded, so a rerun, a resume and every DDP rank see the same rows in the same order."""
    if len(parts) == 1:
        return parts[0]
    from datasets import interleave_datasets

    total = sum(weights)
    return interleave_datasets(parts, probabilities=[weight / total for weight in weights], seed=seed, stopping_strategy="all_exhausted")


def _load_split(path: Path):
    """The split, None if it is missing, or a 0-row dataset if it was saved empty."""
    from datasets import Dataset, load_from_disk

    if not path.is_dir():
        return None
    # A split saved with no rows has no data files, and load_from_disk fails on it with an IndexError.
    state = path / "state.json"
    if state.is_file() and not read_json(state).get("_data_files"):
        return Dataset.from_dict({})
    return load_from_disk(str(path))


# ---- model ------------------------------------------------------------------------------------------------------


def apply_lora(model, config, exclude_modules: str | None = None, modules_to_save: list[str] | None = None):
    """The model with LoRA adapters on config.target_modules (names, or one regex as peft takes it);
    `modules_to_save` are trained in full beside them (a new output head, say)."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    set_seed(config.seed)  # LoRA's A matrices are drawn at random
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets,
                      exclude_modules=exclude_modules, modules_to_save=modules_to_save, bias="none")
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` alias; the warning is about peft's code.
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as error:
        raise TrainingSetupError(f"LoRA target_modules={targets}: {error}") from None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters, for a peft model (which counts its quantized weights right) or a plain one."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


@contextlib.contextmanager
def preserved_random_state():
    """Python's, numpy's and torch's random generators as they were before the block."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class KowhisperTrainerMixin:
    """What every family's Trainer adds to Hugging Face's (put it first among the bases):

    - dev rows are evaluated in their order, which tells each row's source;
    - `evaluate_base_model()` scores dev before any training step, for the zero-shot baseline (a family whose base
      runs differently from the model it trains overrides it);
    - staged runs get a learning-rate schedule that restarts per stage (kowhisper.stages).
    """

    def __init__(self, *args, stages: StagePlan | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stages = stages

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.stages is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        import torch

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.stages.lr_factor)
        return self.lr_scheduler

    def _get_eval_sampler(self, eval_dataset):
        # Dev rows stay in their order (load_splits sorts them by duration already): the per-source dev metrics
        # tell the rows' sources by position. Under DDP accelerate shards whole batches and gathers them in order.
        if eval_dataset is None or self.args.world_size > 1:
            return None
        from torch.utils.data import SequentialSampler

        return SequentialSampler(eval_dataset)

    def evaluate_base_model(self) -> dict:
        """trainer.evaluate() as the untrained base runs (LoRA starts as a no-op; a new CTC head is untrained).

        The random generators are put back afterwards: building a DataLoader draws from them, and a run must train
        the same whether its zero-shot result was measured now or reused from the cache."""
        with preserved_random_state():
            return self.evaluate()


def stage_plan(config, family) -> StagePlan | None:
    """The run's stages on the global step axis, or None for an ordinary one-stage run. Refused for a family whose
    model has no parts to train in turn (ModelFamily.stage_parts)."""
    if not config.stages:
        return None
    if not family.stage_parts:
        raise TrainingSetupError(f"stages train one part of a model after another, and a {family.name} model has no parts "
                                 f"to train in turn. Leave stages empty for a {family.name} run")
    for stage in config.stages:
        if stage.train not in (*family.stage_parts, "both"):
            raise TrainingSetupError(f"stages[{stage.name}].train={stage.train}: a {family.name} model's parts are "
                                     f"{', '.join(family.stage_parts)} (or both)")
    try:
        return StagePlan(config.stages, config.learning_rate, config.warmup_steps, config.lr_scheduler_type)
    except ValueError as error:
        raise TrainingSetupError(str(error)) from None


def build_training_arguments(config, precision: Precision, run_dir: Path, family):
    """The family's TrainingArguments (it may add its own) from the settings every family shares."""
    evaluating = config.eval_strategy != "no"
    if config.early_stopping_patience > 0 and not evaluating:
        raise TrainingSetupError("early_stopping_patience needs evaluation; set eval_strategy=steps or patience 0")
    if not 0 <= config.warmup_ratio < 1:
        raise TrainingSetupError(f"warmup_ratio is a fraction of the total steps in [0, 1), got {config.warmup_ratio}")
    try:
        return family.training_arguments(config, dict(
            output_dir=str(run_dir),
            run_name=config.run_name,
            per_device_train_batch_size=config.per_device_train_batch_size,
            per_device_eval_batch_size=config.per_device_eval_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            num_train_epochs=config.num_train_epochs,
            max_steps=stage_plan(config, family).total_steps if config.stages else config.max_steps,
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
            save_total_limit=None,  # CheckpointCompletionCallback cleans up: the best and the last, plus save_total_limit
            dataloader_num_workers=config.dataloader_num_workers,
            seed=config.seed,
            data_seed=config.data_seed,
            report_to=list(config.report_to) or "none",
            metric_for_best_model=config.metric_for_best_model if evaluating else None,
            greater_is_better=False,  # cer, wer, cer_nospace and loss are all errors
            load_best_model_at_end=config.load_best_model_at_end and evaluating,
            fp16=precision.fp16,
            bf16=precision.bf16,
            use_cpu=precision.device == "cpu",
            ddp_backend="gloo" if precision.device == "cpu" and world_size() > 1 else None,
            # A stage freezes part of the LoRA weights after DDP has registered them all.
            ddp_find_unused_parameters=bool(config.stages),
            # PeftModel.forward takes **kwargs, so the Trainer cannot tell which columns or labels it uses.
            remove_unused_columns=False,
            label_names=["labels"],
        ))
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


class DevScorer:
    """compute_metrics for any family: `prediction_texts` turns the Trainer's predictions into (references,
    hypotheses), in dev order; this scores them per source (cer_<source>, wer_<source>, cer_nospace_<source>,
    kocer_cer_<source>) and overall, as evaluation does (kowhisper.text.rates_by_source). Each clip's edit counts
    are kept in `last_counts` for DevUtterancesCallback."""

    def __init__(self, prediction_texts, dev_sources: list[str]):
        self.prediction_texts = prediction_texts
        self.dev_sources = dev_sources
        self.last_counts: list[dict | None] | None = None

    def __call__(self, prediction) -> dict[str, float]:
        references, hypotheses = self.prediction_texts(prediction)
        # Under DDP every process evaluates whole batches in turn and the last one is padded with rows from the
        # start; gathered, the predictions keep the dev order with those repeats at the end.
        if len(references) < len(self.dev_sources):
            raise RuntimeError(f"{len(references)} dev predictions for {len(self.dev_sources)} dev rows")
        references, hypotheses = references[: len(self.dev_sources)], hypotheses[: len(self.dev_sources)]
        counts = [utterance_counts(reference, hypothesis) for reference, hypothesis in zip(references, hypotheses)]
        self.last_counts = counts
        overall, per_source = rates_by_source(references, hypotheses, counts, self.dev_sources)
        return {**{rate: overall[rate] for rate in RATES},
                **{f"{rate}_{source}": rates[rate] for source, rates in per_source.items() for rate in RATES}}


class DevUtterancesCallback(TrainerCallback):
    """Writes each evaluation's per-clip edit counts to <run>/dev_utterances/step-<N>.json (the zero-shot one goes
    to zero_shot.json), so the final verdict can compare the chosen step with zero-shot clip by clip, also after
    a resume."""

    def __init__(self, scorer: DevScorer, run_dir: Path):
        self.scorer = scorer
        self.folder = Path(run_dir) / DEV_UTTERANCES_DIR

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and self.scorer.last_counts is not None and state.global_step > 0:
            atomic_write_json(self.folder / f"step-{state.global_step}.json",
                              {"step": state.global_step, "sources": self.scorer.dev_sources, "counts": self.scorer.last_counts})


def build_trainer(model, processor, args, data: TrainingData, config, family, report=print):
    from transformers import EarlyStoppingCallback

    if "tensorboard" in args.report_to:
        # A fixed folder instead of one per start, so a resumed run continues the same TensorBoard curves.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(args.output_dir) / "tensorboard"))
    log_callback = TrainingLogCallback(args.output_dir, report)
    callbacks = [CheckpointCompletionCallback(config.save_total_limit), log_callback]
    scorer = DevScorer(family.prediction_texts(processor), data.dev_sources) if data.dev is not None else None
    if scorer is not None:
        callbacks.append(DevUtterancesCallback(scorer, args.output_dir))
    stages = stage_plan(config, family)
    if stages is not None:
        callbacks.append(StageCallback(stages, model, family, report, write_record=log_callback.append_record))
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
    sources = dict.fromkeys(data.dev_sources)
    selectable = {"loss", *RATES, *(f"{rate}_{source}" for rate in RATES for source in sources)}
    if config.metric_for_best_model not in selectable:
        raise TrainingSetupError(f"metric_for_best_model={config.metric_for_best_model} names no source with dev clips; "
                                 f"choose one of {', '.join(sorted(selectable))}")
    return family.build_trainer(model, processor, args, data, config, callbacks, stages, scorer)


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
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    weights_from = Path(best) if trainer.args.load_best_model_at_end and best and Path(best).is_dir() else Path(checkpoint)
    # The Trainer's own loader, as train() uses it to resume: a LoRA adapter or full weights, safetensors only.
    trainer._load_from_checkpoint(str(weights_from))


# ---- outputs ----------------------------------------------------------------------------------------------------


def final_dev_metrics(trainer) -> tuple[dict, int]:
    """(dev metrics, step) of the weights the model holds now: the last step's, or the best checkpoint's with
    load_best_model_at_end. If that step was already evaluated during training, its logged result is reused
    (same dev rows, greedy decoding, so a rerun gives the same numbers) instead of generating it again."""
    best = trainer.state.best_model_checkpoint
    step = checkpoint_step(Path(best)) if trainer.args.load_best_model_at_end and best else trainer.state.global_step
    logged = [entry for entry in trainer.state.log_history if entry.get("step") == step and "eval_cer" in entry]
    return dev_metrics_summary(logged[-1] if logged else trainer.evaluate()), step


class ZeroShotAsBest(TrainerCallback):
    """The zero-shot base as the first candidate for the best model: the Trainer's best metric starts at the base's dev
    score, so only a checkpoint that beats the base becomes best, and early stopping counts evaluations that fail to beat
    it. (A TrainerCallback; a resumed run keeps the best metric its checkpoint recorded.)"""

    def __init__(self, zero_shot_metric: float):
        self.zero_shot_metric = zero_shot_metric

    def on_train_begin(self, args, state, control, **kwargs):
        if state.best_metric is None:
            state.best_metric = self.zero_shot_metric


class BaseWeights:
    """A copy, on the CPU, of the weights training will change, taken before the first step (or before a resumed run
    loads its checkpoint): what the run's final model is set back to when no checkpoint beat the base on dev. LoRA
    weights for a LoRA run (a few MB), every trained weight for full fine-tuning (the model's size)."""

    def __init__(self, model):
        self.values = {name: parameter.detach().to("cpu", copy=True) for name, parameter in model.named_parameters()
                       if parameter.requires_grad}

    def restore(self, model) -> None:
        import torch

        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in self.values:
                    parameter.copy_(self.values[name].to(parameter.device, parameter.dtype))


def base_beats(zero_shot: dict, final: dict, metric: str) -> bool:
    """Whether the untrained base scored better on dev than the run's final model."""
    before, after = zero_shot.get(metric), final.get(metric)
    return before is not None and after is not None and before < after


def zero_shot_dev_metrics(trainer, run_dir: Path, dev, settings: dict, report=print) -> dict:
    """Dev metrics of the base model, measured before the first step as the base runs (a Whisper base at its full
    window), so the log and the curves start from what fine-tuning has to beat.

    LoRA starts as a no-op (its B matrices are zero) and full fine-tuning from the base's own weights, so the model
    before training is the base. The result, with each dev clip's edit counts, goes to <run>/zero_shot.json and to a
    cache under <workspace>/runs/.zero_shot, keyed by `settings` (base weights, precision, generation length, batch
    size), the dev clips and what is scored (the rates and kocer's version), so the next run of the same workspace,
    or this one resumed, does not generate it again.
    """
    import kocer

    # The labels count too: the dev loss is computed against them.
    dev_rows = [[str(row_id), [int(token) for token in labels]] for row_id, labels in zip(dev["id"], dev["labels"])]
    scoring = {"rates": list(RATES), "kocer": kocer.__version__}
    key = hashlib.sha256(json.dumps({"settings": settings, "dev": dev_rows, "scoring": scoring}, sort_keys=True).encode()).hexdigest()
    cached = Path(run_dir).parent / ZERO_SHOT_CACHE / f"{key}.json"
    if cached.is_file():
        record = read_json(cached)
        metrics, counts = record["metrics"], record.get("counts")
        report("Zero-shot dev metrics of the base model reused from an earlier run with the same base, dev clips and settings")
    else:
        report("Evaluating the base model on dev before training (zero-shot)")
        metrics = dev_metrics_summary(trainer.evaluate_base_model())
        counts = trainer.compute_metrics.last_counts
    if trainer.is_world_process_zero():
        # Each dev clip's edit counts too, for the paired comparison of the final model with zero-shot.
        record = {"key": key, "settings": settings, "metrics": metrics, "counts": counts}
        atomic_write_json(cached, record)
        atomic_write_json(Path(run_dir) / ZERO_SHOT_FILE, record)
    return metrics


@dataclass(frozen=True)
class Verdict:
    """Did fine-tuning beat the base on dev? `line` says it in one sentence, with advice when it did not, and
    `versus_zero_shot` holds the paired-bootstrap difference of CER and kocer CER (empty without per-clip counts)."""

    improved: bool
    line: str
    versus_zero_shot: dict[str, Difference] = field(default_factory=dict)
    bootstrap: dict | None = None


def judge_against_zero_shot(zero_shot: dict, final: dict, step: int, metric: str, config, run_dir: Path) -> Verdict:
    name = metric.upper().replace("_NOSPACE", " no-space") if metric != "loss" else "loss"
    name = "kocer CER" if metric == "kocer_cer" else name
    shown = (lambda value: f"{value:.4f}") if metric == "loss" else format_percent
    before, after = zero_shot.get(metric), final.get(metric)
    if before is None or after is None:
        return Verdict(True, f"dev {name}: no zero-shot figure to compare with")
    line = f"dev {name} {shown(before)} (zero-shot) -> {shown(after)} (best, step {step})"
    settings = BootstrapSettings.from_config(config)
    differences = dev_differences(run_dir, step, settings)
    bootstrap = None
    if differences:
        clips = len(read_json(Path(run_dir) / ZERO_SHOT_FILE)["counts"])
        bootstrap = settings.as_dict(clips)
        line += ("; difference from zero-shot in points: " + ", ".join(f"{rate_name(rate)} {difference.describe()}"
                                                                       for rate, difference in differences.items())
                 + f" ({settings.describe(clips, 'dev clips')})")
    if after < before:
        if metric in differences and differences[metric].verdict != "better":
            line += (f": the {name} gain is within the noise of these dev clips; check it on test (evaluate_model.py) "
                     "before preferring this model to the base")
        return Verdict(True, line, differences, bootstrap)
    if step == 0:
        line = (f"dev {name} {shown(before)} (zero-shot): no checkpoint beat it, so the run's final model is the base "
                "itself (unchanged weights, run as the base runs)")
    return Verdict(False, (
        f"{line}: fine-tuning did NOT beat the base model on dev, so the base is the better model. Try a lower "
        f"learning_rate (now {config.learning_rate:g}), fewer steps or early stopping (early_stopping_patience), "
        "LoRA on fewer modules, or more training data."
    ), differences, bootstrap)


def rate_name(rate: str) -> str:
    return {"cer": "CER", "kocer_cer": "kocer CER"}.get(rate, rate)


def dev_differences(run_dir: Path, step: int, settings: BootstrapSettings) -> dict[str, Difference]:
    """CER and kocer CER of the step's dev predictions minus zero-shot's, paired clip by clip; empty when either
    side's per-clip counts are missing (a zero-shot result cached by an older version) or the dev clips differ."""
    zero_shot_file, step_file = Path(run_dir) / ZERO_SHOT_FILE, Path(run_dir) / DEV_UTTERANCES_DIR / f"step-{step}.json"
    if not (zero_shot_file.is_file() and step_file.is_file()):
        return {}
    before, after = read_json(zero_shot_file).get("counts"), read_json(step_file)
    if not before or len(before) != len(after["counts"]):
        return {}
    return compare_with_reference(before, {"final": after["counts"]}, after["sources"], COMPARED_RATES, settings)["final"]


def dev_metrics_summary(eval_metrics: dict) -> dict:
    """trainer.evaluate()'s eval_cer, eval_cer_<source>, eval_loss, ... as cer, cer_<source>, loss, ..., without the
    timing entries."""
    timing = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")
    return {key.removeprefix("eval_"): value for key, value in eval_metrics.items()
            if key.startswith("eval_") and not key.removeprefix("eval_").startswith(timing)}
