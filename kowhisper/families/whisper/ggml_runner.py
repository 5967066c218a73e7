"""A whisper.cpp model file run through pywhispercpp, as a Recognizer: how the export check scores a --export-ggml file on
the workspace's dev split with whisper.cpp itself, the runtime it ships for.

whisper.cpp computes its own log-mel from the audio, so it reads the 16 kHz audio a prepared split keeps beside the
features (keep_audio, on by default). It decodes greedily without its temperature fallback, so a score is the same on
every run, and always at the full 30 s encoder window: a model fine-tuned on fitted windows runs there as whisper.cpp
will run it for users, which is what the check is for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kowhisper.common.audio import SAMPLING_RATE, from_int16
from kowhisper.common.transcript import Segment, Transcript
from kowhisper.families.base import ModelError, Recognizer, cpu_threads

# pywhispercpp's segment times are in whisper.cpp's 10 ms units.
SECONDS_PER_TICK = 0.01


class WhisperCppRecognizer(Recognizer):
    def __init__(self, model_file: Path, language: str):
        from pywhispercpp.model import Model  # here: the C library loads only when a GGML file is run

        self.model = Model(str(model_file), n_threads=cpu_threads(), language=language, temperature_inc=0.0,
                           print_progress=False, print_realtime=False)
        self.description = f"whisper.cpp {Path(model_file).stem.removeprefix('ggml-model-')} (pywhispercpp)"
        self.settings = "encoder window 30 s (whisper.cpp's)"

    def transcribe_prepared(self, rows: list[dict]) -> list[str]:
        if any("audio" not in row for row in rows):
            raise ModelError("this split holds no audio (prepared with keep_audio=false): whisper.cpp computes its own "
                             "features from the audio, so it cannot be scored on it")
        return [self._text(from_int16(row["audio"])) for row in rows]

    def transcribe_waveforms(self, waveforms, *, batch_size, sources=None, bar=None, promptings=None,
                             word_timestamps=False) -> list[Transcript]:
        if word_timestamps:
            raise ModelError("word timestamps are not read from whisper.cpp here; use inference.py with the model it came from")
        transcripts = []
        for index, waveform in enumerate(waveforms):
            segments = [Segment(round(s.t0 * SECONDS_PER_TICK, 2), round(s.t1 * SECONDS_PER_TICK, 2), s.text.strip())
                        for s in self._segments(waveform) if s.text.strip()]
            transcripts.append(Transcript(sources[index] if sources else f"audio {index}", round(len(waveform) / SAMPLING_RATE, 3),
                                          " ".join(segment.text for segment in segments), segments))
            if bar is not None:
                bar.update(len(waveform) / SAMPLING_RATE)
        return transcripts

    def _text(self, waveform: np.ndarray) -> str:
        # whisper.cpp's segments carry their own leading spaces; a segment may end inside a word.
        return "".join(s.text for s in self._segments(waveform)).strip()

    def _segments(self, waveform: np.ndarray) -> list:
        """whisper.cpp's segments (text, t0, t1) of a 16 kHz waveform."""
        return self.model.transcribe(np.ascontiguousarray(waveform, dtype=np.float32))
