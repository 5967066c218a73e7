"""Dev CER of one fine-tuned model in every format it ships in: the adapter, merged, CTranslate2 int8, whisper.cpp f16
and q8_0.

The model is bench/quality.py's default-recipe run on the clean real-speech set (`default-clean`); the clips are the
whole dev split of that workspace (151 clips of ../shared/data/ko-real-speech, read from there). The adapter, the
merged model and the CTranslate2 export are scored by what `inference.py --merge --export-ct2` runs after exporting
(kowhisper.evaluate.export_check); the whisper.cpp files by whisper.cpp itself through pywhispercpp (greedy, one
thread, no temperature fallback), on the same clips' audio files. Every format is compared with the adapter by a
paired bootstrap (95%, 1000 resamples, seed 0).

`--diagnose` adds two arms that split whisper.cpp's difference into its causes: the CTranslate2 export run at Whisper's
full 30 s window, as whisper.cpp always runs it (a fit-window adapter was trained on fitted windows), and whisper.cpp
with its own temperature fallback (temperature_inc 0.2, its default), which re-decodes a repetition loop. Every arm's
text per clip is kept in the cache folder (`texts-<run>.json`), so the clips that carry a difference can be read.

    python -m bench.export_formats
    python -m bench.export_formats --run words-check --diagnose
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kowhisper.common.runtime import force_offline

force_offline()

from bench.quality import OUT_DIR  # noqa: E402 (after force_offline)
from tests.sample_files import REAL_SPEECH_KO, clip_path  # noqa: E402

WORKSPACE = OUT_DIR / "workspace"
RUN = "default-clean"
CACHE = OUT_DIR / "export-formats"
RATES = ("cer", "kocer_cer")


def whisper_cpp_texts(model_file: Path, clips: list[Path], temperature_inc: float = 0.0) -> tuple[list[str], float]:
    import numpy as np
    from pywhispercpp.model import Model

    from kowhisper.common.audio import load_audio

    model = Model(str(model_file), n_threads=1, language="ko", temperature_inc=temperature_inc, print_progress=False,
                  print_realtime=False)
    started, texts = time.perf_counter(), []
    for clip in clips:
        waveform = np.ascontiguousarray(load_audio(clip), dtype=np.float32)
        texts.append("".join(segment.text for segment in model.transcribe(waveform)).strip())
    seconds = time.perf_counter() - started
    del model  # pywhispercpp's destructor fails at interpreter exit
    return texts, seconds


def full_window_texts(ct2_source, dataset, config) -> tuple[list[str], float]:
    """A CTranslate2 export decoding every dev clip padded to Whisper's full 30 s window."""
    from kowhisper.evaluate.split import transcribe_split
    from kowhisper.families.whisper.encoder_window import EncoderWindow
    from kowhisper.families.whisper.engines import Decoding, load_engine
    from kowhisper.families.whisper.recognizer import WhisperRecognizer

    engine = load_engine(ct2_source, Decoding.from_config(config), backend="ct2")
    engine.window = EncoderWindow()  # whisper.cpp's window, whatever the model was trained with
    started = time.perf_counter()
    texts = transcribe_split(WhisperRecognizer(engine), dataset, config.per_device_eval_batch_size, desc="CT2 at 30 s")
    return texts, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=RUN, help=f"the run of bench/quality.py's workspace to export (default {RUN})")
    parser.add_argument("--diagnose", action="store_true", help="add the full-window and temperature-fallback arms")
    args = parser.parse_args(argv)
    import json

    from kowhisper.common.bootstrap import BootstrapSettings, compare_with_reference
    from kowhisper.common.cpu import cpu_model_name
    from kowhisper.common.text import utterance_counts
    from kowhisper.config import load_config
    from kowhisper.evaluate.split import evaluate_source, load_eval_split
    from kowhisper.families.base import resolve_model
    from kowhisper.families.whisper.ct2_export import export_ct2
    from kowhisper.families.whisper.ggml_export import export_ggml
    from kowhisper.serve.export import merge_adapter

    config = load_config([f"workspace={WORKSPACE}"])
    source = resolve_model(WORKSPACE, args.run)
    cache = CACHE / args.run if args.run != RUN else CACHE
    cache.mkdir(parents=True, exist_ok=True)
    dataset, _ = load_eval_split(WORKSPACE, "dev", None)
    references = list(dataset["text"])
    clips = [clip_path(REAL_SPEECH_KO, row_id) for row_id in dataset["id"]]

    # As kowhisper.evaluate.export_check scores them after --merge and --export-ct2.
    formats = {"adapter": source,
               "merged": resolve_model(WORKSPACE, str(merge_adapter(source, cache / "merged"))),
               "CTranslate2 int8": resolve_model(WORKSPACE, str(export_ct2(source, "int8", cache / "ct2-int8")))}
    counts, seconds, texts_of = {}, {}, {}
    for name, model in formats.items():
        result = evaluate_source(model, dataset, config)
        name = f"{name} ({result.metrics['backend']})"
        counts[name], seconds[name] = [row["counts"] for row in result.rows], result.seconds
        texts_of[name] = [row["hypothesis"] for row in result.rows]
    arms = {}
    if args.diagnose:
        arms["CTranslate2 int8 at the full 30 s window"] = lambda: full_window_texts(formats["CTranslate2 int8"], dataset, config)
    ggml_dir = export_ggml(source, cache / "ggml", "q8_0")
    for weight_type in ("f16", "q8_0"):
        arms[f"whisper.cpp {weight_type} (pywhispercpp, 1 thread)"] = (
            lambda weight_type=weight_type: whisper_cpp_texts(ggml_dir / f"ggml-model-{weight_type}.bin", clips))
    if args.diagnose:
        arms["whisper.cpp f16 with its temperature fallback"] = (
            lambda: whisper_cpp_texts(ggml_dir / "ggml-model-f16.bin", clips, temperature_inc=0.2))
    for name, decode in arms.items():
        texts, taken = decode()
        counts[name], seconds[name] = [utterance_counts(reference, text) for reference, text in zip(references, texts)], taken
        texts_of[name] = texts
    (cache / f"texts-{args.run}.json").write_text(json.dumps({"references": references, "ids": list(dataset["id"]), **texts_of},
                                                             ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    reference_name = next(iter(counts))  # the adapter, under its engine-named row
    others = {name: values for name, values in counts.items() if name != reference_name}
    differences = compare_with_reference(counts[reference_name], others, list(dataset["source"]), RATES, BootstrapSettings())
    lines = [f"CPU: {cpu_model_name()}; {len(references)} dev clips; run {args.run}", "",
             "| format | dev CER | dev kocer CER | CER minus the adapter's | kocer minus the adapter's | seconds |",
             "|---|---|---|---|---|---|"]
    for name, values in counts.items():
        scored = [c for c in values if c is not None]
        rates = {rate: sum(c[f"{rate}_errors"] for c in scored) / sum(c[f"{rate}_chars"] for c in scored) for rate in RATES}
        shown = {rate: differences[name][rate].describe() if name in differences else "-" for rate in RATES}
        lines.append(f"| {name} | {100 * rates['cer']:.2f}% | {100 * rates['kocer_cer']:.2f}% | {shown['cer']} | "
                     f"{shown['kocer_cer']} | {seconds[name]:.0f} |")
    print("\n".join(lines))
    (cache / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
