"""Source rows -> the workspace's prepared splits: decoded, checked, featurised and saved with datasets.

Every source of the config (config.dataset_sources) is prepared on its own into data/<name>/. Each split is
built in a hidden sibling folder (.<split>.partial) and renamed into place only when complete, with a stamp (`.complete.json`)
holding a fingerprint of everything that decides its content and the digest of every file. A later run skips
a split whose stamp matches and whose files are intact; anything else is rebuilt. So a second run rewrites
nothing, and adding a source to a finished workspace prepares only that source. Bad rows never stop a run:
each is dropped with a reason, counted in data/<name>/report.json and listed in its split's dropped.jsonl.

Anything under data/ that belongs to no configured source (a source taken out of the config) is left alone, so
taking a source out by mistake costs no re-preparation, and left out of the manifest, so the offline box neither
needs nor trusts it. The run says so.

Workers are forked processes fed chunks of rows (a bounded number in flight, so hf audio bytes are read
only as fast as they are used); the main process writes the results straight into the split's Arrow shards
(kowhisper.online.split_writer). On the 2-core test machine this was as fast as datasets.map(num_proc=2) and, unlike
map, needs no extra columns and filter pass to carry dropped rows out. Memory does not grow with the number of
clips: rows are read, processed and written a chunk at a time (bench/prepare_memory.py measures it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from datasets import Value
from tqdm.auto import tqdm

from kowhisper.common.audio import SAMPLING_RATE, AudioError, decode_audio
from kowhisper.common.files import atomic_write_json, partial_path, read_json, sha256_file
from kowhisper.common.text import normalize_transcript
from kowhisper.common.workspace import SPLITS, data_dir, model_dir, remove_leftovers, source_dir, source_report_path
from kowhisper.config import SOURCE_KEYS, Config, DataGroup, DatasetSource, ModelGroup, dataset_sources
from kowhisper.families.base import ModelError, StorageError
from kowhisper.families.registry import family_of
from kowhisper.online.leakage import count_leakage
from kowhisper.online.sources import DROP_DETAILS, DataError, SourceRows, check_source, load_source, rows_dir
from kowhisper.online.split_writer import SplitWriter

# Bump when the same inputs would now give different stored rows, so old splits are rebuilt, not trusted.
# 2: labels start with a space, as Whisper's own transcripts do (features.label_ids).
# 3: dropped rows moved from the stamp to dropped.jsonl; shards written directly, not through save_to_disk.
PREPARED_FORMAT_VERSION = 3
STAMP_NAME = ".complete.json"
DROPPED_NAME = "dropped.jsonl"
# Every family's reasons, so reports of any workspace have the same columns.
DROP_REASONS = ("missing", "empty_audio", "undecodable", "out_of_range", "empty_text", "too_long", "too_short", "labels_too_long",
                *DROP_DETAILS)
# Rows per task sent to a worker: large enough that pickling and queueing cost little beside decoding,
# small enough that the progress bar moves and few hf audio bytes are held in flight.
CHUNK_ROWS = 16
# Where a stored row carries its input's sample rate from a worker to the split's summary; never written to the split.
INPUT_RATE_KEY = "_input_rate"
# Rows each worker process handles before a fresh fork replaces it (see Workers).
WORKER_RECYCLE_ROWS = 5_000

__all__ = ["DROP_REASONS", "DataError", "PreparedData", "PreparedSource", "base_model_folder", "check_sources", "format_summary",
           "load_sources", "prepare_data"]


@dataclass
class PreparedSource:
    name: str
    weight: float
    keys: dict  # the source's data keys (config.SOURCE_KEYS), as it was prepared with them
    description: str
    splits: dict  # split -> {"kept": n, "dropped": {reason: n}, "seconds": total kept audio}

    def manifest_entry(self) -> dict:
        return {"name": self.name, "weight": self.weight, "dir": source_dir(Path(), self.name).as_posix(), "description": self.description,
                "config": self.keys, "splits": self.splits}


@dataclass
class PreparedData:
    sources: list[PreparedSource]
    leakage: list[dict]  # kowhisper.online.leakage.count_leakage over every ordered pair of sources
    left_alone: list[str]  # workspace-relative paths under data/ that belong to no configured source

    @property
    def totals(self) -> dict:
        """Per split, summed over the sources: the manifest's top-level "splits"."""
        totals = {}
        for split in SPLITS:
            entries = [source.splits[split] for source in self.sources]
            totals[split] = {
                "kept": sum(entry["kept"] for entry in entries),
                "dropped": {reason: sum(entry["dropped"][reason] for entry in entries) for reason in DROP_REASONS},
                "seconds": round(sum(entry["seconds"] for entry in entries), 3),
                "input_rates": _summed_rates(entry.get("input_rates", {}) for entry in entries),
            }
        return totals


