"""Learning curves on real Korean speech: dev and test CER against training steps, per recipe, beside zero-shot.

Every recipe of issue 16 is trained once by train_offline.py, as a user runs it, on the real-speech workspace of
bench/quality.py (835 train clips of ../shared/data/ko-real-speech; 105 steps are an epoch at batch 8), for
CURVE_STEPS[-1] steps with a checkpoint every CURVE_SAVE_EVERY steps and no evaluation while training. Then the
checkpoints at CURVE_STEPS are scored on the whole dev split (151 clips), and each recipe's best dev point on the
whole test split (290 clips), by evaluate_model.py's own code (kowhisper.evaluate.split) with the engine inference.py
runs on a CPU, the CTranslate2 int8 export (greedy, at the window each checkpoint was trained with; `--backend hf`
for transformers fp32, about 5x slower here), and the base model beside them. Test is read only at the point dev
chose, as a user would. Each point is cached in bench/out/quality/curves/, so a rerun scores only what is new.

The points of one run are not separate runs of that length: the learning rate decays linearly over the whole run,
so at step 100 of 400 it is still at 77% of its peak. They show where a recipe is going; a recipe chosen from them
is then run on its own for the chosen length (bench/quality.py) before it becomes a default.

Fit-window recipes are also scored on dev at Whisper's full 30 s window at every point (`@full`): does a model
trained on fitted windows lag early because of the window it is run at, and which window should it run at?

Reported: a table of dev/test CER and kocer CER per recipe and step, the best dev point of each recipe with its
test CER and the paired-bootstrap interval of its difference from zero-shot and from the default recipe's best
point (kowhisper.common.bootstrap, over the test utterances), and bench/curves.png.

    python -m bench.curves                       # train what is missing, score, plot, print
    python -m bench.curves --recipes default full-window --train-only
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

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = PROJECT_ROOT / "bench" / "out" / "quality"
CACHE = OUT_DIR / "curves"
PLOT = PROJECT_ROOT / "bench" / "curves.png"
# The call version (bench/call_audio.py): same clips and splits through a simulated telephone channel.
CALL_OUT_DIR = PROJECT_ROOT / "bench" / "out" / "call"
CALL_STEPS = (50, 100, 200, 400, 800)
# LoRA on every attention and MLP projection of the encoder (where the channel is heard), q/v in the decoder as by default.
ENCODER_TARGETS = (r".*encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc1|fc2)"
                   r"|.*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q|v)_proj")
RECIPES = {
    "default": [],
    "full-window": ["encoder_window=full"],
    "full-ft": ["finetune=full"],
    "lr3e-4": ["learning_rate=3e-4"],
    "lr1e-3": ["learning_rate=1e-3"],
    "all-linear": ["target_modules=all-linear"],
    "specaug": ["spec_augment=true"],
    # The combination tried: full fine-tuning reaches its best dev CER by 100 steps and then rises, and SpecAugment
    # is the regularizer that keeps a recipe learning longer. It did not help (bench/RESULTS.md).
    "full-ft+specaug": ["finetune=full", "spec_augment=true"],
    # SpecAugment tied the default on dev: a second seed of both says whether that is more than one seed's luck.
    "default-seed7": ["seed=7"],
    "specaug-seed7": ["spec_augment=true", "seed=7"],
    # Call audio: capacity where the channel is heard, the encoder.
    "encoder": [f"target_modules={ENCODER_TARGETS}"],
}
CURVE_STEPS = (25, 50, 100, 200, 300, 400)
CURVE_SAVE_EVERY = 25
FULL_WINDOW_STEPS = CURVE_STEPS
SPLITS = ("dev", "test")
RATES = ("cer", "wer", "cer_nospace", "kocer_cer")


def train_curve(workspace: Path, recipe: str, overrides: list[str], stop_at: int | None = None) -> Path:
    """One run of the recipe for CURVE_STEPS[-1] steps, a checkpoint every CURVE_SAVE_EVERY steps and no evaluation
    while training (the checkpoints are scored afterwards, all alike). Rerunning resumes an interrupted run.

    `stop_at` ends the run once its checkpoint at that step is complete: the schedule stays the full-length one, so
    its points are the same points as a finished run's, for less CPU time. A later call without it resumes."""
    from kowhisper.train.checkpoints import checkpoint_problems

    run_dir = workspace / "runs" / f"curve-{recipe}"
    if (run_dir / "metrics.json").is_file():
        return run_dir
    stop = run_dir / f"checkpoint-{stop_at}"
    if stop_at is not None and stop.is_dir() and not checkpoint_problems(stop):
        return run_dir
    command = [sys.executable, "train_offline.py", f"workspace={workspace}", f"run_name={run_dir.name}", "report_to=[]",
               f"max_steps={CURVE_STEPS[-1]}", f"save_steps={CURVE_SAVE_EVERY}", "keep_other_checkpoints=null", "eval_strategy=no",
               *overrides]
    with subprocess.Popen(command, cwd=PROJECT_ROOT) as training:
        while training.poll() is None:
            if stop_at is not None and stop.is_dir() and not checkpoint_problems(stop):
                training.terminate()
                training.wait()
                print(f"{recipe}: stopped after the complete checkpoint at step {stop_at}")
                return run_dir
            time.sleep(5)
    if training.returncode:
        raise SystemExit(f"training {recipe} failed (exit {training.returncode})")
    return run_dir


