"""Runs side by side: what a user opens after trying several settings in one workspace.

`evaluate_model.py eval_run=all` scores the base and every finished run on one split; this module ranks them
and adds what each run was: its steps, its training time, its CER and kocer CER difference from the base with a
paired-bootstrap interval and verdict, and the config keys whose values differ between the runs (everything the
runs share, and keys that only name or place a run, are left out). The ranking is printed and written as runs.csv
and runs.md beside summary.json.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from kowhisper.common.bootstrap import Difference
from kowhisper.common.files import atomic_write_text, read_json
from kowhisper.common.text import format_percent
from kowhisper.common.workspace import RUN_CONFIG_NAME

# Keys that say where a run lives or what it is called, or that only affect evaluation and inference: they differ
# between runs without making the models differ.
NOT_SETTINGS = {
    "workspace", "output_dir", "run_name", "overwrite_output_dir", "resume_from_checkpoint", "report_to", "eval_split",
    "eval_run", "all_checkpoints", "adapter", "backend", "output_format", "transcripts_dir", "server_name", "server_port",
    "share", "demo_max_audio_s", "merged_dir", "ct2_dir", "ct2_quantization", "per_device_eval_batch_size",
    "dataloader_num_workers", "cuda_visible_devices", "logging_steps", "eval_longform", "bootstrap_resamples", "bootstrap_seed",
}


@dataclass
class RankedModel:
    label: str
    metrics: dict
    steps: int | None = None
    train_minutes: float | None = None
    settings: dict = field(default_factory=dict)
    versus_base: dict[str, Difference] | None = None  # rate -> the run minus the base, with its interval


def run_settings(run_dir: Path) -> tuple[int | None, float | None, dict]:
    """(optimizer steps, training minutes, config) of a finished run, from the files train_offline.py wrote."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    runtime = metrics.get("train", {}).get("train_runtime")
    config = OmegaConf.to_container(OmegaConf.load(run_dir / RUN_CONFIG_NAME)) if (run_dir / RUN_CONFIG_NAME).is_file() else {}
    return metrics.get("global_step"), None if runtime is None else runtime / 60, config


def differing_keys(configs: list[dict]) -> list[str]:
    """Config keys whose values are not the same in every run, in config order."""
    keys = [key for config in configs for key in config if key not in NOT_SETTINGS]
    ordered = list(dict.fromkeys(keys))
    return [key for key in ordered if len({repr(config.get(key)) for config in configs}) > 1]


def rank(models: list[RankedModel], metric: str) -> list[RankedModel]:
    """Best first by `metric`; models without a score go last."""
    return sorted(models, key=lambda m: (math.isnan(m.metrics[metric]), m.metrics[metric]))


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def ranking_rows(models: list[RankedModel], metric: str) -> tuple[list[str], list[list[str]]]:
    keys = differing_keys([m.settings for m in models if m.settings])
    header = ["rank", "model", "CER", "WER", "CER no-space", "kocer CER", "CER vs base", "kocer CER vs base", "steps", "train min", *keys]
    rows = []
    for position, model in enumerate(rank(models, metric), start=1):
        m = model.metrics
        versus = [model.versus_base[rate].describe() if model.versus_base else "-" for rate in ("cer", "kocer_cer")]
        rows.append([
            str(position), model.label, format_percent(m["cer"], 2), format_percent(m["wer"], 2), format_percent(m["cer_nospace"], 2),
            format_percent(m["kocer_cer"], 2), *versus,
            _value(model.steps), "-" if model.train_minutes is None else f"{model.train_minutes:.3g}",  # a test-sized run lasts seconds
            *(_value(model.settings.get(key)) if model.settings else "-" for key in keys),
        ])
    return header, rows


def format_ranking(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)


def write_ranking(out_dir: Path, header: list[str], rows: list[list[str]], dataset: str, metric: str, note: str = "") -> tuple[Path, Path]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    csv_path, md_path = Path(out_dir) / "runs.csv", Path(out_dir) / "runs.md"
    atomic_write_text(csv_path, buffer.getvalue())
    markdown = [f"Runs ranked by {metric} on {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    markdown += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    markdown += ["", note + "."] if note else []
    atomic_write_text(md_path, "\n".join(markdown) + "\n")
    return csv_path, md_path
