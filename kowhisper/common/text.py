"""Korean transcript text: label normalisation, metric normalisation and error rates.

Labels keep punctuation, because Whisper predicts it; metrics strip it, so a model is not charged for a
comma. Whisper's own BasicTextNormalizer(remove_diacritics=True) is not used: its NFKD step splits Hangul
syllables into jamo, which would make CER count jamo instead of syllables.

Three character error rates, each the corpus's summed edits over its summed reference characters:
- cer: on the metric form (punctuation removed, spaces kept and counted);
- cer_nospace: the same without spaces, since Korean spacing is loose;
- kocer_cer: kocer's reading-equivalent CER (PyPI kocer): also without spaces and punctuation, and a number or
  a Latin abbreviation counts as right when it is written as it is read ("3개" = "세 개", "AI" = "에이아이").
kocer gets the label form, not the metric form, because it needs the punctuation inside numbers ("3.5", "3:30").
"""

from __future__ import annotations

import math
import re
import unicodedata

import jiwer
import kocer

_WHITESPACE = re.compile(r"\s+")
# kocer reads a digit run as one Sino-Korean number up to 경 (10^16 groups), and fails on longer runs. Only a
# hallucinated hypothesis ("000…0111…1") has them; such a run is split into readable 20-digit pieces.
_UNREADABLE_NUMBER = re.compile(r"\d{21,}")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3})")  # kocer drops these, joining the groups into one run
# What kocer 0.4.0's number reader raises on a run it cannot name.
KOCER_NUMBER_FAILURES = (IndexError, KeyError, ValueError)
# The character rates that are scored per utterance (edits and reference characters), so they can be summed
# over any set of utterances: a corpus, a source, or a bootstrap resample.
CHARACTER_RATES = ("cer", "cer_nospace", "kocer_cer")
# Every rate a set of pairs is scored with (corpus_rates), overall and per source.
RATES = ("cer", "wer", "cer_nospace", "kocer_cer")
# Above this many characters (reference and hypothesis together) kocer's alignment, which is quadratic in pure
# Python, is run on pieces of the text cut where reference and hypothesis agree (see kocer_pieces).
KOCER_PIECE_CHARS = 600


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


def utterance_counts(reference: str, hypothesis: str) -> dict[str, int] | None:
    """Edit counts of one pair for every character rate: <rate>_errors and <rate>_chars (reference characters),
    plus cer_nospace_deletions (reference characters the hypothesis left out). None when the reference normalises
    to nothing, because an error rate over an empty reference is undefined."""
    ref, hyp = normalize_for_metric(reference), normalize_for_metric(hypothesis)
    if not ref:
        return None
    counts = {}
    for rate, (r, h) in (("cer", (ref, hyp)), ("cer_nospace", (ref.replace(" ", ""), hyp.replace(" ", "")))):
        edits = jiwer.process_characters(r, h)
        counts[f"{rate}_errors"] = edits.substitutions + edits.deletions + edits.insertions
        counts[f"{rate}_chars"] = len(r)
        if rate == "cer_nospace":
            counts["cer_nospace_deletions"] = edits.deletions
    errors, chars = kocer_counts(reference, hypothesis)
    counts["kocer_cer_errors"], counts["kocer_cer_chars"] = errors, chars
    return counts


def rates_from_counts(counts: list[dict[str, int]]) -> dict[str, float]:
    """Corpus-level character rates of scored utterances: summed edits over summed reference characters, so
    long utterances weigh more than short ones (jiwer's corpus CER)."""
    rates = {}
    for rate in CHARACTER_RATES:
        chars = sum(c[f"{rate}_chars"] for c in counts)
        rates[rate] = sum(c[f"{rate}_errors"] for c in counts) / chars if chars else float("nan")
    return rates


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus-level CER, WER, spacing-free CER and kocer CER on the pairs whose reference is not empty.

    Korean spacing is loose (the same sentence is often spaced two ways), so spacing-free CER tells apart
    recognition errors from spacing disagreements, and kocer CER also from number and abbreviation spelling.
    Pairs whose reference normalises to nothing are skipped, because an error rate over an empty reference is
    undefined.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    return corpus_rates(references, hypotheses, [utterance_counts(r, h) for r, h in zip(references, hypotheses)])


