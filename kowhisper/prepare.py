"""Source rows -> the workspace's prepared splits: decoded, checked, featurised and saved with datasets.

Each split is built in a hidden sibling folder and renamed into place only when complete, with a stamp
(`.complete.json`) holding a fingerprint of everything that decides its content and the digest of every
file. A later run skips a split whose stamp matches and whose files are intact; anything else is rebuilt.
Bad rows never stop a run: each is dropped with a reason and listed in data/report.json.

Workers are forked processes fed chunks of rows (a bounded number in flight, so hf audio bytes are read
only as fast as they are used); the main process writes the results straight to Arrow. On the 2-core test
machine this was as fast as datasets.map(num_proc=2) and, unlike map, needs no extra columns and filter
pass to carry dropped rows out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path

from datasets import Dataset, Value
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from kowhisper.audio import SAMPLING_RATE, AudioError, load_audio
from kowhisper.sources import DataError, SourceRows, load_source
from kowhisper.text import normalize_transcript
from kowhisper.whisper.features import LogMel, dataset_features, label_ids
from kowhisper.workspace import SPLITS, data_dir, model_dir, report_path, split_dir
from utils import atomic_write_json, read_json, sha256_file

# Bump when the same inputs would now give different stored rows, so old splits are rebuilt, not trusted.
# 2: labels start with a space, as Whisper's own transcripts do (features.label_ids).
PREPARED_FORMAT_VERSION = 2
STAMP_NAME = ".complete.json"
DROP_REASONS = ("missing", "empty_audio", "undecodable", "empty_text", "too_long", "labels_too_long")
WHISPER_WINDOW_S = 30.0
# Rows per task sent to a worker: large enough that pickling and queueing cost little beside decoding,
# small enough that the progress bar moves and few hf audio bytes are held in flight.
CHUNK_ROWS = 16

__all__ = ["DROP_REASONS", "DataError", "format_summary", "load_processor", "prepare_data"]


def prepare_data(config) -> dict:
    """Build data/train, data/dev and data/test in config.workspace and the drop report; returns the summary
    {split: {"kept": n, "dropped": {reason: n}, "seconds": total kept audio}}.

    Raises DataError when the source is missing or unusable, or when a split ends up with no rows (after
    writing the report, so the reasons can be read)."""
    if config.max_duration_s > WHISPER_WINDOW_S:
        raise DataError(f"max_duration_s={config.max_duration_s} is over Whisper's {WHISPER_WINDOW_S:.0f} s window; "
                        "longer clips would be cut while their labels are not")
    workspace = config.workspace_dir
    source = load_source(config)
    print(f"source: {source.description}")
    for note in source.notes:
        print(f"note: {note}")
    pipeline = RowPipeline.from_processor(load_processor(config), config)

    _remove_leftover_temporaries(workspace)
    stamps = {}
    with _worker_pool(pipeline, config.num_proc) as pool:
        for split in SPLITS:
            rows = source.splits[split]
            fingerprint = split_fingerprint(rows, source, pipeline)
            stamps[split] = _completed_stamp(split_dir(workspace, split), fingerprint)
            if stamps[split] is not None:
                print(f"{split}: skip, already prepared ({stamps[split]['summary']['kept']} clips, inputs unchanged)")
                continue
            stamps[split] = _build_split(workspace, split, rows, pipeline, pool, config.num_proc, fingerprint)

    summary = {split: stamps[split]["summary"] for split in SPLITS}
    report = {
        "source": {"data_source": config.data_source, "data_path": config.data_path, "description": source.description},
        "splits": summary,
        "dropped": [row for split in SPLITS for row in stamps[split]["dropped_rows"]],
    }
    _write_json_if_changed(report_path(workspace), report)
    empty = [split for split in SPLITS if summary[split]["kept"] == 0]
    if empty:
        details = "; ".join(f"{split} ({_drop_text(summary[split]['dropped']) or 'no source rows'})" for split in empty)
        raise DataError(f"no usable rows in {details}; see {report_path(workspace)}")
    return summary


def load_processor(config):
    """The workspace's processor when the model step has saved it, else config.model_name_or_path's."""
    from transformers import WhisperProcessor

    local = model_dir(config.workspace_dir)
    source = str(local) if (local / "tokenizer_config.json").is_file() else config.model_name_or_path
    try:
        return WhisperProcessor.from_pretrained(source)
    except Exception as error:  # transformers raises OSError, ValueError or Hub errors depending on the cause
        raise DataError(
            f"cannot load the Whisper processor from {source}: {type(error).__name__}: {error}. "
            f"Run download_model.py first so {local} holds the model and its processor."
        ) from None


def format_summary(summary: dict) -> str:
    """The per-split table download_data.py and run_online_setup.py print."""
    lines = [f"{'split':<6} {'kept':>7} {'hours':>7}  dropped"]
    for split, entry in summary.items():
        lines.append(f"{split:<6} {entry['kept']:>7} {entry['seconds'] / 3600:>7.2f}  {_drop_text(entry['dropped']) or '-'}")
    return "\n".join(lines)


def _drop_text(dropped: dict) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in dropped.items() if count)


# ---- one row -------------------------------------------------------------------------------------------------


class RowPipeline:
    """Turns a source row into a stored row or a drop record. Built once and inherited by every worker."""

    def __init__(self, feature_extractor, tokenizer, max_duration_s: float, max_label_tokens: int):
        self.log_mel = LogMel(feature_extractor)
        self.tokenizer = tokenizer
        self.max_duration_s = max_duration_s
        self.max_label_tokens = max_label_tokens
        self.identity = _hash_json(
            {
                "format": PREPARED_FORMAT_VERSION,
                "feature_extractor": feature_extractor.to_dict(),
                "vocabulary": sorted(tokenizer.get_vocab().items()),
                "prefix": label_ids(tokenizer, ""),
                "max_duration_s": max_duration_s,
                "max_label_tokens": max_label_tokens,
            }
        )

    @classmethod
    def from_processor(cls, processor, config) -> RowPipeline:
        tokenizer = processor.tokenizer
        tokenizer.set_prefix_tokens(language=config.language, task=config.task, predict_timestamps=False)
        expected = [f"<|{config.language_abbr}|>", f"<|{config.task}|>", "<|notimestamps|>"]
        found = tokenizer.convert_ids_to_tokens(label_ids(tokenizer, "가"))
        if found[:3] != expected or found[-1] != tokenizer.eos_token:
            raise DataError(
                f"labels would start {found[:3]} and end {found[-1]!r}, not {expected} ... {tokenizer.eos_token!r}: "
                f"check language={config.language!r}, language_abbr={config.language_abbr!r} and task={config.task!r}"
            )
        return cls(processor.feature_extractor, tokenizer, config.max_duration_s, config.max_label_tokens)

    @property
    def n_mels(self) -> int:
        return self.log_mel.n_mels

    def __call__(self, row: dict) -> tuple[dict | None, dict | None]:
        """(stored row, None) or (None, drop record). Text is checked first: it costs nothing beside decoding."""
        text = normalize_transcript(row["text"])
        if not text:
            return None, self._drop(row, "empty_text", "transcript is empty after normalisation")
        labels = label_ids(self.tokenizer, text)
        if len(labels) > self.max_label_tokens:
            return None, self._drop(row, "labels_too_long", f"{len(labels)} label tokens > max_label_tokens={self.max_label_tokens}")
        try:
            waveform = _decode(row["audio"])
        except AudioError as error:
            return None, self._drop(row, error.kind, str(error))
        duration = len(waveform) / SAMPLING_RATE
        if duration > self.max_duration_s:
            return None, self._drop(row, "too_long", f"{duration:.2f} s > max_duration_s={self.max_duration_s}")
        return {"id": row["id"], "text": text, "duration": duration, "input_features": self.log_mel(waveform), "labels": labels}, None

    @staticmethod
    def _drop(row: dict, reason: str, detail: str) -> dict:
        return {"id": row["id"], "file": _audio_name(row["audio"]), "reason": reason, "detail": detail}


def _decode(audio):
    if isinstance(audio, dict):  # datasets' undecoded Audio: embedded bytes, else a local file
        return load_audio(audio["bytes"] if audio.get("bytes") else audio.get("path") or b"")
    return load_audio(audio)


def _audio_name(audio) -> str:
    return str(audio.get("path") or "(embedded audio)") if isinstance(audio, dict) else str(audio)


# ---- workers -------------------------------------------------------------------------------------------------

_worker_pipeline: RowPipeline | None = None


def _start_worker(pipeline: RowPipeline) -> None:
    global _worker_pipeline
    import torch

    # num_proc processes already fill the cores; torch's own intra-op threads on top would only contend.
    torch.set_num_threads(1)
    _worker_pipeline = pipeline


def _process_chunk(rows: list[dict]) -> list[tuple[dict | None, dict | None]]:
    return [_worker_pipeline(row) for row in rows]


def _worker_pool(pipeline: RowPipeline, num_proc: int):
    if num_proc == 1:
        return nullcontext(None)
    # fork: workers inherit the tokenizer and mel filters instead of re-importing torch and transformers.
    # The executor starts its processes on the first task, so a run that skips every split forks nothing.
    return ProcessPoolExecutor(num_proc, mp_context=get_context("fork"), initializer=_start_worker, initargs=(pipeline,))


def _outcomes(rows, pipeline: RowPipeline, pool: ProcessPoolExecutor | None, num_proc: int):
    """Results chunk by chunk, in row order, with at most two chunks per worker read ahead."""
    chunks = (_read_chunk(rows, start) for start in range(0, len(rows), CHUNK_ROWS))
    if pool is None:
        for chunk in chunks:
            yield [pipeline(row) for row in chunk]
        return
    in_flight = deque()
    for chunk in chunks:
        in_flight.append(pool.submit(_process_chunk, chunk))
        if len(in_flight) >= 2 * num_proc:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


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


def _build_split(workspace: Path, split: str, rows, pipeline: RowPipeline, pool, num_proc: int, fingerprint: str) -> dict:
    staging, arrow_file = _temporaries(workspace, split)
    staging.parent.mkdir(parents=True, exist_ok=True)
    kept, seconds, dropped_rows = 0, 0.0, []
    with ArrowWriter(features=dataset_features(pipeline.n_mels), path=str(arrow_file)) as writer:
        with tqdm(total=len(rows), desc=f"preparing {split}", unit="clip") as progress:
            for results in _outcomes(rows, pipeline, pool, num_proc):
                for stored, dropped in results:
                    if stored is not None:
                        writer.write(stored)
                        kept += 1
                        seconds += stored["duration"]
                    else:
                        dropped_rows.append({"split": split, **dropped})
                progress.update(len(results))
        writer.finalize()
    Dataset.from_file(str(arrow_file)).save_to_disk(str(staging))
    arrow_file.unlink()

    counts = Counter(row["reason"] for row in dropped_rows)
    stamp = {
        "format_version": PREPARED_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "summary": {"kept": kept, "dropped": {reason: counts[reason] for reason in DROP_REASONS}, "seconds": round(seconds, 3)},
        "dropped_rows": dropped_rows,
        "files": {path.name: {"size": path.stat().st_size, "sha256": sha256_file(path)} for path in sorted(staging.iterdir())},
    }
    atomic_write_json(staging / STAMP_NAME, stamp)
    final = split_dir(workspace, split)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    reasons = _drop_text(stamp["summary"]["dropped"])
    print(f"{split}: {kept} clips kept, {len(dropped_rows)} dropped" + (f" ({reasons})" if reasons else ""))
    return stamp


def _completed_stamp(folder: Path, fingerprint: str) -> dict | None:
    """The split's stamp if it was finished from these same inputs and no file has changed since, else None."""
    if not folder.is_dir():
        return None
    try:
        stamp = read_json(folder / STAMP_NAME)
    except (OSError, ValueError):
        print(f"{folder.name}: no completion stamp, rebuilding")
        return None
    if stamp.get("fingerprint") != fingerprint or stamp.get("format_version") != PREPARED_FORMAT_VERSION:
        print(f"{folder.name}: inputs or settings changed, rebuilding")
        return None
    for name, entry in stamp["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            print(f"{folder.name}: {name} is missing or altered, rebuilding")
            return None
    return stamp


def _temporaries(workspace: Path, split: str) -> tuple[Path, Path]:
    folder = data_dir(workspace)
    return folder / f".{split}.tmp", folder / f".{split}.rows.tmp"


def _remove_leftover_temporaries(workspace: Path) -> None:
    """What a killed run left half-written is never trusted."""
    for split in SPLITS:
        for path in _temporaries(workspace, split):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _write_json_if_changed(path: Path, data) -> None:
    # Rewriting identical content would still change the file's time, and a re-run must leave files untouched.
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        atomic_write_json(path, data)


def _hash_json(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