BACKEND = "ct2"


def scored(workspace: Path, key: str, source, split: str) -> dict:
    """{"metrics": rates, "counts": per-utterance edit counts} of a model on a whole split, cached under `key`."""
    cache = CACHE / f"{key}-{split}-{BACKEND}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from kowhisper.config import load_config
    from kowhisper.evaluate.split import evaluate_source, load_eval_split

    config = load_config([f"workspace={workspace}", f"eval_split={split}", f"backend={BACKEND}"])
    dataset, _ = load_eval_split(workspace, split, None)
    result = evaluate_source(source, dataset, config)
    record = {"metrics": {rate: result.metrics[rate] for rate in RATES}, "seconds": result.seconds,
              "counts": [row["counts"] for row in result.rows], "sources": [row["source"] for row in result.rows]}
    CACHE.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(record))
    return record


def at_full_window(checkpoint: Path) -> Path:
    """A copy of a fit-window checkpoint's weights that says it was trained at the full window, to run it there."""
    from kowhisper.families.whisper.encoder_window import EncoderWindow

    copy = CACHE / "full-window-copies" / f"{checkpoint.parent.name}-{checkpoint.name}"
    if not copy.is_dir():
        copy.mkdir(parents=True)
        for item in checkpoint.iterdir():
            if item.suffix in (".json", ".safetensors") and not item.name.startswith(("trainer_state", "encoder_window")):
                shutil.copy(item, copy / item.name)
        EncoderWindow().save(copy)
    return copy


def score_recipe(workspace: Path, recipe: str) -> dict:
    """{step: {split: record}} for the recipe's checkpoints at CURVE_STEPS (dev at every step, test at the best dev
    step), plus "<step>@full" dev points for a fit-window recipe."""
    from kowhisper.families.base import resolve_model
    from kowhisper.families.whisper.encoder_window import EncoderWindow

    run_dir = workspace / "runs" / f"curve-{recipe}"
    points = {}
    for step in CURVE_STEPS:
        checkpoint = run_dir / f"checkpoint-{step}"
        if not checkpoint.is_dir():
            continue
        source = resolve_model(workspace, str(checkpoint))
        points[str(step)] = {"dev": scored(workspace, f"{recipe}-{step}", source, "dev")}
        if step in FULL_WINDOW_STEPS and EncoderWindow.of_model(checkpoint).is_fit:
            full = resolve_model(workspace, str(at_full_window(checkpoint)))
            points[f"{step}@full"] = {"dev": scored(workspace, f"{recipe}-{step}@full", full, "dev")}
    if points:
        best = best_dev_step(points)
        points[best]["test"] = scored(workspace, f"{recipe}-{best}", resolve_model(workspace, str(run_dir / f"checkpoint-{best}")), "test")
    return points


