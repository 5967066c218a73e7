"""8 kHz calls made from real Korean clips (../shared/data/ko-real-speech, read from there) by bench/call_audio.py's
telephone channel, stored as calls arrive (G.711 mu-law and A-law and GSM 06.10 in WAV files), go through setup,
training with augmentation, evaluation and inference like 16 kHz ones: every step decodes the codec and resamples."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import soundfile

from bench.call_audio import make_call
from kowhisper.common.audio import load_audio
from kowhisper.common.workspace import source_report_path
from tests.sample_files import REAL_SPEECH_KO, needs_real_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = needs_real_speech


def test_8khz_calls_go_through_setup_training_evaluation_and_inference(make_workspace, tiny_model_dir, tmp_path_factory,
                                                                       python_executable):
    with open(REAL_SPEECH_KO / "train.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:16]
    folder = tmp_path_factory.mktemp("calls")
    manifest = folder / "calls.csv"
    with open(manifest, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "text", "split"])
        writer.writeheader()
        for n, row in enumerate(rows):
            make_call(REAL_SPEECH_KO / "clips" / row["path"], folder / f"call{n:02d}.wav")
            writer.writerow({"audio": f"call{n:02d}.wav", "text": row["sentence"], "split": ("train", "train", "dev", "test")[n % 4]})
    assert {soundfile.info(folder / f"call{n:02d}.wav").samplerate for n in range(16)} == {8000}
    assert len({soundfile.info(folder / f"call{n:02d}.wav").subtype for n in range(16)}) >= 2, "more than one codec"
    workspace = make_workspace(tiny_model_dir, data_source="manifest", data_path=str(manifest))
    report = json.loads(source_report_path(workspace, "manifest").read_text(encoding="utf-8"))
    assert (report["splits"]["train"]["kept"], report["splits"]["dev"]["kept"], report["splits"]["test"]["kept"]) == (8, 4, 4)
    assert all(report["splits"][split]["input_rates"] == {"8000": report["splits"][split]["kept"]} for split in ("train", "dev", "test"))
    # Stored at 16 kHz: the durations are the clips' own, not halved or doubled.
    expected = sum(len(load_audio(folder / f"call{n:02d}.wav")) for n in range(16) if n % 4 == 3) / 16000
    assert abs(report["splits"]["test"]["seconds"] - expected) < 0.05

    offline = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0 else []
    common = [f"workspace={workspace}", "per_device_train_batch_size=4", "per_device_eval_batch_size=4", "generation_max_length=8"]
    training = ["train_offline.py", "max_steps=2", "eval_steps=2", "save_steps=2", "warmup_steps=0", "augment=[channel,noise,speed]"]
    for command in (training, ["evaluate_model.py"],
                    ["inference.py", "output_format=json", str(folder / "call03.wav")]):
        result = subprocess.run([*offline, python_executable, *command[:1], *common, *command[1:]], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{command[0]}: {result.stderr[-3000:]}"
    transcript = json.loads(result.stdout.strip().splitlines()[-1])
    # The call's own length, read at 8 kHz and resampled: a rate mistaken for 16 kHz would halve it.
    assert transcript["source"].endswith("call03.wav")
    assert abs(transcript["duration"] - soundfile.info(folder / "call03.wav").duration) < 0.05
