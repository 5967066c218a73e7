"""Long audio with Whisper: seek through it one 30 s window at a time, as openai/whisper and faster-whisper do.

A window starts where the last one's speech was finished. Whisper writes each window as `<|t0|> text <|t1|>`
segments; the segments it closed are kept, and the next window starts at the start of the segment it left
unfinished (cut by the window's end or the token cap), so speech that straddles a window's end is decoded again,
whole, at the start of the next. Cutting the audio at fixed points and decoding each piece once instead loses
whatever a piece's decode gave up on: an early end-of-text drops the rest of the piece.

One step further than openai/whisper: when the model closes its last segment and stops (a single timestamp before
the end of text, which openai/whisper takes to mean "nothing more in this window") in a window that the audio goes on
after, the next window still starts at that timestamp if more than TAIL_REDECODE_S of the window follows it. On real
Korean recordings whisper-base did this with a sentence that began in the window's last seconds: it wrote the
sentences before it, closed, and the sentence was lost (bench/RESULTS.md, "Long-form"). Decoded again at the start of
a window, it comes back; a tail that really is silence costs one more window. The last window of a recording has
heard the audio to its end, so there the model's stop is taken as it is: decoding a trailing pause on its own
invites a fine-tuned model to say its sentence again. Otherwise a window is done to its end only when nothing of
it is left after its last timestamp, or when the model wrote no timestamps at all (then its text is one segment for
the window).

Windows of several recordings (or parts of one, see below) are decoded together in batches, one window per
recording per round, so the CLI keeps every core busy. A model fine-tuned on fitted encoder windows runs full
30 s windows inside a recording and a fitted last window, as it was trained.

Silence and loops:
- audio that is digitally silent at the seek point is skipped before decoding (Whisper invents text for
  silence);
- a window whose no-speech probability is above NO_SPEECH_THRESHOLD while its mean token log-probability is below
  LOGPROB_THRESHOLD is taken for silence or noise and skipped (openai/whisper's rule and thresholds);
- a window whose text gzip-compresses more than LOOP_COMPRESSION_RATIO times is a repetition loop; it is decoded
  once more with repeated 4-grams forbidden, and the less repetitive text is kept (deterministic, unlike
  Whisper's temperature fallback).

On an engine that runs several clips in parallel (CTranslate2 on CPU, one worker per core), fewer recordings than
workers would leave cores idle, since each recording is sought through one window at a time: the longest recordings
are then split at their quietest moments into parts of at least MIN_PART_S until there are as many parts as
workers, and each part is sought through on its own.
"""

from __future__ import annotations

import codecs
import zlib
from dataclasses import dataclass, field

import numpy as np

from kowhisper.common.audio import SAMPLING_RATE
from kowhisper.common.transcript import Prompting, Segment, Transcript, Word, is_silent
from kowhisper.families.whisper.alignment import TokenTiming
from kowhisper.families.whisper.engines import TIME_PRECISION, Generation, WhisperEngine
from kowhisper.families.whisper.features import LogMel, pad_features
from kowhisper.families.whisper.frames import HOP_LENGTH, N_FRAMES

