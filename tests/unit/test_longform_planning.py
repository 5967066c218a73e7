"""Long-form decoding's plan on arrays alone: recordings split at their quietest moment until every parallel worker has a
part. The seek rule and the text of each window, on the tiny random Whisper, are in tests/integration/test_longform.py."""

from __future__ import annotations

import numpy as np

from kowhisper.common.audio import SAMPLING_RATE
from kowhisper.families.whisper.longform import plan_streams


def test_recordings_are_split_at_their_quietest_moment_until_every_worker_has_one():
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(SAMPLING_RATE * 150) / SAMPLING_RATE).astype(np.float32)
    tone[int(71.0 * SAMPLING_RATE) : int(71.5 * SAMPLING_RATE)] = 0.0  # a pause near the middle

    def spans(waveforms, workers):
        return [(s.recording, s.seek, s.end) for s in plan_streams(waveforms, workers)]

    assert spans([tone], 1) == [(0, 0, 15000)]
    [(_, start, cut), (_, cut_again, end)] = spans([tone], 2)
    assert start == 0 and end == 15000 and cut == cut_again and 7100 <= cut <= 7150
    # Too short for two parts that each fill a window: decoded whole.
    assert spans([tone[: 50 * SAMPLING_RATE]], 2) == [(0, 0, 5000)]
    # A long recording beside a short one: the long one is split, recordings and parts stay in order.
    short = tone[: 5 * SAMPLING_RATE]
    assert [(r, s) for r, s, _ in spans([short, tone], 3)] == [(0, 0), (1, 0), (1, cut)]
    assert len(spans([tone, tone], 2)) == 2
    # Nothing to decode (every file of a batch unreadable or silent) is no stream, not an error.
    assert spans([], 2) == []
