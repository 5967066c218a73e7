"""Whisper inputs as stored in the workspace, and back.

Storage format (chosen for size and speed; figures in bench/RESULTS.md): the HF recipe stores every clip as
an 80 x 3000 float32 log-mel, padded to 30 s, about 960 KB a clip. Here a clip stores only the mel frames
that can see its audio, time-major, in float16: (frames, n_mels). Nothing is lost by the trim: Whisper pads
the waveform with zeros to 30 s, so every later frame has zero power and, after Whisper's clamp to
(max - 8) and rescale, equals one value per clip, max(M - 2, -1.5) where M is the clip's largest stored
value. `pad_features` rebuilds that tail, giving the same 3000 frames Whisper's own extractor gives,
within float16 rounding (about 1e-3).

Labels are `<|ko|><|transcribe|><|notimestamps|> text <|endoftext|>` without `<|startoftranscript|>`: the
model prepends its decoder_start_token_id (= <|startoftranscript|>) when it shifts labels right, so
storing it too would double it. At batch time a share of training labels becomes
`<|ko|><|transcribe|><|t_start|> text <|t_end|><|endoftext|>` (`TimestampedLabels`), with the times read off
the clip's own log-mel: trained only on <|notimestamps|> targets, Whisper forgets how to write timestamps,
and long audio then comes back as one subtitle per 30 s.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from datasets import Array2D, Features, Sequence, Value

from kowhisper.common.audio import AUDIO_COLUMN
from kowhisper.families.whisper.encoder_window import EncoderWindow
from kowhisper.families.whisper.frames import CHUNK_SAMPLES, FRAME_SECONDS, HOP_LENGTH, N_FRAMES

N_FFT = 400
# log10 of the 1e-10 power floor, rescaled as Whisper does: (-10 + 4) / 4.
SILENCE_FLOOR = -1.5
# Decoder positions of every Whisper size; a label (which lacks <|startoftranscript|>) may fill all but one.
WHISPER_LABEL_POSITIONS = 447
TIMESTAMP_SECONDS = 0.02  # Whisper's timestamp tokens are 20 ms apart
# A frame is speech when its mean log-mel rises this far from the clip's quietest frame toward its loudest.
SPEECH_LEVEL = 0.25
# Kept around the detected speech, so a soft onset or a trailing consonant stays inside the segment.
SPEECH_MARGIN_SECONDS = 0.1
# Clips joined into one timestamped training example: 3 typical Common Voice clips fill about 15 s.
PACK_MAX_CLIPS = 3


class LogMel:
    """Whisper's log-mel, computed only over the frames that see audio. Reuses the feature extractor's
    filter bank, so it follows the model's mel count (80, or 128 for large-v3)."""

    def __init__(self, feature_extractor):
        self.mel_filters = torch.from_numpy(np.asarray(feature_extractor.mel_filters, dtype=np.float32))
        self.n_mels = self.mel_filters.shape[1]
        self.window = torch.hann_window(N_FFT)

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """(frames, n_mels) float16 for a mono 16 kHz waveform of at most 30 s."""
        audio = torch.from_numpy(np.asarray(waveform, dtype=np.float32)[:CHUNK_SAMPLES])
        # Zeros after the audio reproduce what the 30 s padding gives the frames that straddle its end.
        padded = torch.nn.functional.pad(audio, (0, N_FFT))
        stft = torch.stft(padded, N_FFT, HOP_LENGTH, window=self.window, return_complex=True)
        num_frames = min(N_FRAMES, (len(audio) + N_FFT // 2 - 1) // HOP_LENGTH + 1)
        power = stft[:, :num_frames].abs() ** 2
        log_spec = torch.clamp(self.mel_filters.T @ power, min=1e-10).log10()
        # The frames we drop all sit at -10, so including them in the max changes nothing unless all is silence.
        peak = max(log_spec.max().item(), -10.0)
        log_spec = (torch.maximum(log_spec, torch.tensor(peak - 8.0)) + 4.0) / 4.0
        return log_spec.T.contiguous().to(torch.float16).numpy()


def pad_value(stored: torch.Tensor) -> float:
    return max(float(stored.max()) - 2.0, SILENCE_FLOOR)


def pad_features(batch: list, frames: int = N_FRAMES, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stored (frames, n_mels) arrays -> the (batch, n_mels, frames) tensor Whisper's encoder takes: 3000
    frames for its own 30 s window, fewer for a fitted one (kowhisper.families.whisper.encoder_window)."""
    stored = [torch.as_tensor(np.asarray(item)) for item in batch]
    longest = max(item.shape[0] for item in stored)
    if longest > frames:
        raise ValueError(f"a clip of {longest} mel frames does not fit a window of {frames}")
    n_mels = stored[0].shape[1]
    out = torch.empty(len(stored), n_mels, frames, dtype=dtype)
    for row, item in enumerate(stored):
        out[row].fill_(pad_value(item))
        out[row, :, : item.shape[0]] = item.T.to(dtype)
    return out


def speech_bounds(stored) -> tuple[float, float]:
    """(start, end) in seconds of the speech in a stored clip: the first and last frames that stand clearly
    above the clip's silence, widened by a small margin and kept inside the clip."""
    frame_level = np.asarray(stored, dtype=np.float32).mean(axis=1)
    quietest, loudest = float(frame_level.min()), float(frame_level.max())
    loud = np.flatnonzero(frame_level > quietest + SPEECH_LEVEL * (loudest - quietest))
    duration = len(frame_level) * FRAME_SECONDS
    if loud.size == 0:
        return 0.0, duration
    start = max(0.0, loud[0] * FRAME_SECONDS - SPEECH_MARGIN_SECONDS)
    end = min(duration, (loud[-1] + 1) * FRAME_SECONDS + SPEECH_MARGIN_SECONDS)
    return start, end


class TimestampedLabels:
    """Turns a share of training batches into Whisper's timestamped form.

    The clips of such a batch are joined, up to PACK_MAX_CLIPS at a time and at most 30 s, one after another,
    and each clip becomes a segment `<|start|> text <|end|>` with its speech's times read off its log-mel
    (`speech_bounds`); `<|notimestamps|>` goes. Joining matters: long audio holds several sentences per 30 s
    window, and a model trained on one sentence per window learns to put a whole window into one subtitle.
    Which batches is fixed by a hash of their first clip's id, so a run, its resume and every DDP rank agree
    without sharing any state.
    """

    def __init__(self, tokenizer, share: float, pack_max_clips: int = PACK_MAX_CLIPS):
        self.share = share
        self.pack_max_clips = pack_max_clips
        self.no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
        self.first_timestamp = self.no_timestamps + 1
        self.end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def wanted(self, rows: list[dict]) -> bool:
        return zlib.crc32(str(rows[0]["id"]).encode("utf-8")) % 10_000 < self.share * 10_000

    def _timestamp(self, seconds: float, round_up: bool) -> int:
        steps = (math.ceil if round_up else math.floor)(round(seconds / TIMESTAMP_SECONDS, 6))
        return self.first_timestamp + min(steps, int(N_FRAMES * FRAME_SECONDS / TIMESTAMP_SECONDS))

    def _segment(self, row: dict, offset: float) -> list[int] | None:
        """<|start|> text <|end|> of one clip placed `offset` seconds into the window; None if its label is not
        the plain <|notimestamps|> form."""
        labels = [int(token) for token in row["labels"]]
        if self.no_timestamps not in labels or labels[-1:] != [self.end_of_text]:
            return None
        start, end = speech_bounds(row["input_features"])
        start_token = self._timestamp(offset + start, round_up=False)
        end_token = max(self._timestamp(offset + end, round_up=True), start_token + 1)
        return [start_token, *labels[labels.index(self.no_timestamps) + 1 : -1], end_token]

    def pack(self, rows: list[dict]) -> list[dict]:
        """The batch's clips joined into timestamped examples, in order, each within 30 s and the decoder's length."""
        packed, group, frames = [], [], 0
        for row in rows:
            if group and (len(group) == self.pack_max_clips or frames + len(row["input_features"]) > N_FRAMES):
                packed.append(self._join(group))
                group, frames = [], 0
            group.append(row)
            frames += len(row["input_features"])
        if group:
            packed.append(self._join(group))
        return [example for examples in packed for example in examples]

    def _join(self, group: list[dict]) -> list[dict]:
        labels = [int(token) for token in group[0]["labels"]]
        prefix = labels[: labels.index(self.no_timestamps)] if self.no_timestamps in labels else None
        segments, offset = [], 0.0
        for row in group:
            segment = self._segment(row, offset)
            if prefix is None or segment is None:
                return [dict(row) for row in group]  # not the label form this expects: leave the clips as they are
            segments += segment
            offset += len(row["input_features"]) * FRAME_SECONDS
        if len(prefix) + len(segments) + 1 > WHISPER_LABEL_POSITIONS:
            return [dict(row) for row in group]
        features = np.concatenate([np.asarray(row["input_features"]) for row in group])
        return [{"id": group[0]["id"], "input_features": features, "labels": [*prefix, *segments, self.end_of_text]}]


def label_ids(tokenizer, text: str) -> list[int]:
    """Token ids for training labels: the language/task prefix and text, without <|startoftranscript|>.

    The text gets a leading space, as Whisper writes every transcript: its byte-level BPE gives a word a
    different first token with the space (" 드디어" starts with "Ġëĵľë", "드디어" with "ëĵľë"). Labels
    without it train the model to open with a token form it never produces, and that garbled the first word
    of most real-speech dev clips ("드디어" -> "뒤에", "두디요") after 100 LoRA steps.
    """
    ids = tokenizer(" " + text.strip()).input_ids
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    return ids[1:] if ids and ids[0] == start else ids


class SpeechBatchCollator:
    """Pads stored features to the encoder window (30 s, or fitted to the batch) and labels with -100, which
    the loss ignores. With an augmenter (kowhisper.train.augment.WaveformAugmenter; training batches only), a clip it
    changes gets new log-mel features from its changed audio before anything else reads them, so timestamped labels
    follow a speed change."""

    def __init__(self, window=None, timestamps: TimestampedLabels | None = None, feature_dtype: torch.dtype = torch.float32,
                 augmenter=None, log_mel: LogMel | None = None):
        self.window = window or EncoderWindow()
        self.timestamps = timestamps
        self.feature_dtype = feature_dtype
        self.augmenter = augmenter
        self.log_mel = log_mel
        self.epoch = 0  # set by kowhisper.train.augment.AugmentEpochCallback

    def augmented(self, row: dict) -> dict:
        waveform = self.augmenter.apply(row[AUDIO_COLUMN], row["id"], self.epoch, CHUNK_SAMPLES)
        return row if waveform is None else {**row, "input_features": self.log_mel(waveform)}

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.augmenter is not None and "labels" in rows[0]:
            rows = [self.augmented(row) for row in rows]
        if self.timestamps is not None and "labels" in rows[0] and self.timestamps.wanted(rows):
            rows = self.timestamps.pack(rows)
        stored = [row["input_features"] for row in rows]
        frames = self.window.frames_for(max(len(item) for item in stored))
        features = pad_features(stored, frames, self.feature_dtype)
        # Whisper's encoder attends over the whole window and ignores this mask; SpecAugment reads it, so time
        # masks fall on the audio rather than the padding, and generate() stops warning that it has none.
        attention_mask = torch.zeros(features.shape[0], frames, dtype=torch.long)
        for index, item in enumerate(stored):
            attention_mask[index, : len(item)] = 1
        batch = {"input_features": features, "attention_mask": attention_mask}
        if "labels" in rows[0]:
            sequences = [row["labels"] for row in rows]
            labels = torch.full((len(rows), max(len(ids) for ids in sequences)), -100, dtype=torch.long)
            for index, ids in enumerate(sequences):
                labels[index, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            batch["labels"] = labels
        return batch


def dataset_features(n_mels: int = 80, keep_audio: bool = False):
    """The column types of a prepared split (datasets.Features). Only the first Array2D axis may vary. With keep_audio,
    the clip's 16 kHz int16 samples too, for training-time augmentation (kowhisper.train.augment)."""
    columns = {
        "id": Value("string"),
        "text": Value("string"),
        "duration": Value("float32"),
        "input_features": Array2D(shape=(None, n_mels), dtype="float16"),
        "labels": Sequence(Value("int32")),
    }
    if keep_audio:
        columns[AUDIO_COLUMN] = Sequence(Value("int16"))
    return Features(columns)
