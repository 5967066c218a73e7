"""Korean transcript text: label normalisation, metric normalisation and error rates.

Labels keep punctuation, because Whisper predicts it; metrics strip it, so a model is not charged for a
comma. Whisper's own BasicTextNormalizer(remove_diacritics=True) is not used: its NFKD step splits Hangul
syllables into jamo, which would make CER count jamo instead of syllables.
"""

from __future__ import annotations

import math
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def normalize_transcript(text: str | None) -> str:
    """The label form: NFC, trimmed, whitespace collapsed to single spaces. Punctuation stays."""
    if text is None:
        return ""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", str(text))).strip()


def normalize_for_metric(text: str | None) -> str:
    """The scoring form: the label form without punctuation and symbols, Latin letters lower-cased."""
    text = normalize_transcript(text)
    kept = [" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text]
    return _WHITESPACE.sub(" ", "".join(kept)).strip().lower()


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus-level CER (the primary Korean metric), WER and spacing-free CER on metric-normalised text.

    Korean spacing is loose (the same sentence is often spaced two ways), so spacing-free CER tells apart
    real recognition errors from spacing disagreements. Pairs whose reference normalises to nothing are
    skipped, because an error rate over an empty reference is undefined.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(normalize_for_metric(r), normalize_for_metric(h)) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return {"cer": float("nan"), "wer": float("nan"), "cer_nospace": float("nan"), "num_scored": 0}
    refs, hyps = zip(*pairs)
    return {
        "cer": jiwer.cer(list(refs), list(hyps)),
        "wer": jiwer.wer(list(refs), list(hyps)),
        "cer_nospace": jiwer.cer([r.replace(" ", "") for r in refs], [h.replace(" ", "") for h in hyps]),
        "num_scored": len(refs),
    }


def utterance_cer(reference: str, hypothesis: str) -> float:
    import jiwer

    reference = normalize_for_metric(reference)
    if not reference:
        return float("nan")
    return jiwer.cer(reference, normalize_for_metric(hypothesis))


def format_percent(value: float | None, digits: int = 1) -> str:
    """A rate as a percentage for people; "n/a" where there is none (no evaluation, or nothing scored)."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"
