"""Data preparation on the bundled Korean sample and on deliberately broken rows, with the real whisper-base
processor, real ffmpeg and real MP3s: sources, drops and their report, features, labels and resumability.
Several sources in one workspace and leakage between them are in test_sources.py; damaged inputs, re-splitting a
manifest and the checks made before any audio is read are in tests/unit/test_source_inputs.py."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from datasets import Audio, Dataset, Features, Value, load_from_disk

from kowhisper.common.audio import SAMPLING_RATE, load_audio
from kowhisper.common.files import partial_path
from kowhisper.common.text import normalize_transcript
from kowhisper.common.workspace import SPLITS, source_dir, source_report_path
from kowhisper.config import PROJECT_ROOT, SAMPLE_DATA, load_config
from kowhisper.families.whisper.features import N_FRAMES, dataset_features, pad_features
from kowhisper.online import prepare as prepare_module
from kowhisper.online.prepare import DROP_REASONS, DataError, prepare_data

SAMPLE_RELEASE = SAMPLE_DATA / "ko"
CV_HEADER = ["client_id", "path", "sentence", "up_votes", "down_votes", "locale"]


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


SAMPLE_ROWS = {split: read_tsv(SAMPLE_RELEASE / f"{split}.tsv") for split in SPLITS}
SAMPLE_TEXT = {Path(row["path"]).stem: row["sentence"] for rows in SAMPLE_ROWS.values() for row in rows}


def sample_clip(split: str, index: int) -> Path:
    return SAMPLE_RELEASE / "clips" / SAMPLE_ROWS[split][index]["path"]


def write_cv_release(root: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    """A Common Voice-layout release: ko/<split>.tsv listing (clip file name, sentence)."""
    release = root / "ko"
    (release / "clips").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(release / f"{split}.tsv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
            writer.writerow(CV_HEADER)
            writer.writerows([["client", name, sentence, "2", "0", "ko"] for name, sentence in rows])
    return release


def new_workspace(root: Path, processor_dir: Path) -> Path:
    shutil.copytree(processor_dir, root / "model")
    return root


def prepare(workspace: Path, *overrides: str) -> dict:
    """Prepare the one source the flat keys describe; its summary {split: {"kept", "dropped", "seconds"}}."""
    return prepare_data(load_config([f"workspace={workspace}", f"cache_dir={cache_beside(workspace)}", *overrides])).sources[0].splits


def cache_beside(workspace) -> Path:
    """The test's own cache folder (cache_dir), next to its workspace, instead of the user's."""
    return Path(workspace).parent / f"{Path(workspace).name}-cache"


def prepared(workspace: Path, split: str, source: str = "cv"):
    return load_from_disk(str(source_dir(workspace, source) / split))


def read_report(workspace: Path, source: str = "cv") -> dict:
    return json.loads(source_report_path(workspace, source).read_text(encoding="utf-8"))


def dropped_rows(workspace: Path, source: str = "cv") -> list[dict]:
    """Every dropped row of the source, from the dropped.jsonl its report names for each split."""
    folder = source_dir(workspace, source)
    files = read_report(workspace, source)["dropped_rows"]
    return [json.loads(line) for split in SPLITS for line in (folder / files[split]).read_text(encoding="utf-8").splitlines()]


def file_states(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        path.relative_to(folder).as_posix(): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def processor_dir(real_model_dir, tmp_path_factory) -> Path:
    """The real whisper-base processor and config.json, without weights: all that data preparation reads from
    <workspace>/model (config.json names the model family, which decides how clips are stored)."""
    from transformers import WhisperConfig, WhisperProcessor

    out = tmp_path_factory.mktemp("processor")
    WhisperProcessor.from_pretrained(real_model_dir).save_pretrained(out)
    WhisperConfig.from_pretrained(real_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(processor_dir):
    from transformers import WhisperTokenizer

    return WhisperTokenizer.from_pretrained(processor_dir)


@pytest.fixture(scope="module")
def sample_workspace(processor_dir, tmp_path_factory) -> Path:
    """The bundled sample, prepared from its directory with two worker processes."""
    workspace = new_workspace(tmp_path_factory.mktemp("sample-ws"), processor_dir)
    prepare(workspace, "num_proc=2")
    return workspace


@pytest.fixture(scope="module")
def broken_release(tmp_path_factory) -> Path:
    """One row of every kind that must be dropped, beside good rows and an NFD transcript."""
    root = tmp_path_factory.mktemp("broken-cv")
    release = write_cv_release(root, {})
    clips = release / "clips"
    shutil.copy(sample_clip("train", 0), clips / "good.mp3")
    shutil.copy(sample_clip("train", 1), clips / "nfd.mp3")
    shutil.copy(sample_clip("train", 2), clips / "no_text.mp3")
    shutil.copy(sample_clip("train", 3), clips / "long_text.mp3")
    shutil.copy(sample_clip("dev", 0), clips / "dev_good.mp3")
    shutil.copy(sample_clip("test", 0), clips / "test_good.mp3")
    (clips / "corrupt.mp3").write_bytes(random.Random(0).randbytes(8192))
    (clips / "empty.mp3").write_bytes(b"")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=31",
                    "-ar", "48000", "-ac", "1", "-c:a", "libmp3lame", "-b:a", "32k", str(clips / "too_long.mp3")], check=True)
    write_cv_release(root, {
        "train": [
            ("good.mp3", SAMPLE_ROWS["train"][0]["sentence"]),
            ("nfd.mp3", unicodedata.normalize("NFD", "  " + SAMPLE_ROWS["train"][1]["sentence"] + "   ")),
            ("no_text.mp3", "   "),
            ("long_text.mp3", "가나다라마바사아자차카타파하 " * 60),
            ("corrupt.mp3", "깨진 파일입니다."),
            ("empty.mp3", "빈 파일입니다."),
            ("missing.mp3", "없는 파일입니다."),
            ("too_long.mp3", "너무 긴 파일입니다."),
        ],
        "dev": [("dev_good.mp3", SAMPLE_ROWS["dev"][0]["sentence"])],
        "test": [("test_good.mp3", SAMPLE_ROWS["test"][0]["sentence"])],
    })
    return release


@pytest.fixture(scope="module")
def broken_workspace(broken_release, processor_dir, tmp_path_factory) -> tuple[Path, dict]:
    workspace = new_workspace(tmp_path_factory.mktemp("broken-ws"), processor_dir)
    return workspace, prepare(workspace, "data_source=cv", f"data_path={broken_release}", "num_proc=2")


def test_sample_splits_are_kept_whole_with_the_declared_columns(sample_workspace):
    for split in SPLITS:
        dataset = prepared(sample_workspace, split)
        assert dataset.features == dataset_features(80, keep_audio=True)  # keep_audio is on by default
        assert dataset["id"] == [Path(row["path"]).stem for row in SAMPLE_ROWS[split]]
        # The audio kept for augmentation is the clip's own: its length is the clip's duration at 16 kHz.
        assert all(abs(len(audio) / 16000 - duration) < 1e-3 for audio, duration in zip(dataset["audio"], dataset["duration"]))
    report = read_report(sample_workspace)
    assert {split: entry["kept"] for split, entry in report["splits"].items()} == {"train": 40, "dev": 10, "test": 10}
    assert report["source"]["data_path"] == str(SAMPLE_DATA)
    assert dropped_rows(sample_workspace) == []


def test_labels_decode_back_to_the_normalised_text(sample_workspace, tokenizer):
    prefix = tokenizer.convert_tokens_to_ids(["<|ko|>", "<|transcribe|>", "<|notimestamps|>"])
    for split in SPLITS:
        for row in prepared(sample_workspace, split):
            assert row["labels"][:3] == prefix
            assert row["labels"][-1] == tokenizer.eos_token_id
            assert tokenizer.convert_tokens_to_ids("<|startoftranscript|>") not in row["labels"]
            # With the leading space Whisper writes before every transcript, so the first word is its usual token.
            assert tokenizer.decode(row["labels"], skip_special_tokens=True) == " " + normalize_transcript(SAMPLE_TEXT[row["id"]])
            assert row["text"] == normalize_transcript(SAMPLE_TEXT[row["id"]])


def test_audio_comes_out_at_16khz_with_the_clip_length(sample_workspace):
    clip = sample_clip("train", 0)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate:format=duration", "-of", "json", str(clip)],
                           capture_output=True, text=True, check=True)
    probed = json.loads(probe.stdout)
    assert probed["streams"][0]["sample_rate"] == "48000"
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-ac", "1", "-ar", str(SAMPLING_RATE), "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    reference = np.frombuffer(pcm, dtype=np.float32)

    waveform = load_audio(clip)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    np.testing.assert_array_equal(waveform, reference)
    # ffprobe's container duration also counts the MP3 encoder's priming and padding, under 50 ms here.
    assert abs(len(waveform) / SAMPLING_RATE - float(probed["format"]["duration"])) < 0.05

    stored = prepared(sample_workspace, "train").with_format("numpy")[0]
    assert stored["id"] == clip.stem
    assert stored["duration"] == pytest.approx(len(waveform) / SAMPLING_RATE, abs=1e-6)
    # Every frame whose 400-sample window (centred, hop 160) reaches into the audio, and no more.
    last_frame_touching_audio = (len(waveform) + 200 - 1) // 160
    assert stored["input_features"].shape == (last_frame_touching_audio + 1, 80)


def test_stored_features_pad_to_whisper_feature_extractor_output(sample_workspace, processor_dir):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(processor_dir)
    dataset = prepared(sample_workspace, "dev").with_format("numpy")
    for index in range(5):
        row = dataset[index]
        expected = extractor(load_audio(sample_clip("dev", index)), sampling_rate=SAMPLING_RATE, return_tensors="np").input_features[0]
        padded = pad_features([row["input_features"]])[0].numpy()
        assert padded.shape == expected.shape == (80, N_FRAMES)
        assert np.abs(padded - expected).max() < 2e-3


def test_every_bad_row_kind_is_dropped_with_its_reason_and_reported(broken_workspace, broken_release):
    workspace, summary = broken_workspace
    assert summary["train"]["kept"] == 2
    # Every reason a Common Voice release can give; too_short is the CTC family's, and the rest come from segment times
    # and KsponSpeech's marks (test_segments_source.py, test_kspon_source.py).
    met = ("empty_text", "labels_too_long", "undecodable", "empty_audio", "missing", "too_long")
    assert summary["train"]["dropped"] == dict.fromkeys(DROP_REASONS, 0) | dict.fromkeys(met, 1)
    assert summary["dev"]["kept"] == summary["test"]["kept"] == 1
    assert prepared(workspace, "train")["id"] == ["good", "nfd"]

    assert read_report(workspace)["splits"] == summary
    dropped = {row["id"]: row for row in dropped_rows(workspace)}
    assert {row_id: row["reason"] for row_id, row in dropped.items()} == {
        "no_text": "empty_text",
        "long_text": "labels_too_long",
        "corrupt": "undecodable",
        "empty": "empty_audio",
        "missing": "missing",
        "too_long": "too_long",
    }
    for row_id, row in dropped.items():
        assert row["split"] == "train"
        assert row["file"] == str(broken_release / "clips" / f"{row_id}.mp3")
        assert row["detail"]
    assert "31.00 s" in dropped["too_long"]["detail"]


def test_nfd_text_is_stored_as_nfc(broken_workspace, tokenizer):
    workspace, _ = broken_workspace
    row = prepared(workspace, "train")[1]
    expected = SAMPLE_ROWS["train"][1]["sentence"]
    assert row["id"] == "nfd"
    assert unicodedata.is_normalized("NFC", row["text"])
    assert row["text"] == expected
    assert tokenizer.decode(row["labels"], skip_special_tokens=True) == " " + expected


def test_a_split_left_empty_fails_after_writing_the_report(broken_release, processor_dir, tmp_path):
    release = write_cv_release(tmp_path / "src", {
        "train": [("good.mp3", "좋은 문장입니다.")],
        "dev": [("corrupt.mp3", "깨진 파일입니다.")],
        "test": [("good.mp3", "좋은 문장입니다.")],
    })
    for name in ("good.mp3", "corrupt.mp3"):
        shutil.copy(broken_release / "clips" / name, release / "clips" / name)
    workspace = new_workspace(tmp_path / "ws", processor_dir)
    with pytest.raises(DataError, match=r"no usable rows in cv/dev \(undecodable 1\); see .*/data/cv/report\.json"):
        prepare(workspace, f"data_path={release}", "num_proc=1")
    assert [(row["split"], row["id"], row["reason"]) for row in dropped_rows(workspace)] == [("dev", "corrupt", "undecodable")]


def test_clips_beyond_whisper_window_are_refused_as_a_setting(processor_dir, tmp_path):
    workspace = new_workspace(tmp_path / "ws", processor_dir)
    with pytest.raises(DataError, match=r"max_duration_s=45.0 is over Whisper's 30 s window"):
        prepare(workspace, "max_duration_s=45")
    assert not (workspace / "data").exists()


def test_tarball_and_directory_give_identical_datasets(sample_workspace, processor_dir, tmp_path, capsys):
    tarball = tmp_path / "cv-corpus-ko-sample.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(SAMPLE_DATA, arcname="cv-corpus-ko-sample")
    workspace = new_workspace(tmp_path / "ws", processor_dir)
    # One process here against two for the directory: worker count must not change the output either.
    prepare(workspace, f"data_path={tarball}", "num_proc=1")
    for split in SPLITS:
        from_tarball, from_directory = prepared(workspace, split), prepared(sample_workspace, split)
        assert from_tarball.features == from_directory.features
        assert from_tarball.data.table.equals(from_directory.data.table)
    assert not (workspace / ".cache").exists(), "downloads and extractions stay out of the workspace"
    extracted = list((cache_beside(workspace) / "cv").glob("*/cv-corpus-ko-sample/ko/train.tsv"))
    assert len(extracted) == 1

    capsys.readouterr()
    before = file_states(workspace)
    prepare(workspace, f"data_path={tarball}", "num_proc=1")
    assert "extracting" not in capsys.readouterr().out
    assert file_states(workspace) == before


def test_recycled_workers_give_the_same_rows(sample_workspace, processor_dir, tmp_path, monkeypatch):
    """Workers are replaced by fresh forks every WORKER_RECYCLE_ROWS rows (decoding leaks native memory); with the
    limit set low, every split crosses it, and the rows must come out as without recycling."""
    pools = []

    class CountedPool(prepare_module.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(prepare_module, "WORKER_RECYCLE_ROWS", 8)
    monkeypatch.setattr(prepare_module, "ProcessPoolExecutor", CountedPool)
    workspace = new_workspace(tmp_path / "ws", processor_dir)
    prepare(workspace, "num_proc=2")
    assert len(pools) >= 4  # 60 rows, a fresh pair of workers every 16
    for split in SPLITS:
        assert prepared(workspace, split).data.table.equals(prepared(sample_workspace, split).data.table)


def test_a_tarball_reaching_outside_its_folder_is_refused(processor_dir, tmp_path):
    tarball = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload.txt"
    payload.write_text("x", encoding="utf-8")
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(payload, arcname="../escaped.txt")
    workspace = new_workspace(tmp_path / "ws", processor_dir)
    with pytest.raises(DataError, match=r"unsafe member '\.\./escaped\.txt'"):
        prepare(workspace, f"data_path={tarball}")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_second_run_rewrites_nothing(sample_workspace, capsys):
    before = file_states(sample_workspace)
    summary = prepare(sample_workspace, "num_proc=2")
    assert file_states(sample_workspace) == before
    assert capsys.readouterr().out.count("skip, already prepared") == 3
    assert {split: entry["kept"] for split, entry in summary.items()} == {"train": 40, "dev": 10, "test": 10}


def test_a_partial_or_altered_split_is_rebuilt(sample_workspace, tmp_path, capsys):
    workspace = tmp_path / "ws"
    shutil.copytree(sample_workspace, workspace)
    source = source_dir(workspace, "cv")
    (source / "dev" / ".complete.json").unlink()
    arrow = sorted((source / "train").glob("*.arrow"))[0]
    arrow.write_bytes(arrow.read_bytes()[:1000])
    leftover = partial_path(source / "test")
    leftover.mkdir()
    test_before = file_states(source / "test")

    prepare(workspace, "num_proc=2")
    out = capsys.readouterr().out
    assert "cv/dev: no completion stamp, rebuilding" in out
    assert f"cv/train: {arrow.name} is missing or altered, rebuilding" in out
    assert not leftover.exists()
    assert file_states(source / "test") == test_before
    for split in ("train", "dev"):
        assert prepared(workspace, split).data.table.equals(prepared(sample_workspace, split).data.table)


def test_changed_settings_rebuild_the_split(sample_workspace, tmp_path, capsys):
    workspace = tmp_path / "ws"
    shutil.copytree(sample_workspace, workspace)
    summary = prepare(workspace, "max_samples=5")
    assert capsys.readouterr().out.count("inputs or settings changed, rebuilding") == 3
    assert {split: entry["kept"] for split, entry in summary.items()} == {"train": 5, "dev": 5, "test": 5}
    again = [prepared(workspace, split)["id"] for split in SPLITS]
    prepare(workspace, "max_samples=5")
    assert [prepared(workspace, split)["id"] for split in SPLITS] == again


def test_hf_parquet_directory_with_a_carved_dev_split(sample_workspace, processor_dir, tmp_path, capsys):
    """Zeroth-Korean's shape: columns audio and text, splits train and test, no dev."""
    features = Features({"id": Value("string"), "audio": Audio(), "text": Value("string")})
    parquet_dir = tmp_path / "zeroth-like"
    parquet_dir.mkdir()

    def write(split: str, clips: list[Path], extra: list[dict] = ()) -> None:
        rows = [{"id": clip.stem, "audio": {"bytes": clip.read_bytes(), "path": clip.name}, "text": SAMPLE_TEXT[clip.stem]}
                for clip in clips]
        Dataset.from_list(rows + list(extra), features=features).to_parquet(str(parquet_dir / f"{split}-00000-of-00001.parquet"))

    write("train", [sample_clip("train", index) for index in range(9)])
    garbage = {"id": "garbage", "audio": {"bytes": b"not audio" * 100, "path": "garbage.flac"}, "text": "소리가 아닙니다."}
    write("test", [sample_clip("test", index) for index in range(2)], [garbage])

    workspace = new_workspace(tmp_path / "ws", processor_dir)
    summary = prepare(workspace, "data_source=hf", f"data_path={parquet_dir}", "num_proc=1")
    assert "the source has no split 'dev' (it has: test, train): carving dev from train" in capsys.readouterr().out
    assert [summary[split]["kept"] for split in SPLITS] == [8, 1, 2]
    assert summary["test"]["dropped"]["undecodable"] == 1
    dropped = [(row["id"], row["file"], row["reason"]) for row in dropped_rows(workspace, "hf")]
    assert dropped == [("garbage", "garbage.flac", "undecodable")]

    # Embedded bytes and the file on disk must give the very same stored row.
    from_files = {row["id"]: row for split in SPLITS for row in prepared(sample_workspace, split)}
    for split in SPLITS:
        for row in prepared(workspace, split, "hf"):
            assert row == from_files[row["id"]]

    before = file_states(workspace)
    prepare(workspace, "data_source=hf", f"data_path={parquet_dir}", "num_proc=1")
    assert capsys.readouterr().out.count("skip, already prepared") == 3
    assert file_states(workspace) == before