def _summed_rates(rates) -> dict[str, int]:
    summed = Counter()
    for entry in rates:
        summed.update(entry)
    return {rate: summed[rate] for rate in sorted(summed, key=int)}


def prepare_data(config: Config, loaded: dict[str, SourceRows] | None = None) -> PreparedData:
    """Prepare every source of the config into data/<name>/ of config.workspace, with its drop report, and count
    test sentences that leak into train splits. `loaded`: the sources' rows if load_sources has read them already.

    Raises DataError when a source is missing or unusable, or when a split ends up with no rows (after writing
    the reports, so the reasons can be read): every split of a trained source, the test split of a held-out one."""
    try:
        return _prepare(config, loaded if loaded is not None else load_sources(config))
    finally:
        # The row files are scratch: what the workspace keeps is now in the prepared splits.
        shutil.rmtree(rows_dir(config), ignore_errors=True)


def check_sources(config: DataGroup) -> None:
    """The quick checks of every configured source's input (kowhisper.online.sources.check_source), before any is read."""
    for source in dataset_sources(config):
        try:
            check_source(source)
        except DataError as error:
            raise DataError(f"source {source.name!r}: {error}") from None


def load_sources(config: Config) -> dict[str, SourceRows]:
    """Every configured source's rows by name: the data read, downloaded or extracted as needed (into
    config.cache_path), its columns and splits checked. Needs no model."""
    check_sources(config)
    return {source.name: _load(source, config) for source in dataset_sources(config)}


def _prepare(config: Config, loaded: dict[str, SourceRows]) -> PreparedData:
    workspace = config.workspace_dir
    # What a killed run left half-written is never trusted.
    remove_leftovers(workspace, under=data_dir(workspace).name)
    sources = dataset_sources(config)
    # The model family stores a clip its own way; its encoder may need the training text (a CTC vocabulary).
    model_folder = base_model_folder(config)
    train_texts = (text for source in sources for text in loaded[source.name].splits["train"]["text"])
    try:
        encoder = family_of(model_folder).clip_encoder(model_folder, config, train_texts)
    except (ModelError, StorageError) as error:
        raise DataError(str(error)) from None
    pipeline = RowPipeline(encoder, config.max_duration_s, config.pcm_sample_rate)
    with Workers(pipeline, config.num_proc) as workers:
        prepared = [_prepare_source(workspace, source, loaded[source.name], pipeline, workers) for source in sources]

    left_alone = _left_alone(workspace, [source.name for source in sources])
    leakage = count_leakage([(source.name, source_dir(workspace, source.name)) for source in sources])
    empty = [(source, split) for source in prepared for split in (SPLITS if source.weight > 0 else ("test",))
             if source.splits[split]["kept"] == 0]
    if empty:
        details = "; ".join(f"{source.name}/{split} ({_drop_text(source.splits[split]['dropped']) or 'no source rows'})"
                            for source, split in empty)
        reports = ", ".join(str(source_report_path(workspace, name)) for name in dict.fromkeys(source.name for source, _ in empty))
        raise DataError(f"no usable rows in {details}; see {reports}")
    return PreparedData(prepared, leakage, left_alone)


def _load(source: DatasetSource, config: Config) -> SourceRows:
    try:
        return load_source(source, config)
    except DataError as error:
        raise DataError(f"source {source.name!r}: {error}") from None


