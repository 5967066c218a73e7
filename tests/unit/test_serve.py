"""Transcription's checks that need no model: which files a list of paths and folders names, the token budget a clip of
a given length gets, a repetition loop told from Korean speech by its compression ratio, and inference.py's message when
the workspace, the run or the input is wrong. Transcription itself is in tests/integration/test_inference.py."""

from __future__ import annotations

import pytest


def test_files_folders_and_lists_are_collected(tmp_path):
    from kowhisper.serve.transcribe import collect_audio_paths

    folder = tmp_path / "calls"
    (folder / "day1").mkdir(parents=True)
    for name in ("day1/a.mp3", "b.WAV", "notes.md"):
        (folder / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# today's calls\ncalls/b.WAV\n\ncalls/missing.flac  # gone\n", encoding="utf-8")
    paths, problems = collect_audio_paths([str(folder), str(listing), str(tmp_path / "nope.mp3")])
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["calls/b.WAV", "calls/day1/a.mp3", "calls/b.WAV"]
    assert len(problems) == 2
    assert "missing.flac" in problems[0] and "nope.mp3" in problems[1]


def test_token_budget_follows_audio_length():
    from kowhisper.families.whisper.engines import Decoding

    decoding = Decoding("ko", max_new_tokens=225)
    assert decoding.tokens_for(2.0) == 70
    assert decoding.tokens_for(30.0) == 225
    assert decoding.tokens_for(0.0) >= 1


def test_cli_explains_what_is_wrong(tmp_path, capsys):
    import inference

    assert inference.main([f"workspace={tmp_path}", "adapter=no-such-run", "clip.mp3"]) == 2
    assert "'no-such-run' is neither a folder nor a run" in capsys.readouterr().err
    assert inference.main([f"workspace={tmp_path}", "clip.mp3"]) == 2
    assert "no base model in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inference.main([f"workspace={tmp_path}"])
    assert "nothing to do" in capsys.readouterr().err


def test_a_repetition_loop_is_told_from_korean_speech_by_its_compression_ratio():
    from kowhisper.families.whisper.longform import LOOP_COMPRESSION_RATIO, compression_ratio

    assert compression_ratio("새 " * 60) > LOOP_COMPRESSION_RATIO
    assert compression_ratio("그 눈가 흐는 " * 12) > LOOP_COMPRESSION_RATIO
    assert compression_ratio("국가로는 못한 훼이의 은퇴의 존 맥통의 원인다 그 은시의 도움이 그 시퍼도 피서 습니다") < LOOP_COMPRESSION_RATIO
    assert compression_ratio("") == 0.0


def test_a_files_sidecars_replace_the_shared_prompt_and_add_to_the_shared_hotwords(tmp_path):
    from kowhisper.common.transcript import Prompting
    from kowhisper.serve.transcribe import file_prompting

    shared = Prompting("고객센터 상담입니다.", ("5G",))
    call, other = tmp_path / "0412.wav", tmp_path / "0413.wav"
    (tmp_path / "0412.prompt.txt").write_text("홍길동 고객님 통화\n", encoding="utf-8")
    (tmp_path / "0412.hotwords.txt").write_text("# names in this call\n홍길동\n5G\n\n카카오뱅크  # bank\n", encoding="utf-8")
    assert file_prompting(call, shared) == Prompting("홍길동 고객님 통화", ("5G", "홍길동", "카카오뱅크"))
    assert file_prompting(other, shared) == shared
    assert not Prompting() and file_prompting(other, Prompting()) == Prompting()
