"""Does an export score as the model it came from? Both on the workspace's dev split, side by side.

Users report fine-tuned models that got worse in conversion (faster-whisper issues 825, 1099; whisper.cpp 1866). A
test on a few clips says the outputs match; a user needs to see it on their own audio. So after --merge or
--export-ct2, inference.py decodes the dev split with the source (transformers, in float, as evaluate_model.py
runs a model as trained) and with the export (on the engine it ships for), scores both as evaluate_model.py scores,
and puts a paired-bootstrap interval on the difference. An int8 export usually moves CER by a few tenths within the
noise; an interval that excludes 0 is worth a look before shipping, and is printed as a warning.

A --export-ggml file is run by whisper.cpp itself (through pywhispercpp), on the audio the split keeps: the runtime
it ships for, at whisper.cpp's own full 30 s window, whatever window the model was trained with.

The result is kept beside the export (export_check.json; for a whisper.cpp file, <file stem>.export_check.json).
export_check=false skips the check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kowhisper.common.bootstrap import BootstrapSettings, compare_with_reference
from kowhisper.common.files import atomic_write_json
from kowhisper.common.text import format_percent
from kowhisper.config import Config
from kowhisper.evaluate.split import COMPARED_RATES, RATE_NAMES, EvalResult, evaluate_source, load_eval_split
from kowhisper.families.base import ModelError, ModelSource, Recognizer

CHECK_FILE = "export_check.json"
CHECK_SPLIT = "dev"


@dataclass(frozen=True)
class Export:
    """An export to check: the model (its label and path), where its record goes, and what runs it (unset: the model as
    evaluate_model.py runs it)."""

    model: ModelSource
    record: Path
    recognizer: Callable[[], Recognizer] | None = None

    @classmethod
    def folder(cls, model: ModelSource) -> Export:
        """A merged or CTranslate2 export: a folder, run as evaluate_model.py runs it, its record inside."""
        return cls(model, model.path / CHECK_FILE)

    @classmethod
    def whisper_cpp(cls, model_file: Path, recognizer: Callable[[], Recognizer]) -> Export:
        """One GGML file of a --export-ggml folder, run by whisper.cpp; its record beside it."""
        return cls(ModelSource("ggml", model_file, model_file.stem), model_file.with_name(f"{model_file.stem}.{CHECK_FILE}"),
                   recognizer)


def check_exports(source: ModelSource, exports: list[Export], config: Config, report=print) -> list[dict]:
    """Score `source` and each of its `exports` on the workspace's dev split (at most export_check_samples clips per
    source) and report each export beside the source, with their difference. Returns what it wrote to each export's
    record; nothing when there is no dev split to check on (said so)."""
    try:
        dataset, where = load_eval_split(Path(config.workspace_dir), CHECK_SPLIT, config.export_check_samples)
    except ModelError as error:
        report(f"Export check skipped: {error}")
        return []
    report(f"Export check: {source.label} and {', '.join(export.model.label for export in exports)}, each on {len(dataset)} "
           f"clips of {where}")
    original = evaluate_source(source, dataset, config)
    report(f"  {_describe(original)}")
    settings = BootstrapSettings.from_config(config)
    records = []
    for checked in exports:
        exported = checked.model
        try:
            export = evaluate_source(exported, dataset, config, checked.recognizer() if checked.recognizer else None)
        except ModelError as error:
            report(f"  {exported.label}: not checked: {error}")
            continue
        differences = compare_with_reference([row["counts"] for row in original.rows], {"export": [row["counts"] for row in export.rows]},
                                             list(dataset["source"]), COMPARED_RATES, settings)["export"]
        report(f"  {_describe(export)}; minus the source: "
               + ", ".join(f"{RATE_NAMES[rate]} {difference.describe()}" for rate, difference in differences.items()))
        differing = [RATE_NAMES[rate] for rate, difference in differences.items() if difference.verdict != "no clear difference"]
        if differing:
            report(f"WARNING: {exported.label} scores differently from {source.label} on dev ({' and '.join(differing)}: "
                   "the 95% interval of the difference excludes 0). Compare the two on your own clips before shipping it; "
                   "for CTranslate2, ct2_quantization=float32 keeps full precision.")
        record = {
            "split": where,
            "clips": len(dataset),
            "source": _summary(original),
            "export": _summary(export),
            "difference": {rate: difference.as_dict() for rate, difference in differences.items()},
            "bootstrap": settings.as_dict(len(dataset)),
        }
        atomic_write_json(checked.record, record)
        records.append(record)
    return records


def _describe(result: EvalResult) -> str:
    rates = ", ".join(f"{RATE_NAMES[rate]} {format_percent(result.metrics[rate], 2)}" for rate in COMPARED_RATES)
    return f"{result.source.label} ({result.metrics['backend']}): {rates}"


def _summary(result: EvalResult) -> dict:
    return {"label": result.source.label, "path": str(result.source.path), "backend": result.metrics["backend"],
            **{rate: result.metrics[rate] for rate in COMPARED_RATES}, "seconds": round(result.seconds, 1)}
