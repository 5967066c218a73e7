"""A training run's data: the train splits of the workspace's sources mixed by weight, and every source's dev split
for per-source dev metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, concatenate_datasets, interleave_datasets, load_from_disk

from kowhisper.common.files import read_json
from kowhisper.common.workspace import workspace_sources
from kowhisper.config import TrainGroup
from kowhisper.train.arguments import TrainingSetupError, quick_test_train_rows


@dataclass
class TrainingData:
    train: object  # the sources' train splits mixed by weight, each row tagged with its "source"
    dev: object | None  # the evaluated part of every source's dev split, tagged likewise; None without dev
    counts: dict

    @property
    def dev_sources(self) -> list[str]:
        """Each evaluated dev row's source, in the order the Trainer evaluates them."""
        return [] if self.dev is None else [str(name) for name in self.dev["source"]]


def load_splits(workspace: Path, config: TrainGroup) -> TrainingData:
    """The workspace's training data: the train splits of its sources mixed by weight, and the dev splits of all of
    them (held-out sources, weight 0, included) for per-source dev metrics."""
    sources = workspace_sources(workspace)
    trained = [source for source in sources if source.weight > 0]
    if not trained:
        raise TrainingSetupError("every source in the workspace has weight 0 (held out): nothing to train on")
    train_parts = []
    for source in trained:
        train = _load_split(source.split_dir("train"))
        if train is None or len(train) == 0:
            state = "is missing" if train is None else "has no rows"
            raise TrainingSetupError(
                f"the training split {source.split_dir('train')} {state}. The online setup writes it: check "
                f"{source.dir / 'report.json'} for why rows were dropped, and re-run run_online_setup.py with data that has "
                "a train split (or give this source weight 0 to hold it out)."
            )
        train_parts.append(train.add_column("source", [source.name] * len(train)))
    seed = config.data_seed if config.data_seed is not None else config.seed
    train = mix_sources(train_parts, [source.weight for source in trained], seed)
    if config.quick_test:
        train = train.select(range(min(len(train), quick_test_train_rows(config))))

    if config.max_eval_samples is not None and config.max_eval_samples < 1:
        raise TrainingSetupError("max_eval_samples must be at least 1 or unset; set eval_strategy=no to skip evaluation")
    counts = {"sources": {}}
    dev_parts = []
    for source in sources:
        dev, test = _load_split(source.split_dir("dev")), _load_split(source.split_dir("test"))
        # Kept even with eval_strategy=no: the final evaluation runs after the adapter is safely saved.
        evaluated = dev.select(range(min(len(dev), config.max_eval_samples or len(dev)))) if dev is not None and len(dev) else None
        if evaluated is not None:
            dev_parts.append(evaluated.add_column("source", [source.name] * len(evaluated)))
        source_train = next((part for part, s in zip(train_parts, trained) if s is source), None)
        counts["sources"][source.name] = {
            "weight": source.weight,
            "train": 0 if source_train is None else len(source_train),
            "train_hours": 0.0 if source_train is None else round(sum(source_train["duration"]) / 3600, 3),
            "dev": 0 if dev is None else len(dev),
            "dev_evaluated": 0 if evaluated is None else len(evaluated),
            "test": 0 if test is None else len(test),
        }
    if config.eval_strategy != "no" and not dev_parts:
        raise TrainingSetupError(
            f"eval_strategy={config.eval_strategy} evaluates on the dev split, but no source has one "
            f"({', '.join(str(source.split_dir('dev')) for source in sources)}); set eval_strategy=no to train without evaluation"
        )
    evaluated = None
    if dev_parts:
        evaluated = concatenate_datasets(dev_parts)
        # Longest first, so each evaluation batch holds clips of similar length and pads them least.
        durations = evaluated["duration"]
        evaluated = evaluated.select(sorted(range(len(evaluated)), key=lambda i: durations[i], reverse=True))

    per_source = counts["sources"].values()
    counts.update({
        "train": sum(entry["train"] for entry in per_source),
        "train_hours": round(sum(entry["train_hours"] for entry in per_source), 3),
        "train_per_epoch": len(train),  # after mixing: small sources are drawn again until every source is used up
        "dev": sum(entry["dev"] for entry in per_source),
        "dev_evaluated": 0 if evaluated is None else len(evaluated),
        "test": sum(entry["test"] for entry in per_source),
    })
    # numpy rows: the collator pads arrays; python lists of 80-float frames would be built and thrown away.
    return TrainingData(train.with_format("numpy"), None if evaluated is None else evaluated.with_format("numpy"), counts)


def mix_sources(parts: list, weights: list[float], seed: int):
    """One training set drawn from the sources' train splits: each row comes from source i with probability
    weight_i / sum(weights), until every source has been used up at least once (smaller sources repeat). This is
    datasets.interleave_datasets, seeded, so a rerun, a resume and every DDP rank see the same rows in the same order."""
    if len(parts) == 1:
        return parts[0]
    total = sum(weights)
    return interleave_datasets(parts, probabilities=[weight / total for weight in weights], seed=seed, stopping_strategy="all_exhausted")


def _load_split(path: Path):
    """The split, None if it is missing, or a 0-row dataset if it was saved empty."""
    if not path.is_dir():
        return None
    # A split saved with no rows has no data files, and load_from_disk fails on it with an IndexError.
    state = path / "state.json"
    if state.is_file() and not read_json(state).get("_data_files"):
        return Dataset.from_dict({})
    return load_from_disk(str(path))
