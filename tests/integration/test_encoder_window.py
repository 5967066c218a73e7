"""The fitted encoder window (kowhisper/whisper/encoder_window.py): exact at 3000 frames, trainable under LoRA and
gradient checkpointing, remembered by a run and used by evaluation and inference without being told."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from kowhisper.common.workspace import split_dir
from kowhisper.families.whisper.encoder_window import WINDOW_FILE, EncoderWindow, allow_fitted_window
from kowhisper.families.whisper.features import N_FRAMES, SpeechBatchCollator

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIT = EncoderWindow("fit", tail_frames=50, round_frames=100)


def tiny_model(tiny_model_dir):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)


def train_rows(workspace: Path, count: int) -> list[dict]:
    from datasets import load_from_disk

    return list(load_from_disk(str(split_dir(workspace, "train"))).with_format("numpy").select(range(count)))


def test_fit_at_3000_frames_is_exactly_the_unmodified_model(tiny_model_dir):
    torch.manual_seed(0)
    features = torch.randn(2, 80, N_FRAMES)
    labels = torch.randint(0, 50_000, (2, 12))
    plain = tiny_model(tiny_model_dir).eval()
    fitted = allow_fitted_window(tiny_model(tiny_model_dir)).eval()
    assert type(fitted.model.encoder).__name__ == "FitWindowWhisperEncoder"
    assert type(plain.model.encoder).__name__ == "WhisperEncoder", "only the patched instance changes"
    with torch.no_grad():
        assert torch.equal(plain.model.encoder(features).last_hidden_state, fitted.model.encoder(features).last_hidden_state)
        assert torch.equal(plain(input_features=features, labels=labels).loss, fitted(input_features=features, labels=labels).loss)
        short = fitted.model.encoder(features[:, :, :600]).last_hidden_state
    assert short.shape == (2, 300, 64)
    with pytest.raises(ValueError, match="even number of mel frames"):
        fitted.model.encoder(features[:, :, :601])


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_a_fit_window_batch_trains_and_its_gradients_reach_the_encoder_lora(make_workspace, tiny_model_dir, checkpointing):
    from peft import LoraConfig, get_peft_model

    workspace = make_workspace(tiny_model_dir, copy=False)
    batch = SpeechBatchCollator(FIT)(train_rows(workspace, 4))
    longest = max(len(row["input_features"]) for row in train_rows(workspace, 4))
    assert batch["input_features"].shape[-1] == FIT.frames_for(longest) < N_FRAMES
    # The mask covers each clip's own frames, so SpecAugment masks audio, not padding.
    assert batch["attention_mask"].sum(-1).tolist() == [len(row["input_features"]) for row in train_rows(workspace, 4)]

    model = allow_fitted_window(tiny_model(tiny_model_dir))
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    model.train()
    loss = model(input_features=batch["input_features"], labels=batch["labels"]).loss
    loss.backward()
    encoder_grads = {name: parameter.grad for name, parameter in model.named_parameters() if "encoder" in name and "lora_B" in name}
    assert encoder_grads and all(grad is not None and grad.abs().sum() > 0 for grad in encoder_grads.values())


def test_a_run_remembers_its_window_and_evaluation_uses_it_unasked(make_workspace, tiny_model_dir, tmp_path, python_executable):
    from kowhisper.families.base import resolve_model
    from kowhisper.families.whisper.loading import trained_window

    workspace = make_workspace(tiny_model_dir)
    run_dir = workspace / "runs" / "fitted"
    tiny = ["per_device_train_batch_size=4", "per_device_eval_batch_size=4", "max_eval_samples=4", "generation_max_length=16",
            "warmup_steps=0", "eval_steps=2", "save_steps=2", "report_to=[]"]
    result = subprocess.run([python_executable, "train_offline.py", f"workspace={workspace}", "run_name=fitted", "max_steps=2",
                             "encoder_window=fit", "encoder_window_tail_frames=30", "encoder_window_round_frames=50", *tiny],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Encoder window: fit (longest clip + 30 frames of tail, rounded up to 50 frames)" in result.stdout
    recorded = EncoderWindow("fit", 30, 50)
    assert json.loads((run_dir / WINDOW_FILE).read_text()) == {"mode": "fit", "tail_frames": 30, "round_frames": 50}
    assert EncoderWindow.of_model(run_dir / "checkpoint-2") == recorded, "a checkpoint finds its run's window"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["encoder window"].startswith("fit")
    assert "| encoder window | fit" in (run_dir / "README.md").read_text()
    # The final model runs at the window dev chose, or is the base at its full window if no checkpoint beat it:
    # which, a random model's dev score decides.
    kept_fit = "the final model runs at the fitted window" in result.stdout and "No checkpoint beat the base" not in result.stdout
    final_window = EncoderWindow.of_model(run_dir / "adapter")
    if kept_fit:
        assert final_window == recorded
    else:
        assert not final_window.is_fit
    assert trained_window(resolve_model(workspace, "fitted")).is_fit == kept_fit
    assert trained_window(resolve_model(workspace, str(run_dir / "checkpoint-2"))) == recorded
    assert trained_window(resolve_model(workspace, "base")) == EncoderWindow(), "the base always runs at its full window"

    # Resuming with another window would leave checkpoints trained under two windows: refused, with the fix.
    refused = subprocess.run([python_executable, "train_offline.py", f"workspace={workspace}", "run_name=fitted", "max_steps=4",
                              "encoder_window=full", *tiny], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "Resume with encoder_window=fit encoder_window_tail_frames=30" in refused.stderr

    # evaluate_model.py is not told the window; it reads it from the run and says so per model.
    # A checkpoint always holds the window it trained at, whatever the final model chose.
    evaluated = subprocess.run([python_executable, "evaluate_model.py", f"workspace={workspace}",
                                f"eval_run={run_dir / 'checkpoint-2'}", "max_samples=2", "generation_max_length=8"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads((workspace / "evaluations" / "test" / "summary.json").read_text())
    windows = {model["label"]: model["settings"] for model in summary["models"]}
    assert windows == {"base": f"encoder window {EncoderWindow().describe()}",
                       "fitted/checkpoint-2": f"encoder window {recorded.describe()}"}
