"""Training on several sources: train splits mixed by weight (reproducibly, exactly resumable), dev scored per source,
held-out sources evaluated only, evaluate_model.py per source. The tiny random Whisper keeps each run to seconds.
The weights alone, without a workspace, are in tests/unit/test_mixing_weights.py."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from test_sources import EXTRA_SOURCE, build, extra_manifest  # noqa: F401 (a fixture)

from kowhisper.config import load_config
from kowhisper.train.data import load_splits
from tests.integration.processes import kill_9_once

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = ["per_device_train_batch_size=4", "per_device_eval_batch_size=4", "max_eval_samples=4", "generation_max_length=12",
        "warmup_steps=0", "eval_steps=2", "save_steps=2", "report_to=[]"]


@pytest.fixture(scope="module")
def mixed_workspace(make_workspace, tiny_model_dir, extra_manifest, tmp_path_factory):  # noqa: F811
    """The sample (cv, weight 3) and the espeak corpus (extra, weight 1) in one workspace, plus a held-out copy of the
    espeak corpus (weight 0)."""
    workspace = make_workspace(tiny_model_dir)
    build(workspace, tiny_model_dir, [{"name": "cv", "weight": 3}, {**EXTRA_SOURCE, "weight": 1, "data_path": str(extra_manifest)},
                                      {**EXTRA_SOURCE, "name": "heldout", "weight": 0, "data_path": str(extra_manifest)}])
    return workspace


def test_the_training_data_mixes_the_trained_sources_and_evaluates_every_source(mixed_workspace):
    data = load_splits(mixed_workspace, load_config([f"workspace={mixed_workspace}", "max_eval_samples=4"]))
    drawn = Counter(data.train["source"])
    assert set(drawn) == {"cv", "extra"}, "a held-out source is never trained on"
    assert drawn["cv"] >= 40 and drawn["extra"] >= 4, "every clip of every trained source is drawn"
    assert set(data.dev_sources) == {"cv", "extra", "heldout"}
    assert Counter(data.dev_sources) == {"cv": 4, "extra": 1, "heldout": 1}
    assert data.counts["sources"]["heldout"]["weight"] == 0 and data.counts["sources"]["heldout"]["train"] == 0
    assert data.counts["train_per_epoch"] == len(data.train)


def training_command(python: str, workspace: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [python, "train_offline.py", f"workspace={workspace}", f"output_dir={run_dir}", *TINY, *overrides]


def run_training(python: str, workspace: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(training_command(python, workspace, run_dir, *overrides), cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=900)


def test_per_source_dev_metrics_pick_the_best_and_a_kill_9_resume_ends_where_an_uninterrupted_run_does(
        mixed_workspace, tmp_path, python_executable):
    import torch
    from safetensors.torch import load_file

    from kowhisper.train.checkpoints import COMPLETE_MARKER

    settings = ["max_steps=6", "metric_for_best_model=cer_extra", "data_seed=11"]
    straight = run_training(python_executable, mixed_workspace, tmp_path / "straight", *settings)
    assert straight.returncode == 0, straight.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    evaluation = next(record for record in log if record.get("step") == 2 and "eval_cer" in record)
    assert {"eval_cer_cv", "eval_cer_extra", "eval_cer_heldout", "eval_wer_cv"} <= set(evaluation)
    # The overall rate is the sources' rates weighted by their dev clips (4, 1 and 1).
    weighted = (4 * evaluation["eval_cer_cv"] + evaluation["eval_cer_extra"] + evaluation["eval_cer_heldout"]) / 6
    assert evaluation["eval_cer"] == pytest.approx(weighted)
    assert "(CER cv " in straight.stdout
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    state = json.loads((tmp_path / "straight" / "checkpoint-6" / "trainer_state.json").read_text())
    scores = {record["step"]: record["eval_cer_extra"] for record in log if "eval_cer_extra" in record and record["step"] > 0}
    if state["best_model_checkpoint"]:
        best_step = int(Path(state["best_model_checkpoint"]).name.split("-")[1])
        assert scores[best_step] == min(scores.values()), "the best checkpoint is chosen by cer_extra"
    else:  # the random model never beat the base on cer_extra, measured before the first step
        zero_shot = next(record["eval_cer_extra"] for record in log if record.get("step") == 0 and "eval_cer_extra" in record)
        assert zero_shot <= min(scores.values())
    card = (tmp_path / "straight" / "README.md").read_text()
    assert "| heldout |" in card and "0 (held out)" in card and str(metrics["data"]["train_per_epoch"]) in card

    interrupted = tmp_path / "interrupted"
    kill_9_once(training_command(python_executable, mixed_workspace, interrupted, *settings), tmp_path / "first.log",
                (interrupted / "checkpoint-2" / COMPLETE_MARKER).exists, waiting_for="a complete checkpoint-2", group=False)
    resumed = run_training(python_executable, mixed_workspace, interrupted, *settings)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout
    for name in ("adapter", "checkpoint-6"):
        expected = load_file(tmp_path / "straight" / name / "adapter_model.safetensors")
        got = load_file(interrupted / name / "adapter_model.safetensors")
        assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected), name


def test_evaluate_model_reports_every_source(mixed_workspace, tmp_path, python_executable):
    result = run_training(python_executable, mixed_workspace, mixed_workspace / "runs" / "mixed", "max_steps=2", "eval_strategy=no")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = subprocess.run([python_executable, "evaluate_model.py", f"workspace={mixed_workspace}", "eval_run=mixed",
                                "max_samples=2", "generation_max_length=12"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads((mixed_workspace / "evaluations" / "test" / "summary.json").read_text())
    for model in summary["models"]:
        assert set(model["per_source"]) == {"cv", "extra", "heldout"}
        assert model["num_scored"] == sum(entry["num_scored"] for entry in model["per_source"].values()) == 6
    # The paired interval is on the sources' weighted rates, as the table shows them (draws stay within each source).
    base, tuned = summary["models"]
    for rate in ("cer", "kocer_cer"):
        assert tuned["versus_base"][rate]["difference"] == pytest.approx(tuned[rate] - base[rate])
    table = evaluated.stdout
    assert "  cv " in table and "  extra " in table and "  heldout " in table
