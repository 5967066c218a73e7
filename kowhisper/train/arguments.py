"""A training run's settings, for any model family: the config resolved for the family, quick_test and the corpus's
size (kowhisper.train.schedule), refused where it cannot train, and turned into TrainingArguments and a step plan.

train_offline.py reads from here down through the run: kowhisper.train.precision (device and precision),
kowhisper.train.data (the mixed sources), kowhisper.train.trainer (the Trainer every family builds on),
kowhisper.train.dev_scoring (dev metrics per source) and kowhisper.train.zero_shot (the base as baseline and candidate, and
the verdict against it). The model, its batches and how its dev predictions become text come from the model
family (kowhisper.families.base).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from kowhisper.config import TrainGroup, TrainingArgumentsGroup
from kowhisper.families.base import final_model_dir, is_adapter_dir
from kowhisper.train.schedule import (
    SCHEDULE_KEYS,
    Schedule,
    auto_schedule,
    count_evaluations,
    evaluation_interval,
    patience_for,
    warmup_for,
)
from kowhisper.train.stages import StagePlan

# quick_test (seed 003): enough steps to cross an evaluation and a checkpoint twice, on few clips.
QUICK_TEST_MAX_STEPS = 10
QUICK_TEST_EVAL_EVERY = 5
QUICK_TEST_EVAL_SAMPLES = 16


class TrainingSetupError(RuntimeError):
    """Training cannot start (or go on) as configured; the message says why and what to change."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def apply_quick_test(config: TrainGroup, explicit: frozenset[str] = frozenset()):
    """The config with quick_test's caps applied, and a line per value changed or kept; unchanged if quick_test is off.

    A key in `explicit` (set by the user: config.explicit_keys) keeps the user's value, and the line says so. A staged
    run keeps its stages, each shortened in proportion so that together they take at most QUICK_TEST_MAX_STEPS (at
    least one step each); its max_steps stays their sum. When the user set one of eval_steps and save_steps, the other
    follows it, so checkpoints still land on evaluations (load_best_model_at_end needs that). A schedule key set to null
    asks for auto, and gets quick_test's cap."""
    if not config.quick_test:
        return config, []
    kept = [key for key in ("max_steps", "eval_steps", "save_steps", "logging_steps", "warmup_steps", "max_eval_samples")
            if key in explicit and not (key == "max_steps" and (config.stages or config.max_steps <= 0))
            and not (key in SCHEDULE_KEYS and getattr(config, key) is None)]
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
        "warmup_steps": min(warmup_for(steps) if config.warmup_steps is None else config.warmup_steps, steps // 5),
        "max_eval_samples": min(config.max_eval_samples or QUICK_TEST_EVAL_SAMPLES, QUICK_TEST_EVAL_SAMPLES),
    })
    changed = {key: value for key, value in caps.items() if key not in kept and getattr(config, key) != value}
    notes += [f"quick_test: {key}={_shown(getattr(config, key))} -> {value}" for key, value in changed.items() if key != "stages"]
    notes += [f"quick_test: keeps {key}={getattr(config, key)} (set explicitly)" for key in kept]
    return dataclasses.replace(config, **changed), notes


def _shown(value) -> str:
    return "auto" if value is None else str(value)


def resolve_run_defaults(config: TrainGroup, family):
    """The config with what depends on the model family filled in: finetune (the family's default mode), learning_rate
    (that mode's default) and run_name (<family>-<finetune>), and a line per value filled in, for the log. The run
    records the resolved values in its config.yaml."""
    mode = family.finetune_mode(config)
    filled = {"finetune": mode}
    notes = []
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


def planned_steps(config: TrainGroup) -> int:
    """The optimizer steps the run is set to take, when it is set in steps: its stages' sum, else max_steps."""
    return sum(stage.max_steps for stage in config.stages) if config.stages else config.max_steps


def steps_per_epoch(train_rows: int, per_device_batch: int, accumulation: int, processes: int) -> int:
    """The Trainer's own step arithmetic: batches are sharded across processes, and a partial accumulation at the end of
    an epoch still makes an optimizer step."""
    batches_per_process = math.ceil(math.ceil(train_rows / per_device_batch) / processes)
    return max(math.ceil(batches_per_process / accumulation), 1)


