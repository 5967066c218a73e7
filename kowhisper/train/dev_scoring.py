"""Dev metrics during training, for any model family: each evaluation scored per source and overall, each clip's
edit counts kept for the paired comparison with zero-shot, and the final model's dev metrics."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from kowhisper.common.files import atomic_write_json
from kowhisper.common.text import RATES, rates_by_source, utterance_counts
from kowhisper.common.workspace import checkpoint_step

# <run>/dev_utterances/step-<N>.json: each dev clip's edit counts at every evaluation, for the paired comparison.
DEV_UTTERANCES_DIR = "dev_utterances"


class DevScorer:
    """compute_metrics for any family: `prediction_texts` turns the Trainer's predictions into (references,
    hypotheses), in dev order; this scores them per source (cer_<source>, wer_<source>, cer_nospace_<source>,
    kocer_cer_<source>) and overall, as evaluation does (kowhisper.common.text.rates_by_source). Each clip's edit counts
    are kept in `last_counts` for DevUtterancesCallback."""

    def __init__(self, prediction_texts, dev_sources: list[str]):
        self.prediction_texts = prediction_texts
        self.dev_sources = dev_sources
        self.last_counts: list[dict | None] | None = None

    def __call__(self, prediction) -> dict[str, float]:
        references, hypotheses = self.prediction_texts(prediction)
        # Under DDP every process evaluates whole batches in turn and the last one is padded with rows from the
        # start; gathered, the predictions keep the dev order with those repeats at the end.
        if len(references) < len(self.dev_sources):
            raise RuntimeError(f"{len(references)} dev predictions for {len(self.dev_sources)} dev rows")
        references, hypotheses = references[: len(self.dev_sources)], hypotheses[: len(self.dev_sources)]
        counts = [utterance_counts(reference, hypothesis) for reference, hypothesis in zip(references, hypotheses)]
        self.last_counts = counts
        overall, per_source = rates_by_source(references, hypotheses, counts, self.dev_sources)
        return {**{rate: overall[rate] for rate in RATES},
                **{f"{rate}_{source}": rates[rate] for source, rates in per_source.items() for rate in RATES}}


class DevUtterancesCallback(TrainerCallback):
    """Writes each evaluation's per-clip edit counts to <run>/dev_utterances/step-<N>.json (the zero-shot one goes
    to zero_shot.json), so the final verdict can compare the chosen step with zero-shot clip by clip, also after
    a resume."""

    def __init__(self, scorer: DevScorer, run_dir: Path):
        self.scorer = scorer
        self.folder = Path(run_dir) / DEV_UTTERANCES_DIR

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and self.scorer.last_counts is not None and state.global_step > 0:
            atomic_write_json(self.folder / f"step-{state.global_step}.json",
                              {"step": state.global_step, "sources": self.scorer.dev_sources, "counts": self.scorer.last_counts})


def final_dev_metrics(trainer) -> tuple[dict, int]:
    """(dev metrics, step) of the weights the model holds now: the last step's, or the best checkpoint's with
    load_best_model_at_end. If that step was already evaluated during training, its logged result is reused
    (same dev rows, greedy decoding, so a rerun gives the same numbers) instead of generating it again."""
    best = trainer.state.best_model_checkpoint
    step = checkpoint_step(Path(best)) if trainer.args.load_best_model_at_end and best else trainer.state.global_step
    logged = [entry for entry in trainer.state.log_history if entry.get("step") == step and "eval_cer" in entry]
    return dev_metrics_summary(logged[-1] if logged else trainer.evaluate()), step


def dev_metrics_summary(eval_metrics: dict) -> dict:
    """trainer.evaluate()'s eval_cer, eval_cer_<source>, eval_loss, ... as cer, cer_<source>, loss, ..., without the
    timing entries."""
    timing = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")
    return {key.removeprefix("eval_"): value for key, value in eval_metrics.items()
            if key.startswith("eval_") and not key.removeprefix("eval_").startswith(timing)}
