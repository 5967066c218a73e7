"""The engine interface: what a model family does, and which model to run.

A model family is everything that differs between kinds of speech model: how a base model is brought into the
workspace and a clip is stored, how the model is loaded for training and its batches built and scored, and how
it transcribes. Each family is one package behind `ModelFamily`: Whisper (kowhisper.families.whisper.family) and CTC models
such as wav2vec2 (kowhisper.families.ctc.family). The scripts and the shared modules (training, evaluation, transcribe, demo,
export) talk only to this interface. This module knows no family: kowhisper.families.registry lists them and tells which
one a model belongs to.

A model to run is a `ModelSource`: the workspace's base model, the base plus a LoRA adapter, a merged full
model, or a CTranslate2 export. Its family's `recognizer` turns it into a `Recognizer`, which evaluation, the CLI
and the demo share.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kowhisper.common.keys import KeyGroup
from kowhisper.common.workspace import FINAL_ADAPTER_DIR, FINAL_FULL_DIR, list_checkpoints, list_runs, model_dir, runs_dir
from kowhisper.config import Config, ModelGroup

if TYPE_CHECKING:
    from kowhisper.common.transcript import Prompting, Transcript

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CT2_WEIGHTS = "model.bin"
# learning_rate unset: what a mode starts from unless its family says otherwise. 1e-4 for LoRA was measured on real
# Korean speech (docs/training.md, "Defaults and why"); it is also seed 000's rate for a CTC model's full fine-tuning.
DEFAULT_LEARNING_RATE = 1e-4


class ModelError(RuntimeError):
    """A model folder that cannot be used; the message says what was expected."""


class StorageError(RuntimeError):
    """A model or its settings cannot store clips as asked (online setup); the message says what to change."""


# ---- which model ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A model folder and how to read it. kind: base, adapter (LoRA on base_dir), merged (full weights: a merged
    export, or a fully fine-tuned run or checkpoint) or ct2."""

    kind: str
    path: Path
    label: str
    base_dir: Path | None = None

    @property
    def weights_dir(self) -> Path:
        """The folder whose config.json says what the model is: the base for an adapter, else the folder."""
        return self.base_dir if self.kind == "adapter" else self.path

    @property
    def run_dir(self) -> Path | None:
        """The run folder this model is the final model or a checkpoint of; None for anything else."""
        named = self.path.name in (FINAL_ADAPTER_DIR, FINAL_FULL_DIR) or self.path.name.startswith("checkpoint-")
        return self.path.parent if self.kind in ("adapter", "merged") and named else None


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def is_ct2_model_dir(path: str | Path) -> bool:
    """True for a CTranslate2 / faster-whisper folder (model.bin + config.json)."""
    return (Path(path) / CT2_WEIGHTS).is_file() and (Path(path) / "config.json").is_file()


