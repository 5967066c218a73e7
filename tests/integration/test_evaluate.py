"""evaluate_model.py with the real whisper-base: per-checkpoint evaluation marks the best checkpoint and says which
differences from the base are more than noise, the command works with no network at all, a split from another
workspace never replaces this workspace's results, and bad settings get a message that names them."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from test_inference import PROJECT_ROOT, add_reciting_run, reference_clips

from tests.integration.processes import network_is_isolatable

EVAL_SAMPLES = 2


def scale_lora_b(adapter: Path, factor: float) -> Path:
    """Multiply every LoRA B matrix of an adapter by `factor`: 0 makes a freshly initialised adapter (the model
    equals the base), -1 undoes what training did."""
    from safetensors.torch import load_file, save_file

    weights = load_file(adapter / "adapter_model.safetensors")
    save_file({name: value * factor if "lora_B" in name else value for name, value in weights.items()},
              adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    return adapter


@pytest.fixture(scope="module")
def run_with_checkpoints(make_workspace, real_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A run stopped before its end: checkpoint-100 untrained, checkpoint-200 reciting the test clips,
    checkpoint-300 diverged. No final adapter/ yet."""
    workspace = make_workspace(real_model_dir)
    trained = add_reciting_run(workspace, tmp_path_factory.mktemp("adapters"), run_name="scratch")
    run = workspace / "runs" / "lora"
    scale_lora_b(shutil.copytree(trained, run / "checkpoint-100"), 0.0)
    shutil.copytree(trained, run / "checkpoint-200")
    scale_lora_b(shutil.copytree(trained, run / "checkpoint-300"), -1.0)
    shutil.rmtree(trained.parent)
    return workspace, run


