"""How good a model is on a prepared split: CER (the primary Korean metric), WER, spacing-free CER and kocer CER.

Text is scored in kowhisper.common.text's forms: CER, WER and spacing-free CER on the metric form (NFC, punctuation
removed, whitespace collapsed), kocer CER (numbers and Latin letters written as read count as right) on the label
form. Every model is run on the same utterances in the same batches, and the base model is always measured
beside the fine-tuned ones, so the table shows what fine-tuning added, with a paired-bootstrap interval on each
difference (kowhisper.common.bootstrap) saying whether it is more than the noise of this many utterances.

Outputs, under <workspace>/evaluations/<split>/ (a split from elsewhere: evaluations/<source>-<split>-<hash of its
path>/): one CSV per model (id, duration, reference, hypothesis, each rate and its edit counts) and summary.json
with every model's metrics, kocer's breakdown of its errors, its difference from the base and the best model.
Results already in that folder are replaced with a printed line that says so.

With backend=auto evaluation runs transformers (fp32 on CPU, fp16 on CUDA, bf16 where native), with each
adapter merged into a float copy of the base: that is the model as trained, and generating through a merged
float model avoids the 2-5x slowdown of 8-bit layers. backend=ct2 measures the int8 export instead.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from kowhisper.common.bootstrap import BootstrapSettings, Difference, compare_with_reference
from kowhisper.common.files import atomic_write_json
from kowhisper.common.text import CHARACTER_RATES, RATES, format_percent, kocer_breakdown, rates_by_source, utterance_counts
from kowhisper.common.workspace import SPLITS, list_runs, manifest_path, runs_dir, workspace_sources
from kowhisper.config import Config, TrainingArgumentsGroup
from kowhisper.evaluate.ranking import RankedModel, format_ranking, ranking_rows, run_settings, write_ranking
from kowhisper.families.base import (
    ModelError,
    ModelSource,
    Recognizer,
    base_source,
    final_model_dir,
    holds_trained_model,
    resolve_model,
    run_checkpoints,
    trained_source,
)
from kowhisper.families.registry import load_recognizer

log = logging.getLogger("kowhisper")

# The rates each fine-tuned model's difference from the base is bootstrapped for.
COMPARED_RATES = ("cer", "kocer_cer")
RATE_NAMES = {"cer": "CER", "wer": "WER", "cer_nospace": "CER no-space", "kocer_cer": "kocer CER"}
COUNT_COLUMNS = tuple(f"{rate}_{part}" for rate in CHARACTER_RATES for part in ("errors", "chars")) + ("cer_nospace_deletions",)


@dataclass
class EvalResult:
    source: ModelSource
    metrics: dict
    seconds: float
    rows: list[dict] = field(default_factory=list)
    versus_base: dict[str, Difference] | None = None  # rate -> this model minus the base; None for the base

    @property
    def seconds_per_utterance(self) -> float:
        return self.seconds / max(len(self.rows), 1)


def load_eval_split(workspace: Path, eval_split: str, max_samples: int | None):
    """(dataset, description): a workspace split by name (train/dev/test) of every source, each row tagged with its
    source and each source capped at max_samples rows; or one prepared dataset folder, as one source named after it."""
    if eval_split in SPLITS and manifest_path(workspace).is_file():
        parts = []
        for source in workspace_sources(workspace):
            folder = source.split_dir(eval_split)
            if folder.is_dir():
                parts.append(_tagged(_prepared_split(folder, max_samples), source.name))
        if not parts:
            raise ModelError(f"eval_split={eval_split!r}: no source of {workspace} has a {eval_split} split")
        return concatenate_datasets(parts), f"{eval_split} of {Path(workspace).resolve()}"
    path = Path(eval_split).expanduser()
    if not path.exists():
        raise ModelError(f"eval_split={eval_split!r}: neither a split of the workspace ({', '.join(SPLITS)}) nor a folder of that name")
    return _tagged(_prepared_split(path, max_samples), path.resolve().name), str(path.resolve())


def _prepared_split(path: Path, max_samples: int | None):
    dataset = load_from_disk(str(path))
    if not isinstance(dataset, Dataset):
        raise ModelError(f"{path} holds several splits ({', '.join(dataset)}); give eval_split the folder of one of them")
    missing = {"id", "text", "duration"} - set(dataset.column_names)
    if missing:
        raise ModelError(f"{path} is not a prepared split: it lacks {', '.join(sorted(missing))} (prepare it with the online setup)")
    if len(dataset) == 0:
        raise ModelError(f"{path} has no utterances to evaluate")
    return dataset.select(range(min(max_samples, len(dataset)))) if max_samples is not None else dataset


def _tagged(dataset, source: str):
    return dataset if "source" in dataset.column_names else dataset.add_column("source", [source] * len(dataset))


def _latest_run_with_checkpoints(workspace: Path) -> Path | None:
    runs = [run for run in list_runs(workspace) if run_checkpoints(run) or final_model_dir(run) is not None]
    return max(runs, key=lambda run: max(p.stat().st_mtime for p in run.iterdir()), default=None)


def models_to_evaluate(workspace: Path, eval_run: str | None, all_checkpoints: bool) -> list[ModelSource]:
    """The base first, then: the run's final model (eval_run, else the latest run), or with all_checkpoints
    every checkpoint of that run and its final model. eval_run=base measures the base alone."""
    base = base_source(workspace)
    if eval_run == "base":
        return [base]
    if eval_run == "all":
        finished = [run for run in list_runs(workspace) if final_model_dir(run) is not None]
        if not finished:
            raise ModelError(f"eval_run=all but {runs_dir(workspace)} holds no finished run (a run folder with adapter/ or model/)")
        return [base] + [trained_source(workspace, final_model_dir(run)) for run in finished]
    if not all_checkpoints:
        chosen = resolve_model(workspace, eval_run)
        return [base] if chosen.kind == "base" else [base, chosen]
    if eval_run is None:
        run = _latest_run_with_checkpoints(workspace)
        if run is None:
            raise ModelError(f"all_checkpoints=true but {runs_dir(workspace)} holds no run with checkpoints")
    else:
        run = Path(eval_run).expanduser()
        run = run if run.exists() else runs_dir(workspace) / eval_run
        # A checkpoint or adapter folder names its run.
        if holds_trained_model(run) and not run_checkpoints(run):
            run = run.parent
    candidates = run_checkpoints(run) + ([final_model_dir(run)] if final_model_dir(run) is not None else [])
    if not candidates:
        raise ModelError(f"{run} has no checkpoint-N folders with a trained model and no adapter/ or model/ to evaluate")
    return [base] + [trained_source(workspace, path) for path in candidates]


def transcribe_split(recognizer: Recognizer, dataset, batch_size: int, desc: str) -> list[str]:
    """Hypotheses for every row of a prepared split, batched longest first (a batch decodes as long as its
    longest clip, and similar lengths pad least), returned in the split's order."""
    durations = list(dataset["duration"])
    # numpy format hands out stored arrays as they are; the default gives nested Python lists.
    stored = dataset.with_format("numpy")
    order = sorted(range(len(dataset)), key=lambda i: durations[i], reverse=True)
    hypotheses: dict[int, str] = {}
    with tqdm(total=len(order), desc=desc, unit="utt", file=sys.stderr) as bar:
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            hypotheses.update(zip(batch, recognizer.transcribe_prepared([stored[i] for i in batch])))
            bar.update(len(batch))
    return [hypotheses[i] for i in range(len(dataset))]


