"""Word timestamps on real speech: how far from the truth are the times of the words at sentence joins?

Recordings: real Korean test clips of `../shared/data/ko-real-speech` (read from there) joined end to end in the test
list's order, as bench/longform.py joins them (its `joined-11`, `1min` and `5min` recordings, about 6.5 minutes).
Where two clips meet, the words on either side are known: the last word of one sentence and the first of the next.
Their true times are where the speech is: the first and last 10 ms frame of a clip whose RMS is within SPEECH_DB of
the clip's loudest frame (each clip is one speaker reading one sentence, so that is where it starts and ends).

A transcriber's words are matched to the reference sentences by a character alignment (the metric form with spaces
removed, kowhisper.common.text): a join counts for a transcriber when the first character of the next sentence and the
last character of the one before are each written (equal or substituted), and each is the first (last) character
of the word it is in. Reported per transcriber, on the joins every transcriber matched: the median and 90th
percentile of |predicted - true| for the start of the word after the join and for the end of the word before it, and
their median signed error (positive: late).

Transcribers, in the same run, on the same whisper-base weights and the same CTranslate2 int8 export:
- `inference.py`: this toolkit's long-form decoder with word_timestamps=true (kowhisper.families.whisper.alignment),
  backend ct2 as on every CPU; with --hf also the transformers engine (the one that runs on CUDA);
- `faster-whisper`: faster-whisper 1.2.1 `word_timestamps=True`, greedy, its other defaults, language ko.
With --workspace and --adapter, also for a fine-tuned adapter: its alignment heads are the base's, which LoRA on the
attention may move, so the adapter is measured rather than assumed to align as the base does.

Target (issue 25): median error at most 0.2 s, and no worse than faster-whisper.

    python -m bench.word_timing
    python -m bench.word_timing --workspace WS --adapter default-clean
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from kowhisper.common.runtime import force_offline

force_offline()

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = PROJECT_ROOT / "bench" / "out" / "word_timing"
RECORDINGS = ("joined-11", "1min", "5min")
# A frame is speech when its RMS is within this many dB of the clip's loudest 10 ms frame.
SPEECH_DB = 30.0
FRAME_S = 0.01


def speech_bounds(clip: np.ndarray, sampling_rate: int) -> tuple[float, float]:
    """Seconds from the clip's start to its first and to the end of its last speech frame (SPEECH_DB)."""
    step = round(FRAME_S * sampling_rate)
    frames = clip[: len(clip) // step * step].reshape(-1, step).astype(np.float64)
    level = 10 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-12))
    speech = np.flatnonzero(level >= level.max() - SPEECH_DB)
    return float(speech[0] * FRAME_S), float((speech[-1] + 1) * FRAME_S)


def true_joins(clips: list[np.ndarray], sampling_rate: int) -> list[tuple[float, float]]:
    """Per join between clip i and i + 1: (true end of clip i's last word, true start of clip i + 1's first word)."""
    starts = np.cumsum([0] + [len(clip) for clip in clips]) / sampling_rate
    bounds = [speech_bounds(clip, sampling_rate) for clip in clips]
    return [(starts[i] + bounds[i][1], starts[i + 1] + bounds[i + 1][0]) for i in range(len(clips) - 1)]


def predicted_joins(sentences: list[str], words: list[tuple[str, float, float]]) -> list[tuple[float, float] | None]:
    """Per join, (end of the word holding sentence i's last character, start of the word holding sentence i + 1's first),
    or None when the alignment does not place a word boundary there (see the module docstring)."""
    import jiwer

    from kowhisper.common.text import normalize_for_metric

    def squeezed(text: str) -> str:
        return normalize_for_metric(text).replace(" ", "")

    references = [squeezed(sentence) for sentence in sentences]
    bounds = np.cumsum([0] + [len(reference) for reference in references])
    written = [(squeezed(word), start, end) for word, start, end in words]
    written = [word for word in written if word[0]]
    hypothesis = "".join(word for word, _, _ in written)
    word_of_char = np.repeat(np.arange(len(written)), [len(word) for word, _, _ in written])
    first_char = np.cumsum([0] + [len(word) for word, _, _ in written])
    hypothesis_char = np.full(bounds[-1], -1)
    if hypothesis:
        for chunk in jiwer.process_characters("".join(references), hypothesis).alignments[0]:
            if chunk.type in ("equal", "substitute"):
                hypothesis_char[chunk.ref_start_idx : chunk.ref_end_idx] = np.arange(chunk.hyp_start_idx, chunk.hyp_end_idx)
    joins = []
    for join in range(1, len(references)):
        last, first = hypothesis_char[bounds[join] - 1], hypothesis_char[bounds[join]]
        if last < 0 or first < 0 or word_of_char[last] == word_of_char[first]:
            joins.append(None)
            continue
        before, after = word_of_char[last], word_of_char[first]
        if last != first_char[before + 1] - 1 or first != first_char[after]:
            joins.append(None)
            continue
        joins.append((written[before][2], written[after][1]))
    return joins


def ours(source, config, backend: str):
    from kowhisper.families.registry import load_recognizer

    config = dataclasses.replace(config, backend=backend)
    recognizer = load_recognizer(source, config)

    def run(waveform: np.ndarray, word_timestamps: bool = True) -> list[tuple[str, float, float]]:
        [transcript] = recognizer.transcribe_waveforms([waveform], batch_size=config.per_device_eval_batch_size,
                                                       word_timestamps=word_timestamps)
        return [(word.word, word.start, word.end) for segment in transcript.segments for word in segment.words or []]

    return recognizer.description, run


