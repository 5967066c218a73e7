"""Test data shared by both tiers and the benchmarks: damaged copies of the bundled sample, for the tests of bad input,
and where the real-speech set lives, with the marker that skips a test where it is absent."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from kowhisper.config import SAMPLE_DATA

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Real human Korean read speech in Common Voice layout (CC BY-NC-SA 4.0): read from ../shared, never copied into the
# repository. REAL_SPEECH is the corpus root (data_path of data_source=cv), REAL_SPEECH_KO its language folder (the
# split .tsv files and clips/).
REAL_SPEECH = PROJECT_ROOT.parent / "shared" / "data" / "ko-real-speech" / "cv-corpus-emotiontts-ko"
REAL_SPEECH_KO = REAL_SPEECH / "ko"

# For the tests that read the real-speech set: skipped cleanly where ../shared is not beside the project.
needs_real_speech = pytest.mark.skipif(
    not all((REAL_SPEECH_KO / f"{split}.tsv").is_file() for split in ("train", "test")),
    reason=f"the real-speech set is not at {REAL_SPEECH}")


def clip_path(language_dir: Path, row_id: str) -> Path:
    """The clip of a prepared row of a Common Voice-layout folder (its language folder, holding clips/): row ids are
    Common Voice clip names, with or without the .mp3."""
    return language_dir / "clips" / (row_id if row_id.endswith(".mp3") else f"{row_id}.mp3")


def sample_tarball(path: Path, mode: str) -> Path:
    """The bundled Common Voice-style sample as a release tarball, as a download would leave it."""
    with tarfile.open(path, mode) as archive:
        archive.add(SAMPLE_DATA, arcname="cv-corpus-ko-sample")
    return path


def cut_short(path: Path, keep: float = 0.5) -> Path:
    """The file cut to `keep` of its size, as an interrupted download or copy leaves it."""
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path