# openai/whisper's compression_ratio_threshold: above it, a decoded text is taken for a repetition loop.
LOOP_COMPRESSION_RATIO = 2.4
# Loops are of words and phrases; forbidding repeated 4-grams of byte-level tokens breaks them while still
# allowing a syllable or a short word to occur twice.
LOOP_FALLBACK_NGRAM = 4
# openai/whisper's no_speech_threshold and logprob_threshold: a window is silence when Whisper both expects no
# speech and is unsure of what it wrote.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# Mel frames per timestamp step (20 ms timestamps, 10 ms frames).
FRAMES_PER_TIMESTAMP = round(TIME_PRECISION * SAMPLING_RATE / HOP_LENGTH)
# Audio left after a window's last closed segment is decoded again at the start of the next window when it is
# longer than this (see the module docstring).
TAIL_REDECODE_S = 1.0
# Silence is skipped in steps of this many frames (100 ms, about one syllable's gap).
SILENCE_STEP_FRAMES = 10
# A recording is split for parallel workers only when each part would still fill a window; the cut goes at the
# quietest 100 ms within PART_CUT_SEARCH_S of the middle, a pause between sentences in most speech.
MIN_PART_S = 30.0
PART_CUT_SEARCH_S = 10.0


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def generate_without_loops(engine: WhisperEngine, features, *, timestamps: bool, max_new_tokens: int,
                           contexts: list[tuple[int, ...]] | None = None) -> list[Generation]:
    """Greedy rows; rows whose text looks like a loop are decoded again with repeated n-grams forbidden.
    `contexts` as WhisperEngine.generate takes them."""
    generated = engine.generate(features, timestamps=timestamps, max_new_tokens=max_new_tokens, contexts=contexts)
    looping = [i for i, row in enumerate(generated) if compression_ratio(engine.decode(row.ids)) > LOOP_COMPRESSION_RATIO]
    if looping:
        retried = engine.generate(features[looping], timestamps=timestamps, max_new_tokens=max_new_tokens,
                                  no_repeat_ngram_size=LOOP_FALLBACK_NGRAM,
                                  contexts=None if contexts is None else [contexts[i] for i in looping])
        for i, row in zip(looping, retried):
            if compression_ratio(engine.decode(row.ids)) < compression_ratio(engine.decode(generated[i].ids)):
                generated[i] = row
    return generated


def generate_windows(engine: WhisperEngine, features, *, max_new_tokens: int, contexts: list[tuple[int, ...]]) -> list[Generation]:
    """Timestamped rows of windows (generate_without_loops). A prompted row that comes back without one closed segment
    is decoded again with no prompt, and kept if it closes one: text before a window makes Whisper drop its
    timestamps at times, and then stop early (real speech, whisper-base: a 30 s window with an initial prompt gave
    its first sentence and stopped, and the four after it were lost)."""
    generated = generate_without_loops(engine, features, timestamps=True, max_new_tokens=max_new_tokens, contexts=contexts)
    unclosed = [i for i, (context, row) in enumerate(zip(contexts, generated))
                if context and not is_no_speech(row) and not closes_a_segment(engine, row.ids)]
    if unclosed:
        retried = generate_without_loops(engine, features[unclosed], timestamps=True, max_new_tokens=max_new_tokens,
                                         contexts=[()] * len(unclosed))
        for i, row in zip(unclosed, retried):
            if closes_a_segment(engine, row.ids):
                generated[i] = row
    return generated


def closes_a_segment(engine: WhisperEngine, ids: list[int]) -> bool:
    """Whether the ids hold a closed `<|t0|> text <|t1|>` segment: two timestamps in a row, or a text ended by one."""
    is_time = [token >= engine.timestamp_begin for token in ids]
    return any(is_time[i] and is_time[i - 1] for i in range(1, len(ids))) or (len(ids) >= 2 and is_time[-1] and not is_time[-2])


def is_no_speech(generation: Generation) -> bool:
    return generation.no_speech_prob > NO_SPEECH_THRESHOLD and generation.avg_logprob < LOGPROB_THRESHOLD


# ---- one window's tokens --------------------------------------------------------------------------------------


@dataclass
class WindowText:
    """What one decoded window gives: segments (times in seconds from the window's start, the ids of their tokens) and
    how many mel frames of the window are done; the next window starts there."""

    segments: list[tuple[float, float, list[int]]]
    consumed_frames: int

    def text_tokens(self, engine: WhisperEngine) -> list[int]:
        """The text tokens of the window's segments, in order: what word timestamps align."""
        return [token for _, _, ids in self.segments for token in engine.text_tokens(ids)]


