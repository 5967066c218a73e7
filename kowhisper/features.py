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
storing it too would double it.
"""

from __future__ import annotations

import numpy as np
import torch

from kowhisper.audio import CHUNK_SAMPLES, HOP_LENGTH

N_FFT = 400
N_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000
# log10 of the 1e-10 power floor, rescaled as Whisper does: (-10 + 4) / 4.
SILENCE_FLOOR = -1.5


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


def pad_features(batch: list, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stored (frames, n_mels) arrays -> the (batch, n_mels, 3000) tensor Whisper's encoder takes."""
    stored = [torch.as_tensor(np.asarray(item)) for item in batch]
    n_mels = stored[0].shape[1]
    out = torch.empty(len(stored), n_mels, N_FRAMES, dtype=dtype)
    for row, frames in enumerate(stored):
        out[row].fill_(pad_value(frames))
        out[row, :, : frames.shape[0]] = frames.T.to(dtype)
    return out


def label_ids(tokenizer, text: str) -> list[int]:
    """Token ids for training labels: the language/task prefix and text, without <|startoftranscript|>."""
    ids = tokenizer(text).input_ids
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    return ids[1:] if ids and ids[0] == start else ids


class SpeechBatchCollator:
    """Pads stored features to 30 s and labels with -100 (ignored by the loss)."""

    def __init__(self, feature_dtype: torch.dtype = torch.float32):
        self.feature_dtype = feature_dtype

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        features = pad_features([row["input_features"] for row in rows], self.feature_dtype)
        # Whisper attends over the whole 30 s window, padding included, so every frame is "attended". Passing
        # the mask anyway stops generate() warning, on every evaluation, that it cannot infer one.
        batch = {"input_features": features, "attention_mask": torch.ones(features.shape[0], features.shape[-1], dtype=torch.long)}
        if "labels" in rows[0]:
            longest = max(len(row["labels"]) for row in rows)
            labels = torch.full((len(rows), longest), -100, dtype=torch.long)
            for index, row in enumerate(rows):
                labels[index, : len(row["labels"])] = torch.as_tensor(row["labels"], dtype=torch.long)
            batch["labels"] = labels
        return batch


def dataset_features(n_mels: int = 80):
    """The column types of a prepared split (datasets.Features). Only the first Array2D axis may vary."""
    from datasets import Array2D, Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "duration": Value("float32"),
            "input_features": Array2D(shape=(None, n_mels), dtype="float16"),
            "labels": Sequence(Value("int32")),
        }
    )
