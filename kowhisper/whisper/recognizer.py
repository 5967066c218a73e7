"""Whisper transcribing: prepared rows for evaluation, and audio of any length for inference.py and the demo.

Audio longer than Whisper's 30 s window is cut into windows of at most 30 s, each cut placed at the quietest
moment of the window's last 10 s, so cuts fall in pauses rather than inside words. The windows are then
independent: windows of all files are sorted by length and decoded in batches, with either engine. A model
fine-tuned on fitted encoder windows gets each batch padded only to its longest window plus its tail (so the
full 30 s windows of a long file stay 30 s and its last, shorter window is fitted); a base model always gets
30 s. Each window is decoded with timestamp tokens when the output keeps times (json, srt); its segments are
shifted by the window's start. A window whose model emits no usable timestamps (an adapter trained only on
<|notimestamps|> labels may) becomes one segment spanning the window.

Greedy decoding can fall into a loop ("새 새 새 ..." to the token cap), more so on audio unlike the training
data. Whisper's own test for a loop is a text that gzip compresses more than 2.4 times; such a window (or
evaluation clip) is decoded once more with repeated 4-grams forbidden, and the less repetitive of the two
texts is kept. It costs nothing on windows that do not loop, and is deterministic, unlike Whisper's temperature
fallback.
"""

from __future__ import annotations

import zlib

import numpy as np

from kowhisper.audio import CHUNK_SAMPLES, SAMPLING_RATE
from kowhisper.modeling import Recognizer
from kowhisper.transcribe import Segment, Transcript, is_silent
from kowhisper.whisper.engines import TIME_PRECISION, WhisperEngine
from kowhisper.whisper.features import N_FRAMES, LogMel, pad_features

CUT_SEARCH_SAMPLES = 10 * SAMPLING_RATE
CUT_FRAME_SAMPLES = SAMPLING_RATE // 10  # quietness is judged over 100 ms, about one syllable's gap
# openai/whisper's compression_ratio_threshold: above it, a decoded text is taken for a repetition loop.
LOOP_COMPRESSION_RATIO = 2.4
# Loops are of words and phrases; forbidding repeated 4-grams of byte-level tokens breaks them while still
# allowing a syllable or a short word to occur twice.
LOOP_FALLBACK_NGRAM = 4


class WhisperRecognizer(Recognizer):
    def __init__(self, engine: WhisperEngine):
        self.engine = engine
        self.description = engine.description
        self.settings = f"encoder window {engine.window.describe()}"

    def transcribe_prepared(self, rows: list[dict]) -> list[str]:
        """Batches as the caller gives them (evaluation sorts them by duration): each padded to the window the
        model was trained with, each decoded with the token budget of its longest clip."""
        arrays = [row["input_features"] for row in rows]
        features = pad_features(arrays, self.engine.window.frames_for(max(len(a) for a in arrays)))
        budget = self.engine.decoding.tokens_for(max(float(row["duration"]) for row in rows))
        generated = generate_without_loops(self.engine, features, timestamps=False, max_new_tokens=budget)
        return [self.engine.decode(ids) for ids in generated]

    def transcribe_waveforms(self, waveforms, *, timestamps, batch_size, sources=None, bar=None) -> list[Transcript]:
        return transcribe_waveforms(self.engine, waveforms, timestamps=timestamps, batch_size=batch_size, sources=sources, bar=bar)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def generate_without_loops(engine: WhisperEngine, features, *, timestamps: bool, max_new_tokens: int) -> list[list[int]]:
    """Greedy ids per row; rows whose text looks like a loop are decoded again with repeated n-grams forbidden."""
    generated = engine.generate(features, timestamps=timestamps, max_new_tokens=max_new_tokens)
    looping = [i for i, ids in enumerate(generated) if compression_ratio(engine.decode(ids)) > LOOP_COMPRESSION_RATIO]
    if looping:
        retried = engine.generate(features[looping], timestamps=timestamps, max_new_tokens=max_new_tokens,
                                  no_repeat_ngram_size=LOOP_FALLBACK_NGRAM)
        for i, ids in zip(looping, retried):
            if compression_ratio(engine.decode(ids)) < compression_ratio(engine.decode(generated[i])):
                generated[i] = ids
    return generated


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


def segments_from_tokens(backend: WhisperEngine, ids: list[int], offset: float, duration: float) -> list[Segment]:
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


def transcribe_waveforms(backend: WhisperEngine, waveforms: list[np.ndarray], *, timestamps: bool, batch_size: int,
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
        generated = generate_without_loops(backend, features, timestamps=timestamps, max_new_tokens=backend.decoding.tokens_for(longest))
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


