"""The untrained base as a training run's baseline and candidate: its dev score measured (or reused) before the first
step, the best-model tracking that starts from it, its weights kept to fall back on, and the run's verdict against it
with paired-bootstrap intervals."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import kocer
import torch
from transformers import TrainerCallback

from kowhisper.common.bootstrap import BootstrapSettings, Difference, compare_with_reference
from kowhisper.common.files import atomic_write_json, read_json
from kowhisper.common.text import RATES, format_percent
from kowhisper.config import Config
from kowhisper.train.dev_scoring import DEV_UTTERANCES_DIR, dev_metrics_summary

ZERO_SHOT_FILE = "zero_shot.json"
# The rates whose dev difference from zero-shot gets a paired-bootstrap interval in the run's verdict.
COMPARED_RATES = ("cer", "kocer_cer")
ZERO_SHOT_CACHE = ".zero_shot"


class ZeroShotAsBest(TrainerCallback):
    """The zero-shot base as the first candidate for the best model: the Trainer's best metric starts at the base's dev
    score, so only a checkpoint that beats the base becomes best, and early stopping counts evaluations that fail to beat
    it. (A TrainerCallback; a resumed run keeps the best metric its checkpoint recorded.)"""

    def __init__(self, zero_shot_metric: float):
        self.zero_shot_metric = zero_shot_metric

    def on_train_begin(self, args, state, control, **kwargs):
        if state.best_metric is None:
            state.best_metric = self.zero_shot_metric


class BaseWeights:
    """A copy, on the CPU, of the weights training will change, taken before the first step (or before a resumed run
    loads its checkpoint): what the run's final model is set back to when no checkpoint beat the base on dev. LoRA
    weights for a LoRA run (a few MB), every trained weight for full fine-tuning (the model's size)."""

    def __init__(self, model):
        self.values = {name: parameter.detach().to("cpu", copy=True) for name, parameter in model.named_parameters()
                       if parameter.requires_grad}

    def restore(self, model) -> None:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in self.values:
                    parameter.copy_(self.values[name].to(parameter.device, parameter.dtype))


def base_beats(zero_shot: dict, final: dict, metric: str) -> bool:
    """Whether the untrained base scored better on dev than the run's final model."""
    before, after = zero_shot.get(metric), final.get(metric)
    return before is not None and after is not None and before < after


def zero_shot_dev_metrics(trainer, run_dir: Path, dev, settings: dict, report=print) -> dict:
    """Dev metrics of the base model, measured before the first step as the base runs (a Whisper base at its full
    window), so the log and the curves start from what fine-tuning has to beat.

    LoRA starts as a no-op (its B matrices are zero) and full fine-tuning from the base's own weights, so the model
    before training is the base. The result, with each dev clip's edit counts, goes to <run>/zero_shot.json and to a
    cache under <workspace>/runs/.zero_shot, keyed by `settings` (base weights, precision, generation length, batch
    size), the dev clips and what is scored (the rates and kocer's version), so the next run of the same workspace,
    or this one resumed, does not generate it again.
    """
    # The labels count too: the dev loss is computed against them.
    dev_rows = [[str(row_id), [int(token) for token in labels]] for row_id, labels in zip(dev["id"], dev["labels"])]
    scoring = {"rates": list(RATES), "kocer": kocer.__version__}
    key = hashlib.sha256(json.dumps({"settings": settings, "dev": dev_rows, "scoring": scoring}, sort_keys=True).encode()).hexdigest()
    cached = Path(run_dir).parent / ZERO_SHOT_CACHE / f"{key}.json"
    if cached.is_file():
        record = read_json(cached)
        metrics, counts = record["metrics"], record["counts"]
        report("Zero-shot dev metrics of the base model reused from an earlier run with the same base, dev clips and settings")
    else:
        report("Evaluating the base model on dev before training (zero-shot)")
        metrics = dev_metrics_summary(trainer.evaluate_base_model())
        counts = trainer.compute_metrics.last_counts
    if trainer.is_world_process_zero():
        # Each dev clip's edit counts too, for the paired comparison of the final model with zero-shot.
        record = {"key": key, "settings": settings, "metrics": metrics, "counts": counts}
        atomic_write_json(cached, record)
        atomic_write_json(Path(run_dir) / ZERO_SHOT_FILE, record)
    return metrics


@dataclass(frozen=True)
class Verdict:
    """Did fine-tuning beat the base on dev? `line` says it in one sentence, with advice when it did not, and
    `versus_zero_shot` holds the paired-bootstrap difference of CER and kocer CER (empty without per-clip counts)."""

    improved: bool
    line: str
    versus_zero_shot: dict[str, Difference] = field(default_factory=dict)
    bootstrap: dict | None = None


def judge_against_zero_shot(zero_shot: dict, final: dict, step: int, metric: str, config: Config, run_dir: Path) -> Verdict:
    name = metric.upper().replace("_NOSPACE", " no-space") if metric != "loss" else "loss"
    name = "kocer CER" if metric == "kocer_cer" else name
    shown = (lambda value: f"{value:.4f}") if metric == "loss" else format_percent
    before, after = zero_shot.get(metric), final.get(metric)
    if before is None or after is None:
        return Verdict(True, f"dev {name}: no zero-shot figure to compare with")
    line = f"dev {name} {shown(before)} (zero-shot) -> {shown(after)} (best, step {step})"
    settings = BootstrapSettings.from_config(config)
    differences = dev_differences(run_dir, step, settings)
    bootstrap = None
    if differences:
        clips = len(read_json(Path(run_dir) / ZERO_SHOT_FILE)["counts"])
        bootstrap = settings.as_dict(clips)
        line += ("; difference from zero-shot in points: " + ", ".join(f"{rate_name(rate)} {difference.describe()}"
                                                                       for rate, difference in differences.items())
                 + f" ({settings.describe(clips, 'dev clips')})")
    if after < before:
        if metric in differences and differences[metric].verdict != "better":
            line += (f": the {name} gain is within the noise of these dev clips; check it on test (evaluate_model.py) "
                     "before preferring this model to the base")
        return Verdict(True, line, differences, bootstrap)
    if step == 0:
        line = (f"dev {name} {shown(before)} (zero-shot): no checkpoint beat it, so the run's final model is the base "
                "itself (unchanged weights, run as the base runs)")
    return Verdict(False, (
        f"{line}: fine-tuning did NOT beat the base model on dev, so the base is the better model. Try a lower "
        f"learning_rate (now {config.learning_rate:g}), fewer steps or early stopping (early_stopping_patience), "
        "LoRA on fewer modules, or more training data."
    ), differences, bootstrap)


def rate_name(rate: str) -> str:
    return {"cer": "CER", "kocer_cer": "kocer CER"}.get(rate, rate)


def dev_differences(run_dir: Path, step: int, settings: BootstrapSettings) -> dict[str, Difference]:
    """CER and kocer CER of the step's dev predictions minus zero-shot's, paired clip by clip; empty when either
    side's per-clip counts are missing or the dev clips differ."""
    zero_shot_file, step_file = Path(run_dir) / ZERO_SHOT_FILE, Path(run_dir) / DEV_UTTERANCES_DIR / f"step-{step}.json"
    if not (zero_shot_file.is_file() and step_file.is_file()):
        return {}
    before, after = read_json(zero_shot_file).get("counts"), read_json(step_file)
    if not before or len(before) != len(after["counts"]):
        return {}
    return compare_with_reference(before, {"final": after["counts"]}, after["sources"], COMPARED_RATES, settings)["final"]
