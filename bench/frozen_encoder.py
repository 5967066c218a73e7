"""Would caching the encoder's outputs pay while the encoder is frozen (freeze_encoder=true, or a decoder stage)?

With the encoder frozen and without LoRA, its output for a clip is the same every epoch, so a cache could skip
the encoder from the second epoch on. What that can save is at most the encoder's share of a training step.
This measures both on the same batches, in one process, taking turns, so load on the machine hits both alike:

- **step**: one decoder-only LoRA training step as train_offline.py runs it (forward through the frozen encoder,
  forward and backward through the decoder, AdamW step), at the window the run uses;
- **encoder**: the frozen encoder's forward alone on the same batch (what a cache would skip).

    python -m bench.frozen_encoder [--batches 12] [--window fit|full] [--workspace WS]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kowhisper.common.runtime import force_offline

force_offline()


def measure(workspace: Path, window: str, batches: int, batch_size: int) -> dict:
    import torch

    from kowhisper.common.workspace import model_dir
    from kowhisper.config import load_config
    from kowhisper.families.registry import family_of
    from kowhisper.train import arguments as training
    from kowhisper.train.data import load_splits
    from kowhisper.train.precision import choose_precision
    from kowhisper.train.trainer import build_trainer

    config = load_config([f"workspace={workspace}", "freeze_encoder=true", f"encoder_window={window}", "eval_strategy=no",
                          "report_to=[]", f"per_device_train_batch_size={batch_size}", "timestamped_label_share=0"])
    family = family_of(model_dir(workspace))
    config, _ = training.resolve_run_defaults(config, family)  # LoRA at its default learning rate
    precision = choose_precision(config)
    processor = family.load_processor(workspace, config)
    model = family.load_trainable_model(workspace, config, precision)
    data = load_splits(workspace, config)
    data.dev = None
    args = training.build_training_arguments(config, precision, Path(tempfile.mkdtemp(prefix="bench-frozen-encoder-")), family)
    trainer = build_trainer(model, processor, args, data, config, family, report=lambda _: None)
    trainer.create_optimizer_and_scheduler(num_training_steps=batches)
    encoder = model.get_base_model().model.encoder
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.bf16)
    step_seconds, encoder_seconds, frames = [], [], []
    loader = iter(trainer.get_train_dataloader())
    for _ in range(batches + 1):  # the first batch warms up and is not counted
        batch = next(loader)
        started = time.perf_counter()
        model.train()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        step = time.perf_counter() - started
        started = time.perf_counter()
        with torch.no_grad(), autocast:
            encoder(batch["input_features"])
        encoder_seconds.append(time.perf_counter() - started)
        step_seconds.append(step)
        frames.append(batch["input_features"].shape[-1])
    step_s, encoder_s = statistics.median(step_seconds[1:]), statistics.median(encoder_seconds[1:])
    return {"window": window, "precision": precision.summary, "batch": batch_size, "frames": statistics.median(frames[1:]),
            "step_s": step_s, "encoder_s": encoder_s, "share": encoder_s / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True, help="a prepared whisper-base workspace")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window", nargs="+", default=["fit", "full"])
    options = parser.parse_args()
    from kowhisper.common.cpu import cpu_model_name

    print(f"CPU: {cpu_model_name()}")
    print(f"{'window':<7}{'precision':<34}{'frames':>7}{'step s':>9}{'encoder s':>11}{'encoder share':>15}")
    for window in options.window:
        r = measure(options.workspace, window, options.batches, options.batch_size)
        print(f"{r['window']:<7}{r['precision']:<34}{r['frames']:>7.0f}{r['step_s']:>9.3f}{r['encoder_s']:>11.3f}{r['share']:>14.0%}")


if __name__ == "__main__":
    main()