def _prepare_source(workspace: Path, source, rows: SourceRows, pipeline: RowPipeline, workers: Workers) -> PreparedSource:
    print(f"source {source.name}: {rows.description}")
    for note in rows.notes:
        print(f"note: {source.name}: {note}")

    folder = source_dir(workspace, source.name)
    stamps = {}
    for split in SPLITS:
        label = f"{source.name}/{split}"
        fingerprint = split_fingerprint(rows.splits[split], rows, pipeline)
        stamps[split] = _completed_stamp(folder / split, fingerprint, label)
        if stamps[split] is not None:
            print(f"{label}: skip, already prepared ({stamps[split]['summary']['kept']} clips, inputs unchanged)")
            continue
        stamps[split] = _build_split(folder, split, label, rows.splits[split], pipeline, workers, fingerprint)

    summary = {split: stamps[split]["summary"] for split in SPLITS}
    keys = {key: getattr(source, key) for key in SOURCE_KEYS}
    report = {
        "source": {"name": source.name, **keys, "description": rows.description},
        "notes": rows.notes,
        **rows.counts,
        "splits": summary,
        "dropped_rows": {split: f"{split}/{DROPPED_NAME}" for split in SPLITS},
    }
    _write_json_if_changed(source_report_path(workspace, source.name), report)
    return PreparedSource(source.name, source.weight, keys, rows.description, summary)


def _left_alone(workspace: Path, names: list[str]) -> list[str]:
    folder = data_dir(workspace)
    stale = [path for path in sorted(folder.iterdir()) if path.name not in names and not path.name.startswith(".")]
    for path in stale:
        print(f"data/{path.name}: not one of this config's sources ({', '.join(names)}); left alone and left out of "
              "the manifest. Delete it to free the space, or list its source again to use it.")
    return [f"data/{path.name}" for path in stale]


def base_model_folder(config: ModelGroup) -> Path:
    """The workspace's base model when the model step has saved it, else model_name_or_path if that is a folder."""
    local = model_dir(config.workspace_dir)
    if (local / "config.json").is_file():
        return local
    given = Path(config.model_name_or_path).expanduser()
    if (given / "config.json").is_file():
        return given
    raise DataError(f"no base model in {local}: run download_model.py (or run_online_setup.py) first, so the data step "
                    "stores clips the way that model reads them")


def format_summary(sources: list[dict]) -> str:
    """The table download_data.py and run_online_setup.py print: kept, hours and drops per source and split, then
    each source's weight and its share of training samples. `sources` are manifest entries (name, weight, splits)."""
    width = max([6, *(len(entry["name"]) for entry in sources)])
    lines = [f"{'source':<{width}} {'split':<5} {'kept':>8} {'hours':>8}  dropped"]
    for entry in sources:
        for split, counts in entry["splits"].items():
            lines.append(f"{entry['name']:<{width}} {split:<5} {counts['kept']:>8} {counts['seconds'] / 3600:>8.2f}  "
                         f"{_drop_text(counts['dropped']) or '-'}")
    total_weight = sum(entry["weight"] for entry in sources)
    shares = [f"{entry['name']} {entry['weight']:g} ({100 * entry['weight'] / total_weight:.0f}%)" if entry["weight"] > 0
              else f"{entry['name']} 0 (held out: evaluated, not trained on)" for entry in sources]
    lines.append("training weights: " + ", ".join(shares))
    return "\n".join(lines)


def _drop_text(dropped: dict) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in dropped.items() if count)


# ---- one row -------------------------------------------------------------------------------------------------


