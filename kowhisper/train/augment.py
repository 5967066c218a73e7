"""Augmentation of training clips (`augment=`): what a telephone line, a noisy room and another speaking rate do to audio.

Whisper was trained on wideband audio; calls reach it through a 300-3400 Hz band at 8 kHz, companded to 8 bits, and it
hears them about 8 points of CER worse (bench/RESULTS.md, "Call audio"). A model fine-tuned on clean clips learns
nothing about that channel unless its training clips go through it too. So each training clip, with a probability per
augmentation, is changed before its features are computed:

- speed: resampled by a factor in augment_speed (0.9-1.1), Kaldi's speed perturbation (tempo and pitch move together).
  A clip never grows past `max_samples` (Whisper's 30 s window); timestamps follow because Whisper's timestamped labels
  are read off each clip's own features after this (kowhisper.families.whisper.features.TimestampedLabels);
- noise: white, pink or brown noise at an SNR drawn from augment_snr_db, added where a caller's room is, before the line;
- channel: the telephone band (smooth 300-3400 Hz band-pass), down to 8 kHz, G.711 mu-law companding to 8 bits, and
  back to 16 kHz, the way a call arrives at a contact centre.

A few lines of numpy and soxr do all three; audiomentations has no companding or 8 kHz round trip, and scipy (its
filters) is not otherwise needed. `specaugment` in the list is `spec_augment=true`: Whisper's and wav2vec2's own masks on
the features, applied inside the model in training mode, so it is not drawn here.

Reproducible without state: a clip's draws come from a generator seeded by (seed, clip id, epoch), so a run, its resume
after kill -9 and every DataLoader worker augment the same clip the same way in the same epoch, and another epoch
differently. The epoch comes from the Trainer's step count (`AugmentEpochCallback`).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np
import soxr
from transformers import TrainerCallback

from kowhisper.common.audio import AUDIO_COLUMN, SAMPLING_RATE, from_int16
from kowhisper.config import TrainGroup, augment_probabilities
from kowhisper.train.arguments import TrainingSetupError

WAVEFORM_AUGMENTATIONS = ("speed", "noise", "channel")  # in the order they are applied
TELEPHONE_BAND_HZ = (300.0, 3400.0)
TELEPHONE_RATE = 8_000
MU = 255.0  # G.711 mu-law
BAND_EDGE_HZ = 100.0  # the band-pass falls off over this width (a raised cosine), not as a brick wall
NOISE_COLOURS = (0.0, 1.0, 2.0)  # power falls as 1/f**colour: white, pink, brown


@dataclass(frozen=True)
class WaveformAugmenter:
    """The waveform augmentations of a run, each with its probability. `epoch` is set by AugmentEpochCallback."""

    probabilities: dict
    snr_db: tuple[float, float]
    speed: tuple[float, float]
    seed: int

    @classmethod
    def from_config(cls, config: TrainGroup) -> WaveformAugmenter | None:
        """The run's augmenter, or None when no waveform augmentation is asked for (augment=[] or only specaugment)."""
        chosen = augment_probabilities(config.augment)
        waveform = {name: chosen[name] for name in WAVEFORM_AUGMENTATIONS if name in chosen}
        if not waveform:
            return None
        # The ranges were checked with the config (TrainGroup).
        return cls(waveform, tuple(config.augment_snr_db), tuple(config.augment_speed), config.seed)

    def describe(self) -> str:
        return ", ".join(f"{name} p={probability:g}" for name, probability in self.probabilities.items())

    def generator(self, clip_id: str, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(str(clip_id).encode("utf-8")), epoch])

    def draws(self, clip_id: str, epoch: int) -> tuple[dict, np.random.Generator]:
        """({name: parameter} of the augmentations this clip gets in this epoch, the generator for their noise)."""
        rng = self.generator(clip_id, epoch)
        # Every draw is made, taken or not, so one augmentation's choice never shifts another's.
        happens = {name: rng.random() < self.probabilities.get(name, 0.0) for name in WAVEFORM_AUGMENTATIONS}
        parameters = {"speed": rng.uniform(*self.speed), "noise": rng.uniform(*self.snr_db), "channel": None}
        return {name: parameters[name] for name in WAVEFORM_AUGMENTATIONS if happens[name]}, rng

    def require_audio(self, dataset, family: str) -> None:
        """TrainingSetupError unless the training rows carry their audio."""
        if AUDIO_COLUMN not in dataset.column_names:
            raise TrainingSetupError(
                f"augment={list(self.probabilities)} changes the waveform, and this {family} workspace stores features only "
                "(prepared with keep_audio=false, or before keep_audio existed). Re-run the online setup with keep_audio=true "
                "to keep each clip's audio, or train with augment=[specaugment], which works on the features.")

    def apply(self, samples, clip_id: str, epoch: int, max_samples: int | None = None) -> np.ndarray | None:
        """The clip's 16 kHz float32 waveform as this epoch trains on it, from its stored int16 samples, or None when it
        is left as stored."""
        chosen, rng = self.draws(clip_id, epoch)
        if not chosen:
            return None
        waveform = from_int16(samples)  # the stored int16 samples (datasets' numpy format hands them over as int64)
        if "speed" in chosen:
            waveform = change_speed(waveform, chosen["speed"], max_samples)
        if "noise" in chosen:
            waveform = add_noise(waveform, chosen["noise"], rng)
        if "channel" in chosen:
            waveform = telephone_channel(waveform)
        return waveform


