"""Long-form decoding's seek rule and whole-character text, on the tiny random Whisper (its tokenizer and engine are
whisper-base's): fast checks of the logic, whatever the model writes. The split for parallel workers is in
tests/unit/test_longform_planning.py; real speech through the real whisper-base in test_real_speech.py."""

from __future__ import annotations

import numpy as np
import pytest

from kowhisper.common.audio import SAMPLING_RATE
from kowhisper.families.whisper.longform import FRAMES_PER_TIMESTAMP, Stream, add_window, read_window

WINDOW_FRAMES = 3000


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from kowhisper.families.base import ModelSource
    from kowhisper.families.whisper.engines import Decoding, load_engine

    # A random model writes to the token cap; a small cap keeps its windows fast.
    return load_engine(ModelSource("merged", tiny_model_dir, "tiny"), Decoding("ko", max_new_tokens=24), backend="hf")


def time_token(engine, seconds: float) -> int:
    return engine.timestamp_begin + round(seconds / 0.02)


def text_ids(engine, text: str) -> list[int]:
    return engine.tokenizer(text, add_special_tokens=False).input_ids


def byte_ids(engine, data: bytes) -> list[int]:
    """One byte-level token per byte: how Whisper writes a rare syllable, and how a syllable gets split."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    char_of = bytes_to_unicode()
    return engine.tokenizer.convert_tokens_to_ids([char_of[byte] for byte in data])


def texts(engine, window) -> list[str]:
    return [engine.text_bytes(ids).decode("utf-8").strip() for _, _, ids in window.segments]


def test_an_unfinished_last_segment_is_decoded_again_from_its_start(engine):
    t = lambda s: time_token(engine, s)  # noqa: E731
    ids = [t(0), *text_ids(engine, " 첫 문장입니다."), t(4.2), t(4.2), *text_ids(engine, " 둘째 문장."), t(9.5), t(9.5),
           *text_ids(engine, " 셋째 문장이 창의 끝에서")]
    window = read_window(engine, ids, WINDOW_FRAMES)
    assert texts(engine, window) == ["첫 문장입니다.", "둘째 문장."]
    assert [(start, end) for start, end, _ in window.segments] == [(0.0, 4.2), (4.2, 9.5)]
    # The next window starts where the unfinished third sentence began, not at the window's end.
    assert window.consumed_frames == round(9.5 / 0.02) * FRAMES_PER_TIMESTAMP == 950


def test_audio_after_the_models_last_word_is_decoded_again_unless_it_is_only_a_moment(engine):
    t = lambda s: time_token(engine, s)  # noqa: E731
    ids = [t(0), *text_ids(engine, " 첫 문장."), t(4.0), t(4.0), *text_ids(engine, " 마지막 문장."), t(12.0)]
    window = read_window(engine, ids, WINDOW_FRAMES)
    assert texts(engine, window) == ["첫 문장.", "마지막 문장."]
    # The model stopped at 12 s of a 30 s window: a sentence starting in those 18 s would be lost, so they are read again.
    assert window.consumed_frames == 1200
    ids = [t(0), *text_ids(engine, " 첫 문장."), t(4.0), t(4.0), *text_ids(engine, " 마지막 문장."), t(29.4)]
    assert read_window(engine, ids, WINDOW_FRAMES).consumed_frames == WINDOW_FRAMES
    # The recording's last window heard the audio to its end: the model's stop stands, and a trailing pause is not
    # decoded on its own (a fine-tuned model may say its sentence again there).
    ids = [t(0), *text_ids(engine, " 마지막 문장."), t(3.0)]
    assert read_window(engine, ids, 1200, audio_goes_on=False).consumed_frames == 1200


def test_a_window_without_timestamps_is_one_segment_done_to_its_end(engine):
    window = read_window(engine, text_ids(engine, " 타임스탬프 없이 쓴 문장."), 1800)
    assert texts(engine, window) == ["타임스탬프 없이 쓴 문장."]
    assert window.segments[0][:2] == (0.0, 18.0) and window.consumed_frames == 1800


def test_after_a_loop_the_next_window_starts_at_the_loop(engine):
    t = lambda s: time_token(engine, s)  # noqa: E731
    loop = text_ids(engine, " 네") * 60  # cut by the token cap: no closing timestamp
    window = read_window(engine, [t(0), *text_ids(engine, " 좋은 아침입니다."), t(3.0), t(3.0), *loop], WINDOW_FRAMES)
    assert texts(engine, window) == ["좋은 아침입니다."] and window.consumed_frames == 300
    # A loop from the window's very start has nothing before it to keep: the window is done, never re-read forever.
    window = read_window(engine, [t(0), *loop], WINDOW_FRAMES)
    assert window.consumed_frames == WINDOW_FRAMES


def test_a_syllable_split_over_a_segment_boundary_is_joined_and_a_fragment_dropped(engine):
    t = lambda s: time_token(engine, s)  # noqa: E731
    gat = "같".encode()  # three bytes
    ids = [t(0), *text_ids(engine, " 나는"), *byte_ids(engine, gat[:2]), t(2.0), t(2.0), *byte_ids(engine, gat[2:]),
           *text_ids(engine, "다고 했다"), t(4.0), t(4.0), *text_ids(engine, " 끝"), *byte_ids(engine, gat[:1]), t(6.0)]
    window = read_window(engine, ids, WINDOW_FRAMES)
    stream = Stream(recording=0, end=WINDOW_FRAMES, seek=0)
    add_window(engine, stream, window, offset=0.0, stream_end=30.0)
    assert [segment.text for segment in stream.segments] == ["나는", "같다고 했다", "끝"]
    # The tokenizer itself would write U+FFFD for each half; the engine's decode never does.
    assert "\ufffd" in engine.tokenizer.decode(byte_ids(engine, gat[:2]))
    assert engine.decode([*text_ids(engine, " 같"), *byte_ids(engine, gat[:2])]) == "같"


def test_segment_times_stay_in_order_and_inside_the_audio(engine):
    t = lambda s: time_token(engine, s)  # noqa: E731
    stream = Stream(recording=0, end=2000, seek=0)
    # A looping model can write times backwards or past the audio's end.
    window = read_window(engine, [t(5.0), *text_ids(engine, " 가"), t(3.0), t(3.0), *text_ids(engine, " 나"), t(29.0)], 2000)
    add_window(engine, stream, window, offset=0.0, stream_end=20.0)
    assert [(s.start, s.end) for s in stream.segments] == [(5.0, 5.0), (5.0, 20.0)]


def test_long_audio_through_the_tiny_model_gives_ordered_segments_inside_the_audio(engine):
    from kowhisper.families.whisper.longform import transcribe_long

    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(SAMPLING_RATE * 70)).astype(np.float32)
    noise[SAMPLING_RATE * 40 : SAMPLING_RATE * 45] = 0.0  # digital silence is skipped, not decoded
    [transcript] = transcribe_long(engine, [noise], batch_size=4)
    times = [(s.start, s.end) for s in transcript.segments]
    assert all(0.0 <= start <= end <= 70.0 for start, end in times)
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:]))
    assert "\ufffd" not in transcript.text


# ---- prompts and hotwords ----------------------------------------------------------------------------------------


def prompted_engine(tiny_model_dir, **prompting):
    from kowhisper.common.transcript import Prompting
    from kowhisper.families.base import ModelSource
    from kowhisper.families.whisper.engines import Decoding, load_engine

    return load_engine(ModelSource("merged", tiny_model_dir, "tiny"), Decoding("ko", max_new_tokens=8, prompting=Prompting(**prompting)),
                       backend="hf")


def test_hotwords_go_before_every_window_and_the_initial_prompt_before_the_first(engine, tiny_model_dir):
    from kowhisper.common.transcript import Prompting

    prompted = prompted_engine(tiny_model_dir, initial_prompt="상담 내용입니다.", hotwords=("카카오뱅크", "5G"))
    prompting = prompted.decoding.prompting
    start = engine.prompt_ids(timestamps=True)
    first, later = prompted.context_ids(prompting, True), prompted.context_ids(prompting, False)
    startofprev = engine.tokenizer.convert_tokens_to_ids("<|startofprev|>")
    assert first[0] == later[0] == startofprev
    assert prompted.prompt_ids(True, first) == [*first, *start]
    assert engine.tokenizer.decode(first[1:]) == " 카카오뱅크 5G 상담 내용입니다."
    assert engine.tokenizer.decode(later[1:]) == " 카카오뱅크 5G"
    # No hotwords (an empty list) and no prompt: nothing before Whisper's own start.
    assert prompted.context_ids(Prompting(hotwords=()), True) == ()
    # A file's own prompt replaces the shared one; its hotwords come after the shared ones.
    own = prompting.with_file("통화 녹음", ["홍길동", "5G"])
    assert engine.tokenizer.decode(prompted.context_ids(own, True)[1:]) == " 카카오뱅크 5G 홍길동 통화 녹음"

    # The prompt is never part of what comes back: each row's ids start after <|startoftranscript|>'s sequence (and a
    # random model writes no special tokens before its text, so a leaked prompt would show as <|startofprev|>).
    generations = prompted.generate(torch_zeros_window(), timestamps=True, max_new_tokens=8, contexts=[first, later])
    assert len(generations) == 2 and all(startofprev not in generation.ids for generation in generations)


def torch_zeros_window():
    import torch

    return torch.zeros(2, 80, WINDOW_FRAMES)


def test_a_prompt_over_whispers_limit_is_trimmed_with_a_message(tiny_model_dir, caplog):
    from kowhisper.families.whisper.engines import MAX_PROMPT_TOKENS

    long_prompt = "고객님 요금제 변경 문의 감사합니다. " * 60
    prompted = prompted_engine(tiny_model_dir, initial_prompt=long_prompt, hotwords=("카카오뱅크",))
    with caplog.at_level("WARNING", logger="kowhisper"):
        context = prompted.context_ids(prompted.decoding.prompting, True)
    assert "Whisper reads at most 223 before a window" in caplog.text
    assert len(context) == 1 + MAX_PROMPT_TOKENS == 224
    assert prompted.tokenizer.decode(context[1:]).startswith(" 카카오뱅크")
    # The end of the prompt is kept (nearest the speech), and a window still decodes within Whisper's 448 positions.
    assert prompted.tokenizer.decode(context[1:]).rstrip().endswith("감사합니다.")
    assert len(prompted.generate(torch_zeros_window()[:1], timestamps=True, max_new_tokens=300)) == 1