def score(dataset, hypotheses: list[str]) -> tuple[dict, list[dict]]:
    """Rates overall and per source (kowhisper.common.text.rates_by_source, as training's dev metrics are scored), kocer's
    breakdown of the errors, and per-utterance rows with each rate and its edit counts."""
    references = list(dataset["text"])
    sources = list(dataset["source"]) if "source" in dataset.column_names else ["all"] * len(references)
    counts = [utterance_counts(reference, hypothesis) for reference, hypothesis in zip(references, hypotheses)]
    rows = [
        {"id": id_, "source": source, "duration": round(float(duration), 3), "reference": reference, "hypothesis": hypothesis,
         **utterance_rates(count), "counts": count}
        for id_, source, duration, reference, hypothesis, count in zip(list(dataset["id"]), sources, list(dataset["duration"]),
                                                                       references, hypotheses, counts)
    ]
    overall, per_source = rates_by_source(references, hypotheses, counts, sources)
    return {**overall, "per_source": per_source, "breakdown": kocer_breakdown(references, hypotheses)}, rows


def utterance_rates(counts: dict | None) -> dict[str, float]:
    """Each character rate of one utterance from its edit counts; NaN where it is not scored."""
    if counts is None:
        return {rate: float("nan") for rate in CHARACTER_RATES}
    return {rate: counts[f"{rate}_errors"] / counts[f"{rate}_chars"] if counts[f"{rate}_chars"] else float("nan")
            for rate in CHARACTER_RATES}


