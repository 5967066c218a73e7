"""Word timestamps from Whisper's cross-attention, as openai/whisper and faster-whisper find them.

Some of the decoder's cross-attention heads (a model's `alignment_heads`, chosen by OpenAI for each size and carried
in generation_config.json and in a CTranslate2 export) look at the audio frames the token being written stands for.
With the text of a window fixed, the decoder reads it once more (teacher forcing) after Whisper's start of a
transcript; each head's attention over the window's 20 ms encoder frames is normalised per frame, median-filtered
along the frames and averaged over the heads, and dynamic time warping finds the monotonic path through that matrix
that best follows it: a path from the first text token at the window's start to the end token at the audio's end.
A token starts where the path first reaches its row, and ends where the next one starts.

CTranslate2 does all of this in `Whisper.align`; the transformers engine computes the same steps here
(`cross_attention_path`). Both return `TokenTiming`s: one per text token, times in seconds from the window's start,
and the probability the model gives the token in that reading.

Words are Korean eojeol: kowhisper.families.whisper.longform decodes the tokens to whole characters and splits the text
at spaces, each word keeping the tokens its letters and digits came in, so a word is never half a syllable and
"3개월" stays one word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Whisper's encoder halves the mel frames: one encoder frame per 20 ms.
SECONDS_PER_ENCODER_FRAME = 0.02
# openai/whisper's and CTranslate2's width of the median filter along the frames.
MEDIAN_FILTER_WIDTH = 7


@dataclass(frozen=True)
class TokenTiming:
    start: float
    end: float
    probability: float


def median_filter(weights: np.ndarray, width: int = MEDIAN_FILTER_WIDTH) -> np.ndarray:
    """Median over a sliding window of `width` along the last axis, the edges padded by reflection."""
    if weights.shape[-1] <= width // 2:
        return weights
    pad = [(0, 0)] * (weights.ndim - 1) + [(width // 2, width // 2)]
    padded = np.pad(weights, pad, mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path from cell (0, 0) to the last cell of `cost` (rows: tokens, columns: frames), moving
    one row, one column or both at a time; returned as (row indices, column indices) along the path.

    Filled one anti-diagonal at a time: every cell of diagonal d depends only on diagonals d-1 and d-2, so each
    diagonal is one vectorised step (a few milliseconds for 224 tokens by 1500 frames, instead of a Python loop per
    cell)."""
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf)
    total[0, 0] = 0.0
    # 0: from the diagonal, 1: from the row above (same frame, next token), 2: from the left (next frame, same token).
    came_from = np.zeros((rows + 1, cols + 1), np.int8)
    for diagonal in range(2, rows + cols + 1):
        i = np.arange(max(1, diagonal - cols), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        options = np.stack([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]])
        step = np.argmin(options, axis=0)
        total[i, j] = cost[i - 1, j - 1] + options[step, np.arange(len(i))]
        came_from[i, j] = step
    i, j, path = rows, cols, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = came_from[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    path.reverse()
    return np.array([p[0] for p in path]), np.array([p[1] for p in path])


def timings_from_path(token_rows: np.ndarray, frame_columns: np.ndarray, probabilities: list[float]) -> list[TokenTiming]:
    """TokenTimings of n text tokens from an alignment path over n + 1 rows (the text tokens, then the end token):
    a token starts at the frame where the path enters its row and ends where it enters the next row."""
    entered = np.pad(np.diff(token_rows), (1, 0), constant_values=1).astype(bool)
    times = frame_columns[entered] * SECONDS_PER_ENCODER_FRAME
    count = len(probabilities)
    if len(times) < count + 1:  # a path that never reached some rows: nothing to read from it
        return []
    return [TokenTiming(float(times[k]), float(times[k + 1]), float(probabilities[k])) for k in range(count)]


def cross_attention_path(head_weights: np.ndarray, audio_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The alignment path of one window from its alignment heads' attention: `head_weights` (heads, rows, encoder
    frames), one row per text token and one for the end token, each row a softmax over every encoder frame; only
    the first `audio_frames` encoder frames hold audio (the rest is padding or silence past the recording's end)."""
    weights = head_weights[:, :, :audio_frames].astype(np.float64)
    # The softmax again over the frames that hold audio, as if the padding had never been there.
    weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), 1e-12)
    # Per frame, standardised over the tokens: a frame every token looks at says nothing about which one it is.
    mean, std = weights.mean(axis=-2, keepdims=True), weights.std(axis=-2, keepdims=True)
    weights = (weights - mean) / np.maximum(std, 1e-12)
    matrix = median_filter(weights).mean(axis=0)
    return dtw_path(-matrix)
