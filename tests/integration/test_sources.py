"""Several sources in one workspace: each prepared, resumed, reported and manifested on its own, leakage between
them counted; and a tarball cut short, named by download_data.py rather than a traceback. Real espeak-ng speech,
real ffmpeg, the tiny Whisper's processor. Other damaged or misplaced inputs (a bad parquet or Arrow file, malformed
TSV/CSV/JSONL, a path leaving its folder) are read without a model in tests/unit/test_source_inputs.py."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kowhisper.common.workspace import (
    WorkspaceError,
    WorkspaceSource,
    split_dir,
    verify_workspace,
    workspace_sources,
)
from kowhisper.config import PROJECT_ROOT, SAMPLE_DATA, load_config
from kowhisper.online.setup import build_workspace, summary_text
from tests.sample_files import cut_short, sample_tarball

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


# ---- damaged and misplaced inputs ----------------------------------------------------------------------------


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
