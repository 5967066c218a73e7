"""The config interface as the scripts show it: --print-config, --help-config, a bad key named without a traceback, a
long key=value taken as an override; and a target_modules regex reaching the tiny Whisper's LoRA unchanged. The
interface without a script or a model is in tests/unit/test_config.py and tests/unit/test_family_keys.py."""

import subprocess
import sys

from kowhisper.config import GROUPS, PROJECT_ROOT, TrainingArgumentsGroup, load_config

# As in tests/unit/test_config.py: a 12-entry list of full module names, well over the 255 bytes a file name may have.
LONG_TARGETS = [f"model.encoder.layers.{index}.self_attn.q_proj" for index in range(12)]
LONG_ARGUMENT = f"target_modules=[{','.join(LONG_TARGETS)}]"
ENCODER_QV = r".*encoder\.layers.*\.(q_proj|v_proj)"  # the encoder's q/v only, not the decoder's encoder_attn


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def test_print_config_shows_the_merged_values_and_exits():
    result = run_script("download_model.py", "--print-config", "lora_r=12", "workspace=/tmp/elsewhere")
    assert result.returncode == 0, result.stderr
    assert "lora_r: 12" in result.stdout
    assert "workspace: /tmp/elsewhere" in result.stdout


def test_unknown_key_fails_with_a_message_not_a_traceback():
    result = run_script("download_model.py", "lora_rank=8")
    assert result.returncode == 2
    assert "lora_rank" in result.stderr and "Traceback" not in result.stderr


def test_scripts_take_a_long_key_value_without_a_traceback():
    result = run_script("download_model.py", "--print-config", LONG_ARGUMENT)
    assert result.returncode == 0, result.stderr
    assert "model.encoder.layers.11.self_attn.q_proj" in result.stdout


def test_a_regex_target_reaches_lora_unchanged(tiny_model_dir, tmp_path):
    """The training model gets adapters exactly where peft matches the regex against full module names: here the
    encoder's q/v, not the decoder's (whose cross-attention, encoder_attn, a looser '.*encoder.*' would catch)."""
    from kowhisper.families.registry import family_of
    from kowhisper.train.precision import choose_precision

    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "model").symlink_to(tiny_model_dir)
    config = load_config([f"workspace={workspace}", f"target_modules={ENCODER_QV}"])
    model = family_of(workspace / "model").load_trainable_model(workspace, config, choose_precision(config))
    adapted = sorted(name.removeprefix("base_model.model.model.") for name, module in model.named_modules() if hasattr(module, "lora_A"))
    assert adapted == [f"encoder.layers.{layer}.self_attn.{proj}" for layer in (0, 1) for proj in ("q_proj", "v_proj")]


def test_help_config_lists_the_keys_group_by_group_each_familys_own_last(python_executable):
    result = subprocess.run([python_executable, "train_offline.py", "--help-config"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, check=True)
    sections = result.stdout.split("==== ")[1:]
    titles = [section.split(" ====", 1)[0] for section in sections]
    assert titles == [group.title for group in GROUPS]
    assert titles[0] == "Workspace" and titles[-2:] == ["Whisper only", "CTC only"]
    keys = {title: {line for line in section.splitlines()[1:] if line and not line.startswith(" ")}
            for title, section in zip(titles, sections)}
    assert {"workspace", "cuda_visible_devices"} == keys["Workspace"]
    assert {"data_source", "language_abbr", "datasets", "datasets[].name"} <= keys["Data"]
    assert {"learning_rate", "per_device_train_batch_size", "metric_for_best_model"} <= keys[TrainingArgumentsGroup.title]
    assert "keep_other_checkpoints" in keys["Training"]
    assert {"language", "task", "encoder_window", "freeze_encoder", "timestamped_label_share"} <= keys["Whisper only"]
    assert {"ctc_latin_digits", "ctc_punctuation", "ctc_freeze_feature_encoder"} == keys["CTC only"]
    listed = [key for section in keys.values() for key in section]
    assert len(listed) == len(set(listed)) and "save_total_limit" not in listed
