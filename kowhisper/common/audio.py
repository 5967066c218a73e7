"""Audio in: decode anything ffmpeg reads, downmix to mono, resample to the 16 kHz both model families take.

Decoding goes through torchcodec (FFmpeg underneath), which also resamples with FFmpeg's swresample, so
one call turns a 48 kHz stereo MP3 into 16 kHz mono. torchaudio is not used: its last release pins
torch 2.11 and does not import beside torch 2.13. Audio that arrives as an array (a datasets column) is
resampled with soxr, the resampler datasets itself uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soxr

SAMPLING_RATE = 16_000
INT16_SCALE = 32767
# The column of a prepared split holding each clip's 16 kHz int16 samples (CTC always; Whisper with keep_audio).
AUDIO_COLUMN = "audio"
# Headerless PCM (KsponSpeech's .pcm): 16-bit little-endian mono samples, the rate stated by the user (pcm_sample_rate).
PCM_SUFFIX = ".pcm"
PCM_SAMPLE_BYTES = 2
# KsponSpeech's official eval files end in one stray byte (their byte counts are odd; dropping the last byte gives the
# right samples). Any other odd-sized .pcm is taken as cut short.
_TRAILING_BYTE_ALLOWED = re.compile(r"KsponSpeech_E\d+\.pcm")


class AudioError(ValueError):
    """Audio that cannot be used. `kind` is 'missing', 'empty_audio', 'undecodable' or 'out_of_range' (a segment past the
    recording's end); the message says more."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def load_audio(source: str | Path | bytes, sampling_rate: int = SAMPLING_RATE, pcm_sample_rate: int = SAMPLING_RATE,
               start: float | None = None, end: float | None = None) -> np.ndarray:
    """Decode a file (or its bytes) to mono float32 at `sampling_rate`. A .pcm file is headerless 16-bit little-endian
    mono at `pcm_sample_rate`. With `start` and `end` (seconds), only that stretch: FFmpeg seeks to it, so a segment of
    a long recording costs its own length, not the recording's. Raises AudioError, never crashes."""
    return decode_audio(source, sampling_rate, pcm_sample_rate, start, end)[0]


def decode_audio(source: str | Path | bytes, sampling_rate: int = SAMPLING_RATE, pcm_sample_rate: int = SAMPLING_RATE,
                 start: float | None = None, end: float | None = None) -> tuple[np.ndarray, int]:
    """load_audio's waveform and the sample rate the input had (preparation reports the rates it met)."""
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() == PCM_SUFFIX:
        return resample(load_pcm(Path(source), pcm_sample_rate, start, end), pcm_sample_rate, sampling_rate), pcm_sample_rate
    # Here, not at the top: torchcodec loads torch (1-2 s), and kowhisper.common stays importable without it.
    from torchcodec.decoders import AudioDecoder

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioError("missing", f"missing audio file: {path}")
        if path.stat().st_size == 0:
            raise AudioError("empty_audio", f"empty audio file: {path}")
        source = str(path)
    elif not source:
        raise AudioError("empty_audio", "empty audio bytes")
    try:
        decoder = AudioDecoder(source, sample_rate=sampling_rate, num_channels=1)
        if start is not None and decoder.metadata.duration_seconds is not None:  # from the header: no decoding needed
            _check_range(start, end, decoder.metadata.duration_seconds)
        samples = decoder.get_all_samples() if start is None else decoder.get_samples_played_in_range(start, end)
    except AudioError:
        raise
    except Exception as error:  # torchcodec raises RuntimeError/ValueError subclasses depending on the failure
        raise AudioError("undecodable", f"undecodable audio: {_in_users_terms(error, source)}") from None
    waveform = samples.data.numpy()[0].astype(np.float32, copy=False)
    if start is not None:
        # FFmpeg returns what there is; a segment that ends well after the recording's end is a wrong time, not audio.
        _check_range(start, end, start + len(waveform) / sampling_rate)
    if waveform.size == 0:
        raise AudioError("empty_audio", "audio decodes to zero samples")
    return waveform, int(decoder.metadata.sample_rate or sampling_rate)


