"""Real human Korean speech (../shared/data/ko-real-speech, CC BY-NC-SA 4.0, read from there, never copied):
a fine-tuned adapter keeps writing timestamps, so long audio still comes back as sentence-sized subtitles.

Skipped cleanly where that folder is absent. Espeak speech cannot show this: its clips have no natural pauses
and zero-shot whisper-base cannot read it.
"""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_SPEECH = PROJECT_ROOT.parent / "shared" / "data" / "ko-real-speech" / "cv-corpus-emotiontts-ko"
JOINED_CLIPS = 11
MAX_BLOCK_SECONDS = 15.0

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not (REAL_SPEECH / "ko" / "train.tsv").is_file(), reason=f"the real-speech set is not at {REAL_SPEECH}"),
]

SRT_TIME = re.compile(r"(\d+):(\d+):(\d+),(\d+) --> (\d+):(\d+):(\d+),(\d+)")


def srt_blocks(srt: str) -> list[tuple[float, float]]:
    blocks = []
    for match in SRT_TIME.finditer(srt):
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, match.groups())
        blocks.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000))
    return blocks


@pytest.fixture(scope="module")
def joined_test_clips(tmp_path_factory) -> Path:
    """About 80 s: the first real test clips (sentences and 8 speakers never in train) joined end to end."""
    with open(REAL_SPEECH / "ko" / "test.tsv", encoding="utf-8", newline="") as handle:
        clips = [REAL_SPEECH / "ko" / "clips" / row["path"] for row in csv.DictReader(handle, delimiter="\t")][:JOINED_CLIPS]
    out = tmp_path_factory.mktemp("joined") / "joined.wav"
    inputs = [arg for clip in clips for arg in ("-i", str(clip))]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", f"concat=n={len(clips)}:v=0:a=1",
                    "-ar", "16000", "-ac", "1", str(out)], check=True)
    return out


def test_a_fine_tuned_adapter_keeps_sentence_sized_subtitles(make_workspace, real_model_dir, joined_test_clips, python_executable):
    workspace = make_workspace(real_model_dir, copy=False, data_path=str(REAL_SPEECH), max_samples=160)
    # The defaults (timestamps on a share of the labels included), shortened: 40 steps of 4 clips.
    train = subprocess.run([python_executable, "train_offline.py", f"workspace={workspace}", "run_name=real", "max_steps=40",
                            "per_device_train_batch_size=4", "warmup_steps=4", "eval_strategy=no", "max_eval_samples=16",
                            "report_to=[]"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    assert train.returncode == 0, train.stderr[-3000:]

    def subtitles(model: str) -> list[tuple[float, float]]:
        result = subprocess.run([python_executable, "inference.py", f"workspace={workspace}", f"adapter={model}",
                                 str(joined_test_clips), "output_format=srt"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return srt_blocks(result.stdout)

    zero_shot, tuned = subtitles("base"), subtitles("real")
    longest = max(end - start for start, end in tuned)
    print(f"\nSRT blocks on {JOINED_CLIPS} joined real clips: zero-shot {len(zero_shot)}, fine-tuned {len(tuned)} "
          f"(longest {longest:.1f} s)")
    assert len(zero_shot) >= JOINED_CLIPS - 2, "zero-shot whisper-base should give about a block per sentence"
    assert len(tuned) >= 0.7 * len(zero_shot), f"the adapter lost its timestamps: {len(tuned)} blocks against {len(zero_shot)}"
    assert longest <= MAX_BLOCK_SECONDS
    assert all(end > start for start, end in tuned) and [start for start, _ in tuned] == sorted(start for start, _ in tuned)