def best_dev_step(points: dict) -> str:
    return min((step for step in points if "@" not in step), key=lambda step: points[step]["dev"]["metrics"]["cer"])


def interval(reference: dict, model: dict) -> str:
    """CER and kocer CER of `model` minus `reference` on the same utterances, with paired-bootstrap intervals."""
    from kowhisper.common.bootstrap import BootstrapSettings, compare_with_reference

    differences = compare_with_reference(reference["counts"], {"model": model["counts"]}, reference["sources"],
                                         ("cer", "kocer_cer"), BootstrapSettings())["model"]
    return f"CER {differences['cer'].describe()}; kocer {differences['kocer_cer'].describe()}"


def plot(curves: dict, zero_shot: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 6.5), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, rate, title in ((axes[0], "cer", "CER"), (axes[1], "kocer_cer", "kocer CER (reading-equivalent)")):
        for number, (recipe, points) in enumerate(curves.items()):
            steps = sorted(int(step) for step in points if "@" not in step)
            color = colors[number % len(colors)]
            axis.plot(steps, [100 * points[str(step)]["dev"]["metrics"][rate] for step in steps], "-", marker="o", markersize=3,
                      color=color, label=f"{recipe} (dev)")
            at_full = sorted(int(step.split("@")[0]) for step in points if step.endswith("@full"))
            if at_full:
                axis.plot(at_full, [100 * points[f"{step}@full"]["dev"]["metrics"][rate] for step in at_full], "x", markersize=8,
                          color=color, label=f"{recipe} (dev, same weights run at the full window)")
            tested = [step for step in steps if "test" in points[str(step)]]
            axis.plot(tested, [100 * points[str(step)]["test"]["metrics"][rate] for step in tested], "*", markersize=10,
                      color=color, label=f"{recipe} (test, at the best dev step)")
        for split, style in (("dev", "-"), ("test", "--")):
            axis.axhline(100 * zero_shot[split]["metrics"][rate], color="black", linestyle=style, linewidth=1,
                         label=f"zero-shot ({split})")
        axis.set_xscale("log")
        axis.minorticks_off()
        axis.set_xticks(CURVE_STEPS, [str(step) for step in CURVE_STEPS])
        axis.set_xlabel("training steps (batch 8; 105 steps = 1 epoch)")
        axis.set_ylabel(f"{title}, %")
        axis.set_title(f"{title} on real Korean speech{' through a telephone channel' if OUT_DIR == CALL_OUT_DIR else ''}, whisper-base")
        axis.grid(alpha=0.3)
    # Below both panels: inside one, the legend of seven recipes would hide their curves.
    figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=7)
    figure.tight_layout(rect=(0, 0.17, 1, 1))
    figure.savefig(PLOT, dpi=110)
    return PLOT