def change_speed(waveform: np.ndarray, factor: float, max_samples: int | None = None) -> np.ndarray:
    """The clip played `factor` times as fast (shorter above 1), never longer than max_samples."""
    if max_samples is not None:
        factor = max(factor, len(waveform) / max_samples)
    target = max(int(round(SAMPLING_RATE / factor)), 1)
    if target == SAMPLING_RATE:
        return waveform
    return soxr.resample(waveform, SAMPLING_RATE, target, quality="HQ").astype(np.float32, copy=False)[:max_samples]


def fft_size(samples: int) -> int:
    """The power of two at or above `samples`: numpy's FFT of a length with a large prime factor is 10-30x slower."""
    return 1 << max(samples - 1, 1).bit_length()


def coloured_noise(samples: int, colour: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise whose power falls as 1/f**colour (shaped in a power-of-two FFT, then cut to length)."""
    size = fft_size(samples)
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(size, dtype=np.float32)) * colour_gain(size, colour), size)[:samples]
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


@functools.lru_cache(maxsize=32)
def colour_gain(size: int, colour: float) -> np.ndarray:
    """Amplitude per rfft bin of 1/f**colour power, nothing at 0 Hz."""
    frequencies = np.fft.rfftfreq(size)
    gain = np.zeros_like(frequencies, dtype=np.float32)
    gain[1:] = frequencies[1:] ** (-colour / 2)
    return gain


def add_noise(waveform: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(np.square(waveform, dtype=np.float64)))
    if power == 0 or len(waveform) < 2:
        return waveform
    noise = coloured_noise(len(waveform), float(rng.choice(NOISE_COLOURS)), rng)
    return np.clip(waveform + math.sqrt(power / 10 ** (snr_db / 10)) * noise, -1.0, 1.0).astype(np.float32)


def band_pass(waveform: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    """Keep low..high Hz, with raised-cosine edges BAND_EDGE_HZ wide (a zero-phase filter in the frequency domain, over
    the clip padded with silence to a power of two)."""
    size = fft_size(len(waveform))
    spectrum = np.fft.rfft(waveform, size)
    return np.fft.irfft(spectrum * band_gain(size, rate, low, high), size)[: len(waveform)].astype(np.float32)


@functools.lru_cache(maxsize=32)
def band_gain(size: int, rate: int, low: float, high: float) -> np.ndarray:
    """The band-pass's gain per rfft bin; sizes are powers of two, so a run needs a handful."""
    frequencies = np.fft.rfftfreq(size, 1 / rate)
    rise = np.clip((frequencies - (low - BAND_EDGE_HZ / 2)) / BAND_EDGE_HZ, 0, 1)
    fall = np.clip(((high + BAND_EDGE_HZ / 2) - frequencies) / BAND_EDGE_HZ, 0, 1)
    return (np.sin(np.pi / 2 * rise) ** 2 * np.sin(np.pi / 2 * fall) ** 2).astype(np.float32)


def mu_law(waveform: np.ndarray) -> np.ndarray:
    """G.711 mu-law: compand, quantize to 8 bits, expand, as a line codes each sample."""
    x = np.clip(waveform, -1.0, 1.0)
    companded = np.sign(x) * np.log1p(MU * np.abs(x)) / math.log1p(MU)
    quantized = np.round((companded + 1) / 2 * MU) / MU * 2 - 1
    return (np.sign(quantized) * np.expm1(np.abs(quantized) * math.log1p(MU)) / MU).astype(np.float32)


def telephone_channel(waveform: np.ndarray) -> np.ndarray:
    """A narrowband call: 300-3400 Hz, 8 kHz, mu-law, back at 16 kHz (the band above 4 kHz stays empty, as in a call)."""
    if len(waveform) < 2:
        return waveform
    # Down to 8 kHz first (soxr's anti-aliasing filter), then the band at 8 kHz: half the FFT of filtering at 16 kHz.
    narrow = band_pass(soxr.resample(waveform, SAMPLING_RATE, TELEPHONE_RATE, quality="HQ"), TELEPHONE_RATE, *TELEPHONE_BAND_HZ)
    wide = soxr.resample(mu_law(narrow), TELEPHONE_RATE, SAMPLING_RATE, quality="HQ").astype(np.float32, copy=False)
    return wide[: len(waveform)]


class AugmentEpochCallback(TrainerCallback):
    """Tells the augmenter's collator which epoch begins, from the optimizer steps done: right after a resume too,
    where the Trainer's state.epoch is fractional."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # A partial accumulation at an epoch's end still makes an optimizer step (kowhisper.train.arguments.training_plan).
        steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps) if train_dataloader is not None else 0
        self.collator.epoch = state.global_step // steps_per_epoch if steps_per_epoch else 0
