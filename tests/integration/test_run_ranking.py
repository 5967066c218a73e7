"""evaluate_model.py eval_run=all: every finished run of a workspace ranked on one split beside the base, with
its steps, training time and the config keys that differ between the runs."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = ["per_device_train_batch_size=4", "per_device_eval_batch_size=4", "max_eval_samples=4", "generation_max_length=12",
        "warmup_steps=0", "eval_steps=2", "save_steps=2", "report_to=[]"]


def test_every_run_is_ranked_with_what_differs(make_workspace, tiny_model_dir, python_executable):
    """Two real runs ranked beside the base; which config keys count as differing is in tests/unit/test_ranking.py."""
    workspace = make_workspace(tiny_model_dir)
    for name, overrides in (("steady", ["learning_rate=1e-4", "max_steps=2"]), ("bold", ["learning_rate=3e-3", "max_steps=4"])):
        result = subprocess.run([python_executable, "train_offline.py", f"workspace={workspace}", f"run_name={name}", *TINY, *overrides],
                                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    result = subprocess.run([python_executable, "evaluate_model.py", f"workspace={workspace}", "eval_run=all", "max_samples=3",
                             "generation_max_length=12", "eval_split=dev"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Runs ranked by cer:" in result.stdout

    out_dir = workspace / "evaluations" / "dev"
    summary = json.loads((out_dir / "summary.json").read_text())
    with open(out_dir / "runs.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["model"] for row in rows} == {"base", "steady", "bold"}
    assert rows[0]["model"] == summary["best"], "rank 1 is the best model, the base included"
    cer = {model["label"]: model["cer"] for model in summary["models"]}
    ranked = [row["model"] for row in rows]
    assert ranked == sorted(ranked, key=lambda label: (math.isnan(cer[label]), cer[label]))
    by_model = {row["model"]: row for row in rows}
    # What differs between the runs becomes columns; what they share (the LoRA rank) does not.
    assert {"learning_rate", "max_steps"} <= set(rows[0]) and "lora_r" not in rows[0] and "run_name" not in rows[0]
    assert by_model["bold"]["steps"] == "4" and by_model["steady"]["steps"] == "2" and by_model["base"]["steps"] == "-"
    assert float(by_model["bold"]["learning_rate"]) == 3e-3
    assert float(by_model["steady"]["train min"]) > 0
    assert (out_dir / "runs.md").read_text().startswith("Runs ranked by cer on ")
    # Each run's CER and kocer CER difference from the base, with its paired interval and verdict.
    assert by_model["base"]["CER vs base"] == by_model["base"]["kocer CER vs base"] == "-"
    versus = {model["label"]: model["versus_base"] for model in summary["models"]}
    for run in ("steady", "bold"):
        for rate, column in (("cer", "CER vs base"), ("kocer_cer", "kocer CER vs base")):
            assert by_model[run][column].endswith(versus[run][rate]["verdict"])
            assert versus[run][rate]["low"] <= versus[run][rate]["difference"] <= versus[run][rate]["high"]
    assert by_model["steady"]["kocer CER"].endswith("%")
    assert "(1000 resamples, seed 0)" in result.stdout and "(1000 resamples, seed 0)" in (out_dir / "runs.md").read_text()
