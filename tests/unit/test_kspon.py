"""KsponSpeech as AI Hub ships it: transcription marks, encodings, .trn lines, PCM sizes and the folder layout.

The transcripts are lines of the kind the release holds (examples from the ESPnet, KoSpeech and Lhotse recipes' docs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kowhisper.online.kspon import (
    MARKS,
    NOTATIONS,
    KsponError,
    check_pcm_size,
    clean_transcript,
    find_layout,
    iter_folder,
    iter_split,
    parse_trn_line,
    pcm_frame_count,
    read_transcript_bytes,
)

KOSPEECH_EXAMPLE = "b/ 아/ 모+ 몬 소리야 (70%)/(칠 십 퍼센트) 확률이라니 n/"


def clean(raw: str, notation: str = "spelling") -> str:
    return clean_transcript(raw, notation).text


# --- dual transcription -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "spelling", "pronunciation"),
    [
        (KOSPEECH_EXAMPLE, "아 모 몬 소리야 70% 확률이라니", "아 모 몬 소리야 칠 십 퍼센트 확률이라니"),
        ("어/ 내가 (1시)/(한 시)에 갔는데", "어 내가 1시에 갔는데", "어 내가 한 시에 갔는데"),
        (
            "그럼 (20년)/(이십 년) 전+ 전처럼 이메일로 l/ 소통하면 되잖아. l/",
            "그럼 20년 전 전처럼 이메일로 소통하면 되잖아.",
            "그럼 이십 년 전 전처럼 이메일로 소통하면 되잖아.",
        ),
        (
            "응/ 발자국 소리만 들려도 짖는데. (내가)/(내) 짖지 마 하면은 또",
            "응 발자국 소리만 들려도 짖는데. 내가 짖지 마 하면은 또",
            "응 발자국 소리만 들려도 짖는데. 내 짖지 마 하면은 또",
        ),
        ("(뭐+ 뭔)/(모+ 몬) 소리야", "뭐 뭔 소리야", "모 몬 소리야"),
    ],
)
def test_dual_transcription_keeps_the_chosen_side(raw, spelling, pronunciation):
    assert clean(raw, "spelling") == spelling
    assert clean(raw, "pronunciation") == pronunciation
    assert clean_transcript(raw, "spelling").marks["dual"] == 1


def test_dual_pair_next_to_punctuation():
    raw = "좀 (SRT)/(에스알티)를 타면서까지? 그게 (3시)/(세 시)."
    assert clean(raw) == "좀 SRT를 타면서까지? 그게 3시."
    assert clean(raw, "pronunciation") == "좀 에스알티를 타면서까지? 그게 세 시."


def test_spaces_around_and_inside_the_pair():
    assert clean("(70%) / ( 칠 십  퍼센트 ) 확률", "pronunciation") == "칠 십 퍼센트 확률"
    assert clean("(70%) / ( 칠 십  퍼센트 ) 확률") == "70% 확률"


def test_nested_pair_resolves_inside_the_kept_side():
    raw = "((70%)/(칠십 퍼센트) 정도)/(칠십 퍼센트 정도) 될걸"
    spelling = clean_transcript(raw, "spelling")
    assert spelling.text == "70% 정도 될걸"
    assert spelling.marks["dual"] == 2 and spelling.marks["malformed"] == 0
    assert clean(raw, "pronunciation") == "칠십 퍼센트 정도 될걸"


def test_slash_inside_a_pair_is_content_not_a_filler_mark():
    assert clean("(1/2)/(이 분의 일) 정도") == "1/2 정도"
    assert clean("(A/S)/(에이 에스) 받으러 갔는데") == "A/S 받으러 갔는데"


def test_default_notation_is_spelling_and_unknown_one_is_refused():
    assert NOTATIONS == ("spelling", "pronunciation")
    assert clean_transcript("(70%)/(칠 십 퍼센트)").text == "70%"
    with pytest.raises(KsponError, match="notation"):
        clean_transcript("그래", "phonetic")


# --- malformed parentheses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(그래)/(그래 알았어", "그래 그래 알았어"),  # the pronunciation side never closed
        ("그래 알았어)", "그래 알았어"),  # never opened
        ("(그래 알았어", "그래 알았어"),
        ("(그래) 알았어", "그래 알았어"),  # a group without its pair
        (")(", ""),
    ],
)
def test_malformed_parentheses_keep_the_text_and_are_counted(raw, expected):
    for notation in NOTATIONS:
        result = clean_transcript(raw, notation)
        assert result.text == expected
        assert result.marks["malformed"] >= 1


def test_pair_missing_its_slash_is_resolved_and_counted():
    result = clean_transcript("(3시)(세 시)에 보자", "pronunciation")
    assert result.text == "세 시에 보자"
    assert result.marks["dual"] == 1 and result.marks["malformed"] == 1


# --- tags and word marks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["b/", "l/", "o/", "n/"])
def test_noise_tags_are_removed_and_counted(tag):
    result = clean_transcript(f"{tag} 사람 있어요 {tag}", "spelling")
    assert result.text == "사람 있어요"
    assert result.marks[tag] == 2
    assert not result.unintelligible


def test_noise_tag_glued_to_a_word():
    assert clean("그래서l/ 내가 갔지") == "그래서 내가 갔지"


def test_unintelligible_speech_is_removed_and_flagged():
    result = clean_transcript("u/ 그래서 거기 갔는데 u/", "spelling")
    assert result.text == "그래서 거기 갔는데"
    assert result.marks["u/"] == 2
    assert result.unintelligible
    assert not clean_transcript("그래서 거기 갔는데", "spelling").unintelligible


def test_filler_keeps_the_word():
    result = clean_transcript("아/ 몬 소리야, 그건 또. b/", "spelling")
    assert result.text == "아 몬 소리야, 그건 또."
    assert result.marks["filler /"] == 1 and result.marks["b/"] == 1
    assert clean("음/ 어/ 그러니까") == "음 어 그러니까"


def test_latin_word_before_a_filler_slash_keeps_its_last_letter():
    assert clean("yeah/ 그래서") == "yeah 그래서"  # not read as the noise tag h/... nor n/, o/ inside words
    assert clean("no/ 아니야") == "no 아니야"


@pytest.mark.parametrize("raw, text, mark", [
    ("모+ 몬 소리야", "모 몬 소리야", "repeat +"),  # a repetition keeps the word
    ("그 사람이 씨* 뭐라고", "그 사람이 씨 뭐라고", "unclear *"),  # an unclear word loses its mark
])
def test_repetition_and_unclear_marks_keep_the_word(raw, text, mark):
    result = clean_transcript(raw, "spelling")
    assert result.text == text
    assert result.marks[mark] == 1


def test_marks_glued_to_the_next_word_become_a_space():
    assert clean("모+몬 소리야") == "모 몬 소리야"
    assert clean("아/그래서") == "아 그래서"




def test_percent_is_kept_in_both_notations():
    assert clean("한 70% 정도") == "한 70% 정도"
    assert clean("한 70% 정도", "pronunciation") == "한 70% 정도"


def test_stray_punctuation_and_symbols_are_removed():
    result = clean_transcript(". 그래 , 알았어 ~ #", "spelling")
    assert result.text == "그래 알았어"
    assert result.marks["stray punctuation"] == 2
    assert result.marks["other symbol"] == 2
    assert clean('"진짜"? .그거') == "진짜? 그거"
    assert clean("그래~알았어 남·북") == "그래 알았어 남 북"


def test_symbols_between_digits_or_latin_letters_are_content():
    assert clean("3:30에 R&D 팀이랑") == "3:30에 R&D 팀이랑"


def test_only_marks_leave_an_empty_text():
    result = clean_transcript("b/ n/ l/", "spelling")
    assert result.text == ""
    assert clean("") == ""
    assert clean("   ") == ""


def test_text_is_nfc_with_single_spaces():
    decomposed = "\u1100\u1161\u11a8 아/\t\t그래\n"  # 각 in jamo, tabs and a newline
    assert clean(decomposed) == "각 아 그래"


def test_every_counted_mark_is_a_documented_key():
    raw = "b/ l/ o/ n/ u/ 아/ 모+ 씨* (1시)/(한 시) . # (그래"
    assert set(clean_transcript(raw, "spelling").marks) <= set(MARKS)


# --- encodings ------------------------------------------------------------------------------------------------


def test_cp949_transcript():
    text = "아/ 몬 소리야, 그건 또. b/"
    assert read_transcript_bytes(text.encode("cp949")) == text


def test_cp949_beyond_euc_kr():
    text = "똠방각하 햏 (70%)/(칠 십 퍼센트)"  # 똠, 햏 are in CP949 but not in EUC-KR
    assert read_transcript_bytes(text.encode("cp949")) == text


def test_utf8_with_and_without_bom():
    text = "어/ 일단은 억지로 과장해서"
    assert read_transcript_bytes(text.encode("utf-8")) == text
    assert read_transcript_bytes(b"\xef\xbb\xbf" + text.encode("utf-8")) == text


def test_bytes_neither_decodes_are_refused():
    with pytest.raises(KsponError, match="KsponSpeech_000001.txt.*neither UTF-8 nor CP949"):
        read_transcript_bytes(b"\xff\xfe\xfa", where="KsponSpeech_000001.txt")
    with pytest.raises(KsponError, match="NUL"):
        read_transcript_bytes("ok. b/".encode("utf-16-le"))  # Latin text saved as UTF-16 still decodes as UTF-8


# --- .trn lines -----------------------------------------------------------------------------------------------


def test_trn_line():
    line = "KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm :: 아/ 몬 소리야, 그건 또. b/\r\n"
    assert parse_trn_line(line, "train.trn:1") == (
        "KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm",
        "아/ 몬 소리야, 그건 또. b/",
    )
    eval_line = "KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm :: 어/ 일단은 억지로 과장해서"
    assert parse_trn_line(eval_line, "eval_clean.trn:1")[0] == "KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm"


def test_trn_line_text_may_hold_colons_and_be_empty():
    assert parse_trn_line("a.pcm :: 3:30 :: 에", "x:1") == ("a.pcm", "3:30 :: 에")
    assert parse_trn_line("a.pcm ::", "x:1") == ("a.pcm", "")


def test_trn_line_without_separator_names_file_and_line():
    with pytest.raises(KsponError, match=r"train\.trn:3: expected 'path :: text'"):
        parse_trn_line("KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000003.pcm 그래서", "train.trn:3")
    with pytest.raises(KsponError, match="dev.trn:7"):
        parse_trn_line(" :: 그래서", "dev.trn:7")


# --- PCM ------------------------------------------------------------------------------------------------------


def test_pcm_duration_from_size(tmp_path):
    pcm = tmp_path / "KsponSpeech_000001.pcm"
    pcm.write_bytes(b"\x00\x00" * 16000 * 3)
    assert check_pcm_size(pcm) == pytest.approx(3.0)
    assert pcm_frame_count(7) == 3


def test_odd_train_pcm_is_cut_short(tmp_path):
    pcm = tmp_path / "KsponSpeech_000123.pcm"
    pcm.write_bytes(b"\x00" * 12345)
    with pytest.raises(KsponError, match=r"KsponSpeech_000123\.pcm has an odd number of bytes \(12345\): cut short\? Copy it again"):
        check_pcm_size(pcm)


def test_odd_eval_pcm_has_one_stray_byte(tmp_path):
    pcm = tmp_path / "KsponSpeech_E00016.pcm"
    pcm.write_bytes(b"\x00\x00" * 8000 + b"\x7f")
    assert check_pcm_size(pcm) == pytest.approx(0.5)


def test_empty_or_missing_pcm(tmp_path):
    empty = tmp_path / "KsponSpeech_000002.pcm"
    empty.write_bytes(b"")
    with pytest.raises(KsponError, match="empty"):
        check_pcm_size(empty)
    with pytest.raises(KsponError, match="cannot read"):
        check_pcm_size(tmp_path / "KsponSpeech_000003.pcm")


# --- layout ---------------------------------------------------------------------------------------------------

TRAIN_LINES = [
    ("KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm", "아/ 몬 소리야, 그건 또. b/"),
    ("KsponSpeech_02/KsponSpeech_0125/KsponSpeech_124001.pcm", "b/ 아/ 모+ 몬 소리야 (70%)/(칠 십 퍼센트) 확률이라니 n/"),
]
DEV_LINES = [("KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000002.pcm", "음/ 그래서 (1시)/(한 시)에 봐")]
EVAL_LINES = {
    "eval_clean": [("KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm", "어/ 일단은 억지로 과장해서")],
    "eval_other": [("KsponSpeech_eval/eval_other/KsponSpeech_E03001.pcm", "응/ 발자국 소리만 들려도 짖는데.")],
}


def make_release(base: Path, *, scripts: bool = True, trn_encoding: str = "utf-8", eval_parent: bool = True) -> Path:
    """A miniature of the release: audio with its .txt beside it (CP949 and UTF-8 mixed), and the split lists."""
    every = [*TRAIN_LINES, *DEV_LINES, *EVAL_LINES["eval_clean"], *EVAL_LINES["eval_other"]]
    for n, (relative, text) in enumerate(every):
        if not eval_parent:
            relative = relative.removeprefix("KsponSpeech_eval/")
        pcm = base / relative
        pcm.parent.mkdir(parents=True, exist_ok=True)
        pcm.write_bytes(b"\x01\x00" * 1600 + (b"\x00" if "_E" in pcm.name else b""))
        pcm.with_suffix(".txt").write_bytes(text.encode("cp949" if n % 2 else "utf-8"))
    if scripts:
        folder = base / "KsponSpeech_scripts"
        folder.mkdir()
        for split, lines in (("train", TRAIN_LINES), ("dev", DEV_LINES), *EVAL_LINES.items()):
            body = "".join(f"{path} :: {text}\n" for path, text in lines)
            (folder / f"{split}.trn").write_bytes(body.encode(trn_encoding))
    return base


def test_layout_of_the_release(tmp_path):
    root = make_release(tmp_path / "KsponSpeech")
    layout = find_layout(root)
    assert sorted(layout.parts) == ["KsponSpeech_01", "KsponSpeech_02"]
    assert layout.parts["KsponSpeech_02"] == root / "KsponSpeech_02"
    assert layout.eval_sets == {s: root / "KsponSpeech_eval" / s for s in ("eval_clean", "eval_other")}
    assert set(layout.scripts) == {"train", "dev", "eval_clean", "eval_other"}
    assert "KsponSpeech_01" in layout.describe() and "train.trn" in layout.describe()


def test_layout_found_from_a_parent_folder(tmp_path):
    make_release(tmp_path / "한국어 음성" / "KsponSpeech")
    layout = find_layout(tmp_path)
    assert layout.parts["KsponSpeech_01"] == tmp_path / "한국어 음성" / "KsponSpeech" / "KsponSpeech_01"


def test_doubly_nested_part_folder(tmp_path):
    session = tmp_path / "KsponSpeech_01" / "KsponSpeech_01" / "KsponSpeech_0001"
    session.mkdir(parents=True)
    assert find_layout(tmp_path).parts == {"KsponSpeech_01": tmp_path / "KsponSpeech_01" / "KsponSpeech_01"}


def test_iter_split_maps_trn_paths_onto_the_folders(tmp_path):
    root = make_release(tmp_path, trn_encoding="cp949")
    layout = find_layout(root)
    rows = list(iter_split(layout, "train"))
    assert [(id_, raw) for id_, _, raw in rows] == [
        ("KsponSpeech_000001", TRAIN_LINES[0][1]),
        ("KsponSpeech_124001", TRAIN_LINES[1][1]),
    ]
    assert all(pcm.is_file() for _, pcm, _ in rows)
    [(id_, pcm, raw)] = iter_split(layout, "eval_clean")
    assert (id_, pcm) == ("KsponSpeech_E00001", root / "KsponSpeech_eval" / "eval_clean" / "KsponSpeech_E00001.pcm")
    assert clean(raw) == "어 일단은 억지로 과장해서"
    assert check_pcm_size(pcm) == pytest.approx(0.1)
    [(_, dev_pcm, _)] = iter_split(layout, "dev")
    assert dev_pcm == root / "KsponSpeech_01" / "KsponSpeech_0001" / "KsponSpeech_000002.pcm"


def test_eval_folders_without_their_parent(tmp_path):
    """Lhotse's layout: eval_clean/ and eval_other/ straight in the root, while the .trn still says KsponSpeech_eval/."""
    root = make_release(tmp_path, eval_parent=False)
    [(_, pcm, _)] = iter_split(find_layout(root), "eval_other")
    assert pcm == root / "eval_other" / "KsponSpeech_E03001.pcm" and pcm.is_file()