def read_window(engine: WhisperEngine, ids: list[int], window_frames: int, audio_goes_on: bool = True) -> WindowText:
    """Segments and the next seek step from a window's generated ids (see the module docstring). `window_frames` is
    how many mel frames of audio the window held; `audio_goes_on` whether the recording continues after it."""
    begin = engine.timestamp_begin
    is_time = [token >= begin for token in ids]
    window_seconds = window_frames * HOP_LENGTH / SAMPLING_RATE
    if not closes_a_segment(engine, ids):
        # No closed segment: no timestamps at all (a model trained without them), or one segment the model began
        # and never closed. The window is one segment, done to its end.
        times = [(token - begin) * TIME_PRECISION for token in ids if token >= begin]
        start = times[0] if times and is_time[0] else 0.0
        return WindowText([(start, window_seconds, ids)], window_frames)
    # A pair of timestamps closes one segment and opens the next; the ids start right after the prompt.
    boundaries = [i for i in range(1, len(ids)) if is_time[i] and is_time[i - 1]]
    closed_by_one_timestamp = is_time[-1] and not is_time[-2]
    ends = boundaries + ([len(ids)] if closed_by_one_timestamp else [])
    segments, first = [], 0
    for last in ends:
        piece = ids[first:last]
        start, end = (piece[0] - begin) * TIME_PRECISION, (piece[-1] - begin) * TIME_PRECISION
        segments.append((start, end, piece))
        first = last
    if closed_by_one_timestamp:
        if not audio_goes_on:
            return WindowText(segments, window_frames)
        # The model closed its last segment and stopped before the window's end: whatever follows that timestamp is
        # decoded again, unless it is too short to hold speech.
        resume = (ids[-1] - begin) * FRAMES_PER_TIMESTAMP
        tail_frames = round(TAIL_REDECODE_S * SAMPLING_RATE / HOP_LENGTH)
    else:
        # The last segment was left unfinished: the next window starts at its opening timestamp.
        resume, tail_frames = (ids[first - 1] - begin) * FRAMES_PER_TIMESTAMP, 0
    return WindowText(segments, resume if 0 < resume < window_frames - tail_frames else window_frames)


# ---- seeking through recordings -----------------------------------------------------------------------------


@dataclass
class Stream:
    """One recording, or one part of it, being sought through; positions in mel frames of the recording."""

    recording: int
    end: int
    seek: int
    segments: list[Segment] = field(default_factory=list)
    windows_decoded: int = 0  # the first gets the initial prompt


