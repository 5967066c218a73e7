"""Telling a CTranslate2 model folder from a transformers one, and the whisper-base alias from a path: no model read.
The conversion of the PyPI whisper-base itself is checked in tests/integration/test_ct2_import.py."""

from __future__ import annotations

from kowhisper.families.whisper.ct2_import import is_ct2_model_dir, resolve_ct2_source


def test_ct2_dir_detection(tmp_path):
    assert not is_ct2_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert not is_ct2_model_dir(tmp_path)
    assert resolve_ct2_source(tmp_path, tmp_path / "scratch") is None
    (tmp_path / "model.bin").write_bytes(b"")
    assert is_ct2_model_dir(tmp_path)
    assert resolve_ct2_source(tmp_path, tmp_path / "scratch") == tmp_path
    assert resolve_ct2_source("openai/whisper-base", tmp_path / "scratch") is None