@pytest.mark.real_model
def test_every_checkpoint_is_measured_and_the_best_marked(run_with_checkpoints):
    from kowhisper.config import load_config
    from kowhisper.evaluate.split import run_evaluation

    workspace, run = run_with_checkpoints
    # The base and two of the checkpoints cannot read espeak Korean and loop to the token cap; 48 tokens still
    # hold every sample sentence (at most 24 tokens) and keep those loops short.
    config = load_config([f"workspace={workspace}", "eval_run=lora", "all_checkpoints=true", f"max_samples={EVAL_SAMPLES}",
                          "generation_max_length=48"])
    summary, table = run_evaluation(config, workspace)

    labels = [model["label"] for model in summary["models"]]
    assert labels == ["base", "lora/checkpoint-100", "lora/checkpoint-200", "lora/checkpoint-300"]
    by_label = {model["label"]: model for model in summary["models"]}
    assert summary["best"] == "lora/checkpoint-200"
    assert summary["best_path"] == str(run / "checkpoint-200")
    assert by_label["lora/checkpoint-200"]["cer"] == 0.0
    # An untrained adapter is the base model: the same hypotheses, so the same scores.
    assert by_label["lora/checkpoint-100"]["cer"] == by_label["base"]["cer"] > 0.5
    assert by_label["lora/checkpoint-300"]["cer"] > 0.2
    marked = [line.split()[0] for line in table.splitlines() if line.endswith("  *")]
    assert marked == ["lora/checkpoint-200"] and "* best by cer: lora/checkpoint-200" in table

    # Each checkpoint's difference from the base, paired over the same utterances: the untrained one has the same
    # hypotheses (no difference at all), the reciting one is better on every draw.
    assert by_label["base"]["versus_base"] is None
    same = by_label["lora/checkpoint-100"]["versus_base"]
    assert same["cer"] == same["kocer_cer"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "verdict": "no clear difference"}
    reciting = by_label["lora/checkpoint-200"]["versus_base"]
    assert reciting["cer"]["high"] < 0 and reciting["cer"]["verdict"] == reciting["kocer_cer"]["verdict"] == "better"
    assert reciting["cer"]["difference"] == pytest.approx(-by_label["base"]["cer"])
    assert summary["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95, "units": EVAL_SAMPLES}
    assert "(1000 resamples, seed 0)" in table
    row_200 = next(line for line in table.splitlines() if line.startswith("lora/checkpoint-200"))
    assert "better" in row_200 and row_200.split()[4] == "0.00%"  # kocer CER comes after CER, WER and CER no-space
    assert set(by_label["base"]["breakdown"]["errors"]) == {"spacing", "punctuation", "numbers_latin", "real"}
    assert "Where the errors are" in table

    out_dir = workspace / "evaluations" / "test"
    assert json.loads((out_dir / "summary.json").read_text(encoding="utf-8")) == summary
    with open(out_dir / "lora__checkpoint-200.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = reference_clips(workspace, EVAL_SAMPLES)
    assert [(row["reference"], row["hypothesis"], float(row["cer"])) for row in rows] == [(text, text, 0.0) for _, text in expected]
    assert all(float(row["kocer_cer"]) == 0.0 and row["kocer_cer_errors"] == "0" and int(row["kocer_cer_chars"]) > 0 for row in rows)
    assert all(not math.isnan(float(model["wer"])) and model["num_scored"] == EVAL_SAMPLES for model in summary["models"])


@pytest.mark.real_model
def test_evaluate_model_runs_without_network(make_workspace, real_model_dir, python_executable, tmp_path_factory):
    """The acceptance command: `python evaluate_model.py workspace=DIR max_samples=4`, under `unshare -n`. With
    no run named it measures the base and the latest finished run, and prints CER and WER."""
    if not network_is_isolatable():
        pytest.skip("unshare -n is not permitted here")
    workspace = make_workspace(real_model_dir)
    scratch = tmp_path_factory.mktemp("adapters")
    # The older run learnt nothing (its model is the base), so picking it instead would show in the CER.
    scale_lora_b(add_reciting_run(workspace, scratch, run_name="older"), 0.0)
    newest = add_reciting_run(workspace, scratch, run_name="newest")
    (newest / "adapter_config.json").touch()

    result = subprocess.run(["unshare", "-n", python_executable, "evaluate_model.py", f"workspace={workspace}", "max_samples=4"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    assert "CER" in header and "WER" in header
    # Model rows start at the margin; indented lines below them (per source, kocer's breakdown) name models too.
    table = [line.split() for line in lines[lines.index(header) + 1 :] if line.strip() and not line.startswith(" ")]
    rows = {cells[0]: cells for cells in table if cells[0] in ("base", "newest", "older")}
    assert set(rows) == {"base", "newest"}
    assert rows["newest"][1:5] == ["0.00%", "0.00%", "0.00%", "0.00%"]  # CER, WER, CER no-space, kocer CER
    assert float(rows["base"][1].rstrip("%")) > 50
    summary = json.loads((workspace / "evaluations" / "test" / "summary.json").read_text(encoding="utf-8"))
    assert summary["utterances"] == 4 and [m["label"] for m in summary["models"]] == ["base", "newest"]


@pytest.mark.real_model
def test_bad_settings_are_named(make_workspace, real_model_dir, capsys):
    import evaluate_model

    workspace = make_workspace(real_model_dir)
    assert evaluate_model.main([f"workspace={workspace}", "eval_run=nope"]) == 2
    assert "'nope' is neither a folder nor a run" in capsys.readouterr().err
    assert evaluate_model.main([f"workspace={workspace}", "eval_split=validation"]) == 2
    assert "eval_split='validation'" in capsys.readouterr().err
    assert evaluate_model.main([f"workspace={workspace}", "all_checkpoints=true"]) == 2
    assert "holds no run with checkpoints" in capsys.readouterr().err
    assert evaluate_model.main([f"workspace={workspace}", "eval_longform=nowhere.csv"]) == 2
    assert "manifest not found: nowhere.csv (eval_longform)" in capsys.readouterr().err
    manifest = workspace.parent / "recordings.csv"
    manifest.write_text("audio,text\nmissing.wav,안녕하세요\n", encoding="utf-8")
    assert evaluate_model.main([f"workspace={workspace}", f"eval_longform={manifest}"]) == 2
    assert f"{manifest} line 2: missing audio file" in capsys.readouterr().err
    (workspace / "model" / "model.safetensors").write_bytes(b"tampered")
    assert evaluate_model.main([f"workspace={workspace}"]) == 2
    assert "altered: model/model.safetensors" in capsys.readouterr().err


@pytest.mark.real_model
def test_a_split_from_another_workspace_never_replaces_this_workspaces_results(make_workspace, real_model_dir, capsys):
    """eval_split=<other workspace>/data/cv/test used to write into this workspace's evaluations/test, named after
    the folder; now it gets a folder of its own, and a re-run that replaces results says so."""
    import evaluate_model
    from kowhisper.common.workspace import workspace_sources

    workspace, other = make_workspace(real_model_dir), make_workspace(real_model_dir)
    quick = ["eval_run=base", "max_samples=1", "generation_max_length=24"]
    assert evaluate_model.main([f"workspace={workspace}", *quick]) == 0
    own = workspace / "evaluations" / "test" / "summary.json"
    before = own.read_bytes()
    capsys.readouterr()

    other_test = workspace_sources(other)[0].split_dir("test")
    assert evaluate_model.main([f"workspace={workspace}", f"eval_split={other_test}", *quick]) == 0
    assert own.read_bytes() == before
    assert "replacing" not in capsys.readouterr().err
    [elsewhere] = [p for p in (workspace / "evaluations").iterdir() if p.name != "test"]
    assert elsewhere.name.startswith(f"{other_test.parent.name}-test-")
    assert json.loads((elsewhere / "summary.json").read_text(encoding="utf-8"))["dataset"] == str(other_test.resolve())

    # The same evaluation again replaces its own folder's results, and says so.
    assert evaluate_model.main([f"workspace={workspace}", f"eval_split={other_test}", *quick]) == 0
    assert f"replacing the earlier results in {elsewhere}" in capsys.readouterr().err
    assert own.read_bytes() == before
