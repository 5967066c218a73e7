"""Word timestamps of real whisper-base on real Korean speech (../shared/data/ko-real-speech, read from there): words
are eojeol that join into the segment text exactly, times are in order and inside the audio, no U+FFFD, asking for
words changes no text, and the words on either side of a sentence join are placed where the speech is (the joins
bench/word_timing.py measures), on both engines. The fit-window adapter's words are checked in test_real_speech.py,
a CTC model's in test_ctc.py."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.sample_files import REAL_SPEECH, REAL_SPEECH_KO, needs_real_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]
JOINED_CLIPS = 11
# bench/word_timing.py measured a median error of 0.05 s (word starts) and 0.18 s (word ends) at the joins of this kind of
# recording; the test leaves room for int8 kernels that differ between CPUs.
MAX_MEDIAN_ERROR_S = 0.3

pytestmark = [pytest.mark.real_model, needs_real_speech]


def check_words(document: dict, duration: float) -> list[dict]:
    """Every segment's words: eojeol (no space inside) that join with single spaces into its text, each inside the
    segment and after the one before it, all inside the audio, probabilities in [0, 1]. Returns all words."""
    words = []
    for segment in document["segments"]:
        assert segment["words"], f"a segment without words: {segment}"
        assert " ".join(word["word"] for word in segment["words"]) == segment["text"]
        for word in segment["words"]:
            assert word["word"] and not any(char.isspace() for char in word["word"]) and "\ufffd" not in word["word"]
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"] <= duration + 0.01
            assert 0.0 <= word["probability"] <= 1.0
        words += segment["words"]
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))
    return words


def join_errors(words: list[dict], clips: list[np.ndarray], sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Errors in seconds of the predicted start and end times of the words at the joins that the transcript matches."""
    from bench.word_timing import predicted_joins, true_joins
    from kowhisper.common.audio import SAMPLING_RATE

    pairs = [(predicted, truth) for predicted, truth in
             zip(predicted_joins(sentences, [(w["word"], w["start"], w["end"]) for w in words]), true_joins(clips, SAMPLING_RATE))
             if predicted is not None]
    assert len(pairs) >= (len(clips) - 1) // 2, "most joins should be matched"
    return (np.array([predicted[1] - truth[1] for predicted, truth in pairs]),
            np.array([predicted[0] - truth[0] for predicted, truth in pairs]))


@pytest.fixture(scope="module")
def joined(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[str]]:
    """(recording, its clips, their sentences): the first real test clips joined end to end, about 58 s."""
    from test_inference import write_wav

    from kowhisper.common.audio import load_audio

    with open(REAL_SPEECH_KO / "test.tsv", encoding="utf-8", newline="") as handle:
        rows = [(REAL_SPEECH_KO / "clips" / row["path"], row["sentence"]) for row in csv.DictReader(handle, delimiter="\t")]
    clips = [load_audio(path) for path, _ in rows[:JOINED_CLIPS]]
    path = write_wav(tmp_path_factory.mktemp("words") / "joined.wav", np.concatenate(clips))
    return path, clips, [sentence for _, sentence in rows[:JOINED_CLIPS]]


def test_words_on_a_long_recording_through_the_cli(make_workspace, real_model_dir, joined, python_executable):
    """inference.py with word_timestamps=true (CTranslate2, as on every CPU): json words, the same text as without
    them, subtitles cut at words (srt_max_chars), and word times near the speech at every sentence join."""
    from kowhisper.common.audio import SAMPLING_RATE

    recording, clips, sentences = joined
    duration = sum(len(clip) for clip in clips) / SAMPLING_RATE
    workspace = make_workspace(real_model_dir, copy=False, data_path=str(REAL_SPEECH), max_samples=160)

    def transcribe(*options: str) -> str:
        result = subprocess.run([python_executable, "inference.py", f"workspace={workspace}", "adapter=base", str(recording),
                                 *options], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "\ufffd" not in result.stdout
        return result.stdout

    document = json.loads(transcribe("output_format=json", "word_timestamps=true"))
    assert document["text"] + "\n" == transcribe("output_format=txt"), "asking for word times changed the text"
    words = check_words(document, duration)
    starts, ends = join_errors(words, clips, sentences)
    print(f"\n{len(words)} words; at {len(starts)} joins: start error median {np.median(np.abs(starts)):.2f} s, "
          f"end error median {np.median(np.abs(ends)):.2f} s")
    assert np.median(np.abs(starts)) <= MAX_MEDIAN_ERROR_S and np.median(np.abs(ends)) <= MAX_MEDIAN_ERROR_S

    from test_inference import parse_srt

    cues = parse_srt(transcribe("output_format=srt", "srt_max_chars=16"))
    assert [text for *_, text in cues] and all(len(text) <= 16 or " " not in text for *_, text in cues)
    assert " ".join(text for *_, text in cues) == document["text"]
    times = [time for _, start, end, _ in cues for time in (start, end)]
    assert times == sorted(times) and times[-1] <= duration + 0.01


def test_the_transformers_engine_times_words_as_ctranslate2_does(real_model_dir, joined):
    """The engine that runs on CUDA computes the alignment itself (eager cross-attention of the alignment heads, DTW):
    the same invariants and errors at the joins as CTranslate2's own `align`, through the Python API."""
    from kowhisper.common.audio import SAMPLING_RATE
    from kowhisper.config import load_config
    from kowhisper.families.base import ModelSource
    from kowhisper.families.registry import load_recognizer
    from kowhisper.serve.transcribe import to_json

    _, clips, sentences = joined
    waveform = np.concatenate(clips)
    recognizer = load_recognizer(ModelSource("merged", real_model_dir, "whisper-base"), load_config(["backend=hf"]))
    assert recognizer.description.startswith("transformers")
    [transcript] = recognizer.transcribe_waveforms([waveform], batch_size=4, word_timestamps=True)
    words = check_words(json.loads(to_json(transcript)), len(waveform) / SAMPLING_RATE)
    starts, ends = join_errors(words, clips, sentences)
    print(f"\ntransformers: at {len(starts)} joins: start error median {np.median(np.abs(starts)):.2f} s, "
          f"end error median {np.median(np.abs(ends)):.2f} s")
    assert np.median(np.abs(starts)) <= MAX_MEDIAN_ERROR_S and np.median(np.abs(ends)) <= MAX_MEDIAN_ERROR_S
    # The model's attention went back to sdpa for generation: a second decode without words still works.
    [again] = recognizer.transcribe_waveforms([clips[0]], batch_size=1)
    assert again.text and again.segments[0].words is None
