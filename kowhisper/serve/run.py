"""Transcribe audio files, serve the browser demo, or ship the fine-tuned model; all offline.

    python inference.py workspace=./workspace talk.mp3 meetings/ list.txt      # files, folders, file lists
    python inference.py workspace=./workspace meetings/ output_format=srt transcripts_dir=subtitles/
    python inference.py workspace=./workspace calls/ "hotwords=[KT,5G 요금제]" initial_prompt="고객센터 상담입니다."
    python inference.py workspace=./workspace talk.mp3 word_timestamps=true output_format=json  # words with times
    python inference.py workspace=./workspace talk.mp3 output_format=srt srt_max_chars=20        # cues cut at words
    python inference.py workspace=./workspace --demo                           # http://127.0.0.1:7860
    python inference.py workspace=./workspace --merge                          # <run>/merged, safetensors (LoRA runs)
    python inference.py workspace=./workspace --export-ct2                     # <run>/ct2-int8, for faster-whisper
    python inference.py workspace=./workspace --export-ct2 export_check=false  # without scoring it on dev
    python inference.py workspace=./workspace --export-ggml                    # <run>/ggml, for whisper.cpp (f16 + q8_0)
    python inference.py adapter=./workspace/runs/whisper-lora/merged talk.mp3  # a merged model or CTranslate2 export

adapter= picks the model: unset, the latest run's final model (else the base); also a run name, an adapter or
checkpoint folder, a merged or fully fine-tuned model, a CTranslate2 export, or 'base'. Any audio FFmpeg reads
works; audio over 30 s is cut into windows at pauses and transcribed with timestamps (json, srt). backend=auto runs CTranslate2
int8 on CPUs without native bf16 (the model is exported once, then reused) and transformers on CUDA or bf16 CPUs.

--merge and --export-ct2 then score the export beside the model it came from on the workspace's dev split (CER and
kocer CER, with a paired interval on the difference; <export>/export_check.json) and warn if they differ.
"""

from __future__ import annotations

import os
import sys

from kowhisper.common.errors import ConfigError
from kowhisper.common.files import describe_os_error
from kowhisper.common.runtime import setup_logging
from kowhisper.common.transcript import Prompting
from kowhisper.common.workspace import WorkspaceError, require_verified_workspace
from kowhisper.config import build_parser, parse_config
from kowhisper.evaluate.export_check import Export, check_exports
from kowhisper.families.base import ModelError, resolve_model
from kowhisper.families.registry import family_of_source, ignored_keys_notice, load_recognizer
from kowhisper.serve.demo import launch_demo
from kowhisper.serve.export import default_merged_dir, merge_for_shipping
from kowhisper.serve.transcribe import transcribe_to_outputs

EXIT_SETUP_ERROR = 2


def main(argv=None) -> int:
    parser = build_parser(__doc__)
    parser.add_argument("--demo", action="store_true", help="Serve the Gradio demo on server_name:server_port.")
    parser.add_argument("--merge", action="store_true", help="Save base + adapter as one safetensors model (merged_dir). "
                        "A fully fine-tuned run is full weights already: it is named, or copied to merged_dir when set.")
    parser.add_argument("--export-ct2", action="store_true", help="Export to CTranslate2 (ct2_dir, ct2_quantization).")
    parser.add_argument("--export-ggml", action="store_true",
                        help="Export to whisper.cpp GGML: ggml-model-f16.bin and ggml_quantization's file (ggml_dir).")
    config, args = parse_config(parser, argv)
    if not (args.paths or args.demo or args.merge or args.export_ct2 or args.export_ggml):
        parser.error("nothing to do: give audio files, folders or lists, or --demo, --merge, --export-ct2 or --export-ggml")
    os.environ["CUDA_VISIBLE_DEVICES"] = config.cuda_visible_devices  # read once, when torch first touches CUDA
    setup_logging()

    try:
        source = resolve_model(config.workspace_dir, config.adapter)
        if ignored := ignored_keys_notice(family_of_source(source), args.explicit_keys):
            print(ignored)
        if source.kind in ("base", "adapter"):
            require_verified_workspace(config.workspace_dir, only=("model",))
        exports = []
        family = family_of_source(source)
        if args.merge:
            print(merge_for_shipping(source, config.merged_dir))
            if source.kind == "adapter":  # full weights are copied as they are: nothing to check
                exports.append(Export.folder(resolve_model(config.workspace_dir, str(config.merged_dir or default_merged_dir(source)))))
        if args.export_ct2:
            # Exported from the adapter itself (not the merged copy), so backend=auto recognises it as current.
            exported = family.export_ct2(source, config.ct2_quantization, config.ct2_dir)
            print(f"CTranslate2 model: {exported}")
            exports.append(Export.folder(resolve_model(config.workspace_dir, str(exported))))
        if args.export_ggml:
            ggml_dir = family.export_ggml(source, config.ggml_quantization, config.ggml_dir)
            print(f"whisper.cpp model: {ggml_dir}")
            # Each file as whisper.cpp itself runs it.
            exports += [Export.whisper_cpp(file, lambda file=file: family.ggml_recognizer(file, config))
                        for file in sorted(ggml_dir.glob("ggml-model-*.bin"))]
        if exports and config.export_check:
            check_exports(source, exports, config)
        if not (args.paths or args.demo):
            return 0
        # The demo serves one recording at a time, and an engine may tune for that (see CT2Whisper).
        recognizer = load_recognizer(source, config, one_clip_at_a_time=args.demo)
    except (ConfigError, ModelError, WorkspaceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    except OSError as error:  # an export folder that cannot be written, a full disk: said plainly, not as a traceback
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_SETUP_ERROR

    if args.demo:
        launch_demo(recognizer, source.label, config)
        return 0
    return transcribe_to_outputs(recognizer, args.paths, output_format=config.output_format, transcripts_dir=config.transcripts_dir,
                                 batch_size=config.per_device_eval_batch_size, pcm_sample_rate=config.pcm_sample_rate,
                                 prompting=Prompting.from_config(config), word_timestamps=config.word_timestamps,
                                 srt_max_chars=config.srt_max_chars)

