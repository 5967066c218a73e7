"""data_source=kspon on a KsponSpeech-layout folder built from real Korean clips (../shared/data/ko-real-speech,
CC BY-NC-SA 4.0, read from there, never copied into the repository): headerless PCM (the eval files with the stray
last byte the real corpus has), CP949 and UTF-8 transcripts carrying the corpus's marks, and the official .trn lists.
Checked: the rows and texts for both notations, the report's counts, setup -> train -> evaluate with eval_clean and
eval_other side by side under `unshare -n`, and bad input named without a traceback.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kowhisper.common.audio import load_audio
from kowhisper.common.workspace import source_dir, source_report_path
from kowhisper.config import dataset_sources, load_config
from kowhisper.online.prepare import load_sources
from tests.sample_files import REAL_SPEECH_KO, needs_real_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SPLIT_SIZES = {"train": 12, "dev": 4, "eval_clean": 3, "eval_other": 3}

pytestmark = needs_real_speech


def marked(text: str, index: int) -> str:
    """The sentence as a KsponSpeech transcriber might have written it: noise tags, a filler, a repetition and a dual
    transcription whose two sides are the same word (so either notation gives back the sentence the audio says)."""
    words = text.split()
    words[0] = f"({words[0]})/({words[0]})"
    forms = [f"b/ {' '.join(words)}", f"{' '.join(words)} n/", f"l/ {' '.join(words)} o/"]
    return forms[index % len(forms)]


@pytest.fixture(scope="module")
def kspon_root(tmp_path_factory) -> tuple[Path, dict[str, list[tuple[str, str]]]]:
    """(root, split -> [(id, sentence)]): an AI Hub-style KsponSpeech folder of real clips."""
    with open(REAL_SPEECH_KO / "train.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    root = tmp_path_factory.mktemp("kspon") / "KsponSpeech"
    scripts = root / "KsponSpeech_scripts"
    scripts.mkdir(parents=True)
    sentences: dict[str, list[tuple[str, str]]] = {}
    taken = 0
    for split, size in SPLIT_SIZES.items():
        lines = []
        for n in range(size):
            row = rows[taken]
            taken += 1
            samples = np.clip(load_audio(REAL_SPEECH_KO / "clips" / row["path"]) * 32768, -32768, 32767).astype("<i2").tobytes()
            if split.startswith("eval"):
                number = taken
                relative = f"KsponSpeech_eval/{split}/KsponSpeech_E{number:05d}.pcm"
                samples += b"\x00"  # the real eval files end in one stray byte
            else:
                relative = f"KsponSpeech_01/KsponSpeech_{1 + n // 8:04d}/KsponSpeech_{taken:06d}.pcm"
            pcm = root / relative
            pcm.parent.mkdir(parents=True, exist_ok=True)
            pcm.write_bytes(samples)
            raw = marked(row["sentence"], n)
            # Per-file transcripts beside the audio: CP949 as AI Hub ships them, one in UTF-8.
            pcm.with_suffix(".txt").write_bytes(raw.encode("utf-8" if n == 1 else "cp949"))
            lines.append(f"{relative} :: {raw}")
            sentences.setdefault(split, []).append((Path(relative).stem, row["sentence"]))
        (scripts / f"{split}.trn").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Spontaneous-speech marks the sentences above do not have: a number written two ways and an unintelligible stretch.
    extra = root / "KsponSpeech_01" / "KsponSpeech_0002"
    (extra / "KsponSpeech_000901.pcm").write_bytes((root / lines_path(scripts, "train", 0)).read_bytes())
    with open(scripts / "train.trn", "a", encoding="utf-8") as handle:
        handle.write("KsponSpeech_01/KsponSpeech_0002/KsponSpeech_000901.pcm :: 아/ 한 (70%)/(칠십 퍼센트) 정도 u/ 모+ 모르겠어\n")
    return root, sentences


def lines_path(scripts: Path, split: str, index: int) -> str:
    return (scripts / f"{split}.trn").read_text(encoding="utf-8").splitlines()[index].split(" :: ")[0]


def kspon_config(root: Path, tmp_path: Path, *overrides: str):
    return load_config([f"workspace={tmp_path / 'ws'}", "data_source=kspon", f"data_path={root}",
                        f"cache_dir={tmp_path / 'cache'}", *overrides])


@pytest.mark.parametrize("notation, number", [("spelling", "70%"), ("pronunciation", "칠십 퍼센트")])
def test_rows_come_from_the_trn_lists_with_the_marks_removed(kspon_root, tmp_path, notation, number):
    root, sentences = kspon_root
    config = kspon_config(root, tmp_path, f"kspon_notation={notation}")
    assert [(source.name, source.test_split, source.weight) for source in dataset_sources(config)] == [
        ("kspon", "eval_clean", 1.0), ("kspon-other", "eval_other", 0.0)]
    loaded = load_sources(config)
    kspon, other = loaded["kspon"], loaded["kspon-other"]
    assert {split: len(rows) for split, rows in kspon.splits.items()} == {"train": 13, "dev": 4, "test": 3}
    assert {split: len(rows) for split, rows in other.splits.items()} == {"train": 0, "dev": 0, "test": 3}
    texts = dict(zip(kspon.splits["train"]["id"], kspon.splits["train"]["text"]))
    for row_id, sentence in sentences["train"]:
        assert texts[row_id] == sentence  # tags, filler and dual marks gone, the sentence as spoken
    assert texts["KsponSpeech_000901"] == f"아 한 {number} 정도 모 모르겠어"
    drops = dict(zip(kspon.splits["train"]["id"], kspon.splits["train"]["drop"]))
    assert drops["KsponSpeech_000901"] == "unintelligible" and not drops[sentences["train"][0][0]]
    assert dict(zip(other.splits["test"]["id"], other.splits["test"]["text"])) == dict(sentences["eval_other"])
    counted = kspon.counts["kspon"]
    assert counted["notation"] == notation and counted["with_unintelligible_mark"] == 1
    assert counted["marks"]["dual"] == sum(SPLIT_SIZES[split] for split in ("train", "dev", "eval_clean")) + 1
    assert counted["marks"]["u/"] == 1 and counted["marks"]["filler /"] == 1 and counted["marks"]["repeat +"] == 1


def test_the_folders_alone_are_read_when_the_scripts_are_missing(kspon_root, tmp_path):
    """Without KsponSpeech_scripts: every .pcm with its CP949 or UTF-8 .txt beside it, dev carved from train."""
    root, sentences = kspon_root
    bare = tmp_path / "bare"
    for path in root.rglob("*"):
        if path.is_file() and "KsponSpeech_scripts" not in path.parts:
            target = bare / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    extra = bare / "KsponSpeech_01" / "KsponSpeech_0002" / "KsponSpeech_000901"
    extra.with_suffix(".txt").write_bytes(b"\xff\xfe\x00\x81 broken")  # neither UTF-8 nor CP949: dropped by reason, not fatal
    loaded = load_sources(kspon_config(bare, tmp_path))
    kspon = loaded["kspon"]
    assert len(kspon.splits["train"]) + len(kspon.splits["dev"]) == SPLIT_SIZES["train"] + SPLIT_SIZES["dev"] + 1
    rows = {row["id"]: row for split in ("train", "dev") for row in kspon.splits[split]}
    assert rows.pop("KsponSpeech_000901")["drop"] == "unreadable_transcript"
    assert {row_id: row["text"] for row_id, row in rows.items()} == dict(sentences["train"] + sentences["dev"])
    assert dict(zip(kspon.splits["test"]["id"], kspon.splits["test"]["text"])) == dict(sentences["eval_clean"])


def test_setup_train_and_evaluate_offline_report_eval_clean_and_eval_other_side_by_side(kspon_root, make_workspace, tiny_model_dir,
                                                                                        tmp_path, python_executable):
    root, sentences = kspon_root
    workspace = make_workspace(tiny_model_dir, data_source="kspon", data_path=str(root))
    report = json.loads(source_report_path(workspace, "kspon").read_text(encoding="utf-8"))
    assert report["kspon"]["marks"]["u/"] == 1
    assert {reason: n for reason, n in report["splits"]["train"]["dropped"].items() if n} == {"unintelligible": 1}
    dropped = [json.loads(line) for line in (source_dir(workspace, "kspon") / "train" / "dropped.jsonl").read_text().splitlines()]
    assert [(row["id"], row["reason"]) for row in dropped] == [("KsponSpeech_000901", "unintelligible")]
    assert report["splits"]["test"]["kept"] == SPLIT_SIZES["eval_clean"]
    assert report["splits"]["train"]["input_rates"] == {"16000": 12}  # pcm_sample_rate, as the report states it
    other = json.loads(source_report_path(workspace, "kspon-other").read_text(encoding="utf-8"))
    assert other["splits"]["test"]["kept"] == SPLIT_SIZES["eval_other"] and other["source"]["test_split"] == "eval_other"

    offline = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0 else []
    common = [f"workspace={workspace}", "per_device_train_batch_size=4", "per_device_eval_batch_size=4", "generation_max_length=16"]
    train = subprocess.run([*offline, python_executable, "train_offline.py", *common, "max_steps=2", "eval_steps=2", "save_steps=2",
                            "warmup_steps=0", "logging_steps=1"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    evaluate = subprocess.run([*offline, python_executable, "evaluate_model.py", *common], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=900)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    table = evaluate.stdout
    assert f"{SPLIT_SIZES['eval_clean'] + SPLIT_SIZES['eval_other']} utterances" in table
    # Every model's row, then one row per source under it: eval_clean (kspon) beside eval_other (kspon-other).
    source_rows = [line.split()[0] for line in table.splitlines() if line.strip().startswith(("kspon", "kspon-other"))]
    assert source_rows.count("kspon") >= 2 and source_rows.count("kspon-other") >= 2, table


def test_bad_kspon_input_is_named_not_a_traceback(kspon_root, tmp_path):
    root, _ = kspon_root
    broken = tmp_path / "broken"
    for path in root.rglob("*"):
        if path.is_file():
            target = broken / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    # A training .pcm cut short by one byte is dropped as undecodable, with the reason; the rest goes on.
    first = broken / lines_path(broken / "KsponSpeech_scripts", "train", 0)
    first.write_bytes(first.read_bytes()[:-1])
    with pytest.raises(Exception) as raised:
        load_audio(first)
    assert "odd number of bytes" in str(raised.value) and "cut short" in str(raised.value)
    # A .trn line without " :: " stops the setup with the file and line named.
    trn = broken / "KsponSpeech_scripts" / "dev.trn"
    trn.write_text(trn.read_text(encoding="utf-8") + "KsponSpeech_01/KsponSpeech_0001/x.pcm 그냥 문장\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "download_data.py", f"workspace={tmp_path / 'ws'}", "data_source=kspon",
                             f"data_path={broken}", f"cache_dir={tmp_path / 'cache'}"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "dev.trn:5" in result.stderr, result.stderr


@pytest.mark.real_model
def test_a_pcm_file_transcribes_as_its_original_recording_does(kspon_root, real_model_dir, tmp_path, python_executable):
    """inference.py reads headerless PCM itself: the real whisper-base writes for an eval .pcm what it writes for the
    original recording it was made from."""
    root, sentences = kspon_root
    with open(REAL_SPEECH_KO / "train.tsv", encoding="utf-8", newline="") as handle:
        originals = [row["path"] for row in csv.DictReader(handle, delimiter="\t")]
    pcm = next(root.rglob("KsponSpeech_E*.pcm"))
    original = REAL_SPEECH_KO / "clips" / originals[int(pcm.stem.removeprefix("KsponSpeech_E")) - 1]
    result = subprocess.run([python_executable, "inference.py", f"workspace={tmp_path}", f"adapter={real_model_dir}", "backend=hf",
                             str(pcm), str(original)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = [block.split("\n", 1)[1].strip() for block in result.stdout.split("==> ")[1:]]
    assert len(blocks) == 2 and blocks[0] and blocks[0] == blocks[1], result.stdout
