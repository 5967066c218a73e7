"""Waveform augmentation (kowhisper.train.augment): what each augmentation does to a signal, the key's parsing, and the
stateless draws that make a resumed run augment as an uninterrupted one. No model."""

from __future__ import annotations

import types

import numpy as np
import pytest

from kowhisper.common.audio import SAMPLING_RATE, to_int16
from kowhisper.config import ConfigError, augment_probabilities, load_config
from kowhisper.train.augment import (
    AugmentEpochCallback,
    WaveformAugmenter,
    add_noise,
    change_speed,
    mu_law,
    telephone_channel,
)


def chirp(seconds: float = 2.0) -> np.ndarray:
    """A sweep over 100-7,900 Hz at 0.3 amplitude: energy in and out of the telephone band."""
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    return (0.3 * np.sin(2 * np.pi * (100 * t + (7800 / (2 * seconds)) * t**2))).astype(np.float32)


def band_energy(waveform: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(waveform)) ** 2
    frequencies = np.fft.rfftfreq(len(waveform), 1 / SAMPLING_RATE)
    return float(spectrum[(frequencies >= low) & (frequencies < high)].sum())


def augmenter(**probabilities) -> WaveformAugmenter:
    return WaveformAugmenter(probabilities, (10.0, 30.0), (0.9, 1.1), seed=42)


def test_the_key_takes_names_with_optional_probabilities_and_names_what_is_wrong():
    assert augment_probabilities(["channel", "noise:0.3"]) == {"channel": 0.5, "noise": 0.3}
    assert augment_probabilities([]) == {}
    with pytest.raises(ConfigError, match="'reverb' is not one of channel, noise, speed, specaugment"):
        augment_probabilities(["reverb"])
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        augment_probabilities(["speed:1.5"])
    with pytest.raises(ConfigError, match="must be a number"):
        augment_probabilities(["speed:often"])
    with pytest.raises(ConfigError, match="augment"):
        load_config(["augment=[chanel]"])


def test_specaugment_in_the_list_is_spec_augment_and_draws_nothing_from_the_waveform():
    config = load_config(["augment=[specaugment]"])
    assert config.spec_augment is True
    assert WaveformAugmenter.from_config(config) is None
    assert WaveformAugmenter.from_config(load_config([])) is None
    both = WaveformAugmenter.from_config(load_config(["augment=[specaugment,channel:0.25]"]))
    assert both.probabilities == {"channel": 0.25}


def test_the_ranges_are_checked_with_the_config():
    with pytest.raises(ConfigError, match="augment_speed"):
        load_config(["augment=[speed]", "augment_speed=[1.1,0.9]"])
    with pytest.raises(ConfigError, match="augment_snr_db"):
        load_config(["augment=[noise]", "augment_snr_db=[20]"])


def test_the_telephone_channel_keeps_the_voice_band_and_removes_what_a_call_cannot_carry():
    clean = chirp()
    call = telephone_channel(clean)
    assert call.shape == clean.shape and call.dtype == np.float32
    inside = band_energy(call, 500, 3200) / band_energy(clean, 500, 3200)
    assert 0.8 < inside < 1.2, "the voice band passes"
    assert band_energy(call, 4000, 8000) < 1e-3 * band_energy(clean, 4000, 8000), "nothing above 4 kHz survives 8 kHz"
    assert band_energy(call, 0, 200) < 0.02 * band_energy(clean, 0, 200), "the low band is cut"


def test_mu_law_quantizes_to_256_levels_with_a_small_error_on_speech_levels():
    x = np.linspace(-0.5, 0.5, 10_001, dtype=np.float32)
    coded = mu_law(x)
    assert len(np.unique(coded)) <= 256
    assert np.max(np.abs(coded - x)) < 0.02
    assert np.sign(coded[x > 0.01]).min() == 1