def plan_streams(waveforms: list[np.ndarray], workers: int) -> list[Stream]:
    """One stream per recording; while there are fewer streams than `workers`, the longest stream that still holds
    two parts of at least MIN_PART_S is halved at the quietest 100 ms within PART_CUT_SEARCH_S of its middle. Streams
    come back in recording order, parts in time order."""
    streams = [Stream(index, -(-len(waveform) // HOP_LENGTH), 0) for index, waveform in enumerate(waveforms)]
    min_frames = round(MIN_PART_S * SAMPLING_RATE / HOP_LENGTH)
    search = round(PART_CUT_SEARCH_S * SAMPLING_RATE / HOP_LENGTH)
    while streams and len(streams) < workers:
        longest = max(streams, key=lambda stream: stream.end - stream.seek)
        if longest.end - longest.seek < 2 * min_frames:
            break
        middle = (longest.seek + longest.end) // 2
        first = max(longest.seek + min_frames, middle - search)
        cut = first + quietest_step(waveforms[longest.recording], first, min(longest.end - min_frames, middle + search))
        streams.insert(streams.index(longest) + 1, Stream(longest.recording, longest.end, cut))
        longest.end = cut
    return streams


def quietest_step(waveform: np.ndarray, first: int, last: int) -> int:
    """Frames from `first` to the middle of the quietest SILENCE_STEP_FRAMES step between frames `first` and `last`."""
    step = SILENCE_STEP_FRAMES * HOP_LENGTH
    region = waveform[first * HOP_LENGTH : last * HOP_LENGTH].astype(np.float64)
    energy = (region[: len(region) // step * step].reshape(-1, step) ** 2).mean(axis=1)
    return int(np.argmin(energy)) * SILENCE_STEP_FRAMES + SILENCE_STEP_FRAMES // 2


def skip_silence(waveform: np.ndarray, stream: Stream) -> None:
    """Move the stream's seek past digitally silent audio (whole 100 ms steps)."""
    while stream.seek < stream.end:
        step = waveform[stream.seek * HOP_LENGTH : (stream.seek + SILENCE_STEP_FRAMES) * HOP_LENGTH]
        if not is_silent(step):
            return
        stream.seek += SILENCE_STEP_FRAMES
    stream.seek = min(stream.seek, stream.end)


def add_window(engine: WhisperEngine, stream: Stream, window: WindowText, offset: float, stream_end: float,
               timings: list[TokenTiming] | None = None) -> None:
    """Append a window's segments to the stream: times shifted by `offset` seconds, kept in order and inside the
    audio; text joined at whole characters, runs of spaces as one. With `timings` (one per text token of the window,
    WhisperEngine.align), each segment gets its words."""
    # The decoder keeps the start of a character whose other bytes come in the next segment, and drops bytes that are
    # no character (errors="ignore", never U+FFFD). A character still unfinished when the window's text ends never
    # completes: the decoder is not flushed, so its bytes are dropped.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
    token_index, pending_from = 0, None
    for start, end, ids in window.segments:
        # Each character with the window's index of the token its first byte came in.
        characters: list[tuple[str, int]] = []
        for token in engine.text_tokens(ids):
            written = decoder.decode(engine.text_bytes([token]))
            characters += [(char, token_index if n or pending_from is None else pending_from) for n, char in enumerate(written)]
            unfinished = bool(decoder.getstate()[0])
            pending_from = (token_index if written or pending_from is None else pending_from) if unfinished else None
            token_index += 1
        words = split_words(characters)
        if not words:
            continue
        previous_end = stream.segments[-1].end if stream.segments else 0.0
        begin = min(max(offset + start, previous_end), stream_end)
        segment = Segment(round(begin, 2), round(min(max(offset + end, begin), stream_end), 2),
                          " ".join(text for text, _ in words))
        if timings is not None:
            segment.words = timed_words(words, timings, offset, segment)
            segment.keep_words_inside()
        stream.segments.append(segment)


def split_words(characters: list[tuple[str, int]]) -> list[tuple[str, list[int]]]:
    """Space-delimited words of (character, token index) pairs, each with the token indices of its spoken characters
    (letters and digits), in order: punctuation is not heard, and the alignment gives a sentence's closing full stop
    the pause after it (measured in bench/RESULTS.md, "Word timestamps"). A word of punctuation alone keeps its own."""
    words: list[tuple[str, list[int]]] = []
    text, spoken, written = "", [], []
    for char, token in [*characters, (" ", -1)]:
        if char.isspace():
            if text:
                words.append((text, spoken or written))
            text, spoken, written = "", [], []
        else:
            text += char
            (spoken if char.isalnum() else written).append(token)
    return words


def timed_words(words: list[tuple[str, list[int]]], timings: list[TokenTiming], offset: float, segment: Segment) -> list[Word]:
    """Words timed from their tokens: the first token's start to the last one's end, the mean of their probabilities.
    Without timings for the window (an alignment that found no path), the segment's time is shared out by characters."""
    if timings:
        return [Word(offset + timings[tokens[0]].start, offset + timings[tokens[-1]].end, text,
                     round(sum(timings[t].probability for t in tokens) / len(tokens), 3)) for text, tokens in words]
    total = sum(len(text) for text, _ in words)
    shared, done = [], 0
    for text, _ in words:
        share = (segment.end - segment.start) / total
        shared.append(Word(segment.start + done * share, segment.start + (done + len(text)) * share, text, 0.0))
        done += len(text)
    return shared


def transcribe_long(engine: WhisperEngine, waveforms: list[np.ndarray], *, batch_size: int, sources: list[str] | None = None,
                    bar=None, promptings: list[Prompting] | None = None, word_timestamps: bool = False) -> list[Transcript]:
    """Transcripts, with timestamped segments, of 16 kHz mono waveforms of any length. `bar`, a tqdm bar, counts
    seconds of audio done. `promptings`, one per waveform: its initial prompt and hotwords (unset: the engine's).
    `word_timestamps`: each segment also gets its words, timed by cross-attention alignment (one more decoder pass
    per window, kowhisper.families.whisper.alignment)."""
    promptings = promptings or [engine.decoding.prompting] * len(waveforms)
    log_mel = LogMel(engine.feature_extractor)
    streams = plan_streams(waveforms, engine.parallel_streams)
    if bar is not None:
        bar.total = (bar.total or 0) + round(sum(len(w) for w in waveforms) / SAMPLING_RATE)
        bar.refresh()
    active = list(streams)
    while active:
        windows = []  # (stream, features of the window, frames of audio it holds)
        for stream in active:
            waveform = waveforms[stream.recording]
            before = stream.seek
            skip_silence(waveform, stream)
            _advance_bar(bar, stream.seek - before)
            if stream.seek >= stream.end:
                continue
            frames = min(N_FRAMES, stream.end - stream.seek)
            audio = waveform[stream.seek * HOP_LENGTH : (stream.seek + frames) * HOP_LENGTH]
            windows.append((stream, log_mel(audio), frames))
        # Longest first: a batch decodes as long as its longest window, so similar lengths waste the least.
        windows.sort(key=lambda window: window[2], reverse=True)
        for first in range(0, len(windows), batch_size):
            batch = windows[first : first + batch_size]
            features = pad_features([mel for _, mel, _ in batch], engine.window.frames_for(max(len(mel) for _, mel, _ in batch)))
            longest = max(frames for _, _, frames in batch) * HOP_LENGTH / SAMPLING_RATE
            generated = generate_windows(engine, features, max_new_tokens=engine.decoding.tokens_for(longest),
                                         contexts=[engine.context_ids(promptings[stream.recording], stream.windows_decoded == 0)
                                                   for stream, _, _ in batch])
            read = [WindowText([], frames) if is_no_speech(generation)
                    else read_window(engine, generation.ids, frames, stream.seek + frames < stream.end)
                    for (stream, _, frames), generation in zip(batch, generated)]
            timings = (engine.align(features, [window.text_tokens(engine) for window in read], [frames for _, _, frames in batch])
                       if word_timestamps else [None] * len(batch))
            for (stream, _, _), window, window_timings in zip(batch, read, timings):
                stream.windows_decoded += 1
                offset = stream.seek * HOP_LENGTH / SAMPLING_RATE
                add_window(engine, stream, window, offset, stream.end * HOP_LENGTH / SAMPLING_RATE, window_timings)
                stream.seek += window.consumed_frames
                _advance_bar(bar, window.consumed_frames)
        active = [stream for stream in active if stream.seek < stream.end]

    transcripts = [Transcript(sources[index] if sources else f"audio {index}", round(len(waveform) / SAMPLING_RATE, 3), "")
                   for index, waveform in enumerate(waveforms)]
    for stream in streams:  # parts of a recording are in order
        transcript = transcripts[stream.recording]
        for segment in stream.segments:
            if transcript.segments and segment.start < transcript.segments[-1].end:
                segment.start = transcript.segments[-1].end
                segment.end = max(segment.end, segment.start)
                segment.keep_words_inside()
            transcript.segments.append(segment)
    for transcript in transcripts:
        transcript.text = " ".join(segment.text for segment in transcript.segments)
    return transcripts


def _advance_bar(bar, frames: int) -> None:
    if bar is not None and frames > 0:
        bar.update(frames * HOP_LENGTH / SAMPLING_RATE)
