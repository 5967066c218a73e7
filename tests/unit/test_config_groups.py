"""The configuration's groups: they compose into the one flat Config, each checks its own keys, each model family owns
its options group, --help-config shows them group by group, and the TrainingArguments group carries Hugging Face's
names, passed on as they are. What the scripts print is in tests/integration/test_config_cli.py."""

from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace

import pytest

from kowhisper.config import (
    GROUPS,
    Config,
    ConfigError,
    CTCOptions,
    DataGroup,
    EvalGroup,
    ServeGroup,
    TrainingArgumentsGroup,
    WhisperOptions,
    config_key_groups,
    field_help,
    load_config,
)


def test_the_groups_compose_into_the_flat_config_each_key_in_one_group():
    assert all(issubclass(Config, group) for group in GROUPS)
    own = [key for group in GROUPS for key in group.own_keys()]
    assert sorted(own) == sorted(field.name for field in fields(Config)), "every flat key is declared by exactly one group"
    titles = [group.title for group in GROUPS]
    assert len(set(titles)) == len(titles)
    assert titles[0] == "Workspace" and titles[-2:] == ["Whisper only", "CTC only"]
    # --print-config lists the keys group by group.
    assert [field.name for field in fields(Config)] == own


def test_each_family_owns_the_keys_of_its_options_group():
    from kowhisper.families.ctc.family import CTC
    from kowhisper.families.registry import FAMILIES
    from kowhisper.families.whisper.family import WHISPER

    assert WHISPER.options is WhisperOptions and CTC.options is CTCOptions
    assert WHISPER.own_config_keys == WhisperOptions.own_keys()
    assert set(CTC.own_config_keys) == {"ctc_latin_digits", "ctc_punctuation", "ctc_freeze_feature_encoder"}
    assert {"language", "task", "encoder_window", "ct2_quantization"} <= set(WHISPER.own_config_keys)
    assert all(family.options in GROUPS for family in FAMILIES)


@pytest.mark.parametrize("group, keys, named", [
    (WhisperOptions, {"encoder_window": "half"}, "encoder_window='half' is not one of fit, full"),
    (WhisperOptions, {"encoder_window_round_frames": 3}, "encoder_window_round_frames an even number"),
    (WhisperOptions, {"timestamped_label_share": 2.0}, "timestamped_label_share is a share"),
    (CTCOptions, {"ctc_punctuation": "some"}, "ctc_punctuation='some' is not one of keep, drop"),
    (DataGroup, {"num_proc": 0}, "num_proc must be at least 1"),
    (DataGroup, {"data_source": "youtube"}, "data_source='youtube'"),
    (TrainingArgumentsGroup, {"per_device_eval_batch_size": 0}, "per_device_eval_batch_size must be at least 1"),
    (TrainingArgumentsGroup, {"metric_for_best_model": "bleu"}, "metric_for_best_model='bleu'"),
    (EvalGroup, {"bootstrap_resamples": 0}, "bootstrap_resamples must be at least 1"),
    (ServeGroup, {"backend": "onnx"}, "backend='onnx' is not one of auto, hf, ct2"),
])
def test_a_group_checks_its_own_keys_alone_and_in_the_config(group, keys, named):
    with pytest.raises(ConfigError, match=named):
        group(**keys)
    with pytest.raises(ConfigError, match=named):
        Config(**keys)


def test_yaml_no_becomes_eval_strategy_no_in_the_group():
    assert TrainingArgumentsGroup(eval_strategy="False").eval_strategy == "no"


def test_checkpoints_kept_have_a_name_of_their_own_not_hugging_faces_save_total_limit():
    assert load_config().keep_other_checkpoints == 3
    assert load_config(["keep_other_checkpoints=1"]).keep_other_checkpoints == 1
    assert load_config(["keep_other_checkpoints=null"]).keep_other_checkpoints is None
    with pytest.raises(ConfigError, match="save_total_limit"):
        load_config(["save_total_limit=2"])


def test_help_config_groups_are_the_groups_with_the_dataset_entry_keys_under_datasets():
    groups = config_key_groups()
    assert [title for title, _ in groups] == [group.title for group in GROUPS]
    listed = [key for _, keys in groups for key in keys]
    assert sorted(listed) == sorted(field_help()), "every key and every dataset entry key, once"
    data = dict(groups)["Data"]
    assert data[data.index("datasets") + 1] == "datasets[].name"


def test_the_training_arguments_keys_are_hugging_faces_and_pass_on_unchanged(tmp_path):
    from transformers import TrainingArguments

    from kowhisper.train.arguments import build_training_arguments

    hugging_face = {field.name for field in fields(TrainingArguments)}
    assert {field.name for field in fields(TrainingArgumentsGroup)} <= hugging_face
    assert "save_total_limit" not in {field.name for field in fields(Config)}

    class Family:
        name, stage_parts = "test", ()

        def training_arguments(self, config, arguments):
            return arguments

    config = load_config(["learning_rate=3e-4", "seed=7", "optim=adafactor", "weight_decay=0.01", "eval_steps=9",
                          "data_seed=5", "run_name=run"])
    precision = SimpleNamespace(fp16=False, bf16=False, device="cpu")
    arguments = build_training_arguments(config, precision, tmp_path / "run", Family())
    assert set(arguments) <= hugging_face
    for key in ("learning_rate", "seed", "optim", "weight_decay", "eval_steps", "data_seed", "per_device_train_batch_size",
                "eval_strategy", "max_steps", "metric_for_best_model", "load_best_model_at_end"):
        assert arguments[key] == getattr(config, key), key
    assert arguments["save_total_limit"] is None  # the run's own cleanup keeps keep_other_checkpoints
    assert arguments["output_dir"] == str(tmp_path / "run") and arguments["report_to"] == ["tensorboard"]
