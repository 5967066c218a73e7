"""inference.py with the real whisper-base: files, long-form chunking with timestamps, SRT/JSON output, bad
input, the merged model and the CTranslate2 export (also run by faster-whisper), all offline.

Zero-shot whisper-base cannot read espeak Korean (CER about 1), so most tests use a LoRA adapter trained here
until the model recites the first test utterances: then a correct transcript is known exactly, and "the
same transcript" comparisons between engines mean something. What needs no model (collecting files, the token
budget, loop detection, inference.py's own error messages) is in tests/unit/test_serve.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from kowhisper.common.audio import SAMPLING_RATE, load_audio
from kowhisper.common.workspace import split_dir
from tests.integration.processes import isolated, network_is_isolatable
from tests.sample_files import clip_path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = PROJECT_ROOT / "sample_data" / "cv-corpus-ko-sample" / "ko"
RECITED_UTTERANCES = 4
HANGUL = re.compile("[\uac00-\ud7a3]")

# ---- shared with test_evaluate.py and test_demo_browser.py ---------------------------------------------------

_trained_adapters: dict[str, Path] = {}


def add_reciting_run(workspace: Path, scratch: Path, run_name: str = "reciting") -> Path:
    """<workspace>/runs/<run_name>/adapter holding an adapter that recites the first test utterances; trained
    once per session and copied (every workspace built from the same model and sample has the same clips)."""
    from datasets import load_from_disk

    from kowhisper.testing import train_reciting_adapter

    key = str((workspace / "model" / "model.safetensors").stat().st_size)
    # Trained again if the scratch folder it was kept in is gone (a test may delete its own scratch).
    if key not in _trained_adapters or not _trained_adapters[key].is_dir():
        test_split = load_from_disk(str(split_dir(workspace, "test"))).with_format("numpy")
        rows = list(test_split.select(range(RECITED_UTTERANCES)))
        _trained_adapters[key] = train_reciting_adapter(workspace / "model", rows, scratch / "reciting-adapter")
    adapter = workspace / "runs" / run_name / "adapter"
    shutil.copytree(_trained_adapters[key], adapter)
    return adapter


def reference_clips(workspace: Path, count: int = RECITED_UTTERANCES) -> list[tuple[Path, str]]:
    """(clip path, sentence) of the first `count` utterances of the workspace's test split."""
    from datasets import load_from_disk

    rows = load_from_disk(str(split_dir(workspace, "test"))).select(range(count))
    clips = [clip_path(SAMPLE_DIR, row_id) for row_id in rows["id"]]
    return list(zip(clips, rows["text"]))


def write_wav(path: Path, waveform: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLING_RATE)
        handle.writeframes((np.clip(waveform, -1, 1) * 32767).astype("<i2").tobytes())
    return path


# ---- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(make_workspace, real_model_dir, tmp_path_factory) -> Path:
    workspace = make_workspace(real_model_dir)
    add_reciting_run(workspace, tmp_path_factory.mktemp("adapters"))
    return workspace


@pytest.fixture(scope="module")
def config(workspace):
    from kowhisper.config import load_config

    return load_config([f"workspace={workspace}"])


@pytest.fixture(scope="module")
def default_recognizer(workspace, config):
    """What `inference.py workspace=WS` runs: the latest run's adapter on backend=auto."""
    from kowhisper.families.base import resolve_model
    from kowhisper.families.registry import load_recognizer

    return load_recognizer(resolve_model(workspace, None), config)


@pytest.fixture(scope="module")
def base_recognizer(workspace, config):
    from kowhisper.families.base import resolve_model
    from kowhisper.families.registry import load_recognizer

    return load_recognizer(resolve_model(workspace, "base"), config)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Path:
    """About 70 s of Korean speech: 20 sample clips joined end to end by ffmpeg."""
    clips = sorted((SAMPLE_DIR / "clips").glob("*.mp3"))[:20]
    out = tmp_path_factory.mktemp("long") / "long.wav"
    inputs = [arg for clip in clips for arg in ("-i", str(clip))]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", f"concat=n={len(clips)}:v=0:a=1",
                    "-ar", str(SAMPLING_RATE), "-ac", "1", str(out)], check=True)
    return out


