"""Whisper full fine-tuning (finetune=full) through every path LoRA has: training with the fit window and timestamped
labels, kill -9 and resume, evaluation of the run and its checkpoints, inference (transformers and CTranslate2), the
demo, --merge and --export-ct2; and the real whisper-base trained in full on a few real clips lowers their loss.

The tiny random Whisper makes these runs take seconds; what they check is that every path finds and runs the full
weights in <run>/model at the window they were trained with. The LoRA versions of the same paths are tested in
test_train.py, test_inference.py and test_evaluate.py; the full mode's defaults and refusals, without a model, in
tests/unit/test_train_settings.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from test_inference import reference_clips

from tests.integration.processes import isolated, kill_9_once, run
from tests.sample_files import REAL_SPEECH, REAL_SPEECH_KO

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The tiny run: three evaluations and three checkpoints in six steps. learning_rate 1e-3 so the random model moves far
# enough for "the run's weights, not the base's" to show; the full-mode default (1e-5) is checked without a model.
TINY_FULL_RUN = ("finetune=full", "max_steps=6", "save_steps=2", "eval_steps=2", "learning_rate=1e-3", "warmup_steps=0",
                 "per_device_train_batch_size=4", "per_device_eval_batch_size=4", "max_eval_samples=4",
                 "generation_max_length=24", "logging_steps=1", "report_to=[]")
FIT = ("fit", 50, 100)  # the default window: mode, tail frames, round frames


def final_window(training_stdout: str):
    """The window the run's final model runs at, as training said: the fitted one, unless dev scored the full window
    better or no checkpoint beat the base (then the final model is the base, at its full window). Which, a tiny random
    model's dev score decides; checkpoints always keep the window they trained at."""
    from kowhisper.families.whisper.encoder_window import EncoderWindow

    kept_fit = "the final model runs at the fitted window" in training_stdout and "No checkpoint beat the base" not in training_stdout
    return EncoderWindow(*FIT) if kept_fit else EncoderWindow("full", *FIT[1:])


def safetensors_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


# ---- the model trains every weight ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_workspace(make_workspace, tiny_model_dir) -> Path:
    """A workspace of its own: the run goes into its runs/, where evaluation and inference look by default."""
    return make_workspace(tiny_model_dir)


def test_a_fit_window_batch_with_timestamped_labels_reaches_every_weight(tiny_workspace):
    """The model train_offline.py builds under finetune=full: no LoRA, fp32, every weight trainable but Whisper's fixed
    encoder positions; a fit-window batch of timestamped labels sends gradients to encoder and decoder alike."""
    import torch
    from datasets import load_from_disk

    from kowhisper.common.workspace import split_dir
    from kowhisper.config import load_config
    from kowhisper.families.registry import family_of
    from kowhisper.families.whisper.encoder_window import EncoderWindow
    from kowhisper.families.whisper.features import SpeechBatchCollator, TimestampedLabels
    from kowhisper.train.precision import choose_precision

    config = load_config([f"workspace={tiny_workspace}", "finetune=full"])
    family = family_of(tiny_workspace / "model")
    precision = choose_precision(config, lora=family.trains_lora(config))
    assert not precision.int8 and "full fine-tuning" in precision.summary
    model = family.load_trainable_model(tiny_workspace, config, precision)
    assert not hasattr(model, "peft_config")
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    assert frozen == {"model.encoder.embed_positions.weight"}

    tokenizer = family.load_processor(tiny_workspace, config).tokenizer
    rows = list(load_from_disk(str(split_dir(tiny_workspace, "train"))).with_format("numpy").select(range(6)))
    batch = SpeechBatchCollator(EncoderWindow(*FIT), TimestampedLabels(tokenizer, 1.0))(rows)
    assert batch["input_features"].shape[-1] < 3000, "a fitted window"
    assert (batch["labels"] >= tokenizer.convert_tokens_to_ids("<|0.00|>")).any(), "timestamped labels"
    model.train()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    parameters = dict(model.named_parameters())
    for name in ("model.encoder.layers.0.fc1.weight", "model.decoder.layers.0.self_attn.q_proj.weight",
                 "model.decoder.embed_tokens.weight"):
        assert parameters[name].grad.abs().sum() > 0, name

    # freeze_encoder keeps its meaning: the encoder does not train.
    frozen_encoder = family.load_trainable_model(tiny_workspace, load_config([f"workspace={tiny_workspace}", "finetune=full",
                                                                              "freeze_encoder=true"]), precision)
    trainable = [name for name, parameter in frozen_encoder.named_parameters() if parameter.requires_grad]
    assert trainable and not any(".encoder." in name for name in trainable)


