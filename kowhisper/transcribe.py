"""Transcribing audio files of any length, in batches, to txt, json or srt.

Audio longer than Whisper's 30 s window is cut into windows of at most 30 s, each cut placed at the quietest
moment of the window's last 10 s, so cuts fall in pauses rather than inside words. The windows are then
independent: windows of all files are sorted by length and decoded in batches, with either engine. A model
fine-tuned on fitted encoder windows gets each batch padded only to its longest window plus its tail (so the
full 30 s windows of a long file stay 30 s and its last, shorter window is fitted); a base model always gets
30 s. Each window is decoded with timestamp tokens when the output keeps times (json, srt); its segments are
shifted by the window's start. A window whose model emits no usable timestamps (an adapter trained only on
<|notimestamps|> labels may) becomes one segment spanning the window.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kowhisper.audio import CHUNK_SAMPLES, SAMPLING_RATE, AudioError, load_audio
from kowhisper.features import N_FRAMES, LogMel, pad_features
from kowhisper.modeling import TIME_PRECISION, WhisperBackend

log = logging.getLogger("kowhisper")

CUT_SEARCH_SAMPLES = 10 * SAMPLING_RATE
CUT_FRAME_SAMPLES = SAMPLING_RATE // 10  # quietness is judged over 100 ms, about one syllable's gap
# Peak amplitude below which a recording holds no speech: about -60 dBFS, under any microphone's hiss floor
# for speech but above digital silence and dither.
SILENCE_PEAK = 1e-3
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4", ".mkv", ".aiff", ".aif", ".amr"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
# Audio held in memory at once when many files are given (about 60 MB); windows of these files are batched.
SAMPLES_IN_FLIGHT = 32 * CHUNK_SAMPLES


@dataclass
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    source: str
    duration: float
    text: str
    segments: list[Segment] = field(default_factory=list)


def is_silent(waveform: np.ndarray) -> bool:
    return waveform.size == 0 or float(np.max(np.abs(waveform))) < SILENCE_PEAK


def split_into_windows(waveform: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample ranges of at most 30 s covering the waveform, cut at the quietest 100 ms."""
    windows, start, total = [], 0, len(waveform)
    while total - start > CHUNK_SAMPLES:
        search_from = start + CHUNK_SAMPLES - CUT_SEARCH_SAMPLES
        region = waveform[search_from : start + CHUNK_SAMPLES]
        frames = region[: len(region) // CUT_FRAME_SAMPLES * CUT_FRAME_SAMPLES].reshape(-1, CUT_FRAME_SAMPLES)
        quietest = int(np.argmin((frames.astype(np.float64) ** 2).mean(axis=1)))
        cut = search_from + quietest * CUT_FRAME_SAMPLES + CUT_FRAME_SAMPLES // 2
        windows.append((start, cut))
        start = cut
    windows.append((start, total))
    return windows


def segments_from_tokens(backend: WhisperBackend, ids: list[int], offset: float, duration: float) -> list[Segment]:
    """Segments of one window from its generated ids, shifted by `offset` seconds.

    Whisper writes <|t0|> text <|t1|> pairs; times are clamped into the window and kept in order, because a
    model in a repetition loop can emit them out of order or past the audio.
    """
    segments: list[Segment] = []
    start, pending = None, []

    def close(end: float) -> None:
        text = backend.decode(pending)
        if not text:
            return
        previous_end = segments[-1].end - offset if segments else 0.0
        begin = min(max(start if start is not None else 0.0, previous_end), duration)
        segments.append(Segment(round(offset + begin, 2), round(offset + min(max(end, begin), duration), 2), text))

    for token in ids:
        if token >= backend.timestamp_begin:
            time = (token - backend.timestamp_begin) * TIME_PRECISION
            if start is not None and pending:
                close(time)
                pending = []
            start = time
        else:
            pending.append(token)
    if pending:
        close(duration)
    return segments


def transcribe_waveforms(backend: WhisperBackend, waveforms: list[np.ndarray], *, timestamps: bool, batch_size: int,
                         sources: list[str] | None = None, bar=None) -> list[Transcript]:
    """Transcripts of 16 kHz mono waveforms of any length, decoding all their windows in batches.
    `bar`, a tqdm bar, advances by one per window."""
    log_mel = LogMel(backend.feature_extractor)
    windows = []  # (waveform index, start sample, end sample)
    for index, waveform in enumerate(waveforms):
        # A silent stretch is left out rather than decoded: Whisper tends to invent text for silence.
        windows += [(index, start, end) for start, end in split_into_windows(waveform) if not is_silent(waveform[start:end])]
    # A window cut from longer audio is a full 30 s window, whatever the cut left in it; only a file's last
    # window (or a short file, its only one) is fitted to its own length.
    cut_short = {i for i, (index, _, end) in enumerate(windows) if end < len(waveforms[index])}
    # Longest first: a batch decodes as long as its longest window, so similar lengths waste the least.
    order = sorted(range(len(windows)), key=lambda i: windows[i][2] - windows[i][1], reverse=True)
    window_ids: dict[int, list[int]] = {}
    if bar is not None:
        bar.total = (bar.total or 0) + len(windows)
        bar.refresh()
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        arrays = [log_mel(waveforms[windows[i][0]][windows[i][1] : windows[i][2]]) for i in batch]
        needed = max(N_FRAMES if i in cut_short else len(array) for i, array in zip(batch, arrays))
        features = pad_features(arrays, backend.window.frames_for(needed))
        longest = max(windows[i][2] - windows[i][1] for i in batch) / SAMPLING_RATE
        generated = backend.generate(features, timestamps=timestamps, max_new_tokens=backend.decoding.tokens_for(longest))
        window_ids.update(zip(batch, generated))
        if bar is not None:
            bar.update(len(batch))

    transcripts = [
        Transcript(sources[index] if sources else f"audio {index}", round(len(waveform) / SAMPLING_RATE, 3), "")
        for index, waveform in enumerate(waveforms)
    ]
    for i, (index, start, end) in enumerate(windows):
        offset, duration = start / SAMPLING_RATE, (end - start) / SAMPLING_RATE
        if timestamps:
            found = segments_from_tokens(backend, window_ids[i], offset, duration)
        else:
            text = backend.decode(window_ids[i])
            found = [Segment(round(offset, 2), round(offset + duration, 2), text)] if text else []
        transcripts[index].segments += found
    for transcript in transcripts:
        transcript.text = " ".join(segment.text for segment in transcript.segments)
    return transcripts


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


def transcribe_files(backend: WhisperBackend, paths: list[Path], *, timestamps: bool, batch_size: int,
                     progress: bool = True) -> Iterator[tuple[Path, Transcript | None, str | None]]:
    """(path, transcript, None) or (path, None, problem) per file, in order. A file that cannot be read or
    holds only silence is reported and skipped; the others are still transcribed."""
    from tqdm.auto import tqdm

    held: list[tuple[Path, np.ndarray | None, str | None]] = []

    def flush():
        readable = [i for i, (_, waveform, _) in enumerate(held) if waveform is not None]
        transcripts = transcribe_waveforms(backend, [held[i][1] for i in readable], timestamps=timestamps,
                                           batch_size=batch_size, sources=[str(held[i][0]) for i in readable], bar=bar)
        by_index = dict(zip(readable, transcripts))
        for i, (path, _, problem) in enumerate(held):
            yield path, by_index.get(i), problem
        held.clear()

    with tqdm(total=0, desc="transcribing", unit="window", disable=not progress, file=sys.stderr) as bar:
        for path in paths:
            try:
                waveform = load_audio(path)
            except AudioError as error:
                held.append((path, None, str(error)))
                continue
            held.append((path, None, "silent: no speech to transcribe") if is_silent(waveform) else (path, waveform, None))
            if sum(len(w) for _, w, _ in held if w is not None) >= SAMPLES_IN_FLIGHT:
                yield from flush()
        yield from flush()


# ---- output formats -----------------------------------------------------------------------------------------


def srt_time(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{milliseconds:03d}"


def to_srt(transcript: Transcript) -> str:
    cues = [f"{n}\n{srt_time(s.start)} --> {srt_time(s.end)}\n{s.text}\n" for n, s in enumerate(transcript.segments, 1)]
    return "\n".join(cues)


def to_json(transcript: Transcript) -> str:
    return json.dumps(asdict(transcript), ensure_ascii=False)


def render(transcript: Transcript, output_format: str) -> str:
    if output_format == "srt":
        return to_srt(transcript)
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


def transcribe_to_outputs(backend: WhisperBackend, items: list[str], *, output_format: str, transcripts_dir: str | None,
                          batch_size: int, progress: bool = True) -> int:
    """The CLI: transcribe what `items` name, print or write each transcript as soon as it is done, report
    skipped files on stderr. Returns the exit status: 0 if every file was transcribed, 1 otherwise."""
    from utils import atomic_write_text

    paths, problems = collect_audio_paths(items)
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    if not paths:
        print("error: no audio files to transcribe", file=sys.stderr)
        return 1
    directory = Path(transcripts_dir).expanduser() if transcripts_dir else None
    taken: set[Path] = set()
    done, skipped = 0, len(problems)
    # JSON goes out one object per line, so several files still make valid JSON Lines; text gets headers.
    headers = directory is None and len(paths) > 1 and output_format != "json"
    for path, transcript, problem in transcribe_files(backend, paths, timestamps=output_format in ("json", "srt"),
                                                      batch_size=batch_size, progress=progress):
        if transcript is None:
            print(f"skipped {path}: {problem}", file=sys.stderr)
            skipped += 1
            continue
        rendered = render(transcript, output_format)
        if directory is not None:
            target = output_path(directory, path, output_format, taken)
            atomic_write_text(target, rendered)
            print(f"{path} -> {target}", flush=True)
        else:
            print(f"==> {path} <==\n{rendered}" if headers else rendered, end="", flush=True)
        done += 1
    print(f"{done} transcribed, {skipped} skipped ({backend.description})", file=sys.stderr)
    return 0 if skipped == 0 else 1
