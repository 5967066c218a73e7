"""Timestamped training labels (kowhisper.families.whisper.features.TimestampedLabels): a share of training batches is joined
into multi-sentence examples whose labels carry each clip's speech start and end, so fine-tuning keeps Whisper's
timestamps; dev batches never change."""

from __future__ import annotations

import re

import numpy as np
import pytest

from kowhisper.families.whisper.encoder_window import EncoderWindow
from kowhisper.families.whisper.features import FRAME_SECONDS, SpeechBatchCollator, TimestampedLabels, speech_bounds


@pytest.fixture(scope="module")
def rows_and_tokenizer(make_workspace, tiny_model_dir):
    from datasets import load_from_disk

    from kowhisper.common.workspace import split_dir
    from kowhisper.families.whisper.loading import load_processor

    workspace = make_workspace(tiny_model_dir, copy=False)
    rows = list(load_from_disk(str(split_dir(workspace, "train"))).with_format("numpy").select(range(8)))
    return rows, load_processor(workspace / "model").tokenizer


def test_speech_bounds_find_the_speech_inside_added_silence(rows_and_tokenizer):
    rows, _ = rows_and_tokenizer
    stored = rows[0]["input_features"].astype(np.float32)

    def padded(seconds: float) -> np.ndarray:
        quiet = np.full((round(seconds / FRAME_SECONDS), stored.shape[1]), stored.min(), dtype=np.float32)
        return np.concatenate([quiet, stored, quiet])

    (start, end), (later_start, later_end) = speech_bounds(padded(0.5)), speech_bounds(padded(1.0))
    assert later_start - start == pytest.approx(0.5, abs=0.011) and later_end - end == pytest.approx(0.5, abs=0.011)
    assert 0.3 <= start < end <= 0.6 + len(stored) * FRAME_SECONDS


def test_a_timestamped_batch_joins_clips_into_segments_in_time_order(rows_and_tokenizer):
    rows, tokenizer = rows_and_tokenizer
    timestamps = TimestampedLabels(tokenizer, share=1.0)
    packed = timestamps.pack(rows)
    assert len(packed) == 3, "8 clips of a few seconds: 3 + 3 + 2"
    lengths = [len(row["input_features"]) for row in rows]
    assert [len(p["input_features"]) for p in packed] == [sum(lengths[0:3]), sum(lengths[3:6]), sum(lengths[6:8])]

    first = tokenizer.decode(packed[0]["labels"], decode_with_timestamps=True)
    times = [float(t) for t in re.findall(r"<\|(\d+\.\d+)\|>", first)]
    assert first.startswith("<|ko|><|transcribe|><|") and first.endswith("<|endoftext|>") and "<|notimestamps|>" not in first
    assert len(times) == 6 and times == sorted(times), "start and end of each of the 3 clips, in order"
    texts = [tokenizer.decode(r["labels"], skip_special_tokens=True).strip() for r in rows[:3]]
    assert tokenizer.decode(packed[0]["labels"], skip_special_tokens=True).split() == " ".join(texts).split()
    second_clip_offset = len(rows[0]["input_features"]) * FRAME_SECONDS
    assert times[2] >= second_clip_offset - 0.02, "the second clip's segment starts after the first clip ends"


def test_the_share_of_timestamped_batches_follows_the_setting_and_dev_batches_stay_plain(rows_and_tokenizer):
    rows, tokenizer = rows_and_tokenizer
    ids = [f"clip-{index}" for index in range(2000)]
    share = sum(TimestampedLabels(tokenizer, 0.5).wanted([{"id": clip_id}]) for clip_id in ids) / len(ids)
    assert 0.45 < share < 0.55
    assert not any(TimestampedLabels(tokenizer, 0.0).wanted([{"id": clip_id}]) for clip_id in ids)

    window = EncoderWindow("fit", 50, 100)
    training = SpeechBatchCollator(window, TimestampedLabels(tokenizer, 1.0))(rows[:4])
    dev = SpeechBatchCollator(window)(rows[:4])
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert training["input_features"].shape[0] == 2 and dev["input_features"].shape[0] == 4
    assert (dev["labels"][:, 2] == no_timestamps).all() and not (training["labels"] == no_timestamps).any()
