"""Metric values on hand-made Korean pairs, worked out by hand: CER counts syllables (also for NFD input, where
each syllable arrives as 2-3 jamo), punctuation is free, spacing errors cost CER and WER but not spacing-free
CER, and the corpus rates weigh utterances by their length."""

from __future__ import annotations

import math
import unicodedata

import kocer
import pytest
from datasets import Dataset

from kowhisper.common.text import (
    KOCER_PIECE_CHARS,
    error_rates,
    kocer_counts,
    kocer_pieces,
    normalize_for_metric,
    rates_by_source,
    utterance_counts,
)
from kowhisper.evaluate.split import score


def nfd(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    assert len(decomposed) > len(text)  # the input really is jamo, not syllables
    return decomposed


def test_identical_transcripts_score_zero():
    rates = error_rates(["나는 아침을 먹는 중이다."], ["나는 아침을 먹는 중이다."])
    assert (rates["cer"], rates["wer"], rates["cer_nospace"], rates["num_scored"]) == (0.0, 0.0, 0.0, 1)


def test_one_wrong_syllable_in_five():
    rates = error_rates(["안녕하세요"], ["안녕하세유"])
    assert rates["cer"] == pytest.approx(1 / 5)
    assert rates["wer"] == pytest.approx(1.0)  # the only word is wrong


def test_nfd_hypothesis_is_scored_by_syllables_not_jamo():
    # 한국 -> 한극: one syllable of two differs. Scored on jamo it would be 1 of 5 (ㅎㅏㄴㄱㅜㄱ vs ㅎㅏㄴㄱㅡㄱ).
    assert error_rates(["한국"], [nfd("한극")])["cer"] == pytest.approx(1 / 2)
    rates = error_rates([nfd("나는 학교에 간다")], ["나는 학교에 간다"])
    assert rates["cer"] == 0.0 and rates["wer"] == 0.0
    assert normalize_for_metric(nfd("가, 나!")) == "가 나"


def test_punctuation_and_extra_spaces_are_free():
    rates = error_rates(["그것은 희망이다."], ["  그것은,   희망이다 "])
    assert rates["cer"] == 0.0 and rates["wer"] == 0.0


def test_spacing_error_costs_cer_and_wer_but_not_spacing_free_cer():
    # "나는 학교에 간다" is 9 characters with its spaces and 3 words; the hypothesis drops one space, which is
    # one deletion for CER, and 학교에+간다 -> 학교에간다 is a substitution plus a deletion for WER.
    rates = error_rates(["나는 학교에 간다"], ["나는 학교에간다"])
    assert rates["cer"] == pytest.approx(1 / 9)
    assert rates["wer"] == pytest.approx(2 / 3)
    assert rates["cer_nospace"] == 0.0


def test_corpus_rates_weigh_utterances_by_length():
    # One error in 3 syllables plus none in 2 is 1 error in 5, not the mean of 1/3 and 0.
    rates = error_rates(["가나다", "라마"], ["가나라", "라마"])
    assert rates["cer"] == pytest.approx(1 / 5)
    assert rates["wer"] == pytest.approx(1 / 2)


def test_insertions_can_push_cer_past_one():
    # A repetition loop: 2 reference syllables, 6 inserted ones.
    assert error_rates(["하우"], ["하우하우하우하우"])["cer"] == pytest.approx(6 / 2)


def test_empty_reference_is_skipped_not_counted_as_perfect():
    assert utterance_counts("...", "아무 말") is None
    rates = error_rates(["!!", "안녕"], ["뭔가", "안녕"])
    assert rates["num_scored"] == 1 and rates["cer"] == 0.0
    assert math.isnan(error_rates(["?"], [""])["cer"])


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["가", "나"], ["가"])


def test_evaluation_score_gives_per_utterance_rows_and_corpus_rates():
    split = Dataset.from_dict({
        "id": ["a.mp3", "b.mp3"],
        "text": ["그것은 희망이다.", "하고, 목메인 소리가 뒤를 따랐다."],
        "duration": [1.8, 3.1],
    })
    metrics, rows = score(split, [nfd("그것은 희망이다"), "하고 목메인 소리가 뒤를 따랐다"])
    assert [row["id"] for row in rows] == ["a.mp3", "b.mp3"]
    assert [row["cer"] for row in rows] == [0.0, 0.0]
    assert metrics["cer"] == 0.0 and metrics["num_scored"] == 2
    metrics, rows = score(split, ["그것은 희망이다", "하고 목메인 소리가 뒤를 따랐"])
    # The second reference has 17 characters after normalisation (13 syllables, 4 spaces); "다" is missing.
    assert normalize_for_metric(split[1]["text"]) == "하고 목메인 소리가 뒤를 따랐다"
    assert rows[1]["cer"] == pytest.approx(1 / 17)
    assert metrics["cer"] == pytest.approx(1 / (8 + 17))


# ---- kocer: reading-equivalent CER through the project's scorer ------------------------------------------------