class RowPipeline:
    """Turns a source row into a stored row or a drop record: text and audio checks every family shares, then the
    family's `encoder` (ModelFamily.clip_encoder) for labels and features. Built once, inherited by every worker."""

    def __init__(self, encoder, max_duration_s: float, pcm_sample_rate: int = SAMPLING_RATE):
        self.encoder = encoder
        self.max_duration_s = max_duration_s
        self.pcm_sample_rate = pcm_sample_rate
        settings = {"format": PREPARED_FORMAT_VERSION, "encoder": type(encoder).__name__, "settings": encoder.identity,
                    "max_duration_s": max_duration_s}
        if pcm_sample_rate != SAMPLING_RATE:  # named only when it matters, so splits prepared before the key stay valid
            settings["pcm_sample_rate"] = pcm_sample_rate
        self.identity = _hash_json(settings)

    def features(self):
        return self.encoder.features()

    def __call__(self, row: dict) -> tuple[dict | None, dict | None]:
        """(stored row, None) or (None, drop record). Text is checked first: it costs nothing beside decoding."""
        if row.get("drop"):  # the loader judged the row unusable before decoding (sources.DROP_DETAILS)
            return None, self._drop(row, row["drop"], DROP_DETAILS.get(row["drop"], row["drop"]))
        text = normalize_transcript(row["text"])
        if not text:
            return None, self._drop(row, "empty_text", "transcript is empty after normalisation")
        labels, reason, detail = self.encoder.encode_text(text)
        if labels is None:
            return None, self._drop(row, reason, detail)
        try:
            waveform, input_rate = _decode(row["audio"], self.pcm_sample_rate, row.get("start"), row.get("end"))
        except AudioError as error:
            return None, self._drop(row, error.kind, str(error))
        duration = len(waveform) / SAMPLING_RATE
        if duration > self.max_duration_s:
            return None, self._drop(row, "too_long", f"{duration:.2f} s > max_duration_s={self.max_duration_s}")
        stored, reason, detail = self.encoder.encode_audio(waveform, labels)
        if stored is None:
            return None, self._drop(row, reason, detail)
        return {"id": row["id"], "text": text, "duration": duration, **stored, INPUT_RATE_KEY: input_rate}, None

    @staticmethod
    def _drop(row: dict, reason: str, detail: str) -> dict:
        return {"id": row["id"], "file": _audio_name(row["audio"]), "reason": reason, "detail": detail}


def _decode(audio, pcm_sample_rate: int, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, int]:
    if isinstance(audio, dict):  # datasets' undecoded Audio: embedded bytes, else a local file
        return decode_audio(audio["bytes"] if audio.get("bytes") else audio.get("path") or b"", pcm_sample_rate=pcm_sample_rate)
    return decode_audio(audio, pcm_sample_rate=pcm_sample_rate, start=start, end=end)


def _audio_name(audio) -> str:
    return str(audio.get("path") or "(embedded audio)") if isinstance(audio, dict) else str(audio)


# ---- workers -------------------------------------------------------------------------------------------------

_worker_pipeline: RowPipeline | None = None


def _start_worker(pipeline: RowPipeline) -> None:
    global _worker_pipeline
    # num_proc processes already fill the cores; torch's own intra-op threads on top would only contend.
    torch.set_num_threads(1)
    _worker_pipeline = pipeline


def _process_chunk(rows: list[dict]) -> list[tuple[dict | None, dict | None]]:
    return [_worker_pipeline(row) for row in rows]


class Workers:
    """num_proc forked worker processes turning chunks of rows into results.

    Each worker is replaced by a fresh fork after WORKER_RECYCLE_ROWS rows, because a worker's memory creeps
    up with the clips it decodes: one worker's RssAnon rose 28 MiB over 6,000 sample clips, and torchcodec
    decoding alone kept about 0.8 KB per clip that malloc_trim did not give back (16,000 decodes). Over a
    620k-clip corpus that would be hundreds of MB per worker. With num_proc=1 the one worker still runs apart,
    so the main process, which forks the fresh workers, stays flat too."""

    def __init__(self, pipeline: RowPipeline, num_proc: int):
        self.pipeline = pipeline
        self.num_proc = num_proc
        self._executor: ProcessPoolExecutor | None = None
        self._rows_submitted = 0

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def results(self, rows):
        """Results chunk by chunk, in row order, with at most two chunks per worker read ahead."""
        in_flight = deque()
        for start in range(0, len(rows), CHUNK_ROWS):
            if self._rows_submitted >= WORKER_RECYCLE_ROWS * self.num_proc:
                while in_flight:
                    yield in_flight.popleft().result()
                self._stop()
            chunk = _read_chunk(rows, start)
            in_flight.append(self._pool().submit(_process_chunk, chunk))
            self._rows_submitted += len(chunk)
            if len(in_flight) >= 2 * self.num_proc:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # fork: workers inherit the tokenizer and mel filters instead of re-importing torch and transformers.
            # Started on the first chunk, so a run that skips every split forks nothing.
            self._executor = ProcessPoolExecutor(self.num_proc, mp_context=get_context("fork"), initializer=_start_worker,
                                                 initargs=(self.pipeline,))
            self._rows_submitted = 0
        return self._executor

    def _stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None


