"""The Trainer every model family builds on: the shared mixin, LoRA, and the family's Trainer assembled with the run's
callbacks (checkpoints, the log, dev scoring, stages, early stopping)."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import SequentialSampler
from transformers import EarlyStoppingCallback, TrainerState, set_seed
from transformers.trainer_pt_utils import get_length_grouped_indices

from kowhisper.common.runtime import peft_checkpointing_alias_quiet
from kowhisper.common.text import RATES
from kowhisper.config import Config, TrainGroup
from kowhisper.train.arguments import TrainingSetupError, stage_plan
from kowhisper.train.augment import WaveformAugmenter
from kowhisper.train.checkpoints import CheckpointCompletionCallback
from kowhisper.train.data import TrainingData
from kowhisper.train.dev_scoring import DevScorer, DevUtterancesCallback
from kowhisper.train.report import TrainingLogCallback
from kowhisper.train.stages import StageCallback, StagePlan


def apply_lora(model, config: TrainGroup, exclude_modules: str | None = None, modules_to_save: list[str] | None = None):
    """The model with LoRA adapters on config.target_modules (names, or one regex as peft takes it);
    `modules_to_save` are trained in full beside them (a new output head, say)."""
    targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    set_seed(config.seed)  # LoRA's A matrices are drawn at random
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets,
                      exclude_modules=exclude_modules, modules_to_save=modules_to_save, bias="none")
    try:
        with peft_checkpointing_alias_quiet():
            return get_peft_model(model, lora)
    except ValueError as error:
        raise TrainingSetupError(f"LoRA target_modules={targets}: {error}") from None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters, for a peft model (which counts its quantized weights right) or a plain one."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


@contextlib.contextmanager
def preserved_random_state():
    """Python's, numpy's and torch's random generators as they were before the block."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class EpochSeededSampler(torch.utils.data.Sampler):
    """The order of one epoch's training rows, drawn from (data seed, epoch) alone: shuffled, or with group_by_length
    shuffled in groups of similar length (transformers' own grouping). Hugging Face's samplers draw from the global
    generator, which a resume restores to the checkpoint's step, so a run resumed in its second epoch or later trained
    on another order than the uninterrupted run; this one replays the same order in every epoch, resumed or not.
    The Trainer tells it the epoch (set_epoch) before each one begins."""

    def __init__(self, size: int, seed: int, lengths=None, group_size: int = 1):
        self.size, self.seed, self.lengths, self.group_size = size, seed, lengths, group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.lengths is not None:
            return iter(get_length_grouped_indices(self.lengths, self.group_size, generator=generator))
        return iter(torch.randperm(self.size, generator=generator).tolist())


class KowhisperTrainerMixin:
    """What every family's Trainer adds to Hugging Face's (put it first among the bases):

    - dev rows are evaluated in their order, which tells each row's source;
    - `evaluate_base_model()` scores dev before any training step, for the zero-shot baseline (a family whose base
      runs differently from the model it trains overrides it);
    - staged runs get a learning-rate schedule that restarts per stage (kowhisper.train.stages);
    - dev batches may come from a collator of their own (`eval_data_collator`): training batches are augmented
      (kowhisper.train.augment), dev batches never are;
    - the training order of each epoch follows from the data seed and the epoch (EpochSeededSampler), so a resume
      trains on what the uninterrupted run would have.
    """

    def __init__(self, *args, stages: StagePlan | None = None, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stages = stages
        self.eval_data_collator = eval_data_collator or self.data_collator

    def get_eval_dataloader(self, eval_dataset=None):
        training_collator = self.data_collator
        self.data_collator = self.eval_data_collator  # read once, when the DataLoader is built
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        strategy = self.args.train_sampling_strategy
        if dataset is None or not hasattr(dataset, "__len__") or strategy not in ("random", "group_by_length"):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        lengths = list(dataset[self.args.length_column_name]) if strategy == "group_by_length" else None
        return EpochSeededSampler(len(dataset), seed, lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps)

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.stages is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.stages.lr_factor)
        return self.lr_scheduler

    def _get_eval_sampler(self, eval_dataset):
        # Dev rows stay in their order (load_splits sorts them by duration already): the per-source dev metrics
        # tell the rows' sources by position. Under DDP accelerate shards whole batches and gathers them in order.
        if eval_dataset is None or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)

    def evaluate_base_model(self) -> dict:
        """trainer.evaluate() as the untrained base runs (LoRA starts as a no-op; a new CTC head is untrained).

        The random generators are put back afterwards: building a DataLoader draws from them, and a run must train
        the same whether its zero-shot result was measured now or reused from the cache."""
        with preserved_random_state():
            return self.evaluate()


def build_trainer(model, processor, args, data: TrainingData, config: Config, family, report=print):
    if "tensorboard" in args.report_to:
        # A fixed folder instead of one per start, so a resumed run continues the same TensorBoard curves.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(args.output_dir) / "tensorboard"))
    augmenter = WaveformAugmenter.from_config(config)
    if augmenter is not None:
        report(f"Augmentation: {augmenter.describe()} (training clips only, drawn per clip and epoch from seed {config.seed})")
    log_callback = TrainingLogCallback(args.output_dir, report)
    callbacks = [CheckpointCompletionCallback(config.keep_other_checkpoints), log_callback]
    scorer = DevScorer(family.prediction_texts(processor), data.dev_sources) if data.dev is not None else None
    if scorer is not None:
        callbacks.append(DevUtterancesCallback(scorer, args.output_dir))
    stages = stage_plan(config, family)
    if stages is not None:
        callbacks.append(StageCallback(stages, model, family, report, write_record=log_callback.append_record))
    # Unset (None) only where a caller built the trainer without arguments.resolve_schedule (a benchmark): never, as
    # build_training_arguments then takes it.
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
    sources = dict.fromkeys(data.dev_sources)
    selectable = {"loss", *RATES, *(f"{rate}_{source}" for rate in RATES for source in sources)}
    if config.metric_for_best_model not in selectable:
        raise TrainingSetupError(f"metric_for_best_model={config.metric_for_best_model} names no source with dev clips; "
                                 f"choose one of {', '.join(sorted(selectable))}")
    return family.build_trainer(model, processor, args, data, config, callbacks, stages, scorer)


def restore_finished_run(trainer, checkpoint: Path) -> None:
    """Put a run whose last checkpoint is already its final step back in the trainer, without training.

    trainer.train() cannot do this: resumed at max_steps, transformers 5 still runs one more step.
    The weights are the best checkpoint's when load_best_model_at_end, as train() would have left them.
    """
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    weights_from = Path(best) if trainer.args.load_best_model_at_end and best and Path(best).is_dir() else Path(checkpoint)
    # The Trainer's own loader, as train() uses it to resume: a LoRA adapter or full weights, safetensors only.
    trainer._load_from_checkpoint(str(weights_from))
