"""Damaged copies of the bundled sample, for the tests of bad input in both tiers."""

from __future__ import annotations

import tarfile
from pathlib import Path

from kowhisper.config import SAMPLE_DATA


def sample_tarball(path: Path, mode: str) -> Path:
    """The bundled Common Voice-style sample as a release tarball, as a download would leave it."""
    with tarfile.open(path, mode) as archive:
        archive.add(SAMPLE_DATA, arcname="cv-corpus-ko-sample")
    return path


def cut_short(path: Path, keep: float = 0.5) -> Path:
    """The file cut to `keep` of its size, as an interrupted download or copy leaves it."""
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path
