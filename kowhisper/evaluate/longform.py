"""Long recordings scored whole against their transcripts: meetings, lectures, anything longer than one clip.

`evaluate_model.py eval_longform=<manifest>` reads a manifest of recordings and whole-recording transcripts
(CSV, TSV or JSONL, read as data_source=manifest reads one: kowhisper.online.sources.manifest_entries). Every model
transcribes each recording through its family's long-form decoder, `Recognizer.transcribe_waveforms`, which is
what inference.py runs, and the whole transcript is scored against the whole reference:

- no-space CER: how a long transcript is spaced and broken into segments is arbitrary, so spaces do not count;
- kocer CER: numbers and Latin letters written as they are read count as right, too;
- deletion share: reference characters the transcript left out (deletions of the no-space alignment) over the
  reference characters. Long-form decoding loses text where a window or a segment is dropped; this share shows
  that apart from misheard words.

The base is measured beside the fine-tuned models. With several recordings each difference from the base gets a
paired-bootstrap interval over the recordings; one recording gives no interval. Results go to
<workspace>/evaluations/longform-<manifest name>-<8 hex of its path>/: one CSV per model (a row per recording)
and summary.json.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from kowhisper.common.audio import SAMPLING_RATE, AudioError, load_audio
from kowhisper.common.bootstrap import BootstrapSettings, Difference, compare_with_reference
from kowhisper.common.files import atomic_write_json
from kowhisper.common.text import kocer_breakdown, normalize_for_metric, rates_from_counts, utterance_counts
from kowhisper.config import Config
from kowhisper.evaluate.split import (
    Column,
    announce_replacement,
    evaluation_recognizer,
    file_name,
    model_entry,
    model_rows,
    models_to_evaluate,
    rate_column,
    utterance_rates,
    write_rows,
)
from kowhisper.families.base import ModelSource, Recognizer
from kowhisper.online.sources import DataError, manifest_entries
from kowhisper.serve.transcribe import SAMPLES_IN_FLIGHT

log = logging.getLogger("kowhisper")

LONGFORM_RATES = ("cer_nospace", "kocer_cer")


@dataclass(frozen=True)
class Recording:
    id: str
    audio: Path
    reference: str
    seconds: float


@dataclass
class LongformResult:
    source: ModelSource
    metrics: dict
    seconds: float  # wall-clock seconds the model took for every recording
    rows: list[dict] = field(default_factory=list)
    versus_base: dict[str, Difference] | None = None


def read_recordings(manifest: str, audio_column: str, text_column: str) -> list[Recording]:
    """The manifest's recordings, each decoded once here so that a missing or unreadable file, or a recording
    without a transcript, stops the evaluation with its line named before any model runs."""
    recordings = []
    for entry in manifest_entries(Path(manifest), audio_column, text_column, key="eval_longform"):
        where = f"{manifest} line {entry.line}"
        if not normalize_for_metric(entry.text):
            raise DataError(f"{where}: the transcript in column {text_column!r} is empty, so {entry.audio.name} cannot be scored")
        try:
            seconds = len(load_audio(entry.audio)) / SAMPLING_RATE
        except AudioError as error:
            raise DataError(f"{where}: {error}") from None
        recordings.append(Recording(entry.id, entry.audio, entry.text, seconds))
    return recordings


def transcribe_recordings(recognizer: Recognizer, recordings: list[Recording], batch_size: int, desc: str) -> list[str]:
    """Each recording's whole transcript, from the family's long-form decoder. Recordings are decoded and
    transcribed a group at a time, so a day of audio is never held in memory at once."""
    texts: list[str] = []
    with tqdm(total=0, desc=desc, file=sys.stderr) as bar:
        group: list[Recording] = []
        for position, recording in enumerate(recordings):
            group.append(recording)
            held = sum(r.seconds for r in group) * SAMPLING_RATE
            if held >= SAMPLES_IN_FLIGHT or position == len(recordings) - 1:
                waveforms = [load_audio(r.audio) for r in group]
                transcripts = recognizer.transcribe_waveforms(waveforms, batch_size=batch_size,
                                                              sources=[str(r.audio) for r in group], bar=bar)
                texts += [transcript.text for transcript in transcripts]
                group = []
    return texts


def score_recordings(recordings: list[Recording], hypotheses: list[str]) -> tuple[dict, list[dict]]:
    counts = [utterance_counts(r.reference, hypothesis) for r, hypothesis in zip(recordings, hypotheses)]
    rows = [{"id": r.id, "audio": str(r.audio), "duration": round(r.seconds, 3), "reference": r.reference, "hypothesis": hypothesis,
             **utterance_rates(count), "counts": count} for r, hypothesis, count in zip(recordings, hypotheses, counts)]
    rates = rates_from_counts(counts)
    chars = sum(c["cer_nospace_chars"] for c in counts)
    metrics = {
        "cer_nospace": rates["cer_nospace"],
        "kocer_cer": rates["kocer_cer"],
        "deletion_share": sum(c["cer_nospace_deletions"] for c in counts) / chars,
        "num_scored": len(counts),
        "audio_seconds": round(sum(r.seconds for r in recordings), 1),
        "breakdown": kocer_breakdown([r.reference for r in recordings], hypotheses),
    }
    for row in rows:
        row["deletion_share"] = row["counts"]["cer_nospace_deletions"] / row["counts"]["cer_nospace_chars"]
    return metrics, rows


def evaluate_longform_source(source: ModelSource, recordings: list[Recording], config: Config) -> LongformResult:
    recognizer = evaluation_recognizer(source, config)
    log.info("transcribing %d long recordings (%.1f min) with %s (%s)", len(recordings), sum(r.seconds for r in recordings) / 60,
             source.label, recognizer.description)
    started = time.perf_counter()
    hypotheses = transcribe_recordings(recognizer, recordings, config.per_device_eval_batch_size, desc=source.label)
    seconds = time.perf_counter() - started
    metrics, rows = score_recordings(recordings, hypotheses)
    return LongformResult(source, {**metrics, "backend": recognizer.description, "settings": recognizer.settings}, seconds, rows)


def longform_results_dir(workspace: Path, manifest: str) -> Path:
    path = Path(manifest).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:8]
    return Path(workspace) / "evaluations" / f"longform-{path.stem}-{digest}"


def real_time_factor(metrics: dict, result) -> str:
    return f"{result.seconds / metrics['audio_seconds'] if metrics['audio_seconds'] else math.nan:.2f}"


LONGFORM_COLUMNS = [
    rate_column("CER no-space", "cer_nospace"), rate_column("kocer CER", "kocer_cer"),
    rate_column("deleted", "deletion_share", digits=1), Column("recs", lambda metrics, result: str(metrics["num_scored"])),
    Column("audio min", lambda metrics, result: f"{metrics['audio_seconds'] / 60:.1f}"),
    Column("x real time", real_time_factor),
]


def format_longform_table(results: list[LongformResult], best: LongformResult | None, metric: str, settings: BootstrapSettings) -> str:
    lines = model_rows(results, best, LONGFORM_COLUMNS, LONGFORM_RATES)
    lines.append("deleted: reference characters the transcript left out, of all reference characters; x real time: "
                 "transcribing seconds per second of audio.")
    if any(r.versus_base for r in results):
        lines.append(f"vs base: percentage points, model minus base; {settings.describe(results[0].metrics['num_scored'], 'recordings')}. "
                     "better: the interval is below 0; worse: above 0; otherwise no clear difference.")
    elif len(results) > 1:
        lines.append("One recording: no interval on the differences (that needs several recordings).")
    if len(results) > 1 and best is not None:
        lines.append(f"* best by {metric}: {best.source.label} ({best.source.path})")
    return "\n".join(lines)


def run_longform_evaluation(config: Config, workspace: Path) -> tuple[dict, str]:
    """Score the base and the chosen models (eval_run, all_checkpoints as for a split) on the recordings of
    config.eval_longform; returns (summary, printable table)."""
    recordings = read_recordings(config.eval_longform, config.audio_column, config.text_column)
    sources = models_to_evaluate(workspace, config.eval_run, config.all_checkpoints)
    results = [evaluate_longform_source(source, recordings, config) for source in sources]
    settings = BootstrapSettings.from_config(config)
    base = next((r for r in results if r.source.kind == "base"), None)
    others = [r for r in results if r is not base]
    if base is not None and others and len(recordings) > 1:
        differences = compare_with_reference([row["counts"] for row in base.rows], {r.source.label: [row["counts"] for row in r.rows]
                                             for r in others}, ["all"] * len(recordings), LONGFORM_RATES, settings)
        for result in others:
            result.versus_base = differences[result.source.label]
    metric = config.metric_for_best_model if config.metric_for_best_model in LONGFORM_RATES else "cer_nospace"
    best = min(results, key=lambda r: r.metrics[metric])
    out_dir = longform_results_dir(workspace, config.eval_longform)
    announce_replacement(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = []
    for result in results:
        predictions = write_rows(out_dir / file_name(result.source.label), result.rows,
                                 ["id", "audio", "duration", "deletion_share", "reference", "hypothesis"])
        models.append({**model_entry(result, predictions), "transcribing_seconds": round(result.seconds, 1)})
    summary = {
        "manifest": str(Path(config.eval_longform).expanduser().resolve()),
        "recordings": len(recordings),
        "metric": metric,
        "best": best.source.label,
        "best_path": str(best.source.path),
        "bootstrap": settings.as_dict(len(recordings)) if any(r.versus_base for r in results) else None,
        "models": models,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary, format_longform_table(results, best, metric, settings)