def faster_whisper(ct2_dir: Path):
    from faster_whisper import WhisperModel

    from kowhisper.families.base import cpu_threads

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=cpu_threads())

    def run(waveform: np.ndarray, word_timestamps: bool = True) -> list[tuple[str, float, float]]:
        segments, _ = model.transcribe(waveform, language="ko", task="transcribe", beam_size=1, word_timestamps=word_timestamps)
        segments = list(segments)  # decoding happens as the generator is read
        return [(word.word.strip(), word.start, word.end) for segment in segments for word in segment.words or []]

    return "faster-whisper 1.2.1 int8, greedy, word_timestamps=True", run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, help="a workspace whose base model and runs to use")
    parser.add_argument("--adapter", help="a fine-tuned run or adapter (as adapter= takes it) beside the base")
    parser.add_argument("--hf", action="store_true", help="also time words with the transformers engine")
    parser.add_argument("--only", nargs="*", default=list(RECORDINGS), help=f"recordings to use (default: {' '.join(RECORDINGS)})")
    args = parser.parse_args(argv)

    from bench.longform import build_recordings, compared_models
    from kowhisper.common.audio import SAMPLING_RATE, load_audio
    from kowhisper.common.cpu import cpu_has_native_bf16, cpu_model_name
    from kowhisper.config import load_config
    from kowhisper.families.base import ModelSource
    from kowhisper.families.whisper.ct2_export import export_ct2
    from tests.sample_files import REAL_SPEECH_KO

    if not (REAL_SPEECH_KO / "test.tsv").is_file():
        raise SystemExit(f"the real-speech set is not at {REAL_SPEECH_KO}; this benchmark needs ../shared beside the project")
    recordings = [recording for recording in build_recordings() if recording.name in args.only]
    models = compared_models(args.workspace, args.adapter)
    transcribers = {}
    for label, source in models.items():
        ct2_dir = export_ct2(source, "int8", OUT_DIR / f"ct2-{label}")
        config = load_config([f"workspace={args.workspace}"] if args.workspace else [])
        # The CTranslate2 export faster-whisper reads, so both decode the same int8 weights.
        transcribers[f"inference.py {label}"] = lambda config=config, ct2_dir=ct2_dir, label=label: ours(
            ModelSource("ct2", ct2_dir, label), config, "ct2")
        if args.hf:
            transcribers[f"inference.py {label} (transformers)"] = lambda config=config, source=source: ours(source, config, "hf")
        transcribers[f"faster-whisper {label}"] = lambda ct2_dir=ct2_dir: faster_whisper(ct2_dir)

    results = {"cpu": cpu_model_name(), "native_bf16": cpu_has_native_bf16(), "cores": len(os.sched_getaffinity(0)),
               "recordings": {recording.name: round(recording.seconds, 1) for recording in recordings}, "transcribers": {}}
    for name, make in transcribers.items():
        description, run = make()
        joins, seconds, seconds_without_words = [], 0.0, 0.0
        for recording in recordings:
            waveform = load_audio(recording.path)
            started = time.perf_counter()
            run(waveform, word_timestamps=False)
            seconds_without_words += time.perf_counter() - started
            started = time.perf_counter()
            words = run(waveform)
            seconds += time.perf_counter() - started
            truth = true_joins(recording.clips, SAMPLING_RATE)
            for predicted, (true_end, true_start) in zip(predicted_joins(recording.sentences, words), truth):
                joins.append(None if predicted is None else {"end": predicted[0] - true_end, "start": predicted[1] - true_start})
        results["transcribers"][name] = {"description": description, "joins": joins, "seconds": round(seconds, 1),
                                         "seconds_without_words": round(seconds_without_words, 1)}
        matched = sum(join is not None for join in joins)
        print(f"{name}: {matched}/{len(joins)} joins matched, {seconds:.0f} s", flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(report(results))


def report(results: dict) -> str:
    """A Markdown table on the joins every transcriber matched."""
    transcribers = results["transcribers"]
    count = len(next(iter(transcribers.values()))["joins"])
    common = [i for i in range(count) if all(data["joins"][i] is not None for data in transcribers.values())]
    lines = [f"CPU: {results['cpu']} ({results['cores']} cores, native bf16: {results['native_bf16']}); recordings "
             f"{', '.join(f'{name} ({seconds:.0f} s)' for name, seconds in results['recordings'].items())}; "
             f"{len(common)} of {count} joins matched by every transcriber", "",
             "| transcriber | joins matched | start: median / p90 abs error | start: median signed | end: median / p90 abs "
             "error | end: median signed | wall s (without words) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, data in transcribers.items():
        cells = []
        for side in ("start", "end"):
            errors = np.array([data["joins"][i][side] for i in common])
            cells += [f"{np.median(np.abs(errors)):.2f} / {np.percentile(np.abs(errors), 90):.2f} s", f"{np.median(errors):+.2f} s"]
        matched = sum(join is not None for join in data["joins"])
        lines.append(f"| {name} | {matched}/{count} | {' | '.join(cells)} | {data['seconds']} ({data['seconds_without_words']}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
