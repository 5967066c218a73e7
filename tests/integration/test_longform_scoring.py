"""evaluate_model.py eval_longform=<manifest>: real Korean speech joined into long recordings, transcribed whole by
the real whisper-base through the long-form decoder inference.py uses, scored as no-space CER, kocer CER and
deletion share, base beside a fine-tuned adapter, with a paired interval over the recordings.

The recordings are real test clips of ../shared/data/ko-real-speech (CC BY-NC-SA 4.0, read from there, never
copied) joined end to end with ffmpeg, as tests/integration/test_real_speech.py joins them; skipped cleanly where that folder
is absent.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_evaluate import scale_lora_b
from test_inference import add_reciting_run

from tests.sample_files import REAL_SPEECH_KO, needs_real_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]
JOINED_CLIPS = 11
# The second recording holds the audio of only the first clips but the transcript of all of them: what the
# long-form decoder cannot hear shows up as deleted reference characters.
HEARD_CLIPS = 5

pytestmark = [pytest.mark.real_model, needs_real_speech]


def join_clips(clips: list[Path], out: Path) -> Path:
    inputs = [arg for clip in clips for arg in ("-i", str(clip))]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", f"concat=n={len(clips)}:v=0:a=1",
                    "-ar", "16000", "-ac", "1", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def recordings_manifest(tmp_path_factory) -> Path:
    """recordings.csv: joined.wav (the first 11 real test clips, about 58 s) with their sentences, and
    partial.wav (the first 5 of them) with the sentences of all 11."""
    with open(REAL_SPEECH_KO / "test.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:JOINED_CLIPS]
    clips = [REAL_SPEECH_KO / "clips" / row["path"] for row in rows]
    text = " ".join(row["sentence"] for row in rows)
    folder = tmp_path_factory.mktemp("recordings")
    join_clips(clips, folder / "joined.wav")
    join_clips(clips[:HEARD_CLIPS], folder / "partial.wav")
    manifest = folder / "recordings.csv"
    with open(manifest, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "text"])
        writer.writerows([["joined.wav", text], ["partial.wav", text]])
    return manifest


def test_long_recordings_are_scored_whole_base_beside_a_fine_tuned_adapter(make_workspace, real_model_dir, recordings_manifest,
                                                                           tmp_path_factory, capsys):
    import evaluate_model

    workspace = make_workspace(real_model_dir)
    # An adapter whose LoRA is zero: the fine-tuned model is the base, so every difference must be exactly 0.
    scratch = tmp_path_factory.mktemp("adapters")
    scale_lora_b(add_reciting_run(workspace, scratch, run_name="untrained"), 0.0)

    assert evaluate_model.main([f"workspace={workspace}", f"eval_longform={recordings_manifest}", "eval_run=untrained"]) == 0
    printed = capsys.readouterr().out
    [out_dir] = [p for p in (workspace / "evaluations").iterdir() if p.name.startswith("longform-recordings-")]
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["recordings"] == 2 and [m["label"] for m in summary["models"]] == ["base", "untrained"]
    base, tuned = summary["models"]
    with open(out_dir / "base.csv", encoding="utf-8", newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    joined, partial = rows["joined"], rows["partial"]
    for row in (joined, partial):
        print(f"\nwhisper-base, {row['id']}.wav ({float(row['duration']):.0f} s): no-space CER {float(row['cer_nospace']):.3f}, "
              f"kocer CER {float(row['kocer_cer']):.3f}, deletion share {float(row['deletion_share']):.3f}")
    # Zero-shot whisper-base reads single real clips at about 11-13% CER; whole, the recording is read about as well,
    # and hardly anything is left out.
    assert float(joined["cer_nospace"]) < 0.25 and float(joined["kocer_cer"]) <= float(joined["cer_nospace"]) + 0.01
    assert float(joined["deletion_share"]) < 0.1
    assert float(joined["duration"]) > 45 and len(joined["hypothesis"]) > 0.7 * len(joined["reference"])
    # Audio of 5 clips against the transcript of 11: most of the missing six sentences' characters are deletions.
    assert float(partial["deletion_share"]) > 0.35
    assert base["deletion_share"] == pytest.approx(
        sum(int(r["cer_nospace_deletions"]) for r in rows.values()) / sum(int(r["cer_nospace_chars"]) for r in rows.values()))

    # The untrained adapter transcribes exactly as the base, recording by recording, so the paired interval is [0, 0].
    for rate in ("cer_nospace", "kocer_cer"):
        assert tuned[rate] == base[rate]
        assert tuned["versus_base"][rate] == {"difference": 0.0, "low": 0.0, "high": 0.0, "verdict": "no clear difference"}
    assert summary["bootstrap"]["units"] == 2
    assert "CER no-space" in printed and "deleted" in printed and "over the 2 recordings" in printed
    shutil.rmtree(scratch)
