"""data_source=segments on long recordings made of real Korean clips (../shared/data/ko-real-speech, CC BY-NC-SA 4.0,
read from there, never copied into the repository) joined with pauses, whose every clip's start and end are known:
the segments cut from them are the original clips, given as a CSV or as one AI Hub-style JSON file per recording;
overlapping and out-of-range segments are dropped by reason; a re-split keeps a recording's segments together.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kowhisper.common.audio import SAMPLING_RATE, load_audio
from kowhisper.common.workspace import source_dir, source_report_path
from kowhisper.config import load_config
from kowhisper.online.prepare import load_sources
from tests.sample_files import REAL_SPEECH_KO, needs_real_speech

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECORDINGS, CLIPS_PER_RECORDING, PAUSE_S = 4, 3, 0.7
# The bar: a cut segment's audio lies within 10 ms of the original clip's boundaries.
BOUNDARY_TOLERANCE = int(0.010 * SAMPLING_RATE)

pytestmark = needs_real_speech


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """(folder, [(recording, [(start, end, text, clip samples)])]): real clips joined with pauses into 16 kHz WAVs."""
    with open(REAL_SPEECH_KO / "train.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    folder = tmp_path_factory.mktemp("segments")
    pause = np.zeros(int(PAUSE_S * SAMPLING_RATE), dtype=np.float32)
    made = []
    for r in range(RECORDINGS):
        parts, segments, at = [pause], [], len(pause)
        for c in range(CLIPS_PER_RECORDING):
            row = rows[r * CLIPS_PER_RECORDING + c]
            clip = load_audio(REAL_SPEECH_KO / "clips" / row["path"])
            segments.append((at / SAMPLING_RATE, (at + len(clip)) / SAMPLING_RATE, row["sentence"], clip))
            parts += [clip, pause]
            at += len(clip) + len(pause)
        recording = folder / "audio" / f"meeting{r}.wav"
        recording.parent.mkdir(exist_ok=True)
        soundfile.write(recording, np.concatenate(parts), SAMPLING_RATE, subtype="FLOAT")
        made.append((recording, segments))
    return folder, made


def write_table(folder: Path, made, extra: list[dict] = ()) -> Path:
    table = folder / "segments.csv"
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "start", "end", "text"])
        writer.writeheader()
        for recording, segments in made:
            for start, end, text, _ in segments:
                writer.writerow({"audio": f"audio/{recording.name}", "start": f"{start:.3f}", "end": f"{end:.3f}", "text": text})
        writer.writerows(extra)
    return table


def write_json_files(folder: Path, made) -> Path:
    """One file per recording, in the nested shape AI Hub's meeting and broadcast sets use (field names differ per set)."""
    out = folder / "labels"
    (out / "json").mkdir(parents=True, exist_ok=True)
    if not (out / "audio").exists():
        (out / "audio").symlink_to(folder / "audio")
    for recording, segments in made:
        record = {"metadata": {"file": f"audio/{recording.name}"},  # relative to data_path
                  "utterance": [{"start": round(start, 3), "end": round(end, 3), "form": text} for start, end, text, _ in segments]}
        (out / "json" / f"{recording.stem}.json").write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    return out


def config_for(data_path: Path, tmp_path: Path, *overrides: str):
    return load_config([f"workspace={tmp_path / 'ws'}", "data_source=segments", f"data_path={data_path}",
                        f"cache_dir={tmp_path / 'cache'}", *overrides])


def assert_segments_are_the_clips(rows, made):
    originals = {(recording.name, round(start, 3)): (text, clip) for recording, segments in made for start, _, text, clip in segments}
    assert len(rows) == len(originals)
    for row in rows:
        text, clip = originals[(Path(row["audio"]).name, round(row["start"], 3))]
        assert row["text"] == text
        cut = load_audio(row["audio"], start=row["start"], end=row["end"])  # as preparation decodes it
        assert abs(len(cut) - len(clip)) <= BOUNDARY_TOLERANCE
        assert aligned_offset(cut, clip) is not None, f"{row['id']}: the cut is not the clip within 10 ms"


def aligned_offset(cut: np.ndarray, clip: np.ndarray) -> int | None:
    """The shift, within the tolerance, at which the cut's samples are the clip's (FFmpeg seeks to a sample boundary
    near the asked time, not always the same one); None when there is none."""
    for offset in sorted(range(-BOUNDARY_TOLERANCE, BOUNDARY_TOLERANCE + 1), key=abs):
        a, b = (cut[offset:], clip) if offset >= 0 else (cut, clip[-offset:])
        shared = min(len(a), len(b)) - BOUNDARY_TOLERANCE
        if np.abs(a[:shared] - b[:shared]).max() < 1e-3:
            return offset
    return None