# ---- real model ---------------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_default_path_transcribes_korean_clips(workspace, default_recognizer):
    from kowhisper.serve.transcribe import transcribe_files

    expected = reference_clips(workspace)
    results = list(transcribe_files(default_recognizer, [clip for clip, _ in expected], batch_size=8, progress=False))
    assert [problem for *_, problem in results] == [None] * len(expected)
    assert [transcript.text for _, transcript, _ in results] == [text for _, text in expected]
    # Decoded with timestamps, as every file is: one segment per clip, ending where the model heard the speech end.
    for (_, transcript, _), (clip, _) in zip(results, expected):
        [segment] = transcript.segments
        assert 0 <= segment.start < segment.end <= len(load_audio(clip)) / SAMPLING_RATE + 0.01


@pytest.mark.real_model
def test_zero_shot_base_writes_hangul(workspace, base_recognizer):
    from kowhisper.serve.transcribe import transcribe_files

    clip = reference_clips(workspace, 1)[0][0]
    [(_, transcript, problem)] = transcribe_files(base_recognizer, [clip], batch_size=1, progress=False)
    assert problem is None and HANGUL.search(transcript.text), transcript


SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)\n(.+)")


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    """Strict SubRip: numbered cues from 1, HH:MM:SS,mmm times, one text line, blank line between cues."""
    cues = []
    for block in text.strip("\n").split("\n\n"):
        match = SRT_CUE.fullmatch(block)
        assert match, f"not an SRT cue: {block!r}"
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, match.groups()[1:9])
        cues.append((int(match[1]), h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, match[10]))
    return cues


@pytest.mark.real_model
def test_long_recording_is_sought_through_with_increasing_timestamps(base_recognizer, long_recording, tmp_path):
    from kowhisper.serve.transcribe import transcribe_to_outputs

    duration = len(load_audio(long_recording)) / SAMPLING_RATE
    assert 65 < duration < 75

    for output_format in ("srt", "json"):
        status = transcribe_to_outputs(base_recognizer, [str(long_recording)], output_format=output_format,
                                       transcripts_dir=str(tmp_path), batch_size=8, progress=False)
        assert status == 0
    cues = parse_srt((tmp_path / "long.srt").read_text(encoding="utf-8"))
    assert [number for number, *_ in cues] == list(range(1, len(cues) + 1))
    starts, ends = [start for _, start, _, _ in cues], [end for _, _, end, _ in cues]
    assert all(start <= end for start, end in zip(starts, ends))
    assert all(a <= b for a, b in zip(ends, starts[1:])), "cues overlap or go back in time"
    # Zero-shot whisper-base cannot read espeak Korean: it may take a whole window of it for no speech (P(no speech)
    # 0.85 and mean log-probability -1.29 on the first 30 s here, openai/whisper's rule) and skip it. What follows
    # must still be sought through to the end.
    assert duration - 10 < ends[-1] <= duration + 0.01
    assert any(30 <= start < 60 for start in starts) and any(start >= 60 for start in starts), "some window was dropped"
    assert sum(bool(HANGUL.search(text)) for *_, text in cues) >= len(cues) / 2

    document = json.loads((tmp_path / "long.json").read_text(encoding="utf-8"))
    assert document["duration"] == pytest.approx(duration, abs=0.01)
    assert [s["start"] for s in document["segments"]] == pytest.approx(starts, abs=0.001)
    assert [s["end"] for s in document["segments"]] == pytest.approx(ends, abs=0.001)
    assert document["text"] == " ".join(s["text"] for s in document["segments"])


