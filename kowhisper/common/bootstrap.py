"""Is a difference in error rate real? A paired bootstrap over utterances.

Two models scored on the same utterances differ by a point or two of CER, and a few hard utterances can make
that. The bootstrap draws the utterances again with replacement, many times, recomputes both models' rates on
each draw (the same draw for both: paired) and reads the middle 95% of the differences. If that interval lies
below 0 the model is better than the one it is compared with, above 0 worse, and otherwise the data cannot tell
them apart.

A rate is recomputed as evaluation computes it: summed edits over summed reference characters, and with several
sources the sources' rates weighted by their utterance counts. Utterances are therefore drawn within each source
(a stratified bootstrap), so every draw keeps the sources' weights. kocer.compare() does a paired bootstrap too,
but over one pooled corpus and only for its own rate; this needs the project's CER as well, on counts evaluation
already has, weighted by source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
# Utterance draws held in memory at once (resamples x utterances of one source), about 80 MB of indices.
DRAWS_PER_CHUNK = 10_000_000


@dataclass(frozen=True)
class Difference:
    """A model's rate minus the reference model's (negative: fewer errors), with its bootstrap interval."""

    rate: str
    difference: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.high < 0:
            return "better"
        if self.low > 0:
            return "worse"
        return "no clear difference"

    def describe(self) -> str:
        """'-1.30 [-2.10, -0.50] better': percentage points, the interval, the verdict."""
        return f"{100 * self.difference:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}] {self.verdict}"

    def as_dict(self) -> dict:
        return {"difference": self.difference, "low": self.low, "high": self.high, "verdict": self.verdict}


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = 1000
    seed: int = 0

    @classmethod
    def from_config(cls, config) -> BootstrapSettings:
        return cls(config.bootstrap_resamples, config.bootstrap_seed)

    def describe(self, units: int, unit: str = "utterances") -> str:
        return (f"{int(100 * CONFIDENCE)}% intervals from a paired bootstrap over the {units} {unit} "
                f"({self.resamples} resamples, seed {self.seed})")

    def as_dict(self, units: int) -> dict:
        return {"resamples": self.resamples, "seed": self.seed, "confidence": CONFIDENCE, "units": units}


def compare_with_reference(reference: list[dict | None], models: dict[str, list[dict | None]], groups: list[str],
                           rates: tuple[str, ...], settings: BootstrapSettings) -> dict[str, dict[str, Difference]]:
    """{model: {rate: model's rate minus the reference's}} for per-utterance counts (kowhisper.common.text.utterance_counts:
    <rate>_errors and <rate>_chars; None for an utterance that is not scored) of the reference model and of each
    model, on the same utterances in the same order; `groups` names each utterance's source. Every model and rate
    is measured on the same draws."""
    for name, counts in models.items():
        if len(counts) != len(reference):
            raise ValueError(f"{name} has {len(counts)} utterances, the reference model {len(reference)}")
    if len(groups) != len(reference):
        raise ValueError(f"{len(groups)} sources for {len(reference)} utterances")
    # The same utterances are unscored for every model (their reference is empty), so they simply drop out.
    scored = [i for i, counts in enumerate(reference) if counts is not None]
    systems = {None: reference, **models}
    arrays = {(name, rate, part): np.array([counts[i][f"{rate}_{part}"] for i in scored], dtype=np.int64)
              for name, counts in systems.items() for rate in rates for part in ("errors", "chars")}
    group_of = np.array([groups[i] for i in scored])
    sample = {(name, rate): np.zeros(settings.resamples) for name in systems for rate in rates}
    point = {(name, rate): 0.0 for name in systems for rate in rates}
    rng = np.random.default_rng(settings.seed)
    for group in dict.fromkeys(group_of.tolist()):
        members = np.flatnonzero(group_of == group)
        weight = len(members) / len(scored)
        for name in systems:
            for rate in rates:
                errors, chars = arrays[(name, rate, "errors")][members], arrays[(name, rate, "chars")][members]
                point[(name, rate)] += weight * errors.sum() / max(chars.sum(), 1)
        chunk = max(1, DRAWS_PER_CHUNK // len(members))
        for first in range(0, settings.resamples, chunk):
            size = min(chunk, settings.resamples - first)
            draws = members[rng.integers(0, len(members), (size, len(members)))]
            for name in systems:
                for rate in rates:
                    errors = arrays[(name, rate, "errors")][draws].sum(axis=1)
                    chars = np.maximum(arrays[(name, rate, "chars")][draws].sum(axis=1), 1)
                    sample[(name, rate)][first : first + size] += weight * errors / chars
    tail = (1 - CONFIDENCE) / 2
    result = {}
    for name in models:
        result[name] = {}
        for rate in rates:
            differences = sample[(name, rate)] - sample[(None, rate)]
            low, high = np.quantile(differences, [tail, 1 - tail])
            result[name][rate] = Difference(rate, float(point[(name, rate)] - point[(None, rate)]), float(low), float(high))
    return result