def test_manifest_without_split_column_is_resplit_by_ratio(sample_workspace, processor_dir, tmp_path):
    source = tmp_path / "corpus"
    (source / "wav").mkdir(parents=True)
    clips = [sample_clip("train", index) for index in range(10)]
    for clip in clips:
        shutil.copy(clip, source / "wav" / clip.name)
    with open(source / "manifest.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "text"])
        writer.writerows([[f"wav/{clip.name}", SAMPLE_TEXT[clip.stem]] for clip in clips])

    workspace = new_workspace(tmp_path / "ws", processor_dir)
    summary = prepare(workspace, "data_source=manifest", f"data_path={source / 'manifest.csv'}", "num_proc=1")
    assert [summary[split]["kept"] for split in SPLITS] == [8, 1, 1]
    ids = [row_id for split in SPLITS for row_id in prepared(workspace, split, "manifest")["id"]]
    assert sorted(ids) == sorted(f"wav/{clip.stem}" for clip in clips)
    from_files = {row["id"]: row for row in prepared(sample_workspace, "train")}
    for row in prepared(workspace, "train", "manifest"):
        assert {**row, "id": Path(row["id"]).name} == from_files[Path(row["id"]).name]


def test_download_data_exits_zero_with_drops_and_prints_the_summary(broken_release, processor_dir, tmp_path):
    workspace = new_workspace(tmp_path / "ws", processor_dir)
    result = subprocess.run([sys.executable, "download_data.py", f"workspace={workspace}", f"data_path={broken_release}", "num_proc=1"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^cv\s+train\s+2\s+0\.00\s+missing 1, empty_audio 1, undecodable 1", result.stdout, re.MULTILINE), result.stdout
    assert "cv test in cv train: 0 of 1" in result.stdout
    assert str(source_report_path(workspace, "cv")) in result.stdout


def test_download_data_fails_clearly_on_a_missing_source(processor_dir, tmp_path):
    workspace = new_workspace(tmp_path / "ws", processor_dir)
    missing = tmp_path / "no-such-release"
    result = subprocess.run([sys.executable, "download_data.py", f"workspace={workspace}", f"data_path={missing}"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"Common Voice release not found: {missing} (data_path)" in result.stderr
    assert not (workspace / "data").exists()
