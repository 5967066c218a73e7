"""Real human Korean speech (../shared/data/ko-real-speech, CC BY-NC-SA 4.0, read from there, never copied):
a long recording comes back complete, in every output format, and a fine-tuned adapter keeps writing timestamps,
so long audio still comes back as sentence-sized subtitles.

Skipped cleanly where that folder is absent. Espeak speech cannot show this: its clips have no natural pauses
and zero-shot whisper-base cannot read it.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.sample_files import REAL_SPEECH, REAL_SPEECH_KO, needs_real_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]
JOINED_CLIPS = 11
MAX_BLOCK_SECONDS = 15.0
# Whisper's first window ends at 30 s; the recording is built so that a sentence is under way there.
WINDOW_SECONDS = 30.0
# bench/longform.py's target is 2% of reference characters deleted (measured: 0% on this kind of recording); the
# test leaves room for int8 kernels that differ between CPUs.
MAX_DELETED_SHARE = 0.04

pytestmark = [pytest.mark.real_model, needs_real_speech]

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
    with open(REAL_SPEECH_KO / "test.tsv", encoding="utf-8", newline="") as handle:
        clips = [REAL_SPEECH_KO / "clips" / row["path"] for row in csv.DictReader(handle, delimiter="\t")][:JOINED_CLIPS]
    out = tmp_path_factory.mktemp("joined") / "joined.wav"
    inputs = [arg for clip in clips for arg in ("-i", str(clip))]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", f"concat=n={len(clips)}:v=0:a=1",
                    "-ar", "16000", "-ac", "1", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def across_a_window(tmp_path_factory) -> tuple[Path, list[str], float]:
    """(recording, its sentences, its seconds): at least 60 s of real test clips joined end to end, starting at the
    first clip that puts Whisper's 30 s window boundary well inside a sentence."""
    from test_inference import write_wav

    from kowhisper.common.audio import SAMPLING_RATE, load_audio

    with open(REAL_SPEECH_KO / "test.tsv", encoding="utf-8", newline="") as handle:
        rows = [(REAL_SPEECH_KO / "clips" / row["path"], row["sentence"]) for row in csv.DictReader(handle, delimiter="\t")]
    clips = [(load_audio(path), sentence) for path, sentence in rows[:40]]
    for first in range(len(clips)):
        chosen, seconds = [], 0.0
        for audio, sentence in clips[first:]:
            chosen.append((audio, sentence))
            seconds += len(audio) / SAMPLING_RATE
            if seconds >= 60:
                break
        ends = np.cumsum([len(audio) / SAMPLING_RATE for audio, _ in chosen])
        inside = next(i for i, end in enumerate(ends) if end > WINDOW_SECONDS)
        begins = ends[inside] - len(chosen[inside][0]) / SAMPLING_RATE
        if seconds >= 60 and WINDOW_SECONDS - begins > 1.5 and ends[inside] - WINDOW_SECONDS > 1.5:
            break
    path = write_wav(tmp_path_factory.mktemp("across") / "across.wav", np.concatenate([audio for audio, _ in chosen]))
    return path, [sentence for _, sentence in chosen], seconds


def test_a_long_recording_comes_back_whole_in_every_format(make_workspace, real_model_dir, across_a_window, python_executable):
    from test_inference import parse_srt

    from bench.longform import score, sentence_coverage

    recording, sentences, seconds = across_a_window
    workspace = make_workspace(real_model_dir, copy=False, data_path=str(REAL_SPEECH), max_samples=160)
    outputs = {}
    for output_format in ("txt", "srt", "json"):
        result = subprocess.run([python_executable, "inference.py", f"workspace={workspace}", "adapter=base", str(recording),
                                 f"output_format={output_format}"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "\ufffd" not in result.stdout
        outputs[output_format] = result.stdout
    document = json.loads(outputs["json"])
    text = document["text"]
    # One decode behind every format: the text, the subtitles and the JSON segments say the same.
    assert outputs["txt"] == text + "\n"
    assert [cue_text for *_, cue_text in parse_srt(outputs["srt"])] == [s["text"] for s in document["segments"]]

    coverage = sentence_coverage(sentences, text)
    scored = score(" ".join(sentences), text)
    print(f"\n{seconds:.0f} s, {len(sentences)} sentences: no-space CER {100 * scored['cer_nospace']:.1f}%, deleted "
          f"{scored['deleted']} of {scored['ref_chars']} characters; least complete sentence {min(coverage):.0%}")
    assert min(coverage) >= 0.5, f"a sentence went missing: {list(zip(sentences, coverage))}"
    assert scored["deleted"] <= MAX_DELETED_SHARE * scored["ref_chars"]
    times = [(s["start"], s["end"]) for s in document["segments"]]
    assert all(0 <= start <= end <= seconds + 0.01 for start, end in times)
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:]))


