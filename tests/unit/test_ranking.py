"""Ranking runs: the config keys that differ between runs become the table's columns, what they share does not. Runs
ranked by evaluate_model.py eval_run=all are in tests/integration/test_run_ranking.py."""

from __future__ import annotations

from kowhisper.evaluate.ranking import differing_keys


def test_only_the_keys_that_differ_between_runs_are_shown():
    configs = [{"learning_rate": 1e-3, "lora_r": 8, "run_name": "a"}, {"learning_rate": 1e-4, "lora_r": 8, "run_name": "b"}]
    assert differing_keys(configs) == ["learning_rate"]
