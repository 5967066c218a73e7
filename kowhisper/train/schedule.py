"""A training schedule that scales with the corpus: how long a run trains, how often it evaluates and saves, how long it
warms up and when it stops early, from the hours of training audio. train_offline.py uses it for every one of those keys
left unset (num_train_epochs, eval_steps, save_steps, warmup_steps, early_stopping_patience); a key the user sets wins.

The rule (docs/training.md, "Schedules that scale with the corpus"):

- epochs = 4 * sqrt(2 / hours), between 1 and 4 (to hundredths): 4 epochs up to 2 h, the measured default (on 835 real
  clips, 1.2 h, dev CER still fell at 3.8 epochs), 1.79 at 10 h, 1 from 32 h on. A small corpus needs several passes;
  a large one teaches in one pass what more passes would only repeat. The audio seen grows as sqrt(hours).
- at most 160,000 examples seen (20,000 steps at batch 8, about 220 h of 5 s clips), so a 1,000 h corpus does not
  mean 90,000 steps of LoRA: a LoRA adapter of a pretrained Whisper reached its plateau in 100-400 steps here. A
  longer run, full fine-tuning on a large corpus say, sets max_steps (or num_train_epochs) itself.
- evaluate and save every total/10 steps, rounded to the nearest 1, 2 or 5 x a power of ten and held between 100 and
  2,000: about ten checkpoints to choose the best from, and no more dev passes than that.
- warm-up total/40 steps, between 10 and 500: 2.5% of the run.
- early stopping after 3 evaluations without gain, when the run evaluates on dev at least 6 times: then three
  evaluations are at most half the run, its plateau rather than its start (a run that evaluates 3-4 times, as the
  100-step floor makes small runs do, would otherwise end before it has learnt). Never for a staged run, whose
  later stage is there to pass the earlier one's plateau.

Only the 4 epochs at 1.2 h were measured here; the rest are rules of thumb, chosen so the 1.2 h set gets exactly the
defaults it was measured with (4 epochs, every 100 steps, warm-up 10, no early stopping).

    python -m kowhisper.train.schedule     # the table for 1, 10, 100 and 1,000 h of 5 s clips at batch 8
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_EPOCHS = 4.0
MIN_EPOCHS = 1.0
# Up to this many hours the rule trains MAX_EPOCHS; above, epochs fall as 1/sqrt(hours).
MAX_EPOCHS_UP_TO_HOURS = 2.0
MAX_EXAMPLES_SEEN = 160_000
EVALUATIONS_PER_RUN = 10
EVAL_INTERVAL_RANGE = (100, 2000)
WARMUP_SHARE = 40  # one step in this many
WARMUP_RANGE = (10, 500)
PATIENCE = 3
# Early stopping only where this many evaluations would be at most half the run's.
MIN_EVALUATIONS_FOR_EARLY_STOPPING = 2 * PATIENCE

# The keys the schedule fills in when they are unset (None), in the order the plan names them.
SCHEDULE_KEYS = ("num_train_epochs", "eval_steps", "save_steps", "warmup_steps", "early_stopping_patience")

# The worked table (docs/training.md, bench/RESULTS.md): Common Voice's mean clip length, the default batch.
TABLE_HOURS = (1, 10, 100, 1000)
TABLE_CLIP_SECONDS = 5.0
TABLE_BATCH = 8


@dataclass(frozen=True)
class Schedule:
    """A run's schedule in optimizer steps, and where its length came from."""

    train_hours: float = field(metadata={"help": "Hours of training audio the rule read (each clip once, before mixing)."})
    steps_per_epoch: int = field(metadata={"help": "Optimizer steps of one pass over the training rows."})
    epochs: float = field(metadata={"help": "num_train_epochs as resolved."})
    total_steps: int = field(metadata={"help": "Optimizer steps the run takes."})
    eval_steps: int = field(metadata={"help": "Evaluate on dev every this many steps."})
    save_steps: int = field(metadata={"help": "Save a checkpoint every this many steps."})
    warmup_steps: int = field(metadata={"help": "Linear warm-up steps (per stage in a staged run)."})
    early_stopping_patience: int = field(metadata={"help": "Evaluations without gain that end the run; 0: never."})
    length_from: str = field(
        default="epochs",
        metadata={"help": "What set total_steps: 'epochs', 'cap' (MAX_EXAMPLES_SEEN), 'max_steps' or 'stages'."})
    evaluating: str = field(default="steps", metadata={"help": "eval_strategy: 'steps', 'epoch' or 'no'."})
    user_set: tuple[str, ...] = field(default=(), metadata={"help": "The SCHEDULE_KEYS the user set, which the rule left alone."})

    @property
    def hours_seen(self) -> float:
        """Hours of audio the run trains on, repeats counted."""
        return self.train_hours * self.total_steps / self.steps_per_epoch

    @property
    def evaluations(self) -> int:
        """Dev evaluations while training (the zero-shot one before the first step not counted)."""
        return count_evaluations(self.total_steps, self.eval_steps, self.steps_per_epoch, self.evaluating)

    @property
    def how(self) -> str:
        """Whether the rule chose the schedule: 'auto', 'as set', or 'auto but <keys> as set'."""
        if not self.user_set:
            return "auto"
        if len(self.user_set) == len(SCHEDULE_KEYS):
            return "as set"
        return f"auto but {', '.join(self.user_set)} as set"

    def describe(self) -> str:
        """The one line train_offline.py prints under its training plan."""
        return f"Schedule ({self.how}, {format_hours(self.train_hours)} of training audio): {self.outline()}"

    def summary(self) -> str:
        """The same for metrics.json and the model card."""
        return f"{self.outline()} ({self.how}, from {format_hours(self.train_hours)} of training audio)"

    def outline(self) -> str:
        """Length, evaluation and saving, warm-up, early stopping."""
        length = {
            "epochs": f"{format_epochs(self.epochs)} = {self.total_steps:,} steps",
            "cap": f"{self.total_steps:,} steps (the cap of {MAX_EXAMPLES_SEEN:,} examples seen; {format_epochs(self.epochs)} would "
                   f"be {math.ceil(self.epochs * self.steps_per_epoch):,})",
            "max_steps": f"{self.total_steps:,} steps (max_steps)",
            "stages": f"{self.total_steps:,} steps (the stages')",
        }[self.length_from]
        if self.evaluating == "no":
            cadence = f"save every {self.save_steps:,}, no evaluation while training"
        elif self.evaluating == "epoch":
            cadence = "evaluate and save every epoch"
        elif self.eval_steps == self.save_steps:
            cadence = f"evaluate and save every {self.eval_steps:,}"
        else:
            cadence = f"evaluate every {self.eval_steps:,}, save every {self.save_steps:,}"
        stopping = (f"early stopping after {self.early_stopping_patience} evaluations without gain" if self.early_stopping_patience
                    else "no early stopping")
        warmup = f"warm-up {self.warmup_steps:,}" + (" per stage" if self.length_from == "stages" else "")
        return f"{length}, {cadence}, {warmup}, {stopping}"


