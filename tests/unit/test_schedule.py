"""The training schedule that scales with the corpus (kowhisper/train/schedule.py): on the set the defaults were measured
on it gives exactly those defaults, it grows with the corpus but stops at the cap, and every key the user sets wins."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from kowhisper.config import PROJECT_ROOT, load_config
from kowhisper.train.arguments import apply_quick_test, resolve_schedule, training_plan
from kowhisper.train.schedule import (
    MAX_EXAMPLES_SEEN,
    SCHEDULE_KEYS,
    auto_schedule,
    evaluation_interval,
    format_table,
    round_number,
    table_schedules,
)

# The real read speech the defaults were measured on: 835 train clips, mean 5.3 s (1.23 h); at the bundled sample's
# mean of 3.7 s the same clips would be 0.86 h. Batch 8 makes 105 steps per epoch either way.
MEASURED_CLIPS = 835
MEASURED_HOURS = (MEASURED_CLIPS * 5.3 / 3600, MEASURED_CLIPS * 3.7 / 3600)


def resolved(overrides: list[str], hours: float, rows: int, config_file=None):
    return resolve_schedule(load_config(overrides, config_file), hours, rows)


@pytest.mark.parametrize("hours", MEASURED_HOURS)
def test_the_measured_set_gets_exactly_the_defaults_it_was_measured_with(hours):
    schedule = auto_schedule(hours, steps_per_epoch=105, effective_batch=8)
    assert (schedule.epochs, schedule.total_steps, schedule.eval_steps, schedule.save_steps,
            schedule.warmup_steps) == (4, 420, 100, 100, 10)
    assert schedule.early_stopping_patience == 0, "4 evaluations are too few for 3 without gain to mean a plateau"

    config, schedule = resolved([], hours, MEASURED_CLIPS)
    assert (config.num_train_epochs, config.max_steps, config.eval_steps, config.save_steps, config.warmup_steps,
            config.early_stopping_patience) == (4.0, -1, 100, 100, 10, 0)
    assert schedule.describe() == (f"Schedule (auto, {hours:.2g} h of training audio): 4 epochs = 420 steps, evaluate and save every 100, "
                                   "warm-up 10, no early stopping")


def test_the_table_for_1_10_100_and_1000_hours_of_5_second_clips_at_batch_8():
    rows = [(s.train_hours, s.steps_per_epoch, s.epochs, s.total_steps, s.eval_steps, s.save_steps, s.warmup_steps,
             s.early_stopping_patience, s.evaluations, round(s.hours_seen)) for s in table_schedules()]
    assert rows == [
        (1, 90, 4.0, 360, 100, 100, 10, 0, 3, 4),
        (10, 900, 1.79, 1611, 200, 200, 40, 3, 8, 18),
        (100, 9000, 1.0, 9000, 1000, 1000, 225, 3, 9, 100),
        (1000, 90000, 1.0, 20000, 2000, 2000, 500, 3, 10, 222),
    ]
    table = format_table(table_schedules()).splitlines()
    assert len(table) == 6 and table[0].startswith("| training audio | clips (5 s) | steps per epoch (batch 8) |")
    assert table[-1] == "| 1,000 h | 720,000 | 90,000 | 1 | 20,000 (cap) | 2,000 | 500 | 3 (10 evaluations) | 222 h |"


def test_more_audio_never_means_more_epochs_or_fewer_steps():
    hours = [0.1, 0.5, 1, 1.23, 2, 3, 5, 10, 20, 32, 50, 100, 220, 500, 1000, 5000]
    schedules = [auto_schedule(h, math.ceil(h * 3600 / 5 / 8), 8) for h in hours]
    for smaller, larger in zip(schedules, schedules[1:]):
        assert larger.epochs <= smaller.epochs
        assert larger.total_steps >= smaller.total_steps
        assert larger.hours_seen >= smaller.hours_seen
        assert larger.eval_steps >= smaller.eval_steps and larger.save_steps == larger.eval_steps
        assert larger.warmup_steps >= smaller.warmup_steps
        assert larger.early_stopping_patience >= smaller.early_stopping_patience
    assert [s.epochs for s in schedules[:5]] == [4.0] * 5, "4 epochs up to 2 h"
    assert all(s.epochs == 1.0 for s in schedules[hours.index(32):]), "one epoch from 32 h on"
    assert all(100 <= s.eval_steps <= 2000 and 10 <= s.warmup_steps <= 500 for s in schedules)


def test_the_cap_bounds_the_examples_seen_at_any_batch_but_not_what_the_user_sets():
    config, schedule = resolved([], 1000, 720_000)
    assert schedule.total_steps == 20_000 and schedule.length_from == "cap"
    assert config.max_steps == 20_000, "TrainingArguments counts epochs unless max_steps says otherwise"
    assert "20,000 steps (the cap of 160,000 examples seen; 1 epoch would be 90,000)" in schedule.describe()
    # The cap counts examples: four times the effective batch, a quarter of the steps.
    config, schedule = resolved(["gradient_accumulation_steps=4"], 1000, 720_000)
    assert schedule.total_steps * 32 == MAX_EXAMPLES_SEEN and config.max_steps == 5000
    # Below it nothing is capped, and max_steps stays -1 (num_train_epochs rules).
    config, schedule = resolved([], 100, 72_000)
    assert (schedule.total_steps, schedule.length_from, config.max_steps, config.num_train_epochs) == (9000, "epochs", -1, 1.0)
    # An explicit length is the user's.
    assert resolved(["num_train_epochs=1"], 1000, 720_000)[1].total_steps == 90_000
    config, schedule = resolved(["max_steps=50000"], 1000, 720_000)
    assert (schedule.total_steps, schedule.length_from, config.max_steps) == (50_000, "max_steps", 50_000)


def test_each_key_the_user_sets_wins_and_the_others_follow_from_it():
    # One cadence set: the other follows it, so checkpoints land on evaluations; the rest stay auto.
    config, schedule = resolved(["eval_steps=50"], 10, 7200)
    assert (config.eval_steps, config.save_steps, config.warmup_steps, config.num_train_epochs) == (50, 50, 40, 1.79)
    assert schedule.user_set == ("eval_steps",) and schedule.how == "auto but eval_steps as set"
    assert config.early_stopping_patience == 3, "1,611 // 50 evaluations are plenty"
    assert resolved(["save_steps=300"], 10, 7200)[0].eval_steps == 300
    # A length set by the user sets the cadence and the warm-up the rule derives from it.
    config, _ = resolved(["max_steps=500"], 10, 7200)
    assert (config.max_steps, config.eval_steps, config.warmup_steps) == (500, 100, 12)
    config, _ = resolved(["num_train_epochs=2"], 10, 7200)
    assert (config.num_train_epochs, config.eval_steps, config.warmup_steps) == (2.0, 200, 45)
    # Zero is a value, not "unset".
    config, _ = resolved(["warmup_steps=0", "early_stopping_patience=0"], 100, 72_000)
    assert (config.warmup_steps, config.early_stopping_patience, config.eval_steps) == (0, 0, 1000)
    # Everything set: nothing changes.
    every = ["num_train_epochs=3", "eval_steps=7", "save_steps=14", "warmup_steps=2", "early_stopping_patience=5"]
    config, schedule = resolved(every, 1000, 720_000)
    assert [getattr(config, key) for key in SCHEDULE_KEYS] == [3.0, 7, 14, 2, 5] and schedule.how == "as set"


def test_values_from_a_config_file_win_too():
    # Seed 000's wav2vec2 recipe sets its epochs, warm-up and cadence; with evaluation off it never stops early.
    config, schedule = resolved([], 100, 72_000, PROJECT_ROOT / "configs" / "wav2vec2-ko.yaml")
    assert (config.num_train_epochs, config.warmup_steps, config.eval_steps, config.save_steps) == (20.0, 0, 500, 500)
    assert config.early_stopping_patience == 0 and schedule.how == "auto but num_train_epochs, eval_steps, save_steps, warmup_steps as set"
    # Seed 001's sets epochs and warm-up only; the cadence follows its 3 epochs.
    config, _ = resolved([], 10, 7200, PROJECT_ROOT / "configs" / "seed001.yaml")
    assert (config.num_train_epochs, config.warmup_steps, config.eval_steps) == (3.0, 50, 200)


def test_a_staged_run_keeps_its_length_and_never_stops_early():
    stages = "stages=[{name: decoder, train: decoder, max_steps: 1000}, {name: both, train: both, max_steps: 3000}]"
    config, schedule = resolved([stages], 100, 72_000)
    assert (schedule.total_steps, schedule.length_from, config.max_steps) == (4000, "stages", -1)
    assert (config.eval_steps, config.warmup_steps, config.early_stopping_patience) == (500, 100, 0)
    assert "4,000 steps (the stages'), evaluate and save every 500, warm-up 100 per stage, no early stopping" in schedule.describe()


def test_without_evaluation_there_is_no_early_stopping():
    config, schedule = resolved(["eval_strategy=no"], 1000, 720_000)
    assert config.early_stopping_patience == 0 and schedule.evaluations == 0
    assert "save every 2,000, no evaluation while training" in schedule.describe()


def test_quick_test_caps_the_schedule_keys_left_unset():
    config, notes = apply_quick_test(load_config(["quick_test=true"]), frozenset({"quick_test"}))
    assert {"quick_test: eval_steps=auto -> 5", "quick_test: save_steps=auto -> 5", "quick_test: warmup_steps=auto -> 2"} <= set(notes)
    config, schedule = resolve_schedule(config, 0.04, 40)
    assert (config.max_steps, config.eval_steps, config.save_steps, config.warmup_steps, config.early_stopping_patience) == (10, 5, 5, 2, 0)
    # A key set to null asks for auto, and so gets quick_test's cap like an unset one.
    config, _ = apply_quick_test(load_config(["quick_test=true", "eval_steps=null"]), frozenset({"quick_test", "eval_steps"}))
    assert config.eval_steps == 5


@pytest.mark.parametrize("hours, rows", [(1.23, 835), (10, 7200), (1000, 720_000)])
def test_the_trainers_arithmetic_takes_the_steps_the_schedule_planned(hours, rows):
    config, schedule = resolved([], hours, rows)
    args = SimpleNamespace(per_device_train_batch_size=8, gradient_accumulation_steps=1, world_size=1, max_steps=config.max_steps,
                           num_train_epochs=config.num_train_epochs)
    plan = training_plan(rows, args, schedule)
    assert plan.total_steps == schedule.total_steps and plan.steps_per_epoch == schedule.steps_per_epoch
    assert plan.describe().splitlines()[1] == schedule.describe()


def test_arguments_built_without_the_corpus_get_the_smallest_corpus_schedule(tmp_path):
    from kowhisper.train.arguments import build_training_arguments

    class Family:
        name, stage_parts = "test", ()

        def training_arguments(self, config, arguments):
            return arguments

    precision = SimpleNamespace(fp16=False, bf16=False, device="cpu")
    arguments = build_training_arguments(load_config(["run_name=run"]), precision, tmp_path / "run", Family())
    assert [arguments[key] for key in ("num_train_epochs", "eval_steps", "save_steps", "warmup_steps")] == [4.0, 100, 100, 10]


@pytest.mark.parametrize("value, rounded", [(0.5, 1), (36, 50), (42, 50), (140, 100), (150, 200), (161, 200), (320, 500), (900, 1000)])
def test_round_numbers_are_1_2_or_5_times_a_power_of_ten_nearest_by_ratio(value, rounded):
    assert round_number(value) == rounded


def test_evaluation_interval_is_held_between_100_and_2000():
    assert [evaluation_interval(total) for total in (10, 420, 1611, 9000, 20_000, 360_000)] == [100, 100, 200, 1000, 2000, 2000]
