"""Mixing training sources by weight: the weights are probabilities over the sources, every row is drawn, and the seed
fixes the order. Training on mixed sources is in tests/integration/test_mixing.py."""

from __future__ import annotations

from collections import Counter

from kowhisper.train.data import mix_sources


def test_weights_are_probabilities_over_sources_and_the_seed_fixes_the_order():
    from datasets import Dataset

    big = Dataset.from_dict({"id": [f"a{i}" for i in range(600)], "source": ["a"] * 600})
    small = Dataset.from_dict({"id": [f"b{i}" for i in range(600)], "source": ["b"] * 600})
    mixed = mix_sources([big, small], [3.0, 1.0], seed=7)
    share = Counter(mixed["source"])["b"] / len(mixed)
    # Binomial sampling error of a 1/4 share over ~800 draws is about 0.015.
    assert abs(share - 0.25) < 0.05, share
    assert set(mixed["id"]) == set(big["id"]) | set(small["id"]), "every row of every source is drawn (all_exhausted)"
    assert mixed["id"] == mix_sources([big, small], [3.0, 1.0], seed=7)["id"]
    assert mixed["id"] != mix_sources([big, small], [3.0, 1.0], seed=8)["id"]