@pytest.mark.real_model
def test_bad_files_are_reported_and_the_rest_transcribed(workspace, default_recognizer, tmp_path, capsys):
    from kowhisper.serve.transcribe import transcribe_to_outputs

    clip, sentence = reference_clips(workspace, 1)[0]
    not_audio = tmp_path / "minutes.wav"
    not_audio.write_text("meeting minutes, not a recording", encoding="utf-8")
    silent = write_wav(tmp_path / "silence.wav", np.zeros(SAMPLING_RATE * 2, dtype=np.float32))
    empty = tmp_path / "empty.mp3"
    empty.touch()
    items = [str(not_audio), str(clip), str(silent), str(tmp_path / "missing.flac"), str(empty)]
    status = transcribe_to_outputs(default_recognizer, items, output_format="txt", transcripts_dir=None, batch_size=8, progress=False)
    out, err = capsys.readouterr()
    assert status == 1
    assert f"==> {clip} <==\n{sentence}\n==> {silent} <==\n\n" == out, "silence is a valid recording with an empty transcript"
    assert f"skipped {not_audio}: undecodable audio" in err
    assert f"{silent}: silent" in err and f"skipped {silent}" not in err
    assert "missing.flac: no such file" in err
    assert f"skipped {empty}: empty audio file" in err
    assert "2 transcribed (1 silent), 3 skipped" in err


@pytest.mark.real_model
def test_same_stem_twice_gets_two_files(workspace, default_recognizer, tmp_path):
    from kowhisper.serve.transcribe import transcribe_to_outputs

    (clip, sentence), (second, _) = reference_clips(workspace, 2)
    (tmp_path / "a").mkdir()
    copy = shutil.copy(second, tmp_path / "a" / clip.name)
    out = tmp_path / "out"
    status = transcribe_to_outputs(default_recognizer, [str(clip), str(copy)], output_format="txt", transcripts_dir=str(out),
                                   batch_size=8, progress=False)
    assert status == 0
    assert (out / f"{clip.stem}.txt").read_text(encoding="utf-8") == sentence + "\n"
    assert (out / f"{clip.stem}-2.txt").is_file()


@pytest.mark.real_model
def test_merged_model_logits_match_base_plus_adapter(workspace, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    from kowhisper.families.base import resolve_model
    from kowhisper.families.whisper.features import SpeechBatchCollator
    from kowhisper.serve.export import merge_adapter

    merged_dir = merge_adapter(resolve_model(workspace, None), tmp_path / "merged")
    assert sorted(p.name for p in merged_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".safetensors")) == ["model.safetensors"]
    assert (merged_dir / "tokenizer.json").is_file() and (merged_dir / "preprocessor_config.json").is_file()

    from datasets import load_from_disk

    batch = SpeechBatchCollator()(list(load_from_disk(str(split_dir(workspace, "test"))).with_format("numpy").select(range(2))))
    decoder_input_ids = torch.cat([torch.full((2, 1), 50258), batch["labels"].clamp(min=0)], dim=1)

    def logits(model):
        with torch.no_grad():
            return model.eval()(input_features=batch["input_features"], decoder_input_ids=decoder_input_ids).logits

    base = WhisperForConditionalGeneration.from_pretrained(workspace / "model", dtype=torch.float32)
    base_logits = logits(base)
    adapted = logits(PeftModel.from_pretrained(base, workspace / "runs" / "reciting" / "adapter"))
    merged = logits(WhisperForConditionalGeneration.from_pretrained(merged_dir, dtype=torch.float32))
    assert (adapted - base_logits).abs().max() > 1.0, "the adapter should change the model"
    assert (merged - adapted).abs().max() < 2e-3