def test_iter_split_errors(tmp_path):
    root = make_release(tmp_path)
    layout = find_layout(root)
    with pytest.raises(KsponError, match="not 'test'"):
        list(iter_split(layout, "test"))
    (root / "KsponSpeech_scripts" / "dev.trn").write_text(
        "KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000002.pcm :: 그래\n\nKsponSpeech_01/KsponSpeech_0001/x.pcm 그래\n",
        encoding="utf-8",
    )
    with pytest.raises(KsponError, match=r"dev\.trn:3: expected 'path :: text'"):
        list(iter_split(layout, "dev"))
    (root / "KsponSpeech_scripts" / "dev.trn").write_text("KsponSpeech_05/KsponSpeech_0600/KsponSpeech_600000.pcm :: 그래\n")
    with pytest.raises(KsponError, match="no KsponSpeech_05 folder"):
        list(iter_split(layout, "dev"))
    (root / "KsponSpeech_scripts" / "dev.trn").write_text("../../etc/passwd :: 그래\n")
    with pytest.raises(KsponError, match="not a path inside the release"):
        list(iter_split(layout, "dev"))


def test_without_scripts_the_folders_are_read(tmp_path):
    root = make_release(tmp_path, scripts=False)
    layout = find_layout(root)
    assert layout.scripts == {}
    with pytest.raises(KsponError, match="no train.trn.*KsponSpeech_scripts"):
        list(iter_split(layout, "train"))
    rows = list(iter_folder(layout))
    assert [id_ for id_, _, _ in rows] == [
        "KsponSpeech_000001", "KsponSpeech_000002", "KsponSpeech_124001", "KsponSpeech_E00001", "KsponSpeech_E03001",
    ]
    texts = {id_: raw for id_, _, raw in rows}
    assert texts["KsponSpeech_124001"] == TRAIN_LINES[1][1]  # the CP949 one
    assert texts["KsponSpeech_E00001"] == EVAL_LINES["eval_clean"][0][1]
    assert [id_ for id_, _, _ in iter_folder(layout, ["eval_other"])] == ["KsponSpeech_E03001"]
    with pytest.raises(KsponError, match="no KsponSpeech_03 folder"):
        list(iter_folder(layout, ["KsponSpeech_03"]))


