"""Build the small synthetic Korean sample set in Common Voice release layout.

Speech is synthesized with espeak-ng from the CC0 rows of the shared sentence
list, so the result can be committed and redistributed without attribution
obligations. Usage: python scripts/make_sample_data.py --help
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import re
import subprocess
import wave
from pathlib import Path

from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "sample_data" / "cv-corpus-ko-sample" / "ko"
DEFAULT_SENTENCES = REPO_ROOT.parent / "shared" / "data" / "ko_sentences.tsv"
LICENSE = "CC0-1.0"
CV_COLUMNS = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
              "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]
# Disjoint voice sets per split, like Common Voice's speaker-disjoint splits.
SPLIT_VOICES = {
    "train": ["ko+m1", "ko+f1", "ko+m2", "ko+f2", "ko+m3", "ko+m4", "ko+m5"],
    "dev": ["ko+m6", "ko+f3", "ko+m7"],
    "test": ["ko+m8", "ko+f4", "ko+f5"],
}
SPEED_RANGE, PITCH_RANGE = (130, 170), (35, 65)
PREFERRED_LEN = (8, 30)
BITRATE = "48k"
# Without these, ffmpeg stamps its version into the file and reruns churn git.
BITEXACT = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]


def synthesize_clip(sentence: str, voice: str, speed: int, pitch: int,
                    out_path: Path, sample_rate: int = 48000) -> float:
    """Speak `sentence` with espeak-ng into a mono MP3; return its duration in seconds."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", sentence], check=True, capture_output=True).stdout
    # espeak-ng streams with a placeholder length, so count the frames actually present.
    with wave.open(io.BytesIO(wav)) as w:
        frames = len(w.readframes(w.getnframes())) // (w.getsampwidth() * w.getnchannels())
        duration = frames / w.getframerate()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "wav", "-i", "-",
                    "-ar", str(sample_rate), "-ac", "1", "-c:a", "libmp3lame", "-b:a", BITRATE,
                    *BITEXACT, str(out_path)], input=wav, check=True)
    return duration


