"""Transcribing audio files with any model family, to txt, json or srt.

Files, folders and lists are collected, read and held a batch at a time; the family's `Recognizer` decides how
audio longer than its model's window is decoded and how segment times are found. Every output format comes from
the same decode: txt is the segments' text, json and srt add their times. A file that cannot be read is reported
and skipped, and the others are still transcribed; a file that holds only silence gets an empty transcript, without
running the model, and the reason is reported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kowhisper.common.audio import SAMPLING_RATE, AudioError, load_audio
from kowhisper.common.files import atomic_write_text
from kowhisper.common.transcript import Prompting, Segment, Transcript, Word, is_silent
from kowhisper.families.base import Recognizer

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4", ".mkv", ".aiff", ".aif", ".amr",
                  ".pcm"}  # headerless 16-bit PCM at pcm_sample_rate
LIST_SUFFIXES = {".txt", ".lst", ".list"}
# Beside an audio file, its own prompt and hotwords: calls/0412.wav -> calls/0412.prompt.txt, calls/0412.hotwords.txt.
PROMPT_SIDECAR = ".prompt.txt"
HOTWORDS_SIDECAR = ".hotwords.txt"
# Audio held in memory at once when many files are given: 16 minutes (about 60 MB); windows of these files are batched.
SAMPLES_IN_FLIGHT = 16 * 60 * SAMPLING_RATE

# ---- files --------------------------------------------------------------------------------------------------


def collect_audio_paths(items: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Audio files named by `items`: files as given, folders searched for audio suffixes, and .txt/.lst
    lists holding one path per line (relative to the list; # starts a comment). Returns (paths, problems)."""
    paths, problems = [], []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                problems.append(f"{path}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder")
            paths += found
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
            listed = [(path.parent / line) for line in lines if line]
            missing = [str(p) for p in listed if not p.is_file()]
            problems += [f"{path}: listed file not found: {name}" for name in missing]
            paths += [p for p in listed if p.is_file()]
        elif path.is_file():
            paths.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return paths, problems


def file_prompting(path: Path, shared: Prompting) -> Prompting:
    """The prompting of one audio file: the shared one (initial_prompt, hotwords), with the file's own prompt in
    place of the shared prompt (NAME.prompt.txt beside it) and its own hotwords after the shared ones
    (NAME.hotwords.txt, one per line, # starts a comment)."""
    prompt_file, hotwords_file = path.with_suffix(PROMPT_SIDECAR), path.with_suffix(HOTWORDS_SIDECAR)
    prompt = prompt_file.read_text(encoding="utf-8") if prompt_file.is_file() else None
    hotwords = ([line.split("#", 1)[0].strip() for line in hotwords_file.read_text(encoding="utf-8").splitlines()]
                if hotwords_file.is_file() else [])
    return shared.with_file(prompt, hotwords)


def transcribe_files(recognizer: Recognizer, paths: list[Path], *, batch_size: int, progress: bool = True,
                     pcm_sample_rate: int = SAMPLING_RATE, prompting: Prompting | None = None, word_timestamps: bool = False,
                     ) -> Iterator[tuple[Path, Transcript | None, str | None]]:
    """Per file, in order: (path, transcript, None); (path, None, problem) for a file that cannot be read, which is
    skipped; or (path, empty transcript, note) for a file that holds only silence, which the model never sees (it
    would only make up words). A silent recording is a valid recording, so it gets its transcript. `prompting`, the
    shared initial prompt and hotwords, is completed per file by its sidecars (file_prompting). `word_timestamps`: segments
    carry their timed words."""
    # (path, waveform to transcribe or None, problem or note, transcript known without the model or None)
    held: list[tuple[Path, np.ndarray | None, str | None, Transcript | None]] = []

    def flush():
        readable = [i for i, (_, waveform, _, _) in enumerate(held) if waveform is not None]
        promptings = [file_prompting(held[i][0], prompting) for i in readable] if prompting is not None else None
        transcripts = recognizer.transcribe_waveforms([held[i][1] for i in readable], batch_size=batch_size,
                                                   sources=[str(held[i][0]) for i in readable], bar=bar,
                                                   promptings=promptings, word_timestamps=word_timestamps) if readable else []
        by_index = dict(zip(readable, transcripts))
        for i, (path, _, problem, known) in enumerate(held):
            yield path, by_index.get(i, known), problem
        held.clear()

    with tqdm(total=0, desc="transcribing", unit="s", disable=not progress, file=sys.stderr) as bar:
        for path in paths:
            try:
                waveform = load_audio(path, pcm_sample_rate=pcm_sample_rate)
            except AudioError as error:
                held.append((path, None, str(error), None))
                continue
            if is_silent(waveform):
                empty = Transcript(str(path), round(len(waveform) / SAMPLING_RATE, 3), "")
                held.append((path, None, "silent (its loudest sample is below -60 dBFS): no speech to transcribe", empty))
            else:
                held.append((path, waveform, None, None))
            if sum(len(w) for _, w, _, _ in held if w is not None) >= SAMPLES_IN_FLIGHT:
                yield from flush()
        yield from flush()


