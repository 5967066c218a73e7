"""What a run leaves for people: a JSONL training log, a PNG of loss and dev-CER curves, metrics.json, a model card.

The log and the plot are written while training, so a long run can be watched with `tail -f` or by
opening the PNG; the model card is written once the final adapter is saved.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from kowhisper.common.files import atomic_write_json, atomic_write_text
from kowhisper.common.text import format_percent
from kowhisper.common.workspace import RUN_CONFIG_NAME
from kowhisper.train.stages import stage_records

LOG_NAME = "train_log.jsonl"
PLOT_NAME = "training_curves.png"
CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"


def read_log(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        # A run killed mid-write can leave one torn last line; everything before it is still good.
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class TrainingLogCallback(TrainerCallback):
    """Appends every Trainer log to <run>/train_log.jsonl, prints dev metrics and redraws the curves."""

    def __init__(self, run_dir: Path, report=print):
        self.log_path = Path(run_dir) / LOG_NAME
        self.plot_path = Path(run_dir) / PLOT_NAME
        self.report = report

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        # On resume the steps after the checkpoint are trained again; their old records would be duplicates.
        kept = [record for record in read_log(self.log_path) if record.get("step", 0) <= state.global_step]
        atomic_write_text(self.log_path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 1), **logs}
        if is_zero_shot(record):
            record["zero_shot"] = True
        self.append_record(record)

    def append_record(self, record: dict) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)  # an evaluate() without train() comes here first
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        line = (f"step {state.global_step}: dev CER {format_percent(metrics.get('eval_cer'))}, "
                f"WER {format_percent(metrics.get('eval_wer'))}, kocer CER {format_percent(metrics.get('eval_kocer_cer'))}")
        per_source = {key.removeprefix("eval_cer_"): value for key, value in metrics.items()
                      if key.startswith("eval_cer_") and key != "eval_cer_nospace" and not key.startswith("eval_cer_nospace_")}
        if len(per_source) > 1:
            line += " (CER " + ", ".join(f"{name} {format_percent(value)}" for name, value in per_source.items()) + ")"
        name = args.metric_for_best_model
        if state.global_step == 0:
            line += " (zero-shot: the base model at its full window, before any training)"
        elif name:
            # The Trainer updates best_metric only after this callback, so the current score is compared here.
            current = metrics.get(name if name.startswith("eval_") else f"eval_{name}")
            best, best_step = state.best_metric, state.best_global_step
            if current is not None and (best is None or current < best):  # every selectable metric is an error
                best, best_step = current, state.global_step
            if best is not None:
                line += f" (best {name} {best:.4f} at step {best_step})"
        self.report(line)
        plot_curves(self.log_path, self.plot_path)


def is_zero_shot(record: dict) -> bool:
    """The base model's dev evaluation before the first step (kowhisper.train.zero_shot.zero_shot_dev_metrics)."""
    return record.get("step") == 0 and "eval_cer" in record