def evaluation_recognizer(source: ModelSource, config: Config) -> Recognizer:
    if config.backend == "auto" and source.kind != "ct2":
        # The model as trained: transformers, with any adapter merged in float (see the module docstring).
        config = dataclasses.replace(config, backend="hf")
    return load_recognizer(source, config)


def evaluate_source(source: ModelSource, dataset, config: Config, recognizer: Recognizer | None = None) -> EvalResult:
    """`source` scored on `dataset`, run by `recognizer` (unset: as evaluate_model.py runs it, evaluation_recognizer)."""
    recognizer = recognizer or evaluation_recognizer(source, config)
    log.info("evaluating %s (%s%s) on %d utterances", source.label, recognizer.description,
             f", {recognizer.settings}" if recognizer.settings else "", len(dataset))
    started = time.perf_counter()
    hypotheses = transcribe_split(recognizer, dataset, config.per_device_eval_batch_size, desc=source.label)
    seconds = time.perf_counter() - started
    metrics, rows = score(dataset, hypotheses)
    return EvalResult(source, {**metrics, "backend": recognizer.description, "settings": recognizer.settings}, seconds, rows)


def ranking_metric(config: TrainingArgumentsGroup) -> str:
    # metric_for_best_model may be "loss", which generation does not give; CER is the primary metric.
    return config.metric_for_best_model if config.metric_for_best_model in RATES else "cer"


def best_of(results: list[EvalResult], metric: str) -> EvalResult | None:
    """The model with the lowest `metric`, the base included: fine-tuning can make a model worse, and then the
    base is the one to use. On a tie the earlier entry wins (the base, then fewer steps)."""
    candidates = [r for r in results if not math.isnan(r.metrics[metric])]
    return min(candidates, key=lambda r: r.metrics[metric], default=None)


def compare_with_base(results: list[EvalResult], groups: list[str], settings: BootstrapSettings) -> None:
    """Set each fine-tuned result's `versus_base`: its CER and kocer CER minus the base's, with paired-bootstrap
    intervals over the utterances (drawn within each source)."""
    base = next((r for r in results if r.source.kind == "base"), None)
    others = [r for r in results if r is not base]
    if base is None or not others:
        return
    differences = compare_with_reference([row["counts"] for row in base.rows],
                                         {r.source.label: [row["counts"] for row in r.rows] for r in others},
                                         groups, COMPARED_RATES, settings)
    for result in others:
        result.versus_base = differences[result.source.label]


def worse_than_base(results: list[EvalResult], metric: str) -> list[str]:
    """A warning for each fine-tuned model that scores worse than the base on this split, with the paired interval
    where there is one (a difference within the noise is said to be)."""
    base = next((r for r in results if r.source.kind == "base"), None)
    if base is None or math.isnan(base.metrics[metric]):
        return []
    warnings = []
    for r in results:
        if r.source.kind == "base" or math.isnan(r.metrics[metric]) or r.metrics[metric] <= base.metrics[metric]:
            continue
        interval = (r.versus_base or {}).get(metric)
        paired = f" (difference {interval.describe()})" if interval is not None else ""
        warnings.append(
            f"{r.source.label} is worse than the base model on this split: {RATE_NAMES[metric]} {format_percent(r.metrics[metric], 2)} "
            f"against {format_percent(base.metrics[metric], 2)} zero-shot{paired}. Use the base, or retrain with a lower "
            "learning_rate, fewer steps or more data."
        )
    return warnings


@dataclass(frozen=True)
class Column:
    """One column of a model table: its title and the cell text from a row's metrics and its result (None on a
    per-source row under a model). Its width is its widest cell's."""

    title: str
    cell: Callable[[dict, object], str]


def rate_column(title: str, rate: str, digits: int = 2) -> Column:
    return Column(title, lambda metrics, result: format_percent(metrics[rate], digits))


# Spaces between two columns of a model table, however wide their cells.
COLUMN_GAP = 2


