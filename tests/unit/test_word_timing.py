"""Word timestamps without a model: the alignment path through an attention matrix, token times read off it, Korean
words (eojeol) from tokens, subtitle cues cut at words, and what json carries. Word times of real whisper-base on real
speech are tested in tests/integration/test_word_timestamps.py."""

from __future__ import annotations

import json

import numpy as np


def test_the_alignment_path_follows_the_cheapest_monotonic_route():
    from kowhisper.families.whisper.alignment import dtw_path

    # Three tokens over ten frames; token 0 is cheap on frames 0-2, token 1 on 3-6, token 2 on 7-9.
    cost = np.ones((3, 10))
    for row, frames in enumerate([range(0, 3), range(3, 7), range(7, 10)]):
        cost[row, list(frames)] = 0.0
    rows, columns = dtw_path(cost)
    assert (rows[0], columns[0]) == (0, 0) and (rows[-1], columns[-1]) == (2, 9)
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(columns) >= 0)
    assert np.all((np.diff(rows) + np.diff(columns)) >= 1)
    assert [int(columns[rows == row].min()) for row in range(3)] == [0, 3, 7]
    assert cost[rows, columns].sum() == 0


def test_token_times_are_where_the_path_enters_each_row():
    from kowhisper.families.whisper.alignment import SECONDS_PER_ENCODER_FRAME, timings_from_path

    # Two text tokens and the end token: rows entered at frames 5, 20 and 40.
    rows = np.array([0] * 15 + [1] * 20 + [2] * 5)
    columns = np.arange(5, 45)
    timings = timings_from_path(rows, columns, [0.9, 0.5])
    assert [(t.start, t.end, t.probability) for t in timings] == [
        (5 * SECONDS_PER_ENCODER_FRAME, 20 * SECONDS_PER_ENCODER_FRAME, 0.9),
        (20 * SECONDS_PER_ENCODER_FRAME, 40 * SECONDS_PER_ENCODER_FRAME, 0.5)]
    assert timings_from_path(np.array([0, 0]), np.array([0, 1]), [0.9, 0.5]) == []  # the path never reached row 1


def test_the_median_filter_removes_a_one_frame_spike_and_keeps_a_step():
    from kowhisper.families.whisper.alignment import median_filter

    signal = np.array([[0, 0, 0, 9, 0, 0, 0, 1, 1, 1, 1, 1]], dtype=float)
    filtered = median_filter(signal, 3)
    assert filtered.shape == signal.shape
    assert filtered[0, 3] == 0 and list(filtered[0, 8:]) == [1, 1, 1, 1]


def test_cross_attention_that_moves_along_the_frames_gives_increasing_token_times():
    from kowhisper.families.whisper.alignment import cross_attention_path, timings_from_path

    # Two heads attending to frames 10-19 for token 0, 30-39 for token 1 and 60-69 for the end token; padding after 80.
    weights = np.full((2, 3, 1500), 1e-4)
    for row, first in enumerate([10, 30, 60]):
        weights[:, row, first : first + 10] = 1.0
    timings = timings_from_path(*cross_attention_path(weights, audio_frames=80), [1.0, 1.0])
    assert len(timings) == 2
    assert timings[0].start <= timings[0].end <= timings[1].start < timings[1].end <= 80 * 0.02
    assert 0.2 <= timings[1].start <= 0.6 and 0.6 <= timings[1].end <= 1.2


def test_words_are_space_delimited_eojeol_timed_by_their_spoken_characters():
    from kowhisper.families.whisper.longform import split_words

    # "3개월 뒤에요." over tokens: "3" (0), "개" (1), "월" (2), " 뒤" (3), "에요" (4), "." (5).
    characters = [("3", 0), ("개", 1), ("월", 2), (" ", 3), ("뒤", 3), ("에", 4), ("요", 4), (".", 5)]
    words = split_words(characters)
    assert [text for text, _ in words] == ["3개월", "뒤에요."]
    assert words[0][1] == [0, 1, 2]
    assert words[1][1] == [3, 4, 4], "the full stop's token is not heard: it does not stretch the word's end"
    assert split_words([("…", 7)]) == [("…", [7])]
    assert split_words([(" ", 0), (" ", 1)]) == []


def test_words_are_kept_in_order_inside_their_segment():
    from kowhisper.common.transcript import Segment, Word

    segment = Segment(1.0, 3.0, "가 나 다", [Word(0.5, 1.5, "가", 0.9), Word(1.2, 2.0, "나", 0.8), Word(2.5, 3.6, "다", 0.7)])
    segment.keep_words_inside()
    assert [(w.start, w.end) for w in segment.words] == [(1.0, 1.5), (1.5, 2.0), (2.5, 3.0)]


def test_srt_cues_are_cut_at_words_and_json_carries_words_only_when_timed():
    from kowhisper.common.transcript import Segment, Transcript, Word
    from kowhisper.serve.transcribe import to_json, to_srt

    words = [Word(0.0, 0.4, "오늘은", 0.9), Word(0.5, 0.9, "날씨가", 0.9), Word(1.0, 1.6, "정말", 0.9), Word(1.7, 2.5, "좋습니다.", 0.9)]
    timed = Transcript("a.wav", 3.0, "오늘은 날씨가 정말 좋습니다.", [Segment(0.0, 2.5, "오늘은 날씨가 정말 좋습니다.", words)])
    srt = to_srt(timed, max_chars=8)
    assert "00:00:00,000 --> 00:00:00,900\n오늘은 날씨가\n" in srt
    assert "00:00:01,000 --> 00:00:02,500\n정말 좋습니다.\n" in srt
    assert to_srt(timed) == "1\n00:00:00,000 --> 00:00:02,500\n오늘은 날씨가 정말 좋습니다.\n"
    assert json.loads(to_json(timed))["segments"][0]["words"][3] == {"start": 1.7, "end": 2.5, "word": "좋습니다.", "probability": 0.9}
    plain = Transcript("a.wav", 3.0, "오늘은", [Segment(0.0, 0.4, "오늘은")])
    assert "words" not in json.loads(to_json(plain))["segments"][0]
    assert to_srt(plain, max_chars=8) == "1\n00:00:00,000 --> 00:00:00,400\n오늘은\n"


def test_ctc_words_carry_the_span_and_mean_probability_of_their_frames():
    from kowhisper.families.ctc.recognizer import words_from_frames

    vocabulary = ["<pad>", "<unk>", "|", "가", "나"]
    ids = np.array([3, 3, 0, 4, 2, 2, 0, 3])
    probabilities = np.array([0.9, 0.7, 0.99, 0.5, 0.8, 0.8, 0.99, 0.6])
    words = words_from_frames(ids, np.arange(8) * 0.02, probabilities, 0.02, vocabulary, pad=0, unk=1)
    assert [(w.word, round(w.start, 2), round(w.end, 2)) for w in words] == [("가나", 0.0, 0.08), ("가", 0.14, 0.16)]
    assert words[0].probability == round((0.9 + 0.7 + 0.5) / 3, 3) and words[1].probability == 0.6