def test_kocer_cer_counts_a_number_written_as_read_as_right_and_a_wrong_number_as_wrong():
    # "3개" read aloud is "세 개": the same words, so kocer CER is 0, while CER and no-space CER charge the spelling.
    same = error_rates(["사과 3개 주세요."], ["사과 세 개 주세요"])
    assert same["kocer_cer"] == 0.0
    assert same["cer"] > 0 and same["cer_nospace"] > 0
    # "네 개" is four, not three: one of the two no-space characters (3/세 and 개) is wrong.
    wrong = error_rates(["3개"], ["네 개"])
    assert wrong["kocer_cer"] == pytest.approx(1 / 2)
    assert error_rates(["AI 기술"], ["에이아이 기술"])["kocer_cer"] == 0.0


def test_kocer_cer_ignores_spacing_and_punctuation_like_spacing_free_cer():
    rates = error_rates(["나는 학교에 간다."], ["나는 학교에간다"])
    assert rates["kocer_cer"] == rates["cer_nospace"] == 0.0
    rates = error_rates(["안녕하세요"], ["안녕하세유"])
    assert rates["kocer_cer"] == pytest.approx(1 / 5)


def test_evaluation_rows_carry_every_rate_and_its_edit_counts_and_the_breakdown_adds_up():
    split = Dataset.from_dict({"id": ["a", "b"], "text": ["오늘 3시에 만나요.", "나는 학교에 간다"], "duration": [1.0, 1.0]})
    metrics, rows = score(split, ["오늘 세 시에 만나요", "나는 학교애 간다"])
    assert rows[0]["kocer_cer"] == 0.0 and rows[0]["cer"] > 0
    assert rows[1]["counts"]["kocer_cer_errors"] == 1 and rows[1]["counts"]["kocer_cer_chars"] == 7
    # The denominator is the reference as written, without spaces: 오늘3시에만나요 (8) and 나는학교에간다 (7).
    assert metrics["kocer_cer"] == pytest.approx(1 / (8 + 7))
    breakdown = metrics["breakdown"]
    assert sum(breakdown["errors"].values()) == breakdown["raw_errors"]
    assert breakdown["errors"]["real"] == 1 and breakdown["errors"]["numbers_latin"] > 0 and breakdown["errors"]["spacing"] > 0


def test_a_long_transcript_is_scored_by_kocer_in_pieces_that_add_up_to_the_whole():
    reference = " ".join(["오늘 회의는 3시에 시작해서 약 2시간 동안 진행되었습니다. AI 도입 건은 다음 달로 미뤘다."] * 30)
    hypothesis = reference.replace("3시에", "세 시에").replace("진행되었습니다", "진행됐습니다").replace("미뤘다.", "미뤘다 그리고", 4)
    pieces = kocer_pieces(reference, hypothesis)
    assert len(reference) > 2 * KOCER_PIECE_CHARS and len(pieces) > 2
    assert " ".join(r for r, _ in pieces) == reference and " ".join(h for _, h in pieces) == hypothesis
    whole = kocer.measure(reference, hypothesis)
    assert kocer_counts(reference, hypothesis) == (whole.errors, whole.ref_len)


def test_a_hallucinated_digit_run_too_long_for_kocer_is_scored_not_a_crash():
    # kocer reads digit runs as one number and has no name above 경; a 45-digit hallucination once ended a
    # training run in an IndexError during the dev evaluation.
    rates = error_rates(["사과 3개"], ["1" * 45 + "개"])
    assert rates["kocer_cer"] > 1 and rates["cer"] > 1
    # Thousands commas, which kocer removes, join groups into a run as long (this one failed a real training run).
    assert error_rates(["사과 3개"], ["1," + ",".join(["000"] * 8) + "원"])["kocer_cer"] > 1
    breakdown = score(Dataset.from_dict({"id": ["a"], "text": ["사과 3개"], "duration": [1.0]}), ["0" + "7" * 30])[0]["breakdown"]
    assert sum(breakdown["errors"].values()) == breakdown["raw_errors"]


def test_rates_by_source_weights_each_source_by_its_scored_pairs_and_one_source_is_itself():
    references = ["가나다라", "가나다라", "마바", "!"]  # "!" normalises to nothing: not scored
    hypotheses = ["가나다라", "가나다라", "마", "?"]
    sources = ["big", "big", "small", "small"]
    counts = [utterance_counts(r, h) for r, h in zip(references, hypotheses)]
    overall, per_source = rates_by_source(references, hypotheses, counts, sources)
    assert list(per_source) == ["big", "small"]
    assert per_source["small"]["cer"] == 0.5 and per_source["small"]["num_scored"] == 1
    # 2 scored pairs of big at 0, 1 of small at 0.5: the unscored "!" weighs nothing.
    assert overall["cer"] == pytest.approx(0.5 / 3) and overall["num_scored"] == 3
    only, per_source = rates_by_source(references[:2], hypotheses[:2], counts[:2], sources[:2])
    assert only == per_source["big"]