@pytest.mark.real_model
def test_ct2_export_transcribes_like_transformers_and_faster_whisper(workspace, config, tmp_path):
    import dataclasses

    from faster_whisper import WhisperModel

    from kowhisper.families.base import resolve_model
    from kowhisper.families.registry import load_recognizer
    from kowhisper.families.whisper.ct2_export import export_ct2
    from kowhisper.families.whisper.engines import CT2Whisper, HFWhisper
    from kowhisper.serve.transcribe import transcribe_files

    source = resolve_model(workspace, None)
    ct2_dir = export_ct2(source, "int8", tmp_path / "ct2-int8")
    hf = load_recognizer(source, dataclasses.replace(config, backend="hf"))
    ct2 = load_recognizer(resolve_model(workspace, str(ct2_dir)), config)
    assert isinstance(hf.engine, HFWhisper) and isinstance(ct2.engine, CT2Whisper)
    expected = reference_clips(workspace)
    clips = [clip for clip, _ in expected]

    def texts(recognizer):
        return [t.text for _, t, _ in transcribe_files(recognizer, clips, batch_size=8, progress=False)]

    # The demo's setting (one clip at a time, every core on it) decodes the same as the batch setting.
    ct2_one_at_a_time = load_recognizer(resolve_model(workspace, str(ct2_dir)), config, one_clip_at_a_time=True)
    assert texts(hf) == texts(ct2) == texts(ct2_one_at_a_time) == [text for _, text in expected]

    # The export is a faster-whisper model as it stands: its own loader, tokenizer and mel settings.
    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = model.transcribe(str(clips[0]), language="ko", beam_size=1, without_timestamps=True, vad_filter=False)
    assert "".join(s.text for s in segments).strip() == expected[0][1]


@pytest.mark.real_model
def test_fit_window_adapter_transcribes_alike_in_transformers_merged_and_ctranslate2(make_workspace, real_model_dir, config, tmp_path,
                                                                                    long_recording):
    """An adapter trained on fitted windows keeps its window through the merge and the CTranslate2 export, and
    every engine runs it at that window: short clips get short windows, a long file full 30 s windows and one
    fitted last window."""
    import dataclasses

    from datasets import load_from_disk

    from kowhisper.families.base import resolve_model
    from kowhisper.families.registry import load_recognizer
    from kowhisper.families.whisper.ct2_export import export_ct2
    from kowhisper.families.whisper.encoder_window import WINDOW_FILE, EncoderWindow
    from kowhisper.families.whisper.features import N_FRAMES
    from kowhisper.families.whisper.loading import trained_window
    from kowhisper.serve.export import merge_adapter
    from kowhisper.serve.transcribe import transcribe_files
    from kowhisper.testing import train_reciting_adapter

    workspace = make_workspace(real_model_dir)
    window = EncoderWindow("fit", tail_frames=50, round_frames=100)
    rows = list(load_from_disk(str(split_dir(workspace, "test"))).with_format("numpy").select(range(RECITED_UTTERANCES)))
    train_reciting_adapter(workspace / "model", rows, workspace / "runs" / "fitted" / "adapter", steps=15, window=window)
    adapter = resolve_model(workspace, "fitted")
    merged = resolve_model(workspace, str(merge_adapter(adapter, tmp_path / "merged")))
    exported = resolve_model(workspace, str(export_ct2(adapter, "int8", tmp_path / "ct2-int8")))
    assert trained_window(adapter) == trained_window(merged) == trained_window(exported) == window
    assert (tmp_path / "merged" / WINDOW_FILE).is_file() and (tmp_path / "ct2-int8" / WINDOW_FILE).is_file()

    hf = dataclasses.replace(config, backend="hf")
    recognizers = {"transformers": load_recognizer(adapter, hf), "merged": load_recognizer(merged, hf),
                   "ctranslate2": load_recognizer(exported, config)}
    frames_seen = {name: [] for name in recognizers}
    for name, recognizer in recognizers.items():
        engine = recognizer.engine
        generate = engine.generate
        engine.generate = lambda features, _generate=generate, _seen=frames_seen[name], **options: (
            _seen.append(features.shape[-1]), _generate(features, **options))[1]

    expected = reference_clips(workspace)
    clips = [clip for clip, _ in expected]
    for name, recognizer in recognizers.items():
        texts = [t.text for _, t, _ in transcribe_files(recognizer, clips, batch_size=8, progress=False)]
        assert texts == [text for _, text in expected], name
        assert frames_seen[name] and max(frames_seen[name]) < 1000, f"{name} padded short clips to {frames_seen[name]} frames"

    frames_seen["ctranslate2"].clear()
    list(transcribe_files(recognizers["ctranslate2"], [long_recording], batch_size=1, progress=False))
    # Seeking: full 30 s windows inside the recording (at least two for 70 s), a fitted one at its end.
    assert frames_seen["ctranslate2"].count(N_FRAMES) >= 2 and min(frames_seen["ctranslate2"]) < N_FRAMES


