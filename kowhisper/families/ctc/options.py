"""The config keys only the CTC family reads, as one group of kowhisper.config's flat Config.

Part of the configuration, not of the family's model code: it imports nothing but the standard library and
kowhisper.common, so the configuration loads without torch. CTCFamily.options names this group, and a key set for
another family's model is reported as ignored (kowhisper.families.registry.ignored_keys_notice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kowhisper.common.keys import KEEP_OR_DROP, KeyGroup, check_choice
from kowhisper.common.keys import help_field as _help


@dataclass
class CTCOptions(KeyGroup):
    title: ClassVar[str] = "CTC only"

    # ---- the vocabulary (kowhisper/families/ctc/vocabulary.py) ----------------------------------------------------
    ctc_latin_digits: str = _help(
        "CTC vocabulary: 'keep' gives Latin letters (lower-cased) and digits their own tokens, as written in the "
        "transcripts ('LG', '5G', '3월'); 'drop' removes them from the labels. Hangul syllables always have tokens; "
        "other characters (Hanja, loose jamo) become [UNK] and are reported.",
        "keep",
    )
    ctc_punctuation: str = _help(
        "CTC vocabulary: 'drop' (default) removes punctuation and symbols from the labels, since they are not "
        "heard and metrics ignore them; 'keep' gives each its own token.",
        "drop",
    )
    ctc_freeze_feature_encoder: bool = _help(
        "Keep a CTC model's convolutional feature encoder frozen while the rest trains, as wav2vec2's fine-tuning recipe does.",
        True,
    )

    def __post_init__(self):
        super().__post_init__()
        check_choice("ctc_latin_digits", self.ctc_latin_digits, KEEP_OR_DROP)
        check_choice("ctc_punctuation", self.ctc_punctuation, KEEP_OR_DROP)
