"""The characters a CTC model writes, and the text its labels are made of.

A CTC head has one output per character, so the vocabulary is a list of characters. It is built from the training
text of every source (NFC, so a syllable typed as jamo sequences counts as the syllable it composes):

- every Hangul syllable that occurs (가-힣), one token each;
- "|" for the space between words, "[PAD]" (id 0, also the CTC blank) and "[UNK]";
- Latin letters (lower-cased) and digits when `ctc_latin_digits=keep` (the default): "LG", "5G" and "3월" are
  common in Korean speech and read out as the letters or numbers;
- punctuation and symbols only with `ctc_punctuation=keep`; by default they are dropped from the labels (a model
  cannot hear a comma, and metrics ignore them anyway).

Anything else (Hanja, loose jamo such as ㅋㅋ, other scripts) gets no token and becomes [UNK] in the labels; the
setup reports which characters those were, and refuses a vocabulary that misses more than MAX_UNKNOWN_SHARE of
the training characters. A model that arrives with a CTC head and a vocabulary of its own (a Korean fine-tune)
keeps that vocabulary instead; the same report then tells what its vocabulary lacks.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transformers import Wav2Vec2CTCTokenizer

from kowhisper.families.ctc.options import CTCOptions

PAD = "[PAD]"
UNK = "[UNK]"
WORD_DELIMITER = "|"
# More unknown characters than this share of the training text means the labels would teach mostly [UNK].
MAX_UNKNOWN_SHARE = 0.05


_WHITESPACE = re.compile(r"\s+")


def is_hangul_syllable(char: str) -> bool:
    return "\uac00" <= char <= "\ud7a3"


def is_latin_or_digit(char: str) -> bool:
    return char.isascii() and char.isalnum()


def is_punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


@dataclass(frozen=True)
class CharacterRules:
    """What the labels keep besides Hangul: Latin letters and digits, and punctuation (each "keep" or "drop")."""

    latin_digits: str = "keep"
    punctuation: str = "drop"

    @classmethod
    def from_config(cls, config: CTCOptions) -> CharacterRules:
        return cls(config.ctc_latin_digits, config.ctc_punctuation)

    def label_text(self, text: str) -> str:
        """The text the labels spell: NFC, lower-cased, dropped classes replaced by a space, spaces collapsed."""
        text = unicodedata.normalize("NFC", str(text)).lower()
        kept = []
        for char in text:
            dropped = (self.punctuation == "drop" and is_punctuation(char)) or (self.latin_digits == "drop" and is_latin_or_digit(char))
            kept.append(" " if dropped else char)
        return _WHITESPACE.sub(" ", "".join(kept)).strip()

    def has_token(self, char: str) -> bool:
        """Whether a character of label text gets its own token in a vocabulary built from text."""
        if is_hangul_syllable(char):
            return True
        if is_latin_or_digit(char):
            return self.latin_digits == "keep"
        return is_punctuation(char) and self.punctuation == "keep"


def build_vocabulary(texts, rules: CharacterRules) -> dict[str, int]:
    """token -> id: [PAD] 0, [UNK] 1, "|" 2, then the training text's characters with a token, in code point order
    (so the same texts always give the same ids)."""
    chars = set()
    for text in texts:
        chars.update(char for char in rules.label_text(text) if char != " " and rules.has_token(char))
    return {PAD: 0, UNK: 1, WORD_DELIMITER: 2, **{char: index for index, char in enumerate(sorted(chars), start=3)}}


@dataclass
class Coverage:
    """How much of the training text a vocabulary can spell."""

    characters: int  # label characters in the training text, spaces not counted
    unknown: Counter  # character -> occurrences, for characters without a token

    @property
    def unknown_share(self) -> float:
        return sum(self.unknown.values()) / self.characters if self.characters else 0.0

    def describe(self, limit: int = 20) -> str:
        if not self.unknown:
            return f"the vocabulary spells every one of the {self.characters:,} training characters"
        shown = ", ".join(f"{char!r} x{count}" for char, count in self.unknown.most_common(limit))
        more = f" and {len(self.unknown) - limit} more" if len(self.unknown) > limit else ""
        return (f"{sum(self.unknown.values()):,} of {self.characters:,} training characters ({100 * self.unknown_share:.2f}%) "
                f"have no token and become {UNK}: {shown}{more}")


def coverage(texts, vocabulary: dict[str, int], rules: CharacterRules) -> Coverage:
    counts = Counter()
    for text in texts:
        counts.update(char for char in rules.label_text(text) if char != " ")
    unknown = Counter({char: count for char, count in counts.items() if char not in vocabulary})
    return Coverage(sum(counts.values()), unknown)


def make_tokenizer(vocabulary: dict[str, int], folder: Path):
    """A Wav2Vec2CTCTokenizer over `vocabulary`, written to `folder` (vocab.json is what it reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False, indent=1), encoding="utf-8")
    # No <s> and </s>: CTC labels have no sentence marks, and the tokenizer would add them as extra outputs.
    return Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER,
                                bos_token=None, eos_token=None)


def decode_ids(tokenizer, ids, group: bool) -> str:
    """Text of CTC output ids: with `group`, repeats collapse and blanks ([PAD]) separate them, as CTC decodes; without,
    each id is one character (labels). [UNK] is left out: it is no text, and would be scored as letters."""
    pad, unk = tokenizer.pad_token_id, tokenizer.unk_token_id
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    chars, previous = [], None
    for token in (int(i) for i in ids):
        if group and token == previous:
            continue
        previous = token
        if token in (pad, unk) or not 0 <= token < len(vocabulary):
            continue
        chars.append(" " if vocabulary[token] == WORD_DELIMITER else vocabulary[token])
    return " ".join("".join(chars).split())
