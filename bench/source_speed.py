"""Preparation speed by source kind: the same real Korean clips as a Common Voice release (mp3), as KsponSpeech ships
them (headerless 16 kHz PCM with .trn lists) and as segments of long WAV recordings (a CSV of audio,start,end,text),
each through prepare_data end to end, in one run.

The clips are the first --clips of ../shared/data/ko-real-speech's train split (48 kHz mp3; read from there, never
copied into the repository). The processor is whisper-base's (tests/data/tiny-whisper holds its files), so the
work per clip is a real Whisper preparation: decode, resample, log-mel features, labels. Building the three inputs
is not timed; the page cache is warm for all three.

    python -m bench.source_speed [--clips 300] [--num-proc 2]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from kowhisper.common.runtime import quiet_telemetry

quiet_telemetry()

from kowhisper.common.audio import SAMPLING_RATE, load_audio  # noqa: E402
from kowhisper.common.cpu import cpu_model_name  # noqa: E402
from kowhisper.common.workspace import model_dir  # noqa: E402
from kowhisper.config import load_config  # noqa: E402
from kowhisper.online.prepare import prepare_data  # noqa: E402
from tests.sample_files import REAL_SPEECH_KO  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROCESSOR_FILES = PROJECT_ROOT / "tests" / "data" / "tiny-whisper"
CLIPS_PER_RECORDING = 10
PAUSE = np.zeros(int(0.5 * SAMPLING_RATE), dtype=np.float32)


def real_rows(count: int) -> list[dict]:
    with open(REAL_SPEECH_KO / "train.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:count]
    return [{"path": REAL_SPEECH_KO / "clips" / row["path"], "text": row["sentence"]} for row in rows]


def as_cv_release(rows: list[dict], root: Path) -> Path:
    """A Common Voice release whose train split holds the clips (dev and test one clip each, as the loader wants them)."""
    release = root / "cv-corpus-bench" / "ko"
    (release / "clips").mkdir(parents=True)
    header = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale", "segment"]
    for split, part in (("train", rows), ("dev", rows[:1]), ("test", rows[1:2])):
        with open(release / f"{split}.tsv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(header)
            for row in part:
                (release / "clips" / row["path"].name).unlink(missing_ok=True)
                (release / "clips" / row["path"].name).symlink_to(row["path"])
                writer.writerow(["bench", row["path"].name, row["text"], 2, 0, "", "", "", "ko", ""])
    return release.parent


def as_kspon(rows: list[dict], root: Path) -> Path:
    kspon = root / "KsponSpeech"
    scripts = kspon / "KsponSpeech_scripts"
    scripts.mkdir(parents=True)
    lines = {"train": [], "dev": [], "eval_clean": [], "eval_other": []}
    for n, row in enumerate(rows):
        relative = f"KsponSpeech_01/KsponSpeech_{1 + n // 1000:04d}/KsponSpeech_{n + 1:06d}.pcm"
        pcm = kspon / relative
        pcm.parent.mkdir(parents=True, exist_ok=True)
        pcm.write_bytes(np.clip(load_audio(row["path"]) * 32768, -32768, 32767).astype("<i2").tobytes())
        lines["train"].append(f"{relative} :: b/ {row['text']}")
    lines["dev"], lines["eval_clean"], lines["eval_other"] = lines["train"][:1], lines["train"][1:2], lines["train"][2:3]
    for split, split_lines in lines.items():
        (scripts / f"{split}.trn").write_text("\n".join(split_lines) + "\n", encoding="utf-8")
    return kspon


def as_segments(rows: list[dict], root: Path) -> Path:
    table = root / "segments" / "segments.csv"
    (table.parent / "audio").mkdir(parents=True)
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "start", "end", "text", "split"])
        for first in range(0, len(rows), CLIPS_PER_RECORDING):
            name = f"audio/recording{first // CLIPS_PER_RECORDING:04d}.wav"
            parts, at = [PAUSE], len(PAUSE)
            for index, row in enumerate(rows[first:first + CLIPS_PER_RECORDING]):
                clip = load_audio(row["path"])
                split = "train" if first + index > 2 else ("dev", "test", "train")[first + index]
                writer.writerow([name, f"{at / SAMPLING_RATE:.3f}", f"{(at + len(clip)) / SAMPLING_RATE:.3f}", row["text"], split])
                parts += [clip, PAUSE]
                at += len(clip) + len(PAUSE)
            soundfile.write(table.parent / name, np.concatenate(parts), SAMPLING_RATE, subtype="PCM_16")
    return table


def timed_prepare(work: Path, name: str, keys: list[str], num_proc: int) -> dict:
    workspace = work / f"ws-{name}"
    shutil.copytree(PROCESSOR_FILES, model_dir(workspace))
    config = load_config([f"workspace={workspace}", f"cache_dir={work / 'cache'}", f"num_proc={num_proc}", *keys])
    start = time.perf_counter()
    totals = prepare_data(config).totals
    seconds = time.perf_counter() - start
    kept = sum(entry["kept"] for entry in totals.values())
    audio = sum(entry["seconds"] for entry in totals.values())
    return {"clips": kept, "seconds": seconds, "audio_seconds": audio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300, help="Real clips to prepare in each form.")
    parser.add_argument("--num-proc", type=int, default=2, help="Worker processes.")
    args = parser.parse_args()
    rows = real_rows(args.clips)
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as scratch:
        work = Path(scratch)
        inputs = {
            "cv (mp3, 48 kHz)": ["data_source=cv", f"data_path={as_cv_release(rows, work / 'cv')}"],
            "kspon (.pcm, 16 kHz)": ["data_source=kspon", f"data_path={as_kspon(rows, work / 'kspon')}"],
            "segments (WAV recordings)": ["data_source=segments", f"data_path={as_segments(rows, work / 'segments')}"],
        }
        for row in rows:
            row["path"].read_bytes()  # a warm page cache for every form
        results = {name: timed_prepare(work, str(n), keys, args.num_proc) for n, (name, keys) in enumerate(inputs.items())}
    print(f"\n{datetime.date.today()}, {cpu_model_name()}, {len(os.sched_getaffinity(0))} cores, num_proc={args.num_proc}, "
          f"{args.clips} real clips")
    print("| source | clips | seconds | clips/s | audio s per wall s |")
    print("|---|---:|---:|---:|---:|")
    for name, result in results.items():
        print(f"| {name} | {result['clips']} | {result['seconds']:.1f} | {result['clips'] / result['seconds']:.1f} "
              f"| {result['audio_seconds'] / result['seconds']:.0f} |")


if __name__ == "__main__":
    main()