def test_pcm_without_its_txt(tmp_path):
    root = make_release(tmp_path, scripts=False)
    (root / "KsponSpeech_01" / "KsponSpeech_0001" / "KsponSpeech_000002.txt").unlink()
    with pytest.raises(KsponError, match="KsponSpeech_000002.pcm has no KsponSpeech_000002.txt"):
        list(iter_folder(find_layout(root)))


def test_no_release_or_a_second_copy(tmp_path):
    (tmp_path / "KsponSpeech_01.zip").write_bytes(b"PK")
    with pytest.raises(KsponError, match="no KsponSpeech audio.*unzip them first"):
        find_layout(tmp_path)
    with pytest.raises(KsponError, match="not a folder"):
        find_layout(tmp_path / "missing")
    make_release(tmp_path / "a")
    make_release(tmp_path / "b", scripts=False)
    with pytest.raises(KsponError, match="KsponSpeech_01 is under .* twice"):
        find_layout(tmp_path)


# ---- headerless PCM through the common audio reader -------------------------------------------------------------


def test_headerless_pcm_is_read_at_the_stated_rate_and_a_cut_short_file_is_named(tmp_path):
    import numpy as np

    from kowhisper.common.audio import AudioError, load_audio

    tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 16000).astype("<i2")  # 1 s at 8 kHz
    pcm = tmp_path / "call.pcm"
    pcm.write_bytes(tone.tobytes())
    waveform = load_audio(pcm, pcm_sample_rate=8000)
    assert len(waveform) == 16000 and abs(np.abs(waveform).max() - 16000 / 32768) < 0.05  # resampled to 16 kHz
    assert len(load_audio(pcm)) == 8000  # read as 16 kHz when no rate is stated
    pcm.write_bytes(tone.tobytes()[:-1])
    with pytest.raises(AudioError, match="odd number of bytes"):
        load_audio(pcm)
    stray = tmp_path / "KsponSpeech_E00001.pcm"  # the official eval files end in one stray byte
    stray.write_bytes(tone.tobytes() + b"\x00")
    assert len(load_audio(stray)) == 8000


def test_a_stretch_of_a_pcm_recording_is_read_alone(tmp_path):
    import numpy as np

    from kowhisper.common.audio import AudioError, load_audio

    ramp = np.arange(16000 * 3, dtype="<i2")  # 3 s at 16 kHz; each sample's value is its index
    pcm = tmp_path / "meeting.pcm"
    pcm.write_bytes(ramp.tobytes())
    stretch = load_audio(pcm, start=1.0, end=1.5)
    assert np.array_equal(np.round(stretch * 32768).astype(int), np.arange(16000, 24000))
    with pytest.raises(AudioError, match="ends after the recording"):
        load_audio(pcm, start=2.5, end=4.0)
