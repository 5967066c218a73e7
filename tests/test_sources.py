"""Several sources in one workspace: each prepared, resumed, reported and manifested on its own, leakage between
them counted, format-1 workspaces still readable. And inputs that are damaged or point where they should not
(a tarball cut short, a bad parquet or Arrow file, malformed TSV/CSV/JSONL, a path leaving its folder), each
named in a DataError rather than a traceback. Real espeak-ng speech, real ffmpeg, the tiny Whisper's processor."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from datasets import Dataset

from kowhisper.common.files import atomic_write_json
from kowhisper.common.workspace import (
    WorkspaceError,
    WorkspaceSource,
    load_manifest,
    split_dir,
    verify_workspace,
    workspace_sources,
    write_manifest,
)
from kowhisper.config import PROJECT_ROOT, SAMPLE_DATA, Config, dataset_sources, load_config
from kowhisper.online.prepare import DataError
from kowhisper.online.setup import build_workspace, summary_text
from kowhisper.online.sources import load_source

SAMPLE_RELEASE = SAMPLE_DATA / "ko"


def tsv_sentences(split: str) -> list[str]:
    with open(SAMPLE_RELEASE / f"{split}.tsv", encoding="utf-8", newline="") as handle:
        return [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


SAMPLE_TRAIN, SAMPLE_TEST = tsv_sentences("train"), tsv_sentences("test")
# The second corpus. Its test split holds one of its own train sentences and one of the sample's train sentences,
# each spelled differently (punctuation, spacing), and its train split holds one of the sample's test sentences:
# leakage within a source, in both directions between them, and through the metric normalisation.
EXTRA_ROWS = [
    ("train", "오늘은 날씨가 맑습니다."),
    ("train", "지하철 이 호선은 순환선입니다."),
    ("train", "도서관은 아홉 시에 문을 엽니다."),
    ("train", SAMPLE_TEST[0]),
    ("dev", "점심으로 비빔밥을 먹었어요."),
    ("test", "오늘은  날씨가 맑습니다!"),
    ("test", "“" + SAMPLE_TRAIN[0].rstrip(".") + "”"),
]


def file_states(folder: Path) -> dict[str, tuple[int, str]]:
    return {path.relative_to(folder).as_posix(): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(folder.rglob("*")) if path.is_file()}


def build(workspace: Path, model_dir: Path, datasets: list[dict] | None = None) -> tuple[dict, str]:
    """The online setup with these datasets (None: the flat keys, i.e. the bundled sample), as a user runs it from a
    YAML file; returns the manifest and what it printed."""
    settings = {"workspace": str(workspace), "model_name_or_path": str(model_dir), "wheelhouse": False, "num_proc": 1,
                "cache_dir": str(workspace.parent / f"{workspace.name}-cache")}
    if datasets is not None:
        settings["datasets"] = datasets
    config_file = workspace.parent / f"{workspace.name}.yaml"
    config_file.write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        manifest = build_workspace(load_config([], config_file))
    return manifest, printed.getvalue()


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def extra_manifest(tmp_path_factory) -> Path:
    """A CSV manifest of seven espeak-ng clips with a split column, audio paths relative to the manifest."""
    root = tmp_path_factory.mktemp("extra-corpus")
    (root / "wav").mkdir()
    with open(root / "manifest.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "text", "split"])
        for index, (split, text) in enumerate(EXTRA_ROWS):
            clip = root / "wav" / f"extra{index}.wav"
            subprocess.run(["espeak-ng", "-v", "ko", "-w", str(clip), text], check=True, capture_output=True)
            writer.writerow([f"wav/{clip.name}", text, split])
    return root / "manifest.csv"


EXTRA_SOURCE = {"name": "extra", "data_source": "manifest", "weight": 0.5}


@pytest.fixture(scope="module")
def two_sources(make_workspace, tiny_model_dir, extra_manifest) -> tuple[Path, dict, str, dict]:
    """A finished one-source workspace (the sample, as `cv`) to which the espeak corpus is then added:
    (workspace, manifest, what the second setup printed, the cv folder's file states before it)."""
    workspace = make_workspace(tiny_model_dir)
    cv_before = file_states(workspace / "data" / "cv")
    manifest, printed = build(workspace, tiny_model_dir, [{"name": "cv"}, {**EXTRA_SOURCE, "data_path": str(extra_manifest)}])
    return workspace, manifest, printed, cv_before


def copy_of(workspace: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(workspace, target, symlinks=True)
    return target


# ---- several sources -----------------------------------------------------------------------------------------


def test_adding_a_source_prepares_only_that_source(two_sources, extra_manifest):
    workspace, manifest, printed, cv_before = two_sources
    for split in ("train", "dev", "test"):
        assert f"cv/{split}: skip, already prepared" in printed
    assert printed.count("skip, already prepared") == 3
    assert "extra/train: 4 clips kept, 0 dropped" in printed
    assert "extra/dev: 1 clips kept" in printed and "extra/test: 2 clips kept" in printed
    assert file_states(workspace / "data" / "cv") == cv_before

    assert [(s["name"], s["weight"], s["dir"]) for s in manifest["sources"]] == [("cv", 1.0, "data/cv"), ("extra", 0.5, "data/extra")]
    cv, extra = manifest["sources"]
    assert {split: counts["kept"] for split, counts in extra["splits"].items()} == {"train": 4, "dev": 1, "test": 2}
    assert {split: counts["kept"] for split, counts in manifest["splits"].items()} == {"train": 44, "dev": 11, "test": 12}
    assert extra["config"]["data_path"] == str(extra_manifest)
    assert extra["config"]["data_source"] == "manifest" and cv["config"]["data_source"] == "cv"
    assert {"data/extra/report.json", "data/extra/train/dropped.jsonl", "data/cv/report.json"} <= set(manifest["files"])
    assert any(name.startswith("data/extra/test/data-") and name.endswith(".arrow") for name in manifest["files"])
    assert verify_workspace(workspace).ok


def test_the_summary_shows_every_source_split_and_weight(two_sources):
    workspace, manifest, _, _ = two_sources
    text = summary_text(manifest, workspace)
    for line in ("cv     train       40", "extra  train        4", "extra  test         2"):
        assert line in text, text
    assert "training weights: cv 1 (67%), extra 0.5 (33%)" in text


def test_offline_code_finds_each_source(two_sources):
    workspace, _, _, _ = two_sources
    assert workspace_sources(workspace) == [
        WorkspaceSource("cv", 1.0, workspace.resolve() / "data" / "cv"),
        WorkspaceSource("extra", 0.5, workspace.resolve() / "data" / "extra"),
    ]
    assert workspace_sources(workspace)[1].split_dir("dev") == workspace.resolve() / "data" / "extra" / "dev"
    with pytest.raises(WorkspaceError, match=r"holds 2 sources \(cv, extra\)"):
        split_dir(workspace, "train")


def test_leakage_is_counted_within_and_between_sources(two_sources):
    workspace, manifest, _, _ = two_sources
    counts = {(entry["test_source"], entry["train_source"]): (entry["leaked_rows"], entry["test_rows"]) for entry in manifest["leakage"]}
    assert counts == {("cv", "cv"): (0, 10), ("cv", "extra"): (1, 10), ("extra", "cv"): (1, 2), ("extra", "extra"): (1, 2)}
    examples = {(entry["test_source"], entry["train_source"]): entry["examples"] for entry in manifest["leakage"]}
    assert examples[("extra", "extra")] == ["오늘은 날씨가 맑습니다!"]
    assert examples[("cv", "extra")] == [SAMPLE_TEST[0]]
    text = summary_text(manifest, workspace)
    assert "extra test in cv train: 1 of 2 (50.0%)" in text
    assert "cv test in extra train: 1 of 10 (10.0%)" in text


def test_verify_catches_a_changed_byte_in_either_source(two_sources, tmp_path):
    workspace = copy_of(two_sources[0], tmp_path)
    changed = [sorted((workspace / "data" / name / split).glob("*.arrow"))[0] for name, split in (("cv", "train"), ("extra", "test"))]
    for path in changed:
        flip_a_byte(path)
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "run_online_setup.py"), "--verify", f"workspace={workspace}"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    for path in changed:
        assert f"altered: {path.relative_to(workspace).as_posix()}" in result.stdout


def test_a_source_taken_out_of_the_config_is_left_alone_and_unlisted(two_sources, tiny_model_dir, tmp_path):
    workspace = copy_of(two_sources[0], tmp_path)
    extra_before = file_states(workspace / "data" / "extra")
    manifest, printed = build(workspace, tiny_model_dir)
    assert "data/extra: not one of this config's sources (cv); left alone and left out of the manifest" in printed
    assert file_states(workspace / "data" / "extra") == extra_before
    assert [source["name"] for source in manifest["sources"]] == ["cv"]
    assert not [name for name in manifest["files"] if name.startswith("data/extra/")]
    result = verify_workspace(workspace)
    assert result.ok and "data/extra/report.json" in result.unexpected


def format_1_workspace(make_workspace, model_dir: Path) -> Path:
    """The layout before several sources: data/<split> and data/report.json, a manifest of format 1 without sources."""
    workspace = make_workspace(model_dir)
    data = workspace / "data"
    for name in ("train", "dev", "test", "report.json"):
        (data / "cv" / name).rename(data / name)
    (data / "cv").rmdir()
    manifest = load_manifest(workspace)
    written = write_manifest(workspace, manifest["config"], manifest["splits"], sources=manifest["sources"])
    format_1 = {key: value for key, value in written.items() if key not in ("sources", "leakage")}
    atomic_write_json(workspace / "manifest.json", {**format_1, "format_version": 1})
    return workspace


def test_a_format_1_workspace_still_verifies_and_loads_for_training(make_workspace, tiny_model_dir):
    from kowhisper.train.data import load_splits

    workspace = format_1_workspace(make_workspace, tiny_model_dir)
    data = workspace / "data"

    assert load_manifest(workspace)["format_version"] == 1
    assert verify_workspace(workspace).ok
    assert workspace_sources(workspace) == [WorkspaceSource("cv", 1.0, workspace.resolve() / "data")]
    assert split_dir(workspace, "train") == workspace.resolve() / "data" / "train"
    counts = load_splits(workspace, Config(workspace=str(workspace))).counts
    assert (counts["train"], counts["dev"], counts["test"]) == (40, 10, 10)

    flip_a_byte(sorted((data / "dev").glob("*.arrow"))[0])
    assert [name.split("/")[:2] for name in verify_workspace(workspace).altered] == [["data", "dev"]]


def test_running_the_setup_again_makes_a_format_1_workspace_format_2(make_workspace, tiny_model_dir):
    workspace = format_1_workspace(make_workspace, tiny_model_dir)
    manifest, printed = build(workspace, tiny_model_dir)
    assert manifest["format_version"] == 2 and [source["dir"] for source in manifest["sources"]] == ["data/cv"]
    for name in ("train", "dev", "test", "report.json"):
        assert f"data/{name}: left from a format-1 workspace" in printed
        assert (workspace / "data" / name).exists()
    assert not [name for name in manifest["files"] if name.startswith(("data/train/", "data/dev/", "data/test/"))]
    assert verify_workspace(workspace).ok


# ---- damaged and misplaced inputs ----------------------------------------------------------------------------


def source_rows(workspace: Path, **keys):
    """load_source for one source given by flat keys, as prepare_data calls it."""
    config = load_config([f"workspace={workspace}", f"cache_dir={workspace}-cache", *(f"{key}={value}" for key, value in keys.items())])
    return load_source(dataset_sources(config)[0], config)


def sample_tarball(path: Path, mode: str) -> Path:
    with tarfile.open(path, mode) as archive:
        archive.add(SAMPLE_DATA, arcname="cv-corpus-ko-sample")
    return path


def cut_short(path: Path, keep: float = 0.5) -> Path:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


def test_a_truncated_tarball_is_named_by_the_script_not_a_traceback(tiny_model_dir, tmp_path):
    tarball = cut_short(sample_tarball(tmp_path / "cv-corpus-ko.tar.gz", "w:gz"))
    workspace = tmp_path / "ws"
    shutil.copytree(tiny_model_dir, workspace / "model")
    result = subprocess.run([sys.executable, "download_data.py", f"workspace={workspace}", f"data_path={tarball}",
                             f"cache_dir={tmp_path / 'cache'}"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"source 'cv': {tarball} is damaged or incomplete (EOFError: Compressed file ended" in result.stderr
    assert "download it again" in result.stderr
    assert not list((tmp_path / "cache" / "cv").iterdir()), "a half extraction must not stay behind"


def test_a_truncated_plain_tar_is_named(tmp_path):
    tarball = cut_short(sample_tarball(tmp_path / "cv-corpus-ko.tar", "w"), keep=0.3)
    with pytest.raises(DataError, match=rf"{tarball} is damaged or incomplete \(ReadError: .*download it again"):
        source_rows(tmp_path / "ws", data_path=tarball)


def hf_parquet_dir(root: Path) -> Path:
    root.mkdir()
    for split in ("train", "test"):
        Dataset.from_dict({"audio": ["a.wav", "b.wav"], "text": ["가", "나"]}).to_parquet(str(root / f"{split}.parquet"))
    return root


def test_a_cut_short_parquet_file_is_named(tmp_path):
    folder = hf_parquet_dir(tmp_path / "parquet")
    cut_short(folder / "test.parquet")
    with pytest.raises(DataError, match=rf"{folder / 'test.parquet'} is damaged or incomplete .*download or export it again"):
        source_rows(tmp_path / "ws", data_source="hf", data_path=folder)


def test_a_cut_short_arrow_file_of_a_saved_dataset_is_named(tmp_path):
    folder = tmp_path / "saved"
    Dataset.from_dict({"audio": ["a.wav"] * 50, "text": ["가나다라"] * 50}).save_to_disk(str(folder))
    [arrow] = folder.glob("*.arrow")
    cut_short(arrow)
    with pytest.raises(DataError, match=rf"{arrow} is damaged or incomplete"):
        source_rows(tmp_path / "ws", data_source="hf", data_path=folder)


def cv_release(root: Path, lines: list[str]) -> Path:
    release = root / "ko"
    (release / "clips").mkdir(parents=True)
    (release / "train.tsv").write_text("client_id\tpath\tsentence\tup_votes\n" + "".join(line + "\n" for line in lines), encoding="utf-8")
    return release


def test_a_common_voice_tsv_that_is_not_text_is_named(tmp_path):
    release = cv_release(tmp_path / "cv", [])
    (release / "dev.tsv").write_bytes(b"client_id\tpath\tsentence\n\xff\xfe\x00garbage\n")
    with pytest.raises(DataError, match=rf"{release / 'dev.tsv'} is not UTF-8 text .*download or export it again"):
        source_rows(tmp_path / "ws", data_path=tmp_path / "cv")


def test_a_common_voice_tsv_cut_mid_line_is_named(tmp_path):
    release = cv_release(tmp_path / "cv", ["c1\ta.mp3\t첫 문장입니다.\t2", "c2\tb.mp3\t둘째 문"])
    with pytest.raises(DataError, match=rf"{release / 'train.tsv'} line 3 has fewer columns than its header: the file is cut short"):
        source_rows(tmp_path / "ws", data_path=tmp_path / "cv")


def test_a_common_voice_row_leaving_the_clips_folder_is_refused(tmp_path):
    release = cv_release(tmp_path / "cv", ["c1\t../../secret.mp3\t문장입니다.\t2"])
    with pytest.raises(DataError, match=rf"{release / 'train.tsv'} line 2: the audio path '\.\./\.\./secret\.mp3' leads outside"):
        source_rows(tmp_path / "ws", data_path=tmp_path / "cv")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.csv", f"audio,text\na.wav,가\nb.wav,{'나' * 140_000}\n".encode(),
         r"is not a well-formed CSV manifest at line 3 \(field larger than field limit"),
        ("bad.jsonl", '{"audio": "a.wav", "text": "가"}\n["b.wav", "나"]\n'.encode(), r"line 2 is a JSON list, not an object of columns"),
        ("bad.jsonl", '{"audio": "a.wav", "text": "가"}\n{"audio": "b.wav", "te\n'.encode(), r"line 2 is not JSON \(.*\): fix it"),
        ("bad.tsv", "audio\ttext\na.wav\t가\n".encode("utf-16"), r"is not UTF-8 text"),
        ("outside.csv", "audio,text\nclips/a.wav,가\n../elsewhere/b.wav,나\n".encode(),
         r"line 3: the audio path '\.\./elsewhere/b\.wav' leads outside .*give an absolute path if that file is really meant"),
    ],
    ids=["csv-field-too-large", "jsonl-not-object", "jsonl-not-json", "tsv-not-utf8", "row-outside-folder"],
)
def test_a_malformed_manifest_is_named(tmp_path, name, content, message):
    manifest = tmp_path / "corpus" / name
    manifest.parent.mkdir()
    manifest.write_bytes(content)
    with pytest.raises(DataError, match=rf"{manifest}.*{message}"):
        source_rows(tmp_path / "ws", data_source="manifest", data_path=manifest)


def test_an_absolute_manifest_path_outside_its_folder_is_the_users_choice(tmp_path):
    clip = sorted((SAMPLE_RELEASE / "clips").glob("*.mp3"))[0]
    manifest = tmp_path / "corpus" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"audio,text,split\n{clip},가,train\n{clip},나,dev\n{clip},다,test\n", encoding="utf-8")
    rows = source_rows(tmp_path / "ws", data_source="manifest", data_path=manifest)
    assert [rows.splits[split]["audio"] for split in ("train", "dev", "test")] == [[str(clip)]] * 3
