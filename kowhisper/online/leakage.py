"""Test sentences that also occur in a train split: leakage, which makes a test score look better than it is.

Korean corpora share text: Common Voice's sentence collector, Zeroth's news scripts and a team's own prompts
often read the same sentences. A model trained on a sentence (in any voice) and tested on it is partly tested
on memory. So for every ordered pair of sources (A, B), including A = B, this counts the rows of A's test
split whose sentence, compared as metrics compare it (kowhisper.common.text.normalize_for_metric), is in B's train
split.

Sentences are kept as 64-bit hashes in sorted numpy arrays (8 bytes a row) and read from the prepared splits a
batch at a time, so even KsponSpeech's 620k rows take a few megabytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from datasets import load_from_disk

from kowhisper.common.text import normalize_for_metric

BATCH_ROWS = 10_000
EXAMPLES = 3


def sentence_hash(text: str) -> int | None:
    """A 64-bit hash of the sentence as metrics compare it; None for one that normalises to nothing (punctuation
    alone), since every such row would otherwise match every other."""
    normalized = normalize_for_metric(text)
    if not normalized:
        return None
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "little")


def _texts(split_folder: Path):
    """Batches of the stored (label-normalised) text of a prepared split, without reading its features."""
    texts = load_from_disk(str(split_folder)).select_columns(["text"])
    for batch in texts.iter(batch_size=BATCH_ROWS):
        yield batch["text"]


def _hashes(split_folder: Path) -> np.ndarray:
    parts = [np.array([key for key in map(sentence_hash, batch) if key is not None], dtype=np.uint64) for batch in _texts(split_folder)]
    return np.concatenate(parts) if parts else np.array([], dtype=np.uint64)


def count_leakage(sources: list[tuple[str, Path]]) -> list[dict]:
    """sources: (name, folder holding train/ and test/) in order. One entry per ordered pair:
    {"test_source", "train_source", "test_rows", "leaked_rows", "examples"}, where leaked_rows counts the test
    rows whose sentence is in the train split and examples shows up to three of those sentences."""
    train = {name: np.unique(_hashes(folder / "train")) for name, folder in sources}
    results = []
    for test_name, folder in sources:
        test = _hashes(folder / "test")
        for train_name, _ in sources:
            leaked = np.isin(test, train[train_name])
            results.append({
                "test_source": test_name,
                "train_source": train_name,
                "test_rows": int(len(test)),
                "leaked_rows": int(leaked.sum()),
                "examples": _examples(folder / "test", set(test[leaked][:EXAMPLES].tolist())),
            })
    return results


def _examples(split_folder: Path, wanted: set[int]) -> list[str]:
    found = []
    for batch in _texts(split_folder) if wanted else ():
        for text in batch:
            if sentence_hash(text) in wanted and text not in found:
                found.append(text)
                if len(found) == len(wanted):
                    return found
    return found


def format_leakage(leakage: list[dict]) -> str:
    """The lines the end-of-setup summary prints: every pair, the leaked ones with an example."""
    if not leakage:
        return ""
    lines = ["leakage: test rows whose sentence is also in a train split (compared as metrics compare text)"]
    for entry in leakage:
        share = entry["leaked_rows"] / entry["test_rows"] if entry["test_rows"] else 0.0
        line = (f"  {entry['test_source']} test in {entry['train_source']} train: "
                f"{entry['leaked_rows']} of {entry['test_rows']} ({100 * share:.1f}%)")
        if entry["examples"]:
            line += f", e.g. {entry['examples'][0]!r}"
        lines.append(line)
    return "\n".join(lines)