def test_noise_is_added_at_the_drawn_signal_to_noise_ratio():
    clean = chirp()
    noisy = add_noise(clean, 20.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.5)
    silence = np.zeros(1000, dtype=np.float32)
    assert add_noise(silence, 20.0, np.random.default_rng(0)) is silence, "no signal, no noise level to set"


def test_speed_perturbation_changes_the_length_and_never_passes_the_cap():
    clean = chirp(2.0)
    assert len(change_speed(clean, 1.1)) == pytest.approx(len(clean) / 1.1, abs=2)
    assert len(change_speed(clean, 0.9)) == pytest.approx(len(clean) / 0.9, abs=2)
    capped = change_speed(clean, 0.9, max_samples=len(clean))
    assert len(capped) <= len(clean), "a clip at the cap is not slowed past it"


def test_draws_are_fixed_by_seed_clip_and_epoch():
    samples = to_int16(chirp()).astype(np.int64)  # as datasets' numpy format hands the stored int16 samples over
    every = augmenter(channel=1.0, noise=1.0, speed=1.0)
    first = every.apply(samples, "clip-1", epoch=0, max_samples=30 * SAMPLING_RATE)
    assert np.array_equal(first, every.apply(samples, "clip-1", epoch=0, max_samples=30 * SAMPLING_RATE)), "same key, same clip"
    assert not np.array_equal(first, every.apply(samples, "clip-1", epoch=1, max_samples=30 * SAMPLING_RATE)), "another epoch"
    other_seed = WaveformAugmenter(every.probabilities, every.snr_db, every.speed, seed=7)
    assert not np.array_equal(first, other_seed.apply(samples, "clip-1", epoch=0, max_samples=30 * SAMPLING_RATE))


def test_each_augmentation_happens_at_its_probability_and_one_never_shifts_another():
    half = augmenter(channel=0.5)
    taken = [bool(half.draws(f"clip-{index}", 0)[0]) for index in range(2000)]
    assert 0.45 < np.mean(taken) < 0.55
    # Adding noise to the list leaves which clips get the channel, and their speed draws, as they were.
    with_noise = augmenter(channel=0.5, noise=0.5)
    for index in range(200):
        assert ("channel" in half.draws(f"c{index}", 3)[0]) == ("channel" in with_noise.draws(f"c{index}", 3)[0])


def test_the_epoch_callback_counts_epochs_from_optimizer_steps_as_a_resumed_run_needs():
    collator = types.SimpleNamespace(epoch=None)
    callback = AugmentEpochCallback(collator)
    args = types.SimpleNamespace(gradient_accumulation_steps=2)
    loader = list(range(7))  # 7 batches, accumulation 2: 4 optimizer steps an epoch (the last one partial)
    for global_step, epoch in ((0, 0), (4, 1), (6, 1), (8, 2)):
        callback.on_epoch_begin(args, types.SimpleNamespace(global_step=global_step), None, train_dataloader=loader)
        assert collator.epoch == epoch


def test_the_training_order_follows_from_the_data_seed_and_the_epoch_alone():
    """What makes a resume in a later epoch train on the uninterrupted run's batches (and so its augmentations)."""
    from kowhisper.train.trainer import EpochSeededSampler

    sampler = EpochSeededSampler(50, seed=11)
    sampler.set_epoch(2)
    second_epoch = list(sampler)
    fresh = EpochSeededSampler(50, seed=11)  # a resumed run's sampler, told the epoch it resumes in
    fresh.set_epoch(2)
    assert list(fresh) == second_epoch and sorted(second_epoch) == list(range(50))
    fresh.set_epoch(3)
    assert list(fresh) != second_epoch
    lengths = [1.0] * 25 + [20.0] * 25
    grouped = EpochSeededSampler(50, seed=11, lengths=lengths, group_size=5)
    order = list(grouped)
    assert sorted(order) == list(range(50))
    batches = [order[i : i + 5] for i in range(0, 50, 5)]
    assert sum(len({lengths[i] for i in batch}) == 1 for batch in batches) >= 8, "batches hold clips of similar length"
