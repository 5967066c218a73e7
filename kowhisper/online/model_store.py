"""The base model step of the online phase: bring the base model into <workspace>/model, Hub-free from then on.

The model's family (kowhisper.families.base) knows how to fetch and save it; this module only makes the step
resumable and atomic: the model is saved into a staging folder (<workspace>/.model.partial), proven loadable offline
by the family, stamped with its source and only then moved into place, so a killed setup never leaves a half-written
model behind. The staging folder's fixed name lets the next run find what a killed one left there and remove it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from kowhisper.common.files import PARTIAL_SUFFIX, atomic_write_json, partial_path, read_json
from kowhisper.common.workspace import model_dir, remove_leftover
from kowhisper.config import Config, ModelGroup
from kowhisper.families.base import ModelError, StorageError
from kowhisper.families.registry import family_for_base_source
from kowhisper.train.checkpoints import WEIGHT_FORMS

log = logging.getLogger(__name__)
STAMP_NAME = ".complete.json"


class ModelSourceError(RuntimeError):
    """The model could not be fetched or read; the message says which source and why."""


def prepare_model(config: Config) -> Path:
    """Populate <workspace>/model from config.model_name_or_path; skip if it is already there and whole."""
    target = model_dir(config.workspace_dir)
    source = str(config.model_name_or_path)
    if _is_complete(target, source):
        log.info("model: %s already in %s, skipping", source, target)
        return target

    # The family may need scratch space beside the model (a CTranslate2 model to convert), so the staging folder holds
    # the model in a folder of its own.
    staging, replaced = partial_path(target), target.with_name(f".{target.name}.replaced{PARTIAL_SUFFIX}")
    for leftover in (staging, replaced):
        if leftover.exists():
            remove_leftover(leftover, leftover.name)
    staging.mkdir(parents=True)
    try:
        try:
            family_for_base_source(source).save_base_model(source, staging / "model", config)
        except (ModelError, StorageError) as error:
            raise ModelSourceError(str(error)) from None
        atomic_write_json(staging / "model" / STAMP_NAME, {"source": source})
        if target.exists():
            target.rename(replaced)
        (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    return target


def check_model_source(config: ModelGroup) -> None:
    """That the base model can be found and is of a family this toolkit trains, from its config.json alone (a small
    download for a Hub id), unless the workspace already holds it: the online setup's check before anything large."""
    source = str(config.model_name_or_path)
    if _is_complete(model_dir(config.workspace_dir), source):
        return
    try:
        family_for_base_source(source)
    except ModelError as error:
        raise ModelSourceError(str(error)) from None


def _is_complete(target: Path, source: str) -> bool:
    stamp = target / STAMP_NAME
    # A large model is saved in shards (model.safetensors.index.json), so any whole weight form counts.
    has_weights = any(all((target / name).is_file() for name in form) for form in WEIGHT_FORMS)
    return stamp.is_file() and read_json(stamp).get("source") == source and has_weights