def model_rows(results: list, best, columns: list[Column], compared_rates: tuple[str, ...]) -> list[str]:
    """The rows every model table shares: a model per row (per-source rows under it when it has several sources),
    the paired difference from the base per compared rate, and * on the best when there is more than one model.
    Results are EvalResult or LongformResult: a source, metrics and versus_base. Each column is as wide as its
    widest cell, so a wide cell (a wide interval) never runs into the next."""
    compared = any(r.versus_base for r in results)
    # (label, metric cells, comparison cells, result): the header, then a model's row and its per-source rows.
    table = [("model", [column.title for column in columns],
              [RATE_NAMES[rate] + " vs base" for rate in compared_rates] if compared else [], None)]
    for result in results:
        versus = [result.versus_base[rate].describe() if result.versus_base else "-" for rate in compared_rates] if compared else []
        table.append((result.source.label, [column.cell(result.metrics, result) for column in columns], versus, result))
        per_source = result.metrics.get("per_source", {})
        if len(per_source) > 1:
            table += [("  " + name, [column.cell(metrics, None) for column in columns], [], None) for name, metrics in per_source.items()]
    label_width = max(len(label) for label, _, _, _ in table)
    widths = [max(len(cells[i]) for _, cells, _, _ in table) for i in range(len(columns))]
    versus_widths = [max(len(versus[i]) for _, _, versus, _ in table if versus) for i in range(len(compared_rates))] if compared else []
    gap = " " * COLUMN_GAP
    lines = []
    for label, cells, versus, result in table:
        line = f"{label:<{label_width}}" + "".join(f"{gap}{cell:>{width}}" for cell, width in zip(cells, widths))
        line += "".join(f"{gap}{cell:<{width}}" for cell, width in zip(versus, versus_widths))
        # The mark goes last, so the leading columns split on whitespace the same on every row.
        lines.append(line.rstrip() + ("  *" if len(results) > 1 and result is not None and result is best else ""))
    return lines


SPLIT_COLUMNS = [
    rate_column("CER", "cer"), rate_column("WER", "wer"), rate_column("CER no-space", "cer_nospace"),
    rate_column("kocer CER", "kocer_cer"), Column("utts", lambda metrics, result: str(metrics["num_scored"])),
    Column("s/utt", lambda metrics, result: f"{result.seconds_per_utterance:.2f}" if result else ""),
]


def format_table(results: list[EvalResult], best: EvalResult | None, metric: str, settings: BootstrapSettings) -> str:
    lines = model_rows(results, best, SPLIT_COLUMNS, COMPARED_RATES)
    if any(r.versus_base for r in results):
        lines.append(f"vs base: percentage points, model minus base; {settings.describe(results[0].metrics['num_scored'])}. "
                     "better: the interval is below 0; worse: above 0; otherwise no clear difference.")
    lines += breakdown_lines(results)
    if len(results) > 1 and best is not None:
        lines.append(f"* best by {metric}: {best.source.label} ({best.source.path})")
    lines += [f"WARNING: {warning}" for warning in worse_than_base(results, metric)]
    return "\n".join(lines)


def breakdown_lines(results: list[EvalResult]) -> list[str]:
    """kocer's split of each model's errors (text as written, spaces and punctuation counted) by kind, under a
    heading that is there only when a model has a breakdown to show."""
    shown = [r for r in results if r.metrics.get("breakdown")]
    width = max((len(r.source.label) for r in shown), default=0) + 2
    lines = []
    for result in shown:
        b = result.metrics["breakdown"]
        shares = ", ".join(f"{name} {100 * b['shares'][key]:.0f}%" for key, name in
                           (("spacing", "spacing"), ("punctuation", "punctuation"), ("numbers_latin", "numbers/Latin"), ("real", "real")))
        lines.append(f"  {result.source.label:<{width}}{b['raw_errors']:>7,} errors: {shares}")
    return ["Where the errors are (kocer: errors of the text as written, by kind):", *lines] if lines else []


def file_name(label: str) -> str:
    return label.replace("/", "__") + ".csv"


def results_dir(workspace: Path, eval_split: str) -> Path:
    """Where an evaluation's files go: evaluations/<split> for a split of this workspace; for a split folder from
    elsewhere evaluations/<parent>-<folder>-<8 hex of its resolved path>, e.g. cv-test-1f2e3d4c for another
    workspace's data/cv/test, so it can never land on this workspace's own results."""
    if eval_split in SPLITS and manifest_path(workspace).is_file():
        return Path(workspace) / "evaluations" / eval_split
    path = Path(eval_split).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:8]
    return Path(workspace) / "evaluations" / f"{path.parent.name}-{path.name}-{digest}"


