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
class Word:
    """One space-delimited word (a Korean eojeol, punctuation attached as written), its times in seconds and the
    model's probability for it (the mean over its tokens for Whisper, over its frames for CTC)."""

    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    # With word timestamps: the segment's words, in order, inside its times; " ".join of their words is `text`.
    words: list[Word] | None = None

    def keep_words_inside(self) -> None:
        """Word times made monotonic and held inside the segment's own times (which callers may have moved)."""
        previous_end = self.start
        for word in self.words or []:
            word.start = round(min(max(word.start, previous_end), self.end), 2)
            word.end = round(min(max(word.end, word.start), self.end), 2)
            previous_end = word.end


@dataclass
class Transcript:
    source: str
    duration: float
    text: str
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Prompting:
    """Text a recording is transcribed with, for models that take it (Whisper): `initial_prompt` before its first
    window, `hotwords` before every window. Empty: none."""

    initial_prompt: str = ""
    hotwords: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config) -> Prompting:
        """The shared prompting a config sets (initial_prompt, hotwords)."""
        return cls().with_file(config.initial_prompt, config.hotwords)

    def __bool__(self) -> bool:
        return bool(self.initial_prompt or self.hotwords)

    def with_file(self, prompt: str | None, hotwords: list[str]) -> Prompting:
        """This prompting for one file: its own prompt in place of the shared one, its own hotwords after the shared."""
        return Prompting(self.initial_prompt if prompt is None else prompt.strip(),
                         tuple(dict.fromkeys([*self.hotwords, *(word.strip() for word in hotwords if word.strip())])))


def is_silent(waveform: np.ndarray) -> bool:
    return waveform.size == 0 or float(np.max(np.abs(waveform))) < SILENCE_PEAK