def resolve_schedule(config: TrainGroup, train_hours: float, train_rows: int) -> tuple[TrainGroup, Schedule]:
    """The config with each schedule key left unset (kowhisper.train.schedule.SCHEDULE_KEYS) filled in by the rule, from
    the corpus: `train_hours` of audio (each clip once) in `train_rows` rows per epoch (load_splits' counts), and the
    Schedule the run prints and records. The run's config.yaml then holds the values used, as for learning_rate.

    A key the user set wins, key by key, and the rest follow from it: num_train_epochs set trains that many epochs, with
    no cap; max_steps > 0, or stages, set the length (a staged run's is its stages', and it never stops early); eval,
    save and warm-up steps follow from the length; when one of eval_steps and save_steps is set, the other follows it,
    so checkpoints land on evaluations (load_best_model_at_end needs that). When the rule's cap shortens the run,
    max_steps becomes the cap, since TrainingArguments counts epochs otherwise."""
    processes = world_size()
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    per_epoch = steps_per_epoch(train_rows, batch, accumulation, processes)
    rule = auto_schedule(train_hours, per_epoch, batch * accumulation * processes)
    epochs = rule.epochs if config.num_train_epochs is None else config.num_train_epochs
    max_steps = config.max_steps
    if config.stages:
        total, length_from = planned_steps(config), "stages"
    elif config.max_steps > 0:
        total, length_from = config.max_steps, "max_steps"
    elif config.num_train_epochs is not None:
        total, length_from = math.ceil(epochs * per_epoch), "epochs"
    else:
        total, length_from = rule.total_steps, rule.length_from
        if length_from == "cap":
            max_steps = total
    interval = evaluation_interval(total)
    eval_steps = next((value for value in (config.eval_steps, config.save_steps) if value is not None), interval)
    save_steps = next((value for value in (config.save_steps, config.eval_steps) if value is not None), interval)
    warmup = warmup_for(total) if config.warmup_steps is None else config.warmup_steps
    patience = config.early_stopping_patience
    if patience is None:
        patience = patience_for(count_evaluations(total, eval_steps, per_epoch, config.eval_strategy), staged=bool(config.stages))
    schedule = Schedule(train_hours=train_hours, steps_per_epoch=per_epoch, epochs=epochs, total_steps=total, eval_steps=eval_steps,
                        save_steps=save_steps, warmup_steps=warmup, early_stopping_patience=patience, length_from=length_from,
                        evaluating=config.eval_strategy, user_set=tuple(key for key in SCHEDULE_KEYS if getattr(config, key) is not None))
    resolved = dataclasses.replace(config, num_train_epochs=epochs, max_steps=max_steps, eval_steps=eval_steps, save_steps=save_steps,
                                   warmup_steps=warmup, early_stopping_patience=patience)
    return resolved, schedule


def quick_test_train_rows(config: TrainGroup) -> int:
    """quick_test trains on exactly the clips its capped steps consume, so one epoch is the whole test."""
    return planned_steps(config) * config.per_device_train_batch_size * config.gradient_accumulation_steps * world_size()


def stage_plan(config: TrainGroup, family) -> StagePlan | None:
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


def build_training_arguments(config: TrainGroup, precision, run_dir: Path, family):
    """The family's TrainingArguments (it may add its own) from the settings every family shares, on the device and
    precision `precision` (kowhisper.train.precision.Precision) names: every key of TrainingArgumentsGroup as it is,
    under its own name, then what is computed here from the other keys, the run and the device.

    The schedule keys are resolve_schedule's. A caller that skips it (a benchmark in bench/ that builds its own trainer)
    gets the rule's schedule for an empty corpus around what its config sets: 4 epochs, and for a run under 1,000 steps
    evaluation and checkpoints every 100 and a warm-up of 10, the fixed defaults before the schedule scaled, so its
    numbers stay comparable (and kowhisper.train.trainer.build_trainer adds no early stopping for a patience left unset)."""
    if any(getattr(config, key) is None for key in SCHEDULE_KEYS):
        config, _ = resolve_schedule(config, train_hours=0.0, train_rows=0)
    evaluating = config.eval_strategy != "no"
    if config.early_stopping_patience > 0 and not evaluating:
        raise TrainingSetupError("early_stopping_patience needs evaluation; set eval_strategy=steps or patience 0")
    if not 0 <= config.warmup_ratio < 1:
        raise TrainingSetupError(f"warmup_ratio is a fraction of the total steps in [0, 1), got {config.warmup_ratio}")
    arguments = {key.name: getattr(config, key.name) for key in dataclasses.fields(TrainingArgumentsGroup)}
    try:
        arguments.update(
            output_dir=str(run_dir),
            run_name=config.run_name,
            max_steps=stage_plan(config, family).total_steps if config.stages else config.max_steps,
            # transformers 5 merged warmup_ratio into warmup_steps: values below 1 are a ratio.
            warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
            train_sampling_strategy="group_by_length" if config.group_by_length else "random",
            length_column_name="duration",  # every prepared split has it; features are stored trimmed
            # transformers 5 name for gradient checkpointing. Non-reentrant checkpointing lets gradients reach
            # the LoRA weights although the inputs and the frozen base do not require grad.
            activation_checkpointing=config.gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
            save_strategy="epoch" if config.eval_strategy == "epoch" else "steps",
            save_total_limit=None,  # CheckpointCompletionCallback cleans up: the best and the last, plus keep_other_checkpoints
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
        )
        return family.training_arguments(config, arguments)
    except ValueError as error:
        raise TrainingSetupError(f"invalid training settings: {error}") from None


@dataclass(frozen=True)
class TrainingPlan:
    train_rows: int
    effective_batch: int
    steps_per_epoch: int
    total_steps: int
    epochs: float
    schedule: Schedule | None = None  # how the schedule keys were chosen (resolve_schedule), printed on the next line

    def describe(self) -> str:
        plan = (
            f"Training plan: {self.train_rows} clips, effective batch {self.effective_batch}, "
            f"{self.steps_per_epoch} steps per epoch, {self.total_steps} optimizer steps (~{self.epochs:.2f} epochs)"
        )
        return plan if self.schedule is None else f"{plan}\n{self.schedule.describe()}"


def training_plan(train_rows: int, args, schedule: Schedule | None = None) -> TrainingPlan:
    """The steps the Trainer will take, by its own arithmetic (steps_per_epoch), printed before it starts."""
    per_epoch = steps_per_epoch(train_rows, args.per_device_train_batch_size, args.gradient_accumulation_steps, args.world_size)
    if args.max_steps > 0:
        total_steps = args.max_steps
    else:
        total_steps = math.ceil(args.num_train_epochs * per_epoch)
    effective_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return TrainingPlan(train_rows, effective_batch, per_epoch, total_steps, total_steps / per_epoch, schedule)


def out_of_memory_advice(config: TrainGroup) -> str:
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
