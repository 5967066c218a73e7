"""The CTC family without a model: the character vocabulary (NFC and NFD alike, Latin letters, digits and punctuation as
configured, unseen characters reported as [UNK]), long audio cut into chunks that keep every sample once, and a model that
is neither Whisper nor CTC refused. The family with a small random wav2vec2 is in tests/integration/test_ctc.py."""

from __future__ import annotations

import json
import unicodedata

import pytest


def _extractor():
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True)


def test_vocabulary_is_the_same_for_nfc_and_nfd_text_and_spells_syllables():
    from kowhisper.families.ctc.vocabulary import PAD, UNK, WORD_DELIMITER, CharacterRules, build_vocabulary

    text = "한국어 음성 인식"
    rules = CharacterRules()
    composed = build_vocabulary([text], rules)
    decomposed = build_vocabulary([unicodedata.normalize("NFD", text)], rules)
    assert composed == decomposed
    assert [composed[PAD], composed[UNK], composed[WORD_DELIMITER]] == [0, 1, 2]
    assert set(composed) - {PAD, UNK, WORD_DELIMITER} == set(text.replace(" ", ""))


def test_latin_digits_and_punctuation_follow_the_config():
    from kowhisper.families.ctc.vocabulary import CharacterRules, build_vocabulary

    text = "LG 5G폰, 3월에 나와요!"
    default = CharacterRules()
    assert default.label_text(text) == "lg 5g폰 3월에 나와요"
    assert {"l", "g", "5", "3"} <= set(build_vocabulary([text], default)) and "," not in build_vocabulary([text], default)
    dropped = CharacterRules(latin_digits="drop")
    assert dropped.label_text(text) == "폰 월에 나와요"
    assert not {"l", "g", "5", "3"} & set(build_vocabulary([text], dropped))
    kept = CharacterRules(punctuation="keep")
    assert {",", "!"} <= set(build_vocabulary([text], kept))


def test_unseen_characters_become_unk_and_are_reported(tmp_path):
    from kowhisper.families.ctc.storage import CTCClipEncoder, FrameGeometry, save_vocabulary
    from kowhisper.families.ctc.vocabulary import CharacterRules, build_vocabulary, coverage

    rules = CharacterRules()
    train = ["大韓民國 만세", "ㅋㅋ 좋아요"]
    vocabulary = build_vocabulary(train, rules)
    assert "大" not in vocabulary and "ㅋ" not in vocabulary
    report = coverage(train, vocabulary, rules)
    assert report.unknown == {"大": 1, "韓": 1, "民": 1, "國": 1, "ㅋ": 2}
    assert "become [UNK]" in report.describe() and "'ㅋ' x2" in report.describe()
    from transformers import Wav2Vec2Config

    tokenizer = save_vocabulary(vocabulary, tmp_path, rules)
    encoder = CTCClipEncoder(tokenizer, _extractor(), FrameGeometry.from_config(Wav2Vec2Config()), rules)
    labels, _, _ = encoder.encode_text("만세 萬歲")
    assert tokenizer.convert_ids_to_tokens(labels) == ["만", "세", "|", "[UNK]", "[UNK]"]


def test_long_audio_chunks_keep_every_sample_once():
    from kowhisper.families.ctc.recognizer import plan_chunks

    for samples in (16_000 * 5, 16_000 * 20, 16_000 * 20 + 1, 16_000 * 61 + 7):
        chunks = plan_chunks(0, samples)
        assert chunks[0].keep_start == 0 and chunks[-1].keep_end == samples and chunks[-1].end == samples
        assert all(a.keep_end == b.keep_start for a, b in zip(chunks, chunks[1:]))
        assert all(c.start <= c.keep_start < c.keep_end <= c.end and c.end - c.start <= 16_000 * 20 for c in chunks)


def test_a_model_that_is_neither_whisper_nor_ctc_is_refused(tmp_path):
    from kowhisper.families.base import ModelError
    from kowhisper.families.registry import family_for_base_source

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(ModelError, match="neither Whisper nor a CTC model"):
        family_for_base_source(str(tmp_path))
