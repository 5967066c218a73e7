"""The fitted encoder window's arithmetic: how many mel frames a batch is padded to. The patched encoder, training under
it and a run remembering its window are in tests/integration/test_encoder_window.py."""

from __future__ import annotations

import pytest

from kowhisper.families.whisper.encoder_window import EncoderWindow
from kowhisper.families.whisper.features import N_FRAMES

FIT = EncoderWindow("fit", tail_frames=50, round_frames=100)


def test_window_arithmetic():
    assert EncoderWindow().frames_for(250) == N_FRAMES
    assert FIT.frames_for(250) == 300  # 250 + 50 of tail
    assert FIT.frames_for(251) == 400  # rounded up to the next 100
    assert FIT.frames_for(2990) == N_FRAMES  # never past Whisper's own window
    assert EncoderWindow("fit", 0, 2).frames_for(301) == 302  # always even: two frames per encoder position
    with pytest.raises(ValueError, match="encoder_window='half'"):
        EncoderWindow("half")
    with pytest.raises(ValueError, match="round_frames=3"):
        EncoderWindow("fit", 10, 3)