def report(curves: dict, zero_shot: dict) -> str:
    lines = ["| recipe | step | dev CER | dev kocer CER | test CER | test kocer CER |", "|---|---:|---:|---:|---:|---:|"]
    z = zero_shot
    lines.append(f"| zero-shot | 0 | {100 * z['dev']['metrics']['cer']:.2f}% | {100 * z['dev']['metrics']['kocer_cer']:.2f}% | "
                 f"{100 * z['test']['metrics']['cer']:.2f}% | {100 * z['test']['metrics']['kocer_cer']:.2f}% |")
    for recipe, points in curves.items():
        for step, point in points.items():
            test = point.get("test")
            test_cells = (f"{100 * test['metrics']['cer']:.2f}% | {100 * test['metrics']['kocer_cer']:.2f}%" if test else " | ")
            lines.append(f"| {recipe} | {step} | {100 * point['dev']['metrics']['cer']:.2f}% | "
                         f"{100 * point['dev']['metrics']['kocer_cer']:.2f}% | {test_cells} |")
    lines += ["", "Best dev point of each recipe (CER), its test scores and test differences in points (95% paired bootstrap "
              "over the 290 test utterances, 1000 resamples, seed 0):", "",
              "| recipe | best dev step | dev CER | test CER | test kocer CER | test vs zero-shot | test vs default's best |",
              "|---|---:|---:|---:|---:|---|---|"]
    default_best = curves["default"][best_dev_step(curves["default"])]["test"] if "default" in curves else None
    for recipe, points in curves.items():
        step = best_dev_step(points)
        point = points[step]
        versus_default = interval(default_best, point["test"]) if default_best and recipe != "default" else ""
        dev, test = point["dev"]["metrics"], point["test"]["metrics"]
        lines.append(f"| {recipe} | {step} | {100 * dev['cer']:.2f}% | {100 * test['cer']:.2f}% | {100 * test['kocer_cer']:.2f}% | "
                     f"{interval(zero_shot['test'], point['test'])} | {versus_default} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    global BACKEND, CURVE_STEPS, FULL_WINDOW_STEPS, OUT_DIR, CACHE, PLOT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=("clean", "call"), default="clean",
                        help="the real-speech set, or its call version (bench/call_audio.py; curves to 800 steps)")
    parser.add_argument("--recipes", nargs="*", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--workspace", type=Path, default=None, help="default: the corpus's workspace under bench/out")
    parser.add_argument("--train-only", action="store_true", help="train the recipes, score nothing yet")
    parser.add_argument("--score-only", action="store_true", help="score the recipes trained so far, train nothing")
    parser.add_argument("--steps", nargs="*", type=int, default=None,
                        help="score only these points (the others stay in the cache for a later run)")
    parser.add_argument("--no-full-window", action="store_true", help="skip the @full points (the same weights at the full window)")
    parser.add_argument("--backend", choices=("ct2", "hf"), default="ct2", help="the engine that scores every point")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop each training once its checkpoint at this step is complete (same schedule, fewer steps)")
    args = parser.parse_args(argv)
    from bench.call_audio import CALL_SPEECH, build
    from bench.quality import build_workspace
    from kowhisper.families.base import resolve_model
    from tests.sample_files import REAL_SPEECH, REAL_SPEECH_KO

    if args.corpus == "call":
        OUT_DIR, CURVE_STEPS = CALL_OUT_DIR, CALL_STEPS
        CACHE, PLOT = OUT_DIR / "curves", PROJECT_ROOT / "bench" / "curves-call.png"
    BACKEND, CURVE_STEPS = args.backend, tuple(args.steps or CURVE_STEPS)
    FULL_WINDOW_STEPS = () if args.no_full_window else CURVE_STEPS
    if not (REAL_SPEECH_KO / "train.tsv").is_file():
        raise SystemExit(f"the real-speech set is not at {REAL_SPEECH}; this benchmark needs ../shared beside the project")
    data_path = build(REAL_SPEECH, CALL_SPEECH) if args.corpus == "call" else REAL_SPEECH
    workspace = build_workspace((args.workspace or OUT_DIR / "workspace").resolve(), data_path)
    if not args.score_only:
        for recipe in args.recipes:
            train_curve(workspace, recipe, RECIPES[recipe], args.stop_at)
    if args.train_only:
        return
    base = resolve_model(workspace, "base")
    zero_shot = {split: scored(workspace, "zero-shot", base, split) for split in SPLITS}
    # A recipe still training is scored up to its last checkpoint, so its early points can be read meanwhile.
    curves = {recipe: score_recipe(workspace, recipe) for recipe in args.recipes
              if (workspace / "runs" / f"curve-{recipe}").is_dir()}
    (OUT_DIR / "curves.json").write_text(json.dumps({recipe: {step: {split: record["metrics"] for split, record in point.items()}
                                                              for step, point in points.items()} for recipe, points in curves.items()}
                                                    | {"zero-shot": {split: record["metrics"] for split, record in zero_shot.items()}},
                                                    indent=2))
    print(f"plot: {plot(curves, zero_shot)}")
    print(report(curves, zero_shot))


if __name__ == "__main__":
    main()
