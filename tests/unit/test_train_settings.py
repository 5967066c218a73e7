"""A run's settings before any model loads: the fine-tuning mode's defaults, contradictory settings refused by name,
stages refused for a family whose model has no parts, and the out-of-memory advice."""

from __future__ import annotations

import dataclasses

import pytest

from kowhisper.config import Config, ConfigError, TrainingStage, load_config


def test_the_mode_decides_the_learning_rate_and_run_name_when_they_are_unset():
    from kowhisper.families.ctc.family import CTC as ctc
    from kowhisper.families.whisper.family import WHISPER as whisper
    from kowhisper.train.arguments import resolve_run_defaults

    def resolved(family, *overrides):
        config, notes = resolve_run_defaults(load_config(list(overrides)), family)
        return config.finetune, config.learning_rate, config.run_name, notes

    # LoRA stays as measured on real speech; full fine-tuning of Whisper gets a tenth of it; a CTC model's default
    # mode is full, at seed 000's rate.
    assert resolved(whisper)[:3] == ("lora", 1e-4, "whisper-lora")
    mode, rate, name, notes = resolved(whisper, "finetune=full")
    assert (mode, rate, name) == ("full", 1e-5, "whisper-full")
    assert "learning_rate unset: 1e-05, the default for whisper with finetune=full" in notes
    assert resolved(ctc)[:3] == ("full", 1e-4, "ctc-full")
    # What the user sets is kept.
    assert resolved(whisper, "finetune=full", "learning_rate=3e-5", "run_name=mine")[:3] == ("full", 3e-5, "mine")


@pytest.mark.parametrize("overrides, named", [
    (["finetune=full", "int8=true"], "INT8 weights (int8=true) cannot be trained"),
    (["finetune=partial"], "finetune='partial' is not one of lora, full"),
])
def test_contradictory_fine_tuning_settings_are_refused_by_name(overrides, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides)


def test_stages_are_refused_by_the_shared_code_for_a_family_whose_model_has_no_parts():
    from kowhisper.families.ctc.family import CTC
    from kowhisper.families.whisper.family import WHISPER
    from kowhisper.train.arguments import TrainingSetupError, stage_plan

    config = dataclasses.replace(load_config(["learning_rate=1e-4"]), stages=[TrainingStage("head", "decoder", 2)])
    with pytest.raises(TrainingSetupError, match="a ctc model has no parts to train in turn. Leave stages empty"):
        stage_plan(config, CTC)
    assert stage_plan(config, WHISPER).total_steps == 2


def test_out_of_memory_advice_halves_the_batch_and_keeps_the_effective_batch():
    from kowhisper.train.arguments import out_of_memory_advice

    advice = out_of_memory_advice(Config(per_device_train_batch_size=16, gradient_accumulation_steps=2))
    assert "per_device_train_batch_size=8 gradient_accumulation_steps=4" in advice
    assert "effective batch stays 32" in advice and "gradient_checkpointing=true" in advice
    assert "per_device_train_batch_size=" not in out_of_memory_advice(Config(per_device_train_batch_size=1)).split("\n", 1)[1]