def test_a_stage_trains_only_its_part_of_the_full_weights(tiny_workspace):
    from kowhisper.config import TrainingStage, load_config
    from kowhisper.families.registry import family_of
    from kowhisper.train.precision import choose_precision
    from kowhisper.train.stages import StageCallback, StagePlan

    config = load_config([f"workspace={tiny_workspace}", "finetune=full"])
    family = family_of(tiny_workspace / "model")
    model = family.load_trainable_model(tiny_workspace, config, choose_precision(config, lora=False))
    stages = [TrainingStage("decoder", "decoder", 2), TrainingStage("both", "both", 2)]
    lines = []
    callback = StageCallback(StagePlan(stages, 1e-5, 0, "linear"), model, family, report=lines.append)
    state = type("State", (), {"global_step": 0, "is_world_process_zero": True})()
    callback.on_step_begin(None, state, None)
    decoder = sum(p.numel() for name, p in model.named_parameters() if ".encoder." not in name)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == decoder
    assert f"trains the decoder weights, {decoder:,} trainable parameters" in lines[0]
    state.global_step = 2
    callback.on_step_begin(None, state, None)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters()} - {"model.encoder.embed_positions.weight"}, \
        "both parts train again; Whisper's fixed encoder positions stay fixed"


# ---- the whole flow, as a user runs it ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(tiny_workspace, python_executable) -> tuple[Path, str, str]:
    """runs/whisper-full, killed with -9 after its first complete checkpoint and resumed by the same command.
    Returns the run folder and both logs."""
    from kowhisper.train.checkpoints import last_complete_checkpoint

    run_dir = tiny_workspace / "runs" / "whisper-full"
    command = isolated([python_executable, "train_offline.py", f"workspace={tiny_workspace}", *TINY_FULL_RUN])
    first_log = tiny_workspace.parent / "first.log"
    kill_9_once(command, first_log, lambda: last_complete_checkpoint(run_dir, report=lambda _: None) is not None,
                waiting_for="a complete checkpoint", group=True)
    assert not (run_dir / "model").exists(), "killed before the end"
    return run_dir, first_log.read_text(), run(command).stdout


def test_training_resumes_after_kill_9_and_leaves_full_weights_at_their_window(full_run, tiny_model_dir):
    from kowhisper.families.whisper.encoder_window import EncoderWindow
    from kowhisper.train.checkpoints import checkpoint_problems, list_checkpoints

    run_dir, first, resumed = full_run
    assert "Precision: CPU, fp32 weights, full fine-tuning" in first
    assert "finetune unset" not in first and "learning_rate unset" not in first
    assert "Resuming from" in resumed and "(step " in resumed and " of 6)" in resumed
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log if "loss" in record] == [1, 2, 3, 4, 5, 6], "each step once, across the kill"

    # The final model is full weights with everything inference needs beside them; no adapter anywhere.
    model_dir = run_dir / "model"
    assert not (run_dir / "adapter").exists()
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (model_dir / name).is_file(), name
    assert EncoderWindow.of_model(model_dir) == final_window(resumed)
    assert EncoderWindow.of_model(run_dir / "checkpoint-6") == EncoderWindow(*FIT)
    assert json.loads((run_dir / "encoder_window.json").read_text()) == dict(zip(("mode", "tail_frames", "round_frames"), FIT))
    # Every part moved: the encoder as well as the decoder.
    trained, base = safetensors_of(run_dir / "checkpoint-6"), safetensors_of(tiny_model_dir)
    for name in ("model.encoder.layers.0.fc1.weight", "model.decoder.layers.1.fc2.weight"):
        assert (trained[name] - base[name]).abs().max() > 1e-4, name
    assert (trained["model.encoder.embed_positions.weight"] == base["model.encoder.embed_positions.weight"]).all()

    checkpoints = list_checkpoints(run_dir)
    assert checkpoints and checkpoints[-1].name == "checkpoint-6"
    assert all(checkpoint_problems(c) == [] and (c / "model.safetensors").is_file() for c in checkpoints)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["fine-tuning"] == "full (every weight)"
    assert "full fine-tuning" in metrics["precision"] and metrics["encoder window"].startswith("fit")
    config = (run_dir / "config.yaml").read_text()
    assert "finetune: full" in config and "learning_rate: 0.001" in config
    card = (run_dir / "README.md").read_text()
    assert "library_name: transformers" in card and "Whisper fully fine-tuned for Korean" in card
    assert "| fine-tuning | full (every weight) |" in card and "peft" not in card