@pytest.mark.real_model
def test_merge_and_export_are_scored_on_dev_beside_the_adapter(workspace, python_executable, tmp_path):
    """--merge and --export-ct2 decode dev with the adapter and with each export, print both CERs and the paired
    interval of their difference, and keep it beside the export; with no network."""
    command = isolated([python_executable, "inference.py", f"workspace={workspace}", "adapter=reciting", "--merge", "--export-ct2",
                        f"merged_dir={tmp_path / 'merged'}", f"ct2_dir={tmp_path / 'ct2-int8'}", "export_check_samples=4"])
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("Export check: reciting and merged, ct2-int8, each on 4 clips of dev of ") for line in lines) == 1
    for export in ("merged", "ct2-int8"):
        check = json.loads((tmp_path / export / "export_check.json").read_text())
        assert check["clips"] == 4 and check["source"]["label"] == "reciting" and check["export"]["path"] == str(tmp_path / export)
        for rate in ("cer", "kocer_cer"):
            difference = check["difference"][rate]
            assert difference["difference"] == pytest.approx(check["export"][rate] - check["source"][rate])
            assert difference["low"] <= difference["difference"] <= difference["high"]
            # Both rates are printed, the source's and the export's, as percentages.
            shown = f"{100 * check['export'][rate]:.2f}%"
            assert any(line.strip().startswith(f"{check['export']['label']} (") and shown in line for line in lines), (export, rate)
        assert "CTranslate2" in check["export"]["backend"] if export == "ct2-int8" else "transformers" in check["export"]["backend"]
        assert any(line.strip().startswith("reciting (") and f"{100 * check['source']['cer']:.2f}%" in line for line in lines)
    assert sum("; minus the source: CER " in line and ", kocer CER " in line for line in lines) == 2


@pytest.mark.real_model
def test_export_never_overwrites_a_folder_it_did_not_write(workspace, tmp_path):
    from kowhisper.families.base import ModelError, resolve_model
    from kowhisper.families.whisper.ct2_export import export_ct2

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ModelError, match="was not written by this toolkit"):
        export_ct2(resolve_model(workspace, "base"), "int8", precious)
    assert (precious / "thesis.txt").read_text(encoding="utf-8") == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["precious"], "the scratch folder was left behind"


@pytest.mark.real_model
def test_inference_cli_works_without_network(workspace, python_executable, tmp_path):
    if not network_is_isolatable():
        pytest.skip("unshare -n is not permitted here")
    (clip, sentence), (second, second_sentence) = reference_clips(workspace, 2)
    listing = tmp_path / "todo.txt"
    listing.write_text(f"{second}\n", encoding="utf-8")
    # The engine is pinned: this test is about the network, and backend=auto's choice is tested on its own.
    result = subprocess.run(["unshare", "-n", python_executable, "inference.py", f"workspace={workspace}", str(clip), str(listing),
                             "output_format=json", "backend=ct2"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["source"], d["text"]) for d in documents] == [(str(clip), sentence), (str(second), second_sentence)]
    assert "CTranslate2" in result.stderr


# ---- faults and bad input (issue 17): the file is refused before any model runs, so the tiny model serves -----------


@pytest.fixture(scope="module")
def tiny_workspace(make_workspace, tiny_model_dir) -> Path:
    return make_workspace(tiny_model_dir, copy=False)


