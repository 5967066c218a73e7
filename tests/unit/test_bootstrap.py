"""The paired bootstrap that says whether a difference in error rate is real: identical hypotheses give an interval
around 0, a clearly better list one below 0, a seed makes it reproducible, and with several sources the draws keep
the sources' weights. Hypotheses are scored by the project's own scorer (kowhisper.common.text.utterance_counts)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kowhisper.common.bootstrap import BootstrapSettings, compare_with_reference
from kowhisper.common.text import error_rates, utterance_counts

SENTENCES = Path(__file__).resolve().parents[2] / "sample_data" / "cv-corpus-ko-sample" / "ko" / "validated.tsv"
RATES = ("cer", "kocer_cer")


@pytest.fixture(scope="module")
def references() -> list[str]:
    with open(SENTENCES, encoding="utf-8", newline="") as handle:
        return [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)][:40]


def garble(sentence: str, every: int) -> str:
    """The sentence with every `every`-th syllable replaced: a model that mishears."""
    return "".join("가" if i % every == every - 1 and ch != " " else ch for i, ch in enumerate(sentence))


def counts_of(references: list[str], hypotheses: list[str]) -> list[dict]:
    return [utterance_counts(r, h) for r, h in zip(references, hypotheses)]


def test_identical_hypotheses_give_an_interval_around_zero(references):
    noisy = [garble(sentence, 6) for sentence in references]
    result = compare_with_reference(counts_of(references, noisy), {"same": counts_of(references, noisy)}, ["all"] * len(references),
                                    RATES, BootstrapSettings(1000, 0))["same"]
    for difference in result.values():
        assert difference.difference == 0.0
        assert difference.low <= 0.0 <= difference.high
        assert difference.verdict == "no clear difference"


def test_a_clearly_better_list_has_an_interval_below_zero_and_the_worse_one_above(references):
    base_hypotheses, better_hypotheses = [garble(s, 5) for s in references], [garble(s, 25) for s in references]
    base, better = counts_of(references, base_hypotheses), counts_of(references, better_hypotheses)
    result = compare_with_reference(base, {"better": better}, ["all"] * len(references), RATES, BootstrapSettings(1000, 0))["better"]
    expected = error_rates(references, better_hypotheses)["cer"] - error_rates(references, base_hypotheses)["cer"]
    assert result["cer"].difference == pytest.approx(expected)
    assert result["cer"].high < 0 and result["cer"].verdict == "better"
    assert result["kocer_cer"].high < 0 and result["kocer_cer"].verdict == "better"
    reverse = compare_with_reference(better, {"worse": base}, ["all"] * len(references), RATES, BootstrapSettings(1000, 0))["worse"]
    assert reverse["cer"].low > 0 and reverse["cer"].verdict == "worse"
    assert reverse["cer"].difference == pytest.approx(-result["cer"].difference)


def test_the_same_seed_gives_the_same_interval(references):
    base = counts_of(references, [garble(sentence, 5) for sentence in references])
    # Errors in only some utterances, so the interval is wide and depends on the draws.
    model = counts_of(references, [garble(s, 4) if i % 3 else s for i, s in enumerate(references)])
    groups = ["all"] * len(references)

    def interval(seed: int):
        difference = compare_with_reference(base, {"m": model}, groups, ("cer",), BootstrapSettings(500, seed))["m"]["cer"]
        return difference.low, difference.high

    assert interval(7) == interval(7)
    assert interval(7) != interval(8)


def test_with_several_sources_the_difference_is_of_the_weighted_rates_and_draws_stay_within_each_source(references):
    """Evaluation weights each source's rate by its utterance count; the bootstrap draws within each source, so
    a source with few utterances keeps its weight in every draw."""
    groups = ["big"] * 30 + ["small"] * 10
    base_hypotheses = [garble(s, 5) for s in references]
    model_hypotheses = list(references[:30]) + base_hypotheses[30:]  # perfect on "big", unchanged on "small"
    result = compare_with_reference(counts_of(references, base_hypotheses), {"m": counts_of(references, model_hypotheses)}, groups,
                                    ("cer",), BootstrapSettings(1000, 0))["m"]["cer"]
    big_base = error_rates(references[:30], base_hypotheses[:30])["cer"]
    assert result.difference == pytest.approx(30 / 40 * (0.0 - big_base))
    assert result.verdict == "better"


def test_unscored_utterances_drop_out_and_mismatched_lists_are_refused(references):
    base = counts_of(["...", *references[:5]], ["아무 말", *references[:5]])
    assert base[0] is None
    result = compare_with_reference(base, {"m": base}, ["all"] * 6, ("cer",), BootstrapSettings(100, 0))["m"]["cer"]
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="has 5 utterances"):
        compare_with_reference(base, {"m": base[:5]}, ["all"] * 6, ("cer",), BootstrapSettings(100, 0))