def load_cc0_sentences(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        # Sorting and de-duplicating makes the selection independent of file order.
        unique = {r["sentence"]: r for r in rows if r["license"] == LICENSE}
    return [unique[s] for s in sorted(unique)]


def choose_sentences(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    lo, hi = PREFERRED_LEN
    preferred = [r for r in rows if lo <= len(r["sentence"]) <= hi]
    others = [r for r in rows if r not in preferred]
    if n > len(rows):
        raise SystemExit(f"need {n} sentences but only {len(rows)} {LICENSE} rows exist")
    picked = rng.sample(preferred, min(n, len(preferred)))
    return picked + rng.sample(others, n - len(picked))


def tool_version(cmd: list[str]) -> str:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    # Keep just "name version"; the rest (copyright years, data path) is noise.
    return re.split(r"\s{2,}| Copyright", out.splitlines()[0])[0].strip()


def write_tsv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        # QUOTE_NONE keeps Common Voice's unquoted format; it raises on stray tabs.
        writer = csv.DictWriter(f, columns, delimiter="\t", quoting=csv.QUOTE_NONE,
                                lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


README_TEMPLATE = """\
# cv-corpus-ko-sample

A tiny synthetic Korean speech set laid out like a Common Voice release
(`ko/clips/*.mp3`, `ko/{{train,dev,test,validated}}.tsv`) for tests, demos and
smoke-running the fine-tuning pipeline without downloading Common Voice.
It is not real speech: do not judge model quality on it.

- clips: {n_clips} ({split_counts}); 48 kHz mono MP3, libmp3lame {bitrate}
- total audio: {total:.1f} s; clip durations {shortest:.1f}-{longest:.1f} s
- `validated.tsv` is the union of the three splits; no sentence and no voice
  appears in two splits.
- `client_id` is a fake stable hash per espeak-ng voice; `sentence_id` is the
  SHA-256 of the sentence; up_votes 2, down_votes 0; age, gender, accents and
  the other unknown columns are empty.
- `ko/sentences_source.tsv` records each clip's sentence, license and source,
  plus the voice, speed and pitch used.

## How it was made

From the repository root:

    {command}

Tools: {espeak_version}; {ffmpeg_version}.
Each clip is `espeak-ng -v VOICE -s SPEED -p PITCH --stdout SENTENCE` piped into
`ffmpeg -f wav -i - -ar 48000 -ac 1 -c:a libmp3lame -b:a {bitrate} {bitexact}`.
Sentences, speeds ({speed_lo}-{speed_hi} words per minute) and pitches
({pitch_lo}-{pitch_hi}) come from a seeded RNG, so reruns give identical files.

| split | voice | clips | speeds | pitches |
|---|---|---|---|---|
{voice_rows}

## License

- Sentences: {license} (public domain dedication), taken only from the
  {license} rows of the Common Voice Korean sentence collector, source
  `{source}`.
  No CC-BY rows (such as the Tatoeba sentences in the same input file) are
  used, so no attribution is required.
- Audio: synthesized with espeak-ng. espeak-ng is a GPL-3.0 program, but its
  license does not cover the speech it outputs; the clips are released under
  {license} like the sentences.
"""


def write_readme(path: Path, clips: list[dict], command: str, source: str) -> None:
    voice_rows = []
    for split, voices in SPLIT_VOICES.items():
        for voice in voices:
            mine = [c for c in clips if c["split"] == split and c["voice"] == voice]
            if mine:
                speeds = [c["speed"] for c in mine]
                pitches = [c["pitch"] for c in mine]
                voice_rows.append(f"| {split} | {voice} | {len(mine)} | {min(speeds)}-{max(speeds)}"
                                  f" | {min(pitches)}-{max(pitches)} |")
    durations = [c["duration"] for c in clips]
    text = README_TEMPLATE.format(
        n_clips=len(clips), bitrate=BITRATE, bitexact=" ".join(BITEXACT),
        split_counts=", ".join(f"{s} {sum(c['split'] == s for c in clips)}" for s in SPLIT_VOICES),
        total=sum(durations), shortest=min(durations), longest=max(durations),
        command=command, espeak_version=tool_version(["espeak-ng", "--version"]),
        ffmpeg_version=tool_version(["ffmpeg", "-version"]),
        speed_lo=SPEED_RANGE[0], speed_hi=SPEED_RANGE[1],
        pitch_lo=PITCH_RANGE[0], pitch_hi=PITCH_RANGE[1],
        voice_rows="\n".join(voice_rows), license=LICENSE, source=source)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="locale directory to write (clips/ and TSVs); README goes in its parent")
    p.add_argument("--sentences", type=Path, default=DEFAULT_SENTENCES,
                   help="sentence TSV with sentence/license/source/attribution columns")
    p.add_argument("--seed", type=int, default=1234, help="seed for sentence, speed and pitch choice")
    p.add_argument("--train", type=int, default=40, help="number of train clips")
    p.add_argument("--dev", type=int, default=10, help="number of dev clips")
    p.add_argument("--test", type=int, default=10, help="number of test clips")
    args = p.parse_args()

    rng = random.Random(args.seed)
    sizes = {"train": args.train, "dev": args.dev, "test": args.test}
    chosen = choose_sentences(load_cc0_sentences(args.sentences), sum(sizes.values()), rng)
    clips, it = [], iter(chosen)
    for split, n in sizes.items():
        for i in range(n):
            row, voice = next(it), SPLIT_VOICES[split][i % len(SPLIT_VOICES[split])]
            clips.append({
                "split": split, "voice": voice, "sentence": row["sentence"],
                "license": row["license"], "source": row["source"],
                "path": f"common_voice_ko_sample_{len(clips) + 1:04d}.mp3",
                "speed": rng.randint(*SPEED_RANGE), "pitch": rng.randint(*PITCH_RANGE),
                "client_id": hashlib.sha512(f"cv-ko-sample:{voice}".encode()).hexdigest(),
                "sentence_id": hashlib.sha256(row["sentence"].encode()).hexdigest(),
                "up_votes": 2, "down_votes": 0, "locale": "ko",
            })

    clip_dir = args.out / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    # Drop clips from an earlier run with larger counts so no orphans linger.
    for stale in clip_dir.glob("common_voice_ko_sample_*.mp3"):
        stale.unlink()
    for c in tqdm(clips, desc="synthesizing", unit="clip"):
        c["duration"] = synthesize_clip(c["sentence"], c["voice"], c["speed"], c["pitch"],
                                        clip_dir / c["path"])

    for split in sizes:
        write_tsv(args.out / f"{split}.tsv", CV_COLUMNS, [c for c in clips if c["split"] == split])
    write_tsv(args.out / "validated.tsv", CV_COLUMNS, clips)
    write_tsv(args.out / "sentences_source.tsv",
              ["path", "sentence", "license", "source", "voice", "speed", "pitch"], clips)

    command = "python scripts/make_sample_data.py" + "".join(
        f" --{k} {v}" for k, v in [("seed", args.seed), *sizes.items()])
    if args.sentences != DEFAULT_SENTENCES:
        command += f" --sentences {args.sentences}"
    if args.out != DEFAULT_OUT:
        command += f" --out {args.out}"
    write_readme(args.out.parent / "README.md", clips, command, clips[0]["source"])
    print(f"wrote {len(clips)} clips to {args.out}")


if __name__ == "__main__":
    main()
