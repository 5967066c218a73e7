"""Long-form transcription: does a long recording come back complete, beside faster-whisper on the same model?

Recordings are real Korean read speech: test clips of `../shared/data/ko-real-speech` (read from there, never
copied into the repository) decoded to 16 kHz and joined end to end in the test list's order (speaker, then
sentence), written to bench/out/longform/:

- `joined-11`: the first 11 test clips, the recording tests/integration/test_real_speech.py uses (about 58 s);
- `1min`, `5min`, `10min`: the clips that follow, until the recording reaches that length;
- `gaps`: about 2 minutes of the next clips, with 2-4 s of digital silence or of room noise (pink noise at about
  -50 dBFS) between some of them.

Each transcriber gets every recording as a whole file. Scored per recording against its joined reference
sentences, on the metric form (kowhisper.common.text) with all spaces removed: no-space CER of the whole transcript and
the characters deleted (from the same alignment), and the reference sentences more than half deleted (a sentence that
went missing, not one misspelt). Beside it, the short-form no-space CER of the same clips
transcribed one by one (each clip is one window) by the same model: long-form should cost little over it.

Transcribers, in the same run, on the same whisper-base weights:
- `inference.py`: this project's long-form decoder (kowhisper.families.whisper.longform) as the CLI runs it: backend=auto
  (CTranslate2 int8 on CPU), batch size per_device_eval_batch_size, one recording at a time;
- `faster-whisper`: faster-whisper 1.2.1 on the same CTranslate2 int8 export, greedy (beam_size=1), its other
  defaults (temperature fallback, condition_on_previous_text), language ko; with and without vad_filter, and
  without conditioning on the previous window's text (`no-prev`), which avoids its loops on some recordings;
- `faster-whisper batched`: faster-whisper's BatchedInferencePipeline on the same export, batch 8, greedy, language
  ko, its defaults otherwise. It does not seek: its bundled Silero VAD (on by default there, speech chunks of at most
  30 s, 160 ms of silence ends one, 400 ms padding) cuts the recording into speech, the pieces are packed into
  windows of up to 30 s, and each window is decoded on its own (no previous text, no timestamps, temperature 0
  only, no fallback), eight windows per encoder and decoder call. Whatever the VAD calls silence is never decoded,
  and what a window's one decode skips or stops short of is not read again; what it buys is batched matrix
  multiplies instead of one window at a time.
Each for the zero-shot base and, with --adapter, for a fine-tuned adapter (faster-whisper gets the adapter's own
CTranslate2 export, which is what `inference.py --export-ct2` writes for it).

Speed: real-time factor (wall seconds of transcription / seconds of audio), model loading excluded, and CPU
seconds per second of audio (this process's CPU time: on a machine shared with other jobs it does not count their
turns). The CPU and the load average are printed with the results. The last rows pool every recording: errors
and deletions summed over all reference characters, audio and time summed.

    python -m bench.longform                                           # zero-shot base only
    python -m bench.longform --workspace WS --adapter WS/runs/default  # and a fine-tuned run
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from kowhisper.common.runtime import force_offline

force_offline()

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_SPEECH = PROJECT_ROOT.parent / "shared" / "data" / "ko-real-speech" / "cv-corpus-emotiontts-ko" / "ko"
OUT_DIR = PROJECT_ROOT / "bench" / "out" / "longform"
RESULTS = OUT_DIR / "results.json"
GAP_NOISE_DBFS = -50.0


@dataclasses.dataclass
class Recording:
    name: str
    path: Path
    seconds: float
    clips: list[np.ndarray]
    sentences: list[str]


def test_clips() -> list[tuple[Path, str]]:
    with open(REAL_SPEECH / "test.tsv", encoding="utf-8", newline="") as handle:
        return [(REAL_SPEECH / "clips" / row["path"], row["sentence"]) for row in csv.DictReader(handle, delimiter="\t")]


def pink_noise(samples: int, rng: np.random.Generator, dbfs: float) -> np.ndarray:
    """Pink (1/f) noise at `dbfs` RMS: a stand-in for a room's hum and hiss."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum, samples)
    return (noise / np.sqrt(np.mean(noise**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def build_recordings() -> list[Recording]:
    from kowhisper.common.audio import SAMPLING_RATE, load_audio
    from tests.integration.test_inference import write_wav

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    clips = [(load_audio(path), sentence) for path, sentence in test_clips()]
    plan = [("joined-11", 11, None), ("1min", None, 60), ("5min", None, 300), ("10min", None, 600), ("gaps", None, 120)]
    rng = np.random.default_rng(0)
    recordings, next_clip = [], 0
    for name, count, seconds in plan:
        chosen = []
        while next_clip < len(clips) and (len(chosen) < count if count else sum(len(a) for a, _ in chosen) < seconds * SAMPLING_RATE):
            chosen.append(clips[next_clip])
            next_clip += 1
        pieces = []
        for number, (audio, _) in enumerate(chosen):
            pieces.append(audio)
            if name == "gaps" and number % 2 == 0 and number < len(chosen) - 1:
                gap = int(rng.uniform(2.0, 4.0) * SAMPLING_RATE)
                quiet = number % 4 == 0
                pieces.append(np.zeros(gap, np.float32) if quiet else pink_noise(gap, rng, GAP_NOISE_DBFS))
        waveform = np.concatenate(pieces)
        path = write_wav(OUT_DIR / f"{name}.wav", waveform)
        recordings.append(Recording(name, path, len(waveform) / SAMPLING_RATE, [a for a, _ in chosen], [s for _, s in chosen]))
    return recordings


def metric_chars(text: str) -> str:
    """The form transcripts are scored in: kowhisper.common.text's metric form with every space removed."""
    from kowhisper.common.text import normalize_for_metric

    return normalize_for_metric(text).replace(" ", "")


def sentence_coverage(sentences: list[str], hypothesis: str) -> list[float]:
    """Per reference sentence, the share of its characters that the whole-transcript alignment does not delete:
    near 1 for a sentence that came back (even misspelt), near 0 for one that went missing."""
    import jiwer

    refs = [metric_chars(sentence) for sentence in sentences]
    joined = "".join(refs)
    deleted = np.zeros(len(joined), bool)
    for chunk in jiwer.process_characters(joined, metric_chars(hypothesis)).alignments[0]:
        if chunk.type == "delete":
            deleted[chunk.ref_start_idx : chunk.ref_end_idx] = True
    bounds = np.cumsum([0] + [len(ref) for ref in refs])
    return [1.0 - float(deleted[a:b].mean()) if b > a else 1.0 for a, b in zip(bounds, bounds[1:])]


def score(reference: str, hypothesis: str) -> dict:
    """No-space CER of a whole transcript and its deleted, substituted and inserted characters."""
    import jiwer

    ref, hyp = metric_chars(reference), metric_chars(hypothesis)
    out = jiwer.process_characters(ref, hyp)
    return {"cer_nospace": (out.substitutions + out.deletions + out.insertions) / len(ref), "deleted": out.deletions,
            "inserted": out.insertions, "substituted": out.substitutions, "ref_chars": len(ref)}


def ours(source, config):
    from kowhisper.families.registry import load_recognizer
    from kowhisper.serve.transcribe import transcribe_files

    recognizer = load_recognizer(source, config)

    def run(path: Path) -> str:
        [(_, transcript, problem)] = transcribe_files(recognizer, [path], batch_size=config.per_device_eval_batch_size, progress=False)
        return transcript.text if transcript else ""

    def short_form(clips: list[np.ndarray]) -> list[str]:
        return [transcript.text for transcript in
                recognizer.transcribe_waveforms(clips, batch_size=config.per_device_eval_batch_size)]

    return recognizer.description, run, short_form


def faster_whisper(ct2_dir: Path, vad: bool, previous_text: bool = True):
    from faster_whisper import WhisperModel

    from kowhisper.families.base import cpu_threads

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=cpu_threads())

    def run(path: Path) -> str:
        segments, _ = model.transcribe(str(path), language="ko", task="transcribe", beam_size=1, vad_filter=vad,
                                       condition_on_previous_text=previous_text)
        return " ".join(segment.text.strip() for segment in segments)

    options = ["vad_filter"] * vad + ["condition_on_previous_text=False"] * (not previous_text)
    return f"faster-whisper int8, greedy{''.join(', ' + option for option in options)}", run, None


def faster_whisper_batched(ct2_dir: Path, batch_size: int = 8):
    """faster-whisper's BatchedInferencePipeline: VAD-chunked windows decoded `batch_size` at a time.

    Its own defaults otherwise (vad_filter=True and its VAD options, which the pipeline sets itself; no
    conditioning on previous text, which it forces), so the arm is the pipeline as it comes, only greedy like the
    other arms. Same thread count as they get: cpu_threads(), the cores this process may run on."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from kowhisper.families.base import cpu_threads

    pipeline = BatchedInferencePipeline(WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=cpu_threads()))

    def run(path: Path) -> str:
        # The segments are a generator: joining them is what runs the decode, inside the timed call.
        segments, _ = pipeline.transcribe(str(path), language="ko", task="transcribe", beam_size=1, batch_size=batch_size)
        return " ".join(segment.text.strip() for segment in segments)

    return f"faster-whisper int8 BatchedInferencePipeline, batch {batch_size}, greedy, its Silero VAD", run, None


def compared_models(workspace: Path | None, adapter: str | None) -> dict:
    """{"base": ..., "tuned": ...}: the workspace's base (or the PyPI whisper-base without one) and, with `adapter`, that
    fine-tuned model of the workspace, as ModelSources."""
    from bench.inference_speed import pypi_whisper_base
    from kowhisper.families.base import ModelSource, resolve_model

    models = {"base": resolve_model(workspace, "base") if workspace else ModelSource("merged", pypi_whisper_base(), "whisper-base (PyPI)")}
    if adapter:
        models["tuned"] = resolve_model(workspace, adapter)
    return models


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, help="a workspace whose base model and runs to use")
    parser.add_argument("--adapter", help="a fine-tuned run or adapter (as adapter= takes it) to compare beside the base")
    parser.add_argument("--only", nargs="*", help="recording names to run (default: all)")
    parser.add_argument("--skip-faster-whisper", action="store_true")
    parser.add_argument("--arms", nargs="*", help="run only the transcribers named exactly so (e.g. 'inference.py tuned'); "
                        "the results of the others are kept from the last run when its recordings were the same")
    args = parser.parse_args(argv)
    if not (REAL_SPEECH / "test.tsv").is_file():
        raise SystemExit(f"the real-speech set is not at {REAL_SPEECH}; this benchmark needs ../shared beside the project")

    from kowhisper.common.cpu import cpu_has_native_bf16, cpu_model_name
    from kowhisper.config import load_config
    from kowhisper.families.whisper.ct2_export import export_ct2

    recordings = [r for r in build_recordings() if not args.only or r.name in args.only]
    config = load_config([f"workspace={args.workspace}"] if args.workspace else [])
    models = compared_models(args.workspace, args.adapter)
    arms = {}
    for label, source in models.items():
        arms[f"inference.py {label}"] = lambda source=source: ours(source, config)
        if not args.skip_faster_whisper:
            ct2_dir = export_ct2(source, "int8", OUT_DIR / f"ct2-{label}")
            arms[f"faster-whisper {label}"] = lambda ct2_dir=ct2_dir: faster_whisper(ct2_dir, vad=False)
            arms[f"faster-whisper {label} vad"] = lambda ct2_dir=ct2_dir: faster_whisper(ct2_dir, vad=True)
            arms[f"faster-whisper {label} no-prev"] = lambda ct2_dir=ct2_dir: faster_whisper(ct2_dir, vad=False, previous_text=False)
            arms[f"faster-whisper {label} batched"] = lambda ct2_dir=ct2_dir: faster_whisper_batched(ct2_dir, batch_size=8)

    results = {"cpu": cpu_model_name(), "native_bf16": cpu_has_native_bf16(), "cores": len(os.sched_getaffinity(0)),
               "recordings": {r.name: round(r.seconds, 1) for r in recordings}, "arms": {}}
    if args.arms:
        unknown = set(args.arms) - set(arms)
        if unknown:
            raise SystemExit(f"no transcriber named {sorted(unknown)}; there are {sorted(arms)}")
        earlier = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
        if earlier.get("recordings") == results["recordings"]:
            results["arms"] = {arm: data for arm, data in earlier["arms"].items() if arm not in args.arms}
        arms = {arm: make for arm, make in arms.items() if arm in args.arms}
    for arm, make in arms.items():
        description, run, short_form = make()
        rows = {}
        for recording in recordings:
            load_before = os.getloadavg()[0]
            started, cpu_started = time.perf_counter(), time.process_time()
            text = run(recording.path)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            row = score(" ".join(recording.sentences), text)
            coverage = sentence_coverage(recording.sentences, text)
            load = round((load_before + os.getloadavg()[0]) / 2, 1)
            row.update(rtf=seconds / recording.seconds, cpu_per_audio_s=cpu_seconds / recording.seconds, load=load, text=text,
                       sentences_half_missing=sum(share < 0.5 for share in coverage))
            if short_form:
                clip_texts = short_form(recording.clips)
                row["short_form_cer_nospace"] = score(" ".join(recording.sentences), " ".join(clip_texts))["cer_nospace"]
            rows[recording.name] = row
            print(f"{arm:32s} {recording.name:10s} CER {100 * row['cer_nospace']:5.2f}%  deleted {row['deleted']:4d}/"
                  f"{row['ref_chars']:5d}  missing {row['sentences_half_missing']:2d}  RTF {row['rtf']:.3f}  "
                  f"CPU/s {row['cpu_per_audio_s']:.3f}  load {row['load']}"
                  + (f"  short-form {100 * row['short_form_cer_nospace']:.2f}%" if short_form else ""), flush=True)
        results["arms"][arm] = {"description": description, "recordings": rows}
        # Saved after every transcriber: a long run that is stopped keeps what it measured.
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(report(results))


def report(results: dict) -> str:
    """A Markdown table: per recording and arm, no-space CER, deletions (share of reference characters), sentences
    more than half missing, RTF and CPU seconds per audio second."""
    lines = [f"CPU: {results['cpu']} ({results['cores']} cores, native bf16: {results['native_bf16']})", "",
             "| recording | length | transcriber | long-form CER (no space) | deleted | sentences > half missing | short-form CER "
             "| RTF | CPU s / audio s | load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, seconds in [*results["recordings"].items(), ("all", sum(results["recordings"].values()))]:
        for arm, data in results["arms"].items():
            row = data["recordings"].get(name) if name != "all" else pooled(data["recordings"], results["recordings"])
            if row is None:
                continue
            short = f"{100 * row['short_form_cer_nospace']:.2f}%" if "short_form_cer_nospace" in row else ""
            # Results kept from a run before the count was printed have none: an empty cell, not a zero.
            missing = row.get("sentences_half_missing", "")
            lines.append(f"| {name} | {seconds:.0f} s | {arm} | {100 * row['cer_nospace']:.2f}% | {row['deleted']} "
                         f"({100 * row['deleted'] / row['ref_chars']:.1f}%) | {missing} | {short} | {row['rtf']:.3f} | "
                         f"{row['cpu_per_audio_s']:.3f} | {row['load']} |")
    return "\n".join(lines)


def pooled(rows: dict, seconds: dict) -> dict | None:
    """Every recording of one arm as one: character counts and times summed (short-form CER weighted by length)."""
    if set(rows) != set(seconds):
        return None
    chars = sum(row["ref_chars"] for row in rows.values())
    audio = sum(seconds.values())
    out = {"cer_nospace": sum(row["cer_nospace"] * row["ref_chars"] for row in rows.values()) / chars, "ref_chars": chars,
           "deleted": sum(row["deleted"] for row in rows.values()),
           "rtf": sum(row["rtf"] * seconds[name] for name, row in rows.items()) / audio,
           "cpu_per_audio_s": sum(row.get("cpu_per_audio_s", float("nan")) * seconds[name] for name, row in rows.items()) / audio,
           "load": round(sum(row["load"] for row in rows.values()) / len(rows), 1)}
    if all("sentences_half_missing" in row for row in rows.values()):
        out["sentences_half_missing"] = sum(row["sentences_half_missing"] for row in rows.values())
    if all("short_form_cer_nospace" in row for row in rows.values()):
        out["short_form_cer_nospace"] = sum(row["short_form_cer_nospace"] * row["ref_chars"] for row in rows.values()) / chars
    return out


if __name__ == "__main__":
    main()