def test_a_run_folder_of_the_other_mode_is_refused_unless_overwritten(full_run, tmp_path):
    """The run's folder reused with finetune=lora would load weights of the wrong form when resuming, or leave a LoRA
    adapter beside the full model; train_offline.py refuses before training, with the way out. overwrite_output_dir
    clears the old run's checkpoints and final model."""
    import shutil

    from kowhisper.train.arguments import TrainingSetupError, check_run_folder_mode
    from kowhisper.train.checkpoints import last_complete_checkpoint, resolve_resume_checkpoint

    run_dir = full_run[0]
    checkpoint = last_complete_checkpoint(run_dir)
    check_run_folder_mode(run_dir, checkpoint, lora=False)
    with pytest.raises(TrainingSetupError, match="holds full weights, but this command asks for finetune=lora. Resume with finetune=full"):
        check_run_folder_mode(run_dir, checkpoint, lora=True)

    finished = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*", "ct2-*"))
    with pytest.raises(TrainingSetupError, match="model holds full weights, but this command asks for finetune=lora. Start a new run"):
        check_run_folder_mode(finished, None, lora=True)
    assert resolve_resume_checkpoint(finished, None, overwrite_output_dir=True, report=lambda _: None) is None
    assert not (finished / "model").exists()
    check_run_folder_mode(finished, None, lora=True)


def test_evaluation_scores_the_run_and_its_checkpoints_at_their_window(full_run, tiny_workspace, python_executable):
    from kowhisper.families.whisper.encoder_window import EncoderWindow

    run(isolated([python_executable, "evaluate_model.py", f"workspace={tiny_workspace}", "eval_run=whisper-full",
                  "all_checkpoints=true", "max_samples=2", "generation_max_length=8"]))
    summary = json.loads((tiny_workspace / "evaluations" / "test" / "summary.json").read_text())
    models = {model["label"]: model for model in summary["models"]}
    checkpoints = [label for label in models if label.startswith("whisper-full/checkpoint-")]
    assert list(models)[0] == "base" and "whisper-full" in models and checkpoints
    window = f"encoder window {EncoderWindow(*FIT).describe()}"
    assert all(models[label]["kind"] == "merged" and models[label]["settings"] == window for label in checkpoints)
    assert models["whisper-full"]["settings"] == f"encoder window {final_window(full_run[2]).describe()}"
    assert models["base"]["settings"] == f"encoder window {EncoderWindow().describe()}"


def test_inference_merge_export_and_demo_use_the_full_weights(full_run, tiny_workspace, python_executable, tmp_path):
    """inference.py with no adapter= runs the latest run, here the full one: --merge says there is nothing to merge,
    --export-ct2 converts model/ as it is into <run>/ct2-int8 with its window, and the default CPU engine transcribes
    with that export (and does not make another). The transformers engine and the demo run the same weights."""
    import dataclasses

    import torch

    from kowhisper.config import load_config
    from kowhisper.families.base import resolve_model
    from kowhisper.families.export_folders import EXPORT_MARKER
    from kowhisper.families.registry import load_recognizer
    from kowhisper.families.whisper.encoder_window import EncoderWindow
    from kowhisper.serve.demo import transcribe_for_demo
    from kowhisper.serve.export import merge_for_shipping

    run_dir = full_run[0]
    clip = reference_clips(tiny_workspace, 1)[0][0]
    result = run(isolated([python_executable, "inference.py", f"workspace={tiny_workspace}", "--merge", "--export-ct2",
                           "generation_max_length=16", "output_format=json", f"transcripts_dir={tmp_path}", str(clip)]))
    assert f"whisper-full is already full weights (no LoRA adapter to merge); use it as it is: {run_dir / 'model'}" in result.stdout
    ct2_dir = run_dir / "ct2-int8"
    assert f"CTranslate2 model: {ct2_dir}" in result.stdout
    assert not (run_dir / "merged").exists()
    window = final_window(full_run[2])
    assert (ct2_dir / "model.bin").is_file() and EncoderWindow.of_model(ct2_dir) == window
    assert json.loads((ct2_dir / EXPORT_MARKER).read_text())["source"] == str(run_dir / "model")
    assert "exporting" not in result.stderr, "the engine reused the export it was just given"
    transcript = json.loads((tmp_path / f"{clip.stem}.json").read_text())
    assert isinstance(transcript["text"], str) and transcript["segments"] is not None

    # --merge with merged_dir set saves a copy that loads as the same model.
    copied = tmp_path / "copy"
    assert merge_for_shipping(resolve_model(tiny_workspace, None), copied).endswith(f"saved a copy in {copied}")
    assert all(torch.equal(safetensors_of(copied)[name], tensor) for name, tensor in safetensors_of(run_dir / "model").items())
    assert EncoderWindow.of_model(copied) == window

    config = load_config([f"workspace={tiny_workspace}", "generation_max_length=16"])
    source = resolve_model(tiny_workspace, None)
    assert (source.kind, source.path, source.label) == ("merged", run_dir / "model", "whisper-full")
    hf = load_recognizer(source, dataclasses.replace(config, backend="hf"))
    assert hf.engine.window == window
    trained = safetensors_of(run_dir / "model")
    assert torch.equal(hf.engine.model.model.decoder.layers[1].fc2.weight, trained["model.decoder.layers.1.fc2.weight"])
    ct2 = load_recognizer(source, config, one_clip_at_a_time=True)  # what inference.py --demo serves
    assert ct2.engine.window == window and "CTranslate2" in ct2.description
    _, status = transcribe_for_demo(ct2, str(clip), 60.0)
    assert status.startswith(("Transcribed", "No speech was recognised")) and "CTranslate2" in status