# A segment may end this far past the decoded audio: the last frame's rounding, not a wrong time.
RANGE_TOLERANCE_S = 0.05


def _check_range(start: float, end: float, available_until: float) -> None:
    if end > available_until + RANGE_TOLERANCE_S:
        raise AudioError("out_of_range", f"segment {start:.2f}-{end:.2f} s ends after the recording ({available_until:.2f} s)")


def load_pcm(path: Path, sample_rate: int = SAMPLING_RATE, start: float | None = None, end: float | None = None) -> np.ndarray:
    """The samples of a headerless 16-bit little-endian mono PCM file as float32 in [-1, 1], read straight from the
    file (no FFmpeg, no intermediate WAV); with `start` and `end`, only the bytes of that stretch. Raises AudioError
    for a missing, empty or cut-short file and a stretch past its end."""
    if not path.is_file():
        raise AudioError("missing", f"missing audio file: {path}")
    size = path.stat().st_size
    if size % PCM_SAMPLE_BYTES and not _TRAILING_BYTE_ALLOWED.fullmatch(path.name):
        raise AudioError("undecodable", f"{path.name} has an odd number of bytes ({size:,}) for 16-bit PCM: cut short? Copy it again")
    total = size // PCM_SAMPLE_BYTES
    first, count = 0, total
    if start is not None:
        _check_range(start, end, total / sample_rate)
        first = round(start * sample_rate)
        count = max(min(round(end * sample_rate), total) - first, 0)
    samples = np.fromfile(path, dtype="<i2", count=count, offset=first * PCM_SAMPLE_BYTES)
    if samples.size == 0:
        raise AudioError("empty_audio", f"empty audio file: {path}")
    return samples.astype(np.float32) / 32768.0


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """Samples as the workspace stores them (2 bytes each, lossless for audio decoded from 16-bit sources)."""
    return np.clip(np.round(np.asarray(waveform, dtype=np.float32) * INT16_SCALE), -INT16_SCALE - 1, INT16_SCALE).astype(np.int16)


def from_int16(samples) -> np.ndarray:
    return np.asarray(samples, dtype=np.float32) / INT16_SCALE


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int = SAMPLING_RATE) -> np.ndarray:
    """Mono float32 at target_sr from an array of shape (samples,) or (samples, channels)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 2:
        # datasets and soundfile give (samples, channels); a (channels, samples) array has few rows.
        waveform = waveform.mean(axis=0 if waveform.shape[0] < waveform.shape[1] else 1)
    if waveform.size == 0:
        raise AudioError("empty_audio", "audio has zero samples")
    if orig_sr == target_sr:
        return waveform
    return soxr.resample(waveform, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


# torchcodec starts its errors with the C++ class, source file and line that raised them ("SingleStreamDecoder,
# /__w/torchcodec/.../SingleStreamDecoder.cpp:52, "): nothing a user can act on.
_INTERNAL_LOCATION = re.compile(r"^\w+, \S+:\d+, ")
_OPEN_FAILURES = ("Could not open input file: ", "Failed to open input buffer: ")


def _in_users_terms(error: BaseException, source) -> str:
    """Why torchcodec could not decode `source`, in the user's terms: FFmpeg's own reason, without torchcodec's
    internals, and what the file probably is."""
    text = str(error).strip()
    if "best audio stream is unknown" in text:  # torchcodec's wording when the file has no audio stream at all
        return "it holds no audio stream (a picture, or a video without sound?)"
    text = _INTERNAL_LOCATION.sub("", text.splitlines()[0] if text else "")
    for failure in _OPEN_FAILURES:
        if text.startswith(failure):
            reason = text.removeprefix(failure)
            reason = reason.removeprefix(source).strip() if isinstance(source, str) else reason
            return f"FFmpeg cannot read it ({reason or 'no reason given'}): the file is damaged, cut short or not a recording"
    return text or "no reason given"
