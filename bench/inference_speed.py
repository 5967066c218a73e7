"""Inference speed: inference.py's engines against the plain transformers pipeline and faster-whisper.

All paths transcribe the same Korean clips in the same process, one path after the other, with the same model,
the same greedy decoding (language ko, task transcribe, no timestamps) and the same per-clip token budget
(inference.py's, `Decoding.tokens_for`), so a repetition loop costs every path the same:

- **inference.py backend=hf**: transformers, fp32 on CPUs without native bf16, bf16 autocast where native, batch 8.
- **inference.py backend=ct2**: the CTranslate2 int8 export, batch 8; what backend=auto picks on every CPU.
- **pipeline**: `transformers.pipeline("automatic-speech-recognition")`, fp32, batch 1, given the file path,
  num_beams=1 (its default is beam 5, about 5x slower and not the same decoding).
- **faster-whisper**: `WhisperModel` on the same int8 export, beam_size 1, temperature 0 (no fallback),
  without_timestamps, no VAD: greedy, like the others (its defaults, beam 5 with fallback, are slower).
- **CTC wav2vec2-base**: the CTC family (kowhisper.families.ctc.family) through inference.py's own code, fp32, batch 8, greedy CTC,
  on a randomly initialised wav2vec2 of wav2vec2-base's shape (hidden 768, 12 layers, about 95M parameters, with a
  character head built from the clips' sentences). No pretrained CTC model can be fetched here, so its CER is
  meaningless: it is there for speed only, beside Whisper on the same clips.

The model (--model):
- `base`: zero-shot whisper-base. On espeak Korean it loops to the token cap, so use it with --clips-from real.
- `recite-full`, `recite-fit` (default): whisper-base plus a LoRA adapter trained here, at Whisper's full window
  or at a fitted one (kowhisper.families.whisper.encoder_window), until it recites the clips: every path then has the true
  sentence to produce and must stop where it ends, so the paths are compared at equal CER. inference.py runs
  the model at the window it was trained with; the pipeline and faster-whisper always pad to 30 s.

Clips (--clips-from): `sample`, the bundled espeak sample (test, then dev), or `real`, the real Korean test
speech in ../shared/data/ko-real-speech (read from there, never copied).

Every path starts from the audio file and ends with the text; model loading and one warm-up clip are not
timed. The paths take turns, one batch of clips each, so load from other jobs falls on all of them alike.
CPU threads are the same for all (every core). Reported: seconds per utterance, real-time factor
(processing time / audio time) and CER against the reference sentences.

    python -m bench.inference_speed                                  # fit-window reciting adapter, sample clips
    python -m bench.inference_speed --model recite-full
    python -m bench.inference_speed --model base --clips-from real --clips 40
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import resource
import time
from pathlib import Path

from kowhisper.common.runtime import force_offline

force_offline()

from tests.sample_files import REAL_SPEECH_KO  # noqa: E402 (after force_offline)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT_ROOT / "sample_data" / "cv-corpus-ko-sample" / "ko"
OUT_DIR = PROJECT_ROOT / "bench" / "out"
BATCH_SIZE = 8


def sample_clips(count: int, clips_from: str) -> list[tuple[Path, str]]:
    """(clip, sentence): test then dev rows of the bundled sample, or the test rows of the real-speech set."""
    folder, splits = (SAMPLE, ("test", "dev")) if clips_from == "sample" else (REAL_SPEECH_KO, ("test",))
    rows = []
    for split in splits:
        with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as handle:
            rows += [(folder / "clips" / row["path"], row["sentence"]) for row in csv.DictReader(handle, delimiter="\t")]
    if count > len(rows):
        raise SystemExit(f"{folder} has {len(rows)} clips to use; asked for {count}")
    return rows[:count]


def pypi_whisper_base() -> Path:
    """whisper-base from the PyPI packages as a transformers folder, converted once into bench/out."""
    from kowhisper.families.whisper.ct2_import import assemble_pypi_whisper_base, convert_ct2_whisper

    hf_dir = OUT_DIR / "whisper-base"
    if not (hf_dir / "model.safetensors").is_file():
        convert_ct2_whisper(assemble_pypi_whisper_base(OUT_DIR / "whisper-base-source"), hf_dir)
    return hf_dir


def reciting_model(base_dir: Path, clips: list[tuple[Path, str]], window):
    """whisper-base + an adapter reciting `clips` at `window`, as an adapter source and as a merged folder for
    the pipeline."""
    from transformers import WhisperProcessor

    from kowhisper.common.audio import load_audio
    from kowhisper.families.base import ModelSource
    from kowhisper.families.whisper.features import LogMel, label_ids
    from kowhisper.serve.export import merge_adapter
    from kowhisper.testing import train_reciting_adapter

    processor = WhisperProcessor.from_pretrained(base_dir)
    processor.tokenizer.set_prefix_tokens(language="korean", task="transcribe", predict_timestamps=False)
    log_mel = LogMel(processor.feature_extractor)
    rows = [{"input_features": log_mel(load_audio(path)), "labels": label_ids(processor.tokenizer, text)} for path, text in clips]
    adapter = train_reciting_adapter(base_dir, rows, OUT_DIR / f"reciting-adapter-{window.mode}", steps=15, window=window)
    source = ModelSource("adapter", adapter, f"whisper-base + reciting LoRA ({window.mode} window)", base_dir)
    return source, merge_adapter(source, OUT_DIR / f"reciting-merged-{window.mode}")


def cpu_time() -> float:
    """CPU seconds of this process and its finished children (the pipeline decodes files with an ffmpeg
    subprocess). On a machine shared with other jobs this, unlike wall time, does not count their turns;
    with one thread it is the fair measure (with several, OpenMP spin-waits would inflate it)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--clips-from", choices=("sample", "real"), default="sample")
    parser.add_argument("--model", choices=("base", "recite-full", "recite-fit"), default="recite-fit")
    args = parser.parse_args(argv)

    import torch
    from faster_whisper import WhisperModel
    from transformers import pipeline

    from kowhisper.common.audio import SAMPLING_RATE, load_audio
    from kowhisper.common.cpu import cpu_has_native_bf16, cpu_model_name
    from kowhisper.common.text import error_rates
    from kowhisper.config import load_config
    from kowhisper.families.base import ModelSource, cpu_threads
    from kowhisper.families.registry import load_recognizer
    from kowhisper.families.whisper.ct2_export import export_ct2
    from kowhisper.families.whisper.encoder_window import EncoderWindow
    from kowhisper.families.whisper.engines import Decoding, choose_engine
    from kowhisper.families.whisper.loading import trained_window
    from kowhisper.serve.transcribe import transcribe_files

    clips = sample_clips(args.clips, args.clips_from)
    paths = [path for path, _ in clips]
    durations = {path: len(load_audio(path)) / SAMPLING_RATE for path in paths}
    audio_seconds = sum(durations.values())
    config = load_config([])
    decoding = Decoding.from_config(config)
    budgets = {path: decoding.tokens_for(seconds) for path, seconds in durations.items()}
    base_dir = pypi_whisper_base()
    if args.model == "base":
        source, hf_dir = ModelSource("merged", base_dir, "whisper-base (PyPI)"), base_dir
    else:
        window = EncoderWindow("fit", tail_frames=50) if args.model == "recite-fit" else EncoderWindow()
        source, hf_dir = reciting_model(base_dir, clips, window)
    ct2_dir = export_ct2(source, "int8", OUT_DIR / f"ct2-int8-{args.model}")
    threads = cpu_threads()

    def ours(engine):
        exported = ModelSource("ct2", ct2_dir, source.label)
        backend = load_recognizer(source if engine == "hf" else exported, dataclasses.replace(config, backend=engine))

        def run(batch):
            results = transcribe_files(backend, batch, batch_size=BATCH_SIZE, progress=False)
            return [transcript.text for _, transcript, _ in results]

        return backend.description, run

    def plain_pipeline():
        asr = pipeline("automatic-speech-recognition", model=str(hf_dir), dtype=torch.float32, device="cpu")

        def run(batch):
            return [asr(str(path), batch_size=1, generate_kwargs={"language": "ko", "task": "transcribe", "num_beams": 1,
                                                                   "max_new_tokens": budgets[path]})["text"].strip()
                    for path in batch]

        return "transformers pipeline fp32, batch 1", run

    def faster_whisper():
        model = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=threads)

        def run(batch):
            texts = []
            for path in batch:
                segments, _ = model.transcribe(str(path), language="ko", task="transcribe", beam_size=1, temperature=0.0,
                                               without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                                               max_new_tokens=budgets[path])
                texts.append("".join(segment.text for segment in segments).strip())
            return texts

        return "faster-whisper int8, beam 1, batch 1", run

    def ctc_wav2vec2():
        from kowhisper.families.ctc.storage import save_vocabulary
        from kowhisper.families.ctc.vocabulary import CharacterRules, build_vocabulary
        from kowhisper.testing import random_wav2vec2

        folder = random_wav2vec2(OUT_DIR / "wav2vec2-base-random", size="base")
        rules = CharacterRules.from_config(config)
        save_vocabulary(build_vocabulary([sentence for _, sentence in clips], rules), folder, rules)
        recognizer = load_recognizer(ModelSource("merged", folder, "wav2vec2-base (random)"), dataclasses.replace(config, backend="hf"))
        parameters = sum(p.numel() for p in recognizer.model.parameters())

        def run(batch):
            results = transcribe_files(recognizer, batch, batch_size=BATCH_SIZE, progress=False)
            return [transcript.text for _, transcript, _ in results]

        return f"{recognizer.description}, random wav2vec2-base ({parameters / 1e6:.0f}M parameters): speed only", run

    paths_under_test = {
        "inference.py backend=hf": lambda: ours("hf"),
        "inference.py backend=ct2": lambda: ours("ct2"),
        "transformers pipeline": plain_pipeline,
        "faster-whisper": faster_whisper,
        "CTC wav2vec2-base": ctc_wav2vec2,
    }
    references = [sentence for _, sentence in clips]
    engines = {name: make() for name, make in paths_under_test.items()}
    for _, run in engines.values():
        run(paths[:1])  # warm-up: first-call allocations and lazy initialisation
    # Rounds of one batch each, every path in turn (in a rotating order), so that load from other jobs on a
    # shared machine falls on all paths alike instead of on whichever ran during it.
    seconds = dict.fromkeys(engines, 0.0)
    cpu_seconds = dict.fromkeys(engines, 0.0)
    texts: dict[str, list[str]] = {name: [] for name in engines}
    load_averages = [round(os.getloadavg()[0], 2)]
    rounds = [paths[i : i + BATCH_SIZE] for i in range(0, len(paths), BATCH_SIZE)]
    for number, batch in enumerate(rounds):
        names = list(engines)
        for name in names[number % len(names) :] + names[: number % len(names)]:
            started, cpu_started = time.perf_counter(), cpu_time()
            texts[name] += engines[name][1](batch)
            seconds[name] += time.perf_counter() - started
            cpu_seconds[name] += cpu_time() - cpu_started
        load_averages.append(round(os.getloadavg()[0], 2))
    results = []
    for name, (description, _) in engines.items():
        rates = error_rates(references, texts[name])
        results.append({"path": name, "engine": description, "seconds": round(seconds[name], 2),
                        "seconds_per_utterance": round(seconds[name] / len(paths), 3),
                        "cpu_seconds_per_utterance": round(cpu_seconds[name] / len(paths), 3),
                        "rtf": round(seconds[name] / audio_seconds, 3), "cer": round(rates["cer"], 4), "texts": texts[name]})

    pipeline_seconds = next(r["seconds"] for r in results if r["path"] == "transformers pipeline")
    faster_seconds = next(r["seconds"] for r in results if r["path"] == "faster-whisper")
    auto = choose_engine("auto", source)
    report = {
        "model": source.label,
        "encoder_window": trained_window(source).describe(),
        "clips_from": args.clips_from,
        "clips": len(paths),
        "audio_seconds": round(audio_seconds, 1),
        "cpu": cpu_model_name(),
        "threads": threads,
        "native_bf16": cpu_has_native_bf16(),
        "backend_auto": auto,
        "load_average_per_round": load_averages,
        "results": results,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"inference_speed-{args.model}-{args.clips_from}.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n",
                                                                                   encoding="utf-8")

    print(f"\n{len(paths)} {args.clips_from} clips, {audio_seconds:.1f} s of audio, model {source.label}, encoder window "
          f"{trained_window(source).describe()}; CPU {report['cpu']}, {threads} threads, native bf16: {report['native_bf16']}, "
          f"backend=auto picks {auto}; 1-minute load average before and after each round {load_averages}\n")
    print("| path | engine | s/utt | CPU s/utt | RTF | CER | vs pipeline | vs faster-whisper |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['path']} | {r['engine']} | {r['seconds_per_utterance']:.3f} | {r['cpu_seconds_per_utterance']:.3f} "
              f"| {r['rtf']:.3f} | {r['cer']:.3f} | {pipeline_seconds / r['seconds']:.2f}x | {faster_seconds / r['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
