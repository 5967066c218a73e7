"""A call version of the real-speech set: the same clips, speakers and splits, as a telephone line delivers them.

`../shared/data/ko-real-speech` is clean read speech. Users fine-tune on calls, where whisper-base hears much worse, so
every clip is passed through a simulated narrowband telephone channel and written as an 8 kHz file, as call recordings
arrive (a simulation: no real telephone network was involved, and the README says so):

1. background noise on a share of clips (NOISY_SHARE): pink noise at NOISE_SNR_DB dB SNR against the clip's own power,
   added before the channel, where a caller's room is;
2. the telephone band: a 4th-order high-pass at 300 Hz and a 4th-order low-pass at 3400 Hz (ITU-T G.712's band);
3. 8 kHz, then one of three codecs, chosen per clip by a hash of its name so a rebuild is identical:
   G.711 mu-law (40%), G.711 A-law (30%) or GSM 06.10 full rate (30%), each stored in a WAV file in that codec
   (ffmpeg's pcm_mulaw, pcm_alaw and libgsm_ms; AMR-NB has no encoder in Debian's ffmpeg).

The tsv files are the clean set's, with the clip names pointing at the .wav files, so the two sets compare clip by
clip. A `channel.tsv` beside them says what each clip went through.

    python -m bench.call_audio                     # builds bench/out/call-speech (about 2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tests.sample_files import REAL_SPEECH

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CALL_SPEECH = PROJECT_ROOT / "bench" / "out" / "call-speech" / "cv-corpus-emotiontts-ko-call"
SPLITS = ("train", "dev", "test")
CODECS = (("mulaw", "pcm_mulaw", 0.4), ("alaw", "pcm_alaw", 0.3), ("gsm", "libgsm_ms", 0.3))
NOISY_SHARE = 0.3
NOISE_SNR_DB = 20.0
# Two 2-pole Butterworth sections each side: 4th order, 24 dB/octave outside 300-3400 Hz.
BAND = "highpass=f=300:poles=2,highpass=f=300:poles=2,lowpass=f=3400:poles=2,lowpass=f=3400:poles=2"
INPUT_RATE = 16_000
CALL_RATE = 8_000


def _share(name: str, salt: str) -> float:
    """A number in [0, 1) fixed by the clip's name: the same clip gets the same channel in every build."""
    # sha256, not crc32: CRC is linear, so the codec and noise draws of one name would be correlated.
    return int.from_bytes(hashlib.sha256(f"{salt}:{name}".encode()).digest()[:8], "big") / 2**64


def channel_of(name: str) -> tuple[str, str, bool]:
    """(codec name, ffmpeg encoder, noisy?) for a clip."""
    draw, total = _share(name, "codec"), 0.0
    chosen = CODECS[-1]
    for codec in CODECS:
        total += codec[2]
        if draw < total:
            chosen = codec
            break
    return chosen[0], chosen[1], _share(name, "noise") < NOISY_SHARE


def pink_noise(samples: int, seed: int) -> np.ndarray:
    """Unit-power noise with a 1/f power spectrum (shaped white noise), the usual stand-in for room and street noise.

    Not kowhisper.train.augment.coloured_noise (power-of-two FFT, float32, another draw order): this function made
    the call set bench/RESULTS.md reports, and a rebuild must give the same files."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, samples)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def _ffmpeg(arguments: list[str], stdin: bytes | None = None) -> bytes:
    quiet = ["-hide_banner", "-loglevel", "error", *([] if stdin else ["-nostdin"])]
    done = subprocess.run(["ffmpeg", *quiet, *arguments], input=stdin, capture_output=True)
    if done.returncode:
        raise RuntimeError(done.stderr.decode(errors="replace"))
    return done.stdout


def make_call(source: Path, target: Path) -> dict:
    """One clip through the channel into `target` (.wav at 8 kHz in the clip's codec); what it went through."""
    codec, encoder, noisy = channel_of(source.name)
    audio = np.frombuffer(_ffmpeg(["-i", str(source), "-ac", "1", "-ar", str(INPUT_RATE), "-f", "f32le", "-"]), dtype=np.float32)
    if noisy and audio.size:
        power = float(np.mean(audio.astype(np.float64) ** 2))
        audio = audio + np.sqrt(power / 10 ** (NOISE_SNR_DB / 10)) * pink_noise(audio.size, zlib.crc32(source.name.encode()))
    # Headroom: the codecs clip at full scale, as a line does.
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    _ffmpeg(["-f", "f32le", "-ar", str(INPUT_RATE), "-ac", "1", "-i", "-", "-af", BAND, "-ar", str(CALL_RATE),
             "-c:a", encoder, "-y", str(target)], stdin=audio.tobytes())
    return {"path": target.name, "codec": codec, "noise_snr_db": NOISE_SNR_DB if noisy else "",
            "seconds": round(audio.size / INPUT_RATE, 3)}


def _make_one(job: tuple[str, str]) -> dict:
    return make_call(Path(job[0]), Path(job[1]))


def build(source: Path = REAL_SPEECH, target: Path = CALL_SPEECH, workers: int = 2) -> Path:
    """The call version of a Common Voice layout folder; clips already built are kept."""
    clips = target / "ko" / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    jobs, tables = [], {}
    for split in SPLITS:
        with open(source / "ko" / f"{split}.tsv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        for row in rows:
            wav = clips / (Path(row["path"]).stem + ".wav")
            if not wav.is_file():
                jobs.append((str(source / "ko" / "clips" / row["path"]), str(wav)))
            row["path"] = wav.name
        tables[split] = rows
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_make_one, jobs, chunksize=8))
    for split, rows in tables.items():
        with open(target / "ko" / f"{split}.tsv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            writer.writeheader()
            writer.writerows(rows)
    with open(target / "ko" / "channel.tsv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["path", "codec", "noise_snr_db"])
        for split in SPLITS:
            for row in tables[split]:
                codec, _, noisy = channel_of(Path(row["path"]).stem + ".mp3")
                writer.writerow([row["path"], codec, NOISE_SNR_DB if noisy else ""])
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REAL_SPEECH)
    parser.add_argument("--target", type=Path, default=CALL_SPEECH)
    args = parser.parse_args(argv)
    if not (args.source / "ko" / "train.tsv").is_file():
        raise SystemExit(f"the real-speech set is not at {args.source}; this benchmark needs ../shared beside the project")
    target = build(args.source, args.target)
    counts: dict = {}
    with open(target / "ko" / "channel.tsv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            key = f"{row['codec']}{' + noise' if row['noise_snr_db'] else ''}"
            counts[key] = counts.get(key, 0) + 1
    print(f"call version at {target}: " + ", ".join(f"{key} {count}" for key, count in sorted(counts.items())))


if __name__ == "__main__":
    main()