def corpus_rates(references: list[str], hypotheses: list[str], counts: list[dict[str, int] | None]) -> dict[str, float]:
    """error_rates from the pairs' utterance_counts, for a caller that keeps the counts too."""
    scored = [(r, h, c) for r, h, c in zip(references, hypotheses, counts) if c is not None]
    if not scored:
        return {"cer": float("nan"), "wer": float("nan"), "cer_nospace": float("nan"), "kocer_cer": float("nan"), "num_scored": 0}
    rates = rates_from_counts([c for _, _, c in scored])
    wer = jiwer.wer([normalize_for_metric(r) for r, _, _ in scored], [normalize_for_metric(h) for _, h, _ in scored])
    return {"cer": rates["cer"], "wer": wer, "cer_nospace": rates["cer_nospace"], "kocer_cer": rates["kocer_cer"],
            "num_scored": len(scored)}


def rates_by_source(references: list[str], hypotheses: list[str], counts: list[dict[str, int] | None],
                    sources: list[str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(overall, per source) for pairs tagged with their source: each source's corpus_rates, in the order the sources
    first occur, and the overall rates with their num_scored. With several sources the overall rates are the sources'
    rates weighted by their scored pairs, so a large source does not hide a small one; with one, its own rates.
    Training's dev metrics and evaluation both score this way."""
    per_source = {}
    for name in dict.fromkeys(sources):
        picked = [i for i, source in enumerate(sources) if source == name]
        per_source[name] = corpus_rates([references[i] for i in picked], [hypotheses[i] for i in picked], [counts[i] for i in picked])
    if len(per_source) == 1:
        return dict(next(iter(per_source.values()))), per_source
    scored = sum(rates["num_scored"] for rates in per_source.values())
    overall = {rate: sum(rates[rate] * rates["num_scored"] for rates in per_source.values()) / scored if scored else float("nan")
               for rate in RATES}
    return {**overall, "num_scored": scored}, per_source


# ---- kocer ----------------------------------------------------------------------------------------------------


def kocer_counts(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference characters) of kocer's reading-equivalent CER for one pair of any length."""
    results = [_measure(r, h) for r, h in kocer_pieces(reference, hypothesis)]
    return sum(result.errors for result in results), sum(result.ref_len for result in results)


def _measure(reference: str, hypothesis: str):
    """kocer.measure, and without reading numbers if kocer's number reader fails on this pair (it has failed on
    hallucinated digit runs): one odd hypothesis must not end an evaluation or a training run."""
    try:
        return kocer.measure(reference, hypothesis)
    except KOCER_NUMBER_FAILURES:
        return kocer.measure(reference, hypothesis, numbers=False)


def kocer_breakdown(references: list[str], hypotheses: list[str]) -> dict:
    """Where the errors of the plain character comparison go (kocer.breakdown): how many are spacing,
    punctuation, numbers and Latin letters written another way, and how many remain, with their shares.
    The counts are kocer's, over the text as written (spaces and punctuation counted), so they add up to more
    than this project's CER, which already leaves punctuation out."""
    pieces = [piece for r, h in zip(references, hypotheses) if normalize_for_metric(r) for piece in kocer_pieces(r, h)]
    if not pieces:
        return {}
    try:
        result = kocer.breakdown([r for r, _ in pieces], [h for _, h in pieces])
    except KOCER_NUMBER_FAILURES:
        # A pair kocer's number reader fails on (see _measure) is left out of the breakdown, which is a diagnosis.
        # Looked for only then: checking every pair first would double the breakdown's pure-Python work.
        pieces = [(r, h) for r, h in pieces if _kocer_reads(r, h)]
        if not pieces:
            return {}
        result = kocer.breakdown([r for r, _ in pieces], [h for _, h in pieces])
    return {
        "raw_errors": result.raw_errors,
        "errors": {"spacing": result.spacing, "punctuation": result.punctuation, "numbers_latin": result.numbers_letters,
                   "real": result.remaining},
        "shares": {"spacing": result.shares["spacing"], "punctuation": result.shares["punctuation"],
                   "numbers_latin": result.shares["numbers_letters"], "real": result.shares["remaining"]},
        "cer": {"raw": result.cer["raw"], "nospace": result.cer["nospace"], "nopunct": result.cer["nopunct"], "kocer": result.cer["kocer"]},
        "kocer_version": kocer.__version__,
    }


def _readable_numbers(text: str) -> str:
    """The text with digit runs too long for kocer to read as one number split into 20-digit pieces."""
    joined = _THOUSANDS_COMMA.sub("", text)
    return _UNREADABLE_NUMBER.sub(_split_digits, joined) if _UNREADABLE_NUMBER.search(joined) else text


def _split_digits(match: re.Match) -> str:
    digits = match.group()
    return " ".join(digits[i:i + 20] for i in range(0, len(digits), 20))


def _kocer_reads(reference: str, hypothesis: str) -> bool:
    try:
        kocer.measure(reference, hypothesis)
        return True
    except KOCER_NUMBER_FAILURES:
        return False


def kocer_pieces(reference: str, hypothesis: str) -> list[tuple[str, str]]:
    """The pair in the label form, cut into pieces for kocer when it is long (a whole recording's transcript).

    kocer aligns in pure Python, in time and memory quadratic in the length: a 20,000-character lecture would
    take minutes and gigabytes. The cuts are placed where the two texts agree: at a word boundary of both that
    lies inside a stretch of characters the (fast, jiwer) alignment matches, so no edit and no number spans a
    cut, and the pieces' errors add up to what kocer finds on the whole."""
    reference, hypothesis = (_readable_numbers(normalize_transcript(text)) for text in (reference, hypothesis))
    if len(reference) + len(hypothesis) <= KOCER_PIECE_CHARS or not hypothesis:
        return [(reference, hypothesis)]
    ref_words, hyp_words = reference.split(" "), hypothesis.split(" ")
    ref_starts, hyp_starts = _word_starts(ref_words), _word_starts(hyp_words)
    alignment = jiwer.process_characters("".join(ref_words), "".join(hyp_words)).alignments[0]
    target = KOCER_PIECE_CHARS // 2  # reference characters per piece, roughly
    cuts, last = [], 0
    for chunk in alignment:
        if chunk.type != "equal":
            continue
        # Strictly inside the matched stretch: the characters on both sides of the cut are matched.
        position = max(chunk.ref_start_idx + 1, last + target)
        while position < chunk.ref_end_idx:
            hyp_position = chunk.hyp_start_idx + position - chunk.ref_start_idx
            if position in ref_starts and hyp_position in hyp_starts:
                cuts.append((ref_starts[position], hyp_starts[hyp_position]))
                last = position
                position += target
            else:
                position += 1
    pieces, ref_from, hyp_from = [], 0, 0
    for ref_word, hyp_word in [*cuts, (len(ref_words), len(hyp_words))]:
        pieces.append((" ".join(ref_words[ref_from:ref_word]), " ".join(hyp_words[hyp_from:hyp_word])))
        ref_from, hyp_from = ref_word, hyp_word
    return pieces


def _word_starts(words: list[str]) -> dict[int, int]:
    """{character offset in the words joined without spaces: index of the word that starts there}."""
    starts, offset = {}, 0
    for index, word in enumerate(words):
        starts.setdefault(offset, index)
        offset += len(word)
    return starts


def format_percent(value: float | None, digits: int = 1) -> str:
    """A rate as a percentage for people; "n/a" where there is none (no evaluation, or nothing scored)."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"
