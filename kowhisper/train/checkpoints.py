"""Which checkpoint a rerun resumes from, and the marker that makes that choice safe.

The Trainer writes a checkpoint-N folder file by file (weights, optimizer, scheduler, RNG, trainer state)
with no atomic rename at the end, so a run killed mid-save leaves a folder that looks like a checkpoint
but cannot resume. `CheckpointCompletionCallback` writes `checkpoint_complete.json` once every file is on
disk, listing their sizes; a folder counts as complete only if that marker is there and still matches.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

from kowhisper.common.files import atomic_write_json, read_json
from kowhisper.common.workspace import FINAL_ADAPTER_DIR, FINAL_FULL_DIR, checkpoint_step, list_checkpoints

COMPLETE_MARKER = "checkpoint_complete.json"
# The files a resume reads, besides the marker and the weights; rng_state.pth is rng_state_<rank>.pth under DDP.
REQUIRED_FILES = ("optimizer.pt", "scheduler.pt", "trainer_state.json")
RNG_STATE_GLOB = "rng_state*.pth"
# The weights, in whichever form the run trains: a LoRA adapter, or full weights (sharded when large).
WEIGHT_FORMS = (("adapter_model.safetensors", "adapter_config.json"), ("model.safetensors", "config.json"),
                ("model.safetensors.index.json", "config.json"))


class CheckpointError(RuntimeError):
    """A checkpoint asked for by name cannot be resumed from; the message says what it lacks."""


def checkpoint_problems(checkpoint: Path) -> list[str]:
    """What keeps `checkpoint` from being resumable, each as a phrase ("missing optimizer.pt", "adapter_model.safetensors
    is truncated (...)"); empty when it is complete."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return [f"{checkpoint} is not a folder"]
    problems = [f"missing {name}" for name in REQUIRED_FILES if not (checkpoint / name).is_file()]
    if not any(all((checkpoint / name).is_file() for name in form) for form in WEIGHT_FORMS):
        problems.append("missing " + " or ".join(" + ".join(form) for form in WEIGHT_FORMS[:2]))
    if not any(checkpoint.glob(RNG_STATE_GLOB)):
        problems.append(f"missing {RNG_STATE_GLOB}")
    marker = checkpoint / COMPLETE_MARKER
    if not marker.is_file():
        problems.append(f"missing {COMPLETE_MARKER} (the save never finished)")
        return problems
    for name, size in read_json(marker)["files"].items():
        path = checkpoint / name
        if not path.is_file():
            problems.append(f"missing {name}")
        elif path.stat().st_size < size:
            # A kill or a full disk while the file was rewritten, or a copy cut short.
            problems.append(f"{name} is truncated ({path.stat().st_size:,} of {size:,} bytes)")
        elif path.stat().st_size > size:
            problems.append(f"{name} has changed since the save ({path.stat().st_size:,} bytes, {size:,} when it was saved)")
    return problems


def last_complete_checkpoint(run_dir: Path, report=print) -> Path | None:
    """The highest-step complete checkpoint of a run; incomplete ones are reported and skipped."""
    for checkpoint in reversed(list_checkpoints(run_dir)):
        problems = checkpoint_problems(checkpoint)
        if not problems:
            return checkpoint
        report(f"Skipping incomplete {checkpoint.name}: {'; '.join(problems)}")
    return None


def resolve_resume_checkpoint(run_dir: Path, resume_from_checkpoint: str | None, overwrite_output_dir: bool,
                              report=print) -> Path | None:
    """Where training continues from: an explicit checkpoint, else the run's last complete one, else None.

    overwrite_output_dir removes the old run's checkpoints, because a fresh run saving checkpoint-N beside
    an older run's checkpoint-M > N would make a later rerun resume from the wrong run; and its final model
    (adapter/ or model/), which evaluation and inference would otherwise take for the new run's until it ends.
    """
    if resume_from_checkpoint:
        checkpoint = Path(resume_from_checkpoint).expanduser().resolve()
        problems = checkpoint_problems(checkpoint)
        if problems:
            raise CheckpointError(f"cannot resume from {checkpoint}: {'; '.join(problems)}")
        return checkpoint
    if overwrite_output_dir:
        old = list_checkpoints(run_dir)
        finals = [Path(run_dir) / name for name in (FINAL_ADAPTER_DIR, FINAL_FULL_DIR) if (Path(run_dir) / name).is_dir()]
        if old or finals:
            report(f"overwrite_output_dir=true: removing {len(old)} checkpoint(s) and the final model of the previous run in {run_dir}"
                   if finals else f"overwrite_output_dir=true: removing {len(old)} checkpoint(s) of the previous run in {run_dir}")
            for folder in old + finals:
                shutil.rmtree(folder)
        return None
    return last_complete_checkpoint(run_dir, report)


def _barrier() -> None:
    """Under DDP every rank writes its own rng_state file; wait for all before vouching for the folder."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def checkpoints_to_remove(checkpoints: list[Path], best: Path | None, keep_others: int | None) -> list[Path]:
    """Which checkpoints a cleanup deletes: never the last (a rerun resumes from it) nor the best (it may be
    loaded at the end, and it is what evaluate_model.py would pick), and of the others the `keep_others` most
    recent stay. None keeps everything."""
    if keep_others is None:
        return []
    protected = {checkpoints[-1]} if checkpoints else set()
    if best is not None:
        protected.add(Path(best))
    others = [checkpoint for checkpoint in checkpoints if checkpoint not in protected]
    return others[: max(len(others) - keep_others, 0)]


class CheckpointCompletionCallback(TrainerCallback):
    """Marks finished checkpoints, unmarks ones about to be rewritten, always saves the final step, and cleans
    up old checkpoints.

    Saving the final step makes a rerun of a finished command resume at its end instead of repeating the
    steps after the last save_steps multiple. Cleanup keeps the best and the last checkpoints plus
    `keep_others` more (keep_other_checkpoints): Hugging Face's save_total_limit, the Trainer's own rotation, counts the
    best inside the limit.
    """

    def __init__(self, keep_others: int | None = None):
        self.keep_others = keep_others

    def on_train_begin(self, args, state, control, **kwargs):
        # After resuming from step N, checkpoints beyond N belong to an abandoned continuation and will be
        # rewritten file by file; until then their old marker would vouch for a mix of two runs.
        if state.is_world_process_zero:
            for checkpoint in list_checkpoints(args.output_dir):
                if checkpoint_step(checkpoint) > state.global_step:
                    (checkpoint / COMPLETE_MARKER).unlink(missing_ok=True)

    def on_step_end(self, args, state, control, **kwargs):
        # With save_strategy=epoch the final epoch end saves anyway; forcing it here too would save twice.
        if state.global_step >= state.max_steps and args.save_strategy == "steps":
            control.should_save = True
        self._unmark_before_rewrite(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._unmark_before_rewrite(args, state, control)

    @staticmethod
    def _unmark_before_rewrite(args, state, control):
        """A save into an existing checkpoint-N rewrites it file by file; its old marker must not vouch for that."""
        if control.should_save and state.is_world_process_zero:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / COMPLETE_MARKER).unlink(missing_ok=True)

    def on_save(self, args, state, control, **kwargs):
        _barrier()
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            files = {
                path.relative_to(checkpoint).as_posix(): path.stat().st_size
                for path in sorted(checkpoint.rglob("*"))
                if path.is_file() and path.name != COMPLETE_MARKER and not path.name.startswith(".")
            }
            atomic_write_json(checkpoint / COMPLETE_MARKER, {"global_step": state.global_step, "files": files})
            # Only once this save is vouched for may older ones go.
            best = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
            for old in checkpoints_to_remove(list_checkpoints(args.output_dir), best, self.keep_others):
                shutil.rmtree(old, ignore_errors=True)