def run_inference(python: str, workspace: Path, *items: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "inference.py", f"workspace={workspace}", "backend=hf", *items], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600)


def test_a_silent_recording_gives_an_empty_transcript_and_exit_0(tiny_workspace, python_executable, tmp_path):
    silent = write_wav(tmp_path / "silence.wav", np.zeros(SAMPLING_RATE * 3, dtype=np.float32))
    result = run_inference(python_executable, tiny_workspace, str(silent), "output_format=json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {"source": str(silent), "duration": 3.0, "text": "", "segments": []}
    assert f"{silent}: silent" in result.stderr and "empty transcript" in result.stderr

    # A file that could not be read still makes the exit status 1; the silent one still gets its (empty) transcript.
    not_audio = tmp_path / "minutes.wav"
    not_audio.write_text("meeting minutes, not a recording", encoding="utf-8")
    out = tmp_path / "out"
    result = run_inference(python_executable, tiny_workspace, str(silent), str(not_audio), f"transcripts_dir={out}")
    assert result.returncode == 1
    assert (out / "silence.txt").read_text(encoding="utf-8") == "\n"
    assert "1 transcribed (1 silent), 1 skipped" in result.stderr


def test_undecodable_audio_is_reported_in_the_users_terms(tiny_workspace, python_executable, tmp_path):
    not_audio = tmp_path / "minutes.wav"
    not_audio.write_text("meeting minutes, not a recording", encoding="utf-8")
    video = tmp_path / "screen.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=1", str(video)], check=True)
    result = run_inference(python_executable, tiny_workspace, str(not_audio), str(video))
    assert result.returncode == 1
    assert re.search(rf"skipped {re.escape(str(not_audio))}: undecodable audio: FFmpeg cannot read it \(Invalid data found when "
                     r"processing input\)", result.stderr), result.stderr
    assert re.search(rf"skipped {re.escape(str(video))}: undecodable audio: it holds no audio stream", result.stderr), result.stderr
    for internal in ("SingleStreamDecoder", ".cpp", "/__w/", "RuntimeError", "ValueError", "github.com"):
        assert internal not in result.stderr, internal


def test_a_files_own_prompt_reaches_the_model_and_the_others_keep_the_shared_one(tiny_workspace, python_executable, tmp_path):
    """A sidecar prompt over Whisper's 223-token limit shows it was read: the message that it was trimmed, once, for
    the one file that has it; both files are transcribed."""
    (first, _), (second, _) = reference_clips(tiny_workspace, 2)
    for clip in (first, second):
        shutil.copy(clip, tmp_path / clip.name)
    long_prompt = "고객님 요금제 변경 문의 감사합니다. " * 60
    (tmp_path / first.name).with_suffix(".prompt.txt").write_text(long_prompt, encoding="utf-8")
    result = run_inference(python_executable, tiny_workspace, str(tmp_path / first.name), str(tmp_path / second.name),
                           "generation_max_length=8", "hotwords=[카카오뱅크]", "output_format=json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("Whisper reads at most 223 before a window") == 1
    assert [json.loads(line)["source"] for line in result.stdout.splitlines()] == [str(tmp_path / first.name), str(tmp_path / second.name)]


def test_an_adapter_loads_for_evaluation_without_a_future_warning(tiny_model_dir, tmp_path):
    """Evaluation and serving merge an adapter through peft, which reads transformers' deprecated
    `is_gradient_checkpointing` alias when it wraps the model; that FutureWarning is about peft's code and must not
    reach the user at every model evaluated."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    from kowhisper.families.base import ModelSource
    from kowhisper.families.whisper.loading import load_hf_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # making the adapter is not what is tested
        adapter = get_peft_model(WhisperForConditionalGeneration.from_pretrained(tiny_model_dir),
                                 LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(tmp_path / "adapter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_hf_model(ModelSource("adapter", tmp_path / "adapter", "adapter", tiny_model_dir), torch.device("cpu"))
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
