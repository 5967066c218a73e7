"""augment= on the real whisper-base: the training collator's features change when augmentation is on, stay exactly the
stored ones when it is off, repeat under a seed, follow the changed audio (and its length, for timestamps), and a run
killed with -9 resumes with the same augmentation stream, ending on the same adapter as an uninterrupted run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from kowhisper.common.audio import from_int16
from kowhisper.config import load_config
from kowhisper.families.whisper.encoder_window import EncoderWindow
from kowhisper.families.whisper.features import LogMel, SpeechBatchCollator, TimestampedLabels, pad_features
from kowhisper.families.whisper.frames import CHUNK_SAMPLES, FRAME_SECONDS
from kowhisper.families.whisper.loading import load_processor
from kowhisper.train.augment import WaveformAugmenter, telephone_channel
from kowhisper.train.data import load_splits
from tests.integration.processes import kill_9_once

pytestmark = pytest.mark.real_model
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workspace(make_workspace, real_model_dir) -> Path:
    return make_workspace(real_model_dir, copy=False, max_samples=12)


@pytest.fixture(scope="module")
def rows(workspace) -> list[dict]:
    train = load_splits(workspace, load_config([f"workspace={workspace}", "eval_strategy=no"])).train
    return [train[index] for index in range(8)]


@pytest.fixture(scope="module")
def log_mel(workspace) -> LogMel:
    return LogMel(load_processor(workspace / "model").feature_extractor)


def collator_for(workspace, log_mel, *overrides, timestamps=None) -> SpeechBatchCollator:
    augmenter = WaveformAugmenter.from_config(load_config([f"workspace={workspace}", *overrides]))
    return SpeechBatchCollator(EncoderWindow(), timestamps, augmenter=augmenter, log_mel=log_mel if augmenter else None)


def test_the_workspace_keeps_each_clips_audio_beside_its_features(rows, log_mel):
    for row in rows:
        assert np.issubdtype(row["audio"].dtype, np.integer) and np.abs(row["audio"]).max() <= 32768
        # The stored features are the stored audio's (within int16 rounding, which shows only in the quietest bins):
        # augmentation starts from the same clip the features show.
        difference = np.abs(log_mel(from_int16(row["audio"])).astype(np.float32) - row["input_features"].astype(np.float32))
        assert difference.max() < 0.05 and difference.mean() < 1e-3


def test_off_means_the_stored_features_exactly_and_on_means_features_of_the_changed_audio(workspace, log_mel, rows):
    stored = pad_features([row["input_features"] for row in rows])
    for off in ([], ["augment=[]"], ["augment=[specaugment]"]):
        assert torch.equal(collator_for(workspace, log_mel, *off)(rows)["input_features"], stored), off

    channel = collator_for(workspace, log_mel, "augment=[channel:1.0]")(rows)["input_features"]
    assert not torch.equal(channel, stored)
    for index, row in enumerate(rows):
        expected = log_mel(telephone_channel(from_int16(row["audio"])))
        assert torch.equal(channel[index, :, : len(expected)], torch.from_numpy(expected.T.astype(np.float32)))
    # whisper-base's 80 mel bands: those above 4 kHz (about band 57 up) hold nothing a call carries.
    audio_frames = len(rows[0]["input_features"])
    top, voice = channel[0, 60:, :audio_frames].mean(), channel[0, 20:40, :audio_frames].mean()
    assert float(voice - top) > float(stored[0, 20:40, :audio_frames].mean() - stored[0, 60:, :audio_frames].mean())


def test_the_same_seed_gives_the_same_batches_and_another_seed_or_epoch_others(workspace, log_mel, rows):
    settings = ("augment=[channel,noise,speed]",)
    first = collator_for(workspace, log_mel, *settings)(rows)["input_features"]
    assert torch.equal(first, collator_for(workspace, log_mel, *settings)(rows)["input_features"])
    assert not torch.equal(first, collator_for(workspace, log_mel, *settings, "seed=7")(rows)["input_features"])
    next_epoch = collator_for(workspace, log_mel, *settings)
    next_epoch.epoch = 1
    assert not torch.equal(first, next_epoch(rows)["input_features"])


def test_speed_changes_the_clip_length_and_the_timestamps_follow_it(workspace, log_mel, rows):
    processor = load_processor(workspace / "model")
    timestamps = TimestampedLabels(processor.tokenizer, share=1.0, pack_max_clips=1)
    plain = collator_for(workspace, log_mel, timestamps=timestamps)(rows)
    faster = collator_for(workspace, log_mel, "augment=[speed:1.0]", "augment_speed=[1.25,1.25]", timestamps=timestamps)(rows)
    plain_frames = plain["attention_mask"].sum(-1)
    faster_frames = faster["attention_mask"].sum(-1)
    assert torch.allclose(faster_frames.float(), plain_frames.float() / 1.25, atol=2)
    first_timestamp = timestamps.first_timestamp
    for index in range(len(rows)):
        labels = faster["labels"][index]
        times = [(int(token) - first_timestamp) * 0.02 for token in labels if int(token) >= first_timestamp]
        assert len(times) == 2 and times[1] <= float(faster_frames[index]) * FRAME_SECONDS + 0.02, "the end is inside the faster clip"
        plain_end = [(int(t) - first_timestamp) * 0.02 for t in plain["labels"][index] if int(t) >= first_timestamp][1]
        assert times[1] < plain_end, "the speech ends earlier in the faster clip"
    # A clip already near 30 s is never slowed past Whisper's window.
    augmenter = WaveformAugmenter({"speed": 1.0}, (10.0, 30.0), (0.8, 0.8), seed=0)
    long_clip = np.tile(rows[0]["audio"], CHUNK_SAMPLES // len(rows[0]["audio"]) + 1)[: CHUNK_SAMPLES - 100]
    assert len(augmenter.apply(long_clip, "long", 0, CHUNK_SAMPLES)) <= CHUNK_SAMPLES


def test_a_run_killed_with_9_resumes_the_same_augmentation_stream(workspace, tmp_path, python_executable):
    """Two epochs of 3 steps each: the kill falls after checkpoint 4, inside the second epoch, so the resumed run must
    know its epoch from the step count and draw that epoch's augmentations, not the first's."""
    from safetensors.torch import load_file

    from kowhisper.train.checkpoints import COMPLETE_MARKER

    settings = ["per_device_train_batch_size=4", "max_steps=6", "save_steps=2", "eval_strategy=no", "report_to=[]",
                "warmup_steps=0", "learning_rate=1e-3", "augment=[channel,noise,speed]", "max_eval_samples=2",
                "generation_max_length=16"]

    def command(run: Path) -> list[str]:
        return [python_executable, "train_offline.py", f"workspace={workspace}", f"output_dir={run}", *settings]

    straight = subprocess.run(command(tmp_path / "straight"), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "Augmentation: speed p=0.5, noise p=0.5, channel p=0.5" in straight.stdout

    interrupted = tmp_path / "interrupted"
    kill_9_once(command(interrupted), tmp_path / "first.log", (interrupted / "checkpoint-4" / COMPLETE_MARKER).exists,
                waiting_for="a complete checkpoint-4", group=True, timeout=600)
    assert not (interrupted / "adapter").exists(), "the kill came too late to test a resume"
    resumed = subprocess.run(command(interrupted), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout
    expected = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    got = load_file(interrupted / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected)
    # And the augmentation did change the training: the same run without it ends elsewhere.
    plain_settings = [part for part in settings if not part.startswith("augment=")]
    plain = subprocess.run([python_executable, "train_offline.py", f"workspace={workspace}", f"output_dir={tmp_path / 'plain'}",
                            *plain_settings], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert plain.returncode == 0, plain.stderr[-3000:]
    unaugmented = load_file(tmp_path / "plain" / "adapter" / "adapter_model.safetensors")
    assert any(not torch.equal(expected[key], unaugmented[key]) for key in expected)


def test_a_workspace_without_audio_stops_an_augmented_run_with_what_to_do(make_workspace, tiny_model_dir, python_executable):
    workspace = make_workspace(tiny_model_dir, copy=False, keep_audio=False, max_samples=4)
    command = [python_executable, "train_offline.py", f"workspace={workspace}", "augment=[channel]", "max_steps=1", "report_to=[]"]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "stores features only" in result.stderr and "keep_audio=true" in result.stderr
    # SpecAugment works on the features, so it needs no audio.
    masked = subprocess.run([*command[:4], "augment=[specaugment]", *command[5:]], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=900)
    assert masked.returncode == 0, masked.stderr[-3000:]