def announce_replacement(out_dir: Path) -> None:
    """One line when the folder already holds results: they are about to be replaced, and which files stay."""
    if not out_dir.is_dir():
        return
    earlier = sorted(p.name for p in out_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not earlier:
        return
    written = ""
    if (out_dir / "summary.json").is_file():
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime((out_dir / "summary.json").stat().st_mtime))
        written = f" (summary.json of {stamp})"
    print(f"replacing the earlier results in {out_dir}{written}: files of the same name are overwritten, others "
          f"stay ({', '.join(earlier)})", file=sys.stderr)


def write_rows(path: Path, rows: list[dict], first_columns: list[str]) -> Path:
    """Per-utterance (or per-recording) rows as CSV, through a temporary file: each rate rounded, then its counts."""
    partial = path.with_name(f".{path.name}.tmp")
    with open(partial, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*first_columns, *CHARACTER_RATES, *COUNT_COLUMNS], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            rates = {rate: "" if math.isnan(row[rate]) else round(row[rate], 4) for rate in CHARACTER_RATES}
            writer.writerow({**row, **rates, **(row["counts"] or {})})
    partial.replace(path)
    return path


def model_entry(result: EvalResult, predictions: Path) -> dict:
    return {
        "label": result.source.label,
        "kind": result.source.kind,
        "path": str(result.source.path),
        **result.metrics,
        "versus_base": None if result.versus_base is None else {rate: d.as_dict() for rate, d in result.versus_base.items()},
        "predictions": str(predictions),
    }


def write_outputs(out_dir: Path, results: list[EvalResult], best: EvalResult | None, metric: str, dataset_path: str,
                  settings: BootstrapSettings) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    models = []
    for result in results:
        predictions = write_rows(out_dir / file_name(result.source.label), result.rows,
                                 ["id", "source", "duration", "reference", "hypothesis"])
        models.append({**model_entry(result, predictions), "seconds_per_utterance": round(result.seconds_per_utterance, 3)})
    summary = {
        "dataset": dataset_path,
        "utterances": len(results[0].rows),
        "metric": metric,
        "best": best.source.label if best else None,
        "best_path": str(best.source.path) if best else None,
        "bootstrap": settings.as_dict(results[0].metrics["num_scored"]) if any(r.versus_base for r in results) else None,
        "warnings": worse_than_base(results, metric),
        "models": models,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def run_evaluation(config: Config, workspace: Path, out_dir: Path | None = None) -> tuple[dict, str]:
    """Evaluate the base and the chosen run (every checkpoint of it, or with eval_run=all every finished run,
    ranked side by side); returns (summary, printable table)."""
    dataset, dataset_path = load_eval_split(workspace, config.eval_split, config.max_samples)
    sources = models_to_evaluate(workspace, config.eval_run, config.all_checkpoints)
    results = [evaluate_source(source, dataset, config) for source in sources]
    settings = BootstrapSettings.from_config(config)
    compare_with_base(results, [row["source"] for row in results[0].rows], settings)
    metric = ranking_metric(config)
    best = best_of(results, metric)
    out_dir = out_dir or results_dir(workspace, config.eval_split)
    announce_replacement(out_dir)
    summary = write_outputs(out_dir, results, best, metric, str(dataset_path), settings)
    table = format_table(results, best, metric, settings)
    if config.eval_run == "all":
        table = _rank_runs(results, metric, out_dir, str(dataset_path), summary, settings)
    return summary, table


def _rank_runs(results: list[EvalResult], metric: str, out_dir: Path, dataset: str, summary: dict, settings: BootstrapSettings) -> str:
    models = []
    for result in results:
        run = result.source.run_dir
        steps, minutes, run_config = run_settings(run) if run is not None else (None, None, {})
        models.append(RankedModel(result.source.label, result.metrics, steps, minutes, run_config, result.versus_base))
    header, rows = ranking_rows(models, metric)
    interval_note = f"vs base: percentage points, run minus base; {settings.describe(summary['utterances'])}"
    csv_path, md_path = write_ranking(out_dir, header, rows, dataset, metric, interval_note)
    summary["ranking"] = {"csv": str(csv_path), "markdown": str(md_path)}
    atomic_write_json(out_dir / "summary.json", summary)
    warnings = [f"WARNING: {warning}" for warning in summary["warnings"]]
    return "\n".join([f"Runs ranked by {metric}:", format_ranking(header, rows), interval_note + ".", *breakdown_lines(results),
                      *warnings, f"ranking: {csv_path}, {md_path}"])
