"""A prepared split written once, straight into the folder layout `datasets.load_from_disk` reads.

The obvious route, rows into an Arrow file and then `Dataset.from_file(file).save_to_disk(folder)`, writes
every byte twice and reads the whole split back through a memory map to copy it; the mapped pages count as
the process's resident memory, which grew by the split's size (bench/prepare_memory.py). Here rows go once
into shards of at most MAX_SHARD_BYTES, with the two small files save_to_disk writes beside its shards:
dataset_info.json (the features, by datasets' own DatasetInfo.write_to_directory) and state.json naming the
shards, which datasets has no public writer for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets import DatasetInfo, Features
from datasets.arrow_writer import ArrowWriter

# datasets' own shard size for save_to_disk; it also keeps every file far below FAT32's 4 GB limit, so a
# workspace can be copied on the USB sticks that file system is common on.
MAX_SHARD_BYTES = 500 * 1000 * 1000
# Rows ArrowWriter holds before writing a record batch. Its default, 1000, held about 170 MB of 4 s clips
# (RssAnon, measured); at 30 s a clip stores 480 KB of features, so 1000 would be about half a gigabyte.
WRITER_BATCH_ROWS = 64


class SplitWriter:
    """write(row) for every row, then close(); the folder then loads with datasets.load_from_disk."""

    def __init__(self, folder: Path, features: Features, fingerprint: str):
        self.folder = Path(folder)
        self.features = features
        self.fingerprint = fingerprint
        self.shards: list[Path] = []
        self._writer: ArrowWriter | None = None
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        if self._writer is None or self._writer.stream.tell() >= MAX_SHARD_BYTES:
            self._next_shard()
        self._writer.write(row)

    def close(self) -> list[Path]:
        """Finish the last shard, give the shards save_to_disk's names, and write state.json and dataset_info.json."""
        if self._writer is None:  # no rows: one shard holding the schema, which loads as an empty dataset
            self._next_shard()
        self._writer.finalize()
        self._writer = None
        count = len(self.shards)
        named = [self.folder / f"data-{index:05d}-of-{count:05d}.arrow" for index in range(count)]
        for shard, name in zip(self.shards, named):
            os.replace(shard, name)
        state = {
            "_data_files": [{"filename": path.name} for path in named],
            "_fingerprint": self.fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        DatasetInfo(features=self.features).write_to_directory(str(self.folder))
        return named

    def _next_shard(self) -> None:
        if self._writer is not None:
            self._writer.finalize()
        path = self.folder / f"shard-{len(self.shards):05d}.arrow.partial"
        self.shards.append(path)
        self._writer = ArrowWriter(features=self.features, path=str(path), writer_batch_size=WRITER_BATCH_ROWS)
