"""Clean and call, base and fine-tuned: test CER and kocer CER of every model on both versions of the real-speech set.

The real-speech set (`../shared/data/ko-real-speech`, read from there) and its call version (bench/call_audio.py: the
same clips through a simulated telephone channel, 8 kHz) each get a workspace, and the models are trained by
train_offline.py as a user runs it (the defaults, whatever overrides a row names):

- zero-shot: whisper-base as it comes;
- default@call: the default recipe on the call version's train split (can fine-tuning recover what the channel takes?);
- default@clean: the default recipe on the clean train split (today's default, the reference on clean audio);
- augment@clean: the same on clean clips with `augment=` (AUGMENT), which simulates calls while training: does a model
  trained on clean audio survive calls, and does it lose nothing on clean audio?

Every model is scored on both test splits (290 clips each, the same utterances in the same order) with the CTranslate2
int8 engine inference.py runs on a CPU, and compared with zero-shot on the same clips by a paired bootstrap (95%,
1000 resamples, seed 0; kowhisper.common.bootstrap). Scores are cached beside bench.curves' (bench/out/quality/curves,
bench/out/call/curves), so a rerun only trains and scores what is new.

    python -m bench.call_quality                   # train what is missing, score, print the tables
    python -m bench.call_quality --runs default@call
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kowhisper.common.runtime import force_offline

force_offline()

import bench.curves as curves  # noqa: E402 (after force_offline)
from bench.call_audio import CALL_SPEECH, build  # noqa: E402
from bench.quality import build_workspace  # noqa: E402
from tests.sample_files import REAL_SPEECH, REAL_SPEECH_KO  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = PROJECT_ROOT / "bench" / "out" / "call"
WORKSPACES = {"clean": PROJECT_ROOT / "bench" / "out" / "quality" / "workspace", "call": OUT_DIR / "workspace"}
AUGMENT = "augment=[channel,noise:0.3,speed:0.3]"
RUNS = {  # name: (corpus trained on, overrides)
    "default@call": ("call", []),
    "default@clean": ("clean", []),
    "augment@clean": ("clean", [AUGMENT]),
}


def workspace(corpus: str) -> Path:
    folder = WORKSPACES[corpus].resolve()
    if (folder / "manifest.json").is_file() and not (folder / "data" / "cv" / "train" / "dataset_info.json").is_file():
        raise SystemExit(f"{folder} is incomplete; delete it to rebuild")
    if (folder / "manifest.json").is_file():
        info = json.loads((folder / "data" / "cv" / "train" / "dataset_info.json").read_text())
        if "audio" not in info["features"]:
            print(f"{folder} keeps no audio (prepared before keep_audio): rebuilding it")
            shutil.rmtree(folder)
    return build_workspace(folder, build(REAL_SPEECH, CALL_SPEECH) if corpus == "call" else REAL_SPEECH)


def train(name: str) -> Path:
    corpus, overrides = RUNS[name]
    space = workspace(corpus)
    run_dir = space / "runs" / name.replace("@", "-")
    if (run_dir / "metrics.json").is_file():
        return run_dir
    started = time.perf_counter()
    subprocess.run([sys.executable, "train_offline.py", f"workspace={space}", f"run_name={run_dir.name}", "report_to=[]", *overrides],
                   cwd=PROJECT_ROOT, check=True)
    (run_dir / "bench_seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")
    return run_dir


def score(model: str, run_dir: Path | None, corpus: str) -> dict:
    from kowhisper.families.base import resolve_model

    space = workspace(corpus)
    # The curves' caches: zero-shot on a test split is the same record there (bench.curves --corpus clean|call).
    curves.CACHE = WORKSPACES[corpus].parent / "curves"
    key = "zero-shot" if run_dir is None else f"{model}-on-{corpus}"
    return curves.scored(space, key, resolve_model(space, str(run_dir) if run_dir else "base"), "test")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--train-only", action="store_true")
    args = parser.parse_args(argv)
    if not (REAL_SPEECH_KO / "train.tsv").is_file():
        raise SystemExit(f"the real-speech set is not at {REAL_SPEECH}; this benchmark needs ../shared beside the project")
    run_dirs = {name: train(name) for name in args.runs}
    if args.train_only:
        return
    results = {"zero-shot": {corpus: score("zero-shot", None, corpus) for corpus in WORKSPACES}}
    for name, run_dir in run_dirs.items():
        results[name] = {corpus: score(name, run_dir, corpus) for corpus in WORKSPACES}

    lines = ["| model | clean CER | clean kocer CER | call CER | call kocer CER | call vs zero-shot (points) "
             "| clean vs zero-shot (points) |", "|---|---:|---:|---:|---:|---|---|"]
    for name, scores in results.items():
        cells = [f"{100 * scores[corpus]['metrics'][rate]:.2f}%" for corpus in ("clean", "call") for rate in ("cer", "kocer_cer")]
        versus = ["", ""] if name == "zero-shot" else [curves.interval(results["zero-shot"][corpus], scores[corpus])
                                                       for corpus in ("call", "clean")]
        lines.append(f"| {name} | {' | '.join(cells)} | {versus[0]} | {versus[1]} |")
    zero = results["zero-shot"]
    if "default@call" in results:
        tuned = results["default@call"]["call"]["metrics"]
        cut = 1 - tuned["kocer_cer"] / zero["call"]["metrics"]["kocer_cer"]
        gap = 100 * (tuned["cer"] - zero["clean"]["metrics"]["cer"])
        lines += ["", f"Target 1, call test kocer CER at least 40% below zero-shot: {100 * cut:.1f}% below.",
                  f"Target 2, fine-tuned call CER within 2 points of zero-shot CER on the same clips clean: {gap:+.2f} points."]
    (OUT_DIR / "call_quality.json").write_text(json.dumps({name: {corpus: record["metrics"] for corpus, record in scores.items()}
                                                           for name, scores in results.items()}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