# ---- the real model learns -----------------------------------------------------------------------------------------

REAL_CLIPS = 8


@pytest.mark.real_model
def test_full_fine_tuning_of_real_whisper_base_lowers_the_loss_of_the_clips_it_trains_on(make_workspace, real_model_dir,
                                                                                           python_executable, tmp_path):
    """whisper-base, every weight, at the full-mode default learning rate (1e-5): a few steps on eight real Korean clips
    (the bundled espeak sample where the real set is absent). Each step sees all eight clips as one batch, without
    timestamped labels, so the logged losses are on the same batch; the saved model/ is also scored directly against
    the base on those clips at the window both ran with."""
    import torch
    from datasets import load_from_disk

    from kowhisper.common.workspace import split_dir
    from kowhisper.families.whisper.encoder_window import EncoderWindow, allow_fitted_window
    from kowhisper.families.whisper.features import SpeechBatchCollator

    data = [f"data_path={REAL_SPEECH}"] if (REAL_SPEECH_KO / "train.tsv").is_file() else []
    workspace = make_workspace(real_model_dir, copy=False, max_samples=REAL_CLIPS, **dict(item.split("=", 1) for item in data))
    run_dir = tmp_path / "run"
    steps = 3
    started = time.monotonic()
    result = run([python_executable, "train_offline.py", f"workspace={workspace}", f"output_dir={run_dir}", "finetune=full",
                  f"per_device_train_batch_size={REAL_CLIPS}", f"max_steps={steps}", f"save_steps={steps}", "warmup_steps=0",
                  "timestamped_label_share=0", "eval_strategy=no", "max_eval_samples=1", "generation_max_length=48",
                  "logging_steps=1", "report_to=[]"], timeout=1200)
    minutes = (time.monotonic() - started) / 60
    assert "learning_rate unset: 1e-05, the default for whisper with finetune=full" in result.stdout

    losses = [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines() if "loss" in json.loads(line)]
    assert len(losses) == steps

    from transformers import WhisperForConditionalGeneration

    rows = list(load_from_disk(str(split_dir(workspace, "train"))).with_format("numpy"))
    assert len(rows) == REAL_CLIPS
    window = EncoderWindow.of_model(run_dir / "model")
    batch = SpeechBatchCollator(window)(rows)

    def loss_of(folder: Path) -> float:
        model = allow_fitted_window(WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)).eval()
        with torch.no_grad():
            return float(model(**batch).loss)

    before, after = loss_of(workspace / "model"), loss_of(run_dir / "model")
    print(f"\nwhisper-base full fine-tuning, {REAL_CLIPS} {'real' if data else 'espeak'} clips, {steps} steps in {minutes:.1f} min: "
          f"logged losses {[round(loss, 3) for loss in losses]}; loss on the clips {before:.3f} (base) -> {after:.3f}", file=sys.stderr)
    assert losses[-1] < 0.8 * losses[0]
    assert after < 0.8 * before
