"""Whisper transcribing: prepared rows for evaluation, and audio of any length for inference.py and the demo.

Prepared rows (clips of at most 30 s) are decoded in the batches the caller gives, without timestamps, each
batch padded to the window the model was trained with. Audio of any length goes through the long-form decoder
(kowhisper.families.whisper.longform), which seeks through it window by window with timestamps; short files are the
one-window case of the same decode, so every output format of inference.py comes from it.
"""

from __future__ import annotations

from kowhisper.common.transcript import Transcript
from kowhisper.families.base import Recognizer
from kowhisper.families.whisper.engines import WhisperEngine
from kowhisper.families.whisper.features import pad_features
from kowhisper.families.whisper.longform import generate_without_loops, transcribe_long


class WhisperRecognizer(Recognizer):
    takes_prompts = True

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
        return [self.engine.decode(row.ids) for row in generated]

    def transcribe_waveforms(self, waveforms, *, batch_size, sources=None, bar=None, promptings=None,
                             word_timestamps=False) -> list[Transcript]:
        return transcribe_long(self.engine, waveforms, batch_size=batch_size, sources=sources, bar=bar, promptings=promptings,
                               word_timestamps=word_timestamps)