def format_hours(hours: float) -> str:
    """1,000 h, 10 h, 1.2 h, 0.86 h."""
    return f"{hours:,.0f} h" if hours >= 10 else f"{hours:.2g} h"


def format_epochs(epochs: float) -> str:
    return f"{epochs:g} epoch{'' if epochs == 1 else 's'}"


def epochs_for(train_hours: float) -> float:
    """MAX_EPOCHS up to MAX_EPOCHS_UP_TO_HOURS, then falling as 1/sqrt(hours) to MIN_EPOCHS, to hundredths."""
    if train_hours <= MAX_EPOCHS_UP_TO_HOURS:
        return MAX_EPOCHS
    return round(max(MIN_EPOCHS, MAX_EPOCHS * math.sqrt(MAX_EPOCHS_UP_TO_HOURS / train_hours)), 2)


def max_steps_for(effective_batch: int) -> int:
    """The cap on the rule's steps: MAX_EXAMPLES_SEEN examples at this effective batch."""
    return math.ceil(MAX_EXAMPLES_SEEN / effective_batch)


def round_number(value: float) -> int:
    """The nearest of 1, 2 or 5 x a power of ten, nearest by ratio (so 150 rounds to 200 and 140 to 100)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    candidates = [mantissa * power for mantissa in (1, 2, 5, 10)]
    return min(candidates, key=lambda candidate: abs(math.log(candidate / value)))


def evaluation_interval(total_steps: int) -> int:
    """Evaluate and save about EVALUATIONS_PER_RUN times, every round number of steps within EVAL_INTERVAL_RANGE."""
    low, high = EVAL_INTERVAL_RANGE
    return min(max(round_number(total_steps / EVALUATIONS_PER_RUN), low), high)


def warmup_for(total_steps: int) -> int:
    """One step in WARMUP_SHARE warms up, within WARMUP_RANGE."""
    low, high = WARMUP_RANGE
    return min(max(total_steps // WARMUP_SHARE, low), high)


def count_evaluations(total_steps: int, eval_steps: int, steps_per_epoch: int, eval_strategy: str = "steps") -> int:
    """Dev evaluations a run of total_steps makes while training, as eval_strategy ('steps', 'epoch' or 'no') has it."""
    if eval_strategy == "no":
        return 0
    return total_steps // (steps_per_epoch if eval_strategy == "epoch" else eval_steps)


def patience_for(evaluations: int, staged: bool = False) -> int:
    """PATIENCE when the run evaluates often enough for it to mean a plateau; 0 (never stop early) otherwise."""
    return PATIENCE if evaluations >= MIN_EVALUATIONS_FOR_EARLY_STOPPING and not staged else 0


def auto_schedule(train_hours: float, steps_per_epoch: int, effective_batch: int) -> Schedule:
    """The rule's schedule for a corpus of `train_hours` whose one pass takes `steps_per_epoch` optimizer steps of
    `effective_batch` examples, evaluating by steps; nothing set by the user."""
    epochs = epochs_for(train_hours)
    by_epochs, cap = math.ceil(epochs * steps_per_epoch), max_steps_for(effective_batch)
    total_steps = min(by_epochs, cap)
    interval = evaluation_interval(total_steps)
    return Schedule(train_hours=train_hours, steps_per_epoch=steps_per_epoch, epochs=epochs, total_steps=total_steps,
                    eval_steps=interval, save_steps=interval, warmup_steps=warmup_for(total_steps),
                    early_stopping_patience=patience_for(count_evaluations(total_steps, interval, steps_per_epoch)),
                    length_from="cap" if by_epochs > cap else "epochs")


def table_schedules(hours=TABLE_HOURS, clip_seconds: float = TABLE_CLIP_SECONDS, batch: int = TABLE_BATCH) -> list[Schedule]:
    """The rule's schedule for each corpus size in `hours`, of clips of `clip_seconds` at batch `batch` on one device."""
    schedules = []
    for corpus_hours in hours:
        clips = round(corpus_hours * 3600 / clip_seconds)
        schedules.append(auto_schedule(corpus_hours, math.ceil(clips / batch), batch))
    return schedules


def format_table(schedules: list[Schedule], clip_seconds: float = TABLE_CLIP_SECONDS, batch: int = TABLE_BATCH) -> str:
    """The schedules as a Markdown table, as docs/training.md and bench/RESULTS.md show it."""
    lines = [f"| training audio | clips ({clip_seconds:g} s) | steps per epoch (batch {batch}) | epochs | total steps | evaluate and save "
             "every | warm-up | early stopping (patience) | audio seen |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for schedule in schedules:
        clips = round(schedule.train_hours * 3600 / clip_seconds)
        stopping = (f"{schedule.early_stopping_patience} ({schedule.evaluations} evaluations)" if schedule.early_stopping_patience
                    else f"none ({schedule.evaluations} evaluations)")
        total = f"{schedule.total_steps:,}" + (" (cap)" if schedule.length_from == "cap" else "")
        lines.append(f"| {format_hours(schedule.train_hours)} | {clips:,} | {schedule.steps_per_epoch:,} | {schedule.epochs:g} | {total} | "
                     f"{schedule.eval_steps:,} | {schedule.warmup_steps} | {stopping} | {schedule.hours_seen:,.0f} h |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(table_schedules()))