def is_merged_model_dir(path: Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and not is_adapter_dir(path)


def holds_trained_model(path: Path) -> bool:
    """A LoRA adapter or full weights: what a run's final folder and its checkpoints hold."""
    return is_adapter_dir(path) or is_merged_model_dir(path)


def final_model_dir(run: Path) -> Path | None:
    """The run's final model: <run>/adapter (LoRA) or <run>/model (full fine-tuning); None before it is saved."""
    if is_adapter_dir(Path(run) / FINAL_ADAPTER_DIR):
        return Path(run) / FINAL_ADAPTER_DIR
    if is_merged_model_dir(Path(run) / FINAL_FULL_DIR):
        return Path(run) / FINAL_FULL_DIR
    return None


def latest_run(workspace: Path) -> Path | None:
    """The run whose final model was written last, or None when no run has finished."""
    finished = [run for run in list_runs(workspace) if final_model_dir(run) is not None]
    return max(finished, key=lambda run: _written_at(final_model_dir(run)), default=None)


def _written_at(folder: Path) -> float:
    return (folder / ADAPTER_CONFIG if is_adapter_dir(folder) else folder / "config.json").stat().st_mtime


def run_checkpoints(run: Path) -> list[Path]:
    """checkpoint-N folders that hold an adapter or full weights, in training order."""
    return [path for path in list_checkpoints(run) if holds_trained_model(path)]


def trained_source(workspace: Path, path: Path) -> ModelSource:
    """A run's final model or one of its checkpoints: LoRA on the workspace's base, or full weights of their own."""
    path = Path(path).resolve()
    if is_adapter_dir(path):
        return adapter_source(workspace, path)
    return ModelSource("merged", path, _label(path))


def _label(path: Path) -> str:
    if path.name in (FINAL_ADAPTER_DIR, FINAL_FULL_DIR):
        return path.parent.name
    if path.name.startswith("checkpoint-"):
        return f"{path.parent.name}/{path.name}"
    return path.name


def base_source(workspace: Path) -> ModelSource:
    base = model_dir(workspace).resolve()
    if not (base / "config.json").is_file():
        raise ModelError(
            f"no base model in {base}: point workspace= at the folder the online setup filled "
            "(or give adapter= a merged model or CTranslate2 folder, which needs no base)"
        )
    return ModelSource("base", base, "base")


def adapter_source(workspace: Path, adapter: Path) -> ModelSource:
    adapter = Path(adapter).resolve()
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise ModelError(f"{adapter} has no {ADAPTER_WEIGHTS}; only safetensors adapters are loaded (pickle files can run code)")
    return ModelSource("adapter", adapter, _label(adapter), base_source(workspace).path)


def resolve_model(workspace: Path, spec: str | None) -> ModelSource:
    """What `adapter=` / `eval_run=` name: unset -> the latest run's final model (else the base); 'base'; a run
    name under <workspace>/runs; or a path to a run, adapter, checkpoint, merged model or CTranslate2 folder."""
    workspace = Path(workspace)
    if spec is None:
        run = latest_run(workspace)
        return trained_source(workspace, final_model_dir(run)) if run else base_source(workspace)
    if spec == "base":
        return base_source(workspace)
    path = Path(spec).expanduser()
    if not path.exists() and (runs_dir(workspace) / spec).exists():
        path = runs_dir(workspace) / spec
    if not path.exists():
        known = [run.name for run in list_runs(workspace)]
        raise ModelError(f"{spec!r} is neither a folder nor a run in {runs_dir(workspace)} (runs there: {', '.join(known) or 'none'})")
    path = path.resolve()
    if is_adapter_dir(path):
        return adapter_source(workspace, path)
    if final_model_dir(path) is not None:
        return trained_source(workspace, final_model_dir(path))
    if is_ct2_model_dir(path):
        return ModelSource("ct2", path, path.name)
    if is_merged_model_dir(path):
        return ModelSource("merged", path, _label(path))
    if run_checkpoints(path):
        raise ModelError(f"{path} has checkpoints but no final model yet ({FINAL_ADAPTER_DIR}/ or {FINAL_FULL_DIR}/): "
                         "name one checkpoint, or use all_checkpoints=true")
    raise ModelError(
        f"{path} is not a model folder: expected a LoRA adapter ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}), a run folder "
        f"with {FINAL_ADAPTER_DIR}/ or {FINAL_FULL_DIR}/, a merged or fully fine-tuned model (config.json + safetensors) "
        "or a CTranslate2 export (model.bin)"
    )


# ---- model families -----------------------------------------------------------------------------------------


class Recognizer(ABC):
    """A model ready to transcribe. Evaluation, inference.py and the demo use nothing else of a family.

    `description` names the engine and precision; `settings` what the model was trained with that changes how
    it runs (a Whisper encoder window, say), for evaluation tables.
    """

    description: str = ""
    settings: str = ""
    takes_prompts = False  # whether an initial prompt and hotwords reach the model (Whisper) or not (CTC)

    @abstractmethod
    def transcribe_prepared(self, rows: list[dict]) -> list[str]:
        """Texts for rows of a prepared split, as this family's online step stores them, in order."""

    @abstractmethod
    def transcribe_waveforms(self, waveforms: list, *, batch_size: int, sources: list[str] | None = None,
                             bar=None, promptings: list[Prompting] | None = None, word_timestamps: bool = False) -> list[Transcript]:
        """Transcripts of 16 kHz mono waveforms of any length, as timed segments and their joined text. `bar`, a
        tqdm bar counting seconds of audio, advances as the work gets done. `promptings`, one per waveform, replace
        the configured initial_prompt and hotwords where the family reads them (Whisper); unset, the configured ones.
        `word_timestamps`: every segment also gets its timed words (Segment.words)."""


class ModelFamily(ABC):
    """Everything a kind of speech model does differently. One instance per family, stateless."""

    name: str = ""
    title: str = ""  # the name people read in help texts: "Whisper", "CTC"
    # The family's group of config keys (kowhisper.families.<family>.options), one of the groups kowhisper.config.groups
    # composes into the flat Config: the keys this family reads and no other does. A key in no family's options is read
    # by every family. kowhisper.families.registry reports a key the user set that the chosen family does not read.
    options: type[KeyGroup] | None = None

    @property
    def own_config_keys(self) -> tuple[str, ...]:
        return self.options.own_keys() if self.options is not None else ()

    @abstractmethod
    def accepts(self, model_type: str) -> bool:
        """Whether a model whose config.json says this model_type belongs to the family."""

    # ---- online (run_online_setup.py through kowhisper.online.model_store and kowhisper.online.prepare) ----

    def claims_source(self, source: str) -> bool:
        """A base-model source the family recognises before any config.json is read (a CTranslate2 folder is Whisper)."""
        return False

    def claims_model(self, source: ModelSource) -> bool:
        """A model to run that is the family's whatever its config.json says (a CTranslate2 export is Whisper's)."""
        return False

    @abstractmethod
    def save_base_model(self, source: str, out: Path, config: Config) -> None:
        """The base model named `source` (Hub id, local folder, ...) saved into `out` as safetensors with its processor,
        loadable offline. Raises StorageError for a source it cannot use."""

    @abstractmethod
    def clip_encoder(self, model_folder: Path, config: Config, train_texts):
        """What turns a clip into its stored row: an object with `identity` (what decides the stored rows, for the
        preparation stamps), `features()` (datasets.Features of a prepared split), `encode_text(text)` and
        `encode_audio(waveform, labels)`, each returning (value, None, None) or (None, drop reason, detail). It is
        pickled into the preparation workers. `train_texts` iterates every source's training transcripts, for a
        family whose labels depend on them (a CTC vocabulary, which it then saves beside the model)."""

    # ---- inference ----

    @abstractmethod
    def recognizer(self, source: ModelSource, config: Config, *, one_clip_at_a_time: bool = False) -> Recognizer:
        """The model of `source` ready to transcribe, on the engine `config.backend` asks for. The demo serves one
        recording at a time and says so, where an engine tunes differently for it."""

    @abstractmethod
    def load_merged(self, source: ModelSource):
        """(model, processor) of `source` in float32 on the CPU, a LoRA adapter merged into its base: what
        `inference.py --merge` saves."""

    def copy_run_settings(self, source: ModelSource, folder: Path) -> None:  # noqa: B027 (most families keep none)
        """Copy what `source` was trained with and inference needs (beside its weights) into an export folder."""

    def export_ct2(self, source: ModelSource, quantization: str, out_dir: Path | None) -> Path:
        raise ModelError(f"CTranslate2 export is for Whisper models; {source.label} is a {self.name} model. "
                         "Serve it with inference.py, or merge it (--merge) for other runtimes.")

    def export_ggml(self, source: ModelSource, quantization: str, out_dir: Path | None) -> Path:
        raise ModelError(f"whisper.cpp (GGML) export is for Whisper models; {source.label} is a {self.name} model. "
                         "Serve it with inference.py, or merge it (--merge) for other runtimes.")

    def ggml_recognizer(self, model_file: Path, config: Config) -> Recognizer:
        """A whisper.cpp file export_ggml wrote, run by whisper.cpp itself (for the export check)."""
        raise ModelError(f"whisper.cpp runs Whisper models only, not {self.name} models")

    # ---- training (train_offline.py through kowhisper.train.arguments and kowhisper.train.trainer) ----

    @abstractmethod
    def load_processor(self, workspace: Path, config: Config):
        """The processor the workspace was prepared with, set up for training labels."""

    @abstractmethod
    def load_trainable_model(self, workspace: Path, config: Config, precision):
        """The base model with what is trained (LoRA or full fine-tuning), on the device `precision` names."""

    @abstractmethod
    def training_arguments(self, config: Config, arguments: dict):
        """The family's TrainingArguments class built from the shared `arguments`, plus its own."""

    @abstractmethod
    def prediction_texts(self, processor):
        """A function turning the Trainer's dev predictions (EvalPrediction) into (references, hypotheses)."""

    @abstractmethod
    def build_trainer(self, model, processor, args, data, config: Config, callbacks: list, stages=None, compute_metrics=None):
        """A Trainer for this family, built on kowhisper.train.trainer.KowhisperTrainerMixin; `stages` is the run's
        kowhisper.train.stages.StagePlan or None, `compute_metrics` scores dev from prediction_texts' output."""

    @abstractmethod
    def save_trained(self, model, processor, run_dir: Path, config: Config) -> Path:
        """The final model, with what inference needs to run it as trained, in <run>/adapter (LoRA) or <run>/model
        (full weights); returns the folder."""

    # What `finetune` means when it is unset: "lora" or "full".
    default_finetune: str = "lora"

    def finetune_mode(self, config: ModelGroup) -> str:
        """'lora' (adapters on a frozen base) or 'full' (every weight): config.finetune, else the family's default."""
        return config.finetune or self.default_finetune

    def base_run_config(self, config: Config) -> Config:
        """The config under which the untrained base model runs, as its zero-shot dev score was measured: a run
        whose best model on dev is the base saves the base's weights with it."""
        return config

    def choose_run_config(self, trainer, config: Config, dev: dict, dev_step: int, metric: str, report=print) -> tuple[object, dict]:
        """After training: the config the final model is to run under, and its dev metrics there. A family whose
        trained models can run in more than one way scores the others on dev and keeps the best; the rest return
        (config, dev)."""
        return config, dev

    def trains_lora(self, config: ModelGroup) -> bool:
        """Whether training puts LoRA on a frozen base (which may then be INT8), rather than training full weights."""
        return self.finetune_mode(config) == "lora"

    def default_learning_rate(self, finetune: str) -> float:
        """The peak learning rate when learning_rate is unset, for finetune 'lora' or 'full'."""
        return DEFAULT_LEARNING_RATE

    @abstractmethod
    def model_card_intro(self, run_name: str, base_model: str, train_clips, config: Config) -> list[str]:
        """The head of a run's model card (front matter, title, how to load the final model), as Markdown lines."""

    def start_run(self, config: Config, run_dir: Path, resuming: bool) -> list[str]:
        """Record what a run's checkpoints need beside their weights; returns lines for the log."""
        return []

    def run_summary(self, config: Config) -> dict:
        """Settings of this family worth a line in metrics.json and the model card."""
        return {}

    # ---- staged training (kowhisper.train.stages) ----

    # The parts of the model a stage can train on their own, as a stage's `train` names them ("both" trains them all);
    # empty: the family offers no stages, and a staged run is refused.
    stage_parts: tuple[str, ...] = ()

    def part_of(self, parameter_name: str) -> str:
        """Which of stage_parts the weight of this name (as model.named_parameters() names it) belongs to."""
        raise NotImplementedError(f"the {self.name} family has no parts for stages")


# ---- devices --------------------------------------------------------------------------------------------------


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
