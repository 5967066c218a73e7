"""Keys that apply to one model family: a key the user set that the chosen family does not read gets one line, a default
never does. That --help-config lists each family's keys apart from the shared ones is in
tests/integration/test_config_cli.py."""

from dataclasses import fields

from kowhisper.config import Config, explicit_keys
from kowhisper.families.ctc.family import CTC
from kowhisper.families.registry import FAMILIES, ignored_keys_notice
from kowhisper.families.whisper.family import WHISPER


def test_every_family_key_is_a_config_field():
    names = {field.name for field in fields(Config)}
    for family in FAMILIES:
        assert set(family.own_config_keys) <= names, family.name


def test_a_whisper_key_set_for_a_ctc_model_is_named():
    notice = ignored_keys_notice(CTC, explicit_keys(["language=ko", "task=transcribe", "lora_r=4"]))
    assert notice == "ignored for a ctc model: language, task (they apply to whisper models)"


def test_a_ctc_key_set_for_a_whisper_model_is_named():
    notice = ignored_keys_notice(WHISPER, explicit_keys(["ctc_punctuation=keep"]))
    assert notice == "ignored for a whisper model: ctc_punctuation (it applies to ctc models)"


def test_defaults_and_shared_keys_are_never_named(tmp_path):
    yaml = tmp_path / "run.yaml"
    yaml.write_text("learning_rate: 0.0002\nlanguage_abbr: ko\n", encoding="utf-8")
    for family in FAMILIES:
        assert ignored_keys_notice(family, explicit_keys([], None)) is None
        assert ignored_keys_notice(family, explicit_keys(["max_steps=5"], yaml)) is None
        assert ignored_keys_notice(family, explicit_keys(list(f"{key}=x" for key in family.own_config_keys))) is None


def test_a_key_set_in_the_config_file_counts_even_at_its_default_value(tmp_path):
    yaml = tmp_path / "run.yaml"
    yaml.write_text("language: Korean\n", encoding="utf-8")
    notice = ignored_keys_notice(CTC, explicit_keys([], yaml))
    assert notice == "ignored for a ctc model: language (it applies to whisper models)"
