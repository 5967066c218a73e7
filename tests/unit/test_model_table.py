"""The evaluation's model table: every column as wide as its widest cell, so a wide interval never runs into the next
column, and kocer's breakdown under it only when there is a line to show."""

from __future__ import annotations

import re
from pathlib import Path

from kowhisper.common.bootstrap import BootstrapSettings, Difference
from kowhisper.evaluate.split import EvalResult, breakdown_lines, format_table
from kowhisper.families.base import ModelSource

BREAKDOWN = {"raw_errors": 219, "errors": {"spacing": 44, "punctuation": 37, "numbers_latin": 7, "real": 131},
             "shares": {"spacing": 0.2, "punctuation": 0.17, "numbers_latin": 0.03, "real": 0.6}}


def result(label: str, kind: str, rates: tuple[float, float, float, float], versus: dict | None = None,
           breakdown: dict | None = None) -> EvalResult:
    metrics = dict(zip(("cer", "wer", "cer_nospace", "kocer_cer"), rates), num_scored=10)
    if breakdown is not None:
        metrics["breakdown"] = breakdown
    return EvalResult(ModelSource(kind, Path("/runs") / label, label), metrics, seconds=12.0, rows=[{}] * 10, versus_base=versus)


def test_a_wide_interval_never_runs_into_the_next_column():
    # As on the bundled sample: ten utterances give intervals tens of points wide.
    wide = {"cer": Difference("cer", -0.5672, -0.9661, -0.2916), "kocer_cer": Difference("kocer_cer", -0.4402, -0.8211, -0.1307)}
    results = [result("base", "base", (1.071, 1.6, 0.9639, 0.8568)), result("sample", "adapter", (0.5038, 0.75, 0.4534, 0.403), wide)]
    table = format_table(results, results[1], "cer", BootstrapSettings()).splitlines()
    head, base_row, sample_row = table[:3]

    assert "better-" not in sample_row
    assert re.split(r"\s{2,}", sample_row) == ["sample", "50.38%", "75.00%", "45.34%", "40.30%", "10", "1.20",
                                                "-56.72 [-96.61, -29.16] better", "-44.02 [-82.11, -13.07] better", "*"]
    assert re.split(r"\s{2,}", base_row) == ["base", "107.10%", "160.00%", "96.39%", "85.68%", "10", "1.20", "-", "-"]
    # Each column lines up with its title: right-aligned figures end under it, the differences start under it.
    for title, cell in (("CER no-space", "45.34%"), ("kocer CER", "40.30%"), ("s/utt", "1.20")):
        assert sample_row.index(cell) + len(cell) == head.index(title) + len(title)
    for title, cell in (("CER vs base", "-56.72"), ("kocer CER vs base", "-44.02")):
        assert sample_row.index(cell) == head.index(title)


def test_the_breakdown_heading_comes_only_with_lines_under_it():
    base, sample = (0.2, 0.3, 0.2, 0.1), (0.1, 0.2, 0.1, 0.1)
    assert breakdown_lines([result("base", "base", base), result("sample", "adapter", sample)]) == []
    assert breakdown_lines([result("base", "base", base, breakdown={})]) == []
    lines = breakdown_lines([result("base", "base", base, breakdown=BREAKDOWN), result("sample", "adapter", sample)])
    assert lines[0].startswith("Where the errors are (kocer")
    assert lines[1:] == ["  base      219 errors: spacing 20%, punctuation 17%, numbers/Latin 3%, real 60%"]
    table = format_table([result("base", "base", base), result("sample", "adapter", sample)], None, "cer", BootstrapSettings())
    assert "Where the errors are" not in table