def _read_chunk(rows, start: int) -> list[dict]:
    columns = rows[start : start + CHUNK_ROWS]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


# ---- one split -----------------------------------------------------------------------------------------------


def split_fingerprint(rows, source: SourceRows, pipeline: RowPipeline) -> str:
    """Everything that decides a split's content: the rows (id, text, audio file and its size), the source's
    identity for audio without a file, and the pipeline's settings and tokenizer."""
    digest = hashlib.sha256(f"{pipeline.identity}\n{source.identity}\n".encode())
    files_named = isinstance(rows.features["audio"], Value)
    listing = rows.select_columns(["id", "text", "audio"] if files_named else ["id", "text"])
    for start in range(0, len(listing), 10_000):
        batch = listing[start : start + 10_000]
        for index, (row_id, text) in enumerate(zip(batch["id"], batch["text"])):
            audio = f"{batch['audio'][index]}\t{_file_size(batch['audio'][index])}" if files_named else ""
            digest.update(f"{row_id}\t{text}\t{audio}\n".encode())
    return digest.hexdigest()


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _build_split(folder: Path, split: str, label: str, rows, pipeline: RowPipeline, workers: Workers, fingerprint: str) -> dict:
    staging = partial_path(folder / split)
    writer = SplitWriter(staging, pipeline.features(), fingerprint)
    kept, seconds, counts, input_rates = 0, 0.0, Counter(), Counter()
    # Dropped rows go to their file as they come: a source whose every row is missing (a wrong audio folder,
    # say) must not pile up 620k records in memory.
    with open(staging / DROPPED_NAME, "w", encoding="utf-8") as dropped_file:
        with tqdm(total=len(rows), desc=f"preparing {label}", unit="clip") as progress:
            for results in workers.results(rows):
                for stored, dropped in results:
                    if stored is not None:
                        input_rates[stored.pop(INPUT_RATE_KEY)] += 1
                        writer.write(stored)
                        kept += 1
                        seconds += stored["duration"]
                    else:
                        counts[dropped["reason"]] += 1
                        dropped_file.write(json.dumps({"split": split, **dropped}, ensure_ascii=False) + "\n")
                progress.update(len(results))
    writer.close()

    stamp = {
        "format_version": PREPARED_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "summary": {"kept": kept, "dropped": {reason: counts[reason] for reason in DROP_REASONS}, "seconds": round(seconds, 3),
                    # The rates the kept clips had before resampling to 16 kHz (8000 for call audio, say), by clips.
                    "input_rates": {str(rate): input_rates[rate] for rate in sorted(input_rates)}},
        "files": {path.name: {"size": path.stat().st_size, "sha256": sha256_file(path)} for path in sorted(staging.iterdir())},
    }
    atomic_write_json(staging / STAMP_NAME, stamp)
    final = folder / split
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    reasons = _drop_text(stamp["summary"]["dropped"])
    dropped_count = sum(counts.values())
    print(f"{label}: {kept} clips kept, {dropped_count} dropped" + (f" ({reasons})" if reasons else ""))
    return stamp


def _completed_stamp(folder: Path, fingerprint: str, label: str) -> dict | None:
    """The split's stamp if it was finished from these same inputs and no file has changed since, else None."""
    if not folder.is_dir():
        return None
    try:
        stamp = read_json(folder / STAMP_NAME)
    except (OSError, ValueError):
        print(f"{label}: no completion stamp, rebuilding")
        return None
    if stamp.get("fingerprint") != fingerprint or stamp.get("format_version") != PREPARED_FORMAT_VERSION:
        print(f"{label}: inputs or settings changed, rebuilding")
        return None
    for name, entry in stamp["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            print(f"{label}: {name} is missing or altered, rebuilding")
            return None
    return stamp


def _write_json_if_changed(path: Path, data) -> None:
    # Rewriting identical content would still change the file's time, and a re-run must leave files untouched.
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        atomic_write_json(path, data)


def _hash_json(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