def plot_curves(log_path: Path, png_path: Path) -> Path | None:
    """Training loss (and dev loss) on the left, dev CER on the right, against the optimizer step."""
    # Here, not at the top: only the end of a run draws (0.5 s of import), and no importer should get the Agg switch below.
    import matplotlib

    matplotlib.use("Agg")  # no display on a training box
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    dev_loss = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    dev_cer = [(r["step"], 100 * r["eval_cer"]) for r in records if "eval_cer" in r]
    dev_kocer = [(r["step"], 100 * r["eval_kocer_cer"]) for r in records if "eval_kocer_cer" in r]
    zero_shot = next((100 * r["eval_cer"] for r in records if is_zero_shot(r)), None)
    if not (train or dev_cer):
        return None
    figure, (loss_axes, cer_axes) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    if train:
        loss_axes.plot(*zip(*train), label="train loss")
    if dev_loss:
        loss_axes.plot(*zip(*dev_loss), marker="o", label="dev loss")
    loss_axes.set(xlabel="step", ylabel="loss", title="Loss")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    if dev_cer:
        cer_axes.plot(*zip(*dev_cer), marker="o", color="tab:red", label="dev CER")
    if dev_kocer:
        cer_axes.plot(*zip(*dev_kocer), marker="s", color="tab:orange", label="dev kocer CER")
    if zero_shot is not None:
        # The line fine-tuning has to stay under: above it, the base model is better.
        cer_axes.axhline(zero_shot, linestyle="--", color="tab:gray", label=f"zero-shot base CER {zero_shot:.1f}%")
    if dev_cer or zero_shot is not None:
        cer_axes.legend()
    cer_axes.set(xlabel="step", ylabel="CER (%)", title="Dev CER")
    cer_axes.grid(alpha=0.3)
    for stage in stage_records(records):
        for axes in (loss_axes, cer_axes):
            axes.axvline(stage["step"], linestyle=":", color="tab:purple")
        cer_axes.annotate(stage["stage"], (stage["step"], 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                          ha="right", fontsize=8, color="tab:purple")
    png_path = Path(png_path)
    temporary = png_path.with_name(f".{png_path.name}.tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    temporary.replace(png_path)  # a viewer refreshing the PNG never sees half an image
    return png_path


def write_run_outputs(run_dir: Path, *, state, dev: dict, zero_shot: dict, verdict, train: dict, data_counts: dict,
                      origins: dict[str, str], training: dict, card_intro: list[str], config_yaml: str) -> dict:
    """metrics.json, the final curves and the model card, once the final model is saved. `verdict` (None without
    a dev split) says whether it beat the zero-shot base on dev; `card_intro` heads the card (the model family's
    ModelFamily.model_card_intro)."""
    run_dir = Path(run_dir)
    stages = stage_records(read_log(run_dir / LOG_NAME))
    metrics = {
        "dev": dev,
        "zero_shot_dev": zero_shot,
        "improved_over_zero_shot": None if verdict is None else verdict.improved,
        "verdict": None if verdict is None else verdict.line,
        # Final dev minus zero-shot dev, paired clip by clip, with 95% bootstrap intervals and their settings.
        "dev_versus_zero_shot": None if verdict is None or not verdict.versus_zero_shot else {
            **{rate: difference.as_dict() for rate, difference in verdict.versus_zero_shot.items()}, "bootstrap": verdict.bootstrap},
        "train": train,
        "data": {**data_counts, "origins": origins},
        "global_step": state.global_step,
        "best_checkpoint": state.best_model_checkpoint,
        **training,
    }
    if stages:
        metrics["stages"] = [
            {"name": r["stage"], "train": r["stage_train"], "first_step": r["step"],
             "trainable_parameters": r["stage_trainable_parameters"], "learning_rate": r["stage_learning_rate"]}
            for r in stages
        ]
    atomic_write_json(run_dir / METRICS_NAME, metrics)
    # The config as the run used it, for evaluate_model.py eval_run=all to show what differs between runs.
    atomic_write_text(run_dir / RUN_CONFIG_NAME, config_yaml)
    plot_curves(run_dir / LOG_NAME, run_dir / PLOT_NAME)
    summary = {
        "steps": state.global_step,
        "train loss": f"{train['train_loss']:.4f}" if "train_loss" in train else "-",
        **training,
        "best checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else "-",
    }
    write_model_card(run_dir, intro=card_intro, config_yaml=config_yaml, data_counts=data_counts, origins=origins, dev=dev,
                     zero_shot=zero_shot, verdict=verdict, training=summary, stages=metrics.get("stages", []))
    return metrics


def write_model_card(run_dir: Path, *, intro: list[str], config_yaml: str, data_counts: dict, origins: dict[str, str], dev: dict,
                     zero_shot: dict, verdict, training: dict, stages: list[dict]) -> Path:
    """README.md for the run folder: how to load the final model (`intro`, from its family), the data it saw, its
    dev metrics, its config."""
    lines = [
        *intro,
        "",
        "## Data",
        "",
        *data_table(data_counts, origins),
        "",
        "## Final dev metrics",
        "",
    ]
    if dev:
        if verdict is not None:
            lines += [("" if verdict.improved else "**Warning:** ") + verdict.line, ""]
        lines += ["| metric | zero-shot base | this run |", "|---|---|---|"]
        lines += [f"| {name} | {_format_metric(name, zero_shot[name]) if name in zero_shot else '-'} | {_format_metric(name, value)} |"
                  for name, value in dev.items()]
    else:
        lines.append("No dev split to evaluate on; run `evaluate_model.py` on this run.")
    lines += ["", "## Training", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in training.items()]
    if stages:
        lines += ["", "## Stages", "", "| stage | trains | from step | trainable parameters | learning rate |", "|---|---|---|---|---|"]
        lines += [f"| {stage['name']} | {stage['train']} | {stage['first_step']} | {stage['trainable_parameters']:,} | "
                  f"{stage['learning_rate']:g} |" for stage in stages]
    lines += ["", "## Config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    path = Path(run_dir) / CARD_NAME
    atomic_write_text(path, "\n".join(lines))
    return path


def data_table(data_counts: dict, origins: dict[str, str]) -> list[str]:
    """The workspace's sources as the run used them: where each came from, its weight and its clips."""
    lines = ["| source | from | weight | train clips | train hours | dev clips (evaluated) | test clips |", "|---|---|---|---|---|---|---|"]
    for name, counts in data_counts.get("sources", {}).items():
        weight = f"{counts['weight']:g}" if counts["weight"] > 0 else "0 (held out)"
        lines.append(f"| {name} | {origins.get(name, '-')} | {weight} | {counts['train']} | {counts['train_hours']} | "
                     f"{counts['dev']} ({counts['dev_evaluated']}) | {counts['test']} |")
    if len(data_counts.get("sources", {})) > 1:
        lines += ["", f"Training drew {data_counts['train_per_epoch']} clips per epoch from the sources, each clip from a source "
                      "with the probability of its share of the weights; smaller sources repeat until every source is used up."]
    return lines


def _format_metric(name: str, value) -> str:
    if name in ("cer", "wer", "cer_nospace", "kocer_cer") and isinstance(value, float):
        return format_percent(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)