def test_a_prompt_and_hotwords_never_reach_the_transcript_and_the_seek_stays_complete(make_workspace, real_model_dir, across_a_window,
                                                                                      python_executable):
    """The same recording with hotwords before every window and an initial prompt over Whisper's 223-token limit
    (trimmed, with a message): no prompt text comes back, no sentence goes missing, times stay in order."""
    from bench.longform import score, sentence_coverage

    recording, sentences, seconds = across_a_window
    workspace = make_workspace(real_model_dir, copy=False, data_path=str(REAL_SPEECH), max_samples=160)
    prompt = "오늘 회의록: 분기 매출, 신규 고객, 물류 센터 이전 일정을 정리합니다. " * 12
    result = subprocess.run([python_executable, "inference.py", f"workspace={workspace}", "adapter=base", str(recording),
                             "output_format=json", f"initial_prompt={prompt}", "hotwords=[카카오뱅크,넷플릭스,블록체인]"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Whisper reads at most 223 before a window" in result.stderr
    document = json.loads(result.stdout)
    text = document["text"]
    assert "\ufffd" not in text
    for leaked in ("회의록", "물류 센터", "카카오뱅크", "넷플릭스", "블록체인"):
        assert leaked not in text, leaked
    coverage = sentence_coverage(sentences, text)
    scored = score(" ".join(sentences), text)
    assert min(coverage) >= 0.5, f"a sentence went missing: {list(zip(sentences, coverage))}"
    assert scored["deleted"] <= MAX_DELETED_SHARE * scored["ref_chars"]
    times = [(s["start"], s["end"]) for s in document["segments"]]
    assert all(0 <= start <= end <= seconds + 0.01 for start, end in times)
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:]))


def test_a_fine_tuned_adapter_keeps_sentence_sized_subtitles(make_workspace, real_model_dir, joined_test_clips, python_executable):
    """The defaults train on fitted encoder windows: long audio then runs full 30 s windows and a fitted last one."""
    from kowhisper.common.audio import SAMPLING_RATE, load_audio

    seconds = len(load_audio(joined_test_clips)) / SAMPLING_RATE
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
        assert "\ufffd" not in result.stdout
        return srt_blocks(result.stdout)

    zero_shot, tuned = subtitles("base"), subtitles("real")
    longest = max(end - start for start, end in tuned)
    print(f"\nSRT blocks on {JOINED_CLIPS} joined real clips: zero-shot {len(zero_shot)}, fine-tuned {len(tuned)} "
          f"(longest {longest:.1f} s)")
    assert len(zero_shot) >= JOINED_CLIPS - 2, "zero-shot whisper-base should give about a block per sentence"
    assert len(tuned) >= 0.7 * len(zero_shot), f"the adapter lost its timestamps: {len(tuned)} blocks against {len(zero_shot)}"
    assert longest <= MAX_BLOCK_SECONDS
    assert all(end > start for start, end in tuned) and [start for start, _ in tuned] == sorted(start for start, _ in tuned)
    assert all(a[1] <= b[0] for a, b in zip(tuned, tuned[1:])) and tuned[-1][1] <= seconds + 0.01

    # Word times of the fit-window adapter: full windows, then a fitted last one, each aligned at its own length.
    from test_word_timestamps import check_words

    result = subprocess.run([python_executable, "inference.py", f"workspace={workspace}", "adapter=real", str(joined_test_clips),
                             "output_format=json", "word_timestamps=true"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    words = check_words(json.loads(result.stdout), seconds)
    assert words[-1]["end"] > seconds - 10, "the last window's words are timed inside it"
    # Its alignment heads are the base's; LoRA on the attention could move what they attend to. Re-checked, not assumed:
    # the words at the sentence joins are where the speech is (bench/word_timing.py: median 0.09 s and 0.16 s off for a
    # one-epoch adapter).
    from test_word_timestamps import MAX_MEDIAN_ERROR_S, join_errors

    with open(REAL_SPEECH_KO / "test.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:JOINED_CLIPS]
    clips = [load_audio(REAL_SPEECH_KO / "clips" / row["path"]) for row in rows]
    assert abs(sum(len(clip) for clip in clips) / SAMPLING_RATE - seconds) < 0.05, "the joined file is the clips end to end"
    starts, ends = join_errors(words, clips, [row["sentence"] for row in rows])
    print(f"fine-tuned adapter's words at {len(starts)} joins: start error median {np.median(np.abs(starts)):.2f} s, "
          f"end error median {np.median(np.abs(ends)):.2f} s")
    assert np.median(np.abs(starts)) <= MAX_MEDIAN_ERROR_S and np.median(np.abs(ends)) <= MAX_MEDIAN_ERROR_S


def test_a_run_worse_than_zero_shot_ends_with_the_base_itself(make_workspace, real_model_dir, python_executable):
    """A learning rate far too high ruins whisper-base in a few steps. No checkpoint beats the base on dev, so the
    run's final model must be the base as it was measured: LoRA weights back at their no-op start, Whisper's full
    window, and the base's dev figures."""
    from safetensors.torch import load_file

    from kowhisper.families.whisper.encoder_window import EncoderWindow

    workspace = make_workspace(real_model_dir, copy=False, data_path=str(REAL_SPEECH), max_samples=160)
    result = subprocess.run([python_executable, "train_offline.py", f"workspace={workspace}", "run_name=ruined", "max_steps=3",
                             "learning_rate=1e-2", "warmup_steps=0", "per_device_train_batch_size=4", "eval_steps=3",
                             "save_steps=3", "max_eval_samples=8", "report_to=[]"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = workspace / "runs" / "ruined"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["improved_over_zero_shot"] is False
    assert metrics["dev"]["cer"] == metrics["zero_shot_dev"]["cer"]
    assert "the final model is the base itself" in result.stdout and "the base itself" in metrics["verdict"]
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert all(tensor.abs().sum() == 0 for name, tensor in weights.items() if "lora_B" in name)
    assert not EncoderWindow.of_model(run_dir / "adapter").is_fit
