"""Fixtures of both tiers: no test reaches the Hub, the project's interpreter for subprocess tests, a bundled clip.
The model and workspace fixtures (real whisper-base, the tiny random Whisper and wav2vec2, workspaces built by the real
online setup) are tests/integration/conftest.py's: tests/unit uses none of them."""

from __future__ import annotations

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
def sample_clip() -> Path:
    """One real 48 kHz Common Voice-style MP3 of Korean espeak speech from the bundled sample."""
    return sorted(SAMPLE_CLIPS.glob("*.mp3"))[0]
