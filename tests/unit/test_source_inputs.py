"""Sources read from small synthetic files, before any audio is decoded: damaged or misplaced inputs (a tar cut short, a
bad parquet or Arrow file, malformed TSV/CSV/JSONL, a path leaving its folder) each named in a DataError rather than a
traceback; a manifest without a split column re-split reproducibly by its seed; split values and API keys checked.
Preparing the audio of these sources is tested in tests/integration/test_data.py and tests/integration/test_sources.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from datasets import Dataset

from kowhisper.common.workspace import SPLITS
from kowhisper.config import SAMPLE_DATA, dataset_sources, load_config
from kowhisper.online.prepare import DataError
from kowhisper.online.sources import load_source
from tests.sample_files import cut_short, sample_tarball

SAMPLE_RELEASE = SAMPLE_DATA / "ko"


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


SAMPLE_ROWS = {split: read_tsv(SAMPLE_RELEASE / f"{split}.tsv") for split in SPLITS}


def sample_clip(split: str, index: int) -> Path:
    return SAMPLE_RELEASE / "clips" / SAMPLE_ROWS[split][index]["path"]


def cache_beside(workspace) -> Path:
    """The test's own cache folder (cache_dir), next to its workspace, instead of the user's."""
    return Path(workspace).parent / f"{Path(workspace).name}-cache"


# ---- damaged and misplaced inputs ----------------------------------------------------------------------------


def source_rows(workspace: Path, **keys):
    """load_source for one source given by flat keys, as prepare_data calls it."""
    config = load_config([f"workspace={workspace}", f"cache_dir={workspace}-cache", *(f"{key}={value}" for key, value in keys.items())])
    return load_source(dataset_sources(config)[0], config)


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


# ---- manifests: splits and seeds -------------------------------------------------------------------------------


def load_one_source(*overrides: str):
    """load_source for the flat keys' one source, the way prepare_data calls it."""
    config = load_config(list(overrides))
    config.cache_dir = str(cache_beside(config.workspace_dir))
    return load_source(dataset_sources(config)[0], config)


def test_resplit_is_reproducible_and_follows_the_seed(tmp_path):
    clips = [sample_clip("train", index) for index in range(20)]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"audio": str(clip), "text": "문장"}) + "\n" for clip in clips), encoding="utf-8")

    def assignment(seed: int) -> list[list[str]]:
        source = load_one_source(f"workspace={tmp_path}", "data_source=manifest", f"data_path={manifest}", f"split_seed={seed}")
        return [list(source.splits[split]["id"]) for split in SPLITS]

    first = assignment(7)
    assert [len(ids) for ids in first] == [16, 2, 2]
    assert sorted(sum(first, [])) == sorted(str(clip.with_suffix("")) for clip in clips)
    assert assignment(7) == first
    assert assignment(8) != first


def test_manifest_split_values_must_name_the_configured_splits(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"audio": "a.mp3", "text": "가", "split": "train"}, {"audio": "b.mp3", "text": "나", "split": "validation"}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"'split' has split values .*validation: 1 rows"):
        load_one_source(f"workspace={tmp_path}", "data_source=manifest", f"data_path={manifest}")


def test_mdc_without_api_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("MDC_API_KEY", raising=False)
    with pytest.raises(DataError, match="MDC_API_KEY"):
        load_one_source(f"workspace={tmp_path}", "data_source=mdc", "data_path=common-voice-ko")


def test_a_grouped_split_by_ratio_never_cuts_a_recording():
    from kowhisper.online.sources import split_by_ratio

    groups = [f"rec{n // 5}" for n in range(40)]  # 8 recordings of 5 segments
    rows = Dataset.from_dict({"id": [str(n) for n in range(40)], "audio": groups})
    parts = split_by_ratio(rows, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=3, groups=groups)
    placed = {split: set(part["audio"]) for split, part in parts.items()}
    assert sum(len(part) for part in parts.values()) == 40
    assert not (placed["train"] & placed["dev"] or placed["train"] & placed["test"] or placed["dev"] & placed["test"])
    assert [len(part) for part in parts.values()] == [30, 5, 5]  # the boundaries nearest 32, 36 and 40 rows