# ---- output formats -----------------------------------------------------------------------------------------


def srt_time(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{milliseconds:03d}"


def to_srt(transcript: Transcript, max_chars: int = 0) -> str:
    """One cue per segment; with `max_chars` and word times, segments cut at words into cues of at most max_chars."""
    cues = ([cue for segment in transcript.segments for cue in word_cues(segment, max_chars)] if max_chars > 0
            else [(segment.start, segment.end, segment.text) for segment in transcript.segments])
    return "\n".join(f"{n}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n" for n, (start, end, text) in enumerate(cues, 1))


def word_cues(segment: Segment, max_chars: int) -> list[tuple[float, float, str]]:
    """A segment's words as (start, end, text) cues of at most `max_chars` characters, each from its first word's start
    to its last word's end; the segment as one cue when it has no word times."""
    if not segment.words:
        return [(segment.start, segment.end, segment.text)]
    groups: list[list[Word]] = []
    for word in segment.words:
        if groups and len(" ".join(w.word for w in groups[-1])) + 1 + len(word.word) <= max_chars:
            groups[-1].append(word)
        else:
            groups.append([word])
    return [(group[0].start, group[-1].end, " ".join(word.word for word in group)) for group in groups]


def to_json(transcript: Transcript) -> str:
    """One JSON object; segments carry "words" only when words were timed."""
    record = asdict(transcript)
    for segment in record["segments"]:
        if segment["words"] is None:
            del segment["words"]
    return json.dumps(record, ensure_ascii=False)


def render(transcript: Transcript, output_format: str, srt_max_chars: int = 0) -> str:
    if output_format == "srt":
        return to_srt(transcript, srt_max_chars)
    if output_format == "json":
        return to_json(transcript) + "\n"
    return transcript.text + "\n"


def output_path(directory: Path, audio: Path, output_format: str, taken: set[Path]) -> Path:
    """<dir>/<audio stem>.<format>; a second file with the same stem gets -2, -3 rather than overwriting."""
    candidate = directory / f"{audio.stem}.{output_format}"
    number = 2
    while candidate in taken:
        candidate = directory / f"{audio.stem}-{number}.{output_format}"
        number += 1
    taken.add(candidate)
    return candidate


def transcribe_to_outputs(recognizer: Recognizer, items: list[str], *, output_format: str, transcripts_dir: str | None,
                          batch_size: int, progress: bool = True, pcm_sample_rate: int = SAMPLING_RATE,
                          prompting: Prompting | None = None, word_timestamps: bool = False, srt_max_chars: int = 0) -> int:
    """The CLI: transcribe what `items` name, print or write each transcript as soon as it is done, report
    skipped files and silent ones (whose transcript is empty) on stderr. Returns the exit status: 0 if every file was
    transcribed, silent ones included, 1 if any could not be read."""
    paths, problems = collect_audio_paths(items)
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    if not paths:
        print("error: no audio files to transcribe", file=sys.stderr)
        return 1
    directory = Path(transcripts_dir).expanduser() if transcripts_dir else None
    taken: set[Path] = set()
    done, silent, skipped = 0, 0, len(problems)
    # JSON goes out one object per line, so several files still make valid JSON Lines; text gets headers.
    headers = directory is None and len(paths) > 1 and output_format != "json"
    for path, transcript, problem in transcribe_files(recognizer, paths, batch_size=batch_size, progress=progress,
                                                         pcm_sample_rate=pcm_sample_rate, prompting=prompting,
                                                         word_timestamps=word_timestamps or (output_format == "srt" and srt_max_chars > 0)):
        if transcript is None:
            print(f"skipped {path}: {problem}", file=sys.stderr)
            skipped += 1
            continue
        if problem is not None:
            print(f"{path}: {problem}; empty transcript", file=sys.stderr)
            silent += 1
        rendered = render(transcript, output_format, srt_max_chars)
        if directory is not None:
            target = output_path(directory, path, output_format, taken)
            atomic_write_text(target, rendered)
            print(f"{path} -> {target}", flush=True)
        else:
            print(f"==> {path} <==\n{rendered}" if headers else rendered, end="", flush=True)
        done += 1
    print(f"{done} transcribed{f' ({silent} silent)' if silent else ''}, {skipped} skipped ({recognizer.description})",
          file=sys.stderr)
    return 0 if skipped == 0 else 1
