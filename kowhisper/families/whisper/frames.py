"""Whisper's time grid: 16 kHz audio in 10 ms log-mel frames, 3000 of them (30 s) to one encoder window.

Below both the stored features (kowhisper.families.whisper.features) and the encoder window (kowhisper.families.whisper.encoder_window),
which each need these numbers.
"""

from __future__ import annotations

from kowhisper.common.audio import SAMPLING_RATE

HOP_LENGTH = 160  # Whisper's 10 ms mel frame step
CHUNK_SECONDS = 30
CHUNK_SAMPLES = SAMPLING_RATE * CHUNK_SECONDS
N_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000
FRAME_SECONDS = HOP_LENGTH / SAMPLING_RATE  # 10 ms
