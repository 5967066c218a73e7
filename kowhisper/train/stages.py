"""Staged training within one run: which weights (LoRA, or full weights) learn at which step, at what learning rate.

One Trainer, one optimizer and one sequence of checkpoints carry the whole run, so resume after kill -9 works
as for any run and lands inside the right stage: the stage follows from the global step. The optimizer holds
every trained weight from the start; a stage freezes the others by `requires_grad=False`, which leaves their
gradients None, so AdamW neither moves nor decays them. The learning rate follows the run's schedule type
within each stage, warm-up included, scaled to the stage's own peak rate.

Which parts a model has (Whisper: encoder and decoder) and which part a weight belongs to is the model family's
to say (ModelFamily.stage_parts and part_of); a family without parts offers no stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transformers import TrainerCallback

if TYPE_CHECKING:
    from kowhisper.families.base import ModelFamily

SCHEDULE_SHAPES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass(frozen=True)
class PlannedStage:
    index: int
    name: str
    train: str  # one of the family's stage_parts, or both
    first_step: int  # global steps first_step .. first_step + steps - 1 belong to this stage
    steps: int
    learning_rate: float


class StagePlan:
    """The stages of a run laid out on the global step axis."""

    def __init__(self, stages, base_learning_rate: float, warmup_steps: int, schedule: str):
        if schedule not in SCHEDULE_SHAPES:
            raise ValueError(f"staged runs take lr_scheduler_type {', '.join(SCHEDULE_SHAPES)}; got {schedule!r}")
        self.base_learning_rate = base_learning_rate
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        self.stages: list[PlannedStage] = []
        first = 0
        for index, stage in enumerate(stages):
            rate = base_learning_rate if stage.learning_rate is None else stage.learning_rate
            self.stages.append(PlannedStage(index, stage.name, stage.train, first, stage.max_steps, rate))
            first += stage.max_steps

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def at(self, step: int) -> PlannedStage:
        """The stage the optimizer step number `step` (0-based, as the scheduler counts) belongs to."""
        for stage in self.stages:
            if step < stage.first_step + stage.steps:
                return stage
        return self.stages[-1]

    def lr_factor(self, step: int) -> float:
        """Multiplier of base_learning_rate at `step`: the stage's peak times the schedule's shape within it."""
        stage = self.at(step)
        local, warmup = step - stage.first_step, min(self.warmup_steps, stage.steps)
        if self.schedule != "constant" and local < warmup:
            shape = (local + 1) / (warmup + 1)
        elif self.schedule in ("linear", "cosine"):
            progress = (local - warmup) / max(stage.steps - warmup, 1)
            shape = max(0.0, 1 - progress) if self.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        else:
            shape = 1.0
        return stage.learning_rate / self.base_learning_rate * shape if self.base_learning_rate else 0.0


def set_trainable_part(model, train: str, candidates: set[str], part_of) -> int:
    """Of the weights named in `candidates` (what the run trains: its LoRA weights, or every weight the model left
    trainable under full fine-tuning), let those of `train` (a part, as `part_of(name)` tells a weight's, or both)
    learn and freeze the rest; returns how many weights are trainable now. Weights outside `candidates` are never
    touched."""
    count = 0
    for name, parameter in model.named_parameters():
        if name not in candidates:
            continue
        parameter.requires_grad_(train == "both" or part_of(name) == train)
        count += parameter.numel() if parameter.requires_grad else 0
    return count


class StageCallback(TrainerCallback):
    """Switches the trainable part when a step begins in a new stage (also the first step after a resume), and
    reports it. Not at train begin: the Trainer builds its optimizer after that, and the optimizer must hold
    every LoRA weight. `family` says which part of the model each weight is."""

    def __init__(self, plan: StagePlan, model, family: ModelFamily, report=print, write_record=None):
        self.plan = plan
        self.model = model
        self.family = family
        # What the run trains, taken before any stage freezes part of it: the LoRA weights (peft froze the base), or
        # under full fine-tuning every weight the model itself left trainable (not Whisper's fixed encoder positions).
        self.candidates = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        self.what = "LoRA" if any("lora_" in name for name in self.candidates) else "weights"
        self.report = report
        self.write_record = write_record
        self.current: PlannedStage | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        stage = self.plan.at(state.global_step)
        if stage is self.current:
            return
        self.current = stage
        trainable = set_trainable_part(self.model, stage.train, self.candidates, self.family.part_of)
        if not state.is_world_process_zero:
            return
        part = " and ".join(self.family.stage_parts) if stage.train == "both" else stage.train
        self.report(f"Stage {stage.index + 1}/{len(self.plan.stages)} '{stage.name}' (steps {stage.first_step + 1}-"
                    f"{stage.first_step + stage.steps}): trains the {part} {self.what}, {trainable:,} trainable parameters, "
                    f"learning rate {stage.learning_rate:g}")
        if self.write_record is not None:
            self.write_record({"step": stage.first_step, "stage": stage.name, "stage_train": stage.train,
                               "stage_trainable_parameters": trainable, "stage_learning_rate": stage.learning_rate})


def stage_records(log_records: list[dict]) -> list[dict]:
    """The stage-start records of a run's JSONL log, one per stage (a resume may have written one twice)."""
    seen, records = set(), []
    for record in log_records:
        if "stage" in record and record["stage"] not in seen:
            seen.add(record["stage"])
            records.append(record)
    return records
