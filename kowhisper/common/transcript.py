"""What every model family's transcription gives back: a transcript of a recording and its timed segments.

It sits below both the family interface (kowhisper.families.base) and the CLI's file handling (kowhisper.serve.transcribe),
so neither imports the other for these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Peak amplitude below which audio holds no speech: about -60 dBFS, under any microphone's hiss floor for speech
# but above digital silence and dither.
SILENCE_PEAK = 1e-3


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