def all_rows(loaded) -> list[dict]:
    return [row for source in loaded.values() for rows in source.splits.values() for row in rows]


def test_segments_from_a_table_are_the_original_clips(recordings, tmp_path):
    folder, made = recordings
    loaded = load_sources(config_for(write_table(folder, made), tmp_path))
    assert_segments_are_the_clips(all_rows(loaded), made)


def test_segments_from_json_files_with_configured_field_names_are_the_original_clips(recordings, tmp_path):
    folder, made = recordings
    config = config_for(write_json_files(folder, made), tmp_path, "audio_column=metadata.file", "segments_field=utterance",
                        "text_column=form")
    assert_segments_are_the_clips(all_rows(load_sources(config)), made)


def test_a_resplit_keeps_every_recording_in_one_split(recordings, tmp_path):
    folder, made = recordings
    loaded = load_sources(config_for(write_table(folder, made), tmp_path, "split_ratios=[0.5,0.25,0.25]"))["segments"]
    split_of: dict[str, set[str]] = {}
    for split, rows in loaded.splits.items():
        for audio in rows["audio"]:
            split_of.setdefault(audio, set()).add(split)
    assert all(len(splits) == 1 for splits in split_of.values()), split_of
    assert {split for splits in split_of.values() for split in splits} == {"train", "dev", "test"}


def test_overlapping_and_out_of_range_segments_are_dropped_by_reason(recordings, make_workspace, tiny_model_dir):
    folder, made = recordings
    recording, segments = made[0]
    start, end, text, _ = segments[1]
    extra = [{"audio": f"audio/{recording.name}", "start": f"{start + 0.5:.3f}", "end": f"{end + 0.5:.3f}", "text": text},  # overlaps
             {"audio": f"audio/{made[1][0].name}", "start": "60.000", "end": "64.000", "text": "녹음이 끝난 뒤"},  # past the end
             {"audio": f"audio/{made[2][0].name}", "start": "3.000", "end": "2.000", "text": "거꾸로 된 시간"}]
    table = folder / "with-bad-segments" / "segments.csv"
    table.parent.mkdir(exist_ok=True)
    (table.parent / "audio").symlink_to(folder / "audio")
    write_table(table.parent, made, extra)
    workspace = make_workspace(tiny_model_dir, data_source="segments", data_path=str(table), split_ratios="[0.5,0.25,0.25]")
    report = json.loads(source_report_path(workspace, "segments").read_text(encoding="utf-8"))
    dropped = {}
    for split in ("train", "dev", "test"):
        for reason, count in report["splits"][split]["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count
    # The overlapping pair both go (each holds the other's speech); the late one and the reversed one go by their reasons.
    assert {reason: n for reason, n in dropped.items() if n} == {"overlap": 2, "out_of_range": 1, "bad_times": 1}
    assert report["segments"] == {"recordings": RECORDINGS, "segments": RECORDINGS * CLIPS_PER_RECORDING + 3,
                                  "marked_for_dropping": {"bad_times": 1, "overlap": 2}}
    kept = sum(report["splits"][split]["kept"] for split in ("train", "dev", "test"))
    assert kept == RECORDINGS * CLIPS_PER_RECORDING - 1
    lines = [json.loads(line) for split in ("train", "dev", "test")
             for line in (source_dir(workspace, "segments") / split / "dropped.jsonl").read_text().splitlines()]
    assert any(row["reason"] == "out_of_range" and "ends after the recording" in row["detail"] for row in lines)


def test_a_json_file_without_a_field_is_named_not_a_traceback(recordings, tmp_path):
    folder, made = recordings
    broken = tmp_path / "json"
    broken.mkdir()
    (broken / "meeting0.json").write_text(json.dumps({"audio": str(made[0][0]), "segments": [{"start": 0.5, "text": "끝이 없다"}]}),
                                          encoding="utf-8")
    result = subprocess.run([sys.executable, "download_data.py", f"workspace={tmp_path / 'ws'}", "data_source=segments",
                             f"data_path={broken}", f"cache_dir={tmp_path / 'cache'}"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "meeting0.json segment 0 has no field 'end'" in result.stderr, result.stderr
